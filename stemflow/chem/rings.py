"""Rings of the bond graph: the faces of the projected (planar) network.

Seen along the beam a 2-D crystal's bond graph is planar, so its smallest rings are its faces.
Each face is traced by walking the bonds, turning at every atom to the next bond in angular order
(the usual planar-embedding walk); faces are the cycles of that walk. Pristine graphene and MX2
give hexagons; a Stone–Wales defect gives two pentagons and two heptagons (55-77), a
reconstructed divacancy 5-8-5. The outer face and the holes around vacancies are faces too; they
are reported only up to ``max_size``.

Units: positions in px.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from ..tables import RINGS
from ._common import frame_groups, resolve, with_attrs
from .bonds import find_bonds

__all__ = ["find_rings", "faces"]

#: Faces of up to this many edges are walked together, array-wise (the rings of interest have 4–9).
_WALK = 12



def faces(pos: np.ndarray, i: np.ndarray, j: np.ndarray) -> list[np.ndarray]:
    """Bounded faces of a planar straight-line graph, each as the array of its vertices in order.

    Parameters
    ----------
    pos : ndarray (n, 2)
        Vertex positions ``(y, x)``.
    i, j : ndarray
        Edges (undirected, each once).

    Returns
    -------
    list of ndarray
        One array of vertex indices per bounded face whose boundary visits no vertex twice.
    """
    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)
    if len(i) < 3:
        return []
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    d = pos[dst] - pos[src]
    ang = np.arctan2(d[:, 0], d[:, 1])
    order = np.lexsort((ang, src))          # directed edges grouped by source, by angle
    src, dst = src[order], dst[order]
    m = len(src)
    start = np.searchsorted(src, np.arange(len(pos) + 1))
    rank = np.arange(m) - start[src]
    deg = start[src + 1] - start[src]
    # Index of every edge's reverse (dst → src).
    key = src * len(pos) + dst
    srt = np.argsort(key)
    rev = srt[np.searchsorted(key[srt], dst * len(pos) + src)]
    # Next edge of the face walk: at the head v, the bond just before the reverse edge in angle order.
    nxt = start[dst] + (rank[rev] - 1) % deg[rev]
    n_cyc, lab = connected_components(sparse.coo_array((np.ones(m), (np.arange(m), nxt)), shape=(m, m)),
                                      directed=True, connection="weak")
    sizes = np.bincount(lab, minlength=n_cyc)
    # Signed area of every cycle (shoelace over its edges; the walk goes src → dst → …).
    ps, pd_ = pos[src], pos[dst]
    areas = 0.5 * np.bincount(lab, weights=ps[:, 1] * pd_[:, 0] - pd_[:, 1] * ps[:, 0], minlength=n_cyc)
    # Orientation of bounded faces: signed area with the same sign as most faces of size ≤ 8.
    small = sizes <= 8
    sign = np.sign(np.sum(np.sign(areas[small]))) if small.any() else 1.0
    # Vertices of each cycle in walk order: the cycles of up to _WALK edges walked together, the
    # longer ones (holes, the outer boundary) one by one.
    by = np.argsort(lab, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    first = by[bounds[:-1]]
    verts_of: dict = {}
    short = np.flatnonzero(sizes <= _WALK)
    if len(short):
        k = int(sizes[short].max())
        seq = np.empty((len(short), k), np.int64)
        e = first[short]
        for step in range(k):
            seq[:, step] = e
            e = nxt[e]
        vs = src[seq]
        for size in np.unique(sizes[short]):
            rows = np.flatnonzero(sizes[short] == size)
            v = vs[rows, :size]
            srt = np.sort(v, axis=1)
            simple = (np.diff(srt, axis=1) != 0).all(axis=1)
            for r, vr, ok in zip(rows, v, simple):
                verts_of[int(short[r])] = vr if ok else None
    out = []
    for c in range(n_cyc):
        if np.sign(areas[c]) != sign:
            continue
        if c in verts_of:
            verts = verts_of[c]
        else:
            seq_l = [first[c]]
            e = nxt[first[c]]
            while e != first[c] and len(seq_l) <= sizes[c]:
                seq_l.append(e)
                e = nxt[e]
            verts = src[np.asarray(seq_l)]
            if len(np.unique(verts)) != len(verts):
                verts = None
        if verts is not None:
            out.append(verts)
    return out


def find_rings(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None, *,
               cutoffs: dict | None = None, max_size: int = 8, bonds: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rings (faces) of the bond graph of each frame.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table (``y``, ``x`` px, ``label``; optional ``frame``).
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``.
    cutoffs : dict, optional
        Bond cutoffs (nm), see :func:`~stemflow.chem.bonds.find_bonds`.
    max_size : int
        Largest ring reported (members).
    bonds : DataFrame, optional
        The bonds table of ``atoms`` if already computed.

    Returns
    -------
    DataFrame
        One row per ring of at least 3 and at most ``max_size`` members: ``frame`` (stacks),
        ``ring`` (int64 id), ``size`` (int64 members), ``y``, ``x`` (px, centroid of its atoms)
        and ``atoms`` (tuple of row positions in ``atoms``, in ring order).

    Examples
    --------
    >>> from stemflow.simulate import simulate_image                              # doctest: +SKIP
    >>> sim = simulate_image("graphene", 256, defects={"SW": 1}, pixel_size=0.012)   # doctest: +SKIP
    >>> find_rings(sim.atoms, 0.012, "graphene")["size"].value_counts()           # doctest: +SKIP
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    if bonds is None:
        bonds = find_bonds(atoms, pixel_size, lattice, cutoffs=cutoffs)
    pos = atoms[["y", "x"]].to_numpy(np.float64)
    bi = bonds["i"].to_numpy(np.int64)
    bj = bonds["j"].to_numpy(np.int64)
    rows_out = []
    for fr, rows in frame_groups(atoms):
        local = np.full(len(atoms), -1, np.int64)
        local[rows] = np.arange(len(rows))
        sel = (local[bi] >= 0) & (local[bj] >= 0)
        for verts in faces(pos[rows], local[bi[sel]], local[bj[sel]]):
            if 3 <= len(verts) <= max_size:
                r = rows[verts]
                c = pos[r].mean(axis=0)
                rows_out.append((fr, len(verts), c[0], c[1], tuple(int(v) for v in r)))
    cols = (["frame"] if "frame" in atoms.columns else []) + RINGS.names
    out = pd.DataFrame(rows_out, columns=["frame", "size", "y", "x", "atoms"])
    out.insert(1, "ring", np.arange(len(out), dtype=np.int64))
    out = out.astype({"size": np.int64, "y": np.float64, "x": np.float64})
    if "frame" in atoms.columns:
        out["frame"] = out["frame"].astype(atoms["frame"].dtype)
    return with_attrs(out[cols], atoms, pixel_size, lattice)

"""Defect complexes: dopant groups with their first shell, vacancy complexes and ring defects.

Per frame, the *nodes* of defects are the network's ``dopant`` rows, its ``vacancy`` rows (kept
when no atom sits on the same site: the cross-check of the class against the geometry) and the
empty sites of the fitted lattice that the network did not mark (:func:`~stemflow.chem.sites.
empty_sites`). Dopants bonded to each other, and vacancies or empty sites within 1.2 bond of a
dopant, a vacancy or another empty site, form one complex. A complex needs at least one node the
network saw (a dopant or a vacancy): empty sites alone are missed atoms more often than vacancies.
Non-hexagonal rings (4, 5, 7, 8 members) that share atoms form ring clusters; a cluster touching
no other complex is a defect of its own (pentagons and heptagons only, at most four rings:
``SW``, Stone–Wales 55-77, also when a missed bond leaves 5-7-7 or 5-5-7; 5-8-5: ``585``, a
reconstructed divacancy; else ``R`` and its ring sizes).

Names. Graphene: dopant complexes by formula, dopants then their first shell of host atoms
(``Si1C3``, ``Si1C4``, ``Si2C4``, ``Si3C6``); vacancy complexes ``V1``, ``V2``, … MX2: point
defects in the simulator's notation (``Mo_W``, ``V_S`` one chalcogen missing, ``V_S2`` both,
``V_W``), joined by ``+`` when several form one complex. Amorphous: dopant count (``Pt1``).

Units: positions in px, distances in bonds (a/√3) of the lattice.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ._common import (ATOMIC_NUMBER, LATTICE_PARAMS, frame_groups, is_mx2, labels_of, resolve,
                      with_attrs)
from .bonds import coordination, find_bonds
from .rings import find_rings
from .sites import _frame_empty, _frame_fit, assign_sites

__all__ = ["find_defects", "defect_table", "DEFECT_COLUMNS", "ring_defect_name"]

#: Columns of :func:`defect_table` (``frame`` after ``defect_id`` for stacks).
DEFECT_COLUMNS = ["defect_id", "defect", "y", "x", "y_nm", "x_nm", "angle", "n_dopant", "n_vacancy",
                  "n_empty", "n_shell", "at_edge", "rows"]

_LINK = 1.2        # bonds: vacancies / empty sites this close to another node join its complex
_SAME_SITE = 0.4   # bonds: a vacancy row with an atom this close is contradicted by the geometry
_ODD_RINGS = (4, 5, 7, 8)


def ring_defect_name(sizes) -> str:
    """Name of a cluster of non-hexagonal rings from its ring sizes.

    >>> ring_defect_name([5, 7, 7, 5]), ring_defect_name([5, 7, 7]), ring_defect_name([5, 8, 5])
    ('SW', 'SW', '585')
    >>> ring_defect_name([5, 5, 5])
    'R555'
    """
    c = Counter(int(s) for s in sizes)
    if set(c) == {5, 7} and sum(c.values()) <= 4:   # 55-77, or part of it when a bond is missed
        return "SW"
    if c == Counter({5: 2, 8: 1}):
        return "585"
    return "R" + "".join(str(s) for s in sorted(c.elements()))


def _prepare(atoms, pixel_size, lattice, cutoffs, element_map, gamma):
    """Atoms with sites, elements, counts and coordination (computed when missing)."""
    out = atoms
    if "site" not in out.columns or "sublattice" not in out.columns:
        out = assign_sites(out, pixel_size, lattice)
    if "element" not in out.columns or "count" not in out.columns:
        from .elements import assign_elements
        out = assign_elements(out, pixel_size, lattice, element_map=element_map, gamma=gamma)
    if "coordination" not in out.columns:
        out = coordination(out, pixel_size, lattice, cutoffs=cutoffs)
    return out


def _name(lattice, kinds, rows, sub, element, count, shell_n):
    """Name of one complex from its nodes."""
    host = LATTICE_PARAMS[lattice]["host"]
    dop = [r for k, r in zip(kinds, rows) if k == "dopant"]
    if is_mx2(lattice):
        metal, chalc = host
        sym = []
        for k, r, s in zip(kinds, rows, sub):
            site_el = chalc if s == 1 else metal
            if k == "dopant":
                sym.append(f"{element[r]}_{site_el}")
            elif s == 1:
                sym.append(f"V_{chalc}" if (r >= 0 and count[r] > 0) else f"V_{chalc}2")
            else:
                sym.append(f"V_{metal}")
        c = Counter(sym)
        return "+".join((f"{n}{s}" if n > 1 else s) for s, n in sorted(c.items()))
    if dop:
        c = Counter(str(element[r]) for r in dop)
        els = sorted(c, key=lambda e: (-ATOMIC_NUMBER.get(e, 0), e))
        name = "".join(f"{e}{c[e]}" for e in els)
        return name if lattice == "amorphous" else name + f"{host[0]}{shell_n}"
    return f"V{len(kinds)}"


def _principal_angle(p: np.ndarray, fallback: float) -> float:
    """Angle (deg) of the long axis of points ``p`` (y, x), or ``fallback`` when they are round."""
    if len(p) >= 2:
        q = p - p.mean(axis=0)
        w, v = np.linalg.eigh(q.T @ q / len(q))
        if w[1] > 1.3 * max(w[0], 1e-9):
            return float(np.degrees(np.arctan2(v[0, 1], v[1, 1])) % 180.0)
    return fallback


def _analyse(atoms, pixel_size, lattice, cutoffs=None, element_map=None, gamma=1.7):
    """(atoms with defect, defect_id; defects table)."""
    full = _prepare(atoms, pixel_size, lattice, cutoffs, element_map, gamma)
    n = len(full)
    labels = labels_of(full)
    element = full["element"].astype(str).to_numpy()
    count = full["count"].to_numpy(np.int64)
    sub_all = full["sublattice"].to_numpy(np.int64)
    pos = full[["y", "x"]].to_numpy(np.float64)
    inten = full["intensity"].to_numpy(np.float64) if "intensity" in full.columns else None
    bonds = find_bonds(full, pixel_size, lattice, cutoffs=cutoffs)
    rings = find_rings(full, pixel_size, lattice, bonds=bonds)
    bi, bj = bonds["i"].to_numpy(np.int64), bonds["j"].to_numpy(np.int64)
    has_lattice = LATTICE_PARAMS[lattice]["a"] is not None
    bond_px = LATTICE_PARAMS[lattice]["bond"] / pixel_size
    ring_frame = rings["frame"].to_numpy() if "frame" in rings.columns else None

    defect = np.full(n, "", dtype=object)
    defect_id = np.full(n, -1, np.int64)
    table = []
    next_id = 0
    for fr, rows in frame_groups(full):
        lp, ll = pos[rows], labels[rows]
        local = np.full(n, -1, np.int64)
        local[rows] = np.arange(len(rows))
        # ---- nodes: dopants, vacancy rows (cross-checked), empty sites
        kinds, nrow, npos, nsub = [], [], [], []
        atom_rows = np.flatnonzero(ll != "vacancy")
        tree_atoms = cKDTree(lp[atom_rows]) if len(atom_rows) else None
        for r in np.flatnonzero(ll == "dopant"):
            kinds.append("dopant"), nrow.append(r), npos.append(lp[r]), nsub.append(sub_all[rows][r])
        for r in np.flatnonzero(ll == "vacancy"):
            if tree_atoms is not None and tree_atoms.query(lp[r])[0] < _SAME_SITE * bond_px:
                continue
            kinds.append("vacancy"), nrow.append(r), npos.append(lp[r]), nsub.append(sub_all[rows][r])
        fit = None
        if has_lattice:
            fit = _frame_fit(lp, ll, bond_px, None if inten is None else inten[rows], mx2=is_mx2(lattice))
            if fit is not None:
                got = _frame_empty(fit, lp, ll, bond_px)
                if got is not None:
                    cp, _, cs, _, det = got
                    for p, s in zip(cp[~det], cs[~det]):
                        kinds.append("empty"), nrow.append(-1), npos.append(p), nsub.append(int(s))
        theta = 0.0
        if fit is not None:
            theta = float(np.degrees(np.arctan2(fit.M[0, 0], fit.M[1, 0])) % 60.0)
        kinds_a = np.asarray(kinds, dtype=object)
        nrow_a = np.asarray(nrow, np.int64)
        npos_a = np.asarray(npos, np.float64).reshape(-1, 2)
        nsub_a = np.asarray(nsub, np.int64)
        m = len(kinds_a)
        # Bonds of this frame, in local row numbers.
        fsel = (local[bi] >= 0) & (local[bj] >= 0)
        li, lj = local[bi[fsel]], local[bj[fsel]]
        nbrs = [[] for _ in range(len(rows))]
        for a, b in zip(li, lj):
            nbrs[a].append(b)
            nbrs[b].append(a)
        lo, hi = (lp.min(axis=0), lp.max(axis=0)) if len(lp) else (np.zeros(2), np.zeros(2))
        complexes = []   # (kinds, rows, positions, subs, core rows)
        if m:
            # ---- links
            ei, ej = [], []
            node_of_row = np.full(len(rows), -1, np.int64)
            node_of_row[nrow_a[nrow_a >= 0]] = np.flatnonzero(nrow_a >= 0)
            for a, b in zip(li, lj):
                if node_of_row[a] >= 0 and node_of_row[b] >= 0 and kinds_a[node_of_row[a]] == "dopant" \
                        and kinds_a[node_of_row[b]] == "dopant":
                    ei.append(node_of_row[a]), ej.append(node_of_row[b])
            close = cKDTree(npos_a).query_pairs(_LINK * bond_px, output_type="ndarray")
            if len(close):
                not_both_dopant = (kinds_a[close[:, 0]] != "dopant") | (kinds_a[close[:, 1]] != "dopant")
                ei.extend(close[not_both_dopant, 0]), ej.extend(close[not_both_dopant, 1])
            g = sparse.coo_array((np.ones(len(ei)), (np.asarray(ei, np.int64), np.asarray(ej, np.int64))),
                                 shape=(m, m))
            _, comp = connected_components(g, directed=False)
            for c in np.unique(comp):
                idx = np.flatnonzero(comp == c)
                if not np.isin(kinds_a[idx], ["dopant", "vacancy"]).any():
                    continue
                core = nrow_a[idx][nrow_a[idx] >= 0]
                complexes.append((kinds_a[idx].tolist(), nrow_a[idx].tolist(), npos_a[idx], nsub_a[idx].tolist(), core))
        # ---- ring clusters not touching a complex
        if len(rings):
            rsel = (ring_frame == fr) if ring_frame is not None else np.ones(len(rings), bool)
            rsub = rings.loc[rsel]
            odd = rsub[rsub["size"].isin(_ODD_RINGS)]
            if len(odd):
                members = [np.asarray([local[a] for a in t], np.int64) for t in odd["atoms"]]
                sizes = odd["size"].to_numpy()
                k = len(members)
                ri = np.repeat(np.arange(k), [len(mm) for mm in members])
                ra = np.concatenate(members)
                inc = sparse.coo_array((np.ones(len(ri)), (ri, ra)), shape=(k, len(rows))).tocsr()
                share = (inc @ inc.T).tocoo()
                _, rcomp = connected_components(share, directed=False)
                taken = np.zeros(len(rows), bool)
                near_nodes = cKDTree(np.vstack([c[2] for c in complexes])) if complexes else None
                for c in np.unique(rcomp):
                    ridx = np.flatnonzero(rcomp == c)
                    at = np.concatenate([members[q] for q in ridx])
                    uniq, times = np.unique(at, return_counts=True)
                    if (ll[uniq] == "dopant").any() or taken[uniq].any():
                        continue
                    if near_nodes is not None and (near_nodes.query(lp[uniq])[0] < _LINK * bond_px).any():
                        continue
                    core = uniq[times == times.max()]
                    taken[uniq] = True
                    complexes.append((["ring"] * len(core), core.tolist(), lp[core],
                                      sub_all[rows][core].tolist(), core, ring_defect_name(sizes[ridx])))
        # ---- names and rows
        for cx in complexes:
            kinds_c, rows_c, pos_c, sub_c, core = cx[:5]
            shell = set()
            for r in rows_c:
                if r >= 0 and kinds_c[rows_c.index(r)] == "dopant":
                    shell.update(b for b in nbrs[r] if ll[b] == "lattice")
            if len(cx) > 5:
                name = cx[5]
            else:
                name = _name(lattice, kinds_c, rows_c, sub_c, element[rows], count[rows], len(shell))
            shell_pos = lp[sorted(shell)] if shell else np.empty((0, 2))
            centre = pos_c.mean(axis=0)
            angle = _principal_angle(np.vstack([pos_c, shell_pos]), theta)
            g_rows = rows[np.asarray(core, np.int64)]
            defect[g_rows] = name
            defect_id[g_rows] = next_id
            edge = bool(((centre - lo) < 1.5 * bond_px).any() or ((hi - centre) < 1.5 * bond_px).any())
            rec = {"defect_id": next_id, "frame": fr, "defect": name, "y": centre[0], "x": centre[1],
                   "y_nm": centre[0] * pixel_size, "x_nm": centre[1] * pixel_size, "angle": angle,
                   "n_dopant": kinds_c.count("dopant"), "n_vacancy": kinds_c.count("vacancy"),
                   "n_empty": kinds_c.count("empty"), "n_shell": len(shell), "at_edge": edge,
                   "rows": tuple(int(r) for r in g_rows)}
            table.append(rec)
            next_id += 1
    out = full.copy()
    cats = sorted(set(defect.tolist()) | {""})
    out["defect"] = pd.Categorical(defect.astype(str), categories=cats)
    out["defect_id"] = defect_id
    cols = DEFECT_COLUMNS[:1] + (["frame"] if "frame" in atoms.columns else []) + DEFECT_COLUMNS[1:]
    dt = pd.DataFrame(table, columns=["defect_id", "frame"] + DEFECT_COLUMNS[1:])
    dt = dt.astype({"defect_id": np.int64, "y": np.float64, "x": np.float64, "y_nm": np.float64,
                    "x_nm": np.float64, "angle": np.float64, "n_dopant": np.int64, "n_vacancy": np.int64,
                    "n_empty": np.int64, "n_shell": np.int64, "at_edge": bool})
    dt["defect"] = dt["defect"].astype(str)
    if "frame" in atoms.columns:
        dt["frame"] = dt["frame"].astype(atoms["frame"].dtype)
    dt = dt[cols]
    return with_attrs(out, atoms, pixel_size, lattice), with_attrs(dt, atoms, pixel_size, lattice)


def find_defects(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None, *,
                 cutoffs: dict | None = None, element_map: dict | None = None, gamma: float = 1.7) -> pd.DataFrame:
    """Mark the rows that belong to defect complexes and name the complexes.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table: ``y``, ``x`` (px), ``label``; optional ``frame``, ``intensity``. Site,
        element and coordination columns are computed when missing.
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``.
    cutoffs : dict, optional
        Bond cutoffs (nm) replacing :data:`~stemflow.chem.bonds.BOND_CUTOFFS`.
    element_map : dict, optional
        See :func:`~stemflow.chem.elements.assign_elements`.
    gamma : float
        Z-contrast exponent used to name dopants by intensity.

    Returns
    -------
    DataFrame
        A copy of ``atoms`` with (besides the computed site/element/coordination columns)
        ``defect`` (category: the complex's name, ``""`` for rows in none) and ``defect_id``
        (int64, unique over the table, -1 for none). Members are the dopants, the vacancy rows
        and, for ring defects, the atoms shared by most of the cluster's rings (the rotated pair
        of a Stone–Wales defect); the first shell is counted in the name but not marked.

    See Also
    --------
    defect_table : one row per complex.
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    return _analyse(atoms, pixel_size, lattice, cutoffs, element_map, gamma)[0]


def defect_table(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None, *,
                 cutoffs: dict | None = None, element_map: dict | None = None, gamma: float = 1.7) -> pd.DataFrame:
    """One row per defect complex.

    Parameters
    ----------
    atoms, pixel_size, lattice, cutoffs, element_map, gamma
        As for :func:`find_defects`.

    Returns
    -------
    DataFrame
        ``defect_id`` (int64, as in :func:`find_defects`), ``frame`` (stacks), ``defect`` (str
        name), ``y``, ``x`` (px) and ``y_nm``, ``x_nm`` (nm) of its centre (the mean of its
        nodes), ``angle`` (deg, long axis of the complex and its shell, or the lattice
        orientation mod 60° for round ones), ``n_dopant``, ``n_vacancy`` (vacancy rows of the
        network), ``n_empty`` (empty sites found by the lattice fit only), ``n_shell`` (host atoms
        bonded to its dopants), ``at_edge`` (centre within 1.5 bond of the field's edge: the shell
        may be cut) and ``rows`` (tuple of member row positions in ``atoms``).
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    return _analyse(atoms, pixel_size, lattice, cutoffs, element_map, gamma)[1]

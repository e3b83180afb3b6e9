"""Lattice sites: fit the local ideal lattice to the atoms, snap every atom to a site, find empty sites.

Graphene and 2H-MX2 seen along the beam are the same two-site hexagonal lattice: sites at
``f = (i, j) + basis[s]`` in fractional coordinates, basis ``(0, 0)`` (sublattice 0) and
``(1/3, 1/3)`` (sublattice 1), neighbouring columns one bond (a/√3) apart and always on opposite
sublattices. In MX2 sublattice 0 is the metal, 1 the chalcogen pair.

The fit, per frame:

1. the orientation from the six-fold mean of the bond angles between ``lattice`` atoms, the
   bond length from their median;
2. integer cells by walking the graph of *pristine* bonds (both ends with exactly three bonds of
   the right length and direction) breadth first, so that slow distortions never add up to a
   wrong cell — the same idea as phase unwrapping;
3. a least-squares affine map from fractional coordinates to positions (outliers dropped), plus a
   Gaussian-smoothed field of its residuals (σ = 1.5 a), the *local* correction;
4. every atom snapped to the nearest site of that map.

Units: positions in px; ``site_y``, ``site_x`` in px; the pixel size (nm/px) converts the
lattice constant of :data:`~stemflow.chem._common.LATTICES`.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order, connected_components
from scipy.spatial import cKDTree

from ..tables import EMPTY_SITES, LATTICES
from ._common import frame_groups, labels_of, resolve, with_attrs

__all__ = ["LatticeFit", "fit_lattice", "assign_sites", "empty_sites", "site_id", "site_cells"]


BASIS = np.array([[0.0, 0.0], [1.0 / 3.0, 1.0 / 3.0]])
# Cells of the three neighbours of a sublattice-0 site (on sublattice 1), and vice versa.
NEIGHBOUR_CELLS = {0: np.array([[0, 0], [-1, 0], [0, -1]]), 1: np.array([[0, 0], [1, 0], [0, 1]])}
_OFF = 1 << 20
_ANGLE_TOL = np.deg2rad(10.0)
_OCCUPIED = 0.55   # an atom within this many bonds of a site occupies it


def site_id(cells: np.ndarray, sub: np.ndarray) -> np.ndarray:
    """Integer id of the sites at integer ``cells`` (n, 2) on sublattices ``sub`` (n,).

    The id is ``((i + 2**20) * 2**21 + (j + 2**20)) * 2 + s``: unique within a frame's fit and
    decoded by :func:`site_cells`.

    Parameters
    ----------
    cells : array_like of int (n, 2)
        Integer cell indices ``(i, j)`` of the sites (in lattice vectors, not px); each must lie
        within ±2**20.
    sub : array_like of int (n,)
        Sublattice of each site: 0 (A / metal) or 1 (B / chalcogen).

    Returns
    -------
    ndarray of int64 (n,)
        One id per site, as in the ``site`` column of :func:`assign_sites`.

    Examples
    --------
    >>> from stemflow.chem import site_cells, site_id
    >>> ids = site_id([[0, 0], [1, -2]], [0, 1])
    >>> ids.dtype, len(set(ids.tolist()))
    (dtype('int64'), 2)
    >>> cells, sub = site_cells(ids)
    >>> cells.tolist(), sub.tolist()
    ([[0, 0], [1, -2]], [0, 1])
    """
    cells = np.asarray(cells, np.int64).reshape(-1, 2)
    return ((cells[:, 0] + _OFF) * (1 << 21) + (cells[:, 1] + _OFF)) * 2 + np.asarray(sub, np.int64)


def site_cells(site) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`site_id`: cells (n, 2) and sublattices (n,) of site ids.

    Parameters
    ----------
    site : array_like of int (n,)
        Site ids from :func:`site_id` (e.g. the ``site`` column of :func:`assign_sites`; -1, no
        site, does not decode to a real cell).

    Returns
    -------
    cells : ndarray of int64 (n, 2)
        Integer cell indices ``(i, j)`` (in lattice vectors, not px).
    sub : ndarray of int64 (n,)
        Sublattice of each site, 0 or 1.

    Examples
    --------
    >>> from stemflow.chem import site_cells, site_id
    >>> cells, sub = site_cells(site_id([[3, -1]], [1]))
    >>> cells.tolist(), sub.tolist()
    ([[3, -1]], [1])
    """
    site = np.asarray(site, np.int64)
    sub = site % 2
    rest = site // 2
    return np.column_stack([rest // (1 << 21) - _OFF, rest % (1 << 21) - _OFF]), sub


@dataclass
class LatticeFit:
    """The fitted lattice of one frame: ``position = M @ f + t + correction(position)``.

    Attributes
    ----------
    M : ndarray (2, 2)
        Columns are the lattice vectors a1, a2 as ``(y, x)`` in px.
    t : ndarray (2,)
        Position (px) of the site ``(0, 0)`` on sublattice 0.
    ref, res : ndarray (m, 2)
        Positions (px) of the atoms the fit used and their residuals (px), smoothed into the local
        correction.
    sigma : float
        Width (px) of the Gaussian that smooths the residuals.
    """

    M: np.ndarray
    t: np.ndarray
    ref: np.ndarray
    res: np.ndarray
    sigma: float

    @functools.cached_property
    def _ref_tree(self) -> cKDTree:
        return cKDTree(self.ref)

    @property
    def a(self) -> float:
        """Mean length of the two lattice vectors, px."""
        return float(np.linalg.norm(self.M, axis=0).mean())

    @property
    def bond(self) -> float:
        """Nearest-neighbour distance a/√3, px."""
        return self.a / np.sqrt(3.0)

    def correction(self, pos: np.ndarray) -> np.ndarray:
        """Smoothed residual (px) at positions ``pos`` (n, 2): the local departure from the affine map."""
        pos = np.asarray(pos, np.float64).reshape(-1, 2)
        out = np.zeros_like(pos)
        if len(self.ref) == 0 or len(pos) == 0:
            return out
        pairs = cKDTree(pos).sparse_distance_matrix(self._ref_tree, 3 * self.sigma, output_type="ndarray")
        if len(pairs) == 0:
            return out
        i, j = pairs["i"], pairs["j"]
        w = np.exp(-0.5 * (pairs["v"] / self.sigma) ** 2)
        wsum = np.bincount(i, weights=w, minlength=len(pos))
        for k in range(2):
            out[:, k] = np.bincount(i, weights=w * self.res[j, k], minlength=len(pos))
        ok = wsum > 0
        out[ok] /= wsum[ok, None]
        return out

    def position(self, cells: np.ndarray, sub: np.ndarray) -> np.ndarray:
        """Positions (px) of the sites at ``cells`` (n, 2) on sublattices ``sub`` (n,)."""
        f = np.asarray(cells, np.float64).reshape(-1, 2) + BASIS[np.asarray(sub, np.int64)]
        p = f @ self.M.T + self.t
        return p + self.correction(p)

    def snap(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest site of each position (n, 2) px: cells (n, 2), sublattices (n,), site positions (n, 2)."""
        pos = np.asarray(pos, np.float64).reshape(-1, 2)
        corr = self.correction(pos)
        f = np.linalg.solve(self.M, (pos - corr - self.t).T).T
        best = None
        for s in (0, 1):
            c = np.rint(f - BASIS[s]).astype(np.int64)
            p = (c + BASIS[s]) @ self.M.T + self.t + corr
            d = np.linalg.norm(p - pos, axis=1)
            if best is None:
                best = [c, np.zeros(len(pos), np.int8), p, d]
            else:
                take = d < best[3]
                best[0][take], best[1][take], best[2][take], best[3][take] = c[take], 1, p[take], d[take]
        return best[0], best[1], best[2]

    def swapped(self) -> LatticeFit:
        """The same lattice with sublattices 0 and 1 exchanged (a point inversion of the cells)."""
        return LatticeFit(-self.M, self.t + self.M @ BASIS[1], self.ref, self.res, self.sigma)


#: Lattice fits of the last frames seen, keyed by the host positions' bytes and the bond: one
#: identification fits each frame's lattice in several of its steps, on the same columns.
_FITS: OrderedDict = OrderedDict()
_FITS_LOCK = threading.Lock()
_FITS_SIZE = 32


def fit_lattice(pos: np.ndarray, host: np.ndarray, bond: float) -> LatticeFit | None:
    """Fit the two-site hexagonal lattice to one frame's atoms.

    Parameters
    ----------
    pos : ndarray (n, 2)
        Positions ``(y, x)``, px.
    host : ndarray of bool (n,)
        Atoms that may carry the fit (``label == "lattice"``).
    bond : float
        Expected nearest-neighbour distance, px (a/√3 from the lattice constant and pixel size).

    Returns
    -------
    LatticeFit or None
        None when fewer than six host atoms have three bonds of the lattice's length and direction.

    Examples
    --------
    >>> from stemflow.chem import fit_lattice
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 96, pixel_size=0.012, seed=1, defects={"Si1C3": 1})
    >>> pos = sim.atoms[["y", "x"]].to_numpy()                 # px
    >>> host = (sim.atoms["label"] == "lattice").to_numpy()
    >>> fit = fit_lattice(pos, host, bond=0.142 / 0.012)       # bond: 0.142 nm at 0.012 nm/px
    >>> round(float(fit.a) * 0.012, 3), round(float(fit.bond) * 0.012, 3)   # nm: a and a/√3
    (0.246, 0.142)
    """
    pos = np.asarray(pos, np.float64)
    P = np.ascontiguousarray(pos[np.flatnonzero(host)])
    if len(P) < 6:
        return None
    key = hashlib.blake2b(P.tobytes() + np.float64(bond).tobytes(), digest_size=16).digest()
    with _FITS_LOCK:
        if key in _FITS:
            _FITS.move_to_end(key)
            return _FITS[key]
    fit = _fit_host(P, float(bond))
    if fit is not None:
        for arr in (fit.M, fit.t, fit.ref, fit.res):
            arr.setflags(write=False)          # shared by every step that fits this frame
    with _FITS_LOCK:
        _FITS[key] = fit
        while len(_FITS) > _FITS_SIZE:
            _FITS.popitem(last=False)
    return fit


def bond_orientation(P: np.ndarray, bond: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """The bonds among positions ``P`` (n, 2) px of a honeycomb, and their six-fold orientation.

    Parameters
    ----------
    P : ndarray (n, 2)
        Column positions, px.
    bond : float
        Expected bond length, px.

    Returns
    -------
    pairs : ndarray of int (m, 2)
        Every pair closer than 1.3 ``bond``.
    length : ndarray (m,)
        Their distances, px.
    phi : ndarray (m,)
        Their directions, radians (``arctan2(dy, dx)``).
    near : ndarray of bool (m,)
        Pairs whose length is within 25 % of ``bond`` (the bonds).
    theta : float
        The lattice's orientation, radians: the six-fold mean of the bonds' directions less 30°
        (the angle of the first lattice vector of :func:`lattice_matrix`); NaN without bonds.
    """
    pairs = cKDTree(P).query_pairs(1.3 * bond, output_type="ndarray") if len(P) > 1 else np.zeros((0, 2), np.int64)
    d = P[pairs[:, 1]] - P[pairs[:, 0]] if len(pairs) else np.zeros((0, 2))
    length = np.hypot(d[:, 0], d[:, 1])
    near = (length > 0.75 * bond) & (length < 1.25 * bond)
    phi = np.arctan2(d[:, 0], d[:, 1])
    theta = float(np.angle(np.exp(6j * phi[near]).mean()) / 6.0 - np.pi / 6.0) if near.any() else float("nan")
    return pairs, length, phi, near, theta


def lattice_matrix(theta: float, a: float) -> np.ndarray:
    """Lattice vectors (columns, (y, x) px) of a hexagonal lattice of constant ``a`` px whose first
    vector points at angle ``theta`` (radians, from the x axis) and the second 60° further."""
    return a * np.array([[np.sin(theta), np.sin(theta + np.pi / 3)],
                         [np.cos(theta), np.cos(theta + np.pi / 3)]])


def _fit_host(P: np.ndarray, bond: float) -> LatticeFit | None:
    """:func:`fit_lattice` on the host positions ``P`` (n, 2) px."""
    pairs, length, phi, near, theta = bond_orientation(P, bond)
    if len(pairs) < 6 or near.sum() < 6:
        return None
    dev = np.abs(np.angle(np.exp(6j * (phi - theta - np.pi / 6.0)))) / 6.0
    aligned = near & (dev < _ANGLE_TOL)
    if aligned.sum() < 6:
        return None
    b = float(np.median(length[aligned]))
    strict = aligned & (np.abs(length / b - 1.0) < 0.15)
    e = pairs[strict]
    deg = np.bincount(e.ravel(), minlength=len(P))
    e = e[(deg[e[:, 0]] == 3) & (deg[e[:, 1]] == 3)]
    if len(e) < 6:
        return None
    a = b * np.sqrt(3.0)
    M0 = lattice_matrix(theta, a)
    n = len(P)
    g = sparse.coo_array((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    ncomp, comp = connected_components(g, directed=False)
    sizes = np.bincount(comp, minlength=ncomp)
    main = int(np.argmax(sizes))
    cells = np.zeros((n, 2), np.int64)
    # Sublattice of each atom from the directions of its bonds: A→B bonds point along θ + 30°
    # + k·120°, B→A bonds the other way, so cos 3(φ − θ − 30°) is +1 seen from A, −1 from B.
    de = P[e[:, 1]] - P[e[:, 0]]
    c3 = np.cos(3.0 * (np.arctan2(de[:, 0], de[:, 1]) - theta - np.pi / 6.0))
    vote = np.bincount(e[:, 0], weights=c3, minlength=n) - np.bincount(e[:, 1], weights=c3, minlength=n)
    sub = (vote < 0).astype(np.int64)
    order, pred = breadth_first_order(g, int(np.flatnonzero(comp == main)[0]), directed=False,
                                      return_predecessors=True)
    Minv = np.linalg.inv(M0)
    basis_px = BASIS @ M0.T
    # Cell of every atom of the main patch: the sum of the cell steps along its path from the
    # root of the breadth-first tree, by pointer jumping (log2 of the tree's depth passes).
    root = int(order[0])
    up = pred.copy()
    up[root] = root
    up[up < 0] = np.arange(n)[up < 0]                   # atoms outside the patch: their own root
    step = np.rint((P - P[up] + basis_px[sub[up]] - basis_px[sub]) @ Minv.T).astype(np.int64)
    step[up == np.arange(n)] = 0
    while True:
        nxt = up[up]
        step = step + step[up]
        done = np.array_equal(nxt, up)
        up = nxt
        if done:
            break
    cells[order] = step[order]
    use = order
    fit = _affine(P[use], cells[use], sub[use], b, bond_px=b)
    if fit is None:
        return None
    # Other pristine patches (cut off from the main one by defects or gaps): cells from the fit.
    others = np.flatnonzero((comp != main) & (sizes[comp] >= 3))
    if len(others):
        c2, s2, _ = fit.snap(P[others])
        use = np.concatenate([use, others])
        cells[others], sub[others] = c2, s2
        fit = _affine(P[use], cells[use], sub[use], b, bond_px=b) or fit
    return fit


def _affine(P, cells, sub, b, bond_px) -> LatticeFit | None:
    """Least-squares affine map fractional → px, refitted once without outliers; residual field."""
    f = cells + BASIS[sub]
    X = np.column_stack([f, np.ones(len(f))])
    keep = np.ones(len(P), bool)
    for _ in range(2):
        if keep.sum() < 4:
            return None
        W, *_ = np.linalg.lstsq(X[keep], P[keep], rcond=None)
        r = P - X @ W
        keep = np.hypot(r[:, 0], r[:, 1]) < 0.35 * bond_px
    M, t = W[:2].T, W[2]
    a = float(np.linalg.norm(M, axis=0).mean())
    return LatticeFit(M, t, P[keep], r[keep], sigma=1.5 * a)


def fit_frame(pos, labels, bond_px, intensity=None, mx2=False) -> LatticeFit | None:
    fit = fit_lattice(pos, labels == "lattice", bond_px)
    if fit is None or not mx2:
        return fit
    # MX2: sublattice 0 must be the metal, the brighter columns.
    if intensity is not None and np.isfinite(intensity).any():
        host = labels == "lattice"
        _, s, _ = fit.snap(pos[host])
        i0 = np.nanmedian(intensity[host][s == 0]) if (s == 0).any() else -np.inf
        i1 = np.nanmedian(intensity[host][s == 1]) if (s == 1).any() else -np.inf
        if i1 > i0:
            fit = fit.swapped()
    return fit


def intensity_column(atoms) -> np.ndarray | None:
    if "intensity" not in atoms.columns:
        return None
    return atoms["intensity"].to_numpy(np.float64)


def _frame_fits(atoms, pixel_size, lattice, pos):
    """Per frame: ``(frame, rows, fitted lattice, labels of the rows, bond length px)``, frames
    whose lattice cannot be fitted left out."""
    bond_px = LATTICES[lattice]["bond"] / pixel_size
    labels = labels_of(atoms)
    inten = intensity_column(atoms)
    for fr, rows in frame_groups(atoms):
        fit = fit_frame(pos[rows], labels[rows], bond_px, None if inten is None else inten[rows],
                         mx2=lattice in ("ws2", "mos2"))
        if fit is not None:
            yield fr, rows, fit, labels[rows], bond_px


def assign_sites(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None) -> pd.DataFrame:
    """Snap every atom (and vacancy) to a site of the locally fitted lattice.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table: ``y``, ``x`` (px), ``label``; optional ``frame`` (each frame is fitted on its
        own) and ``intensity`` (in MX2 it tells the metal sublattice, the brighter one).
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        ``graphene``, ``ws2``, ``mos2`` or ``amorphous``; default ``atoms.attrs["lattice"]``.

    Returns
    -------
    DataFrame
        A copy of ``atoms`` with ``site`` (int64 id, see :func:`site_id`; -1 where no lattice
        could be fitted, e.g. amorphous), ``sublattice`` (int8: 0 = A / metal, 1 = B / chalcogen;
        -1 without a fit) and ``site_y``, ``site_x`` (float64, px: the ideal site's position).

    Notes
    -----
    Ids are consistent within a frame; each frame has its own origin, so compare sites across
    frames by ``site_y``, ``site_x`` after drift correction. An atom far from every site (a
    Stone–Wales pair sits 0.68 bond off its sites, Si in a divacancy 0.5 bond) still gets the
    nearest one; its distance from it is ``hypot(y - site_y, x - site_x)``.

    Examples
    --------
    >>> import numpy as np
    >>> from stemflow.chem import assign_sites
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 96, pixel_size=0.012, seed=1, defects={"Si1C3": 1})
    >>> atoms = sim.atoms[["frame", "y", "x", "label"]]
    >>> s = assign_sites(atoms, pixel_size=0.012, lattice="graphene")
    >>> s.columns.tolist()[4:]
    ['site', 'sublattice', 'site_y', 'site_x']
    >>> bool((s["site"] >= 0).all()), s["sublattice"].value_counts().sort_index().tolist()
    (True, [27, 23])
    >>> bool(np.hypot(s["y"] - s["site_y"], s["x"] - s["site_x"]).max() < 0.5)   # px
    True
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    out = atoms.copy()
    n = len(out)
    site = np.full(n, -1, np.int64)
    sub = np.full(n, -1, np.int8)
    sy = np.full(n, np.nan)
    sx = np.full(n, np.nan)
    if LATTICES[lattice]["a"] is not None:
        pos = out[["y", "x"]].to_numpy(np.float64)
        for _, rows, fit, _labels, _bond in _frame_fits(out, pixel_size, lattice, pos):
            c, s, p = fit.snap(pos[rows])
            site[rows], sub[rows], sy[rows], sx[rows] = site_id(c, s), s, p[:, 0], p[:, 1]
    out["site"], out["sublattice"], out["site_y"], out["site_x"] = site, sub, sy, sx
    return with_attrs(out, atoms, pixel_size, lattice)


def frame_empty_sites(fit: LatticeFit, pos, labels, bond_px):
    """Empty sites of one frame: (positions px, cells, sublattices, n occupied neighbours, detected)."""
    vac = labels == "vacancy"
    atom_pos = pos[~vac]
    if len(atom_pos) == 0:
        return None
    c, s, p = fit.snap(atom_pos)
    occ = np.hypot(*(p - atom_pos).T) < _OCCUPIED * fit.bond
    occ_id = np.unique(site_id(c[occ], s[occ]))
    nb_cells, nb_sub = [], []
    for k in (0, 1):
        sel = occ & (s == k)
        for off in NEIGHBOUR_CELLS[k]:
            nb_cells.append(c[sel] + off)
            nb_sub.append(np.full(int(sel.sum()), 1 - k))
    nb_cells = np.concatenate(nb_cells)
    nb_sub = np.concatenate(nb_sub)
    ids, first, counts = np.unique(site_id(nb_cells, nb_sub), return_index=True, return_counts=True)
    cand = ~np.isin(ids, occ_id) & (counts >= 2)
    if not cand.any():
        return None
    cc, cs, cn = nb_cells[first[cand]], nb_sub[first[cand]], counts[cand]
    cp = fit.position(cc, cs)
    d_atom, _ = cKDTree(atom_pos).query(cp)
    lo, hi = atom_pos.min(axis=0) + 0.5 * fit.bond, atom_pos.max(axis=0) - 0.5 * fit.bond
    inside = (cp >= lo).all(axis=1) & (cp <= hi).all(axis=1)
    keep = (d_atom > _OCCUPIED * fit.bond) & inside
    cp, cc, cs, cn = cp[keep], cc[keep], cs[keep], cn[keep]
    if vac.any() and len(cp):
        d_vac, _ = cKDTree(pos[vac]).query(cp)
        detected = d_vac < _OCCUPIED * fit.bond
    else:
        detected = np.zeros(len(cp), bool)
    return cp, cc, cs, cn, detected


def empty_sites(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None) -> pd.DataFrame:
    """Sites of the fitted lattice where no atom was found: vacancies seen geometrically.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table (``y``, ``x`` px, ``label``; optional ``frame``, ``intensity``).
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``.

    Returns
    -------
    DataFrame
        One row per empty site: ``frame`` (when ``atoms`` has it), ``y``, ``x`` (px), ``y_nm``,
        ``x_nm``, ``site``, ``sublattice`` (as :func:`assign_sites`), ``n_neighbours`` (int8:
        occupied neighbouring sites, 2 or 3) and ``detected`` (bool: a ``vacancy`` row of the
        network lies on it — the cross-check of the geometry against the network's class).

    Notes
    -----
    A site is empty when no atom (any row but a ``vacancy``) lies within 0.55 bond of it, at
    least two of its three neighbouring sites are occupied, and it lies inside the field covered
    by atoms (0.5 bond from its bounding box). A missed atom looks like an empty site that is not
    ``detected``; a Stone–Wales pair leaves its two sites empty, and Si in a divacancy sits 0.5 bond
    from each of its two (not empty).

    Examples
    --------
    >>> from stemflow.chem import empty_sites
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 96, pixel_size=0.012, seed=1, defects={"V1": 1})
    >>> atoms = sim.atoms[["frame", "y", "x", "label"]]
    >>> e = empty_sites(atoms, pixel_size=0.012, lattice="graphene")
    >>> e.columns.tolist()
    ['frame', 'y', 'x', 'y_nm', 'x_nm', 'site', 'sublattice', 'n_neighbours', 'detected']
    >>> e["n_neighbours"].tolist(), e["detected"].tolist()     # the vacancy row lies on it
    ([3], [True])
    >>> missed = atoms[atoms["label"] != "vacancy"]              # without the vacancy row
    >>> empty_sites(missed, pixel_size=0.012, lattice="graphene")["detected"].tolist()
    [False]
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    frames = []
    if LATTICES[lattice]["a"] is not None:
        pos = atoms[["y", "x"]].to_numpy(np.float64)
        for fr, rows, fit, labels, bond_px in _frame_fits(atoms, pixel_size, lattice, pos):
            got = frame_empty_sites(fit, pos[rows], labels, bond_px)
            if got is None:
                continue
            cp, cc, cs, cn, det = got
            t = pd.DataFrame({"y": cp[:, 0], "x": cp[:, 1], "y_nm": cp[:, 0] * pixel_size,
                              "x_nm": cp[:, 1] * pixel_size, "site": site_id(cc, cs),
                              "sublattice": cs.astype(np.int8), "n_neighbours": cn.astype(np.int8),
                              "detected": det})
            if fr is not None:
                t.insert(0, "frame", fr)
            frames.append(t)
    cols = (["frame"] if "frame" in atoms.columns else []) + EMPTY_SITES.names
    if frames:
        out = pd.concat(frames, ignore_index=True)[cols]
    else:
        out = pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            cols, (["int64"] if "frame" in atoms.columns else []) +
            ["float64", "float64", "float64", "float64", "int64", "int8", "int8", "bool"])})
    return with_attrs(out, atoms, pixel_size, lattice)

"""Bond graph and coordination numbers from element-pair distance cutoffs.

Two columns are bonded when their projected distance is below the cutoff of their pair of
elements. Graphene: C–C 0.175 nm (bond 0.142, next neighbour 0.246), Si–C 0.21 nm (Si in a
divacancy sits 0.188 nm from its four C), Si–Si 0.27 nm (the three Si around a vacancy in Si3C6
are a = 0.246 nm apart; a cutoff at 0.25 nm would lie within the localisation error of that
distance, 0.27 nm stays below the third-neighbour 0.284 nm). 2H-MX2 in projection: metal–chalcogen
columns 0.23 nm (projected bond a/√3 = 0.184 nm, next neighbour a = 0.318 nm).

Units: cutoffs and lengths in nm; positions in px converted with the pixel size (nm/px).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..tables import BONDS, LATTICES
from ._common import BOND_CUTOFFS, bond_cutoffs, frame_groups, pair_key, positions_nm, resolve, with_attrs
from .dopants import dopant_geometry_frames

__all__ = ["BOND_CUTOFFS", "bond_cutoffs", "find_bonds", "coordination"]

_METALS = {"W", "Mo", "Cr", "V", "Nb", "Re", "Ta", "Ti"}


def _pair_cutoff(table: dict, lattice: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cutoff (nm) of each element pair; pairs not in the table get the default, except that two
    metals or two chalcogens in MX2 never bond (same sublattice)."""
    out = np.full(len(a), float(table["default"]))
    # One key per distinct pair of elements (a handful), not per pair of columns.
    names, code = np.unique(np.concatenate([np.asarray(a, object), np.asarray(b, object)]).astype(str),
                            return_inverse=True)
    n = len(names)
    pair_code = code[:len(a)] * n + code[len(a):]
    uniq, inv = np.unique(pair_code, return_inverse=True)
    keys = np.array([pair_key(names[u // n], names[u % n]) for u in uniq], dtype=object)[inv] if len(a) \
        else np.empty(0, object)
    for k, v in table.items():
        if k != "default":
            out[keys == k] = v
    if lattice in ("ws2", "mos2"):
        ma = np.isin(a, list(_METALS))
        mb = np.isin(b, list(_METALS))
        listed = np.isin(keys, [k for k in table if k != "default"])
        out[(ma == mb) & ~listed] = 0.0
    return out


def _elements(atoms: pd.DataFrame, pixel_size, lattice) -> pd.DataFrame:
    if "element" not in atoms.columns or "count" not in atoms.columns:
        from .elements import assign_elements
        atoms = assign_elements(atoms, pixel_size, lattice)
    return atoms


def _frame_bonds(P_nm: np.ndarray, element: np.ndarray, count: np.ndarray, table: dict, lattice: str):
    """Bonded pairs (i, j, length nm) among rows with atoms (count > 0) of one frame."""
    atom = np.flatnonzero(count > 0)
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    if len(atom) < 2:
        return empty
    rmax = max(v for v in table.values())
    pairs = cKDTree(P_nm[atom]).query_pairs(rmax, output_type="ndarray")
    if len(pairs) == 0:
        return empty
    i, j = atom[pairs[:, 0]], atom[pairs[:, 1]]
    length = np.linalg.norm(P_nm[i] - P_nm[j], axis=1)
    keep = length < _pair_cutoff(table, lattice, element[i], element[j])
    return i[keep], j[keep], length[keep]


def find_bonds(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None, *,
               cutoffs: dict | None = None) -> pd.DataFrame:
    """Bonds between columns closer than the cutoff of their pair of elements.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table (``y``, ``x`` px, ``label``; optional ``frame``). ``element`` and ``count``
        are taken from :func:`~stemflow.chem.elements.assign_elements` when missing.
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``.
    cutoffs : dict, optional
        Cutoffs (nm) replacing those of :data:`BOND_CUTOFFS`, e.g. ``{"Si-Si": 0.25}``.

    Returns
    -------
    DataFrame
        One row per bond: ``frame`` (stacks), ``i``, ``j`` (int64 row positions in ``atoms``,
        for ``.iloc``; i < j), ``element_i``, ``element_j`` and ``length_nm`` (float64, nm).
        Empty sites (``count == 0``) take no part.

    Examples
    --------
    >>> t = pd.DataFrame({"y": [0.0, 0.0, 0.0], "x": [0.0, 14.2, 40.0],
    ...                   "label": ["lattice", "dopant", "lattice"]})
    >>> find_bonds(t, pixel_size=0.01, lattice="graphene")[["i", "j", "length_nm"]]
       i  j  length_nm
    0  0  1      0.142
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    table = bond_cutoffs(lattice, cutoffs)
    full = _elements(atoms, pixel_size, lattice)
    P = positions_nm(full, pixel_size)
    element = full["element"].astype(str).to_numpy()
    count = full["count"].to_numpy(np.int64)
    parts = []
    for fr, rows in frame_groups(full):
        i, j, d = _frame_bonds(P[rows], element[rows], count[rows], table, lattice)
        i, j = rows[i], rows[j]
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        t = pd.DataFrame({"i": lo, "j": hi, "element_i": element[lo], "element_j": element[hi], "length_nm": d})
        if fr is not None:
            t.insert(0, "frame", fr)
        parts.append(t)
    cols = (["frame"] if "frame" in atoms.columns else []) + BONDS.names
    if parts:
        out = pd.concat(parts, ignore_index=True).sort_values(cols[:-3], kind="stable").reset_index(drop=True)
    else:
        out = pd.DataFrame({"i": pd.Series(dtype="int64"), "j": pd.Series(dtype="int64"),
                            "element_i": pd.Series(dtype="str"), "element_j": pd.Series(dtype="str"),
                            "length_nm": pd.Series(dtype="float64")})
        if "frame" in atoms.columns:
            out.insert(0, "frame", pd.Series(dtype="int64"))
    return with_attrs(out[cols], atoms, pixel_size, lattice)


def coordination(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None, *,
                 cutoffs: dict | None = None) -> pd.DataFrame:
    """Coordination number of every column: the atoms bonded to it.

    Parameters
    ----------
    atoms, pixel_size, lattice, cutoffs
        As for :func:`find_bonds`.

    Returns
    -------
    DataFrame
        A copy of ``atoms`` (with ``element``, ``count`` when they had to be computed) and
        ``coordination`` (int8): the number of atoms bonded to the column, a neighbouring column
        counting as many atoms as it holds (W in WS2: 3 S pairs → 6). For an empty site
        (``count == 0``) it is the number of atoms within the host bond cutoff of the site, i.e.
        those that lost a neighbour (3 around a graphene vacancy).

    Examples
    --------
    >>> t = pd.DataFrame({"y": [0.0, 0.0, 12.3, -12.3], "x": [0.0, 14.2, -7.1, -7.1],
    ...                   "label": ["dopant", "lattice", "lattice", "lattice"]})
    >>> coordination(t, pixel_size=0.01, lattice="graphene")["coordination"].tolist()
    [3, 1, 1, 1]
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    table = bond_cutoffs(lattice, cutoffs)
    out = _elements(atoms, pixel_size, lattice).copy()
    P = positions_nm(out, pixel_size)
    element = out["element"].astype(str).to_numpy()
    count = out["count"].to_numpy(np.int64)
    coord = np.zeros(len(out), np.int64)
    host = LATTICES[lattice]["host"]
    host_cut = _pair_cutoff(table, lattice, np.array([host[0]]), np.array([host[-1]]))[0]
    unknown = out["label"].astype(str).to_numpy() == "unknown"
    for _, rows in frame_groups(out):
        i, j, _ = _frame_bonds(P[rows], element[rows], count[rows], table, lattice)
        n = len(rows)
        c = np.bincount(i, weights=count[rows][j], minlength=n) + np.bincount(j, weights=count[rows][i], minlength=n)
        empty = np.flatnonzero((count[rows] == 0) & ~unknown[rows])
        full_rows = np.flatnonzero(count[rows] > 0)
        if len(empty) and len(full_rows):
            nb = cKDTree(P[rows][full_rows]).query_ball_point(P[rows][empty], host_cut)
            c[empty] = [count[rows][full_rows[k]].sum() for k in nb]
        coord[rows] = c
    if lattice == "graphene":
        # Dopants: host columns on the shell sites of the local lattice, plus bonded dopants,
        # not every blob within the cutoff (a heavy atom's probe tail makes blobs beside it).
        for _, rows, _fit, geo in dopant_geometry_frames(out, pixel_size, lattice, cutoffs):
            c = geo.coordination()
            ok = c >= 0
            coord[rows[geo.rows[ok]]] = c[ok]
    out["coordination"] = coord.astype(np.int8)
    return with_attrs(out, atoms, pixel_size, lattice)

"""Defect complexes: dopant groups with their first shell, vacancy complexes and ring defects.

Per frame, the *nodes* of defects are the network's ``dopant`` rows, its ``vacancy`` rows (kept
when no atom sits on the same site and the image does not show an intact column there: the
cross-checks of the class against the geometry and the occupancy), in MX2 the chalcogen
``lattice`` rows the network doubted (``prob`` under :data:`DOUBTFUL`) whose occupancy reads a
vacancy (relabelled ``vacancy``), and the empty sites of the fitted lattice that the network did
not mark (:func:`~stemflow.chem.sites.empty_sites`); with the
image, an empty site whose occupancy is that of an intact column is an atom the network missed
and is dropped, and in MX2 one whose occupancy is that of an empty or half-empty column is a
vacancy the network missed. Dopants bonded to each other, and vacancies or empty sites within 1.2
bond of a dopant, a vacancy or another empty site, form one complex. A complex needs at least one
node that was seen (a dopant, a vacancy row, an empty site confirmed by the image): unconfirmed
empty sites alone are missed atoms more often than vacancies. Stone–Wales defects are also found
on the fitted lattice (one or two atoms across the midpoint of two empty neighbouring sites), so
they are named even when a misplaced or merged atom breaks their 5/7 rings.
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

from ..tables import ATOMIC_NUMBER, DEFECTS, LATTICES
from ._common import bond_cutoffs, frame_groups, is_mx2, label_categories, labels_of, resolve, with_attrs
from .bonds import coordination, find_bonds
from .rings import find_rings
from .dopants import dopant_geometry
from .sites import NEIGHBOUR_CELLS as _NB_CELLS, frame_empty_sites, fit_frame, assign_sites

__all__ = ["find_defects", "defect_table", "ring_defect_name"]


_LINK = 1.2        # bonds: vacancies / empty sites this close to another node join its complex
_SAME_SITE = 0.4   # bonds: a vacancy row with an atom this close is contradicted by the geometry
_ODD_RINGS = (4, 5, 7, 8)
#: A ``lattice`` row on an MX2 chalcogen site whose network ``prob`` is under this is the image's to
#: decide, as an empty site is: where its occupancy reads an empty or half-empty column it is a
#: vacancy (the network weighed it a coin toss; the counts do not)
DOUBTFUL = 0.6
#: Bonds: no host column lies closer than this to a dopant (Si–C is 0.17–0.19 nm, longer than the
#: C–C bond; 0.85 allows 0.15 bond of localisation error); a blob closer is the dopant's halo.
_MIN_HOST_GAP = 0.85


def ring_defect_name(sizes) -> str:
    """Name of a cluster of non-hexagonal rings from its ring sizes.

    Parameters
    ----------
    sizes : iterable of int
        Number of members of each ring of the cluster, in any order.

    Returns
    -------
    str
        ``"SW"`` (Stone–Wales: pentagons and heptagons only, at most four rings, so also 5-7-7
        or 5-5-7 when a bond is missed), ``"585"`` (two pentagons and an octagon: a
        reconstructed divacancy), else ``"R"`` followed by the sorted ring sizes.

    Examples
    --------
    >>> from stemflow.chem import ring_defect_name
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


def _name(lattice, kinds, rows, sub, element, ncount, shell_n):
    """Name of one complex from its nodes (``ncount``: atoms left in each vacancy node's column)."""
    host = LATTICES[lattice]["host"]
    dop = [r for k, r in zip(kinds, rows) if k == "dopant"]
    if is_mx2(lattice):
        metal, chalc = host
        sym = []
        for k, r, s, nc in zip(kinds, rows, sub, ncount):
            site_el = chalc if s == 1 else metal
            if k == "dopant":
                sym.append(f"{element[r]}_{site_el}")
            elif s == 1:
                sym.append(f"V_{chalc}" if nc > 0 else f"V_{chalc}2")
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


def _intact_count(lattice, sub):
    """Atoms in an intact column of each sublattice (2 for an MX2 chalcogen pair, else 1)."""
    sub = np.asarray(sub, np.int64)
    return np.where(is_mx2(lattice) & (sub == 1), 2, 1)


def _empty_nodes(lattice, emap, occ, sub):
    """Kind and atom count of each empty site (not marked by the network) from its occupancy.

    ``"site"``: a vacancy confirmed by the image (counts as seen); ``"empty"``: no image
    evidence either way (joins complexes but makes none); ``""``: an intact column the network
    missed (dropped).
    """
    kinds = np.full(len(occ), "empty", dtype=object)
    counts = np.zeros(len(occ), np.int64)
    have = np.isfinite(occ)
    metal_cut = float(emap.get("intact_metal", np.inf))
    if is_mx2(lattice):
        ch = have & (sub == 1)
        half, full = float(emap.get("half_vacancy", 0.25)), float(emap.get("intact", 0.75))
        kinds[ch] = "site"
        counts[ch & (occ > half)] = 1
        kinds[ch & (occ >= full)] = ""
        me = have & (sub != 1)
        kinds[me] = np.where(occ[me] >= metal_cut, "", "site")
    else:
        kinds[have & (occ >= metal_cut)] = ""
    return kinds, counts


def _geometric_sw(fit, lp, ll, bond_px):
    """Stone–Wales defects seen on the fitted lattice: the core rows of each one found.

    A Stone–Wales defect turns one bond by 90°: the bond's two sites A, B are left empty and its
    two atoms sit across the bond's midpoint, 0.68 bond from A and B, where no atom of the
    perfect lattice lies (the nearest others are 1.32 bond from the midpoint). So: one or two
    ``lattice`` atoms within 0.8 bond of the midpoint of two neighbouring sites, each more than
    0.3 bond from both sites, and no other atom within 0.55 bond of either site, make a
    Stone–Wales defect, whatever the rings look like (one atom when the network merges the
    rotated pair into one blob at the midpoint, or misses one of them).
    """
    out = []
    if fit is None or len(lp) == 0:
        return out
    atom = ll != "vacancy"
    apos = lp[atom]
    arow = np.flatnonzero(atom)
    if len(apos) == 0:
        return out
    c, s, p = fit.snap(apos)
    off = np.hypot(*(apos - p).T)
    cand = np.flatnonzero((off > 0.3 * bond_px) & (ll[arow] == "lattice"))
    if len(cand) == 0:
        return out
    tree = cKDTree(apos)
    seen = set()
    for k in cand:
        nb_cells = c[k] + _NB_CELLS[int(s[k])]
        nb_pos = fit.position(nb_cells, np.full(3, 1 - int(s[k])))
        mids = 0.5 * (p[k] + nb_pos)
        b = int(np.argmin(np.hypot(*(mids - apos[k]).T)))
        mid = mids[b]
        if np.hypot(*(mid - apos[k])) > 0.55 * bond_px:
            continue
        key = tuple(sorted([(int(c[k][0]), int(c[k][1]), int(s[k])),
                            (int(nb_cells[b][0]), int(nb_cells[b][1]), 1 - int(s[k]))]))
        if key in seen:
            continue
        seen.add(key)
        core = np.asarray(tree.query_ball_point(mid, 0.8 * bond_px), np.int64)
        if not 1 <= len(core) <= 2 or (ll[arow[core]] != "lattice").any():
            continue
        ends = np.vstack([p[k], nb_pos[b]])
        if (np.hypot(*(apos[core][:, None, :] - ends[None]).transpose(2, 0, 1)) <= 0.3 * bond_px).any():
            continue
        on_ends = set()
        for e in ends:
            on_ends.update(tree.query_ball_point(e, 0.55 * bond_px))
        if not on_ends <= set(core.tolist()):
            continue
        out.append(np.sort(arow[core]))
    return out


def analyse_defects(atoms, pixel_size, lattice, cutoffs=None, element_map=None, gamma=1.7, image=None):
    """(atoms with defect, defect_id; defects table)."""
    from .elements import element_map_for
    from .occupancy import OCCUPANCY_RADIUS, image_of_frame, frame_occupancy

    emap = element_map_for(lattice, element_map)
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
    has_lattice = LATTICES[lattice]["a"] is not None
    bond_px = LATTICES[lattice]["bond"] / pixel_size
    ring_frame = rings["frame"].to_numpy() if "frame" in rings.columns else None
    occ_all = full["occupancy"].to_numpy(np.float64) if "occupancy" in full.columns else None
    reread = None           # MX2 chalcogen rows the network doubted and the image reads as vacancies
    if is_mx2(lattice) and occ_all is not None and "prob" in full.columns:
        prob_all = full["prob"].to_numpy(np.float64)
        reread = np.zeros(n, bool)
    cut_table = bond_cutoffs(lattice, cutoffs)
    dop_cut = cut_table.get("Si-Si", cut_table["default"])

    defect = np.full(n, "", dtype=object)
    defect_id = np.full(n, -1, np.int64)
    table = []
    for fr, rows in frame_groups(full):
        next_id = 0          # numbered within each frame: ids must not depend on which frames share a call
        lp, ll = pos[rows], labels[rows]
        local = np.full(n, -1, np.int64)
        local[rows] = np.arange(len(rows))
        # ---- nodes: dopants, vacancy rows (cross-checked), empty sites
        kinds, nrow, npos, nsub, ncnt = [], [], [], [], []
        atom_rows = np.flatnonzero(ll != "vacancy")
        tree_atoms = cKDTree(lp[atom_rows]) if len(atom_rows) else None
        lsub, lcount, lel = sub_all[rows], count[rows], element[rows]
        intact = _intact_count(lattice, lsub)
        for r in np.flatnonzero(ll == "dopant"):
            kinds.append("dopant"), nrow.append(r), npos.append(lp[r]), nsub.append(lsub[r]), ncnt.append(1)
        for r in np.flatnonzero(ll == "vacancy"):
            if tree_atoms is not None and tree_atoms.query(lp[r])[0] < _SAME_SITE * bond_px:
                continue
            if lel[r] != "" and lcount[r] >= intact[r]:
                continue   # vetoed: the image shows an intact column there
            kinds.append("vacancy"), nrow.append(r), npos.append(lp[r]), nsub.append(lsub[r]), ncnt.append(lcount[r])
        if reread is not None:
            doubt = np.flatnonzero((ll == "lattice") & (lsub == 1) & (prob_all[rows] < DOUBTFUL)
                                   & np.isfinite(occ_all[rows]))
            dk, dc = _empty_nodes(lattice, emap, occ_all[rows][doubt], lsub[doubt])
            for r, k_, c_ in zip(doubt, dk, dc):
                if k_ == "site":          # the image reads an empty or half-empty column
                    kinds.append("vacancy"), nrow.append(r), npos.append(lp[r]), nsub.append(1), ncnt.append(int(c_))
                    reread[rows[r]], count[rows[r]] = True, int(c_)
        fit = None
        if has_lattice:
            fit = fit_frame(lp, ll, bond_px, None if inten is None else inten[rows], mx2=is_mx2(lattice))
            if fit is not None:
                got = frame_empty_sites(fit, lp, ll, bond_px)
                if got is not None:
                    cp, _, cs, _, det = got
                    ep, es = cp[~det], cs[~det].astype(np.int64)
                    occ = np.full(len(ep), np.nan)
                    if image is not None and len(ep):
                        occ = frame_occupancy(fit, image_of_frame(image, fr), lp, lsub, ep, es, ll == "lattice",
                                              OCCUPANCY_RADIUS * bond_px, plane=is_mx2(lattice))
                    ek, ec = _empty_nodes(lattice, emap, occ, es)
                    for p, s_, k_, c_ in zip(ep, es, ek, ec):
                        if k_:
                            kinds.append(k_), nrow.append(-1), npos.append(p), nsub.append(int(s_)), ncnt.append(int(c_))
        geo = None
        if lattice == "graphene":
            geo = dopant_geometry(fit, lp, ll, bond_px, dop_cut / pixel_size,
                                  None if occ_all is None else occ_all[rows])
            geo_k = {int(r): k for k, r in enumerate(geo.rows)}
        theta = 0.0
        if fit is not None:
            theta = float(np.degrees(np.arctan2(fit.M[0, 0], fit.M[1, 0])) % 60.0)
        kinds_a = np.asarray(kinds, dtype=object)
        nrow_a = np.asarray(nrow, np.int64)
        npos_a = np.asarray(npos, np.float64).reshape(-1, 2)
        nsub_a = np.asarray(nsub, np.int64)
        ncnt_a = np.asarray(ncnt, np.int64)
        m = len(kinds_a)
        # Bonds of this frame, in local row numbers.
        fsel = (local[bi] >= 0) & (local[bj] >= 0)
        li, lj = local[bi[fsel]], local[bj[fsel]]
        nbrs = [[] for _ in range(len(rows))]
        for a, b in zip(li, lj):
            nbrs[a].append(b)
            nbrs[b].append(a)
        lo, hi = (lp.min(axis=0), lp.max(axis=0)) if len(lp) else (np.zeros(2), np.zeros(2))
        complexes = []   # dicts: kinds, rows, pos, sub, ncount (atoms left per node), core rows[, name]
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
                if not np.isin(kinds_a[idx], ["dopant", "vacancy", "site"]).any():
                    continue
                core = nrow_a[idx][nrow_a[idx] >= 0]
                complexes.append(dict(kinds=kinds_a[idx].tolist(), rows=nrow_a[idx].tolist(), pos=npos_a[idx],
                                      sub=nsub_a[idx].tolist(), ncount=ncnt_a[idx].tolist(), core=core))
        # ---- Stone–Wales defects seen on the fitted lattice (graphene)
        taken = np.zeros(len(rows), bool)
        if lattice == "graphene":
            near_nodes = cKDTree(np.vstack([c["pos"] for c in complexes])) if complexes else None
            for core in _geometric_sw(fit, lp, ll, bond_px):
                if near_nodes is not None and (near_nodes.query(lp[core])[0] < _LINK * bond_px).any():
                    continue
                taken[core] = True
                complexes.append(dict(kinds=["ring"] * len(core), rows=core.tolist(), pos=lp[core],
                                      sub=lsub[core].tolist(), ncount=[1] * len(core), core=core, name="SW"))
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
                near_nodes = cKDTree(np.vstack([c["pos"] for c in complexes])) if complexes else None
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
                    complexes.append(dict(kinds=["ring"] * len(core), rows=core.tolist(), pos=lp[core],
                                          sub=lsub[core].tolist(), ncount=[1] * len(core), core=core,
                                          name=ring_defect_name(sizes[ridx])))
        # ---- names and rows
        for cx in complexes:
            kinds_c, rows_c, pos_c, sub_c, core = cx["kinds"], cx["rows"], cx["pos"], cx["sub"], cx["core"]
            dop_c = [r for r, k_ in zip(rows_c, kinds_c) if r >= 0 and k_ == "dopant"]
            placed = [geo_k[r] for r in dop_c if geo is not None and geo.kind[geo_k[r]] in ("site", "bond")]
            if placed:
                # Host columns on the shell sites of the local lattice, one per site.
                shell = geo.shell_rows(placed)
            else:
                # No lattice here: bonded host columns, less those closer to a dopant than any
                # host column can be (the halo of its probe tail).
                shell = set()
                for r in dop_c:
                    shell.update(b for b in nbrs[r] if ll[b] == "lattice"
                                 and np.hypot(*(lp[b] - lp[r])) >= _MIN_HOST_GAP * bond_px)
            if "name" in cx:
                name = cx["name"]
            else:
                name = _name(lattice, kinds_c, rows_c, sub_c, lel, cx["ncount"], len(shell))
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
                   "n_empty": kinds_c.count("empty") + kinds_c.count("site"), "n_shell": len(shell), "at_edge": edge,
                   "rows": tuple(int(r) for r in g_rows)}
            table.append(rec)
            next_id += 1
    out = full.copy()
    if reread is not None and reread.any():
        lab = labels.copy()
        lab[reread] = "vacancy"
        out["label"] = pd.Categorical(lab, categories=label_categories(full, lab))
        prob = out["prob"].to_numpy().copy()
        prob[reread] = 1.0 - prob[reread]          # at most what the network left for a vacancy
        out["prob"] = prob
        out["count"] = count.astype(out["count"].dtype)
        el = out["element"].astype(str).to_numpy().copy()
        el[reread & (count == 0)] = ""
        out["element"] = pd.Categorical(el, categories=sorted(set(el.tolist()) | set(map(str, out["element"].cat.categories)))
                                        if isinstance(out["element"].dtype, pd.CategoricalDtype) else None)
    cats = sorted(set(defect.tolist()) | {""})
    out["defect"] = pd.Categorical(defect.astype(str), categories=cats)
    out["defect_id"] = defect_id
    cols = DEFECTS.names[:1] + (["frame"] if "frame" in atoms.columns else []) + DEFECTS.names[1:]
    dt = pd.DataFrame(table, columns=["defect_id", "frame"] + DEFECTS.names[1:])
    dt = dt.astype({"defect_id": np.int64, "y": np.float64, "x": np.float64, "y_nm": np.float64,
                    "x_nm": np.float64, "angle": np.float64, "n_dopant": np.int64, "n_vacancy": np.int64,
                    "n_empty": np.int64, "n_shell": np.int64, "at_edge": bool})
    dt["defect"] = dt["defect"].astype(str)
    if "frame" in atoms.columns:
        dt["frame"] = dt["frame"].astype(atoms["frame"].dtype)
    dt = dt[cols]
    return with_attrs(out, atoms, pixel_size, lattice), with_attrs(dt, atoms, pixel_size, lattice)


def find_defects(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None, *,
                 cutoffs: dict | None = None, element_map: dict | None = None, gamma: float = 1.7,
                 image=None) -> pd.DataFrame:
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
    image : ndarray, optional
        The image (y, x) or stack (frame, y, x): the occupancy of the empty sites the network did
        not mark tells a vacancy it missed (joins or makes a complex; in MX2 ``V_S`` from ``V_S2``)
        from an atom it missed (left out).

    Returns
    -------
    DataFrame
        A copy of ``atoms`` with (besides the computed site/element/coordination columns)
        ``defect`` (category: the complex's name, ``""`` for rows in none) and ``defect_id``
        (int64, numbered from 0 within each frame, -1 for none: ``(frame, defect_id)`` names a
        complex, the same whether the frame was analysed alone, in a stack or in a run's part).
        Members are the dopants, the vacancy rows and, for ring defects, the atoms shared by most
        of the cluster's rings (the rotated pair of a Stone–Wales defect); the first shell is
        counted in the name but not marked.

    See Also
    --------
    defect_table : one row per complex.

    Examples
    --------
    >>> from stemflow.chem import find_defects
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 96, pixel_size=0.012, seed=1, defects={"Si1C3": 1})
    >>> atoms = sim.atoms[["frame", "y", "x", "label"]]
    >>> d = find_defects(atoms, pixel_size=0.012, lattice="graphene")
    >>> d.columns.tolist()[4:]
    ['site', 'sublattice', 'site_y', 'site_x', 'element', 'count', 'coordination', 'defect', 'defect_id']
    >>> d.loc[d["defect_id"] >= 0, ["label", "defect"]].values.tolist()   # the Si is the member
    [['dopant', 'Si1C3']]
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    return analyse_defects(atoms, pixel_size, lattice, cutoffs, element_map, gamma, image)[0]


def defect_table(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None, *,
                 cutoffs: dict | None = None, element_map: dict | None = None, gamma: float = 1.7,
                 image=None) -> pd.DataFrame:
    """One row per defect complex.

    Parameters
    ----------
    atoms, pixel_size, lattice, cutoffs, element_map, gamma, image
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

    Examples
    --------
    >>> from stemflow.chem import defect_table
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 128, pixel_size=0.012, seed=2, defects={"Si1C3": 2, "V1": 2})
    >>> atoms = sim.atoms[["frame", "y", "x", "label"]]
    >>> dt = defect_table(atoms, pixel_size=0.012, lattice="graphene")
    >>> dt[["defect", "n_dopant", "n_vacancy", "n_shell"]]
      defect  n_dopant  n_vacancy  n_shell
    0  Si1C3         1          0        3
    1     V1         0          1        0
    2     V1         0          1        0
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    return analyse_defects(atoms, pixel_size, lattice, cutoffs, element_map, gamma, image)[1]

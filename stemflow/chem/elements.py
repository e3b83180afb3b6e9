"""Elements from the network's classes, the sublattice and the column intensity.

Graphene: ``lattice`` → C, ``dopant`` → Si, ``vacancy`` → empty. 2H-MX2: ``lattice`` columns are
the metal on sublattice 0 and a chalcogen pair on sublattice 1; a ``dopant`` metal is named by its
intensity (Z-contrast: a column of atomic number Z is ∝ Z**γ as bright); a ``vacancy`` on the
chalcogen sublattice is read from its ``occupancy`` (:func:`~stemflow.chem.occupancy.column_occupancy`:
its intensity above the local hollow-site background over that of the intact pairs around it):
below 0.25 it is empty (``V_S2``), from 0.25 to 0.75 it keeps one atom (``V_S``), from 0.75 it
is an intact pair the network took for a vacancy (vetoed: element and count of the intact
column). A ``vacancy`` on a metal site with an occupancy of 0.5 or more is vetoed the same way
(not in graphene, where the empty sites beside a Si dopant take enough of its intensity to look
half full). Without an ``occupancy`` column the chalcogen count falls back to a Z-contrast
estimate of the background from the metal and chalcogen columns nearby (threshold 0.33 of a
pair) and nothing is vetoed. Any of it can be changed with ``element_map``.

Units: intensities in the image's own units (only their ratios are used); radii in px.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from scipy.stats import median_abs_deviation

from ..errors import InputError, StemflowWarning
from ..tables import ATOMIC_NUMBER, LATTICES
from ._common import frame_groups, is_mx2, labels_of, resolve, with_attrs

__all__ = ["ELEMENT_MAPS", "assign_elements", "measure_intensity", "guess_element"]

#: Default element map of each lattice. ``lattice``: the host element (graphene, amorphous) or
#: ``(metal, chalcogen)`` (MX2); ``dopant``: one element or candidates named by intensity;
#: ``chalcogen_dopant``: element of a dopant column on the chalcogen sublattice (MX2);
#: ``half_vacancy``: occupancy (fraction of an intact chalcogen pair, background removed) above
#: which a chalcogen vacancy still holds one atom; ``intact``: occupancy from which a ``vacancy``
#: of the network on a chalcogen site is an intact pair (vetoed); ``intact_metal``: the same on a
#: metal site. Graphene has no veto: the sites next to a heavy Si (Si1C4, Si3C6) take enough of
#: its intensity to look half full.
ELEMENT_MAPS = {
    "graphene": {"lattice": "C", "dopant": "Si"},
    "amorphous": {"lattice": "C", "dopant": "Pt"},
    "ws2": {"lattice": ("W", "S"), "dopant": ("Cr", "Mo"), "chalcogen_dopant": "Se", "half_vacancy": 0.25,
            "intact": 0.75, "intact_metal": 0.5},
    "mos2": {"lattice": ("Mo", "S"), "dopant": ("Cr", "W"), "chalcogen_dopant": "Se", "half_vacancy": 0.25,
             "intact": 0.75, "intact_metal": 0.5},
}
#: Prior odds of an intact chalcogen pair against a pair missing one atom, on a column the network
#: calls a vacancy. ``intact`` (0.75) is the midpoint of the two occupancies (1 and 0.5): the
#: boundary for even odds. Intact pairs far outnumber vacancies, and a frame's noise spreads its
#: intact pairs' occupancies (SD σ, robust, over the frame's intact pairs), so a vacancy call is
#: vetoed from ``intact − σ² · ln(odds) / 0.5`` up: the Bayes boundary of two Gaussians of SD σ.
#: Bright frames (σ ≈ 0.05) move it by 0.01, noisy ones (σ ≈ 0.14) by 0.06. Measured with
#: ``benchmarks/abtem_sweep.py`` (multislice frames at 11 doses, samplings and source sizes),
#: before → after: WS2 vacancy precision 0.845 → 0.948, recall 0.973 → 0.958; MoS2 0.943 → 0.971,
#: recall 0.943 → 0.940; on stemflow's own simulator (``benchmarks/chem_accuracy.py``) WS2 vacancy
#: F1 0.9925 → 0.9963 from the network, 1.000 → 0.996 from the true labels (one V_S vetoed).
INTACT_PRIOR_ODDS = 5.0
#: Least intact chalcogen pairs in a frame to measure its occupancy noise (σ above); with fewer,
#: the even-odds boundary ``intact`` is used.
MIN_NOISE_REFS = 10
#: Without an occupancy (no image): fraction of a pair, over the Z-contrast background estimate,
#: above which a chalcogen vacancy holds one atom.
_HALF_VACANCY_Z = 0.33


def guess_element(ratio, host: str, candidates, gamma: float = 1.7) -> np.ndarray:
    """The candidate whose Z-contrast best explains an intensity ratio to the host column.

    Parameters
    ----------
    ratio : array_like
        Column intensity divided by that of a pristine ``host`` column (same number of atoms).
    host : str
        Element symbol of the host column.
    candidates : sequence of str
        Element symbols to choose from.
    gamma : float
        Z-contrast exponent: intensity ∝ Z**gamma (1.6–2 for HAADF).

    Returns
    -------
    ndarray of str
        The candidate of nearest ``log Z`` to ``log Z_host + log(ratio) / gamma`` per entry
        (the first candidate where the ratio is not a positive number).

    Examples
    --------
    >>> guess_element([0.38, 1.0], "W", ["Cr", "Mo", "W"]).tolist()
    ['Mo', 'W']
    """
    cands = [str(c) for c in ([candidates] if isinstance(candidates, str) else candidates)]
    unknown = [c for c in cands + [host] if c not in ATOMIC_NUMBER]
    if unknown:
        raise InputError(f"unknown element(s) {unknown}; known: {', '.join(ATOMIC_NUMBER)}")
    ratio = np.asarray(ratio, np.float64)
    z = np.log(ATOMIC_NUMBER[host]) + np.log(np.where(ratio > 0, ratio, np.nan)) / gamma
    zc = np.log([ATOMIC_NUMBER[c] for c in cands])
    pick = np.argmin(np.abs(np.nan_to_num(z, nan=zc[0])[..., None] - zc), axis=-1)
    return np.asarray(cands, dtype=object)[pick]


def measure_intensity(atoms: pd.DataFrame, image, radius: float) -> np.ndarray:
    """Mean image value in a disk of ``radius`` px around each row's ``y``, ``x``.

    Parameters
    ----------
    atoms : DataFrame
        ``y``, ``x`` (px) and, for a stack, ``frame`` (its index into ``image``).
    image : ndarray
        (y, x) image or (frame, y, x) stack.
    radius : float
        Disk radius, px.

    Returns
    -------
    ndarray of float64
        One value per row (image units); pixels outside the image are left out.

    Examples
    --------
    >>> import numpy as np
    >>> from stemflow.chem import measure_intensity
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 96, pixel_size=0.012, seed=1, defects={"Si1C3": 1})
    >>> atoms = sim.atoms
    >>> inten = measure_intensity(atoms, sim.image, radius=2.0)        # 2 px disk
    >>> inten.shape
    (50,)
    >>> si = inten[(atoms["label"] == "dopant").to_numpy()]
    >>> c = np.median(inten[(atoms["label"] == "lattice").to_numpy()])
    >>> bool(3 < si[0] / c < 6)                 # Z-contrast: Si about (14/6)**1.7 ≈ 4 C columns
    True
    """
    img = np.asarray(image, np.float64)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise InputError(f"image must be (y, x) or (frame, y, x); got shape {img.shape}")
    r = max(float(radius), 0.5)
    k = int(np.ceil(r))
    dy, dx = np.mgrid[-k:k + 1, -k:k + 1]
    disk = dy ** 2 + dx ** 2 <= r * r
    dy, dx = dy[disk], dx[disk]
    out = np.full(len(atoms), np.nan)
    if len(atoms) == 0:
        return out
    if "frame" in atoms.columns and len(img) > 1:
        fr = atoms["frame"].to_numpy(np.int64)
    else:
        fr = np.zeros(len(atoms), np.int64)
    if fr.min() < 0 or fr.max() >= len(img):
        raise InputError(f"frames {fr.min()}..{fr.max()} of the table are outside the image stack of "
                         f"{len(img)} frame(s)")
    yy = np.rint(atoms["y"].to_numpy(np.float64))[:, None].astype(np.int64) + dy
    xx = np.rint(atoms["x"].to_numpy(np.float64))[:, None].astype(np.int64) + dx
    ok = (yy >= 0) & (yy < img.shape[1]) & (xx >= 0) & (xx < img.shape[2])
    vals = img[np.broadcast_to(fr[:, None], yy.shape), np.clip(yy, 0, img.shape[1] - 1),
               np.clip(xx, 0, img.shape[2] - 1)]
    n = ok.sum(axis=1)
    s = np.where(ok, vals, 0.0).sum(axis=1)
    out[n > 0] = s[n > 0] / n[n > 0]
    return out


def local_levels(pos, inten, metal_mask, chalc_mask, at, metal, chalc, gamma, reach, values=None):
    """Local background, metal level and (for ``values``) fraction of a chalcogen pair at ``at``.

    Around each query point the median intensities of the pristine metal columns (``I_M``) and
    chalcogen pairs (``I_X``) within ``reach`` px give, with Z-contrast ``I = B + k·Σ Z**gamma``,
    the background ``B = I_X − 2 Z_X**γ (I_M − I_X) / (Z_M**γ − 2 Z_X**γ)``; the fraction of a
    pair in a column of intensity ``I`` is ``(I − B) / (I_X − B)``.
    """
    at = np.asarray(at, np.float64).reshape(-1, 2)
    k = len(at)
    base, i_m, frac = np.zeros(k), np.ones(k), np.full(k, np.nan)
    if k == 0:
        return base, i_m, frac
    ok_m = metal_mask & np.isfinite(inten)
    ok_x = chalc_mask & np.isfinite(inten)
    gm = np.nanmedian(inten[ok_m]) if ok_m.any() else np.nan
    gx = np.nanmedian(inten[ok_x]) if ok_x.any() else np.nan

    def local(mask, g):
        if not mask.any():
            return np.full(k, g)
        idx = cKDTree(pos[mask]).query_ball_point(at, reach)
        vals = inten[mask]
        return np.array([np.median(vals[i]) if len(i) >= 3 else g for i in idx])

    im, ix = local(ok_m, gm), local(ok_x, gx)
    zm, zx = ATOMIC_NUMBER[metal] ** gamma, 2 * ATOMIC_NUMBER[chalc] ** gamma
    b = ix - zx * (im - ix) / (zm - zx)
    good = np.isfinite(b)
    base[good], i_m[good] = b[good], im[good]
    if values is not None:
        frac = (np.asarray(values, np.float64) - b) / (ix - b)
    return base, i_m, frac


def element_map_for(lattice: str, element_map) -> dict:
    m = dict(ELEMENT_MAPS[lattice])
    if element_map:
        if not isinstance(element_map, dict):
            raise InputError(f"element_map must be a dict like {ELEMENT_MAPS[lattice]}; got {element_map!r}")
        m.update(element_map)
    return m


def _intact_cut(out, occ, labels, chal_site, intact: float) -> np.ndarray:
    """Per row, the occupancy from which a chalcogen ``vacancy`` is an intact pair: ``intact``
    moved down by its frame's occupancy noise and :data:`INTACT_PRIOR_ODDS`."""
    cut = np.full(len(occ), intact)
    if not np.isfinite(intact):
        return cut
    for _, rows in frame_groups(out):
        ref = occ[rows][(labels[rows] == "lattice") & chal_site[rows]]
        ref = ref[np.isfinite(ref)]
        if len(ref) >= MIN_NOISE_REFS:
            sd = float(median_abs_deviation(ref, scale="normal"))
            cut[rows] = intact - sd**2 * np.log(INTACT_PRIOR_ODDS) / 0.5
    return cut


def assign_elements(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None, *,
                    element_map: dict | None = None, gamma: float = 1.7) -> pd.DataFrame:
    """Name the element of every column and count the atoms in it.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table: ``y``, ``x`` (px), ``label``; ``intensity`` names dopants by Z-contrast;
        ``occupancy`` (:func:`~stemflow.chem.occupancy.column_occupancy`) tells a half-empty
        chalcogen column from an empty one and vetoes ``vacancy`` rows on intact columns
        (without it, ``intensity`` tells the chalcogen count less reliably); ``sublattice`` (from
        :func:`~stemflow.chem.sites.assign_sites`, computed here when missing) tells metal from
        chalcogen sites (MX2).
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``.
    element_map : dict, optional
        Entries replacing those of :data:`ELEMENT_MAPS` for the lattice, e.g.
        ``{"dopant": ("P", "Si")}`` to choose the dopant of graphene by intensity.
    gamma : float
        Z-contrast exponent (intensity ∝ Z**gamma) used to name dopants from candidates.

    Returns
    -------
    DataFrame
        A copy of ``atoms`` with ``element`` (category; ``""`` for an empty site; on an amorphous
        support, heavy atoms that already have one, named by :func:`stemflow.find_atoms` with
        ``elements``, keep it unless ``element_map`` is given) and ``count``
        (int8: atoms in the column, 2 for a chalcogen pair, 0 for an empty site), plus the site
        columns when they had to be computed. A ``vacancy`` row whose occupancy is that of an
        intact column gets the intact column's element and count (its ``label`` is kept);
        :func:`~stemflow.chem.defects.find_defects` then leaves it out of the defects.

    Notes
    -----
    Intensity ratios are taken per frame against the median of the pristine (``lattice``)
    columns of the same sublattice, so they do not depend on dose or detector gain.

    Examples
    --------
    >>> from stemflow.chem import assign_elements
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 96, pixel_size=0.012, seed=1, defects={"Si1C3": 1})
    >>> atoms = sim.atoms[["frame", "y", "x", "label"]]
    >>> el = assign_elements(atoms, pixel_size=0.012, lattice="graphene")
    >>> el.columns.tolist()[4:]
    ['element', 'count']
    >>> el.loc[el["label"] == "dopant", "element"].tolist(), int(el["count"].sum())
    (['Si'], 50)
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    emap = element_map_for(lattice, element_map)
    out = atoms.copy()
    if is_mx2(lattice) and "sublattice" not in out.columns:
        from .sites import assign_sites
        out = assign_sites(out, pixel_size, lattice)
    labels = labels_of(out)
    n = len(out)
    element = np.full(n, "", dtype=object)
    count = np.zeros(n, np.int8)
    inten = out["intensity"].to_numpy(np.float64) if "intensity" in out.columns else np.full(n, np.nan)
    occ = out["occupancy"].to_numpy(np.float64) if "occupancy" in out.columns else np.full(n, np.nan)
    dopant_cands = emap["dopant"]
    many = not isinstance(dopant_cands, str) and len(dopant_cands) > 1
    if not isinstance(dopant_cands, str):
        dopant_cands = tuple(dopant_cands)

    if not is_mx2(lattice):
        host = emap["lattice"]
        element[labels == "lattice"], count[labels == "lattice"] = host, 1
        if "intact_metal" in emap:
            vetoed = (labels == "vacancy") & (occ >= float(emap["intact_metal"]))
            element[vetoed], count[vetoed] = host, 1
        dop = labels == "dopant"
        count[dop] = 1
        if many:
            for _, rows in frame_groups(out):
                ref = np.nanmedian(inten[rows][labels[rows] == "lattice"]) if (labels[rows] == "lattice").any() else np.nan
                d = rows[dop[rows]]
                element[d] = guess_element(inten[d] / ref, host, dopant_cands, gamma)
        else:
            element[dop] = dopant_cands if isinstance(dopant_cands, str) else dopant_cands[0]
        if lattice == "amorphous" and element_map is None and "element" in out.columns:
            # heavy atoms named by Z-contrast when they were found (find_atoms(..., elements=...)) keep it
            named = out["element"].astype(str).to_numpy()
            keep = dop & (named != "") & (named != "nan")
            element[keep] = named[keep]
    else:
        metal, chalc = emap["lattice"]
        sub = out["sublattice"].to_numpy(np.int64)
        if (sub < 0).any() and n:
            warnings.warn(f"{int((sub < 0).sum())} row(s) have no lattice site (no lattice could be fitted "
                          "in their frame); they are treated as metal sites", StemflowWarning, stacklevel=2)
        chal_site = sub == 1
        lat = labels == "lattice"
        element[lat & ~chal_site], count[lat & ~chal_site] = metal, 1
        element[lat & chal_site], count[lat & chal_site] = chalc, 2
        dop = labels == "dopant"
        element[dop & chal_site], count[dop & chal_site] = emap.get("chalcogen_dopant", "Se"), 1
        vac_m = (labels == "vacancy") & ~chal_site & (occ >= float(emap.get("intact_metal", np.inf)))
        element[vac_m], count[vac_m] = metal, 1
        vac_ch = (labels == "vacancy") & chal_site
        measured = vac_ch & np.isfinite(occ)
        half = measured & (occ > float(emap.get("half_vacancy", 0.25)))
        full = measured & (occ >= _intact_cut(out, occ, labels, chal_site, float(emap.get("intact", np.inf))))
        element[half], count[half] = chalc, 1
        count[full] = 2
        vac_ch = vac_ch & ~measured
        if vac_ch.any() and not np.isfinite(inten[vac_ch]).any():
            warnings.warn("no intensity for the chalcogen vacancies: every one is taken as empty (V_X2); "
                          "pass image= or use a table with an 'intensity' column to tell V_X from V_X2",
                          StemflowWarning, stacklevel=2)
        pos = out[["y", "x"]].to_numpy(np.float64)
        reach = 2.5 * LATTICES[lattice]["a"] / pixel_size
        for _, rows in frame_groups(out):
            lr, sr = labels[rows], chal_site[rows]
            d = rows[dop[rows] & ~sr]
            v = rows[vac_ch[rows]]
            base, i_m, _ = local_levels(pos[rows], inten[rows], (lr == "lattice") & ~sr, (lr == "lattice") & sr,
                                         pos[np.concatenate([d, v])], metal, chalc, gamma, reach)
            nd = len(d)
            if many:
                element[d] = guess_element((inten[d] - base[:nd]) / (i_m[:nd] - base[:nd]), metal, dopant_cands, gamma)
            else:
                element[d] = dopant_cands if isinstance(dopant_cands, str) else dopant_cands[0]
            count[d] = 1
            _, _, frac = local_levels(pos[rows], inten[rows], (lr == "lattice") & ~sr, (lr == "lattice") & sr,
                                       pos[v], metal, chalc, gamma, reach, values=inten[v])
            half = frac > _HALF_VACANCY_Z
            element[v[half]], count[v[half]] = chalc, 1
    cats = sorted(set(element.tolist()) | {""})
    out["element"] = pd.Categorical(element.astype(str), categories=cats)
    out["count"] = count
    return with_attrs(out, atoms, pixel_size, lattice)

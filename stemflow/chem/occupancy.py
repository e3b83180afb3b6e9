"""Column occupancy: how full each column is, from the image, against its own neighbourhood.

The intensity of one column in an annular-dark-field image is its atoms' scattering plus a
background that varies across the field (amorphous carbon, thickness, contamination). Both are
measured locally, with the fitted lattice (:func:`~stemflow.chem.sites.fit_lattice`) telling
where to look:

* the *background* at a column is read from the image at the hollow sites of the lattice
  around it (the centres of the hexagons, fractional ``(2/3, 2/3)`` of each cell — no column
  there), measured in the same disk as the columns: in MX2 a plane fitted robustly to the
  nearest seven, taken at the column (their median would be biased by a gradient, or at a frame
  edge where the hollows lie on one side); in graphene their median (with the plane there too,
  the real dev frames' defect type fell from 0.955 to 0.939 and simulated Si F1 in dim frames by
  up to 0.03, probably because a Si's probe tail brightens the hollows beside it, which the
  median ignores);
* the *reference* is the median of the background-free intensity of the intact (``lattice``)
  columns of the same sublattice around it.

``occupancy = (I − B) / reference``: 1 for an intact column (a metal column, a chalcogen pair,
a carbon column), about 0.5 for a chalcogen column holding one atom, about 0 for an empty site.
Because every number is taken within a few lattice constants and on the same image, a slowly
varying background or a contamination patch moves the column and its references together.

Units: positions in px, radii in bonds (a/√3) of the lattice unless stated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..errors import InputError
from ..tables import LATTICES
from ._common import frame_groups, labels_of, resolve, with_attrs
from .elements import measure_intensity
from .sites import BASIS, LatticeFit, fit_frame, intensity_column

__all__ = ["column_occupancy", "OCCUPANCY_RADIUS"]

#: Radius of the disk the column and hollow intensities are averaged over, bonds (a/√3).
OCCUPANCY_RADIUS = 0.25
_HOLLOW_K = 7    # hollow sites (the nearest 7: centre + first ring) a plane is fitted to for the
                 # background at a column: a gradient of thickness or background, or a frame edge
                 # with hollows on one side only, biases their median but not the plane (under a
                 # background of half a W column's peak varying over 85 px, WS2's intact pairs
                 # spread by SD 0.088 with 7, 0.11 with 9, 0.135 with 12, 0.185 with 18: scratch run)
_PLANE_MIN = 6   # least hollow sites within reach for a plane (else their median)
_REF_K = 12      # intact columns of the same sublattice whose median is the reference
_REACH = 2.5     # lattice constants: how far references may lie


def image_of_frame(image, frame) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        return img
    if img.ndim == 3:
        if frame is None or len(img) == 1:
            return img[0]
        if not 0 <= int(frame) < len(img):
            raise InputError(f"frame {frame} of the table is outside the image stack of {len(img)} frame(s)")
        return img[int(frame)]
    raise InputError(f"image must be (y, x) or (frame, y, x); got shape {img.shape}")


def _disk(img: np.ndarray, pos: np.ndarray, radius: float) -> np.ndarray:
    return measure_intensity(pd.DataFrame({"y": pos[:, 0], "x": pos[:, 1]}), img, radius)


def _hollows(fit: LatticeFit, pos: np.ndarray, shape) -> np.ndarray:
    """Positions (px) of the hollow sites of the cells around ``pos``, inside the image."""
    f = np.linalg.solve(fit.M, (pos - fit.t).T).T
    cells = np.unique(np.floor(f).astype(np.int64), axis=0)
    off = np.array([[i, j] for i in (-1, 0, 1) for j in (-1, 0, 1)])
    cells = np.unique((cells[:, None, :] + off[None]).reshape(-1, 2), axis=0)
    p = (cells + 2.0 * BASIS[1]) @ fit.M.T + fit.t
    p = p + fit.correction(p)
    h, w = shape
    return p[(p[:, 0] >= 0) & (p[:, 0] <= h - 1) & (p[:, 1] >= 0) & (p[:, 1] <= w - 1)]


def _local_median(tree_pos: np.ndarray, values: np.ndarray, at: np.ndarray, k: int, reach: float) -> np.ndarray:
    """Median of ``values`` at the ``k`` points of ``tree_pos`` nearest each ``at`` within ``reach`` px."""
    out = np.full(len(at), np.nan)
    ok = np.isfinite(values)
    if ok.sum() == 0 or len(at) == 0:
        return out
    tp, tv = tree_pos[ok], values[ok]
    k = min(k, len(tp))
    d, idx = cKDTree(tp).query(at, k=k, distance_upper_bound=reach)
    d, idx = d.reshape(len(at), k), idx.reshape(len(at), k)
    vals = np.where(np.isfinite(d), tv[np.minimum(idx, len(tv) - 1)], np.nan)
    have = np.isfinite(vals).sum(axis=1)
    good = have >= min(3, k)
    if good.any():
        out[good] = np.nanmedian(vals[good], axis=1)
    # Too few neighbours within reach: the frame's median.
    out[~good] = np.median(tv)
    return out


def _local_plane(tree_pos: np.ndarray, values: np.ndarray, at: np.ndarray, k: int, reach: float) -> np.ndarray:
    """Value at each ``at`` of a plane fitted to ``values`` at the ``k`` points of ``tree_pos``
    nearest it within ``reach`` px: least squares reweighted three times with Huber weights
    (1.5 robust SDs), so that one contaminated point does not tilt it. Where fewer than
    :data:`_PLANE_MIN` points lie within reach, or they lie on a line, the median of the nearest
    :data:`_HOLLOW_K` (:func:`_local_median`)."""
    ok = np.isfinite(values)
    if ok.sum() < _PLANE_MIN or len(at) == 0:
        return _local_median(tree_pos, values, at, _HOLLOW_K, reach)
    tp, tv = tree_pos[ok], values[ok]
    k = min(k, len(tp))
    d, idx = cKDTree(tp).query(at, k=k, distance_upper_bound=reach)
    d, idx = d.reshape(len(at), k), idx.reshape(len(at), k)
    have = np.isfinite(d)
    idx = np.minimum(idx, len(tp) - 1)
    rel = tp[idx] - at[:, None, :]                                     # (m, k, 2) px from the point
    A = np.concatenate([np.ones(d.shape + (1,)), rel], axis=2)           # (m, k, 3)
    v = np.where(have, tv[idx], 0.0)
    w = have.astype(np.float64)
    coef = np.zeros((len(at), 3))
    solved = have.sum(axis=1) >= _PLANE_MIN
    for _ in range(4):
        ata = np.einsum("mki,mk,mkj->mij", A, w, A)
        atv = np.einsum("mki,mk,mk->mi", A, w, v)
        solved &= np.abs(np.linalg.det(ata)) > 1e-9 * np.maximum(np.einsum("mii->m", ata), 1.0) ** 3
        if not solved.any():
            return _local_median(tree_pos, values, at, _HOLLOW_K, reach)
        coef[solved] = np.linalg.solve(ata[solved], atv[solved][..., None])[..., 0]
        r = np.where(have, v - np.einsum("mki,mi->mk", A, coef), np.nan)
        scale = 1.4826 * np.nanmedian(np.abs(r[solved]), axis=1)
        lim = np.full(len(at), np.inf)
        lim[solved] = 1.5 * np.maximum(scale, 1e-12)
        w = np.where(have, np.minimum(1.0, lim[:, None] / np.maximum(np.abs(np.nan_to_num(r)), 1e-300)), 0.0)
    out = coef[:, 0].copy()
    if not solved.all():          # too few hollow sites, or on a line: their median
        out[~solved] = _local_median(tree_pos, values, at[~solved], _HOLLOW_K, reach)
    return out


def frame_occupancy(fit: LatticeFit, img: np.ndarray, pos: np.ndarray, sub: np.ndarray,
                    at: np.ndarray, at_sub: np.ndarray, intact: np.ndarray, radius: float,
                    plane: bool = False) -> np.ndarray:
    """Occupancy of the columns at ``at`` in one frame.

    Parameters
    ----------
    fit : LatticeFit
        The frame's fitted lattice.
    img : ndarray (y, x)
        The frame.
    pos : ndarray (n, 2)
        Positions (px) of the frame's rows.
    sub : ndarray (n,)
        Their sublattices.
    at : ndarray (m, 2)
        Positions (px) where the occupancy is wanted (rows or empty sites).
    at_sub : ndarray (m,)
        Their sublattices.
    intact : ndarray of bool (n,)
        Rows that are intact columns (the references).
    radius : float
        Disk radius, px.
    plane : bool
        Background from a plane through the hollow sites (:func:`_local_plane`; MX2, whose
        chalcogen pairs are a small signal beside the metal columns) rather than their median
        (graphene; see the module's notes).

    Returns
    -------
    ndarray of float64 (m,)
        ``(I − B) / reference`` (NaN where nothing could be measured).
    """
    img = np.asarray(img, np.float64)
    at = np.asarray(at, np.float64).reshape(-1, 2)
    out = np.full(len(at), np.nan)
    if len(at) == 0:
        return out
    hp = _hollows(fit, np.vstack([pos, at]), img.shape)
    if len(hp) == 0:
        return out
    hv = _disk(img, hp, radius)
    reach = _REACH * fit.a
    both = np.vstack([pos[intact], at])
    i_all = _disk(img, both, radius)
    b_all = (_local_plane if plane else _local_median)(hp, hv, both, _HOLLOW_K, reach)
    net = i_all - b_all
    n_ref = int(intact.sum())
    ref_net, at_net = net[:n_ref], net[n_ref:]
    ref_sub = sub[intact]
    for s in np.unique(at_sub):
        sel = at_sub == s
        refs = ref_sub == s
        if not refs.any():
            continue
        level = _local_median(pos[intact][refs], ref_net[refs], at[sel], _REF_K, reach)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[sel] = np.where(level > 0, at_net[sel] / level, np.nan)
    return out


def column_occupancy(atoms: pd.DataFrame, image, pixel_size: float | None = None, lattice: str | None = None,
                     *, radius: float = OCCUPANCY_RADIUS) -> pd.DataFrame:
    """How full every column is: its background-free intensity over that of intact columns nearby.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table: ``y``, ``x`` (px), ``label``; optional ``frame`` (index into a stack),
        ``intensity`` (tells the metal sublattice in MX2) and the site columns of
        :func:`~stemflow.chem.sites.assign_sites` (computed when missing).
    image : ndarray
        The image (y, x) or stack (frame, y, x) the atoms were found in.
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``.
    radius : float
        Disk radius over which column and hollow intensities are averaged, bonds (a/√3).

    Returns
    -------
    DataFrame
        A copy of ``atoms`` with ``occupancy`` (float64): the column's intensity (in MX2 read at
        its fitted site, ``site_y``, ``site_x``; in graphene where it was found) above the local
        background (from the hollow sites around it) divided by the median of the same
        quantity for the intact ``lattice`` columns of its sublattice within 2.5 lattice
        constants. 1 for an intact column, about 0.5 for a chalcogen column with one atom left
        (MX2), about 0 for an empty site; NaN where no lattice could be fitted (amorphous, too few
        atoms).

    Examples
    --------
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("ws2", 256, pixel_size=0.012, seed=1, defects={"V_S": 2})
    >>> t = sim.atoms[["y", "x", "label"]]
    >>> occ = column_occupancy(t, sim.image, 0.012, "ws2")                     # doctest: +SKIP
    >>> occ.loc[sim.atoms["defect"] == "V_S", "occupancy"].round(1).tolist()  # doctest: +SKIP
    [0.5, 0.5]
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    if image is None:
        raise InputError("column_occupancy needs the image the atoms were found in: pass image=")
    out = atoms.copy()
    occ = np.full(len(out), np.nan)
    if LATTICES[lattice]["a"] is not None and len(out):
        bond_px = LATTICES[lattice]["bond"] / pixel_size
        mx2 = lattice in ("ws2", "mos2")
        inten = intensity_column(out)
        if mx2 and (inten is None or not np.isfinite(inten).any()):
            # The metal sublattice is the brighter one: measure the columns to tell.
            inten = measure_intensity(out, image, radius * bond_px)
        if "sublattice" not in out.columns:
            from .sites import assign_sites
            tmp = out.assign(intensity=inten) if inten is not None else out
            out[["site", "sublattice", "site_y", "site_x"]] = assign_sites(tmp, pixel_size, lattice)[
                ["site", "sublattice", "site_y", "site_x"]].to_numpy()
            out = out.astype({"site": np.int64, "sublattice": np.int8})
        labels = labels_of(out)
        pos = out[["y", "x"]].to_numpy(np.float64)
        sub = out["sublattice"].to_numpy(np.int64)
        meas = pos
        if mx2 and {"site_y", "site_x"} <= set(out.columns):
            # MX2 columns are read where the fitted lattice puts their site: a found centre at low
            # dose follows the shot noise towards the brighter pixels, and reading a dim chalcogen
            # column there reads it fuller the noisier its centre (in graphene the first shell of
            # a dopant relaxes off its site, so columns are read where they are found).
            site = out[["site_y", "site_x"]].to_numpy(np.float64)
            on_site = (labels == "lattice") & np.isfinite(site).all(axis=1)
            meas = np.where(on_site[:, None], site, pos)
        for fr, rows in frame_groups(out):
            fit = fit_frame(pos[rows], labels[rows], bond_px, None if inten is None else inten[rows], mx2=mx2)
            if fit is None:
                continue
            occ[rows] = frame_occupancy(fit, image_of_frame(image, fr), meas[rows], sub[rows], meas[rows], sub[rows],
                                        labels[rows] == "lattice", radius * bond_px, plane=mx2)
    out["occupancy"] = occ
    return with_attrs(out, atoms, pixel_size, lattice)

"""Lattice prior: move each regular column towards its fitted lattice site by what the data allow.

A single column's own counts limit how well any estimator can place it (at 10⁵ e⁻/Å² about 3 pm
per axis for a carbon column, ``docs/finder.md``). In a crystal most columns sit very close to a
smooth lattice, and that lattice — fitted to hundreds of columns — is known far better than any
one column. This is the empirical-Bayes (James–Stein) estimate that combines the two. With ``r``
a column's measured offset from the frame's lattice model (an affine map of the fitted sites, a
sublattice offset and a smooth field of the other columns' offsets over ``smoothing_nm``), ``σ²``
its measurement variance per axis and ``τ²`` the variance per axis of the *true* offsets —
estimated per frame and sublattice as the spread of ``r`` beyond ``σ²`` — the column goes to
``site + w·r`` with ``w = τ² / (τ² + σ²)``. A two-component mixture (regular columns, and a
small fraction whose offsets are improbable under ``τ``: displaced for real, or a fit gone
astray) gives each column its probability of being regular; the others keep the
network-weighted centre.

The measurement is the Gaussian fit alone (``y_fit``, ``x_fit``, ``fit_error`` from
``refine_atoms(..., keep_fit=True)``), not the network-weighted centre: the network's centres are
pulled towards the ideal lattice it was trained on, so their offsets understate real ones and the
prior would count the same lattice twice (measured in ``benchmarks/results/lattice_prior.md``).

It adapts: where columns really scatter about the lattice ``τ`` is large and ``w`` near 1;
where they do not, ``w`` is near 0 and the error is that of the site model. It is never applied
where the lattice is known not to hold — dopants, vacancies, defect members, the columns bonded
to them (``exclusion``), columns of unusual coordination (the first shell of a vacancy) and
unfitted columns — since relaxation around defects is physics to be measured. Those keep the
network-weighted centre unless the fit disagrees with it beyond chance (χ², p < 0.01), in which
case they take the fit's. A vacancy row, an empty site, goes to its site of the lattice model.

Units: positions, offsets and errors in px.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import InputError
from ..tables import LATTICES
from ._common import frame_groups, labels_of, resolve, with_attrs
from .sites import BASIS, site_cells

__all__ = ["lattice_prior"]

_NEEDS = ["site", "sublattice", "defect_id", "coordination", "xy_error"]
_FIT = ["y_fit", "x_fit", "fit_error"]
_CHI2_2DOF_P001 = 13.816      # χ² with 2 degrees of freedom: P(> 13.816) = 0.001
_CHI2_2DOF_P01 = 9.210        # P(> 9.210) = 0.01
_DISPLACED = 0.25             # bonds: per-axis scale of the true offsets of displaced columns
_PI_MIN = 1e-3                # least fraction of displaced columns assumed
_MEDIAN_CHI2_2DOF = 2.0 * np.log(2.0)
_MIN_COLUMNS = 30


def lattice_prior(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None, *,
                  exclusion: float = 1.2, smoothing_nm: float = 2.0,
                  min_columns: int = _MIN_COLUMNS) -> pd.DataFrame:
    """Move each regular lattice column towards its fitted site by the empirical-Bayes weight.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table with ``y``, ``x`` (px), ``label``, ``xy_error`` (px, standard error per axis,
        from ``refine``), ``site``, ``sublattice``, ``defect_id``, ``coordination`` (from
        :func:`~stemflow.chem.identify`) and, best, ``y_fit``, ``x_fit``, ``fit_error`` (the fit
        alone; without them ``y``, ``x``, ``xy_error`` are the measurement);
        ``find_atoms(..., lattice_prior=True)`` makes all of it. Optional ``frame``.
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``.
    exclusion : float
        Columns within this many bonds (a/√3) of a dopant, a vacancy or a defect member are left
        alone (default: the first shell).
    smoothing_nm : float
        Scale (nm) of the smooth field of offsets in the lattice model: the model follows scan
        distortions and strain that vary over more than this. Shorter scales follow measurement
        errors, which are correlated over a cell or two (contamination, background).
    min_columns : int
        Fewest regular columns of one sublattice in a frame to estimate the prior from; with
        fewer that sublattice is left alone.

    Returns
    -------
    DataFrame
        A copy of ``atoms`` with ``y``, ``x`` (and ``y_nm``, ``x_nm`` if present) the new
        centres, ``xy_error`` their standard error per axis (px) and ``prior_weight`` (float64,
        ``w``: 1 = not moved towards the lattice, 0 = on its site). ``df.attrs["lattice_prior"]``
        lists per frame and sublattice ``n`` (regular columns), ``tau_px`` (spread of the true
        offsets per axis), ``sigma_px`` (median measurement error), ``weight`` (median ``w``),
        ``displaced_fraction`` and ``smoothing_px``; ``attrs["lattice_prior_fit_taken"]`` counts
        the columns left alone that took the fit's centre.

    Raises
    ------
    InputError
        Missing columns (the message says how to make them), no pixel size, unknown lattice.

    Notes
    -----
    The weight minimises the expected squared error when the true offsets of regular columns
    scatter with variance ``τ²`` about the lattice model; it relies on the measurement error
    being honest (the fit's Fisher error times :data:`stemflow.refine.FIT_ERROR_SCALE`,
    calibrated on simulated frames). If it is too small, ``τ²`` comes out too large and the
    prior too weak (the safe side). The moved columns are biased towards the lattice by
    ``(1 - w)`` of their true offset: right for positions, counts and bond graphs, wrong for
    mapping small displacements — use ``y_fit``, ``x_fit`` (unbiased) for strain maps.

    Examples
    --------
    >>> import stemflow
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 256, pixel_size=0.01, seed=0)
    >>> atoms = stemflow.find_atoms(sim.image, 0.01, "graphene", lattice_prior=True)  # doctest: +SKIP
    >>> atoms[["y", "y_fit", "prior_weight", "xy_error"]].describe()               # doctest: +SKIP
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    missing = [c for c in _NEEDS if c not in atoms.columns]
    if missing:
        raise InputError(f"lattice_prior needs column(s) {missing}: make the table with "
                         "find_atoms(..., lattice_prior=True), or find_atoms(..., refine=True) "
                         "(xy_error) then stemflow.chem.identify (sites, defects, coordination)")
    if not exclusion >= 0:
        raise InputError(f"exclusion={exclusion} bonds must be ≥ 0")
    out = atoms.copy()
    n = len(out)
    y = out["y"].to_numpy(np.float64).copy()
    x = out["x"].to_numpy(np.float64).copy()
    err = out["xy_error"].to_numpy(np.float64).copy()
    # The measurement the prior weighs: the fit alone when the table has it (unbiased; the
    # network's centres are themselves pulled towards the lattice it learned), else y, x.
    meas = np.column_stack([y, x])
    meas_err = err.copy()
    if all(c in out.columns for c in _FIT):
        fy, fx, fe = (out[c].to_numpy(np.float64) for c in _FIT)
        has = np.isfinite(fy) & np.isfinite(fx) & np.isfinite(fe)
        meas[has, 0], meas[has, 1], meas_err[has] = fy[has], fx[has], fe[has]
    weight = np.ones(n)
    done = np.zeros(n, bool)        # columns the prior weighed (or a vacancy put on its site)
    summary = []
    if n and lattice in LATTICES and lattice != "amorphous":
        bond_px = LATTICES[lattice]["bond"] / pixel_size
        # The field the columns span (px); the smoothing grid covers it.
        shape = (float(np.nanmax(y)) + 2.0, float(np.nanmax(x)) + 2.0)
        site = out["site"].to_numpy(np.int64)
        sub = out["sublattice"].to_numpy(np.int64)
        did = out["defect_id"].to_numpy(np.int64)
        coord = out["coordination"].to_numpy(np.int64)
        lab = labels_of(out)
        for frame, rows in frame_groups(out):
            _frame(rows, y, x, err, weight, done, meas, meas_err, site, sub, did, coord, lab, bond_px,
                   exclusion, min_columns, frame, summary, shape, smoothing_nm / pixel_size)
    # Columns the prior leaves alone keep the network-weighted centre (the smaller error where
    # the network's learned geometry holds), unless the fit disagrees with it beyond chance: then
    # the network has pulled a displaced column towards the lattice it learned, and the fit's
    # centre is the one to trust. ``y_fit``, ``x_fit`` stay in the table, unbiased throughout.
    alone = ~done & (labels_of(out) != "vacancy")
    alone &= np.isfinite(meas_err) & np.isfinite(meas).all(axis=1)
    d2 = (meas[:, 0] - y) ** 2 + (meas[:, 1] - x) ** 2
    switch = alone & (d2 > _CHI2_2DOF_P01 * meas_err**2)
    y[switch], x[switch], err[switch] = meas[switch, 0], meas[switch, 1], meas_err[switch]
    out["y"], out["x"], out["xy_error"], out["prior_weight"] = y, x, err, weight
    if "y_nm" in out.columns:
        out["y_nm"] = y * pixel_size
        out["x_nm"] = x * pixel_size
    out = with_attrs(out, atoms, pixel_size, lattice)
    out.attrs["lattice_prior"] = summary
    out.attrs["lattice_prior_fit_taken"] = int(switch.sum())
    return out


def _smooth_loo(pos: np.ndarray, values: np.ndarray, h: float, cell: float, shape, use: np.ndarray):
    """Gaussian-weighted mean of ``values[use]`` (k columns) at every point of ``pos`` (n, 2), scale ``h`` px,
    leaving each point's own value out.

    Sums are binned on a grid of ``cell`` px and smoothed with :func:`scipy.ndimage.gaussian_filter`
    (memory of the grid, not of the pairs). Returns the means (n, k) and the effective number of
    points behind each (n,).
    """
    gy, gx = int(np.ceil(shape[0] / cell)) + 1, int(np.ceil(shape[1] / cell)) + 1
    iy = np.clip(np.rint(pos[:, 0] / cell).astype(np.int64), 0, gy - 1)
    ix = np.clip(np.rint(pos[:, 1] / cell).astype(np.int64), 0, gx - 1)
    flat = iy * gx + ix
    sc = h / cell
    u = use.astype(np.float64)

    def smooth(v):
        grid = np.bincount(flat, weights=v * u, minlength=gy * gx).reshape(gy, gx)
        return ndimage.gaussian_filter(grid, sc, mode="constant", truncate=3.0)[iy, ix]

    # The filter's centre tap: the weight a point gives itself.
    k0 = ndimage.gaussian_filter(np.pad([[1.0]], int(np.ceil(3 * sc))), sc, mode="constant", truncate=3.0).max()
    wsum = smooth(np.ones(len(pos))) - k0 * u
    out = np.zeros_like(values)
    good = wsum > 1e-3 * k0
    for k in range(values.shape[1]):
        out[good, k] = (smooth(values[:, k]) - k0 * u * values[:, k])[good] / wsum[good]
    # For a Gaussian kernel in two dimensions Σw² = Σw · w(0) / 2: n_eff = (Σw)² / Σw².
    n_eff = np.where(good, 2.0 * wsum / k0, 0.0)
    return out, n_eff


def _frame(rows, y, x, err, weight, done, meas, meas_err, site, sub, did, coord, lab, bond_px, exclusion,
           min_columns, frame, summary, shape, smoothing):
    """Apply the prior to one frame's ``rows`` in place."""
    known = coord[rows] >= 0
    # The usual coordination of each sublattice (in MX2 a metal column has 6 chalcogen atoms
    # around it, a chalcogen column 3 metals).
    odd = np.zeros(len(rows), bool)
    for s in np.unique(sub[rows][sub[rows] >= 0]):
        on = (sub[rows] == s) & known
        base = on & (lab[rows] == "lattice")
        if base.any():
            odd |= on & (coord[rows] != np.bincount(coord[rows][base]).argmax())
    # Defect nodes and the columns bonded to them are left alone, as are columns of
    # unusual coordination (the first shell of a vacancy or an empty site) and unfitted ones.
    seed = (lab[rows] != "lattice") | (did[rows] >= 0)
    pos = np.column_stack([y[rows], x[rows]])
    near = (sub[rows] < 0) | odd
    if seed.any() and exclusion > 0:
        near |= cKDTree(pos[seed]).query_ball_point(pos, exclusion * bond_px, return_length=True) > 0
    e2 = meas_err[rows] ** 2
    ok = ~seed & ~near & np.isfinite(e2)
    M = meas[rows]
    if ok.sum() < max(min_columns, 8):
        return
    # The lattice of this frame from the regular columns: affine map of the fractional
    # coordinates of their sites, a constant offset of sublattice 1, fitted robustly.
    cells, s_of = site_cells(site[rows])
    f = cells + BASIS[s_of]
    X = np.column_stack([f, np.ones(len(rows)), (s_of == 1).astype(float)])
    keep = ok.copy()
    for _ in range(3):
        W, *_ = np.linalg.lstsq(X[keep], M[keep], rcond=None)
        r = M - X @ W
        r2 = (r * r).sum(1)
        scale = np.median(r2[keep]) / _MEDIAN_CHI2_2DOF
        keep = ok & (r2 < min(_CHI2_2DOF_P001 * scale, (0.5 * bond_px) ** 2))
    # Departures of the lattice that vary slowly across the field (scan distortion, long-range
    # strain): a Gaussian-weighted mean of the other regular columns' residuals, scale
    # ``smoothing`` px. Not shorter: measurement errors are themselves correlated over a cell or
    # two (contamination, background), and a short smoothing would follow them.
    # A vacancy is the empty site itself: it goes to the site of the lattice model.
    vac = (lab[rows] == "vacancy") & (sub[rows] >= 0)
    both = np.flatnonzero(ok | vac)
    g, n_eff = _smooth_loo(pos[both], r[both], smoothing, 0.5 * bond_px, shape, use=keep[both])
    model = (X @ W)[both] + g
    v0 = float(np.median(r2[keep])) / _MEDIAN_CHI2_2DOF
    iv = vac[both]
    if iv.any():
        at = rows[both[iv]]
        y[at], x[at] = model[iv, 0], model[iv, 1]
        err[at] = np.sqrt(v0 / np.maximum(n_eff[iv], 1.0) + v0 / max(int(keep.sum()), 1))
        weight[at] = 0.0
        done[at] = True
    idx = both[~iv]
    g, n_eff = g[~iv], n_eff[~iv]
    ref = keep[idx]
    rr = r[idx] - g
    site_pos = M[idx] - rr
    v = float(np.median((rr[ref] * rr[ref]).sum(1))) / _MEDIAN_CHI2_2DOF    # per axis
    site_var = v / np.maximum(n_eff, 1.0) + v / max(int(ref.sum()), 1)
    for s in np.unique(s_of[idx]):
        on = s_of[idx] == s
        if (on & ref).sum() < min_columns:
            continue
        q2 = (rr[on] * rr[on]).sum(1)
        v_s = float(np.median(q2[ref[on]])) / _MEDIAN_CHI2_2DOF
        sig2 = e2[idx][on]
        tau2 = max(0.0, v_s - float(np.median(sig2[ref[on]])) - float(np.median(site_var[on])))
        # Two kinds of column: regular ones, whose true offsets scatter by τ about the lattice,
        # and outliers (a fraction π, offsets up to ~DISPLACED bonds: relaxed around a defect the
        # network did not mark, or a fit gone astray). π by expectation–maximisation; each
        # column's centre mixes the two estimates by its posterior probabilities.
        var_r = tau2 + sig2 + site_var[on]
        var_d = (_DISPLACED * bond_px) ** 2 + sig2
        log_r = -np.log(var_r) - 0.5 * q2 / var_r
        log_d = -np.log(var_d) - 0.5 * q2 / var_d
        pi = 0.01
        for _ in range(20):
            p_d = 1.0 / (1.0 + np.exp(np.clip(log_r - log_d, -50, 50)) * (1.0 - pi) / pi)
            pi = float(np.clip(p_d.mean(), _PI_MIN, 0.5))
        w_r = tau2 / (tau2 + sig2)
        at = rows[idx[on]]
        # Regular: towards the site. Displaced: the network-weighted centre, which is robust where
        # a fit went astray (a column displaced for real is rare away from defects, whose
        # surroundings the prior leaves alone anyway).
        reg = site_pos[on] + w_r[:, None] * rr[on]
        reg_var = w_r * sig2 + (1.0 - w_r) ** 2 * site_var[on]
        net = np.column_stack([y[at], x[at]])
        gap2 = ((net - reg) ** 2).sum(1)
        y[at] = (1.0 - p_d) * reg[:, 0] + p_d * net[:, 0]
        x[at] = (1.0 - p_d) * reg[:, 1] + p_d * net[:, 1]
        err[at] = np.sqrt((1.0 - p_d) * reg_var + p_d * err[at] ** 2 + p_d * (1.0 - p_d) * gap2 / 2.0)
        w = (1.0 - p_d) * w_r + p_d
        weight[at] = w
        done[at] = True
        summary.append({"frame": None if frame is None else int(frame), "sublattice": int(s),
                        "n": int(on.sum()), "tau_px": float(np.sqrt(tau2)),
                        "sigma_px": float(np.sqrt(np.median(sig2))), "weight": float(np.median(w)),
                        "displaced_fraction": pi,
                        "smoothing_px": float(smoothing)})

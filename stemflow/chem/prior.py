"""Lattice prior: shrink each measured centre towards its fitted lattice site by what the data allow.

A single column's own counts limit how well any estimator can place it (at 10⁵ e⁻/Å² about 3 pm
per axis for a carbon column, see ``docs/finder.md``). In a crystal most columns sit very close
to a smooth lattice, and that lattice — fitted to hundreds of columns, with a local correction
(:func:`~stemflow.chem.sites.assign_sites`) — is known far better than any one column. This is
the empirical-Bayes (James–Stein) estimate that combines the two: with ``r`` the measured offset
of a column from its site, ``σ²`` its measurement variance per axis (``xy_error²``) and ``τ²``
the variance per axis of the true offsets, estimated per frame and sublattice from the columns
themselves as the spread of ``r`` beyond ``σ²``, the position is ``site + w·r`` with
``w = τ² / (τ² + σ²)``.

The prior adapts: where the columns really scatter about the lattice (disorder, ripples, a
distortion the local correction does not follow) ``τ²`` is large and ``w`` near 1, the
measurement; where they do not, ``w`` is near 0 and the error is that of the site. It is never
applied where the lattice is known not to hold — dopants, vacancies, defect members, columns
whose coordination differs from the lattice's, unfitted sites, and every column within
``exclusion`` bonds of those (relaxation around defects is real physics to be measured, not
noise) — nor to a column whose offset is improbable under the prior (a χ² test, ``p < 0.001``):
those keep their measured centres. Measured accuracy and the bias on displaced columns:
``benchmarks/lattice_prior.py``.

Units: positions, offsets and errors in px.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import InputError
from ._common import LATTICE_PARAMS, frame_groups, labels_of, resolve, with_attrs
from .sites import BASIS, site_cells

__all__ = ["lattice_prior", "PRIOR_COLUMNS"]

#: Columns :func:`lattice_prior` adds (``y``, ``x``, ``y_nm``, ``x_nm`` and ``xy_error`` change).
PRIOR_COLUMNS = ["y_measured", "x_measured", "prior_weight"]
_NEEDS = ["site", "sublattice", "defect_id", "coordination", "xy_error"]
_CHI2_2DOF_P001 = 13.816      # χ² with 2 degrees of freedom: P(> 13.816) = 0.001
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
        Atoms table from ``find_atoms(..., refine=True)`` followed by
        :func:`~stemflow.chem.identify` (``find_atoms(..., lattice_prior=True)`` does all three):
        ``y``, ``x`` (px), ``label``, ``xy_error`` (px, standard error per axis), ``site_y``,
        ``site_x`` (px), ``sublattice``, ``defect_id``, ``coordination``; optional ``frame``.
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``.
    exclusion : float
        Columns within this many bonds (a/√3) of a dopant, a vacancy, a defect member, a column of
        unusual coordination or an unfitted column keep their measured centres.
    min_columns : int
        Fewest regular columns of one sublattice in a frame to estimate the prior from; with
        fewer that sublattice is left as measured.

    Returns
    -------
    DataFrame
        A copy of ``atoms`` with ``y``, ``x`` (and ``y_nm``, ``x_nm`` if present) the new
        centres, ``xy_error`` their standard error per axis (px), ``y_measured``, ``x_measured``
        (px, the centres given) and ``prior_weight`` (float64, ``w``: 1 = measured centre kept,
        0 = the site). ``df.attrs["lattice_prior"]`` lists per frame and sublattice ``n``
        (columns used), ``tau_px`` (spread of the true offsets, per axis), ``sigma_px`` (median
        measurement error) and ``weight`` (median ``w``).

    Raises
    ------
    InputError
        Missing columns (the message says how to make them), no pixel size, unknown lattice.

    Notes
    -----
    The weight minimises the expected squared error when the true offsets of regular columns
    scatter with variance ``τ²`` about the fitted lattice; it relies on ``xy_error`` being an
    honest measurement error. If ``xy_error`` is too small, ``τ²`` comes out too large and the
    prior too weak (the safe side); if too large, the prior is too strong. The columns' offsets
    are then biased towards the lattice by ``(1 - w)`` of their true offset: fine for positions
    and counts, wrong for measuring small displacements of regular columns — use ``y_measured``,
    ``x_measured`` for strain maps.

    Examples
    --------
    >>> import stemflow
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 256, pixel_size=0.01, seed=0)
    >>> atoms = stemflow.find_atoms(sim.image, 0.01, "graphene", lattice_prior=True)  # doctest: +SKIP
    >>> atoms[["y", "y_measured", "prior_weight", "xy_error"]].describe()          # doctest: +SKIP
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
    out["y_measured"], out["x_measured"] = y.copy(), x.copy()
    weight = np.ones(n)
    summary = []
    if n and lattice in LATTICE_PARAMS and lattice != "amorphous":
        bond_px = LATTICE_PARAMS[lattice]["bond"] / pixel_size
        # The field the columns span (px); the smoothing grid covers it.
        shape = (float(np.nanmax(y)) + 2.0, float(np.nanmax(x)) + 2.0)
        site = out["site"].to_numpy(np.int64)
        sub = out["sublattice"].to_numpy(np.int64)
        did = out["defect_id"].to_numpy(np.int64)
        coord = out["coordination"].to_numpy(np.int64)
        lab = labels_of(out)
        for frame, rows in frame_groups(out):
            _frame(rows, y, x, err, weight, site, sub, did, coord, lab, bond_px, exclusion,
                   min_columns, frame, summary, shape, smoothing_nm / pixel_size)
    out["y"], out["x"], out["xy_error"], out["prior_weight"] = y, x, err, weight
    if "y_nm" in out.columns:
        out["y_nm"] = y * pixel_size
        out["x_nm"] = x * pixel_size
    out = with_attrs(out, atoms, pixel_size, lattice)
    out.attrs["lattice_prior"] = summary
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


def _frame(rows, y, x, err, weight, site, sub, did, coord, lab, bond_px, exclusion, min_columns,
           frame, summary, shape, smoothing):
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
    # Defect nodes and the columns bonded to them keep their measured centres, as do columns of
    # unusual coordination (the first shell of a vacancy or an empty site) and unfitted ones.
    seed = (lab[rows] != "lattice") | (did[rows] >= 0)
    pos = np.column_stack([y[rows], x[rows]])
    near = (sub[rows] < 0) | odd
    if seed.any() and exclusion > 0:
        near |= cKDTree(pos[seed]).query_ball_point(pos, exclusion * bond_px, return_length=True) > 0
    e2 = err[rows] ** 2
    ok = ~seed & ~near & np.isfinite(e2)
    if ok.sum() < max(min_columns, 8):
        return
    # The lattice of this frame from the regular columns: affine map of the fractional
    # coordinates of their sites, a constant offset of sublattice 1, fitted robustly.
    cells, s_of = site_cells(site[rows])
    f = cells + BASIS[s_of]
    X = np.column_stack([f, np.ones(len(rows)), (s_of == 1).astype(float)])
    keep = ok.copy()
    for _ in range(3):
        W, *_ = np.linalg.lstsq(X[keep], pos[keep], rcond=None)
        r = pos - X @ W
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
    idx = both[~iv]
    g, n_eff = g[~iv], n_eff[~iv]
    ref = keep[idx]
    rr = r[idx] - g
    site_pos = pos[idx] - rr
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
        # and displaced ones (a fraction π, true offsets up to ~DISPLACED bonds), e.g. relaxed
        # around a defect the network did not mark. π by expectation–maximisation; each column's
        # centre is the posterior mean of its true offset under the mixture.
        var_r = tau2 + sig2 + site_var[on]
        var_d = (_DISPLACED * bond_px) ** 2 + sig2
        log_r = -np.log(var_r) - 0.5 * q2 / var_r
        log_d = -np.log(var_d) - 0.5 * q2 / var_d
        pi = 0.01
        for _ in range(20):
            p_d = 1.0 / (1.0 + np.exp(np.clip(log_r - log_d, -50, 50)) * (1.0 - pi) / pi)
            pi = float(np.clip(p_d.mean(), _PI_MIN, 0.5))
        w_r = tau2 / (tau2 + sig2)
        w_d = (_DISPLACED * bond_px) ** 2 / var_d
        w = p_d * w_d + (1.0 - p_d) * w_r
        # Posterior variance per axis of the true offset under the mixture (site error added).
        post = (p_d * (w_d * sig2 + w_d**2 * 0.0) + (1.0 - p_d) * w_r * sig2
                + p_d * (1.0 - p_d) * (w_d - w_r) ** 2 * q2 / 2.0)
        at = rows[idx[on]]
        y[at] = site_pos[on, 0] + w * rr[on, 0]
        x[at] = site_pos[on, 1] + w * rr[on, 1]
        err[at] = np.sqrt(post + (1.0 - w) ** 2 * site_var[on])
        weight[at] = w
        summary.append({"frame": None if frame is None else int(frame), "sublattice": int(s),
                        "n": int(on.sum()), "tau_px": float(np.sqrt(tau2)),
                        "sigma_px": float(np.sqrt(np.median(sig2))), "weight": float(np.median(w)),
                        "displaced_fraction": pi,
                        "smoothing_px": float(smoothing)})

"""Drift of the field of view, frame by frame, from the host lattice atoms.

The specimen drifts under the probe, so the same column sits at different pixels in successive
frames. :func:`drift` measures that displacement from the atoms tables alone (optionally helped by
the images) and :func:`subtract_drift` removes it, so that positions of different frames can be
compared and linked.

Two stages, both on point clouds of lattice atoms:

1. *Coarse*, frame to frame: the histogram of displacement vectors between the atoms of frame
   k and those of frame k-1, searched within ``max_step`` px of the step predicted from the
   previous one (constant velocity) or, with images, of the phase cross-correlation peak. Inside
   that window there is one peak only, because every other peak of a lattice's displacement
   histogram lies at least one nearest-neighbour distance away: the step cannot alias by a lattice
   period, however far the field has drifted in total.
2. *Fine*, against a key frame: the atoms of frame k, shifted by the coarse estimate, are paired
   with their nearest atoms of the key frame, and the robust mean of the residual vectors gives
   the sub-pixel drift. The key frame is kept while it overlaps the current one (so errors do not
   accumulate frame after frame) and replaced when the overlap falls below ``min_overlap``.

Units: positions and drift in px; ``frame`` in frames.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import InputError, StemflowWarning
from ..tables import DRIFT
from ._validate import check_finite, require_columns, require_frame, require_table

__all__ = ["drift", "subtract_drift", "DriftEstimator", "lattice_spacing"]



def lattice_spacing(points: np.ndarray) -> float:
    """Median nearest-neighbour distance of ``points`` ((n, 2) px), px; NaN for fewer than 2 points.

    Parameters
    ----------
    points : array-like, (n, 2)
        Positions ``(y, x)`` of the lattice atoms of one frame, px.

    Returns
    -------
    float
        The median distance from each point to its nearest neighbour, px (the host lattice's
        nearest-neighbour distance for lattice atoms); NaN when there are fewer than 2 points.

    Examples
    --------
    >>> import numpy as np
    >>> from stemflow.tracking import lattice_spacing
    >>> yy, xx = np.mgrid[0:4, 0:4]
    >>> lattice_spacing(np.column_stack([yy.ravel(), xx.ravel()]) * 2.5)    # square grid, 2.5 px
    2.5
    >>> lattice_spacing(np.zeros((1, 2)))
    nan
    """
    points = np.asarray(points, np.float64)
    if len(points) < 2:
        return float("nan")
    d, _ = cKDTree(points).query(points, k=2)
    return float(np.median(d[:, 1]))


def _robust_mean(v: np.ndarray, scale: float) -> np.ndarray:
    """Mean of the vectors ``v`` ((n, 2)) within ``scale`` of their median (2 passes)."""
    c = np.median(v, axis=0)
    for _ in range(2):
        keep = np.hypot(*(v - c).T) <= scale
        if not keep.any():
            break
        c = v[keep].mean(axis=0)
    return c


class DriftEstimator:
    """Streaming drift estimation: feed the lattice atoms of each frame in order, get its drift.

    Memory holds only the previous frame and the key frame, so movies of any length are aligned
    in one pass. :func:`drift` wraps it for a whole table.

    Parameters
    ----------
    spacing : float, optional
        Nearest-neighbour distance of the host lattice, px; measured on the first frame if None.
    max_step : float, optional
        Largest deviation (px) of a frame-to-frame step from its prediction (the previous step, or
        the image cross-correlation). Default 0.8 × ``spacing``: larger windows could reach the
        histogram's next peak.
    min_overlap : float
        Fraction of the key frame's atoms that must still be paired; below it the key frame is
        renewed.
    """

    def __init__(self, spacing: float | None = None, max_step: float | None = None,
                 min_overlap: float = 0.5):
        self.spacing = None if spacing is None else float(spacing)
        self.max_step = None if max_step is None else float(max_step)
        if not 0 < min_overlap <= 1:
            raise InputError(f"min_overlap={min_overlap} must lie in (0, 1]")
        self.min_overlap = float(min_overlap)
        self._prev = None          # (frame, points, drift)
        self._velocity = np.zeros(2)
        self._key = None           # (points tree, drift, n)
        self._prev_image = None

    def update(self, frame: int, points: np.ndarray, image: np.ndarray | None = None) -> tuple[float, float, int]:
        """Drift (dy, dx, px) of ``frame`` relative to the first frame fed, and the number of atoms
        paired; NaN drift when the frame has fewer than 3 atoms."""
        points = np.asarray(points, np.float64).reshape(-1, 2)
        if self.spacing is None and len(points) >= 3:
            self.spacing = lattice_spacing(points)
        if self._prev is None:
            if len(points) < 3:
                return float("nan"), float("nan"), 0
            d = np.zeros(2)
            self._set_key(points, d)
            self._prev = (frame, points, d)
            self._prev_image = image
            return 0.0, 0.0, len(points)
        if len(points) < 3:
            return float("nan"), float("nan"), 0
        f0, p0, d0 = self._prev
        gap = max(int(frame) - int(f0), 1)
        pred = self._velocity * gap
        if image is not None and self._prev_image is not None:
            pred = self._image_step(self._prev_image, image, pred)
        step = self._coarse_step(p0, points, pred)
        d = d0 + step
        d, matched = self._fine(points, d)
        if matched < self.min_overlap * min(self._key[2], len(points)):
            self._set_key(points, d)
        self._velocity = (d - d0) / gap
        self._prev = (frame, points, d)
        self._prev_image = image
        return float(d[0]), float(d[1]), int(matched)

    # ------------------------------------------------------------------ internals
    def _set_key(self, points, d):
        self._key = (cKDTree(points), d.copy(), len(points))

    def _window(self) -> float:
        return self.max_step if self.max_step is not None else 0.8 * self.spacing

    def _coarse_step(self, prev: np.ndarray, cur: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Peak of the histogram of displacement vectors cur - prev within the window around pred."""
        r = self._window()
        tree = cKDTree(prev)
        pairs = tree.query_ball_point(cur - pred, r=r)
        counts = np.fromiter((len(p) for p in pairs), np.int64, len(pairs))
        if counts.sum() == 0:
            return pred
        i = np.repeat(np.arange(len(cur)), counts)
        j = np.fromiter((k for p in pairs for k in p), np.int64, counts.sum())
        v = cur[i] - prev[j] - pred
        bin_px = min(0.5, r / 8)
        n = int(np.ceil(r / bin_px))
        h, ey, ex = np.histogram2d(v[:, 0], v[:, 1], bins=2 * n + 1,
                                   range=[[-(n + 0.5) * bin_px, (n + 0.5) * bin_px]] * 2)
        h = ndimage.gaussian_filter(h, 1.0, mode="constant")
        iy, ix = np.unravel_index(np.argmax(h), h.shape)
        peak = np.array([0.5 * (ey[iy] + ey[iy + 1]), 0.5 * (ex[ix] + ex[ix + 1])])
        near = np.hypot(*(v - peak).T) <= 0.25 * self.spacing
        if near.sum() >= 3:
            peak = _robust_mean(v[near], 0.15 * self.spacing)
        return pred + peak

    def _fine(self, cur: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, int]:
        """Refine the drift ``d`` of ``cur`` by pairing its atoms with the key frame's."""
        tree, dk, _ = self._key
        shifted = cur - (d - dk)
        dist, j = tree.query(shifted, k=1, distance_upper_bound=0.3 * self.spacing)
        ok = np.isfinite(dist)
        if ok.sum() < 3:
            return d, int(ok.sum())
        res = shifted[ok] - tree.data[j[ok]]
        return d + _robust_mean(res, 0.15 * self.spacing), int(ok.sum())

    def _image_step(self, prev_image, image, pred):
        from skimage.registration import phase_cross_correlation

        shift, _, _ = phase_cross_correlation(np.asarray(image, np.float64), np.asarray(prev_image, np.float64),
                                              normalization=None)
        return np.asarray(shift, np.float64)


def _host_rows(df: pd.DataFrame, labels) -> pd.DataFrame:
    if labels is None or "label" not in df.columns:
        return df
    host = df[df["label"].astype(str).isin([str(s) for s in labels])]
    return host if len(host) else df


def drift(atoms: pd.DataFrame, *, labels=("lattice",), spacing: float | None = None,
          max_step: float | None = None, min_overlap: float = 0.5, images=None) -> pd.DataFrame:
    """Drift of the field of view in every frame, from the host lattice atoms.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table of a movie: ``frame``, ``y``, ``x`` (px) and, optionally, ``label``.
    labels : sequence of str or None
        Rows used for the alignment (default the host lattice atoms; all rows if the table has no
        ``label`` column, if none match, or if None).
    spacing : float, optional
        Nearest-neighbour distance of the host lattice, px (measured when None).
    max_step : float, optional
        Largest change of the frame-to-frame step from one frame to the next, px (default
        0.8 × ``spacing``). The first step is predicted as zero, so the drift between the first two
        frames must stay below it; later steps may be any size if they change smoothly.
    min_overlap : float
        Fraction of the key frame's atoms that must be paired before it is renewed.
    images : array-like (frame, y, x), optional
        The frames themselves: the coarse step then starts from their phase cross-correlation.
        ``images[i]`` must be the image of the i-th frame number present in ``atoms``.

    Returns
    -------
    DataFrame
        ``frame`` (int64), ``dy``, ``dx`` (float64, px: where the specimen point that was at (y, x)
        in the first frame appears, minus (y, x)), ``matched`` (int64, atoms paired with the key
        frame). One row per frame from the first to the last frame of ``atoms``; frames with fewer
        than 3 atoms are interpolated (with a warning).

    Raises
    ------
    InputError
        No ``frame``/``y``/``x`` column, NaN positions, or no frame with 3 atoms.

    Notes
    -----
    Units: px and frames. The drift of the first frame is (0, 0). Correct positions with
    :func:`subtract_drift`. Accuracy on simulated graphene movies (drift up to 2 px/frame,
    accumulated over many lattice periods) is in ``benchmarks/results/track.md``.

    Examples
    --------
    >>> from stemflow.simulate import simulate_movie
    >>> mov = simulate_movie("graphene", 8, 192, drift=(1.5, -1.0), seed=0)
    >>> d = drift(mov.atoms)
    >>> bool(abs(d.dy.iloc[-1] - mov.drift.dy.iloc[-1]) < 0.1)
    True
    """
    atoms = require_table(atoms)
    require_frame(atoms)
    require_columns(atoms, ["y", "x"])
    if len(atoms) == 0:
        return DRIFT.empty()
    check_finite(atoms, ["y", "x"])
    host = _host_rows(atoms, labels)
    est = DriftEstimator(spacing=spacing, max_step=max_step, min_overlap=min_overlap)
    frames = np.sort(atoms["frame"].unique())
    groups = {int(f): g for f, g in host.groupby("frame", sort=True)}
    rows = []
    for i, f in enumerate(frames):
        g = groups.get(int(f))
        pts = np.empty((0, 2)) if g is None else g[["y", "x"]].to_numpy(np.float64)
        img = None if images is None else np.asarray(images[i])
        rows.append((int(f), *est.update(int(f), pts, img)))
    return finish_drift(rows, int(frames[0]), int(frames[-1]))


def finish_drift(rows, first: int, last: int) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=DRIFT.names).set_index("frame")
    out = out.reindex(np.arange(first, last + 1))
    out["matched"] = out["matched"].fillna(0).astype(np.int64)
    missing = out["dy"].isna()
    if missing.all():
        raise InputError("no frame has 3 or more lattice atoms, so the drift cannot be measured; pass "
                         "drift=False to track without drift correction, or a drift table of your own")
    if missing.any():
        warnings.warn(f"{int(missing.sum())} frame(s) have fewer than 3 lattice atoms; their drift is "
                      "interpolated from the neighbouring frames", StemflowWarning, stacklevel=3)
        out[["dy", "dx"]] = out[["dy", "dx"]].interpolate(limit_direction="both")
    out = out.reset_index().rename(columns={"index": "frame"})
    return out.astype({"frame": np.int64, "dy": np.float64, "dx": np.float64})[DRIFT.names]


def subtract_drift(atoms: pd.DataFrame, drift_table: pd.DataFrame) -> pd.DataFrame:
    """Drift-corrected positions: a copy of ``atoms`` with ``y_corr``, ``x_corr`` (px) added.

    Parameters
    ----------
    atoms : DataFrame
        ``frame``, ``y``, ``x`` (px).
    drift_table : DataFrame
        ``frame``, ``dy``, ``dx`` (px) as :func:`drift` returns (or a simulator's ``.drift``).

    Returns
    -------
    DataFrame
        ``atoms`` with ``y_corr = y - dy(frame)`` and ``x_corr = x - dx(frame)``: positions in the
        coordinates of the first frame. ``y`` and ``x`` are kept as measured.

    Raises
    ------
    InputError
        A column is missing, or a frame of ``atoms`` has no drift.

    Examples
    --------
    >>> import pandas as pd
    >>> from stemflow.tracking import subtract_drift
    >>> atoms = pd.DataFrame({"frame": [0, 1], "y": [10.0, 11.5], "x": [20.0, 19.0]})
    >>> drift_table = pd.DataFrame({"frame": [0, 1], "dy": [0.0, 1.5], "dx": [0.0, -1.0]})
    >>> subtract_drift(atoms, drift_table)[["y_corr", "x_corr"]].to_numpy().tolist()   # px
    [[10.0, 20.0], [10.0, 20.0]]
    """
    atoms = require_table(atoms)
    require_frame(atoms)
    require_columns(atoms, ["y", "x"])
    require_table(drift_table, "drift")
    require_columns(drift_table, ["frame", "dy", "dx"], "drift", "pass the table stemflow.tracking.drift returns")
    d = drift_table.set_index("frame")[["dy", "dx"]]
    fr = atoms["frame"].to_numpy()
    try:
        dd = d.loc[fr].to_numpy(np.float64) if len(fr) else np.empty((0, 2))
    except KeyError:
        absent = sorted(set(np.unique(fr).tolist()) - set(d.index.tolist()))[:5]
        raise InputError(f"the drift table has no row for frame(s) {absent}; measure it on the same movie "
                         "(stemflow.tracking.drift(atoms))") from None
    out = atoms.copy()
    out["y_corr"] = out["y"].to_numpy(np.float64) - dd[:, 0]
    out["x_corr"] = out["x"].to_numpy(np.float64) - dd[:, 1]
    return out

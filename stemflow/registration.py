"""Register the frames of a movie on each other from the images alone.

At low dose a frame holds too few counts for the network to find the lattice, so the drift of
the field cannot come from the atoms tables (:mod:`stemflow.tracking.alignment`). The images
still carry it: smoothed to the probe's size, each frame is cross-correlated (by FFT, the peak
searched only near the expected step: a crystal matches itself at every lattice vector) with the
sum of all the frames before it, each moved by its own shift, and then every frame is registered
again on the mean of the whole registered movie. Both references hold far more counts than one
frame, so errors do not add up frame after frame: chaining frame-to-frame steps instead slipped
by a bond in 3 of 12 simulated 1000 e⁻/Å² movies taken with a 1.4 Å probe (RMS error up to
8 px; 0.9–1.1 px with the summed reference, and no worse with a 0.8 or 1.1 Å probe).

Units: shifts and positions in px; ``shifts[t]`` is where frame ``t``'s content sits relative to
frame 0 (a column at ``p`` in frame 0 is at ``p + shifts[t]`` in frame ``t``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import InputError

__all__ = ["register_frames", "shift_frames"]


def _check_stack(frames) -> np.ndarray:
    a = np.asarray(frames)
    if a.ndim != 3 or a.shape[0] < 1 or min(a.shape[1:]) < 16:
        raise InputError(f"frames of shape {a.shape}: expected a stack (frame, y, x) of frames at least "
                         "16 px on a side")
    if a.dtype.kind not in "iuf":
        raise InputError(f"frames of dtype {a.dtype}: expected real numbers (detector counts)")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise InputError("frames contain NaN or infinite values; replace them (e.g. by the frame's median) "
                         "before registering")
    return a


def _peak(img_f: np.ndarray, ref_f: np.ndarray, shape, centre, radius: float) -> np.ndarray:
    """Displacement of an image's content relative to a reference, from their ``rfft2``: the
    cross-correlation's highest point within ``radius`` px of ``centre``, refined to sub-pixel by a
    parabola on each axis."""
    cc = np.fft.irfft2(img_f * np.conj(ref_f), s=shape)
    h, w = cc.shape
    c = np.round(np.asarray(centre, np.float64)).astype(np.int64)
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = np.hypot(dy + c[0] - centre[0], dx + c[1] - centre[1]) <= radius
    cand_y, cand_x = (dy + c[0])[keep], (dx + c[1])[keep]
    vals = cc[cand_y % h, cand_x % w]
    k = int(np.argmax(vals))
    py, px = int(cand_y[k]), int(cand_x[k])
    out = np.array([py, px], np.float64)
    for axis in (0, 1):
        lo = cc[(py - (axis == 0)) % h, (px - (axis == 1)) % w]
        mid = cc[py % h, px % w]
        hi = cc[(py + (axis == 0)) % h, (px + (axis == 1)) % w]
        den = lo - 2 * mid + hi
        if den < 0:
            out[axis] += float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))
    return out


def register_frames(frames, sigma_px: float = 3.0, *, max_step: float | None = None,
                    iterations: int = 2) -> np.ndarray:
    """Shift of every frame relative to the first, from the images, px.

    Parameters
    ----------
    frames : array-like, (frame, y, x)
        The movie, counts (any real dtype); finite.
    sigma_px : float
        Gaussian smoothing before correlating, px: about the probe's σ, so that single counts
        become blobs the correlation can see.
    max_step : float, optional
        Largest drift from one frame to the next, px. A crystal correlates with itself at every
        lattice vector (and, for a honeycomb, at every bond), so the search must stay within
        half the nearest-neighbour distance of the expected step; default: a quarter of the
        frame's smaller side (fine for images without a lattice).
    iterations : int
        Passes of registering every frame on the registered mean (0: each frame on the sum of
        those before it only); each moves a frame by at most ``max_step`` from its previous
        estimate.

    Returns
    -------
    ndarray, (frame, 2)
        ``(dy, dx)`` px of each frame relative to frame 0 (row 0 is zero).

    Examples
    --------
    >>> import numpy as np
    >>> from stemflow.registration import register_frames
    >>> rng = np.random.default_rng(0)
    >>> base = rng.poisson(3.0, (80, 80)).astype(float)
    >>> movie = np.stack([base, np.roll(base, (2, -1), axis=(0, 1))])
    >>> register_frames(movie, sigma_px=1.0).round(1).tolist()
    [[0.0, 0.0], [2.0, -1.0]]
    """
    a = _check_stack(frames)
    radius = 0.25 * min(a.shape[1:]) if max_step is None else float(max_step)
    if not radius > 0:
        raise InputError(f"max_step={max_step}: expected a positive number of px per frame")
    sm = np.stack([ndimage.gaussian_filter(f, sigma_px) for f in a]) if sigma_px > 0 else a.copy()
    sm -= sm.mean(axis=(1, 2), keepdims=True)
    spec = np.fft.rfft2(sm)                              # each frame's transform, once
    shape = a.shape[1:]
    shifts = np.zeros((len(a), 2))
    before = sm[0].copy()                   # the frames so far, on frame 0's grid
    for t in range(1, len(a)):
        shifts[t] = _peak(spec[t], np.fft.rfft2(before), shape, shifts[t - 1], radius)
        before += ndimage.shift(sm[t], -shifts[t], order=1, mode="nearest")
    for _ in range(iterations if len(a) > 1 else 0):
        ref = np.mean([ndimage.shift(sm[t], -shifts[t], order=1, mode="nearest") for t in range(len(a))], axis=0)
        ref_f = np.fft.rfft2(ref)
        shifts = np.stack([_peak(spec[t], ref_f, shape, shifts[t], radius) for t in range(len(a))])
        shifts -= shifts[0]
    return shifts


def shift_frames(frames, shifts) -> tuple[np.ndarray, np.ndarray]:
    """Move every frame onto frame 0's grid (linear interpolation).

    Parameters
    ----------
    frames : array-like, (frame, y, x)
        The movie, counts.
    shifts : array-like, (frame, 2)
        :func:`register_frames`' output, px.

    Returns
    -------
    registered : ndarray, (frame, y, x) float64
        Frame ``t`` moved by ``-shifts[t]``; pixels with no data are 0.
    valid : ndarray, (frame, y, x) bool
        Where ``registered`` holds data.

    Examples
    --------
    >>> import numpy as np
    >>> frames = np.arange(2 * 20 * 20, dtype=float).reshape(2, 20, 20)
    >>> reg, valid = shift_frames(frames, [[0, 0], [0, 2]])
    >>> bool(valid[1, :, :18].all()), bool(valid[1, :, 18:].any()), bool(reg[1, 0, 0] == frames[1, 0, 2])
    (True, False, True)
    """
    a = _check_stack(frames)
    shifts = np.asarray(shifts, np.float64)
    if shifts.shape != (len(a), 2) or not np.isfinite(shifts).all():
        raise InputError(f"shifts of shape {shifts.shape}: expected finite (dy, dx) for each of {len(a)} frames")
    reg = np.empty_like(a)
    valid = np.empty(a.shape, bool)
    ones = np.ones(a.shape[1:])
    for t in range(len(a)):
        reg[t] = ndimage.shift(a[t], -shifts[t], order=1, mode="constant", cval=0.0)
        valid[t] = ndimage.shift(ones, -shifts[t], order=1, mode="constant", cval=0.0) > 0.999
    reg[~valid] = 0.0
    return reg, valid

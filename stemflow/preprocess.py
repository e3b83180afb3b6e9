"""Resampling to the network's sampling and per-frame normalisation.

Used identically in training (on simulated frames) and inference (on real ones), so that what the
network sees never depends on where an image came from. Coordinates follow the pixel-centre
convention of the atoms table: pixel (r, c) has its centre at (r, c).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import InputError

__all__ = ["resample", "to_input_coords", "to_model_coords", "normalize"]


def resample(image: np.ndarray, factor: float, order: int = 1) -> np.ndarray:
    """Resample a 2-D image by ``factor`` output px per input px (< 1 shrinks).

    The mapping is exact and area-preserving: output pixel centre ``j`` sits at input coordinate
    ``(j + 0.5) / factor - 0.5`` (see :func:`to_input_coords`). When shrinking, the image is first
    smoothed with a Gaussian of σ = ½·√(1/factor² − 1) input px so that noise does not alias, which
    matches what binning a detector would do.

    Parameters
    ----------
    image : ndarray (y, x)
    factor : float
        Input pixel size / output pixel size.
    order : int
        Spline order of the interpolation (1 = linear).

    Returns
    -------
    ndarray of float32, shape ``floor(shape · factor)``
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise InputError(f"resample takes a 2-D image; got shape {img.shape}")
    if not np.isfinite(factor) or factor <= 0:
        raise InputError(f"resampling factor must be a positive number; got {factor}")
    if abs(factor - 1.0) < 1e-9:
        return img.copy()
    if factor < 1:
        img = ndimage.gaussian_filter(img, 0.5 * np.sqrt(1.0 / factor**2 - 1.0), mode="nearest")
    shape = tuple(max(1, int(np.floor(n * factor + 1e-9))) for n in img.shape)
    inv = 1.0 / factor
    return ndimage.affine_transform(img, [inv, inv], offset=0.5 * inv - 0.5, output_shape=shape,
                                    order=order, mode="nearest", prefilter=order > 1)


def to_input_coords(coords, factor: float):
    """Positions (px) on a grid made by :func:`resample` → positions on the input grid."""
    return (np.asarray(coords, dtype=np.float64) + 0.5) / factor - 0.5


def to_model_coords(coords, factor: float):
    """Positions (px) on the input grid → positions on the grid made by :func:`resample`."""
    return (np.asarray(coords, dtype=np.float64) + 0.5) * factor - 0.5


def normalize(image: np.ndarray, low: float = 0.5, high: float = 99.5, smooth: float = 2.0) -> np.ndarray:
    """Robust per-frame normalisation: the ``low`` and ``high`` percentiles of a smoothed copy map
    to 0 and 1.

    Smoothing (Gaussian, σ = ``smooth`` px) before taking percentiles makes the scale follow atom
    columns rather than single noisy pixels, so it is stable from a few counts per pixel to
    noise-free images. It is applied on the network's grid (20 pm/px for the bundled models),
    where 2 px is 0.4 Å, just under the probe's σ.

    Raises
    ------
    InputError
        If the image holds NaN/Inf or is constant (nothing to find).
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise InputError(f"normalize takes a 2-D image; got shape {img.shape}")
    if not np.isfinite(img).all():
        raise InputError("the image holds NaN or Inf pixels; fill or crop them before finding atoms "
                         "(e.g. np.nan_to_num(image, nan=np.nanmedian(image)))")
    step = max(1, int(np.sqrt(img.size / 262144)))  # percentiles from ≤ ~512² samples
    blurred = ndimage.gaussian_filter(img, smooth, mode="nearest", truncate=3.0)
    lo, hi = np.percentile(blurred[::step, ::step], [low, high])
    if not hi - lo > 1e-12 * max(1.0, abs(hi)):
        raise InputError("the image is constant (or nearly): there is nothing to find; check that the "
                         "right channel or frame was passed")
    return (img - np.float32(lo)) / np.float32(hi - lo)

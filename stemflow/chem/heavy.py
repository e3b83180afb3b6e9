"""Heavy single atoms on amorphous supports: is a candidate a significant local excess?

On a thick amorphous support (carbon, carbon nitride, thin oxide) the support's own texture —
thickness and density varying at the scale of an atom — makes bright spots that look like heavy
atoms to a network. A heavy atom is a point source: under a filter matched to the probe it rises
above the local support level by far more than the texture and the shot noise do. The
significance of a candidate is that rise in units of the frame's robust spread of the same
filtered, background-removed image.

Units: positions in px, pixel size in nm/px, probe width in nm, significance in σ.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from ..errors import InputError, check_positive

__all__ = ["heavy_atom_significance", "HEAVY_SIGNIFICANCE"]

#: Significance a heavy atom must reach, σ. A 512² frame at 30 pm/px holds about 10⁴ independent
#: probe-sized areas; a one-sided Gaussian tail beyond 4 σ (3·10⁻⁵) gives under one false atom
#: per frame from the support's fluctuations alone.
HEAVY_SIGNIFICANCE = 4.0


def heavy_atom_significance(atoms: pd.DataFrame, image, pixel_size: float, *, probe_sigma_nm: float = 0.05,
                            background_scale: float = 4.0) -> np.ndarray:
    """Matched-filter significance (σ) of each row of ``atoms`` as a point source on ``image``.

    Parameters
    ----------
    atoms : DataFrame
        ``y``, ``x`` (px).
    image : ndarray (y, x)
        The frame the rows were found in (any intensity units).
    pixel_size : float
        nm/px.
    probe_sigma_nm : float
        Standard deviation of the probe's core, nm (0.05 nm: a 1.2 Å FWHM probe).
    background_scale : float
        The local support level is the image smoothed over this many probe widths.

    Returns
    -------
    ndarray of float
        The largest filtered excess within one probe width of each row, over the robust spread
        (1.4826 × MAD) of the filtered excess across the frame.
    """
    img = np.asarray(image, np.float64)
    if img.ndim != 2:
        raise InputError(f"heavy_atom_significance takes one 2-D frame; got shape {img.shape}")
    pixel_size = check_positive(pixel_size, "pixel_size", "nm/px")
    s = max(probe_sigma_nm / pixel_size, 0.5)
    excess = ndimage.gaussian_filter(img, s) - ndimage.gaussian_filter(img, background_scale * s)
    spread = 1.4826 * np.median(np.abs(excess - np.median(excess)))
    if not spread > 0:
        return np.full(len(atoms), np.inf)
    reach = max(1, int(np.ceil(s)))
    peak = ndimage.maximum_filter(excess, 2 * reach + 1)
    h, w = img.shape
    yi = np.clip(np.rint(atoms["y"].to_numpy(float)).astype(int), 0, h - 1)
    xi = np.clip(np.rint(atoms["x"].to_numpy(float)).astype(int), 0, w - 1)
    return peak[yi, xi] / spread

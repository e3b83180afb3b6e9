"""How many counts a frame holds, from its own noise.

A frame's pixel-to-pixel (white) noise is measured with a 5-point Laplacian, which a
probe-limited image's signal leaves nearly alone. For counting noise scaled by any detector gain,
the frame's mean squared over that variance is the mean number of detected counts per pixel:
a measure of the dose that needs no calibration of the detector. Frames below
:data:`DIM_COUNTS` per nm² are dose-limited: there the network's doubt about a column reflects
counting noise rather than what the column is (:mod:`stemflow.lowdose` finds such movies
together; :func:`stemflow.chem.check_dopants` does not hold their dopants to the network's
confidence).

Units: counts per pixel, or per nm² where the name says so.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["white_noise_sd", "detected_counts", "counts_per_nm2", "DIM_COUNTS", "NOT_COUNTS_SD"]

#: Frames hold few counts below this many detected counts per nm² (:func:`detected_counts`: the
#: mean squared over the white-noise variance, per pixel area; free of the detector's gain for
#: counting noise). Simulated graphene frames at 10 pm/px: about 110 per nm² at 1000 e⁻/Å² per
#: frame with the simulator's 0.3 counts of read noise (taken for counting noise) and 380 with
#: pure Poisson counts, 350 / 760 at 2000, 1,300 at 5000 with read noise; the real 60 kV graphene
#: dev frames, which the finder reads one by one (Si recall 1.000), 11,000 and up
#: (``benchmarks/lowdose_movies.py`` reports stacks of them).
DIM_COUNTS = 4000.0

#: A frame is no counts when its 0.1th percentile lies more than this many noise SDs below zero
#: (counts, even with a detector's read noise, stay above about −3.1 SD there).
NOT_COUNTS_SD = 4.0


def white_noise_sd(image, mask=None) -> float:
    """SD of an image's pixel-to-pixel noise, from its 5-point Laplacian.

    Parameters
    ----------
    image : ndarray, (y, x)
        Counts.
    mask : ndarray of bool, (y, x), optional
        Pixels to measure over (default: all).

    Returns
    -------
    float
        Noise SD per pixel, in the image's units (a smooth signal, such as a probe-limited
        image, adds little to it).

    Examples
    --------
    >>> import numpy as np
    >>> round(white_noise_sd(np.random.default_rng(0).normal(5.0, 2.0, (200, 200))), 1)
    2.0
    """
    lap = ndimage.convolve(np.asarray(image, np.float64), np.array([[0, -0.25, 0], [-0.25, 1, -0.25], [0, -0.25, 0]]),
                           mode="nearest")
    return float((lap if mask is None else lap[mask]).std() / np.sqrt(1.25))


def detected_counts(frame) -> float:
    """Detected counts per pixel of a frame, from its own noise: mean² over white-noise variance.

    For counts with Poisson noise scaled by any gain ``g`` (mean ``g·λ``, variance ``g²·λ``) this
    is ``λ``, the mean number of detected counts per pixel, whatever the detector's units. Read
    noise makes it lower, a dark offset (a constant added to every pixel) higher.

    Parameters
    ----------
    frame : ndarray, (y, x)
        Raw counts (not background-subtracted, not normalised).

    Returns
    -------
    float
        Counts per pixel; divide by the pixel area (nm²) for counts per nm². NaN for a flat frame
        and for one that is no counts: a mean at or below zero (a z-scored frame), or its lowest
        values (0.1th percentile) more than :data:`NOT_COUNTS_SD` noise SDs below zero, as after a
        background was subtracted. (A background subtracted from a frame of only a few counts per
        pixel leaves neither sign: such a frame reads dimmer than it is.)

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> area = 5 + 4 * np.sin(np.arange(96) / 3.0)[:, None] * np.cos(np.arange(96) / 4.0)
    >>> round(detected_counts(rng.poisson(area).astype(float)), 0)
    5.0
    >>> round(detected_counts(250.0 * rng.poisson(area)), 0)      # a detector's gain changes nothing
    5.0
    >>> counts = rng.poisson(40 * area).astype(float)
    >>> round(detected_counts(counts)), detected_counts(counts - counts.mean())   # mean subtracted: no counts
    (192, nan)
    >>> detected_counts((area - area.mean()) / area.std() + rng.normal(0, 0.1, area.shape))   # z-scored
    nan
    """
    a = np.asarray(frame, np.float64)
    sd = white_noise_sd(a)
    if not sd > 0 or a.mean() <= 1e-6 * sd or np.percentile(a, 0.1) < -NOT_COUNTS_SD * sd:
        return float("nan")        # no counts: a mean at or below zero, or values far below it
    return float(a.mean() ** 2 / sd**2)


def counts_per_nm2(frame, pixel_size: float) -> float:
    """Detected counts per nm² of a frame (:func:`detected_counts` over the pixel area).

    Parameters
    ----------
    frame : ndarray, (y, x)
        Raw counts.
    pixel_size : float
        Sampling, nm/px.

    Returns
    -------
    float
        Counts per nm²; compare with :data:`DIM_COUNTS`. NaN for a flat frame.

    Examples
    --------
    >>> import numpy as np
    >>> frame = np.random.default_rng(1).poisson(2.0, (128, 128)).astype(float)
    >>> 18_000 < counts_per_nm2(frame, 0.01) < 22_000        # 2 counts per (0.01 nm)² pixel
    True
    """
    return detected_counts(frame) / float(pixel_size) ** 2

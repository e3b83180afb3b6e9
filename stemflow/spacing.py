"""Is the pixel size right? The lattice's own spacing, measured in the frame's power spectrum.

A wrong pixel size is the commonest silent mistake: the network then looks for atoms of the wrong
size and finds thousands in noise, or none. A crystalline frame carries its own ruler — the
first-order lattice planes (graphene's {100}: √3/2 · 0.246 nm = 0.213 nm) make the strongest
ring of its power spectrum — so the pixel size the user gives can be checked without any atom
finding. Units: spacings in nm, pixel sizes in nm/px, frequencies in 1/px.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from .errors import InputError, StemflowWarning
from .tables import LATTICES

__all__ = ["fft_spacing", "check_calibration", "crystal_order", "FIRST_ORDER_NM", "PIXEL_SIZE_TOLERANCE",
           "CRYSTAL_PROMINENCE"]

#: First-order lattice-plane spacing of each crystalline lattice, nm (hexagonal: a·√3/2).
FIRST_ORDER_NM = {name: spec["a"] * np.sqrt(3) / 2 for name, spec in LATTICES.items() if spec["a"] is not None}
#: Relative disagreement between the measured and the expected spacing above which the pixel size
#: is reported as suspect (strain and scan distortion stay within a few per cent).
PIXEL_SIZE_TOLERANCE = 0.2
#: Least prominence of a power-spectrum ring (over the smooth spectrum around it) to count as a
#: lattice: the first-order ring of frames with a visible lattice reaches 10–1000.
_MIN_PROMINENCE = 4.0
#: Relative disagreement within which the brightest spectral spots overrule a clearest ring that
#: disagrees with the expected spacing: tighter than :data:`PIXEL_SIZE_TOLERANCE`, as they overrule
#: a ring (the real MoS2 frame of ``benchmarks/real_data.py``: 0.95 of the expected spacing).
_SPOT_TOLERANCE = 0.1
#: Least prominence of the first-order ring for a clearest ring at the second order's spacing to be
#: read as the second order. Real 60 kV graphene dev frames whose clearest ring is the second order
#: show the first at 3.7–8.6; a pixel size 0.55–0.65× the true one (simulated graphene) gives 1.2,
#: the real MoS2 frame asked for as graphene 0.8 (noise: about 1).
_FIRST_ORDER_PROMINENCE = 2.0


def _half_spectrum(img: np.ndarray) -> tuple[int, np.ndarray | None, np.ndarray | None]:
    """The side ``n`` of the square analysed, and the Hann-windowed Fourier amplitude of its
    mean-free pixels on half the frequencies (``kx ≥ 0``: a real image's spectrum is symmetric,
    ``|F(-k)| = |F(k)|``) with each frequency's radius × n; None for both under 32 px a side."""
    n = min(img.shape[-2:])
    if n < 32:
        return n, None, None
    a = img[:n, :n] - img[:n, :n].mean()
    amplitude = np.abs(np.fft.rfft2(a * np.outer(np.hanning(n), np.hanning(n))))
    radius = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :]) * n
    return n, amplitude, radius


def fft_spacing(image, pixel_size: float = 1.0) -> tuple[float, float]:
    """The strongest ring of a frame's power spectrum, as a spacing, and how clear it is.

    Parameters
    ----------
    image : ndarray (y, x)
    pixel_size : float
        nm/px (1 gives the spacing in px).

    Returns
    -------
    spacing : float
        Spacing of the strongest ring between 2.2 px and a quarter of the frame (nm); NaN when the
        frame is smaller than 32 px a side.
    prominence : float
        The ring's power over the smooth spectrum at its radius (≥ 1; about 1 for noise).
    """
    img = np.asarray(image, np.float64)
    if img.ndim != 2:
        raise InputError(f"fft_spacing takes one 2-D frame; got shape {img.shape}")
    n, excess = _ring_excess(img)
    if excess is None:
        return float("nan"), 1.0
    spacing_px, prominence = _clearest(n, excess)
    return spacing_px * pixel_size, prominence


def _clearest(n: int, excess: np.ndarray) -> tuple[float, float]:
    """Spacing (px) and prominence of the clearest ring of :func:`_ring_excess` from radius 4 out."""
    k = 4 + int(np.argmax(excess[4:]))
    return float(n / k), float(excess[k])


def _ring_excess(img: np.ndarray) -> tuple[int, np.ndarray | None]:
    """The side ``n`` of the square analysed and, for every ring of radius k = 0 … n/2.2
    (frequency × n), the power of its brightest pixel over the smooth spectrum at that radius
    (about 1 for noise; lattice spots are points on their ring); None under 32 px a side."""
    n, amplitude, radius = _half_spectrum(img)
    if amplitude is None:
        return n, None
    power = amplitude**2
    r = np.rint(radius).astype(int)                                 # ring index: frequency × n
    hi = int(n / 2.2)
    ring = np.zeros(hi + 1)
    near = r <= hi
    np.maximum.at(ring, r[near], power[near])
    log = np.log(np.maximum(ring, 1e-300))
    return n, np.exp(log - ndimage.median_filter(log, size=9, mode="nearest"))


#: Least prominence of a ring of lattice planes (0.1–0.45 nm apart) in one ~5 nm tile for a frame
#: asked for as amorphous to be said to hold a crystal: tiles of the real Pt-on-carbon-nitride dev
#: frames reach 4.8, a real Au nanoparticle frame 52 (``benchmarks/results/calibration_check.md``).
CRYSTAL_PROMINENCE = 15.0


def crystal_order(image, pixel_size: float, tile_nm: float = 5.0, band_nm: tuple = (0.1, 0.45)) -> dict:
    """How clearly any part of a frame is a crystal: the most prominent ring of lattice planes over
    tiles of about ``tile_nm`` (overlapping by half), in the band of atomic plane spacings.

    Parameters
    ----------
    image : ndarray (y, x)
    pixel_size : float
        nm/px.
    tile_nm : float
        Side of a tile (nm); at least 32 px, at most the frame.
    band_nm : (float, float)
        Plane spacings looked at (nm).

    Returns
    -------
    dict
        ``prominence`` (the ring's power over the smooth spectrum, about 1 for noise and an
        amorphous support), ``spacing_nm`` and ``yx`` (the tile's centre, px) of the most
        prominent; prominence 0 for a frame under 32 px a side.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:256, :256]
    >>> lattice = np.cos(2 * np.pi * xx / 10.0) + np.random.default_rng(0).normal(0, 1, (256, 256))
    >>> c = crystal_order(lattice, 0.02)                            # planes 10 px = 0.2 nm apart
    >>> round(c["spacing_nm"], 2), c["prominence"] > CRYSTAL_PROMINENCE
    (0.2, True)
    """
    img = np.asarray(image, np.float64)
    t = min(max(32, int(round(tile_nm / pixel_size))), min(img.shape[-2:]))     # a smaller frame: one tile
    best = {"prominence": 0.0, "spacing_nm": float("nan"), "yx": (float("nan"), float("nan"))}
    if t < 32:
        return best
    step = max(t // 2, 1)
    for y in range(0, img.shape[0] - t + 1, step):
        for x in range(0, img.shape[1] - t + 1, step):
            n, excess = _ring_excess(img[y:y + t, x:x + t])
            k = np.arange(len(excess))
            spacing = n * pixel_size / np.maximum(k, 1)
            inside = (k >= 4) & (spacing >= band_nm[0]) & (spacing <= band_nm[1])
            if not inside.any():
                continue
            j = int(np.argmax(np.where(inside, excess, 0.0)))
            if excess[j] > best["prominence"]:
                best = {"prominence": float(excess[j]), "spacing_nm": float(spacing[j]),
                        "yx": (y + t / 2, x + t / 2)}
    return best


def _has_first_order(n: int, excess: np.ndarray, spacing_px: float) -> bool:
    """Whether, among the rings of :func:`_ring_excess` (``n``, ``excess``), the one √3 times
    wider in spacing than ``spacing_px`` (px; within a ring either side) stands out by at least
    :data:`_FIRST_ORDER_PROMINENCE`: the first order that a clearest ring read as a hexagonal
    lattice's second order must have."""
    k = int(round(n / (spacing_px * np.sqrt(3))))
    return float(np.max(excess[max(k - 1, 1):min(k + 2, len(excess))], initial=0.0)) >= _FIRST_ORDER_PROMINENCE


def _spot_spacing(image, pixel_size: float) -> float:
    """Spacing (nm) of the brightest spots of the windowed Fourier amplitude beyond a 64th of the
    frame's frequencies: the median radius of the 12 brightest pixels of the half spectrum
    (``kx ≥ 0``; a hexagonal lattice's three first-order spots there, with their neighbouring
    pixels), or NaN for a frame under 32 px a side. Unlike the rings of :func:`fft_spacing`, it
    does not weigh a spot against the noise of its whole ring, so a first order smeared over
    several rings by scan distortion still counts."""
    n, amplitude, r = _half_spectrum(np.asarray(image, np.float64))
    if amplitude is None:
        return float("nan")
    amplitude[(r < max(4.0, n / 64)) | (r > n / 2.2)] = 0.0
    top = np.argsort(amplitude.ravel())[-12:]
    return float(n / np.median(r.ravel()[top]) * pixel_size)


def check_calibration(image, pixel_size: float, lattice: str, *, where: str = "the frame") -> float:
    """Warn (or refuse) when ``pixel_size`` disagrees with the lattice seen in ``image``.

    Parameters
    ----------
    image : ndarray (y, x)
        One frame.
    pixel_size : float
        The pixel size given, nm/px.
    lattice : str
        ``graphene``, ``ws2`` or ``mos2``; any other is not checked.
    where : str
        How messages name the frame.

    Returns
    -------
    float
        The measured first-order spacing (nm), NaN when not measured or not clear.

    Raises
    ------
    InputError
        The lattice's first-order spacing would be under 2 px: no atomic-resolution image has
        that sampling, so the pixel size is wrong (e.g. given in Å or pm instead of nm).

    Warns
    -----
    StemflowWarning
        The frame's clear lattice ring is more than :data:`PIXEL_SIZE_TOLERANCE` away from the
        expected spacing, and so are its brightest spectral spots (a first order smeared over
        several rings by scan distortion, while a higher order is the clearest ring); the message
        gives the measured spacing and the pixel size it implies (and the spots' when they imply
        another). The clearest ring is read as the lattice's second order (d/√3) only when the
        first order's ring stands out too: a pixel size near 1/√3 of the true one otherwise puts
        the first order on the second's place unnoticed.
    """
    if lattice not in FIRST_ORDER_NM:
        return float("nan")
    d = FIRST_ORDER_NM[lattice]
    if d / pixel_size < 2.0:
        raise InputError(f"pixel_size={pixel_size} nm/px puts {lattice}'s lattice planes ({d:.3f} nm) "
                         f"{d / pixel_size:.2f} px apart, under the 2 px an image can show: the pixel size is "
                         "wrong (it is in nm/px: 10 pm/px is 0.01)")
    img = np.asarray(image, np.float64)
    if img.ndim != 2:
        raise InputError(f"check_calibration takes one 2-D frame; got shape {img.shape}")
    n, excess = _ring_excess(img)                  # one spectrum for the clearest ring and its first order
    if excess is None:
        return float("nan")
    spacing_px, prominence = _clearest(n, excess)
    spacing = spacing_px * pixel_size
    if prominence < _MIN_PROMINENCE:
        return float("nan")
    # the strongest ring is the first order, or the second ({110}: a/2 = d/√3) if the first is
    # there too: a pixel size 1/√3 of the true one (or MoS2's {200} asked for as graphene) puts a
    # lone clearest ring on the second order's place
    ratio = spacing / d
    if (abs(np.log(spacing / (d / np.sqrt(3)))) < abs(np.log(ratio))
            and _has_first_order(n, excess, spacing_px)):
        ratio = spacing / (d / np.sqrt(3))
    if abs(ratio - 1) > PIXEL_SIZE_TOLERANCE:
        # the strongest ring may be a higher order whose spots stand out more from their ring's
        # noise than a first order spread by scan distortion: the brightest spots tell
        spots = _spot_spacing(img, pixel_size)
        if abs(spots / d - 1) <= _SPOT_TOLERANCE:
            return spots
        alt = spots / d                     # spots elsewhere than the ring: read as the first order
        also = (f" by the ring, {pixel_size / alt:.4g} nm/px by its brightest spectral spots ({spots:.3f} nm apart, "
                f"{alt:.2f}×)," if np.isfinite(alt) and abs(spots / spacing - 1) > _SPOT_TOLERANCE
                and abs(alt / ratio - 1) > _SPOT_TOLERANCE else "")
        warnings.warn(f"{where}: its lattice ring is {spacing:.3f} nm apart at pixel_size={pixel_size:.5g} nm/px, "
                      f"{ratio:.2f}× what {lattice} should show; the pixel size is probably "
                      f"{pixel_size / ratio:.4g} nm/px{also} or this is not {lattice}", StemflowWarning, stacklevel=3)
    return spacing

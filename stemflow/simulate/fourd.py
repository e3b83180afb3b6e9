"""Simple 4D-STEM: a diffraction pattern at every probe position, consistent with the ADF image.

At a probe position receiving N electrons, a fraction ``f`` (the ADF image's expected counts / N)
is scattered into the annular dark-field range, a further ``(low_angle - 1)·f`` to angles between
the bright-field disk and the ADF inner angle, and the rest stays in the bright-field disk. The
scattered intensity falls off as 1/k² within each range. Counts are Poisson, so a virtual ADF
detector over the annulus gives back the image up to its noise. Angles in mrad, detector sizes
in px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Detector", "diffraction_patterns", "simulate_4d", "Simulated4D"]


@dataclass(frozen=True)
class Detector:
    """Pixelated detector geometry.

    Parameters
    ----------
    shape : (int, int)
        Detector pixels (k_y, k_x).
    k_pixel_size : float
        mrad/px.
    convergence : float
        Probe semi-angle = bright-field disk radius, mrad.
    adf : (float, float)
        Inner and outer angle of the annular dark-field range, mrad.
    low_angle : float
        Electrons scattered anywhere outside the BF disk per electron scattered into the ADF range.
    """

    shape: tuple[int, int] = (64, 64)
    k_pixel_size: float = 4.0
    convergence: float = 30.0
    adf: tuple[float, float] = (60.0, 120.0)
    low_angle: float = 3.0

    def radius(self) -> np.ndarray:
        """Scattering angle at each detector pixel, mrad (centre between the middle pixels)."""
        ky, kx = self.shape
        y = (np.arange(ky) - (ky - 1) / 2) * self.k_pixel_size
        x = (np.arange(kx) - (kx - 1) / 2) * self.k_pixel_size
        return np.hypot(y[:, None], x[None, :])

    def profiles(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised (sum 1) BF, low-angle and ADF intensity profiles on the detector."""
        k = self.radius()
        inner, outer = self.adf
        if not (0 < self.convergence < inner < outer):
            raise ValueError(f"detector angles must satisfy 0 < convergence < adf inner < adf outer; "
                             f"got convergence={self.convergence}, adf={self.adf} mrad")
        if outer > k.max():
            raise ValueError(f"adf outer angle {outer} mrad lies beyond the detector edge ({k.max():.0f} mrad); "
                             "use a larger shape or k_pixel_size")
        bf = (k <= self.convergence).astype(np.float64)
        falloff = 1.0 / np.maximum(k, self.k_pixel_size) ** 2
        low = np.where((k > self.convergence) & (k < inner), falloff, 0.0)
        adf = np.where((k >= inner) & (k <= outer), falloff, 0.0)
        return bf / bf.sum(), low / low.sum(), adf / adf.sum()

    def adf_mask(self) -> np.ndarray:
        """Boolean mask of the ADF annulus (the virtual detector that returns the image)."""
        k = self.radius()
        return (k >= self.adf[0]) & (k <= self.adf[1])


def diffraction_patterns(adf_expected: np.ndarray, electrons: float, detector: Detector = Detector(),
                         rng: np.random.Generator | None = None, noise: bool = True,
                         dtype=np.uint16) -> np.ndarray:
    """Diffraction patterns for a block of probe positions.

    Parameters
    ----------
    adf_expected : ndarray, shape (scan_y, scan_x)
        Expected ADF counts at each probe position (e.g. ``SimulatedImage.expected``).
    electrons : float
        Electrons per probe position (dose × pixel area).
    detector : Detector
    rng : numpy Generator, optional
        Source of the Poisson noise (seed it per block to make blocks reproducible).
    noise : bool
        False gives expected counts (float32).

    Returns
    -------
    ndarray, shape (scan_y, scan_x, k_y, k_x)
        Counts (``dtype``) or expected counts (float32 if ``noise`` is False).

    Examples
    --------
    >>> import numpy as np
    >>> from stemflow.simulate import diffraction_patterns
    >>> from stemflow.simulate.fourd import Detector
    >>> det = Detector()                                   # 64 × 64 px at 4 mrad/px, ADF 60–120 mrad
    >>> adf = np.full((2, 3), 50.0)                        # expected ADF counts per probe position
    >>> p = diffraction_patterns(adf, electrons=1000.0, detector=det, noise=False)
    >>> p.shape, p.dtype
    ((2, 3, 64, 64), dtype('float32'))
    >>> round(float(p[0, 0].sum()), 1), round(float(p[0, 0][det.adf_mask()].sum()), 1)
    (1000.0, 50.0)
    >>> counts = diffraction_patterns(adf, 1000.0, det, rng=np.random.default_rng(0))
    >>> counts.dtype
    dtype('uint16')
    """
    f = np.clip(np.asarray(adf_expected, np.float64) / electrons, 0.0, 1.0 / detector.low_angle)
    bf, low, adf = detector.profiles()
    lam = electrons * ((1 - detector.low_angle * f)[..., None, None] * bf
                       + ((detector.low_angle - 1) * f)[..., None, None] * low
                       + f[..., None, None] * adf)
    if not noise:
        return lam.astype(np.float32)
    rng = np.random.default_rng() if rng is None else rng
    counts = rng.poisson(lam)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None and counts.max(initial=0) > info.max:
        raise ValueError(f"counts up to {counts.max()} overflow {np.dtype(dtype).name}; pass dtype=np.uint32")
    return counts.astype(dtype)


@dataclass
class Simulated4D:
    """A simulated 4D-STEM dataset: ``data`` (scan_y, scan_x, k_y, k_x) counts, the ``image`` it
    was made from (expected ADF counts), ``detector`` geometry, ``pixel_size`` (nm/px, real
    space) and the underlying ``frame`` (a :class:`SimulatedImage` with its ground truth)."""

    data: np.ndarray
    image: np.ndarray
    detector: Detector
    pixel_size: float
    frame: object


def simulate_4d(lattice: str = "graphene", scan_shape=(64, 64), *, detector: Detector = Detector(),
                seed: int = 0, dtype=np.uint16, **options) -> Simulated4D:
    """Simulate a 4D-STEM scan of a lattice: one diffraction pattern per probe position.

    Parameters
    ----------
    lattice : str
        As for :func:`~stemflow.simulate.simulate_image`.
    scan_shape : (int, int)
        Probe positions (scan_y, scan_x).
    detector : Detector
        The camera: pattern size (px), mrad per px, bright-field disk.
    seed : int
        Structure and noise follow from it.
    dtype : numpy dtype
        Of the counts.
    **options
        For :func:`~stemflow.simulate.simulate_image` (``pixel_size`` nm/px, ``dose`` e⁻/Å²,
        ``defects``, ...). The dose sets the electrons per probe position.

    Returns
    -------
    Simulated4D
        ``data`` (scan_y, scan_x, k_y, k_x) counts, the ADF ``image``, ``detector``,
        ``pixel_size`` (nm/px) and the ``frame`` with its ground truth.

    Examples
    --------
    >>> import stemflow
    >>> scan = stemflow.simulate_4d("graphene", scan_shape=(16, 16), seed=0)
    >>> scan.data.ndim, scan.data.shape[:2]
    (4, (16, 16))
    """
    from .movie import simulate_image

    sim = simulate_image(lattice, scan_shape, seed=seed, **options)
    im = sim.imaging
    electrons = im.dose * im.pixel_A**2
    rng = np.random.default_rng([seed, 4])
    data = diffraction_patterns(sim.expected, electrons, detector, rng=rng, dtype=dtype)
    return Simulated4D(data=data, image=sim.expected, detector=detector, pixel_size=im.pixel_size, frame=sim)

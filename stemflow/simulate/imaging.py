"""Image formation: Z-contrast columns under a finite probe, dose noise and scan distortions.

Model (HAADF / ADF, incoherent imaging). A column of ``count`` atoms of atomic number Z scatters a
fraction ``cross_section · count · Z**gamma · PSF(r)`` of the electrons of a probe centred at
distance r, with ``PSF`` the probe intensity (1/Å²): a Gaussian core of FWHM ``probe_fwhm`` plus a
weak wide tail. A pixel receives ``dose · pixel_area`` electrons, so the expected counts are
``dose · cross_section · Σ count·Z**gamma · G_px(r)`` with ``G_px`` the probe sampled on the
pixel grid (sums to 1). Counts are then Poisson, plus Gaussian read noise, line offsets,
scan-line jitter and bright outlier pixels. Units: lengths in Å unless a name says px or nm,
dose in e⁻/Å², intensities in detector counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage

from .lattice import ATOMIC_NUMBER

__all__ = ["Imaging", "CLASSES", "render", "class_mask", "column_weight", "support_thickness"]

#: Classes of the per-pixel masks, in the order of their integer codes.
CLASSES = ("background", "lattice", "dopant", "vacancy")
_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class Imaging:
    """Settings of the simulated microscope and detector.

    Parameters
    ----------
    pixel_size : float
        Sampling, nm/px (5–25 pm/px, i.e. 0.005–0.025, is typical of atomic-resolution STEM).
    probe_fwhm : float
        Full width at half maximum of the probe core, Å.
    tail_fraction, tail_fwhm : float
        Fraction of the probe intensity in a wide Gaussian tail, and its FWHM (Å). The tail is
        what makes a heavy atom brighten its neighbours.
    gamma : float
        Exponent of the Z-contrast, column intensity ∝ Σ Z**gamma (about 1.6–2 for HAADF).
    dose : float
        Electron dose per frame, e⁻/Å².
    cross_section : float
        Scattering cross-section into the detector per unit Z**gamma, Å². The default gives a
        carbon column peak of about 7 counts at 1e5 e⁻/Å² and 10 pm/px, as in 60 kV HAADF.
    noise : bool
        Poisson (and the other) noise on; False gives the expected counts.
    read_noise : float
        Standard deviation of Gaussian detector noise, counts.
    line_jitter : float
        RMS displacement of each scan line along x, px (flyback jitter).
    line_offset : float
        RMS additive offset of each scan line, counts.
    scan_drift : tuple of float
        Specimen drift during the frame ``(dy, dx)``, px per frame time: stretches y and shears x.
    background : float
        Mean smooth background, as a fraction of the peak of one host column; it varies slowly
        across the field (amorphous carbon, thickness).
    contamination : float
        Hydrocarbon patches per nm²: diffuse blobs (FWHM 0.7–2.4 nm) whose integrated intensity
        is 0.5–3 times that of a Si atom.
    outliers : float
        Fraction of pixels that are bright outliers (cosmic or detector spikes).
    support : float
        Mean projected density of an amorphous film on (or under) the specimen, atoms/Å²
        (carbon; 0 = none). A thick amorphous support (carbon nitride, amorphous carbon) of
        thickness t at about 0.1 atoms/Å³ gives 0.1·t(Å), i.e. 1–30 atoms/Å² for 1–30 nm; a
        hydrocarbon contamination layer 0.1–1.5. Its atoms are unresolved random positions
        (Poisson) under the probe, with a thickness that varies at several length scales; they
        are background: they never appear in the truth tables or masks.
    support_cover : float
        Fraction of the field the film covers (0–1): below 1 it forms islands and holes with
        soft edges (patchy contamination, the edge of a support).
    adatoms : float
        Bright compact blobs that are not substitutional atoms (adatoms, small contamination
        clusters), per nm²: each is placed off the lattice's columns, with the integrated
        intensity of 0.5–2.5 Si atoms and a width of 1–2 probes. Background in the truth.
    mask_radius : float
        Radius of the disks marked in the class masks, Å (at least 1 px).
    """

    pixel_size: float = 0.01
    probe_fwhm: float = 1.1
    tail_fraction: float = 0.05
    tail_fwhm: float = 5.0
    gamma: float = 1.7
    dose: float = 1e5
    cross_section: float = 4.4e-4
    noise: bool = True
    read_noise: float = 0.3
    line_jitter: float = 0.0
    line_offset: float = 0.0
    scan_drift: tuple[float, float] = (0.0, 0.0)
    background: float = 0.0
    contamination: float = 0.0
    outliers: float = 0.0
    support: float = 0.0
    support_cover: float = 1.0
    adatoms: float = 0.0
    mask_radius: float = 0.5

    def __post_init__(self):
        checks = {
            "pixel_size": self.pixel_size > 0, "probe_fwhm": self.probe_fwhm > 0,
            "tail_fwhm": self.tail_fwhm >= self.probe_fwhm, "gamma": self.gamma > 0,
            "dose": self.dose > 0, "cross_section": self.cross_section > 0,
            "tail_fraction": 0 <= self.tail_fraction < 1, "read_noise": self.read_noise >= 0,
            "line_jitter": self.line_jitter >= 0, "line_offset": self.line_offset >= 0,
            "background": self.background >= 0, "contamination": self.contamination >= 0,
            "outliers": 0 <= self.outliers < 1, "mask_radius": self.mask_radius > 0,
            "support": self.support >= 0, "support_cover": 0 < self.support_cover <= 1,
            "adatoms": self.adatoms >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            vals = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ValueError(f"invalid imaging settings: {vals} (see stemflow.simulate.Imaging for ranges)")
        if not 0.001 <= self.pixel_size <= 0.1:
            raise ValueError(f"pixel_size={self.pixel_size} nm/px is outside 0.001–0.1 nm/px; "
                             "pixel sizes are in nm (10 pm/px is 0.01)")

    @property
    def pixel_A(self) -> float:
        """Pixel size in Å."""
        return 10.0 * self.pixel_size

    @property
    def sigma_px(self) -> float:
        """Standard deviation of the probe core, px."""
        return self.probe_fwhm / _FWHM / self.pixel_A

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scan_drift"] = list(self.scan_drift)
        return d

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def column_weight(element, count, gamma: float) -> np.ndarray:
    """Σ Z**gamma of each column (0 for empty ones)."""
    element = np.asarray(element, dtype=object)
    z = np.array([ATOMIC_NUMBER.get(e, 0) for e in element], dtype=np.float64)
    return np.asarray(count, np.float64) * z**gamma


def render(yx: np.ndarray, weight: np.ndarray, sigma: np.ndarray | float, shape: tuple[int, int],
           band: int = 128) -> np.ndarray:
    """Sum of normalised 2-D Gaussians sampled at pixel centres.

    Parameters
    ----------
    yx : ndarray, shape (n, 2)
        Centres in px (pixel (r, c) has its centre at (r, c)).
    weight : ndarray, shape (n,)
        Integral of each Gaussian over the plane (counts).
    sigma : float or ndarray, shape (n,)
        Standard deviations, px.
    shape : (int, int)
        Output shape.

    Returns
    -------
    ndarray of float32
        Exact point samples of the Gaussians (no splatting, no interpolation), computed band by
        band as a product of separable profiles.
    """
    h, w = shape
    yx = np.asarray(yx, np.float64).reshape(-1, 2)
    weight = np.asarray(weight, np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), weight.shape)
    out = np.zeros(shape, np.float32)
    keep = weight != 0
    yx, weight, sigma = yx[keep], weight[keep], sigma[keep]
    reach = 5.0 * sigma
    inx = (yx[:, 1] + reach >= 0) & (yx[:, 1] - reach <= w - 1)
    cols = np.arange(w, dtype=np.float64)
    for r0 in range(0, h, band):
        r1 = min(h, r0 + band)
        sel = inx & (yx[:, 0] + reach >= r0) & (yx[:, 0] - reach <= r1 - 1)
        if not sel.any():
            continue
        s = sigma[sel]
        rows = np.arange(r0, r1, dtype=np.float64)
        gy = np.exp(-((rows[None, :] - yx[sel, 0, None]) ** 2) / (2 * s[:, None] ** 2))
        gx = np.exp(-((cols[None, :] - yx[sel, 1, None]) ** 2) / (2 * s[:, None] ** 2))
        gx *= (weight[sel] / (2 * np.pi * s**2))[:, None]
        out[r0:r1] = (gy.T.astype(np.float32) @ gx.astype(np.float32))
    return out


def class_mask(yx: np.ndarray, classes: np.ndarray, shape: tuple[int, int], radius: float,
               return_index: bool = False):
    """Per-pixel class codes: disks of ``radius`` px around each centre, 0 elsewhere.

    Where two disks overlap the nearer centre wins. With ``return_index`` also the row of ``yx``
    each pixel belongs to (-1 for background).
    """
    h, w = shape
    mask = np.zeros(shape, np.uint8)
    index = np.full(shape, -1, np.int64)
    if len(yx) == 0:
        return (mask, index) if return_index else mask
    r = max(float(radius), 1.0)
    k = int(np.ceil(r))
    off = np.arange(-k, k + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    cy = np.rint(yx[:, 0]).astype(np.int64)
    cx = np.rint(yx[:, 1]).astype(np.int64)
    py = cy[:, None, None] + oy
    px = cx[:, None, None] + ox
    d2 = (py - yx[:, 0, None, None]) ** 2 + (px - yx[:, 1, None, None]) ** 2
    ok = (d2 <= r * r) & (py >= 0) & (py < h) & (px >= 0) & (px < w)
    idx = np.broadcast_to(np.arange(len(yx))[:, None, None], ok.shape)
    py, px, d2, idx = py[ok], px[ok], d2[ok], idx[ok]
    flat = py * w + px
    hits = np.bincount(flat, minlength=h * w)
    shared = hits[flat] > 1
    if shared.any():  # overlapping disks (rare): order those pixels so the nearest centre wins
        order = np.concatenate([np.flatnonzero(~shared), np.flatnonzero(shared)[np.argsort(-d2[shared], kind="stable")]])
        flat, idx = flat[order], idx[order]
    mask.flat[flat] = np.asarray(classes)[idx]
    if return_index:
        index.flat[flat] = idx
        return mask, index
    return mask


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, scale: float) -> np.ndarray:
    """A slowly varying positive field of mean 1 (0.5–1.5), features of about ``scale`` px."""
    small = tuple(max(2, int(np.ceil(s / scale)) + 2) for s in shape)
    coarse = rng.normal(size=small)
    zoom = [s / (c - 1) for s, c in zip(shape, small)]
    f = ndimage.zoom(coarse, zoom, order=3, mode="nearest")[: shape[0], : shape[1]]
    f = (f - f.mean()) / (f.std() + 1e-12)
    gy, gx = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    g = rng.normal(0, 0.5) * gy + rng.normal(0, 0.5) * gx
    return np.clip(1 + 0.2 * f + 0.2 * g, 0.3, 2.0)


def distort(yx: np.ndarray, shape: tuple[int, int], scan_drift) -> np.ndarray:
    """Where a specimen point at ``yx`` (px, frame start) appears under drift during the scan.

    The probe reaches row r at time r/H of the frame; a point moving at ``(dy, dx)`` px per frame
    is met at row q_y = y / (1 - dy/H), and is displaced along x by dx·q_y/H.
    """
    dy, dx = scan_drift
    if dy == 0 and dx == 0:
        return yx
    h = shape[0]
    q = np.empty_like(yx)
    q[:, 0] = yx[:, 0] / (1.0 - dy / h)
    q[:, 1] = yx[:, 1] + dx * q[:, 0] / h
    return q


def jitter_shift(yx: np.ndarray, jitter: np.ndarray, sigma_px: float) -> np.ndarray:
    """Apparent x shift of blobs centred at ``yx`` when scan line r is displaced by ``jitter[r]``.

    The blob's centroid moves by the mean of the line shifts weighted by its profile along y.
    """
    h = len(jitter)
    rows = np.arange(h)
    g = np.exp(-((rows[None, :] - yx[:, 0, None]) ** 2) / (2 * sigma_px**2))
    norm = g.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = (g @ jitter) / norm
    return np.where(norm > 0, shift, 0.0)


def apply_line_jitter(image: np.ndarray, jitter: np.ndarray) -> np.ndarray:
    """Shift each row r of ``image`` by ``jitter[r]`` px along x.

    Linear interpolation: it keeps every blob's centroid exactly where the shift puts it.
    """
    h, w = image.shape
    src = np.arange(w)[None, :] - jitter[:, None]
    i0 = np.clip(np.floor(src).astype(np.int64), 0, w - 2)
    a = np.clip(src - i0, 0.0, 1.0).astype(np.float32)
    rows = np.arange(h)[:, None]
    return (image[rows, i0] * (1 - a) + image[rows, i0 + 1] * a).astype(np.float32)


def _band_noise(shape: tuple[int, int], rng: np.random.Generator, scale: float) -> np.ndarray:
    """Gaussian random field of unit variance with features of about ``scale`` px."""
    k = max(1, int(scale // 4))   # drawn on a grid k times coarser, then interpolated: cheap at any scale
    small = (shape[0] // k + 4, shape[1] // k + 4)
    f = ndimage.gaussian_filter(rng.normal(size=small), max(scale / k, 0.5) / 2.0, mode="wrap")
    if k > 1:
        rr, cc = np.meshgrid(np.arange(shape[0]) / k + 1, np.arange(shape[1]) / k + 1, indexing="ij", sparse=True)
        rr, cc = np.broadcast_arrays(rr, cc)
        f = ndimage.map_coordinates(f, [rr, cc], order=1)
    return (f - f.mean()) / (f.std() + 1e-12)


def support_thickness(shape: tuple[int, int], pixel_A: float, rng: np.random.Generator,
                      cover: float = 1.0) -> np.ndarray:
    """Relative thickness of an amorphous film, mean 1 over the covered area, ≥ 0.

    Roughness at three length scales (0.5, 2 and 8 nm, random weights) on top of a gradient,
    as thickness and density vary across a real support; with ``cover`` < 1 the film is cut
    into islands and holes (soft edges, features of about 5 nm) covering that fraction.

    Parameters
    ----------
    shape : (int, int)
        Field size, px.
    pixel_A : float
        Pixel size, Å.
    cover : float
        Fraction of the field covered (0–1].
    """
    h, w = shape
    t = np.ones(shape)
    for nm, amp in ((0.5, rng.uniform(0.05, 0.3)), (2.0, rng.uniform(0.1, 0.4)), (8.0, rng.uniform(0.1, 0.5))):
        t += amp * _band_noise(shape, rng, 10 * nm / pixel_A)
    gy, gx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    t += rng.normal(0, 0.3) * gy + rng.normal(0, 0.3) * gx
    t = np.clip(t, 0.05, None)
    if cover < 1:
        f = _band_noise(shape, rng, 50 / pixel_A)
        edge = float(np.quantile(f, 1 - cover))
        t *= np.clip((f - edge) / 0.3 + 0.5, 0, 1)
    m = t[t > 0.05].mean() if (t > 0.05).any() else 1.0
    return (t / m).astype(np.float32)

"""Image formation: Z-contrast columns under a finite probe, dose noise and scan distortions.

Model (HAADF / ADF, incoherent imaging). A column of ``count`` atoms of atomic number Z scatters a
fraction ``cross_section · count · Z**gamma · PSF(r)`` of the electrons of a probe centred at
distance r, with ``PSF`` the probe intensity (1/Å²): a Gaussian core of FWHM ``probe_fwhm`` plus a
weak wide tail. A pixel receives ``dose · pixel_area`` electrons, so the expected counts are
``dose · cross_section · Σ count·Z**gamma · G_px(r)`` with ``G_px`` the probe sampled on the
pixel grid (sums to 1). Counts are then Poisson, plus Gaussian read noise, line offsets,
scan-line jitter and bright outlier pixels. Units: lengths in Å unless a name says px or nm,
dose in e⁻/Å², intensities in detector counts.

Options that make the frames look more like a given microscope, all off by default (the default
images are unchanged by them): a probe computed from the lens aberrations instead of the Gaussian
(``probe="aberrated"``, :func:`probe_profile`), a Z exponent derived from the annular detector's
angles (:func:`detector_z_exponent`), a thermal-diffuse halo, flyback, skipped lines and a random
walk of the scan lines, and the detector's saturation and afterglow.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import fft as sfft
from scipy import ndimage, signal

from ..tables import ATOMIC_NUMBER

__all__ = ["Imaging", "render", "class_mask", "column_weight", "support_thickness",
           "probe_profile", "render_probe", "electron_wavelength", "detector_z_exponent",
           "scan_shift_field", "scan_shift_of", "apply_afterglow", "repeat_skipped_lines"]

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: Probe models of :class:`Imaging`.
PROBES = ("gaussian", "aberrated")


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
    probe : {"gaussian", "aberrated"}
        Probe model. ``"gaussian"`` (default): the core of ``probe_fwhm`` plus the tail above.
        ``"aberrated"``: the probe intensity computed from the lens (``voltage_kv``,
        ``aperture_mrad``, ``defocus``, ``c3``, ``c5``, ``source_size``, ``focal_spread``; see
        :func:`probe_profile`), which then replaces the core and the tail (``probe_fwhm``,
        ``tail_fraction`` and ``tail_fwhm`` are not used for the columns).
    voltage_kv : float
        Accelerating voltage, kV (20–400); sets the electron wavelength. Used by the aberrated
        probe and by the detector model.
    aperture_mrad : float
        Probe-forming (convergence) semi-angle, mrad (1–100).
    defocus : float
        Defocus Δf, Å (|Δf| ≤ 5000), with the sign of the aberration function
        χ(k) = π λ Δf k² + (π/2) C3 λ³ k⁴ + (π/3) C5 λ⁵ k⁶: with C3 > 0 the sharpest probe is at
        negative defocus.
    c3, c5 : float
        Third- and fifth-order spherical aberration, mm (|C3| ≤ 10, |C5| ≤ 100; a corrected
        60 kV microscope has |C3| of a few µm, i.e. 0.001–0.01 mm; an uncorrected one about 1 mm).
    source_size : float
        FWHM of the demagnified source, Å (0–10): a Gaussian blur of the probe intensity.
    focal_spread : float
        Standard deviation of the defocus spread from the energy spread and chromatic
        aberration (Cc·ΔE/E), Å (0–1000): the probe intensity is averaged incoherently over a
        Gaussian distribution of defocus (partial temporal coherence). About 20–60 Å at 60 kV.
    detector_inner_mrad, detector_outer_mrad : float or None
        Inner and outer collection angles of the annular detector, mrad (inner 10–500, outer
        above inner and ≤ 2000; outer None = no outer limit). When the inner angle is set, the
        Z exponent is derived from the angles (:func:`detector_z_exponent`) and ``gamma`` is
        not used; None (default) keeps ``gamma``. The overall efficiency stays
        ``cross_section``.
    tds_background : float
        Thermal-diffuse (and other multiply scattered) halo, as a fraction of the column signal
        (0–1): each column also contributes a wide Gaussian of FWHM ``tds_fwhm`` holding this
        fraction of its intensity, so the halo follows the local projected mass.
    tds_fwhm : float
        Width of that halo, Å (2–50; about 1 nm).
    flyback : float
        Flyback distortion, px: at the start of every scan line the probe lags by ``flyback``
        px along x, relaxing as exp(−x / ``flyback_length``). |flyback| < ``flyback_length``.
    flyback_length : float
        Decay length of the flyback distortion, px (> 0).
    line_skip : float
        Probability that a scan line repeats the previous recorded line (0 ≤ p < 0.5).
    line_drift : float
        Random walk of the scan position along x, px RMS per line (0–10): the walk runs through
        the frame in scan order (interpolated within each line), so the displacement is
        correlated along y, unlike the independent ``line_jitter``. Zero mean over the frame.
    saturation : float or None
        Counts at which the detector saturates (> 0): the expected counts I become
        I / (1 + I / saturation) before the Poisson noise. None (default): linear.
    afterglow : float
        Afterglow of the detector along the fast-scan direction (0 ≤ a < 0.95): each recorded
        pixel keeps a fraction a of the previous one, y[x] = (1 − a)·s[x] + a·y[x − 1] (a causal
        exponential of decay length −1/ln a px; 0.5 ≈ 1.4 px). It acts on the detected signal,
        after the noise, so the noise becomes correlated along x as in real frames; the mean
        is kept.

    Notes
    -----
    Units: lengths in Å unless a name says px, nm or mm; angles in mrad; dose in e⁻/Å²;
    intensities in detector counts. Order of the effects on a frame: probe and columns (plus
    halo, background, support) → scan distortions (drift, jitter, flyback, line drift) →
    saturation → Poisson and read noise, line offsets, outliers → afterglow → skipped lines.
    ``SimulatedMovie.expected`` is the mean of the recorded image, so it includes the
    saturation, afterglow and skipped lines.

    Very low counts come from ``dose`` alone: the integrated counts of one column are
    ``dose · cross_section · count · Z**gamma`` (:meth:`column_counts`).

    Examples
    --------
    About 2–20 counts per carbon column (summed over the column), as in the dimmest frames:

    >>> from stemflow.simulate import Imaging
    >>> round(Imaging(dose=1e3).column_counts("C"), 1)
    9.3
    >>> [round(Imaging(dose=d).column_counts("C"), 1) for d in (250, 2000)]
    [2.3, 18.5]

    A 60 kV probe with 30 mrad, a little C3 and defocus spread, seen by a 60–200 mrad detector:

    >>> im = Imaging(probe="aberrated", voltage_kv=60, aperture_mrad=30, c3=0.001, defocus=-20,
    ...              focal_spread=40, source_size=0.6, detector_inner_mrad=60,
    ...              detector_outer_mrad=200)
    >>> round(im.z_exponent, 2)
    1.71
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
    probe: str = "gaussian"
    voltage_kv: float = 60.0
    aperture_mrad: float = 30.0
    defocus: float = 0.0
    c3: float = 0.0
    c5: float = 0.0
    source_size: float = 0.0
    focal_spread: float = 0.0
    detector_inner_mrad: float | None = None
    detector_outer_mrad: float | None = None
    tds_background: float = 0.0
    tds_fwhm: float = 10.0
    flyback: float = 0.0
    flyback_length: float = 16.0
    line_skip: float = 0.0
    line_drift: float = 0.0
    saturation: float | None = None
    afterglow: float = 0.0

    def __post_init__(self):
        inner, outer = self.detector_inner_mrad, self.detector_outer_mrad
        checks = {   # option: (valid, allowed range)
            "pixel_size": (self.pixel_size > 0, "> 0 nm/px"),
            "probe_fwhm": (self.probe_fwhm > 0, "> 0 Å"),
            "tail_fwhm": (self.tail_fwhm >= self.probe_fwhm, "≥ probe_fwhm, Å"),
            "gamma": (self.gamma > 0, "> 0"), "dose": (self.dose > 0, "> 0 e⁻/Å²"),
            "cross_section": (self.cross_section > 0, "> 0 Å²"),
            "tail_fraction": (0 <= self.tail_fraction < 1, "0 ≤ f < 1"),
            "read_noise": (self.read_noise >= 0, "≥ 0 counts"),
            "line_jitter": (self.line_jitter >= 0, "≥ 0 px"),
            "line_offset": (self.line_offset >= 0, "≥ 0 counts"),
            "background": (self.background >= 0, "≥ 0"), "contamination": (self.contamination >= 0, "≥ 0 per nm²"),
            "outliers": (0 <= self.outliers < 1, "0 ≤ f < 1"), "mask_radius": (self.mask_radius > 0, "> 0 Å"),
            "support": (self.support >= 0, "≥ 0 atoms/Å²"),
            "support_cover": (0 < self.support_cover <= 1, "0 < f ≤ 1"),
            "adatoms": (self.adatoms >= 0, "≥ 0 per nm²"),
            "probe": (self.probe in PROBES, " or ".join(map(repr, PROBES))),
            "voltage_kv": (_num(self.voltage_kv) and 20 <= self.voltage_kv <= 400, "20–400 kV"),
            "aperture_mrad": (_num(self.aperture_mrad) and 1 <= self.aperture_mrad <= 100, "1–100 mrad"),
            "defocus": (_num(self.defocus) and abs(self.defocus) <= 5000, "|Δf| ≤ 5000 Å"),
            "c3": (_num(self.c3) and abs(self.c3) <= 10, "|C3| ≤ 10 mm"),
            "c5": (_num(self.c5) and abs(self.c5) <= 100, "|C5| ≤ 100 mm"),
            "source_size": (_num(self.source_size) and 0 <= self.source_size <= 10, "0–10 Å FWHM"),
            "focal_spread": (_num(self.focal_spread) and 0 <= self.focal_spread <= 1000, "0–1000 Å"),
            "detector_inner_mrad": (inner is None or (_num(inner) and 10 <= inner <= 500),
                                    "None or 10–500 mrad"),
            "detector_outer_mrad": (outer is None or (inner is not None and _num(outer) and inner < outer <= 2000),
                                    "None, or above detector_inner_mrad (which must be set) and ≤ 2000 mrad"),
            "tds_background": (_num(self.tds_background) and 0 <= self.tds_background <= 1, "0–1"),
            "tds_fwhm": (_num(self.tds_fwhm) and 2 <= self.tds_fwhm <= 50, "2–50 Å"),
            "flyback_length": (_num(self.flyback_length) and self.flyback_length > 0, "> 0 px"),
            "flyback": (_num(self.flyback) and abs(self.flyback) < self.flyback_length,
                        "|flyback| < flyback_length, px"),
            "line_skip": (_num(self.line_skip) and 0 <= self.line_skip < 0.5, "0 ≤ p < 0.5"),
            "line_drift": (_num(self.line_drift) and 0 <= self.line_drift <= 10, "0–10 px per line"),
            "saturation": (self.saturation is None or (_num(self.saturation) and self.saturation > 0),
                           "None or > 0 counts"),
            "afterglow": (_num(self.afterglow) and 0 <= self.afterglow < 0.95, "0 ≤ a < 0.95"),
        }
        bad = [k for k, (ok, _) in checks.items() if not ok]
        if bad:
            vals = "; ".join(f"{k}={getattr(self, k)!r} (allowed: {checks[k][1]})" for k in bad)
            raise ValueError(f"invalid imaging settings: {vals} (see stemflow.simulate.Imaging)")
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
        return self.probe_fwhm / FWHM_PER_SIGMA / self.pixel_A

    @property
    def z_exponent(self) -> float:
        """Exponent of the Z-contrast used for rendering: ``gamma``, or the one derived from the
        detector angles when ``detector_inner_mrad`` is set (:func:`detector_z_exponent`)."""
        if self.detector_inner_mrad is None:
            return self.gamma
        return detector_z_exponent(self.detector_inner_mrad, self.detector_outer_mrad, self.voltage_kv)

    @property
    def wavelength(self) -> float:
        """Relativistic electron wavelength at ``voltage_kv``, Å."""
        return electron_wavelength(self.voltage_kv)

    @property
    def scan_distorted(self) -> bool:
        """True when a scan distortion that depends on the position along the line is on
        (``flyback``, ``line_drift``)."""
        return bool(self.flyback or self.line_drift)

    def column_counts(self, element: str = "C", count: int = 1) -> float:
        """Expected counts of one column summed over the frame (all pixels), counts.

        ``dose · cross_section · count · Z**z_exponent``: the number of electrons the column
        sends to the detector per frame (with ``tds_background`` a share of them lands in its
        diffuse halo). Pixel size does not enter: the counts spread over more pixels when the
        pixel is smaller.
        """
        return float(self.dose * self.cross_section * column_weight([element], [count], self.z_exponent)[0])

    def to_dict(self) -> dict:
        """The settings as a JSON-serialisable dict (``Imaging(**d)`` makes them again)."""
        d = asdict(self)
        d["scan_drift"] = list(self.scan_drift)
        return d

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Names of every setting, the keyword options accepted by the simulate functions."""
        return tuple(f.name for f in fields(cls))


def _num(v) -> bool:
    """A finite real number (not a bool, not None)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and bool(np.isfinite(v))


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
    """Shift each row r of ``image`` by ``jitter[r]`` px along x (each pixel by ``jitter[r, c]``
    when ``jitter`` is 2-D, as :func:`scan_shift_field` gives).

    Linear interpolation: it keeps every blob's centroid exactly where the shift puts it.
    """
    h, w = image.shape
    shift = jitter[:, None] if np.ndim(jitter) == 1 else jitter
    src = np.arange(w)[None, :] - shift
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


# ----------------------------------------------------------------------------- probe from the lens

def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic wavelength of electrons accelerated through ``voltage_kv`` kV, Å.

    λ = h / √(2 m₀ e V (1 + e V / (2 m₀ c²))) with CODATA constants: 0.0487 Å at 60 kV,
    0.0251 Å at 200 kV.
    """
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    v = float(voltage_kv) * 1e3
    return h / np.sqrt(2.0 * m0 * e * v * (1.0 + e * v / (2.0 * m0 * c * c))) * 1e10


def aberration_phase(k: np.ndarray, wavelength: float, defocus: float, c3: float, c5: float) -> np.ndarray:
    """χ(k) = π λ Δf k² + (π/2) C3 λ³ k⁴ + (π/3) C5 λ⁵ k⁶, radians.

    ``k`` spatial frequency, 1/Å; ``wavelength``, ``defocus``, ``c3``, ``c5`` in Å.
    """
    k2 = np.asarray(k, np.float64) ** 2
    lam = wavelength
    return np.pi * lam * k2 * (defocus + 0.5 * c3 * lam**2 * k2 + (c5 * lam**4 * k2**2) / 3.0)


def _probe_key(im: Imaging) -> tuple:
    return (round(im.pixel_A, 12), float(im.voltage_kv), float(im.aperture_mrad), float(im.defocus),
            float(im.c3), float(im.c5), float(im.source_size), float(im.focal_spread))


def probe_radius(im: Imaging) -> float:
    """Radius of the aberrated probe's kernel, Å: ten Airy radii λ/α plus twice the ray-optical
    blur of the defocus (and its spread), C3 and C5 at the aperture edge, plus twice the source."""
    lam, a = electron_wavelength(im.voltage_kv), im.aperture_mrad * 1e-3
    geom = (abs(im.defocus) + 3 * im.focal_spread) * a + abs(im.c3) * 1e7 * a**3 + abs(im.c5) * 1e7 * a**5
    return 10 * lam / a + 2 * geom + 2 * im.source_size


@functools.lru_cache(maxsize=8)
def _aberrated_kernel(key: tuple) -> tuple[np.ndarray, int]:
    """Probe intensity on a grid ``os`` times finer than the pixel, odd size, centred, sum 1."""
    pixel_A, kv, mrad, defocus, c3, c5, source, spread = key
    lam, alpha = electron_wavelength(kv), mrad * 1e-3
    kmax = alpha / lam
    # Fine sampling λ/(16α) (≈ 0.1 Å at 60 kV, 30 mrad): 4× finer than the intensity's Nyquist
    # step, so the sub-pixel placement of the columns (bilinear) blurs the probe by < 1 %.
    os = int(min(8, max(1, np.ceil(pixel_A / (lam / (16 * alpha)) - 1e-9))))
    pf = pixel_A / os
    im = Imaging(pixel_size=pixel_A / 10, probe="aberrated", voltage_kv=kv, aperture_mrad=mrad,
                 defocus=defocus, c3=c3, c5=c5, source_size=source, focal_spread=spread)
    half = int(np.ceil(probe_radius(im) / pixel_A)) * os        # fine px, a multiple of os
    # wave grid: the kernel plus a margin; ψ beyond the kernel's radius (which holds all but the
    # far Airy tail) folds back onto the grid's edge, outside the kept kernel
    n = sfft.next_fast_len(2 * half + 1 + 2 * max(os, 8))
    k1 = sfft.fftfreq(n, d=pf)
    kk = np.hypot(k1[:, None], k1[None, :])
    dk = 1.0 / (n * pf)
    aperture = np.clip((kmax - kk) / dk + 0.5, 0.0, 1.0)          # soft by one frequency step
    if spread > 0:   # incoherent average over a Gaussian spread of defocus (Gauss–Hermite)
        nodes, wts = np.polynomial.hermite_e.hermegauss(9)
        dfs, wts = defocus + spread * nodes, wts / wts.sum()
    else:
        dfs, wts = np.array([defocus]), np.array([1.0])
    inside = aperture > 0
    intensity = np.zeros((n, n))
    for df, wt in zip(dfs, wts):
        wave = np.zeros((n, n), np.complex128)
        wave[inside] = aperture[inside] * np.exp(-1j * aberration_phase(kk[inside], lam, df, c3 * 1e7, c5 * 1e7))
        intensity += wt * np.abs(sfft.ifft2(wave)) ** 2
    if source > 0:
        s = source / FWHM_PER_SIGMA
        intensity = sfft.ifft2(sfft.fft2(intensity) * np.exp(-2 * np.pi**2 * s**2 * kk**2)).real
    intensity = sfft.fftshift(intensity)
    c = n // 2
    kern = np.clip(intensity[c - half:c + half + 1, c - half:c + half + 1], 0.0, None)
    kern /= kern.sum()
    kern.setflags(write=False)
    return kern, os


def probe_profile(imaging: Imaging, shape_px) -> np.ndarray:
    """The probe intensity the simulator renders with, sampled at pixel centres.

    Parameters
    ----------
    imaging : Imaging
        Settings: ``probe="gaussian"`` gives the Gaussian core (``probe_fwhm``) plus tail
        (``tail_fraction``, ``tail_fwhm``); ``probe="aberrated"`` the intensity of the probe
        formed by the aperture and the aberrations (below).
    shape_px : int or (int, int)
        Size of the returned grid, px, at ``imaging.pixel_size``.

    Returns
    -------
    ndarray of float64, shape ``shape_px``
        Probe intensity with its centre on pixel ``(h // 2, w // 2)``, summing to 1 (a grid
        smaller than the probe is cropped and renormalised).

    Notes
    -----
    Aberrated probe: ψ(r) = FT⁻¹[A(k) exp(−iχ(k))] with A the aperture (|k| ≤ α/λ, α =
    ``aperture_mrad``) and χ(k) = π λ Δf k² + (π/2) C3 λ³ k⁴ + (π/3) C5 λ⁵ k⁶ (λ the relativistic
    wavelength at ``voltage_kv``; Δf = ``defocus`` Å, C3 and C5 from mm). The intensity |ψ|² is
    averaged over a Gaussian spread of defocus of standard deviation ``focal_spread`` (9-point
    Gauss–Hermite quadrature), blurred by a Gaussian source of FWHM ``source_size``, computed
    on a grid up to 8 times finer than the pixel when the pixel is coarser than λ/(16α), and
    sampled at the pixel centres. Without aberrations it is the Airy pattern, FWHM 0.51 λ/α
    (0.83 Å at 60 kV and 30 mrad).

    Examples
    --------
    >>> from stemflow.simulate import Imaging, probe_profile
    >>> p = probe_profile(Imaging(probe="aberrated", pixel_size=0.005), 65)
    >>> p.shape, round(float(p.sum()), 6), bool(p[32, 32] == p.max())
    ((65, 65), 1.0, True)
    """
    h, w = (int(shape_px), int(shape_px)) if np.isscalar(shape_px) else (int(shape_px[0]), int(shape_px[1]))
    if h < 1 or w < 1:
        raise ValueError(f"shape_px={shape_px}: give a positive size in px")
    out = np.zeros((h, w))
    if imaging.probe == "aberrated":
        kf, os = _aberrated_kernel(_probe_key(imaging))
        kc = kf[::os, ::os]
        half = kc.shape[0] // 2
        ry, rx = min(half, h // 2), min(half, w // 2)
        ry1, rx1 = min(half, h - 1 - h // 2), min(half, w - 1 - w // 2)
        out[h // 2 - ry:h // 2 + ry1 + 1, w // 2 - rx:w // 2 + rx1 + 1] = \
            kc[half - ry:half + ry1 + 1, half - rx:half + rx1 + 1]
    else:
        c = np.array([[h // 2, w // 2]], np.float64)
        t = imaging.tail_fraction
        out += render(c, np.array([1.0 - t]), imaging.sigma_px, (h, w))
        if t:
            out += render(c, np.array([t]), imaging.tail_fwhm / FWHM_PER_SIGMA / imaging.pixel_A, (h, w))
    return out / out.sum()


def probe_fwhm_A(imaging: Imaging) -> float:
    """FWHM of the probe that renders the columns, Å: ``probe_fwhm`` for the Gaussian probe; for
    the aberrated one, the diameter of the disk whose area equals the area above half maximum."""
    if imaging.probe != "aberrated":
        return imaging.probe_fwhm
    kf, os = _aberrated_kernel(_probe_key(imaging))
    pf = imaging.pixel_A / os
    return float(2.0 * np.sqrt((kf >= 0.5 * kf.max()).sum() * pf * pf / np.pi))


def render_probe(yx: np.ndarray, weight: np.ndarray, shape: tuple[int, int], imaging: Imaging) -> np.ndarray:
    """Σ weight·P(r − yx) for the aberrated probe P of ``imaging``, sampled at pixel centres.

    Columns are placed (bilinear weights) on the probe's fine grid (``os`` × the pixel), the grid
    is convolved with the probe (FFT) and sampled back at the pixel centres; columns within the
    probe's radius outside the frame still light its edge.

    Parameters
    ----------
    yx : ndarray, shape (n, 2)
        Column positions, px.
    weight : ndarray, shape (n,)
        Integrated counts of each column.
    shape : (int, int)
        Frame size, px.

    Returns
    -------
    ndarray of float32
    """
    kf, os = _aberrated_kernel(_probe_key(imaging))
    half = kf.shape[0] // 2
    h, w = shape
    gh, gw = (h - 1) * os + 1 + 2 * half, (w - 1) * os + 1 + 2 * half
    yx = np.asarray(yx, np.float64).reshape(-1, 2)
    weight = np.asarray(weight, np.float64)
    fy, fx = yx[:, 0] * os + half, yx[:, 1] * os + half
    ok = (weight != 0) & (fy >= 0) & (fy <= gh - 1) & (fx >= 0) & (fx <= gw - 1)
    fy, fx, wt = fy[ok], fx[ok], weight[ok]
    i0 = np.clip(np.floor(fy).astype(np.int64), 0, gh - 2)
    j0 = np.clip(np.floor(fx).astype(np.int64), 0, gw - 2)
    ay, ax = fy - i0, fx - j0
    grid = np.zeros(gh * gw)
    for di, dj, f in ((0, 0, (1 - ay) * (1 - ax)), (0, 1, (1 - ay) * ax), (1, 0, ay * (1 - ax)), (1, 1, ay * ax)):
        grid += np.bincount((i0 + di) * gw + (j0 + dj), wt * f, minlength=gh * gw)
    # the fine kernel sums to 1; a point sample per pixel needs the density per px²: × os²
    conv = signal.fftconvolve(grid.reshape(gh, gw), kf * (os * os), mode="same")
    return conv[half:half + (h - 1) * os + 1:os, half:half + (w - 1) * os + 1:os].astype(np.float32)


def probe_kernel_px(imaging: Imaging) -> np.ndarray:
    """The aberrated probe sampled at the pixel centres around its centre (odd square, sum 1)."""
    kf, os = _aberrated_kernel(_probe_key(imaging))
    kc = kf[::os, ::os]
    return kc / kc.sum()


# ----------------------------------------------------------------------------- detector angles

_BOHR_A = 0.529177


def detector_z_exponent(inner_mrad: float, outer_mrad: float | None = None, voltage_kv: float = 60.0) -> float:
    """Effective exponent γ of the Z-contrast (intensity ∝ Z**γ) of an annular detector.

    Model: screened-Rutherford (Wentzel) elastic scattering, dσ/dΩ ∝ Z² / (θ² + θ₀²)² with the
    screening angle θ₀ = λ / (2π a) and the Thomas–Fermi radius a = 0.885 a₀ Z^(−1/3), integrated
    over the detector: σ(Z) ∝ Z² [1/(θ₁² + θ₀²) − 1/(θ₂² + θ₀²)]. γ is the slope of ln σ against
    ln Z between carbon (Z = 6) and tungsten (Z = 74), the range of the simulator's elements.

    Far outside the screening angles the scattering is unscreened Rutherford and γ → 2; an inner
    angle near θ₀ (30–70 mrad at 60 kV) collects screened scattering and γ falls towards 4/3.
    This is the picture of Z-contrast imaging of Pennycook and of Hartel, Rose and Dinges, and it
    gives about 1.7 for the 60–200 mrad detector of Krivanek and co-workers' 60 kV atom-by-atom
    analysis, who measured an exponent close to that. The model leaves out coherent (Bragg,
    strain) scattering that low inner angles also collect, so it is an upper bound there.

    Parameters
    ----------
    inner_mrad, outer_mrad : float
        Collection angles, mrad (outer None: no outer limit).
    voltage_kv : float
        Accelerating voltage, kV.

    Returns
    -------
    float
        γ: 2 at angles far above θ₀, towards 4/3 for an open detector whose inner angle is
        near θ₀ (lower still if the outer angle is that small too).

    Examples
    --------
    >>> from stemflow.simulate.imaging import detector_z_exponent
    >>> [round(detector_z_exponent(t, 200), 2) for t in (40, 80, 150)]
    [1.59, 1.79, 1.9]
    """
    lam = electron_wavelength(voltage_kv)
    t1 = float(inner_mrad) * 1e-3
    t2 = None if outer_mrad is None else float(outer_mrad) * 1e-3

    def sigma(z):
        th0 = lam / (2 * np.pi * 0.885 * _BOHR_A * z ** (-1.0 / 3.0))
        s = 1.0 / (t1 * t1 + th0 * th0) - (0.0 if t2 is None else 1.0 / (t2 * t2 + th0 * th0))
        return z * z * s

    return float(np.log(sigma(74.0) / sigma(6.0)) / np.log(74.0 / 6.0))


# ----------------------------------------------------------------------------- scan and detector

def scan_shift_field(shape: tuple[int, int], jitter: np.ndarray | None = None, walk: np.ndarray | None = None,
                     flyback: float = 0.0, flyback_length: float = 16.0) -> np.ndarray:
    """Displacement along x of every recorded pixel, px: pixel (r, c) shows the specimen point
    at x = c − shift[r, c].

    The sum of the line jitter ``jitter[r]`` (h,), the random walk ``walk`` (h + 1 values at
    the starts of the lines, linear within each line, so W(r + c/w)) and the flyback
    ``flyback · exp(−c / flyback_length)``.
    """
    h, w = shape
    out = np.zeros(shape)
    if jitter is not None:
        out += np.asarray(jitter, np.float64)[:, None]
    if walk is not None:
        t = np.arange(h)[:, None] + np.arange(w)[None, :] / w
        out += np.interp(t, np.arange(h + 1), walk)
    if flyback:
        out += flyback * np.exp(-np.arange(w) / flyback_length)[None, :]
    return out


def scan_shift_of(yx: np.ndarray, shape: tuple[int, int], sigma_px: float, jitter: np.ndarray | None = None,
                  walk: np.ndarray | None = None, flyback: float = 0.0, flyback_length: float = 16.0) -> np.ndarray:
    """Apparent x shift of blobs centred at ``yx`` (px) under :func:`scan_shift_field`, px.

    A blob at x₀ appears where x − S(x) = x₀, S the shift of the lines it covers weighted by its
    profile along y (Gaussian of ``sigma_px``); solved by fixed-point iteration (the mapping is
    monotonic when |flyback| < flyback_length).
    """
    h, w = shape
    yx = np.asarray(yx, np.float64).reshape(-1, 2)
    rows = np.arange(h, dtype=np.float64)
    g = np.exp(-((rows[None, :] - yx[:, 0, None]) ** 2) / (2 * sigma_px**2))
    norm = g.sum(1)
    safe = np.where(norm > 0, norm, 1.0)
    base = (g @ np.asarray(jitter, np.float64)) / safe if jitter is not None else np.zeros(len(yx))
    x0 = yx[:, 1]
    x = x0 + base
    for _ in range(30):
        s = base.copy()
        if walk is not None:
            t = rows[None, :] + x[:, None] / w
            s += (g * np.interp(t, np.arange(h + 1), walk)).sum(1) / safe
        if flyback:
            s += flyback * np.exp(-np.clip(x, -flyback_length, None) / flyback_length)
        x_new = x0 + s
        if np.max(np.abs(x_new - x), initial=0.0) < 1e-6:
            x = x_new
            break
        x = x_new
    return np.where(norm > 0, x - x0, 0.0)


def apply_afterglow(image: np.ndarray, afterglow: float) -> np.ndarray:
    """Causal exponential afterglow along x: y[c] = (1 − a)·s[c] + a·y[c − 1], each line starting
    in its steady state (y[−1] = s[0]); keeps the mean. ``a`` = ``afterglow``."""
    a = float(afterglow)
    if a == 0:
        return image
    b, den = [1.0 - a], [1.0, -a]
    img = np.asarray(image, np.float64)
    zi = signal.lfilter_zi(b, den)[None, :] * img[:, :1]
    out, _ = signal.lfilter(b, den, img, axis=1, zi=zi)
    return out.astype(np.float32)


def repeat_skipped_lines(image: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """Rows flagged in ``skip`` (bool, (h,)) show the last row recorded before them."""
    skip = np.asarray(skip, bool).copy()
    if not skip.any():
        return image
    skip[0] = False
    src = np.maximum.accumulate(np.where(skip, 0, np.arange(len(skip))))
    return np.ascontiguousarray(image[src])

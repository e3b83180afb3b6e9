"""Training data: simulated frames made as varied as real ones, on the network's sampling.

Each training sample is a simulated frame at a random native sampling (5–25 pm/px; 10–40 pm/px
for heavy atoms on amorphous supports) with random optics (probe size and tail, Z-contrast
exponent) and specimen nuisances (scan jitter and drift, background, diffuse contamination,
patchy amorphous films, bright off-lattice adatoms, thick rough supports under heavy atoms), then degraded the way detectors degrade data — Poisson
noise at a random dose, read noise, line offsets, outlier pixels, blur, a non-linear response —
then resampled to the network's sampling and normalised exactly as at inference
(:mod:`stemflow.preprocess`). Targets are class masks drawn from the exact truth on the network's
grid. Nothing is stored on disk: samples stream from a seeded generator.

Units: pixel sizes in nm/px, probe sizes in Å, dose in e⁻/Å².
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .preprocess import normalize, resample, to_model_coords
from .simulate import DEFAULT_DEFECTS, simulate_image
from .simulate.imaging import class_mask
from .tables import CLASSES

__all__ = ["SampleSpec", "training_sample", "training_batches", "targets", "transform_points", "degrade", "normalize"]

_CODE = {c: i for i, c in enumerate(CLASSES)}

#: Simulation seeds at or above this are never drawn for training (held-out test sets use them).
TEST_SEED_START = 2**30


@dataclass(frozen=True)
class SampleSpec:
    """What training samples look like.

    Parameters
    ----------
    lattices : tuple of str
        Lattices drawn from (equally often).
    patch : int
        Side of a sample on the network's grid, px.
    model_pixel_size : float
        The network's sampling, nm/px; every input is resampled to it.
    pixel_size_range : (float, float)
        Native sampling drawn log-uniformly, nm/px.
    dose_range : (float, float)
        Dose per frame drawn log-uniformly, e⁻/Å². Real 60 kV graphene frames are at about
        1e4–5e5 (a C column peaking at 2–20 counts).
    p_noise_free : float
        Share of samples without noise (so very clean data is in range too).
    defect_boost : (float, float)
        Defect densities are the simulator's defaults times a factor drawn from this range, so
        that rare classes are frequent enough to learn.
    mask_radius : float
        Radius of the target disks, Å.
    reuse : int
        Degraded variants drawn from each simulated frame (noise, dose, crop and flips differ).
    support_pixel_size_range : (float, float)
        Native sampling of heavy atoms on amorphous supports (``amorphous``), nm/px.
    support_range : (float, float)
        Projected density of the amorphous support under heavy atoms, atoms/Å² (log-uniform;
        1–40 is 1–40 nm of carbon): from thin films to thick, bright supports.
    support_tail_fraction : (float, float)
        Range of the probe-tail fraction under heavy atoms on supports (a wide tail lowers
        their contrast on a bright support).
    film_range : (float, float)
        Projected density of patchy hydrocarbon films on crystalline lattices, atoms/Å².
    p_contamination_film, p_adatoms : float
        Shares of crystalline samples with a patchy film, and with bright off-lattice blobs
        (adatoms, compact contamination: background, never dopants).
    relax_range, p_relax : (float, float), float
        Relaxation around dopants, Å (the host columns bonded to a dopant pushed that much away
        from it, as a longer Si–C bond does), drawn uniformly for this share of crystalline
        samples, so that the network follows columns off the ideal lattice rather than snapping
        them back to it. 0: none.
    disorder_range, p_disorder : (float, float), float
        Static random displacement of every column, Å RMS per axis (ripples, frozen disorder),
        drawn uniformly for this share of crystalline samples. 0: none.
    p_microscope : float
        Share of samples imaged like a real microscope (:mod:`stemflow.simulate.imaging`): a probe
        from residual aberrations (60–300 kV, 20–35 mrad, defocus, C3, C5, source size, focal
        spread; its rings and tails), detector angles setting the Z exponent, a thermal-diffuse
        halo, flyback, drift within lines, skipped lines, afterglow. 0 keeps the Gaussian probe.
    """

    lattices: tuple[str, ...] = ("graphene", "ws2", "mos2", "amorphous")
    patch: int = 128
    model_pixel_size: float = 0.02
    pixel_size_range: tuple[float, float] = (0.005, 0.025)
    dose_range: tuple[float, float] = (5e3, 1e7)
    p_noise_free: float = 0.05
    defect_boost: tuple[float, float] = (2.0, 6.0)
    mask_radius: float = 0.5
    reuse: int = 4
    support_pixel_size_range: tuple[float, float] = (0.01, 0.04)
    support_range: tuple[float, float] = (0.5, 40.0)
    support_tail_fraction: tuple[float, float] = (0.0, 0.3)
    film_range: tuple[float, float] = (0.1, 1.5)
    p_contamination_film: float = 0.4
    p_adatoms: float = 0.4
    p_microscope: float = 0.0
    relax_range: tuple[float, float] = (0.0, 0.0)
    p_relax: float = 0.0
    disorder_range: tuple[float, float] = (0.0, 0.0)
    p_disorder: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _loguniform(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _simulate(rng: np.random.Generator, spec: SampleSpec):
    """A noise-free simulated frame big enough for one patch after resampling."""
    lattice = spec.lattices[rng.integers(len(spec.lattices))]
    amorphous = lattice == "amorphous"
    px = _loguniform(rng, *(spec.support_pixel_size_range if amorphous else spec.pixel_size_range))
    factor = px / spec.model_pixel_size
    n = int(np.ceil((spec.patch + 4) / factor))
    boost = rng.uniform(*spec.defect_boost)
    defects = {k: v * boost for k, v in DEFAULT_DEFECTS[lattice].items()}
    opts = dict(
        pixel_size=px, probe_fwhm=rng.uniform(0.8, 1.5), gamma=rng.uniform(1.4, 2.0),
        tail_fraction=rng.uniform(0.0, 0.12), tail_fwhm=rng.uniform(3.0, 8.0),
        line_jitter=abs(rng.normal(0, 0.3)) * (rng.random() < 0.5) / (px / 0.01),
        scan_drift=tuple(rng.normal(0, 1.5, 2) * (rng.random() < 0.3)),
        background=rng.uniform(0, 1.0) * (rng.random() < 0.5),
        contamination=rng.uniform(0, 0.15) * (rng.random() < 0.5),
        noise=False, dose=1e5)
    if amorphous:   # heavy atoms on a thick, rough support: the support is background
        opts.update(support=_loguniform(rng, *spec.support_range),
                    support_cover=1.0 if rng.random() < 0.6 else rng.uniform(0.5, 1.0),
                    tail_fraction=rng.uniform(*spec.support_tail_fraction))
    elif rng.random() < spec.p_contamination_film:   # patchy hydrocarbon film
        opts.update(support=_loguniform(rng, *spec.film_range), support_cover=rng.uniform(0.1, 0.8))
    if not amorphous and rng.random() < spec.p_adatoms:
        opts.update(adatoms=rng.uniform(0.02, 0.3))
    if spec.p_microscope and rng.random() < spec.p_microscope:
        opts.update(_microscope(rng, px))
    # drawn only when asked for, so that the streams of specs without them stay as they were
    if not amorphous and spec.p_relax and rng.random() < spec.p_relax:
        opts.update(relax=rng.uniform(*spec.relax_range))
    if not amorphous and spec.p_disorder and rng.random() < spec.p_disorder:
        opts.update(disorder=rng.uniform(*spec.disorder_range))
    sim = simulate_image(lattice, n, defects=defects, seed=int(rng.integers(TEST_SEED_START)), **opts)
    return sim, factor


def _microscope(rng: np.random.Generator, px: float) -> dict:
    """Imaging options of a real aberration-corrected microscope, drawn at random (``px`` nm/px)."""
    inner = rng.uniform(40.0, 120.0)
    return dict(
        probe="aberrated", voltage_kv=float(rng.choice([60.0, 80.0, 100.0, 200.0, 300.0])),
        aperture_mrad=rng.uniform(20.0, 35.0), defocus=rng.normal(0.0, 30.0),
        c3=rng.normal(0.0, 0.005), c5=rng.normal(0.0, 1.0), source_size=rng.uniform(0.3, 1.0),
        focal_spread=rng.uniform(0.0, 50.0), detector_inner_mrad=inner,
        detector_outer_mrad=inner + rng.uniform(100.0, 200.0),
        tds_background=rng.uniform(0.0, 0.2),
        flyback=rng.uniform(0.0, 2.0) * (rng.random() < 0.5), flyback_length=rng.uniform(8.0, 24.0),
        line_drift=rng.uniform(0.0, 0.05) * (rng.random() < 0.5) / (px / 0.01),
        line_skip=rng.uniform(0.0, 0.01) * (rng.random() < 0.2),
        afterglow=rng.uniform(0.0, 0.1) * (rng.random() < 0.5))


def degrade(expected: np.ndarray, rng: np.random.Generator, *, dose_factor: float,
            noise: bool = True) -> np.ndarray:
    """Detector-like degradation of noise-free counts (at a dose ``dose_factor`` times theirs).

    Poisson counts, Gaussian read noise, scan-line offsets, outlier pixels (bright and dark),
    slight blur and a non-linear response, each drawn at random.
    """
    lam = np.maximum(expected.astype(np.float64) * dose_factor, 0.0)
    img = rng.poisson(lam).astype(np.float32) if noise else lam.astype(np.float32)
    peak = float(np.percentile(lam, 99.5)) or 1.0
    if noise and rng.random() < 0.5:
        img += rng.normal(0, rng.uniform(0.1, 1.5), img.shape).astype(np.float32)
    if noise and rng.random() < 0.3:
        img += rng.normal(0, rng.uniform(0.02, 0.15) * peak, (img.shape[0], 1)).astype(np.float32)
    if rng.random() < 0.2:
        n = int(img.size * _loguniform(rng, 1e-5, 1e-3))
        idx = rng.integers(0, img.size, n)
        img.flat[idx] = np.where(rng.random(n) < 0.7, peak * rng.uniform(2, 8, n), 0.0).astype(np.float32)
    if rng.random() < 0.3:
        img = ndimage.gaussian_filter(img, rng.uniform(0.3, 1.0))
    if rng.random() < 0.3:
        lo = float(img.min())
        img = (img - lo) ** np.float32(_loguniform(rng, 0.75, 1.33)) + lo
    return img.astype(np.float32)


def transform_points(yx: np.ndarray, p: int, flip_y: bool, flip_x: bool, k: int) -> np.ndarray:
    """Where points go under the flips and ``np.rot90(·, k)`` applied to a (p, p) array."""
    y, x = yx[:, 0].copy(), yx[:, 1].copy()
    if flip_y:
        y = p - 1 - y
    if flip_x:
        x = p - 1 - x
    for _ in range(k % 4):  # np.rot90 (counter-clockwise): new[i, j] = old[j, p-1-i]
        y, x = p - 1 - x, y
    return np.column_stack([y, x])


def targets(yx: np.ndarray, codes: np.ndarray, shape, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Class mask (uint8) and sub-pixel offsets (2, H, W) float32 from each disk pixel to its
    column's exact centre (px; 0 on background)."""
    mask, index = class_mask(yx, codes, shape, radius, return_index=True)
    off = np.zeros((2, *shape), np.float32)
    on = index >= 0
    rr, cc = np.nonzero(on)
    idx = index[on]
    off[0][on] = yx[idx, 0] - rr
    off[1][on] = yx[idx, 1] - cc
    return mask, off


def _variants(sim, factor: float, rng: np.random.Generator, spec: SampleSpec):
    expected = sim.expected
    model_radius = spec.mask_radius / (10 * spec.model_pixel_size)
    t = sim.atoms
    yx = to_model_coords(t[["y", "x"]].to_numpy(), factor)
    codes = t["label"].map(_CODE).to_numpy(np.uint8)
    p = spec.patch
    for _ in range(spec.reuse):
        noise_free = rng.random() < spec.p_noise_free
        dose = _loguniform(rng, *spec.dose_range)
        img = degrade(expected, rng, dose_factor=dose / sim.imaging.dose, noise=not noise_free)
        small = normalize(resample(img, factor))
        h, w = small.shape
        y0 = int(rng.integers(0, h - p + 1))
        x0 = int(rng.integers(0, w - p + 1))
        x = small[y0:y0 + p, x0:x0 + p]
        fy, fx, k = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(4))
        if fy:
            x = x[::-1]
        if fx:
            x = x[:, ::-1]
        x = np.ascontiguousarray(np.rot90(x, k))
        mask, off = targets(transform_points(yx - [y0, x0], p, fy, fx, k), codes, (p, p), model_radius)
        yield x, mask, off


def training_sample(rng: np.random.Generator, spec: SampleSpec = SampleSpec()):
    """One sample: float32 normalised image (P, P), uint8 class codes (P, P) and float32 sub-pixel
    offsets to the column centres (2, P, P)."""
    sim, factor = _simulate(rng, spec)
    return next(_variants(sim, factor, rng, spec))


def training_batches(seed: int, batch_size: int, spec: SampleSpec = SampleSpec(), shuffle_buffer: int = 64):
    """Endless stream of numpy batches: images (B, 1, P, P) float32, masks (B, P, P) int64 and
    offsets (B, 2, P, P) float32.

    Deterministic for a seed. Variants of one simulated frame are spread by a shuffle buffer so a
    batch rarely holds two of them.
    """
    rng = np.random.default_rng([seed, 17])
    buffer: list = []
    while True:
        while len(buffer) < shuffle_buffer:
            sim, factor = _simulate(rng, spec)
            buffer.extend(_variants(sim, factor, rng, spec))
        idx = rng.choice(len(buffer), batch_size, replace=False)
        chosen = [buffer[i] for i in idx]
        for i in sorted(idx, reverse=True):
            buffer.pop(i)
        xs = np.stack([c[0] for c in chosen])[:, None]
        ys = np.stack([c[1] for c in chosen]).astype(np.int64)
        offs = np.stack([c[2] for c in chosen])
        yield xs, ys, offs

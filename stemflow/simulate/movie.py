"""Simulated STEM images and movies with exact ground truth.

A movie is made in two passes. The *dynamics* pass moves defects frame by frame on the lattice
(cheap: tables only) and records the truth — every column's apparent position in every frame,
the events, the drift. The *rendering* pass turns any frame into an image and a class mask on
demand, deterministically from the seed, so long movies are rendered chunk by chunk and never
held in memory whole.

Units: positions in the tables are px (``y``, ``x``; pixel (r, c) has its centre at (r, c), x is
the column) and nm (``y_nm``, ``x_nm`` = px × pixel size); internal specimen positions in Å; dose
in e⁻/Å²; drift in px/frame.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage, signal
from scipy.spatial import cKDTree

from ..tables import CLASSES, EVENTS, LATTICES, TRUTH
from .imaging import (FWHM_PER_SIGMA, Imaging, apply_afterglow, apply_line_jitter, class_mask, column_weight,
                      distort, jitter_shift, probe_fwhm_A, probe_kernel_px, probe_radius, render, render_probe,
                      repeat_skipped_lines, scan_shift_field, scan_shift_of, smooth_field, support_thickness)
from .lattice import make_lattice
from .structure import DEFECT_KINDS, Structure

__all__ = ["simulate_movie", "simulate_image", "SimulatedMovie", "SimulatedImage",
           "DEFAULT_DEFECTS", "DEFAULT_RATES"]

#: Default defect densities (per nm²) of each lattice.
DEFAULT_DEFECTS = {
    "graphene": {"Si1C3": 0.12, "Si1C4": 0.05, "V1": 0.05, "V2": 0.02, "Si2C4": 0.02,
                 "Si3C6": 0.01, "SW": 0.02},
    "ws2": {"V_S": 0.25, "V_S2": 0.08, "V_W": 0.04, "Mo_W": 0.25},
    "mos2": {"V_S": 0.25, "V_S2": 0.08, "V_Mo": 0.04, "W_Mo": 0.25},
    "amorphous": {"Pt1": 0.4},
}

#: Default per-frame probabilities of the moves a movie's defects make.
DEFAULT_RATES = {"hop": 0.05, "switch34": 0.03, "switch43": 0.05, "vacancy": 0.05}


_LABEL_CODE = {name: i for i, name in enumerate(CLASSES)}


def _render_smooth(yx, weight, sigma_px: float, shape) -> np.ndarray:
    """Wide Gaussians (the probe tail) rendered exactly on a grid ``f`` times coarser, then
    interpolated linearly: the tail is smooth on the scale of several px, so this costs little
    and changes nothing visible."""
    f = max(1, int(sigma_px // 3))
    if f == 1:
        return render(yx, weight, sigma_px, shape)
    h, w = shape
    coarse = render(yx / f, weight / (f * f), sigma_px / f, (-(-(h - 1) // f) + 2, -(-(w - 1) // f) + 2))
    return _upsample(coarse, f, shape)


def _upsample(coarse: np.ndarray, f: int, shape) -> np.ndarray:
    """Linear interpolation of a grid sampled every ``f`` px back to the full ``shape``."""
    h, w = shape
    rr, cc = np.meshgrid(np.arange(h) / f, np.arange(w) / f, indexing="ij", sparse=True)
    rr, cc = np.broadcast_arrays(rr, cc)
    return ndimage.map_coordinates(coarse, [rr, cc], order=1, mode="nearest").astype(np.float32)


def _frame_rng(seed: int, frame: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, frame, stream])


def _defect_counts(spec, lattice: str, area_nm2: float, rng) -> dict[str, int]:
    """Counts of each defect kind: ints are counts, floats are densities per nm² (Poisson)."""
    spec = DEFAULT_DEFECTS[lattice] if spec is None else dict(spec)
    known = DEFECT_KINDS[lattice]
    unknown = [k for k in spec if k not in known]
    if unknown:
        raise ValueError(f"unknown defect kind(s) {unknown} for lattice {lattice!r}; known: {', '.join(known)}")
    counts = {}
    for kind, v in spec.items():
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            counts[kind] = int(v)
        else:
            if v < 0:
                raise ValueError(f"defect density for {kind!r} is negative ({v}); give a density per nm² ≥ 0")
            counts[kind] = int(rng.poisson(float(v) * area_nm2))
    return counts


@dataclass
class SimulatedMovie:
    """A simulated movie: ground-truth tables now, images and masks rendered on demand.

    Attributes
    ----------
    atoms : DataFrame
        Ground truth, one row per column or vacancy site in view per frame (:data:`stemflow.tables.TRUTH`):
        ``frame``; ``y``, ``x`` (px, where the column's blob is centred in that frame's image,
        scan distortions included); ``y_nm``, ``x_nm``; ``element`` ('' for an empty site);
        ``count`` (atoms in the column); ``label`` (``lattice``/``dopant``/``vacancy``);
        ``site`` (lattice site id, -1 off-lattice); ``defect`` ('' if pristine, else e.g.
        ``Si1C3``); ``defect_id``; ``particle`` (identity, kept as atoms and vacancies move).
    events : DataFrame
        Hops, coordination changes, appearances and disappearances of dopants and vacancies
        (:data:`stemflow.tables.EVENTS`); ``frame`` is the first frame showing the new state; positions in px.
    drift : DataFrame
        ``frame``, ``dy``, ``dx``: displacement (px) of the specimen in the image relative to
        frame 0; subtract it to get drift-corrected positions.
    imaging : Imaging
        The microscope settings.
    params : dict
        Everything needed to make the movie again (JSON-serialisable).
    """

    atoms: pd.DataFrame
    events: pd.DataFrame
    drift: pd.DataFrame
    imaging: Imaging
    params: dict
    shape: tuple[int, int]
    _render: pd.DataFrame = field(repr=False)
    _contamination: np.ndarray = field(repr=False)
    _jitter: np.ndarray = field(repr=False)
    _background: np.ndarray | None = field(repr=False)
    _host_peak: float = field(repr=False)
    _support: tuple | None = field(default=None, repr=False)
    _walk: np.ndarray | None = field(default=None, repr=False)
    _skip: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_frames(self) -> int:
        return int(self.params["frames"])

    @property
    def pixel_size(self) -> float:
        """nm/px."""
        return self.imaging.pixel_size

    def expected(self, frame: int) -> np.ndarray:
        """Noise-free expected counts of ``frame``: the mean of :meth:`image` (scan distortions,
        saturation, afterglow and skipped lines included)."""
        return self._after_detection(self._signal(frame), frame)

    def _after_detection(self, img: np.ndarray, frame: int) -> np.ndarray:
        """What the detector and the acquisition do to the recorded signal (linear, so they
        commute with the expectation): afterglow along x, then skipped lines."""
        im = self.imaging
        if im.afterglow:
            img = apply_afterglow(img, im.afterglow)
        if self._skip is not None:
            img = repeat_skipped_lines(img, self._skip[frame])
        return img

    def _signal(self, frame: int) -> np.ndarray:
        """Expected counts reaching the detector (scan distortions and saturation included),
        before the noise."""
        im = self.imaging
        h, w = self.shape
        rows = self._render[self._render.frame == frame]
        if im.probe == "aberrated":
            img = render_probe(rows[["y", "x"]].to_numpy(), rows["weight"].to_numpy() * (im.dose * im.cross_section),
                               (h, w), im)
            c = self._contamination
            if len(c):   # diffuse blobs: their widths already include the probe
                cyx = c[:, :2] / im.pixel_A + self.drift.loc[frame, ["dy", "dx"]].to_numpy()
                img += render(distort(cyx, self.shape, im.scan_drift), c[:, 3] * (im.dose * im.cross_section),
                              c[:, 2] / im.pixel_A, (h, w))
            return self._finish(img, rows, frame)
        yx = rows[["y", "x"]].to_numpy()
        wts = rows["weight"].to_numpy() * (im.dose * im.cross_section)
        t = im.tail_fraction
        sig = np.full(len(rows), im.sigma_px)
        c = self._contamination
        if len(c):
            cyx = c[:, :2] / im.pixel_A + self.drift.loc[frame, ["dy", "dx"]].to_numpy()
            yx = np.vstack([yx, distort(cyx, self.shape, im.scan_drift)])
            wts = np.concatenate([(1 - t) * wts, c[:, 3] * (im.dose * im.cross_section)])
            sig = np.concatenate([sig, c[:, 2] / im.pixel_A])
        else:
            wts = (1 - t) * wts
        img = render(yx, wts, sig, (h, w))
        if t:
            img += _render_smooth(rows[["y", "x"]].to_numpy(),
                                  rows["weight"].to_numpy() * (t * im.dose * im.cross_section),
                                  im.tail_fwhm / FWHM_PER_SIGMA / im.pixel_A, (h, w))
        return self._finish(img, rows, frame)

    def _finish(self, img: np.ndarray, rows: pd.DataFrame, frame: int) -> np.ndarray:
        """Add the diffuse halo, background and support to the columns' image, then distort the
        scan and saturate the detector."""
        im = self.imaging
        h, w = self.shape
        if im.tds_background:
            img += _render_smooth(rows[["y", "x"]].to_numpy(),
                                  rows["weight"].to_numpy() * (im.tds_background * im.dose * im.cross_section),
                                  im.tds_fwhm / FWHM_PER_SIGMA / im.pixel_A, (h, w))
        if self._background is not None:
            img += self._background * (im.background * self._host_peak)
        if self._support is not None:
            img += self._support_view(frame)
        jit = self._jitter[frame]
        if im.scan_distorted:
            walk = None if self._walk is None else self._walk[frame]
            img = apply_line_jitter(img, scan_shift_field(self.shape, jit, walk, im.flyback, im.flyback_length))
        elif np.any(jit):
            img = apply_line_jitter(img, jit)
        if im.saturation is not None:
            img = img / (1.0 + np.maximum(img, 0) / im.saturation)
        return np.ascontiguousarray(img, dtype=np.float32)

    def _support_view(self, frame: int) -> np.ndarray:
        """The amorphous film's expected counts in ``frame``'s view (it moves with the specimen)."""
        canvas, origin = self._support
        h, w = self.shape
        # image pixel r shows the specimen point at canvas row r - drift - origin
        oy, ox = -self.drift.loc[frame, ["dy", "dx"]].to_numpy() - origin
        iy, ix = int(np.floor(oy)), int(np.floor(ox))
        crop = canvas[iy:iy + h + 1, ix:ix + w + 1]
        fy, fx = oy - iy, ox - ix     # sub-pixel remainder in [0, 1)
        top = crop[:h, :w] * (1 - fx) + crop[:h, 1:w + 1] * fx
        bot = crop[1:h + 1, :w] * (1 - fx) + crop[1:h + 1, 1:w + 1] * fx
        out = top * (1 - fy) + bot * fy
        return out.astype(np.float32)

    def frame(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (float32 counts) and class mask (uint8, codes of :data:`stemflow.tables.CLASSES`) of one frame."""
        return self.image(frame), self.mask(frame)

    def image(self, frame: int) -> np.ndarray:
        """Image of ``frame``: float32 detector counts with noise (if ``imaging.noise``)."""
        if not 0 <= frame < self.n_frames:
            raise IndexError(f"frame {frame} is outside 0..{self.n_frames - 1}")
        im = self.imaging
        lam = self._signal(frame)
        if im.noise:
            rng = _frame_rng(self.params["seed"], frame, 2)
            img = rng.poisson(np.maximum(lam, 0)).astype(np.float32)
            if im.read_noise:
                img += rng.normal(0, im.read_noise, img.shape).astype(np.float32)
            if im.line_offset:
                img += rng.normal(0, im.line_offset, (img.shape[0], 1)).astype(np.float32)
            if im.outliers:
                n = rng.binomial(img.size, im.outliers)
                idx = rng.integers(0, img.size, n)
                img.flat[idx] += (self._host_peak * rng.uniform(3, 10, n)).astype(np.float32)
        else:
            img = lam
        return self._after_detection(img, frame)

    def mask(self, frame: int) -> np.ndarray:
        """Class mask of ``frame``: disks of ``imaging.mask_radius`` Å at every true column/vacancy."""
        t = self.atoms[self.atoms.frame == frame]
        codes = t["label"].map(_LABEL_CODE).to_numpy(np.uint8)
        radius = self.imaging.mask_radius / self.imaging.pixel_A
        return class_mask(t[["y", "x"]].to_numpy(), codes, self.shape, radius)

    def render(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Images and masks of frames ``start:stop`` as arrays of shape (n, y, x)."""
        return self.images(start, stop), self.masks(start, stop)

    def images(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Images of frames ``start:stop``, (n, y, x) float32 counts. Render long movies in
        ranges of frames rather than whole."""
        stop = self.n_frames if stop is None else stop
        out = np.empty((max(stop - start, 0), *self.shape), np.float32)
        for i, k in enumerate(range(start, stop)):
            out[i] = self.image(k)
        return out

    def masks(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Class masks of frames ``start:stop``, (n, y, x) uint8."""
        stop = self.n_frames if stop is None else stop
        out = np.empty((max(stop - start, 0), *self.shape), np.uint8)
        for i, k in enumerate(range(start, stop)):
            out[i] = self.mask(k)
        return out


@dataclass
class SimulatedImage:
    """One simulated frame: ``image`` (float32 counts), ``mask`` (uint8 class codes of
    :data:`stemflow.tables.CLASSES`), ``atoms`` (ground truth as in :class:`SimulatedMovie`, ``frame`` = 0),
    ``expected`` (noise-free counts), ``imaging`` and ``params``."""

    image: np.ndarray
    mask: np.ndarray
    atoms: pd.DataFrame
    expected: np.ndarray
    imaging: Imaging
    params: dict

    @property
    def pixel_size(self) -> float:
        """nm/px."""
        return self.imaging.pixel_size


def _make_imaging(imaging: Imaging | None, options: dict) -> Imaging:
    names = Imaging.option_names()
    unknown = [k for k in options if k not in names]
    if unknown:
        raise TypeError(f"unknown imaging option(s) {unknown}; known: {', '.join(names)}")
    if imaging is None:
        return Imaging(**options)
    return dataclasses.replace(imaging, **options)


def simulate_movie(lattice: str = "graphene", frames: int = 16, shape=(256, 256), *,
                   defects=None, rates=None, drift=(0.0, 0.0), drift_jitter: float = 0.0,
                   rotation: float | None = None, seed: int = 0, imaging: Imaging | None = None,
                   disorder: float = 0.0, relax: float = 0.0, **options) -> SimulatedMovie:
    """Simulate a STEM movie whose defects move, with exact ground truth.

    Parameters
    ----------
    lattice : {"graphene", "ws2", "mos2", "amorphous"}
        Host lattice (``amorphous``: a random carbon network carrying heavy single atoms).
    frames : int
        Number of frames.
    shape : int or (int, int)
        Frame size (y, x), px.
    defects : dict, optional
        Defect kind → count (int) or density per nm² (float); see
        :func:`stemflow.simulate.structure.defect_kinds`. Default :data:`DEFAULT_DEFECTS`.
    rates : dict, optional
        Per-frame move probabilities (``hop``, ``switch34``, ``switch43``, ``vacancy``); default
        :data:`DEFAULT_RATES`. Pass ``{}`` for a still scene.
    drift : (float, float)
        Mean drift of the field, (dy, dx) px/frame.
    drift_jitter : float
        Random frame-to-frame variation of the drift, px RMS.
    rotation : float, optional
        Lattice orientation, degrees; random if None.
    seed : int
        Everything (structure, dynamics, noise) follows from it.
    imaging : Imaging, optional
        Microscope settings; keyword ``options`` (``pixel_size``, ``dose``, ``probe_fwhm``, ...)
        override single fields.
    disorder : float
        Static random displacement of every column from its ideal site, Å RMS per axis (frozen
        disorder, ripples), the same in every frame. The truth positions include it.
    relax : float
        Relaxation around dopants, Å: host columns bonded to a dopant sit this much farther from
        it (in projection; of order 0.1–0.3 Å for Si in graphene). The truth includes it.

    Returns
    -------
    SimulatedMovie
        ``frame(i)`` renders frame ``i`` (image: float32 counts, class mask); ``atoms`` (ground
        truth per frame, px and nm), ``events`` (hops, coordination changes) and ``drift`` (px) tables.

    Examples
    --------
    >>> import stemflow
    >>> movie = stemflow.simulate_movie("graphene", frames=4, shape=(64, 64), seed=2)
    >>> image, mask = movie.frame(0)
    >>> image.shape, sorted(movie.atoms["frame"].unique().tolist())
    ((64, 64), [0, 1, 2, 3])
    """
    if lattice not in LATTICES:
        raise ValueError(f"unknown lattice {lattice!r}; known lattices: {', '.join(LATTICES)}")
    if int(frames) < 1:
        raise ValueError(f"frames={frames}: a movie needs at least 1 frame")
    shape = (int(shape), int(shape)) if np.isscalar(shape) else tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 16:
        raise ValueError(f"shape={shape}: frames must be 2-D and at least 16 px on a side")
    im = _make_imaging(imaging, options)
    rates = dict(DEFAULT_RATES if rates is None else rates)
    frames = int(frames)
    seed = int(seed)
    rng = np.random.default_rng([seed, 0])
    rotation = float(rng.uniform(0, 60) if rotation is None else rotation)
    h, w = shape
    pA = im.pixel_A

    # Drift of the specimen in the image, px, relative to frame 0.
    steps = np.tile(np.asarray(drift, float), (frames, 1)) + rng.normal(0, drift_jitter, (frames, 2))
    steps[0] = 0.0
    d = np.cumsum(steps, axis=0)

    # Specimen region to build: the union of all views plus a margin for probe tails.
    # (The probe/detector/scan options do not change it, so a seed gives the same specimen with
    # them on or off; columns beyond it would add only the far tails of the aberrated probe, and
    # of a thermal-diffuse halo wider than about 1 nm, at the frame's edge.)
    margin = 8.0 + im.tail_fwhm
    y_lo, y_hi = (-d[:, 0]).min() * pA - margin, (h - d[:, 0]).max() * pA + margin
    x_lo, x_hi = (-d[:, 1]).min() * pA - margin, (w - d[:, 1]).max() * pA + margin
    lat = make_lattice(lattice, (y_lo, y_hi, x_lo, x_hi), rotation, rng)
    struct = Structure(lat)
    for name, v in (("disorder", disorder), ("relax", relax)):
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{name}={v} Å must be a number ≥ 0")
    if disorder:
        struct.static = np.random.default_rng([seed, 5]).normal(0.0, float(disorder), (lat.n_sites, 2))
    struct.relax = float(relax)

    # Defects inside the region seen by every frame (else by frame 0), 3 Å from its edges.
    cy0, cy1 = (-d[:, 0]).max() * pA + 3, (h - 1 - d[:, 0]).min() * pA - 3
    cx0, cx1 = (-d[:, 1]).max() * pA + 3, (w - 1 - d[:, 1]).min() * pA - 3
    if cy1 - cy0 < 10 or cx1 - cx0 < 10:
        cy0, cy1, cx0, cx1 = 3, (h - 1) * pA - 3, 3, (w - 1) * pA - 3

    def within(p):
        return (p[:, 0] >= cy0) & (p[:, 0] <= cy1) & (p[:, 1] >= cx0) & (p[:, 1] <= cx1)

    area_nm2 = (h * pA / 10) * (w * pA / 10)
    counts = _defect_counts(defects, lattice, area_nm2, rng)
    placed = struct.populate(counts, rng, within=within)

    # Contamination: diffuse patches fixed to the specimen (y_A, x_A, sigma_A, weight).
    n_c = rng.poisson(im.contamination * (y_hi - y_lo) * (x_hi - x_lo) / 100.0)
    contamination = np.column_stack([
        rng.uniform(y_lo, y_hi, n_c), rng.uniform(x_lo, x_hi, n_c),
        rng.uniform(7.0, 24.0, n_c) / FWHM_PER_SIGMA,
        rng.uniform(0.5, 3.0, n_c) * 14.0**im.z_exponent,
    ]) if n_c else np.empty((0, 4))

    # Adatoms and compact contamination: bright blobs off the columns, background in the truth.
    n_a = rng.poisson(im.adatoms * (y_hi - y_lo) * (x_hi - x_lo) / 100.0)
    if n_a:
        cols0 = struct.columns()
        tree = cKDTree(cols0[["y_A", "x_A"]].to_numpy()) if len(cols0) else None
        cand = np.column_stack([rng.uniform(y_lo, y_hi, 4 * n_a), rng.uniform(x_lo, x_hi, 4 * n_a)])
        if tree is not None:
            cand = cand[tree.query(cand)[0] > 0.9][:n_a]
        else:
            cand = cand[:n_a]
        probe_sigma = probe_fwhm_A(im) / FWHM_PER_SIGMA
        blobs = np.column_stack([cand, probe_sigma * rng.uniform(1.0, 2.0, len(cand)),
                                 rng.uniform(0.5, 2.5, len(cand)) * 14.0**im.z_exponent])
        contamination = np.vstack([contamination, blobs])

    # Dynamics pass.
    tables, moves = [], []
    for k in range(frames):
        if k > 0:
            moves += [dict(m, frame=k) for m in struct.step(rates, rng)]
        t = struct.columns()
        t.insert(0, "frame", k)
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)

    # Apparent positions (px) in each frame's image.
    fr = table["frame"].to_numpy()
    q = table[["y_A", "x_A"]].to_numpy() / pA + d[fr]
    q = distort(q, shape, im.scan_drift)
    table["y"], table["x"] = q[:, 0], q[:, 1]
    table["weight"] = column_weight(table["element"].to_numpy(), table["count"].to_numpy(), im.z_exponent)
    reach = 5 * max(im.sigma_px, im.tail_fwhm / FWHM_PER_SIGMA / pA if im.tail_fraction else 0.0) + 2
    if im.probe == "aberrated":
        reach = max(reach, probe_radius(im) / pA + 2)
    if im.tds_background:
        reach = max(reach, 2.5 * im.tds_fwhm / pA + 2)
    near = (q[:, 0] > -reach) & (q[:, 0] < h - 1 + reach) & (q[:, 1] > -reach) & (q[:, 1] < w - 1 + reach)
    render_rows = table.loc[near & (table["weight"].to_numpy() > 0), ["frame", "y", "x", "weight"]]

    jitter = np.zeros((frames, h))
    if im.line_jitter:
        for k in range(frames):
            jitter[k] = _frame_rng(seed, k, 1).normal(0, im.line_jitter, h)
    walk = None
    if im.line_drift:   # random walk through the frame in scan order, zero mean
        walk = np.empty((frames, h + 1))
        for k in range(frames):
            steps = _frame_rng(seed, k, 6).normal(0, im.line_drift, h + 1)
            steps[0] = 0.0
            walk[k] = np.cumsum(steps)
            walk[k] -= walk[k].mean()
    if im.scan_distorted:
        blob_sigma = probe_fwhm_A(im) / FWHM_PER_SIGMA / pA
        table["x"] = table["x"].to_numpy() + _per_frame_scan_shift(table, jitter, walk, im, shape, blob_sigma)
    elif im.line_jitter:
        table["x"] = table["x"].to_numpy() + _per_frame_jitter_shift(table, jitter, im.sigma_px)
    skip = None
    if im.line_skip:
        skip = np.stack([_frame_rng(seed, k, 7).random(h) < im.line_skip for k in range(frames)])
        skip[:, 0] = False

    inview = (table["y"].between(-0.5, h - 0.5, inclusive="left")
              & table["x"].between(-0.5, w - 0.5, inclusive="left"))
    if lattice == "amorphous":  # the support is background: only the heavy atoms are in the truth
        inview &= table["label"].ne("lattice")
    atoms = table.loc[inview].reset_index(drop=True)
    atoms["y_nm"] = atoms["y"] * im.pixel_size
    atoms["x_nm"] = atoms["x"] * im.pixel_size
    atoms = _typed_atoms(atoms[TRUTH.names])

    events = _events(atoms, moves, frames)
    drift_df = pd.DataFrame({"frame": np.arange(frames), "dy": d[:, 0], "dx": d[:, 1]})

    background = None
    host_w = column_weight([LATTICES[lattice]["host"][0]], [1], im.z_exponent)[0]
    if im.probe == "aberrated":
        host_peak = im.dose * im.cross_section * host_w * float(probe_kernel_px(im).max())
    else:
        host_peak = im.dose * im.cross_section * host_w / (2 * np.pi * im.sigma_px**2)
    if im.background:
        background = smooth_field(shape, _frame_rng(seed, 0, 3), scale=max(shape) / 3)
    support = None
    if im.support:
        support = _support_canvas(im, shape, d, _frame_rng(seed, 0, 4))

    params = dict(lattice=lattice, frames=frames, shape=list(shape), seed=seed, rotation=rotation,
                  defects_requested=counts, defects_placed=placed, rates=rates,
                  drift=[float(v) for v in drift], drift_jitter=float(drift_jitter),
                  disorder=float(disorder), relax=float(relax), imaging=im.to_dict(), classes=list(CLASSES))
    return SimulatedMovie(atoms=atoms, events=events, drift=drift_df, imaging=im, params=params,
                          shape=shape, _render=render_rows.reset_index(drop=True),
                          _contamination=contamination, _jitter=jitter, _background=background,
                          _host_peak=float(host_peak), _support=support, _walk=walk, _skip=skip)


def _support_canvas(im: Imaging, shape, d: np.ndarray, rng: np.random.Generator):
    """Expected counts of an amorphous film over every frame's view, and the canvas origin (px).

    Atoms at random (Poisson) positions, ``im.support`` per Å² times a rough relative thickness
    (:func:`~stemflow.simulate.imaging.support_thickness`), each imaged like a carbon column
    under the probe (core and tail).
    """
    h, w = shape
    lo = np.floor((-d).min(0)) - 2
    hi = np.ceil((-d).max(0)) + 2
    ch, cw = int(h + hi[0] - lo[0]) + 2, int(w + hi[1] - lo[1]) + 2
    thick = support_thickness((ch, cw), im.pixel_A, rng, im.support_cover)
    lam = im.support * thick * im.pixel_A**2
    atoms = rng.poisson(lam).astype(np.float32)
    z = column_weight(["C"], [1], im.z_exponent)[0] * im.dose * im.cross_section
    if im.probe == "aberrated":
        kern = probe_kernel_px(im)
        r = kern.shape[0] // 2
        padded = np.pad(atoms, r, mode="reflect") if min(atoms.shape) > r else np.pad(atoms, r, mode="wrap")
        img = signal.fftconvolve(padded, kern, mode="same")[r:r + ch, r:r + cw]
    else:
        t = im.tail_fraction
        img = (1 - t) * ndimage.gaussian_filter(atoms, im.sigma_px, mode="nearest")
        if t:
            img += t * ndimage.gaussian_filter(atoms, im.tail_fwhm / FWHM_PER_SIGMA / im.pixel_A, mode="nearest")
    if im.tds_background:
        img = img + im.tds_background * ndimage.gaussian_filter(atoms, im.tds_fwhm / FWHM_PER_SIGMA / im.pixel_A,
                                                                 mode="nearest")
    # canvas pixel (i, j) shows the specimen point seen at image pixel (i, j) + lo in frame 0
    return (img * z).astype(np.float32), lo


def _per_frame_scan_shift(table: pd.DataFrame, jitter: np.ndarray, walk: np.ndarray | None, im: Imaging,
                          shape, sigma_px: float) -> np.ndarray:
    """Apparent x shift of every row of ``table`` under jitter, line drift and flyback, px."""
    shift = np.zeros(len(table))
    fr = table["frame"].to_numpy()
    yx = table[["y", "x"]].to_numpy()
    for k in np.unique(fr):
        sel = fr == k
        shift[sel] = scan_shift_of(yx[sel], shape, sigma_px, jitter[k], None if walk is None else walk[k],
                                   im.flyback, im.flyback_length)
    return shift


def _per_frame_jitter_shift(table: pd.DataFrame, jitter: np.ndarray, sigma_px: float) -> np.ndarray:
    shift = np.zeros(len(table))
    fr = table["frame"].to_numpy()
    yx = table[["y", "x"]].to_numpy()
    for k in np.unique(fr):
        sel = fr == k
        shift[sel] = jitter_shift(yx[sel], jitter[k], sigma_px)
    return shift


def _typed_atoms(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["frame"] = df["frame"].astype(np.int64)
    for c in ("y", "x", "y_nm", "x_nm"):
        df[c] = df[c].astype(np.float64)
    df["element"] = df["element"].astype("category")
    df["label"] = pd.Categorical(df["label"], categories=["lattice", "dopant", "vacancy"])
    df["defect"] = df["defect"].astype("category")
    df["count"] = df["count"].astype(np.int8)
    for c in ("site", "defect_id", "particle"):
        df[c] = df[c].astype(np.int64)
    return df


def _events(atoms: pd.DataFrame, moves: list[dict], frames: int) -> pd.DataFrame:
    """Events table from the moves made and the truth positions (only what is in view)."""
    tracked = atoms[atoms["label"] != "lattice"]
    pos = {(int(f), int(p)): (y, x) for f, p, y, x in
           tracked[["frame", "particle", "y", "x"]].itertuples(index=False)}
    rows = []
    for m in moves:
        k, p = m["frame"], m["particle"]
        a, b = pos.get((k - 1, p)), pos.get((k, p))
        if a is None or b is None:
            continue
        rows.append(dict(particle=p, frame=k, kind=m["kind"], y0=a[0], x0=a[1], y1=b[0], x1=b[1],
                         distance_nm=float(np.linalg.norm(m["p1"] - m["p0"])) / 10.0,
                         state0=m["state0"], state1=m["state1"], site0=m["site0"], site1=m["site1"]))
    seen = [set(tracked.loc[tracked.frame == k, "particle"]) for k in range(frames)]
    state = {(int(f), int(p)): s for f, p, s in tracked[["frame", "particle", "defect"]].itertuples(index=False)}
    site = {(int(f), int(p)): s for f, p, s in tracked[["frame", "particle", "site"]].itertuples(index=False)}
    nan = float("nan")
    for k in range(1, frames):
        for p in sorted(seen[k] - seen[k - 1]):
            y, x = pos[(k, p)]
            rows.append(dict(particle=p, frame=k, kind="appear", y0=nan, x0=nan, y1=y, x1=x,
                             distance_nm=nan, state0="", state1=state[(k, p)], site0=-1, site1=site[(k, p)]))
        for p in sorted(seen[k - 1] - seen[k]):
            y, x = pos[(k - 1, p)]
            rows.append(dict(particle=p, frame=k, kind="vanish", y0=y, x0=x, y1=nan, x1=nan,
                             distance_nm=nan, state0=state[(k - 1, p)], state1="", site0=site[(k - 1, p)], site1=-1))
    ev = pd.DataFrame(rows, columns=EVENTS.names)
    ev = ev.sort_values(["frame", "particle", "kind"], kind="stable").reset_index(drop=True)
    ev = ev.astype({"particle": np.int64, "frame": np.int64, "site0": np.int64, "site1": np.int64,
                    "y0": np.float64, "x0": np.float64, "y1": np.float64, "x1": np.float64,
                    "distance_nm": np.float64})
    ev["kind"] = pd.Categorical(ev["kind"], categories=["hop", "coordination_change", "appear", "vanish"])
    states = sorted({""}.union(*DEFECT_KINDS.values()))
    for c in ("state0", "state1"):
        ev[c] = pd.Categorical(ev[c], categories=states)
    return ev


def simulate_image(lattice: str = "graphene", shape=(256, 256), *, defects=None,
                   rotation: float | None = None, seed: int = 0, imaging: Imaging | None = None,
                   disorder: float = 0.0, relax: float = 0.0, **options) -> SimulatedImage:
    """Simulate one STEM image with exact ground truth.

    Parameters
    ----------
    lattice : str
        ``"graphene"``, ``"ws2"``, ``"mos2"`` or ``"amorphous"`` (heavy atoms on a carbon support).
    shape : int or (int, int)
        Image size, px.
    defects : dict, optional
        Defect kind → count or density per nm², as for :func:`simulate_movie`.
    rotation : float, optional
        Lattice orientation, degrees; random (from ``seed``) if None.
    seed : int
        Everything (structure, noise) follows from it.
    imaging : Imaging, optional
        Image formation; ``options`` set its fields instead, e.g. ``pixel_size=0.012`` (nm/px),
        ``dose=5e4`` (e⁻/Å²), ``probe_fwhm=1.0`` (Å), ``line_jitter=0.3`` (px).
    disorder, relax : float
        Random and strain-like displacements of the columns from the ideal lattice, Å.

    Returns
    -------
    SimulatedImage
        ``image`` (float32 counts), ``mask`` (class codes), ``atoms`` (ground truth, px and nm).

    Examples
    --------
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 256, seed=1, defects={"Si1C3": 2})
    >>> sim.image.shape, int((sim.atoms.label == "dopant").sum())
    ((256, 256), 2)
    """
    mov = simulate_movie(lattice, 1, shape, defects=defects, rates={}, rotation=rotation, seed=seed,
                         imaging=imaging, disorder=disorder, relax=relax, **options)
    image, mask = mov.frame(0)
    return SimulatedImage(image=image, mask=mask, atoms=mov.atoms, expected=mov.expected(0),
                          imaging=mov.imaging, params=mov.params)

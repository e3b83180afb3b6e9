"""Atoms of a low-dose movie, found with the whole movie's counts.

:func:`find_atoms` judges each frame alone. At 1000 e⁻/Å² per frame a graphene column is a few
counts and a Si column a few tens; the network then misses half the Si and finds no lattice, and
no tracking can mend that afterwards. :func:`find_atoms_movie` uses what a movie of a stable host
lattice offers:

1. the frames are registered on each other from the images (:mod:`stemflow.registration`);
2. the mean of all frames shows every host column; the network finds them there (the sites).
   A dopant that moved blurs its column in the mean, or (between two sites for long) hides the
   sites under it: such columns go onto the lattice fitted to the host, and hidden sites are
   put back from it;
3. sums of ``2·window + 1`` neighbouring frames (``window`` on each side) carry enough counts for
   the network to see the dopants; where it does, a site is a dopant candidate. Places off the
   lattice sites where it saw a dopant become candidates too, and so do the places halfway
   between a dopant's site and its neighbours (where a 4-fold Si sits, however briefly);
4. every candidate's amplitude in every single frame is fitted jointly (:mod:`stemflow.occupancy`),
   and a hidden Markov model over the dopants' placements decides, frame by frame, which sites
   hold a dopant: one noisy frame cannot make a hop, yet a hop is dated to its own frame. A
   placement is weighed with the overlaps of the fitted columns, so a Si between two sites is
   told from a Si on either with all the counts that tell them apart.

The result is the atoms table of :func:`find_atoms`, ready for :func:`stemflow.track`.

Units: px and nm as in the atoms table; ``window`` in frames; ``probe_fwhm`` in nm;
``move_rate`` per frame.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial import cKDTree

from .errors import InputError, StemflowWarning, check_positive
from .noise import DIM_COUNTS, detected_counts, white_noise_sd
from .occupancy import amplitude_levels, column_amplitudes, column_gram, occupancy
from .registration import register_frames, shift_frames

__all__ = ["find_atoms_movie", "context_frames", "low_dose_check", "low_dose_advice", "frame_mismatch",
           "detected_counts", "DIM_SHARE", "SUM_GAIN", "SWITCH_SHARE", "DIM_COUNTS", "ONE_AREA_MISMATCH",
           "CHECK_FRAMES", "MOVE_RATE", "MOVE_RATE_RANGE", "decoded_move_rate", "line_offsets"]

#: Median share of ambiguous pixels (:attr:`stemflow.find.ClassMaps.ambiguous_share`) of a movie's
#: single frames from which they may be too dim to be judged alone. Simulated graphene movies
#: (bundled model, 10 pm/px) give 0.34–0.44 at 1000 e⁻/Å² per frame, 0.20–0.24 at 2000,
#: 0.07–0.09 at 5000 and 0.04–0.05 from 10⁴ up; with pure Poisson counts (no read noise) about
#: 0.16 at 1000 and 0.10 at 2000, where frame-by-frame finding still makes false hops
#: (``benchmarks/lowdose_movies.py`` reports them).
DIM_SHARE = 0.085

#: … and they are dose-limited when the registered sum of a few of them brings that share down to
#: at most this fraction: summing helps only where the counts are what is missing (9 frames of
#: those movies: 0.62 of the single frames' share at 500 e⁻/Å², 0.25 at 1000, 0.23 at 2000), not
#: for frames that are ambiguous for another reason (pure noise, a wrong pixel size: 1.1).
SUM_GAIN = 0.7

#: Dose-limited frames are found together without being asked from this share up, where
#: :func:`stemflow.find_atoms` warns that single frames look unlike anything the model knows
#: (:data:`stemflow.find.AMBIGUOUS_SHARE_LIMIT`), whatever they show. Below it they are found
#: together only when they also hold few counts (:data:`DIM_COUNTS`) and show one area
#: (:data:`ONE_AREA_MISMATCH`): real frames that the finder reads well can be dose-limited by the
#: ambiguity test too (the 128² real graphene dev frames at 15.6 pm/px: 0.24 alone, 0.02 when
#: nine of them, of different areas, are registered and summed), and a sequence of different
#: areas must not be read as one movie.
SWITCH_SHARE = 0.3

#: Frames show one area when, registered, each differs from the sum of the others by little more
#: than its noise: the median over frames of the variance of that difference, smoothed to the
#: probe, over what white noise of the frames' own pixel-to-pixel level gives
#: (:func:`frame_mismatch`) is at most this. The benchmark's held-out movies give medians of 2.9–5.3
#: at every dose and nuisance (hops, registration error and the lattice's share of the noise
#: estimate). Frames of different areas give more as their structure outweighs their noise, but
#: dim ones differ little beyond it, and the real dev stack of different areas that reaches this
#: test gives 14.7: a guard beside :data:`DIM_COUNTS`, not a test on its own.
ONE_AREA_MISMATCH = 14.0

#: Frames :func:`low_dose_check` reads from the start of a movie.
CHECK_FRAMES = 9

#: ``move_rate="auto"``: the prior rate the first decoding takes, per frame, and the range the
#: rate measured on its path is held to.
MOVE_RATE = 0.1
MOVE_RATE_RANGE = (0.01, 0.3)


def _frames(movie, pixel_size):
    """The movie as an array that slices lazily (numpy, or a DataArray's dask/numpy data), and nm/px."""
    attrs = getattr(movie, "attrs", {}) or {}
    if pixel_size is None:
        pixel_size = attrs.get("pixel_size")
    if pixel_size is None:
        raise InputError("no pixel size: pass pixel_size= (nm/px) or give a DataArray with attrs['pixel_size']")
    a = movie.data if hasattr(movie, "dims") else movie
    if not hasattr(a, "shape") or not hasattr(a, "__getitem__"):
        a = np.asarray(a)
    if len(a.shape) != 3 or a.shape[0] < 3:
        raise InputError(f"a movie of shape {tuple(a.shape)}: expected (frame, y, x) with at least 3 frames; "
                         "use find_atoms for single frames")
    return a, float(check_positive(pixel_size, "pixel_size", "nm/px"))


def context_frames(window: int) -> int:
    """Frames of context on each side of a segment or part: ``max(2·window + 1, 5)``.

    Parameters
    ----------
    window : int
        :func:`find_atoms_movie`'s ``window``, frames.

    Returns
    -------
    int
        Frames.

    Examples
    --------
    >>> context_frames(2), context_frames(0)
    (5, 5)
    """
    return max(2 * int(window) + 1, 5)


def low_dose_check(movie, pixel_size: float | None = None, *, lattice: str = "graphene", model=None,
                   n_frames: int = CHECK_FRAMES, probe_fwhm: float = 0.11) -> dict:
    """Whether a movie's frames are too dim to be judged one by one (use :func:`find_atoms_movie`).

    The network looks at three of the first ``n_frames`` frames alone and at their registered
    sum. Frames are dose-limited when, alone, a median share of at least :data:`DIM_SHARE` of
    their pixels is ambiguous and the sum brings that share down to at most :data:`SUM_GAIN` of
    it: more counts make them clear. ``low_dose`` says to find them together when single
    frames are past :data:`SWITCH_SHARE`, where frame-by-frame finding fails whatever they
    show, or when, besides, they hold few counts (:func:`detected_counts` under
    :data:`DIM_COUNTS` per nm², or unknown for frames that are no counts, such as z-scored ones)
    and show one area (:func:`frame_mismatch` at most
    :data:`ONE_AREA_MISMATCH`) (``stemflow run``, ``stemflow find`` and ``.stem.track()`` then
    switch by themselves; otherwise they only say so).

    Parameters
    ----------
    movie : ndarray or xarray.DataArray, (frame, y, x)
        Counts; only the first ``n_frames`` frames are read (a lazy array stays lazy beyond them).
    pixel_size : float, optional
        Sampling, nm/px (from a DataArray's ``attrs["pixel_size"]`` when not given).
    lattice : {"graphene", "ws2", "mos2", "amorphous"}
        The host; ``"amorphous"`` has no lattice to follow, so the answer is always False.
    model : Model, str or Path, optional
        As for :func:`stemflow.find_atoms`.
    n_frames : int
        Frames read and summed (≥ 5; a movie with fewer than 5 frames is never judged dim).
    probe_fwhm : float
        The probe's full width at half maximum, nm (the registration's smoothing).

    Returns
    -------
    dict
        ``dose_limited``, ``few_counts``, ``one_area`` and ``low_dose`` (bool, as above),
        ``single_share`` (median over three single frames) and ``summed_share`` (their
        registered sum), 0–1, ``counts_per_nm2`` (:func:`detected_counts`, median over the
        frames) and ``mismatch`` (:func:`frame_mismatch` of the registered frames), NaN when not
        measured; ``frames`` summed.

    Examples
    --------
    >>> import stemflow
    >>> from stemflow.lowdose import low_dose_check
    >>> dim = stemflow.simulate_movie("graphene", frames=9, shape=160, pixel_size=0.01, dose=1000, seed=1)
    >>> low_dose_check(dim.images(), pixel_size=0.01)["low_dose"]
    True
    """
    from .find import find_atoms

    frames, pixel_size = _frames(movie, pixel_size)
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 5:
        raise InputError(f"n_frames={n_frames!r}: expected the frames to sum, an int ≥ 5")
    n = min(int(n_frames), frames.shape[0])
    out = dict(low_dose=False, dose_limited=False, few_counts=False, one_area=False, single_share=float("nan"),
               summed_share=float("nan"), counts_per_nm2=float("nan"), mismatch=float("nan"), frames=n)
    if n < 5 or lattice == "amorphous":
        return out
    block = np.asarray(frames[:n], np.float32)
    kw = dict(pixel_size=pixel_size, lattice=lattice, model=model, identify=False, flips=1)   # classes only
    with warnings.catch_warnings():            # ambiguous frames are what is measured here
        warnings.simplefilter("ignore", StemflowWarning)
        single = find_atoms(block[[0, n // 2, n - 1]], **kw).attrs["ambiguous_share"]
        out["single_share"] = float(np.median(single))
        if out["single_share"] < DIM_SHARE:
            return out
        from .tables import LATTICES

        sigma = probe_fwhm / pixel_size / 2.3548
        _, reg, valid, summed = _registered(block, sigma, LATTICES[lattice]["bond"] / pixel_size)
        out["summed_share"] = float(find_atoms(summed, **kw).attrs["ambiguous_share"])
    out["counts_per_nm2"] = float(np.median([detected_counts(f) for f in block])) / pixel_size ** 2
    out["mismatch"] = frame_mismatch(reg, valid, sigma)
    out["dose_limited"] = bool(out["summed_share"] <= SUM_GAIN * out["single_share"])
    out["few_counts"] = not out["counts_per_nm2"] >= DIM_COUNTS      # frames that are no counts (NaN): unknown
    out["one_area"] = bool(out["mismatch"] <= ONE_AREA_MISMATCH)
    out["low_dose"] = out["dose_limited"] and (out["single_share"] >= SWITCH_SHARE
                                               or (out["few_counts"] and out["one_area"]))
    return out


def frame_mismatch(registered, valid, sigma_px: float) -> float:
    """How much registered frames differ beyond their noise: ≈ 1 for one unchanging area.

    Each frame is compared with the sum of the others, scaled to its counts, where all of them
    hold data; the difference is smoothed with the probe's Gaussian, and its variance is divided
    by what white noise of the frame's and the sum's own pixel-to-pixel level (a 5-point
    Laplacian's spread) would leave after the same smoothing. Frames of one area differ by their
    counts' noise, a moved dopant and a registration error; frames of different areas differ in
    structure, far more.

    Parameters
    ----------
    registered : ndarray, (frame, y, x)
        Registered frames, counts (as :func:`stemflow.registration.shift_frames` gives them).
    valid : ndarray of bool, (frame, y, x)
        Where each registered frame holds data.
    sigma_px : float
        The probe's σ, px.

    Returns
    -------
    float
        Median over frames; NaN when the frames share too little area to compare.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> area = 5 + 4 * np.sin(np.arange(96) / 3.0)[:, None] * np.cos(np.arange(96) / 4.0)
    >>> one = rng.poisson(np.broadcast_to(area, (6, 96, 96))).astype(float)
    >>> ok = np.ones(one.shape, bool)
    >>> round(frame_mismatch(one, ok, 2.0))
    1
    >>> many = rng.poisson(np.stack([np.roll(area, 7 * k, axis=1) for k in range(6)])).astype(float)
    >>> frame_mismatch(many, ok, 2.0) > 10
    True
    """
    reg = np.asarray(registered, np.float64)
    valid = np.asarray(valid, bool)
    border = int(np.ceil(3 * sigma_px)) + 1
    kernel = np.zeros((2 * border + 1,) * 2)
    kernel[border, border] = 1.0
    gain = float((ndimage.gaussian_filter(kernel, sigma_px, mode="constant") ** 2).sum())   # white noise → smoothed
    common = ndimage.binary_erosion(valid.all(axis=0), iterations=border)     # where every frame holds data
    if common.sum() < 16 * border ** 2:
        return float("nan")
    total = reg.sum(axis=0)
    ratios = []
    for i in range(len(reg)):
        rest = total - reg[i]
        scale = reg[i][common].sum() / max(rest[common].sum(), 1e-12)
        diff = ndimage.gaussian_filter(np.where(common, reg[i] - scale * rest, 0.0), sigma_px)
        noise = white_noise_sd(reg[i], common) ** 2 + (scale * white_noise_sd(rest, common)) ** 2
        if noise > 0:
            ratios.append(diff[common].var() / (noise * gain))
    return float(np.median(ratios)) if ratios else float("nan")


def low_dose_advice(check: dict) -> str | None:
    """What to tell the user of a :func:`low_dose_check`: the switch, the option, or nothing.

    Parameters
    ----------
    check : dict
        :func:`low_dose_check`'s answer.

    Returns
    -------
    str or None
        One sentence when the frames are dose-limited (found together, or could be), else None.

    Examples
    --------
    >>> low_dose_advice(dict(low_dose=False, dose_limited=False, single_share=0.04, summed_share=float("nan"),
    ...                      frames=9)) is None
    True
    >>> low_dose_advice(dict(low_dose=False, dose_limited=True, single_share=0.2, summed_share=0.05,
    ...                      frames=9)).split(":")[0]
    'single frames look dose-limited (20% of their pixels ambiguous alone, 5% in the registered sum of 9)'
    """
    if not check.get("dose_limited"):
        return None
    why = (f"single frames look dose-limited ({check['single_share']:.0%} of their pixels ambiguous alone, "
           f"{check['summed_share']:.0%} in the registered sum of {check['frames']})")
    if check.get("low_dose"):
        return (f"{why}: found with all frames together (stemflow.find_atoms_movie: dopants and host columns, "
                "no vacancies); low_dose=False (--no-low-dose) judges frames one by one")
    if not check.get("few_counts", True):
        why += (f", but at {check['counts_per_nm2']:.0f} counts per nm² they hold enough to be read one by one "
                f"(below {DIM_COUNTS:.0f} they would be found together)")
    elif not check.get("one_area", True):
        why += (f"; they differ by {check['mismatch']:.0f}× what their noise explains (frames of one area: "
                f"≤ {ONE_AREA_MISMATCH:.0f}×), as frames of different areas do")
    return (f"{why}: if the frames show one area, low_dose=True (--low-dose, stemflow.find_atoms_movie) "
            "finds the dopants with all frames together; they are judged one by one now")


def _registered(frames, sigma_px, bond_px, destripe: bool = False):
    """Shifts, registered frames (less their scan lines' offsets, :func:`line_offsets`, with
    ``destripe``), where they hold data, and their sum scaled to all frames (the mean frame's
    counts × frames), registered as :func:`find_atoms_movie` does. :func:`low_dose_check` keeps
    the offsets: frames of different areas differ row by row too, and taking that out as offsets
    would make them look like one area."""
    shifts = register_frames(frames, sigma_px=0.64 * sigma_px, max_step=0.4 * bond_px)
    reg, valid = shift_frames(frames, shifts)
    if destripe:
        np.subtract(reg, line_offsets(reg, valid)[..., None], out=reg, where=valid)
    summed = (reg.sum(axis=0) / np.maximum(valid.sum(axis=0), 1) * len(frames)).astype(np.float32)
    return shifts, reg, valid, summed


def line_offsets(registered, valid, min_share: float = 0.25) -> np.ndarray:
    """Each registered frame's offset along every row: the mean of its departure from the movie's
    mean frame over the row's pixels that hold data.

    A scan line's additive offset (the detector's baseline moving from line to line, a common
    artefact of real STEM frames) is constant along the line, so it is what a row of the frame
    keeps of its departure from the mean frame once the row is averaged: the lattice, which is
    the same in every frame, leaves the mean frame, and the frame's noise (and a dopant that moves)
    averages away over the row — but not wholly: each row's mean keeps the noise of its pixels
    over their number. So each frame's offsets are shrunk by ``1 − noise / spread`` (0 when the
    rows' means spread no more than that noise predicts, about 1 when offsets dominate it): a frame
    without line offsets is left as it is rather than given the rows' noise. The mean frame holds
    each frame's own offset divided by the number of frames, so the offsets come out
    (1 − 1/frames) of their size.

    Parameters
    ----------
    registered : ndarray, (frame, y, x)
        Frames on a common grid, counts; rows are scan lines (x the fast direction).
    valid : ndarray, (frame, y, x) bool
        Where ``registered`` holds data.
    min_share : float
        Rows with data over less than this share of their width get no offset (0).

    Returns
    -------
    ndarray, (frame, y)
        Offsets, counts (0 where a row holds too little data).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> lattice = np.tile(np.sin(np.arange(64) / 2.0) ** 2, (32, 1))       # the same in every frame
    >>> offsets = rng.normal(0, 1, (8, 32))
    >>> frames = lattice[None] + offsets[..., None]
    >>> found = line_offsets(frames, np.ones(frames.shape, bool))
    >>> bool(np.allclose(found, offsets - offsets.mean(axis=0)))
    True
    """
    reg = np.asarray(registered, np.float64)
    valid = np.asarray(valid, bool)
    if reg.ndim != 3 or valid.shape != reg.shape:
        raise InputError(f"registered {reg.shape} and valid {valid.shape}: expected two stacks (frame, y, x) of "
                         "one shape")
    held = valid.sum(axis=0)
    mean = np.where(valid, reg, 0.0).sum(axis=0) / np.maximum(held, 1)
    n = valid.sum(axis=2)
    resid = np.where(valid, reg - mean[None], 0.0)            # the one frame-sized temporary
    rows = n >= max(min_share * reg.shape[2], 2)
    off = np.where(rows, resid.sum(axis=2) / np.maximum(n, 1), 0.0)
    # the spread of a row's pixels about its mean: Σ r² − n·mean², without a second temporary
    within = np.einsum("tyx,tyx->ty", resid, resid) - n * off ** 2
    noise = np.where(rows, np.maximum(within, 0.0) / np.maximum(n - 1, 1) / np.maximum(n, 1), 0.0)
    spread = (off ** 2).sum(axis=1)
    keep = np.clip(1.0 - noise.sum(axis=1) / np.where(spread > 0, spread, np.inf), 0.0, 1.0)
    return off * keep[:, None]


def _segments(n, length, overlap):
    """(first computed, first kept, end kept, end computed) frame of each segment."""
    if n <= length:
        return [(0, 0, n, n)]
    out = []
    for a in range(0, n, length):
        b = min(n, a + length)
        out.append((max(0, a - overlap), a, b, min(n, b + overlap)))
    if out[-1][2] - out[-1][1] < 3 and len(out) > 1:          # fold a tiny tail into the segment before
        c0, a0, _, _ = out[-2]
        out[-2:] = [(c0, a0, n, n)]
    return out


def _window_sums(reg, valid, window):
    """Sum of frames t-window..t+window on the common grid, scaled to 2·window+1 frames of data."""
    size = 2 * window + 1
    total = ndimage.uniform_filter1d(reg, size, axis=0, mode="constant")
    count = ndimage.uniform_filter1d(valid.astype(np.float64), size, axis=0, mode="constant")
    return np.divide(total * size, count, out=np.zeros(reg.shape), where=count > 1e-9).astype(np.float32)


def find_atoms_movie(movie, pixel_size: float | None = None, *, window: int = 2, lattice: str = "graphene",
                     model=None, probe_fwhm: float = 0.11, move_rate: float | str = "auto",
                     min_evidence: int = 2, between_snr: float = 0.0, segment: int = 200,
                     amplitude_seed: float | None = 5.0) -> pd.DataFrame:
    """Find atoms and dopants in a low-dose movie of a stable host, using all its frames.

    Parameters
    ----------
    movie : ndarray or xarray.DataArray, (frame, y, x)
        Counts, at least 3 frames, the host lattice the same in all (dopants may move).
    pixel_size : float, optional
        Sampling, nm/px (from a DataArray's ``attrs["pixel_size"]`` when not given).
    window : int
        Frames on each side summed for the network to see dopants: 2 makes sums of 5 frames
        (1000 e⁻/Å² frames give 5000 e⁻/Å² sums). The amplitudes and the decision stay per frame.
    lattice : {"graphene", "ws2", "mos2"}
        The host.
    model : Model, str or Path, optional
        As for :func:`stemflow.find_atoms`.
    probe_fwhm : float
        The probe's full width at half maximum, nm (the Gaussian fitted at every site).
    move_rate : float or "auto"
        Prior probability per frame that a dopant moves (hops or changes site), in (0, 1).
        ``"auto"``: the movie's own, measured on the placements decoded with ``MOVE_RATE`` (0.1)
        and held to ``MOVE_RATE_RANGE``; the placements are then decoded again with it. A rate
        that expects more moves than the dopants make reads noise as hops, one that expects fewer
        misses short stays (``benchmarks/results/lowdose_movies.md``, Si that hop 0.03 and 0.15
        per frame).
    min_evidence : int
        A site is a dopant candidate when the network saw a dopant there in at least this many of
        the summed frames.
    segment : int
        Frames processed together. Longer movies go in segments of this many frames that overlap
        by ``max(2·window + 1, 5)`` frames on each side (the overlap gives each segment's first and
        last kept frames their neighbours), so memory stays about ``40 B × segment × frame
        pixels`` whatever the movie's length; a lazy (dask-backed) DataArray is read a segment
        at a time.
    between_snr : float
        Places halfway between a dopant's site and its neighbours (where a 4-fold Si sits in
        graphene) become candidates when a single frame tells a dopant from a host column by at
        least this many standard deviations (``(dopant - host) / sd_host`` of the fitted
        amplitudes). Default 0: always. Without them a short 4-fold stay is read as a hop onto a
        neighbouring site and back (on development movies at 1000 e⁻/Å² per frame, hop precision
        0.90 without, 0.96 with); ``inf``: never.
    amplitude_seed : float or None
        Sites whose own fitted amplitudes favour a dopant over a host column by more than this
        log-likelihood ratio (nats) summed over 3 frames extend the dopant groups as the network's
        candidates do (:func:`stemflow.occupancy.occupancy`). The network on summed frames sees a
        dopant that moves every few frames on few of the sites it visits. None: the network's
        candidates alone.

    Returns
    -------
    DataFrame
        The atoms table of :func:`stemflow.find_atoms` (``frame``, ``y``, ``x`` in each frame's
        own px, ``y_nm``, ``x_nm``, ``label`` ``lattice`` / ``dopant``, ``prob`` = posterior
        probability of the label, ``intensity`` = the site's fitted amplitude in that frame,
        counts). A site is listed in a frame when it lies at least one probe σ inside it and its
        footprint (3 σ) holds data there. ``df.attrs``: ``pixel_size``,
        ``lattice``, ``model``, ``shifts`` (px per frame relative to frame 0, from the images),
        ``window``, ``segments`` (how many), ``decoded_over_frames`` (True: each frame's labels
        already weigh the neighbouring frames, so :func:`stemflow.track`'s ``persist="auto"``
        judges this table frame by frame rather than smooth it a second time), and per segment
        ``levels`` (host and dopant
        amplitudes and their noise, counts), ``move_rate`` (the rate decoded with, per frame) and
        ``ambiguous_share_mean`` (the share of ambiguous
        pixels in the network's view of the segment's mean frame, as in
        :func:`stemflow.find_atoms`; the sums of low-dose frames are expected to be noisier than
        single bright frames, so no warning is raised for them).

    Examples
    --------
    >>> import stemflow
    >>> mov = stemflow.simulate_movie("graphene", frames=6, shape=128, pixel_size=0.01, dose=2000,
    ...                               defects={"Si1C3": 2}, rates={}, seed=3)
    >>> atoms = stemflow.find_atoms_movie(mov.images(), pixel_size=0.01)
    >>> per_frame = lambda t: t[t.label == "dopant"].groupby("frame").size().tolist()
    >>> per_frame(atoms) == per_frame(mov.atoms)          # the Si of every frame, as simulated
    True
    """
    from .find import atoms_table

    frames, pixel_size = _frames(movie, pixel_size)
    if not (isinstance(window, (int, np.integer)) and window >= 0):
        raise InputError(f"window={window!r}: expected frames on each side, an int ≥ 0")
    if not (isinstance(segment, (int, np.integer)) and segment >= 3):
        raise InputError(f"segment={segment!r}: expected the frames processed together, an int ≥ 3")
    if lattice == "amorphous":
        raise InputError("lattice='amorphous' has no host lattice to hold still; use find_atoms frame by frame")
    from .tables import LATTICES

    if lattice not in LATTICES:
        raise InputError(f"unknown lattice {lattice!r}; known lattices: {', '.join(LATTICES)}")
    check_positive(probe_fwhm, "probe_fwhm", "nm")
    if not (move_rate == "auto" or (isinstance(move_rate, (int, float, np.floating)) and not isinstance(move_rate, bool)
                                   and 0 < move_rate < 1)):
        raise InputError(f"move_rate={move_rate!r}: expected a probability per frame in (0, 1), or 'auto'")
    if isinstance(min_evidence, bool) or not isinstance(min_evidence, (int, np.integer)) or min_evidence < 1:
        raise InputError(f"min_evidence={min_evidence!r}: expected a number of summed frames ≥ 1")
    if amplitude_seed is not None and (isinstance(amplitude_seed, bool) or not isinstance(
            amplitude_seed, (int, float, np.integer, np.floating)) or not np.isfinite(amplitude_seed)):
        raise InputError(f"amplitude_seed={amplitude_seed!r}: expected a log-likelihood ratio in nats "
                         "(a finite number), or None for the network's candidates alone")
    opts = dict(pixel_size=pixel_size, lattice=lattice, model=model, sigma_px=probe_fwhm / pixel_size / 2.3548,
                bond_px=LATTICES[lattice]["bond"] / pixel_size, window=int(window), move_rate=move_rate,
                min_evidence=min_evidence, between_snr=between_snr, amplitude_seed=amplitude_seed)
    tables, shifts, info = [], {}, []
    for c0, a, b, c1 in _segments(frames.shape[0], int(segment), context_frames(window)):
        rows, local, seg_info = _segment(np.asarray(frames[c0:c1]), **opts)
        glob = local + (np.mean([shifts[f] - local[f - c0] for f in range(c0, a)], axis=0) if c0 < a else 0.0)
        shifts.update({f: glob[f - c0] for f in range(c0, c1)})
        rows = rows[(rows.frame >= a - c0) & (rows.frame < b - c0)].assign(frame=lambda r: r.frame + c0)
        tables.append(rows)
        info.append(seg_info)
    out = atoms_table(pd.concat(tables, ignore_index=True), pixel_size, lattice, info[0]["model"])
    out.attrs.update(pixel_size=pixel_size, lattice=lattice, model=info[0]["model"],
                     shifts=np.array([shifts[f] for f in range(frames.shape[0])]).round(4).tolist(),
                     window=int(window), segments=len(info), decoded_over_frames=True,
                     ambiguous_share_mean=[i["ambiguous_share_mean"] for i in info],
                     levels=[i["levels"] for i in info], move_rate=[i["move_rate"] for i in info])
    return out


def _segment(frames, *, pixel_size, lattice, model, sigma_px, bond_px, window, move_rate, min_evidence,
             between_snr, amplitude_seed):
    """find_atoms_movie on frames held in memory: (rows with frame numbers from 0, shifts, info)."""
    from .find import find_atoms

    shifts, reg, valid, mean = _registered(frames, sigma_px, bond_px, destripe=True)
    t_n = len(frames)
    # One network pass: the sites' places are followed through the movie by the amplitude fits
    # below, and the hops they make are what ``benchmarks/lowdose_movies.py`` measured.
    kw = dict(pixel_size=pixel_size, lattice=lattice, model=model, identify=False, flips=1)
    with warnings.catch_warnings():      # sums of low-dose frames are expected to look noisier than
        warnings.simplefilter("ignore", StemflowWarning)       # what the model has seen; judged below
        host = find_atoms(mean, **kw)
    host = host[host.label.astype(str).isin(["lattice", "dopant"])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StemflowWarning)
        summed = find_atoms(_window_sums(reg, valid, window), **kw)
    dop = summed[summed.label.astype(str) == "dopant"]
    dyx = dop[["y", "x"]].to_numpy(np.float64)
    sites = _complete_sites(host[["y", "x"]].to_numpy(np.float64), (host.label.astype(str) == "dopant").to_numpy(),
                            bond_px, seen=dyx, min_count=min_evidence)
    if len(sites) < 3:
        raise InputError(f"the mean of the {t_n} registered frames shows {len(sites)} columns: no host lattice "
                         "to follow dopants on (check pixel_size, lattice and that the frames show one area)")
    spacing = float(np.median(cKDTree(sites).query(sites, k=2)[0][:, 1]))
    d, _ = cKDTree(sites).query(dyx) if len(dyx) else (np.zeros(0), None)
    extra = _extra_sites(dyx[d > 0.3 * spacing], 0.25 * spacing, min_evidence)
    # dopants off the lattice sites: far from every site they hold a column of their own most of the
    # time and are fitted from the start; near sites (e.g. a 4-fold Si halfway between two) they are
    # places a dopant may take, fitted with the rest once the levels are known (a dopant there
    # displaces the host columns beside it: _displaced)
    far = cKDTree(sites).query(extra)[0] > 0.7 * spacing if len(extra) else np.zeros(0, bool)
    fitted = np.vstack([sites, extra[far]])
    is_host = np.r_[np.ones(len(sites), bool), np.zeros(int(far.sum()), bool)]
    amp, seen = column_amplitudes(reg, valid, fitted, sigma_px)
    d, j = cKDTree(fitted).query(dyx) if len(dyx) else (np.zeros(0), np.zeros(0, np.int64))
    on = d < 0.35 * spacing
    levels = None
    virtual = extra[~far]
    if on.sum() >= 3:
        levels = amplitude_levels(amp, is_host, _held(dop["frame"].to_numpy()[on], j[on]))
        if (levels.dopant - levels.host) / levels.sd(levels.host) >= between_snr:
            seen_at = np.bincount(j[on], minlength=len(fitted))[:len(sites)]
            mids = _between(sites, np.flatnonzero(seen_at >= min_evidence), spacing, np.vstack([fitted, virtual]))
            virtual = np.vstack([virtual, mids])
    n_fit = len(fitted)
    profiles = {n_fit + k: v for k, v in _displaced(virtual, fitted, is_host, spacing).items()}
    cand = np.vstack([fitted, virtual])
    is_host = np.r_[is_host, np.zeros(len(virtual), bool)]
    d, j = cKDTree(cand).query(dyx) if len(dyx) else (np.zeros(0), np.zeros(0, np.int64))
    near = d < 0.35 * spacing
    obs = (dop["frame"].to_numpy()[near], j[near])
    if levels is not None:
        # the places between sites join the fit as columns of their own, and the evidence weighs the
        # fit's overlaps (gram): judged through the sites' amplitudes alone, a Si between two sites
        # keeps less than half of what sets it apart from a Si on one of them
        amp, seen = column_amplitudes(reg, valid, cand, sigma_px)
        occ_kw = dict(n_frames_evidence=min_evidence, profiles=profiles, gram=column_gram(cand, sigma_px),
                      amplitude_seed=amplitude_seed)
        rate = MOVE_RATE if move_rate == "auto" else float(move_rate)
        is_dop, p_dop = occupancy(amp, cand, is_host, obs, levels, spacing, move_rate=rate, **occ_kw)
        if move_rate == "auto":
            # the movie's own rate: moves per dopant and frame on the path decoded with the prior,
            # then the path decoded again with it (dopants that seldom move make few false hops
            # under a rate that expects them to move often, and the other way round)
            measured = decoded_move_rate(is_dop)
            if np.isfinite(measured):
                rate = float(np.clip(measured, *MOVE_RATE_RANGE))
                is_dop, p_dop = occupancy(amp, cand, is_host, obs, levels, spacing, move_rate=rate, **occ_kw)
    else:                     # too few dopants seen anywhere: every site is host
        amp = np.concatenate([amp, np.full((t_n, len(virtual)), np.nan)], axis=1)
        seen = np.concatenate([seen, np.zeros((t_n, len(virtual)), bool)], axis=1)
        is_dop, p_dop = np.zeros(amp.shape, bool), np.zeros(amp.shape)
        rate = float("nan")
    displaced = np.zeros(amp.shape, bool)
    for k, (idx, _, emptied) in profiles.items():
        displaced[:, idx[emptied]] |= is_dop[:, k, None]
    rows = []
    for t in range(t_n):
        keep = seen[t] & ((is_host & ~displaced[t]) | is_dop[t])
        p = cand[keep] + shifts[t]
        rows.append(pd.DataFrame({
            "frame": t, "y": p[:, 0], "x": p[:, 1],
            "label": np.where(is_dop[t][keep], "dopant", "lattice"),
            "prob": np.where(is_dop[t][keep], p_dop[t][keep], 1.0 - p_dop[t][keep]).astype(np.float32),
            "intensity": amp[t][keep].astype(np.float32)}))
    info = dict(model=host.attrs.get("model", "default"), move_rate=rate,
                ambiguous_share_mean=float(host.attrs.get("ambiguous_share", np.nan)),
                levels=None if levels is None else dict(host=levels.host, dopant=levels.dopant,
                                                        sd_host=levels.sd(levels.host),
                                                        sd_dopant=levels.sd(levels.dopant)))
    return pd.concat(rows, ignore_index=True), shifts, info


def decoded_move_rate(is_dopant) -> float:
    """Moves per dopant and frame in decoded placements: the placements new in a frame (a dopant
    that moves leaves one site and takes another) over the placements that continue into a next
    frame. NaN when no dopant is placed in two frames.

    Parameters
    ----------
    is_dopant : ndarray, (frame, n) bool
        Which candidates hold a dopant in each frame (:func:`stemflow.occupancy.occupancy`).

    Returns
    -------
    float
        Moves per dopant and frame.

    Examples
    --------
    >>> import numpy as np
    >>> d = np.zeros((6, 3), bool)
    >>> d[:3, 0] = True; d[3:, 1] = True          # one dopant, one move in 5 steps
    >>> decoded_move_rate(d)
    0.2
    """
    d = np.asarray(is_dopant, bool)
    if d.ndim != 2 or len(d) < 2:
        return float("nan")
    steps = int(d[:-1].sum())
    new = int((d[1:] & ~d[:-1]).sum())
    return new / steps if steps else float("nan")


def _held(frames, sites, least=20):
    """The (frame, site) observations whose site was also observed in the frames before and after:
    the summed frames around them all saw the dopant there, so it held the site in that frame
    itself (an observation at the edge of a run may be a frame the dopant had already left, or
    not yet reached). All observations when fewer than ``least`` are held."""
    key = set(zip(frames.tolist(), sites.tolist()))
    keep = np.array([(f - 1, s) in key and (f + 1, s) in key for f, s in zip(frames.tolist(), sites.tolist())], bool)
    if keep.sum() < least:
        return frames, sites
    return frames[keep], sites[keep]


def _complete_sites(sites, is_dopant, bond_px, seen=None, min_count=2):
    """The host sites, with those a moving dopant hides in the mean frame put back.

    A column of the mean frame is a dopant's when the network called it one there, or when it
    saw a dopant within 0.3 bond of it in at least ``min_count`` of the summed frames (``seen``,
    px): a dopant that spends part of the movie on a column can leave it looking like a host
    column in the mean. A dopant column near a site of the lattice fitted to the host columns is
    moved onto it (a dopant that moved between neighbouring sites leaves a blurred column between
    them, pulled a few px from either). A dopant that spends much of the movie between two sites
    (a 4-fold Si in graphene) shows in the mean frame as one bright column off the lattice, and
    the sites under it as none. Such a column is dropped (the dopant's places come back from the
    summed frames) and the lattice sites within 1.2 bonds of it that hold no column are added, from
    the lattice fitted to the host columns. Returned unchanged when no lattice can be fitted.
    """
    from .chem.sites import NEIGHBOUR_CELLS, fit_lattice

    is_dopant = np.asarray(is_dopant, bool)
    if seen is not None and len(seen) and len(sites):
        is_dopant = is_dopant | (cKDTree(np.asarray(seen, np.float64).reshape(-1, 2)).query_ball_point(
            sites, 0.3 * bond_px, return_length=True) >= min_count)
    fit = fit_lattice(sites, ~is_dopant, bond_px) if is_dopant.any() else None
    if fit is None:
        return sites
    dop = np.flatnonzero(is_dopant)
    cells, sub, at = fit.snap(sites[dop])
    off = np.hypot(*(at - sites[dop]).T) > 0.3 * fit.bond
    sites = sites.copy()
    sites[dop[~off]] = at[~off]      # a dopant that moved between sites blurs its column: the site itself
    if not off.any():
        return sites
    cand = np.vstack([fit.position(np.vstack([c, c + NEIGHBOUR_CELLS[int(k)]]), np.r_[k, np.full(3, 1 - k)])
                      for c, k in zip(cells[off], sub[off])])
    kept = np.delete(sites, dop[off], axis=0)
    cand = cand[cKDTree(sites[dop[off]]).query(cand)[0] < 1.2 * fit.bond]
    if len(kept):
        cand = cand[cKDTree(kept).query(cand)[0] > 0.3 * fit.bond]
    if len(cand) > 1:             # one site per place (two hidden columns may name the same site)
        lab = fcluster(linkage(cand, "single"), 0.3 * fit.bond, "distance")
        cand = np.array([cand[lab == v].mean(axis=0) for v in np.unique(lab)])
    return np.vstack([kept, cand.reshape(-1, 2)])


def _between(sites, seeds, spacing, existing):
    """Midpoints between each seed site and its neighbours (within 1.2 spacing), away from ``existing``."""
    if len(seeds) == 0:
        return np.zeros((0, 2))
    tree = cKDTree(sites)
    pts = [0.5 * (sites[a] + sites[b]) for a in seeds for b in tree.query_ball_point(sites[a], 1.2 * spacing)
           if b != a and np.hypot(*(sites[a] - sites[b])) > 0.6 * spacing]
    if not pts:
        return np.zeros((0, 2))
    pts = np.unique(np.round(np.array(pts), 3), axis=0)
    return pts[cKDTree(existing).query(pts)[0] > 0.25 * spacing]


def _displaced(places, sites, is_host, spacing):
    """The host columns a dopant at each of ``places`` displaces (those within 0.6 spacing of it),
    as :func:`stemflow.occupancy.occupancy`'s ``profiles``: index → (sites, None, all True). The
    places are fitted as columns of their own, so no weights are needed."""
    tree = cKDTree(sites)
    out = {}
    for k, p in enumerate(places):
        near = np.array(tree.query_ball_point(p, 0.6 * spacing), np.int64)
        near = near[is_host[near]] if len(near) else near
        out[k] = (near, None, np.ones(len(near), bool))
    return out


def _extra_sites(points, radius, min_count):
    """Centres of clusters (average linkage within ``radius`` px) of at least ``min_count`` points."""
    if len(points) < max(min_count, 1):
        return np.zeros((0, 2))
    lab = fcluster(linkage(points, "average"), radius, "distance") if len(points) > 1 else np.ones(1, int)
    out = [points[lab == v].mean(axis=0) for v in np.unique(lab) if (lab == v).sum() >= min_count]
    return np.array(out).reshape(-1, 2)

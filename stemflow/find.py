"""``find_atoms``: image(s) in, atoms table out — the public entry point of the atom finder.

``find_atoms`` is three public steps, run a batch of frames at a time:

1. :func:`predict` — each frame resampled to the network's sampling, normalised and turned into
   per-pixel class probabilities (and sub-pixel offsets): a :class:`ClassMaps`;
2. :func:`atoms_from_maps` — the blobs of those maps become rows (:func:`stemflow.locate`),
   positions mapped back to the input's pixels, optionally refined on the image
   (:func:`stemflow.refine.refine_atoms`); on amorphous supports the heavy atoms come from a
   matched filter instead (:mod:`stemflow.chem.heavy`);
3. optionally :func:`stemflow.identify` (elements, sites, bonds, defects).

Pure numpy/torch: :mod:`stemflow.parallel` composes the same steps over chunks of frames.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from .errors import InputError, StemflowWarning
from .locating import locate
from .nn.weights import Model, load_model
from .preprocess import normalize, resample, to_input_coords
from .refine import refine_atoms
from .spacing import check_calibration
from .tables import ATOMS, LATTICES

__all__ = ["find_atoms", "FindOptions", "predict", "atoms_from_maps", "ClassMaps", "atoms_table", "warn_unrecognised", "warn_no_host",
           "warn_crystal", "AMBIGUOUS_SHARE_LIMIT",
           "FLIPS", "AUTO_FLIPS"]

#: Starting width (standard deviation, nm) of a column for the refinement: a 1.1 Å FWHM probe.
_PROBE_SIGMA_NM = 0.045
#: The network's localisation error per axis, ``(floor in model px, slope, inflation)``:
#: σ_net² = floor² + (slope σ_fit)², and the fit's stated error inflated by ``inflation``;
#: chosen on calibration frames by ``benchmarks/localisation.py``.
_NET_ERROR = (0.075, 0.5, 2.0)
#: The flips and turns of a frame whose sub-pixel offsets ``predict(..., flips=n)`` averages, as
#: (transpose, flip rows, flip columns) applied in that order: 1 the frame itself, 2 with its
#: half-turn, 4 with its two mirror images, 8 the whole symmetry group of the square.
FLIPS = {1: ((0, 0, 0),), 2: ((0, 0, 0), (0, 1, 1)),
         4: ((0, 0, 0), (0, 1, 1), (0, 1, 0), (0, 0, 1)),
         8: ((0, 0, 0), (0, 1, 1), (0, 1, 0), (0, 0, 1), (1, 0, 0), (1, 1, 1), (1, 1, 0), (1, 0, 1))}


#: Network passes of ``flips=None`` (the default of :func:`find_atoms`, :class:`FindOptions`,
#: ``stemflow find`` and ``stemflow run``) on a crystalline lattice with a model that has
#: sub-pixel offsets: the frame, its half-turn and its two mirror images. On the real Si-doped
#: graphene dev frames the labelled C come 13.6 → 12.1 pm near with Si recall, precision and
#: defect type within one complex of one pass; on simulated frames the RMSE falls 21–35 %; for
#: about 2.3 times the time of ``find_atoms`` without chemistry, 1.25 times with its default chemistry
#: (``benchmarks/results/flips.md``).
AUTO_FLIPS = 4


def _check_flips(flips) -> int | None:
    if flips is None:
        return None
    if isinstance(flips, bool) or not isinstance(flips, (int, np.integer)) or int(flips) not in FLIPS:
        raise InputError(f"flips must be 1, 2, 4 or 8 (network passes whose sub-pixel offsets are averaged), "
                         f"or None for the default; got {flips!r}")
    return int(flips)


def _offsets_over_flips(net: Model, norm: np.ndarray, offsets: np.ndarray, flips: int, tile: int,
                        batch_size: int, fg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The network's sub-pixel offsets (n, 2, y, x) and foreground probability (n, y, x) averaged
    over ``FLIPS[flips]`` of the frames ``norm`` (n, y, x): each flipped pass mapped back (its maps
    flipped back, the offset vectors turned with them). ``offsets`` and ``fg`` are the pass of the
    frames themselves."""
    total = offsets.astype(np.float64)
    fg_total = fg.astype(np.float64)
    views = {}
    for t, fy, fx in FLIPS[flips][1:]:
        x = np.swapaxes(norm, -1, -2) if t else norm
        x = x[..., ::-1, :] if fy else x
        x = x[..., :, ::-1] if fx else x
        views[(t, fy, fx)] = x
    # With fewer frames than a batch, flipped frames of one shape share a call (the half-turn and
    # mirrors keep the frame's shape; the transposes of a frame that is not square do not), as
    # many as fill ``batch_size`` frames, so that a pass holds no more than a batch.
    n0 = len(norm)
    per_call = max(1, batch_size // n0)
    by_shape: dict = {}
    for key, x in views.items():
        by_shape.setdefault(x.shape, []).append(key)
    calls = [keys[i:i + per_call] for keys in by_shape.values() for i in range(0, len(keys), per_call)]
    for keys in calls:
        pr_all, o_all = net.maps(np.ascontiguousarray(np.concatenate([views[k] for k in keys])), tile=tile,
                                 batch_size=batch_size)
        for j, (t, fy, fx) in enumerate(keys):
            pr, o = pr_all[j * n0:(j + 1) * n0], o_all[j * n0:(j + 1) * n0].astype(np.float64)

            def back(m):      # the maps flipped back, in the reverse order of the flips
                m = m[..., :, ::-1] if fx else m
                m = m[..., ::-1, :] if fy else m
                return np.swapaxes(m, -1, -2) if t else m

            fg_total += back(1.0 - pr[:, 0].astype(np.float64))
            # the offset vectors turn with the maps: a mirror negates one component, a transpose
            # swaps them (channel 0 is dy, 1 is dx)
            sign = np.array([-1.0 if fy else 1.0, -1.0 if fx else 1.0])[:, None, None]
            o = back(o * sign)
            total += o[:, ::-1] if t else o
    n = len(FLIPS[flips])
    return (total / n).astype(np.float32), (fg_total / n).astype(np.float32)



@functools.lru_cache(maxsize=4)
def _cached_model(name: str) -> Model:
    return load_model(name)


def _get_model(model) -> Model:
    if model is None:
        return _cached_model("default")
    if isinstance(model, Model):
        return model
    return _cached_model(str(model))


def _frames_and_calibration(image, pixel_size):
    """(n, y, x) float32 array, pixel size (nm/px), whether the input was a stack."""
    if isinstance(image, xr.DataArray):
        if pixel_size is None:
            pixel_size = image.attrs.get("pixel_size")
        dims = image.dims
        if dims not in (("y", "x"), ("frame", "y", "x")):
            raise InputError(f"find_atoms takes images with dims (y, x) or (frame, y, x); got {dims}. For 4D-STEM "
                             "make an image first (a virtual detector), or rename/transpose the dims")
        image = image.values
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise InputError(f"find_atoms takes a 2-D image or a (frame, y, x) stack; got shape {arr.shape}")
    if arr.size == 0 or min(arr.shape[-2:]) == 0:
        raise InputError(f"the image is empty (shape {arr.shape})")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"image dtype {arr.dtype} is not real numbers; convert it (np.abs for complex data)")
    if pixel_size is None:
        raise InputError("the pixel size is unknown: pass pixel_size= in nm/px (e.g. 0.01 for 10 pm/px), or "
                         "open the data with stemflow.open_stem(..., pixel_size=...); the network needs it to "
                         "see atoms at the sampling it was trained at")
    pixel_size = float(pixel_size)
    if not np.isfinite(pixel_size) or pixel_size <= 0:
        raise InputError(f"pixel_size must be a positive number of nm/px; got {pixel_size}")
    stack = arr.ndim == 3
    return (arr if stack else arr[None]).astype(np.float32, copy=False), pixel_size, stack


#: Share of a frame's pixels whose foreground probability lies between 0.2 and 0.8 above which
#: the frame looks unlike anything the model knows. Simulated test frames of every lattice and
#: dose give 0.016–0.048, real graphene frames 0.05–0.26 (the most contaminated), pure noise
#: 0.45–0.51 (measured with the bundled model; see docs/finder.md).
AMBIGUOUS_SHARE_LIMIT = 0.3


def warn_unrecognised(ambiguous, stack: bool = True, first_frame: int = 0) -> None:
    """Warn about frames the network cannot make sense of (noise, another modality, a wrong
    pixel size): those whose share of ambiguous pixels (:attr:`ClassMaps.ambiguous_share`)
    exceeds :data:`AMBIGUOUS_SHARE_LIMIT`. ``first_frame`` numbers the frames in the message.

    Parameters
    ----------
    ambiguous : sequence of float
        Share of ambiguous pixels of each frame, 0–1 (``df.attrs['ambiguous_share']``).
    stack : bool
        The frames are a stack (the message names them) rather than one image ("the frame").
    first_frame : int
        Frame number of ``ambiguous[0]``.

    Returns
    -------
    None
        Issues one :class:`~stemflow.errors.StemflowWarning` when any frame exceeds the limit,
        nothing otherwise.

    Examples
    --------
    >>> import warnings
    >>> from stemflow.find import warn_unrecognised
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_unrecognised([0.02, 0.6, 0.01], first_frame=10)
    >>> len(caught), str(caught[0].message).split(" look")[0]
    (1, 'frame(s) [11]')
    """
    bad = [first_frame + k for k, v in enumerate(ambiguous) if v > AMBIGUOUS_SHARE_LIMIT]
    if bad:
        import warnings

        from .errors import StemflowWarning

        where = f"frame(s) {bad[:10]}{' …' if len(bad) > 10 else ''}" if stack else "the frame"
        worst = max(ambiguous[k - first_frame] for k in bad)
        movie = (" If they are low-dose frames of one area, find them together: stemflow.find_atoms_movie "
                 "(stemflow.lowdose.low_dose_check tells whether they are dose-limited)."
                 if stack and len(ambiguous) >= 5 else "")
        verb = "looks" if where == "the frame" else "look"
        warnings.warn(f"{where} {verb} unlike anything the model knows: up to {worst:.0%} of the pixels are "
                      f"ambiguous (simulated frames: under 5 %); check the pixel size and that this is an "
                      f"atomic-resolution HAADF/ADF image, or fine-tune with `stemflow adapt`.{movie} The "
                      f"per-frame share is in df.attrs['ambiguous_share']", StemflowWarning, stacklevel=3)


#: Least atom rows (lattice and dopant) in a frame for :func:`warn_no_host` to judge it, and the
#: share of them that must be host columns: real graphene frames hold 0.97–1 (a few Si among
#: hundreds of C), heavy atoms on an amorphous support found as "graphene" about 0.
NO_HOST_MIN_ROWS = 10
NO_HOST_SHARE = 0.2


def _frames_named(frames, stack: bool, first_frame: int) -> str:
    """How a warning names the frames it is about: up to ten frame numbers, or "the image"."""
    if not stack:
        return "the image"
    return f"frame(s) {[int(f) + first_frame for f in frames[:10]]}{' …' if len(frames) > 10 else ''}"


def warn_no_host(atoms: pd.DataFrame, lattice: str, stack: bool = True, first_frame: int = 0) -> None:
    """Warn about frames of a crystalline ``lattice`` in which the network found bright blobs but
    hardly any host columns: there is no host lattice for them to be dopants in (single heavy
    atoms on an amorphous support asked for as graphene, or another material).

    Parameters
    ----------
    atoms : DataFrame
        The network's table (``label``; ``frame`` for a stack), before the chemistry relabels
        anything.
    lattice : str
        The lattice asked for; ``"amorphous"`` is never judged.
    stack : bool
        The frames are a stack (the message names them) rather than one image.
    first_frame : int
        Frame number of the table's frame 0 in the message.

    Returns
    -------
    None
        Issues one :class:`~stemflow.errors.StemflowWarning` when a frame has at least
        :data:`NO_HOST_MIN_ROWS` atom rows of which under :data:`NO_HOST_SHARE` are ``lattice``.

    Examples
    --------
    >>> import warnings, pandas as pd
    >>> t = pd.DataFrame({"label": ["dopant"] * 30 + ["lattice"] * 2})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_no_host(t, "graphene", stack=False)
    >>> "lattice='amorphous'" in str(caught[0].message)
    True
    """
    if lattice == "amorphous" or not len(atoms):
        return
    lab = atoms["label"].astype(str)
    frame = atoms["frame"].to_numpy() if "frame" in atoms.columns else np.zeros(len(atoms), np.int64)
    host = pd.Series((lab == "lattice").to_numpy()).groupby(frame).sum()
    both = pd.Series(lab.isin(["lattice", "dopant"]).to_numpy()).groupby(frame).sum()
    bad = both.index[(both >= NO_HOST_MIN_ROWS) & (host < NO_HOST_SHARE * both)]
    if len(bad) == 0:
        return
    f0 = int(bad[0])
    where = _frames_named(bad, stack, first_frame)
    n_host = int(host[f0])
    warnings.warn(f"{where}: the network found {int(both[f0]) - n_host} bright blobs but {n_host} {lattice} "
                  f"column{'' if n_host == 1 else 's'}{' (first such frame)' if stack else ''}: there is no {lattice} lattice for them to be "
                  "dopants in. Single heavy atoms on an amorphous support: pass lattice='amorphous'; otherwise "
                  "check lattice= and the pixel size", StemflowWarning, stacklevel=3)


#: Share of a frame's rows the chemistry could place on no site of the lattice asked for (``label``
#: ``unknown``) from which :func:`warn_unplaced` speaks: the 61 real Si-graphene dev frames hold at
#: most 0.055, simulated and multislice frames 0, a real Au-particle frame asked for as graphene
#: 0.71 (``benchmarks/calibration_check.py``).
UNPLACED_SHARE = 0.3


def warn_unplaced(atoms: pd.DataFrame, lattice: str, stack: bool = True, first_frame: int = 0) -> None:
    """Warn about frames most of whose columns fit no site of the crystalline ``lattice`` asked for:
    the chemistry labels them ``unknown`` (off the fitted lattice, on vacuum, or failing the dopant
    checks), which a frame of that lattice seldom does. The frame may hold another crystal or a
    particle, an amorphous support, or much vacuum.

    Parameters
    ----------
    atoms : DataFrame
        The identified table (``label``; ``frame`` for a stack).
    lattice : str
        The lattice asked for; ``"amorphous"`` is never judged.
    stack : bool
        The frames are a stack (the message names them) rather than one image.
    first_frame : int
        Frame number of the table's frame 0 in the message.

    Returns
    -------
    None
        Issues one :class:`~stemflow.errors.StemflowWarning` when a frame has at least
        :data:`NO_HOST_MIN_ROWS` rows of which :data:`UNPLACED_SHARE` or more are ``unknown``.

    Examples
    --------
    >>> import warnings, pandas as pd
    >>> t = pd.DataFrame({"label": ["unknown"] * 30 + ["lattice"] * 20})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_unplaced(t, "graphene", stack=False)
    >>> str(caught[0].message)[:60]
    'the image: 60% of the columns found fit no site of the graph'
    """
    if lattice == "amorphous" or not len(atoms) or "label" not in atoms.columns:
        return
    frame = atoms["frame"].to_numpy() if "frame" in atoms.columns else np.zeros(len(atoms), np.int64)
    unknown = pd.Series((atoms["label"].astype(str) == "unknown").to_numpy()).groupby(frame)
    rows, share = unknown.size(), unknown.mean()
    bad = share.index[(rows >= NO_HOST_MIN_ROWS) & (share >= UNPLACED_SHARE)]
    if len(bad) == 0:
        return
    where = _frames_named(bad, stack, first_frame)
    warnings.warn(f"{where}: {share[bad[0]]:.0%} of the columns found fit no site of the {lattice} lattice "
                  f"(label 'unknown'{'; first such frame' if stack else ''}): the frame may hold another crystal "
                  "or a particle, an amorphous support (single heavy atoms: pass lattice='amorphous') or much "
                  "vacuum; check lattice= and the pixel size", StemflowWarning, stacklevel=3)


def warn_crystal(frame, pixel_size: float, lattice: str, where: str = "the image") -> None:
    """Warn when a frame asked for as ``amorphous`` holds a crystal: lattice planes 0.1–0.45 nm
    apart standing out by at least :data:`stemflow.spacing.CRYSTAL_PROMINENCE` in some ~5 nm of
    it (:func:`stemflow.spacing.crystal_order`). The heavy-atom finder would take the crystal's
    bright columns for single atoms on a support.

    Parameters
    ----------
    frame : ndarray (y, x)
        One frame (the first of a stack).
    pixel_size : float
        nm/px.
    lattice : str
        The lattice asked for; only ``"amorphous"`` is judged.
    where : str
        How the message names the frame.

    Returns
    -------
    None
        Issues one :class:`~stemflow.errors.StemflowWarning` when the frame holds a crystal.

    Examples
    --------
    >>> import warnings
    >>> from stemflow.simulate import simulate_image
    >>> img = simulate_image("graphene", 256, pixel_size=0.02, seed=0).image
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_crystal(img, 0.02, "amorphous")
    >>> "crystal" in str(caught[0].message)
    True
    """
    if lattice != "amorphous":
        return
    from .spacing import CRYSTAL_PROMINENCE, crystal_order

    c = crystal_order(frame, pixel_size)
    if c["prominence"] < CRYSTAL_PROMINENCE:
        return
    import warnings

    from .errors import StemflowWarning

    y, x = c["yx"]
    warnings.warn(f"{where} holds a crystal: lattice planes {c['spacing_nm']:.3f} nm apart, {c['prominence']:.0f}× "
                  f"above the smooth spectrum around px ({y:.0f}, {x:.0f}) (an amorphous support: under "
                  f"{CRYSTAL_PROMINENCE:.0f}). lattice='amorphous' takes the bright columns of a crystal (a particle, "
                  "a crystalline support) for single heavy atoms: there the rows are not single atoms. For a 2-D "
                  "crystal pass its lattice", StemflowWarning, stacklevel=3)


def _heavy_atoms(labels: list, frame: np.ndarray, pixel_size: float, elements: tuple | None = None) -> pd.DataFrame:
    """Heavy atoms of one frame on an amorphous support (input px), instead of the network's blobs
    (``labels``: the categories of ``label``, as :func:`stemflow.locating` gives them).

    The support is background, whatever texture of it the network reads as columns; a heavy atom
    is a point source significant against the *local* support and noise, ≥ ``HEAVY_SIGNIFICANCE``
    σ (:func:`stemflow.chem.heavy.find_heavy_atoms`), one row per atom. On real frames (Pt on
    carbon nitride) the network's own dopants add no atom the matched filter misses, and miss
    four in ten on a bright, noisy support (``benchmarks/real_data.py``). ``prob`` of a row is the
    chance that it is a heavy atom, from its significance (:func:`stemflow.chem.heavy.heavy_atom_prob`,
    fitted on real Pt frames: the network's own foreground probability says nothing here, expected
    calibration error 0.30 on them), ``intensity`` the frame smoothed over the probe.

    With ``elements`` (symbols, light to heavy) the atoms are named by Z-contrast
    (:func:`stemflow.chem.heavy.name_heavy_atoms` over their integrated excess): ``element``,
    ``element_prob`` and ``excess`` (counts over the support, image units) are added. With
    several elements, the lighter ones are a population of their own, so the split that drops a
    lower population of maxima as support clusters is off."""
    from .chem.heavy import integrated_excess, find_heavy_atoms, heavy_atom_prob, name_heavy_atoms

    out = find_heavy_atoms(frame, pixel_size, populations=not elements or len(elements) == 1)
    dropped, excess = out.attrs.pop("lower_population", 0), out.attrs.pop("lower_population_excess", np.nan)
    if not elements and dropped >= LOWER_POPULATION_HINT and excess >= LOWER_POPULATION_EXCESS:
        warnings.warn("a second, fainter population of significant round spots was taken for clusters of the "
                      "support's own light atoms and left out; if the support also carries a lighter heavy "
                      "element (Fe beside Pt, say), pass elements=('Fe', 'Pt') to keep and name both",
                      StemflowWarning, stacklevel=2)
    h, w = frame.shape
    smooth = ndimage.gaussian_filter(np.asarray(frame, np.float64), max(0.05 / pixel_size, 0.5))
    yi = np.clip(np.rint(out["y"].to_numpy()).astype(int), 0, h - 1)
    xi = np.clip(np.rint(out["x"].to_numpy()).astype(int), 0, w - 1)
    out = out.assign(label=pd.Categorical(["dopant"] * len(out), categories=labels),
                     prob=heavy_atom_prob(out["significance"]).astype(np.float32),
                     intensity=smooth[yi, xi].astype(np.float32),
                     significance=out["significance"].astype(np.float32))
    if elements:
        excess = integrated_excess(frame, out["y"].to_numpy(), out["x"].to_numpy(), pixel_size)
        element, eprob = name_heavy_atoms(excess, elements)
        out = out.assign(element=pd.Categorical(element, categories=list(elements) + [""]),
                         element_prob=eprob.astype(np.float32), excess=excess.astype(np.float32))
    return out


@dataclass(frozen=True)
class FindOptions:
    """How frames become atoms: one object for the API, the command line, the Dask workers and a
    run's manifest.

    Attributes
    ----------
    lattice : str
        ``"graphene"``, ``"ws2"``, ``"mos2"`` or ``"amorphous"`` (:data:`stemflow.tables.LATTICES`).
    threshold : float
        Foreground probability above which a pixel belongs to a blob, 0 < threshold < 1.
    refine : bool
        Refine centres on the image (:func:`stemflow.refine.refine_atoms`).
    identify : bool or None
        Chemical identification (:func:`stemflow.identify`); None: on for crystalline lattices.
    lattice_prior : bool
        Pull regular columns towards the fitted lattice; implies ``refine`` and ``identify``.
    batch_size : int
        Frames per network pass (≥ 1).
    tile : int
        Largest side of one network pass, px on the network's grid (≥ 64).
    low_dose : bool
        Find the atoms of a movie with all its frames together
        (:func:`stemflow.find_atoms_movie`); no ``refine`` or ``lattice_prior``.
    window : int
        With ``low_dose``: frames summed on each side for the network to see the dopants (≥ 0).
    flips : int or None
        Network passes (1, 2, 4 or 8) whose sub-pixel offsets are averaged (:func:`predict`);
        None: :data:`AUTO_FLIPS` on crystalline lattices, one pass with ``amorphous``,
        ``low_dose`` or ``refine`` (see :attr:`network_flips`).
    elements : tuple of str or None
        With ``amorphous``: the elements the heavy atoms may be, named by Z-contrast
        (:func:`stemflow.chem.heavy.name_heavy_atoms`); held light to heavy. None: not named.

    Raises
    ------
    InputError
        A value out of range; the message names it and what is allowed.

    Examples
    --------
    >>> from stemflow.find import FindOptions
    >>> FindOptions(lattice="ws2", lattice_prior=True).refine
    True
    >>> FindOptions(lattice="amorphous").identify
    False
    """

    lattice: str = "graphene"
    threshold: float = 0.5
    refine: bool = False
    identify: bool | None = None
    lattice_prior: bool = False
    batch_size: int = 4
    tile: int = 1024
    low_dose: bool = False
    window: int = 2
    flips: int | None = None
    elements: tuple | None = None

    def __post_init__(self):
        if self.lattice not in LATTICES:
            raise InputError(f"unknown lattice {self.lattice!r}; known lattices: {', '.join(LATTICES)}")
        try:
            threshold = float(self.threshold)
        except (TypeError, ValueError):
            threshold = float("nan")
        if not 0.0 < threshold < 1.0:
            raise InputError(f"threshold must lie between 0 and 1 (a foreground probability); got {self.threshold!r}")
        for name, least in (("batch_size", 1), ("tile", 64)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
                unit = "frames" if name == "batch_size" else "px on the network's grid"
                raise InputError(f"{name} must be a whole number ≥ {least} ({unit}); got {v!r}")
        identify = self.lattice != "amorphous" if self.identify is None else bool(self.identify)
        if self.lattice_prior and (self.lattice == "amorphous" or not identify):
            raise InputError("lattice_prior=True needs a crystalline lattice (graphene, ws2, mos2) and "
                             "identify=True: the prior is the fitted lattice of the identification")
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "identify", identify)
        object.__setattr__(self, "refine", bool(self.refine) or bool(self.lattice_prior))
        object.__setattr__(self, "lattice_prior", bool(self.lattice_prior))
        object.__setattr__(self, "batch_size", int(self.batch_size))
        object.__setattr__(self, "tile", int(self.tile))
        object.__setattr__(self, "low_dose", bool(self.low_dose))
        object.__setattr__(self, "flips", _check_flips(self.flips))
        if self.flips not in (None, 1) and (self.lattice == "amorphous" or self.low_dose):
            raise InputError("flips average the network's sub-pixel offsets; "
                             + ("lattice='amorphous' takes its heavy atoms from a matched filter"
                                if self.lattice == "amorphous" else "low_dose=True fits every site itself")
                             + ": drop flips")
        object.__setattr__(self, "elements", _check_elements(self.elements, self.lattice))
        if self.low_dose:
            if self.lattice == "amorphous":
                raise InputError("low_dose=True follows dopants on a host lattice; lattice='amorphous' has none")
            if self.refine:
                raise InputError("low_dose=True fits every site's amplitude itself; drop refine and lattice_prior")
            w = self.window
            if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 0:
                raise InputError(f"window must be a whole number of frames ≥ 0; got {w!r}")
            object.__setattr__(self, "window", int(w))

    @property
    def network_flips(self) -> int | None:
        """``flips`` as :func:`predict` takes it: 1 with ``amorphous`` or ``low_dose`` (their
        positions come from the image) and, unless ``flips`` is given, with ``refine`` (its
        weighing of the network's centres against the Gaussian fit, ``_NET_ERROR``, is calibrated
        on one pass); else ``flips`` (None: :data:`AUTO_FLIPS` when the model has sub-pixel
        offsets)."""
        if self.lattice == "amorphous" or self.low_dose or (self.flips is None and self.refine):
            return 1
        return self.flips

    @property
    def passes(self) -> int:
        """Network passes whose offsets are averaged, ``flips`` resolved (for a model with
        sub-pixel offsets; a model without them makes one)."""
        f = self.network_flips
        return AUTO_FLIPS if f is None else f

    def manifest(self) -> dict:
        """The entries a run's manifest records (``batch_size`` is left out: it changes no result;
        ``lattice_prior`` only when set, ``flips`` (the passes) only when not 1 and ``elements``
        only when given, so that manifests of runs without them stay comparable)."""
        out = {"lattice": self.lattice, "threshold": self.threshold, "refine": self.refine,
               "identify": self.identify, "tile": self.tile}
        if self.lattice_prior:
            out["lattice_prior"] = True
        if self.low_dose:
            out.update(low_dose=True, window=self.window)
        if self.passes != 1:
            out["flips"] = self.passes
        if self.elements:
            out["elements"] = list(self.elements)
        return out


def _check_elements(elements, lattice: str) -> tuple | None:
    """``elements`` as :class:`FindOptions` holds it: known symbols, each once, light to heavy."""
    if elements is None:
        return None
    from .tables import ATOMIC_NUMBER

    els = [elements] if isinstance(elements, str) else list(elements)
    by_lower = {e.lower(): e for e in ATOMIC_NUMBER}
    els = [by_lower.get(str(e).lower(), e) for e in els]          # "pt" is Pt: symbols differ by case only
    if lattice != "amorphous":
        raise InputError("elements names the heavy atoms on an amorphous support (lattice='amorphous'); on a "
                         f"crystalline lattice ({lattice}) choose the dopant by intensity with identify_options="
                         "{'element_map': {'dopant': (...)}}")
    unknown = [e for e in els if e not in ATOMIC_NUMBER]
    if not els or unknown:
        raise InputError(f"elements must be element symbols such as ('Fe', 'Pt'); got {elements!r}"
                         + (f" (unknown: {unknown})" if unknown else ""))
    return tuple(sorted(set(map(str, els)), key=ATOMIC_NUMBER.get))


#: Fewest spots of a fainter population, left out as support clusters in a frame, for
#: :func:`find_atoms` to say so (and how to keep them when they are a lighter heavy element) ...
LOWER_POPULATION_HINT = 3
#: ... when they add at least this share of the kept heavy atoms' integrated excess (median over
#: each): half of what Fe adds beside Pt at Z^1.7 (0.15). Spots of the support's own texture add
#: about none (simulated thin films: −0.003 to 0.005), Fe beside Pt 0.15–0.16, Ru beside Pt 0.38.
LOWER_POPULATION_EXCESS = 0.075


@dataclass(frozen=True)
class ClassMaps:
    """What the network makes of a batch of frames (:func:`predict`), on its own sampling.

    Attributes
    ----------
    probabilities : ndarray of float32, shape (n, n_classes, y', x')
        Per-pixel class probabilities (softmax over ``classes``), on the network's grid.
    offsets : ndarray of float32, shape (n, 2, y', x'), or None
        Sub-pixel offsets (dy, dx) from each pixel to its atom's centre, network px; None for a
        model without them.
    classes : tuple of str
        Class names, background first (:data:`stemflow.tables.CLASSES`).
    factor : float
        Input px per network px (``pixel_size / model.pixel_size``).
    pixel_size : float
        nm/px of the input frames.
    model : str
        Name of the model.
    images : ndarray of float32, shape (n, y', x')
        The frames resampled to the network's grid (before normalisation), for intensities.
    weights : ndarray of float32, shape (n, y', x'), or None
        With ``flips`` > 1: the foreground probability averaged over the flipped passes, which
        weighs the pixels of each blob in its centre (:func:`stemflow.locate`); None otherwise.
    """

    probabilities: np.ndarray
    offsets: np.ndarray | None
    classes: tuple
    factor: float
    pixel_size: float
    model: str
    images: np.ndarray
    weights: np.ndarray | None = None

    @property
    def ambiguous_share(self) -> np.ndarray:
        """Per frame, the share of pixels whose foreground probability lies between 0.2 and 0.8."""
        fg = 1.0 - self.probabilities[:, 0]
        return ((fg > 0.2) & (fg < 0.8)).mean(axis=(1, 2))


def predict(frames, pixel_size: float, model=None, *, batch_size: int = 4, tile: int = 1024,
            flips: int | None = 1) -> ClassMaps:
    """Class probabilities of frames: resampled to the network's sampling, normalised, inferred.

    Parameters
    ----------
    frames : ndarray, shape (y, x) or (n, y, x)
        Images, any real dtype (counts).
    pixel_size : float
        nm/px of the frames.
    model : Model, str or Path, optional
        As for :func:`find_atoms` (default: the bundled model).
    batch_size : int
        Frames per network pass.
    tile : int
        Largest side of one network pass, px on the network's grid; larger frames are cut into
        tiles with a halo whose stitched maps equal a whole-frame pass.
    flips : {1, 2, 4, 8} or None
        Network passes whose sub-pixel offsets (and the foreground probability that weighs them,
        ``weights``) are averaged: the frames themselves and their half-turn (2), mirror images
        (4) and transposes (8) (:data:`FLIPS`), each mapped back. The probabilities are the
        frames' own pass whatever ``flips``; see :func:`find_atoms`. A model without offsets
        warns (:class:`StemflowWarning`) and makes one pass. None: :data:`AUTO_FLIPS` passes for
        a model with offsets, one (without a warning) for a model without. The default here is
        1; :func:`find_atoms` passes ``FindOptions.network_flips`` (None on crystalline lattices).

    Returns
    -------
    ClassMaps
        Probabilities and offsets on the network's grid, how to map back (``factor``) and, with
        ``flips`` > 1, the averaged foreground that weighs the offsets (``weights``).

    Raises
    ------
    InputError
        A frame smaller than 16 px a side on the network's grid; ``flips`` not 1, 2, 4 or 8.

    Examples
    --------
    >>> import stemflow
    >>> from stemflow.find import predict
    >>> sim = stemflow.simulate_image("graphene", 96, pixel_size=0.012, seed=0)
    >>> maps = predict(sim.image, 0.012)
    >>> maps.probabilities.shape[:2], maps.classes[0]
    ((1, 4), 'background')
    """
    flips = _check_flips(flips)
    net = _get_model(model)
    arr = np.asarray(frames, np.float32)
    arr = arr[None] if arr.ndim == 2 else arr
    factor = pixel_size / net.pixel_size
    def prepare(j: int):
        small = resample(arr[j], factor)
        return small, (normalize(small) if min(small.shape) >= 16 else None)

    smalls, norms = zip(*map_frames(prepare, len(arr)))
    if min(smalls[0].shape) < 16:
        raise InputError(f"the image is too small: {arr.shape[-2:]} px at {pixel_size} nm/px is "
                         f"{smalls[0].shape} px at the network's {net.pixel_size} nm/px; give at least "
                         f"{int(np.ceil(16 / factor))} px a side")
    norm = np.stack(norms)
    probs, offsets = net.maps(norm, tile=tile, batch_size=batch_size)
    if flips is None:
        flips = AUTO_FLIPS if offsets is not None else 1
    weights = None
    if flips > 1 and offsets is not None:
        offsets, weights = _offsets_over_flips(net, norm, offsets, flips, tile, batch_size, 1.0 - probs[:, 0])
    elif flips > 1:
        warnings.warn(f"the model {net.name!r} has no sub-pixel offsets (its centres are the blobs' centres of "
                      f"mass): flips={flips} changes nothing; leave it at 1", StemflowWarning, stacklevel=2)
    return ClassMaps(probs, offsets, tuple(net.classes), float(factor), float(pixel_size), net.name,
                     np.stack(smalls), weights)


def atoms_from_maps(maps: ClassMaps, frames, *, lattice: str = "graphene", threshold: float = 0.5,
                    refine: bool = False, keep_fit: bool = False, elements: tuple | None = None) -> pd.DataFrame:
    """The atoms of frames from their class maps, in the frames' pixels.

    Parameters
    ----------
    maps : ClassMaps
        :func:`predict` of ``frames``.
    frames : ndarray, shape (y, x) or (n, y, x)
        The same frames (input sampling), for intensities, refinement and heavy atoms.
    lattice : str
        ``"amorphous"`` takes heavy atoms from a matched filter on the frame
        (:mod:`stemflow.chem.heavy`) instead of the network's blobs.
    threshold : float
        Foreground probability above which a pixel belongs to a blob (:func:`stemflow.locate`).
    refine : bool
        Refine the centres on the frame (:func:`stemflow.refine.refine_atoms`); adds ``xy_error``.
    keep_fit : bool
        Keep the Gaussian fit's own centres (``y_fit``, ``x_fit``, ``fit_error``), for the
        lattice prior.
    elements : tuple of str, optional
        With ``amorphous``: the heavy atoms' candidate elements, light to heavy (see
        :class:`FindOptions`).

    Returns
    -------
    DataFrame
        ``frame`` (0 for the first of ``frames``), ``y``, ``x`` (px of the input), ``label``,
        ``prob``, ``intensity`` and, as asked, ``xy_error`` (px), ``y_fit``, ``x_fit``,
        ``fit_error`` (px), ``significance`` (σ, amorphous), ``element``, ``element_prob``,
        ``excess`` (amorphous with ``elements``).

    Examples
    --------
    >>> import stemflow
    >>> from stemflow.find import atoms_from_maps, predict
    >>> sim = stemflow.simulate_image("graphene", 96, pixel_size=0.012, seed=0)
    >>> atoms = atoms_from_maps(predict(sim.image, 0.012), sim.image)
    >>> list(atoms.columns[:3]), atoms.frame.unique().tolist()
    (['frame', 'y', 'x'], [0])
    """
    arr = np.asarray(frames, np.float32)
    arr = arr[None] if arr.ndim == 2 else arr
    if len(arr) != len(maps.probabilities):
        raise InputError(f"{len(arr)} frames but class maps of {len(maps.probabilities)}; pass the frames "
                         "the maps were predicted from")
    factor, pixel_size = maps.factor, maps.pixel_size

    def one(j: int) -> pd.DataFrame:
        frame, p = arr[j], maps.probabilities[j]
        if lattice == "amorphous":
            t = _heavy_atoms(list(maps.classes[1:]), frame, pixel_size, elements)
        else:
            t = locate(p, maps.images[j], classes=maps.classes, threshold=threshold,
                       offsets=None if maps.offsets is None else maps.offsets[j],
                       weights=None if maps.weights is None else maps.weights[j])
            t["y"] = to_input_coords(t["y"].to_numpy(), factor)
            t["x"] = to_input_coords(t["x"].to_numpy(), factor)
        if refine:
            floor, slope, inflation = _NET_ERROR
            net_px = pixel_size / factor
            t = refine_atoms(frame, t, _PROBE_SIGMA_NM / pixel_size,
                             net_error=(floor * net_px / pixel_size, slope, inflation), keep_fit=keep_fit)
        t.insert(0, "frame", np.int64(j))
        return t

    return pd.concat(map_frames(one, len(arr)), ignore_index=True)


def map_frames(fn, n: int) -> list:
    """``[fn(0), …, fn(n - 1)]``, the frames shared among up to ``torch.get_num_threads()``
    threads: the compute budget of this process (a Dask worker sets it to its own threads). The
    per-frame steps are NumPy/SciPy code that releases the GIL; results come back in order."""
    import torch

    threads = min(int(n), torch.get_num_threads())
    if threads <= 1:
        return [fn(j) for j in range(n)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads, thread_name_prefix="stemflow-frames") as pool:
        return list(pool.map(fn, range(n)))


def atoms_table(raw: pd.DataFrame, pixel_size: float, lattice: str, model: str) -> pd.DataFrame:
    """The atoms table of :func:`find_atoms` from the rows of :func:`atoms_from_maps`: ``y_nm``,
    ``x_nm`` added, the columns of :data:`stemflow.tables.ATOMS` first (``frame`` when ``raw`` has
    it) and then, when present, ``xy_error``, ``y_fit``, ``x_fit``, ``fit_error``,
    ``significance``, ``element``, ``element_prob``, ``excess``; the calibration in ``attrs``.

    Parameters
    ----------
    raw : DataFrame
        Rows of :func:`atoms_from_maps` (positions in px of the input).
    pixel_size : float
        nm/px.
    lattice, model : str
        Recorded in ``attrs``.

    Returns
    -------
    DataFrame

    Examples
    --------
    >>> import pandas as pd
    >>> raw = pd.DataFrame({"y": [2.0], "x": [4.0], "label": ["lattice"], "prob": [1.0], "intensity": [3.0],
    ...                     "area": [9]})
    >>> atoms_table(raw, 0.01, "graphene", "default")[["y_nm", "x_nm"]].to_numpy().tolist()
    [[0.02, 0.04]]
    """
    out = raw.copy()
    out["y_nm"] = out["y"] * pixel_size
    out["x_nm"] = out["x"] * pixel_size
    base = ATOMS.names if "frame" in out.columns else ATOMS.names[1:]
    cols = base + [c for c in ("xy_error", "y_fit", "x_fit", "fit_error", "significance", "element",
                               "element_prob", "excess") if c in out.columns]
    out = out[cols]
    out.attrs.update(pixel_size=pixel_size, lattice=lattice, model=model)
    return out


def find_atoms(image, pixel_size: float | None = None, lattice: str = "graphene", model=None, *,
               threshold: float = 0.5, refine: bool = False, border: float = 0.0,
               batch_size: int = 4, identify: bool | None = None,
               identify_options: dict | None = None, lattice_prior: bool = False,
               flips: int | None = None, elements=None) -> pd.DataFrame:
    """Find atoms, dopants and vacancies in STEM images with the fully convolutional network.

    Parameters
    ----------
    image : ndarray or xarray.DataArray
        One image (y, x) or a stack (frame, y, x); any real dtype (counts).
    pixel_size : float, optional
        Sampling, nm/px. Taken from a DataArray's ``attrs["pixel_size"]`` when not given;
        required otherwise.
    lattice : {"graphene", "ws2", "mos2", "amorphous"}
        What the specimen is; recorded in ``df.attrs`` and used by the chemical identification.
        ``amorphous``: heavy single atoms (Pt, Au, Ir, W …) on an amorphous or thick support;
        the support is background and only the heavy atoms come back (as ``dopant``), each
        with its ``significance`` (σ above the support's own fluctuation under a filter matched
        to the probe; rows under 4 σ are dropped, see :mod:`stemflow.chem.heavy`).
    model : Model, str or Path, optional
        A loaded :class:`~stemflow.nn.weights.Model`, a bundled model's name or a weights path.
        Default: the bundled ``"default"`` model (loaded once per process).
    threshold : float
        Foreground probability above which a pixel belongs to a blob.
    refine : bool
        Refine centres by fitting Gaussians to the image at its own sampling, weighed against
        the network's centres (:func:`stemflow.refine.refine_atoms`). Within 1 % of the network
        alone at 10⁴ e⁻/Å², better from 10⁵ up (dopants at 10⁶ e⁻/Å²: 2–3× smaller error;
        measured in ``docs/finder.md``). Costs about 5 ms per atom on one CPU core. Unless
        ``flips`` is given, it makes one network pass, the one its weighing is calibrated on,
        not the default four: those figures are against one pass, and four passes alone may do
        as well (compare ``benchmarks/results/localisation.md`` with ``flips.md``).
    border : float
        Drop atoms whose centre lies within this many input px of the frame edge.
    batch_size : int
        Frames per network pass.
    identify : bool, optional
        Add the chemical identification of :func:`stemflow.chem.identify` (``element``,
        ``count``, ``coordination``, ``site``, ``sublattice``, ``site_y``, ``site_x``,
        ``defect``, ``defect_id``, ``cluster``). Default: on for crystalline lattices
        (graphene, ws2, mos2), off for ``amorphous``. ``coordination`` is -1 within 0.15 nm of
        the frame edge, where neighbours may lie outside the frame.
    identify_options : dict, optional
        Keywords of :func:`stemflow.chem.identify` (e.g. ``classes=False``, ``cutoffs``).
    lattice_prior : bool
        Also move each regular lattice column towards its fitted lattice site by the
        empirical-Bayes weight that the frame's own scatter allows
        (:func:`stemflow.chem.lattice_prior`); implies ``refine`` and needs ``identify``.
        Dopants, vacancies, defects and the columns bonded to them are not pulled towards the
        lattice. On the held-out set at 10⁵ e⁻/Å² the RMSE falls from 0.24 to 0.09 px
        (graphene, 3.3 → 1.35 pm) and from 0.09 to 0.06 px (WS2); where columns really
        scatter it estimates how much and follows them (``benchmarks/results/lattice_prior.md``).
        The network's own centres are pulled towards the ideal lattice: use the fit's
        (``y_fit``, ``x_fit``: unbiased) for strain maps or bond lengths around defects.
    flips : {1, 2, 4, 8} or None
        Run the network on the frame and on its half-turn (2), mirror images (4) and transposes
        (8), and average the sub-pixel offsets that place each atom and the foreground
        probability that weighs them; the blobs, classes and ``prob`` come from the frame's own
        pass, so only positions change. Each centre carries an error that depends on where the
        column falls within the network's pixel, and turning the frame reverses it: on simulated
        graphene and WS2 at 10⁵ e⁻/Å² the RMSE falls by 14–24 % with 2, 21–35 % with 4 and
        25–46 % with 8, for about 1.4, 2.3 and 3.9 times the time of ``find_atoms`` without
        chemistry (``benchmarks/results/flips.md``, with the real dev frames). Default None:
        :data:`AUTO_FLIPS` (4) on crystalline lattices with a model that has offsets, one pass
        with ``amorphous`` (whose heavy atoms come from a matched filter on the image), with
        ``refine`` or ``lattice_prior`` (their weighing of the network's centres is calibrated on
        one pass) or with a model without offsets; ``flips=1`` is the fastest.
    elements : sequence of str, optional
        With ``lattice="amorphous"``: the elements the heavy atoms may be (``("Fe", "Pt")``),
        named by Z-contrast from the counts each adds over its support
        (:func:`stemflow.chem.heavy.name_heavy_atoms`: populations at the candidates' Z**1.7
        ratios, no reference needed). Adds ``element``, ``element_prob`` (its posterior) and
        ``excess`` (counts over the support, input units). A frame of one element is named
        after the heaviest candidate: give only the elements that are there.

    Returns
    -------
    DataFrame
        One row per atom or vacancy: ``frame`` (stacks only), ``y``, ``x`` (px of the input,
        sub-pixel, x = column), ``y_nm``, ``x_nm``, ``label`` (``lattice`` / ``dopant`` /
        ``vacancy``), ``prob`` (mean class probability of the blob), ``intensity`` (mean image
        value over the blob, input units); with ``refine`` ``xy_error`` (px, standard error per
        axis); with ``lattice_prior`` ``y_fit``, ``x_fit``, ``fit_error`` (px: the Gaussian fit
        alone) and ``prior_weight`` (see :func:`stemflow.chem.lattice_prior`).
        ``df.attrs`` holds ``pixel_size``, ``lattice``, ``model``, ``frame_shape`` ([height,
        width] px of a frame) and ``ambiguous_share`` (per frame: the share of pixels whose foreground probability is between 0.2 and 0.8; above
        0.3 the frame looks unlike anything the model knows and a :class:`StemflowWarning`
        says so — pure noise gives about 0.5, simulated frames under 0.05).

    Examples
    --------
    >>> from stemflow import find_atoms
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 256, pixel_size=0.012, seed=0)
    >>> atoms = find_atoms(sim.image, pixel_size=0.012)                  # doctest: +SKIP
    >>> atoms.label.value_counts()                                        # doctest: +SKIP
    """
    opts = FindOptions(lattice=lattice, threshold=threshold, refine=refine, identify=identify,
                       lattice_prior=lattice_prior, batch_size=batch_size, flips=flips, elements=elements)
    identify, refine = opts.identify, opts.refine
    frames, pixel_size, stack = _frames_and_calibration(image, pixel_size)
    check_calibration(frames[0], pixel_size, lattice, where="the first frame" if stack else "the image")
    warn_crystal(frames[0], pixel_size, lattice, where="the first frame" if stack else "the image")
    net = _get_model(model)
    tables = []
    ambiguous = []
    for i0 in range(0, len(frames), batch_size):       # a batch at a time: memory bounded by the batch
        block = frames[i0:i0 + batch_size]
        maps = predict(block, pixel_size, net, batch_size=batch_size, flips=opts.network_flips)
        ambiguous += [float(v) for v in maps.ambiguous_share]
        t = atoms_from_maps(maps, block, lattice=lattice, threshold=threshold, refine=refine,
                            keep_fit=lattice_prior, elements=opts.elements)
        t["frame"] += i0
        tables.append(t if stack else t.drop(columns="frame"))
    out = pd.concat(tables, ignore_index=True)
    h, w = frames.shape[-2:]
    if border > 0:
        keep = out.y.between(border, h - 1 - border) & out.x.between(border, w - 1 - border)
        out = out.loc[keep].reset_index(drop=True)
    out = atoms_table(out, pixel_size, lattice, net.name)
    warn_unrecognised(ambiguous, stack)
    warn_no_host(out, lattice, stack)
    if identify:
        from .chem import identify as chem_identify

        out = chem_identify(out, pixel_size, lattice, image=frames if stack else frames[0],
                            **(identify_options or {}))
        warn_unplaced(out, lattice, stack)
        if lattice_prior:
            from .chem import lattice_prior as chem_prior

            out = chem_prior(out, pixel_size, lattice)
    out.attrs.update(pixel_size=pixel_size, lattice=lattice, model=net.name,
                     ambiguous_share=ambiguous if stack else ambiguous[0], frame_shape=[int(h), int(w)])
    return out

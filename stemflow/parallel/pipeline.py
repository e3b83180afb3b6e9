"""``run``: an input (movie, image, 4D-STEM scan or 5-D movie of scans) → a Parquet atoms table,
in parallel on a Dask cluster, resumably.

The unit of work is a *part*: a run of whole frames, by default one chunk of the input as
:func:`stemflow.open_stem` chunks it (~128 MB), so a task reads one chunk where the worker runs,
passes it through the network in batches and writes a small table. A 4D scan (one frame) is
first reduced to its virtual-detector image chunk by chunk on the cluster; a 5-D movie of scans
is reduced inside each part's task. Only a few numbers per part come back to the client.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import xarray as xr

from .. import rundir
from ..errors import InputError, StemflowWarning
from ..frames import frame_range
from . import output
from .cluster import connect, dashboard_link, task_resources
from .worker import ModelPlugin, ModelRef, model_ref, process_part, read_part

__all__ = ["run", "RunSummary", "plan_parts"]

FORMAT = "stemflow-run-1"


@dataclass
class RunSummary:
    """What a run did.

    Attributes
    ----------
    out : Path
        Output directory; the table is ``out / "atoms.parquet"``.
    parts : int
        Parts in the plan.
    computed, skipped : int
        Parts computed by this call, and parts already complete (from an earlier, interrupted run)
        whose input is unchanged.
    changed : int
        Parts that were complete but whose input changed since (their frames' digest differs
        from the one recorded with the part): computed again, counted in ``computed``.
    frames : int
        Frames in the plan.
    rows : int
        Rows of the whole table.
    labels : dict
        Rows per label over the parts computed now.
    seconds : float
        Wall time of the call, s.
    frames_per_second : float
        Frames computed now / wall time of the compute phase.
    workers : int
        Worker processes used (0 when nothing was left to compute).
    dashboard : str or None
        The Dask dashboard link, when it served the dashboard (checked by an HTTP GET).
    events : int or None
        Events found by the tracking step (None when it did not run).
    low_dose : bool
        Whether the parts were found with all their frames together (:func:`stemflow.find_atoms_movie`).
    low_dose_check : dict or None
        What decided it when ``low_dose`` was left to the run (:func:`stemflow.lowdose.low_dose_check`:
        ``dose_limited``, ``few_counts``, ``one_area``, ``low_dose``, ``single_share``, ``summed_share``,
        ``counts_per_nm2``, ``mismatch``, ``frames``), None when it was given or ruled out (amorphous
        lattice, ``refine``, ``save_probabilities``, under 5 frames).
    warnings : list of dict
        What the workers warned about the parts computed now, one entry per kind of warning
        (messages alike but for their numbers): ``message`` (the first part's) and ``parts`` (the
        part indices that said it), issued on the client as :class:`~stemflow.errors.StemflowWarning`.
        The run's manifest keeps them for every part, those of parts an earlier call computed
        included.
    """

    out: Path
    parts: int
    computed: int
    skipped: int
    frames: int
    rows: int
    labels: dict = field(default_factory=dict)
    changed: int = 0
    seconds: float = 0.0
    frames_per_second: float = float("nan")
    workers: int = 0
    dashboard: str | None = None
    events: int | None = None
    low_dose: bool = False
    low_dose_check: dict | None = None
    warnings: list = field(default_factory=list)

    @property
    def atoms_path(self) -> Path:
        return Path(self.out) / rundir.ATOMS_DIR

    def __str__(self) -> str:
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.labels.items())) or "none new"
        changed = f", {self.changed} of them because their input changed" if self.changed else ""
        return (f"{self.atoms_path}: {self.rows} rows from {self.frames} frames in {self.parts} parts "
                f"({self.computed} computed{changed}, "
                f"{self.skipped} already complete; {labels}); "
                f"{self.seconds:.1f} s, {self.frames_per_second:.2f} frames/s on {self.workers} worker(s)")


#: A number in a message (not the digits of a name such as Si1C3 or Fe1): what tells warnings of one kind apart.
_NUMBER = re.compile(r"(?<![A-Za-z_.\d])\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![A-Za-z_\d])")
#: Kinds of worker warning :func:`run` issues on the client one by one; the rest are counted in one.
SHOWN_WARNINGS = 5


def gather_warnings(stats) -> list[dict]:
    """The workers' warnings of a run, one entry per kind: messages that differ only in their
    numbers (frame indices, measured ratios) are one kind.

    Parameters
    ----------
    stats : list of dict
        What :func:`~stemflow.parallel.worker.process_part` returned for each part (``part``,
        ``warnings``).

    Returns
    -------
    list of dict
        ``message`` (as the first part that said it put it) and ``parts`` (sorted part indices),
        in the order first said.

    Examples
    --------
    >>> gather_warnings([{"part": 0, "warnings": ["frame 0: odd, 1.31×", "Si1C3 seen"]},
    ...                  {"part": 1, "warnings": ["frame 8: odd, 1.29×", "Si2C4 seen"]}])    # doctest: +NORMALIZE_WHITESPACE
    [{'message': 'frame 0: odd, 1.31×', 'parts': [0, 1]}, {'message': 'Si1C3 seen', 'parts': [0]},
     {'message': 'Si2C4 seen', 'parts': [1]}]
    """
    kinds: dict = {}
    for s in sorted(stats, key=lambda s: s["part"]):
        for m in s.get("warnings", ()):
            k = kinds.setdefault(_NUMBER.sub("#", m), {"message": m, "parts": []})
            if s["part"] not in k["parts"]:
                k["parts"].append(int(s["part"]))
    return list(kinds.values())


def _issue(kinds: list, computed: int) -> None:
    """The workers' warnings, issued where the run was started (see :func:`gather_warnings`)."""
    for k in kinds[:SHOWN_WARNINGS]:
        n = len(k["parts"])
        more = f" (and alike in {n - 1} more of the {computed} parts computed)" if n > 1 else ""
        warnings.warn(k["message"] + more, StemflowWarning, stacklevel=3)
    if len(kinds) > SHOWN_WARNINGS:
        warnings.warn(f"{len(kinds) - SHOWN_WARNINGS} more kind(s) of warning from the workers: see the run's "
                      "manifest ('warnings') or RunSummary.warnings", StemflowWarning, stacklevel=3)


def plan_parts(chunks, start: int, stop: int, frames_per_part: int | None = None) -> list[tuple[int, int]]:
    """Frame ranges ``[a, b)`` of the parts: chunk boundaries of the input clipped to
    ``[start, stop)``, each cut further to at most ``frames_per_part`` frames."""
    bounds = np.concatenate([[0], np.cumsum(chunks)]).astype(int)
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        a, b = max(a, start), min(b, stop)
        if b <= a:
            continue
        step = b - a if not frames_per_part else int(frames_per_part)
        parts += [(int(i), int(min(b, i + step))) for i in range(a, b, step)]
    return parts


def _open_input(input, pixel_size, dataset):
    from ..io import open_stem

    if isinstance(input, (str, os.PathLike)):
        da = open_stem(input, pixel_size=pixel_size, dataset=dataset, check_finite=False)
        return da, {"path": str(Path(input).resolve()), "dataset": dataset, "pixel_size": pixel_size}
    if isinstance(input, (np.ndarray, xr.DataArray)) or hasattr(input, "dask"):
        return open_stem(input, pixel_size=pixel_size, check_finite=False), None
    raise InputError(f"run takes a path (Zarr, HDF5, TIFF, .npy, ...), a DataArray or an array; got "
                     f"{type(input).__name__}")


def _fingerprint(path: str) -> str:
    """SHA-256 of a store's metadata files (names, sizes, contents) or of a file's size and mtime."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_file() and (f.name in (".zarray", ".zattrs", ".zgroup", "zarr.json", ".zmetadata")):
                h.update(str(f.relative_to(p)).encode())
                h.update(f.read_bytes())
    elif p.exists():
        st = p.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _identity(da, source) -> dict:
    ident = {"dims": list(da.dims), "shape": list(da.shape), "dtype": str(da.dtype),
             "pixel_size": da.attrs.get("pixel_size"), "k_pixel_size": da.attrs.get("k_pixel_size")}
    if source:
        ident.update(path=source["path"], dataset=source["dataset"], fingerprint=_fingerprint(source["path"]))
    else:
        from dask.base import tokenize

        ident["token"] = tokenize(da.data)
    return ident


def _detector_kwargs(detector, da) -> dict | None:
    """Keywords of ``virtual_image`` from ``detector`` (name, ``name:inner:outer``, dict or mask)."""
    if da.ndim < 4:
        if detector is not None:
            raise InputError(f"detector={detector!r} applies to 4D-STEM data only; this input has dims {da.dims}")
        return None
    if detector is None:
        if not da.attrs.get("k_pixel_size"):
            raise InputError("4D-STEM input without k_pixel_size (mrad/px): name the virtual detector with its angles "
                             "in detector px, e.g. detector='annular:20:30' (--detector annular:20:30)")
        detector = "haadf"
    if isinstance(detector, dict):
        return dict(detector)
    if isinstance(detector, str):
        name, *angles = detector.split(":")
        if len(angles) not in (0, 2):
            raise InputError(f"detector must be NAME or NAME:INNER:OUTER (e.g. haadf, adf:60:120); got {detector!r}")
        try:
            kw = {"detector": name, **({"inner": float(angles[0]), "outer": float(angles[1])} if angles else {})}
        except ValueError:
            raise InputError(f"detector angles must be numbers (mrad, or px when uncalibrated); got {detector!r}") from None
        return kw
    return {"detector": np.asarray(detector)}


def _json_detector(kw):
    if kw is None:
        return None
    out = dict(kw)
    if isinstance(out.get("detector"), np.ndarray):
        out["detector"] = "mask:" + hashlib.sha256(np.ascontiguousarray(out["detector"]).tobytes()).hexdigest()[:16]
    return out


def _card_of(ref: ModelRef) -> dict:
    import json

    if ref.card is not None:
        return ref.card
    return json.loads(Path(ref.path).with_suffix(".json").read_text())


def _prepare_probabilities(out: Path, n_frames: int, frame_shape, pixel_size: float, card: dict):
    import zarr

    factor = pixel_size / float(card["pixel_size"])
    # the grid stemflow.preprocess.resample makes: floor(n · factor) px a side (n when factor is 1)
    shape = tuple(n if abs(factor - 1) < 1e-9 else max(1, int(np.floor(n * factor + 1e-9))) for n in frame_shape)
    classes = list(card["classes"])
    path = out / rundir.PROBABILITIES
    if path.exists():
        arr = zarr.open_array(str(path), mode="r")
        if arr.shape == (n_frames, len(classes), *shape):
            return
    arr = zarr.create_array(str(path), shape=(n_frames, len(classes), *shape), chunks=(1, len(classes), *shape),
                            dtype="float16", fill_value=np.nan, overwrite=True,
                            dimension_names=["frame", "class", "y", "x"])
    arr.attrs.update(classes=classes, pixel_size=float(card["pixel_size"]), pixel_size_units="nm",
                     note="class probabilities on the network's grid (pixel_size nm/px); frames not computed are NaN")


def _part_rows(out: Path, index: int) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(rundir.part_path(out, index)).num_rows)


def _choose_low_dose(options, movie, pixel_size, model, progress):
    """``options`` with ``low_dose`` on when the movie's first frames are dose-limited, and the check
    (:func:`stemflow.lowdose.low_dose_check`; None when the options rule it out)."""
    from ..lowdose import CHECK_FRAMES, low_dose_advice, low_dose_check

    if options.lattice == "amorphous" or options.refine or options.flips not in (None, 1):
        return options, None
    try:
        first = np.asarray(movie.isel(frame=slice(0, CHECK_FRAMES)).values, np.float32)
    except Exception as exc:   # a damaged chunk: the workers name it (and the run records it) part by part
        if progress:
            print(f"stemflow: the first frames could not be read to check the dose ({type(exc).__name__}); "
                  "frames are judged one by one", file=sys.stderr)
        return options, None
    check = low_dose_check(first, pixel_size, lattice=options.lattice, model=model)
    if check["low_dose"]:
        options = replace(options, low_dose=True)
    advice = low_dose_advice(check)
    if advice and progress:
        print(f"stemflow: {advice}", file=sys.stderr)
    return options, check


def run(input, out, model=None, scheduler=None, frames=None, detector=None, save_probabilities=False,
        overwrite=False, progress=True, *, lattice="graphene", threshold=0.5, refine=False, pixel_size=None,
        dataset=None, frames_per_part=None, tile=1024, batch_size=4, client=None, n_workers=None,
        embed_model=False, on_part=None, track=True, track_options=None, identify=None,
        lattice_prior=False, verify_input=True, low_dose=None, window=2, flips=None, elements=None) -> RunSummary:
    """Find atoms in every frame of an input on a Dask cluster; write ``OUT/atoms.parquet``.

    Parameters
    ----------
    input : str, Path, xarray.DataArray or array
        A movie ``(frame, y, x)``, an image ``(y, x)``, a 4D-STEM scan ``(scan_y, scan_x, k_y, k_x)``
        or a 5-D ``(frame, scan_y, scan_x, k_y, k_x)``: anything :func:`stemflow.open_stem` opens.
        Paths are read by the workers themselves (chunk by chunk); in-memory data go through the
        scheduler.
    out : str or Path
        Output directory: ``atoms.parquet/`` (one file per part), ``manifest.json`` and, with
        ``save_probabilities``, ``probabilities.zarr``.
    model : str, Path or Model, optional
        Bundled name or ``NAME.pt`` path (default ``"default"``), or a loaded model (then sent as
        bytes). Loaded once per worker process, on its GPU when it has one.
    scheduler : str, optional
        Address of a running Dask scheduler; default ``$DASK_SCHEDULER_ADDRESS``, else a local
        cluster (one single-threaded worker process per core, or one worker per GPU).
    frames : str, slice or (int, int), optional
        ``"A:B"``: only frames A to B-1 (global indices are kept in ``frame``).
    detector : str, dict or ndarray, optional
        4D/5-D inputs: the virtual detector giving the image, ``"haadf"`` (default), ``"adf"``,
        ``"bf"``, ``"abf"``, ``"maadf"``, ``"NAME:INNER:OUTER"`` (mrad, or detector px when
        uncalibrated), a dict of :func:`~stemflow.parallel.virtual.virtual_image` keywords, or a mask.
    save_probabilities : bool
        Also write the class maps to ``probabilities.zarr`` (frame, class, y, x; float16, on the
        network's grid) in the same pass.
    overwrite : bool
        Recompute from scratch when ``out`` holds another run (or anything else).
    verify_input : bool
        On a rerun, read the input under every complete part again and compare its digest with
        the one the part was written with (a read, no inference); parts whose input changed are
        computed again. False trusts the parts (resume from metadata only).
    progress : bool
        Print the dashboard link and a progress bar (stderr).
    lattice, threshold, refine, batch_size
        As in :func:`stemflow.find_atoms`.
    pixel_size : float, optional
        nm/px; overrides the input's calibration (required when it has none).
    dataset : str, optional
        Array inside the file (see :func:`stemflow.open_stem`).
    frames_per_part : int, optional
        Cut the input's chunks into parts of at most this many frames (default: one part per chunk).
    tile : int
        Largest side of one network pass, px on the network's grid; larger frames are tiled with a
        halo of half the receptive field, stitched to equal a whole-frame pass.
    client : distributed.Client, optional
        Use this client (its cluster is left running); overrides ``scheduler``.
    n_workers : int, optional
        Workers of the local cluster (default one per core).
    embed_model : bool
        Send the weights' bytes to the workers (once each) instead of their path, for workers that
        do not share the file system.
    on_part : callable, optional
        Called with each completed part's statistics (dict: ``part``, ``frames``, ``rows``,
        ``seconds``, ``pid``, ``device``), on the client, as parts finish.
    track : bool
        For movies of more than one frame, then link the dopants and vacancies and write
        ``trajectories.parquet``, ``events.parquet``, ``drift.parquet``, ``mean_frame.npy`` and
        ``report.html`` (:func:`stemflow.results.track_run`, on the client).
    track_options : TrackOptions or dict, optional
        How to track (:class:`stemflow.tracking.TrackOptions`); checked before any frame is
        computed.
    identify : bool, optional
        Chemical identification on the workers (:func:`stemflow.chem.identify`: elements,
        occupancy, coordination, sites, defect complexes; the unsupervised classes are left out,
        ``cluster`` is -1). None (the default, as in :func:`stemflow.find_atoms`): on for the
        crystalline lattices, off for ``"amorphous"`` and for ``low_dose`` (one low-dose frame
        holds too few counts for the chemistry; the tracking counts coordination from the host
        columns around each dopant instead). It costs about 0.35 ms per atom on one core,
        several times the network's share (a 512² frame at 20 pm/px holds ~3,800 atoms): pass
        False when only positions and labels are wanted.
    lattice_prior : bool
        Move regular lattice columns towards their fitted sites as far as each frame's own scatter
        allows (:func:`stemflow.chem.lattice_prior`; implies ``refine`` and ``identify``; adds
        ``y_fit``, ``x_fit``, ``fit_error``, ``prior_weight``).
    low_dose : bool or None
        Movies too dim for single frames: each part is found with all its frames together
        (:func:`stemflow.find_atoms_movie`: frames registered from the images, a hidden Markov
        model over the dopants' sites), reading ``max(2·window + 1, 5)`` frames of context on each
        side when the workers read the input themselves. Not with ``refine``, ``lattice_prior``,
        ``flips`` other than None or 1, or ``save_probabilities``. None (the default): as the run already in ``out`` was made,
        when resuming one; otherwise decided on the client from the first frames of the range (:func:`stemflow.lowdose.low_dose_check`, a few network passes) for a
        movie of at least 5 frames on a crystalline lattice without those options: on when single
        frames are too dim to be read one by one, said on stderr (as is the option, for frames
        dose-limited but still readable); the summary's ``low_dose`` and ``low_dose_check`` tell
        what was chosen.
    window : int
        With ``low_dose``: frames summed on each side for the network to see the dopants.
    flips : {1, 2, 4, 8} or None
        Network passes whose sub-pixel offsets are averaged, as for :func:`stemflow.find_atoms`
        (positions only; None: :data:`stemflow.find.AUTO_FLIPS` on crystalline lattices, one
        pass for ``amorphous``, low-dose movies, ``refine`` and ``lattice_prior``; 1 is the
        fastest). None when resuming: as the run in ``out`` was made (one pass for runs whose
        manifest names none).
    elements : sequence of str, optional
        With ``lattice="amorphous"``: the heavy atoms' candidate elements, named by Z-contrast
        as :func:`stemflow.find_atoms` names them (adds ``element``, ``element_prob``, ``excess``).

    Returns
    -------
    RunSummary
        Parts computed and skipped, rows, frames/s. Read the table with
        :func:`stemflow.parallel.read_atoms` (columns: ``frame``, ``y``, ``x`` in px, ``y_nm``,
        ``x_nm`` in nm, ``label``, ``prob``, ``intensity``).

    Raises
    ------
    InputError
        Unopenable input, no pixel size, unknown lattice, bad ``frames`` or ``detector``, NaN or
        Inf in a frame (named).
    OutputMismatchError
        ``out`` holds a run with other settings, or other files (without ``overwrite``).
    ClusterError
        The scheduler does not answer.

    Notes
    -----
    Resumable: parts are written atomically, so rerunning the same call after an interruption
    computes only the missing parts. A worker that dies mid-run has its tasks rerun elsewhere; the
    table is the same as an undisturbed run's. Positions are px of the input and nm; ``frame`` is
    the input's frame index (0 for a single image or 4D scan).

    Examples
    --------
    >>> import stemflow
    >>> summary = stemflow.run("movie.zarr", out="run/", lattice="graphene")    # doctest: +SKIP
    >>> stemflow.open_run("run/").atoms().groupby("frame").size().head()         # doctest: +SKIP
    """
    from ..find import FindOptions
    from ..tracking.options import TrackOptions

    t_start = time.perf_counter()
    track_options = TrackOptions.from_keywords(track_options)
    options = FindOptions(lattice=lattice, threshold=threshold, refine=refine, identify=True if lattice_prior else identify,
                          lattice_prior=lattice_prior, batch_size=batch_size, tile=tile,
                          low_dose=bool(low_dose), window=window, flips=flips, elements=elements)
    if options.low_dose and save_probabilities:
        raise InputError("low_dose=True makes no probability maps of single frames; drop save_probabilities")
    da, source = _open_input(input, pixel_size, dataset)
    ps = da.attrs.get("pixel_size")
    if ps is None:
        raise InputError("the input has no pixel size: pass pixel_size= in nm/px (--pixel-size), e.g. 0.01 for "
                         "10 pm/px; the network needs it to see atoms at the sampling it was trained at")
    det = _detector_kwargs(detector, da)
    if da.ndim in (3, 5):
        start, stop = frame_range(frames, da.sizes["frame"])
        parts = plan_parts(da.chunks[0], start, stop, frames_per_part)
        n_total = da.sizes["frame"]
    else:
        if frames is not None and frame_range(frames, 1) != (0, 1):
            raise InputError(f"frames={frames!r}: this input is a single frame (dims {da.dims})")
        start, stop, parts, n_total = 0, 1, [(0, 1)], 1
    check = None
    try:
        earlier = None if overwrite else rundir.read_manifest(Path(out).expanduser()).get("parameters")
    except ValueError:           # an unreadable manifest: prepare() below says so
        earlier = None
    if low_dose is None and da.ndim == 3 and stop - start >= 5 and not save_probabilities:
        if earlier:              # resuming: the parts already there were found one way; keep it
            try:
                options = replace(options, low_dose=bool(earlier.get("low_dose", False)))
            except InputError as exc:
                raise InputError(f"the run in {out} was made with low_dose=True, which this call's options rule out "
                                 f"({exc}); resume it as it was made, or pass overwrite=True (--overwrite)") from None
        else:
            options, check = _choose_low_dose(options, da.isel(frame=slice(start, stop)), float(ps), model, progress)
    if earlier and flips is None:
        # resuming with the default: the passes the run was made with (one for runs made before
        # four became the default, whose manifests name none)
        try:
            options = replace(options, flips=int(earlier.get("flips", 1)))
        except (InputError, TypeError, ValueError):
            pass                 # options the run was not made with: prepare() below names them
    if options.low_dose and identify is None:
        # the chemistry of one low-dose frame is noise: a 4-fold Si between two sites comes out
        # 'unknown', and the coordination flickers frame to frame into false transformations
        options = replace(options, identify=False)
    ref = model_ref(model, embed=embed_model)
    card = _card_of(ref)
    params = {"pixel_size": float(ps), "options": options, "save_probabilities": bool(save_probabilities)}
    # the manifest's parameters: the same keys as ever, so that earlier runs still resume
    recorded = {"pixel_size": float(ps), **options.manifest(), "save_probabilities": bool(save_probabilities)}
    manifest = {"format": FORMAT, "input": _identity(da, source), "model": {"name": ref.name, "sha256": ref.sha256},
                "parameters": {**recorded, "frames": [start, stop], "detector": _json_detector(det)},
                "parts": [list(p) for p in parts]}
    # resolved here: workers (on an external scheduler, in another working directory) get an
    # absolute path, never one relative to wherever they were started
    out = Path(out).expanduser().resolve()
    with output.run_lock(out):   # one run at a time per output directory
        done = output.prepare(out, manifest, overwrite=overwrite)
        frame_shape = tuple(da.shape[-2:]) if da.ndim <= 3 else (da.sizes["scan_y"], da.sizes["scan_x"])
        if save_probabilities:
            _prepare_probabilities(out, n_total, frame_shape, float(ps), card)
        todo = [i for i in range(len(parts)) if i not in done]
        stats, dashboard, n_workers_used, t_compute, changed = [], None, 0, 0.0, []
        if todo or (done and verify_input):
            from contextlib import nullcontext

            ctx = (nullcontext(client) if client is not None
                   else connect(scheduler, n_workers=n_workers, quiet=not progress))
            with ctx as cl:
                dashboard = dashboard_link(cl)[0]
                n_workers_used = len(cl.nthreads())
                if done and verify_input:
                    changed = _changed_parts(cl, da, source, det, parts, done, out)
                    if changed:
                        done = done - set(changed)
                        todo = sorted(set(todo) | set(changed))
                        if progress:
                            print(f"stemflow: the input under {len(changed)} of {len(parts)} complete parts changed "
                                  "since they were computed; computing them again", file=sys.stderr)
                t0 = time.perf_counter()
                if todo:
                    stats = _compute(cl, da, source, det, parts, todo, ref, params, out, progress, on_part)
                t_compute = time.perf_counter() - t0
            _check_parts_here(out, stats, parts)
        rows = sum(s["rows"] for s in stats) + sum(_part_rows(out, i) for i in done)
        labels: dict = {}
        for s in stats:
            for k, v in s["labels"].items():
                labels[k] = labels.get(k, 0) + v
        n_frames = sum(b - a for a, b in parts)
        computed_frames = sum(parts[i][1] - parts[i][0] for i in todo)
        summary = RunSummary(out=out, parts=len(parts), computed=len(todo), skipped=len(done), changed=len(changed),
                             frames=n_frames,
                             rows=rows, labels=labels, seconds=time.perf_counter() - t_start,
                             frames_per_second=computed_frames / t_compute if t_compute > 0 else float("nan"),
                             workers=n_workers_used, dashboard=dashboard, low_dose=options.low_dose,
                             low_dose_check=check, warnings=gather_warnings(stats))
        # the manifest keeps what the parts kept from an earlier call said, and what this call's parts said
        earlier = [{"part": int(p), "warnings": [k["message"]]}
                   for k in rundir.read_manifest(out).get("warnings", []) for p in k.get("parts", ()) if p in done]
        output.finish(out, rows=rows, frames=n_frames, seconds_last_call=summary.seconds,
                      model_card={k: card.get(k) for k in ("name", "pixel_size", "classes")},
                      execution={"batch_size": int(batch_size), "workers": n_workers_used},
                      warnings=gather_warnings(earlier + list(stats)))
        _issue(summary.warnings, len(todo))
        if track and da.ndim == 3 and n_frames > 1:
            from ..results import track_run

            result = track_run(out, pixel_size=float(ps), images=da, dose=da.attrs.get("dose"),
                               frame_time=da.attrs.get("frame_time"), options=track_options)
            summary.events = len(result.events)
            summary.seconds = time.perf_counter() - t_start
        return summary


def _sources(client, da, source, det, parts, indices) -> dict:
    """Where each part's frames come from: a dict the worker opens itself (paths), or a future of
    the frames (in-memory data, one 4D scan's virtual image)."""
    from .virtual import virtual_image

    if da.ndim == 4:  # one scan → its image, reduced chunk by chunk on the cluster
        return {0: client.compute(virtual_image(da, **det).data[None])}
    if source is not None:
        return {i: dict(source, detector=det) for i in indices}
    data = da.data
    if da.ndim == 5:
        data = virtual_image(da, **det).data
    elif da.ndim == 2:
        data = data[None]
    return {i: client.compute(data[parts[i][0]:parts[i][1]]) for i in indices}


def _changed_parts(client, da, source, det, parts, done, out) -> list[int]:
    """Complete parts whose input is no longer what they were computed from (their frames are
    read again and hashed on the workers; parts of older runs without a record count as changed).
    Those parts' files are removed."""
    from .worker import input_of_part

    srcs = _sources(client, da, source, det, parts, sorted(done))
    run_id = uuid.uuid4().hex[:8]
    futs = [client.submit(input_of_part, i, parts[i][0], parts[i][1], srcs[i], pure=False,
                          key=f"stemflow-check-{run_id}-{i:06d}") for i in sorted(done)]
    changed = []
    for r in client.gather(futs):          # this run's client: a process may hold several, or none by default
        if rundir.part_meta(out, r["part"]).get("input") != r["digest"]:
            changed.append(r["part"])
            rundir.part_path(out, r["part"]).unlink(missing_ok=True)
    return changed


def _check_parts_here(out: Path, stats: list[dict], parts: list):
    """Every part the workers reported is where this client reads it, with the rows they wrote.

    Raises
    ------
    StemflowError
        Parts missing or short here: the workers do not share this output directory (another
        machine, another mount); the run stays incomplete.
    """
    from ..errors import StemflowError

    bad = []
    for s in stats:
        p = rundir.part_path(out, s["part"])
        try:
            n = _part_rows(out, s["part"])
        except (OSError, ValueError):
            n = None
        if n != s["rows"]:
            bad.append((s["part"], "missing" if not p.exists() else f"{n} rows of {s['rows']}"))
    if bad:
        for i, why in bad:
            output.record_failure(out, i, parts[i], f"written by a worker but {why} at {out} on the client")
        raise StemflowError(f"{len(bad)} of {len(stats)} parts the workers wrote are not in {str(out)!r} as this "
                            f"client sees it ({', '.join(f'part {i}: {w}' for i, w in bad[:3])}): the workers do not "
                            "share this directory. Give an --out on a file system every worker and this client "
                            "mount at the same path")


def _compute(client, da, source, det, parts, todo, ref, params, out, progress, on_part):
    """Submit the missing parts as futures; collect their statistics as they finish."""
    from distributed import as_completed

    light = ref.without_data()
    client.register_plugin(ModelPlugin(ref), name=f"stemflow-model-{ref.sha256[:16]}")
    resources = task_resources(client)
    run_id = uuid.uuid4().hex[:8]
    futures, reads = [], {}
    srcs = _sources(client, da, source, det, parts, todo)
    for i in todo:
        a, b = parts[i]
        src = srcs[i]
        if isinstance(src, dict):
            # the read is a task of its own, submitted just before its part (so a worker does not
            # read far ahead of what it computes): a worker with a spare thread — a GPU worker,
            # whose network task holds the GPU — reads the next part while this one runs
            src = client.submit(read_part, src, a, b, params["options"], key=f"stemflow-read-{run_id}-{i:06d}",
                                pure=False)
        fut = client.submit(process_part, i, a, b, src, light, params, str(out),
                            key=f"stemflow-part-{run_id}-{i:06d}", resources=resources, pure=False)
        futures.append(fut)
        if src is not srcs[i]:
            reads[fut.key] = src
    stats = []
    bar = _bar(progress, len(futures), sum(parts[i][1] - parts[i][0] for i in todo))
    part_of = {f.key: i for f, i in zip(futures, todo)}
    try:
        for fut in as_completed(futures, loop=client.loop):
            reads.pop(fut.key, None)         # the part's frames leave the worker's memory with it
            try:
                s = fut.result()
            except Exception as exc:
                i = part_of.get(fut.key)
                if i is not None:
                    output.record_failure(out, i, parts[i], exc)
                raise
            stats.append(s)
            if bar is not None:
                bar.update(s["frames"])
            if on_part is not None:
                on_part(s)
    except BaseException:
        client.cancel(futures + list(reads.values()) + [f for f in srcs.values() if hasattr(f, "key")])
        raise
    finally:
        if bar is not None:
            bar.close()
    return sorted(stats, key=lambda s: s["part"])


def _bar(progress, n_parts, n_frames):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n_frames, unit="frame", desc=f"finding atoms ({n_parts} parts)", file=sys.stderr)

"""What runs on a worker: the model, loaded once per process, and one part of frames → atoms.

Tasks carry a :class:`ModelRef` (a path or the weights' bytes, with their SHA-256), never a
pickled network; :func:`get_model` loads it once per worker process onto the worker's GPU when it
has one (``LocalCUDACluster`` gives each worker its own), else the CPU, and caches it by hash.
:class:`ModelPlugin` does that when a worker starts, before any task arrives. A task
(:func:`process_part`) reads its frames where the data are, runs :func:`stemflow.find_atoms`
on them, writes the part atomically and returns only a few numbers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, StemflowWarning
from ..nn.weights import WEIGHTS_DIR, Model, bundled_models, load_model, model_from_bytes
from ..nn.weights import file_sha256 as _sha256_file

__all__ = ["ModelRef", "model_ref", "get_model", "worker_device", "ModelPlugin",
           "find_frames", "load_frames", "read_part", "PartFrames", "process_part"]

_MODELS: dict[str, Model] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelRef:
    """How a worker finds the model: a weights path, or the weights' bytes and card.

    Attributes
    ----------
    sha256 : str
        SHA-256 of the ``.pt`` file: the cache key, and checked on load.
    name : str
    path : str, optional
        ``NAME.pt`` readable by the workers (shared file system), ``NAME.json`` beside it.
    data : bytes, optional
        The ``.pt`` file's bytes, for workers that cannot see the file.
    card : dict, optional
        The model card, with ``data``.
    """

    sha256: str
    name: str
    path: str | None = None
    data: bytes | None = field(default=None, repr=False)
    card: dict | None = field(default=None, repr=False)

    def without_data(self) -> "ModelRef":
        """A light copy (hash and name only) for tasks: the bytes went to the workers once."""
        return ModelRef(self.sha256, self.name, self.path)


def model_ref(model=None, embed: bool = False) -> ModelRef:
    """A :class:`ModelRef` for a bundled name, a ``NAME.pt`` path or a loaded :class:`Model`.

    Parameters
    ----------
    model : str, Path or Model, optional
        Default ``"default"`` (the bundled model).
    embed : bool
        Carry the weights' bytes (for workers without the file). A loaded ``Model`` is always
        embedded (its state is saved to bytes).
    """
    import io

    import torch

    if isinstance(model, Model):
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}, buf)
        data = buf.getvalue()
        card = dict(model.card, sha256=hashlib.sha256(data).hexdigest(), format="stemflow-atomnet-1",
                    architecture=model.net.config)
        return ModelRef(card["sha256"], model.name, None, data, card)
    name = "default" if model is None else model
    if isinstance(name, str) and "/" not in name and name in bundled_models():
        pt = WEIGHTS_DIR / f"{name}.pt"
    else:
        pt = Path(name)
        pt = pt.with_suffix(".pt") if pt.suffix in ("", ".json") else pt
        if not pt.is_file():
            load_model(name)  # raises the loader's error naming the fix
    pt = pt.resolve()
    card = json.loads(pt.with_suffix(".json").read_text())
    digest = _sha256_file(pt)
    if embed:
        return ModelRef(digest, str(card.get("name", pt.stem)), str(pt), pt.read_bytes(), card)
    return ModelRef(digest, str(card.get("name", pt.stem)), str(pt))


def worker_device() -> str:
    """``"cuda"`` when this process sees a GPU (its own under ``LocalCUDACluster``), else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def get_model(ref: ModelRef, device: str | None = None) -> Model:
    """The model of ``ref``, loaded once per process (cache keyed by SHA-256) on ``device``.

    Raises
    ------
    InputError
        The weights are unknown here (a light ref whose model was never sent to this process and
        whose path is missing) or their hash differs from the ref's.
    """
    with _LOCK:
        model = _MODELS.get(ref.sha256)
        if model is not None:
            return model
        device = device or worker_device()
        if ref.data is not None:
            # loaded from memory: nothing is written to a shared temporary folder
            model = model_from_bytes(ref.data, dict(ref.card or {}, sha256=ref.sha256),
                                     source=f"{ref.name} (sent by the client)", device=device)
        elif ref.path is not None and Path(ref.path).is_file():
            if _sha256_file(Path(ref.path)) != ref.sha256:
                raise InputError(f"the weights at {ref.path!r} changed since the run started (SHA-256 differs); "
                                 "rerun so that every worker uses the same model")
            model = load_model(ref.path, device=device)
        else:
            raise InputError(f"model {ref.name!r} ({ref.sha256[:12]}…) is not on this worker and its path "
                             f"{ref.path!r} is not readable here; run with the model embedded (bytes) or put the "
                             "weights on a file system the workers share")
        _MODELS[ref.sha256] = model
        return model


try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - distributed is a dependency
    WorkerPlugin = object


class ModelPlugin(WorkerPlugin):
    """Load the model on each worker as it starts (and on workers that join later).

    Parameters
    ----------
    ref : ModelRef
        Sent once per worker (with its bytes when embedded); tasks then carry only the hash.
    """

    name = "stemflow-model"

    def __init__(self, ref: ModelRef):
        self.ref = ref

    def setup(self, worker):
        import torch

        torch.set_num_threads(max(1, int(getattr(worker.state, "nthreads", 1) or 1)))
        get_model(self.ref)


def find_frames(frames: np.ndarray, first_frame: int, model: Model, pixel_size: float, options, *,
                keep_maps: bool = False):
    """Atoms in a block of frames, with global frame numbers.

    Parameters
    ----------
    frames : ndarray, (n, y, x)
        Images (counts).
    first_frame : int
        Global index of ``frames[0]``; ``frame`` in the result counts from it.
    model : Model
    pixel_size : float
        nm/px of the frames.
    options : stemflow.find.FindOptions
        As for :func:`stemflow.find_atoms`; ``tile`` cuts larger frames into tiles with a halo
        whose stitched maps equal a whole-frame pass. The identification runs without the
        unsupervised classes, which need all the complexes of a dataset at once.
    keep_maps : bool
        Also return the class probabilities, (n, classes, y', x') on the network's grid.

    Returns
    -------
    DataFrame or (DataFrame, ndarray)
        The atoms table of :func:`stemflow.find_atoms` with ``frame`` = ``first_frame + i``.
    """
    from ..chem import identify as chem_identify
    from ..chem import lattice_prior as chem_prior
    from ..find import (atoms_from_maps, atoms_table, predict, warn_crystal, warn_no_host, warn_unplaced,
                        warn_unrecognised)

    from ..spacing import check_calibration

    frames = np.asarray(frames, np.float32)
    tables, kept, ambiguous = [], [], []
    o = options
    lattice = o.lattice
    check_calibration(frames[0], pixel_size, lattice, where=f"frame {int(first_frame)}")    # as find_atoms does
    warn_crystal(frames[0], pixel_size, lattice, where=f"frame {int(first_frame)}")
    for i0 in range(0, len(frames), o.batch_size):           # the steps of find_atoms, a batch at a time
        block = frames[i0:i0 + o.batch_size]
        maps = predict(block, pixel_size, model, batch_size=o.batch_size, tile=o.tile, flips=o.network_flips)
        ambiguous += [float(v) for v in maps.ambiguous_share]
        t = atoms_from_maps(maps, block, lattice=lattice, threshold=o.threshold, refine=o.refine,
                            keep_fit=o.lattice_prior, elements=o.elements)
        t["frame"] += i0
        tables.append(t)
        if keep_maps:
            kept.append(maps.probabilities)
    df = atoms_table(pd.concat(tables, ignore_index=True), pixel_size, lattice, model.name)
    warn_unrecognised(ambiguous, first_frame=int(first_frame))
    warn_no_host(df, lattice, first_frame=int(first_frame))
    if o.identify:
        df = chem_identify(df, pixel_size, lattice, image=frames, classes=False)
        warn_unplaced(df, lattice, first_frame=int(first_frame))
        if o.lattice_prior:
            df = chem_prior(df, pixel_size, lattice)
    df["frame"] = df["frame"].astype(np.int64) + int(first_frame)
    df.attrs.update(pixel_size=pixel_size, lattice=lattice, model=model.name, ambiguous_share=ambiguous,
                    frame_shape=[int(v) for v in frames.shape[-2:]])
    if keep_maps:
        return df, np.concatenate(kept) if kept else None
    return df


def find_frames_low_dose(block: np.ndarray, first_frame: int, start: int, stop: int, model: Model,
                         pixel_size: float, options):
    """Atoms of frames ``start:stop`` found with :func:`stemflow.find_atoms_movie` on ``block``,
    which holds them with some neighbouring frames as context, from global frame ``first_frame``.

    Parameters
    ----------
    block : ndarray, (n, y, x)
        Frames ``first_frame`` … ``first_frame + n - 1`` (counts), ``start:stop`` among them.
    first_frame, start, stop : int
        Global frame numbers.
    model : Model
    pixel_size : float
        nm/px.
    options : stemflow.find.FindOptions
        ``low_dose`` options (``lattice``, ``window``, ``identify``).

    Returns
    -------
    DataFrame
        The atoms table of frames ``start:stop``, ``frame`` global.
    """
    from ..chem import identify as chem_identify
    from ..lowdose import find_atoms_movie

    if len(block) < 3:
        raise InputError(f"frames {start}–{stop - 1}: low-dose finding needs at least 3 frames of the movie, "
                         f"this input has {len(block)}")
    df = find_atoms_movie(np.asarray(block, np.float32), pixel_size, window=options.window,
                          lattice=options.lattice, model=model)
    attrs = dict(df.attrs)
    df = df[(df["frame"] >= start - first_frame) & (df["frame"] < stop - first_frame)].reset_index(drop=True)
    df["frame"] = df["frame"].astype(np.int64) - (start - first_frame)      # 0 at ``start``
    if options.identify:
        df = chem_identify(df, pixel_size, options.lattice, classes=False,
                           image=np.asarray(block[start - first_frame:stop - first_frame], np.float32))
    df["frame"] = df["frame"].astype(np.int64) + int(start)
    df.attrs.update(attrs)
    return df


@functools.lru_cache(maxsize=8)
def _open(path: str, dataset, pixel_size):
    from ..io import open_stem

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StemflowWarning)
        return open_stem(path, dataset=dataset, pixel_size=pixel_size, check_finite=False, check_chunks=False)


def load_frames(source: dict, start: int, stop: int) -> np.ndarray:
    """Frames ``start:stop`` of an input as (n, y, x) float arrays, read where the task runs.

    Parameters
    ----------
    source : dict
        ``path`` (what :func:`stemflow.open_stem` opens), ``dataset``, ``pixel_size`` (nm/px
        override or None) and, for 5-D 4D-STEM movies, ``detector`` (keywords of
        :func:`~stemflow.parallel.virtual.virtual_image`).
    start, stop : int
        Global frame range.

    """
    da = _open(source["path"], source.get("dataset"), source.get("pixel_size"))
    try:
        if da.ndim == 2:
            block = da.values[None]
        elif da.ndim == 3:
            block = da.isel(frame=slice(start, stop)).data.compute(scheduler="sync")
        elif da.ndim == 5:
            from .virtual import virtual_image

            block = virtual_image(da.isel(frame=slice(start, stop)),
                                  **source["detector"]).data.compute(scheduler="sync")
        else:
            raise InputError(f"{source['path']!r} has dims {da.dims}; 4D scans are reduced to one image before "
                             "the parts are made")
    except (InputError, MemoryError):
        raise
    except Exception as exc:   # a chunk that does not decode: name the store, the chunks and the frames
        raise InputError(_unreadable(source, start, stop, exc)) from None
    return block


def _unreadable(source: dict, start: int, stop: int, exc: Exception) -> str:
    """What failed to read, for a message: the path, frames and (Zarr) the chunk keys."""
    path, keys = source["path"], ""
    try:
        from ..io._read import zarr_array, zarr_chunk_rows

        arr, key, _ = zarr_array(path, source.get("dataset"))
        ks = [(f"{key}/" if key else "") + arr.metadata.encode_chunk_key(c) for c in zarr_chunk_rows(arr, start, stop)]
        keys = f" (chunk{'s' if len(ks) > 1 else ''} {', '.join(ks[:4])}{' …' if len(ks) > 4 else ''})"
    except Exception:   # not a Zarr store, or unreadable metadata: the path and frames still say where
        pass
    why = " ".join(str(exc).split())[:300]
    return (f"{path}: frames {start}–{stop - 1} could not be read{keys}: {type(exc).__name__}: {why}. The store is "
            "damaged there: rewrite those frames, or run over the others with frames=")


def _trim_heap():
    """Give the heap's free pages back to the system after a part (glibc ``malloc_trim``): many
    parts of large arrays would otherwise fragment the heap and let a worker's RSS creep up."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@dataclass(frozen=True)
class PartFrames:
    """The frames of one part, read ahead by :func:`read_part`.

    Attributes
    ----------
    block : ndarray, (n, y, x)
        Frames ``first`` to ``first + n`` (counts): the part's, and for low-dose movies the
        neighbours' each side that give them context.
    first : int
        Global index of ``block[0]``.
    path : str
        Where they were read from.
    """

    block: np.ndarray = field(repr=False)
    first: int
    path: str


def read_part(source: dict, start: int, stop: int, options) -> PartFrames:
    """Read the frames of part ``start:stop`` where the task runs: its own Dask task, so a worker
    with a thread to spare reads the next part while its network is busy with this one.

    Parameters
    ----------
    source : dict
        Where the frames are (see :func:`load_frames`).
    start, stop : int
        Global frame range of the part.
    options : stemflow.find.FindOptions
        ``low_dose`` reads :func:`stemflow.lowdose.context_frames` more on each side.

    Returns
    -------
    PartFrames
    """
    from ..lowdose import context_frames

    first, last = start, stop
    if options.low_dose:
        first, last = max(0, start - context_frames(options.window)), stop + context_frames(options.window)
    return PartFrames(load_frames(source, first, last), int(first), str(source.get("path")))


def process_part(index: int, start: int, stop: int, source, ref: ModelRef, params: dict, out: str) -> dict:
    """One task: frames ``start:stop`` → atoms → ``OUT/atoms.parquet/part-INDEX.parquet``.

    Parameters
    ----------
    index : int
        Part number.
    start, stop : int
        Global frame range of the part.
    source : dict, PartFrames or ndarray
        Where the frames are (see :func:`load_frames`), the frames :func:`read_part` read, or
        the frames themselves (n, y, x).
    ref : ModelRef
        The model (loaded once per worker process).
    params : dict
        ``pixel_size`` (nm/px), ``lattice``, ``threshold``, ``refine``, ``batch_size``, ``tile``,
        ``save_probabilities``.
    out : str
        The run's output directory.

    Returns
    -------
    dict
        ``part``, ``frames``, ``rows``, ``labels`` (counts), ``seconds``, ``pid``, ``device``,
        ``warnings`` (stemflow's warnings about the part, each message once: the client shows
        them, as a worker's own output is not seen where the run was started).

    Raises
    ------
    InputError
        NaN or Inf in the frames (named by global frame index).
    """
    t0 = time.perf_counter()
    _hear_warnings()
    _heard.said = said = []
    try:
        stats = _process_part(index, start, stop, source, ref, params, out)
    finally:
        _heard.said = None
    stats["warnings"] = said
    stats["seconds"] = time.perf_counter() - t0
    return stats


#: The warnings a task running in this thread has heard (``said``: a list, None when no task
#: listens): thread-local, as a worker's threads run tasks side by side (a GPU worker reads the
#: next part while it finds this one), which ``warnings.catch_warnings`` does not allow.
_heard = threading.local()
_HOOK_LOCK = threading.Lock()


def _hear_warnings() -> None:
    """Route stemflow's warnings to the listening task of the thread that issues them, once per
    process: a worker's own output is not seen where the run was started, so
    :func:`process_part` returns them for the client to show. In a worker process each is heard
    every time it is issued (the ``always`` action, after any filter already set) and kept once per
    part; with no task listening, and for every other warning, Python's usual display. Called at
    the start of every part, it puts the hook back if another thread's
    ``warnings.catch_warnings`` took it away; warnings issued by threads a part starts itself are
    not heard (none issues any)."""
    with _HOOK_LOCK:
        if getattr(warnings.showwarning, "_stemflow_relay", False):
            return
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            said = getattr(_heard, "said", None)
            if said is not None and issubclass(category, StemflowWarning):
                if str(message) not in said:
                    said.append(str(message))
                return
            previous(message, category, filename, lineno, file, line)

        show._stemflow_relay = True
        warnings.showwarning = show
        import multiprocessing

        if multiprocessing.parent_process() is not None:
            # a worker process: each part hears all it says, however often said before (after a
            # user's own filters); a worker thread in the user's own process leaves their filters be
            warnings.filterwarnings("always", category=StemflowWarning, append=True)


def _process_part(index: int, start: int, stop: int, source, ref: ModelRef, params: dict, out: str) -> dict:
    """:func:`process_part` without its warnings and timing."""
    from ..io import check_finite
    from ..rundir import PROBABILITIES
    from .output import input_digest, write_part

    o = params["options"]
    if isinstance(source, dict):
        source = read_part(source, start, stop, o)
    if isinstance(source, PartFrames):              # the neighbours' frames (low dose) as context
        block, first, where = source.block, source.first, source.path
        frames = block[start - first:stop - first]
    else:
        block = frames = np.asarray(source)
        first, where = start, None
    digest = input_digest(frames)
    check_finite(block, first)
    model = get_model(ref)
    save = bool(params.get("save_probabilities"))
    if o.low_dose:
        df, maps = find_frames_low_dose(block, first, start, stop, model, params["pixel_size"], o), None
    else:
        res = find_frames(frames, start, model, params["pixel_size"], o, keep_maps=save)
        df, maps = res if save else (res, None)
    if save:
        import zarr

        arr = zarr.open_array(str(Path(out) / PROBABILITIES), mode="r+")
        arr[start:stop] = maps.astype(arr.dtype)
    df.attrs.update(source=where or "in-memory array", model_sha256=ref.sha256)     # provenance, in every part
    write_part(out, index, df, meta={"input": digest, "model": ref.sha256, "frames": [int(start), int(stop)]})
    stats = {"part": int(index), "frames": int(stop - start), "rows": int(len(df)),
             "labels": {str(k): int(v) for k, v in pd.Series(df["label"]).value_counts().items()},
             "pid": os.getpid(), "device": str(model.device)}
    del frames, block, df, maps
    _trim_heap()
    return stats


def input_of_part(index: int, start: int, stop: int, source) -> dict:
    """One task: the digest of the input under a part, read as :func:`process_part` reads it
    (the client compares it with the part's record to know whether the input changed).

    Returns
    -------
    dict
        ``part``, ``digest``.
    """
    from .output import input_digest

    frames = load_frames(source, start, stop) if isinstance(source, dict) else np.asarray(source)
    return {"part": int(index), "digest": input_digest(frames)}

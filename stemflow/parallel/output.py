"""Writing a run's output directory (layout: :mod:`stemflow.rundir`): parts, manifest, lock.

Each part is written to a hidden temporary file and renamed into place, so a part file exists only
once it is complete; a rerun skips the parts already there. The manifest is compared first: a
rerun with another input, model or parameters is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_json
from ..errors import InputError, StemflowError
from ..rundir import ATOMS_DIR, MANIFEST, PART_META_KEY, PROBABILITIES, complete_parts, part_path
from ..tables import ATOMS, parquet_metadata

__all__ = ["OutputMismatchError", "RunLockedError", "run_lock", "LOCK", "record_failure", "write_part",
           "input_digest", "prepare", "finish", "empty_atoms"]

_COMPARED = ("format", "input", "model", "parameters", "parts")


class OutputMismatchError(StemflowError, FileExistsError):
    """The output directory holds a run made with other settings (or something else entirely)."""


class RunLockedError(StemflowError):
    """Another run is writing the same output directory."""


#: Lock file of a run in progress, in its output directory: owner pid, host and start time.
LOCK = ".stemflow.lock"


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):
        return True
    return True


@contextmanager
def run_lock(out):
    """Hold ``OUT/.stemflow.lock`` while a run writes ``out``: one run at a time per directory.

    A lock left by a process that died on this host is taken over (with a warning); one held by a
    live process, or by another host, is refused.

    Raises
    ------
    RunLockedError
        Another run holds the lock; the message names its pid, host and start time.
    """
    import socket
    import time
    import warnings

    out = Path(out)
    if out.exists() and not out.is_dir():
        yield          # not a directory: prepare() refuses it with the fix
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    fd = None
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                owner = json.loads(path.read_text())
            except (OSError, ValueError):
                owner = {}
            if owner.get("host") == me["host"] and not _alive(owner.get("pid")):
                from ..errors import StemflowWarning

                warnings.warn(f"{path}: the run that held it (pid {owner.get('pid')}, since {owner.get('since')}) is "
                              "gone; taking over (its finished parts are kept)", StemflowWarning, stacklevel=3)
                path.unlink(missing_ok=True)
                continue
            raise RunLockedError(
                f"{str(out)!r} is being written by another run (pid {owner.get('pid', '?')} on "
                f"{owner.get('host', '?')} since {owner.get('since', '?')}); wait for it to finish, or, if it died on "
                f"another machine, remove {str(path)!r}") from None
    if fd is None:
        raise RunLockedError(f"could not take the lock {str(path)!r}; remove it if no run is writing {str(out)!r}")
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def empty_atoms() -> pd.DataFrame:
    """An atoms table with no rows and the pipeline's columns and dtypes."""
    return ATOMS.empty()


def _conform(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ATOMS.names if c not in df.columns]
    if missing:
        raise InputError(f"an atoms part lacks columns {missing}; it needs {ATOMS.names}")
    return ATOMS.conform(df)


def input_digest(frames: np.ndarray) -> str:
    """Digest of the frames a part read (BLAKE2b-128 over shape, dtype and bytes): what a rerun
    compares to know whether the input under a part changed."""
    import hashlib

    a = np.ascontiguousarray(frames)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.shape}|{a.dtype.str}|".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def write_part(out, index: int, df: pd.DataFrame, meta: dict | None = None) -> Path:
    """Write one part atomically: a hidden temporary file in the same directory, then a rename.

    Parameters
    ----------
    out : str or Path
        The run's output directory.
    index : int
        Part number (position in the manifest's ``parts`` plan).
    df : DataFrame
        Atoms rows of the part, with the columns of :data:`stemflow.tables.ATOMS` (``frame`` global).
    meta : dict, optional
        The part's record (``input`` digest, ``model`` hash), kept in the file's schema metadata.

    Returns
    -------
    Path
        The part's final path.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    final = part_path(out, index)
    final.parent.mkdir(parents=True, exist_ok=True)
    table = _conform(df)
    attrs, table.attrs = dict(df.attrs), {}
    t = pa.Table.from_pandas(table, preserve_index=False)
    extra = parquet_metadata(ATOMS, attrs)          # table kind, units, pixel size, lattice ...
    if meta:
        extra[PART_META_KEY] = json.dumps(meta).encode()
    t = t.replace_schema_metadata({**(t.schema.metadata or {}), **extra})
    with atomic_path(final) as tmp:
        pq.write_table(t, tmp)
    return final


def _clear(out: Path):
    shutil.rmtree(out / ATOMS_DIR, ignore_errors=True)
    shutil.rmtree(out / PROBABILITIES, ignore_errors=True)
    (out / MANIFEST).unlink(missing_ok=True)


def _differences(old: dict, new: dict) -> list[str]:
    diffs = []
    for key in _COMPARED:
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    diffs.append(f"{key}.{k}: {_short(a.get(k))} → {_short(b.get(k))}")
        else:
            diffs.append(f"{key}: {_short(a)} → {_short(b)}")
    return diffs


def _short(v) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 60 else s[:57] + "…"


def _write_json(path: Path, obj: dict):
    write_json(path, obj, default=_json_default)


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, (np.ndarray, tuple)):
        return list(np.asarray(o).tolist())
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _normal(manifest: dict) -> dict:
    """The manifest as it reads back from JSON (tuples → lists ...), for comparison."""
    return json.loads(json.dumps(manifest, default=_json_default))


def prepare(out, manifest: dict, overwrite: bool = False) -> set[int]:
    """Make ``out`` ready for a run described by ``manifest``; return the parts already complete.

    Parameters
    ----------
    out : str or Path
        Output directory (created if missing).
    manifest : dict
        ``format``, ``input`` (identity), ``model`` (name, sha256), ``parameters``, ``parts``
        (list of ``[first_frame, end_frame]``) and anything else to record.
    overwrite : bool
        Remove a previous run's parts and manifest whatever they hold.

    Returns
    -------
    set of int
        Parts whose files are complete and can be skipped (empty after ``overwrite``).

    Raises
    ------
    OutputMismatchError
        ``out`` holds a run with a different input, model, parameters or part plan, or is a
        non-empty directory (or a file) that is not a stemflow run; the message lists what differs.
    """
    out = Path(out)
    new = _normal(manifest)
    if out.exists() and not out.is_dir():
        if not overwrite:
            raise OutputMismatchError(f"{str(out)!r} is a file, not a run directory; choose another --out or "
                                      "pass overwrite=True (--overwrite) to replace it")
        out.unlink()
    mpath = out / MANIFEST
    if overwrite and out.is_dir():
        _clear(out)
    elif mpath.exists():
        try:
            old = json.loads(mpath.read_text())
        except ValueError:
            old = {}
        diffs = _differences(old, new)
        if diffs:
            raise OutputMismatchError(
                f"{str(out)!r} holds a run with different settings ({'; '.join(diffs[:6])}"
                f"{'; …' if len(diffs) > 6 else ''}); resuming would mix them. Pass overwrite=True (--overwrite) "
                "to recompute from scratch, or choose another --out")
    elif out.is_dir() and any(p.name != LOCK for p in out.iterdir()):
        raise OutputMismatchError(f"{str(out)!r} is not empty and holds no stemflow run ({MANIFEST} missing); "
                                  "choose another --out, or pass overwrite=True (--overwrite) to write into it")
    out.mkdir(parents=True, exist_ok=True)
    (out / ATOMS_DIR).mkdir(exist_ok=True)
    for stale in (out / ATOMS_DIR).glob(".*.tmp"):  # left by a worker that died mid-write
        stale.unlink(missing_ok=True)
    if not mpath.exists():
        _write_json(mpath, {**new, "complete": False})
    else:   # a rerun: incomplete until it finishes, and earlier failures are the past
        m = json.loads(mpath.read_text())
        m.pop("failed", None)
        _write_json(mpath, {**m, "complete": False})
    n = len(new.get("parts", []))
    return {i for i in complete_parts(out) if i < n}


def finish(out, **fields) -> dict:
    """Mark the run in ``out`` complete and record ``fields`` (rows, timings) in its manifest."""
    mpath = Path(out) / MANIFEST
    manifest = json.loads(mpath.read_text())
    manifest.update(fields, complete=True)
    _write_json(mpath, manifest)
    return manifest


def record_failure(out, part: int, frames, error: BaseException | str):
    """Record in the manifest that ``part`` (frames ``[a, b)``) failed, and why."""
    mpath = Path(out) / MANIFEST
    if not mpath.exists():
        return
    m = json.loads(mpath.read_text())
    why = error if isinstance(error, str) else f"{type(error).__name__}: {' '.join(str(error).split())}"
    failed = [f for f in m.get("failed", []) if f.get("part") != part]
    m["failed"] = failed + [{"part": int(part), "frames": [int(frames[0]), int(frames[1])], "error": why[:500]}]
    m["complete"] = False
    _write_json(mpath, m)

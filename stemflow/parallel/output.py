"""The output directory of a run: a Parquet dataset written part by part, and its manifest.

::

    OUT/
      manifest.json            what produced the parts: input identity, model hash, parameters, plan
      atoms.parquet/           a Parquet dataset, one file per part (chunk of whole frames)
        part-000000.parquet
        part-000001.parquet
      probabilities.zarr       class maps (frame, class, y, x), only with save_probabilities

Each part is written to a hidden temporary file and renamed into place, so a part file exists only
once it is complete; a rerun skips the parts already there. The manifest is compared first: a
rerun with another input, model or parameters is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, StemflowError
from ..tables import ATOMS, LABELS, attrs_from_metadata, parquet_metadata

__all__ = ["OutputMismatchError", "IncompleteRunError", "RunLockedError", "run_lock", "LOCK", "run_status",
           "check_complete", "record_failure", "ATOMS_DIR", "MANIFEST", "PROBABILITIES", "part_path",
           "write_part", "part_meta", "input_digest", "complete_parts", "prepare", "finish", "read_atoms",
           "empty_atoms"]

ATOMS_DIR = "atoms.parquet"
MANIFEST = "manifest.json"
PROBABILITIES = "probabilities.zarr"
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


class IncompleteRunError(StemflowError):
    """The run's table is missing parts (the run failed, was stopped, or is still running)."""


def empty_atoms() -> pd.DataFrame:
    """An atoms table with no rows and the pipeline's columns and dtypes."""
    return ATOMS.empty()


def _conform(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ATOMS.names if c not in df.columns]
    if missing:
        raise InputError(f"an atoms part lacks columns {missing}; it needs {ATOMS.names}")
    return ATOMS.conform(df)


def part_path(out, index: int) -> Path:
    """``OUT/atoms.parquet/part-NNNNNN.parquet``."""
    return Path(out) / ATOMS_DIR / f"part-{int(index):06d}.parquet"


#: Key of a part's own record (input digest, model hash) in its Parquet schema metadata.
PART_META_KEY = b"stemflow.part"


def input_digest(frames: np.ndarray) -> str:
    """Digest of the frames a part read (BLAKE2b-128 over shape, dtype and bytes): what a rerun
    compares to know whether the input under a part changed."""
    import hashlib

    a = np.ascontiguousarray(frames)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.shape}|{a.dtype.str}|".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def part_meta(out, index: int) -> dict:
    """The record a part was written with (``input``: digest, ``model``: SHA-256), ``{}`` when
    it has none (parts of older runs) or is missing."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(part_path(out, index)).metadata or {}
        return json.loads(meta.get(PART_META_KEY, b"{}"))
    except (OSError, ValueError):
        return {}


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
    final = part_path(out, index)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = _conform(df)
        attrs, table.attrs = dict(df.attrs), {}
        t = pa.Table.from_pandas(table, preserve_index=False)
        extra = parquet_metadata(ATOMS, attrs)          # table kind, units, pixel size, lattice ...
        if meta:
            extra[PART_META_KEY] = json.dumps(meta).encode()
        t = t.replace_schema_metadata({**(t.schema.metadata or {}), **extra})
        pq.write_table(t, tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def complete_parts(out) -> set[int]:
    """Indices of the parts whose files are in place (temporary files do not count)."""
    folder = Path(out) / ATOMS_DIR
    if not folder.is_dir():
        return set()
    done = set()
    for p in folder.glob("part-*.parquet"):
        try:
            done.add(int(p.stem.split("-", 1)[1]))
        except ValueError:
            continue
    return done


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
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    os.replace(tmp, path)


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


def run_status(out) -> dict:
    """Whether a run's table is whole.

    Returns
    -------
    dict
        ``complete`` (bool: the run finished and every planned part is in place), ``parts``
        (planned), ``missing`` (list of ``[first_frame, end_frame]`` of parts not in place),
        ``failed`` (the manifest's failures: ``part``, ``frames``, ``error``); ``manifest`` False
        when ``out`` holds no manifest (a table written by other means: nothing to check).
    """
    mpath = Path(out) / MANIFEST
    if not mpath.exists():
        return {"manifest": False, "complete": True, "parts": 0, "missing": [], "failed": []}
    try:
        m = json.loads(mpath.read_text())
    except ValueError:
        raise IncompleteRunError(f"the manifest {str(mpath)!r} is not valid JSON: the run's record is damaged; "
                                 "rerun it with overwrite=True (--overwrite)") from None
    plan = m.get("parts", [])
    have = complete_parts(out)
    missing = [list(p) for i, p in enumerate(plan) if i not in have]
    return {"manifest": True, "complete": bool(m.get("complete")) and not missing, "parts": len(plan),
            "missing": missing, "failed": m.get("failed", [])}


def _ranges(parts, limit: int = 6) -> str:
    txt = ", ".join(f"{a}–{b - 1}" if b - a > 1 else f"{a}" for a, b in parts[:limit])
    return txt + (f" and {len(parts) - limit} more parts" if len(parts) > limit else "")


def check_complete(out, partial: bool = False) -> dict:
    """Refuse (or, with ``partial``, warn about) a run whose table is not whole.

    Raises
    ------
    IncompleteRunError
        Parts are missing or the run never finished; the message names the missing frames and
        the failures the manifest recorded.
    """
    st = run_status(out)
    if st["complete"]:
        return st
    n_miss = len(st["missing"])
    msg = (f"the run in {str(out)!r} is incomplete: " +
           (f"{n_miss} of {st['parts']} parts missing (frames {_ranges(st['missing'])})" if n_miss
            else "it never finished") +
           ("; failed: " + "; ".join(f"frames {f['frames'][0]}–{f['frames'][1] - 1}: {f['error']}"
                                     for f in st["failed"][:3]) if st["failed"] else ""))
    if not partial:
        raise IncompleteRunError(msg + ". Run the same `stemflow run` again to finish it, or read what is there "
                                 "with read_atoms(out, partial=True)")
    import warnings

    from ..errors import StemflowWarning

    warnings.warn(msg + "; the table read lacks those frames", StemflowWarning, stacklevel=3)
    return st


def read_atoms(out, lazy: bool = False, partial: bool = False):
    """The atoms table of a run (``OUT`` or ``OUT/atoms.parquet``), parts in frame order.

    Parameters
    ----------
    out : str or Path
        A run's output directory, or its ``atoms.parquet`` dataset.
    lazy : bool
        Return a ``dask.dataframe.DataFrame`` (one partition per part) instead of pandas.
    partial : bool
        Read an incomplete run's parts anyway (with a warning naming the missing frames); the
        table's ``attrs["complete"]`` is then False and ``attrs["missing_frames"]`` lists them.

    Raises
    ------
    IncompleteRunError
        The run's manifest says it did not finish or parts are missing (unless ``partial``).

    Returns
    -------
    DataFrame
        Columns ``frame`` (global frame index), ``y``, ``x`` (px), ``y_nm``, ``x_nm`` (nm),
        ``label`` (category), ``prob``, ``intensity``; ``attrs`` from the manifest
        (``pixel_size``, ``lattice``, ``model``).
    """
    path = Path(out)
    folder = path if path.name == ATOMS_DIR or path.suffix == ".parquet" else path / ATOMS_DIR
    if not folder.exists():
        raise InputError(f"no atoms table at {str(folder)!r}; run `stemflow run INPUT --out {path}` first")
    status = check_complete(folder.parent, partial) if (folder.parent / MANIFEST).exists() else None
    files = sorted(folder.glob("part-*.parquet"))
    if lazy:
        import dask.dataframe as dd

        return dd.read_parquet([str(f) for f in files]) if files else dd.from_pandas(empty_atoms(), npartitions=1)
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else empty_atoms()
    if len(files) and not isinstance(df["label"].dtype, pd.CategoricalDtype):
        # parts whose label categories differ (e.g. one holds `unknown` rows of the dopant check)
        # concatenate as strings: keep every label, never turn one into NaN
        label = df["label"].astype(str)
        df["label"] = pd.Categorical(label, categories=list(LABELS) + sorted(set(label) - set(LABELS)))
    if files:
        import pyarrow.parquet as pq

        df.attrs.update(attrs_from_metadata(pq.read_schema(files[0]).metadata))
    mpath = folder.parent / MANIFEST
    if mpath.exists():
        m = json.loads(mpath.read_text())
        p = m.get("parameters", {})
        known = dict(pixel_size=m.get("input", {}).get("pixel_size"), lattice=p.get("lattice"),
                     model=m.get("model", {}).get("name"))
        df.attrs.update({k: v for k, v in known.items() if v is not None})
    if status is not None:
        df.attrs.update(complete=status["complete"], missing_frames=status["missing"])
    return df

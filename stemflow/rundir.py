"""A run directory's layout and completeness: where the parts are, whether they are all there.

The bottom of the run-directory code: the Dask side that writes (:mod:`stemflow.parallel.output`),
the readers (:mod:`stemflow.results`) and the report (:mod:`stemflow.report`) all ask this module
where things are and whether a run is whole. Only json and pyarrow.

::

    OUT/
      manifest.json            what produced the parts: input identity, model hash, parameters, plan
      atoms.parquet/           a Parquet dataset, one file per part (chunk of whole frames)
        part-000000.parquet
      probabilities.zarr       class maps (frame, class, y, x), only with save_probabilities
      trajectories.parquet     the client-side stage's tables (stemflow.results.track_run) ...
      events.parquet
      drift.parquet
      mean_frame.npy
      report.html
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from .errors import StemflowError, StemflowWarning
from .frames import describe_ranges

__all__ = ["ATOMS_DIR", "MANIFEST", "PROBABILITIES", "DYNAMICS_TABLES", "PART_META_KEY", "IncompleteRunError",
           "part_path", "part_meta", "complete_parts", "run_status", "check_complete", "read_manifest"]

ATOMS_DIR = "atoms.parquet"
MANIFEST = "manifest.json"
PROBABILITIES = "probabilities.zarr"
#: Files the client-side stage (:func:`track_run`) writes in a run directory.
DYNAMICS_TABLES = ("trajectories.parquet", "events.parquet", "drift.parquet")
#: Key of a part's own record (input digest, model hash) in its Parquet schema metadata.
PART_META_KEY = b"stemflow.part"


class IncompleteRunError(StemflowError):
    """The run's table is missing parts (the run failed, was stopped, or is still running)."""


def part_path(out, index: int) -> Path:
    """``OUT/atoms.parquet/part-NNNNNN.parquet``.

    Parameters
    ----------
    out : str or Path
        The run directory.
    index : int
        Index of the part (a chunk of whole frames) in the run's plan, from 0.

    Returns
    -------
    Path
        Where the part's Parquet file belongs (it need not exist).

    Examples
    --------
    >>> from stemflow.rundir import part_path
    >>> part_path("out", 3).as_posix()
    'out/atoms.parquet/part-000003.parquet'
    """
    return Path(out) / ATOMS_DIR / f"part-{int(index):06d}.parquet"


def part_meta(out, index: int) -> dict:
    """The record a part was written with (``input``: digest, ``model``: SHA-256), ``{}`` when
    it has none (parts of older runs) or is missing.

    Parameters
    ----------
    out : str or Path
        The run directory.
    index : int
        Index of the part, from 0.

    Returns
    -------
    dict
        The JSON record under :data:`PART_META_KEY` in the part's Parquet schema metadata; ``{}``
        when the part is missing, unreadable or has no record. Only the schema is read.

    Examples
    --------
    >>> import json, tempfile
    >>> import pyarrow as pa, pyarrow.parquet as pq
    >>> from stemflow.rundir import PART_META_KEY, part_meta, part_path
    >>> out = tempfile.mkdtemp()
    >>> part_meta(out, 0)                                             # no such part
    {}
    >>> part_path(out, 0).parent.mkdir()
    >>> table = pa.table({"y": [1.0]}).replace_schema_metadata({PART_META_KEY: json.dumps({"input": "abc"})})
    >>> pq.write_table(table, part_path(out, 0))
    >>> part_meta(out, 0)
    {'input': 'abc'}
    """
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(part_path(out, index)).metadata or {}
        return json.loads(meta.get(PART_META_KEY, b"{}"))
    except (OSError, ValueError):
        return {}


def complete_parts(out) -> set[int]:
    """Indices of the parts whose files are in place (temporary files do not count).

    Parameters
    ----------
    out : str or Path
        The run directory.

    Returns
    -------
    set of int
        Indices of the ``part-NNNNNN.parquet`` files under ``OUT/atoms.parquet``; empty when the
        folder does not exist. Only names are listed, no file is read.

    Examples
    --------
    >>> import tempfile
    >>> from stemflow.rundir import complete_parts, part_path
    >>> out = tempfile.mkdtemp()
    >>> complete_parts(out)
    set()
    >>> part_path(out, 0).parent.mkdir()
    >>> for i in (0, 2):
    ...     part_path(out, i).touch()
    >>> sorted(complete_parts(out))
    [0, 2]
    """
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


def run_status(out) -> dict:
    """Whether a run's table is whole.

    Parameters
    ----------
    out : str or Path
        The run directory.

    Returns
    -------
    dict
        ``complete`` (bool: the run finished and every planned part is in place), ``parts``
        (planned), ``missing`` (list of ``[first_frame, end_frame]`` of parts not in place),
        ``failed`` (the manifest's failures: ``part``, ``frames``, ``error``); ``manifest`` False
        when ``out`` holds no manifest (a table written by other means: nothing to check).

    Examples
    --------
    >>> import tempfile
    >>> run_status(tempfile.mkdtemp())["manifest"]
    False
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


def check_complete(out, partial: bool = False) -> dict:
    """Refuse (or, with ``partial``, warn about) a run whose table is not whole.

    Parameters
    ----------
    out : str or Path
        The run directory.
    partial : bool
        Warn instead of refusing.

    Returns
    -------
    dict
        :func:`run_status` of the run.

    Raises
    ------
    IncompleteRunError
        Parts are missing or the run never finished; the message names the missing frames and
        the failures the manifest recorded.

    Examples
    --------
    >>> import json, tempfile, warnings
    >>> from pathlib import Path
    >>> from stemflow.rundir import check_complete, part_path
    >>> out = tempfile.mkdtemp()
    >>> check_complete(out)["manifest"]                    # no manifest: nothing to check
    False
    >>> _ = (Path(out) / "manifest.json").write_text(json.dumps({"complete": True, "parts": [[0, 8], [8, 16]]}))
    >>> part_path(out, 0).parent.mkdir()
    >>> part_path(out, 0).touch()
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     check_complete(out, partial=True)["missing"]   # frames [first, end) of missing parts
    [[8, 16]]
    """
    st = run_status(out)
    if st["complete"]:
        return st
    n_miss = len(st["missing"])
    msg = (f"the run in {str(out)!r} is incomplete: " +
           (f"{n_miss} of {st['parts']} parts missing (frames {describe_ranges(st['missing'])})" if n_miss
            else "it never finished") +
           ("; failed: " + "; ".join(f"frames {f['frames'][0]}–{f['frames'][1] - 1}: {f['error']}"
                                     for f in st["failed"][:3]) if st["failed"] else ""))
    if not partial:
        raise IncompleteRunError(msg + ". Run the same `stemflow run` again to finish it, or read what is there "
                                 "with read_atoms(out, partial=True)")
    warnings.warn(msg + "; the table read lacks those frames", StemflowWarning, stacklevel=3)
    return st


def read_manifest(out) -> dict:
    """The run's ``manifest.json`` as a dict (``{}`` when there is none).

    Parameters
    ----------
    out : str or Path
        The run directory.

    Returns
    -------
    dict
        The parsed manifest (input identity, model hash, parameters, ``parts``: the plan as
        ``[first_frame, end_frame]`` pairs, ``complete``, ``failed``); ``{}`` without one.

    Raises
    ------
    ValueError
        The manifest is not valid JSON (:class:`json.JSONDecodeError`).

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from stemflow.rundir import read_manifest
    >>> out = tempfile.mkdtemp()
    >>> read_manifest(out)
    {}
    >>> _ = (Path(out) / "manifest.json").write_text(json.dumps({"complete": True, "parts": [[0, 8]]}))
    >>> read_manifest(out)["parts"]
    [[0, 8]]
    """
    mpath = Path(out) / MANIFEST
    return json.loads(mpath.read_text()) if mpath.exists() else {}

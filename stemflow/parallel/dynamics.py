"""After a movie's atoms are in: trajectories, events, drift and the report of a run directory.

The atoms table of a run is small next to the data (tens of bytes per atom), and linking is
sequential in time, so this stage runs on the client: it streams the run's parts in frame order
through :func:`stemflow.track.track` (memory bounded by the trajectories, not the atoms), writes
``trajectories.parquet``, ``events.parquet`` and ``drift.parquet`` atomically, a drift-corrected
mean of the first frames (``mean_frame.npy``, for the pictures) and ``report.html``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from . import output

__all__ = ["track_run", "TABLES"]

#: Files this stage writes in a run directory.
TABLES = ("trajectories.parquet", "events.parquet", "drift.parquet")

_MEAN_FRAMES = 32


def _write_atomic(df: pd.DataFrame, path: Path):
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        d = df.copy()
        d.attrs = {}
        d.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _parts(folder: Path):
    for f in sorted(folder.glob("*.parquet")):
        df = pd.read_parquet(f)
        if len(df):
            yield df


def track_run(out, *, atoms=None, pixel_size: float | None = None, images=None, dose: float | None = None,
              frame_time: float | None = None, report: bool = True, title: str | None = None,
              **track_options):
    """Link the atoms of a run directory and write its dynamics tables and report.

    Parameters
    ----------
    out : str or Path
        A run directory holding ``atoms.parquet/`` (:func:`stemflow.parallel.run`), or where to
        write when ``atoms`` is given.
    atoms : str or Path, optional
        An atoms table elsewhere (a Parquet file, or a dataset folder of parts in frame order).
    pixel_size : float, optional
        nm/px; default the run's manifest.
    images : array-like (frame, y, x), optional
        The movie (e.g. the input DataArray): its first frames give the drift-corrected mean
        frame drawn under the trajectories. Only those frames are read.
    dose, frame_time : float, optional
        e⁻/Å² per frame and s per frame, for rates in the report.
    report : bool
        Write ``report.html``.
    title : str, optional
        The report's title.
    **track_options
        Passed to :func:`stemflow.track.track` (``labels``, ``search_range`` nm, ``memory``…).

    Returns
    -------
    stemflow.track.TrackResult
        ``trajectories``, ``events``, ``drift``.
    """
    from ..track import track

    out = Path(out)
    atoms_path = out / output.ATOMS_DIR if atoms is None else Path(atoms)
    if not atoms_path.exists():
        raise InputError(f"no atoms table at {str(atoms_path)!r}; run `stemflow run INPUT --out {out}` "
                         "or `stemflow find ... --out DIR/atoms.parquet` first")
    if atoms_path.is_dir() and (atoms_path.parent / output.MANIFEST).exists():
        output.check_complete(atoms_path.parent)          # never track a table with frames missing
    out.mkdir(parents=True, exist_ok=True)
    if pixel_size is None:
        manifest = out / output.MANIFEST
        if manifest.exists():
            import json

            pixel_size = json.loads(manifest.read_text()).get("input", {}).get("pixel_size")
    if pixel_size is None and atoms_path.is_file():
        import pyarrow.parquet as pq

        meta = pq.read_schema(atoms_path).pandas_metadata or {}
        pixel_size = (meta.get("attributes") or {}).get("pixel_size")
    source = _parts(atoms_path) if atoms_path.is_dir() else [pd.read_parquet(atoms_path)]
    result = track(source, pixel_size=pixel_size, **track_options)
    for name, df in zip(TABLES, result):
        _write_atomic(df, out / name)
    if images is not None and len(result.drift):
        from ..plot import mean_frame

        n = min(_MEAN_FRAMES, len(result.drift))
        frames = result.drift["frame"].to_numpy()[:n]
        if hasattr(images, "isel"):
            stack = np.asarray(images.isel(frame=frames.tolist()).values, dtype=np.float32)
        else:
            stack = np.asarray(images[frames.tolist()], dtype=np.float32)
        mean = mean_frame(stack, result.drift.iloc[:n])
        tmp = out / f".mean_frame.{uuid.uuid4().hex}.npy"
        np.save(tmp, mean.astype(np.float32))
        os.replace(tmp, out / "mean_frame.npy")
    if report:
        from ..report import write_report

        write_report(out, title=title, dose=dose, frame_time=frame_time)
    return result

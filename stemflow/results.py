"""A run directory as one object: its tables, manifest and completeness, and the client-side stage.

The directory's layout is :mod:`stemflow.rundir`.

:func:`open_run` is the way in: it reads nothing until asked, and every table it hands out is
checked to be whole first (a run with parts missing is refused, or read with ``partial=True`` and
a warning naming the missing frames). The Dask side that writes the parts is
:mod:`stemflow.parallel`; this module needs pandas and pyarrow only (``lazy=True`` reads through
:mod:`stemflow.io`).

Examples
--------
>>> import stemflow                                                    # doctest: +SKIP
>>> run = stemflow.open_run("out/")                                     # doctest: +SKIP
>>> run                                                                # doctest: +SKIP
<stemflow run 'out': complete, 24 parts, 1200 frames, pixel size 0.0123 nm/px, model default>
>>> atoms = run.atoms()                                                 # doctest: +SKIP
>>> traj, events, drift = run.track(search_range=0.1)                   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .errors import InputError
from .rundir import (ATOMS_DIR, DYNAMICS_TABLES, MANIFEST, IncompleteRunError, check_complete, read_manifest,
                     run_status)
from .tables import ATOMS, DRIFT, EVENTS, LABELS, TRAJECTORIES, attrs_from_metadata, parquet_metadata, recorded_attrs

__all__ = ["open_run", "Run", "read_atoms", "track_run", "IncompleteRunError"]

#: Frames averaged (after drift correction) for the picture under the trajectories.
_MEAN_FRAMES = 32


def read_atoms(out, lazy: bool = False, partial: bool = False):
    """The atoms table of a run (``OUT`` or ``OUT/atoms.parquet``), parts in frame order.

    Parameters
    ----------
    out : str or Path
        A run's output directory, or its ``atoms.parquet`` dataset, or one Parquet file of an atoms
        table (as ``stemflow find --out`` writes).
    lazy : bool
        Return a ``dask.dataframe.DataFrame`` (one partition per part) instead of pandas.
    partial : bool
        Read an incomplete run's parts anyway (with a warning naming the missing frames); the
        table's ``attrs["complete"]`` is then False and ``attrs["missing_frames"]`` lists them.

    Returns
    -------
    DataFrame
        Columns of :data:`stemflow.tables.ATOMS`: ``frame`` (global frame index), ``y``, ``x``
        (px), ``y_nm``, ``x_nm`` (nm), ``label`` (category), ``prob``, ``intensity``; ``attrs``
        from the parts' Parquet metadata and the manifest (``pixel_size`` nm/px, ``lattice``,
        ``model``).

    Raises
    ------
    IncompleteRunError
        The run's manifest says it did not finish or parts are missing (unless ``partial``).
    InputError
        There is no atoms table at ``out``.

    Examples
    --------
    >>> atoms = read_atoms("out/")                                      # doctest: +SKIP
    >>> atoms.attrs["pixel_size"]                                       # doctest: +SKIP
    0.0123
    """
    path = Path(out)
    folder = path if path.name == ATOMS_DIR or path.suffix == ".parquet" or path.is_file() else path / ATOMS_DIR
    if not folder.exists():
        raise InputError(f"no atoms table at {str(folder)!r}; run `stemflow run INPUT --out {path}` first")
    one_file = folder.is_file()                           # one table, as `stemflow find --out` writes
    if one_file and folder.suffix.lower() == ".csv":
        raise InputError(f"{str(folder)!r} is a CSV table, which records no calibration; stemflow reads atoms "
                         "tables from Parquet (`stemflow find ... --out atoms.parquet`)")
    status = (check_complete(folder.parent, partial) if not one_file and (folder.parent / MANIFEST).exists()
              else None)
    files = [folder] if one_file else sorted(folder.glob("part-*.parquet"))
    if lazy:
        from .io import read_parquet_parts

        return read_parquet_parts(files, ATOMS.empty())
    parts = [pd.read_parquet(f) for f in files]
    df = pd.concat(parts, ignore_index=True) if files else ATOMS.empty()
    # Categorical columns (label; element, defect ... once identified) have the categories each
    # part met, so pandas would concatenate them as categories or as strings depending on how the
    # run was cut into parts: give every such column the sorted union (label: its documented
    # categories first), the same table however the parts fell.
    for c in sorted({c for p in parts for c in p.columns if isinstance(p[c].dtype, pd.CategoricalDtype)}):
        values = df[c].astype(object).where(df[c].notna(), None)
        seen = sorted({str(v) for v in values if v is not None})
        first = list(LABELS) if c == "label" else []
        df[c] = pd.Categorical(values, categories=first + [v for v in seen if v not in first])
    if files:
        df.attrs.update({**parts[0].attrs, **recorded_attrs(files[0])})     # pandas' own record, then stemflow's
    m = {} if one_file else read_manifest(folder.parent)
    if m:
        known = dict(pixel_size=m.get("input", {}).get("pixel_size"), lattice=m.get("parameters", {}).get("lattice"),
                     model=m.get("model", {}).get("name"))
        df.attrs.update({k: v for k, v in known.items() if v is not None})
    if status is not None:
        df.attrs.update(complete=status["complete"], missing_frames=status["missing"])
    return df


#: The contract of each table track_run writes, recorded in its Parquet metadata.
_CONTRACTS = {"trajectories.parquet": TRAJECTORIES, "events.parquet": EVENTS, "drift.parquet": DRIFT}


def _write_table(df: pd.DataFrame, path: Path):
    """Write ``df`` atomically, with its kind, units and calibration (``attrs``) in the Parquet metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = df.copy()
    attrs, d.attrs = dict(df.attrs), {}
    t = pa.Table.from_pandas(d, preserve_index=False)
    t = t.replace_schema_metadata({**(t.schema.metadata or {}), **parquet_metadata(_CONTRACTS[path.name], attrs)})
    with atomic_path(path) as tmp:
        pq.write_table(t, tmp)


def _parts(folder: Path):
    """The parts' tables in frame order, each with the ``attrs`` its file records (how it was found)."""
    import pyarrow.parquet as pq

    for f in sorted(folder.glob("*.parquet")):
        df = pd.read_parquet(f)
        if len(df):
            df.attrs.update(attrs_from_metadata(pq.read_schema(f).metadata))
            yield df


def track_run(out, *, atoms=None, pixel_size: float | None = None, images=None, dose: float | None = None,
              frame_time: float | None = None, report: bool = True, title: str | None = None,
              options=None, **keywords):
    """Link the atoms of a run directory and write its dynamics tables and report.

    The atoms table of a run is small next to the data (tens of bytes per atom) and linking is
    sequential in time, so this stage runs on the client: it streams the run's parts in frame
    order through :func:`stemflow.tracking.track` (memory bounded by the trajectories, not the
    atoms) and writes ``trajectories.parquet``, ``events.parquet``, ``drift.parquet``, a
    drift-corrected mean of the first frames (``mean_frame.npy``) and ``report.html``, each
    atomically.

    Parameters
    ----------
    out : str or Path
        A run directory holding ``atoms.parquet/`` (:func:`stemflow.run`), or where to write
        when ``atoms`` is given.
    atoms : str or Path, optional
        An atoms table elsewhere (a Parquet file, or a dataset folder of parts in frame order).
    pixel_size : float, optional
        nm/px; default the run's manifest, else the table's Parquet metadata.
    images : array-like (frame, y, x), optional
        The movie (e.g. the input DataArray): its first frames give the drift-corrected mean
        frame drawn under the trajectories. Only those frames are read.
    dose, frame_time : float, optional
        e⁻/Å² per frame and s per frame, for rates in the report.
    report : bool
        Write ``report.html``.
    title : str, optional
        The report's title.
    options : TrackOptions or dict, optional
        How to track (:class:`stemflow.tracking.TrackOptions`); recorded in the tables' metadata.
    **keywords
        Fields of :class:`~stemflow.tracking.TrackOptions` replacing those of ``options``
        (``labels``, ``search_range`` nm, ``memory`` frames…).

    Returns
    -------
    stemflow.tracking.TrackResult
        ``trajectories``, ``events``, ``drift``.

    Raises
    ------
    IncompleteRunError
        The run's table has parts missing: tracking it would make up events at the gaps.

    Examples
    --------
    >>> traj, events, drift = track_run("out/", search_range=0.1)        # doctest: +SKIP
    """
    from .tracking import track

    out = Path(out)
    atoms_path = out / ATOMS_DIR if atoms is None else Path(atoms)
    if not atoms_path.exists():
        raise InputError(f"no atoms table at {str(atoms_path)!r}; run `stemflow run INPUT --out {out}` "
                         "or `stemflow find ... --out DIR/atoms.parquet` first")
    if atoms_path.is_dir() and (atoms_path.parent / MANIFEST).exists():
        check_complete(atoms_path.parent)          # never track a table with frames missing
    if atoms_path.is_dir() and not any(atoms_path.glob("*.parquet")):
        raise InputError(f"{str(atoms_path)!r} is a folder without Parquet files, not an atoms table; find the "
                         "atoms first (`stemflow find INPUT --out atoms.parquet` or `stemflow run INPUT --out DIR`)")
    out.mkdir(parents=True, exist_ok=True)
    if pixel_size is None:
        pixel_size = read_manifest(out).get("input", {}).get("pixel_size")
    if pixel_size is None:
        import pyarrow.parquet as pq

        first = atoms_path if atoms_path.is_file() else next(iter(sorted(atoms_path.glob("*.parquet"))), None)
        if first is not None:
            schema = pq.read_schema(first)
            pixel_size = (attrs_from_metadata(schema.metadata).get("pixel_size")
                          or ((schema.pandas_metadata or {}).get("attributes") or {}).get("pixel_size"))
    source = _parts(atoms_path) if atoms_path.is_dir() else [pd.read_parquet(atoms_path)]
    result = track(source, pixel_size, options, **keywords)
    for name, df in zip(DYNAMICS_TABLES, result):
        _write_table(df, out / name)
    if images is not None and len(result.drift):
        from .plot import mean_frame

        n = min(_MEAN_FRAMES, len(result.drift))
        frames = result.drift["frame"].to_numpy()[:n]
        if hasattr(images, "isel"):
            stack = np.asarray(images.isel(frame=frames.tolist()).values, dtype=np.float32)
        else:
            stack = np.asarray(images[frames.tolist()], dtype=np.float32)
        mean = mean_frame(stack, result.drift.iloc[:n])
        with atomic_path(out / "mean_frame.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, mean.astype(np.float32))
    if report:
        from .report import write_report

        write_report(out, title=title, dose=dose, frame_time=frame_time)
    return result


class Run:
    """A run directory: lazy access to its tables, manifest and completeness.

    Nothing is read when the object is made; each method reads what it returns. Make one with
    :func:`open_run`.

    Attributes
    ----------
    path : Path
        The run directory.
    """

    def __init__(self, path):
        self.path = Path(path)

    @property
    def manifest(self) -> dict:
        """The run's ``manifest.json`` (``{}`` for a directory without one)."""
        return read_manifest(self.path)

    @property
    def status(self) -> dict:
        """:func:`run_status`: ``complete``, ``parts``, ``missing`` frame ranges, ``failed``."""
        return run_status(self.path)

    @property
    def complete(self) -> bool:
        """Whether every planned part is in place and the run finished."""
        return self.status["complete"]

    @property
    def pixel_size(self) -> float | None:
        """nm/px of the input, as the manifest records it."""
        return self.manifest.get("input", {}).get("pixel_size")

    def atoms(self, lazy: bool = False, partial: bool = False):
        """The atoms table (:func:`read_atoms`)."""
        return read_atoms(self.path, lazy=lazy, partial=partial)

    def table(self, name: str) -> pd.DataFrame:
        """``trajectories``, ``events`` or ``drift`` as :func:`track_run` wrote them.

        Raises
        ------
        InputError
            The table has not been written yet (run :meth:`track` first).
        """
        path = self.path / f"{name}.parquet"
        if f"{name}.parquet" not in DYNAMICS_TABLES:
            raise InputError(f"unknown table {name!r}; a run holds {', '.join(t[:-8] for t in DYNAMICS_TABLES)}")
        if not path.exists():
            raise InputError(f"{str(path)!r} is not there yet; run stemflow.open_run({str(self.path)!r}).track() "
                             f"(or `stemflow track {self.path}`) first")
        check_complete(self.path)
        df = pd.read_parquet(path)
        df.attrs.update(recorded_attrs(path))                                    # pixel size, spacing ...
        if df.attrs.get("pixel_size") is None and self.pixel_size is not None:     # tables of older runs
            df.attrs["pixel_size"] = self.pixel_size
        return df

    @property
    def trajectories(self) -> pd.DataFrame:
        """The ``trajectories`` table (:data:`stemflow.tables.TRAJECTORIES`; px, frames)."""
        return self.table("trajectories")

    @property
    def events(self) -> pd.DataFrame:
        """The ``events`` table (:data:`stemflow.tables.EVENTS`; px, nm, frames)."""
        return self.table("events")

    @property
    def drift(self) -> pd.DataFrame:
        """The ``drift`` table (:data:`stemflow.tables.DRIFT`; px per frame)."""
        return self.table("drift")

    def to_xarray(self, partial: bool = False):
        """The atoms table as an :class:`xarray.Dataset`: one variable per column along ``atom``,
        each with its ``units`` (:data:`stemflow.tables.ATOMS`), the run's calibration in ``attrs``.

        Parameters
        ----------
        partial : bool
            Read the parts of an incomplete run (``attrs["complete"]`` says so).

        Returns
        -------
        xarray.Dataset
        """
        import xarray as xr

        from .tables import IDENTIFIED

        df = self.atoms(partial=partial)
        units = {**IDENTIFIED.units, **ATOMS.units}
        ds = xr.Dataset.from_dataframe(df.reset_index(drop=True).rename_axis("atom"))
        for name in ds.data_vars:
            if units.get(name):
                ds[name].attrs["units"] = units[name]
        ds.attrs.update({k: v for k, v in df.attrs.items() if isinstance(v, (str, int, float, bool))})
        return ds

    def plot_atoms(self, frame: int | None = None, **options):
        """Atoms of one frame (default the first) with a scale bar (:func:`stemflow.plot.plot_atoms`)."""
        from . import plot

        parts = self.manifest.get("parts") or [[0, 1]]
        f = int(parts[0][0]) if frame is None else int(frame)
        lazy = self.atoms(lazy=True)                  # reads only the parts that hold the frame's rows
        atoms = lazy[lazy["frame"] == f].compute()
        atoms.attrs["pixel_size"] = self.pixel_size
        return plot.plot_atoms(atoms, f, **options)

    def plot_trajectories(self, **options):
        """The run's trajectories (:func:`stemflow.plot.plot_trajectories`), over its mean frame when
        ``mean_frame.npy`` is there."""
        from . import plot

        mean = self.path / "mean_frame.npy"
        if "image" not in options and mean.exists():
            options["image"] = np.load(mean)
        return plot.plot_trajectories(self.trajectories, **options)

    def dispersion(self, **options) -> pd.DataFrame:
        """How the run's heavy atoms (or dopants) are spread, frame by frame, every frame of the run
        included (:func:`stemflow.chem.dispersion`; ``options`` go to it)."""
        from .chem import dispersion

        frames = self.manifest.get("parameters", {}).get("frames")
        atoms = self.atoms()
        if frames and "frame" in atoms.columns:
            options.setdefault("frames", range(*frames))
        options.setdefault("pixel_size", self.pixel_size)
        return dispersion(atoms, **options)

    def track(self, **options):
        """Trajectories, events and drift of the run, written beside it (:func:`track_run`)."""
        return track_run(self.path, **options)

    def report(self, out=None, **options) -> Path:
        """Write ``report.html`` of the run (:func:`stemflow.report.write_report`); its path."""
        from .report import write_report

        return write_report(self.path, out, **options)

    def _repr_html_(self) -> str:
        import html as _html

        m = self.manifest
        if not m:
            return f"<p><b>stemflow run</b> {_html.escape(str(self.path))}: no manifest</p>"
        st = self.status
        done = st["parts"] - len(st["missing"])
        state = ("<span style='color:#1a7f37'>complete</span>" if st["complete"] else
                 f"<span style='color:#cf222e'>INCOMPLETE: {len(st['missing'])} of {st['parts']} parts missing "
                 f"(frames {', '.join(f'{a}–{b - 1}' for a, b in st['missing'][:5])})</span>")
        inp, params, model = m.get("input", {}), m.get("parameters", {}), m.get("model", {})
        rows = [("state", state), ("parts", f"{done} of {st['parts']}"),
                ("input", _html.escape(f"{inp.get('path') or 'in-memory array'} — {tuple(inp.get('shape', ()))} "
                                       f"{inp.get('dtype', '')}")),
                ("pixel size", f"{self.pixel_size} nm/px"),
                ("model", _html.escape(f"{model.get('name')} (sha256 {str(model.get('sha256', ''))[:12]})")),
                ("settings", _html.escape(", ".join(f"{k}={v}" for k, v in params.items() if k != "pixel_size"))),
                ("rows", str(m.get("rows", "?"))),
                ("tables", ", ".join(n for n in ("atoms.parquet", *DYNAMICS_TABLES, "report.html")
                                     if (self.path / n).exists()))]
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
                       for k, v in rows)
        return f"<p><b>stemflow run</b> <code>{_html.escape(str(self.path))}</code></p><table>{body}</table>"

    def __repr__(self) -> str:
        m = self.manifest
        if not m:
            return f"<stemflow run {self.path.name!r}: no manifest>"
        st = self.status
        state = "complete" if st["complete"] else f"incomplete ({len(st['missing'])} of {st['parts']} parts missing)"
        frames = m.get("frames") or (m["parts"][-1][1] - m["parts"][0][0] if m.get("parts") else 0)
        return (f"<stemflow run {self.path.name!r}: {state}, {st['parts']} parts, {frames} frames, pixel size "
                f"{self.pixel_size} nm/px, model {m.get('model', {}).get('name')}>")


def open_run(path) -> Run:
    """The run directory at ``path`` as a :class:`Run`.

    Parameters
    ----------
    path : str or Path
        A directory written by :func:`stemflow.run` (``stemflow run INPUT --out PATH``).

    Returns
    -------
    Run

    Raises
    ------
    InputError
        ``path`` is not a directory.

    Examples
    --------
    >>> run = open_run("out/")                                          # doctest: +SKIP
    >>> run.complete, run.pixel_size                                    # doctest: +SKIP
    (True, 0.0123)
    """
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{str(p)!r} is not a run directory; make one with `stemflow run INPUT --out {p}`")
    return Run(p)

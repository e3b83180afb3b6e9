"""An HTML report of a run: the tables of a run directory summarised, with pictures embedded.

:func:`write_report` reads what a run wrote — ``atoms.parquet``, ``trajectories.parquet``,
``events.parquet``, ``drift.parquet`` (each optional, at least one needed) and, if present,
``mean_frame.npy`` (the drift-corrected mean frame, drawn under the trajectories) — and writes
``report.html``: one self-contained page (PNG figures inlined as base64) that opens anywhere.

Units: positions px, drift px, time frames, distances nm, as in the tables.
"""

from __future__ import annotations

import base64
import json
import html
import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from . import plot
from .atomic import atomic_path
from .tables import recorded_attrs
from .errors import InputError, InputNotFoundError

__all__ = ["write_report", "REPORT_TABLES"]

#: Tables the report reads from a run directory.
REPORT_TABLES = ("atoms", "trajectories", "events", "drift")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f5f5f5}img{max-width:100%;border:1px solid #eee}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0;flex:1 1 420px}figcaption{font-size:.85em;color:#555}
.note{color:#555;font-size:.9em}
"""


def _png(draw, figsize=(5.5, 5.0)) -> str:
    """Base64 PNG of a figure drawn by ``draw(ax)`` (no GUI backend needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(b64: str, caption: str) -> str:
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(df: pd.DataFrame, max_rows: int = 50, float_format="{:.4g}") -> str:
    shown = df.head(max_rows)
    out = shown.to_html(index=False, float_format=float_format.format, border=0, na_rep="")
    if len(df) > max_rows:
        out += f'<p class="note">first {max_rows} of {len(df)} rows</p>'
    return out


def _provenance(directory: Path, tables: dict) -> tuple[list[tuple[str, str]], float | None]:
    """Rows of the report's settings table, and the pixel size (nm/px) if known."""
    from .rundir import read_manifest, run_status

    m = read_manifest(directory)
    rows: list[tuple[str, str]] = []
    inp, params, model = m.get("input", {}), m.get("parameters", {}), m.get("model", {})
    px = inp.get("pixel_size") or params.get("pixel_size")
    for name in ("atoms", "trajectories", "events", "drift"):
        if px is None and name in tables:
            px = tables[name].attrs.get("pixel_size")
    if m:
        st = run_status(directory)
        done = st["parts"] - len(st["missing"])
        rows.append(("completeness", f"{'complete' if not st['missing'] else 'INCOMPLETE'}: {done} of "
                                     f"{st['parts']} parts"))
        where = inp.get("path") or "in-memory array"
        if inp.get("dataset"):
            where += f" [{inp['dataset']}]"
        rows.append(("input", f"{where} — dims {tuple(inp.get('dims', ()))}, shape {tuple(inp.get('shape', ()))}, "
                              f"{inp.get('dtype', '?')}"))
        if model:
            rows.append(("model", f"{model.get('name', '?')} (sha256 {str(model.get('sha256', '?'))[:12]})"))
        names = {"frames": "frame range [A, B)"}
        for k, v in params.items():
            if k != "pixel_size":
                rows.append((names.get(k, k.replace("_", " ")), json.dumps(v) if isinstance(v, (list, dict)) else str(v)))
        names = {"rows": "rows (atoms)", "frames": "frames in the run", "seconds_last_call": "seconds (last call)"}
        for k in ("rows", "frames", "seconds_last_call", "execution"):
            if k in m:
                v = m[k]
                v = f"{v:.1f}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)
                rows.append((names.get(k, k), v))
    rows.insert(0, ("pixel size", f"{px:.6g} nm/px" if px else "unknown (no scale bars)"))
    for name in ("trajectories", "events"):
        opts = tables[name].attrs.get("track_options") if name in tables else None
        if opts:
            rows.append(("tracking", ", ".join(f"{k}={v}" for k, v in opts.items())))
            break
    return rows, (float(px) if px else None)


def _run_warnings(directory: Path) -> list:
    """What the workers warned when the run was computed (``warnings`` of its manifest: see
    :func:`stemflow.parallel.pipeline.gather_warnings`); empty for a directory without a manifest."""
    from .rundir import read_manifest

    return list(read_manifest(directory).get("warnings", []))


def _part_list(parts: list, shown: int = 10) -> str:
    """``0, 1, 2 … (40 in all)``: the first ``shown`` part indices and how many there are."""
    head = ", ".join(str(int(p)) for p in parts[:shown])
    return head if len(parts) <= shown else f"{head} … ({len(parts)} in all)"


def _read(directory: Path) -> dict[str, pd.DataFrame]:
    from .rundir import MANIFEST, check_complete

    if (directory / MANIFEST).exists():
        check_complete(directory)            # a report of a run with frames missing would look whole
    tables = {}
    for name in REPORT_TABLES:
        p = directory / f"{name}.parquet"
        if not p.exists():
            continue
        if name == "atoms":   # only the columns the report uses: atoms tables of long movies are large
            import pyarrow.dataset as pads

            have = pads.dataset(p).schema.names          # a file or a dataset of parts
            df = pd.read_parquet(p, columns=[c for c in ("frame", "y", "x", "label", "defect", "element") if c in have])
        else:
            df = pd.read_parquet(p)
        df.attrs.update(recorded_attrs(p))
        tables[name] = df
    return tables


#: The most frames whose heavy atoms :func:`write_report` pools into Ripley's L (the first ones).
SPREAD_FRAMES = 200


def _spread(atoms, pixel_size, frames=None, movie: bool = False):
    """(per-frame dispersion table, Ripley's L, a note) of an amorphous run's heavy atoms, or None
    when the table is not one, or lacks the pixel size or the frame size. ``frames``: the run's
    [start, stop] (frames where nothing was found get a row); ``movie``: the frames show one area
    (Ripley's L of the first frame alone, not the frames pooled as different areas)."""
    if (atoms is None or not len(atoms) or atoms.attrs.get("lattice") != "amorphous" or not pixel_size
            or not atoms.attrs.get("frame_shape") or "label" not in atoms.columns):
        return None
    from .chem import DIMER_NM, dispersion, ripley_l

    heavy = atoms[atoms["label"].astype(str) == "dopant"]
    if not len(heavy):
        return None
    stack = "frame" in heavy.columns
    table = dispersion(heavy, pixel_size, frames=range(*frames) if frames and stack else None)
    first = heavy
    if stack:
        shown = np.sort(heavy["frame"].unique())[:1 if movie else SPREAD_FRAMES]
        first = heavy[heavy["frame"].isin(shown)]
    curve = ripley_l(first, pixel_size)
    p, alpha = curve.attrs["p_value"], curve.attrs["alpha"]
    verdict = ("too few atoms to judge" if not np.isfinite(p) else
               "not placed at random (p = {:.2g} ≤ {:g}): {}".format(
                   p, alpha, ", ".join(sorted(set(curve["verdict"]) - {"random"}))) if p <= alpha else
               f"no departure from random placement in {curve.attrs['simulations']} random patterns (p = {p:.2g})")
    over = (f"frame {int(first['frame'].iloc[0])} only (a tracked run's frames are taken for one area; for "
            "frames of different areas, stemflow dispersion pools them)" if stack and movie
            else f"{curve.attrs['frames']} frame(s), pooled as different areas")
    named = heavy["element"].astype(str) if "element" in heavy.columns else pd.Series([], dtype=str)
    kinds = sorted(set(named) - {"", "nan"})
    each = ("" if len(kinds) < 2 else " (" + ", ".join(
        f"{k} {(named == k).sum() / table['area_nm2'].sum():.3g}" for k in kinds) + " per nm²; the statistics "
        "below count them together: stemflow dispersion --element K gives one)")
    note = (f"{int(table['n_atoms'].sum())} heavy atoms in {len(table)} frame(s), "
            f"{table['n_atoms'].sum() / table['area_nm2'].sum():.3g} per nm²{each}; groups are atoms within "
            f"{DIMER_NM:g} nm of each other; Clark–Evans R < 1 clustered, > 1 dispersed (|z| > 1.96 at 5 %). "
            f"Ripley's L of {over}: {verdict}.")
    return table, curve, note


def write_report(directory, out=None, *, title: str | None = None, dose: float | None = None,
                 frame_time: float | None = None) -> Path:
    """Write ``report.html`` for the tables in a run directory.

    Parameters
    ----------
    directory : str or Path
        Folder holding any of ``atoms.parquet``, ``trajectories.parquet``, ``events.parquet``,
        ``drift.parquet`` (the tables of DESIGN.md) and optionally ``mean_frame.npy``.
    out : str or Path, optional
        Where to write; default ``directory / "report.html"``.
    title : str, optional
        Page title (default the directory's name).
    dose : float, optional
        Dose per frame, e⁻/Å², to give rates per unit dose.
    frame_time : float, optional
        s per frame, to give rates per second and D in nm²/s.

    Returns
    -------
    Path
        The HTML file written.

    Raises
    ------
    InputNotFoundError
        ``directory`` does not exist.
    InputError
        It holds none of the tables.

    Examples
    --------
    >>> from stemflow.report import write_report
    >>> write_report("run/")                                   # doctest: +SKIP
    PosixPath('run/report.html')
    """
    from .tracking import diffusion, dwell_times, event_rates, transition_matrix

    directory = Path(directory)
    if not directory.is_dir():
        raise InputNotFoundError(f"run directory {str(directory)!r} does not exist; pass the folder that "
                                 "`stemflow run` or `stemflow track --out` wrote")
    tables = _read(directory)
    if not tables:
        raise InputError(f"{str(directory)!r} holds none of {', '.join(n + '.parquet' for n in REPORT_TABLES)}; "
                         "run `stemflow track atoms.parquet --out DIR` first")
    mean = None
    if (directory / "mean_frame.npy").exists():
        mean = np.load(directory / "mean_frame.npy")
    atoms = tables.get("atoms")
    traj = tables.get("trajectories")
    ev = tables.get("events")
    dr = tables.get("drift")
    title = title or f"stemflow report — {directory.resolve().name}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f'<p class="note">written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from '
             f"{html.escape(', '.join(n + '.parquet' for n in tables))}. Positions in px, distances in nm, "
             "time in frames.</p>"]

    settings, px = _provenance(directory, tables)
    # Summary.
    rows = []
    if atoms is not None and len(atoms):
        n_frames = atoms["frame"].nunique() if "frame" in atoms.columns else 1
        rows.append(("frames", n_frames))
        if "label" in atoms.columns:
            for lab, n in atoms["label"].astype(str).value_counts().items():
                rows.append((f"{lab} per frame", round(n / n_frames, 1)))
    if traj is not None:
        rows.append(("trajectories", int(traj["particle"].nunique()) if len(traj) else 0))
        if len(traj):
            rows.append(("mean trajectory length (observations)",
                         round(float(traj.groupby("particle").size().mean()), 1)))
    if ev is not None:
        for k, n in ev["kind"].astype(str).value_counts().items():
            rows.append((f"{k} events", int(n)))
    if dr is not None and len(dr):
        total = np.hypot(dr["dy"].iloc[-1] - dr["dy"].iloc[0], dr["dx"].iloc[-1] - dr["dx"].iloc[0])
        rows.append(("total drift (px)", round(float(total), 2)))
    said = _run_warnings(directory)
    if said:
        parts += ["<h2>Warnings</h2>", "<ul>" + "".join(
            f"<li>{html.escape(k['message'])} <span class='note'>(parts {_part_list(k['parts'])})</span></li>"
            for k in said) + "</ul>"]
    if rows:
        parts += ["<h2>Summary</h2>", _table(pd.DataFrame(rows, columns=["quantity", "value"]), 100)]
    parts += ["<h2>Settings and provenance</h2>", _table(pd.DataFrame(settings, columns=["setting", "value"]), 100)]

    # Pictures.
    figs = []
    if atoms is not None and len(atoms) and "label" in atoms.columns:
        by = "defect" if "defect" in atoms.columns else "label"
        figs.append(_figure(_png(lambda ax: plot.plot_atoms(atoms, by=by, ax=ax, size=4, pixel_size=px)),
                            f"atoms of the first frame coloured by {by}"))
    if traj is not None and len(traj):
        figs.append(_figure(_png(lambda ax: plot.plot_trajectories(traj, image=mean, ax=ax, by="state",
                                                                   pixel_size=px)),
                            "drift-corrected trajectories" + (" over the mean frame" if mean is not None else "")))
    if ev is not None and len(ev):
        figs.append(_figure(_png(lambda ax: plot.plot_events(ev, trajectories=traj, ax=ax), (8, 4.5)),
                            "event timeline"))
    if traj is not None and len(traj):
        tm = transition_matrix(traj, dose=dose, frame_time=frame_time)
        if len(tm):
            figs.append(_figure(_png(lambda ax: plot.plot_transitions(tm, ax=ax), (5, 4.2)),
                                "transitions between states in consecutive frames (counts)"))
    if dr is not None and len(dr):
        figs.append(_figure(_png(lambda ax: plot.plot_drift(dr, ax=ax), (6, 3.2)), "drift (px)"))
    from .rundir import read_manifest

    spread = _spread(atoms, px or (atoms.attrs.get("pixel_size") if atoms is not None else None),
                     frames=read_manifest(directory).get("parameters", {}).get("frames"),
                     movie=traj is not None and len(traj) > 0)
    if spread is not None:
        figs.append(_figure(_png(lambda ax: plot.plot_ripley(spread[1], ax=ax), (5.5, 3.8)),
                            "Ripley's L of the heavy atoms against random placement"))
    if figs:
        parts += ["<h2>Pictures</h2>", '<div class="figs">', *figs, "</div>"]
    if spread is not None:
        table, curve, note = spread
        parts += ["<h2>How the heavy atoms are spread</h2>", f'<p class="note">{html.escape(note)}</p>',
                  _table(table, 100)]

    # Statistics.
    if traj is not None and len(traj):
        tm = transition_matrix(traj, dose=dose, frame_time=frame_time)
        parts += ["<h2>Transitions between states</h2>",
                  '<p class="note">per-frame probabilities from consecutive frames; rate_err is the binomial '
                  "standard error</p>", _table(tm)]
        if ev is not None and len(ev):
            er = event_rates(ev, traj, dose=dose, frame_time=frame_time)
            if len(er):
                parts += ["<h2>Event rates</h2>", _table(er)]
        dw = dwell_times(traj)
        if len(dw):
            summ = dw.groupby("state").agg(stays=("frames", "size"), uncensored=("censored", lambda c: int((~c).sum())),
                                           mean_frames=("frames", "mean"), median_frames=("frames", "median"))
            parts += ["<h2>Dwell times</h2>", '<p class="note">frames per stay in a state; censored stays '
                      "(cut by the start or end of a trajectory) are counted but are lower bounds</p>",
                      _table(summ.reset_index())]
        try:
            dif = diffusion(traj, frame_time=frame_time, by="state" if "state" in traj.columns else None)
            parts += ["<h2>Diffusion</h2>", '<p class="note">MSD = 4 D t fitted over lags 1–5</p>', _table(dif)]
        except InputError:
            pass
    if ev is not None and len(ev):
        shown = ev.drop(columns=[c for c in ("site0", "site1") if c in ev.columns])
        parts += ["<h2>Events</h2>", _table(shown, 200)]
    parts.append("</body></html>")
    out = directory / "report.html" if out is None else Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return out

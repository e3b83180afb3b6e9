"""``stemflow demo``: the whole pipeline on a simulated movie, scored against its ground truth.

Simulates a graphene + Si movie (dopants hopping and switching between 3- and 4-fold
coordination, vacancies migrating, the specimen drifting), writes it to Zarr with its truth,
starts a local Dask cluster, runs the bundled network on every frame (:func:`stemflow.parallel.run`),
links dopants and vacancies into trajectories and events (:mod:`stemflow.tracking`), prints what was
found beside the truth, and writes the HTML report. No data or network access needed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd

__all__ = ["run_demo", "DEMO_SCENE", "DEMO_RATES"]

#: Defect densities (per nm²) of the demo's graphene.
DEMO_SCENE = {"Si1C3": 0.15, "Si1C4": 0.04, "V1": 0.06, "V2": 0.02, "SW": 0.02}
#: Per-frame move probabilities of the demo's defects.
DEMO_RATES = {"hop": 0.06, "switch34": 0.04, "switch43": 0.08, "vacancy": 0.06}


def _say(*a):
    print(*a, flush=True)


def run_demo(out="demo_out", *, frames: int = 64, size: int = 512, dose: float = 1e5, seed: int = 7,
             workers: int | None = None, progress: bool = True) -> dict:
    """Simulate, find, track, score and report; returns the scores.

    Parameters
    ----------
    out : str or Path
        Folder for ``movie.zarr`` (+ truth Parquet) and the run (``run/``: atoms, trajectories,
        events, drift, report.html). Replaced if it holds an earlier demo.
    frames, size : int
        Movie length (frames) and frame side (px, 10 pm/px).
    dose : float
        e⁻/Å² per frame.
    seed : int
        Everything follows from it.
    workers : int, optional
        Worker processes of the local cluster (default: one per core).
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        ``atoms`` (per-class scores, DataFrame), ``events`` (per-kind scores), ``purity``,
        ``drift_rms_px``, ``seconds``.
    """
    from .metrics import score
    from .parallel import connect, run
    from .simulate import simulate_movie
    from .io import write_movie
    from .tracking.scoring import drift_error, score_events, trajectory_purity

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _say(f"stemflow demo: a simulated graphene + Si movie, {frames} frames of {size}² px at 10 pm/px, "
         f"{dose:.0e} e⁻/Å² per frame, drifting about 0.7 px/frame\n")
    movie = simulate_movie("graphene", frames, (size, size), seed=seed, drift=(0.6, -0.4), drift_jitter=0.1,
                           defects=DEMO_SCENE, rates=DEMO_RATES, pixel_size=0.01, dose=dose,
                           line_jitter=0.15, background=0.3, contamination=0.02)
    paths = write_movie(movie, out / "movie.zarr", overwrite=True, progress=progress)
    truth_ev = movie.events
    kinds = truth_ev.kind.astype(str).value_counts()
    _say(f"wrote {paths['store']} (+ truth: {', '.join(p.name for k, p in paths.items() if k != 'store')})")
    _say(f"ground truth: {', '.join(f'{v} {k}' for k, v in kinds.items())} events\n")

    run_dir = out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    with connect(n_workers=workers) as client:
        n = len(client.nthreads())
        # Parts small enough that every worker has several (the movie is one ~64 MB chunk).
        per_part = max(4, -(-frames // (2 * max(n, 1))))
        summary = run(paths["store"], run_dir, client=client, lattice="graphene", progress=progress,
                      frames_per_part=per_part, identify=True)
    _say(f"\n{summary}")

    atoms = pd.read_parquet(run_dir / "atoms.parquet")
    traj = pd.read_parquet(run_dir / "trajectories.parquet")
    ev = pd.read_parquet(run_dir / "events.parquet")
    dr = pd.read_parquet(run_dir / "drift.parquet")
    b = 15  # px: columns cut by the frame edge have no well-defined centre

    def inner(t):
        return t[t.y.between(b, size - 1 - b) & t.x.between(b, size - 1 - b)]

    s_atoms = score(inner(atoms), inner(movie.atoms), pixel_size=movie.pixel_size)
    reach = 0.07 / movie.pixel_size
    s_events = score_events(ev, truth_ev, traj, movie.atoms, reach)
    purity = trajectory_purity(traj, movie.atoms, reach)
    drift_rms = drift_error(dr, movie.drift)

    _say("\natoms, every frame, against the truth:")
    _say("  class     truth   found  precision  recall      F1   RMSE (pm)")
    for cls in ("lattice", "dopant", "vacancy"):
        r = s_atoms.loc[cls]
        _say(f"  {cls:8s} {int(r.tp + r.fn):7d} {int(r.tp + r.fp):7d}   {r.precision:8.4f} {r.recall:7.4f} "
             f"{r.f1:7.4f}   {r.rmse_px * movie.pixel_size * 1000:6.2f}")
    _say(f"\ntrajectories: {traj.particle.nunique()} particles, purity {purity:.4f}; "
         f"drift recovered to {drift_rms:.3f} px RMS (true total {_total_drift(movie.drift):.1f} px)")
    _say("events (the frame exactly right):")
    _say("  kind                  true  found     tp  precision  recall")
    for kind, r in s_events.iterrows():
        _say(f"  {kind:20s} {int(r.true):5d} {int(r.found):6d} {int(r.tp):6d}   {r.precision:8.3f} {r.recall:7.3f}")
    _say("\nfirst events found, beside the truth:")
    _say(_side_by_side(ev, truth_ev))
    report = run_dir / "report.html"
    _say(f"\nreport: {report}")
    _say(f"tables: {', '.join(str(run_dir / n) for n in ('atoms.parquet', 'trajectories.parquet', 'events.parquet', 'drift.parquet'))}")
    seconds = time.perf_counter() - t_start
    _say(f"demo done in {seconds:.0f} s")
    return dict(atoms=s_atoms, events=s_events, purity=purity, drift_rms_px=drift_rms, seconds=seconds)


def _total_drift(drift: pd.DataFrame) -> float:
    last = drift.iloc[-1]
    return float((last.dy**2 + last.dx**2) ** 0.5)


def _side_by_side(found: pd.DataFrame, truth: pd.DataFrame, n: int = 8) -> str:
    cols = ["frame", "kind", "y0", "x0", "y1", "x1", "state0", "state1"]
    kinds = ["hop", "coordination_change"]
    f = found[found.kind.astype(str).isin(kinds)].sort_values("frame").head(n)[cols]
    t = truth[truth.kind.astype(str).isin(kinds)].sort_values("frame").head(n)[cols]
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 1):
        return ("  found:\n" + _indent(f.to_string(index=False)) + "\n  truth:\n" + _indent(t.to_string(index=False)))


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())

"""Tracking benchmark: accuracy against the simulator's truth, linking rate, memory, rates.

    python benchmarks/bench_track.py            # writes benchmarks/results/track.md (+ .json)
                                                # and the docs figures docs/images/track_*.png

1. Accuracy on demo-like movies (graphene + Si/V, 64 frames of 512² px at 10 pm/px, drift up to
   2 px/frame with jitter), several seeds: hop and coordination-change precision / recall with the
   frame exactly right, trajectory purity, drift RMS error. Once on the truth tables with
   positions blurred (0.3 px) and 2 % of lattice atoms removed, no ids, no defect column; once on
   the bundled network's detections (stemflow.find_atoms) at three doses.
2. Transition rates on a long movie (truth tables) against the simulated per-frame rates.
3. Linking rate, features/s: stemflow.tracking.link against bare trackpy.link on the same tables.
4. Peak memory (tracemalloc) of track() on long movies, whole table versus streamed Parquet row
   groups.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import trackpy
from matplotlib.figure import Figure

import stemflow
from stemflow import plot
from stemflow.simulate import simulate_movie
from stemflow.tracking import event_rates, link, subtract_drift, track, transition_matrix
from stemflow.tracking.scoring import drift_error, score_events, trajectory_purity

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "images"
PX = 0.01
DRIFTS = {0: (1.4, -1.4), 1: (0.4, -0.2), 2: (-1.2, 1.6), 3: (2.0, 0.0), 4: (-0.6, -1.9)}


def demo_movie(seed: int, dose: float = 1e5, frames: int = 64, size: int = 512):
    return simulate_movie("graphene", frames, size, drift=DRIFTS[seed % 5], drift_jitter=0.2, seed=seed,
                          pixel_size=PX, dose=dose)


def blurred(atoms, seed):
    rng = np.random.default_rng(seed)
    a = atoms[["frame", "y", "x", "label"]]
    a = a[(a.label != "lattice") | (rng.random(len(a)) < 0.98)].copy()
    a["y"] += rng.normal(0, 0.3, len(a))
    a["x"] += rng.normal(0, 0.3, len(a))
    return a


def accuracy_row(source, seed, dose, mov, r, seconds):
    tol = 0.3 * r.trajectories.attrs["spacing_nm"] / PX
    s = score_events(r.events, mov.events, r.trajectories, mov.atoms, tol)
    return dict(source=source, seed=seed, dose=dose, total_drift_px=float(np.hypot(*mov.drift[["dy", "dx"]].iloc[-1])),
                hops=int(s.loc["hop", "true"]), hop_precision=s.loc["hop", "precision"],
                hop_recall=s.loc["hop", "recall"], cc=int(s.loc["coordination_change", "true"]),
                cc_precision=s.loc["coordination_change", "precision"],
                cc_recall=s.loc["coordination_change", "recall"],
                purity=trajectory_purity(r.trajectories, mov.atoms, tol),
                drift_rms_px=drift_error(r.drift, mov.drift), track_s=seconds)


def accuracy(seeds_truth, network_cases):
    rows, keep = [], None
    for seed in seeds_truth:
        mov = demo_movie(seed)
        t0 = time.perf_counter()
        r = track(blurred(mov.atoms, seed), pixel_size=PX)
        rows.append(accuracy_row("truth tables (blurred)", seed, 1e5, mov, r, time.perf_counter() - t0))
        print(rows[-1], flush=True)
    for seed, dose in network_cases:
        mov = demo_movie(seed, dose)
        images = mov.images()
        atoms = stemflow.find_atoms(images, pixel_size=PX, identify=False)  # tracking without chem, as measured
        t0 = time.perf_counter()
        r = track(atoms)
        rows.append(accuracy_row("network detections", seed, dose, mov, r, time.perf_counter() - t0))
        print(rows[-1], flush=True)
        if keep is None:
            keep = (mov, images, atoms, r)
    return pd.DataFrame(rows), keep


def long_movie_rates(frames=2000, size=512, seed=21):
    rates = {"hop": 0.04, "switch34": 0.03, "switch43": 0.05, "vacancy": 0.05}
    mov = simulate_movie("graphene", frames, size, seed=seed, pixel_size=PX, drift=(0.05, -0.03),
                         defects={"Si1C3": 8, "V1": 3}, rates=rates)
    t0 = time.perf_counter()
    r = track(blurred(mov.atoms, seed), pixel_size=PX)
    secs = time.perf_counter() - t0
    er = event_rates(r.events, r.trajectories)
    # The same estimator on the truth itself (ids and defect names known): the rates the movie realised.
    tt = mov.atoms[mov.atoms.label != "lattice"].assign(state=lambda d: d.defect.astype(str))
    truth_rates = event_rates(mov.events, tt)
    truth_state = {"dopant-3": "Si1C3", "dopant-4": "Si1C4", "vacancy-3": "V1"}
    want = {("hop", "dopant-3"): rates["hop"], ("coordination_change", "dopant-3"): rates["switch34"],
            ("coordination_change", "dopant-4"): rates["switch43"], ("hop", "vacancy-3"): rates["vacancy"]}
    rows = []
    for (kind, s0), p in want.items():
        s1 = s0 if kind == "hop" else {"dopant-3": "dopant-4", "dopant-4": "dopant-3"}[s0]
        sel = er[(er.kind == kind) & (er.state0 == s0) & (er.state1 == s1)]
        if len(sel) == 0:       # that state never occurred in this movie
            continue
        row = sel.iloc[0]
        t = truth_rates[(truth_rates.kind == kind) & (truth_rates.state0 == truth_state[s0])]
        t = t[t.state1 == truth_state[s1]]
        realised = float(t["rate"].iloc[0]) if len(t) else np.nan
        rows.append(dict(kind=kind, state0=s0, simulated=p, realised_in_truth=realised, measured=row["rate"],
                         stderr=row["rate_err"], z_vs_simulated=(row["rate"] - p) / row["rate_err"],
                         z_vs_truth=(row["rate"] - realised) / row["rate_err"], events=int(row["count"]),
                         exposure_frames=int(row["exposure"])))
    # Hops and switches can be blocked by a neighbouring defect: also the rates of the truth itself.
    truth = mov.events
    print(er, mov.params["defects_placed"], flush=True)
    return pd.DataFrame(rows), dict(placed=mov.params["defects_placed"], frames=frames, size=size, seconds=secs, tracked_rows=len(r.trajectories),
                                    true_events=int(truth.kind.isin(["hop", "coordination_change"]).sum()),
                                    found_events=int(r.events.kind.isin(["hop", "coordination_change"]).sum()))


def best_of(fn, n=3):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def linking_rate():
    mov = demo_movie(0, frames=64)
    a = subtract_drift(mov.atoms[["frame", "y", "x", "label"]], mov.drift)
    rows = []
    trackpy.quiet()
    for name, labels, sr_nm in (("dopants + vacancies", ["dopant", "vacancy"], 0.284),
                                ("all atoms", None, 0.05)):
        tab = a if labels is None else a[a.label.isin(labels)]
        tab = tab.reset_index(drop=True)
        tp_tab = tab.rename(columns={"y": "y_raw", "x": "x_raw", "y_corr": "y", "x_corr": "x"})
        t_ours = best_of(lambda: link(tab, sr_nm, pixel_size=PX, labels=None, memory=3))
        t_tp = best_of(lambda: trackpy.link(tp_tab, sr_nm / PX, memory=3, adaptive_stop=0.2 * sr_nm / PX))
        ours = link(tab, sr_nm, pixel_size=PX, labels=None, memory=3)
        ref = trackpy.link(tp_tab, sr_nm / PX, memory=3, adaptive_stop=0.2 * sr_nm / PX)
        rows.append(dict(table=name, features=len(tab), frames=int(tab.frame.nunique()),
                         stemflow_features_per_s=len(tab) / t_ours, trackpy_features_per_s=len(tab) / t_tp,
                         same_trajectories=int(ours.particle.nunique()) == int(ref.particle.nunique())))
    return pd.DataFrame(rows)


def _write_parquet(atoms, path, frames_per_group=50):
    atoms = atoms.reset_index(drop=True)
    table = pa.Table.from_pandas(atoms, preserve_index=False)
    with pq.ParquetWriter(path, table.schema) as w:
        for f0 in range(0, int(atoms.frame.max()) + 1, frames_per_group):
            sel = (atoms.frame >= f0) & (atoms.frame < f0 + frames_per_group)
            w.write_table(pa.Table.from_pandas(atoms[sel], preserve_index=False, schema=table.schema))


def memory(lengths=(500, 2000, 6000), size=256, tmp=Path("/tmp/stemflow_bench_track")):
    tmp.mkdir(exist_ok=True)
    rows = []
    for n in lengths:
        mov = simulate_movie("graphene", n, size, seed=3, pixel_size=PX, drift=(0.02, 0.01),
                             defects={"Si1C3": 4, "V1": 1})
        atoms = mov.atoms[["frame", "y", "x", "label"]]
        path = tmp / f"atoms_{n}.parquet"
        _write_parquet(atoms, path)
        in_mb = atoms.memory_usage(deep=True).sum() / 1e6
        del mov
        for mode in ("table", "stream"):
            if mode == "table":
                tab = pd.read_parquet(path)
                tracemalloc.start()
                t0 = time.perf_counter()
                r = track(tab, pixel_size=PX)
            else:
                pf = pq.ParquetFile(path)
                tracemalloc.start()
                t0 = time.perf_counter()
                r = track((pf.read_row_group(i).to_pandas() for i in range(pf.num_row_groups)), pixel_size=PX)
            secs = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            rows.append(dict(frames=n, atoms=len(atoms), atoms_table_mb=in_mb, mode=mode, peak_mb=peak / 1e6,
                             trajectory_rows=len(r.trajectories), seconds=secs,
                             atoms_per_s=len(atoms) / secs))
            print(rows[-1], flush=True)
            del r
    return pd.DataFrame(rows)


def figures(keep):
    mov, images, atoms, r = keep
    IMAGES.mkdir(parents=True, exist_ok=True)

    def save(name, draw, size):
        fig = Figure(figsize=size, dpi=110)
        ax = fig.add_subplot()
        draw(ax)
        fig.tight_layout()
        fig.savefig(IMAGES / f"track_{name}.png")

    f = 20
    lab = atoms[atoms.frame == f].merge(r.trajectories[["frame", "y", "x", "state"]], on=["frame", "y", "x"],
                                        how="left")
    lab["state"] = lab["state"].fillna("lattice")
    save("atoms", lambda ax: plot.plot_atoms(lab, frame=f, image=images[f], by="state", ax=ax, size=3), (6, 6))
    mean = plot.mean_frame(images, r.drift)
    save("trajectories", lambda ax: plot.plot_trajectories(r.trajectories, image=mean, ax=ax, by="state"), (6, 6))
    save("events", lambda ax: plot.plot_events(r.events, trajectories=r.trajectories, ax=ax), (8, 4.5))
    save("transitions", lambda ax: plot.plot_transitions(transition_matrix(r.trajectories), ax=ax), (5, 4.2))
    save("drift", lambda ax: plot.plot_drift(r.drift, truth=mov.drift, ax=ax), (6.5, 3.2))


def fmt(df, floats="{:.3f}"):
    df = df.copy()
    for c in df.columns:
        if df[c].dtype.kind == "f":
            df[c] = df[c].map(lambda v: floats.format(v))
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def main(quick: bool = False):
    RESULTS.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    net = [(0, 1e5)] if quick else [(0, 1e5), (1, 1e5), (2, 1e5), (3, 5e4), (4, 2e5)]
    acc, keep = accuracy(seeds, net)
    figures(keep)
    rates, rates_info = long_movie_rates(frames=400 if quick else 2000)
    print(rates, rates_info, flush=True)
    lr = linking_rate()
    print(lr, flush=True)
    mem = memory((300, 1200) if quick else (500, 2000, 6000))
    summary = acc.groupby("source")[["hop_precision", "hop_recall", "cc_precision", "cc_recall", "purity",
                                     "drift_rms_px"]].agg(["min", "max"])
    out = {"accuracy": acc.to_dict("records"), "rates": rates.to_dict("records"), "rates_info": rates_info,
           "linking": lr.to_dict("records"), "memory": mem.to_dict("records"),
           "seconds": time.perf_counter() - t_all}
    (RESULTS / "track.json").write_text(json.dumps(out, indent=1, default=float))
    md = [
        "# Tracking: accuracy, linking rate, memory",
        "",
        "Written by `python benchmarks/bench_track.py` on the 2-core CPU machine "
        f"({out['seconds']:.0f} s in all). Movies: graphene with the simulator's default defects "
        "(Si1C3, Si1C4, Si2C4, Si3C6, V1, V2, SW) and rates (hop 0.05, 3→4-fold 0.03, 4→3-fold 0.05, vacancy "
        "0.05 per frame), 64 frames of 512² px at 10 pm/px, drift up to 2 px/frame plus 0.2 px jitter.",
        "",
        "## Accuracy against the truth",
        "",
        "Events count when the truth has the same kind, for the trajectory's true particle, in exactly the same "
        "frame. *truth tables (blurred)*: the simulator's positions + 0.3 px noise, 2 % of lattice atoms removed, "
        "no ids, no defect column (coordination counted from host atoms). *network detections*: "
        "`stemflow.find_atoms` on the rendered frames, then `track` with nothing else known.",
        "",
        fmt(acc),
        "",
        "Range over the rows of each source:",
        "",
        fmt(summary.reset_index().set_axis(["source"] + [f"{a} {b}" for a, b in summary.columns], axis=1)),
        "",
        "## Transition rates on a long movie",
        "",
        f"{rates_info['frames']} frames of {rates_info['size']}² px (truth tables blurred as above; placed: "
        f"{rates_info['placed']}), tracked in {rates_info['seconds']:.1f} s. Measured per-frame rates against the "
        "simulated move probabilities and against the rates the movie realised (the same estimator on the "
        "truth's ids and defect names; a move is skipped when a neighbouring defect blocks it, so realised rates "
        "sit below the simulated ones); stderr is binomial, z = (measured − reference) / stderr.",
        "",
        fmt(rates, "{:.4f}"),
        "",
        "## Linking rate",
        "",
        "Drift-corrected tables of the seed-0 movie; `stemflow.tracking.link` (trackpy's streaming linker fed "
        "frame by frame from numpy arrays) against `trackpy.link` on the same table, same search range, memory 3, "
        "adaptive stop; best of 3.",
        "",
        fmt(lr, "{:.0f}"),
        "",
        "## Memory on long movies",
        "",
        "Peak memory allocated inside `track()` (tracemalloc), 256² px frames (~250 atoms each): the whole "
        "atoms table in memory (`table`) or read frame-group by frame-group from Parquet row groups of 50 "
        "frames (`stream`, the table never loaded).",
        "",
        fmt(mem, "{:.1f}"),
        "",
    ]
    (RESULTS / "track.md").write_text("\n".join(md))
    print("wrote", RESULTS / "track.md")


if __name__ == "__main__":
    from _cli import options

    main(quick=options(__doc__, flags={"--quick": "a shorter run"}).quick)

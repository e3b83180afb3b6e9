"""Throughput and memory of ``stemflow run`` (the Dask pipeline) against a bare loop.

1. **Throughput.** A simulated graphene movie in Zarr (chunks of whole frames). The same frames
   are processed by

   * a bare single-process loop: read a chunk from Zarr, ``find_atoms`` on it, keep the table
     (torch with 1 thread, then with as many threads as workers);
   * ``stemflow.parallel.run`` on a ``LocalCluster`` of 1 and then N single-threaded worker
     processes, writing the Parquet parts (cluster start-up and the workers' first imports and model
     load excluded by a one-frame warm-up run, as the bare loop's process is warm too).

   Ratios are taken within the same run of this script. Every path makes one network pass per
   frame (``flips=1``), as when these figures were first published; the cost of the default's four passes
   is measured in ``benchmarks/flips.py``.
2. **Memory.** Peak resident memory (RSS) of each worker process while ``run`` goes through a
   small and a large Zarr input (the large one written lazily, chunk by chunk, from repeated
   simulated frames), sampled every 0.1 s with psutil.

Run: ``python benchmarks/bench_parallel.py`` (small: minutes) or
``python benchmarks/bench_parallel.py --full`` (1 GB and 20 GB inputs, 512² frames; check
``df -h /tmp`` first; inputs are deleted afterwards). Writes ``benchmarks/results/parallel.md``
and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results"
PX = 0.02  # nm/px: the bundled network's sampling (no resampling)


def write_movie_store(path: Path, n_frames: int, size: int, chunk_frames: int, seed: int = 0, distinct: int = 16,
                      px: float = PX) -> float:
    """Write ``n_frames`` frames (``distinct`` simulated ones, repeated) to Zarr chunk by chunk, in
    chunks of ``chunk_frames`` frames; return GB."""
    import dask.array as dsa

    import stemflow
    from stemflow.simulate import simulate_movie

    base = simulate_movie("graphene", min(distinct, n_frames), size, seed=seed, pixel_size=px,
                          defects={"Si1C3": 0.2, "V1": 0.1}).images().astype(np.float32)
    per = chunk_frames
    chunks = [per] * (n_frames // per) + ([n_frames % per] if n_frames % per else [])

    def block(block_info=None):
        (a, b), = block_info[None]["array-location"][:1]
        return base[np.arange(a, b) % len(base)]

    arr = dsa.map_blocks(block, chunks=(tuple(chunks), (size,), (size,)), dtype=np.float32,
                         meta=np.empty((0, 0, 0), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        da = stemflow.open_stem(arr, pixel_size=px, check_finite=False)
    shutil.rmtree(path, ignore_errors=True)
    import dask

    with dask.config.set(scheduler="threads"):
        stemflow.to_zarr(da, path, frame_chunk_mb=chunk_frames * size * size * 4 / 1e6)
    return n_frames * size * size * 4 / 1e9


def bare_loop(store: Path, n_frames: int, threads: int, chunk_frames: int, barrier=None) -> float:
    """frames/s of read + find_atoms over the store's chunks in this process."""
    import torch

    import stemflow

    torch.set_num_threads(threads)
    model = stemflow.load_model("default", device="cpu")
    da = stemflow.open_stem(store, check_finite=False)
    bounds = np.arange(0, da.sizes["frame"] + chunk_frames, chunk_frames)
    # the same work as run's default: no chemical identification
    stemflow.find_atoms(da.isel(frame=slice(0, 1)).values, pixel_size=PX, model=model, identify=False, flips=1)  # warm-up
    if barrier is not None:
        barrier.wait()
    t0 = time.perf_counter()
    done = 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        b = min(b, n_frames)
        if b <= a:
            break
        frames = da.isel(frame=slice(int(a), int(b))).data.compute(scheduler="sync")
        stemflow.find_atoms(frames, pixel_size=PX, model=model, identify=False, flips=1)
        done += b - a
    return done / (time.perf_counter() - t0)


def _bare_proc(args):
    store, n_frames, chunk_frames, start_evt = args
    import os as _os

    _os.environ.setdefault("OMP_NUM_THREADS", "1")
    return bare_loop(Path(store), n_frames, 1, chunk_frames, barrier=start_evt)


def bare_concurrent(store: Path, n_frames: int, procs: int, chunk_frames: int) -> float:
    """Aggregate frames/s of ``procs`` independent bare loops (1 thread each) run at the same time
    on the same frames: the machine's own ceiling for N single-threaded workers (shared memory
    bandwidth and caches), with no Dask involved."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Manager() as m:
        barrier = m.Barrier(procs)
        with ctx.Pool(procs) as pool:
            rates = pool.map(_bare_proc, [(str(store), n_frames, chunk_frames, barrier)] * procs)
    return float(sum(rates))


class RSSMonitor:
    """Peak RSS (bytes) of each of a list of processes, sampled in a background thread."""

    def __init__(self, pids, every=0.1):
        import psutil

        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = dict.fromkeys(pids, 0)
        self.every, self._stop = every, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            for pid, p in self.procs.items():
                try:
                    self.peak[pid] = max(self.peak[pid], p.memory_info().rss)
                except Exception:
                    pass
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def pipeline(store: Path, n_frames: int, workers: int, out: Path, chunk_frames: int, monitor=False):
    """frames/s of ``run`` on a fresh local cluster (the one ``stemflow run`` starts:
    :func:`stemflow.parallel.connect`); peak RSS per worker (MB) when ``monitor``.

    The workers are warmed up first (imports, model loaded: a one-frame run elsewhere), as the bare
    loop's process is."""
    from stemflow.parallel import connect, run

    with connect(n_workers=workers, quiet=True) as client:
        pids = list(client.run(os.getpid).values())
        run(store, out.with_name(out.name + "-warm-up"), client=client, frames="0:1", overwrite=True, progress=False, flips=1)
        base = {pid: 0 for pid in pids}
        if monitor:
            import psutil

            base = {pid: psutil.Process(pid).memory_info().rss for pid in pids}
        mon = RSSMonitor(pids) if monitor else None
        t0 = time.perf_counter()
        if mon:
            mon.__enter__()
        try:
            s = run(store, out, client=client, frames=f"0:{n_frames}", overwrite=True, progress=False,
                    frames_per_part=chunk_frames, flips=1)
        finally:
            if mon:
                mon.__exit__()
        wall = time.perf_counter() - t0
        peaks = {pid: mon.peak[pid] / 1e6 for pid in pids} if mon else {}
        return {"fps": s.frames_per_second, "fps_wall": s.frames / wall, "parts": s.parts, "rows": s.rows,
                "peak_rss_mb": peaks, "idle_rss_mb": {pid: v / 1e6 for pid, v in base.items()}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="1 GB and 20 GB inputs of 512² frames")
    ap.add_argument("--size", type=int, default=None, help="frame side, px")
    ap.add_argument("--frames", type=int, default=None, help="frames for the throughput test")
    ap.add_argument("--small-gb", type=float, default=None)
    ap.add_argument("--big-gb", type=float, default=None)
    ap.add_argument("--part-frames", type=int, default=None,
                    help="frames per Zarr chunk and per part (default: throughput: frames / (4 × workers); "
                         "memory: ~128 MB, --full; 8 MB otherwise)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--repeats", type=int, default=1,
                    help="measure the throughput this many times (the machine is shared and noisy): every run and "
                         "the medians of the ratios are written")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--memory-size", type=int, default=None, help="frame side of the memory test's inputs, px")
    ap.add_argument("--memory-pixel-size", type=float, default=PX,
                    help="nm/px of the memory test's inputs; finer than the network's 0.02 means each frame is "
                         "resampled down before the network, so many GB go through the pipeline quickly")
    a = ap.parse_args()
    size = a.size or (512 if a.full else 256)
    n_thr = a.frames or (128 if a.full else 16)
    small_gb = a.small_gb or (1.0 if a.full else 0.05)
    big_gb = a.big_gb or (20.0 if a.full else 0.25)
    tmp = Path(a.tmp) / f"stemflow-bench-{os.getpid()}"
    tmp.mkdir(parents=True)
    free = shutil.disk_usage(tmp).free / 1e9
    if not a.skip_memory and free < 1.5 * big_gb:
        sys.exit(f"only {free:.0f} GB free under {tmp}; need ~{1.5 * big_gb:.0f} GB for the {big_gb} GB input "
                 "(pass --tmp DIR or --big-gb)")
    res = {"meta": {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "workers": a.workers, "size": size, "python": platform.python_version(),
                    "load_avg_at_start": os.getloadavg(), "args": sys.argv[1:]}}
    # Keep the other phase's figures when one is skipped.
    prev = OUT / "parallel.json"
    if prev.exists():
        old = json.loads(prev.read_text())
        for key in ("throughput", "throughput_runs", "memory", "meta_throughput", "meta_memory"):
            if key in old:
                res[key] = old[key]
    try:
        if not a.skip_throughput:
            store = tmp / "throughput.zarr"
            cf = a.part_frames or max(1, n_thr // (4 * a.workers))
            write_movie_store(store, n_thr, size, cf)
            runs = []
            for k in range(max(1, a.repeats)):
                bare1 = bare_loop(store, n_thr, 1, cf)
                bareN = bare_loop(store, n_thr, a.workers, cf)
                bareP = bare_concurrent(store, n_thr, a.workers, cf)
                run1 = pipeline(store, n_thr, 1, tmp / f"out1-{k}", cf)
                runN = pipeline(store, n_thr, a.workers, tmp / f"outN-{k}", cf)
                runs.append({"frames": n_thr, "frames_per_part": cf, "bare_1_thread": bare1,
                             f"bare_{a.workers}_threads": bareN, f"bare_{a.workers}_processes": bareP,
                             "run_1_worker": run1["fps"],
                             f"run_{a.workers}_workers": runN["fps"], "run_1_worker_wall": run1["fps_wall"],
                             f"run_{a.workers}_workers_wall": runN["fps_wall"], "size": size,
                             "workers": a.workers, "load_avg": os.getloadavg()[0]})
                print(runs[-1])
            res["throughput"] = runs[-1]
            res["throughput_runs"] = runs
            res["meta_throughput"] = dict(res["meta"], load_avg_at_end=os.getloadavg())
            shutil.rmtree(store)
        if not a.skip_memory:
            res["memory"] = {}
            msize = a.memory_size or size
            mpx = a.memory_pixel_size
            cf = a.part_frames or max(1, int((128e6 if a.full else 8e6) // (msize * msize * 4)))
            for label, gb in (("small", small_gb), ("big", big_gb)):
                n = max(1, int(gb * 1e9 / (msize * msize * 4)))
                store = tmp / f"{label}.zarr"
                t0 = time.perf_counter()
                real_gb = write_movie_store(store, n, msize, cf, px=mpx)
                t_write = time.perf_counter() - t0
                r = pipeline(store, n, a.workers, tmp / f"out-{label}", cf, monitor=True)
                res["memory"][label] = {"gb": real_gb, "frames": n, "frames_per_part": cf, "write_s": t_write,
                                        "size": msize, "pixel_size": mpx, **r}
                print(label, res["memory"][label])
                shutil.rmtree(store)
            res["meta_memory"] = dict(res["meta"], load_avg_at_end=os.getloadavg())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["meta"]["load_avg_at_end"] = os.getloadavg()
    write_results(res, a)


def write_results(res, a):
    OUT.mkdir(exist_ok=True)
    (OUT / "parallel.json").write_text(json.dumps(res, indent=2, default=str))
    lines = [f"# Dask pipeline: throughput and memory ({res['meta']['cores']} cores)", "",
             "Simulated graphene in float32 Zarr, chunks of whole frames; every part runs the whole per-frame "
             "work of `run`'s default (read, resample, network, locate, Parquet write; the chemical identification "
             "is opt-in and left out). A busy machine makes "
             "every number lower and the ratios noisier: the load average is given.", ""]
    if "throughput" in res:
        t = res["throughput"]
        m = res.get("meta_throughput", res["meta"])
        w = t.get("workers", m["workers"])
        cmd = " ".join(["python benchmarks/bench_parallel.py", *m.get("args", [])])
        lines += [f"## Throughput ({t['frames']} frames of {t.get('size', m['size'])}² at the network's 20 pm/px, "
                  f"{t['frames_per_part']} frames per part)", "",
                  f"`{cmd}`; load average {m['load_avg_at_start'][0]:.1f} at start, {m['load_avg_at_end'][0]:.1f} at end.", "",
                  "| what | frames/s | ratio |", "|---|---|---|",
                  f"| bare loop, 1 torch thread | {t['bare_1_thread']:.2f} | 1.00 |",
                  f"| `run`, 1 worker × 1 thread | {t['run_1_worker']:.2f} | {t['run_1_worker'] / t['bare_1_thread']:.2f}× bare (1 thread) |",
                  f"| bare loop, {w} torch threads | {t[f'bare_{w}_threads']:.2f} | {t[f'bare_{w}_threads'] / t['bare_1_thread']:.2f}× bare (1 thread) |",
                  f"| `run`, {w} workers × 1 thread | {t[f'run_{w}_workers']:.2f} | {t[f'run_{w}_workers'] / t['run_1_worker']:.2f}× `run` (1 worker); "
                  f"{t[f'run_{w}_workers'] / t[f'bare_{w}_threads']:.2f}× bare ({w} threads) |"]
        if f"bare_{w}_processes" in t:
            bp = t[f"bare_{w}_processes"]
            lines += [f"| {w} bare loops at once, separate processes, 1 thread each (no Dask; the machine's ceiling) | "
                      f"{bp:.2f} | {bp / t['bare_1_thread']:.2f}× bare (1 thread); `run` with {w} workers reaches "
                      f"{t[f'run_{w}_workers'] / bp:.2f}× of it |"]
        lines += ["",
                  "`run` frames/s are over its compute phase, on workers warmed up by a one-frame run (imports and model "
                  "loaded, as in the bare loop's process; cluster start-up excluded); with the submission and the final "
                  f"manifest: {t['run_1_worker_wall']:.2f} (1 worker), {t[f'run_{w}_workers_wall']:.2f} ({w} workers).", ""]
    runs = res.get("throughput_runs", [])
    if len(runs) > 1:
        w = runs[0]["workers"]
        one = [r["run_1_worker"] / r["bare_1_thread"] for r in runs]
        scale = [r[f"run_{w}_workers"] / r["run_1_worker"] for r in runs]
        ceil = [r[f"run_{w}_workers"] / r[f"bare_{w}_processes"] for r in runs]
        lines += [f"### The same measurement, repeated {len(runs)} times in this run", "",
                  "The ratios move from run to run on a shared machine, so every repeat is here (the table above is "
                  "the last one) with the medians:", "",
                  f"| run | bare 1 thread | `run` 1 worker | `run` {w} workers | `run` 1 worker / bare | 1 → {w} workers "
                  f"| `run` {w} workers / {w} bare processes | load average |", "|---|---|---|---|---|---|---|---|"]
        for k, r in enumerate(runs, 1):
            lines.append(f"| {k} | {r['bare_1_thread']:.2f} | {r['run_1_worker']:.2f} | {r[f'run_{w}_workers']:.2f} | "
                         f"{one[k - 1]:.2f}× | {scale[k - 1]:.2f}× | {ceil[k - 1]:.2f}× | {r.get('load_avg', float('nan')):.1f} |")
        lines += [f"| median | | | | **{np.median(one):.2f}×** | **{np.median(scale):.2f}×** | "
                  f"**{np.median(ceil):.2f}×** | |", ""]
        res["throughput_medians"] = {"run_1_worker_over_bare": float(np.median(one)),
                                     f"run_1_to_{w}_workers": float(np.median(scale)),
                                     f"run_{w}_workers_over_{w}_processes": float(np.median(ceil))}
        (OUT / "parallel.json").write_text(json.dumps(res, indent=2, default=str))
    if "memory" in res:
        m = res.get("meta_memory", res["meta"])
        cmd = " ".join(["python benchmarks/bench_parallel.py", *m.get("args", [])])
        s0 = res["memory"]["small"]
        lines += ["## Peak RSS per worker", "",
                  f"`{cmd}`; frames of {s0.get('size', m['size'])}² at {s0.get('pixel_size', PX)} nm/px (resampled to "
                  f"the network's 0.02 nm/px inside each task), written lazily chunk by chunk; psutil samples every "
                  f"worker's RSS every 0.1 s. Load average {m['load_avg_at_start'][0]:.1f} at start, "
                  f"{m['load_avg_at_end'][0]:.1f} at end.", "",
                  "| input | GB | frames | parts | frames/s | idle RSS per worker (MB) | peak RSS per worker (MB) |",
                  "|---|---|---|---|---|---|---|"]
        for label, r in res["memory"].items():
            idle = ", ".join(f"{v:.0f}" for v in r["idle_rss_mb"].values())
            peak = ", ".join(f"{v:.0f}" for v in r["peak_rss_mb"].values())
            lines.append(f"| {label} | {r['gb']:.2f} | {r['frames']} | {r['parts']} | {r['fps']:.2f} | {idle} | {peak} |")
        s, b = res["memory"]["small"], res["memory"]["big"]
        ratio = max(b["peak_rss_mb"].values()) / max(s["peak_rss_mb"].values())
        lines += ["", f"Largest worker peak, big / small input: **{ratio:.3f}×** ({s['frames_per_part']} frames per "
                  "Zarr chunk and per part in both).", ""]
    (OUT / "parallel.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

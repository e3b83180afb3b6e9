"""Simulation speed: frames/s of simulated frames on one core.

The simulator feeds training with fresh frames, so it must never be what slows training. Measured
here on one thread (``threadpoolctl``) for each lattice at 256² and 512² px, with the realistic
nuisances on (scan jitter and drift, background, contamination, Poisson noise, outliers), next to
a baseline measured in the same run: the usual cheap renderer that splats each column onto the
nearest pixel and blurs with ``scipy.ndimage.gaussian_filter`` (fast but only pixel-accurate).

Run: ``python benchmarks/bench_simulate.py`` (writes ``benchmarks/results/simulate.md``).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from threadpoolctl import threadpool_limits

from stemflow.simulate import simulate_movie

OUT = Path(__file__).parent / "results"
REAL = dict(line_jitter=0.3, scan_drift=(1.0, 0.5), background=0.3, contamination=0.05, outliers=1e-5)


def _best(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def _splat_baseline(movie, frame):
    """Nearest-pixel splat + gaussian_filter: the cheap approximate renderer."""
    rows = movie._render[movie._render.frame == frame]
    img = np.zeros(movie.shape, np.float32)
    yi = np.clip(np.rint(rows.y.to_numpy()).astype(int), 0, movie.shape[0] - 1)
    xi = np.clip(np.rint(rows.x.to_numpy()).astype(int), 0, movie.shape[1] - 1)
    np.add.at(img, (yi, xi), rows.weight.to_numpy(np.float32))
    img = ndimage.gaussian_filter(img, movie.imaging.sigma_px)
    return np.random.default_rng(0).poisson(np.maximum(img, 0) * 50).astype(np.float32)


def main():
    results = []
    with threadpool_limits(1):
        for lattice in ("graphene", "ws2", "amorphous"):
            for size in (256, 512):
                frames = 8
                t0 = time.perf_counter()
                mov = simulate_movie(lattice, frames, size, seed=1, drift=(0.5, 0.3), pixel_size=0.01, **REAL)
                t_dyn = time.perf_counter() - t0
                k = iter(range(10**9))
                best, med = _best(lambda: mov.frame(next(k) % frames))
                base, _ = _best(lambda: _splat_baseline(mov, 0))
                n_cols = int((mov._render.frame == 0).sum())
                results.append(dict(lattice=lattice, size=size, columns=n_cols,
                                    frames_per_s=1 / med, best_frames_per_s=1 / best,
                                    baseline_frames_per_s=1 / base, ratio_to_baseline=base / med,
                                    dynamics_s_per_frame=t_dyn / frames))
                print(results[-1])
    OUT.mkdir(exist_ok=True)
    (OUT / "simulate.json").write_text(json.dumps(dict(machine=platform.processor() or platform.machine(),
                                                       threads=1, results=results), indent=2))
    lines = ["# Simulation speed (one core)", "",
             "`python benchmarks/bench_simulate.py`; one thread; 10 pm/px; image + class mask per frame with "
             "line jitter, scan drift, background, contamination, Poisson noise and outliers on. Baseline: "
             "nearest-pixel splat + `gaussian_filter` + Poisson on the same columns, same run.", "",
             "| lattice | px | columns in frame | frames/s (median) | baseline frames/s | time vs baseline | dynamics s/frame |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['lattice']} | {r['size']}² | {r['columns']} | {r['frames_per_s']:.1f} | "
                     f"{r['baseline_frames_per_s']:.1f} | {1 / r['ratio_to_baseline']:.1f}× | {r['dynamics_s_per_frame']:.4f} |")
    (OUT / "simulate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    from _cli import options

    options(__doc__)
    main()

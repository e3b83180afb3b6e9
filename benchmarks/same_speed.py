"""Is the working tree as fast as a base commit? Speed checks for refactors, side by side.

Times the package's main stages in a clean copy of ``--base`` (``git archive``) and in the working
tree, each measurement a fresh Python process, the trees alternating so that a busy machine slows
both alike:

* ``find_atoms`` on 4 simulated graphene frames of 512² px at 20 pm/px (the network's sampling),
  with chemical identification (the default) and without;
* ``track`` on the truth of a 60-frame 192² movie with hops, vacancy moves and 3↔4-fold switches;
* ``virtual_image`` (HAADF) of a 48 × 48 scan of 96² patterns (float32, 85 MB) held in memory;
* ``run`` on a 24-frame 256² Zarr movie with a local cluster of 2 single-threaded workers
  (frames/s of the compute, cluster start excluded).

Each process warms up once, then reports the median of ``--inner`` calls. Writes
``benchmarks/results/same_speed.md`` and ``.json`` (every measurement), with the median over
``--repeats`` processes per tree and the ratio now/base per stage.

Run: ``python benchmarks/same_speed.py --base COMMIT [--repeats 3] [--name NAME]`` (about 10 minutes on
2 cores). Kept: ``same_speed.md`` (the architecture refactor against ``97c43c9``) and
``same_speed_cpu_inference.md`` (BatchNorm folding and channels-last against ``c70c88b``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from committed_tree import extract, resolve

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "same_speed.md"

#: Run in each tree (``cwd`` = the tree); prints one JSON line of seconds per stage.
PROBE = r'''
import json, statistics, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np
import torch
torch.set_num_threads(2)
import stemflow
from stemflow.simulate import simulate_image, simulate_movie
try:
    from stemflow.tracking import track
except ImportError:                      # trees from before the tracking/ rename
    from stemflow.track import track
inner, store = int(sys.argv[1]), sys.argv[2]

def timed(f):
    f()
    ts = []
    for _ in range(inner):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

frames = np.stack([simulate_image("graphene", 512, pixel_size=0.02, seed=20 + i,
                                  defects={"Si1C3": 4, "V1": 2}).image for i in range(4)])
model = stemflow.load_model()
out = {}
out["find_atoms, 4 × 512², identify"] = timed(lambda: stemflow.find_atoms(frames, pixel_size=0.02, model=model))
out["find_atoms, 4 × 512², no identify"] = timed(
    lambda: stemflow.find_atoms(frames, pixel_size=0.02, model=model, identify=False))
mov = simulate_movie("graphene", frames=60, shape=(192, 192), seed=9, pixel_size=0.012, drift=(0.3, -0.2),
                     defects={"Si1C3": 4, "Si1C4": 2, "V1": 2}, rates={"hop": 0.2, "switch34": 0.1, "vacancy": 0.2})
atoms = mov.atoms
out["track, 60 frames of truth"] = timed(lambda: track(atoms, 0.012))
import xarray as xr
scan = xr.DataArray(np.random.default_rng(0).random((48, 48, 96, 96), dtype=np.float32),
                    dims=("scan_y", "scan_x", "k_y", "k_x"))
da4 = stemflow.open_stem(scan, pixel_size=0.02)
from stemflow.parallel import virtual_image
out["virtual_image, 48² × 96² in memory"] = timed(lambda: virtual_image(da4, inner=20, outer=45).compute(scheduler="threads"))
import shutil, tempfile
from stemflow.parallel import run
fps = []
for _ in range(inner):
    d = tempfile.mkdtemp()
    s = run(store, d, n_workers=2, progress=False, track=False)
    fps.append(s.frames_per_second)
    shutil.rmtree(d)
out["run, 24 × 256² Zarr (s per frame)"] = 1.0 / statistics.median(fps)
print(json.dumps(out))
'''


def _measure(tree: Path, inner: int, store: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    r = subprocess.run([sys.executable, "-c", PROBE, str(inner), store], cwd=tree, env=env, capture_output=True,
                       text=True)
    if r.returncode:
        raise SystemExit(f"the probe failed in {tree}:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="commit to compare the working tree with")
    ap.add_argument("--repeats", type=int, default=3, help="processes per tree")
    ap.add_argument("--inner", type=int, default=3, help="timed calls per process (after one warm-up)")
    ap.add_argument("--name", default="same_speed", help="results file name in benchmarks/results (no suffix)")
    args = ap.parse_args(argv)
    head = resolve("HEAD")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        commit = extract(args.base, base)
        store = str(Path(tmp) / "movie.zarr")
        subprocess.run([sys.executable, "-c",
                        "import sys; from stemflow.simulate import simulate_movie; from stemflow.io import write_movie; "
                        "m = simulate_movie('graphene', frames=24, shape=(256, 256), seed=4, pixel_size=0.02, "
                        "defects={'Si1C3': 3}); write_movie(m, sys.argv[1], progress=False, frame_chunk_mb=0.6)", store],
                       cwd=ROOT, check=True)
        trees = {"base": base, "now": ROOT}
        res = {t: [] for t in trees}
        for i in range(args.repeats):
            for name, tree in (trees.items() if i % 2 == 0 else reversed(list(trees.items()))):
                res[name].append(_measure(tree, args.inner, store))
                print(name, res[name][-1], flush=True)
    stages = list(res["now"][0])
    rows = []
    for st in stages:
        b = statistics.median(r[st] for r in res["base"])
        n = statistics.median(r[st] for r in res["now"])
        rows.append(f"| {st} | {b:.3f} | {n:.3f} | {n / b:.2f} |")
    lines = ["# Same speed", "",
             f"Written by `benchmarks/same_speed.py --name {args.name}`: seconds per call, medians of {args.repeats} fresh processes "
             f"per tree (each the median of {args.inner} calls after a warm-up), commit `{commit[:8]}` (base) "
             f"against the working tree at `{head[:8]}`, alternating. 2 torch threads; the machine is shared, so "
             "read the ratios.", "",
             "| stage | base s | now s | now / base |", "|---|---:|---:|---:|", *rows]
    out = OUT.with_name(f"{args.name}.md")
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"base": commit, "now": head, "measurements": res}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Do two commits give the same tables? Behaviour checks for refactors.

Runs a fixed set of cases — ``find_atoms`` on simulated graphene (plain, refined with the lattice
prior), WS2 (refined), Pt on an amorphous support and a 6-frame movie with hops in batches, then ``track``
on that movie's atoms and on the truth of a 30-frame movie with hops — in a clean copy of ``--base`` (``git archive``) and in the working tree,
each in its own process, and compares every table cell by cell. Writes
``benchmarks/results/same_results.md``; exits 1 when any table differs.

Run: ``python benchmarks/same_results.py --base COMMIT [--name NAME]`` (about 2 minutes on 2 cores). Kept:
``same_results.md`` (the architecture refactor) and ``same_results_cpu_speed.md`` (the faster distance
transform and spectrum rings).
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

from committed_tree import extract, resolve

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "same_results.md"

#: Run in each tree (``cwd`` = the tree, so ``import stemflow`` is that tree's); pickles the tables.
CASES = r'''
import pickle, sys
import numpy as np
import stemflow
from stemflow.simulate import simulate_image, simulate_movie
try:
    from stemflow.tracking import track
except ImportError:                      # trees from before the tracking/ rename
    from stemflow.track import track
from stemflow import find_atoms
s1 = simulate_image("graphene", 192, pixel_size=0.012, seed=3, defects={"Si1C3": 2, "V1": 1})
s2 = simulate_image("ws2", 160, pixel_size=0.011, seed=4)
s3 = simulate_image("amorphous", 160, pixel_size=0.015, seed=5)
m = simulate_movie("graphene", frames=6, shape=(128, 128), seed=6, pixel_size=0.012, defects={"Si1C3": 3, "V1": 1},
                   rates={"hop": 0.3, "switch34": 0.2, "vacancy": 0.3})
stack = np.stack([m.frame(i)[0] for i in range(6)])
out = {
    "find_atoms graphene": find_atoms(s1.image, pixel_size=0.012),
    "find_atoms graphene, lattice prior": find_atoms(s1.image, pixel_size=0.012, lattice_prior=True),
    "find_atoms WS2, refined": find_atoms(s2.image, pixel_size=0.011, lattice="ws2", refine=True),
    "find_atoms Pt on amorphous": find_atoms(s3.image, pixel_size=0.015, lattice="amorphous"),
    "find_atoms 6-frame movie (batches of 4)": find_atoms(stack, pixel_size=0.012, batch_size=4, border=3),
    "find_atoms graphene 512², 20 pm/px": find_atoms(simulate_image("graphene", 512, pixel_size=0.02, seed=1).image,
                                                   pixel_size=0.02, identify=False),
    "find_atoms MoS2 384², refined": find_atoms(simulate_image("mos2", 384, pixel_size=0.015, seed=8).image,
                                              pixel_size=0.015, lattice="mos2", refine=True),
}
tr = track(out["find_atoms 6-frame movie (batches of 4)"], 0.012)
out.update({"track: trajectories": tr[0], "track: events": tr[1], "track: drift": tr[2]})
m2 = simulate_movie("graphene", frames=30, shape=(160, 160), seed=7, pixel_size=0.012, drift=(0.2, -0.1),
                    defects={"Si1C3": 4, "Si1C4": 2, "V1": 2}, rates={"hop": 0.2, "switch34": 0.1, "vacancy": 0.2})
tr = track(m2.atoms, 0.012)
out.update({"track 30 frames of truth: trajectories": tr[0], "track 30 frames of truth: events": tr[1],
            "track 30 frames of truth: drift": tr[2]})
tr = track(out["find_atoms 6-frame movie (batches of 4)"], 0.012, images=stack, memory=1)
out.update({"track with images, memory 1: trajectories": tr[0], "track with images, memory 1: events": tr[1],
            "track with images, memory 1: drift": tr[2]})
chunks = [g for _, g in m2.atoms.groupby(m2.atoms["frame"] // 7)]
tr = track(iter(chunks), 0.012, drift=m2.drift, labels=("dopant",), persist=None)
out.update({"track streamed, drift given, no persist: trajectories": tr[0],
            "track streamed, drift given, no persist: events": tr[1]})
tr = track(m2.atoms, 0.012, drift=False, labels=None, search_range=0.05)
out.update({"track every row, no drift: trajectories": tr[0], "track every row, no drift: events": tr[1]})
pickle.dump({k: v.reset_index(drop=True) for k, v in out.items()}, open(sys.argv[1], "wb"))
'''


def _tables(tree: Path, dest: Path) -> dict:
    script = dest.with_suffix(".py")
    script.write_text(CASES)
    subprocess.run([sys.executable, str(script), str(dest)], cwd=tree, check=True)
    with open(dest, "rb") as fh:
        return pickle.load(fh)


def _compare(a, b) -> str:
    import numpy as np
    import pandas as pd

    if list(a.columns) != list(b.columns):
        return f"columns differ: {sorted(set(a.columns) ^ set(b.columns))}"
    if len(a) != len(b):
        return f"rows {len(a)} → {len(b)}"
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        return "identical"
    except AssertionError:
        num = [c for c in a.columns if pd.api.types.is_numeric_dtype(a[c])]
        worst = max((float(np.nanmax(np.abs(a[c].to_numpy(float) - b[c].to_numpy(float)))) for c in num), default=0.0)
        return f"differs (largest numeric difference {worst:.3g})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="commit to compare the working tree with")
    ap.add_argument("--name", default="same_results", help="results file name in benchmarks/results (no suffix)")
    args = ap.parse_args(argv)
    head = resolve("HEAD")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        commit = extract(args.base, base)
        old = _tables(base, Path(tmp) / "old.pkl")
        new = _tables(ROOT, Path(tmp) / "new.pkl")
    rows = [(k, len(old[k]), _compare(old[k], new[k])) for k in old]
    lines = ["# Same results across a refactor", "",
             f"Written by `benchmarks/same_results.py`: the tables of {len(rows)} cases computed by commit "
             f"`{commit[:8]}` and by the working tree at `{head[:8]}`, compared cell by cell.", "",
             "| case | rows | result |", "|---|---:|---|"]
    lines += [f"| {k} | {n} | {r} |" for k, n, r in rows]
    OUT.with_name(f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r == "identical" for _, _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

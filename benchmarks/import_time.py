"""How long ``import stemflow`` takes, and what it pulls in: the working tree against a base commit.

Each measurement is a fresh Python process that imports stemflow and reports the wall time of
the import and whether torch and dask were imported; ``--repeats`` processes per tree, alternating
the trees so that a busy machine slows both alike. Also times ``xr.open_dataset`` on a small
NetCDF file (the xarray backend's probe loads every installed engine). Writes
``benchmarks/results/import_time.md``.

Run: ``python benchmarks/import_time.py --base COMMIT [--repeats 5]`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from committed_tree import extract, resolve

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "import_time.md"

PROBE = r'''
import json, sys, time
what = sys.argv[1]
t0 = time.perf_counter()
if what == "import":
    import stemflow
else:
    import xarray as xr
    t0 = time.perf_counter()
    xr.open_dataset(sys.argv[2]).close()
print(json.dumps({"s": time.perf_counter() - t0, "torch": "torch" in sys.modules, "dask": "dask" in sys.modules}))
'''


def _measure(tree: Path, what: str, netcdf: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, what, netcdf], cwd=tree, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="commit to compare the working tree with")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    head = resolve("HEAD")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        commit = extract(args.base, base)
        nc = Path(tmp) / "plain.nc"
        subprocess.run([sys.executable, "-c", "import numpy as np, xarray as xr, sys; "
                        "xr.Dataset({'a': ('x', np.arange(3.0))}).to_netcdf(sys.argv[1])", str(nc)], check=True)
        trees = {"base": base, "now": ROOT}
        res = {(t, w): [] for t in trees for w in ("import", "netcdf")}
        for _ in range(args.repeats):
            for what in ("import", "netcdf"):
                for name, tree in trees.items():
                    res[(name, what)].append(_measure(tree, what, str(nc)))
    rows = []
    for what, label in (("import", "`import stemflow`"), ("netcdf", "`xr.open_dataset` on a NetCDF file")):
        b = statistics.median(r["s"] for r in res[("base", what)])
        n = statistics.median(r["s"] for r in res[("now", what)])
        torch_b = any(r["torch"] for r in res[("base", what)])
        torch_n = any(r["torch"] for r in res[("now", what)])
        rows.append(f"| {label} | {b:.2f} | {n:.2f} | {b / n:.1f}× | {'yes' if torch_b else 'no'} | "
                    f"{'yes' if torch_n else 'no'} |")
    lines = ["# Import time", "",
             f"Written by `benchmarks/import_time.py`: medians of {args.repeats} fresh processes per tree, "
             f"commit `{commit[:8]}` (base) against the working tree at `{head[:8]}`, alternating.", "",
             "| what | base s | now s | faster | base imports torch | now imports torch |",
             "|---|---:|---:|---:|---|---|", *rows]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

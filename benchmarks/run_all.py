"""Run every benchmark in turn (``make bench``); each writes its own ``benchmarks/results/*.md``.

Takes about an hour on the 2-core CPU machine. The baseline U-Net of ``bench_inference.py`` is
trained first if ``benchmarks/_cache/unet16.pt`` is missing (≈ 40 min). Comparisons with other
packages run only where they are installed in separate environments (atomap for
``localisation.py``, LiberTEM for ``bench_virtual.py``: see their docstrings). A failing
benchmark is reported and the rest still run; the exit status says whether all passed.

Run: ``python benchmarks/run_all.py [NAME ...]`` (names without ``.py``; default: all).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
#: In order: cheap first, then the ones that reuse what earlier ones cached.
BENCHMARKS = ["bench_simulate", "heavy_atom_separability", "heavy_atom_prob", "real_data", "pixel_size_error", "transfer", "bench_inference",
              "localisation", "lattice_prior",
              "chem_accuracy", "occupancy_background", "dopant_gate", "vacuum_holes", "bench_track", "lowdose_movies", "registration", "bench_parallel", "bench_virtual"]


def main(names) -> int:
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names or BENCHMARKS:
        if name == "bench_inference" and not (HERE / "_cache" / "unet16.pt").exists():
            print("training the baseline U-Net first (benchmarks/baseline_unet.py)", flush=True)
            if subprocess.run([sys.executable, str(HERE / "baseline_unet.py")]).returncode:
                failed.append("baseline_unet")
                continue
        t0 = time.perf_counter()
        print(f"=== {name}", flush=True)
        rc = subprocess.run([sys.executable, str(HERE / f"{name}.py")], cwd=HERE.parent).returncode
        print(f"=== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

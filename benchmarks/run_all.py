"""Run every benchmark in turn (``make bench``); each writes its own ``benchmarks/results/*.md``.

Takes about an hour and a half on the 2-core CPU machine. The baseline U-Net of
``bench_inference.py`` is trained first if ``benchmarks/_cache/unet16.pt`` is missing (≈ 40 min).
Comparisons with other packages run only where they are installed in separate environments
(atomap for ``localisation.py``, LiberTEM for ``bench_virtual.py``: see their docstrings). The
multislice benchmarks score frames that abTEM simulated into ``benchmarks/_cache`` (``--generate``
in an environment with the ``sim`` extra, 17–42 min each); without that cache they are skipped
with a message. Scripts left out, and why, are in :data:`NOT_RUN`. A failing benchmark is
reported and the rest still run; the exit status says whether all passed.

Run: ``python benchmarks/run_all.py [NAME ...]`` (names without ``.py``; default: all).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
#: In order: cheap first, then the ones that reuse what earlier ones cached.
BENCHMARKS = ["bench_simulate", "heavy_atom_separability", "heavy_atom_prob", "real_data", "pixel_size_error", "calibration_check", "heavy_elements", "dispersion", "heavy_hops", "transfer", "bench_inference",
              "localisation", "lattice_prior",
              "chem_accuracy", "occupancy_background", "dopant_gate", "vacuum_holes", "bench_track", "lowdose_movies", "registration", "bench_parallel", "bench_virtual",
              "flips", "pt_matched_synthetic", "si_matched_synthetic", "sim_vs_real", "reliability", "adapt_real", "fine_tune_relax",
              "abtem_set", "abtem_sweep", "abtem_physics", "abtem_phonons", "abtem_supports"]

#: Benchmarks that score a cache another environment made: skipped, with the way to make it, when missing.
NEEDS = {name: (HERE / "_cache" / folder, f"python benchmarks/{maker}.py --generate (with abTEM, the `sim` extra)")
         for name, folder, maker in [("abtem_set", "abtem", "abtem_set"), ("abtem_sweep", "abtem", "abtem_set"),
                                     ("abtem_physics", "abtem_physics", "abtem_physics"),
                                     ("abtem_phonons", "abtem_phonons", "abtem_phonons"),
                                     ("abtem_supports", "abtem_supports", "abtem_supports")]}

#: Scripts in ``benchmarks/`` that this does not run, and why.
NOT_RUN = {
    "bench_gpu": "needs a GPU: run it on the device machine",
    "pt_unet_cv": "trains five U-Nets: minutes on a GPU, hours on 2 CPU cores",
    "same_results": "compares two commits: needs --base COMMIT",
    "same_speed": "compares two commits: needs --base COMMIT",
    "import_time": "compares two commits: needs --base COMMIT",
    "card_metrics": "writes measured figures into a model card: needs the card's path",
    "mutation": "mutation testing of the test suite: hours",
    "baseline_unet": "trains the U-Net bench_inference compares with (run first when it is missing)",
    "committed_tree": "a helper of the commit comparisons, not a benchmark",
    "run_all": "this script",
}


def main(names) -> int:
    for name in sorted(set(names) & set(NOT_RUN)):
        print(f"{name} is not run by run_all: {NOT_RUN[name]}", file=sys.stderr)
        return 2
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
        if name in NEEDS and not NEEDS[name][0].is_dir():
            print(f"=== {name}: skipped, {NEEDS[name][0]} is missing: make it with {NEEDS[name][1]}", flush=True)
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
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}")
    sys.exit(main(parser.parse_args().names))

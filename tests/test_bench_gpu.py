"""benchmarks/bench_gpu.py stays ready for the day a GPU is lent: every path runs (on the CPU,
tiny sizes) and without CUDA it stops with a message instead of a traceback."""

import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def test_every_path_of_the_gpu_benchmark_runs_in_a_dry_run():
    r = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for case in ("| fp32 | 1 |", "| bf16 + channels_last + pinned prefetch | 2 |", "find_atoms (network + blobs",
                 "stemflow.run end to end (no identify)", "stemflow.run end to end (identify)"):
        assert case in r.stdout, case
    if not torch.cuda.is_available():
        r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "no CUDA device here" in r.stderr and "Traceback" not in r.stderr

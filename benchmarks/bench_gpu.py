"""GPU throughput of the network and of a whole run, for when a GPU is lent.

Measures, side by side in one process on one GPU, frames/s of 512² uint16 frames (simulated at the
network's sampling, 20 pm/px, so no resampling) through the bundled network:

* fp32 and bf16 autocast, across batch sizes (``--batches``);
* bf16 with ``channels_last``; with ``torch.compile`` (inductor); with a captured CUDA graph;
* host → device feeding: pageable copies vs pinned host memory with a separate copy stream
  (prefetching the next batch while the network runs on this one);
* ``stemflow.find_atoms`` as users call it (network + blob finding on the host);
* an end-to-end ``stemflow.run`` on a ``LocalCUDACluster`` (dask-cuda), one worker per GPU,
  over a Zarr movie written here (``--run-frames``), identification off and on.

Ratios are against fp32, batch 1, pageable copies, measured in the same run. Writes
``benchmarks/results/gpu.md`` and ``.json``. Without CUDA it stops with a message, or with
``--dry-run`` checks every path on the CPU with tiny sizes (what the tests of this script do).

Run on the GPU machine: ``python benchmarks/bench_gpu.py`` (about 5 minutes on one H200).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).parent / "results"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frames(n: int, size: int) -> np.ndarray:
    from stemflow.simulate import simulate_image

    imgs = [simulate_image("graphene", size, pixel_size=0.02, seed=100 + i, defects={"Si1C3": 0.2, "V1": 0.1}).image
            for i in range(min(n, 8))]
    stack = np.stack([imgs[i % len(imgs)] for i in range(n)])
    return np.clip(stack, 0, 65535).astype(np.uint16)


def throughput(fn, n_frames: int, device, repeat: int) -> float:
    """Frames/s: the median of ``repeat`` timed calls after two warm-ups."""
    fn()
    fn()
    _sync(device)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return n_frames / statistics.median(ts)


def network_cases(model, stack: np.ndarray, batches, device, repeat: int, compile_: bool, graphs: bool) -> list[dict]:
    from stemflow.preprocess import normalize

    net = model.net.eval()
    host = torch.from_numpy(np.stack([normalize(f) for f in stack.astype(np.float32)])[:, None])
    rows = []

    def run(batch: int, dtype=None, channels_last=False, pinned=False, module=None):
        mod = module or net
        src = host.pin_memory() if pinned and device.type == "cuda" else host
        stream = torch.cuda.Stream(device) if pinned and device.type == "cuda" else None

        @torch.inference_mode()
        def go():
            nxt = None
            for i in range(0, len(src), batch):
                if stream is not None:              # copy the next batch while this one computes
                    with torch.cuda.stream(stream):
                        x = nxt if nxt is not None else src[i:i + batch].to(device, non_blocking=True)
                        nxt = src[i + batch:i + 2 * batch].to(device, non_blocking=True) if i + batch < len(src) else None
                    torch.cuda.current_stream(device).wait_stream(stream)
                else:
                    x = src[i:i + batch].to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                if dtype is not None:
                    with torch.autocast(device.type, dtype=dtype):
                        y = mod(x)
                else:
                    y = mod(x)
                y.float().softmax(1)
        return go

    base = None
    for b in batches:
        for name, kw in (("fp32", {}), ("bf16", {"dtype": torch.bfloat16}),
                         ("bf16 + channels_last", {"dtype": torch.bfloat16, "channels_last": True}),
                         ("bf16 + channels_last + pinned prefetch", {"dtype": torch.bfloat16, "channels_last": True,
                                                                    "pinned": True})):
            fps = throughput(run(b, **kw), len(host), device, repeat)
            base = base or fps
            rows.append({"case": name, "batch": b, "frames_per_s": fps, "vs_fp32_batch1": fps / base})
    best = max(batches)
    if compile_:
        try:
            compiled = torch.compile(net, mode="max-autotune-no-cudagraphs" if device.type == "cuda" else "default")
            fps = throughput(run(best, dtype=torch.bfloat16, channels_last=True, module=compiled), len(host), device,
                             repeat)
            rows.append({"case": "bf16 + channels_last + torch.compile", "batch": best, "frames_per_s": fps,
                         "vs_fp32_batch1": fps / base})
        except Exception as e:  # inductor missing a compiler, etc.: say so in the table
            rows.append({"case": f"torch.compile failed: {type(e).__name__}", "batch": best, "frames_per_s": float("nan"),
                         "vs_fp32_batch1": float("nan")})
    if graphs and device.type == "cuda":
        static_in = torch.zeros((best, 1, *host.shape[2:]), device=device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            s = torch.cuda.Stream(device)
            s.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(s), torch.autocast("cuda", dtype=torch.bfloat16):
                for _ in range(3):
                    net(static_in)
            torch.cuda.current_stream(device).wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g), torch.autocast("cuda", dtype=torch.bfloat16):
                static_out = net(static_in)
        pinned = host.pin_memory()

        def replay():
            with torch.inference_mode():
                for i in range(0, len(pinned) - best + 1, best):
                    static_in.copy_(pinned[i:i + best], non_blocking=True)
                    g.replay()
                    static_out.float()
        n = (len(host) // best) * best
        fps = throughput(replay, n, device, repeat)
        rows.append({"case": "bf16 + channels_last + CUDA graph", "batch": best, "frames_per_s": fps,
                     "vs_fp32_batch1": fps / base})
    return rows


def find_atoms_case(model, stack, device, repeat: int, batch: int) -> dict:
    import stemflow

    fps = throughput(lambda: stemflow.find_atoms(stack, pixel_size=0.02, model=model, batch_size=batch,
                                                 identify=False), len(stack), device, repeat)
    return {"case": "find_atoms (network + blobs, no identify)", "batch": batch, "frames_per_s": fps}


def run_case(n_frames: int, size: int, device, identify: bool) -> dict:
    import stemflow
    from stemflow.io import write_movie

    work = Path(tempfile.mkdtemp())
    mov = stemflow.simulate_movie("graphene", frames=n_frames, shape=(size, size), pixel_size=0.02, seed=3,
                                  defects={"Si1C3": 0.2, "V1": 0.1})
    paths = write_movie(mov, work / "movie.zarr", progress=False, frame_chunk_mb=64)
    if device.type == "cuda":
        from dask_cuda import LocalCUDACluster
        from distributed import Client

        with LocalCUDACluster(resources={"GPU": 1}) as cluster, Client(cluster) as client:
            s = stemflow.run(paths["store"], work / "run", client=client, progress=False, track=False,
                             identify=identify, batch_size=16)
    else:
        s = stemflow.run(paths["store"], work / "run", n_workers=1, progress=False, track=False,
                         identify=identify)
    return {"case": f"stemflow.run end to end ({'identify' if identify else 'no identify'})", "batch": 16,
            "frames_per_s": s.frames_per_second, "workers": s.workers}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=256, help="frames per timed pass")
    ap.add_argument("--size", type=int, default=512, help="frame side, px")
    ap.add_argument("--batches", default="1,4,16,64", help="batch sizes")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--run-frames", type=int, default=512, help="frames of the end-to-end run")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check that every path works")
    a = ap.parse_args(argv)
    from stemflow import load_model

    if a.dry_run:
        device = torch.device("cpu")
        a.frames, a.size, a.batches, a.repeat, a.run_frames = 4, 64, "1,2", 1, 4
    elif not torch.cuda.is_available():
        print("no CUDA device here: run this on a machine with a GPU (or pass --dry-run to check it on CPU)",
              file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    batches = [int(b) for b in a.batches.split(",")]
    model = load_model(device=device)
    stack = frames(a.frames, a.size)
    rows = network_cases(model, stack, batches, device, a.repeat, not a.no_compile and not a.dry_run,
                         graphs=True)
    rows.append(find_atoms_case(model, stack, device, a.repeat, max(batches)))
    for identify in (False, True):
        rows.append(run_case(a.run_frames, a.size, device, identify))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    out = OUT / ("gpu-dry-run" if a.dry_run else "gpu")
    lines = [f"# GPU throughput ({name})", "",
             f"Written by `benchmarks/bench_gpu.py`{' --dry-run (CPU, tiny sizes: checks the paths, not a figure)' if a.dry_run else ''}: "
             f"frames/s of {a.size}² uint16 frames, medians of {a.repeat} passes over {a.frames} frames after two "
             f"warm-ups; torch {torch.__version__}. Ratios against fp32, batch 1, measured in the same run.", "",
             "| case | batch | frames/s | vs fp32 batch 1 |", "|---|---:|---:|---:|"]
    for r in rows:
        ratio = r.get("vs_fp32_batch1")
        lines.append(f"| {r['case']} | {r['batch']} | {r['frames_per_s']:.1f} | "
                     f"{'' if ratio is None else f'{ratio:.2f}'} |")
    if not a.dry_run:
        OUT.mkdir(exist_ok=True)
        out.with_suffix(".md").write_text("\n".join(lines) + "\n")
        out.with_suffix(".json").write_text(json.dumps({"device": name, "rows": rows}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Virtual-detector throughput on a 4D-STEM Zarr: stemflow vs NumPy in memory vs LiberTEM.

A (scan_y, scan_x, k_y, k_x) uint16 Zarr of Poisson counts is written lazily chunk by chunk
(zarr's default compression, chunks of whole patterns, ~128 MB). One annular detector is then
applied by

* ``stemflow.parallel.virtual_image`` on the Zarr (dask, threads = cores);
* NumPy on the array already in memory: ``(data * mask).sum(axis=(2, 3))`` (one thread) and
  stemflow's chunk kernel ``reduce_patterns`` on the in-memory array (one thread);
* LiberTEM's ``ApplyMasksUDF`` on the same Zarr opened as a dask array (LiberTEM's own local
  Dask executor, one worker per core) — when LiberTEM is installed in the Python given by
  ``--libertem-python`` (an optional, benchmark-only venv: ``python -m venv /tmp/lt-venv &&
  /tmp/lt-venv/bin/pip install libertem zarr``).

GB/s are of uncompressed data (bytes of the array / wall time), best of ``--repeat`` after a
warm-up; the Zarr read paths run in turn for ``--rounds`` rounds and report the median round, so
the ratio to the path before compares runs under the same load. The results are checked equal to
the NumPy reference. Run:
``python benchmarks/bench_virtual.py [--gb 4] [--libertem-python /tmp/lt-venv/bin/python]``.
Writes ``benchmarks/results/virtual.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results"

LIBERTEM_SCRIPT = r"""
import json, sys, time
import numpy as np, dask.array as da, zarr
import libertem.api as lt
from libertem.udf.masks import ApplyMasksUDF
path, repeat, inner, outer, kps = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
if __name__ == "__main__":
    z = zarr.open_array(path + "/data", mode="r")
    arr = da.from_zarr(z)
    ky, kx = arr.shape[-2:]
    r = np.hypot(np.arange(ky)[:, None] - (ky - 1) / 2, np.arange(kx)[None, :] - (kx - 1) / 2) * kps
    mask = ((r >= inner) & (r <= outer)).astype(np.float32)
    t0 = time.perf_counter()
    ctx = lt.Context()
    t_ctx = time.perf_counter() - t0
    ds = ctx.load("dask", arr, sig_dims=2)
    udf = ApplyMasksUDF(mask_factories=[lambda: mask], mask_dtype=np.float32)
    res = ctx.run_udf(dataset=ds, udf=udf)  # warm-up (numba compilation)
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = ctx.run_udf(dataset=ds, udf=udf)
        best.append(time.perf_counter() - t0)
    img = np.asarray(res["intensity"].data)[..., 0]
    np.save(path + ".libertem.npy", img)
    native = None
    npy = path.replace("scan.zarr", "scan.npy")
    if len(sys.argv) > 6:                    # LiberTEM's own reader on the same bytes as .npy
        ds_n = ctx.load("npy", path=npy, sig_dims=2)
        res = ctx.run_udf(dataset=ds_n, udf=udf)  # warm-up
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            res = ctx.run_udf(dataset=ds_n, udf=udf)
            times.append(time.perf_counter() - t0)
        native = min(times)
        np.save(path + ".libertem-npy.npy", np.asarray(res["intensity"].data)[..., 0])
    import libertem
    print(json.dumps({"seconds": min(best), "native_npy_seconds": native, "context_s": t_ctx,
                      "version": libertem.__version__, "workers": len(ctx.executor.get_available_workers())}))
    ctx.close()
"""


def write_4d(path: Path, gb: float, k: int, seed: int = 0, compressors=None):
    """Write ~``gb`` GB of uint16 Poisson patterns (k × k) to Zarr, chunk by chunk; return the shape.
    ``compressors``: as :func:`stemflow.to_zarr` (None: stemflow's default; ``"zarr"``: zarr's)."""
    import dask
    import dask.array as dsa

    import stemflow

    n = int(np.sqrt(gb * 1e9 / (k * k * 2)))
    rows = max(1, int(128e6 // (n * k * k * 2)))
    yy, xx = np.mgrid[:k, :k]
    r = np.hypot(yy - (k - 1) / 2, xx - (k - 1) / 2)
    lam = np.where(r < k / 8, 20.0, 2.0 * (k / 8) ** 2 / np.maximum(r, 1) ** 2).astype(np.float32)

    def block(block_info=None):
        (a, b) = block_info[None]["array-location"][0]
        rng = np.random.default_rng([seed, a])
        return rng.poisson(lam, size=(b - a, n, k, k)).astype(np.uint16)

    chunks = ((rows,) * (n // rows) + ((n % rows,) if n % rows else ()), (n,), (k,), (k,))
    arr = dsa.map_blocks(block, chunks=chunks, dtype=np.uint16, meta=np.empty((0,) * 4, np.uint16))
    da = stemflow.open_stem(arr, pixel_size=0.02, check_finite=False)
    da.attrs.update(k_pixel_size=1.0, k_pixel_size_units="mrad")
    shutil.rmtree(path, ignore_errors=True)
    with dask.config.set(scheduler="threads"):
        # stemflow's defaults: Blosc LZ4 + bit shuffle in shards of ~4 MB inner chunks; the file
        # "before": zarr's default compression (Zstandard), unsharded chunks
        stemflow.to_zarr(da, path, name="data", compressors=compressors,
                         **({"shards": None} if compressors == "zarr" else {}))
    return (n, n, k, k)


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def open_with(path, pipeline: str):
    """open_stem with the given read pipeline (``zarr`` or ``auto``: zarrs when installed)."""
    import stemflow

    old = os.environ.get("STEMFLOW_ZARR_PIPELINE")
    os.environ["STEMFLOW_ZARR_PIPELINE"] = pipeline
    try:
        return stemflow.open_stem(path, check_finite=False)
    finally:
        if old is None:
            del os.environ["STEMFLOW_ZARR_PIPELINE"]
        else:
            os.environ["STEMFLOW_ZARR_PIPELINE"] = old


def best_of(fn, repeat):
    fn()
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        t.append(time.perf_counter() - t0)
    return min(t), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=0.5, help="size of the 4D input, GB uncompressed")
    ap.add_argument("--k", type=int, default=128, help="detector pixels per side")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the Zarr read paths in turn (median reported)")
    ap.add_argument("--libertem-python", default=None, help="python of a venv with libertem and zarr")
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    a = ap.parse_args()
    import dask
    from threadpoolctl import threadpool_limits

    import stemflow
    from stemflow.detectors import detector_mask, reduce_patterns
    from stemflow.parallel import virtual_image

    tmp = Path(a.tmp) / f"stemflow-bench-virtual-{os.getpid()}"
    tmp.mkdir(parents=True)
    path = tmp / "scan.zarr"
    inner, outer = a.k / 4, a.k / 2 - 2  # mrad at 1 mrad/px
    rows = []
    meta = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_avg_at_start": os.getloadavg()}
    try:
        t0 = time.perf_counter()
        shape = write_4d(path, a.gb, a.k)
        meta.update(shape=shape, write_s=time.perf_counter() - t0)
        zstd_path = tmp / "scan-zstd.zarr"                 # the same bytes in zarr's default compression
        write_4d(zstd_path, a.gb, a.k, compressors="zarr")
        nbytes = int(np.prod(shape)) * 2
        meta.update(ratio_stemflow=nbytes / store_bytes(path), ratio_zarr_default=nbytes / store_bytes(zstd_path))
        import zarr as _zarr
        z_ours = _zarr.open_group(str(path), mode="r")["data"]
        meta.update(stemflow_chunks=list(z_ours.chunks), stemflow_shards=list(z_ours.shards or []))
        try:
            import zarrs
            meta["zarrs"] = zarrs.__version__ if hasattr(zarrs, "__version__") else "installed"
        except ImportError:
            meta["zarrs"] = None
        import zarr
        meta["zarr"] = zarr.__version__
        # the read path before (zarr's default Zstd file, zarr's own codec pipeline), then the new ones
        cases = [("zarr's default file (Zstd), zarr's own codec pipeline: the path before", zstd_path, "zarr"),
                 ("zarr's default file (Zstd), zarrs codec pipeline", zstd_path, "auto"),
                 ("stemflow's file (Blosc LZ4 + bit shuffle, sharded), zarr's own codec pipeline", path, "zarr"),
                 ("stemflow's file (Blosc LZ4 + bit shuffle, sharded), zarrs codec pipeline: the default", path, "auto")]
        img_first = None
        cases = [c for c in cases if c[2] != "auto" or meta["zarrs"] is not None]
        per_round = {label: [] for label, _, _ in cases}
        for _ in range(a.rounds):          # the read paths in turn, round after round: the same load for each
            for label, where, pipeline in cases:
                da_case = open_with(where, pipeline)
                with dask.config.set(scheduler="threads"):
                    t, img = best_of(lambda: virtual_image(da_case, "annular", inner=inner, outer=outer).values, a.repeat)
                per_round[label].append(t)
                if img_first is not None:
                    assert np.array_equal(img, img_first), "the Zarr read paths disagree"
                img_first = img
        for label, _, _ in cases:
            rows.append((f"stemflow `virtual_image` on the Zarr, dask threads — {label}", os.cpu_count(),
                         float(np.median(per_round[label]))))
        ratios = np.array(per_round[cases[0][0]]) / np.array(per_round[cases[-1][0]])
        meta["default_vs_before_per_round"] = [round(float(r), 3) for r in ratios]
        da = stemflow.open_stem(path, check_finite=False)
        meta["chunks"] = [c[0] for c in da.data.chunks]
        from stemflow.parallel import connect

        with connect(quiet=True) as client:              # the cluster `stemflow run` starts
            n_proc = len(client.nthreads())
            t_d, img_d = best_of(lambda: client.compute(
                virtual_image(da, "annular", inner=inner, outer=outer).data).result(), a.repeat)
        rows.append((f"stemflow `virtual_image` on the Zarr (LocalCluster, {n_proc} processes, as `stemflow run`), the default",
                     n_proc, t_d))
        data = np.asarray(da.data.compute(scheduler="threads"))
        mask = detector_mask(shape[2:], "annular", inner=inner, outer=outer, k_pixel_size=1.0)
        with threadpool_limits(1):
            t_np, ref = best_of(lambda: (data * mask).sum(axis=(2, 3)), a.repeat)
            rows.append(("NumPy `(data * mask).sum(axis=(2, 3))`, in memory", 1, t_np))
            t_k, kern = best_of(lambda: reduce_patterns(data, mask[..., None].astype(np.float64))[..., 0], a.repeat)
            rows.append(("stemflow chunk kernel `reduce_patterns`, in memory", 1, t_k))
        assert np.array_equal(img, ref) and np.array_equal(kern, ref) and np.array_equal(img_d, ref), \
            "results differ from the NumPy reference"
        # the same bytes as a .npy file: stemflow from the memory map vs a plain NumPy loop over it
        npy = tmp / "scan.npy"
        np.save(npy, data)
        del data
        mm = np.load(npy, mmap_mode="r")
        step = max(1, int(64e6 // (mm[0].nbytes)))           # ~64 MB of scan rows per block

        def numpy_loop():
            out = np.empty(mm.shape[:2])
            for i in range(0, mm.shape[0], step):
                out[i:i + step] = (mm[i:i + step] * mask).sum(axis=(2, 3))
            return out

        with threadpool_limits(1):
            t_mm, ref_mm = best_of(numpy_loop, a.repeat)
        rows.append((f"NumPy loop over the .npy memory map (blocks of {step} scan rows)", 1, t_mm))
        da_npy = stemflow.open_stem(npy, check_finite=False)
        with dask.config.set(scheduler="threads"):
            t_n, img_n = best_of(lambda: virtual_image(da_npy, "annular", inner=inner, outer=outer).values, a.repeat)
        rows.append(("stemflow `virtual_image` on the .npy (dask threads)", os.cpu_count(), t_n))
        meta["npy_chunks"] = [c[0] for c in da_npy.data.chunks]
        assert np.array_equal(ref_mm, ref) and np.array_equal(img_n, ref), "the .npy results differ from the reference"
        del mm, da_npy
        lt = {"status": "not run (pass --libertem-python)"}
        if a.libertem_python:
            script = tmp / "lt.py"
            script.write_text(LIBERTEM_SCRIPT)
            p = subprocess.run([a.libertem_python, str(script), str(path), str(a.repeat), str(inner), str(outer), "1.0",
                                "npy"], capture_output=True, text=True)
            if p.returncode == 0:
                lt = json.loads(p.stdout.strip().splitlines()[-1])
                lt_img = np.load(str(path) + ".libertem.npy")
                lt["equal_to_numpy"] = bool(np.allclose(lt_img, ref, rtol=1e-6))
                rows.append((f"LiberTEM {lt['version']} `ApplyMasksUDF` on the Zarr (dask array)", lt["workers"], lt["seconds"]))
                if lt.get("native_npy_seconds"):
                    lt_npy = np.load(str(path) + ".libertem-npy.npy")
                    lt["npy_equal_to_numpy"] = bool(np.allclose(lt_npy, ref, rtol=1e-6))
                    rows.append((f"LiberTEM {lt['version']} `ApplyMasksUDF` on the .npy (its own reader)", lt["workers"],
                                 lt["native_npy_seconds"]))
            else:
                lt = {"status": "failed", "stderr": p.stderr[-2000:]}
                print(p.stderr[-2000:], file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta["load_avg_at_end"] = os.getloadavg()
    res = {"meta": meta, "libertem": lt, "rows": [{"method": m, "threads": n, "seconds": s, "gb_per_s": nbytes / s / 1e9}
                                                  for m, n, s in rows]}
    OUT.mkdir(exist_ok=True)
    (OUT / "virtual.json").write_text(json.dumps(res, indent=2, default=str))
    lt_row = next((r for r in res["rows"] if r["method"].startswith("LiberTEM") and "Zarr" in r["method"]), None)
    lt_npy = next((r for r in res["rows"] if r["method"].startswith("LiberTEM") and ".npy" in r["method"]), None)
    lines = [f"# Virtual detector throughput ({meta['cores']} cores)", "",
             f"`python benchmarks/bench_virtual.py --gb {a.gb:g} --k {a.k}" + (" --libertem-python ..." if a.libertem_python else "")
             + f"`: a {shape} uint16 4D-STEM Zarr ({nbytes / 1e9:.2f} GB uncompressed, chunks {tuple(meta['chunks'])}, "
             f"written by `stemflow.to_zarr`: Blosc LZ4 + bit shuffle, ratio {meta['ratio_stemflow']:.2f}, shards "
             f"{tuple(meta['stemflow_shards']) or 'none'} of inner chunks {tuple(meta['stemflow_chunks'])}; the same data in "
             f"zarr's default Zstandard, unsharded, ratio {meta['ratio_zarr_default']:.2f}), one annular detector ({inner:g}–{outer:g} px). "
             f"zarr {meta['zarr']}, zarrs {meta['zarrs']}. Best of {a.repeat} after a "
             f"warm-up; the four Zarr read paths with dask threads ran in turn, {a.rounds} rounds, and each "
             f"figure is the median over the rounds. Load average {meta['load_avg_at_start'][0]:.1f} at start, {meta['load_avg_at_end'][0]:.1f} at end.", "",
             "| method | threads | s | GB/s | vs the Zarr path before | vs LiberTEM on the same file |",
             "|---|---|---|---|---|---|"]
    before = res["rows"][0]
    for r in res["rows"]:
        on_stemflow_file = "stemflow's file" in r["method"] or "LocalCluster" in r["method"] or "LiberTEM" in r["method"]
        same = lt_npy if ".npy" in r["method"] else lt_row if "Zarr" in r["method"] and on_stemflow_file else None
        vs = f"{r['gb_per_s'] / same['gb_per_s']:.2f}×" if same else "—"
        vb = f"{r['gb_per_s'] / before['gb_per_s']:.2f}×" if "Zarr" in r["method"] and "LiberTEM" not in r["method"] else "—"
        lines.append(f"| {r['method']} | {r['threads']} | {r['seconds']:.3f} | {r['gb_per_s']:.2f} | {vb} | {vs} |")
    if "default_vs_before_per_round" in meta:
        rr = meta["default_vs_before_per_round"]
        lines += ["", f"The default Zarr path against the path before, round by round: "
                      f"{', '.join(f'{r:.2f}×' for r in rr)} (median {np.median(rr):.2f}×)."]
    lines += ["", "stemflow's image equals the NumPy reference exactly (asserted), from the Zarr and from the .npy."]
    if lt_row:
        lines.append(f"LiberTEM's equals it to float32 rounding: {lt.get('equal_to_numpy')}.")
    else:
        lines.append(f"LiberTEM: {lt.get('status')}.")
    (OUT / "virtual.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

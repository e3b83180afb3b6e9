"""Bad inputs and faults, tried one by one: what stemflow does with each.

Every case is run for real (the API, the ``stemflow`` command in a subprocess, a Dask cluster of
worker processes for runs) and its outcome is classified:

* ``refused`` — a :class:`stemflow.errors.StemflowError` (or, for the command line, exit code 1/2
  with one line ``stemflow CMD: …`` and no traceback);
* ``warned`` — a result, with a :class:`stemflow.errors.StemflowWarning` saying what is wrong;
* ``ok`` — a result, no warning (right for good inputs);
* ``other`` — any other exception, or a traceback on the command line.

Each case states what it should give; a case whose outcome differs (a silent result where a
refusal or warning was due, a raw exception) is marked ✗. Writes ``docs/reliability.md`` (every
row measured by this run) and exits 1 when any row is ✗.

Run: ``python benchmarks/reliability.py`` (about 2–3 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "reliability.md"
PX = 0.02


def _classify(fn):
    """Run ``fn``; return (outcome, message)."""
    from stemflow.errors import StemflowError, StemflowWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = fn()
        except StemflowError as exc:
            return "refused", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - the point is to see what escapes
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            return "other", f"{type(exc).__name__}: {exc} (at {Path(tb.filename).name}:{tb.lineno})"
    ours = [w for w in caught if issubclass(w.category, StemflowWarning)]
    if ours:
        return "warned", str(ours[0].message)
    return "ok", _describe(res)


def _describe(res) -> str:
    if isinstance(res, pd.DataFrame):
        return f"{len(res)} rows"
    if hasattr(res, "rows"):
        return str(res)
    if hasattr(res, "shape"):
        return f"shape {tuple(res.shape)}"
    return repr(res)[:120]


def _cli(args, cwd=None):
    """Run the command line; return (outcome, message)."""
    env = dict(os.environ, STEMFLOW_DEBUG="")
    p = subprocess.run([sys.executable, "-m", "stemflow.cli", *args], capture_output=True, text=True,
                       cwd=cwd, env=env, timeout=600)
    err = p.stderr.strip()
    if p.returncode == 0:
        return "ok", (p.stdout.strip().splitlines() or [""])[-1][:200]
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("usage:") and not ln.startswith(" ")]
    if "Traceback" in err or not lines or not lines[-1].startswith("stemflow"):
        return "other", f"exit {p.returncode}: {err[-300:]}"
    return "refused", f"exit {p.returncode}: {lines[-1]}"


def cases(tmp: Path, client):
    """(group, name, expected, callable) for every case."""
    import tifffile
    import torch
    import zarr

    from stemflow import find_atoms, open_stem
    from stemflow.nn.weights import load_model
    from stemflow.parallel import read_atoms, run
    from stemflow.results import track_run
    from stemflow.simulate import simulate_image, simulate_movie
    from stemflow.io import write_movie
    from stemflow.tracking import track

    sim = simulate_image("graphene", 128, pixel_size=PX, seed=1, defects={"Si1C3": 1})
    img = sim.image.astype(np.float32)
    rng = np.random.default_rng(0)

    def with_nan():
        a = img.copy()
        a[5, 5] = np.nan
        return a

    def with_inf():
        a = img.copy()
        a[5, 5] = np.inf
        return a

    out = []
    add = lambda g, n, e, f: out.append((g, n, e, f))  # noqa: E731

    g = "find_atoms: image"
    add(g, "a good simulated frame", "ok", lambda: find_atoms(img, PX))
    add(g, "a NaN pixel", "refused", lambda: find_atoms(with_nan(), PX))
    add(g, "an Inf pixel", "refused", lambda: find_atoms(with_inf(), PX))
    add(g, "a 1-D array", "refused", lambda: find_atoms(img[0], PX))
    add(g, "a 4-D array", "refused", lambda: find_atoms(img[None, None], PX))
    add(g, "an empty array", "refused", lambda: find_atoms(np.zeros((0, 0), np.float32), PX))
    add(g, "a constant frame", "refused", lambda: find_atoms(np.ones((128, 128), np.float32), PX))
    add(g, "complex pixels", "refused", lambda: find_atoms(img.astype(np.complex64), PX))
    add(g, "strings", "refused", lambda: find_atoms(np.full((64, 64), "a"), PX))
    add(g, "an 8×8 frame", "refused", lambda: find_atoms(img[:8, :8], PX))
    add(g, "pure Poisson noise", "warned", lambda: find_atoms(rng.poisson(20, (128, 128)).astype(np.float32), PX))
    add(g, "a blank (all-zero) frame", "refused", lambda: find_atoms(np.zeros((128, 128), np.float32), PX))
    g = "find_atoms: settings"
    add(g, "no pixel size (NumPy input)", "refused", lambda: find_atoms(img))
    add(g, "pixel size 0", "refused", lambda: find_atoms(img, 0.0))
    add(g, "negative pixel size", "refused", lambda: find_atoms(img, -0.02))
    add(g, "NaN pixel size", "refused", lambda: find_atoms(img, float("nan")))
    add(g, "pixel size 100× too large", "refused", lambda: find_atoms(img, 100 * PX))
    big = simulate_image("graphene", 256, pixel_size=0.01, seed=2)
    add(g, "pixel size 3× too large", "warned", lambda: find_atoms(big.image, 0.03))
    add(g, "unknown lattice", "refused", lambda: find_atoms(img, PX, lattice="diamond"))

    def heavy_atoms_on_a_flat_support():
        n = 256
        yy, xx = np.mgrid[:n, :n]
        a = np.full((n, n), 5.0)
        for y, x in np.random.default_rng(1).uniform(20, n - 20, (30, 2)):
            a += 60.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.5**2))
        return np.random.default_rng(2).poisson(a).astype(np.float32)

    add(g, "single heavy atoms on a support, lattice left at graphene", "warned",
        lambda: find_atoms(heavy_atoms_on_a_flat_support(), 0.02))
    mos2 = simulate_image("mos2", 256, pixel_size=PX, seed=2)
    add(g, "MoS2 asked for as graphene (the default)", "warned", lambda: find_atoms(mos2.image, PX))
    add(g, "batch_size=0", "refused", lambda: find_atoms(img, PX, batch_size=0))
    add(g, "heavy-atom elements on a crystalline lattice", "refused", lambda: find_atoms(img, PX, elements=("Pt",)))
    add(g, "graphene asked for as amorphous (heavy atoms on a support)", "warned",
        lambda: find_atoms(big.image, 0.01, lattice="amorphous"))
    add(g, "an unknown heavy-atom element", "refused",
        lambda: find_atoms(img, PX, lattice="amorphous", elements=("Pt", "Unobtainium")))
    add(g, "lattice_prior on an amorphous support", "refused",
        lambda: find_atoms(img, PX, lattice="amorphous", lattice_prior=True))

    g = "open_stem: files"
    add(g, "a path that does not exist", "refused", lambda: open_stem(tmp / "nope.zarr"))
    (tmp / "plain_dir").mkdir()
    (tmp / "plain_dir" / "x.txt").write_text("x")
    add(g, "a directory that is not a Zarr store", "refused", lambda: open_stem(tmp / "plain_dir"))
    (tmp / "data.xyz").write_text("x")
    add(g, "an unknown file format", "refused", lambda: open_stem(tmp / "data.xyz"))
    np.save(tmp / "good.npy", np.stack([img] * 3))
    raw = (tmp / "good.npy").read_bytes()
    (tmp / "truncated.npy").write_bytes(raw[: len(raw) // 2])
    add(g, "a truncated .npy", "refused", lambda: open_stem(tmp / "truncated.npy", pixel_size=PX))
    tifffile.imwrite(tmp / "stack.tif", np.stack([img] * 3))
    add(g, "a 3-frame TIFF stack (tifffile defaults: planar RGB)", "warned",
        lambda: open_stem(tmp / "stack.tif", pixel_size=PX))
    holes = zarr.create_array(str(tmp / "holes.zarr"), shape=(1000, 64, 64), chunks=(2, 64, 64), dtype="float32")
    holes[0:4] = 1.0
    add(g, "a Zarr store with chunks never written", "refused", lambda: open_stem(tmp / "holes.zarr", pixel_size=PX))
    add(g, "a NaN frame inside a stack", "refused",
        lambda: open_stem(np.stack([img, with_nan(), img]), pixel_size=PX))

    g = "weights"
    wdir = tmp / "weights"
    wdir.mkdir()

    def copy_model(name):
        shutil.copy(ROOT / "stemflow" / "weights" / "default.pt", wdir / f"{name}.pt")
        shutil.copy(ROOT / "stemflow" / "weights" / "default.json", wdir / f"{name}.json")
        return wdir / f"{name}.pt"

    p = copy_model("trunc")
    p.write_bytes(p.read_bytes()[:1000])
    add(g, "truncated weights", "refused", lambda: load_model(wdir / "trunc.pt"))
    p = copy_model("nosha")
    card = json.loads(p.with_suffix(".json").read_text())
    card.pop("sha256")
    p.with_suffix(".json").write_text(json.dumps(card))
    add(g, "a card without a checksum", "refused", lambda: load_model(p))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo unpickled code ran > " + str(tmp / "PWNED"),))

    p2 = copy_model("evil")
    torch.save({"x": Evil()}, p2)
    card = json.loads(p2.with_suffix(".json").read_text())
    import hashlib

    card["sha256"] = hashlib.sha256(p2.read_bytes()).hexdigest()
    p2.with_suffix(".json").write_text(json.dumps(card))

    def evil():
        try:
            return load_model(p2)
        finally:
            if (tmp / "PWNED").exists():
                raise AssertionError("the pickled code ran")

    add(g, "a pickle with code in it (checksum right)", "refused", evil)
    p3 = copy_model("notjson")
    p3.with_suffix(".json").write_text("{not json")
    add(g, "a card that is not JSON", "refused", lambda: load_model(p3))

    g = "tables: track"
    mov = simulate_movie("graphene", 6, 128, seed=4, pixel_size=PX, defects={"Si1C3": 0.5})
    atoms = find_atoms(mov.images(0, 6), PX)
    add(g, "a good atoms table", "ok", lambda: track(atoms, pixel_size=PX)[0])
    add(g, "a table without `label`", "refused", lambda: track(atoms.drop(columns="label"), pixel_size=PX))
    add(g, "an empty table (says so; empty results)", "warned", lambda: track(atoms.iloc[:0], pixel_size=PX))
    bad = atoms.copy()
    bad.loc[bad.index[0], "x"] = np.nan
    add(g, "a NaN position", "refused", lambda: track(bad, pixel_size=PX))
    add(g, "no pixel size (no attrs, no nm columns)", "refused",
        lambda: track(_no_attrs(atoms.drop(columns=["y_nm", "x_nm"]))))

    g = "runs on a Dask cluster"
    store = tmp / "movie.zarr"
    write_movie(mov, store, progress=False, frame_chunk_mb=2 * 128 * 128 * 4 / 1e6)
    add(g, "a clean run", "ok", lambda: run(store, tmp / "run_ok", client=client, frames_per_part=2, progress=False))
    add(g, "the same run again (resume: nothing to do)", "ok",
        lambda: run(store, tmp / "run_ok", client=client, frames_per_part=2, progress=False))
    add(g, "a rerun with another threshold into the same --out", "refused",
        lambda: run(store, tmp / "run_ok", client=client, frames_per_part=2, progress=False, threshold=0.6))

    def rewritten():
        shutil.copytree(store, tmp / "edited.zarr")
        run(tmp / "edited.zarr", tmp / "run_edit", client=client, frames_per_part=2, progress=False)
        arr = zarr.open_array(str(tmp / "edited.zarr" / "image"), mode="r+")
        arr[2:4] = arr[2:4][:, ::-1]
        s = run(tmp / "edited.zarr", tmp / "run_edit", client=client, frames_per_part=2, progress=False)
        if s.changed != 1:
            raise AssertionError(f"rerun after rewriting frames 2-3 recomputed {s.changed} changed parts")
        return s

    add(g, "a rerun after frames 2–3 were rewritten in place", "ok", rewritten)

    def corrupt():
        shutil.copytree(store, tmp / "corrupt.zarr")
        (tmp / "corrupt.zarr" / "image" / "c" / "1" / "0" / "0").write_bytes(b"garbage" * 20)
        return run(tmp / "corrupt.zarr", tmp / "run_corrupt", client=client, frames_per_part=2, progress=False)

    add(g, "a chunk overwritten with garbage", "refused", corrupt)
    add(g, "reading the table of that failed run", "refused", lambda: read_atoms(tmp / "run_corrupt"))
    add(g, "tracking the table of that failed run", "refused", lambda: track_run(tmp / "run_corrupt", pixel_size=PX))
    nanmov = np.stack([img, img, with_nan(), img])
    import xarray as xr

    add(g, "a NaN frame in an in-memory movie", "refused",
        lambda: run(xr.DataArray(nanmov, dims=("frame", "y", "x"), attrs={"pixel_size": PX}), tmp / "run_nan",
                    client=client, frames_per_part=1, progress=False))

    def relative():
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            return run(store, "relative_out", client=client, frames_per_part=2, progress=False)
        finally:
            os.chdir(cwd)

    add(g, "a relative --out from another working directory", "ok", relative)

    g = "the command line"
    add(g, "find --out onto an existing directory", "cli-refused",
        lambda: _cli(["find", str(tmp / "good.npy"), "--pixel-size", str(PX), "--out", str(tmp / "plain_dir")]))
    add(g, "find --out below a file (a place nothing can be written)", "cli-refused",
        lambda: _cli(["find", str(tmp / "good.npy"), "--pixel-size", str(PX), "--out",
                      str(tmp / "data.xyz" / "a.parquet")]))
    add(g, "run --frames x:y", "cli-refused",
        lambda: _cli(["run", str(store), "--out", str(tmp / "cli_run"), "--frames", "x:y"]))
    add(g, "find on a file that does not exist", "cli-refused",
        lambda: _cli(["find", str(tmp / "nope.tif"), "--pixel-size", str(PX), "--out", str(tmp / "x.parquet")]))
    add(g, "track on a failed run's table", "cli-refused",
        lambda: _cli(["track", str(tmp / "run_corrupt" / "atoms.parquet"), "--out", str(tmp / "t")]))
    add(g, "an unknown subcommand", "cli-refused", lambda: _cli(["frobnicate"]))
    add(g, "track on a folder that holds no atoms table (an image store)", "cli-refused",
        lambda: _cli(["track", str(store), "--out", str(tmp / "t2")]))
    bare = tmp / "bare_atoms.parquet"
    pd.DataFrame({"y": [10.0, 40.0], "x": [10.0, 40.0], "label": ["dopant", "dopant"]}).to_parquet(bare)
    add(g, "dispersion of a table that records no frame size", "cli-refused",
        lambda: _cli(["dispersion", str(bare), "--pixel-size", str(PX)]))
    add(g, "dispersion of an element symbol that is none (Xx)", "cli-refused",
        lambda: _cli(["dispersion", str(bare), "--pixel-size", str(PX), "--shape", "64", "64", "--element", "Xx"]))
    return out


def _no_attrs(df):
    df = df.copy()
    df.attrs = {}
    return df


def main() -> int:
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        tmp = Path(d)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            for group, name, expected, fn in cases(tmp, client):
                if expected.startswith("cli-"):
                    outcome, msg = fn()
                    expected = expected[4:]
                else:
                    outcome, msg = _classify(fn)
                ok = outcome == expected
                rows.append({"group": group, "case": name, "expected": expected, "outcome": outcome,
                             "ok": ok, "message": " ".join(str(msg).split())})
                print(f"{'✓' if ok else '✗'} {group}: {name}: {outcome}", file=sys.stderr)
    bad = [r for r in rows if not r["ok"]]
    lines = ["# Reliability: bad inputs and faults", "",
             f"Written by `python benchmarks/reliability.py` on {time.strftime('%Y-%m-%d')} "
             f"({time.perf_counter() - t0:.0f} s); every row is a case run by it. Outcomes: **refused** (a "
             "stemflow error naming the problem and the fix; for the command line one line `stemflow CMD: …`, "
             "exit 1 or 2, no traceback), **warned** (a result and a StemflowWarning), **ok** (a result), "
             "**other** (any other exception or a traceback). ✗ marks an outcome other than the expected one.", "",
             f"**{len(rows)} cases, {len(rows) - len(bad)} as expected, {len(bad)} not.**", ""]
    for group in dict.fromkeys(r["group"] for r in rows):
        lines += [f"## {group}", "", "| | case | expected | outcome | message |", "|---|---|---|---|---|"]
        for r in rows:
            if r["group"] == group:
                msg = r["message"].replace("|", "\\|")
                msg = msg if len(msg) <= 260 else msg[:257] + "…"
                lines.append(f"| {'✓' if r['ok'] else '✗'} | {r['case']} | {r['expected']} | {r['outcome']} | {msg} |")
        lines.append("")
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}: {len(rows)} cases, {len(bad)} unexpected", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    from _cli import options

    options(__doc__)
    sys.exit(main())

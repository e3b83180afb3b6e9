"""The ``stemflow`` command.

``stemflow info PATH``      what a dataset holds (dims, shape, dtype, chunks, pixel size, size)
``stemflow simulate ...``   a simulated movie or 4D-STEM scan with its ground truth
``stemflow find ...``       atoms, dopants and vacancies in an image or stack → Parquet
``stemflow train ...``      train a network on streamed simulated data
``stemflow evaluate ...``   a model's precision / recall / F1 on the held-out simulated test set
``stemflow demo``           the guided tour: simulate, write, inspect (grows with the pipeline)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _defects_arg(text: str) -> dict:
    """``"Si1C3=0.1,V1=2"`` → ``{"Si1C3": 0.1, "V1": 2}`` (ints are counts, floats per nm²)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise argparse.ArgumentTypeError(f"--defects takes KIND=VALUE pairs, e.g. Si1C3=0.1,V1=2; got {part!r}")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = int(v) if v.strip().lstrip("-").isdigit() else float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--defects value for {k!r} is not a number: {v!r}") from None
    return out


def _cmd_info(args) -> int:
    from .io import describe

    print(describe(args.path))
    return 0


def _cmd_simulate(args) -> int:
    from .simulate import simulate_movie
    from .simulate.fourd import Detector
    from .simulate.write import write_4d, write_movie

    options = dict(pixel_size=args.pixel_size, dose=args.dose, noise=not args.noise_free,
                   line_jitter=args.line_jitter, background=args.background,
                   contamination=args.contamination)
    if args.fourd:
        det = Detector(shape=(args.detector_size, args.detector_size),
                       k_pixel_size=256.0 / args.detector_size)
        paths = write_4d(args.out, args.lattice, (args.size, args.size), detector=det, seed=args.seed,
                         overwrite=args.overwrite, progress=not args.quiet, defects=args.defects,
                         **options)
    else:
        movie = simulate_movie(args.lattice, args.frames, (args.size, args.size), seed=args.seed,
                               defects=args.defects, drift=tuple(args.drift), **options)
        paths = write_movie(movie, args.out, overwrite=args.overwrite, progress=not args.quiet)
    for name, p in paths.items():
        print(f"wrote {name:7s} {p}")
    return 0


def _cmd_demo(args) -> int:
    import pandas as pd

    from .io import describe
    from .simulate import simulate_movie
    from .simulate.write import write_movie

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"stemflow demo: a simulated graphene + Si movie ({args.frames} frames of {args.size}² px, "
          f"10 pm/px, {args.dose:.0e} e⁻/Å² per frame, drift 0.4 px/frame)\n")
    movie = simulate_movie(
        "graphene", args.frames, (args.size, args.size), seed=args.seed, drift=(0.4, -0.25),
        drift_jitter=0.05, defects={"Si1C3": 0.15, "Si1C4": 0.04, "V1": 0.06, "V2": 0.02, "SW": 0.02},
        rates={"hop": 0.06, "switch34": 0.04, "switch43": 0.08, "vacancy": 0.06},
        pixel_size=0.01, dose=args.dose, line_jitter=0.15, background=0.3, contamination=0.02)
    paths = write_movie(movie, out / "movie.zarr", overwrite=True, progress=not args.quiet)
    print()
    for name, p in paths.items():
        print(f"wrote {name:7s} {p}")
    print("\n" + describe(paths["store"]))
    atoms = movie.atoms
    first = atoms[atoms.frame == 0]
    print("\nground truth, frame 0:")
    print("  columns by label :", ", ".join(f"{k} {v}" for k, v in first.label.value_counts().items()))
    defects = first.loc[first.defect != "", ["defect", "defect_id"]].drop_duplicates()
    print("  defects          :", ", ".join(f"{k} {v}" for k, v in defects.defect.value_counts().items() if v))
    ev = movie.events
    print(f"\nground-truth events over {movie.n_frames} frames:",
          ", ".join(f"{k} {v}" for k, v in ev.kind.value_counts().items()))
    with pd.option_context("display.width", 120, "display.max_columns", 12, "display.precision", 2):
        print(ev[ev.kind.isin(["hop", "coordination_change"])].head(8).to_string(index=False))
    _demo_find(paths["store"], movie, n_frames=min(4, movie.n_frames))
    print(f"\nopen it:  stemflow.open_stem('{paths['store']}')   or   stemflow info {paths['store']}")
    return 0


def _demo_find(store, movie, n_frames: int):
    """Find atoms in the first frames with the bundled network and score them against the truth."""
    import time

    from .find import find_atoms
    from .io import open_stem
    from .metrics import score

    da = open_stem(store).isel(frame=slice(0, n_frames))
    t0 = time.perf_counter()
    atoms = find_atoms(da, lattice="graphene")
    dt = time.perf_counter() - t0
    truth = movie.atoms[movie.atoms.frame < n_frames]
    h, w = movie.shape
    b = 15  # px: columns cut by the frame edge have no well-defined centre

    def inner(t):
        return t[t.y.between(b, h - 1 - b) & t.x.between(b, w - 1 - b)]

    s = score(inner(atoms), inner(truth), pixel_size=movie.pixel_size)
    print(f"\nfind_atoms on frames 0–{n_frames - 1} with the bundled network: {len(atoms)} atoms "
          f"in {dt:.1f} s ({n_frames / dt:.1f} frames/s)")
    print("  class     truth  found  precision  recall     F1   RMSE (px)")
    for cls in ("lattice", "dopant", "vacancy"):
        r = s.loc[cls]
        print(f"  {cls:8s} {int(r.tp + r.fn):6d} {int(r.tp + r.fp):6d}   {r.precision:8.4f} {r.recall:7.4f} "
              f"{r.f1:7.4f}   {r.rmse_px:6.3f}")


def _cmd_find(args) -> int:
    from .find import find_atoms
    from .io import open_stem

    da = open_stem(args.input, pixel_size=args.pixel_size, dataset=args.dataset)
    if da.ndim not in (2, 3):
        raise ValueError(f"{args.input} has dims {da.dims}; `stemflow find` takes images (y, x) or movies "
                         "(frame, y, x); for 4D-STEM make a virtual image first")
    if args.frames:
        a, _, b = args.frames.partition(":")
        da = da.isel(frame=slice(int(a) if a else None, int(b) if b else None))
    atoms = find_atoms(da, lattice=args.lattice, model=args.model, threshold=args.threshold, refine=args.refine)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.partial")
    atoms.to_parquet(tmp, index=False)
    tmp.replace(out)
    counts = ", ".join(f"{k} {v}" for k, v in atoms.label.value_counts().items())
    print(f"wrote {out}: {len(atoms)} rows ({counts})")
    return 0


def _cmd_train(args) -> int:
    from .nn.train import train

    lattices = [s.strip() for s in args.lattice.split(",") if s.strip()]
    path = train(args.out, lattices=lattices, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                 seed=args.seed, threads=args.threads, workers=args.workers, progress=not args.quiet)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluate import evaluate, plot_f1_vs_dose, summarise, test_set

    cases = test_set(lattices=[s.strip() for s in args.lattice.split(",")], repeats=args.repeats)
    results = evaluate(args.model, cases, progress=not args.quiet)
    summary = summarise(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "evaluation_cases.csv", index=False)
    summary.to_csv(out / "evaluation.csv", index=False)
    plot_f1_vs_dose(summary, out / "f1_vs_dose.png", title=f"model {args.model or 'default'}")
    import pandas as pd

    with pd.option_context("display.width", 140, "display.max_rows", 200, "display.precision", 4):
        print(summary.to_string(index=False))
    print(f"\nwrote {out / 'evaluation.csv'}, {out / 'evaluation_cases.csv'}, {out / 'f1_vs_dose.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stemflow", description="Atoms, dopants and vacancies in STEM data, at scale.")
    p.add_argument("--version", action="version", version=f"stemflow {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="describe a dataset (Zarr, HDF5, TIFF, .npy, .dm3/.dm4/.emd)")
    s.add_argument("path")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("simulate", help="simulate a movie (or a 4D-STEM scan) with ground truth")
    s.add_argument("--lattice", default="graphene", choices=["graphene", "ws2", "mos2", "amorphous"])
    s.add_argument("--frames", type=int, default=16, help="number of frames (movies)")
    s.add_argument("--size", type=int, default=512, help="frame size, px (square)")
    s.add_argument("--pixel-size", type=float, default=0.01, help="nm/px (default 0.01)")
    s.add_argument("--dose", type=float, default=1e5, help="e⁻/Å² per frame (default 1e5)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--defects", type=_defects_arg, default=None,
                   help="KIND=VALUE,...: an int is a count, a float a density per nm² (e.g. Si1C3=0.1,V1=2)")
    s.add_argument("--drift", type=float, nargs=2, default=(0.0, 0.0), metavar=("DY", "DX"), help="px/frame")
    s.add_argument("--line-jitter", type=float, default=0.0, help="scan-line jitter, px RMS")
    s.add_argument("--background", type=float, default=0.0, help="smooth background, fraction of a host column peak")
    s.add_argument("--contamination", type=float, default=0.0, help="contamination patches per nm²")
    s.add_argument("--noise-free", action="store_true", help="write expected counts (no noise)")
    s.add_argument("--4d", dest="fourd", action="store_true", help="write a 4D-STEM scan of --size² probe positions")
    s.add_argument("--detector-size", type=int, default=64, help="4D: detector pixels per side")
    s.add_argument("--out", required=True, help="Zarr store to write (truth tables go beside it)")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_simulate)

    s = sub.add_parser("find", help="find atoms, dopants and vacancies in an image or movie")
    s.add_argument("input")
    s.add_argument("--pixel-size", type=float, default=None, help="nm/px (default: from the file)")
    s.add_argument("--lattice", default="graphene", choices=["graphene", "ws2", "mos2", "amorphous"])
    s.add_argument("--model", default=None, help="bundled model name or NAME.pt path (default: default)")
    s.add_argument("--dataset", default=None, help="array inside the file (HDF5 path, Zarr array name)")
    s.add_argument("--frames", default=None, help="A:B, a range of frames")
    s.add_argument("--threshold", type=float, default=0.5)
    s.add_argument("--refine", action="store_true", help="refine centres on the image (low-noise data)")
    s.add_argument("--out", required=True, help="atoms table to write (.parquet)")
    s.set_defaults(func=_cmd_find)

    s = sub.add_parser("train", help="train a network on streamed simulated data")
    s.add_argument("--lattice", default="graphene,ws2,mos2,amorphous", help="comma-separated lattices")
    s.add_argument("--steps", type=int, default=6000)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--lr", type=float, default=3e-3)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1, help="torch threads of the training step")
    s.add_argument("--workers", type=int, default=1, help="processes simulating training data")
    s.add_argument("--out", required=True, help="NAME.pt to write (NAME.json beside it)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("evaluate", help="score a model on the held-out simulated test set")
    s.add_argument("--model", default=None)
    s.add_argument("--lattice", default="graphene,ws2")
    s.add_argument("--repeats", type=int, default=2, help="frames per lattice × dose × pixel size")
    s.add_argument("--out", default="docs/evaluation")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("demo", help="run the tour on simulated data (no input needed)")
    s.add_argument("--out", default="demo_out")
    s.add_argument("--frames", type=int, default=32)
    s.add_argument("--size", type=int, default=512)
    s.add_argument("--dose", type=float, default=1e5)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_demo)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stemflow")
    except PackageNotFoundError:
        return "unknown"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import StemflowError

    try:
        return int(args.func(args) or 0)
    except (StemflowError, FileExistsError, FileNotFoundError, ValueError, TypeError) as exc:
        print(f"stemflow {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

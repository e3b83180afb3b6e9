"""The ``stemflow`` command.

``stemflow info PATH``      what a dataset holds (dims, shape, dtype, chunks, pixel size, size)
``stemflow simulate ...``   a simulated movie or 4D-STEM scan with its ground truth
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
    print(f"\nopen it:  stemflow.open_stem('{paths['store']}')   or   stemflow info {paths['store']}")
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

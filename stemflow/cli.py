"""The ``stemflow`` command.

``stemflow info PATH``      what a dataset holds (dims, shape, dtype, chunks, pixel size, size)
``stemflow simulate ...``   a simulated movie or 4D-STEM scan with its ground truth
``stemflow find ...``       atoms, dopants and vacancies in an image or stack → Parquet
``stemflow train ...``      train a network on streamed simulated data
``stemflow adapt ...``      fine-tune a model on your own unlabelled frames (self-training)
``stemflow evaluate ...``   a model's precision / recall / F1 on the held-out simulated test set
``stemflow run ...``        the whole input on a Dask cluster → OUT/atoms.parquet (+ trajectories,
                           events, drift, report for movies), resumable
``stemflow track ...``      atoms table → trajectories, events, drift, report
``stemflow report DIR``     DIR/report.html from a run's tables
``stemflow dispersion ...`` how single atoms are spread: density, neighbours, pairs, clustering
``stemflow demo``           the whole pipeline on a simulated movie, scored against its truth
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, examples kept as written."""


def _cmd_info(args) -> int:
    from .io import describe

    print(describe(args.path))
    return 0


def _cmd_simulate(args) -> int:
    from .simulate import simulate_movie
    from .simulate.fourd import Detector
    from .io import write_4d, write_movie

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
        movie = simulate_movie(args.lattice, args.n_frames, (args.size, args.size), seed=args.seed,
                               defects=args.defects, drift=tuple(args.drift), **options)
        paths = write_movie(movie, args.out, overwrite=args.overwrite, progress=not args.quiet)
        asked, placed = movie.params["defects_requested"], movie.params["defects_placed"]
        short = [f"{placed.get(k, 0)} of {n} {k}" for k, n in asked.items() if placed.get(k, 0) < n]
        if short:
            print(f"stemflow simulate: placed {', '.join(short)}: the others found no room clear of the other "
                  "defects inside the area every frame sees (less drift or a larger --size fits more)", file=sys.stderr)
    for name, p in paths.items():
        print(f"wrote {name:7s} {p}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, frames=args.n_frames, size=args.size, dose=args.dose, seed=args.seed, workers=args.workers,
             progress=not args.quiet)
    return 0


def _cmd_find(args) -> int:
    from .find import find_atoms
    from .io import open_stem

    da = open_stem(args.input, pixel_size=args.pixel_size, dataset=args.dataset)
    if da.ndim not in (2, 3):
        raise ValueError(f"{args.input} has dims {da.dims}; `stemflow find` takes images (y, x) or movies "
                         "(frame, y, x); for 4D-STEM make a virtual image first")
    if args.frames:
        from .frames import frame_range

        if "frame" not in da.dims:
            raise ValueError(f"--frames selects frames of a movie; {args.input} is one image (dims {da.dims})")
        a, b = frame_range(args.frames, da.sizes["frame"])
        da = da.isel(frame=slice(a, b))
    if args.lattice_prior and not args.identify:
        raise ValueError("--lattice-prior needs the chemical identification (the fitted lattice); drop --no-identify")
    low_dose = args.low_dose
    if (low_dose is None and "frame" in da.dims and da.sizes["frame"] >= 5
            and not (args.refine or args.lattice_prior or args.flips not in (None, 1) or args.elements)):
        from .lowdose import low_dose_advice, low_dose_check

        check = low_dose_check(da, lattice=args.lattice, model=args.model)
        low_dose = check["low_dose"]
        advice = low_dose_advice(check)
        if advice:
            print(advice, file=sys.stderr)
    if low_dose:
        from .lowdose import find_atoms_movie

        if "frame" not in da.dims:
            raise ValueError(f"--low-dose uses the frames of a movie together; {args.input} is one image")
        if args.refine or args.lattice_prior or args.flips not in (None, 1):
            raise ValueError("--low-dose fits every site's amplitude itself; drop --refine, --lattice-prior and --flips")
        if args.elements:
            raise ValueError("--elements names heavy atoms on an amorphous support (--lattice amorphous); --low-dose "
                             "follows dopants on a crystalline host: drop one of them")
        atoms = find_atoms_movie(da, lattice=args.lattice, model=args.model, window=args.window)
    else:
        atoms = find_atoms(da, lattice=args.lattice, model=args.model, threshold=args.threshold,
                           refine=args.refine, identify=None if args.identify else False,
                           lattice_prior=args.lattice_prior, flips=args.flips, elements=args.elements)
    from .atomic import atomic_path

    out = Path(args.out)
    with atomic_path(out) as tmp:
        atoms.to_csv(tmp, index=False) if out.suffix.lower() == ".csv" else atoms.to_parquet(tmp, index=False)
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


def _cmd_adapt(args) -> int:
    import numpy as np

    from .errors import InputError
    from .io import open_stem
    from .nn.adapt import adapt

    images, sizes = [], []
    for path in args.inputs:
        da = open_stem(path, pixel_size=args.pixel_size, dataset=args.dataset)
        if da.ndim not in (2, 3):
            raise InputError(f"{path} has dims {da.dims}; `stemflow adapt` takes images (y, x) or movies "
                             "(frame, y, x); for 4D-STEM make a virtual image first")
        px = da.attrs.get("pixel_size")
        if px is None:
            raise InputError(f"{path}: the pixel size is unknown; pass --pixel-size in nm/px")
        if da.ndim == 3:   # an even sample of at most --max-frames frames per input
            idx = np.unique(np.linspace(0, da.sizes["frame"] - 1, min(args.max_frames, da.sizes["frame"])).astype(int))
            da = da.isel(frame=idx)
        arr = np.asarray(da.values, np.float32)
        for f in (arr if arr.ndim == 3 else arr[None]):
            images.append(f)
            sizes.append(float(px))
    result = adapt(images, sizes, model=args.model, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                   confidence=args.confidence, sim_share=args.sim_share, seed=args.seed, progress=not args.quiet)
    path = result.save(args.out)
    rep = result.report
    print(rep.to_string(index=False))
    before = {c[:-7]: int(rep[c].sum()) for c in rep.columns if c.endswith("_before")}
    after = {c[:-6]: int(rep[c].sum()) for c in rep.columns if c.endswith("_after")}
    print(f"rows per class before {before}, after {after}; pseudo-labels {int(rep['pseudo_labels'].sum())} "
          f"on {len(rep)} frames")
    print(f"wrote {path} and {path.with_suffix('.json')} (use it with --model {path})")
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluate import evaluate, plot_f1_vs_dose, summarise, test_set

    cases = test_set(lattices=[s.strip() for s in args.lattice.split(",")], repeats=args.repeats)
    opts = dict(lattice_prior=True) if args.lattice_prior else {}
    if args.flips is not None:
        opts["flips"] = args.flips
    results = evaluate(args.model, cases, progress=not args.quiet, **opts)
    summary = summarise(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "_lattice_prior" if args.lattice_prior else ""
    files = [out / f"evaluation{tag}_cases.csv", out / f"evaluation{tag}.csv", out / f"f1_vs_dose{tag}.png"]
    results.to_csv(files[0], index=False)
    summary.to_csv(files[1], index=False)
    plot_f1_vs_dose(summary, files[2], title=f"model {args.model or 'default'}" + (" + lattice prior" if tag else ""))
    import pandas as pd

    with pd.option_context("display.width", 140, "display.max_rows", 200, "display.precision", 4):
        print(summary.to_string(index=False))
    print(f"\nwrote {', '.join(str(f) for f in files)}")
    return 0


def _cmd_track(args) -> int:
    from .results import track_run
    from .tracking import TrackOptions

    labels = None if args.labels.strip().lower() == "all" else tuple(x.strip() for x in args.labels.split(",") if x.strip())
    opts = TrackOptions(labels=labels, search_range=args.search_range, memory=args.memory, spacing=args.spacing)
    traj, ev, dr = track_run(args.out, atoms=args.input, pixel_size=args.pixel_size, dose=args.dose,
                             frame_time=args.frame_time, report=not args.no_report, options=opts)
    kinds = ", ".join(f"{v} {k}" for k, v in ev["kind"].astype(str).value_counts().items()) or "no events"
    print(f"{traj['particle'].nunique() if len(traj) else 0} trajectories, {kinds}; wrote "
          f"{', '.join(str(Path(args.out) / n) for n in ('trajectories.parquet', 'events.parquet', 'drift.parquet'))}"
          + ("" if args.no_report else f", {Path(args.out) / 'report.html'}"))
    return 0


def _cmd_report(args) -> int:
    from .report import write_report

    print(f"wrote {write_report(args.directory, dose=args.dose, frame_time=args.frame_time)}")
    return 0


def _read_atoms_table(path):
    """An atoms table from a Parquet file, a folder of parts or a run directory, with its attrs
    (``frames``: [start, stop] from a run's manifest)."""
    import pandas as pd

    from .errors import InputError
    from .results import read_atoms
    from .rundir import MANIFEST, read_manifest
    from .tables import recorded_attrs

    path = Path(path)
    if not path.exists():
        raise InputError(f"no atoms table at {str(path)!r}; write one with `stemflow find ... --out atoms.parquet` "
                         "or `stemflow run INPUT --out DIR`")
    if path.is_file() and path.suffix.lower() == ".csv":
        return pd.read_csv(path)        # no calibration travels in CSV: --pixel-size and --shape say it
    if path.is_file():
        return read_atoms(path)
    run = path if (path / MANIFEST).exists() else path.parent if (path.parent / MANIFEST).exists() else None
    if run is not None or (path / "atoms.parquet").is_dir():
        df = read_atoms(path)
        frames = read_manifest(run).get("parameters", {}).get("frames") if run is not None else None
        if frames:
            df.attrs["frames"] = list(frames)
        return df
    parts = sorted(path.glob("*.parquet"))
    if not parts:
        raise InputError(f"{str(path)!r} holds no Parquet files; pass an atoms table (a file, a folder of parts "
                         "or a run directory)")
    df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    df.attrs.update(recorded_attrs(parts[0]))
    return df


def _cmd_dispersion(args) -> int:
    from .atomic import atomic_path
    from .chem import dispersion, ripley_l
    from .frames import frame_range

    atoms = _read_atoms_table(args.input)
    if args.shape is None and not atoms.attrs.get("frame_shape"):
        raise ValueError(f"{args.input} does not record the frame size (tables written before stemflow recorded "
                         "it, or by other tools): pass --shape H W, the frames' height and width in px")
    frames = None
    if args.frames or atoms.attrs.get("frames"):
        if "frame" not in atoms.columns:
            raise ValueError("--frames selects frames of a stack; this table has no 'frame' column")
        known = atoms.attrs.get("frames")
        if not known:        # a table alone: its frames run to its last one, or to the end asked for
            ask = str(args.frames or "").split(":")
            end = ask[-1].strip()
            asked_end = (int(end) + (len(ask) == 1)) if end.isdigit() else 0
            known = [0, max(int(atoms["frame"].max()) + 1 if len(atoms) else 1, asked_end)]
        a, b = frame_range(args.frames, known[1]) if args.frames else known
        frames = range(max(a, known[0]), min(b, known[1]))
        if not len(frames):
            raise ValueError(f"--frames {args.frames} selects none of the frames {known[0]}–{known[1] - 1} "
                             "this table covers")
        atoms = atoms[atoms["frame"].between(frames.start, frames.stop - 1)]
    label = None if args.label.strip().lower() == "all" else args.label.strip()
    common = dict(pixel_size=args.pixel_size, shape=args.shape, label=label, element=args.element)
    table = dispersion(atoms, within_nm=args.within_nm, frames=frames, **common)
    curve = ripley_l(atoms, simulations=args.simulations, seed=args.seed, hard_core_nm=args.hard_core_nm, **common)
    what = f"atoms ({'element ' + args.element if args.element else 'label ' + (label or 'any')})"
    if len(table) <= args.show:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    else:
        print(f"{len(table)} frames" + (f" (every one in {args.out})" if args.out else "; --out FILE writes them all"))
    if not len(table) or not table["n_atoms"].sum():
        print(f"\nno {what} in {len(table)} frame(s)")
    else:
        med = table.median(numeric_only=True)
        print(f"\n{int(table['n_atoms'].sum())} {what} in {len(table)} frame(s) of {table['area_nm2'].iloc[0]:.4g} "
              f"nm² each. Per frame (median): {med['n_atoms']:.4g} atoms, {med['density_per_nm2']:.4g} per nm², "
              f"nearest neighbour {med['nn_median_nm']:.3g} nm, Clark–Evans R {med['clark_evans']:.3g}; groups "
              f"within {args.within_nm:g} nm: {med['pairs']:.3g} pairs, {med['triples']:.3g} triples, "
              f"{med['larger']:.3g} larger")
    if args.simulations:
        runs = curve.groupby((curve["verdict"] != curve["verdict"].shift()).cumsum())
        said = ": " + "; ".join(
            f"{g['verdict'].iloc[0]} " + (f"{g['radius_nm'].min():.2f}–{g['radius_nm'].max():.2f} nm" if len(g) > 1
                                          else f"at {g['radius_nm'].iloc[0]:.2f} nm") for _, g in runs)
        p, alpha = curve.attrs["p_value"], curve.attrs["alpha"]
        verdict = ("too few atoms to judge" if p != p else
                   f"not placed at random (p = {p:.3g} ≤ {alpha:g})" if p <= alpha else
                   f"no departure from random placement (p = {p:.3g})")
        said = "" if p != p else said
        pooled = (f" The {curve.attrs['frames']} frames are pooled as different areas; for a movie of one area "
                  "pass one frame (--frames K:K+1)." if curve.attrs["frames"] > 1 else "")
        print(f"Ripley's L against {args.simulations} random patterns of the same counts: {verdict}{said}.{pooled}")
    written = []
    for path, df in ((args.out, table), (args.ripley_out, curve)):
        if path:
            path = Path(path)
            with atomic_path(path) as tmp:
                df.to_csv(tmp, index=False) if path.suffix == ".csv" else df.to_parquet(tmp, index=False)
            written.append(str(path))
    if args.plot:
        from .plot import plot_ripley

        ax = plot_ripley(curve)
        ax.figure.tight_layout()
        with atomic_path(Path(args.plot)) as tmp:
            ax.figure.savefig(tmp, dpi=110, format=Path(args.plot).suffix.lstrip(".") or "png")
        written.append(args.plot)
    if written:
        print(f"wrote {', '.join(written)}")
    return 0


def _cmd_run(args) -> int:
    from .parallel import run

    summary = run(args.input, args.out, model=args.model, scheduler=args.scheduler, frames=args.frames,
                  detector=args.detector, save_probabilities=args.save_probabilities, overwrite=args.overwrite,
                  progress=not args.quiet, lattice=args.lattice, threshold=args.threshold, refine=args.refine,
                  pixel_size=args.pixel_size, dataset=args.dataset, frames_per_part=args.frames_per_part,
                  tile=args.tile, batch_size=args.batch_size, n_workers=args.workers, embed_model=args.embed_model,
                  identify=None if args.identify else False, lattice_prior=args.lattice_prior,
                  track=not args.no_track, low_dose=args.low_dose, window=args.window, flips=args.flips,
                  elements=args.elements)
    print(f"wrote {summary}")
    return 0


#: Examples shown under each command's ``--help``.
EXAMPLES = {
    "info": "stemflow info movie.zarr\n  stemflow info frame.dm4",
    "simulate": "stemflow simulate --lattice graphene --n-frames 64 --size 512 --pixel-size 0.01 --dose 1e5 \\\n"
                "      --defects Si1C3=0.05,V1=0.02 --drift 0.3 -0.2 --out movie.zarr\n"
                "  stemflow simulate --4d --size 64 --detector-size 64 --out scan.zarr",
    "find": "stemflow find image.dm4 --out atoms.parquet\n"
            "  stemflow find movie.zarr --frames 0:8 --lattice ws2 --refine --out atoms.parquet\n"
            "  stemflow find frames.tif --pixel-size 0.0117 --no-identify --out atoms.parquet",
    "train": "stemflow train --lattice graphene,ws2 --steps 6000 --threads 2 --out mymodel.pt",
    "adapt": "stemflow adapt session1.dm4 session2.dm4 --out my_scope.pt --steps 150\n"
             "  stemflow find frame.dm4 --model my_scope.pt --out atoms.parquet",
    "evaluate": "stemflow evaluate                          # writes ./evaluation/\n"
                "  stemflow evaluate --model mymodel.pt --lattice graphene --out eval_mymodel",
    "run": "stemflow run movie.zarr --out run1                        # local cluster, one worker per core\n"
           "  stemflow run movie.zarr --out run1 --frames 0:1000 --no-identify\n"
           "  stemflow run scan.zarr --out run2 --detector haadf --scheduler tcp://head:8786\n"
           "  stemflow run movie.zarr --out run1                        # again: resumes where it stopped",
    "track": "stemflow track run1/atoms.parquet --out run1\n"
             "  stemflow track atoms.parquet --out tracks --search-range 0.3 --labels dopant --dose 1e5",
    "report": "stemflow report run1 --dose 1e5 --frame-time 0.5",
    "dispersion": "stemflow dispersion atoms.parquet --out dispersion.csv --plot ripley.png\n"
                  "  stemflow dispersion run1 --element Pt --within-nm 0.3\n"
                  "  stemflow dispersion atoms.parquet --pixel-size 0.0293 --shape 512 512",
    "demo": "stemflow demo\n  stemflow demo --n-frames 16 --size 256 --out demo_small",
}


def _frames_count(text):
    raise argparse.ArgumentTypeError(f"--frames is a range A:B (in find and run); the number of frames is "
                                     f"--n-frames {text}")


def _command(sub, name: str, help: str, func, **kw) -> argparse.ArgumentParser:
    s = sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter,
                       epilog="examples:\n  " + EXAMPLES[name], **kw)
    s.set_defaults(func=func)
    return s


def _count_option(s, default: int, what: str) -> None:
    s.add_argument("--n-frames", type=int, default=default, help=f"number of frames {what}")
    s.add_argument("--frames", type=_frames_count, help=argparse.SUPPRESS)


def _identify_option(s) -> None:
    s.add_argument("--identify", action=argparse.BooleanOptionalAction, default=True,
                   help="chemical identification: elements, coordination, defect complexes (crystalline "
                        "lattices; ~0.35 ms per atom, several times the network's share)")


def _flips_option(s) -> None:
    s.add_argument("--flips", type=int, default=None, choices=(1, 2, 4, 8),
                   help="network passes (the frame, its half-turn, mirror images, transposes) whose sub-pixel "
                        "offsets are averaged: better positions for 1.4-3.9x the time of finding without "
                        "chemistry (classes unchanged); default 4 on crystalline lattices, 1 for amorphous, "
                        "low-dose movies, --refine and --lattice-prior; 1 is the fastest")


LATTICE_CHOICES = ["graphene", "ws2", "mos2", "amorphous"]


def _elements_option(s) -> None:
    s.add_argument("--elements", type=lambda v: tuple(e.strip() for e in v.split(",") if e.strip()), default=None,
                   help="with --lattice amorphous: the elements the heavy atoms may be, comma-separated (Fe,Pt), "
                        "named by Z-contrast (adds element, element_prob, excess); one population is named "
                        "after the heaviest: give only the elements that are there")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stemflow", description="Atoms, dopants and vacancies in STEM data, at scale.",
                                formatter_class=_HelpFormatter,
                                epilog="examples:\n  stemflow demo\n  stemflow run movie.zarr --out run1\n"
                                       "  stemflow COMMAND --help        # options and examples of one command")
    p.add_argument("--version", action="version", version=f"stemflow {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = _command(sub, "info", "describe a dataset (Zarr, HDF5, TIFF, .npy, .dm3/.dm4/.emd, .hspy/.zspy)", _cmd_info)
    s.add_argument("path", help="file or store")

    s = _command(sub, "simulate", "simulate a movie (or a 4D-STEM scan) with its ground truth", _cmd_simulate)
    s.add_argument("--lattice", default="graphene", choices=LATTICE_CHOICES, help="host lattice")
    _count_option(s, 16, "(movies)")
    s.add_argument("--size", type=int, default=512, help="frame side, px (square); 4D: scan positions per side")
    s.add_argument("--pixel-size", type=float, default=0.01, help="nm/px")
    s.add_argument("--dose", type=float, default=1e5, help="e⁻/Å² per frame")
    s.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same data)")
    s.add_argument("--defects", type=_defects_arg, default=None,
                   help="KIND=VALUE,...: an int is a count, a float a density per nm² (e.g. Si1C3=0.1,V1=2)")
    s.add_argument("--drift", type=float, nargs=2, default=(0.0, 0.0), metavar=("DY", "DX"),
                   help="drift, px/frame")
    s.add_argument("--line-jitter", type=float, default=0.0, help="scan-line jitter, px RMS")
    s.add_argument("--background", type=float, default=0.0, help="smooth background, fraction of a host column peak")
    s.add_argument("--contamination", type=float, default=0.0, help="contamination patches per nm²")
    s.add_argument("--noise-free", action="store_true", help="write expected counts (no noise)")
    s.add_argument("--4d", dest="fourd", action="store_true", help="write a 4D-STEM scan of --size² probe positions")
    s.add_argument("--detector-size", type=int, default=64, help="4D: detector pixels per side")
    s.add_argument("--out", required=True, help="Zarr store to write (truth tables go beside it)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing store")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    s = _command(sub, "find", "find atoms, dopants and vacancies in an image or movie (in this process)", _cmd_find)
    s.add_argument("input", help="image (y, x) or movie (frame, y, x): any format `stemflow info` reads")
    s.add_argument("--out", required=True, help="atoms table to write: .parquet (with its calibration, which track, "
                                                "dispersion and read_atoms read back), or .csv for other tools")
    s.add_argument("--pixel-size", type=float, default=None, help="nm/px (default: from the file)")
    s.add_argument("--lattice", default="graphene", choices=LATTICE_CHOICES, help="host lattice")
    s.add_argument("--model", default=None, help="bundled model name or NAME.pt path (default: the bundled default)")
    s.add_argument("--dataset", default=None, help="array inside the file (HDF5 path, Zarr array name)")
    s.add_argument("--frames", default=None, help="A:B, frames A to B-1 (global indices kept; default all)")
    s.add_argument("--threshold", type=float, default=0.5, help="foreground probability of a blob, 0–1")
    s.add_argument("--refine", action="store_true",
                   help="refine centres by a Gaussian fit on the image (better from ~1e5-3e5 e⁻/Å² up; slower)")
    _identify_option(s)
    s.add_argument("--lattice-prior", action="store_true",
                   help="move regular lattice columns towards their fitted sites as far as the frame's own "
                        "scatter allows (implies --refine; adds y_fit, x_fit: the unbiased fit, for strain maps)")
    _flips_option(s)
    _elements_option(s)
    s.add_argument("--low-dose", action=argparse.BooleanOptionalAction, default=None,
                   help="a low-dose movie of a stable host: use all its frames together (registered from the "
                        "images; a hidden Markov model over the dopants' sites), as stemflow.find_atoms_movie; "
                        "no chemical identification. Default: on when the first frames are too dim to be read one by one "
                        "(stemflow.lowdose.low_dose_check; said on stderr)")
    s.add_argument("--window", type=int, default=2,
                   help="with --low-dose: frames summed on each side for the network to see the dopants")

    s = _command(sub, "train", "train a network on streamed simulated data", _cmd_train)
    s.add_argument("--lattice", default="graphene,ws2,mos2,amorphous", help="comma-separated lattices")
    s.add_argument("--steps", type=int, default=6000, help="optimisation steps")
    s.add_argument("--batch-size", type=int, default=16, help="samples per step (crops on the network's grid)")
    s.add_argument("--lr", type=float, default=3e-3, help="learning rate")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--threads", type=int, default=1, help="torch threads of the training step")
    s.add_argument("--workers", type=int, default=1, help="processes simulating training data")
    s.add_argument("--out", required=True, help="NAME.pt to write (NAME.json beside it)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    s = _command(sub, "adapt", "fine-tune a model on your own unlabelled frames (self-training on confident answers)",
                 _cmd_adapt)
    s.add_argument("inputs", nargs="+", help="images or movies to adapt to (any format open_stem reads)")
    s.add_argument("--out", required=True, help="NAME.pt to write (NAME.json, its card, beside it)")
    s.add_argument("--model", default=None, help="model to start from: bundled name or NAME.pt (default: the bundled default)")
    s.add_argument("--pixel-size", type=float, default=None, help="nm/px (default: from each file)")
    s.add_argument("--dataset", default=None, help="array inside the file (HDF5 path, Zarr array name)")
    s.add_argument("--max-frames", type=int, default=32, help="frames sampled evenly from each movie")
    s.add_argument("--steps", type=int, default=150, help="optimisation steps")
    s.add_argument("--batch-size", type=int, default=8, help="crops per step (128 px on the network's grid)")
    s.add_argument("--lr", type=float, default=3e-4, help="learning rate")
    s.add_argument("--confidence", type=float, default=0.7,
                   help="teacher blobs at least this probable (0–1) become pseudo-labels")
    s.add_argument("--sim-share", type=float, default=0.25, help="share of simulated samples in each batch, 0–1")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    s = _command(sub, "evaluate", "score a model on the held-out simulated test set", _cmd_evaluate)
    s.add_argument("--model", default=None, help="bundled model name or NAME.pt path (default: the bundled default)")
    s.add_argument("--lattice", default="graphene,ws2", help="comma-separated lattices")
    s.add_argument("--repeats", type=int, default=2, help="frames per lattice × dose × pixel size")
    s.add_argument("--out", default="evaluation", help="folder for the tables and the figure (under the current "
                                                      "directory unless a path is given)")
    s.add_argument("--lattice-prior", action="store_true",
                   help="score find_atoms(..., lattice_prior=True) (files get a _lattice_prior suffix)")
    _flips_option(s)
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    s = _command(sub, "run", "find atoms in a whole dataset on a Dask cluster → OUT/atoms.parquet (resumable); "
                             "movies are then tracked", _cmd_run)
    s.add_argument("input", help="movie (frame, y, x), image, 4D-STEM scan or 5-D movie of scans")
    s.add_argument("--out", required=True, help="output directory (atoms.parquet/, manifest.json, tracking tables)")
    s.add_argument("--model", default=None, help="bundled model name or NAME.pt path (default: the bundled default)")
    s.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler (default: $DASK_SCHEDULER_ADDRESS, else a local cluster)")
    s.add_argument("--frames", default=None, help="A:B, frames A to B-1 (global indices kept; default all)")
    s.add_argument("--detector", default=None,
                   help="4D-STEM virtual detector: haadf (the default), adf, maadf, abf, bf, or NAME:INNER:OUTER in "
                        "mrad (detector px when uncalibrated)")
    s.add_argument("--save-probabilities", action="store_true", help="also write class maps to OUT/probabilities.zarr")
    s.add_argument("--overwrite", action="store_true", help="recompute when OUT holds a run with other settings")
    s.add_argument("--lattice", default="graphene", choices=LATTICE_CHOICES, help="host lattice")
    s.add_argument("--pixel-size", type=float, default=None, help="nm/px (default: from the file)")
    s.add_argument("--dataset", default=None, help="array inside the file (HDF5 path, Zarr array name)")
    s.add_argument("--threshold", type=float, default=0.5, help="foreground probability of a blob, 0–1")
    s.add_argument("--refine", action="store_true",
                   help="refine centres by a Gaussian fit on the image (better from ~1e5-3e5 e⁻/Å² up; slower)")
    _identify_option(s)
    s.add_argument("--lattice-prior", action="store_true",
                   help="move regular lattice columns towards their fitted sites (implies --refine and --identify)")
    _flips_option(s)
    _elements_option(s)
    s.add_argument("--low-dose", action=argparse.BooleanOptionalAction, default=None,
                   help="movies too dim for single frames: each part is found with all its frames together "
                        "(stemflow.find_atoms_movie), with a few frames of context from its neighbours. "
                        "Default: on when the first frames are too dim to be read one by one (said on stderr)")
    s.add_argument("--window", type=int, default=2,
                   help="with --low-dose: frames summed on each side for the network to see the dopants")
    s.add_argument("--frames-per-part", type=int, default=None, help="frames per task (default: one input chunk)")
    s.add_argument("--tile", type=int, default=1024, help="largest network pass, px on the network's grid")
    s.add_argument("--batch-size", type=int, default=4, help="frames per network pass")
    s.add_argument("--workers", type=int, default=None, help="local cluster: worker processes (default: one per core)")
    s.add_argument("--embed-model", action="store_true", help="send the weights to the workers instead of their path")
    s.add_argument("--no-track", action="store_true", help="movies: do not link and write the tracking tables")
    s.add_argument("--quiet", action="store_true", help="no dashboard link or progress bar")

    s = _command(sub, "track", "link dopants and vacancies of an atoms table → trajectories, events, drift, report",
                 _cmd_track)
    s.add_argument("input", help="atoms table: a Parquet file or a folder of parts (e.g. RUN/atoms.parquet)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--pixel-size", type=float, default=None, help="nm/px (default: from the table)")
    s.add_argument("--labels", default="dopant,vacancy", help="labels to track, comma-separated, or all")
    s.add_argument("--search-range", type=float, default=None,
                   help="largest move between observations, nm (default: twice the host's nearest-neighbour "
                        "distance, 0.28 nm in graphene)")
    s.add_argument("--memory", type=int, default=3, help="frames a particle may go unseen and keep its id")
    s.add_argument("--spacing", type=float, default=None,
                   help="host nearest-neighbour distance, nm: the scale of a hop (a move of 0.75 of it) and of "
                        "the search range (default: measured on the lattice atoms; 0.142 nm for heavy atoms on an "
                        "amorphous support)")
    s.add_argument("--dose", type=float, default=None, help="e⁻/Å² per frame, for rates per dose")
    s.add_argument("--frame-time", type=float, default=None, help="s per frame, for rates per second")
    s.add_argument("--no-report", action="store_true", help="do not write report.html")

    s = _command(sub, "report", "write DIR/report.html from the tables in a run directory", _cmd_report)
    s.add_argument("directory", help="run directory (stemflow run or stemflow track output)")
    s.add_argument("--dose", type=float, default=None, help="e⁻/Å² per frame (default: the input's)")
    s.add_argument("--frame-time", type=float, default=None, help="s per frame (default: the input's)")

    s = _command(sub, "dispersion", "how single atoms (or dopants) are spread: density, nearest neighbours, "
                 "pairs and clusters, Ripley's L against random placement", _cmd_dispersion)
    s.add_argument("input", help="atoms table: a Parquet file, a folder of parts or a run directory")
    s.add_argument("--label", default="dopant", help="rows counted (heavy atoms on an amorphous support are "
                                                      "'dopant'), or all")
    s.add_argument("--element", default=None, help="count only this element (after --elements or identification)")
    s.add_argument("--within-nm", type=float, default=0.35, help="atoms closer than this are a group (pair, triple ...), nm")
    s.add_argument("--pixel-size", type=float, default=None, help="nm/px (default: from the table)")
    s.add_argument("--shape", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="frame size, px (default: from the table, as find and run record it)")
    s.add_argument("--frames", default=None, help="frames A:B of a stack (default: all; a run's whole range, "
                                                   "frames where nothing was found included)")
    s.add_argument("--simulations", type=int, default=99, help="random patterns for Ripley's envelope (0: none)")
    s.add_argument("--hard-core-nm", type=float, default=None,
                   help="least distance between two atoms of the random patterns, nm (default: the heavy-atom "
                        "finder's own for an amorphous support, 0 for a crystal's dopants)")
    s.add_argument("--seed", type=int, default=0, help="seed of the random patterns")
    s.add_argument("--show", type=int, default=40, help="print the per-frame table when it has at most this many rows")
    s.add_argument("--out", default=None, help="per-frame table (.csv, else Parquet)")
    s.add_argument("--ripley-out", default=None, help="Ripley's L table (.csv, else Parquet)")
    s.add_argument("--plot", default=None, help="figure of Ripley's L with its envelope (.png, .pdf, .svg)")

    s = _command(sub, "demo", "the whole pipeline on a simulated movie, scored against its truth (no input needed)",
                 _cmd_demo)
    s.add_argument("--out", default="demo_out", help="output directory")
    _count_option(s, 64, "to simulate")
    s.add_argument("--size", type=int, default=512, help="frame side, px (10 pm/px)")
    s.add_argument("--dose", type=float, default=1e5, help="e⁻/Å² per frame")
    s.add_argument("--seed", type=int, default=7, help="random seed")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
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

    where = f"stemflow {args.command}"
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(where)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{where}: interrupted{_parts_done(args)}; run the same command again to resume", file=sys.stderr)
        return 130
    except (StemflowError, FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError, ValueError, TypeError) as exc:
        # bad input or usage: the message names the problem and the fix
        print(f"{where}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:   # a failure while running: one line, the traceback on request
        if os.environ.get("STEMFLOW_DEBUG"):
            raise
        print(f"{where}: failed: {type(exc).__name__}: {_one_line(exc)} (set STEMFLOW_DEBUG=1 to see where)",
              file=sys.stderr)
        return 1


def _parts_done(args) -> str:
    """``": N of M parts complete"`` for a run directory, else what is kept."""
    out = getattr(args, "out", None)
    try:
        from .rundir import MANIFEST, run_status

        if out and (Path(out) / MANIFEST).exists():
            st = run_status(out)
            return f": {st['parts'] - len(st['missing'])} of {st['parts']} parts complete"
    except Exception:   # the message must not fail on a half-written directory
        pass
    return "; the parts already written are kept"


def _warning_printer(where: str):
    """``warnings.showwarning`` for the command line: stemflow's own warnings as one line
    ``stemflow CMD: warning: …`` on stderr (no Python file and source line); others as usual."""
    from .errors import StemflowWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, StemflowWarning):
            print(f"{where}: warning: {_one_line(message)}", file=sys.stderr if file is None else file)
        else:
            default(message, category, filename, lineno, file, line)

    return show


#: The Python spellings of stemflow's advice and the command line's (:func:`_as_flags`); a keyword
#: inside a call (``find_atoms(..., lattice='amorphous')``) is Python and stays.
_FLAGS = [
    (re.compile(r"(?<!\.\.\., )\blattice='(\w+)'"), r"--lattice \1"),
    (re.compile(r"(?<!\.\.\., )\bpixel_size=(\d[\d.e-]*)"), r"--pixel-size \1"),
    (re.compile(r"\bpass pixel_size= "), "pass --pixel-size "),
    (re.compile(r"(?<!\.\.\., )\belements=\(((?:'\w+'(?:, )?)+)\)"),
     lambda m: "--elements " + ",".join(re.findall(r"\w+", m.group(1)))),
    (re.compile(r"\boverwrite=True\b"), "--overwrite"),
    (re.compile(r"\bhard_core_nm=(\d[\d.]*)"), r"--hard-core-nm \1"),
]


def _as_flags(text: str) -> str:
    """A message of stemflow's with its advice in the command line's terms: ``lattice='mos2'`` →
    ``--lattice mos2``, ``elements=('Fe', 'Pt')`` → ``--elements Fe,Pt`` ...; a flag the message
    already gave in brackets after the keyword is not said twice.

    Examples
    --------
    >>> _as_flags("pass lattice='mos2' or pixel_size=0.0127; elements=('Fe', 'Pt') keeps both")
    'pass --lattice mos2 or --pixel-size 0.0127; --elements Fe,Pt keeps both'
    >>> _as_flags("pass overwrite=True (--overwrite) to replace it")
    'pass --overwrite to replace it'
    >>> _as_flags("pass pixel_size= in nm/px (--pixel-size), e.g. 0.01")
    'pass --pixel-size in nm/px, e.g. 0.01'
    >>> _as_flags("a table of find_atoms(..., lattice='amorphous', elements=(...)) says so")
    "a table of find_atoms(..., lattice='amorphous', elements=(...)) says so"
    """
    for pattern, repl in _FLAGS:
        text = pattern.sub(repl, text)
    for flag in set(re.findall(r" \((--[\w-]+)\)", text)):
        if text.count(flag) > 1:                    # said already: drop the bracketed repeat
            text = text.replace(f" ({flag})", "")
    return text


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line, its advice in the command line's terms."""
    return _as_flags(" ".join(str(exc).split())) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())

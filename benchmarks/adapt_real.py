"""Adaptation without labels, measured on the real dev sets: adapt on their frames (labels
unused), then score with the labels, before and after.

Run: ``python benchmarks/adapt_real.py [--model PATH] [--steps N]`` → ``benchmarks/results/
adapt_real.{md,json}``. Needs the labelled dev data (``shared/data``); the adapted weights go to
``benchmarks/_cache/adapted_*.pt``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"


def _score(kind, frames, model):
    from stemflow import find_atoms
    from stemflow.labelled import score_dopant_complexes, score_heavy_atoms

    if kind == "si":
        s, _ = score_dopant_complexes(frames, lambda f: find_atoms(f.image, f.pixel_size, "graphene", model=model,
                                                                   identify_options={"classes": False}))
        return {k: s[k] for k in ("dopant_recall", "dopant_precision", "dopant_f1", "host_recall", "host_mean_pm",
                                  "defect_accuracy")}
    s, _ = score_heavy_atoms(frames, lambda f: find_atoms(f.image, f.pixel_size, "amorphous", model=model))
    return {k: s[k] for k in ("precision", "recall", "f1", "support_rows")}


def write_md(res: dict, suffix: str = "") -> str:
    """Write ``adapt_real{suffix}.md`` from the measured results; return its text."""
    steps, conf = res["steps"], res.get("confidence", 0.9)
    lines = ["# `stemflow adapt` on the real dev sets (labels used only to score)", "",
             f"Written by `python benchmarks/adapt_real.py` on {res['date']}: model {res['model']}, {steps} steps "
             f"(confidence {conf}) "
             "of self-training on each set's own frames (`stemflow.nn.adapt.adapt`, defaults otherwise), then "
             "scored with the hand labels as in `benchmarks/results/real_data.md`.", "",
             "| set | measure | before | after |", "|---|---|---|---|"]
    for kind, r in res["sets"].items():
        name = "Si-doped graphene" if kind == "si" else "Pt on carbon nitride"
        for k in r["before"]:
            lines.append(f"| {name} ({r['frames']} frames) | {k} | {r['before'][k]:.3f} | {r['after'][k]:.3f} |")
        lines.append(f"| {name} | adapt time, s; pseudo-labels | {r['adapt_seconds']:.0f} | {r['pseudo_labels']} |")
    (OUT / f"adapt_real{suffix}.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model to adapt (default: bundled)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--sets", default="si,pt")
    ap.add_argument("--confidence", type=float, default=0.7, help="pseudo-label confidence")
    ap.add_argument("--out-suffix", default="", help="appended to the output file names")
    ap.add_argument("--rewrite", action="store_true", help="only rewrite the .md from the .json of the same suffix")
    args = ap.parse_args(argv)
    if args.rewrite:
        print(write_md(json.loads((OUT / f"adapt_real{args.out_suffix}.json").read_text()), args.out_suffix))
        return 0
    from stemflow import load_model
    from stemflow.labelled import dev_data_dir, read_dopant_complexes, read_heavy_atoms
    from stemflow.nn.adapt import adapt

    data = dev_data_dir()
    if data is None:
        print("labelled dev data not found (shared/data or STEMFLOW_DEV_DATA): nothing measured")
        return 0
    base = load_model(args.model or "default")
    res = {"model": f"{args.model or 'bundled default'} sha256 {base.card.get('sha256', '')[:12]}",
           "steps": args.steps, "confidence": args.confidence, "date": time.strftime("%Y-%m-%d"), "sets": {}}
    for kind in [s.strip() for s in args.sets.split(",") if s.strip()]:
        frames = (read_dopant_complexes(data / "si_graphene_dev.npz") if kind == "si"
                  else read_heavy_atoms(data / "pt_single_atoms_dev.npz"))
        before = _score(kind, frames, base)
        t0 = time.perf_counter()
        result = adapt([f.image for f in frames], [f.pixel_size for f in frames], model=base, steps=args.steps,
                       confidence=args.confidence, progress=False)
        seconds = time.perf_counter() - t0
        result.save(HERE / "_cache" / f"adapted_{kind}{args.out_suffix}.pt")
        after = _score(kind, frames, result.model)
        res["sets"][kind] = {"frames": len(frames), "before": before, "after": after, "adapt_seconds": seconds,
                             "pseudo_labels": int(result.report["pseudo_labels"].sum())}
        print(kind, json.dumps(res["sets"][kind], default=float), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / f"adapt_real{args.out_suffix}.json").write_text(json.dumps(res, indent=1, default=float))
    print(write_md(res, args.out_suffix))
    return 0


if __name__ == "__main__":
    sys.exit(main())

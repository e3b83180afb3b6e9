"""The paper's transfer claim, measured: a network trained on graphene only, evaluated on WS2.

Trains (if absent) ``benchmarks/_cache/graphene_only.pt`` with the same pipeline as the bundled
model but graphene-only data (``stemflow train --lattice graphene --steps 2500``), then scores it
and the bundled model (trained on graphene, WS2, MoS2, amorphous) on the held-out WS2 and
graphene test sets at every dose. Writes ``benchmarks/results/transfer.md`` and
``docs/images/transfer.png``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from stemflow.evaluate import DEMO_DOSE, evaluate, summarise, test_set

CACHE = Path(__file__).parent / "_cache"
OUT = Path(__file__).parent / "results"


def main():
    g = CACHE / "graphene_only.pt"
    if not g.exists():
        subprocess.run([sys.executable, "-m", "stemflow.cli", "train", "--lattice", "graphene", "--steps", "2500",
                        "--workers", "2", "--out", str(g)], check=True)
    cases = test_set(lattices=("ws2", "graphene"), pixel_sizes=(0.012,), repeats=2)
    rows = []
    for name, model in (("graphene only", str(g)), ("bundled (all lattices)", "default")):
        s = summarise(evaluate(model, cases, progress=False))
        s.insert(0, "model", name)
        rows.append(s)
    res = pd.concat(rows, ignore_index=True)
    OUT.mkdir(exist_ok=True)
    res.to_csv(OUT / "transfer.csv", index=False)
    at = res[(res.dose == DEMO_DOSE) & res["class"].isin(["lattice", "dopant", "vacancy"])]
    lines = ["# Transfer: trained on graphene only, evaluated on WS2", "",
             "`python benchmarks/transfer.py`; held-out test frames of 384² px at 12 pm/px; F1 per class "
             f"at the demo's dose ({DEMO_DOSE:.0e} e⁻/Å²); all doses in `transfer.csv` and the figure.", "",
             "| model | test lattice | F1 lattice | F1 dopant | F1 vacancy | RMSE lattice (pm) |", "|---|---|---|---|---|---|"]
    for (model, lat), t in at.groupby(["model", "lattice"], sort=False):
        f = t.set_index("class")
        lines.append(f"| {model} | {lat} | {f.f1['lattice']:.4f} | {f.f1['dopant']:.4f} | {f.f1['vacancy']:.4f} | "
                     f"{f.rmse_pm['lattice']:.1f} |")
    (OUT / "transfer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _figure(res)


def _figure(res):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for ax, cls in zip(axes, ("lattice", "dopant", "vacancy")):
        for (model, lat), t in res[res["class"] == cls].groupby(["model", "lattice"], sort=False):
            t = t.sort_values("dose")
            ax.semilogx(t.dose, t.f1, "o-" if lat == "ws2" else "s--", label=f"{model} → {lat}")
        ax.set_title(f"F1, {cls}")
        ax.set_xlabel("dose per frame (e⁻/Å²)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("F1")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Transfer: a network trained on graphene only, on WS2")
    fig.tight_layout()
    out = Path(__file__).parent.parent / "docs" / "images" / "transfer.png"
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    from _cli import options

    options(__doc__)
    main()

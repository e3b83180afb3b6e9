"""Draw ``docs/images/architecture.png``: stemflow's parts in layers, from the real imports.

The graph is read from the source (every import, lazy ones included, as
``tests/test_architecture.py`` reads it), folded to parts (``stemflow.chem.sites`` →
``chem``); a part's layer is the length of its longest chain of imports down to the ground floor,
so every arrow points down. Rerun after moving code: ``python docs/make_architecture.py``.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "architecture.png"

#: Colour per kind of part.
KIND = {
    "ground": ("errors", "tables", "atomic", "frames", "lazy"),
    "dask": ("parallel", "io"),
    "surface": ("accessor", "cli", "demo", "stemflow"),
}
COLOURS = {"ground": "#d9d9d9", "dask": "#9ecae1", "surface": "#fdd0a2", "core": "#c7e9c0"}


def part_graph() -> dict[str, set[str]]:
    """``{part: parts it imports}``, parts named without the ``stemflow.`` prefix."""
    spec = importlib.util.spec_from_file_location("_arch", ROOT / "tests" / "test_architecture.py")
    arch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arch)
    graph = arch._graph()

    def part(m: str) -> str:
        p = m.split(".")
        return p[1] if len(p) > 1 else "stemflow"

    out: dict[str, set[str]] = {}
    for m, deps in graph.items():
        a = part(m)
        out.setdefault(a, set())
        for d in deps:
            b = part(d)
            if b not in (a, "stemflow"):
                out[a].add(b)
    return out


def main() -> Path:
    g = part_graph()

    @lru_cache(None)
    def level(p: str) -> int:
        return 0 if not g[p] else 1 + max(level(d) for d in g[p])

    rows: dict[int, list[str]] = {}
    for p in sorted(g):
        rows.setdefault(level(p), []).append(p)
    width = max(len(r) for r in rows.values())
    pos = {}
    for lv, names in rows.items():
        for i, n in enumerate(names):
            pos[n] = ((i + 0.5) * width / len(names), lv)
    fig, ax = plt.subplots(figsize=(13, 1.15 * len(rows) + 1))
    for a, deps in g.items():
        for b in deps - {"errors"}:          # every part imports errors: those arrows are left out
            (x0, y0), (x1, y1) = pos[a], pos[b]
            ax.annotate("", xy=(x1, y1 + 0.18), xytext=(x0, y0 - 0.18),
                        arrowprops=dict(arrowstyle="-|>", color="#888888", lw=0.6, alpha=0.55,
                                        shrinkA=0, shrinkB=0))
    for n, (x, y) in pos.items():
        kind = next((k for k, names in KIND.items() if n in names), "core")
        ax.text(x, y, n if n != "stemflow" else "stemflow (top level)", ha="center", va="center", fontsize=10,
                bbox=dict(boxstyle="round,pad=0.35", fc=COLOURS[kind], ec="#555555", lw=0.8))
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-0.7, max(rows) + 0.7)
    ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, fc=c, ec="#555555") for c in COLOURS.values()]
    ax.legend(handles, ["ground floor (numpy/pandas)", "Dask allowed", "thin surface", "numpy/scipy/torch core"],
              loc="upper left", fontsize=8, frameon=False, ncol=4, bbox_to_anchor=(0, 1.0))
    ax.set_title("stemflow's parts: each imports only parts below it\n(arrows: imports read from the source; "
                 "those to errors, which every part imports, left out)", fontsize=11)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {OUT.relative_to(ROOT)}: {len(g)} parts in {len(rows)} layers")
    return OUT


if __name__ == "__main__":
    main()

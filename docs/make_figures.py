"""Figures of the user guide, made from the simulator (run: ``make docs``).

docs/images/simulated_frames.png — simulated graphene+Si and WS2+Mo/vacancy frames with their
ground truth overlaid, and the class masks the network learns from.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from stemflow.simulate import simulate_image  # noqa: E402
from stemflow.tables import CLASSES  # noqa: E402

HERE = Path(__file__).parent / "images"
STYLE = {"lattice": dict(s=4, c="#4da3ff", marker="."),
         "dopant": dict(s=90, facecolors="none", edgecolors="#ff3b30", linewidths=1.5),
         "vacancy": dict(s=90, facecolors="none", edgecolors="#34c759", linewidths=1.5, marker="s")}


def panel(ax_img, ax_mask, sim, title):
    ax_img.imshow(sim.image, cmap="gray", interpolation="nearest")
    for label, style in STYLE.items():
        t = sim.atoms[sim.atoms.label == label]
        ax_img.scatter(t.x, t.y, label=f"{label} ({len(t)})", **style)
    for _, t in sim.atoms[sim.atoms.defect != ""].groupby("defect_id"):
        ax_img.annotate(t.defect.iloc[0], (t.x.mean(), t.y.mean()), xytext=(8, -8), textcoords="offset points",
                        color="yellow", fontsize=8)
    px = sim.pixel_size
    ax_img.set_title(f"{title}\n{sim.image.shape[0]}² px, {px * 1000:.0f} pm/px, "
                     f"{sim.imaging.dose:.0e} e⁻/Å²", fontsize=10)
    ax_img.legend(loc="lower right", fontsize=7, framealpha=0.7)
    cmap = ListedColormap(["#101010", "#4da3ff", "#ff3b30", "#34c759"])
    ax_mask.imshow(sim.mask, cmap=cmap, vmin=0, vmax=len(CLASSES) - 1, interpolation="nearest")
    ax_mask.set_title("class mask: " + " / ".join(CLASSES), fontsize=10)
    bar = 1.0 / px  # 1 nm
    for ax in (ax_img, ax_mask):
        ax.plot([10, 10 + bar], [sim.image.shape[0] - 12] * 2, color="white", lw=3)
        ax.text(10 + bar / 2, sim.image.shape[0] - 18, "1 nm", color="white", ha="center", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])


def main():
    HERE.mkdir(parents=True, exist_ok=True)
    g = simulate_image("graphene", 384, seed=4, pixel_size=0.012, dose=1e5, rotation=12,
                       defects={"Si1C3": 3, "Si1C4": 1, "V1": 1, "V2": 1, "SW": 1, "Si2C4": 1},
                       line_jitter=0.2, background=0.3, contamination=0.03)
    w = simulate_image("ws2", 384, seed=2, pixel_size=0.012, dose=2e5, rotation=-7,
                       defects={"Mo_W": 4, "V_S": 3, "V_S2": 2, "V_W": 1}, line_jitter=0.2)
    fig, axes = plt.subplots(2, 2, figsize=(11, 11))
    panel(axes[0, 0], axes[0, 1], g, "graphene + Si (Si1C3, Si1C4, Si2C4), V1, V2, Stone–Wales")
    panel(axes[1, 0], axes[1, 1], w, "WS2 + Mo, S and W vacancies")
    fig.tight_layout()
    out = HERE / "simulated_frames.png"
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Atom-level accuracy of a model on a seeded, held-out simulated test set.

The test set covers graphene with Si dopants and vacancies and WS2 with Mo dopants and S/W
vacancies at several doses and pixel sizes, with realistic nuisances, from simulation seeds that
training never draws (:data:`stemflow.augment.TEST_SEED_START` and up). Detections are matched
one-to-one to the truth within half the nearest-neighbour distance; per class: precision, recall,
F1 and localisation RMSE (px and pm).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .augment import TEST_SEED_START
from .find import find_atoms
from .metrics import score
from .simulate import simulate_image

__all__ = ["TestCase", "test_set", "evaluate", "DEMO_DOSE", "plot_f1_vs_dose"]

#: The dose (e⁻/Å² per frame) of ``stemflow demo``, at which acceptance figures are quoted.
DEMO_DOSE = 1e5

_SCENES = {
    "graphene": {"Si1C3": 0.25, "Si1C4": 0.08, "Si2C4": 0.04, "V1": 0.1, "V2": 0.04, "SW": 0.03},
    "ws2": {"Mo_W": 0.3, "V_S": 0.3, "V_S2": 0.1, "V_W": 0.05},
    "mos2": {"W_Mo": 0.3, "V_S": 0.3, "V_S2": 0.1, "V_Mo": 0.05},
    "amorphous": {"Pt1": 0.5},
}
_NUISANCE = dict(line_jitter=0.15, background=0.3, contamination=0.02, read_noise=0.3)


@dataclass(frozen=True)
class TestCase:
    """One frame of the test set."""

    lattice: str
    dose: float
    pixel_size: float
    seed: int
    size: int = 384


def test_set(lattices=("graphene", "ws2"), doses=(1e4, 3e4, 1e5, 3e5, 1e6), pixel_sizes=(0.01, 0.016),
             repeats: int = 2, size: int = 384) -> list[TestCase]:
    """The held-out test set: every lattice × dose (e⁻/Å²) × pixel size (nm/px) × repeat."""
    cases, k = [], 0
    for lat in lattices:
        for dose in doses:
            for px in pixel_sizes:
                for _ in range(repeats):
                    cases.append(TestCase(lat, float(dose), float(px), TEST_SEED_START + k, size))
                    k += 1
    return cases


def _simulate(case: TestCase):
    return simulate_image(case.lattice, case.size, defects=_SCENES[case.lattice], seed=case.seed,
                          pixel_size=case.pixel_size, dose=case.dose, **_NUISANCE)


def evaluate(model=None, cases=None, *, border_nm: float = 0.15, progress: bool = True, **find_options) -> pd.DataFrame:
    """Score ``model`` on ``cases`` (default :func:`test_set`).

    Atoms within ``border_nm`` of the frame edge (truth and detections alike) are left out, since
    a column cut by the edge has no well-defined centre. ``find_options`` go to
    :func:`~stemflow.find_atoms` (the chemical identification is off unless asked for, and on
    with ``lattice_prior=True``, which needs it).

    Returns
    -------
    DataFrame
        One row per case and class (``lattice``, ``dopant``, ``vacancy``, ``all``): ``lattice``,
        ``dose``, ``pixel_size``, ``seed``, ``class``, ``tp``, ``fp``, ``fn``, ``precision``,
        ``recall``, ``f1``, ``rmse_px``, ``rmse_pm``.
    """
    cases = test_set() if cases is None else cases
    rows = []
    it = cases
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(cases, desc="evaluating", unit="frame")
    opts = {"identify": False, **find_options}
    if opts.get("lattice_prior"):
        # The prior stands on the chemical identification's lattice fit; the unsupervised
        # classes (a whole-dataset step) are not needed for it.
        opts.update(identify=True, identify_options={"classes": False, **(opts.get("identify_options") or {})})
    for case in it:
        sim = _simulate(case)
        pred = find_atoms(sim.image, case.pixel_size, case.lattice, model, **opts)
        b = border_nm / case.pixel_size
        n = case.size

        def inner(t):
            return t[t.y.between(b, n - 1 - b) & t.x.between(b, n - 1 - b)].reset_index(drop=True)

        s = score(inner(pred), inner(sim.atoms), pixel_size=case.pixel_size)
        s = s.reset_index().rename(columns={s.index.name or "index": "class"})
        for k, v in dict(lattice=case.lattice, dose=case.dose, pixel_size=case.pixel_size, seed=case.seed).items():
            s.insert(0, k, v)
        rows.append(s)
    return pd.concat(rows, ignore_index=True)


def summarise(results: pd.DataFrame, by=("lattice", "dose", "class")) -> pd.DataFrame:
    """Pool counts over the cases of each group and recompute precision, recall, F1; RMSE pooled
    over true positives."""
    g = results.groupby(list(by), observed=True)
    out = g[["tp", "fp", "fn"]].sum()
    out["precision"] = np.where(out.tp + out.fp > 0, out.tp / (out.tp + out.fp).clip(lower=1), 1.0)
    out["recall"] = np.where(out.tp + out.fn > 0, out.tp / (out.tp + out.fn).clip(lower=1), 1.0)
    pr = out.precision + out.recall
    out["f1"] = np.where(pr > 0, 2 * out.precision * out.recall / pr.where(pr > 0, 1), 0.0)
    msq = results.assign(w=results.tp * results.rmse_px.fillna(0) ** 2,
                         wpm=results.tp * results.rmse_pm.fillna(0) ** 2).groupby(list(by), observed=True)[["w", "wpm"]].sum()
    out["rmse_px"] = np.sqrt(msq.w / out.tp.clip(lower=1))
    out["rmse_pm"] = np.sqrt(msq.wpm / out.tp.clip(lower=1))
    return out.reset_index()


def plot_f1_vs_dose(summary: pd.DataFrame, path, title: str = "F1 versus dose"):
    """F1 of each class versus dose, one panel per lattice; writes ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lattices = list(dict.fromkeys(summary.lattice))
    fig, axes = plt.subplots(1, len(lattices), figsize=(5.5 * len(lattices), 4.2), squeeze=False)
    colours = {"lattice": "#4da3ff", "dopant": "#ff3b30", "vacancy": "#34c759", "all": "#777777"}
    for ax, lat in zip(axes[0], lattices):
        s = summary[summary.lattice == lat]
        for cls, c in colours.items():
            t = s[s["class"] == cls].sort_values("dose")
            if len(t):
                ax.semilogx(t.dose, t.f1, "o-", color=c, label=cls)
        ax.axvline(DEMO_DOSE, color="k", lw=0.8, ls=":")
        ax.set_title(lat)
        ax.set_xlabel("dose per frame (e⁻/Å²)")
        ax.set_ylabel("F1")
        ax.set_ylim(min(0.8, float(s.f1.min()) - 0.02) if len(s) else 0.8, 1.005)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)

"""Positions averaged over flipped network passes (``find_atoms(..., flips=n)``): what they gain, what they cost.

The network places each atom by sub-pixel offsets whose error depends on where the column falls
within its pixel; turning or mirroring the frame reverses that error, so averaging the offsets
of the frame's own pass with those of its half-turn (``flips=2``), mirror images (4) and
transposes (8) cancels much of it; the foreground probability that weighs each pixel's offset in
its blob's centre is averaged with them. The blobs, classes and ``prob`` stay those of the frame's
own pass. The default (``flips=None``) is ``stemflow.find.AUTO_FLIPS`` passes on crystalline
lattices. Measured here:

* **A. Simulated frames, exact truth.** Graphene (2 Si1C3, 1 V1) and WS2 (2 Mo_W, 2 V_S), 256²
  px at 12 pm/px, 10⁴, 10⁵ and 10⁶ e⁻/Å², three held-out seeds each (``TEST_SEED_START`` on):
  RMSE (pm) of the found atoms' centres (vacancies left out) matched within 0.07 nm, per
  ``flips``; F1 per class (the classes are those of the frame's own pass whatever ``flips``:
  F1 moves only where a centre moves across the matching distance or the edge band). Atoms
  within 0.15 nm of the frame's edge are left out of both (the edge cuts them).
* **B. Time.** ``find_atoms`` (no chemistry) on one 512² graphene frame, median of five, per
  ``flips``, as a ratio to ``flips=1`` measured in the same run.
* **C. Real frames.** The labelled Si-doped graphene development set (``shared/data``; skipped
  with a message when absent), scored by ``stemflow.labelled.score_dopant_complexes`` per
  ``flips``: the labelled C's distance to the found columns and the Si items of ``real_data.md``.
* **D. What the averaged weights add.** For ``flips`` 4 and 8, positions with the offsets
  averaged and each pixel weighted by its own pass's foreground probability, against both
  averaged (what ``find_atoms`` does): the RMSE of part A's sets at 10⁵ e⁻/Å² and the labelled
  C's mean distance on the real set (no chemistry in either, so the same blobs are compared).

Run: ``python benchmarks/flips.py`` (under a minute on 2 CPU cores). Writes
``benchmarks/results/flips.md`` and ``.json``.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FLIPS = (1, 2, 4, 8)
SETS = {"graphene": {"Si1C3": 2, "V1": 1}, "ws2": {"Mo_W": 2, "V_S": 2}}
DOSES = (1e4, 1e5, 1e6)
PX = 0.012
SIZE = 256
EDGE_NM = 0.15


def _inner(t: pd.DataFrame, n: int = SIZE) -> pd.DataFrame:
    """Rows at least :data:`EDGE_NM` from the edge of an ``n``² frame (the edge cuts atoms)."""
    b = EDGE_NM / PX
    return t[t.y.between(b, n - 1 - b) & t.x.between(b, n - 1 - b)].reset_index(drop=True)


def simulated() -> list[dict]:
    """Part A: RMSE (pm) and F1 per lattice, dose and ``flips``."""
    import stemflow
    from stemflow.augment import TEST_SEED_START
    from stemflow.metrics import match
    from stemflow.simulate import simulate_image

    rows = []
    for lattice, defects in SETS.items():
        for dose in DOSES:
            sims = [simulate_image(lattice, SIZE, pixel_size=PX, seed=TEST_SEED_START + 7100 + k, dose=dose,
                                   defects=defects) for k in range(3)]
            for flips in FLIPS:
                d2, preds, truths = [], [], []
                for k, sim in enumerate(sims):
                    t = _inner(stemflow.find_atoms(sim.image, PX, lattice, identify=False, flips=flips))
                    atoms = _inner(sim.atoms)
                    truth = atoms[atoms.label != "vacancy"].reset_index(drop=True)
                    m = match(t[t.label != "vacancy"].reset_index(drop=True), truth, 0.07 / PX)
                    d2 += list(np.asarray(m["distance"], float) ** 2)
                    preds.append(t.assign(frame=k))
                    truths.append(atoms.assign(frame=k))
                s = stemflow.score(pd.concat(preds, ignore_index=True), pd.concat(truths, ignore_index=True),
                                   pixel_size=PX)
                rows.append({"lattice": lattice, "dose": dose, "flips": flips, "n": len(d2),
                             "rmse_pm": float(np.sqrt(np.mean(d2)) * PX * 1000),
                             **{f"f1_{c}": float(s.loc[c, "f1"]) for c in s.index}})
                print(rows[-1], flush=True)
    return rows


def timing(repeats: int = 5) -> list[dict]:
    """Part B: seconds per 512² frame per ``flips`` (median of ``repeats``), and the ratio to 1;
    without chemistry, and with ``find_atoms``' own defaults (chemistry on) for 1 and
    :data:`~stemflow.find.AUTO_FLIPS` passes."""
    import stemflow
    from stemflow.find import AUTO_FLIPS
    from stemflow.simulate import simulate_image

    img = simulate_image("graphene", 512, pixel_size=PX, seed=11, dose=1e5, defects=SETS["graphene"]).image
    stemflow.find_atoms(img, PX, identify=False, flips=1)              # load the model once

    def median_seconds(**kw) -> float:
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            stemflow.find_atoms(img, PX, "graphene", **kw)
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))

    med = {flips: median_seconds(identify=False, flips=flips) for flips in FLIPS}
    rows = [{"flips": f, "chemistry": False, "seconds": med[f], "ratio": med[f] / med[1]} for f in FLIPS]
    chem = {flips: median_seconds(flips=flips) for flips in (1, AUTO_FLIPS)}
    rows += [{"flips": f, "chemistry": True, "seconds": chem[f], "ratio": chem[f] / chem[1]} for f in chem]
    return rows


def real() -> list[dict] | None:
    """Part C: the real Si dev set per ``flips`` (None without the data)."""
    import stemflow
    from stemflow.labelled import dev_data_dir, read_dopant_complexes, score_dopant_complexes

    where = dev_data_dir()
    if where is None or not (where / "si_graphene_dev.npz").exists():
        print("real Si dev data not found (shared/data): part C skipped", flush=True)
        return None
    frames = read_dopant_complexes(where / "si_graphene_dev.npz")
    rows = []
    for flips in FLIPS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s, _ = score_dopant_complexes(frames, lambda f: stemflow.find_atoms(f.image, f.pixel_size, "graphene",
                                                                                flips=flips))
        rows.append({"flips": flips, **{k: s[k] for k in ("host_mean_pm", "host_rmse_pm", "host_recall",
                                                          "dopant_recall", "dopant_precision", "defect_accuracy")}})
        print(rows[-1], flush=True)
    return rows


def _positions(image, pixel_size: float, lattice: str, flips: int, averaged_weights: bool) -> pd.DataFrame:
    """``find_atoms(..., identify=False, flips=flips)``, or with each pixel weighted by its own
    pass's foreground probability (``averaged_weights=False``)."""
    import dataclasses

    from stemflow.find import atoms_from_maps, atoms_table, predict

    maps = predict(image, pixel_size, flips=flips)
    if not averaged_weights:
        maps = dataclasses.replace(maps, weights=None)
    t = atoms_from_maps(maps, image, lattice=lattice).drop(columns="frame")
    return atoms_table(t, pixel_size, lattice, maps.model)


def weights() -> list[dict]:
    """Part D: RMSE (pm) on part A's sets at 10⁵ e⁻/Å² and the real set's labelled C distance (pm),
    for ``flips`` 4 and 8, with and without the averaged weights."""
    from stemflow.augment import TEST_SEED_START
    from stemflow.labelled import dev_data_dir, read_dopant_complexes, score_dopant_complexes
    from stemflow.metrics import match
    from stemflow.simulate import simulate_image

    where = dev_data_dir()
    frames = (read_dopant_complexes(where / "si_graphene_dev.npz")
              if where is not None and (where / "si_graphene_dev.npz").exists() else None)
    rows = []
    for flips in (4, 8):
        for averaged in (False, True):
            row = {"flips": flips, "averaged_weights": averaged}
            for lattice, defects in SETS.items():
                d2 = []
                for k in range(3):
                    sim = simulate_image(lattice, SIZE, pixel_size=PX, seed=TEST_SEED_START + 7100 + k, dose=1e5,
                                         defects=defects)
                    t = _inner(_positions(sim.image, PX, lattice, flips, averaged))
                    atoms = _inner(sim.atoms)
                    truth = atoms[atoms.label != "vacancy"].reset_index(drop=True)
                    m = match(t[t.label != "vacancy"].reset_index(drop=True), truth, 0.07 / PX)
                    d2 += list(np.asarray(m["distance"], float) ** 2)
                row[f"rmse_pm_{lattice}"] = float(np.sqrt(np.mean(d2)) * PX * 1000)
            if frames is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sc, _ = score_dopant_complexes(frames, lambda f: _positions(f.image, f.pixel_size, "graphene",
                                                                                flips, averaged))
                row["real_c_mean_pm"] = sc["host_mean_pm"]
            rows.append(row)
            print(row, flush=True)
    return rows


def report(res: dict) -> str:
    f1_classes = [k for k in res["simulated"][0] if k.startswith("f1_")]
    lines = ["# Positions averaged over flipped network passes", "",
             f"Written by `python benchmarks/flips.py` ({res['seconds']:.0f} s on the 2-core CPU machine). "
             "`find_atoms(..., flips=n)` averages the network's sub-pixel offsets, and the foreground probability "
             "that weighs them, over the frame and its half-turn (2), mirror images (4) and transposes (8); blobs, "
             "classes and `prob` are those of the frame's own pass. The default (`flips=None`) is "
             f"{res.get('auto_flips', '?')} passes on crystalline lattices, one on `amorphous`. See the script's "
             "docstring for the sets.", "",
             "## A. Simulated frames, exact truth", "",
             "RMSE of the found centres (pm, vacancies left out), 3 held-out frames of 256² px at 12 pm/px per row "
             "(atoms within 0.15 nm of the edge left out); F1 per class: the classes are the frame's own pass whatever "
             "`flips`, so F1 moves only where a centre crosses the matching distance or the edge band.", "",
             "| lattice | dose e⁻/Å² | " + " | ".join(f"RMSE flips={f}" for f in FLIPS) + " | F1 (" +
             ", ".join(c[3:] for c in f1_classes) + ") flips=1 → 8 |",
             "|---|---|" + "---|" * len(FLIPS) + "---|"]
    by = {(r["lattice"], r["dose"], r["flips"]): r for r in res["simulated"]}
    for lattice in SETS:
        for dose in DOSES:
            a, b = by[(lattice, dose, 1)], by[(lattice, dose, 8)]
            f1 = ", ".join(f"{a[c]:.4f} → {b[c]:.4f}" for c in f1_classes)
            lines.append(f"| {lattice} | {dose:.0e} | " + " | ".join(f"{by[(lattice, dose, f)]['rmse_pm']:.2f}"
                                                               for f in FLIPS) + f" | {f1} |")
    lines += ["", "## B. Time", "",
              "`find_atoms` on one 512² graphene frame at 12 pm/px (part A's defects), median of 5 runs, without "
              "chemistry (`identify=False`) and with `find_atoms`' own defaults (chemistry on, as `stemflow run` "
              "also runs it on crystalline lattices, there without the unsupervised classes); ratio to `flips=1` with the same chemistry, in the same run.", "",
              "| flips | chemistry | seconds | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['flips']} | {'yes' if r.get('chemistry') else 'no'} | {r['seconds']:.3f} | {r['ratio']:.2f}× |"
              for r in res["timing"]]
    lines += ["", "## C. Real frames: the labelled Si-doped graphene development set", ""]
    if res["real"] is None:
        lines.append("Not run: the labelled development data (`shared/data`) were not there.")
    else:
        lines += ["Scored as in `real_data.md` (`stemflow.labelled.score_dopant_complexes`); C: the labelled first-shell "
                  "C matched within 0.071 nm to found columns.", "",
                  "| flips | C mean distance (pm) | C RMS (pm) | C recall | Si recall | Si precision | defect type |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['flips']} | {r['host_mean_pm']:.2f} | {r['host_rmse_pm']:.2f} | {r['host_recall']:.3f} | "
                  f"{r['dopant_recall']:.3f} | {r['dopant_precision']:.3f} | {r['defect_accuracy']:.3f} |"
                  for r in res["real"]]
    if res.get("weights"):
        lines += ["", "## D. What the averaged weights add", "",
                  "Positions only (no chemistry): the offsets averaged over the passes with each pixel weighted by the "
                  "foreground probability of the frame's own pass, against that probability averaged over the passes "
                  "too (what `find_atoms` does). RMSE against the simulator's truth, part A's frames at 10⁵ e⁻/Å²; "
                  "the real set's labelled C, mean distance to the found columns.", "",
                  "| flips | weights | RMSE graphene (pm) | RMSE WS2 (pm) | real labelled C (pm) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['flips']} | {'averaged' if r['averaged_weights'] else 'own pass'} | "
                  f"{r['rmse_pm_graphene']:.2f} | {r['rmse_pm_ws2']:.2f} | "
                  f"{r['real_c_mean_pm']:.2f} |" if "real_c_mean_pm" in r else
                  f"| {r['flips']} | {'averaged' if r['averaged_weights'] else 'own pass'} | "
                  f"{r['rmse_pm_graphene']:.2f} | {r['rmse_pm_ws2']:.2f} | not run |" for r in res["weights"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    from stemflow.find import AUTO_FLIPS

    t0 = time.perf_counter()
    res = {"auto_flips": AUTO_FLIPS, "simulated": simulated(), "timing": timing(), "real": real(),
           "weights": weights()}
    res["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "flips.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "flips.md").write_text(report(res))
    print(report(res))
    return 0


if __name__ == "__main__":
    from _cli import options

    options(__doc__)
    raise SystemExit(main())

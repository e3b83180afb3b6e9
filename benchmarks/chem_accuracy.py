"""Chemical identification against the simulator's truth: coordination, defect types, vacancy
complexes, Stone–Wales rings and the unsupervised classes.

Simulated frames of 384² px holding every defect kind of the simulator (graphene: V1, V2, Si1C3,
Si1C4, Si2C4, Si3C6, SW; WS2 / MoS2: chalcogen single and double vacancies, metal vacancy,
metal dopant) at random positions and orientations, five doses (10⁴…10⁶ e⁻/Å²) and three
pixel sizes (10, 12, 16 pm/px), with scan-line jitter, background and contamination, from seeds
the network's training never drew. Two inputs are scored:

* ``network`` — :func:`stemflow.find_atoms` on the image, then :func:`stemflow.chem.identify`;
* ``truth`` — the truth table's ``y``, ``x``, ``label`` alone (intensity measured on the image),
  i.e. the chemistry logic without the network's errors.

Defect complexes are paired one to one with the true ones (centres within one bond; predicted
complexes centred within 0.2 nm of the frame edge, where the simulator places none and columns
are cut, are left out). Writes ``benchmarks/results/chem.md``, ``benchmarks/results/chem.json``,
``docs/evaluation/chem_confusion_*.csv`` and the figures ``docs/images/chem_*.png``.

Run: ``python benchmarks/chem_accuracy.py`` (about 3 min on 2 CPU cores; ``--quick`` for one
dose and pixel size).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from stemflow import find_atoms, match
from stemflow.augment import TEST_SEED_START
from stemflow.chem import identify
from stemflow.chem.classes import cluster_descriptors, defect_descriptors, defect_patches, class_mean_patches
from stemflow.chem.defects import analyse_defects
from stemflow.tables import LATTICES as LATTICE_PARAMS  # nm
from stemflow.simulate import DEFECT_KINDS, simulate_image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results"
EVAL = ROOT / "docs" / "evaluation"
IMAGES = ROOT / "docs" / "images"

DOSES = (1e4, 3e4, 1e5, 3e5, 1e6)
PIXEL_SIZES = (0.010, 0.012, 0.016)
LATTICES = ("graphene", "ws2", "mos2")
SIZE = 384
EDGE_NM = 0.2

#: True coordination of each kind of dopant (bonded atoms; Si3C6: 2 C + 2 Si, the Si–Si
#: distance being a = 0.246 nm).
TRUE_COORDINATION = {"Si1C3": 3, "Si1C4": 4, "Si2C4": 3, "Si3C6": 4, "Mo_W": 6, "W_Mo": 6}
VACANCY_KINDS = {"V1", "V2", "V_S", "V_S2", "V_W", "V_Mo"}


def _truth_complexes(t: pd.DataFrame) -> pd.DataFrame:
    d = t[t["defect"].astype(str) != ""]
    g = d.groupby("defect_id")
    return pd.DataFrame({"defect": g["defect"].first().astype(str), "y": g["y"].mean(), "x": g["x"].mean()}
                        ).reset_index()


def _pair(pred: pd.DataFrame, true: pd.DataFrame, bond_px: float) -> pd.DataFrame:
    """Outer table of paired complexes: truth kind ('' if spurious), predicted kind ('' if missed)."""
    if len(pred) and len(true):
        m = match(pred[["y", "x"]], true[["y", "x"]], bond_px)
    else:
        m = pd.DataFrame({"pred": pd.Series(dtype="int64"), "truth": pd.Series(dtype="int64")})
    rows = [(true["defect"].iloc[j], pred["defect"].iloc[i], i, j) for i, j in zip(m["pred"], m["truth"])]
    rows += [(true["defect"].iloc[j], "", -1, j) for j in sorted(set(range(len(true))) - set(m["truth"]))]
    rows += [("", pred["defect"].iloc[i], i, -1) for i in sorted(set(range(len(pred))) - set(m["pred"]))]
    return pd.DataFrame(rows, columns=["true", "pred", "i", "j"])


def _inside(d: pd.DataFrame, px: float) -> pd.DataFrame:
    e = EDGE_NM / px
    return d[d.y.between(e, SIZE - 1 - e) & d.x.between(e, SIZE - 1 - e)].reset_index(drop=True)


def chem_case(det: pd.DataFrame, image) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``identify`` (without classes) and the defects table of one frame's detections."""
    atoms = identify(det, image=image, classes=False)
    return analyse_defects(atoms, det.attrs["pixel_size"], det.attrs["lattice"], image=image)


def run_case(lattice, dose, px, seed):
    kinds = DEFECT_KINDS[lattice]
    sim = simulate_image(lattice, SIZE, pixel_size=px, dose=dose, seed=seed, defects={k: 3 for k in kinds},
                         line_jitter=0.15, background=0.3, contamination=0.02)
    bond_px = LATTICE_PARAMS[lattice]["bond"] / px
    truth = sim.atoms
    true_cx = _truth_complexes(truth)
    out = {}
    for source in ("network", "truth"):
        t0 = time.perf_counter()
        if source == "network":
            # identify=False: the chemistry is timed on its own below (find_atoms would run it too).
            det = find_atoms(sim.image, pixel_size=px, lattice=lattice, identify=False)
        else:
            det = truth[["y", "x", "label"]].copy()
            det.attrs.update(pixel_size=px, lattice=lattice)
        t1 = time.perf_counter()
        atoms, table = chem_case(det, sim.image)
        t2 = time.perf_counter()
        keep = _inside(table, px)
        pairs = _pair(keep, true_cx, bond_px)
        # dopant coordination: true dopant rows matched to detected rows
        m = match(atoms[["y", "x"]], truth[["y", "x"]], 0.5 * bond_px)
        tr = truth.iloc[m["truth"].to_numpy()].reset_index(drop=True)
        pr = atoms.iloc[m["pred"].to_numpy()].reset_index(drop=True)
        dop = (tr["label"].astype(str) == "dopant").to_numpy()
        want = tr["defect"].astype(str).map(TRUE_COORDINATION).to_numpy()[dop]
        got = pr["coordination"].to_numpy()[dop]
        n_true_dop = int((truth["label"].astype(str) == "dopant").sum())
        X = defect_descriptors(atoms, keep, px, lattice)
        X_img = defect_descriptors(atoms, keep, px, lattice, image=sim.image)
        patches = defect_patches(keep, sim.image, px, lattice)
        out[source] = dict(pairs=pairs, coord_ok=int((got == want).sum()), coord_n=int(len(want)),
                           dop_true=n_true_dop, X=X, X_img=X_img, patches=patches, t_find=t1 - t0, t_chem=t2 - t1,
                           n_atoms=len(atoms))
    return out


def _summary(pairs: pd.DataFrame) -> dict:
    matched = pairs[(pairs.true != "") & (pairs.pred != "")]
    n_true = int((pairs.true != "").sum())
    correct = int((matched.true == matched.pred).sum())
    tv = pairs.true.isin(VACANCY_KINDS)
    pv = pairs.pred.isin(VACANCY_KINDS)
    tp = int((tv & pv).sum())
    fp = int((pv & ~tv).sum())
    fn = int((tv & ~pv).sum())
    tp_s = int((tv & pv & (pairs.true == pairs.pred)).sum())
    sw = pairs[pairs.true == "SW"]
    return dict(n_true=n_true, n_matched=len(matched), n_spurious=int((pairs.true == "").sum()),
                type_accuracy=correct / max(len(matched), 1), type_recall=correct / max(n_true, 1),
                vac_tp=tp, vac_fp=fp, vac_fn=fn, vac_f1=2 * tp / max(2 * tp + fp + fn, 1),
                vac_f1_same_type=2 * tp_s / max(2 * tp + fp + fn, 1),
                sw_true=len(sw), sw_found=int((sw.pred == "SW").sum()),
                ring_spurious=int(((pairs.true != "SW") & (pairs.pred.str.startswith("R") | (pairs.pred == "SW")
                                                            | (pairs.pred == "585"))).sum()))


def main(quick: bool = False):
    doses = (1e5,) if quick else DOSES
    pxs = (0.012,) if quick else PIXEL_SIZES
    results = {}
    t_start = time.perf_counter()
    seed = TEST_SEED_START + 770000
    for lattice in LATTICES:
        for dose in doses:
            for px in pxs:
                seed += 1
                results[(lattice, dose, px)] = run_case(lattice, dose, px, seed)
    elapsed = time.perf_counter() - t_start

    EVAL.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    IMAGES.mkdir(parents=True, exist_ok=True)
    summary, per_dose, ari = {}, [], {}
    for lattice in LATTICES:
        for source in ("network", "truth"):
            cases = [(k, v[source]) for k, v in results.items() if k[0] == lattice]
            pairs = pd.concat([c["pairs"] for _, c in cases], ignore_index=True)
            s = _summary(pairs)
            s["coordination_accuracy"] = sum(c["coord_ok"] for _, c in cases) / max(sum(c["coord_n"] for _, c in cases), 1)
            s["dopants_true"] = sum(c["dop_true"] for _, c in cases)
            s["dopants_matched"] = sum(c["coord_n"] for _, c in cases)
            s["chem_seconds_per_frame"] = float(np.mean([c["t_chem"] for _, c in cases]))
            # Unsupervised classes over every complex of this lattice, all doses and pixel sizes.
            Xs, Xis, truths, patches = [], [], [], []
            for _, c in cases:
                p = c["pairs"]
                Xs.append(c["X"])
                Xis.append(c["X_img"])
                lab = np.full(len(c["X"]), "", dtype=object)
                ok = p[(p.i >= 0)]
                lab[ok.i.to_numpy(np.int64)] = ok.true.to_numpy()
                truths.append(lab)
                patches.append(c["patches"])
            X = np.vstack(Xs)
            tl = np.concatenate(truths)
            labels, info = cluster_descriptors(X)
            real = tl != ""
            s["ari"] = float(adjusted_rand_score(tl[real], labels[real]))
            s["n_classes"] = info["n_classes"]
            s["n_true_types"] = int(len(set(tl[real])))
            lg, ig = cluster_descriptors(np.vstack(Xis))
            s["ari_with_image"] = float(adjusted_rand_score(tl[real], lg[real]))
            s["n_classes_with_image"] = ig["n_classes"]
            summary[(lattice, source)] = s
            if source == "network":
                ari[lattice] = (np.concatenate(patches), labels, tl)
                conf = pd.crosstab(pairs.true.replace("", "(none)"), pairs.pred.replace("", "(missed)"))
                conf.index.name = "true \\ found"
                conf.to_csv(EVAL / f"chem_confusion_{lattice}.csv")
                summary[(lattice, "confusion")] = conf
                for (lat, dose, px), v in results.items():
                    if lat == lattice:
                        d = _summary(v["network"]["pairs"])
                        per_dose.append(dict(lattice=lat, dose=dose, pixel_size=px,
                                             type_accuracy=d["type_accuracy"], vac_f1=d["vac_f1"],
                                             coordination_accuracy=v["network"]["coord_ok"] / max(v["network"]["coord_n"], 1)))
    per_dose = pd.DataFrame(per_dose)
    per_dose.to_csv(EVAL / "chem_per_case.csv", index=False)
    _write(summary, per_dose, elapsed, quick)
    _figures(ari, per_dose)


def _write(summary, per_dose, elapsed, quick):
    lines = ["# Chemical identification accuracy (`stemflow.chem`)", "",
             "`python benchmarks/chem_accuracy.py` — simulated 384² px frames holding every defect kind "
             "of the simulator (3 of each requested, as many as fit), doses " +
             ", ".join(f"{d:.0e}" for d in ((1e5,) if quick else DOSES)) + " e⁻/Å², pixel sizes " +
             ", ".join(f"{p * 1000:.0f}" for p in ((0.012,) if quick else PIXEL_SIZES)) +
             " pm/px, one frame per lattice, dose and pixel size, with scan-line jitter, background and "
             "contamination; seeds the network's training never drew. `network`: bundled network's "
             "detections then `identify`; `truth`: the truth table's positions and classes only.", "",
             f"Run time {elapsed:.0f} s on this machine (2 CPU cores).", "",
             "| lattice | input | complexes (true) | matched | spurious | defect-type accuracy | type recall "
             "| vacancy F1 | vacancy F1, same type | dopant coordination accuracy (n) | SW found | "
             "ARI (classes / true types) | ARI with image features (classes) | chem s/frame |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    js = {}
    for (lattice, source), s in summary.items():
        if source == "confusion":
            continue
        js[f"{lattice}/{source}"] = {k: v for k, v in s.items()}
        sw = f"{s['sw_found']}/{s['sw_true']}" if s["sw_true"] else "–"
        lines.append(f"| {lattice} | {source} | {s['n_true']} | {s['n_matched']} | {s['n_spurious']} | "
                     f"{s['type_accuracy']:.4f} | {s['type_recall']:.4f} | {s['vac_f1']:.4f} | "
                     f"{s['vac_f1_same_type']:.4f} | {s['coordination_accuracy']:.4f} ({s['dopants_matched']}"
                     f"/{s['dopants_true']}) | {sw} | {s['ari']:.3f} ({s['n_classes']}/{s['n_true_types']}) | "
                     f"{s['ari_with_image']:.3f} ({s['n_classes_with_image']}) | "
                     f"{s['chem_seconds_per_frame']:.2f} |")
    lines += ["", "Defect-type accuracy: correct names among true complexes paired with a found one; type "
              "recall: correct names among all true complexes. Vacancy F1: vacancy complexes found as vacancy "
              "complexes (any V kind); same type: counted as TP only with the right kind. Coordination: true "
              "dopants paired with a detection (within half a bond), coordination equal to the kind's (Si1C3 3, "
              "Si1C4 4, Si2C4 3, Si3C6 4, metal dopant in MX2 6). ARI: adjusted Rand index of the Gaussian-mixture "
              "classes (number chosen by BIC) against the true kinds, over every paired complex of the lattice "
              "(all doses and pixel sizes pooled); default descriptors (geometry + column intensities), and with the polar "
              "image features added.", ""]
    for (lattice, source), conf in summary.items():
        if source != "confusion":
            continue
        lines += [f"## Confusion, {lattice} (network), rows true, columns found", "",
                  "| true \\ found | " + " | ".join(conf.columns) + " |",
                  "|---|" + "---|" * len(conf.columns)]
        for k, row in conf.iterrows():
            lines.append(f"| {k} | " + " | ".join(str(int(v)) for v in row) + " |")
        lines.append("")
    lines += ["## Per dose (network; all pixel sizes)", "",
              "| lattice | dose (e⁻/Å²) | defect-type accuracy | vacancy F1 | coordination accuracy |", "|---|---|---|---|---|"]
    for (lat, dose), g in per_dose.groupby(["lattice", "dose"], sort=False):
        lines.append(f"| {lat} | {dose:.0e} | {g.type_accuracy.mean():.3f} | {g.vac_f1.mean():.3f} | "
                     f"{g.coordination_accuracy.mean():.3f} |")
    (OUT / "chem.md").write_text("\n".join(lines) + "\n")
    (OUT / "chem.json").write_text(json.dumps(js, indent=1, default=float))
    print("\n".join(lines))


def _figures(ari, per_dose):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for lattice, (patches, labels, truth) in ari.items():
        means = class_mean_patches(patches, labels)
        k = len(means)
        fig, axes = plt.subplots(1, k, figsize=(1.8 * k, 2.3), squeeze=False)
        for ax, (c, m) in zip(axes[0], means.items()):
            ax.imshow(m, cmap="magma")
            sel = labels == c
            kinds = pd.Series(truth[sel]).replace("", "(none)").value_counts()
            ax.set_title(f"class {c} (n={int(sel.sum())})\n" + ", ".join(f"{a} {b}" for a, b in kinds.head(2).items()),
                         fontsize=7)
            ax.axis("off")
        fig.suptitle(f"{lattice}: mean patch of each unsupervised class (most common true kinds below)", fontsize=8)
        fig.tight_layout()
        fig.savefig(IMAGES / f"chem_classes_{lattice}.png", dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    for lat, g in per_dose.groupby("lattice"):
        m = g.groupby("dose").mean(numeric_only=True)
        ax[0].semilogx(m.index, m.type_accuracy, "o-", label=lat)
        ax[1].semilogx(m.index, m.vac_f1, "o-", label=lat)
    ax[0].set(xlabel="dose (e⁻/Å²)", ylabel="defect-type accuracy", ylim=(0, 1.02))
    ax[1].set(xlabel="dose (e⁻/Å²)", ylabel="vacancy complex F1", ylim=(0, 1.02))
    ax[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMAGES / "chem_vs_dose.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one dose and pixel size")
    main(**vars(ap.parse_args()))

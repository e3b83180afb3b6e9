"""How far can local evidence separate Pt single atoms from their support? An upper bound, measured.

On the labelled Pt-on-carbon-nitride development frames (``../shared/data``), every local maximum
of stemflow's heavy-atom significance map at or above 2.5 σ is a candidate (the default keeps
those ≥ 4 σ). Each candidate gets local features of the frame around it:

* ``significance``: stemflow's matched-filter significance (σ);
* ``contrast``: the probe-scale excess over the local support level, relative to that level;
* ``excess_over_noise``: the same excess over the local noise (not normalised by the frame);
* ``sharpness``: excess at the probe scale over excess at twice that scale;
* ``broad_excess``: excess at twice the probe scale over the local noise;
* ``roundness``: weaker over stronger curvature (stemflow's roundness);
* ``support_level``, ``noise_level``: the local support and noise, relative to the frame's median;
* ``integrated_excess``: counts in a disk of radius 2 probe σ over the median of the ring 3–5 σ
  around it, relative to the frame's median over its candidates ≥ 4 σ. A single heavy atom adds
  about the same number of counts wherever it sits (its HAADF cross-section, in focus or not),
  while a light amorphous support has to pile up tens of extra C or N atoms into one probe-sized
  spot to match it: if the labelled atoms stand apart from the rest anywhere, it is here.

Two more views that use the labels: significance with its threshold chosen frame by frame on that
frame's own labels (what any per-frame adaptive threshold could reach at best), and, per frame,
the integrated excess of the strong candidates (≥ 4 σ) on a label beside those on none.

Then, with the labels (which stemflow's finder never sees): each feature's ROC AUC (true Pt among
the candidates), and the best F1 over the frames of classifiers *trained on the labels of the
other frames* (leave one frame out): logistic regression and gradient-boosted trees on all the
features, their decision threshold chosen afterwards on all frames (so an upper bound twice over).
Beside them, stemflow's rule (significance ≥ 4 σ, round, one row per atom) and its threshold swept
on these frames. Candidates are matched one to one to labels within 5 px; labels with no candidate
count as missed in every row.

Run: ``python benchmarks/heavy_atom_separability.py`` (about two minutes on 2 cores). Writes
``benchmarks/results/heavy_atom_separability.md`` and ``.json``. Skips with a message when the
labelled data are absent.

A small convolutional network that sees the candidate's surroundings (33² px) rather than eight
numbers, trained the same way (leave one frame out), bounds what more capacity buys with these labels.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
MATCH_PX = 5.0
FEATURES = ["significance", "contrast", "excess_over_noise", "sharpness", "broad_excess", "roundness",
            "support_level", "noise_level", "integrated_excess"]


def candidates(frame) -> pd.DataFrame:
    """Candidates (≥ 2.5 σ) of one labelled frame with their features and whether a label matches."""
    from stemflow.chem.heavy import _roundness, find_heavy_atoms
    from stemflow.metrics import match

    img = np.asarray(frame.image, np.float64)
    px = frame.pixel_size
    out = find_heavy_atoms(img, px, significance=2.5, populations=False, min_roundness=-np.inf)
    m = match(out, frame.truth, MATCH_PX) if len(out) and len(frame.truth) else pd.DataFrame({"pred": []})
    s = max(0.05 / px, 0.5)                                       # the probe's σ, px (stemflow's default)
    g1, g2, g3, g6 = (ndimage.gaussian_filter(img, k * s) for k in (1, 2, 3, 6))
    fine = img - ndimage.gaussian_filter(img, 1.0)
    noise = np.sqrt(ndimage.gaussian_filter(fine * fine, 0.5 / px))
    y = np.clip(np.rint(out["y"].to_numpy()).astype(int), 0, img.shape[0] - 1)
    x = np.clip(np.rint(out["x"].to_numpy()).astype(int), 0, img.shape[1] - 1)
    excess = g1[y, x] - g3[y, x]
    is_pt = np.zeros(len(out), bool)
    is_pt[np.asarray(m["pred"], int)] = True
    ring = int(np.ceil(5 * s))
    yy, xx = np.mgrid[-ring:ring + 1, -ring:ring + 1]
    r = np.hypot(yy, xx)
    disk, annulus = r <= 2 * s, (r > 3 * s) & (r <= 5 * s)
    padded = np.pad(img, ring, mode="reflect")
    windows = np.array([padded[a:a + 2 * ring + 1, b:b + 2 * ring + 1] for a, b in zip(y, x)]).reshape(len(y), -1)
    integrated = windows[:, disk.ravel()].sum(1) - disk.sum() * np.median(windows[:, annulus.ravel()], axis=1)
    strong = out["significance"].to_numpy() >= 4.0
    integrated = integrated / np.median(integrated[strong] if strong.any() else integrated)
    return pd.DataFrame({
        "image": frame.name, "is_pt": is_pt, "y": out["y"].to_numpy(), "x": out["x"].to_numpy(),
        "significance": out["significance"].to_numpy(),
        "contrast": excess / g6[y, x],
        "excess_over_noise": excess / noise[y, x],
        "sharpness": (g1[y, x] - g2[y, x]) / np.maximum(np.abs(g2[y, x] - g6[y, x]), 1e-9),
        "broad_excess": (g2[y, x] - g6[y, x]) / noise[y, x],
        "roundness": _roundness(img, out["y"].round().astype(int).to_numpy().clip(0, img.shape[0] - 1),
                                out["x"].round().astype(int).to_numpy().clip(0, img.shape[1] - 1), 1.5 * s),
        "support_level": g6[y, x] / np.median(img),
        "noise_level": noise[y, x] / np.median(noise), "integrated_excess": integrated})


def dark_spots(frame, thresholds=(4.0, 5.0)) -> dict:
    """How many round *dark* spots the frame holds at each significance: stemflow's heavy-atom rule
    (round local maxima, one per 0.15 nm) on the negated frame. The support's texture makes dark
    spots as well as bright ones, heavy atoms only bright ones, so the dark count is a label-free
    estimate of how many bright spots the support alone would make if its texture were symmetric
    (a support of randomly placed light atoms is not quite: its projected density is skewed to the
    bright side, so this is a floor)."""
    from stemflow.chem.heavy import HEAVY_MIN_ROUNDNESS, find_heavy_atoms

    neg = find_heavy_atoms(-np.asarray(frame.image, np.float64), frame.pixel_size, significance=min(thresholds),
                           populations=False, min_roundness=HEAVY_MIN_ROUNDNESS)
    return {f"{t:g}": int((neg["significance"] >= t).sum()) for t in thresholds}


def patches(frame, d: pd.DataFrame, half: int = 16) -> np.ndarray:
    """(n, 1, 2·half+1, 2·half+1) float32 windows of the frame around its candidates, the slow
    support level (Gaussian, 12 px) removed and divided by the local noise: what a small network
    sees of each candidate (33² px = 0.97 nm at 29.3 pm/px)."""
    img = np.asarray(frame.image, np.float64)
    fine = img - ndimage.gaussian_filter(img, 1.0)
    z = (img - ndimage.gaussian_filter(img, 12.0)) / np.sqrt(ndimage.gaussian_filter(fine * fine, 0.5 / frame.pixel_size))
    z = np.pad(z, half, mode="reflect")
    yx = np.rint(d[["y", "x"]].to_numpy()).astype(int) + half
    return np.array([z[y - half:y + half + 1, x - half:x + half + 1] for y, x in yx], np.float32)[:, None]


def cnn_scores(x: np.ndarray, is_pt: np.ndarray, image: np.ndarray, epochs: int = 15) -> np.ndarray:
    """Leave-one-frame-out scores of a small CNN trained on the other frames' labelled candidates
    (three 3×3 convolution layers, random right-angle rotations and flips while training, the mean
    over the eight of them when scoring)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def views(b):
        return [torch.flip(torch.rot90(b, k, (2, 3)), (3,)) if f else torch.rot90(b, k, (2, 3))
                for k in range(4) for f in (False, True)]

    score = np.zeros(len(is_pt))
    for name in np.unique(image):
        test = image == name
        net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Dropout(0.3), nn.Linear(32, 1))
        opt = torch.optim.Adam(net.parameters(), 2e-3, weight_decay=1e-4)
        xt, yt = torch.from_numpy(x[~test]), torch.from_numpy(is_pt[~test].astype(np.float32))
        share = float(is_pt[~test].mean())
        loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(np.sqrt((1 - share) / share), dtype=torch.float32))
        for _ in range(epochs):
            net.train()
            order = torch.from_numpy(rng.permutation(len(yt)))
            for i in range(0, len(order), 64):
                j = order[i:i + 64]
                opt.zero_grad()
                loss(net(views(xt[j])[rng.integers(8)])[:, 0], yt[j]).backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            score[test] = np.mean([torch.sigmoid(net(v)[:, 0]).numpy() for v in views(torch.from_numpy(x[test]))],
                                  axis=0)
    return score


def labelled_pt_frames():
    """The labelled Pt development frames (:func:`stemflow.labelled.read_heavy_atoms`), or None, said
    on stderr, when they are not here."""
    from stemflow.labelled import dev_data_dir, read_heavy_atoms

    where = dev_data_dir()
    if where is None or not (where / "pt_single_atoms_dev.npz").exists():
        print("no labelled Pt frames (../shared/data/pt_single_atoms_dev.npz): nothing measured", file=sys.stderr)
        return None
    return read_heavy_atoms(where / "pt_single_atoms_dev")


def best_f1(score: np.ndarray, is_pt: np.ndarray, n_true: int) -> dict:
    """The best F1 over thresholds of ``score`` (candidates at or above are called Pt)."""
    best = {"f1": 0.0}
    for t in np.unique(np.quantile(score, np.linspace(0.0, 0.995, 400))):
        sel = score >= t
        tp = int((sel & is_pt).sum())
        fp = int((sel & ~is_pt).sum())
        f1 = 2 * tp / (2 * tp + fp + (n_true - tp)) if tp + fp + n_true else 0.0
        if f1 > best["f1"]:
            best = {"f1": f1, "precision": tp / max(tp + fp, 1), "recall": tp / n_true, "threshold": float(t)}
    return best


def main() -> int:
    from stemflow.chem.heavy import HEAVY_MIN_ROUNDNESS
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import stemflow
    from stemflow.labelled import score_heavy_atoms

    frames = labelled_pt_frames()
    if frames is None:
        return 0
    t0 = time.perf_counter()
    n_true = sum(len(f.truth) for f in frames)
    d = pd.concat([candidates(f) for f in frames], ignore_index=True)
    is_pt = d["is_pt"].to_numpy()
    auc = {f: float(roc_auc_score(is_pt, d[f])) for f in FEATURES}

    models = {"logistic regression": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
              "gradient-boosted trees": lambda: HistGradientBoostingClassifier(max_depth=3, max_iter=150,
                                                                               random_state=0)}
    rows = []
    summary, _ = score_heavy_atoms(frames, lambda f: stemflow.find_atoms(f.image, pixel_size=f.pixel_size,
                                                                         lattice="amorphous"))
    rows.append({"method": "stemflow default (significance ≥ 4 σ, round, one row per atom)",
                 "f1": summary["f1"], "precision": summary["precision"], "recall": summary["recall"],
                 "threshold": 4.0})
    rows.append({"method": "significance alone, threshold swept on these frames",
                 **best_f1(d["significance"].to_numpy(), is_pt, n_true)})
    for name, make in models.items():
        score = np.zeros(len(d))
        for image in d["image"].unique():
            test = (d["image"] == image).to_numpy()
            model = make().fit(d.loc[~test, FEATURES], is_pt[~test])
            score[test] = model.predict_proba(d.loc[test, FEATURES])[:, 1]
        rows.append({"method": f"{name} on all features, trained on the other frames' labels "
                               "(leave one frame out), threshold swept", **best_f1(score, is_pt, n_true)})
    tp = fp = 0
    for image in d["image"].unique():
        sub = d[d["image"] == image]
        n_img = sum(len(f.truth) for f in frames if f.name == image)
        b = best_f1(sub["significance"].to_numpy(), sub["is_pt"].to_numpy(), n_img)
        sel = sub["significance"].to_numpy() >= b.get("threshold", np.inf)
        tp += int((sel & sub["is_pt"].to_numpy()).sum())
        fp += int((sel & ~sub["is_pt"].to_numpy()).sum())
    rows.append({"method": "significance, its threshold chosen frame by frame on that frame's own labels",
                 "f1": 2 * tp / (2 * tp + fp + n_true - tp), "precision": tp / max(tp + fp, 1), "recall": tp / n_true})
    per_frame = []
    for image in d["image"].unique():
        sub = d[(d["image"] == image) & (d["significance"] >= 4.0)]
        on, off = sub.loc[sub["is_pt"], "integrated_excess"], sub.loc[~sub["is_pt"], "integrated_excess"]
        lo, hi = np.percentile(on, [25, 75]) if len(on) else (np.nan, np.nan)
        per_frame.append({"image": image, "labelled": sum(len(f.truth) for f in frames if f.name == image),
                          "strong_on_label": len(on), "strong_on_none": len(off),
                          "integrated_on_label": float(np.median(on)) if len(on) else np.nan,
                          "integrated_on_none": float(np.median(off)) if len(off) else np.nan,
                          "share_on_none_within_label_iqr": float(np.mean((off >= lo) & (off <= hi))) if len(off) else np.nan})
        frame = next(f for f in frames if f.name == image)
        rows_img = d[(d["image"] == image) & ~d["is_pt"] & (d["roundness"] >= HEAVY_MIN_ROUNDNESS)]
        per_frame[-1].update({f"bright_on_none_{t:g}": int((rows_img["significance"] >= t).sum()) for t in (4.0, 5.0)})
        per_frame[-1].update({f"dark_{t}": n for t, n in dark_spots(frame).items()})
    x = np.concatenate([patches(f, d[d["image"] == f.name]) for f in frames])
    cnn = cnn_scores(x, is_pt, d["image"].to_numpy())
    auc["CNN score (leave one frame out)"] = float(roc_auc_score(is_pt, cnn))
    rows.append({"method": "small CNN on 33² px around each candidate (the frame's slow level removed, over its "
                           "local noise), trained on the other frames' labels (leave one frame out), threshold swept",
                 **best_f1(cnn, is_pt, n_true)})
    strong = d["significance"].to_numpy() >= 4.0
    on_iqr = np.percentile(d.loc[is_pt & strong, "integrated_excess"], [25, 75])
    off = d.loc[~is_pt & strong, "integrated_excess"].to_numpy()
    integrated = {"median_on_label": float(np.median(d.loc[is_pt & strong, "integrated_excess"])),
                  "median_on_none": float(np.median(off)), "strong_on_label": int((is_pt & strong).sum()),
                  "strong_on_none": int(len(off)),
                  "share_on_none_within_label_iqr": float(np.mean((off >= on_iqr[0]) & (off <= on_iqr[1])))}
    res = {"frames": len(frames), "labelled_pt": n_true, "candidates": len(d), "integrated_excess": integrated,
           "labelled_pt_with_a_candidate": int(is_pt.sum()), "auc": auc, "rows": rows, "per_frame": per_frame,
           "seconds": time.perf_counter() - t0}
    OUT.mkdir(exist_ok=True)
    (OUT / "heavy_atom_separability.json").write_text(json.dumps(res, indent=2))
    lines = ["# Pt single atoms on carbon nitride: how far local evidence separates them from the support", "",
             f"Written by `python benchmarks/heavy_atom_separability.py` ({res['seconds']:.0f} s). {len(frames)} "
             f"labelled development frames, {n_true} Pt labelled; {len(d)} candidates (local maxima of the "
             f"significance map ≥ 2.5 σ), {int(is_pt.sum())} of them on a labelled Pt (within {MATCH_PX:g} px, one "
             "to one). The classifiers are trained on the labels, which stemflow never uses: their figures "
             "bound what a rule over these local features can reach on these frames.", "",
             "| method | F1 | precision | recall |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['f1']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |" for r in rows]
    lines += ["", "Each feature alone, and the CNN's leave-one-frame-out score (ROC AUC of true Pt among the "
              "candidates; 0.5 is chance, below 0.5 the feature is lower on Pt):", "", "| feature | AUC |", "|---|---|"]
    lines += [f"| `{f}` | {a:.3f} |" if f in FEATURES else f"| {f} | {a:.3f} |" for f, a in auc.items()]
    pooled_on, pooled_off = integrated["median_on_label"], integrated["median_on_none"]
    lines += ["", "Strong candidates (≥ 4 σ, what stemflow's default keeps before its roundness check) on a label "
              "and on none, per frame: their integrated excess (median, relative to the frame's strong candidates), "
              "and the share of those on no label whose integrated excess lies inside the labelled ones' "
              f"interquartile range. Over all frames the medians are {pooled_on:.2f} on a label and {pooled_off:.2f} "
              f"on none, and {integrated['share_on_none_within_label_iqr']:.2f} of those on none lie inside the "
              "labelled ones' interquartile range (0.5 if both came from one population).", "",
              "| frame | Pt labelled | strong on a label | strong on none | integrated excess on a label | on none "
              "| share of those on none inside the labelled IQR |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['image']} | {r['labelled']} | {r['strong_on_label']} | {r['strong_on_none']} | "
              f"{r['integrated_on_label']:.2f} | {r['integrated_on_none']:.2f} | {r['share_on_none_within_label_iqr']:.2f} |"
              for r in per_frame]
    tot = {k: sum(r[k] for r in per_frame) for k in ("bright_on_none_4", "dark_4", "bright_on_none_5", "dark_5")}
    lines += ["", "The support's dark side as a null, without labels: round *dark* spots (stemflow's rule on the negated "
              "frame) against round bright spots on no label, at or above 4 σ and 5 σ. Were the support's texture "
              "symmetric, the dark count would estimate how many bright spots the support alone makes (a support of "
              "randomly placed light atoms is skewed to the bright side, so it is a floor). Over all frames: "
              f"{tot['dark_4']} dark against {tot['bright_on_none_4']} unlabelled bright at 4 σ, {tot['dark_5']} "
              f"against {tot['bright_on_none_5']} at 5 σ.", "",
              "| frame | unlabelled bright ≥ 4 σ | dark ≥ 4 σ | unlabelled bright ≥ 5 σ | dark ≥ 5 σ |", "|---|---|---|---|---|"]
    lines += [f"| {r['image']} | {r['bright_on_none_4']} | {r['dark_4']} | {r['bright_on_none_5']} | {r['dark_5']} |"
              for r in per_frame]
    res["dark_null"] = tot
    (OUT / "heavy_atom_separability.json").write_text(json.dumps(res, indent=2))
    (OUT / "heavy_atom_separability.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from _cli import options

    options(__doc__)
    sys.exit(main())

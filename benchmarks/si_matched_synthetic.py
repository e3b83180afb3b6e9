"""How well can C columns be placed at the real Si-graphene frames' own counts? Synthetic frames with
exact truth, built from each labelled real frame.

On the labelled Si-doped graphene development frames (``../shared/data``) stemflow places the
labelled first-shell C 13.6 pm from their labels (``real_data.py``), and both its table and the
columns fitted to the image alone sit about 7 pm nearer the Si than the labels. Label scatter, or
what stemflow does at these counts? This script builds, from every real frame, a synthetic frame
whose truth is exact and whose other properties are measured on that frame:

* the detector: gain and offset of its noise-level function (``sim_vs_real.noise_level``);
* the columns: every column of stemflow's table on the real frame, those matched to a label moved
  to the label (so the labelled complexes keep their labelled geometry, Si–C bonds included), and
  every unmatched label added; each a round Gaussian of the width the labelled C have when stacked
  (per pixel size); amplitudes and a plane background by linear least squares on the real frame
  in effective counts, then each column given its element's median amplitude in the frame (Si:
  labelled Si and stemflow's dopants; C: the rest), so that the amplitudes carry no fitting noise;
* Poisson counts, put back into the frame's units.

Such a frame has the real frame's counts, sampling, column width and labelled geometry, and none
of its probe tails, contamination, scan distortions or label scatter. Scored with
``stemflow.labelled.score_dopant_complexes`` (stemflow's table) and, for the labelled C, the
columns fitted to the image alone (``real_data._fit_only``), beside the real frames.

Run: ``python benchmarks/si_matched_synthetic.py`` (about three minutes on 2 cores). Writes
``benchmarks/results/si_matched_synthetic.md`` and ``.json``. Skips with a message when the
labelled data are absent.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import lsqr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pt_matched_synthetic import stacked_width  # noqa: E402
from real_data import _fit_only, _host_offsets  # noqa: E402
from sim_vs_real import noise_level  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SEED = 0
MIN_C_FOR_WIDTH = 40          # labelled C a sampling needs for its own column width


def _find(f):
    from stemflow import find_atoms

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return find_atoms(f.image, f.pixel_size, "graphene", identify_options={"classes": False})


def _columns(f, table) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) px of every column of the synthetic frame and whether it is Si."""
    from stemflow.labelled import HALF_BOND_NM
    from stemflow.metrics import match

    pos = table[["y", "x"]].to_numpy(np.float64).copy()
    is_si = table["label"].astype(str).to_numpy() == "dopant"
    lab = f.truth[["y", "x"]].to_numpy(np.float64)
    el = f.truth["element"].to_numpy()
    m = match(table, f.truth, HALF_BOND_NM / f.pixel_size)
    pos[m["pred"].to_numpy()] = lab[m["truth"].to_numpy()]
    is_si[m["pred"].to_numpy()] = el[m["truth"].to_numpy()] == "Si"
    extra = np.setdiff1d(np.arange(len(lab)), m["truth"].to_numpy())
    return np.vstack([pos, lab[extra]]), np.concatenate([is_si, el[extra] == "Si"])


def _widths(frames, counts) -> dict:
    """Per pixel size (nm/px, rounded): σ (px) of a Gaussian fitted to the labelled C stacked."""
    stacks: dict = {}
    for f in frames:
        half = int(np.ceil(0.06 / f.pixel_size))            # under half a bond: no neighbour inside
        pad = np.pad(counts[f.name], half, mode="reflect")
        for y, x in np.rint(f.truth.loc[f.truth.element == "C", ["y", "x"]].to_numpy()).astype(int):
            stacks.setdefault(round(f.pixel_size, 4), []).append(pad[y:y + 2 * half + 1, x:x + 2 * half + 1])
    out = {}
    for p, st in stacks.items():
        out[p] = dict(sigma_px=stacked_width(st, 0.04 / p), n=len(st), from_pm_per_px=round(p * 1e3, 1))
    # a sampling with few labelled C (its window a few px wide) leaves the width poorly fixed: it
    # takes the width in nm of the sampling with the most
    best = max(out, key=lambda p: out[p]["n"])
    for p, v in out.items():
        if v["n"] < MIN_C_FOR_WIDTH:
            v.update(sigma_px=out[best]["sigma_px"] * best / p, from_pm_per_px=round(best * 1e3, 1))
    return out


def synthesise(counts: np.ndarray, pos: np.ndarray, is_si: np.ndarray, sigma: float, gain: float, offset: float,
               rng) -> tuple[np.ndarray, dict]:
    """The synthetic frame (the real frame's units) and the amplitudes used (counts)."""
    h, w = counts.shape
    r = int(np.ceil(3.5 * sigma))
    rows, cols, vals = [], [], []
    for k, (y, x) in enumerate(pos):
        ys = np.arange(max(int(y) - r, 0), min(int(y) + r + 1, h))
        xs = np.arange(max(int(x) - r, 0), min(int(x) + r + 1, w))
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        rows.append((yy * w + xx).ravel())
        cols.append(np.full(yy.size, k))
        vals.append(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma * sigma)).ravel())
    yy, xx = np.mgrid[0:h, 0:w]
    n = len(pos)
    for j, v in enumerate((np.ones(h * w), (yy.ravel() - h / 2) / h, (xx.ravel() - w / 2) / w)):
        rows.append(np.arange(h * w))
        cols.append(np.full(h * w, n + j))
        vals.append(v)
    design = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, n + 3))
    coef = lsqr(design, counts.ravel(), atol=1e-8, btol=1e-8, iter_lim=3000)[0]
    amp = np.maximum(coef[:n], 0.0)
    a_si = float(np.median(amp[is_si])) if is_si.any() else 0.0
    a_c = float(np.median(amp[~is_si]))
    coef[:n] = np.where(is_si, a_si, a_c)
    lam = np.clip(design @ coef, 0.0, None).reshape(h, w)
    return (rng.poisson(lam) * gain + offset).astype(np.float32), dict(c=a_c, si=a_si, background=float(coef[n]))


def crlb_px(amplitude: float, sigma: float, background: float) -> float:
    """Cramér–Rao bound (px, per axis) on the centre of one round Gaussian column of ``amplitude``
    (counts at its peak) and width ``sigma`` (px) on a flat ``background`` (counts/px) under
    Poisson noise, its width, amplitude and background known: the least scatter any unbiased
    estimate from the column's own counts can have."""
    h = int(np.ceil(6 * sigma))
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1].astype(np.float64)
    g = amplitude * np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma * sigma))
    info = ((g * xx / sigma ** 2) ** 2 / (background + g)).sum()
    return float(1.0 / np.sqrt(info)) if info > 0 else float("inf")


def _fit_distance(frames, fitted) -> float:
    """Mean distance (pm) of the labelled C from the columns fitted to the image alone."""
    from stemflow.labelled import HALF_BOND_NM
    from stemflow.metrics import match

    d = []
    for f in frames:
        a = fitted[f.name]
        cols = a[~a["label"].astype(str).isin(["vacancy", "dopant"])].reset_index(drop=True)
        host = f.truth[f.truth.element == "C"].reset_index(drop=True)
        m = match(cols, host, HALF_BOND_NM / f.pixel_size)
        q = cols[["y_fit", "x_fit"]].to_numpy(np.float64)[m["pred"].to_numpy()]
        t = host[["y", "x"]].to_numpy(np.float64)[m["truth"].to_numpy()]
        d += list(np.hypot(*(q - t).T) * f.pixel_size * 1000.0)
    return float(np.nanmean(d))


def main() -> int:
    from stemflow.labelled import dev_data_dir, read_dopant_complexes, score_dopant_complexes

    where = dev_data_dir()
    if where is None or not (where / "si_graphene_dev.npz").exists():
        print("no labelled Si frames (../shared/data/si_graphene_dev.npz): nothing measured", file=sys.stderr)
        return 0
    t0 = time.perf_counter()
    frames = read_dopant_complexes(where / "si_graphene_dev.npz")
    rng = np.random.default_rng(SEED)
    nl = {f.name: noise_level(np.asarray(f.image, np.float64)) for f in frames}
    counts = {f.name: (np.asarray(f.image, np.float64) - nl[f.name]["offset"]) / nl[f.name]["gain"] for f in frames}
    widths = _widths(frames, counts)
    real = {f.name: _find(f) for f in frames}
    syn, amps = [], []
    for f in frames:
        pos, is_si = _columns(f, real[f.name])
        img, a = synthesise(counts[f.name], pos, is_si, widths[round(f.pixel_size, 4)]["sigma_px"],
                            nl[f.name]["gain"], nl[f.name]["offset"], rng)
        syn.append(replace(f, image=img))
        sd = crlb_px(a["c"], widths[round(f.pixel_size, 4)]["sigma_px"], max(a["background"], 1e-6))
        n_c = int((f.truth.element == "C").sum())
        # the mean distance of an isotropic 2-D Gaussian error of SD sd per axis is sd·√(π/2)
        amps.append(dict(a, pixel_size_pm=f.pixel_size * 1e3, crlb_mean_pm=sd * f.pixel_size * 1e3 * np.sqrt(np.pi / 2),
                         n_c=n_c))
    out = {}
    for name, fs, finder in (("real frames", frames, lambda f: real[f.name]), ("synthetic, exact truth", syn, None)):
        cache = {}

        def find(f, finder=finder, cache=cache):
            if f.name not in cache:
                cache[f.name] = finder(f) if finder else _find(f)
            return cache[f.name]

        s, _ = score_dopant_complexes(fs, find)
        fitted = {f.name: _fit_only(f.image, f.pixel_size, find(f)) for f in fs}
        ho = _host_offsets(fs, fitted)
        out[name] = {k: s[k] for k in ("dopant_recall", "dopant_precision", "host_recall", "host_mean_pm",
                                       "host_rmse_pm", "defect_accuracy")}
        out[name].update(fit_mean_pm=_fit_distance(fs, fitted), radial_mean_pm=ho["radial_mean_pm"],
                         radial_sd_pm=ho["radial_sd_pm"], fit_radial_mean_pm=ho["fit_radial_mean_pm"],
                         fit_radial_sd_pm=ho["fit_radial_sd_pm"], si_c_median_pm=ho["si_c_median_pm"])
        print(name, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out[name].items()}, flush=True)
    a_c = np.array([a["c"] for a in amps])
    bg = np.array([a["background"] for a in amps])
    meta = dict(seconds=time.perf_counter() - t0, frames=len(frames), seed=SEED, widths=widths,
                c_amplitude_median=float(np.median(a_c)), background_median=float(np.median(bg)),
                si_over_c_median=float(np.median([a["si"] / a["c"] for a in amps if a["c"] > 0])),
                crlb_median_pm=float(np.median(np.repeat([a["crlb_mean_pm"] for a in amps], [a["n_c"] for a in amps]))),
                crlb_per_frame_pm=[round(float(a["crlb_mean_pm"]), 2) for a in amps],
                crlb_by_pixel_size={f"{p:.1f}": float(np.median([a["crlb_mean_pm"] for a in amps
                                                                  if round(a["pixel_size_pm"], 1) == p]))
                                    for p in sorted({round(a["pixel_size_pm"], 1) for a in amps})})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "si_matched_synthetic.json").write_text(json.dumps(dict(meta=meta, results=out), indent=1))
    write_md(out, meta)
    return 0


def write_md(out: dict, meta: dict) -> None:
    w = "; ".join(f"{p * 1e3:.1f} pm/px: {v['sigma_px']:.2f} px ({v['sigma_px'] * p * 1e3:.0f} pm, {v['n']} C"
                  + ("" if v["from_pm_per_px"] == round(p * 1e3, 1) else f"; too few: the width of {v['from_pm_per_px']} pm/px")
                  + ")" for p, v in sorted(meta["widths"].items()))
    lines = ["# C localisation at the real Si frames' own counts, with exact truth", "",
             f"Written by `python benchmarks/si_matched_synthetic.py` ({meta['seconds']:.0f} s on 2 CPU cores). From each "
             f"of the {meta['frames']} labelled real frames, a synthetic frame with its detector gain and offset, its "
             "columns where stemflow finds them and its labelled complexes where the labels put them, Gaussian "
             "columns of the labelled C's measured width and each element's median amplitude, and Poisson counts "
             "(see the script's docstring); its truth is exact. Column width σ, " + w + f". C columns peak "
             f"{meta['c_amplitude_median']:.2f} effective counts above a background of {meta['background_median']:.2f} "
             f"(medians over frames); Si / C amplitude {meta['si_over_c_median']:.2f}. *Radial*: offset of the "
             "labelled C along the line from their Si (negative: towards the Si), pm.", "",
             "The least scatter any unbiased estimate of a column's centre from its own counts can have (Cramér–Rao "
             "bound for a round Gaussian column on a flat background under Poisson noise, its width, amplitude and "
             "background known, each frame's measured values), as the expected distance of a labelled C, median "
             f"over the labelled C: {meta['crlb_median_pm']:.1f} pm (median over the frames: "
             + ", ".join(f"{v:.1f} pm at {p} pm/px" for p, v in meta["crlb_by_pixel_size"].items())
             + "). Only knowledge beyond the column's own counts (the lattice around it) can place the columns "
             "closer than that.", "",
             "| frames | Si recall | Si precision | C recall | C localisation, mean (pm) | RMSE (pm) | defect type | "
             "image fit alone: mean (pm) | radial, table (pm) | radial, image fit (pm) | Si–C median: labels / table / "
             "image fit (pm) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in out.items():
        sc = r["si_c_median_pm"]
        lines.append(f"| {name} | {r['dopant_recall']:.3f} | {r['dopant_precision']:.3f} | {r['host_recall']:.3f} | "
                     f"{r['host_mean_pm']:.1f} | {r['host_rmse_pm']:.1f} | {r['defect_accuracy']:.3f} | "
                     f"{r['fit_mean_pm']:.1f} | {r['radial_mean_pm']:+.1f} ± {r['radial_sd_pm']:.1f} | "
                     f"{r['fit_radial_mean_pm']:+.1f} ± {r['fit_radial_sd_pm']:.1f} | {sc['labels']:.0f} / "
                     f"{sc['stemflow']:.0f} / {sc['fit']:.0f} |")
    (RESULTS / "si_matched_synthetic.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    from _cli import options

    options(__doc__)
    raise SystemExit(main())

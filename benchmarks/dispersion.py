"""How single atoms are spread, as stemflow measures it: checks of the statistics, then how far the
finder's errors carry into them.

    python benchmarks/dispersion.py      # writes benchmarks/results/dispersion.md (+ .json), docs/images/pt_dispersion.png

1. **The statistics alone**, on point patterns whose law is known (no finder): complete spatial
   randomness (CSR: the Clark–Evans test should reject 5 % of them at the 5 % level, Ripley's L
   should stay in its envelope), a Thomas cluster process (parents at random, each with a Poisson
   number of atoms scattered round it: both should say "clustered") and a jittered square grid
   (both should say "dispersed"); patterns with a known number of pairs 0.28 nm apart
   (``atom_groups`` should count them exactly); and random atoms thinned as the finder thins its
   maxima (Ripley's test should keep its level with the finder's exclusion in its random patterns).
2. **Simulated frames with exact truth** (``stemflow.simulate_image("amorphous", ...)``, Pt on
   amorphous carbon at several doses): ``dispersion`` of what ``find_atoms`` found against
   ``dispersion`` of the truth, frame by frame; and the multislice supports of
   ``abtem_supports.py`` (cached), one of whose cells holds a Pt pair 0.30 nm apart: the pairs
   found against the true ones.
3. **The labelled real Pt frames** (``shared/data/pt_single_atoms_dev``, when present): the same,
   found against labelled, and Ripley's L of both pooled over the frames (the figure).

stemflow never reads the labels; they only score.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import options, save  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FIGURE = ROOT / "docs" / "images" / "pt_dispersion.png"
DATA = ROOT.parent / "shared" / "data"
#: Frames of the statistical checks: 512² px at 30 pm/px (as the real Pt frames).
SHAPE, PS = (512, 512), 0.03
PATTERNS = 400
#: Simulated Pt on amorphous carbon: (nm/px, dose e⁻/Å²) and seeds.
RENDERINGS = ((0.03, 1e5), (0.03, 2e4), (0.02, 1e5))
SEEDS = (0, 1, 2)
N_PT = 40


def _table(yx: np.ndarray, frame: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"frame": frame, "y": yx[:, 0], "x": yx[:, 1], "label": "dopant"})


def _thomas(rng, n_parents: int, mean_children: float, sigma_px: float) -> np.ndarray:
    parents = rng.uniform(-0.5, SHAPE[0] - 0.5, (n_parents, 2))
    kids = [p + rng.normal(0, sigma_px, (rng.poisson(mean_children), 2)) for p in parents]
    yx = np.concatenate(kids) if kids else np.zeros((0, 2))
    return yx[np.all((yx >= -0.5) & (yx <= SHAPE[0] - 0.5), axis=1)]      # the frame: pixel centres ± 0.5


def _grid(rng, step_px: float, jitter_px: float) -> np.ndarray:
    g = np.mgrid[step_px / 2:SHAPE[0]:step_px, step_px / 2:SHAPE[1]:step_px].reshape(2, -1).T - 0.5
    return np.clip(g + rng.normal(0, jitter_px, g.shape), -0.5, SHAPE[0] - 0.5)


def _verdicts(make, rng, patterns: int) -> dict:
    """Share of patterns the Clark–Evans test calls clustered / dispersed (|z| > 1.96), and the
    share Ripley's L (global envelope of 99 CSR patterns at 5 %, no hard core) calls clustered /
    dispersed at some radius."""
    from stemflow.chem import dispersion, ripley_l

    ce, rl, n = [], [], []
    radii = np.linspace(0.2, SHAPE[0] * PS / 4, 20)
    for _ in range(patterns):
        t = _table(make(rng))
        d = dispersion(t, PS, SHAPE).iloc[0]
        ce.append("clustered" if d.clark_evans_z < -1.96 else "dispersed" if d.clark_evans_z > 1.96 else "random")
        v = set(ripley_l(t, PS, SHAPE, radii_nm=radii, simulations=99, hard_core_nm=0.0,
                         seed=int(rng.integers(1 << 30)))["verdict"])
        rl.append("both" if {"clustered", "dispersed"} <= v else "clustered" if "clustered" in v
                  else "dispersed" if "dispersed" in v else "random")
        n.append(len(t))
    share = lambda xs, k: float(np.mean([x == k for x in xs]))     # noqa: E731
    return {"patterns": patterns, "atoms_median": float(np.median(n)),
            "ce_clustered": share(ce, "clustered"), "ce_dispersed": share(ce, "dispersed"),
            "ripley_clustered": share(rl, "clustered") + share(rl, "both"),
            "ripley_dispersed": share(rl, "dispersed") + share(rl, "both")}


def check_statistics(patterns: int = PATTERNS) -> dict:
    from stemflow.chem import atom_groups

    rng = np.random.default_rng(2026)
    res = {}
    for n in (15, 40, 100):
        res[f"CSR, {n} atoms"] = _verdicts(lambda r, n=n: r.uniform(-0.5, SHAPE[0] - 0.5, (n, 2)), rng, patterns)
        print("CSR", n, res[f"CSR, {n} atoms"], flush=True)
    res["Thomas: 12 clusters × 3 atoms, σ 0.3 nm"] = _verdicts(lambda r: _thomas(r, 12, 3, 0.3 / PS), rng, patterns)
    res["Thomas: 25 clusters × 2 atoms, σ 0.5 nm"] = _verdicts(lambda r: _thomas(r, 25, 2, 0.5 / PS), rng, patterns)
    res["grid 2 nm, jitter 0.3 nm"] = _verdicts(lambda r: _grid(r, 2.0 / PS, 0.3 / PS), rng, patterns)
    for k in list(res)[3:]:
        print(k, res[k], flush=True)
    # pairs 0.28 nm apart among single atoms, every site at least 1 nm from the others: every pair
    # counted, no single taken for one
    right = 0
    for _ in range(patterns):
        k = int(rng.integers(0, 10))
        sites = np.zeros((0, 2))
        while len(sites) < 30 + k:
            p = rng.uniform(20, SHAPE[0] - 20, 2)
            if not len(sites) or np.min(np.hypot(*(sites - p).T)) * PS >= 1.0:
                sites = np.vstack([sites, p])
        angle = rng.uniform(0, 2 * np.pi, k)
        partners = sites[:k] + 0.28 / PS * np.c_[np.sin(angle), np.cos(angle)]
        g = atom_groups(_table(np.concatenate([sites, partners])), PS, within_nm=0.35)
        right += int((g["group_size"] == 2).sum() // 2 == k and (g["group_size"] <= 2).all())
    res["pairs counted exactly"] = {"patterns": patterns, "share": right / patterns}
    res["finder's exclusion"] = finder_exclusion(rng)
    return res


def _finder_like(rng, n: int, sep_px: int) -> np.ndarray:
    """Random atoms thinned as ``find_heavy_atoms`` thins its local maxima: integer pixels, of two
    within ``sep_px`` along both axes one kept (in a random order), then a sub-pixel shift."""
    yx = rng.integers(0, SHAPE[0], (n, 2)).astype(float)
    kept = []
    for p in yx:
        if all(np.max(np.abs(p - q)) > sep_px for q in kept):
            kept.append(p)
    return np.array(kept) + rng.uniform(-0.5, 0.5, (len(kept), 2))


def finder_exclusion(rng, patterns: int = 100) -> dict:
    """Ripley's test on random atoms thinned as the finder thins them: rejection at 5 % with the
    finder's exclusion in the random patterns (the default) and without (plain CSR)."""
    from stemflow.chem import ripley_l

    sep = int(round(0.15 / PS))
    radii = np.linspace(0.19, 1.5, 10)
    out = {}
    for n in (60, 150, 300):
        plain, matched, kept = [], [], []
        for i in range(patterns):
            t = _table(_finder_like(rng, n, sep))
            kept.append(len(t))
            plain.append(ripley_l(t, PS, SHAPE, radii_nm=radii, hard_core_nm=0, seed=i).attrs["p_value"] <= 0.05)
            matched.append(ripley_l(t, PS, SHAPE, radii_nm=radii, seed=i).attrs["p_value"] <= 0.05)
        density = float(np.mean(kept)) / (SHAPE[0] * SHAPE[1] * PS**2)
        out[f"{density:.2f} atoms/nm²"] = {"patterns": patterns, "plain": float(np.mean(plain)),
                                           "finder": float(np.mean(matched))}
        print("finder exclusion", n, out, flush=True)
    return out


def _compare(found: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Found against true per-frame dispersion rows: ratios and differences."""
    f, t = found.reset_index(drop=True), truth.reset_index(drop=True)
    return {"frames": len(t), "atoms_true": int(t.n_atoms.sum()), "atoms_found": int(f.n_atoms.sum()),
            "density_ratio_median": float(np.median(f.density_per_nm2 / t.density_per_nm2)),
            "nn_median_true": float(np.median(t.nn_median_nm)), "nn_median_found": float(np.median(f.nn_median_nm)),
            "clark_evans_true": float(np.median(t.clark_evans)), "clark_evans_found": float(np.median(f.clark_evans)),
            "ce_verdict_agree": float(np.mean(np.sign(np.where(np.abs(f.clark_evans_z) > 1.96, f.clark_evans_z, 0))
                                              == np.sign(np.where(np.abs(t.clark_evans_z) > 1.96, t.clark_evans_z, 0)))),
            "pairs_true": int(t.pairs.sum()), "pairs_found": int(f.pairs.sum()),
            "isolated_true": float(np.average(t.isolated_share, weights=t.n_atoms)),
            "isolated_found": float(np.average(f.isolated_share, weights=f.n_atoms))}


def check_simulated() -> dict:
    import stemflow
    from stemflow.chem import dispersion
    from stemflow.simulate import simulate_image

    res = {}
    for ps, dose in RENDERINGS:
        found, truth = [], []
        for seed in SEEDS:
            sim = simulate_image("amorphous", SHAPE[0], pixel_size=ps, seed=seed, dose=dose,
                                 defects={"Pt1": N_PT})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                a = stemflow.find_atoms(sim.image, pixel_size=ps, lattice="amorphous")
            found.append(dispersion(a).assign(frame=seed))
            truth.append(dispersion(sim.atoms.assign(label="dopant"), ps, sim.image.shape).assign(frame=seed))
        key = f"{ps * 1e3:g} pm/px, {dose:.0e} e⁻/Å²"
        res[key] = _compare(pd.concat(found), pd.concat(truth))
        print(key, res[key], flush=True)
    return res


def check_multislice() -> dict | None:
    """Heavy atoms on the multislice amorphous supports of ``abtem_supports.py`` (cached), one of
    whose frames holds a Pt pair 0.30 nm apart: the pairs found against the true ones."""
    from abtem_set import _central_subset
    from abtem_supports import CACHE, RENDERINGS, SCORED, TILES
    from abtem_sweep import render

    import stemflow
    from stemflow.chem import atom_groups
    from stemflow.metrics import match

    files = sorted(CACHE.glob("support*_[0-9][0-9].npz"))
    if not files:
        return None
    res = {}
    for pixel_nm, source_A, dose in RENDERINGS:
        acc = dict(frames=0, true_pairs=0, found_pairs=0, pairs_right=0, true_single=0, single_right=0)
        for f in files:
            z = np.load(f, allow_pickle=False)
            meta = json.loads(str(z["meta"]))
            rng = np.random.default_rng([meta["frame"], int(pixel_nm * 1e4), int(dose), 47])
            image, truth = render(z, pixel_nm, source_A, dose, rng, tiles=TILES, scored=SCORED)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pred = stemflow.find_atoms(image, pixel_size=pixel_nm, lattice="amorphous")
            md = 0.1 / pixel_nm
            # groups over the whole frames (a pair is not cut by the scored region's edge)
            pred = atom_groups(pred, pixel_nm).reset_index(drop=True)
            truth = atom_groups(truth.assign(label="dopant"), pixel_nm).reset_index(drop=True)
            p_c, t_c = _central_subset(pred, truth, md)
            pairs = match(p_c[["y", "x"]], t_c[["y", "x"]], md)
            found_of = dict(zip(pairs["truth"].tolist(), pairs["pred"].tolist()))
            acc["frames"] += 1
            acc["true_pairs"] += int((t_c["group_size"] == 2).sum()) // 2
            acc["found_pairs"] += int((p_c["group_size"] == 2).sum()) // 2
            for gid, rows in t_c.groupby("group").indices.items():
                got = [found_of.get(int(r)) for r in rows]
                if len(rows) == 1:
                    acc["true_single"] += 1
                    acc["single_right"] += int(got[0] is not None and p_c["group_size"].iloc[got[0]] == 1)
                elif len(rows) == 2 and None not in got:
                    a, b = p_c.iloc[got[0]], p_c.iloc[got[1]]
                    acc["pairs_right"] += int(a.group == b.group and a.group_size == 2)
        key = f"{pixel_nm * 1e3:g} pm/px, source {source_A:g} Å, {dose:.0e} e⁻/Å²"
        res[key] = acc
        print(key, acc, flush=True)
    return res


def check_real() -> tuple[dict | None, dict | None]:
    if not (DATA / "pt_single_atoms_dev.npz").exists():
        return None, None
    import stemflow
    from stemflow.chem import dispersion, ripley_l
    from stemflow.labelled import read_heavy_atoms

    frames = read_heavy_atoms(DATA / "pt_single_atoms_dev.npz")
    found, truth, f_rows, t_rows = [], [], [], []
    for i, f in enumerate(frames):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = stemflow.find_atoms(f.image, pixel_size=f.pixel_size, lattice="amorphous")
        lab = f.truth.assign(label="dopant", frame=i)
        found.append(dispersion(a).assign(frame=i))
        truth.append(dispersion(lab, f.pixel_size, f.image.shape).assign(frame=i))
        f_rows.append(a.assign(frame=i))
        t_rows.append(lab)
    shape, ps = frames[0].image.shape, frames[0].pixel_size
    curves = {}
    for name, rows in (("labels", t_rows), ("stemflow", f_rows)):
        t = pd.concat(rows, ignore_index=True)
        curve = ripley_l(t, ps, shape, simulations=199, seed=5)
        curves[name] = dict(curve.to_dict("list"), p_value=curve.attrs["p_value"])
    res = _compare(pd.concat(found), pd.concat(truth))
    res["per_frame"] = [{"frame": frames[i].name, **{f"found_{k}": v for k, v in fo.iloc[0].items() if k != "frame"},
                         **{f"labels_{k}": v for k, v in tr.iloc[0].items() if k != "frame"}}
                        for i, (fo, tr) in enumerate(zip(found, truth))]
    print("real", {k: v for k, v in res.items() if k != "per_frame"}, flush=True)
    return res, curves


def figure(curves: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, name in zip(axes, ("labels", "stemflow")):
        c = pd.DataFrame({k: v for k, v in curves[name].items() if k != "p_value"})
        ax.fill_between(c.radius_nm, c.csr_low_nm, c.csr_high_nm, color="0.85", label="CSR envelope (199)")
        ax.plot(c.radius_nm, c.l_minus_r_nm, color="C3" if name == "stemflow" else "k", label=f"L(r) − r, {name}")
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_xlabel("r (nm)")
        ax.set_title({"labels": "the hand labels", "stemflow": "stemflow (find_atoms, amorphous)"}[name], fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("L(r) − r (nm)")
    fig.suptitle("Pt on carbon nitride, 11 real frames pooled: Ripley's L against complete spatial randomness",
                 fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def markdown(res: dict) -> str:
    lines = ["# How single atoms are spread: the statistics, and how far the finder's errors carry into them", "",
             f"Written by `python benchmarks/dispersion.py` ({res['seconds']:.0f} s on the 2-core CPU machine). "
             "`stemflow.chem.dispersion` (per frame: density, nearest-neighbour distances, the Clark–Evans index R "
             "with Donnelly's edge correction and its z, groups of atoms within 0.35 nm), `ripley_l` (L(r) − r with "
             "the translation edge correction, against the envelope of CSR patterns of the same counts) and "
             "`atom_groups`.", "",
             f"## 1. The statistics on patterns whose law is known ({SHAPE[0]}² px at {PS * 1e3:g} pm/px, "
             f"{PATTERNS} patterns each, no finder)", "",
             "Share of patterns each test calls clustered / dispersed. Clark–Evans: |z| > 1.96 (5 % two-sided). "
             "Ripley: L(r) − r outside the global envelope of 99 CSR patterns (maximum absolute deviation test at "
             "5 %) at any of 20 radii from 0.2 nm to a quarter of the frame: on CSR itself, 5 % of patterns "
             "should leave it, split between the two sides.", "",
             "| pattern | atoms (median) | Clark–Evans: clustered | dispersed | Ripley: clustered | dispersed |",
             "|---|---|---|---|---|---|"]
    for k, v in res["statistics"].items():
        if "ce_clustered" in v and "atoms_median" in v:
            lines.append(f"| {k} | {v['atoms_median']:.0f} | {v['ce_clustered']:.3f} | {v['ce_dispersed']:.3f} | "
                         f"{v['ripley_clustered']:.3f} | {v['ripley_dispersed']:.3f} |")
    p = res["statistics"]["pairs counted exactly"]
    lines += ["", f"Pairs 0.28 nm apart (0–9 of them among 30 single atoms, every site at least 1 nm from the others): "
              f"`atom_groups` counted them exactly in {p['share']:.3f} of {p['patterns']} patterns.", "",
              "The finder keeps one of two local maxima within ±5 px (0.15 nm at 30 pm/px) along both axes, so "
              "its atoms are never that close. Random atoms thinned that way, at several densities: the share "
              "Ripley's test rejects at 5 % with the random patterns keeping the finder's exclusion (the default) "
              "and without it (plain CSR):", "",
              "| density | patterns | rejected, with the finder's exclusion | rejected, plain CSR |", "|---|---|---|---|"]
    for k, v in res["statistics"]["finder's exclusion"].items():
        lines.append(f"| {k} | {v['patterns']} | {v['finder']:.3f} | {v['plain']:.3f} |")
    lines.append("")
    head = ("| set | frames | atoms true / found | density found / true (median) | NN median true / found (nm) | "
            "R true / found (median) | Clark–Evans verdict agrees | pairs true / found | isolated true / found |")
    sep = "|---|---|---|---|---|---|---|---|---|"

    def row(k, v):
        return (f"| {k} | {v['frames']} | {v['atoms_true']} / {v['atoms_found']} | {v['density_ratio_median']:.3f} | "
                f"{v['nn_median_true']:.3f} / {v['nn_median_found']:.3f} | {v['clark_evans_true']:.3f} / "
                f"{v['clark_evans_found']:.3f} | {v['ce_verdict_agree']:.3f} | {v['pairs_true']} / {v['pairs_found']} | "
                f"{v['isolated_true']:.3f} / {v['isolated_found']:.3f} |")

    lines += ["## 2. Simulated Pt on amorphous carbon, exact truth", "",
              f"`simulate_image('amorphous', {SHAPE[0]}, defects={{'Pt1': {N_PT}}})`, seeds {', '.join(map(str, SEEDS))}; "
              "`find_atoms(..., lattice='amorphous')` with its defaults; every statistic of the found atoms "
              "beside the same statistic of the truth, frame by frame.", "", head, sep]
    lines += [row(k, v) for k, v in res["simulated"].items()]
    ms = res.get("multislice")
    lines += ["", "### Multislice: heavy atoms on thick amorphous supports, a Pt pair 0.30 nm apart", ""]
    if ms is None:
        lines.append("Not run: no frames cached (`python benchmarks/abtem_supports.py --generate`, about 32 min).")
    else:
        lines += ["The frames of `abtem_supports.py` (abTEM, 80 kV HAADF, Pt, Au, Ir and W on 2–6 nm of amorphous "
                  "carbon or SiO2, each cell tiled 5 × 5 with its own noise, the middle 3 × 3 scored); half of the "
                  "cells hold a Pt pair 0.30 nm apart in projection. A pair is right when both its atoms are found "
                  "(within 0.1 nm) and `atom_groups` puts them in one group of two; a single atom is right when it "
                  "is found and has no other within 0.35 nm.", "",
                  "| rendering | frames | true pairs | pairs found right | pairs found (all) | single atoms right |",
                  "|---|---|---|---|---|---|"]
        for k, v in ms.items():
            lines.append(f"| {k} | {v['frames']} | {v['true_pairs']} | {v['pairs_right']} | {v['found_pairs']} | "
                         f"{v['single_right']} of {v['true_single']} |")
    real = res.get("real")
    if real is None:
        lines += ["", "## 3. Real Pt frames", "", "Not run: `shared/data/pt_single_atoms_dev.npz` is not here."]
    else:
        lines += ["", "## 3. Real Pt on carbon nitride (11 labelled development frames, 29.3 pm/px)", "",
                  "The same statistics of stemflow's heavy atoms and of the hand labels. The finder's precision on "
                  "these frames is about 0.55 and its recall 0.75 (`real_data.md`): its extra atoms raise the "
                  "density and shorten the nearest-neighbour distances.", "", head, sep, row("real Pt", real), "",
                  "Per frame (found / labelled):", "",
                  "| frame | atoms | density (nm⁻²) | NN median (nm) | R | z | pairs |", "|---|---|---|---|---|---|---|"]
        for r in real["per_frame"]:
            lines.append(f"| {r['frame']} | {r['found_n_atoms']:.0f} / {r['labels_n_atoms']:.0f} | "
                         f"{r['found_density_per_nm2']:.3f} / {r['labels_density_per_nm2']:.3f} | "
                         f"{r['found_nn_median_nm']:.3f} / {r['labels_nn_median_nm']:.3f} | "
                         f"{r['found_clark_evans']:.3f} / {r['labels_clark_evans']:.3f} | "
                         f"{r['found_clark_evans_z']:.2f} / {r['labels_clark_evans_z']:.2f} | "
                         f"{r['found_pairs']:.0f} / {r['labels_pairs']:.0f} |")
        for name, c in res["ripley"].items():
            p_value = c["p_value"]
            c = pd.DataFrame({k: v for k, v in c.items() if k != "p_value"})
            runs = c.groupby((c.verdict != c.verdict.shift()).cumsum()).agg(
                verdict=("verdict", "first"), lo=("radius_nm", "min"), hi=("radius_nm", "max"))
            said = "; ".join(f"{r.verdict} {r.lo:.2f}–{r.hi:.2f} nm" for r in runs.itertuples())
            whose = "the labels" if name == "labels" else "stemflow's atoms"
            lines.append(f"\nRipley's L of {whose}, pooled over the frames (199 CSR patterns, global envelope at 5 %, "
                         f"p = {p_value:.3g}): {said}.")
        lines += ["", f"![Ripley's L of the labels and of stemflow's atoms](../../docs/images/{FIGURE.name})"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    options(__doc__, argv)
    t0 = time.perf_counter()
    res = {"statistics": check_statistics(), "simulated": check_simulated(), "multislice": check_multislice()}
    res["real"], res["ripley"] = check_real()
    res["seconds"] = time.perf_counter() - t0
    if res["ripley"]:
        figure(res["ripley"], FIGURE)
    return save(RESULTS, "dispersion", res, lambda r: (RESULTS / "dispersion.md").write_text(markdown(r)))


if __name__ == "__main__":
    sys.exit(main())

"""How far stemflow's multislice results carry: the abTEM frames rendered at other doses, samplings
and source sizes.

    python benchmarks/abtem_sweep.py             # writes benchmarks/results/abtem_sweep.md (+ .json)
    python benchmarks/abtem_sweep.py --draws 1   # one noise draw per frame and setting

``benchmarks/abtem_set.py --generate`` caches, for every multislice frame, the noise-free detected
fraction at the scan points of one periodic cell (``scan``). This script renders each cached frame
again, one setting changed at a time from the set's own (15 pm/px, effective source 0.5 Å FWHM,
10⁵ e⁻/Å²): the dose (Poisson counts), the pixel size (trigonometric interpolation of the periodic
scan, exact for the band-limited image) and the effective source (a wider Gaussian blur), plus one
setting with all three worse at once. Every rendering goes through ``stemflow.find_atoms`` with its
defaults and is scored as ``abtem_set.py`` scores (the centre tile of the 3 × 3 tiled cell,
``stemflow.score`` within half the truth's nearest-neighbour distance; heavy atoms within 0.1 nm).
Nothing is simulated here: the multislice runs are ``abtem_set.py``'s (about 17 min on 2 cores).

The counts scale with dose × pixel area × detected fraction: at 15 pm/px and 10⁴ e⁻/Å² a carbon
column of graphene at 60 kV peaks at under one count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from abtem_set import CACHE, RESULTS, SETTINGS, _central_subset, _fourier_resample, score_pooled  # noqa: E402

#: One change at a time from the set's own rendering (pixel nm, source FWHM Å, dose e⁻/Å²).
BASE = dict(pixel_nm=SETTINGS["pixel_size_nm"], source_A=SETTINGS["source_fwhm_A"], dose=SETTINGS["dose_e_per_A2"])
VARIANTS = {
    "as the set": {},
    "dose 1e6": dict(dose=1e6),
    "dose 3e4": dict(dose=3e4),
    "dose 1e4": dict(dose=1e4),
    "8 pm/px": dict(pixel_nm=0.008),
    "10 pm/px": dict(pixel_nm=0.010),
    "20 pm/px": dict(pixel_nm=0.020),
    "25 pm/px": dict(pixel_nm=0.025),
    "source 0.8 Å": dict(source_A=0.8),
    "source 1.1 Å": dict(source_A=1.1),
    "20 pm/px, source 0.8 Å, 3e4": dict(pixel_nm=0.020, source_A=0.8, dose=3e4),
}


def render(z, pixel_nm: float, source_A: float, dose: float, rng, *, tiles: int | None = None,
           scored: int = 1) -> tuple[np.ndarray, pd.DataFrame]:
    """A cached frame rendered at ``pixel_nm`` (nm/px) with an effective source of ``source_A`` (Å
    FWHM) and Poisson counts at ``dose`` (e⁻/Å²), tiled ``tiles`` × ``tiles`` (default: as the set
    tiles); and its truth (px), with ``cell_index`` (the row of the cell's truth) and ``central``
    (True on the tiles at most ``scored // 2`` from the middle one: the middle ``scored`` ×
    ``scored`` for odd ``scored``)."""
    scan = np.asarray(z["scan"], np.float64)
    cell = np.asarray(z["cell_yx_A"], np.float64)
    tiles = int(tiles or SETTINGS["tiles"])
    mid, half = tiles // 2, scored // 2
    p_a = 10 * pixel_nm
    n_out = (int(tiles * cell[0] / p_a), int(tiles * cell[1] / p_a))
    signal = np.clip(_fourier_resample(scan, tuple(cell), p_a, n_out, source_A / 2.3548), 0, None)
    counts = rng.poisson(signal * dose * p_a**2).astype(np.float32)
    tyx = np.asarray(z["truth_cell_yx_A"], np.float64)
    lab = np.asarray(z["truth_cell_label"]).astype(str)
    rows = []
    for a in range(tiles):
        for b in range(tiles):
            rows.append(pd.DataFrame({"y": (tyx[:, 0] + a * cell[0]) / p_a, "x": (tyx[:, 1] + b * cell[1]) / p_a,
                                      "label": lab, "central": max(abs(a - mid), abs(b - mid)) <= half,
                                      "cell_index": np.arange(len(lab))}))
    truth = pd.concat(rows, ignore_index=True)
    truth = truth[(truth.y <= n_out[0] - 1) & (truth.x <= n_out[1] - 1)].reset_index(drop=True)
    return counts, truth


def score_variant(files, setting: dict, draws: int, model=None) -> dict:
    """Per lattice: stemflow's scores over every cached frame × ``draws`` noise draws (``model``:
    weights other than the bundled default)."""
    import stemflow
    from stemflow.metrics import default_max_distance

    per = {}
    for f in files:
        z = np.load(f, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        lattice = meta["lattice"]
        for d in range(draws):
            rng = np.random.default_rng([d, meta["frame"], sum(map(ord, lattice)), 7])
            image, truth = render(z, setting["pixel_nm"], setting["source_A"], setting["dose"], rng)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pred = stemflow.find_atoms(image, pixel_size=setting["pixel_nm"], lattice=lattice, model=model)
            md = 0.1 / setting["pixel_nm"] if lattice == "amorphous" else float(default_max_distance(truth))
            p_c, t_c = _central_subset(pred[["y", "x", "label"]], truth, md)
            entry = per.setdefault(lattice, dict(pred=[], truth=[], md=md, warned=0, support=0))
            k = len(entry["pred"])
            entry["pred"].append(p_c.assign(frame=k))
            entry["truth"].append(t_c.assign(frame=k))
            entry["warned"] += int(len(caught) > 0)
            entry["support"] += int((p_c["label"].astype(str) != "dopant").sum())
    out = {}
    for lattice, e in per.items():
        sc, _ = score_pooled(e["pred"], e["truth"], e["md"], lattice)
        out[lattice] = dict(frames=len(e["pred"]), warned=e["warned"], support_rows=e["support"],
                            scores={c: {k: (int(v) if k in ("tp", "fp", "fn") else float(v))
                                        for k, v in sc.loc[c].items()} for c in sc.index})
    return out


def _cell(s: dict) -> str:
    if s["tp"] + s["fp"] + s["fn"] == 0:
        return "–"
    return f"{s['f1']:.3f}"


def write_md(res: dict) -> None:
    lines = ["# stemflow on the multislice frames rendered otherwise", "",
             f"Written by `python benchmarks/abtem_sweep.py` ({res['seconds']:.0f} s on the 2-core CPU machine, "
             f"abTEM frames from `abtem_set.py`, {res['draws']} noise draws per frame and setting). Each cached "
             "multislice frame (graphene 60 kV with Si1C3, Si1C4 and V1; WS2 80 kV with Mo, V_W, V_S, V_S2; MoS2 80 kV "
             "with V_S, V_S2; Pt on 1 nm of amorphous carbon, 80 kV) rendered again from its noise-free scan with one "
             "setting changed from the set's own (15 pm/px, effective source 0.5 Å FWHM, 10⁵ e⁻/Å²), then "
             "`stemflow.find_atoms` with its defaults and the bundled network. F1 per class; vacancy precision / "
             "recall; *warned*: renderings on which `find_atoms` raised a warning (e.g. frames unlike what the "
             "network knows). Pt: `lattice=\"amorphous\"`, matched within 0.1 nm; *support*: other rows found.", ""]
    head = ("| setting | pm/px | source Å | dose e⁻/Å² | graphene lattice | Si | graphene vacancy P / R | WS2 lattice "
            "| Mo | WS2 vacancy P / R | MoS2 lattice | MoS2 vacancy P / R | Pt F1 | Pt support | warned |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in res["variants"].items():
        s, sc = r["setting"], r["scores"]

        def get(lat, cls):
            return sc.get(lat, {}).get("scores", {}).get(cls, {"tp": 0, "fp": 0, "fn": 0, "f1": np.nan})

        def pr(lat):
            v = get(lat, "vacancy")
            return f"{v['precision']:.3f} / {v['recall']:.3f}" if "precision" in v else "–"

        warned = sum(v["warned"] for v in sc.values())
        n = sum(v["frames"] for v in sc.values())
        lines.append(
            f"| {name} | {1000 * s['pixel_nm']:g} | {s['source_A']:g} | {s['dose']:.0e} | "
            f"{_cell(get('graphene', 'lattice'))} | {_cell(get('graphene', 'dopant'))} | {pr('graphene')} | "
            f"{_cell(get('ws2', 'lattice'))} | {_cell(get('ws2', 'dopant'))} | {pr('ws2')} | "
            f"{_cell(get('mos2', 'lattice'))} | {pr('mos2')} | {_cell(get('amorphous', 'dopant'))} | "
            f"{sc.get('amorphous', {}).get('support_rows', '–')} | {warned} of {n} |")
    pooled = {}
    for r in res["variants"].values():
        for lat, v in r["scores"].items():
            for cls, c in v["scores"].items():
                if cls != "all":
                    acc = pooled.setdefault((lat, cls), [0, 0, 0])
                    for i, k in enumerate(("tp", "fp", "fn")):
                        acc[i] += c[k]
    lines += ["", "Over every setting (TP / FP / FN; precision / recall):", "",
              "| lattice | class | TP | FP | FN | precision | recall |", "|---|---|---|---|---|---|---|"]
    for (lat, cls), (tp, fp, fn) in sorted(pooled.items()):
        if tp + fp + fn:
            lines.append(f"| {lat} | {cls} | {tp} | {fp} | {fn} | {tp / max(tp + fp, 1):.3f} | {tp / max(tp + fn, 1):.3f} |")
    lines += ["", "Counts (TP / FP / FN) per setting, lattice and class:", "",
              "| setting | lattice | class | TP | FP | FN |", "|---|---|---|---|---|---|"]
    for name, r in res["variants"].items():
        for lat, v in r["scores"].items():
            for cls, s in v["scores"].items():
                if cls != "all":
                    lines.append(f"| {name} | {lat} | {cls} | {s['tp']} | {s['fp']} | {s['fn']} |")
    (RESULTS / "abtem_sweep.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=2, help="noise draws per frame and setting")
    ap.add_argument("--only", default=None, help="comma-separated variant names (for a quick look; writes nothing)")
    ap.add_argument("--model", default=None, help="weights to score (a .pt with its card; for a quick look: "
                    "writes nothing); default: the bundled model")
    args = ap.parse_args(argv)
    files = sorted(CACHE.glob("*_[0-9][0-9].npz"))
    if not files:
        print(f"no frames in {CACHE}: run `benchmarks/abtem_set.py --generate` first", file=sys.stderr)
        return 1
    if any("scan" not in np.load(f).files for f in files):
        print(f"the frames in {CACHE} hold no noise-free scan: make them again "
              "(`benchmarks/abtem_set.py --generate --force`)", file=sys.stderr)
        return 1
    names = args.only.split(",") if args.only else list(VARIANTS)
    t0 = time.perf_counter()
    res = dict(draws=args.draws, variants={})
    for name in names:
        setting = {**BASE, **VARIANTS[name]}
        sc = score_variant(files, setting, args.draws, args.model)
        res["variants"][name] = dict(setting=setting, scores=sc)
        print(name, {lat: {c: round(v["f1"], 3) for c, v in r["scores"].items()} for lat, r in sc.items()},
              flush=True)
    res["seconds"] = time.perf_counter() - t0
    if args.only or args.model:
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "abtem_sweep.json").write_text(json.dumps(res, indent=1, default=float))
    write_md(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How far stemflow's multislice results carry to other microscope physics: detector angles, defocus,
spherical aberration, astigmatism and a smaller aperture.

    python benchmarks/abtem_physics.py --generate   # in an environment with abTEM (the ``sim`` extra)
    python benchmarks/abtem_physics.py              # scores; writes benchmarks/results/abtem_physics.md

``abtem_set.py`` simulates its frames with one probe (30 mrad, no aberrations) and one detector
(80–200 mrad); ``abtem_sweep.py`` renders those frames at other doses, samplings and source sizes,
which needs no new multislice. A user's microscope differs in what only a new scan shows: a lower
inner detector angle (medium-angle ADF, where Z-contrast flattens and strain shows), residual defocus,
spherical aberration and two-fold astigmatism (tails, rings and elongated columns), a smaller
aperture (a wider probe). This script builds the first frames of the graphene (60 kV), WS2 and MoS2
(80 kV) sets again with ``abtem_set.build_frame``, computes each frozen-phonon configuration's
scattering matrix once (PRISM, interpolation 1, so exact), and scans it with every probe and
detector below. Each noise-free scan is cached in ``benchmarks/_cache/abtem_physics``; scoring
renders them as ``abtem_sweep.render`` does (15 pm/px, 0.5 Å effective source, Poisson counts at
10⁵ and 3·10⁴ e⁻/Å², tiled 3 × 3, the centre tile scored) through ``stemflow.find_atoms`` with its
defaults and the bundled network.

The generation took 34 minutes on 2 CPU cores (graphene 3, WS2 12, MoS2 19); scoring about one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from abtem_set import FRAMES, RESULTS, ROOT, SETTINGS, build_frame  # noqa: E402

CACHE = ROOT / "benchmarks" / "_cache" / "abtem_physics"

#: Frozen-phonon configurations per lattice (fewer than the set's: each is scanned many times).
CONFIGS = {"graphene": 3, "ws2": 8, "mos2": 8}
FRAME_INDICES = (0, 1)

#: Probe variants: name → (semiangle mrad, aberration coefficients in Å, abTEM's names; C10 = −defocus).
PROBES = {
    "as the set": (30.0, {}),
    "defocus 20 Å": (30.0, {"C10": -20.0}),
    "defocus 40 Å": (30.0, {"C10": -40.0}),
    "Cs 5 µm": (30.0, {"C30": 5.0e4}),
    "astigmatism 15 Å": (30.0, {"C12": 15.0}),
    "aperture 25 mrad": (25.0, {}),
}
#: Detector variants (inner, outer mrad), scanned with the set's probe.
DETECTORS = {"as the set": (80.0, 200.0), "ADF 40–200 mrad": (40.0, 200.0), "ADF 60–200 mrad": (60.0, 200.0),
             "HAADF 120–200 mrad": (120.0, 200.0)}

DOSES = (1e5, 3e4)


def variants() -> list[tuple[str, str, str]]:
    """(variant name, probe key, detector key) in report order."""
    out = [("as the set", "as the set", "as the set")]
    out += [(k, k, "as the set") for k in PROBES if k != "as the set"]
    out += [(k, "as the set", k) for k in DETECTORS if k != "as the set"]
    return out


def generate(lattices=None, frames=FRAME_INDICES, force: bool = False) -> None:
    """Scan every probe and detector variant of the chosen frames into ``CACHE``."""
    import abtem

    abtem.config.set({"device": "cpu", "progress_bar": False})
    CACHE.mkdir(parents=True, exist_ok=True)
    s = SETTINGS
    for lattice in lattices or CONFIGS:
        cfg = FRAMES[lattice]
        for i in frames:
            path = CACHE / f"{lattice}_{i:02d}.npz"
            if path.exists() and not force:
                continue
            t0 = time.perf_counter()
            atoms, tx, ty, tlabel = build_frame(lattice, cfg["frames"][i], seed=i)
            sig = {el: v for el, v in s["phonon_sigma_A"].items() if el in set(atoms.get_chemical_symbols())}
            acc: dict[str, np.ndarray] = {}
            n_conf = CONFIGS[lattice]
            for c in range(n_conf):
                fp = abtem.FrozenPhonons(atoms, num_configs=1, sigmas=sig, seed=1000 + 100 * i + c)
                pot = abtem.Potential(fp, sampling=cfg["sampling"], slice_thickness=cfg["slice"],
                                      parametrization=s["parametrization"], projection="infinite")
                smat = abtem.SMatrix(potential=pot, energy=cfg["energy"], semiangle_cutoff=30.0, interpolation=1)
                if min(smat.cutoff_angles) < 200.0:
                    raise RuntimeError(f"{lattice}: potential sampling reaches only {min(smat.cutoff_angles):.0f} mrad")
                built = smat.build(lazy=False)
                probe = abtem.Probe(energy=cfg["energy"], semiangle_cutoff=25.0)
                probe.grid.match(pot)
                step = probe.aperture.nyquist_sampling      # the smallest aperture's limit covers all
                scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, potential=pot, sampling=step)
                for name, (alpha, aberr) in PROBES.items():
                    ctf = abtem.CTF(semiangle_cutoff=alpha, aberration_coefficients=dict(aberr), energy=cfg["energy"])
                    dets = DETECTORS if name == "as the set" else {"as the set": DETECTORS["as the set"]}
                    meas = built.reduce(scan=scan, detectors=[abtem.AnnularDetector(inner=a, outer=b)
                                                            for a, b in dets.values()], ctf=ctf)
                    meas = meas if isinstance(meas, list) else [meas]
                    for dname, m in zip(dets, meas):
                        arr = np.asarray(m.compute().array, np.float64)
                        arr = arr.reshape(-1, *arr.shape[-2:]).mean(0).T        # abTEM: axis 0 = x
                        key = f"{name}|{dname}"
                        acc[key] = acc.get(key, 0) + arr / n_conf
                print(f"  {lattice} {i} config {c + 1}/{n_conf}: {time.perf_counter() - t0:.0f} s", flush=True)
            L = atoms.cell.lengths()[:2]
            scans = {vname: acc[f"{p}|{d}"].astype(np.float32) for vname, p, d in variants()}
            meta = dict(lattice=lattice, frame=i, defects=[d for d, _ in cfg["frames"][i]], energy_eV=cfg["energy"],
                        frozen_phonons=n_conf, seconds=time.perf_counter() - t0, abtem=abtem.__version__,
                        probes={k: [v[0], v[1]] for k, v in PROBES.items()}, detectors=DETECTORS,
                        variants=[v for v, _, _ in variants()])
            np.savez_compressed(path, cell_yx_A=np.array([L[1], L[0]]), truth_cell_yx_A=np.column_stack([ty, tx]),
                                truth_cell_label=tlabel.astype(str), meta=json.dumps(meta),
                                **{f"scan_{k}": v for k, v in enumerate(scans.values())})
            print(f"{lattice} frame {i}: {len(atoms)} atoms, {n_conf} phonons, {meta['seconds']:.0f} s", flush=True)


# ------------------------------------------------------------------------------------- scoring
def score(draws: int = 2, only: list[str] | None = None) -> dict:
    """Per variant, dose and lattice: stemflow's scores over the cached frames × ``draws`` noise draws."""
    import stemflow
    from abtem_set import _central_subset, score_pooled
    from abtem_sweep import render
    from stemflow.metrics import default_max_distance

    files = sorted(CACHE.glob("*_[0-9][0-9].npz"))
    if not files:
        raise SystemExit(f"no frames in {CACHE}: run `python benchmarks/abtem_physics.py --generate` first "
                         "(in an environment with abTEM)")
    out: dict = {}
    for f in files:
        z = np.load(f, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        lattice = meta["lattice"]
        for k, vname in enumerate(meta["variants"]):
            if only and vname not in only:
                continue
            frame = {"scan": z[f"scan_{k}"], "cell_yx_A": z["cell_yx_A"], "truth_cell_yx_A": z["truth_cell_yx_A"],
                     "truth_cell_label": z["truth_cell_label"]}
            for dose in DOSES:
                for d in range(draws):
                    rng = np.random.default_rng([d, meta["frame"], sum(map(ord, lattice)), int(dose), 11])
                    image, truth = render(frame, SETTINGS["pixel_size_nm"], SETTINGS["source_fwhm_A"], dose, rng)
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        pred = stemflow.find_atoms(image, pixel_size=SETTINGS["pixel_size_nm"], lattice=lattice)
                    md = float(default_max_distance(truth))
                    p_c, t_c = _central_subset(pred[["y", "x", "label"]], truth, md)
                    e = out.setdefault(vname, {}).setdefault(f"{dose:.0e}", {}).setdefault(
                        lattice, dict(pred=[], truth=[], md=md, warned=0))
                    e["pred"].append(p_c.assign(frame=len(e["pred"])))
                    e["truth"].append(t_c.assign(frame=len(e["truth"])))
                    e["warned"] += int(len(caught) > 0)
    res: dict = {}
    for vname, per_dose in out.items():
        for dose, per_lat in per_dose.items():
            for lattice, e in per_lat.items():
                sc, _ = score_pooled(e["pred"], e["truth"], e["md"], lattice)
                res.setdefault(vname, {}).setdefault(dose, {})[lattice] = dict(
                    frames=len(e["pred"]), warned=e["warned"],
                    scores={c: {k: (int(v) if k in ("tp", "fp", "fn") else float(v)) for k, v in sc.loc[c].items()}
                            for c in sc.index if c != "all"})
    return res


def _f1(c: dict) -> str:
    return "–" if c["tp"] + c["fp"] + c["fn"] == 0 else f"{c['f1']:.3f}"


def _pr(c: dict) -> str:
    return "–" if c["tp"] + c["fp"] + c["fn"] == 0 else f"{c['precision']:.3f} / {c['recall']:.3f}"


def write_md(res: dict, meta: dict) -> None:
    """``abtem_physics.md``: one row per variant and dose."""
    lines = ["# stemflow on multislice frames scanned with other probes and detectors", "",
             f"Written by `python benchmarks/abtem_physics.py` ({meta['seconds']:.0f} s of scoring on the 2-core CPU "
             f"machine; {meta['draws']} noise draws per frame, variant and dose). Frames "
             f"{', '.join(str(i) for i in FRAME_INDICES)} of each multislice set of `abtem_set.py` (graphene 60 kV with "
             "Si1C3, Si1C4, V1; WS2 80 kV with Mo, V_W, V_S, V_S2; MoS2 80 kV with V_S, V_S2), simulated again with "
             f"{', '.join(f'{k} {v}' for k, v in CONFIGS.items())} frozen-phonon configurations and scanned with each "
             "probe (30 mrad unless said; abTEM's aberration names, C10 = −defocus) and each detector (80–200 mrad "
             "unless said) below; rendered at 15 pm/px with a 0.5 Å effective source and Poisson counts; "
             "`stemflow.find_atoms` with its defaults and the bundled network; the centre tile scored within half "
             "the nearest-neighbour distance. F1 per class; vacancy precision / recall; *warned*: renderings on "
             "which `find_atoms` warned. Figure: `docs/images/abtem_physics.png` (each variant, noise-free).", ""]
    head = ("| variant | dose e⁻/Å² | graphene lattice | Si | graphene vacancy P / R | WS2 lattice | Mo | "
            "WS2 vacancy P / R | MoS2 lattice | MoS2 vacancy P / R | warned |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    empty = {"tp": 0, "fp": 0, "fn": 0}
    for vname, per_dose in res.items():
        for dose, sc in per_dose.items():
            def g(lat, cls):
                return sc.get(lat, {}).get("scores", {}).get(cls, empty)
            warned = sum(v["warned"] for v in sc.values())
            n = sum(v["frames"] for v in sc.values())
            lines.append(f"| {vname} | {float(dose):.0e} | {_f1(g('graphene', 'lattice'))} | {_f1(g('graphene', 'dopant'))} "
                         f"| {_pr(g('graphene', 'vacancy'))} | {_f1(g('ws2', 'lattice'))} | {_f1(g('ws2', 'dopant'))} | "
                         f"{_pr(g('ws2', 'vacancy'))} | {_f1(g('mos2', 'lattice'))} | {_pr(g('mos2', 'vacancy'))} | "
                         f"{warned} of {n} |")
    pooled: dict = {}
    for per_dose in res.values():
        for dose, sc in per_dose.items():
            for lat, v in sc.items():
                for cls, c in v["scores"].items():
                    acc = pooled.setdefault((float(dose), lat, cls), [0, 0, 0])
                    for i, k in enumerate(("tp", "fp", "fn")):
                        acc[i] += c[k]
    lines += ["", "Over every variant, per dose (TP / FP / FN; precision / recall):", "",
              "| dose e⁻/Å² | lattice | class | TP | FP | FN | precision | recall |", "|---|---|---|---|---|---|---|---|"]
    for (dose, lat, cls), (tp, fp, fn) in sorted(pooled.items(), key=lambda kv: (-kv[0][0], kv[0][1], kv[0][2])):
        if tp + fp + fn:
            lines.append(f"| {dose:.0e} | {lat} | {cls} | {tp} | {fp} | {fn} | {tp / max(tp + fp, 1):.3f} | "
                         f"{tp / max(tp + fn, 1):.3f} |")
    lines += ["", "Counts (TP / FP / FN) per variant, dose, lattice and class:", "",
              "| variant | dose | lattice | class | TP | FP | FN |", "|---|---|---|---|---|---|---|"]
    for vname, per_dose in res.items():
        for dose, sc in per_dose.items():
            for lat, v in sc.items():
                for cls, s in v["scores"].items():
                    if s["tp"] + s["fp"] + s["fn"]:
                        lines.append(f"| {vname} | {float(dose):.0e} | {lat} | {cls} | {s['tp']} | {s['fp']} | {s['fn']} |")
    (RESULTS / "abtem_physics.md").write_text("\n".join(lines) + "\n")


def figure(out: Path | None = None) -> Path | None:
    """One noise-free rendering per variant of each lattice's first frame (one cell, 15 pm/px):
    what each probe and detector does to the image. ``docs/images/abtem_physics.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from abtem_set import IMAGES, _fourier_resample

    files = [f for f in (CACHE / f"{lat}_00.npz" for lat in CONFIGS) if f.exists()]
    if not files:
        return None
    names = [v for v, _, _ in variants()]
    fig, axes = plt.subplots(len(files), len(names), figsize=(1.9 * len(names), 2.1 * len(files)), squeeze=False)
    for row, f in zip(axes, files):
        z = np.load(f, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        cell = tuple(np.asarray(z["cell_yx_A"], float))
        p_a = 10 * SETTINGS["pixel_size_nm"]
        n_out = (int(cell[0] / p_a), int(cell[1] / p_a))
        for k, (ax, name) in enumerate(zip(row, meta["variants"])):
            img = _fourier_resample(np.asarray(z[f"scan_{k}"], np.float64), cell, p_a, n_out,
                                    SETTINGS["source_fwhm_A"] / 2.3548)
            ax.imshow(img, cmap="gray", interpolation="nearest")
            ax.set_xticks([]); ax.set_yticks([])
            if row is axes[0]:
                ax.set_title(name, fontsize=8)
            if k == 0:
                ax.set_ylabel(f"{meta['lattice']}, {meta['energy_eV'] / 1e3:g} kV", fontsize=8)
            ax.text(0.02, 0.02, f"max {img.max():.3f}", color="w", fontsize=6, transform=ax.transAxes)
    fig.suptitle("The first frame of each multislice set, noise-free, one cell: each probe and detector "
                 "(max: detected fraction at the brightest pixel)", fontsize=9)
    fig.tight_layout()
    out = out or IMAGES / "abtem_physics.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generate", action="store_true", help="simulate the frames (needs abTEM)")
    ap.add_argument("--force", action="store_true", help="with --generate: simulate cached frames again")
    ap.add_argument("--draws", type=int, default=2, help="noise draws per frame, variant and dose")
    ap.add_argument("--only", default=None, help="comma-separated variant names (a quick look; writes nothing)")
    args = ap.parse_args(argv)
    if args.generate:
        generate(force=args.force)
        return 0
    t0 = time.perf_counter()
    only = args.only.split(",") if args.only else None
    res = score(args.draws, only)
    meta = dict(seconds=time.perf_counter() - t0, draws=args.draws)
    for vname, per_dose in res.items():
        print(vname, {d: {lat: {c: round(v["f1"], 3) for c, v in r["scores"].items()} for lat, r in sc.items()}
                      for d, sc in per_dose.items()}, flush=True)
    if only:
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "abtem_physics.json").write_text(json.dumps(dict(meta=meta, results=res), indent=1, default=float))
    write_md(res, meta)
    figure()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

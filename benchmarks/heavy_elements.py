"""Heavy single atoms of several elements on amorphous supports: found, and named by Z-contrast?

    python benchmarks/heavy_elements.py --generate   # multislice frames, with abTEM (the ``sim`` extra); ~11 min
    python benchmarks/heavy_elements.py              # scores; writes benchmarks/results/heavy_elements.md (+ .json)

``stemflow.find_atoms(..., lattice="amorphous", elements=(...))`` names each heavy atom by the
counts it adds over its support (``stemflow.chem.heavy.name_heavy_atoms``: a mixture of the
candidates' populations at their Z**1.7 ratios, no reference column). Measured on:

* stemflow's own simulator: single atoms of two or three elements (Fe + Pt, Ru + Pt, Cu + Au,
  Fe + Ru + Pt; 15 of each per 512² frame) on its amorphous carbon support, at 15, 30 and 40
  pm/px and 10⁴ and 10⁵ e⁻/Å²;
* multislice frames (abTEM, the physics of ``abtem_supports.py``: 80 kV, 30 mrad, HAADF 80–200
  mrad, 3 nm of rough amorphous carbon) with Pt and Fe (frame 0) and Pt, Ru and Fe (frame 1) on
  the entrance surface, inside the film and on its exit surface (out of focus), rendered at the
  renderings of ``abtem_supports.py`` (left out with a note when the cache is not there);
* the labelled real Pt frames (``../shared/data``), found with ``elements=("Fe", "Pt")``: one
  population, which must be named Pt, and the Pt found as without ``elements``.

Each with and without ``elements``: without it, a lower population of maxima is dropped as support
clusters (``find_heavy_atoms(populations=True)``), which is what a lighter element is.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from abtem_set import RESULTS, ROOT  # noqa: E402

CACHE = ROOT / "benchmarks" / "_cache" / "heavy_elements"
SUPPORT = "a-C 3 nm, rough"
#: Heavy atoms of each multislice frame: (element, height kind, fractional (x, y) in the cell).
HEAVY = [
    [("Pt", "entrance", (0.18, 0.20)), ("Fe", "entrance", (0.68, 0.22)), ("Pt", "inside", (0.42, 0.50)),
     ("Fe", "inside", (0.20, 0.78)), ("Pt", "exit", (0.75, 0.72)), ("Fe", "exit", (0.88, 0.45))],
    [("Ru", "entrance", (0.22, 0.25)), ("Pt", "entrance", (0.72, 0.20)), ("Fe", "entrance", (0.50, 0.55)),
     ("Ru", "inside", (0.20, 0.75)), ("Fe", "exit", (0.75, 0.78)), ("Pt", "inside", (0.90, 0.48))],
]
#: Thermal vibration (Å) of each element for the frozen phonons.
SIGMAS = {"C": 0.07, "Fe": 0.06, "Ru": 0.05, "Pt": 0.05}
#: Mixtures on stemflow's simulator.
SIM_MIXES = [("Fe", "Pt"), ("Ru", "Pt"), ("Cu", "Au"), ("Fe", "Ru", "Pt")]
SIM_RENDERINGS = [(0.015, 1e5), (0.015, 1e4), (0.03, 1e5), (0.03, 1e4), (0.04, 1e5), (0.04, 1e4)]
MATCH_NM = 0.1


def generate(force: bool = False) -> None:
    """Simulate the multislice frames into ``CACHE`` (needs abTEM)."""
    import abtem
    from abtem_supports import PHYSICS, build_frame, simulate_scan

    abtem.config.set({"device": "cpu", "progress_bar": False})
    CACHE.mkdir(parents=True, exist_ok=True)
    for i, heavy in enumerate(HEAVY):
        path = CACHE / f"frame_{i:02d}.npz"
        if path.exists() and not force:
            continue
        t0 = time.perf_counter()
        atoms, truth = build_frame(SUPPORT, i, seed=29, heavy_atoms=heavy)
        sig = {el: v for el, v in SIGMAS.items() if el in set(atoms.get_chemical_symbols())}
        arr, pot = simulate_scan(atoms, sig, seed=3000 + i)
        L = atoms.cell.lengths()[:2]
        counts = {el: int(n) for el, n in zip(*np.unique(atoms.get_chemical_symbols(), return_counts=True))}
        meta = dict(support=SUPPORT, frame=i, seconds=time.perf_counter() - t0, abtem=abtem.__version__,
                    atoms=counts, slices=int(pot.num_slices), physics=PHYSICS and {k: v for k, v in PHYSICS.items()
                                                                                   if k != "phonon_sigma_A"},
                    phonon_sigma_A=sig)
        np.savez_compressed(path, scan=arr.astype(np.float32), cell_yx_A=np.array([L[1], L[0]]),
                            truth_cell_yx_A=np.column_stack([truth["y"], truth["x"]]),
                            truth_cell_label=np.array(["dopant"] * len(truth["x"])),
                            element=truth["element"].astype(str), kind=truth["kind"].astype(str),
                            depth_A=truth["depth_A"], meta=json.dumps(meta))
        print(f"frame {i}: {len(atoms)} atoms {counts}, {meta['seconds']:.0f} s", flush=True)


def _tally(found, truth_yx, truth_el, md):
    """Matches of a found table to the truth within ``md`` px: per true element (found, named
    right), and the rows on no true atom."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    out = {el: [0, 0, 0] for el in sorted(set(truth_el))}           # true, found, named right
    for el in truth_el:
        out[el][0] += 1
    if not len(found):
        return out, 0
    d = cdist(found[["y", "x"]].to_numpy(), truth_yx)
    r, c = linear_sum_assignment(d)
    ok = d[r, c] <= md
    named = found["element"].astype(str).to_numpy() if "element" in found.columns else None
    for i, j in zip(r[ok], c[ok]):
        out[truth_el[j]][1] += 1
        if named is not None and named[i] == truth_el[j]:
            out[truth_el[j]][2] += 1
    return out, int(len(found) - ok.sum())


def _add(acc, tally, false):
    for el, (n, f, right) in tally.items():
        a = acc.setdefault(el, [0, 0, 0])
        a[0] += n
        a[1] += f
        a[2] += right
    acc["_false"] = acc.get("_false", 0) + false


def score_simulated() -> dict:
    import stemflow
    from stemflow.simulate import simulate_image

    res = {}
    for mix in SIM_MIXES:
        for ps, dose in SIM_RENDERINGS:
            key = f"{'+'.join(mix)}; {ps * 1e3:g} pm/px, {dose:.0e}"
            named, plain = {}, {}
            for seed in (0, 1):
                sim = simulate_image("amorphous", 512, pixel_size=ps, seed=seed, dose=dose,
                                     defects={f"{el}1": 15 for el in mix})
                yx, el = sim.atoms[["y", "x"]].to_numpy(), sim.atoms["element"].astype(str).to_numpy()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    a = stemflow.find_atoms(sim.image, pixel_size=ps, lattice="amorphous", elements=mix)
                    b = stemflow.find_atoms(sim.image, pixel_size=ps, lattice="amorphous")
                _add(named, *_tally(a, yx, el, MATCH_NM / ps))
                _add(plain, *_tally(b, yx, el, MATCH_NM / ps))
            res[key] = dict(named=named, plain=plain)
            print(key, named, plain, flush=True)
    return res


def score_multislice() -> dict | None:
    files = sorted(CACHE.glob("frame_[0-9][0-9].npz"))
    if not files:
        return None
    import stemflow
    from abtem_set import _central_subset
    from abtem_supports import RENDERINGS, SCORED, TILES
    from abtem_sweep import render

    res = {}
    for f in files:
        z = np.load(f, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        element = np.asarray(z["element"]).astype(str)
        mix = tuple(sorted(set(element), key=lambda e: stemflow.tables.ATOMIC_NUMBER[e]))
        for pixel_nm, source_A, dose in RENDERINGS:
            key = f"frame {meta['frame']} ({'+'.join(mix)}); {pixel_nm * 1e3:g} pm/px, source {source_A:g} Å, {dose:.0e}"
            rng = np.random.default_rng([meta["frame"], int(pixel_nm * 1e4), int(dose), 31])
            image, truth = render(z, pixel_nm, source_A, dose, rng, tiles=TILES, scored=SCORED)
            md = MATCH_NM / pixel_nm
            # which true atom each scored truth row is: nearest cell position, wrapped
            cell = np.asarray(z["cell_yx_A"], float)
            tyx = np.asarray(z["truth_cell_yx_A"], float)
            px_a = pixel_nm * 10
            entry = {}
            for name, kw in (("named", dict(elements=mix)), ("plain", {})):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pred = stemflow.find_atoms(image, pixel_size=pixel_nm, lattice="amorphous", **kw)
                p_c, t_c = _central_subset(pred.reset_index(drop=True), truth, md)
                t_yx = t_c[["y", "x"]].to_numpy()
                frac = (t_yx * px_a) % cell
                d = np.hypot(*(((frac[:, None, :] - tyx[None]) + cell / 2) % cell - cell / 2).transpose(2, 0, 1))
                t_el = element[np.argmin(d, axis=1)]
                acc = {}
                _add(acc, *_tally(p_c, t_yx, t_el, md))
                entry[name] = acc
            res[key] = entry
            print(key, entry, flush=True)
    return res


def noise_free_excess() -> list | None:
    """Each multislice atom's integrated excess, noise-free at 15 pm/px (source 0.5 Å, the cell
    tiled 3 × 3), over the median of its frame's Pt, beside the Z**1.7 ratio."""
    files = sorted(CACHE.glob("frame_[0-9][0-9].npz"))
    if not files:
        return None
    from abtem_set import _fourier_resample
    from stemflow.chem.heavy import integrated_excess
    from stemflow.tables import ATOMIC_NUMBER

    rows = []
    for f in files:
        z = np.load(f, allow_pickle=False)
        cell = np.asarray(z["cell_yx_A"], float)
        n = (int(round(cell[0] / 0.15)), int(round(cell[1] / 0.15)))
        img = np.tile(_fourier_resample(np.asarray(z["scan"], np.float64), tuple(cell), cell[0] / n[0], n,
                                        0.5 / 2.3548), (3, 3))
        yx = np.asarray(z["truth_cell_yx_A"]) / (cell[0] / n[0]) + np.array(n)
        ex = integrated_excess(img, yx[:, 0], yx[:, 1], 0.1 * cell[0] / n[0])
        el = np.asarray(z["element"]).astype(str)
        pt = float(np.median(ex[el == "Pt"]))
        for e, k, d, v in zip(el, np.asarray(z["kind"]).astype(str), np.asarray(z["depth_A"]), ex):
            rows.append(dict(frame=f.stem, element=e, kind=k, depth_A=float(d), ratio=float(v / pt),
                             z_ratio=float((ATOMIC_NUMBER[e] / 78) ** 1.7)))
    return rows


def score_real() -> dict | None:
    from stemflow.labelled import dev_data_dir, read_heavy_atoms

    where = dev_data_dir()
    if where is None or not (where / "pt_single_atoms_dev.npz").exists():
        return None
    import stemflow

    out = {"frames": 0, "Pt": 0, "named_Pt": 0, "found": 0, "tp_named": 0, "tp_plain": 0, "found_plain": 0}
    for fr in read_heavy_atoms(where / "pt_single_atoms_dev"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = stemflow.find_atoms(fr.image, pixel_size=fr.pixel_size, lattice="amorphous", elements=("Fe", "Pt"))
            b = stemflow.find_atoms(fr.image, pixel_size=fr.pixel_size, lattice="amorphous")
        yx = fr.truth[["y", "x"]].to_numpy()
        t_a, _ = _tally(a, yx, np.array(["Pt"] * len(yx)), 5.0)
        t_b, _ = _tally(b, yx, np.array(["Pt"] * len(yx)), 5.0)
        out["frames"] += 1
        out["Pt"] += len(yx)
        out["found"] += len(a)
        out["found_plain"] += len(b)
        out["named_Pt"] += int((a["element"].astype(str) == "Pt").sum())
        out["tp_named"] += t_a["Pt"][1]
        out["tp_plain"] += t_b["Pt"][1]
    return out


def _f1(acc) -> tuple[float, float, float]:
    n = sum(v[0] for k, v in acc.items() if k != "_false")
    tp = sum(v[1] for k, v in acc.items() if k != "_false")
    fp = acc.get("_false", 0)
    p, r = tp / max(tp + fp, 1), tp / max(n, 1)
    return p, r, 2 * p * r / max(p + r, 1e-12)


def _per_element(acc, right: bool) -> str:
    els = sorted(k for k in acc if k != "_false")
    if right:
        return ", ".join(f"{el} {acc[el][2]}/{acc[el][1]}" for el in els)
    return ", ".join(f"{el} {acc[el][1]}/{acc[el][0]}" for el in els)


def write_md(res: dict) -> None:
    lines = ["# Heavy single atoms of several elements, named by Z-contrast", "",
             f"Written by `python benchmarks/heavy_elements.py` ({res['seconds']:.0f} s of scoring on the 2-core CPU "
             "machine). `stemflow.find_atoms(..., lattice=\"amorphous\", elements=(...))` against the same call "
             "without `elements` (which drops a lower population of maxima as support clusters). *found*: true "
             "atoms found per element (matched one to one within 0.1 nm); *named right*: of those found, the ones "
             "given their true element; *other rows*: found rows on no true atom.", ""]
    for title, block in (("stemflow's simulator (two 512² frames per row, 15 atoms of each element per frame)",
                          res["simulated"]), ("Multislice (abTEM), 3 nm of rough amorphous carbon", res["multislice"])):
        lines += [f"## {title}", ""]
        if block is None:
            lines += ["Not run: no multislice frames in `benchmarks/_cache/heavy_elements` (make them with "
                      "`python benchmarks/heavy_elements.py --generate` where abTEM is installed).", ""]
            continue
        lines += ["| elements, rendering | found, with `elements` | named right | other rows | F1 | "
                  "found, without `elements` | other rows | F1 |", "|---|---|---|---|---|---|---|---|"]
        tot_named, tot_right, tot = {}, 0, 0
        for key, e in block.items():
            nm, pl = e["named"], e["plain"]
            lines.append(f"| {key} | {_per_element(nm, False)} | {_per_element(nm, True)} | {nm.get('_false', 0)} | "
                         f"{_f1(nm)[2]:.3f} | {_per_element(pl, False)} | {pl.get('_false', 0)} | {_f1(pl)[2]:.3f} |")
            for el, v in nm.items():
                if el != "_false":
                    tot_right += v[2]
                    tot += v[1]
                    a = tot_named.setdefault(el, [0, 0])
                    a[0] += v[2]
                    a[1] += v[1]
        lines += ["", f"Over every row: {tot_right} of {tot} atoms found named right "
                      f"({tot_right / max(tot, 1):.3f}); per element: "
                  + ", ".join(f"{el} {a}/{b}" for el, (a, b) in sorted(tot_named.items())) + ".", ""]
    if res.get("noise_free"):
        lines += ["What each multislice atom adds, noise-free (15 pm/px, source 0.5 Å), over its frame's Pt, beside "
                  "(Z/78)^1.7 (the exponent `name_heavy_atoms` assumes):", "",
                  "| frame | element | height | depth (Å) | counts over Pt | (Z/78)^1.7 |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['frame']} | {r['element']} | {r['kind']} | {r['depth_A']:.0f} | {r['ratio']:.3f} | "
                  f"{r['z_ratio']:.3f} |" for r in res["noise_free"]]
        lines.append("")
    lines += ["## Real Pt single atoms on carbon nitride (labelled dev frames)", ""]
    r = res["real"]
    if r is None:
        lines.append("Not run: the labelled dev frames (`../shared/data`) are not here.")
    else:
        lines.append(f"With `elements=(\"Fe\", \"Pt\")` on the {r['frames']} frames ({r['Pt']} labelled Pt): "
                     f"{r['named_Pt']} of the {r['found']} heavy atoms found are named Pt "
                     f"({r['named_Pt'] / max(r['found'], 1):.3f}); {r['tp_named']} labelled Pt found, against "
                     f"{r['tp_plain']} of {r['found_plain']} rows without `elements` (with two candidates the lower "
                     "population is kept).")
    (RESULTS / "heavy_elements.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    from _cli import options

    args = options(__doc__, argv, flags={"--generate": "simulate the multislice frames (needs abTEM)",
                                         "--force": "with --generate: simulate cached frames again"})
    if args.generate:
        generate(force=args.force)
        return 0
    t0 = time.perf_counter()
    res = dict(simulated=score_simulated(), multislice=score_multislice(), noise_free=noise_free_excess(),
               real=score_real())
    res["seconds"] = time.perf_counter() - t0
    from _cli import save

    return save(RESULTS, "heavy_elements", res, write_md)


if __name__ == "__main__":
    raise SystemExit(main())

"""Heavy single atoms on thick, rough and mixed supports, simulated by multislice: does stemflow's
``lattice="amorphous"`` finder hold where the support is much more than a thin carbon film?

    python benchmarks/abtem_supports.py --generate   # with abTEM (the ``sim`` extra); 42 min on 2 CPU cores
    python benchmarks/abtem_supports.py              # scores; writes benchmarks/results/abtem_supports.md

``abtem_set.py`` puts Pt on 1 nm of flat amorphous carbon, where every Pt stands far above the
support. Real catalysts sit on supports several nanometres thick whose thickness and density vary
(carbon nitride, amorphous carbon, thin oxides), with atoms on the entrance surface, on the exit surface
(far from the probe's focus) and inside. This script builds such supports and simulates them with
the same physics as the set (80 kV, aberration-free 30 mrad probe focused at z = 0, where abTEM's
beam enters, 2.8 Å above the highest point of the film's entrance surface; HAADF 80–200 mrad,
Lobato potentials, PRISM with interpolation 1, exact for the periodic cell):

- the support: random sequential addition of atoms with a minimum distance between an entrance and
  an exit surface that are each rough (periodic random heights over modes of 1/1, 1/2 and 1/3 of
  the cell, the RMS below), accepted in proportion to the local thickness and to an in-plane
  density modulation (±30 %, the same modes): a column holds more atoms where the film is thicker
  or denser;
- on it, heavy atoms of several elements (Pt, Au, Ir, W) at three heights: 1.8 Å outside the local
  entrance surface, 1.8 Å outside the local exit surface (defocused by the film's thickness) and in
  the middle of the film; support atoms closer than 2 Å to a heavy atom are removed; frame 1 of
  every support holds a pair 3 Å apart. Each atom's depth below the focal plane is in the cache
  and its range per height in the results (the rough entrance surface puts even the entrance-side
  atoms up to a few nm out of focus on the thickest film).

One frozen-phonon configuration per frame (the support is random anyway; σ as the set). The cache
(``benchmarks/_cache/abtem_supports``) holds, per frame, the noise-free detected fraction over the
cell and the truth (element, height kind, position, depth below the focal plane z = 0 in Å); scoring renders it as ``abtem_sweep.render``
does at several pixel sizes and doses and runs ``stemflow.find_atoms(..., lattice="amorphous")``
with its defaults and the bundled network.
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
from abtem_set import RESULTS, ROOT  # noqa: E402

CACHE = ROOT / "benchmarks" / "_cache" / "abtem_supports"

#: Physics shared by every frame (as ``abtem_set.SETTINGS`` for the amorphous set).
PHYSICS = dict(energy=80e3, sampling=0.065, slice=2.0, cell=(22.0, 22.0), semiangle_mrad=30.0,
               detector_mrad=(80.0, 200.0), parametrization="lobato",
               phonon_sigma_A={"C": 0.07, "N": 0.07, "O": 0.07, "Si": 0.08, "Pt": 0.05, "Au": 0.05, "Ir": 0.05,
                               "W": 0.05})

#: Supports: composition (element → share), number density (atoms/Å³), mean thickness (Å),
#: minimum distance (Å), RMS roughness of each surface (Å), in-plane density modulation (±).
SUPPORTS = {
    "a-C 3 nm, rough": dict(composition={"C": 1.0}, density=0.10, thickness=30.0, min_dist=1.3, rough=3.0,
                            modulation=0.3),
    "a-C 6 nm, rough": dict(composition={"C": 1.0}, density=0.10, thickness=60.0, min_dist=1.3, rough=5.0,
                            modulation=0.3),
    "C3N4 3 nm, rough": dict(composition={"C": 3 / 7, "N": 4 / 7}, density=0.107, thickness=30.0, min_dist=1.25,
                             rough=3.0, modulation=0.3),
    "a-SiO2 2 nm, rough": dict(composition={"Si": 1 / 3, "O": 2 / 3}, density=0.066, thickness=20.0, min_dist=1.5,
                               rough=2.0, modulation=0.3),
}

#: Heavy atoms of each frame: (element, height kind, fractional (x, y) in the cell).
FRAMES = [
    [("Pt", "entrance", (0.18, 0.20)), ("Au", "exit", (0.68, 0.22)), ("Ir", "inside", (0.42, 0.50)),
     ("W", "entrance", (0.20, 0.78)), ("Pt", "exit", (0.75, 0.72)), ("Pt", "inside", (0.88, 0.45))],
    [("Pt", "entrance", (0.22, 0.25)), ("Pt", "entrance", (0.22 + 3.0 / 22.0, 0.25)), ("W", "exit", (0.72, 0.20)),
     ("Au", "entrance", (0.50, 0.55)), ("Ir", "exit", (0.20, 0.75)), ("Pt", "inside", (0.75, 0.78))],
]


def _periodic_field(rng, L, waves=(1, 2, 3)):
    """A smooth periodic random field of zero mean and unit RMS over the cell: the sum of Fourier
    modes with integer wave numbers up to ``max(waves)`` (length scales L / k)."""
    ks = [(kx, ky) for kx in range(-max(waves), max(waves) + 1) for ky in range(0, max(waves) + 1)
          if (kx, ky) != (0, 0) and (ky > 0 or kx > 0) and max(abs(kx), ky) in waves]
    amp = rng.normal(size=len(ks)) / np.array([np.hypot(*k) for k in ks])
    phase = rng.uniform(0, 2 * np.pi, len(ks))
    norm = np.sqrt(0.5 * np.sum(amp ** 2))

    def f(x, y):
        x = np.asarray(x, float)[..., None]
        y = np.asarray(y, float)[..., None]
        arg = 2 * np.pi * (np.array([k[0] for k in ks]) * x / L[0] + np.array([k[1] for k in ks]) * y / L[1])
        return (amp * np.cos(arg + phase)).sum(-1) / norm
    return f


def build_frame(support: str, frame: int, seed: int, heavy_atoms=None):
    """ase Atoms of one support with its heavy atoms, and the truth: (x Å, y Å, element, height kind).
    ``heavy_atoms``: (element, height kind, fractional (x, y)) of each; default ``FRAMES[frame]``."""
    from ase import Atoms

    cfg = SUPPORTS[support]
    rng = np.random.default_rng([seed, frame, sum(map(ord, support))])
    lx, ly = PHYSICS["cell"]
    t, r = cfg["thickness"], cfg["rough"]
    top, bottom, dens = (_periodic_field(rng, (lx, ly)) for _ in range(3))
    gx, gy = np.meshgrid(np.linspace(0, lx, 64, endpoint=False), np.linspace(0, ly, 64, endpoint=False))
    # the film's mid-plane: the highest point of the entrance surface (lowest z) 2.8 Å below the
    # focal plane z = 0, so that an atom 1.8 Å outside it is still inside the cell
    z0 = t / 2 - r * float(bottom(gx, gy).min()) + 2.8
    tau_max = float((t + r * (top(gx, gy) - bottom(gx, gy))).max()) * 1.05
    n = int(round(cfg["density"] * lx * ly * t))
    elements = rng.choice(list(cfg["composition"]), size=n, p=list(cfg["composition"].values()))
    pts: list[np.ndarray] = []
    tree_pts = np.empty((0, 3))
    d2 = cfg["min_dist"] ** 2
    while len(pts) < n:                                  # random sequential addition, periodic in x, y
        q = rng.random(3) * [lx, ly, 1.0]
        zt = z0 + t / 2 + r * top(q[0], q[1])
        zb = z0 - t / 2 + r * bottom(q[0], q[1])
        # accepted in proportion to the local thickness (more atoms in a column where the film is
        # thicker) and to the in-plane density modulation
        weight = (zt - zb) * (1 + cfg["modulation"] * np.clip(dens(q[0], q[1]), -1, 1))
        if rng.random() * tau_max * (1 + cfg["modulation"]) > weight:
            continue
        q[2] = zb + q[2] * (zt - zb)
        if len(tree_pts):
            d = tree_pts - q
            d[:, 0] -= np.round(d[:, 0] / lx) * lx
            d[:, 1] -= np.round(d[:, 1] / ly) * ly
            if (np.einsum("ij,ij->i", d, d) < d2).any():
                continue
        pts.append(q)
        tree_pts = np.vstack([tree_pts, q])
    pts = np.asarray(pts)
    heavy = []
    for el, kind, (fx, fy) in (FRAMES[frame] if heavy_atoms is None else heavy_atoms):
        x, y = fx * lx, fy * ly
        zt = z0 + t / 2 + r * float(top(x, y))
        zb = z0 - t / 2 + r * float(bottom(x, y))
        z = {"entrance": zb - 1.8, "exit": zt + 1.8, "inside": 0.5 * (zt + zb)}[kind]
        heavy.append((x, y, z, el, kind))
    hxyz = np.array([h[:3] for h in heavy])
    d = pts[:, None, :] - hxyz[None]
    d[..., 0] -= np.round(d[..., 0] / lx) * lx
    d[..., 1] -= np.round(d[..., 1] / ly) * ly
    keep = (np.einsum("ijk,ijk->ij", d, d) >= 2.0 ** 2).all(1)
    pts, elements = pts[keep], elements[keep]
    zmax = max(pts[:, 2].max(), hxyz[:, 2].max()) + 4.0
    atoms = Atoms(list(elements) + [h[3] for h in heavy], positions=np.vstack([pts, hxyz]),
                  cell=[lx, ly, zmax], pbc=[True, True, False])
    truth = dict(x=hxyz[:, 0], y=hxyz[:, 1], element=np.array([h[3] for h in heavy]),
                 kind=np.array([h[4] for h in heavy]), depth_A=hxyz[:, 2])
    return atoms, truth


def simulate_scan(atoms, sigmas: dict, seed: int):
    """The noise-free HAADF detected fraction over the cell of ``atoms`` (y, x; at the probe's
    Nyquist sampling) with :data:`PHYSICS`, one frozen-phonon configuration of ``sigmas`` (Å per
    element), and the potential."""
    import abtem

    p = PHYSICS
    fp = abtem.FrozenPhonons(atoms, num_configs=1, sigmas=sigmas, seed=seed)
    pot = abtem.Potential(fp, sampling=p["sampling"], slice_thickness=p["slice"],
                          parametrization=p["parametrization"], projection="infinite")
    smat = abtem.SMatrix(potential=pot, energy=p["energy"], semiangle_cutoff=p["semiangle_mrad"], interpolation=1)
    if min(smat.cutoff_angles) < p["detector_mrad"][1]:
        raise RuntimeError(f"potential sampling reaches only {min(smat.cutoff_angles):.0f} mrad")
    built = smat.build(lazy=False)
    probe = abtem.Probe(energy=p["energy"], semiangle_cutoff=p["semiangle_mrad"])
    probe.grid.match(pot)
    scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, potential=pot,
                          sampling=probe.aperture.nyquist_sampling)
    ctf = abtem.CTF(semiangle_cutoff=p["semiangle_mrad"], energy=p["energy"])
    meas = built.reduce(scan=scan, detectors=[abtem.AnnularDetector(*p["detector_mrad"])], ctf=ctf)
    meas = meas[0] if isinstance(meas, list) else meas
    arr = np.asarray(meas.compute().array, np.float64)
    return arr.reshape(-1, *arr.shape[-2:]).mean(0).T, pot                  # abTEM: axis 0 = x


def generate(supports=None, force: bool = False) -> None:
    """Simulate every frame of ``supports`` (default all) into ``CACHE``."""
    import abtem

    abtem.config.set({"device": "cpu", "progress_bar": False})
    CACHE.mkdir(parents=True, exist_ok=True)
    p = PHYSICS
    for s_idx, support in enumerate(supports or SUPPORTS):
        for i in range(len(FRAMES)):
            path = CACHE / f"support{list(SUPPORTS).index(support)}_{i:02d}.npz"
            if path.exists() and not force:
                continue
            t0 = time.perf_counter()
            atoms, truth = build_frame(support, i, seed=17)
            sig = {el: v for el, v in p["phonon_sigma_A"].items() if el in set(atoms.get_chemical_symbols())}
            arr, pot = simulate_scan(atoms, sig, seed=2000 + 10 * s_idx + i)
            L = atoms.cell.lengths()[:2]
            counts = {el: int(n) for el, n in zip(*np.unique(atoms.get_chemical_symbols(), return_counts=True))}
            meta = dict(support=support, frame=i, seconds=time.perf_counter() - t0, abtem=abtem.__version__,
                        atoms=counts, thickness_A=float(atoms.cell.lengths()[2]), slices=int(pot.num_slices),
                        mean_fraction=float(arr.mean()), max_fraction=float(arr.max()),
                        physics={k: v for k, v in p.items() if k != "phonon_sigma_A"}, phonon_sigma_A=sig,
                        support_cfg=SUPPORTS[support])
            np.savez_compressed(path, scan=arr.astype(np.float32), cell_yx_A=np.array([L[1], L[0]]),
                                truth_cell_yx_A=np.column_stack([truth["y"], truth["x"]]),
                                truth_cell_label=np.array(["dopant"] * len(truth["x"])),
                                element=truth["element"].astype(str), kind=truth["kind"].astype(str),
                                depth_A=truth["depth_A"], meta=json.dumps(meta))
            print(f"{support} frame {i}: {len(atoms)} atoms {counts}, {pot.num_slices} slices, "
                  f"mean fraction {arr.mean():.2e}, max {arr.max():.2e}, {meta['seconds']:.0f} s", flush=True)


# ------------------------------------------------------------------------------------- scoring
#: Renderings scored: pixel size (nm/px), effective source (Å FWHM), dose (e⁻/Å²).
RENDERINGS = [(0.015, 0.5, 1e5), (0.015, 0.5, 3e4), (0.0293, 0.5, 1e5), (0.0293, 0.8, 3e4), (0.04, 0.8, 1e5),
              (0.04, 0.8, 3e4)]
TILES, SCORED = 5, 3        # each cell tiled 5 × 5; the middle 3 × 3 scored (independent noise on each)
MATCH_NM = 0.1              # a found heavy atom within 0.1 nm of a true one is right


def _files():
    files = sorted(CACHE.glob("support*_[0-9][0-9].npz"))
    if not files:
        raise SystemExit(f"no frames in {CACHE}: run `python benchmarks/abtem_supports.py --generate` first "
                         "(in an environment with abTEM)")
    return files


def excess_over_support(img: np.ndarray, yx: np.ndarray, pixel_nm: float, dark: float = 0.0) -> np.ndarray:
    """How bright each heavy atom at ``yx`` (px) is against its support: the frame smoothed over the
    probe (σ 0.05 nm) at the atom, less the median of the ring 0.18–0.35 nm around it, over that
    median less the detector's ``dark`` level (its value with no electrons)."""
    from scipy import ndimage

    img = np.asarray(img, np.float64)
    smooth = ndimage.gaussian_filter(img, 0.05 / pixel_nm)
    r = int(np.ceil(0.35 / pixel_nm))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    rr = np.hypot(yy, xx) * pixel_nm
    ring = ndimage.median_filter(img, footprint=(rr >= 0.18) & (rr <= 0.35), mode="wrap")
    yi, xi = np.rint(np.asarray(yx)).astype(int).T
    yi, xi = np.clip(yi, 0, img.shape[0] - 1), np.clip(xi, 0, img.shape[1] - 1)
    return (smooth[yi, xi] - ring[yi, xi]) / np.maximum(ring[yi, xi] - dark, 1e-12)


def contrast() -> dict:
    """Median :func:`excess_over_support` per support (noise-free, 29.3 pm/px, source 0.8 Å, one
    cell wrapped) and, when the labelled real Pt frames are here, on them (dark: the offset of
    their noise-level function)."""
    from abtem_set import _fourier_resample

    out: dict = {}
    for f in _files():
        z = np.load(f, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        cell = np.asarray(z["cell_yx_A"], float)
        p_a = 0.293
        n = (int(round(cell[0] / p_a)), int(round(cell[1] / p_a)))
        img = _fourier_resample(np.asarray(z["scan"], np.float64), tuple(cell), cell[0] / n[0], n, 0.8 / 2.3548)
        yx = np.asarray(z["truth_cell_yx_A"]) / (cell[0] / n[0])
        out.setdefault(meta["support"], []).extend(excess_over_support(img, yx, 0.1 * cell[0] / n[0]).tolist())
    res = {k: float(np.median(v)) for k, v in out.items()}
    from sim_vs_real import noise_level
    from stemflow.labelled import dev_data_dir, read_heavy_atoms

    where = dev_data_dir()
    if where is not None and (where / "pt_single_atoms_dev.npz").exists():
        real = []
        for fr in read_heavy_atoms(where / "pt_single_atoms_dev"):
            img = np.asarray(fr.image, np.float64)
            real += excess_over_support(img, fr.truth[["y", "x"]].to_numpy(), fr.pixel_size,
                                        noise_level(img)["offset"]).tolist()
        res["real Pt frames (labelled atoms)"] = float(np.median(real))
    return res


def score(draws: int = 1) -> dict:
    """Per support and rendering: precision, recall, F1 of the heavy atoms, the other rows found
    (support reported as atoms), and recall per height kind and element."""

    import stemflow
    from abtem_set import _central_subset
    from abtem_sweep import render
    from stemflow.chem.heavy import _population_split, find_heavy_atoms
    from stemflow.metrics import match

    res: dict = {}
    for f in _files():
        z = np.load(f, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        kind, element, depth = (np.asarray(z[k]) for k in ("kind", "element", "depth_A"))
        for pixel_nm, source_A, dose in RENDERINGS:
            key = f"{pixel_nm * 1e3:g} pm/px, source {source_A:g} Å, {dose:.0e}"
            e = res.setdefault(meta["support"], {}).setdefault(key, dict(tp=0, fp=0, fn=0, support=0, warned=0,
                                                                          by_kind={}, by_element={}, sig_true=[],
                                                                          sig_false=[]))
            for d in range(draws):
                rng = np.random.default_rng([d, meta["frame"], int(pixel_nm * 1e4), int(dose), 23])
                image, truth = render(z, pixel_nm, source_A, dose, rng, tiles=TILES, scored=SCORED)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    pred = stemflow.find_atoms(image, pixel_size=pixel_nm, lattice="amorphous")
                md = MATCH_NM / pixel_nm
                # the Z-contrast split on significance alone (stemflow's rule before the integrated
                # excess kept out-of-focus heavy atoms), for comparison
                every = find_heavy_atoms(image, pixel_nm, populations=False)
                split = _population_split(every["significance"].to_numpy()) if len(every) > 3 else 0.0
                sig_only = every[every["significance"] >= split]
                p_o, t_o = _central_subset(sig_only[["y", "x"]].reset_index(drop=True), truth, md)
                n_o = len(match(p_o, t_o, md)) if len(p_o) else 0
                old = e.setdefault("significance_split_only", [0, 0, 0])
                old[0] += n_o; old[1] += len(p_o) - n_o; old[2] += len(t_o) - n_o
                heavy = pred[pred["label"].astype(str) == "dopant"].reset_index(drop=True)
                p_c, t_c = _central_subset(heavy[["y", "x", "significance"]], truth, md)
                pairs = match(p_c, t_c, md)
                hit = np.zeros(len(t_c), bool)
                hit[pairs["truth"].to_numpy()] = True
                right = np.zeros(len(p_c), bool)
                right[pairs["pred"].to_numpy()] = True
                e["tp"] += int(hit.sum()); e["fn"] += int((~hit).sum()); e["fp"] += int((~right).sum())
                e["sig_true"] += p_c["significance"][right].round(2).tolist()
                e["sig_false"] += p_c["significance"][~right].round(2).tolist()
                ci = t_c["cell_index"].to_numpy()
                for table, names in ((e["by_kind"], kind[ci]), (e["by_element"], element[ci])):
                    for name, h in zip(names, hit):
                        table.setdefault(str(name), [0, 0])
                        table[str(name)][0] += int(h)
                        table[str(name)][1] += 1
                # rows not labelled as heavy atoms (the support reported as atoms), per scored area
                others = pred[pred["label"].astype(str) != "dopant"]
                e["support"] += int(len(others))
                e["warned"] += int(len(caught) > 0)
                e.setdefault("frames", 0)
                e["frames"] += 1
                e["depth_missed"] = e.get("depth_missed", []) + depth[ci][~hit].round(1).tolist()
    for per in res.values():
        for e in per.values():
            tp, fp, fn = e["tp"], e["fp"], e["fn"]
            e["precision"] = tp / max(tp + fp, 1)
            e["recall"] = tp / max(tp + fn, 1)
            e["f1"] = 2 * tp / max(2 * tp + fp + fn, 1)
            tp, fp, fn = e["significance_split_only"]
            e["f1_significance_split_only"] = 2 * tp / max(2 * tp + fp + fn, 1)
    return res


def _recall(table: dict) -> str:
    return ", ".join(f"{k} {h}/{n}" for k, (h, n) in sorted(table.items()))


def write_md(res: dict, meta: dict) -> None:
    """``abtem_supports.md``: one row per support and rendering, then what the supports are."""
    lines = ["# Heavy single atoms on thick, rough and mixed supports (multislice)", "",
             f"Written by `python benchmarks/abtem_supports.py` ({meta['seconds']:.0f} s of scoring on the 2-core CPU "
             f"machine; {meta['draws']} noise draw(s) per frame and rendering). Each support below, "
             f"{len(FRAMES)} frames of one 22 × 22 Å cell, simulated by abTEM (PRISM, interpolation 1) at "
             f"{PHYSICS['energy'] / 1e3:g} kV, an aberration-free {PHYSICS['semiangle_mrad']:g} mrad probe focused at "
             "z = 0, 2.8 Å above the highest point of the film's rough entrance surface (the depths of the heavy atoms "
             f"below it are in the last table), HAADF {PHYSICS['detector_mrad'][0]:g}–{PHYSICS['detector_mrad'][1]:g} mrad, one "
             "frozen-phonon configuration; every cell holds six heavy atoms (Pt, Au, Ir, W) on the entrance surface, "
             "on the exit surface (defocused by the whole film) and inside the film, frame 1 a pair 3 Å apart. Each "
             f"rendering tiles the cell {TILES} × {TILES} with independent Poisson noise and scores the middle "
             f"{SCORED} × {SCORED} tiles (the tiles repeat one cell: a support feature read as a heavy atom counts "
             "once per tile in which it is found): `stemflow.find_atoms(image, pixel_size, lattice=\"amorphous\")` with "
             f"its defaults; a heavy atom found within {MATCH_NM:g} nm of a true one is right, every other heavy "
             "atom found in the scored area (the box around the scored tiles' true atoms) is false. *Support rows*: rows found that are not heavy atoms (the support reported as "
             "atoms; the whole frame). Last column: the same heavy atoms with the Z-contrast population split "
             "made on peak significance alone, as stemflow did before it kept a lower maximum that adds a heavy "
             "atom's counts (`stemflow.chem.heavy.find_heavy_atoms`, *populations*): a heavy atom on the exit side "
             "of a thick film is out of focus, spread and less significant. Figure: `docs/images/abtem_supports.png`.",
             "",
             "| support | rendering | precision | recall | F1 | support rows | recall by height | warned | "
             "F1, Z-contrast split on significance alone |",
             "|---|---|---|---|---|---|---|---|---|"]
    pooled: dict = {}
    for support, per in res.items():
        for key, e in per.items():
            lines.append(f"| {support} | {key} | {e['precision']:.3f} | {e['recall']:.3f} | {e['f1']:.3f} | "
                         f"{e['support']} | {_recall(e['by_kind'])} | {e['warned']} of {e['frames']} | "
                         f"{e['f1_significance_split_only']:.3f} |")
            for name, (h, n) in e["by_element"].items():
                acc = pooled.setdefault(name, [0, 0])
                acc[0] += h
                acc[1] += n
    tp = sum(e["tp"] for per in res.values() for e in per.values())
    fp = sum(e["fp"] for per in res.values() for e in per.values())
    fn = sum(e["fn"] for per in res.values() for e in per.values())
    sig_t, sig_f = meta["significance_true"], meta["significance_false"]
    lines += ["", f"Over every support and rendering: TP {tp}, FP {fp}, FN {fn}; precision {tp / max(tp + fp, 1):.3f}, "
              f"recall {tp / max(tp + fn, 1):.3f}. Recall per element: {_recall(pooled)}. Significance of the "
              f"heavy atoms found (σ): right ones median {sig_t['median']:.1f}, false ones median "
              f"{sig_f['median']:.1f} ({sig_f['n']}).", "",
              "The supports (atoms per cell; thickness and roughness in Å; density in atoms/Å³, modulated in the "
              "plane by ±30 %), and the heavy atoms' depths below the focal plane (Å, least–most over both frames):",
              "", "| support | composition | density | mean thickness | RMS roughness per surface "
              "| minimum distance | depth: entrance side | inside | exit side | generation (s) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for support, cfg in SUPPORTS.items():
        secs = meta["generation_s"].get(support)
        dep = meta.get("depths", {}).get(support, {})
        cells = " | ".join(f"{dep[k][0]:.0f}–{dep[k][1]:.0f}" if k in dep else "–" for k in ("entrance", "inside", "exit"))
        lines.append(f"| {support} | {', '.join(f'{k} {v:.2f}' for k, v in cfg['composition'].items())} | "
                     f"{cfg['density']:g} | {cfg['thickness']:g} | {cfg['rough']:g} | {cfg['min_dist']:g} | "
                     f"{cells} | {'–' if secs is None else f'{secs:.0f}'} |")
    if meta.get("contrast"):
        lines += ["", "How bright a heavy atom is against its support (the frame smoothed over the probe at the atom, "
                  "less the median of the ring 0.18–0.35 nm around it, over that median; noise-free at 29.3 pm/px, "
                  "0.8 Å source; the real frames over their detector offset), median over the atoms: "
                  + "; ".join(f"{k} {v:.2f}" for k, v in meta["contrast"].items())
                  + ". A support that leaves a heavy atom a small excess over its level is one these frames do not "
                  "reach: their thickest film is 6 nm."]
    (RESULTS / "abtem_supports.md").write_text("\n".join(lines) + "\n")


def figure(out: Path | None = None) -> Path:
    """Frame 0 of every support: one cell noise-free at 15 pm/px with the truth by height, and a
    noisy rendering at 29.3 pm/px (3·10⁴ e⁻/Å²) with stemflow's heavy atoms.
    ``docs/images/abtem_supports.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import stemflow
    from abtem_set import IMAGES, _fourier_resample
    from abtem_sweep import render

    files = [f for f in _files() if f.stem.endswith("_00")]
    fig, axes = plt.subplots(2, len(files), figsize=(3.2 * len(files), 6.6), squeeze=False)
    colour = {"entrance": "tab:green", "inside": "tab:orange", "exit": "tab:red"}
    for k, f in enumerate(files):
        z = np.load(f, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        cell = tuple(np.asarray(z["cell_yx_A"], float))
        img = _fourier_resample(np.asarray(z["scan"], np.float64), cell, 0.15, (int(cell[0] / 0.15),
                                int(cell[1] / 0.15)), 0.5 / 2.3548)
        ax = axes[0, k]
        ax.imshow(img, cmap="gray", interpolation="nearest")
        tyx = np.asarray(z["truth_cell_yx_A"]) / 0.15
        for (y, x), kind in zip(tyx, np.asarray(z["kind"])):
            ax.plot(x, y, "o", mfc="none", mec=colour[str(kind)], ms=12, mew=1.2)
        ax.set_title(f"{meta['support']}\nnoise-free, 15 pm/px", fontsize=8)
        image, truth = render(z, 0.0293, 0.8, 3e4, np.random.default_rng(5), tiles=3, scored=1)
        pred = stemflow.find_atoms(image, pixel_size=0.0293, lattice="amorphous")
        ax = axes[1, k]
        ax.imshow(image, cmap="gray", interpolation="nearest")
        ax.plot(truth.x, truth.y, "o", mfc="none", mec="tab:cyan", ms=9, mew=1)
        ax.plot(pred.x, pred.y, "+", color="tab:red", ms=7)
        ax.set_title("3 × 3 cells, 29.3 pm/px, 3·10⁴ e⁻/Å²\n(cyan: truth, red +: stemflow)", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([]); ax.set_yticks([])
    fig.suptitle("Heavy atoms on thick supports (multislice). Top: height of each atom "
                 "(green entrance surface, orange inside, red exit surface)", fontsize=9)
    fig.tight_layout()
    out = out or IMAGES / "abtem_supports.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generate", action="store_true", help="simulate the frames (needs abTEM)")
    ap.add_argument("--force", action="store_true", help="with --generate: simulate cached frames again")
    ap.add_argument("--draws", type=int, default=1, help="noise draws per frame and rendering")
    args = ap.parse_args(argv)
    if args.generate:
        generate(force=args.force)
        return 0
    t0 = time.perf_counter()
    res = score(args.draws)
    for support, per in res.items():
        for key, e in per.items():
            print(f"{support:22s} {key:32s} P {e['precision']:.3f} R {e['recall']:.3f} F1 {e['f1']:.3f} "
                  f"support rows {e['support']} kinds {e['by_kind']} missed depths {e['depth_missed']}", flush=True)
    gen, depths = {}, {}
    for f in _files():
        z = np.load(f, allow_pickle=False)
        m = json.loads(str(z["meta"]))
        gen[m["support"]] = gen.get(m["support"], 0.0) + m["seconds"]
        for kind, depth in zip(np.asarray(z["kind"]).astype(str), np.asarray(z["depth_A"], float)):
            lo, hi = depths.setdefault(m["support"], {}).get(kind, [np.inf, -np.inf])
            depths[m["support"]][kind] = [min(lo, float(depth)), max(hi, float(depth))]
    meta = dict(seconds=time.perf_counter() - t0, draws=args.draws, generation_s=gen, depths=depths,
                contrast=contrast())
    for key in ("true", "false"):          # pooled, then dropped from each entry: the JSON stays small
        vals = [v for per in res.values() for e in per.values() for v in e.pop(f"sig_{key}")]
        meta[f"significance_{key}"] = dict(n=len(vals), median=float(np.median(vals)) if vals else float("nan"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "abtem_supports.json").write_text(json.dumps(dict(meta=meta, results=res), indent=1, default=float))
    write_md(res, meta)
    figure()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

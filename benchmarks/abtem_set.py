"""Independent physics cross-check: stemflow on multislice HAADF images simulated with abTEM.

stemflow's own simulator (:mod:`stemflow.simulate`) is an incoherent Z-contrast model; this set is
made instead by full multislice (abTEM, PRISM with interpolation 1, which is exactly multislice
for a periodic cell) with frozen phonons, so that the network is tested on images it has never
seen the physics of.

Two steps:

``--generate`` (run with the abTEM environment; imports only numpy, ase and abtem) writes one
``.npz`` per frame to ``benchmarks/_cache/abtem/`` (git-ignored) with ``image`` (float32,
Poisson counts), ``signal`` (float32, noise-free fraction of the probe reaching the detector),
``pixel_size`` (nm/px), the truth as ``y``, ``x`` (px, x = column), ``label`` (str) and
``central`` (bool, the copy of the truth in the centre tile), the settings as ``meta``
(a JSON string), and what is needed to render the frame otherwise (``benchmarks/abtem_sweep.py``):
``scan`` (float32, the noise-free detected fraction at the scan points of one periodic cell,
before interpolation and source blur), ``cell_yx_A`` (the cell, Å) and the cell's truth
``truth_cell_yx_A`` (Å) with ``truth_cell_label``.

``--score`` (run with stemflow's environment) runs ``stemflow.find_atoms(image,
pixel_size=..., lattice=...)`` with its defaults on every cached frame and writes
``benchmarks/results/abtem.md`` and ``.json`` (per lattice: lattice F1, dopant F1, vacancy
precision and recall, counts; frames, dose, settings) and ``docs/images/abtem_overlay.png``.
Without a flag: both, the generation only when the cache is missing (needs abtem importable).

Commands::

    python3 -m venv /tmp/abtemvenv && /tmp/abtemvenv/bin/pip install abtem ase
    /tmp/abtemvenv/bin/python benchmarks/abtem_set.py --generate     # about 50 min, 2 CPU cores (WS2, MoS2: 5-6 min a frame)
    .venv/bin/python benchmarks/abtem_set.py --score

Physics (all in the ``meta`` of each frame and in the results): 60 kV for graphene, 80 kV for
WS2/MoS2; aberration-free probe, semi-angle 30 mrad; HAADF annular detector 80–200 mrad
(potential sampled finely enough that abTEM's antialiased cut-off exceeds 200 mrad); Lobato
potentials, infinite projection; frozen phonons (isotropic Gaussian displacements, σ per element
below; 3 configurations for graphene and 2 for Pt on carbon, single-atom columns, but 24 for
WS2/MoS2, whose two-atom S2 columns keep about 10 % of scatter from column to column with 2
configurations, 4 % with 24, where a real image, averaged over the dwell time, keeps none:
``benchmarks/abtem_phonons.py``); scan at the probe's Nyquist step λ/(4α). The image is the fraction of the probe current
reaching the detector; it is Fourier-interpolated (exact for the band-limited, periodic image)
to the pixel size below, blurred by a Gaussian effective source (FWHM below), and turned into
counts by Poisson noise with mean = fraction × dose (e⁻/Å²) × pixel area (Å²).

Cells: small orthogonal supercells (about 2 nm on a side) built with ``ase.build.graphene`` /
``ase.build.mx2``. The simulated cell is periodic, so the frame given to the network is the cell
tiled 3 × 3 (the signal repeats; the Poisson noise is drawn independently over the whole frame),
and only the truth of the centre tile is scored: every true column of the centre tile, and
every detection that is paired with one of them or lies, unpaired, in the centre tile. This
keeps the network's receptive field away from the frame edge without simulating a larger cell.

Truth, following :mod:`stemflow.simulate.structure`: graphene — one column per C atom; a
substitutional Si (3-fold, ``Si1C3``) is ``dopant``; a 4-fold Si in a divacancy (``Si1C4``) is
one ``dopant`` at the midpoint of the two emptied sites, the second site emits no row (as the
simulator's ``_absorb``); a single vacancy is a ``vacancy`` row at the emptied site. MX2 — a metal
column per metal atom, a chalcogen column per S pair (projected); a Mo on a W site is
``dopant``; an emptied W site is ``vacancy``; a chalcogen column missing both S (``V_S2``) **and a
column missing one S** (``V_S``) are ``vacancy`` — stemflow's simulator labels ``V_X`` (one
chalcogen missing, count 1) as ``vacancy``, so this set does the same. No relaxation of the
lattice around the defects; truth positions are the projected positions of the atoms placed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "_cache" / "abtem"
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "images"

#: Settings shared by all frames (lengths Å unless said).
SETTINGS = dict(
    semiangle_mrad=30.0,
    detector_mrad=(80.0, 200.0),
    dose_e_per_A2=1e5,
    pixel_size_nm=0.015,
    source_fwhm_A=0.5,
    tiles=3,
    parametrization="lobato",
    phonon_sigma_A={"C": 0.07, "Si": 0.08, "S": 0.07, "Mo": 0.05, "W": 0.05, "Pt": 0.05},
)

#: Per lattice: energy (eV), potential sampling (Å; abTEM's antialiased cut-off > 200 mrad),
#: slice thickness (Å), lattice constant (Å), orthogonal repeats (nx, ny), frozen-phonon
#: configurations, and frames: each a list of (defect kind, fractional position in the cell).
FRAMES = {
    "graphene": dict(energy=60e3, sampling=0.08, slice=4.0, a=2.46, repeat=(8, 5), configs=3,
                     frames=[[("Si1C3", (0.22, 0.25)), ("Si1C4", (0.72, 0.30)), ("V1", (0.45, 0.75))],
                             [("V1", (0.20, 0.30)), ("Si1C3", (0.70, 0.22)), ("Si1C4", (0.40, 0.72))],
                             [("Si1C3", (0.20, 0.22)), ("V1", (0.72, 0.25)), ("Si1C3", (0.25, 0.75)),
                              ("Si1C4", (0.70, 0.72))],
                             [("Si1C4", (0.22, 0.28)), ("V1", (0.72, 0.25)), ("Si1C3", (0.25, 0.72)),
                              ("V1", (0.70, 0.72))],
                             [("V1", (0.22, 0.25)), ("Si1C4", (0.70, 0.28)), ("Si1C3", (0.45, 0.72))]]),
    "ws2": dict(energy=80e3, sampling=0.068, slice=2.05, a=3.18, thickness=3.14, repeat=(6, 4),
                configs=24, host=("W", "S"), dopant="Mo",
                frames=[[("D_M", (0.20, 0.22)), ("V_X", (0.70, 0.22)), ("V_X2", (0.22, 0.72)),
                         ("V_M", (0.72, 0.72))],
                        [("V_M", (0.20, 0.22)), ("D_M", (0.70, 0.22)), ("V_X", (0.22, 0.72)),
                         ("V_X2", (0.72, 0.72))],
                        [("V_X", (0.20, 0.22)), ("V_X2", (0.70, 0.22)), ("D_M", (0.22, 0.72)),
                         ("V_X", (0.72, 0.72))],
                        [("V_X2", (0.22, 0.25)), ("V_M", (0.70, 0.22)), ("V_X", (0.22, 0.72)),
                         ("D_M", (0.72, 0.70))]]),
    "mos2": dict(energy=80e3, sampling=0.068, slice=2.05, a=3.16, thickness=3.17, repeat=(6, 4),
                 configs=24, host=("Mo", "S"), dopant=None,
                 frames=[[("V_X", (0.20, 0.22)), ("V_X2", (0.70, 0.22)), ("V_X", (0.22, 0.72)),
                          ("V_X2", (0.72, 0.72))],
                         [("V_X2", (0.20, 0.22)), ("V_X", (0.70, 0.22)), ("V_X2", (0.22, 0.72)),
                          ("V_X", (0.72, 0.72))],
                         [("V_X", (0.25, 0.25)), ("V_X", (0.70, 0.25)), ("V_X2", (0.25, 0.72)),
                          ("V_X2", (0.72, 0.70))],
                         [("V_X2", (0.22, 0.25)), ("V_X", (0.72, 0.22)), ("V_X", (0.22, 0.72)),
                          ("V_X2", (0.70, 0.72))]]),
    # single Pt atoms on a 1 nm film of amorphous carbon (0.1 atoms/Å³, ≥ 1.3 Å apart), 80 kV
    "amorphous": dict(energy=80e3, sampling=0.065, slice=2.0, cell=(22.0, 22.0), film=10.0, density=0.1,
                      configs=2, heavy="Pt",
                      frames=[[("Pt", (0.20, 0.25)), ("Pt", (0.70, 0.30)), ("Pt", (0.45, 0.75))],
                              [("Pt", (0.25, 0.70)), ("Pt", (0.75, 0.75)), ("Pt", (0.50, 0.20)),
                               ("Pt", (0.62, 0.38))]]),
}


# ----------------------------------------------------------------------------------- generation
def _orthogonal(atoms, repeat):
    from ase.build import make_supercell

    ortho = make_supercell(atoms, [[1, 0, 0], [1, 2, 0], [0, 0, 1]])
    ortho = ortho * (repeat[0], repeat[1], 1)
    ortho.wrap()
    return ortho


def _columns(atoms):
    """Group atoms into projected columns: list of index arrays, and (x, y) of each (Å)."""
    xy = atoms.positions[:, :2]
    key = np.round(xy, 2)
    _, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.ravel()
    cols = [np.flatnonzero(inv == k) for k in range(inv.max() + 1)]
    return cols, np.array([xy[c].mean(0) for c in cols])


def _amorphous_frame(cfg: dict, heavies, seed: int):
    """A film of amorphous carbon (random positions at least 1.3 Å apart) with heavy atoms 1.8 Å
    above it; the truth is the heavy atoms only (the support is background)."""
    from ase import Atoms
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    lx, ly = cfg["cell"]
    z0, t = 2.0, cfg["film"]
    n = int(round(cfg["density"] * lx * ly * t))
    pts = np.empty((0, 3))
    while len(pts) < n:   # random sequential addition, periodic in x and y
        c = rng.random((4 * n, 3)) * [lx, ly, t] + [0, 0, z0]
        for q in c:
            if len(pts) >= n:
                break
            if len(pts):
                d = pts - q
                d[:, 0] -= np.round(d[:, 0] / lx) * lx
                d[:, 1] -= np.round(d[:, 1] / ly) * ly
                if (np.einsum("ij,ij->i", d, d) < 1.3 ** 2).any():
                    continue
            pts = np.vstack([pts, q])
    assert len(cKDTree(pts).query_pairs(1.29)) == 0
    hx = np.array([f[0] * lx for _, f in heavies])
    hy = np.array([f[1] * ly for _, f in heavies])
    heavy = np.column_stack([hx, hy, np.full(len(hx), z0 + t + 1.8)])
    atoms = Atoms(["C"] * len(pts) + [cfg["heavy"]] * len(heavy), positions=np.vstack([pts, heavy]),
                  cell=[lx, ly, z0 + t + 4.0], pbc=[True, True, False])
    return atoms, hx, hy, np.array(["dopant"] * len(hx))


def build_frame(lattice: str, defects, seed: int = 0) -> tuple:
    """Atoms with the defects placed, and the truth (x_A, y_A, label) of the projected columns."""
    from ase.build import graphene, mx2

    cfg = FRAMES[lattice]
    if lattice == "amorphous":
        return _amorphous_frame(cfg, defects, seed)
    if lattice == "graphene":
        atoms = _orthogonal(graphene(a=cfg["a"], vacuum=2.0), cfg["repeat"])
    else:
        m, x = cfg["host"]
        atoms = _orthogonal(mx2(f"{m}{x}2", kind="2H", a=cfg["a"], thickness=cfg["thickness"], vacuum=1.5),
                            cfg["repeat"])
    L = atoms.cell.lengths()[:2]
    cols, cxy = _columns(atoms)
    symbols = atoms.get_chemical_symbols()
    label = ["lattice"] * len(cols)
    col_xy = cxy.copy()
    remove: set[int] = set()
    emitted = np.ones(len(cols), bool)
    used: set[int] = set()

    def nearest(frac, want):
        target = np.asarray(frac) * L
        d = col_xy - target
        d -= np.round(d / L) * L
        r = np.hypot(d[:, 0], d[:, 1])
        ok = np.array([want(symbols[c[0]]) and k not in used for k, c in enumerate(cols)])
        r[~ok] = np.inf
        return int(np.argmin(r))

    def neighbours(k, cutoff):
        d = col_xy - col_xy[k]
        d -= np.round(d / L) * L
        r = np.hypot(d[:, 0], d[:, 1])
        return np.flatnonzero((r > 0.1) & (r < cutoff))

    for kind, frac in defects:
        if lattice == "graphene":
            k = nearest(frac, lambda s: s == "C")
            used.update([k, *neighbours(k, 3.0)])
            if kind == "V1":
                remove.update(cols[k]); label[k] = "vacancy"
            elif kind == "Si1C3":
                atoms.symbols[cols[k][0]] = "Si"; label[k] = "dopant"
            elif kind == "Si1C4":
                n = int(neighbours(k, 1.6)[0])
                d = col_xy[n] - col_xy[k]
                d -= np.round(d / L) * L
                atoms.symbols[cols[k][0]] = "Si"
                atoms.positions[cols[k][0], :2] += 0.5 * d
                col_xy[k] = col_xy[k] + 0.5 * d
                remove.update(cols[n]); emitted[n] = False; label[k] = "dopant"
        else:
            m, x = cfg["host"]
            metal = kind in ("D_M", "V_M")
            k = nearest(frac, (lambda s: s == m) if metal else (lambda s: s == x))
            used.update([k, *neighbours(k, 2.5)])
            if kind == "D_M":
                atoms.symbols[cols[k][0]] = cfg["dopant"]; label[k] = "dopant"
            elif kind == "V_M":
                remove.update(cols[k]); label[k] = "vacancy"
            elif kind == "V_X":  # the top S of the pair
                c = cols[k]
                remove.add(int(c[np.argmax(atoms.positions[c, 2])])); label[k] = "vacancy"
            elif kind == "V_X2":
                remove.update(cols[k]); label[k] = "vacancy"
    del atoms[sorted(int(i) for i in remove)]
    col_xy = np.mod(col_xy, L)
    keep = np.flatnonzero(emitted)
    return atoms, col_xy[keep, 0], col_xy[keep, 1], np.array(label, dtype=object)[keep].astype(str)


def _fourier_resample(img_yx: np.ndarray, L_yx, p_A: float, n_out, source_sigma_A: float):
    """Trigonometric interpolation of a periodic image sampled on [0, L) onto the grid j·p (Å),
    j < n_out, after a Gaussian blur of σ = ``source_sigma_A`` (the effective source)."""
    ny, nx = img_yx.shape
    c = np.fft.fft2(img_yx) / (ny * nx)
    ky = np.fft.fftfreq(ny, d=L_yx[0] / ny)
    kx = np.fft.fftfreq(nx, d=L_yx[1] / nx)
    c = c * np.exp(-2 * np.pi ** 2 * source_sigma_A ** 2 * (ky[:, None] ** 2 + kx[None, :] ** 2))
    ey = np.exp(2j * np.pi * np.outer(np.arange(n_out[0]) * p_A, ky))
    ex = np.exp(2j * np.pi * np.outer(np.arange(n_out[1]) * p_A, kx))
    return np.real(ey @ c @ ex.T)


def generate(lattices=None, seed=0, force: bool = False, *, cache: Path = CACHE, configs: int | None = None,
             frames: int | None = None) -> dict:
    """Simulate the frames of ``lattices`` (default all) into ``cache``: one ``{lattice}_{i:02d}.npz``
    each. ``configs`` replaces the lattice's number of frozen-phonon configurations; ``frames``
    keeps only the first ``frames`` frames of each lattice (``benchmarks/abtem_phonons.py``)."""
    import abtem

    abtem.config.set({"device": "cpu", "progress_bar": False})
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    tfile = cache / "timing.json"
    timing = json.loads(tfile.read_text())["frames"] if tfile.exists() else {}
    s = SETTINGS
    for lattice in lattices or FRAMES:
        cfg = dict(FRAMES[lattice])
        if configs is not None:
            cfg["configs"] = int(configs)
        for i, defects in enumerate(cfg["frames"][:frames]):
            if (cache / f"{lattice}_{i:02d}.npz").exists() and not force:
                continue          # cached: delete the file (or pass force) to make it again
            rng = np.random.default_rng([seed, i, sum(map(ord, lattice))])
            t0 = time.perf_counter()
            atoms, tx, ty, tlabel = build_frame(lattice, defects, seed=seed + i)
            sig = {el: v for el, v in s["phonon_sigma_A"].items() if el in set(atoms.get_chemical_symbols())}
            fp = abtem.FrozenPhonons(atoms, num_configs=cfg["configs"], sigmas=sig, seed=seed + 100 * i + 1)
            pot = abtem.Potential(fp, sampling=cfg["sampling"], slice_thickness=cfg["slice"],
                                  parametrization=s["parametrization"], projection="infinite")
            probe = abtem.Probe(energy=cfg["energy"], semiangle_cutoff=s["semiangle_mrad"])
            probe.grid.match(pot)
            cutoff = min(probe.cutoff_angles)
            if cutoff < s["detector_mrad"][1]:
                raise RuntimeError(f"{lattice}: potential sampling reaches only {cutoff:.0f} mrad")
            step = probe.aperture.nyquist_sampling
            scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, potential=pot, sampling=step)
            smat = abtem.SMatrix(potential=pot, energy=cfg["energy"], semiangle_cutoff=s["semiangle_mrad"],
                                 interpolation=1)
            det = abtem.AnnularDetector(inner=s["detector_mrad"][0], outer=s["detector_mrad"][1])
            meas = smat.scan(scan=scan, detectors=det).compute()
            arr = np.asarray(meas.array, dtype=np.float64)
            if arr.ndim != 2:  # an ensemble axis left: average the frozen phonons
                arr = arr.reshape(-1, *arr.shape[-2:]).mean(0)
            img_yx = arr.T  # abTEM: axis 0 = x
            L = atoms.cell.lengths()[:2]  # (Lx, Ly)
            p_A = 10 * s["pixel_size_nm"]
            n_out = (int(s["tiles"] * L[1] / p_A), int(s["tiles"] * L[0] / p_A))
            signal = _fourier_resample(img_yx, (L[1], L[0]), p_A, n_out, s["source_fwhm_A"] / 2.3548)
            signal = np.clip(signal, 0, None)
            counts = rng.poisson(signal * s["dose_e_per_A2"] * p_A ** 2).astype(np.float32)
            ys, xs, labs, central = [], [], [], []
            for a in range(s["tiles"]):
                for b in range(s["tiles"]):
                    ys.append((ty + a * L[1]) / p_A); xs.append((tx + b * L[0]) / p_A); labs.append(tlabel)
                    central.append(np.full(len(tx), a == b == s["tiles"] // 2))
            y, x, lab, cen = map(np.concatenate, (ys, xs, labs, central))
            inside = (y <= n_out[0] - 1) & (x <= n_out[1] - 1)
            seconds = time.perf_counter() - t0
            meta = dict(lattice=lattice, frame=i, defects=[d for d, _ in defects], energy_eV=cfg["energy"],
                        potential_sampling_A=cfg["sampling"], slice_thickness_A=cfg["slice"],
                        frozen_phonons=cfg["configs"], cell_A=[float(L[1]), float(L[0])],
                        n_atoms=len(atoms), scan_step_A=float(step), scan_gpts=list(map(int, img_yx.shape)),
                        potential_gpts=list(map(int, pot.gpts)), cutoff_mrad=float(cutoff),
                        mean_fraction=float(img_yx.mean()), max_fraction=float(img_yx.max()),
                        seconds=seconds, abtem=abtem.__version__, **{**s, "phonon_sigma_A": sig})
            np.savez_compressed(cache / f"{lattice}_{i:02d}.npz", image=counts, signal=signal.astype(np.float32),
                                pixel_size=np.float64(s["pixel_size_nm"]), y=y[inside], x=x[inside],
                                scan=img_yx.astype(np.float32), cell_yx_A=np.array([L[1], L[0]]),
                                truth_cell_yx_A=np.column_stack([ty, tx]), truth_cell_label=tlabel.astype(str),
                                label=lab[inside].astype(str), central=cen[inside], meta=json.dumps(meta))
            timing[f"{lattice}_{i:02d}"] = seconds
            print(f"{lattice} frame {i}: {len(atoms)} atoms, scan {img_yx.shape}, potential {pot.gpts}, "
                  f"{cfg['configs']} phonons, mean fraction {img_yx.mean():.2e}, {seconds:.0f} s", flush=True)
    tfile.write_text(json.dumps(dict(frames=timing, total_s=sum(timing.values())), indent=1))
    return timing


# ------------------------------------------------------------------------------------- scoring
def _central_subset(pred, truth, max_distance):
    """Rows of pred and truth that belong to the centre tile (see the module docstring)."""
    from stemflow.metrics import match

    pairs = match(pred, truth, max_distance)
    cen = truth["central"].to_numpy()
    t_keep = np.flatnonzero(cen)
    paired_pred = pairs["pred"].to_numpy()
    p_keep = set(paired_pred[cen[pairs["truth"].to_numpy()]].tolist())
    lo, hi = truth.loc[cen, ["y", "x"]].min().to_numpy(), truth.loc[cen, ["y", "x"]].max().to_numpy()
    unpaired = np.setdiff1d(np.arange(len(pred)), paired_pred)
    for j in unpaired:
        yx = pred[["y", "x"]].to_numpy()[j]
        if np.all(yx >= lo - max_distance / 2) and np.all(yx <= hi + max_distance / 2):
            p_keep.add(int(j))
    return pred.iloc[sorted(p_keep)].reset_index(drop=True), truth.iloc[t_keep].reset_index(drop=True)


def score_pooled(preds: list, truths: list, max_distance: float, lattice: str):
    """``stemflow.score`` over a lattice's frames (tables with a ``frame`` column each): the score
    table and the pooled truth. Amorphous supports are scored on their heavy atoms only."""
    import pandas as pd

    import stemflow

    pred = pd.concat(preds, ignore_index=True)
    truth = pd.concat(truths, ignore_index=True)
    classes = ("dopant",) if lattice == "amorphous" else ("lattice", "dopant", "vacancy")
    return stemflow.score(pred, truth, max_distance=max_distance, classes=classes), truth


def score_all() -> dict:
    import pandas as pd

    import stemflow
    from stemflow.metrics import default_max_distance

    files = sorted(CACHE.glob("*_[0-9][0-9].npz"))
    if not files:
        raise SystemExit(f"no frames in {CACHE}: run --generate first (with the abTEM environment)")
    per = {}
    frames_out = []
    for f in files:
        z = np.load(f, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        lattice = meta["lattice"]
        truth = pd.DataFrame({"y": z["y"], "x": z["x"], "label": z["label"].astype(str), "central": z["central"]})
        t0 = time.perf_counter()
        pred = stemflow.find_atoms(z["image"], pixel_size=float(z["pixel_size"]), lattice=lattice)
        secs = time.perf_counter() - t0
        # heavy atoms sit nanometres apart: match within 0.1 nm, not half their distance
        md = 0.1 / float(z["pixel_size"]) if lattice == "amorphous" else float(default_max_distance(truth))
        p_c, t_c = _central_subset(pred[["y", "x", "label"]], truth, md)
        per.setdefault(lattice, dict(pred=[], truth=[], meta=[], max_distance=md))
        k = len(per[lattice]["meta"])
        per[lattice]["pred"].append(p_c.assign(frame=k))
        per[lattice]["truth"].append(t_c.assign(frame=k))
        per[lattice]["meta"].append(meta)
        frames_out.append(dict(file=f.name, lattice=lattice, find_s=secs, n_pred=len(pred), image=z["image"],
                               pred=pred, truth=truth, pixel_size=float(z["pixel_size"]), meta=meta))
    results = {}
    for lattice, d in per.items():
        sc, truth = score_pooled(d["pred"], d["truth"], d["max_distance"], lattice)
        pred = pd.concat(d["pred"], ignore_index=True)
        n_true = truth["label"].value_counts().to_dict()
        results[lattice] = dict(
            frames=len(d["meta"]), n_true={c: int(n_true.get(c, 0)) for c in ("lattice", "dopant", "vacancy")},
            max_distance_px=d["max_distance"],
            scores={c: {k: (int(v) if k in ("tp", "fp", "fn") else float(v)) for k, v in sc.loc[c].items()}
                    for c in sc.index},
            defects=[m["defects"] for m in d["meta"]],
            support_rows=int((pred["label"].astype(str) != "dopant").sum()) if lattice == "amorphous" else None,
            physics={k: d["meta"][0][k] for k in ("energy_eV", "potential_sampling_A", "slice_thickness_A",
                                                  "frozen_phonons", "cell_A", "scan_step_A",
                                                  "scan_gpts", "potential_gpts", "cutoff_mrad", "mean_fraction",
                                                  "max_fraction")},
            generation_s=[m["seconds"] for m in d["meta"]],
        )
    timing = json.loads((CACHE / "timing.json").read_text()) if (CACHE / "timing.json").exists() else None
    out = dict(settings=SETTINGS, results=results, generation=timing,
               find_s={f["file"]: f["find_s"] for f in frames_out},
               abtem=frames_out[0]["meta"]["abtem"], stemflow=getattr(stemflow, "__version__", "?"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "abtem.json").write_text(json.dumps(out, indent=1, default=float))
    _write_md(out)
    _figure(frames_out)
    return out


def _fmt(x):
    return f"{x:.3f}"


def _write_md(out):
    s = out["settings"]
    lines = [
        "# stemflow on multislice (abTEM) HAADF images",
        "",
        "`benchmarks/abtem_set.py` — an independent physics cross-check: frames simulated by multislice "
        f"(abTEM {out['abtem']}, PRISM with interpolation 1) with frozen phonons, "
        f"probe semi-angle {s['semiangle_mrad']:g} mrad, HAADF {s['detector_mrad'][0]:g}–{s['detector_mrad'][1]:g} mrad, "
        f"effective source FWHM {s['source_fwhm_A']:g} Å, Fourier-interpolated to {s['pixel_size_nm']*1000:g} pm/px, "
        f"Poisson noise at {s['dose_e_per_A2']:.0e} e⁻/Å² (counts = detected fraction × dose × pixel area). "
        f"Each small periodic cell is tiled {s['tiles']}×{s['tiles']} (independent noise) and only the centre tile is "
        "scored. `stemflow.find_atoms(image, pixel_size, lattice)` with its defaults, the bundled network; "
        "`stemflow.score` with `max_distance` = half the median nearest-neighbour distance of the truth. "
        "`phonons`: frozen-phonon configurations averaged; the two-atom S2 columns of WS2 and MoS2 need many more "
        "than single-atom columns before columns alike read alike ([abtem_phonons.md](abtem_phonons.md)).",
        "",
        "Truth convention (as `stemflow.simulate.structure`): graphene Si1C3 = one `dopant`; Si1C4 = one `dopant` at "
        "the midpoint of the divacancy (the second site emits no row); V1 = `vacancy` at the emptied site. MX2: Mo on W "
        "= `dopant`; W vacancy = `vacancy`; a chalcogen column missing one S (V_S) or both (V_S2) = `vacancy` (the "
        "simulator labels V_X `vacancy`). No relaxation around defects.",
        "",
        "| lattice | kV | frames | phonons | true lattice / dopant / vacancy | lattice F1 | dopant F1 | vacancy precision | vacancy recall | detection F1 (all) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lat, r in out["results"].items():
        if lat == "amorphous":
            continue
        sc, n = r["scores"], r["n_true"]
        dop = _fmt(sc["dopant"]["f1"]) if n["dopant"] else f"– (none true; {sc['dopant']['fp']} FP)"
        lines.append(
            f"| {lat} | {r['physics']['energy_eV']/1e3:g} | {r['frames']} | {r['physics']['frozen_phonons']} | "
            f"{n['lattice']} / {n['dopant']} / {n['vacancy']} | {_fmt(sc['lattice']['f1'])} | {dop} | "
            f"{_fmt(sc['vacancy']['precision'])} ({sc['vacancy']['tp']}/{sc['vacancy']['tp'] + sc['vacancy']['fp']}) | "
            f"{_fmt(sc['vacancy']['recall'])} ({sc['vacancy']['tp']}/{sc['vacancy']['tp'] + sc['vacancy']['fn']}) | "
            f"{_fmt(sc['all']['f1'])} |")
    if "amorphous" in out["results"]:
        r = out["results"]["amorphous"]
        v = r["scores"]["dopant"]
        lines += ["", "Heavy single atoms on an amorphous support (Pt on a 1 nm film of amorphous carbon at "
                  f"{r['physics']['energy_eV']/1e3:g} kV; `find_atoms(..., lattice=\"amorphous\")`, matched within "
                  "0.1 nm; the film is background):", "",
                  "| frames | true Pt | precision | recall | F1 | rows on the support |", "|---|---|---|---|---|---|",
                  f"| {r['frames']} | {r['n_true']['dopant']} | {_fmt(v['precision'])} ({v['tp']}/{v['tp'] + v['fp']}) | "
                  f"{_fmt(v['recall'])} ({v['tp']}/{v['tp'] + v['fn']}) | {_fmt(v['f1'])} | {r['support_rows']} |"]
    lines += ["", "## Counts per class (TP / FP / FN)", "",
              "| lattice | class | TP | FP | FN | precision | recall | F1 | RMSE px |", "|---|---|---|---|---|---|---|---|---|"]
    for lat, r in out["results"].items():
        for c, v in r["scores"].items():
            lines.append(f"| {lat} | {c} | {v['tp']} | {v['fp']} | {v['fn']} | {_fmt(v['precision'])} | "
                         f"{_fmt(v['recall'])} | {_fmt(v['f1'])} | {v['rmse_px']:.2f} |")
    lines += ["", "## Simulation", "",
              "| lattice | defects per frame | cell (Å, y × x) | potential gpts | cut-off (mrad) | scan step (Å) | "
              "mean / max detected fraction | generation s per frame |", "|---|---|---|---|---|---|---|---|"]
    for lat, r in out["results"].items():
        ph = r["physics"]
        lines.append(f"| {lat} | {'; '.join(', '.join(d) for d in r['defects'])} | "
                     f"{ph['cell_A'][0]:.1f} × {ph['cell_A'][1]:.1f} | {ph['potential_gpts'][0]}×{ph['potential_gpts'][1]} | "
                     f"{ph['cutoff_mrad']:.0f} | {ph['scan_step_A']:.3f} | {ph['mean_fraction']:.2e} / "
                     f"{ph['max_fraction']:.2e} | {', '.join(f'{t:.0f}' for t in r['generation_s'])} |")
    if out["generation"]:
        lines += ["", f"Generation: {out['generation']['total_s']:.0f} s in all (abTEM on the CPU, 2 cores)."]
    lines += ["", "Frozen-phonon σ (Å): " + ", ".join(f"{k} {v}" for k, v in s["phonon_sigma_A"].items()) + ".",
              "", "![overlay](../../docs/images/abtem_overlay.png)", ""]
    (RESULTS / "abtem.md").write_text("\n".join(lines))


def _figure(frames):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    firsts = {}
    for f in frames:
        firsts.setdefault(f["lattice"], f)
    fig, axes = plt.subplots(1, len(firsts), figsize=(5 * len(firsts), 5.4))
    axes = np.atleast_1d(axes)
    colours = {"lattice": "#4fc3f7", "dopant": "#ff5252", "vacancy": "#ffd740", "unknown": "#b0bec5"}
    for ax, (lat, f) in zip(axes, firsts.items()):
        t = f["truth"]
        cen = t[t["central"]]
        lo = cen[["y", "x"]].min().to_numpy() - 15
        hi = cen[["y", "x"]].max().to_numpy() + 15
        ax.imshow(f["image"], cmap="gray", interpolation="nearest")
        for lab, c in colours.items():
            tt = t[t["label"] == lab]
            ax.scatter(tt["x"], tt["y"], s=70, facecolors="none", edgecolors=c, linewidths=1.0,
                       label=f"true {lab}")
            pp = f["pred"][f["pred"]["label"] == lab]
            ax.scatter(pp["x"], pp["y"], s=12, marker="+", c=c, linewidths=1.0, label=f"found {lab}")
        ax.set_xlim(lo[1], hi[1]); ax.set_ylim(hi[0], lo[0])
        m = f["meta"]
        ax.set_title(f"{lat}: {', '.join(m['defects'])}\n{m['energy_eV']/1e3:g} kV, {m['dose_e_per_A2']:.0e} e⁻/Å², "
                     f"{m['frozen_phonons']} phonons (centre tile)", fontsize=9)
        ax.set_xticks([]); ax.set_yticks([])
    axes[0].legend(loc="lower left", fontsize=6, ncol=2, framealpha=0.7)
    fig.tight_layout()
    IMAGES.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMAGES / "abtem_overlay.png", dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generate", action="store_true", help="simulate the frames with abTEM into the cache")
    ap.add_argument("--score", action="store_true", help="score stemflow on the cached frames")
    ap.add_argument("--lattices", default=None, help="comma-separated subset for --generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="with --generate: remake cached frames too")
    args = ap.parse_args(argv)
    lattices = args.lattices.split(",") if args.lattices else None
    if not args.generate and not args.score:
        if not list(CACHE.glob("*_[0-9][0-9].npz")):
            args.generate = True
        args.score = True
    if args.generate:
        t0 = time.perf_counter()
        generate(lattices, seed=args.seed, force=args.force)
        print(f"generation: {time.perf_counter() - t0:.0f} s")
    if args.score:
        out = score_all()
        for lat, r in out["results"].items():
            sc = r["scores"]
            print(lat, {c: round(sc[c]["f1"], 3) for c in sc},
                  *(("vacancy P/R", round(sc["vacancy"]["precision"], 3), round(sc["vacancy"]["recall"], 3))
                    if "vacancy" in sc else ()))


if __name__ == "__main__":
    main()

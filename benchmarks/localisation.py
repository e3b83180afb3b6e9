"""Localisation of atomic columns: stemflow's network, its Gaussian-fit refinement, trackpy and
atomap, on the same simulated frames against the simulator's exact positions.

Frames: graphene+Si and WS2+Mo/vacancies, 10⁴, 10⁵ and 10⁶ e⁻/Å², 10 and 16 pm/px, with the
test set's nuisances (line jitter, background, contamination, read noise); seeds of the held-out
range, disjoint from the test set and from training. For every method the RMSE (pm and px) of
matched lattice atoms and dopants and the time per atom:

* ``network``: ``find_atoms(flips=1)`` (blob centres + the network's sub-pixel offsets, one
  pass: the pass ``refine`` weighs its fit against; the default's four passes are measured in
  ``benchmarks/flips.py``);
* ``network + fit`` (``find_atoms(refine=True)``): joint Gaussian fit of all columns on the image
  at its own sampling, weighed against the network's centres;
* ``fit only``: the same fit's own centres (``stemflow.refine.fit_columns``);
* ``trackpy refine_com``: trackpy's centroid refinement started from the network's centres;
* ``trackpy locate``: trackpy finding and locating the spots itself (its own F1 is given);
* ``atomap 2-D Gaussian``: atomap's ``refine_atom_positions_using_2d_gaussian`` (after its
  centre-of-mass step) started from the network's centres — when atomap is installed in the
  separate environment given by ``--atomap-python`` (its dependencies clash with stemflow's).

A second, calibration set of frames (other seeds) measures the network's error model used to
weigh it against the fit (``stemflow.find._NET_ERROR``).

Run: ``python benchmarks/localisation.py [--atomap-python /tmp/atomap-venv/bin/python]``; writes
``benchmarks/results/localisation.md`` and ``docs/evaluation/localisation.csv``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stemflow import find_atoms
from stemflow.augment import TEST_SEED_START
from stemflow.evaluate import _NUISANCE, _SCENES
from stemflow.find import _NET_ERROR, _PROBE_SIGMA_NM
from stemflow.metrics import match
from stemflow.refine import fit_columns
from stemflow.simulate import simulate_image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
DOSES = (1e4, 1e5, 1e6)
PIXELS = (0.01, 0.016)
SIZE = 256
BORDER_NM = 0.15

_ATOMAP = r"""
import json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
import atomap.api as am
d = np.load(sys.argv[1])
out = {}
for key in [k for k in d.files if k.startswith("image_")]:
    case = key[6:]
    img, yx = d[key], d["start_" + case]
    sub = am.Sublattice(yx[:, ::-1].copy(), img)          # atomap wants (x, y)
    t = time.perf_counter()
    try:
        sub.find_nearest_neighbors()
        sub.refine_atom_positions_using_center_of_mass()
        sub.refine_atom_positions_using_2d_gaussian()
    except Exception as err:                               # noted in the table as failed
        out[case] = dict(x=[], y=[], seconds=float("nan"), error=repr(err)[:200])
        continue
    dt = time.perf_counter() - t
    out[case] = dict(x=list(map(float, sub.x_position)), y=list(map(float, sub.y_position)), seconds=dt)
json.dump(out, open(sys.argv[2], "w"))
"""


def _cases(seed0):
    k = 0
    for lat in ("graphene", "ws2"):
        for dose in DOSES:
            for px in PIXELS:
                yield dict(lattice=lat, dose=dose, pixel_size=px, seed=seed0 + k)
                k += 1


def _simulate(c):
    return simulate_image(c["lattice"], SIZE, defects=_SCENES[c["lattice"]], seed=c["seed"],
                          pixel_size=c["pixel_size"], dose=c["dose"], **_NUISANCE)


def _inner(df, px):
    b = BORDER_NM / px
    return df[(df.y >= b) & (df.y <= SIZE - 1 - b) & (df.x >= b) & (df.x <= SIZE - 1 - b)]


def _errors(pred, truth, px):
    """Per-axis RMSE (px) of matched lattice atoms and dopants, and F1 of all atoms."""
    t = _inner(truth[truth.label != "vacancy"], px)
    p = _inner(pred, px)
    m = match(p[["y", "x"]], t[["y", "x"]], max_distance=0.07 / px)
    ok = m.dropna()
    tp = len(ok)
    f1 = 2 * tp / max(len(p) + len(t), 1)
    if tp == 0:
        return dict(rmse_px=np.nan, f1=f1, n=0)
    d2 = ok["distance"].to_numpy() ** 2
    return dict(rmse_px=float(np.sqrt(d2.mean())), f1=float(f1), n=tp)


def _trackpy_locate(image, px):
    import trackpy as tp

    sigma = _PROBE_SIGMA_NM / px
    diameter = int(2 * np.ceil(1.5 * sigma) + 1)
    f = tp.locate(image.astype(np.float64), diameter, separation=0.1 / px, preprocess=True,
                  characterize=False, engine="python")
    return pd.DataFrame({"y": f["y"].to_numpy(), "x": f["x"].to_numpy()})


def _trackpy_refine(image, start, px):
    from trackpy.refine import refine_com

    sigma = _PROBE_SIGMA_NM / px
    radius = int(np.ceil(1.5 * sigma))
    coords = start[["y", "x"]].to_numpy()
    h, w = image.shape
    # trackpy needs the whole mask inside the frame; edge columns are left out of the scores.
    inside = ((coords >= radius + 1) & (coords <= np.array([h, w]) - radius - 2)).all(axis=1)
    coords = coords[inside]
    img = image.astype(np.float64)
    r = refine_com(img, img, radius, coords, max_iterations=10, engine="python",
                   characterize=False)
    return pd.DataFrame({"y": r["y"].to_numpy(), "x": r["x"].to_numpy()})


def run(atomap_python=None):
    rows, cal = [], []
    # Calibration frames: network error vs the fit's stated error.
    for c in _cases(TEST_SEED_START + 900_000):
        sim = _simulate(c)
        px = c["pixel_size"]
        net = find_atoms(sim.image, px, c["lattice"], identify=False, flips=1)
        cols = net[net.label != "vacancy"]
        fy, fx, d = fit_columns(sim.image, net.y.to_numpy(), net.x.to_numpy(),
                                _PROBE_SIGMA_NM / px, return_details=True)
        atom = (net.label != "vacancy").to_numpy()
        fit = pd.DataFrame({"y": fy[atom], "x": fx[atom]})
        e_net = _errors(cols, sim.atoms, px)["rmse_px"] / np.sqrt(2)
        e_fit = _errors(fit, sim.atoms, px)["rmse_px"] / np.sqrt(2)
        stated = float(np.median(np.sqrt(0.5 * (d["y_err"] ** 2 + d["x_err"] ** 2))[atom]))
        model_px = px / 0.02
        cal.append(dict(**c, net_axis_model_px=e_net * model_px, fit_axis_model_px=e_fit * model_px,
                        stated_axis_model_px=stated * model_px))
    cal = pd.DataFrame(cal)
    # σ_net² = floor² + slope² σ_fit²  (least squares in the squares), inflation = actual/stated.
    a = np.c_[np.ones(len(cal)), cal.stated_axis_model_px ** 2]
    coef, *_ = np.linalg.lstsq(a, cal.net_axis_model_px ** 2, rcond=None)
    floor, slope = float(np.sqrt(max(coef[0], 0))), float(np.sqrt(max(coef[1], 0)))
    inflation = float(np.median(cal.fit_axis_model_px / cal.stated_axis_model_px))

    # Test frames: every method.
    stash = {}
    for c in _cases(TEST_SEED_START + 800_000):
        sim = _simulate(c)
        px = c["pixel_size"]
        name = f"{c['lattice']}_{c['dose']:.0e}_{px}"
        t0 = time.perf_counter()
        net = find_atoms(sim.image, px, c["lattice"], identify=False, flips=1)
        t_net = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = find_atoms(sim.image, px, c["lattice"], refine=True, identify=False)
        t_ref = time.perf_counter() - t0 - t_net
        atom = (net.label != "vacancy").to_numpy()
        n_atoms = int(atom.sum())
        t0 = time.perf_counter()
        fy, fx = fit_columns(sim.image, net.y.to_numpy(), net.x.to_numpy(), _PROBE_SIGMA_NM / px)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        trc = _trackpy_refine(sim.image, net[atom], px)
        t_trc = time.perf_counter() - t0
        t0 = time.perf_counter()
        trl = _trackpy_locate(sim.image, px)
        t_trl = time.perf_counter() - t0
        methods = {
            "network": (net[atom], t_net),
            "network + fit": (ref[atom], t_ref),
            "fit only": (pd.DataFrame({"y": fy[atom], "x": fx[atom]}), t_fit),
            "trackpy refine_com": (trc, t_trc),
            "trackpy locate": (trl, t_trl),
        }
        for method, (df, secs) in methods.items():
            e = _errors(df, sim.atoms, px)
            rows.append(dict(**c, method=method, rmse_pm=e["rmse_px"] * px * 1000, rmse_px=e["rmse_px"],
                             f1=e["f1"], matched=e["n"], us_per_atom=1e6 * secs / max(n_atoms, 1)))
        stash[name] = (c, sim, net[atom], n_atoms)

    if atomap_python:
        with tempfile.TemporaryDirectory() as tmp:
            npz = Path(tmp) / "frames.npz"
            arrays = {}
            for name, (c, sim, start, _) in stash.items():
                arrays["image_" + name] = sim.image.astype(np.float64)
                # Columns cut by the frame edge make atomap's fits fail; they are not scored.
                m = 0.1 / c["pixel_size"]
                inner = start[(start.y >= m) & (start.y <= SIZE - 1 - m) & (start.x >= m) & (start.x <= SIZE - 1 - m)]
                arrays["start_" + name] = inner[["y", "x"]].to_numpy()
            np.savez(npz, **arrays)
            script = Path(tmp) / "atomap_refine.py"
            script.write_text(_ATOMAP)
            res = Path(tmp) / "atomap.json"
            subprocess.run([atomap_python, str(script), str(npz), str(res)], check=True)
            got = json.loads(res.read_text())
        for name, (c, sim, start, n_atoms) in stash.items():
            r = got[name]
            if "error" in r:
                print(f"atomap failed on {name}: {r['error']}")
            df = pd.DataFrame({"y": np.asarray(r["y"], float), "x": np.asarray(r["x"], float)}).dropna()
            e = _errors(df, sim.atoms, c["pixel_size"])
            rows.append(dict(**c, method="atomap 2-D Gaussian", rmse_pm=e["rmse_px"] * c["pixel_size"] * 1000,
                             rmse_px=e["rmse_px"], f1=e["f1"], matched=e["n"],
                             us_per_atom=1e6 * r["seconds"] / max(n_atoms, 1)))
    return pd.DataFrame(rows), cal, (floor, slope, inflation)


def write(df, cal, fitted, atomap_version=None):
    OUT.mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "evaluation").mkdir(parents=True, exist_ok=True)
    df.to_csv(ROOT / "docs" / "evaluation" / "localisation.csv", index=False)
    g = df.groupby(["lattice", "dose", "method"], sort=False).agg(
        rmse_pm=("rmse_pm", lambda v: float(np.sqrt(np.mean(np.square(v))))),
        rmse_px=("rmse_px", lambda v: float(np.sqrt(np.mean(np.square(v))))),
        f1=("f1", "mean"), us_per_atom=("us_per_atom", "mean")).reset_index()
    lines = ["# Localisation: network, Gaussian-fit refinement, trackpy, atomap", "",
             f"`python benchmarks/localisation.py`; {SIZE}² frames at 10 and 16 pm/px (RMSE pooled over "
             "both), graphene+Si and WS2+Mo/vacancies with the test set's nuisances; lattice atoms and "
             f"dopants matched to the exact truth within 0.07 nm; {BORDER_NM} nm border left out. RMSE is "
             "the radial distance to the true column. Time per atom on this machine (2 cores, shared).",
             ""]
    if atomap_version:
        lines += [f"atomap {atomap_version} in a separate environment, started from the network's centres.", ""]
    lines += ["| lattice | dose (e⁻/Å²) | method | RMSE (pm) | RMSE (px) | F1 | µs/atom |", "|---|---|---|---|---|---|---|"]
    for r in g.itertuples():
        lines.append(f"| {r.lattice} | {r.dose:.0e} | {r.method} | {r.rmse_pm:.2f} | {r.rmse_px:.3f} | "
                     f"{r.f1:.4f} | {r.us_per_atom:.0f} |")
    floor, slope, inflation = fitted
    lines += ["", "## Error model of the network (calibration frames, other seeds)", "",
              "Per axis, in the network's own pixels (20 pm): σ_net² = floor² + (slope · σ_fit)², with σ_fit the "
              "fit's stated standard error; and the fit's actual error over its stated one (inflation).", "",
              f"- fitted here: floor {floor:.3f}, slope {slope:.2f}, inflation {inflation:.2f}",
              f"- used by `find_atoms(refine=True)` (`stemflow.find._NET_ERROR`): floor {_NET_ERROR[0]}, "
              f"slope {_NET_ERROR[1]}, inflation {_NET_ERROR[2]}", "",
              "| lattice | dose | px (nm) | network (model px) | fit (model px) | fit stated (model px) |",
              "|---|---|---|---|---|---|"]
    for r in cal.itertuples():
        lines.append(f"| {r.lattice} | {r.dose:.0e} | {r.pixel_size} | {r.net_axis_model_px:.3f} | "
                     f"{r.fit_axis_model_px:.3f} | {r.stated_axis_model_px:.3f} |")
    (OUT / "localisation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--atomap-python", help="python of an environment with atomap installed")
    args = ap.parse_args()
    version = None
    if args.atomap_python:
        version = subprocess.run([args.atomap_python, "-c", "import importlib.metadata as m; print(m.version('atomap'))"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    df, cal, fitted = run(args.atomap_python)
    write(df, cal, fitted, version)


if __name__ == "__main__":
    main()

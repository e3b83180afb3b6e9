"""Atom-finder throughput and accuracy on CPU (and GPU when run there).

For frames of 256², 512² and 1024² px simulated at the network's sampling (20 pm/px, so no
resampling), at the demo's dose: frames/s of

* stemflow's bundled network (network pass alone, and the whole ``find_atoms`` with one network
  pass, ``flips=1``: the cost of the default's four passes is in ``benchmarks/flips.py``), on CPU with the
  default backend (ONNX Runtime, :mod:`stemflow.nn.onnx_cpu`) and with PyTorch
  (``STEMFLOW_CPU_BACKEND=torch``: BatchNorm folded, channels-last) side by side,
* the baseline U-Net of AtomAI's default size (``baseline_unet.py``: 16 base filters, 4 levels)
  trained by the same pipeline for the same number of steps, through the same ``find_atoms``,
* ``trackpy.locate`` (bright-spot finding; dopants called by mass > 2× the median, no vacancies),

each with its F1 per class on the same frames (matching within half the nearest-neighbour
distance). Ratios are against the baseline measured in the same run. Localisation is compared
too: RMSE (pm) and time per atom of stemflow, trackpy and, if installed, atomap's 2-D Gaussian
refinement.

Run: ``python benchmarks/bench_inference.py [--threads N] [--device cuda]``; needs
``benchmarks/_cache/unet16.pt`` (``python benchmarks/baseline_unet.py``). Writes
``benchmarks/results/inference[-DEVICE].md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))

from baseline_unet import CACHE, load as load_baseline  # noqa: E402

from stemflow import find_atoms, load_model, score  # noqa: E402
from stemflow.augment import TEST_SEED_START  # noqa: E402
from stemflow.evaluate import DEMO_DOSE  # noqa: E402
from stemflow.preprocess import normalize  # noqa: E402
from stemflow.simulate import simulate_image  # noqa: E402

OUT = Path(__file__).parent / "results"
SCENES = {"graphene": {"Si1C3": 0.25, "Si1C4": 0.08, "V1": 0.1, "V2": 0.04},
          "ws2": {"Mo_W": 0.3, "V_S": 0.3, "V_S2": 0.1, "V_W": 0.05}}


def frames(size, n, px):
    out = []
    for k in range(n):
        lat = "graphene" if k % 2 == 0 else "ws2"
        out.append((lat, simulate_image(lat, size, defects=SCENES[lat], seed=TEST_SEED_START + 7000 + 10 * size + k,
                                        pixel_size=px, dose=DEMO_DOSE, line_jitter=0.15, background=0.3,
                                        contamination=0.02)))
    return out


def timed(fn, repeat=3):
    fn()  # warm-up
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def f1s(pred, truth, px, size):
    """Per-class counts of one frame, with tp·RMSE² so that RMSE can be pooled over frames."""
    b = 0.15 / px

    def inner(t):
        return t[t.y.between(b, size - 1 - b) & t.x.between(b, size - 1 - b)].reset_index(drop=True)

    s = score(inner(pred), inner(truth), pixel_size=px)
    s["sq"] = s["tp"] * s["rmse_pm"].fillna(0) ** 2
    return s[["tp", "fp", "fn", "sq"]]


def trackpy_atoms(image, px):
    import trackpy as tp

    sigma = 1.1 / 2.3548 / (10 * px)
    diameter = int(2 * np.ceil(1.5 * sigma)) + 1
    f = tp.locate(image, diameter, separation=diameter - 2, preprocess=True, topn=None, engine="numba"
                  if _has_numba() else "python")
    if len(f) == 0:
        return pd.DataFrame({"y": [], "x": [], "label": pd.Categorical([], categories=["lattice", "dopant", "vacancy"])})
    keep = f["mass"] > 0.3 * f["mass"].median()
    f = f[keep]
    label = np.where(f["mass"] > 2 * f["mass"].median(), "dopant", "lattice")
    return pd.DataFrame({"y": f.y.to_numpy(), "x": f.x.to_numpy(),
                         "label": pd.Categorical(label, categories=["lattice", "dopant", "vacancy"])})


def _has_numba():
    try:
        import numba  # noqa: F401
        return True
    except ImportError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="256,512,1024")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ours = load_model("default", device=a.device)
    ours_torch = load_model("default", device=a.device)   # the same weights, run by PyTorch on CPU
    trained = (CACHE / "unet16.pt").exists()
    if trained:
        base = load_baseline(CACHE / "unet16.pt").to(a.device)
    else:  # speed only: an untrained baseline runs exactly as fast
        from baseline_unet import UNet16

        from stemflow.nn.weights import Model

        base = Model(net=UNet16().eval(), card={"classes": list(ours.classes), "pixel_size": ours.pixel_size,
                                                "name": "unet16-untrained"}).to(a.device)
    px = ours.pixel_size
    rows = []
    for size in map(int, a.sizes.split(",")):
        n = {256: 8, 512: 4, 1024: 2}.get(size, 2)
        data = frames(size, n, px)
        norm = np.stack([normalize(s.image) for _, s in data])
        for name, model, backend in (("stemflow", ours, "auto"), ("stemflow, PyTorch CPU", ours_torch, "torch"),
                                     ("unet16", base, "torch")):
            if a.device != "cpu" and backend == "torch" and name != "unet16":
                continue                                   # the backends differ on CPU only
            os.environ["STEMFLOW_CPU_BACKEND"] = backend
            batch = 8 if size <= 512 else 2
            t_net = timed(lambda: model.maps(norm, batch_size=batch))
            t_find = timed(lambda: [find_atoms(s.image, px, lat, model, identify=False, flips=1) for lat, s in data], repeat=2)
            sc = pd.concat([f1s(find_atoms(s.image, px, lat, model, identify=False, flips=1), s.atoms, px, size) for lat, s in data],
                           keys=range(n)).groupby(level=1).sum()
            f1 = _f1(sc) if (name != "unet16" or trained) else {k: float("nan") for k in _f1(sc)}
            rows.append(dict(method=name, size=size, frames=n, net_fps=n / t_net, find_fps=n / t_find, **f1))
            os.environ.pop("STEMFLOW_CPU_BACKEND", None)
            print(rows[-1])
        t_tp = timed(lambda: [trackpy_atoms(s.image, px) for _, s in data], repeat=2)
        sc = pd.concat([f1s(trackpy_atoms(s.image, px), s.atoms, px, size) for _, s in data],
                       keys=range(n)).groupby(level=1).sum()
        rows.append(dict(method="trackpy.locate", size=size, frames=n, net_fps=float("nan"), find_fps=n / t_tp, **_f1(sc)))
        print(rows[-1])
    df = pd.DataFrame(rows)
    OUT.mkdir(exist_ok=True)
    tag = "" if a.device == "cpu" else f"-{a.device.split(':')[0]}"
    meta = dict(machine=platform.processor() or platform.machine(), threads=a.threads, device=a.device,
                torch=torch.__version__, dose=DEMO_DOSE, pixel_size=px)
    (OUT / f"inference{tag}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    lines = [f"# Atom finder: throughput and F1 ({a.device}, {a.threads} threads)", "",
             f"`python benchmarks/bench_inference.py --threads {a.threads} --device {a.device}`; frames simulated at the "
             f"network's {px * 1000:.0f} pm/px, {DEMO_DOSE:.0e} e⁻/Å², half graphene+Si, half WS2+Mo/vacancies; "
             "F1 pooled over the frames (atoms within 0.15 nm of the edge left out). `stemflow`: the default "
             "CPU backend (ONNX Runtime); `stemflow, PyTorch CPU`: the same weights with "
             "`STEMFLOW_CPU_BACKEND=torch`; the U-Net runs in PyTorch.", "",
             "| method | frame | network frames/s | find_atoms frames/s | vs U-Net (find) | F1 lattice | F1 dopant | F1 vacancy | RMSE lattice (pm) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = df[(df.method == "unet16") & (df["size"] == r["size"])].find_fps.iloc[0]
        lines.append(f"| {r['method']} | {r['size']}² | {r['net_fps']:.2f} | {r['find_fps']:.2f} | {r['find_fps'] / ref:.2f}× | "
                     f"{r['f1_lattice']:.4f} | {r['f1_dopant']:.4f} | {r['f1_vacancy']:.4f} | {r['rmse_pm_lattice']:.1f} |")
    (OUT / f"inference{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _f1(sc):
    out = {}
    for cls in ("lattice", "dopant", "vacancy"):
        tp, fp, fn = sc.loc[cls, ["tp", "fp", "fn"]]
        out[f"f1_{cls}"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    out["rmse_pm_lattice"] = float(np.sqrt(sc.loc["lattice", "sq"] / max(sc.loc["lattice", "tp"], 1)))
    return out


if __name__ == "__main__":
    main()

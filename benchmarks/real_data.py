"""Real experimental images: stemflow beside classical finders, on labelled and unlabelled sets.

Three parts, each a function, all written by one run into ``benchmarks/results/real_data.md`` and
``.json`` (every number there is measured by this script) and into figures under ``docs/images``:

**si** — the Si-doped graphene development set (``shared/data/si_graphene_dev``, 61 real 60 kV
HAADF images with hand-labelled Si complexes), scored by
:func:`stemflow.labelled.score_dopant_complexes`:

* ``stemflow``: ``find_atoms(image, pixel_size, lattice="graphene")`` with the network given by
  ``--model`` (default: bundled). Settings are the defaults except that the unsupervised classes
  of :func:`stemflow.chem.identify` are not fitted (``identify_options={"classes": False}``): the
  ``cluster`` column they fill is not scored, the ``defect`` names come from the rules, and the
  mixtures cost two thirds of the run time.
* ``classical``: ``trackpy.locate`` (diameter = 1 Å probe in px, separation 0.08 nm so that two
  columns a C–C bond apart are never merged) then one rule for dopants: a blob is a dopant when its
  background-subtracted peak (image smoothed over 0.03 nm, minus the local minimum over 0.35 nm)
  is above ``k`` times the frame's median over all blobs (Z-contrast: Si/C ≈ (14/6)^1.7 ≈ 4).
  The one threshold ``k`` is tuned on the same dev data for the best Si F1, so its figures are
  an upper bound for the rule. Defect types: :func:`stemflow.chem.identify` on its table.
* ``atomap``: ``atomap.atom_finding_refining.get_atom_positions(signal, separation)`` with the
  separation 0.07 nm (half a bond; atomap's square exclusion window suppresses neighbours closer
  than that in either axis), run in a separate environment through a subprocess, then the same
  dopant rule with its own tuned ``k``.
* ``AtomAI``: tried in its own environment; its graphene model (``G_MD``) is fetched from GitHub
  at load time, so where that cannot be reached the table says so with the error.

**pt** — Pt single atoms on carbon nitride (``shared/data/pt_single_atoms_dev``, 11 frames 512²,
0.0293 nm/px), scored by :func:`stemflow.labelled.score_heavy_atoms`: ``stemflow`` with
``lattice="amorphous"``; ``classical``: ``trackpy.locate`` (diameter and separation 0.15 nm, the
width of a Pt atom's image) plus one rule, the background-subtracted peak (smoothed over 0.045
nm, background over 0.3 nm) above ``k`` times the frame's noise (median absolute deviation of
the background-subtracted image), ``k`` tuned on the labelled frames; ``atomap`` with separation
0.1 nm and the same rule.

**mos2** — physics checks on the real 60 kV ADF-STEM frame of monolayer MoS2 (``temul-toolkit``
0.1.9 wheel from PyPI, ``example_Se_implanted_MoS2.dm3``, 1024², 0.0127 nm/px; cached in
``benchmarks/_cache``) with ``find_atoms(..., lattice="mos2")``. 2H-MoS2 seen along c has two
columns per cell of area (√3/2)a², a = 0.316 nm: 23.1 columns per nm²; nearest-neighbour column
distance a/√3 = 0.182 nm; Mo and S2 columns alternate on two sublattices. Also written on its own
to ``benchmarks/results/real_mos2.{md,json}`` and ``docs/images/real_mos2.png`` as before.

Run::

    python benchmarks/real_data.py [--sets si,pt,mos2] [--model PATH] [--out-suffix _cand]
        [--atomap-python /tmp/cmpvenv/bin/python] [--atomai-python /tmp/cmpvenv_ai/bin/python]

The comparison environments are made once, apart from stemflow's (their dependencies clash)::

    python3 -m venv /tmp/cmpvenv && /tmp/cmpvenv/bin/pip install atomap
    python3 -m venv /tmp/cmpvenv_ai && /tmp/cmpvenv_ai/bin/pip install torch==2.13.0 atomai six

A set run alone replaces its own section and keeps the others from the last run with the same
suffix. The labelled sets are read from :func:`stemflow.labelled.dev_data_dir`; without them
those sections say so.

Units: positions px, pixel sizes nm/px, localisation pm.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

HERE = Path(__file__).resolve().parent
CACHE = HERE / "_cache"
OUT = HERE / "results"
IMAGES = HERE.parent / "docs" / "images"
MEMBER = "temul/example_data/experimental/example_Se_implanted_MoS2.dm3"
SETS = ("si", "pt", "mos2")
DEFAULT_ATOMAP = "/tmp/cmpvenv/bin/python"
DEFAULT_ATOMAI = "/tmp/cmpvenv_ai/bin/python"


# ----------------------------------------------------------------------------------------------
# The classical baseline: trackpy (or atomap) positions + one intensity rule


@dataclass(frozen=True)
class Baseline:
    """Settings of the classical finder: blob detection plus one intensity rule for dopants.

    Attributes
    ----------
    diameter_nm : float
        ``trackpy.locate`` diameter (rounded up to an odd number of px).
    separation_nm : float
        ``trackpy.locate`` separation (odd px).
    smooth_nm : float
        Gaussian sigma of the smoothing before the peak is read.
    background_nm : float
        Window of the local background (minimum filter, then mean over the same window).
    norm : {"median", "noise"}
        Unit of the threshold: the frame's median blob contrast (columns of a lattice) or the
        frame's noise, the median absolute deviation of the background-subtracted image
        (isolated atoms on a support).
    atomap_separation_nm : float
        ``separation`` of atomap's ``get_atom_positions``.
    """

    diameter_nm: float
    separation_nm: float
    smooth_nm: float
    background_nm: float
    norm: str
    atomap_separation_nm: float


SI_BASELINE = Baseline(diameter_nm=0.10, separation_nm=0.08, smooth_nm=0.03, background_nm=0.35, norm="median",
                       atomap_separation_nm=0.07)
PT_BASELINE = Baseline(diameter_nm=0.15, separation_nm=0.15, smooth_nm=0.045, background_nm=0.30, norm="noise",
                       atomap_separation_nm=0.10)


def odd_px(nm: float, pixel_size: float) -> int:
    """The smallest odd number of px at least ``nm`` long."""
    n = int(np.ceil(nm / pixel_size - 1e-9))
    return n + (n % 2 == 0)


def contrast_image(image: np.ndarray, pixel_size: float, cfg: Baseline) -> np.ndarray:
    """Background-subtracted, smoothed image: what the intensity rule reads.

    The image is smoothed with a Gaussian of sigma ``cfg.smooth_nm``; the background is the local
    minimum over ``cfg.background_nm``, averaged over the same window, so that diffuse
    contamination wider than an atom is removed with it.
    """
    s = ndi.gaussian_filter(np.asarray(image, np.float64), cfg.smooth_nm / pixel_size)
    w = max(3, int(round(cfg.background_nm / pixel_size)))
    return s - ndi.uniform_filter(ndi.minimum_filter(s, w), w)


def relative_contrast(image: np.ndarray, pixel_size: float, yx: np.ndarray, cfg: Baseline) -> np.ndarray:
    """Peak contrast at the positions ``yx`` (px, rows y x) in the unit of ``cfg.norm``."""
    c = contrast_image(image, pixel_size, cfg)
    if len(yx) == 0:
        return np.zeros(0)
    yi = np.clip(np.round(yx[:, 0]).astype(int), 0, c.shape[0] - 1)
    xi = np.clip(np.round(yx[:, 1]).astype(int), 0, c.shape[1] - 1)
    v = c[yi, xi]
    if cfg.norm == "median":
        unit = np.median(v)
    else:
        unit = 1.4826 * np.median(np.abs(c - np.median(c)))
    return v / unit if unit > 0 else np.full(len(v), np.inf)


def trackpy_blobs(image: np.ndarray, pixel_size: float, cfg: Baseline) -> pd.DataFrame:
    """Blobs found by ``trackpy.locate``: ``y``, ``x`` (px) and ``rel`` (relative contrast)."""
    import trackpy

    trackpy.quiet()
    t = trackpy.locate(np.asarray(image, np.float32), odd_px(cfg.diameter_nm, pixel_size),
                       separation=odd_px(cfg.separation_nm, pixel_size), percentile=30)
    yx = t[["y", "x"]].to_numpy(np.float64)
    return pd.DataFrame({"y": yx[:, 0], "x": yx[:, 1], "rel": relative_contrast(image, pixel_size, yx, cfg)})


def with_threshold(blobs: pd.DataFrame, k: float, pixel_size: float) -> pd.DataFrame:
    """An atoms table from blobs: ``label`` ``dopant`` where ``rel > k``, else ``lattice``."""
    out = blobs[["y", "x"]].copy()
    out["label"] = pd.Categorical(np.where(blobs["rel"].to_numpy() > k, "dopant", "lattice"),
                                  categories=["lattice", "dopant", "vacancy"])
    out["y_nm"], out["x_nm"] = out.y * pixel_size, out.x * pixel_size
    out.attrs.update(pixel_size=pixel_size)
    return out


def tune_threshold(blobs: list[pd.DataFrame], truths: list[pd.DataFrame], max_distance: list[float],
                   grid: np.ndarray):
    """The threshold of the grid with the best dopant F1 (ties: the smallest).

    The F1 is the scorers' own (:mod:`stemflow.labelled`: found dopants matched one to one with
    :func:`stemflow.metrics.match` within ``max_distance`` px), computed here on the dopants alone
    so that a grid of thresholds costs seconds; the chosen one is then scored in full.

    Returns
    -------
    k : float
    curve : list of [k, F1]
    """
    from stemflow.metrics import match

    curve = []
    for k in grid:
        tp = fp = fn = 0
        for b, t, md in zip(blobs, truths, max_distance):
            dop = b.loc[b["rel"].to_numpy() > k, ["y", "x"]].reset_index(drop=True)
            n = len(match(dop, t, md)) if len(dop) and len(t) else 0
            tp, fp, fn = tp + n, fp + len(dop) - n, fn + len(t) - n
        curve.append([float(k), 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0])
    best = max(range(len(curve)), key=lambda i: (curve[i][1], -i))
    return curve[best][0], curve


def _check_tuning(f1: float, curve) -> None:
    if abs(f1 - max(c[1] for c in curve)) > 1e-9:
        raise RuntimeError(f"the tuned F1 {max(c[1] for c in curve)} differs from the scorer's {f1}: "
                           "tune_threshold no longer follows stemflow.labelled's rule")


# ----------------------------------------------------------------------------------------------
# Other packages, each in its own environment, through a subprocess

ATOMAP_SCRIPT = r'''
import json, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np
import hyperspy.api as hs
import atomap
from atomap.atom_finding_refining import get_atom_positions
from importlib.metadata import version
data = np.load(sys.argv[1])
seps = json.loads(open(sys.argv[2]).read())
out = {"version": version("atomap"), "positions": {}}
for k in data.files:
    s = hs.signals.Signal2D(np.asarray(data[k], np.float32))
    p = np.asarray(get_atom_positions(s, separation=int(seps[k])), float).reshape(-1, 2)
    out["positions"][k] = p.tolist()   # atomap's order: x (column), y (row)
open(sys.argv[3], "w").write(json.dumps(out))
'''

ATOMAI_SCRIPT = r'''
import json, sys, os, warnings
warnings.filterwarnings("ignore")
from importlib.metadata import version
out = {"version": version("atomai")}
try:
    import atomai
    os.chdir(sys.argv[2])
    atomai.models.load_pretrained_model("G_MD")
    out["model"] = "G_MD"
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
open(sys.argv[1], "w").write(json.dumps(out))
'''


class Unavailable(Exception):
    """A comparison package that could not be run; the message is the reason for the table."""


def atomap_blobs(frames, cfg: Baseline, python: str | None, timeout: float = 600) -> tuple[list[pd.DataFrame], str]:
    """Positions from atomap's ``get_atom_positions`` on every frame, with relative contrast.

    Returns
    -------
    blobs : list of DataFrame (``y``, ``x``, ``rel``)
    version : str

    Raises
    ------
    Unavailable
        No such interpreter, atomap not importable there, or the run failed.
    """
    if not python or not Path(python).exists():
        raise Unavailable(f"no atomap environment ({python or 'none given'}); make one with "
                          "`python3 -m venv /tmp/cmpvenv && /tmp/cmpvenv/bin/pip install atomap`")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "imgs.npz", **{f.name: f.image for f in frames})
        (tmp / "seps.json").write_text(json.dumps({f.name: max(1, int(round(cfg.atomap_separation_nm / f.pixel_size)))
                                                   for f in frames}))
        (tmp / "run.py").write_text(ATOMAP_SCRIPT)
        try:
            r = subprocess.run([python, str(tmp / "run.py"), str(tmp / "imgs.npz"), str(tmp / "seps.json"),
                                str(tmp / "out.json")], capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"atomap ran past {timeout:.0f} s") from None
        if r.returncode:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise Unavailable(f"atomap failed: {last[:200]}")
        res = json.loads((tmp / "out.json").read_text())
    out = []
    for f in frames:
        xy = np.asarray(res["positions"][f.name], float).reshape(-1, 2)
        yx = xy[:, ::-1].copy()
        rel = relative_contrast(f.image, f.pixel_size, yx, cfg)
        out.append(pd.DataFrame({"y": yx[:, 0], "x": yx[:, 1], "rel": rel}))
    return out, res["version"]


def atomai_status(python: str | None, timeout: float = 300) -> dict:
    """Whether AtomAI can be run here: ``{"ok": bool, "reason" or "version": ...}``."""
    if not python or not Path(python).exists():
        return {"ok": False, "reason": f"no AtomAI environment ({python or 'none given'}); make one with "
                                       "`python3 -m venv /tmp/cmpvenv_ai && /tmp/cmpvenv_ai/bin/pip install "
                                       "torch==2.13.0 atomai six`"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "run.py").write_text(ATOMAI_SCRIPT)
        try:
            r = subprocess.run([python, str(tmp / "run.py"), str(tmp / "out.json"), str(tmp)], capture_output=True,
                               text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            return {"ok": False, "reason": f"AtomAI ran past {timeout:.0f} s"}
        if r.returncode or not (tmp / "out.json").exists():
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            return {"ok": False, "reason": f"AtomAI does not import: {last[:200]}"}
        res = json.loads((tmp / "out.json").read_text())
    if "error" in res:
        return {"ok": False, "version": res["version"],
                "reason": f"atomai {res['version']} installs, but its pretrained graphene model G_MD is downloaded "
                          f"from GitHub when loaded and that failed here ({res['error'][:120]}); "
                          "no bundled weights to run"}
    return {"ok": True, "version": res["version"],
            "reason": "G_MD loads; running it on these sets is not yet part of this benchmark"}


# ----------------------------------------------------------------------------------------------
# The labelled sets


def _stemflow_finder(lattice: str, model, **options):
    from stemflow import find_atoms

    cache = {}

    def find(f):
        if f.name not in cache:
            cache[f.name] = find_atoms(f.image, f.pixel_size, lattice, model=model, **options)
        return cache[f.name]

    return find, cache


def _calibration(frames, cache, truth_of, max_distance_of) -> dict:
    """Reliability of stemflow's ``prob`` for its dopant calls: right = matched to a labelled
    dopant (the only class whose every member is labelled in these sets)."""
    from stemflow.calibration import expected_calibration_error, reliability
    from stemflow.metrics import match

    prob, right = [], []
    for f in frames:
        a = cache[f.name]
        dop = a[a["label"].astype(str).eq("dopant")].reset_index(drop=True)
        ok = np.zeros(len(dop), bool)
        t = truth_of(f)
        if len(dop) and len(t):
            ok[match(dop, t, max_distance_of(f))["pred"].to_numpy()] = True
        prob += list(dop["prob"].astype(float))
        right += list(ok)
    table = reliability(prob, right, bins=10) if prob else pd.DataFrame()
    return {"ece": expected_calibration_error(prob, right) if prob else float("nan"), "n": len(prob),
            "table": table.to_dict("records")}


def _fit_only(image, pixel_size, table):
    """The table with its columns also fitted to the frame alone (no network weighting): y_fit,
    x_fit px."""
    from stemflow.refine import refine_atoms

    fit = refine_atoms(np.asarray(image, np.float64), table, 0.045 / pixel_size, keep_fit=True)
    return table.assign(y_fit=fit["y_fit"].to_numpy(), x_fit=fit["x_fit"].to_numpy())


def _host_offsets(frames, fitted) -> dict:
    """Where stemflow's matched C columns sit relative to their labels, pm (``fitted``: each
    frame's table with its columns also fitted to the image alone, :func:`_fit_only`): the mean offset, its
    component along the line from the nearest labelled Si (negative: towards the Si), the spread
    of each image's mean offset, and what the mean distance would be with each of these removed
    by an oracle that knows the labels (per image, or along the Si direction), to tell a bias of
    the finder from the scatter of the labels."""
    from scipy.spatial import cKDTree

    from stemflow.labelled import HALF_BOND_NM
    from stemflow.metrics import match

    vecs, units, image_means, fit_radial, si_c = [], [], [], [], {"labels": [], "stemflow": [], "fit": []}
    sizes = []
    for f in frames:
        a = fitted[f.name]
        cols = a[~a["label"].astype(str).isin(["vacancy", "dopant"])].reset_index(drop=True)
        host = f.truth[f.truth.element == "C"].reset_index(drop=True)
        si = f.truth.loc[f.truth.element == "Si", ["y", "x"]].to_numpy(np.float64)
        if not (len(cols) and len(host) and len(si)):
            continue
        m = match(cols, host, HALF_BOND_NM / f.pixel_size)
        if not len(m):
            continue
        t = host[["y", "x"]].to_numpy(np.float64)[m["truth"].to_numpy()]
        p = cols[["y", "x"]].to_numpy(np.float64)[m["pred"].to_numpy()]
        q = cols[["y_fit", "x_fit"]].to_numpy(np.float64)[m["pred"].to_numpy()]
        v = (p - t) * f.pixel_size * 1000.0
        d, j = cKDTree(si).query(t)
        vecs.append(v)
        sizes.append(np.full(len(v), round(f.pixel_size * 1000.0, 1)))
        units.append((t - si[j]) / np.maximum(d, 1e-9)[:, None])
        fit_radial.append(((q - t) * units[-1]).sum(axis=1) * f.pixel_size * 1000.0)
        image_means.append(v.mean(axis=0))
        pm = f.pixel_size * 1000.0       # distance of each matched C from its nearest labelled Si, pm
        si_c["labels"].append(d * pm)
        si_c["stemflow"].append(np.hypot(*(p - si[j]).T) * pm)
        si_c["fit"].append(np.hypot(*(q - si[j]).T) * pm)
    if not vecs:
        return {}
    v, u = np.vstack(vecs), np.vstack(units)
    radial = (v * u).sum(axis=1)
    fr = np.concatenate(fit_radial)
    first = np.concatenate(si_c["labels"]) < 2.0 * 142.0           # first shell by the labels
    per_image = np.vstack([x - x.mean(axis=0) for x in vecs])
    no_radial = v - radial.mean() * u
    both = np.vstack([x - x.mean(axis=0) for x in np.split(no_radial, np.cumsum([len(x) for x in vecs])[:-1])])
    norm = lambda w: float(np.hypot(w[:, 0], w[:, 1]).mean())  # noqa: E731
    sz = np.concatenate(sizes)
    lab_d, sf_d = np.concatenate(si_c["labels"]), np.concatenate(si_c["stemflow"])

    def median_at(d, k):
        sel = first & (sz == k)
        return float(np.median(d[sel])) if sel.any() else float("nan")

    by_size = {f"{k:.1f}": {"n": int((sz == k).sum()), "mean_pm": norm(v[sz == k]),
                          "radial_mean_pm": float(radial[sz == k].mean()),
                          "si_c_median_labels_pm": median_at(lab_d, k),
                          "si_c_median_stemflow_pm": median_at(sf_d, k)} for k in np.unique(sz)}
    return {"n": int(len(v)), "mean_pm": norm(v), "by_pixel_size": by_size, "label_form": _label_form(frames),
            "mean_vector_pm": v.mean(axis=0).tolist(),
            "radial_mean_pm": float(radial.mean()), "radial_sd_pm": float(radial.std()),
            "image_mean_sd_pm": np.std(np.vstack(image_means), axis=0).tolist(), "n_images": len(vecs),
            "without_image_means_pm": norm(per_image), "without_radial_bias_pm": norm(no_radial),
            "without_both_pm": norm(both),
            "fit_radial_mean_pm": float(np.nanmean(fr)), "fit_radial_sd_pm": float(np.nanstd(fr)),
            "si_c_median_pm": {k: float(np.nanmedian(np.concatenate(w)[first])) for k, w in si_c.items()},
            "si_c_n": int(first.sum())}


def _label_form(frames, max_n: int = 64) -> dict:
    """How the labels' coordinates were made: for each labelled atom the least N (up to ``max_n``)
    for which both its coordinates are whole multiples of 1/N px. The unweighted centroid of a mask
    of N pixels has that form, a click on a pixel N = 1; a fit or a weighted centroid has not (a coordinate
    pair drawn at random has that form for some N ≤ 64 with a chance of about 2.5 in a million)."""
    out = {}
    for f in frames:
        key = f"{f.pixel_size * 1000.0:.1f}"
        for y, x in f.truth[["y", "x"]].to_numpy(np.float64):
            n = next((k for k in range(1, max_n + 1)
                      if abs(y * k - round(y * k)) < 1e-4 and abs(x * k - round(x * k)) < 1e-4), 0)
            out.setdefault(key, []).append(n)
    return {k: {"n": len(v), "share_rational": float(np.mean(np.array(v) > 0)),
                "median_pixels": float(np.median([q for q in v if q > 0])) if any(v) else float("nan"),
                "max_pixels": int(max(v))} for k, v in sorted(out.items(), key=lambda kv: float(kv[0]))}


def _shell_symmetry(frames, fitted) -> dict:
    """A check that needs no ground truth: a lone Si with three C (Si1C3) is threefold symmetric in
    projection, so the less scattered set of positions shows three equal Si–C distances and 120°
    between them. For every labelled Si1C3 complex whose Si and three C stemflow's table all match
    (within half a bond), the within-complex SD of the three Si–C distances (pm) and the mean
    departure of the three angles from 120° (degrees), for the labels, stemflow's table and the
    columns fitted to the image alone (``fitted``, as for :func:`_host_offsets`); medians over the
    complexes."""
    from stemflow.labelled import HALF_BOND_NM
    from stemflow.metrics import match

    out = {k: {"distance_sd_pm": [], "angle_dev_deg": [], "distance_mean_pm": []} for k in ("labels", "stemflow", "fit")}
    for f in frames:
        a = fitted[f.name]
        rows = a[a["label"].astype(str) != "vacancy"].reset_index(drop=True)
        for _, g in f.truth.groupby("complex"):
            if (g.element == "Si").sum() != 1 or (g.element == "C").sum() != 3:
                continue
            g = g.reset_index(drop=True)
            m = match(rows, g, HALF_BOND_NM / f.pixel_size)
            if len(m) < 4:
                continue
            m = m.sort_values("truth")
            is_si = (g.element.to_numpy() == "Si")[m["truth"].to_numpy()]
            picks = {"labels": g[["y", "x"]].to_numpy(np.float64)[m["truth"].to_numpy()],
                     "stemflow": rows[["y", "x"]].to_numpy(np.float64)[m["pred"].to_numpy()],
                     "fit": rows[["y_fit", "x_fit"]].to_numpy(np.float64)[m["pred"].to_numpy()]}
            for k, xy in picks.items():
                v = (xy[~is_si] - xy[is_si][0]) * f.pixel_size * 1000.0
                d = np.hypot(v[:, 0], v[:, 1])
                ang = np.sort(np.degrees(np.arctan2(v[:, 0], v[:, 1])) % 360.0)
                gaps = np.diff(np.r_[ang, ang[0] + 360.0])
                out[k]["distance_sd_pm"].append(float(d.std()))
                out[k]["angle_dev_deg"].append(float(np.abs(gaps - 120.0).mean()))
                out[k]["distance_mean_pm"].append(float(d.mean()))
    n = len(out["labels"]["distance_sd_pm"])
    return {"n_complexes": n, **{k: {q: float(np.nanmedian(w)) if n else float("nan") for q, w in v.items()}
                                 for k, v in out.items()}}


#: The options of ``sim_vs_real.MICROSCOPE`` that make its probe and detector (60 kV, 31 mrad,
#: defocus, C3, C5, source size, focal spread, 60–200 mrad), without its scan distortions and its
#: thermal-diffuse background: a probe with tails.
ABERRATED_PROBE_KEYS = ("probe", "voltage_kv", "aperture_mrad", "defocus", "c3", "c5", "source_size", "focal_spread",
                        "detector_inner_mrad", "detector_outer_mrad")


def _aberrated_probe() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sim_vs_real import MICROSCOPE

    return {k: MICROSCOPE[k] for k in ABERRATED_PROBE_KEYS}


def _simulated_radial_control(model=None, seeds=(0, 1, 2), pixel_size=0.0125, relax=0.0, probe=None) -> dict:
    """The same measure on stemflow's simulator, whose truth is exact: first-shell C of Si1C3
    (within 1.3 bonds of a Si), offset along the line from the Si, pm (512² frames at 10⁵ e⁻/Å²),
    of stemflow's table and of the columns fitted to the image alone; ``relax`` (Å): the first-shell
    C pushed that much away from each Si (the truth follows); ``probe``: imaging options of the
    probe (default: the simulator's)."""
    from scipy.spatial import cKDTree

    from stemflow import find_atoms
    from stemflow.metrics import match
    from stemflow.simulate import simulate_movie
    from stemflow.tables import LATTICES

    bond_px = LATTICES["graphene"]["bond"] / pixel_size
    radial, fitted = [], []
    for seed in seeds:
        mov = simulate_movie("graphene", 1, 512, seed=seed, pixel_size=pixel_size, dose=1e5, defects={"Si1C3": 8},
                             relax=relax, **(probe or {}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = find_atoms(mov.images()[0], pixel_size, "graphene", model=model, identify=False)
        a = _fit_only(mov.images()[0], pixel_size, a)
        t = mov.atoms[mov.atoms.frame == 0]
        si = t.loc[t.element == "Si", ["y", "x"]].to_numpy(np.float64)
        c = t.loc[t.element == "C", ["y", "x"]].to_numpy(np.float64)
        d, j = cKDTree(si).query(c)
        first = d < 1.3 * bond_px
        cols = a[a["label"].astype(str) == "lattice"].reset_index(drop=True)
        tc = pd.DataFrame(c[first], columns=["y", "x"])
        m = match(cols, tc, 0.5 * bond_px)
        v = cols[["y", "x"]].to_numpy(np.float64)[m["pred"].to_numpy()] - tc.to_numpy()[m["truth"].to_numpy()]
        u = (tc.to_numpy() - si[j[first]]) / d[first][:, None]
        radial.append((v * u[m["truth"].to_numpy()]).sum(axis=1) * pixel_size * 1000.0)
        w = cols[["y_fit", "x_fit"]].to_numpy(np.float64)[m["pred"].to_numpy()] - tc.to_numpy()[m["truth"].to_numpy()]
        fitted.append((w * u[m["truth"].to_numpy()]).sum(axis=1) * pixel_size * 1000.0)
    r, q = np.concatenate(radial), np.concatenate(fitted)
    return {"n": int(len(r)), "radial_mean_pm": float(r.mean()), "radial_sd_pm": float(r.std()),
            "fit_radial_mean_pm": float(np.nanmean(q)), "fit_radial_sd_pm": float(np.nanstd(q)),
            "frames": len(seeds), "pixel_size_nm": pixel_size, "relax_pm": relax * 100.0}


def figure_calibration(results: dict, out: Path):
    """Reliability diagram of the dopant calls on the dev sets."""
    from stemflow.calibration import plot_reliability

    tables = {}
    for key, name in (("si", "Si in graphene"), ("pt", "Pt on carbon nitride, prob fitted on these frames")):
        cal = results.get(key, {}).get("methods", {}).get("stemflow", {}).get("calibration")
        if cal and cal["table"]:
            tables[name] = pd.DataFrame(cal["table"])
    if tables:
        plot_reliability(tables, out, title="stemflow dopant calls on real dev frames")


def _identified(blobs: pd.DataFrame, k: float, f) -> pd.DataFrame:
    """The baseline's table at threshold ``k`` with the defect names of :func:`stemflow.chem.identify`."""
    from stemflow.chem import identify

    # Without the image: identify then names complexes from positions and labels alone; with it,
    # stemflow's own dopant check would relabel the baseline's dopants.
    return identify(with_threshold(blobs, k, f.pixel_size), f.pixel_size, "graphene", classes=False)


def _baselines(frames, cfg, atomap_python, res, tables, *, grid, truths, md, table_of, score, f1_key):
    """Score the classical baseline and atomap, each with its one threshold tuned on ``frames``.

    ``table_of(blobs, k, frame)`` turns a method's blobs into an atoms table at threshold ``k``;
    ``score`` is the set's scorer; results go into ``res["methods"]`` and ``tables``.
    """

    def tuned(name, blobs, seconds, extra):
        k, curve = tune_threshold(blobs, truths, md, grid)
        by_name = {f.name: b for f, b in zip(frames, blobs)}
        found = {}

        def find_k(f):
            found[f.name] = table_of(by_name[f.name], k, f)
            return found[f.name]

        s, per = score(frames, find_k)
        _check_tuning(s[f1_key], curve)
        res["methods"][name] = dict(s, seconds=seconds, threshold=k, threshold_curve=curve,
                                    per_frame=per.to_dict("records"), **extra)
        tables[name] = found

    t0 = time.perf_counter()
    blobs = [trackpy_blobs(f.image, f.pixel_size, cfg) for f in frames]
    tuned("classical", blobs, time.perf_counter() - t0, {"settings": asdict(cfg)})
    try:
        t0 = time.perf_counter()
        blobs, version = atomap_blobs(frames, cfg, atomap_python)
        tuned("atomap", blobs, time.perf_counter() - t0, {"version": version})
    except Unavailable as e:
        res["methods"]["atomap"] = {"unavailable": str(e)}


def run_si(data_dir: Path, model=None, atomap_python=None) -> tuple[dict, dict]:
    """Score stemflow, the classical baseline and atomap on the Si-doped graphene dev set.

    Returns
    -------
    result : dict
        Per method: the summary of :func:`stemflow.labelled.score_dopant_complexes`, seconds,
        and for the tuned methods the threshold and its curve.
    tables : dict
        Per method ``{image name: atoms table}`` (for the figure) and ``frames``.
    """
    from stemflow.labelled import HALF_BOND_NM, read_dopant_complexes, score_dopant_complexes

    frames = read_dopant_complexes(data_dir / "si_graphene_dev.npz")
    res = {"n_images": len(frames), "methods": {}}
    tables = {"frames": frames}

    find, cache = _stemflow_finder("graphene", model, identify_options={"classes": False})
    t0 = time.perf_counter()
    s, per = score_dopant_complexes(frames, find)
    res["methods"]["stemflow"] = dict(s, seconds=time.perf_counter() - t0, per_frame=per.to_dict("records"),
                                      model=_model_name(model))
    res["methods"]["stemflow"]["calibration"] = _calibration(
        frames, cache, lambda f: f.truth.loc[f.truth.element == "Si", ["y", "x"]].reset_index(drop=True),
        lambda f: HALF_BOND_NM / f.pixel_size)
    fitted = {f.name: _fit_only(f.image, f.pixel_size, cache[f.name]) for f in frames}
    res["methods"]["stemflow"]["host_offsets"] = dict(_host_offsets(frames, fitted), symmetry=_shell_symmetry(frames, fitted),
                                                      simulated=_simulated_radial_control(model),
                                                      simulated_relaxed=_simulated_radial_control(model, relax=0.2),
                                                      simulated_tails=_simulated_radial_control(model, probe=_aberrated_probe()),
                                                      simulated_tails_relaxed=_simulated_radial_control(
                                                          model, relax=0.2, probe=_aberrated_probe()))
    tables["stemflow"] = cache

    grid = np.round(np.arange(1.5, 8.001, 0.05), 3)
    truths = [f.truth.loc[f.truth.element == "Si", ["y", "x"]].reset_index(drop=True) for f in frames]
    md = [HALF_BOND_NM / f.pixel_size for f in frames]

    _baselines(frames, SI_BASELINE, atomap_python, res, tables, grid=grid, truths=truths, md=md,
               table_of=_identified, score=score_dopant_complexes, f1_key="dopant_f1")
    return res, tables


def run_pt(data_dir: Path, model=None, atomap_python=None) -> tuple[dict, dict]:
    """Score stemflow, the classical baseline and atomap on the Pt single-atom dev set.

    Returns
    -------
    result, tables : dict
        As :func:`run_si`, with the summary of :func:`stemflow.labelled.score_heavy_atoms`.
    """
    from stemflow.labelled import HEAVY_MATCH_PX, read_heavy_atoms, score_heavy_atoms

    frames = read_heavy_atoms(data_dir / "pt_single_atoms_dev.npz")
    res = {"n_images": len(frames), "methods": {}}
    tables = {"frames": frames}
    find, cache = _stemflow_finder("amorphous", model)
    t0 = time.perf_counter()
    s, per = score_heavy_atoms(frames, find)
    res["methods"]["stemflow"] = dict(s, seconds=time.perf_counter() - t0, per_frame=per.to_dict("records"),
                                      model=_model_name(model))
    res["methods"]["stemflow"]["calibration"] = _calibration(frames, cache, lambda f: f.truth[["y", "x"]],
                                                             lambda f: HEAVY_MATCH_PX)
    tables["stemflow"] = cache
    res["sweep"] = _significance_sweep(frames)

    grid = np.round(np.exp(np.linspace(np.log(1.0), np.log(40.0), 150)), 3)
    truths = [f.truth[["y", "x"]] for f in frames]
    md = [HEAVY_MATCH_PX] * len(frames)

    _baselines(frames, PT_BASELINE, atomap_python, res, tables, grid=grid, truths=truths, md=md,
               table_of=lambda b, k, f: with_threshold(b, k, f.pixel_size), score=score_heavy_atoms, f1_key="f1")
    return res, tables


def _significance_sweep(frames) -> dict:
    """What stemflow's heavy-atom rule allows on these frames at best: its significance threshold
    (σ) swept on the very frames it is scored on (an upper bound; the default is not tuned)."""
    from stemflow.chem.heavy import HEAVY_SIGNIFICANCE, find_heavy_atoms
    from stemflow.labelled import HEAVY_MATCH_PX
    from stemflow.metrics import match

    found = [find_heavy_atoms(f.image, f.pixel_size, significance=2.0, populations=False) for f in frames]
    best = {"f1": -1.0}
    curve = []
    for t in np.round(np.arange(2.5, 8.01, 0.25), 2):
        tp = fp = fn = 0
        for f, d in zip(frames, found):
            d = d[d["significance"] >= t].reset_index(drop=True)
            n = len(match(d, f.truth, HEAVY_MATCH_PX)) if len(d) and len(f.truth) else 0
            tp, fp, fn = tp + n, fp + len(d) - n, fn + len(f.truth) - n
        f1 = 2 * tp / (2 * tp + fp + fn)
        curve.append({"sigma": float(t), "f1": f1, "precision": tp / max(tp + fp, 1), "recall": tp / (tp + fn)})
        if f1 > best["f1"]:
            best = dict(curve[-1])
    return {"best": best, "curve": curve, "default_sigma": HEAVY_SIGNIFICANCE}


def _model_name(model) -> str:
    """The evaluated network, as the report names it: bundled or path, and its checksum."""
    from stemflow.nn.weights import load_model

    card = load_model(model if model is not None else "default").card
    return f"{'bundled default' if model is None else model}, sha256 {str(card.get('sha256', ''))[:12]}"


# ----------------------------------------------------------------------------------------------
# Real MoS2: physics checks without labels


def fetch_mos2() -> Path:
    """Path of the real MoS2 frame, downloading the wheel that carries it if needed."""
    return fetch_temul(MEMBER)


def fetch_temul(member: str) -> Path:
    """Path of one example file of the temul-toolkit 0.1.9 wheel (``member``: its path in the
    wheel), downloading the wheel into the cache if needed."""
    target = CACHE / Path(member).name
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = list(CACHE.glob("temul_toolkit-0.1.9-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "temul-toolkit==0.1.9", "-d",
                        str(CACHE), "-q"], check=True, timeout=300)
        wheels = list(CACHE.glob("temul_toolkit-0.1.9-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        target.write_bytes(z.read(member))
    return target


def fft_spacing(img: np.ndarray, pixel_size: float, r_min: int = 20) -> float:
    """Lattice-plane spacing (nm) from the strongest ring of spots in the windowed FFT: an
    estimate independent of any atom finding."""
    n = min(img.shape)
    a = img[:n, :n].astype(np.float64)
    a -= a.mean()
    win = np.outer(np.hanning(n), np.hanning(n))
    f = np.abs(np.fft.fftshift(np.fft.fft2(a * win)))
    ky, kx = np.indices(f.shape) - n // 2
    r = np.hypot(ky, kx)
    f[r < r_min] = 0
    top = np.argsort(f.ravel())[-12:]  # the six first-order spots and their mirrors
    return float(n / np.median(r.ravel()[top]) * pixel_size)


def mos2_checks(atoms, pixel_size: float, shape, image=None) -> dict:
    """Physics of 2H-MoS2 measured on a detected atoms table (columns = non-vacancy rows).

    With ``image``, the two column classes are also compared above the frame's background: the
    image smoothed over a quarter bond, read at the columns and at the hexagon centres (one bond
    from a column, opposite each of its first-shell bonds, where no column stands), whose median
    is the background. A detector offset (the real frame's background is about 3·10⁶ counts) makes the
    raw ratio read near 1 whatever the contrast."""
    cols = atoms[atoms.label != "vacancy"]
    h, w = shape
    m = 20  # px margin: the edge cuts columns
    inner = cols[cols.y.between(m, h - 1 - m) & cols.x.between(m, w - 1 - m)]
    area_nm2 = (h - 2 * m) * (w - 2 * m) * pixel_size**2
    xy = cols[["y_nm", "x_nm"]].to_numpy()
    tree = cKDTree(xy)
    d, j = tree.query(inner[["y_nm", "x_nm"]].to_numpy(), 4)
    nn = d[:, 1]
    inten = cols["intensity"].to_numpy()
    # two intensity classes by 2-means on log intensity
    li = np.log(np.clip(inten, np.percentile(inten, 1), None))
    c0, c1 = np.percentile(li, [25, 75])
    for _ in range(50):
        bright = np.abs(li - c1) < np.abs(li - c0)
        c0, c1 = li[~bright].mean(), li[bright].mean()
    idx_inner = np.searchsorted(cols.index.to_numpy(), inner.index.to_numpy())
    first = j[:, 1:4]
    close = d[:, 1:4] < 0.25  # nm: first-shell neighbours
    mixed = bright[idx_inner][:, None] != bright[first]
    above = {}
    if image is not None:
        bond_px = 0.1824 / pixel_size
        smooth = ndi.gaussian_filter(np.asarray(image, np.float64), bond_px / 4)
        yx = inner[["y", "x"]].to_numpy()
        all_yx = cols[["y", "x"]].to_numpy()
        bonds = all_yx[first] - yx[:, None, :]                       # (n, 3, 2) px, to first-shell columns
        ok = close.all(axis=1)
        hollows = (yx[:, None, :] - bonds)[ok].reshape(-1, 2)        # across each bond: a hexagon centre
        background = float(np.median(ndi.map_coordinates(smooth, hollows.T, order=1)))
        level = ndi.map_coordinates(smooth, yx.T, order=1) - background
        b_in = bright[idx_inner]
        above = {"background_counts": background,
                 "bright_to_dim_above_background": float(np.median(level[b_in]) / np.median(level[~b_in]))}
    return {**above,
        "first_shell_mean_nm": float(np.median(d[:, 1:4].mean(axis=1))),
        "columns": int(len(cols)),
        "columns_per_nm2": float(len(inner) / area_nm2),
        "nn_median_nm": float(np.median(nn)),
        "nn_iqr_nm": float(np.subtract(*np.percentile(nn, [75, 25]))),
        "share_nn_within_10pct_of_0.182": float(np.mean(np.abs(nn / 0.1824 - 1) < 0.10)),
        "share_first_shell_pairs_bright_dim": float(mixed[close].mean()),
        "bright_share": float(bright.mean()),
        "bright_to_dim_intensity": float(np.exp(c1 - c0)),
    }


def mos2_lines(res: dict) -> list[str]:
    """The MoS2 checks as a markdown table."""
    return [
        "| measure | value | expected |", "|---|---|---|",
        f"| columns found | {res['columns']} | ≈ 3,900 over the frame |",
        f"| columns per nm² (inner region) | {res['columns_per_nm2']:.2f} | 23.1 |",
        f"| nearest-neighbour distance, median (IQR) | {res['nn_median_nm']:.4f} nm ({res['nn_iqr_nm']:.4f}) "
        "| 0.182 nm |",
        f"| share of NN distances within 10 % of 0.182 nm | {res['share_nn_within_10pct_of_0.182']:.3f} | 1 |",
        f"| mean first-shell distance | {res['first_shell_mean_nm']:.4f} nm | 0.182 nm × file-calibration factor |",
        f"| {{100}} spacing from the FFT of the image (no atom finding) | {res['fft_d100_nm']:.4f} nm "
        f"(= {res['scale_from_fft']:.3f} × 0.2737) | 0.2737 nm |",
        f"| first-shell distance / (⅔ · FFT spacing) | {res['first_shell_vs_fft']:.4f} | 1: finder and FFT agree |",
        f"| first-shell pairs joining a bright to a dim column | {res['share_first_shell_pairs_bright_dim']:.3f} | 1 |",
        f"| bright (Mo) share of columns; bright/dim intensity | {res['bright_share']:.3f}; "
        f"{res['bright_to_dim_intensity']:.2f} (raw counts, detector offset included) | 0.5; near 1 on an offset |",
        *([f"| bright/dim intensity above the background (hexagon centres, {res['background_counts']:.4g} counts) | "
           f"{res['bright_to_dim_above_background']:.2f} | Mo/S2 ≈ 1.3–2.6 |"]
          if "bright_to_dim_above_background" in res else []),
        f"| labels | {res['labels']} | mostly lattice; Se substitutes S |",
        f"| time | {res['seconds']:.2f} s | |"]


def run_mos2(model=None, suffix: str = "") -> dict:
    """Physics checks on the real MoS2 frame; writes ``real_mos2{suffix}.md/.json`` and its figure."""
    import stemflow
    from stemflow import find_atoms

    path = fetch_mos2()
    da = stemflow.open_stem(path)
    img = np.asarray(da.values, dtype=np.float32)
    px = float(da.attrs["pixel_size"])
    t0 = time.perf_counter()
    atoms = find_atoms(img, px, "mos2", model=model, identify=False)
    dt = time.perf_counter() - t0
    res = mos2_checks(atoms, px, img.shape, img)
    d100 = fft_spacing(img, px)
    res["fft_d100_nm"] = d100
    res["scale_from_fft"] = d100 / (0.316 * np.sqrt(3) / 2)  # 1 if the file's calibration matches MoS2
    res["first_shell_vs_fft"] = res["first_shell_mean_nm"] / (d100 * 2 / 3)  # a/√3 = d100 · 2/3
    res.update(pixel_size_nm=px, shape=list(img.shape), seconds=dt, model=_model_name(model),
               labels={k: int(v) for k, v in atoms.label.value_counts().items()})
    OUT.mkdir(exist_ok=True)
    (OUT / f"real_mos2{suffix}.json").write_text(json.dumps(res, indent=2))
    lines = ["# Real data: 60 kV ADF-STEM of monolayer MoS2 (temul-toolkit example, 1024², 12.7 pm/px)", "",
             "`python benchmarks/real_data.py --sets mos2` — `lattice=\"mos2\"`, model: " + res["model"] + ". "
             "Expected from the 2H-MoS2 structure: 23.1 columns/nm², nearest-neighbour distance 0.182 nm, every "
             "first-shell pair Mo–S2.", ""] + mos2_lines(res)
    (OUT / f"real_mos2{suffix}.md").write_text("\n".join(lines) + "\n")
    _mos2_figure(img, atoms, res, IMAGES / f"real_mos2{suffix}.png")
    return res


def _mos2_figure(img, atoms, res, out):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(13, 6.2), gridspec_kw={"width_ratios": [1.3, 1]})
    crop = (slice(300, 556), slice(300, 556))
    ax[0].imshow(img[crop], cmap="gray")
    t = atoms[atoms.y.between(300, 555) & atoms.x.between(300, 555)]
    colours = {"lattice": "#4da3ff", "dopant": "#ff3b30", "vacancy": "#34c759"}
    for lab, c in colours.items():
        s = t[t.label == lab]
        ax[0].scatter(s.x - 300, s.y - 300, s=10 if lab == "lattice" else 40, c=c, label=f"{lab}")
    ax[0].set_title("real MoS2 (crop 256² of 1024²) with detections")
    ax[0].legend(loc="lower right", fontsize=8)
    ax[0].set_xticks([]), ax[0].set_yticks([])
    cols = atoms[atoms.label != "vacancy"]
    d, _ = cKDTree(cols[["y_nm", "x_nm"]].to_numpy()).query(cols[["y_nm", "x_nm"]].to_numpy(), 2)
    ax[1].hist(d[:, 1], bins=np.linspace(0.1, 0.3, 81), color="#555")
    ax[1].axvline(0.1824, color="r", ls="--", label="a/√3 = 0.182 nm")
    ax[1].set_xlabel("nearest-neighbour column distance (nm)")
    ax[1].set_ylabel("columns")
    ax[1].legend()
    ax[1].set_title(f"{res['columns']} columns, {res['columns_per_nm2']:.1f}/nm² (expected 23.1)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    print(f"wrote {out}")


# ----------------------------------------------------------------------------------------------
# Figures of the labelled sets


def _scale_bar(ax, pixel_size: float, shape, nm: float, origin=(0, 0)):
    h, w = shape
    L = nm / pixel_size
    x0, y0 = origin[1] + w * 0.05, origin[0] + h * 0.93
    ax.plot([x0, x0 + L], [y0, y0], color="white", lw=4, solid_capstyle="butt")
    ax.text(x0 + L / 2, y0 - h * 0.03, f"{nm:g} nm", color="white", ha="center", va="bottom", fontsize=10,
            fontweight="bold")


def _show(ax, f, smooth_nm: float, top: float, highpass_nm: float | None = None, window=None):
    """The frame, smoothed for the eye (Gaussian sigma ``smooth_nm``; less a Gaussian background
    of sigma ``highpass_nm`` when given), on fixed axes; grey levels from ``window`` (slices)."""
    img = ndi.gaussian_filter(np.asarray(f.image, np.float64), smooth_nm / f.pixel_size)
    if highpass_nm:
        img = img - ndi.gaussian_filter(img, highpass_nm / f.pixel_size)
    part = img[window] if window is not None else img
    ax.imshow(img, cmap="gray", vmin=np.percentile(part, 1), vmax=np.percentile(part, top))
    h, w = img.shape
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_autoscale_on(False)


def _busiest_window(truth: pd.DataFrame, shape, size: int, step: int = 32) -> tuple[int, int]:
    """Top-left corner (y, x) of the ``size``² window, on a grid of ``step`` px, with most labels."""
    h, w = shape
    corners = [(y, x) for y in range(0, h - size + 1, step) for x in range(0, w - size + 1, step)]
    inside = [int((truth.y.between(y, y + size - 1) & truth.x.between(x, x + size - 1)).sum()) for y, x in corners]
    return corners[int(np.argmax(inside))]


def _n_errors(found, truth, max_distance) -> int:
    _, tp, hit = _split(found, truth, max_distance)
    return int((~tp).sum() + (~hit).sum())


def _split(found: pd.DataFrame, truth: pd.DataFrame, max_distance: float):
    """Matched / false / missed masks of found dopants against true dopants."""
    from stemflow.metrics import match

    dop = found[found["label"].astype(str).eq("dopant")].reset_index(drop=True)
    if len(dop) and len(truth):
        m = match(dop, truth.reset_index(drop=True), max_distance)
    else:
        m = pd.DataFrame({"pred": [], "truth": []}, dtype=int)
    tp = np.zeros(len(dop), bool)
    tp[m["pred"].to_numpy(int)] = True
    hit = np.zeros(len(truth), bool)
    hit[m["truth"].to_numpy(int)] = True
    return dop, tp, hit


def figure_si(tables: dict, methods: list[str], out: Path, n: int = 5):
    """Overlay of labels and findings on a few Si-doped graphene frames, one row per method."""
    import matplotlib.pyplot as plt
    from stemflow.labelled import HALF_BOND_NM
    from stemflow.metrics import match

    frames = tables["frames"]
    picks = []
    for tag in ("Si1C3", "Si1C4", "Si2C5", "Si3C6"):       # the first frame of each main kind of complex
        picks += [f for f in frames if f.tag == tag][:1]
    errors = {f.name: sum(_n_errors(tables[m][f.name], f.truth[f.truth.element == "Si"], HALF_BOND_NM / f.pixel_size)
                          for m in methods) for f in frames}
    worst = max((f for f in frames if f not in picks), key=lambda f: errors[f.name])
    picks = picks[:n - 1] + [worst]                     # and the frame the methods get most wrong
    fig, axes = plt.subplots(len(methods), len(picks), figsize=(3.6 * len(picks), 4.0 * len(methods) + 0.6),
                             squeeze=False, layout="constrained")
    for r, meth in enumerate(methods):
        for c, f in enumerate(picks):
            ax = axes[r, c]
            _show(ax, f, 0.02, 99.7)
            found = tables[meth][f.name]
            md = HALF_BOND_NM / f.pixel_size
            t_si = f.truth[f.truth.element == "Si"]
            t_c = f.truth[f.truth.element == "C"].reset_index(drop=True)
            dop, tp, hit = _split(found, t_si, md)
            cols = found[~found["label"].astype(str).isin(["dopant", "vacancy"])]
            ax.scatter(cols.x, cols.y, s=6, c="#4da3ff", lw=0, alpha=0.8)
            allc = found[~found["label"].astype(str).eq("vacancy")].reset_index(drop=True)
            mh = match(allc, t_c, md) if len(allc) and len(t_c) else pd.DataFrame({"truth": []}, dtype=int)
            c_hit = np.zeros(len(t_c), bool)
            c_hit[mh["truth"].to_numpy(int)] = True
            ax.scatter(t_c.x[c_hit], t_c.y[c_hit], s=70, facecolors="none", edgecolors="#34c759", lw=1.2)
            ax.scatter(t_c.x[~c_hit], t_c.y[~c_hit], s=70, marker="s", facecolors="none", edgecolors="#ff9f0a", lw=1.5)
            ax.scatter(dop.x[tp], dop.y[tp], s=160, facecolors="none", edgecolors="#34c759", lw=2.5)
            ax.scatter(dop.x[~tp], dop.y[~tp], s=120, marker="x", c="#ff3b30", lw=2.5)
            ax.scatter(t_si.x[~hit], t_si.y[~hit], s=200, marker="s", facecolors="none", edgecolors="#ff9f0a", lw=2.5)
            _scale_bar(ax, f.pixel_size, f.image.shape, 0.5)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{meth} — {f.name}, {f.tag}, {f.pixel_size * 1000:.1f} pm/px", fontsize=10)
    handles = [plt.Line2D([], [], ls="", marker="o", mfc="none", mec="#34c759", mew=2.5, ms=12, label="Si found"),
               plt.Line2D([], [], ls="", marker="x", c="#ff3b30", mew=2.5, ms=10, label="false Si"),
               plt.Line2D([], [], ls="", marker="s", mfc="none", mec="#ff9f0a", mew=2.5, ms=12,
                          label="missed (Si big, C small)"),
               plt.Line2D([], [], ls="", marker="o", mfc="none", mec="#34c759", mew=1.2, ms=8,
                          label="labelled C found"),
               plt.Line2D([], [], ls="", marker="o", c="#4da3ff", ms=4, label="other columns found")]
    fig.legend(handles=handles, loc="outside lower center", ncol=5, fontsize=10, frameon=False)
    fig.suptitle("Real Si-doped graphene (60 kV HAADF, shown smoothed): hand labels vs what each method finds "
                 "(last column: the frame with most Si errors)", fontsize=12)
    fig.savefig(out, dpi=72)
    plt.close(fig)
    print(f"wrote {out}")


def figure_pt(tables: dict, methods: list[str], out: Path, picks=(0, 5, 8), crop: int = 256):
    """Overlay of labelled and found Pt atoms on a few frames, one row per method."""
    import matplotlib.pyplot as plt
    from stemflow.labelled import HEAVY_MATCH_PX

    frames = [tables["frames"][i] for i in picks if i < len(tables["frames"])]
    fig, axes = plt.subplots(len(methods), len(frames), figsize=(4.2 * len(frames), 4.5 * len(methods) + 0.6),
                             squeeze=False, layout="constrained")
    for c, f in enumerate(frames):
        y0, x0 = _busiest_window(f.truth, f.image.shape, crop)
        for r, meth in enumerate(methods):
            ax = axes[r, c]
            _show(ax, f, 0.03, 99.8, highpass_nm=0.3, window=(slice(y0, y0 + crop), slice(x0, x0 + crop)))
            ax.set_xlim(x0 - 0.5, x0 + crop - 0.5)
            ax.set_ylim(y0 + crop - 0.5, y0 - 0.5)
            dop, tp, hit = _split(tables[meth][f.name], f.truth, HEAVY_MATCH_PX)
            ax.scatter(dop.x[tp], dop.y[tp], s=90, facecolors="none", edgecolors="#34c759", lw=2)
            ax.scatter(dop.x[~tp], dop.y[~tp], s=60, marker="x", c="#ff3b30", lw=2)
            ax.scatter(f.truth.x[~hit], f.truth.y[~hit], s=90, marker="s", facecolors="none", edgecolors="#ff9f0a",
                       lw=2)
            _scale_bar(ax, f.pixel_size, (crop, crop), 1.0, origin=(y0, x0))
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{meth} — {f.name} (whole frame: {int(tp.sum())} found,\n{int((~tp).sum())} false, "
                         f"{int((~hit).sum())} missed; crop {crop}² of {f.image.shape[0]}²)", fontsize=9)
    handles = [plt.Line2D([], [], ls="", marker="o", mfc="none", mec="#34c759", mew=2, ms=10, label="Pt found"),
               plt.Line2D([], [], ls="", marker="x", c="#ff3b30", mew=2, ms=9, label="false Pt"),
               plt.Line2D([], [], ls="", marker="s", mfc="none", mec="#ff9f0a", mew=2, ms=10, label="Pt missed")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=11, frameon=False)
    fig.suptitle("Real Pt single atoms on carbon nitride (HAADF, 29.3 pm/px, shown smoothed, slow background "
                 "removed): hand labels vs found",
                 fontsize=12)
    fig.savefig(out, dpi=72)
    plt.close(fig)
    print(f"wrote {out}")


# ----------------------------------------------------------------------------------------------
# Report


def _f(v, fmt="{:.3f}"):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return fmt.format(v)


def _atomai_line(atomai: dict) -> str:
    return f"\n**AtomAI**: {'' if atomai['ok'] else 'not run — '}{atomai['reason']}"


def si_lines(res: dict, atomai: dict | None) -> list[str]:
    """The Si-doped graphene section of the report."""
    if "unavailable" in res:
        return [res["unavailable"]]
    m = res["methods"]
    names = [k for k in ("stemflow", "classical", "atomap") if k in m]
    head = {"stemflow": f"stemflow ({m['stemflow'].get('model', '')})",
            "classical": "classical: trackpy + 1 threshold, tuned on this set",
            "atomap": "atomap + 1 threshold, tuned on this set"}
    ok = [k for k in names if "unavailable" not in m[k]]
    rows = [("Si recall", "dopant_recall", "{:.3f}"), ("Si precision", "dopant_precision", "{:.3f}"),
            ("Si F1", "dopant_f1", "{:.3f}"), ("C recall (labelled C)", "host_recall", "{:.3f}"),
            ("C localisation, mean (pm)", "host_mean_pm", "{:.1f}"),
            ("C localisation, RMSE (pm)", "host_rmse_pm", "{:.1f}"),
            ("defect-type accuracy", "defect_accuracy", "{:.3f}"), ("Si labelled / found", None, None),
            ("threshold k (× median blob contrast)", "threshold", "{:.2f}"), ("time (s)", "seconds", "{:.1f}")]
    out = ["| | " + " | ".join(head[k] for k in ok) + " |", "|---" * (len(ok) + 1) + "|"]
    for label, key, fmt in rows:
        if key is None:
            vals = [f"{m[k]['n_dopant']} / {m[k]['n_found_dopant']}" for k in ok]
        else:
            vals = [_f(m[k].get(key), fmt) if key in m[k] else "—" for k in ok]
        out.append(f"| {label} | " + " | ".join(vals) + " |")
    for k in names:
        if "unavailable" in m[k]:
            out.append(f"\n**{k}**: not run — {m[k]['unavailable']}")
    if atomai is not None:
        out.append(_atomai_line(atomai))
    ho = m.get("stemflow", {}).get("host_offsets") or {}
    if ho:
        out += ["", f"**Where the C localisation error comes from** (stemflow's {ho['n']} matched labelled C in "
                    f"{ho['n_images']} images): mean distance {ho['mean_pm']:.1f} pm; mean offset "
                    f"({ho['mean_vector_pm'][0]:.1f}, {ho['mean_vector_pm'][1]:.1f}) pm (y, x). Along the line from "
                    f"the nearest labelled Si the offset is {ho['radial_mean_pm']:.1f} pm on average (negative: "
                    f"towards the Si), standard deviation {ho['radial_sd_pm']:.1f} pm. Each image's mean offset "
                    f"varies by {ho['image_mean_sd_pm'][0]:.1f} / {ho['image_mean_sd_pm'][1]:.1f} pm (SD, y / x) "
                    "from image to image. An oracle that knew the labels and removed each image's mean offset "
                    f"would leave {ho['without_image_means_pm']:.1f} pm; removing the pull towards the Si, "
                    f"{ho['without_radial_bias_pm']:.1f} pm; both, {ho['without_both_pm']:.1f} pm (an image with matched "
                    f"labelled C holds {ho['n'] / max(ho['n_images'], 1):.1f} of them on average, so part of the spread of its mean "
                    "offset is the columns' own scatter). What remains is scatter from column to column, between "
                    "stemflow's fits and the labels."]
        bs = ho.get("by_pixel_size") or {}
        if bs:
            out[-1] += (" By pixel size (mean distance; offset along the Si direction; median first-shell Si–C "
                        "distance by the labels and in stemflow's table): " + "; ".join(
                            f"{k} pm/px {v['mean_pm']:.1f} pm over {v['n']} C, {v['radial_mean_pm']:.1f} pm, "
                            f"{v['si_c_median_labels_pm']:.0f} / {v['si_c_median_stemflow_pm']:.0f} pm"
                            for k, v in bs.items()) + ". A bond length does not depend on the sampling; the "
                        "labels' Si–C distance does.")
        lf = ho.get("label_form") or {}
        if lf:
            n_all = sum(v["n"] for v in lf.values())
            share = sum(v["n"] * v["share_rational"] for v in lf.values()) / max(n_all, 1)
            out[-1] += (f" How the labels were made: {share:.0%} of the {n_all} labelled atoms have both coordinates "
                        "whole multiples of 1/N px for an N of at most 64 (a pair drawn at random, about 2.5 in a "
                        "million): they are unweighted centroids of N-pixel masks, a segmentation's output rather "
                        "than fits to the columns (median N " + ", ".join(
                            f"{v['median_pixels']:.0f} at {k} pm/px" for k, v in lf.items())
                        + f"; largest {max(v['max_pixels'] for v in lf.values())}). Such a centroid moves by "
                        "a fraction of a pixel whenever a pixel at the mask's edge crosses its threshold.")
        sim = ho.get("simulated")
        if sim:
            out[-1] += (f" Control on stemflow's simulator, whose truth is exact ({sim['frames']} frames of 512², "
                        f"{sim['pixel_size_nm'] * 1000:.1f} pm/px, 10⁵ e⁻/Å², {sim['n']} first-shell C of Si1C3): the "
                        f"same offset along the Si direction is {sim['radial_mean_pm']:.1f} ± {sim['radial_sd_pm']:.1f} pm,"
                        " so the finder itself does not pull columns towards a Si on images the simulator makes.")
        rel = ho.get("simulated_relaxed")
        if rel and "fit_radial_mean_pm" in ho:
            sc = ho["si_c_median_pm"]
            out[-1] += (f" With the first-shell C pushed {rel['relax_pm']:.0f} pm away from each Si in the simulated "
                        f"frames (a longer Si–C bond), stemflow's table sits {rel['radial_mean_pm']:.1f} ± "
                        f"{rel['radial_sd_pm']:.1f} pm along the Si direction (the network keeps part of the lattice it "
                        f"learned) but the columns fitted to the image alone sit {rel['fit_radial_mean_pm']:.1f} ± "
                        f"{rel['fit_radial_sd_pm']:.1f} pm: the image fit follows where the columns are. On the real "
                        f"images that image fit sits {ho['fit_radial_mean_pm']:.1f} ± {ho['fit_radial_sd_pm']:.1f} pm "
                        f"from the labels along the Si direction, like stemflow's table: the median Si–C distance of "
                        f"the {ho['si_c_n']} first-shell pairs is {sc['labels']:.0f} pm by the labels, "
                        f"{sc['stemflow']:.0f} pm in stemflow's table and {sc['fit']:.0f} pm by the image fit.")
        tails, tails_rel = ho.get("simulated_tails"), ho.get("simulated_tails_relaxed")
        if tails and tails_rel:
            out[-1] += (" The image fit is not free of bias either: with a probe that has tails (the simulator's "
                        "aberrated 60 kV probe of `sim_vs_real.py`, no scan distortions) the columns fitted to the image "
                        f"alone sit {tails['fit_radial_mean_pm']:.1f} ± {tails['fit_radial_sd_pm']:.1f} pm along the Si "
                        f"direction without relaxation and {tails_rel['fit_radial_mean_pm']:.1f} ± "
                        f"{tails_rel['fit_radial_sd_pm']:.1f} pm with it (the bright Si's tail pulls its neighbours' fits), "
                        f"stemflow's table {round(tails['radial_mean_pm'], 1) + 0.0:+.1f} and {round(tails_rel['radial_mean_pm'], 1) + 0.0:+.1f} pm. So the "
                        "real images' fit sitting nearer the Si than the labels does not show that the labels sit too far "
                        "out: a probe tail would do the same.")
        ms = Path(__file__).parent / "results" / "si_matched_synthetic.json"
        if ms.exists():         # written by benchmarks/si_matched_synthetic.py
            j = json.loads(ms.read_text())
            r_syn = j["results"]["synthetic, exact truth"]
            out[-1] += (" What these frames' counts allow: synthetic frames built from each real frame (its gain and "
                        "offset, its columns with the labelled complexes at the labels, Gaussian columns of the measured "
                        "width and brightness, Poisson counts; exact truth) put stemflow's table "
                        f"{r_syn['host_mean_pm']:.1f} pm from the labelled C and the image fit alone "
                        f"{r_syn['fit_mean_pm']:.1f} pm, and the Cramér–Rao bound of a column's centre from its own "
                        f"counts is {j['meta']['crlb_median_pm']:.1f} pm (median over the labelled C): closer than that "
                        "only knowledge of the lattice around a column can place it, and that knowledge is what pulls "
                        "a relaxed first shell towards the ideal lattice; see "
                        "[si_matched_synthetic.md](si_matched_synthetic.md).")
        sym = ho.get("symmetry") or {}
        if sym.get("n_complexes"):
            lab, sf, fit = sym["labels"], sym["stemflow"], sym["fit"]
            out[-1] += (f" A check that needs no ground truth: a lone Si with three C is threefold symmetric in "
                        f"projection. Over the {sym['n_complexes']} labelled Si1C3 complexes whose four atoms stemflow "
                        "all found, the three Si–C distances of one complex spread by (median SD) "
                        f"{lab['distance_sd_pm']:.1f} pm by the labels, {sf['distance_sd_pm']:.1f} pm in stemflow's "
                        f"table and {fit['distance_sd_pm']:.1f} pm by the image fit, and their angles depart from 120° "
                        f"by {lab['angle_dev_deg']:.1f}°, {sf['angle_dev_deg']:.1f}° and {fit['angle_dev_deg']:.1f}°: "
                        + ("the labels are the least symmetric of the three."
                           if lab["distance_sd_pm"] > max(sf["distance_sd_pm"], fit["distance_sd_pm"])
                           and lab["angle_dev_deg"] > max(sf["angle_dev_deg"], fit["angle_dev_deg"])
                           else "no set of positions is plainly the most symmetric."))
    out += ["", "Defect types (true → found, complexes), as `stemflow.labelled.score_dopant_complexes` counts them:",
            ""]
    conf = {k: m[k]["confusion"] for k in ok}
    pairs = sorted(set().union(*[set(c) for c in conf.values()]))
    out += ["| true → found | " + " | ".join(ok) + " |", "|---" * (len(ok) + 1) + "|"]
    for p in pairs:
        out.append(f"| {p.replace('->', '→')} | " + " | ".join(str(conf[k].get(p, 0)) for k in ok) + " |")
    return out


def pt_lines(res: dict, atomai: dict | None) -> list[str]:
    """The Pt single-atom section of the report."""
    if "unavailable" in res:
        return [res["unavailable"]]
    m = res["methods"]
    names = [k for k in ("stemflow", "classical", "atomap") if k in m]
    ok = [k for k in names if "unavailable" not in m[k]]
    head = {"stemflow": f"stemflow, `lattice=\"amorphous\"` ({m['stemflow'].get('model', '')})",
            "classical": "classical: trackpy + 1 threshold, tuned on these frames",
            "atomap": "atomap + 1 threshold, tuned on these frames"}
    rows = [("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"), ("F1", "f1", "{:.3f}"),
            ("rows on the support per frame (not Pt)", "support_rows", "{:.0f}"),
            ("threshold k (× frame noise)", "threshold", "{:.2f}"), ("time (s)", "seconds", "{:.1f}")]
    out = ["| | " + " | ".join(head[k] for k in ok) + " |", "|---" * (len(ok) + 1) + "|"]
    for label, key, fmt in rows:
        out.append(f"| {label} | " + " | ".join(_f(m[k].get(key), fmt) if key in m[k] else "—" for k in ok) + " |")
    out.append("| Pt labelled | " + " | ".join(str(m[k]["n_true"]) for k in ok) + " |")
    for k in names:
        if "unavailable" in m[k]:
            out.append(f"\n**{k}**: not run — {m[k]['unavailable']}")
    if atomai is not None:
        out.append(_atomai_line(atomai))
    if "sweep" in res:
        b = res["sweep"]["best"]
        out += ["", f"What stemflow's rule allows here at best: its significance threshold swept on these very "
                f"frames (2.5–8 σ; the default {res['sweep']['default_sigma']:g} σ is not tuned) gives at most "
                f"F1 {b['f1']:.3f} (P {b['precision']:.3f}, R {b['recall']:.3f}) at {b['sigma']:g} σ."]
    sep = Path(__file__).parent / "results" / "heavy_atom_separability.json"
    if sep.exists():            # written by benchmarks/heavy_atom_separability.py
        rows = json.loads(sep.read_text())["rows"]
        learned = max((r for r in rows if "trained on the other frames" in r["method"]), key=lambda r: r["f1"])
        out += ["", f"What any rule over local evidence reaches on these frames: classifiers trained on the other "
                f"frames' labels, over local features of each candidate or the pixels around it, give at best F1 "
                f"{learned['f1']:.3f} (P {learned['precision']:.3f}, R {learned['recall']:.3f})"
                + "".join(f"; significance with its threshold chosen frame by frame on each frame's own labels, "
                          f"F1 {r['f1']:.3f}" for r in rows if "frame by frame" in r["method"])
                + "; see [heavy_atom_separability.md](heavy_atom_separability.md)."]
        ie = json.loads(sep.read_text()).get("integrated_excess")
        if ie:
            out[-1] += (f" Of the {ie['strong_on_label'] + ie['strong_on_none']} candidates at or above 4 σ, "
                        f"{ie['strong_on_none']} lie on no label. Their integrated excess (the counts a single heavy atom "
                        "adds, which a light amorphous support can hardly pile into one probe-sized spot) has a median "
                        f"of {ie['median_on_none']:.2f} against {ie['median_on_label']:.2f} for those on a label, and "
                        f"{ie['share_on_none_within_label_iqr']:.2f} of them lie inside the labelled atoms' "
                        "interquartile range (0.5 if both were one population): many of the unlabelled bright spots "
                        "hold as many counts as the labelled atoms do.")
        dn = json.loads(sep.read_text()).get("dark_null")
        if dn:
            out[-1] += (f" The support's dark side, read as a null without labels (round dark spots by the same rule on "
                        f"the negated frame), would explain {dn['dark_4']} bright spots at 4 σ if the support's texture were symmetric, against the "
                        f"{dn['bright_on_none_4']} round ones found on no label, and {dn['dark_5']} against "
                        f"{dn['bright_on_none_5']} at 5 σ.")
    unet = Path(__file__).parent / "results" / "pt_unet_cv.json"
    if unet.exists():           # written by benchmarks/pt_unet_cv.py
        u = json.loads(unet.read_text())
        p, r, f1 = max(u["sweep"].values(), key=lambda v: v[2])
        out += ["", f"A whole-frame U-Net trained on the labels themselves (five folds, each frame scored by a "
                f"network that never saw its labels, threshold swept afterwards) gives at best F1 {f1:.3f} "
                f"(P {p:.3f}, R {r:.3f}); see [pt_unet_cv.md](pt_unet_cv.md)."]
    matched = Path(__file__).parent / "results" / "pt_matched_synthetic.json"
    if matched.exists():        # written by benchmarks/pt_matched_synthetic.py
        rows = json.loads(matched.read_text())["rows"]
        at4 = {r["frames"]: r for r in rows if r["probe_sigma_nm"] == 0.05 and r["threshold"] == 4.0}
        own = [r for k, r in at4.items() if k.endswith("own amplitude")]
        lo = next(r for r in own if "texture" in r["frames"])
        hi = next(r for r in own if "smoothed" in r["frames"])
        out += ["", "With exact truth and these frames' own brightness and noise (synthetic frames built from each "
                "real frame: its detector gain and offset, its support level, the labelled atoms' measured width and "
                "brightness at the labelled positions, Poisson counts), stemflow's rule at its defaults gives F1 "
                f"{lo['f1']:.3f} (P {lo['precision']:.3f}, R {lo['recall']:.3f}) when the support keeps its texture "
                f"above 0.45 nm and {hi['f1']:.3f} (P {hi['precision']:.3f}, R {hi['recall']:.3f}) on a smoothed "
                "support: the rest of the gap to the real frames lies in what those frames lack, the support's "
                "atom-sized texture and any disagreement between labels and image. With the texture kept, recall "
                f"is {lo['recall']:.3f} against {at4['real frames']['recall']:.3f} on the real frames (the labelled "
                "atoms the rule misses are, as far as these frames show, those too dim for the noise at their "
                "support), precision "
                f"{lo['precision']:.3f} against {at4['real frames']['precision']:.3f}: the real frames' extra "
                "false calls are bright spots the labels do not hold; see "
                "[pt_matched_synthetic.md](pt_matched_synthetic.md)."]
    out += ["", "Per frame (true / false / missed Pt; support rows):", "",
            "| frame | " + " | ".join(ok) + " |", "|---" * (len(ok) + 1) + "|"]
    per = {k: {r["image"]: r for r in m[k]["per_frame"]} for k in ok}
    for img in per[ok[0]]:
        cells = [f"{per[k][img]['tp']} / {per[k][img]['fp']} / {per[k][img]['fn']}; {per[k][img]['support_rows']}"
                 for k in ok]
        out.append(f"| {img} | " + " | ".join(cells) + " |")
    return out


def write_report(results: dict, suffix: str):
    """Write ``real_data{suffix}.md`` and ``.json`` from the results of every set."""
    OUT.mkdir(exist_ok=True)
    (OUT / f"real_data{suffix}.json").write_text(json.dumps(results, indent=1, default=float))
    lines = ["# Real data: stemflow beside classical finders", "",
             "Written by `python benchmarks/real_data.py` (every number here is measured by it; "
             f"sets run: {', '.join(k for k in SETS if k in results)}). "
             "The labelled sets are development data: the classical baselines' one threshold is tuned on "
             "the very frames it is scored on (an upper bound for the rule); stemflow is not tuned on them.", ""]
    if "si" in results:
        r = results["si"]
        lines += [f"## Si-doped graphene, 60 kV HAADF ({r.get('n_images', '?')} real images, hand-labelled Si "
                  "complexes)", "",
                  f"Run {r.get('date', '')}. Scored by `stemflow.labelled.score_dopant_complexes`: one-to-one matching "
                  "within 0.071 nm; C recall and localisation over the labelled first-shell C only; every found dopant "
                  "matching no labelled Si is false. Classical: `trackpy.locate` (diameter 1 Å, separation 0.08 nm), "
                  "a blob is Si when its background-subtracted peak exceeds k × the frame's median blob; defect "
                  "types by `stemflow.chem.identify` on its table (positions and labels only, no image, so "
                  "stemflow's dopant check does not relabel its dopants). Figure: `docs/images/real_si_graphene"
                  f"{suffix}.png`.", ""]
        lines += si_lines(r, results.get("atomai")) + [""]
    if "pt" in results:
        r = results["pt"]
        lines += [f"## Pt single atoms on carbon nitride, HAADF ({r.get('n_images', '?')} frames 512², 29.3 pm/px)", "",
                  f"Run {r.get('date', '')}. Scored by `stemflow.labelled.score_heavy_atoms`: found dopant rows matched "
                  "one to one within 5 px; every other row is counted as on the support. Classical: `trackpy.locate` "
                  "(diameter and separation 0.15 nm), a blob is Pt when its background-subtracted peak exceeds k × the "
                  "frame's noise. For reference, an independent test measured F1 0.60 for such a baseline. Figure: "
                  f"`docs/images/real_pt{suffix}.png`.", ""]
        lines += pt_lines(r, results.get("atomai")) + [""]
    if "mos2" in results:
        r = results["mos2"]
        lines += ["## MoS2, 60 kV ADF-STEM (temul-toolkit example, 1024², 12.7 pm/px): physics checks, no labels", "",
                  f"Run {r.get('date', '')}, `lattice=\"mos2\"`, model: {r.get('model', '')}. Expected from the 2H-MoS2 "
                  "structure: 23.1 columns/nm², nearest-neighbour distance 0.182 nm, every first-shell pair Mo–S2. "
                  f"Figure: `docs/images/real_mos2{suffix}.png`.", ""]
        lines += mos2_lines(r) + [""]
    cal = {k: results.get(k, {}).get("methods", {}).get("stemflow", {}).get("calibration") for k in ("si", "pt")}
    if any(cal.values()):
        lines += ["## Calibration of `prob` (stemflow's dopant calls)", "",
                  "A dopant call is right when it matches a labelled dopant (the only class labelled completely "
                  "in these sets). Expected calibration error over 10 bins of `prob`; diagram: "
                  f"`docs/images/real_calibration{suffix}.png`.", "",
                  "| set | dopant calls | ECE | share right where prob ≥ 0.9 |", "|---|---|---|---|"]
        for k, name in (("si", "Si-doped graphene"), ("pt", "Pt on carbon nitride")):
            c = cal[k]
            if not c:
                continue
            t = pd.DataFrame(c["table"])
            hi = t[t["lo"] >= 0.9 - 1e-9] if len(t) else t
            share = float((hi["accuracy"] * hi["n"]).sum() / hi["n"].sum()) if len(hi) and hi["n"].sum() else float("nan")
            lines.append(f"| {name} | {c['n']} | {_f(c['ece'])} | {_f(share)} |")
        hp = Path(__file__).parent / "results" / "heavy_atom_prob.json"
        if cal.get("pt") and hp.exists():      # written by benchmarks/heavy_atom_prob.py
            h = json.loads(hp.read_text())
            lines += ["", "`prob` of a heavy atom on an amorphous support comes from its significance through a "
                      "logistic curve fitted on these very Pt frames (`stemflow.chem.heavy.heavy_atom_prob`), so the "
                      "Pt row is in-sample; scored with the fit to the other frames, each frame's calls give ECE "
                      f"{_f(h['ece_leave_one_frame_out'])} ([heavy_atom_prob.md](heavy_atom_prob.md))."]
        lines.append("")
    if "seconds_total" in results:
        lines += [f"Last run: {results['seconds_total']:.0f} s for the sets {', '.join(results['sets_last_run'])}, "
                  f"on {os.cpu_count()} CPU cores."]
    text = "\n".join(lines) + "\n"
    (OUT / f"real_data{suffix}.md").write_text(text)
    print(text)


README = Path(__file__).resolve().parent.parent / "README.md"
_START, _END = "<!-- real-data:start -->", "<!-- real-data:end -->"


def readme_block(results: dict) -> str:
    """The README's real-data status table, from the measured results (written between markers)."""
    rows = ["| real data (dev sets; `benchmarks/results/real_data.md`) | stemflow | classical baseline* | target |",
            "|---|---|---|---|"]
    si = results.get("si", {}).get("methods", {})
    if "stemflow" in si:
        a, b = si["stemflow"], si.get("classical", {})
        rows += [
            f"| Si-doped graphene, {results['si'].get('n_images')} frames: Si recall / precision | "
            f"{_f(a['dopant_recall'])} / {_f(a['dopant_precision'])} | {_f(b.get('dopant_recall'))} / "
            f"{_f(b.get('dopant_precision'))} | ≥ 0.99 / ≥ 0.97 |",
            f"| … defect type (Si1C3, Si1C4, Si2Cn, Si3C6 …) | {_f(a['defect_accuracy'])} | "
            f"{_f(b.get('defect_accuracy'))} | ≥ 0.92 |",
            f"| … labelled C found; localisation mean | {_f(a['host_recall'])}; {_f(a['host_mean_pm'], '{:.1f}')} pm | "
            f"{_f(b.get('host_recall'))}; {_f(b.get('host_mean_pm'), '{:.1f}')} pm | ≤ 9 pm |"]
        cal = a.get("calibration")
        if cal:
            rows.append(f"| … calibration of dopant `prob` (ECE) | {_f(cal['ece'])} | | ≤ 0.05 |")
    pt = results.get("pt", {}).get("methods", {})
    if "stemflow" in pt:
        a, b = pt["stemflow"], pt.get("classical", {})
        rows += [f"| Pt single atoms on carbon nitride, {results['pt'].get('n_images')} frames: F1 (P / R) | "
                 f"{_f(a['f1'])} ({_f(a['precision'])} / {_f(a['recall'])}) | {_f(b.get('f1'))} "
                 f"({_f(b.get('precision'))} / {_f(b.get('recall'))}) | ≥ 0.88 |",
                 f"| … rows reported on the support per frame | {a['support_rows']:.1f} | "
                 f"{_f(b.get('support_rows'), '{:.0f}')} | 0 |"]
    rows += ["", "\\* `trackpy.locate` plus one intensity threshold tuned on the same labelled frames."]
    why = _shortfall_lines(results)
    if why:
        rows += ["", why]
    return "\n".join(rows)


def _shortfall_lines(results: dict) -> str:
    """One paragraph, from the measured results, on what bounds the two figures short of their
    targets (C localisation, Pt F1); empty when those results are missing."""
    res_dir = Path(__file__).parent / "results"
    parts = []
    ho = results.get("si", {}).get("methods", {}).get("stemflow", {}).get("host_offsets") or {}
    syn = res_dir / "si_matched_synthetic.json"
    if ho.get("by_pixel_size") and syn.exists():       # written by benchmarks/si_matched_synthetic.py
        crlb = json.loads(syn.read_text()).get("meta", {}).get("crlb_by_pixel_size", {})
        by = [f"{v['mean_pm']:.1f} pm at {k} pm/px (bound {crlb[k]:.1f} pm, {v['n']} C)"
              for k, v in ho["by_pixel_size"].items() if k in crlb]
        lf = ho.get("label_form") or {}
        share = (sum(v["n"] * v["share_rational"] for v in lf.values()) / max(sum(v["n"] for v in lf.values()), 1)
                 if lf else float("nan"))
        if by:
            parts.append("C localisation against the labels: " + "; ".join(by) + ", the bound being the Cramér–Rao "
                         "bound of a column's centre from its own counts at each sampling; "
                         + (f"{share:.0%} of the labels are unweighted centroids of pixel masks "
                            "(their coordinates whole multiples of 1/N px), with their own scatter" if lf else "")
                         + " ([real_data.md](benchmarks/results/real_data.md), "
                         "[si_matched_synthetic.md](benchmarks/results/si_matched_synthetic.md)).")
    sep, unet = res_dir / "heavy_atom_separability.json", res_dir / "pt_unet_cv.json"
    if sep.exists() and unet.exists():
        rows = json.loads(sep.read_text()).get("rows", [])
        oracle = [r["f1"] for r in rows if "frame by frame" in r.get("method", "")]
        sweep = list(json.loads(unet.read_text()).get("sweep", {}).values())
        if oracle and sweep:
            f1 = max(v[2] for v in sweep)
            parts.append(f"Pt F1: a threshold chosen frame by frame on each frame's own labels reaches {max(oracle):.3f}, "
                         f"and a U-Net trained on the other frames' labels at most {f1:.3f} (its threshold swept on "
                         "the scored frames); many bright spots the labels leave out hold as many counts as labelled "
                         "atoms ([heavy_atom_separability.md](benchmarks/results/heavy_atom_separability.md)).")
    return ("Short of the targets, and what bounds them. " + " ".join(parts)) if parts else ""


def update_readme(results: dict) -> None:
    """Replace the block between the README's real-data markers (if it has them)."""
    if not README.exists():
        return
    text = README.read_text()
    if _START not in text or _END not in text:
        return
    head, rest = text.split(_START, 1)
    _, tail = rest.split(_END, 1)
    README.write_text(f"{head}{_START}\n{readme_block(results)}\n{_END}{tail}")


def main(argv=None) -> int:
    """Command line: see the module's docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated, from si, pt, mos2 (default all)")
    ap.add_argument("--model", default=None, help="weights to evaluate (a .pt with its .json); default: bundled")
    ap.add_argument("--out-suffix", default="", help="appended to every output file name, e.g. _candidate")
    ap.add_argument("--atomap-python", default=DEFAULT_ATOMAP, help="python of an environment with atomap")
    ap.add_argument("--atomai-python", default=DEFAULT_ATOMAI, help="python of an environment with atomai")
    args = ap.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        ap.error(f"unknown set(s) {unknown}; known: {', '.join(SETS)}")

    import matplotlib

    matplotlib.use("Agg")
    from stemflow.labelled import dev_data_dir

    t_all = time.perf_counter()
    path = OUT / f"real_data{args.out_suffix}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    date = time.strftime("%Y-%m-%d")
    data_dir = dev_data_dir()
    missing = ("labelled dev data not found (shared/data beside the repository, or STEMFLOW_DEV_DATA): "
               "section not measured")
    if {"si", "pt"} & set(sets):
        results["atomai"] = atomai_status(args.atomai_python)
    for name in sets:
        t0 = time.perf_counter()
        if name == "mos2":
            results["mos2"] = dict(run_mos2(args.model, args.out_suffix), date=date)
        elif data_dir is None:
            results[name] = {"unavailable": missing, "date": date}
        else:
            run = run_si if name == "si" else run_pt
            res, tables = run(data_dir, args.model, args.atomap_python)
            res["date"] = date
            results[name] = res
            methods = [k for k in ("stemflow", "classical", "atomap") if k in tables]
            if name == "si":
                figure_si(tables, methods, IMAGES / f"real_si_graphene{args.out_suffix}.png")
            else:
                figure_pt(tables, methods, IMAGES / f"real_pt{args.out_suffix}.png")
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    figure_calibration(results, IMAGES / f"real_calibration{args.out_suffix}.png")
    results["seconds_total"] = time.perf_counter() - t_all
    results["sets_last_run"] = sets
    write_report(results, args.out_suffix)
    if not args.out_suffix:
        update_readme(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

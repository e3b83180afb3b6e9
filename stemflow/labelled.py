"""Labelled real images: readers for hand-labelled sets and the rules they are scored by.

Two kinds of labelled real data are read here (the development sets in ``shared/data`` follow
them; any set written the same way works):

- **dopant complexes** (``si_graphene``): an ``.npz`` of images ``img000`` … and a ``.json`` list
  with one entry per image: ``pm_per_px`` and ``defects``, a list of complexes, each a list of
  ``[x, y, element]`` (px, x = column). Only the dopants and their first shell are labelled.
- **heavy single atoms** (``heavy_atoms``): an ``.npz`` of images ``img00`` … with labels
  ``xy00`` … (``[x, y]`` px of every heavy atom), and a ``.json`` with ``pixel_size_nm``.

Scoring rules (the same everywhere these sets are used):

- dopant complexes: one-to-one matching (:func:`stemflow.metrics.match`) within half a C–C bond
  (0.071 nm). Dopant recall and precision over found dopants (every found dopant that matches no
  labelled dopant is false); host recall over the labelled host atoms only (other host atoms are
  real but unlabelled); localisation over matched host pairs, pm; the defect type of a complex is
  ``Si{n}C{m}`` (n dopants of the complex, m distinct host atoms bonded to them): a found complex
  is the majority of the ``defect`` names of its found dopants, missed when none is found.
- heavy single atoms: precision, recall and F1 of found dopants matched one to one within 5 px;
  ``support_rows`` counts every other row found (the support should give none).

Units: positions in px, pixel sizes in nm/px, distances in pm where the name says so.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .errors import InputError, InputNotFoundError
from .metrics import match

__all__ = ["LabelledFrame", "read_dopant_complexes", "read_heavy_atoms", "score_dopant_complexes",
           "score_heavy_atoms", "dev_data_dir", "HALF_BOND_NM", "HEAVY_MATCH_PX"]

#: Matching distance for dopant complexes in graphene: half the C–C bond, nm.
HALF_BOND_NM = 0.071
#: Matching distance for heavy single atoms, px.
HEAVY_MATCH_PX = 5.0


@dataclass
class LabelledFrame:
    """One labelled real image.

    Attributes
    ----------
    name : str
    image : ndarray (y, x), float32
    pixel_size : float
        nm/px.
    truth : DataFrame
        ``y``, ``x`` (px), ``element`` and ``complex`` (index of the labelled complex, -1 when
        the set has no complexes).
    tag : str
        The image's main complex, or the set's name.
    """

    name: str
    image: np.ndarray
    pixel_size: float
    truth: pd.DataFrame
    tag: str = ""
    meta: dict = field(default_factory=dict)


def dev_data_dir() -> Path | None:
    """The labelled development data (``shared/data`` beside the repository, or the directory in
    ``STEMFLOW_DEV_DATA``), or None when it is not there."""
    import os

    env = os.environ.get("STEMFLOW_DEV_DATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent.parent
    candidates += [here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if (c / "si_graphene_dev.npz").exists() or (c / "pt_single_atoms_dev.npz").exists():
            return c
    return None


def _open(path) -> tuple[Path, Path]:
    p = Path(path)
    npz, js = p.with_suffix(".npz"), p.with_suffix(".json")
    for f in (npz, js):
        if not f.exists():
            raise InputNotFoundError(f"labelled set {f} not found: pass the path of the .npz (its .json "
                                     "beside it)")
    return npz, js


def read_dopant_complexes(path) -> list[LabelledFrame]:
    """Read a set of images with labelled dopant complexes (``si_graphene_dev.npz`` + ``.json``).

    Parameters
    ----------
    path : str or Path
        The ``.npz`` (or the ``.json``; the other must sit beside it).

    Returns
    -------
    list of LabelledFrame
        ``truth`` has one row per labelled atom: ``y``, ``x`` (px), ``element``, ``complex``.

    Examples
    --------
    >>> frames = read_dopant_complexes("shared/data/si_graphene_dev.npz")   # doctest: +SKIP
    >>> frames[0].truth.element.value_counts()                             # doctest: +SKIP
    """
    npz, js = _open(path)
    meta = json.loads(js.read_text())
    out = []
    with np.load(npz) as data:
        keys = sorted(k for k in data.files if k.startswith("img"))
        if len(keys) != len(meta):
            raise InputError(f"{npz} has {len(keys)} images but {js} describes {len(meta)}")
        for key, m in zip(keys, meta):
            rows = [(y, x, e, c) for c, comp in enumerate(m["defects"]) for (x, y, e) in comp]
            truth = pd.DataFrame(rows, columns=["y", "x", "element", "complex"])
            out.append(LabelledFrame(key, np.asarray(data[key], np.float32), m["pm_per_px"] / 1000.0,
                                     truth, m.get("tag", ""), {"id": m.get("id", key)}))
    return out


def read_heavy_atoms(path, element: str = "Pt") -> list[LabelledFrame]:
    """Read a set of images with every heavy single atom labelled (``pt_single_atoms_dev``).

    Returns
    -------
    list of LabelledFrame
        ``truth``: ``y``, ``x`` (px), ``element`` (= ``element``), ``complex`` (-1).
    """
    npz, js = _open(path)
    meta = json.loads(js.read_text())
    px = float(meta["pixel_size_nm"])
    out = []
    with np.load(npz) as data:
        keys = sorted(k for k in data.files if k.startswith("img"))
        for key in keys:
            if "xy" + key[3:] not in data.files:
                raise InputError(f"{npz} has image {key} but no labels xy{key[3:]}: every image needs its "
                                 "[x, y] label array")
            xy = np.asarray(data["xy" + key[3:]], np.float64).reshape(-1, 2)
            truth = pd.DataFrame({"y": xy[:, 1], "x": xy[:, 0], "element": element, "complex": -1})
            out.append(LabelledFrame(key, np.asarray(data[key], np.float32), px, truth, element))
    return out


def _dopant_rows(atoms: pd.DataFrame) -> pd.Series:
    return atoms["label"].astype(str).eq("dopant")


def score_dopant_complexes(frames: list[LabelledFrame], find: Callable[[LabelledFrame], pd.DataFrame],
                           dopant: str = "Si", host: str = "C") -> tuple[dict, pd.DataFrame]:
    """Score a finder on images with labelled dopant complexes.

    Parameters
    ----------
    frames : list of LabelledFrame
        From :func:`read_dopant_complexes`.
    find : callable
        ``find(frame) -> atoms table`` with ``y``, ``x`` (px) and ``label`` (``dopant`` for
        dopants; any other label but ``vacancy`` and ``dopant`` — ``lattice``, ``unknown`` —
        counts as a host column, so a dopant called on a labelled host atom does not find it)
        and, to score defect types, ``defect``. Ties of the majority rule go to the dopant
        found first.

    Returns
    -------
    summary : dict
        ``dopant_recall``, ``dopant_precision``, ``dopant_f1``, ``host_recall``,
        ``host_rmse_pm``, ``host_mean_pm`` (localisation of matched host atoms),
        ``defect_accuracy`` (NaN without a ``defect`` column), counts ``n_dopant``,
        ``n_found_dopant``, ``n_complex``, and ``confusion`` (true type → found type → count).
    per_frame : DataFrame
        One row per image with the same counts.
    """
    tp = fp = fn = 0
    host_found = host_total = 0
    host_d = []
    n_cx = right = 0
    confusion: Counter = Counter()
    rows = []
    for fr in frames:
        atoms = find(fr)
        md = HALF_BOND_NM / fr.pixel_size
        truth = fr.truth
        t_dop = truth[truth.element == dopant].reset_index(drop=True)
        t_host = truth[truth.element == host].reset_index(drop=True)
        is_dop = _dopant_rows(atoms)
        dop = atoms[is_dop].reset_index(drop=True)
        m = match(dop, t_dop, md) if len(dop) and len(t_dop) else pd.DataFrame(columns=["pred", "truth", "distance"])
        f_tp = len(m)
        tp += f_tp
        fp += len(dop) - f_tp
        fn += len(t_dop) - f_tp
        cols = atoms[~atoms["label"].astype(str).isin(["vacancy", "dopant"])].reset_index(drop=True)
        mh = match(cols, t_host, md) if len(cols) and len(t_host) else pd.DataFrame(columns=["pred", "truth", "distance"])
        host_found += len(mh)
        host_total += len(t_host)
        host_d += list(np.asarray(mh["distance"], float) * fr.pixel_size * 1000.0)
        has_defect = "defect" in atoms.columns
        cx_right = 0
        for c, group in truth.groupby("complex"):
            n_d = int((group.element == dopant).sum())
            n_h = int((group.element == host).sum())
            true_type = f"{dopant}{n_d}{host}{n_h}"
            n_cx += 1
            idx = np.flatnonzero(t_dop["complex"].to_numpy() == c)
            found = m[m["truth"].isin(idx)]
            if not has_defect:
                got = "?"
            elif len(found) == 0:
                got = "missed"
            else:
                names = dop["defect"].iloc[found["pred"].to_numpy()].astype(str).tolist()
                got = Counter(names).most_common(1)[0][0]
            confusion[(true_type, got)] += 1
            cx_right += got == true_type
        right += cx_right
        rows.append({"image": fr.name, "tag": fr.tag, "pixel_size": fr.pixel_size, "dopant_tp": f_tp,
                     "dopant_fp": len(dop) - f_tp, "dopant_fn": len(t_dop) - f_tp, "host_found": len(mh),
                     "host_total": len(t_host), "complexes": int(truth["complex"].nunique()),
                     "types_right": cx_right})
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    d = np.asarray(host_d)
    summary = {
        "dopant_recall": rec, "dopant_precision": prec,
        "dopant_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        "host_recall": host_found / host_total if host_total else float("nan"),
        "host_rmse_pm": float(np.sqrt(np.mean(d**2))) if len(d) else float("nan"),
        "host_mean_pm": float(np.mean(d)) if len(d) else float("nan"),
        "defect_accuracy": right / n_cx if n_cx and "?" not in {g for _, g in confusion} else float("nan"),
        "n_dopant": tp + fn, "n_found_dopant": tp + fp, "n_complex": n_cx,
        "confusion": {f"{a} -> {b}": n for (a, b), n in sorted(confusion.items())},
    }
    return summary, pd.DataFrame(rows)


def score_heavy_atoms(frames: list[LabelledFrame], find: Callable[[LabelledFrame], pd.DataFrame],
                      max_distance: float = HEAVY_MATCH_PX) -> tuple[dict, pd.DataFrame]:
    """Score a finder on images with every heavy single atom labelled.

    ``find(frame)`` returns an atoms table; its ``dopant`` rows are the heavy atoms found, every
    other row but vacancies (``lattice``, ``unknown`` …) counts in ``support_rows`` (the
    support is background).

    Returns
    -------
    summary : dict
        ``precision``, ``recall``, ``f1``, ``support_rows`` (mean per image), ``n_true``.
    per_frame : DataFrame
    """
    tp = fp = fn = 0
    support = []
    rows = []
    for fr in frames:
        atoms = find(fr)
        is_dop = _dopant_rows(atoms)
        dop = atoms[is_dop].reset_index(drop=True)
        n_support = int((~is_dop & ~atoms["label"].astype(str).eq("vacancy")).sum())
        m = match(dop, fr.truth, max_distance) if len(dop) and len(fr.truth) else []
        f_tp = len(m)
        tp += f_tp
        fp += len(dop) - f_tp
        fn += len(fr.truth) - f_tp
        support.append(n_support)
        rows.append({"image": fr.name, "tp": f_tp, "fp": len(dop) - f_tp, "fn": len(fr.truth) - f_tp,
                     "support_rows": n_support})
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    summary = {"precision": prec, "recall": rec, "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
               "support_rows": float(np.mean(support)) if support else 0.0, "n_true": tp + fn}
    return summary, pd.DataFrame(rows)

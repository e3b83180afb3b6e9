"""Scoring a detected atoms table against the truth.

:func:`match` pairs detected rows with true rows one to one, within a distance; :func:`score`
counts true and false detections per class and measures the localisation error. Both work on
atoms tables (DESIGN.md): ``y``, ``x`` in px, optional ``frame`` and ``label``. The simulator's
``atoms`` table is a valid truth.

Units: positions and distances in px; ``rmse_pm`` in pm given the pixel size in nm/px.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from .errors import InputError, check_positive
from .tables import LABELS, SCORES

__all__ = ["match", "score", "default_max_distance"]



def match(pred: pd.DataFrame, truth: pd.DataFrame, max_distance: float) -> pd.DataFrame:
    """Pair rows of ``pred`` with rows of ``truth`` one to one, nearest overall.

    Parameters
    ----------
    pred, truth : DataFrame
        Tables with columns ``y``, ``x`` (px). If both have a ``frame`` column, rows are paired
        only within the same frame.
    max_distance : float
        Largest distance (px) between paired rows (inclusive).

    Returns
    -------
    DataFrame
        One row per pair, sorted by ``pred``, with columns ``pred`` and ``truth`` (int64 row
        positions in ``pred`` and ``truth``, for ``.iloc``; they equal the index labels when the
        indexes are the default ``RangeIndex``) and ``distance`` (float64, px).

    Raises
    ------
    InputError
        A table lacks ``y``/``x``, holds non-finite positions, or ``max_distance`` is not > 0.

    Notes
    -----
    The matching is optimal, not greedy: among all one-to-one pairings of rows closer than
    ``max_distance`` it has the largest number of pairs and, among those, the smallest total
    distance. Candidate pairs come from a k-d tree; the assignment is the sparse Jonker–Volgenant
    algorithm (:func:`scipy.sparse.csgraph.min_weight_full_bipartite_matching`) run once on the
    candidates that compete (rows with a single candidate on both sides are paired directly),
    with a dummy partner per row so that rows may stay unpaired.

    Examples
    --------
    >>> pred = pd.DataFrame({"y": [0.0, 0.0], "x": [0.0, 0.9]})
    >>> truth = pd.DataFrame({"y": [0.0, 0.0], "x": [0.3, -0.9]})
    >>> match(pred, truth, 1.0)            # greedy would pair 0–0 and leave two rows unpaired
       pred  truth  distance
    0     0      1       0.9
    1     1      0       0.6
    """
    max_distance = _check_distance(max_distance)
    py, px, pf = _positions(pred, "pred")
    ty, tx, tf = _positions(truth, "truth")
    i, j, d = _match_positions(py, px, pf, ty, tx, tf, max_distance)
    return pd.DataFrame({"pred": i, "truth": j, "distance": d})


def score(pred: pd.DataFrame, truth: pd.DataFrame, *, max_distance: float | None = None,
          pixel_size: float | None = None, classes=LABELS) -> pd.DataFrame:
    """Detection and classification scores of ``pred`` against ``truth``, per class.

    Parameters
    ----------
    pred, truth : DataFrame
        Atoms tables with ``y``, ``x`` (px) and, when ``classes`` is not empty, ``label``; with a
        ``frame`` column in both, rows are matched within frames.
    max_distance : float, optional
        Largest distance (px) at which a detection counts as finding a true row. Default: half
        the median nearest-neighbour distance of the truth (within frames), see
        :func:`default_max_distance`.
    pixel_size : float, optional
        nm/px; adds the column ``rmse_pm``.
    classes : sequence of str
        Classes to score (compared with ``label`` as strings). Pass ``()`` to score detection
        only (then ``label`` is not needed).

    Returns
    -------
    DataFrame
        Indexed by class (index name ``class``): one row per entry of ``classes`` and a last row
        ``all``; columns ``tp``, ``fp``, ``fn`` (int64), ``precision``, ``recall``, ``f1``,
        ``rmse_px`` (float64) and, with ``pixel_size``, ``rmse_pm``.

    Raises
    ------
    InputError
        Missing ``y``/``x`` (or ``label`` when ``classes`` is given), non-finite positions, a
        ``max_distance`` that is not > 0, or no default ``max_distance`` because no frame of the
        truth has two rows.

    Notes
    -----
    Rows are matched by position alone, regardless of label (:func:`match`). Then, for a class c:
    TP = pairs whose detection and truth are both c; FP = detections labelled c that are unpaired
    or paired with a truth of another class; FN = true rows of class c that are unpaired or paired
    with a detection of another class. The ``all`` row scores detection regardless of class:
    TP = pairs, FP = unpaired detections, FN = unpaired true rows.

    precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN). When there
    is nothing to find and nothing is found (TP = FP = FN = 0) all three are 1.0; when a ratio
    has no denominator otherwise (nothing found, or nothing to find) it is 0.0, so the scores are
    never NaN. ``rmse_px`` is the root-mean-square distance of the TP pairs (of all pairs for
    ``all``), NaN when there is no TP.

    Examples
    --------
    >>> truth = pd.DataFrame({"y": [0.0, 0.0, 0.0], "x": [0.0, 10.0, 20.0],
    ...                       "label": ["lattice", "dopant", "lattice"]})
    >>> pred = pd.DataFrame({"y": [0.3, 0.0], "x": [0.0, 10.0], "label": ["lattice", "lattice"]})
    >>> s = score(pred, truth, classes=("lattice", "dopant"))
    >>> s.loc["all", ["tp", "fp", "fn"]].tolist()       # two of three atoms found ...
    [2, 0, 1]
    >>> s.loc["dopant", ["tp", "fp", "fn"]].tolist()    # ... but the dopant called lattice
    [0, 0, 1]
    >>> s.loc["lattice", ["tp", "fp", "fn"]].tolist()
    [1, 1, 1]
    """
    classes = tuple(str(c) for c in classes)
    if max_distance is None:
        max_distance = default_max_distance(truth)
    max_distance = _check_distance(max_distance)
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise InputError(f"pixel_size={pixel_size} must be a positive number of nm/px (e.g. 0.01)")
    py, px, pf = _positions(pred, "pred")
    ty, tx, tf = _positions(truth, "truth")
    i, j, d = _match_positions(py, px, pf, ty, tx, tf, max_distance)

    rows = {}
    if classes:
        pl, tl = _labels(pred, "pred"), _labels(truth, "truth")
        same = pl[i] == tl[j]
        for c in classes:
            tp_pairs = same & (pl[i] == c)
            rows[c] = _counts(int(tp_pairs.sum()), int((pl == c).sum()), int((tl == c).sum()),
                              d[tp_pairs])
    rows["all"] = _counts(len(d), len(py), len(ty), d)
    out = pd.DataFrame.from_dict(rows, orient="index")[SCORES.names]
    out = out.astype({"tp": np.int64, "fp": np.int64, "fn": np.int64, "precision": np.float64,
                      "recall": np.float64, "f1": np.float64, "rmse_px": np.float64})
    out.index.name = "class"
    if pixel_size is not None:
        out["rmse_pm"] = out["rmse_px"] * float(pixel_size) * 1000.0
    return out


def default_max_distance(truth: pd.DataFrame) -> float:
    """Half the median nearest-neighbour distance (px) of the true positions, within frames.

    Two detections closer to one true atom than this cannot both be nearer to it than to its
    neighbours, so the matching cannot confuse neighbours. For graphene at 12 pm/px (C–C
    1.42 Å = 11.8 px) it is 5.9 px.

    Parameters
    ----------
    truth : DataFrame
        True atoms table: ``y``, ``x`` (px); optional ``frame`` (neighbours are looked for only
        within the same frame).

    Returns
    -------
    float
        Half the median nearest-neighbour distance, px.

    Raises
    ------
    InputError
        No frame of ``truth`` has two rows.

    Examples
    --------
    >>> import pandas as pd
    >>> from stemflow.metrics import default_max_distance
    >>> truth = pd.DataFrame({"y": [0.0, 0.0, 0.0], "x": [0.0, 10.0, 30.0]})
    >>> default_max_distance(truth)          # nearest neighbours 10, 10, 20 px
    5.0
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 96, pixel_size=0.012, seed=1)
    >>> round(default_max_distance(sim.atoms), 1)   # half of C–C, 0.142 nm / 0.012 nm/px
    5.9
    """
    y, x, f = _positions(truth, "truth")
    pts = _stacked(y, x, f, None)
    if len(pts) >= 2:
        dist, _ = cKDTree(pts).query(pts, k=2)
        nn = dist[:, 1]
        nn = nn[np.isfinite(nn) & (nn < _FRAME_GAP / 2)]   # ignore "neighbours" in other frames
        if len(nn):
            return 0.5 * float(np.median(nn))
    raise InputError("cannot choose a default max_distance: no frame of the truth has two rows; "
                     "pass max_distance=... (px)")


# ----------------------------------------------------------------------------- internals

_FRAME_GAP = 1e6  # px between frames in the stacked coordinates of default_max_distance


def _match_positions(py, px, pf, ty, tx, tf, max_distance):
    """Optimal one-to-one pairs (pred position, truth position, distance), sorted by pred."""
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))
    if len(py) == 0 or len(ty) == 0:
        return empty
    by_frame = pf is not None and tf is not None
    gap = 2.0 * max_distance + 1.0
    if by_frame:   # frames as a third coordinate, further apart than max_distance
        codes, _ = pd.factorize(np.concatenate([pf, tf]))
        fp_, ft_ = codes[: len(pf)], codes[len(pf):]
    else:
        fp_ = ft_ = None
    P = _stacked(py, px, fp_, gap)
    T = _stacked(ty, tx, ft_, gap)
    cand = cKDTree(P).sparse_distance_matrix(cKDTree(T), max_distance, output_type="ndarray")
    if len(cand) == 0:
        return empty
    i = cand["i"].astype(np.int64)
    j = cand["j"].astype(np.int64)
    d = cand["v"].astype(np.float64)

    # Pairs whose pred and truth have no other candidate are matched as they are.
    deg_p = np.bincount(i, minlength=len(py))
    deg_t = np.bincount(j, minlength=len(ty))
    alone = (deg_p[i] == 1) & (deg_t[j] == 1)
    keep_i, keep_j, keep_d = [i[alone]], [j[alone]], [d[alone]]
    ci, cj, cd = i[~alone], j[~alone], d[~alone]
    if len(ci):
        mi, mj, md = _assign(ci, cj, cd, max_distance)
        keep_i.append(mi), keep_j.append(mj), keep_d.append(md)
    i, j, d = (np.concatenate(a) for a in (keep_i, keep_j, keep_d))
    order = np.argsort(i, kind="stable")
    return i[order], j[order], d[order]


def _assign(i, j, d, max_distance):
    """Maximum-cardinality, minimum-distance matching of candidate pairs (i, j, d).

    Rows: the a preds, then a dummy per truth; columns: the b truths, then a dummy per pred.
    Pred→truth edges cost d, pred→own dummy and truth-dummy→truth cost U, dummy→dummy edges
    mirror the candidate pairs at cost 0 (so that a pair leaves both dummies to pair up). A
    full matching always exists; with U larger than any sum of candidate distances, the optimum
    leaves as few rows unpaired as possible, then minimises the total distance. All weights get
    +1 (the sparse solver needs non-zero weights; a constant per edge does not move the optimum).
    """
    ui, il = np.unique(i, return_inverse=True)
    uj, jl = np.unique(j, return_inverse=True)
    a, b = len(ui), len(uj)
    big = max_distance * (min(a, b) + 1) + 1.0
    ra, rb = np.arange(a), np.arange(b)
    rows = np.concatenate([il, ra, a + rb, a + jl])
    cols = np.concatenate([jl, b + ra, rb, b + il])
    w = np.concatenate([d, np.full(a, big), np.full(b, big), np.zeros(len(d))]) + 1.0
    g = sparse.csr_array((w, (rows, cols)), shape=(a + b, a + b))
    r, c = min_weight_full_bipartite_matching(g)
    real = (r < a) & (c < b)
    r, c = r[real], c[real]
    # Distances of the chosen pairs, looked up from the candidate list.
    key = il.astype(np.int64) * b + jl
    order = np.argsort(key)
    pos = order[np.searchsorted(key[order], r.astype(np.int64) * b + c)]
    return ui[r], uj[c], d[pos]


def _stacked(y, x, f, gap):
    if f is None:
        return np.column_stack([y, x])
    if gap is None:   # default_max_distance: frames far apart
        f, _ = pd.factorize(f)
        gap = _FRAME_GAP
    return np.column_stack([np.asarray(f, np.float64) * gap, y, x])


def _positions(df, name):
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{name} must be a pandas DataFrame with columns y, x (px); got "
                         f"{type(df).__name__}")
    missing = [c for c in ("y", "x") if c not in df.columns]
    if missing:
        raise InputError(f"{name} lacks column(s) {missing}; pass an atoms table with y, x in px")
    try:
        y = df["y"].to_numpy(np.float64)
        x = df["x"].to_numpy(np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name}.y / {name}.x must be numeric (px): {e}") from None
    bad = ~(np.isfinite(y) & np.isfinite(x))
    if bad.any():
        raise InputError(f"{name} has {int(bad.sum())} row(s) with NaN/inf y or x; drop them first "
                         f"(e.g. {name}.dropna(subset=['y', 'x']))")
    f = df["frame"].to_numpy() if "frame" in df.columns else None
    return y, x, f


def _labels(df, name):
    if "label" not in df.columns:
        raise InputError(f"{name} has no 'label' column; add one, or pass classes=() to score "
                         "detection only")
    return df["label"].astype(str).to_numpy()


def _check_distance(max_distance) -> float:
    return check_positive(max_distance, "max_distance", "px")


def _counts(tp: int, n_pred: int, n_true: int, dist) -> dict:
    fp, fn = n_pred - tp, n_true - tp
    if tp + fp + fn == 0:
        precision = recall = f1 = 1.0
    else:
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn)
    rmse = float(np.sqrt(np.mean(np.square(dist)))) if len(dist) else np.nan
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1,
            "rmse_px": rmse}

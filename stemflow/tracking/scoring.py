"""Scoring trajectories, events and drift against ground truth (e.g. the simulator's tables).

* :func:`trajectory_purity` — each trajectory's points are matched to true rows within their
  frame; the trajectory's true particle is the most common one among them, and purity is the
  fraction of all points whose match is their trajectory's true particle (unmatched points count
  as impure).
* :func:`score_events` — a found event is right when the truth has an event of the same kind, in
  exactly the same frame, of the true particle its trajectory maps to; precision, recall and F1
  per kind.
* :func:`drift_error` — root-mean-square length of the difference of two drift tables, px.
* :func:`true_move_rate` — how often the true dopants move, per dopant and frame.

The truth tables need the columns of the simulator's: atoms ``frame``, ``y``, ``x``, ``label``,
``particle``; events ``particle``, ``frame``, ``kind``; drift ``frame``, ``dy``, ``dx``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import match
from ._validate import require_columns, require_table

__all__ = ["trajectory_purity", "particle_map", "score_events", "drift_error", "true_move_rate"]


def particle_map(trajectories: pd.DataFrame, truth_atoms: pd.DataFrame, max_distance: float) -> pd.DataFrame:
    """The true particle of every trajectory point.

    Parameters
    ----------
    trajectories : DataFrame
        ``frame``, ``y``, ``x`` (px), ``particle``.
    truth_atoms : DataFrame
        True atoms: ``frame``, ``y``, ``x`` (px), ``label``, ``particle``; rows labelled
        ``lattice`` are left out.
    max_distance : float
        Largest distance between a point and its true atom, px.

    Returns
    -------
    DataFrame
        Index of ``trajectories``; ``particle``, ``true_particle`` (int64, -1 when unmatched),
        ``majority`` (int64, the trajectory's most common true particle, -1 if none).
    """
    require_table(trajectories, "trajectories")
    require_columns(trajectories, ["frame", "y", "x", "particle"], "trajectories")
    require_columns(truth_atoms, ["frame", "y", "x", "label", "particle"], "truth_atoms")
    truth = truth_atoms[truth_atoms["label"].astype(str) != "lattice"].reset_index(drop=True)
    t = trajectories.reset_index(drop=True)
    true_p = np.full(len(t), -1, np.int64)
    if len(t) and len(truth):
        m = match(t[["frame", "y", "x"]], truth[["frame", "y", "x"]], max_distance)
        true_p[m["pred"].to_numpy()] = truth["particle"].to_numpy(np.int64)[m["truth"].to_numpy()]
    out = pd.DataFrame({"particle": t["particle"].to_numpy(np.int64), "true_particle": true_p},
                       index=trajectories.index)
    matched = out[out["true_particle"] >= 0]
    major = matched.groupby("particle")["true_particle"].agg(lambda s: s.value_counts().index[0])
    out["majority"] = out["particle"].map(major).fillna(-1).astype(np.int64)
    return out


def trajectory_purity(trajectories: pd.DataFrame, truth_atoms: pd.DataFrame, max_distance: float) -> float:
    """Fraction of trajectory points whose true particle is their trajectory's majority particle.

    See :func:`particle_map` for the parameters; 1.0 for empty trajectories.
    """
    m = particle_map(trajectories, truth_atoms, max_distance)
    if len(m) == 0:
        return 1.0
    return float(((m["true_particle"] == m["majority"]) & (m["majority"] >= 0)).mean())


def score_events(events: pd.DataFrame, truth_events: pd.DataFrame, trajectories: pd.DataFrame,
                 truth_atoms: pd.DataFrame, max_distance: float,
                 kinds=("hop", "coordination_change")) -> pd.DataFrame:
    """Precision, recall and F1 of the found events, per kind, the frame exactly right.

    Parameters
    ----------
    events, truth_events : DataFrame
        Found and true events (``particle``, ``frame``, ``kind``).
    trajectories, truth_atoms : DataFrame
        The trajectories the events came from and the true atoms, to map particles
        (:func:`particle_map`).
    max_distance : float
        px, as in :func:`particle_map`.
    kinds : sequence of str
        Kinds to score.

    Returns
    -------
    DataFrame
        Index ``kind``; ``found``, ``true``, ``tp`` (int64), ``precision``, ``recall``, ``f1``
        (1.0 when there is nothing to find and nothing is found).
    """
    require_columns(events, ["particle", "frame", "kind"], "events")
    require_columns(truth_events, ["particle", "frame", "kind"], "truth_events")
    pm = particle_map(trajectories, truth_atoms, max_distance)
    major = pm.groupby("particle")["majority"].first()
    rows = {}
    for k in kinds:
        e = events[events["kind"].astype(str) == k]
        te = truth_events[truth_events["kind"].astype(str) == k]
        truth_keys = set(zip(te["particle"].astype(np.int64).tolist(), te["frame"].astype(np.int64).tolist()))
        found = set(zip(e["particle"].map(major).fillna(-1).astype(np.int64).tolist(),
                        e["frame"].astype(np.int64).tolist()))
        tp = len(found & truth_keys)
        n_found, n_true = len(e), len(te)
        precision = tp / n_found if n_found else float(n_true == 0)
        recall = tp / n_true if n_true else float(n_found == 0)
        f1 = 2 * tp / (n_found + n_true) if n_found + n_true else 1.0
        rows[k] = dict(found=n_found, true=n_true, tp=tp, precision=precision, recall=recall, f1=f1)
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "kind"
    return out


def drift_error(drift: pd.DataFrame, truth_drift: pd.DataFrame) -> float:
    """Root-mean-square length (px) of the difference between two drift tables, over shared frames."""
    require_columns(drift, ["frame", "dy", "dx"], "drift")
    require_columns(truth_drift, ["frame", "dy", "dx"], "truth_drift")
    j = drift.merge(truth_drift, on="frame", suffixes=("", "_true"))
    e2 = (j["dy"] - j["dy_true"]) ** 2 + (j["dx"] - j["dx_true"]) ** 2
    return float(np.sqrt(e2.mean())) if len(j) else float("nan")


def true_move_rate(truth_atoms: pd.DataFrame) -> float:
    """Moves per dopant and frame in a truth table: the frames in which a dopant holds another
    site, or changes its defect (a Si between 3- and 4-fold moves onto or off the place between
    two sites), over the frames it continues into.

    Parameters
    ----------
    truth_atoms : DataFrame
        The simulator's atoms table: ``frame``, ``label``, ``particle``, ``site``, ``defect``.

    Returns
    -------
    float
        Moves per dopant and frame; NaN when no dopant is in two frames.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"frame": range(5), "label": "dopant", "particle": 7,
    ...                   "site": [3, 3, 4, 4, 4], "defect": "Si1C3"})
    >>> true_move_rate(t)
    0.25
    """
    require_columns(truth_atoms, ["frame", "label", "particle", "site", "defect"], "truth_atoms")
    d = truth_atoms[truth_atoms["label"].astype(str) == "dopant"].sort_values(["particle", "frame"])
    state = d["site"].astype(str) + "/" + d["defect"].astype(str)
    same = d["particle"].eq(d["particle"].shift())
    steps = int(same.sum())
    return float((same & state.ne(state.shift())).sum() / steps) if steps else float("nan")

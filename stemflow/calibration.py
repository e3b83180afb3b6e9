"""Does ``prob`` mean what it says? Reliability of the finder's class probabilities.

A detection's ``prob`` (the mean class probability of its blob) is calibrated when, among all
detections with ``prob`` ≈ p, a share p is right. :func:`reliability` bins detections by
``prob`` and compares each bin's mean ``prob`` with its share of correct detections; the
expected calibration error (ECE) is the count-weighted mean gap. :func:`plot_reliability`
draws the diagram.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = ["reliability", "expected_calibration_error", "plot_reliability"]


def reliability(prob, correct, bins: int = 10) -> pd.DataFrame:
    """Reliability table of probabilities against outcomes.

    Parameters
    ----------
    prob : array_like of float
        Stated probability of each detection, in [0, 1].
    correct : array_like of bool
        Whether each detection is right (matched to a true atom of its class).
    bins : int
        Equal-width bins over [0, 1].

    Returns
    -------
    DataFrame
        One row per non-empty bin: ``lo``, ``hi`` (bin edges), ``n``, ``mean_prob``,
        ``accuracy`` (share correct), ``gap`` (``accuracy - mean_prob``).

    Examples
    --------
    >>> t = reliability([0.9, 0.9, 0.9, 0.9, 0.2], [True, True, True, False, False], bins=5)
    >>> t[["n", "mean_prob", "accuracy"]].round(2).values.tolist()
    [[1.0, 0.2, 0.0], [4.0, 0.9, 0.75]]
    """
    p = np.asarray(prob, np.float64).ravel()
    c = np.asarray(correct, bool).ravel()
    if p.shape != c.shape:
        raise InputError(f"prob and correct differ in length ({p.size} vs {c.size})")
    if p.size and (not np.isfinite(p).all() or p.min() < 0 or p.max() > 1):
        raise InputError("prob must be finite and within [0, 1]")
    if int(bins) < 1:
        raise InputError(f"bins={bins} must be a positive integer")
    edges = np.linspace(0, 1, int(bins) + 1)
    k = np.clip(np.digitize(p, edges[1:-1]), 0, int(bins) - 1)
    rows = []
    for b in np.unique(k):
        sel = k == b
        rows.append({"lo": edges[b], "hi": edges[b + 1], "n": int(sel.sum()), "mean_prob": p[sel].mean(),
                     "accuracy": c[sel].mean()})
    out = pd.DataFrame(rows, columns=["lo", "hi", "n", "mean_prob", "accuracy"])
    out["gap"] = out["accuracy"] - out["mean_prob"]
    return out


def expected_calibration_error(prob, correct, bins: int = 10) -> float:
    """Count-weighted mean of ``|accuracy - mean_prob|`` over the bins of :func:`reliability`
    (0 = perfectly calibrated; NaN with no detections)."""
    t = reliability(prob, correct, bins)
    if t["n"].sum() == 0:
        return float("nan")
    return float((t["n"] * t["gap"].abs()).sum() / t["n"].sum())


def plot_reliability(tables: dict, path=None, title: str = "reliability of prob"):
    """Reliability diagram: accuracy against mean ``prob`` per bin, one line per table.

    Parameters
    ----------
    tables : dict of str → DataFrame
        Tables from :func:`reliability`, keyed by what they measure (their ECE is added to the
        legend).
    path : str or Path, optional
        Where to save the figure (PNG).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated")
    for name, t in tables.items():
        ece = float((t["n"] * t["gap"].abs()).sum() / max(t["n"].sum(), 1))
        ax.plot(t["mean_prob"], t["accuracy"], "o-", label=f"{name} (ECE {ece:.3f}, n={int(t['n'].sum())})")
    ax.set_xlabel("mean prob of the bin")
    ax.set_ylabel("share of detections that are right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig

"""Events in trajectories: hops, coordination changes, transformations, appearances, disappearances.

Events come from consecutive observations of each trajectory:

* ``hop`` — the lattice site changed (``site``, see :mod:`stemflow.tracking.sites`);
* ``coordination_change`` — ``coordination`` changed (e.g. 3-fold Si1C3 ↔ 4-fold Si1C4);
* ``transformation`` — the ``state`` (the defect type, e.g. from :mod:`stemflow.chem`) changed
  while the coordination did not, or no coordination is known;
* ``appear`` / ``vanish`` — the trajectory starts after the movie's first frame / ends before its
  last one.

``frame`` is the first frame that shows the new state (the frame of the later observation), the
convention of the simulator's truth tables. A hop and a coordination change seen between the same
two observations give two events.

Units: ``y0, x0, y1, x1`` px (as measured, drift included); ``distance_nm`` nm, drift-corrected.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..tables import EVENT_KINDS, EVENTS
from ._validate import pixel_size_of, require_columns, require_table

__all__ = ["events", "state_column"]



def state_column(df: pd.DataFrame) -> pd.Series:
    """The state of each observation as a string.

    ``defect`` when the table has it and it is not empty (e.g. ``Si1C3``), else the label with the
    coordination (``dopant-3``) when there is a ``coordination`` column, else the label.

    Parameters
    ----------
    df : DataFrame
        Atoms or trajectories table with any of ``label``, ``coordination`` (host neighbours) and
        ``defect`` (defect name, ``''`` or NaN for none).

    Returns
    -------
    Series of str
        One state per row, with the index of ``df`` (``''`` when the table has none of the three
        columns).

    Examples
    --------
    >>> import pandas as pd
    >>> from stemflow.tracking import state_column
    >>> df = pd.DataFrame({"label": ["dopant", "dopant", "vacancy"], "coordination": [3, 4, 3]})
    >>> state_column(df).tolist()
    ['dopant-3', 'dopant-4', 'vacancy-3']
    >>> state_column(df.assign(defect=["Si1C3", "", "V1"])).tolist()
    ['Si1C3', 'dopant-4', 'V1']
    """
    label = df["label"].astype(str) if "label" in df.columns else pd.Series("", index=df.index)
    state = label.copy()
    if "coordination" in df.columns:
        state = label + "-" + df["coordination"].astype("Int64").astype(str)
    if "defect" in df.columns:
        d = df["defect"].astype(str)
        use = (d != "") & (d != "nan") & df["defect"].notna()
        state = state.where(~use, d)
    return state


def _empty() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: [] for c in EVENTS.names}))


def _typed(ev: pd.DataFrame) -> pd.DataFrame:
    ev = ev.astype({"particle": np.int64, "frame": np.int64, "site0": np.int64, "site1": np.int64,
                    "y0": np.float64, "x0": np.float64, "y1": np.float64, "x1": np.float64,
                    "distance_nm": np.float64})
    ev["kind"] = pd.Categorical(ev["kind"], categories=list(EVENT_KINDS))
    states = sorted(set(ev["state0"].astype(str)) | set(ev["state1"].astype(str)) | {""})
    for c in ("state0", "state1"):
        ev[c] = pd.Categorical(ev[c].astype(str), categories=states)
    return ev[EVENTS.names]


def events(trajectories: pd.DataFrame, *, pixel_size: float | None = None, first_frame: int | None = None,
           last_frame: int | None = None) -> pd.DataFrame:
    """Hops, coordination changes, transformations, appearances and disappearances.

    Parameters
    ----------
    trajectories : DataFrame
        ``particle``, ``frame``, ``y``, ``x`` (px), ``site`` (int; see
        :func:`stemflow.tracking.trajectory_sites`), optional ``y_corr``, ``x_corr`` (drift-corrected px,
        used for distances), ``state``, ``coordination``, ``defect``, ``label``. Without ``state``
        it is made by :func:`state_column`.
    pixel_size : float, optional
        nm/px, for ``distance_nm``; default ``trajectories.attrs['pixel_size']``.
    first_frame, last_frame : int, optional
        The movie's first and last frames (default those of ``trajectories``): a trajectory that
        starts later appears, one that ends earlier vanishes.

    Returns
    -------
    DataFrame
        One row per event, sorted by ``frame``, ``particle``, ``kind``: ``particle`` (int64),
        ``frame`` (int64, first frame of the new state), ``kind`` (category of
        :data:`stemflow.tables.EVENT_KINDS`), ``y0``, ``x0`` / ``y1``, ``x1`` (px, the observations before and
        after; NaN for the side an appearance or disappearance lacks), ``distance_nm``
        (drift-corrected displacement, nm; NaN for appear/vanish), ``state0``, ``state1``
        (category; '' where there is none), ``site0``, ``site1`` (int64; -1 where there is none).

    Raises
    ------
    InputError
        Missing columns or no pixel size.

    Examples
    --------
    >>> ev = events(trajectories)                                         # doctest: +SKIP
    >>> ev.query("kind == 'hop' and state0 == 'Si1C4'")                   # doctest: +SKIP
    """
    trajectories = require_table(trajectories, "trajectories")
    require_columns(trajectories, ["particle", "frame", "y", "x", "site"], "trajectories",
                    "make it with stemflow.tracking.track, or add sites with stemflow.tracking.trajectory_sites")
    if len(trajectories) == 0:
        return _empty()
    px = pixel_size_of(trajectories, pixel_size, "trajectories")
    t = trajectories.sort_values(["particle", "frame"], kind="stable")
    part = t["particle"].to_numpy(np.int64)
    frame = t["frame"].to_numpy(np.int64)
    y, x = t["y"].to_numpy(np.float64), t["x"].to_numpy(np.float64)
    pos = ["y_corr", "x_corr"] if {"y_corr", "x_corr"} <= set(t.columns) else ["y", "x"]
    yc, xc = (t[c].to_numpy(np.float64) for c in pos)
    site = t["site"].to_numpy(np.int64)
    state = (t["state"] if "state" in t.columns else state_column(t)).astype(str).to_numpy()
    coord = t["coordination"].to_numpy() if "coordination" in t.columns else None
    f0 = int(frame.min()) if first_frame is None else int(first_frame)
    f1 = int(frame.max()) if last_frame is None else int(last_frame)

    same = part[1:] == part[:-1]
    a = np.flatnonzero(same)            # pairs (a, a + 1) of consecutive observations
    b = a + 1
    dist = np.hypot(yc[b] - yc[a], xc[b] - xc[a]) * px
    hop = site[a] != site[b]
    changed = state[a] != state[b]
    if coord is not None:
        cchg = coord[a] != coord[b]
        coord_kind = np.where(cchg, "coordination_change", "transformation")
        changed = changed | cchg
    else:
        coord_kind = np.full(len(a), "transformation")
    kinds, sel = [], []
    for mask, kind in ((hop, None), (changed, coord_kind)):
        idx = np.flatnonzero(mask)
        sel.append(idx)
        kinds.append(np.full(len(idx), "hop") if kind is None else kind[idx])
    idx = np.concatenate(sel)
    pairs = pd.DataFrame({
        "particle": part[a[idx]], "frame": frame[b[idx]], "kind": np.concatenate(kinds),
        "y0": y[a[idx]], "x0": x[a[idx]], "y1": y[b[idx]], "x1": x[b[idx]], "distance_nm": dist[idx],
        "state0": state[a[idx]], "state1": state[b[idx]], "site0": site[a[idx]], "site1": site[b[idx]],
    })

    first = np.r_[True, ~same]
    last = np.r_[~same, True]
    nan = np.full(int(first.sum()), np.nan)
    fi, la = np.flatnonzero(first), np.flatnonzero(last)
    appear = pd.DataFrame({"particle": part[fi], "frame": frame[fi], "kind": "appear", "y0": nan, "x0": nan,
                           "y1": y[fi], "x1": x[fi], "distance_nm": nan, "state0": "", "state1": state[fi],
                           "site0": -1, "site1": site[fi]})
    appear = appear[appear["frame"] > f0]
    vanish = pd.DataFrame({"particle": part[la], "frame": frame[la] + 1, "kind": "vanish", "y0": y[la],
                           "x0": x[la], "y1": nan, "x1": nan, "distance_nm": nan, "state0": state[la],
                           "state1": "", "site0": site[la], "site1": -1})
    vanish = vanish[vanish["frame"] <= f1]
    ev = pd.concat([d for d in (pairs, appear, vanish) if len(d)], ignore_index=True) \
        if (len(pairs) or len(appear) or len(vanish)) else _empty()
    ev = _typed(ev)
    ev = ev.sort_values(["frame", "particle", "kind"], kind="stable").reset_index(drop=True)
    ev.attrs["pixel_size"] = px
    return ev

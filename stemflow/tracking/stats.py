"""Statistics of trajectories: dwell times, transition matrices and rates, MSD and diffusion.

Rates are per-frame probabilities estimated from consecutive frames: the number of transitions
``i → j`` seen between frames k and k+1, divided by the number of such frame pairs spent in ``i``
(the exposure). Their standard error is the binomial one, √(p(1-p)/n). With the dose per frame
(e⁻/Å²) they are also given per unit dose, and with the frame time (s) per second.

Units: frames, nm (``y_corr``/``x_corr`` × pixel size), e⁻/Å², s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import trackpy

from ..errors import InputError
from ._validate import pixel_size_of, require_columns, require_table
from .transitions import state_column

__all__ = ["dwell_times", "transition_matrix", "event_rates", "msd", "diffusion"]


def _sorted(traj: pd.DataFrame, cols) -> pd.DataFrame:
    traj = require_table(traj, "trajectories")
    require_columns(traj, ["particle", "frame", *cols], "trajectories",
                    "make it with stemflow.tracking.track")
    return traj.sort_values(["particle", "frame"], kind="stable")


def _states(t: pd.DataFrame, by: str) -> np.ndarray:
    if by == "state" and "state" not in t.columns:
        return state_column(t).astype(str).to_numpy()
    return t[by].to_numpy()


def dwell_times(trajectories: pd.DataFrame, by: str = "state") -> pd.DataFrame:
    """How long each trajectory stays in each state (or on each site) before it changes.

    Parameters
    ----------
    trajectories : DataFrame
        ``particle``, ``frame`` and the column ``by``.
    by : str
        ``"state"`` (defect or label-coordination), ``"site"``, or any column of states.

    Returns
    -------
    DataFrame
        One row per stay: ``particle``, ``by`` (the state or site), ``first_frame``,
        ``last_frame`` (int64, first and last observations), ``frames`` (int64, dwell time:
        frames from the first observation to the first observation of the next state, or to the
        last observation + 1 for the final stay), ``observations`` (int64) and ``censored``
        (bool: the stay began with the trajectory or ended with it, so its true length is not
        known — leave these out of lifetime estimates).

    Examples
    --------
    >>> import pandas as pd
    >>> from stemflow.tracking import dwell_times
    >>> traj = pd.DataFrame({"particle": 0, "frame": range(5), "state": ["A", "A", "B", "B", "A"]})
    >>> d = dwell_times(traj)
    >>> d[["state", "first_frame", "frames", "censored"]].to_numpy().tolist()
    [['A', 0, 2, True], ['B', 2, 2, False], ['A', 4, 1, True]]
    >>> d[~d.censored].groupby("state").frames.mean().to_dict()          # mean lifetime, frames
    {'B': 2.0}
    """
    t = _sorted(trajectories, [by] if by != "state" else [])
    cols = ["particle", by, "first_frame", "last_frame", "frames", "observations", "censored"]
    if len(t) == 0:
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c not in (by, "censored") else
                                          (bool if c == "censored" else object)) for c in cols})
    part = t["particle"].to_numpy(np.int64)
    frame = t["frame"].to_numpy(np.int64)
    s = _states(t, by)
    new_p = np.r_[True, part[1:] != part[:-1]]
    new_s = new_p | np.r_[True, s[1:] != s[:-1]]
    run = np.cumsum(new_s) - 1
    starts = np.flatnonzero(new_s)
    ends = np.r_[starts[1:], len(part)] - 1
    nxt = np.r_[starts[1:], len(part)]
    last_of_particle = np.r_[new_p[1:], True][ends]
    end_frame = np.where(last_of_particle, frame[ends] + 1, frame[np.minimum(nxt, len(part) - 1)])
    out = pd.DataFrame({
        "particle": part[starts], by: s[starts], "first_frame": frame[starts], "last_frame": frame[ends],
        "frames": end_frame - frame[starts], "observations": np.bincount(run),
        "censored": new_p[starts] | last_of_particle,
    })
    return out.reset_index(drop=True)


def _per_dose(out: pd.DataFrame, dose: float | None, frame_time: float | None) -> pd.DataFrame:
    if dose is not None:
        if not (np.isfinite(dose) and dose > 0):
            raise InputError(f"dose={dose} must be a positive dose per frame in e⁻/Å²")
        out["rate_per_dose"] = out["rate"] / dose
        out["rate_per_dose_err"] = out["rate_err"] / dose
    if frame_time is not None:
        if not (np.isfinite(frame_time) and frame_time > 0):
            raise InputError(f"frame_time={frame_time} must be a positive time per frame in s")
        out["rate_per_s"] = out["rate"] / frame_time
        out["rate_per_s_err"] = out["rate_err"] / frame_time
    return out


def _consecutive(t: pd.DataFrame):
    """Index pairs (a, a+1) of observations of one particle in consecutive frames."""
    part = t["particle"].to_numpy(np.int64)
    frame = t["frame"].to_numpy(np.int64)
    a = np.flatnonzero((part[1:] == part[:-1]) & (frame[1:] == frame[:-1] + 1))
    return a, a + 1


def transition_matrix(trajectories: pd.DataFrame, by: str = "state", *, dose: float | None = None,
                      frame_time: float | None = None) -> pd.DataFrame:
    """Counts and per-frame rates of transitions between states in consecutive frames.

    Parameters
    ----------
    trajectories : DataFrame
        ``particle``, ``frame`` and the column ``by``.
    by : str
        ``"state"`` (default), ``"coordination"``, ``"site"`` or any column of states.
    dose : float, optional
        Dose per frame, e⁻/Å²: adds ``rate_per_dose`` (per e⁻/Å²) and its error.
    frame_time : float, optional
        Time per frame, s: adds ``rate_per_s`` and its error.

    Returns
    -------
    DataFrame
        Long form, one row per (``state0``, ``state1``) pair seen, staying included:
        ``count`` (int64, transitions between frames k and k+1), ``exposure`` (int64, frame pairs
        spent in ``state0``), ``rate`` (count / exposure, per frame) and ``rate_err`` (binomial
        standard error). ``df.pivot(index="state0", columns="state1", values="count")`` gives
        the matrix; :func:`stemflow.plot.plot_transitions` draws it.

    Notes
    -----
    Only pairs of observations in consecutive frames count, so gaps bridged by the linker's
    memory neither add transitions nor exposure.

    Examples
    --------
    >>> import pandas as pd
    >>> from stemflow.tracking import transition_matrix
    >>> traj = pd.DataFrame({"particle": 0, "frame": range(5), "state": ["A", "A", "B", "B", "B"]})
    >>> tm = transition_matrix(traj)
    >>> tm[["state0", "state1", "count", "exposure", "rate"]].to_numpy().tolist()   # rate per frame
    [['A', 'A', 1, 2, 0.5], ['A', 'B', 1, 2, 0.5], ['B', 'B', 2, 2, 1.0]]
    >>> "rate_per_dose" in transition_matrix(traj, dose=1e4).columns     # per e⁻/Å²
    True
    """
    t = _sorted(trajectories, [by] if by != "state" else [])
    cols = ["state0", "state1", "count", "exposure", "rate", "rate_err"]
    a, b = _consecutive(t)
    if len(a) == 0:
        out = pd.DataFrame({c: pd.Series(dtype=object if c.startswith("state") else
                                         (np.int64 if c in ("count", "exposure") else np.float64)) for c in cols})
        return _per_dose(out, dose, frame_time)
    s = _states(t, by)
    pairs = pd.DataFrame({"state0": s[a], "state1": s[b]})
    out = pairs.value_counts().rename("count").reset_index()
    expo = pairs["state0"].value_counts()
    out["exposure"] = out["state0"].map(expo).to_numpy(np.int64)
    out["count"] = out["count"].astype(np.int64)
    p = out["count"] / out["exposure"]
    out["rate"] = p.astype(np.float64)
    out["rate_err"] = np.sqrt(p * (1 - p) / out["exposure"]).astype(np.float64)
    out = out.sort_values(["state0", "state1"]).reset_index(drop=True)[cols]
    return _per_dose(out, dose, frame_time)


def event_rates(events: pd.DataFrame, trajectories: pd.DataFrame, *, dose: float | None = None,
                frame_time: float | None = None) -> pd.DataFrame:
    """Per-frame rate of each kind of event, by the state it starts from.

    Parameters
    ----------
    events : DataFrame
        Events table (:func:`stemflow.tracking.events`).
    trajectories : DataFrame
        The trajectories the events came from (``particle``, ``frame``, ``state``).
    dose, frame_time : float, optional
        Dose per frame (e⁻/Å²) and time per frame (s), as in :func:`transition_matrix`.

    Returns
    -------
    DataFrame
        One row per (``kind``, ``state0``, ``state1``) of the hop / coordination_change /
        transformation events: ``count`` (events between consecutive frames), ``exposure``
        (frame pairs in ``state0``), ``rate`` (per frame), ``rate_err``; plus per-dose and
        per-second columns when asked. The hop rate of Si1C3 is the row
        ``kind == 'hop' and state0 == 'Si1C3'``.

    Examples
    --------
    One Si1C3 dopant hopping once (10 px) in 5 frames:

    >>> import pandas as pd
    >>> from stemflow.tracking import event_rates, events
    >>> traj = pd.DataFrame({"particle": 0, "frame": range(5), "y": [0.0, 0, 0, 10, 10], "x": 0.0,
    ...                      "site": [0, 0, 0, 1, 1], "state": "Si1C3"})
    >>> ev = events(traj, pixel_size=0.01)
    >>> r = event_rates(ev, traj)
    >>> r[["kind", "state0", "count", "exposure", "rate"]].to_numpy().tolist()   # rate per frame
    [['hop', 'Si1C3', 1, 4, 0.25]]
    """
    events = require_table(events, "events")
    require_columns(events, ["particle", "frame", "kind", "state0", "state1"], "events",
                    "make it with stemflow.tracking.events")
    t = _sorted(trajectories, [])
    a, b = _consecutive(t)
    s = _states(t, "state").astype(str)
    expo = pd.Series(s[a]).value_counts()
    consecutive = set(zip(t["particle"].to_numpy()[b].tolist(), t["frame"].to_numpy()[b].tolist()))
    ev = events[events["kind"].astype(str).isin(["hop", "coordination_change", "transformation"])]
    keep = [(p, f) in consecutive for p, f in zip(ev["particle"].tolist(), ev["frame"].tolist())]
    ev = ev[np.asarray(keep, bool)] if len(ev) else ev
    cols = ["kind", "state0", "state1", "count", "exposure", "rate", "rate_err"]
    if len(ev) == 0:
        out = pd.DataFrame({c: pd.Series(dtype=object if c in cols[:3] else
                                         (np.int64 if c in ("count", "exposure") else np.float64)) for c in cols})
        return _per_dose(out, dose, frame_time)
    g = pd.DataFrame({"kind": ev["kind"].astype(str).to_numpy(), "state0": ev["state0"].astype(str).to_numpy(),
                      "state1": ev["state1"].astype(str).to_numpy()})
    out = g.value_counts().rename("count").reset_index()
    out["exposure"] = out["state0"].map(expo).fillna(0).to_numpy(np.int64)
    p = out["count"] / out["exposure"].where(out["exposure"] > 0)
    out["count"] = out["count"].astype(np.int64)
    out["rate"] = p.astype(np.float64)
    out["rate_err"] = np.sqrt(p * (1 - p) / out["exposure"]).astype(np.float64)
    out = out.sort_values(["kind", "state0", "state1"]).reset_index(drop=True)[cols]
    return _per_dose(out, dose, frame_time)


def _trackpy_table(trajectories: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    pos = ["y_corr", "x_corr"] if {"y_corr", "x_corr"} <= set(trajectories.columns) else ["y", "x"]
    require_columns(trajectories, ["particle", "frame", *pos], "trajectories", "make it with stemflow.tracking.track")
    return trajectories, pos


def msd(trajectories: pd.DataFrame, *, pixel_size: float | None = None, frame_time: float | None = None,
        max_lag: int = 20, per_particle: bool = False) -> pd.DataFrame:
    """Mean squared displacement of drift-corrected trajectories (trackpy's ``emsd`` / ``imsd``).

    Parameters
    ----------
    trajectories : DataFrame
        ``particle``, ``frame`` and ``y_corr``, ``x_corr`` (else ``y``, ``x``), px.
    pixel_size : float, optional
        nm/px; default ``trajectories.attrs['pixel_size']``.
    frame_time : float, optional
        s per frame; lag times are then in s, else in frames.
    max_lag : int
        Largest lag, frames.
    per_particle : bool
        One column per particle (``imsd``) instead of the ensemble average.

    Returns
    -------
    DataFrame
        Ensemble: ``lag`` (frames or s), ``msd`` (nm²), ``N`` (independent displacements).
        Per particle: index ``lag``, one column of nm² per particle id.

    Examples
    --------
    A particle moving 1 px (0.1 nm) per frame:

    >>> import pandas as pd
    >>> from stemflow.tracking import msd
    >>> traj = pd.DataFrame({"particle": 0, "frame": range(5), "y_corr": 0.0, "x_corr": [0.0, 1, 2, 3, 4]})
    >>> m = msd(traj, pixel_size=0.1, max_lag=3)
    >>> m["lag"].round(4).tolist(), m["msd"].round(4).tolist()            # frames, nm²
    ([1.0, 2.0, 3.0], [0.01, 0.04, 0.09])
    >>> msd(traj, pixel_size=0.1, max_lag=3, per_particle=True).shape    # 3 lags × 1 particle
    (3, 1)
    """
    t, pos = _trackpy_table(require_table(trajectories, "trajectories"))
    px = pixel_size_of(t, pixel_size, "trajectories")
    fps = 1.0 if frame_time is None else 1.0 / float(frame_time)
    if len(t) == 0:
        return pd.DataFrame({"lag": pd.Series(dtype=np.float64), "msd": pd.Series(dtype=np.float64),
                             "N": pd.Series(dtype=np.float64)})
    tt = t[["particle", "frame", *pos]].rename(columns=dict(zip(pos, ["y", "x"])))
    if per_particle:
        m = trackpy.imsd(tt, mpp=px, fps=fps, max_lagtime=int(max_lag), pos_columns=["x", "y"])
        m.index.name = "lag"
        return m
    m = trackpy.emsd(tt, mpp=px, fps=fps, max_lagtime=int(max_lag), detail=True, pos_columns=["x", "y"])
    # with detail=True trackpy indexes by lag in frames and gives the lag time in ``lagt``
    return pd.DataFrame({"lag": m["lagt"].to_numpy(np.float64), "msd": m["msd"].to_numpy(np.float64),
                         "N": m["N"].to_numpy(np.float64)})


def diffusion(trajectories: pd.DataFrame, *, pixel_size: float | None = None, frame_time: float | None = None,
              max_lag: int = 5, by: str | None = "label") -> pd.DataFrame:
    """Diffusion coefficient from the slope of the MSD, MSD = 4 D t (two dimensions).

    Parameters
    ----------
    trajectories : DataFrame
        As for :func:`msd`.
    pixel_size, frame_time : float, optional
        nm/px and s per frame (D in nm²/s with it, else nm²/frame).
    max_lag : int
        Lags 1..``max_lag`` enter the least-squares fit through the origin, weighted by the
        number of independent displacements at each lag.
    by : str or None
        Fit each group of particles separately (by their most common value of this column,
        e.g. ``label`` or ``state``); None fits all together.

    Returns
    -------
    DataFrame
        ``group`` (the ``by`` value, or ``"all"``), ``D`` (nm²/frame or nm²/s), ``D_err``
        (standard error of the fit), ``particles`` (int64), ``unit``.

    Notes
    -----
    A lattice hop of length b made with probability k per frame gives D = k b² / 4 per frame.

    Examples
    --------
    >>> import pandas as pd
    >>> from stemflow.tracking import diffusion
    >>> traj = pd.DataFrame({"particle": 0, "frame": range(5), "y_corr": 0.0,
    ...                      "x_corr": [0.0, 1, 2, 3, 4], "label": "dopant"})
    >>> d = diffusion(traj, pixel_size=0.1, max_lag=2)
    >>> d[["group", "particles", "unit"]].to_numpy().tolist()
    [['dopant', 1, 'nm^2/frame']]
    >>> round(float(d["D"].iloc[0]), 4)                                   # nm²/frame
    0.0042
    """
    t, pos = _trackpy_table(require_table(trajectories, "trajectories"))
    px = pixel_size_of(t, pixel_size, "trajectories")
    unit = "nm^2/frame" if frame_time is None else "nm^2/s"
    if by is not None and by not in t.columns:
        raise InputError(f"trajectories has no column {by!r} to group by; pass by=None or one of "
                         f"{list(t.columns)}")
    if by is None:
        groups = {"all": t}
    else:
        major = t.groupby("particle")[by].agg(lambda s: s.astype(str).mode().iloc[0])
        groups = {g: t[t["particle"].isin(major.index[major == g])] for g in sorted(major.unique())}
    rows = []
    for g, sub in groups.items():
        m = msd(sub, pixel_size=px, frame_time=frame_time, max_lag=max_lag)
        m = m[(m["N"] > 0) & np.isfinite(m["msd"])]
        if len(m) == 0:
            rows.append((g, np.nan, np.nan, int(sub["particle"].nunique()), unit))
            continue
        x, y, w = m["lag"].to_numpy(), m["msd"].to_numpy(), m["N"].to_numpy()
        slope = np.sum(w * x * y) / np.sum(w * x * x)
        res = y - slope * x
        dof = max(len(x) - 1, 1)
        err = np.sqrt(np.sum(w * res**2) / dof / np.sum(w * x * x)) if len(x) > 1 else np.nan
        rows.append((g, slope / 4.0, err / 4.0, int(sub["particle"].nunique()), unit))
    return pd.DataFrame(rows, columns=["group", "D", "D_err", "particles", "unit"]).astype(
        {"D": np.float64, "D_err": np.float64, "particles": np.int64})

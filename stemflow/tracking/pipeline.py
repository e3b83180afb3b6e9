"""``track``: atoms table of a movie in; trajectories, events and drift out.

One pass over the frames: each frame's lattice atoms update the drift estimate
(:class:`~stemflow.tracking.alignment.DriftEstimator`), its rows are drift-corrected, the dopants and
vacancies get their host-atom neighbourhood (coordination, on-site flag) and are handed to
trackpy's streaming linker. Only the tracked rows are kept, so a movie may be given as an iterator
of per-frame tables (e.g. Parquet row groups) and memory stays bounded by the trajectories, not
the atoms. Sites and events follow on the trajectories, judged on stays (runs of frames at one
place, :func:`~stemflow.tracking.trajectory_sites`) rather than on single frames.

At low dose the network may call a dopant ``lattice`` for a frame (most often in the very frame it
hops). Lattice rows as bright as dopants, next to a tracked dopant, are therefore kept aside (a few
per frame); when a hop falls in a gap of its trajectory they say in which frame of the gap the
dopant was first seen on its new site.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..errors import InputError, StemflowWarning
from ._validate import check_finite, pixel_size_of, require_columns, require_frame
from ..tables import DRIFT, TRAJECTORIES
from .alignment import DriftEstimator, finish_drift, lattice_spacing
from .linking import DEFAULT_LABELS, link_positions
from .sites import NEW_SITE, SAME_SITE, host_neighbours, trajectory_sites
from .transitions import events, state_column

__all__ = ["track", "TrackResult"]

#: Columns ``track`` adds to the atoms rows it keeps.
_ADDED = TRAJECTORIES.names


class TrackResult(NamedTuple):
    """What :func:`track` returns; unpack it as ``traj, ev, dr = track(...)``."""

    trajectories: pd.DataFrame
    events: pd.DataFrame
    drift: pd.DataFrame


def _chunks(atoms) -> tuple[Iterable[pd.DataFrame], pd.DataFrame | None]:
    """Tables of whole frames in frame order, from a DataFrame or an iterable of tables."""
    if isinstance(atoms, pd.DataFrame):
        require_frame(atoms)
        require_columns(atoms, ["y", "x"])
        return iter([atoms.sort_values("frame", kind="stable")] if len(atoms) else []), atoms
    if isinstance(atoms, (str, bytes)) or not isinstance(atoms, Iterable):
        raise InputError(f"track takes an atoms table (DataFrame) or an iterable of per-frame tables; got "
                         f"{type(atoms).__name__}. Read Parquet with pandas.read_parquet first")

    def gen():
        last = None
        for chunk in atoms:
            if not isinstance(chunk, pd.DataFrame):
                raise InputError(f"each item of the iterable must be a DataFrame; got {type(chunk).__name__}")
            require_frame(chunk)
            require_columns(chunk, ["y", "x"])
            if len(chunk) == 0:
                continue
            chunk = chunk.sort_values("frame", kind="stable")
            f0 = int(chunk["frame"].iloc[0])
            if last is not None and f0 <= last:
                raise InputError(f"frames must come in increasing order, each frame in one table; frame {f0} "
                                 f"came after {last}")
            last = int(chunk["frame"].iloc[-1])
            yield chunk
    return gen(), None


def _steady_coordination(traj: pd.DataFrame, still: float) -> pd.DataFrame:
    """Clean the coordination (counted from host atoms, or given), per trajectory.

    A coordination change moves the atom (a 4-fold Si sits half a bond from its 3-fold site), so
    within a *stay* the coordination is one number: the stay's most common count (the larger on a
    tie, since a missed host atom lowers the count more often than a false one raises it). Stays
    are the ``stay`` column of :func:`~stemflow.tracking.trajectory_sites` when there is one, else runs
    of consecutive observations less than ``still`` px apart. Counts left unknown at the frame
    edge (-1) take the particle's nearest known value.
    """
    traj = traj.sort_values(["particle", "frame"], kind="stable").reset_index(drop=True)
    part = traj["particle"].to_numpy()
    new_part = np.r_[True, part[1:] != part[:-1]]
    if "stay" in traj.columns:
        st = traj["stay"].to_numpy()
        stay = np.cumsum(new_part | np.r_[True, st[1:] != st[:-1]])
    else:
        q = traj[["y_corr", "x_corr"]].to_numpy(np.float64)
        step = np.r_[np.inf, np.hypot(*(q[1:] - q[:-1]).T)]
        stay = np.cumsum(new_part | (step > still))
    c = traj["coordination"].to_numpy(np.int64)
    known = c >= 0
    if known.any():
        votes = pd.DataFrame({"stay": stay[known], "c": c[known]}).value_counts().rename("n").reset_index()
        best = votes.sort_values(["stay", "n", "c"]).groupby("stay")["c"].last()
        c = np.where(np.isin(stay, best.index), pd.Series(stay).map(best).to_numpy(), c)
    cs = pd.Series(np.where(c >= 0, c, np.nan))
    cs = cs.groupby(part).ffill().groupby(part).bfill()
    traj["coordination"] = cs.fillna(-1).to_numpy()
    return traj


def _bright_host_rows(corr, intensity, host_m, dopant_intensity, recent, spacing_px):
    """Host-labelled rows of one frame that look like a dopant: at least as bright as the midpoint
    of the frame's median host intensity and ``dopant_intensity`` (the median of the dopants of the
    latest frame that had some), within 1.6 spacings (px) of a dopant seen in this or the last few
    frames (``recent``: list of (n, 2) drift-corrected positions)."""
    if not host_m.any() or dopant_intensity is None or not any(len(r) for r in recent):
        return np.empty(0, np.int64)
    thr = 0.5 * (np.median(intensity[host_m]) + dopant_intensity)
    cand = np.flatnonzero(host_m & (intensity >= thr))
    if len(cand) == 0:
        return cand
    d, _ = cKDTree(np.vstack(recent)).query(corr[cand], k=1)
    return cand[d <= 1.6 * spacing_px]


def _date_hops_in_gaps(ev: pd.DataFrame, traj: pd.DataFrame, bright: pd.DataFrame, spacing_px: float,
                       radius: float) -> pd.DataFrame:
    """Move a hop that ends a gap of its trajectory to the first gap frame in which a bright host-
    labelled row (:func:`_bright_host_rows`) sits on the new site and none brighter on the old one.

    Sites are the median drift-corrected positions of the stays before and after the gap; a row
    is on a site within ``radius`` spacings.
    """
    hops = np.flatnonzero(ev["kind"].astype(str).to_numpy() == "hop")
    if len(hops) == 0 or len(bright) == 0:
        return ev
    t = traj.sort_values(["particle", "frame"], kind="stable")
    by_part = {p: g for p, g in t.groupby("particle", sort=False)}
    by_frame = {f: g for f, g in bright.groupby("frame", sort=False)}
    ev = ev.copy()
    r = radius * spacing_px
    for i in hops:
        g = by_part[ev.at[i, "particle"]]
        fr = g["frame"].to_numpy()
        j = int(np.searchsorted(fr, ev.at[i, "frame"]))
        if j == 0 or fr[j] - fr[j - 1] <= 1:
            continue
        st = g["stay"].to_numpy()
        q = g[["y_corr", "x_corr"]].to_numpy(np.float64)
        a, b = np.median(q[st == st[j - 1]], axis=0), np.median(q[st == st[j]], axis=0)
        for f in range(int(fr[j - 1]) + 1, int(fr[j])):
            c = by_frame.get(f)
            if c is None:
                continue
            cq = c[["y_corr", "x_corr"]].to_numpy(np.float64)
            inten = c["intensity"].to_numpy(np.float64)
            at_a = np.hypot(*(cq - a).T) <= r
            at_b = np.hypot(*(cq - b).T) <= r
            if at_b.any() and (not at_a.any() or inten[at_b].max() > inten[at_a].max()):
                k = np.flatnonzero(at_b)[np.argmax(inten[at_b])]
                ev.at[i, "frame"] = f
                ev.at[i, "y1"], ev.at[i, "x1"] = float(c["y"].iloc[k]), float(c["x"].iloc[k])
                break
    return ev.sort_values(["frame", "particle", "kind"], kind="stable").reset_index(drop=True)


def _empty_result(whole: pd.DataFrame | None) -> TrackResult:
    base = {c: whole[c].iloc[:0] for c in whole.columns} if whole is not None else \
        {"frame": pd.Series(dtype=np.int64), "y": pd.Series(dtype=np.float64), "x": pd.Series(dtype=np.float64)}
    traj = pd.DataFrame(base)
    traj = traj.assign(particle=pd.Series(dtype=np.int64), y_corr=pd.Series(dtype=np.float64),
                       x_corr=pd.Series(dtype=np.float64), site=pd.Series(dtype=np.int64),
                       state=pd.Series(dtype=str), coordination=pd.Series(dtype=np.int8),
                       on_site=pd.Series(dtype=bool))
    traj = traj[[c for c in traj.columns if c not in _ADDED] + _ADDED]
    ev = events(traj.assign(y=traj["y"]), pixel_size=1.0)
    dr = pd.DataFrame({"frame": pd.Series(dtype=np.int64), "dy": pd.Series(dtype=np.float64),
                       "dx": pd.Series(dtype=np.float64), "matched": pd.Series(dtype=np.int64)})
    return TrackResult(traj, ev, dr)


def track(atoms, pixel_size: float | None = None, *, labels=DEFAULT_LABELS, search_range: float | None = None,
          memory: int = 3, drift=True, spacing: float | None = None, max_step: float | None = None,
          images=None, first_particle: int = 0, adaptive_stop: float | None = None,
          same_site: float = SAME_SITE, new_site: float = NEW_SITE, given_sites: bool = False,
          persist: int | str | None = "auto") -> TrackResult:
    """Drift-correct, link and find the events of a movie's atoms table.

    Parameters
    ----------
    atoms : DataFrame or iterable of DataFrame
        Atoms table of a movie (DESIGN.md): ``frame``, ``y``, ``x`` (px), ``label`` and, when known,
        ``coordination`` and ``defect`` (from :mod:`stemflow.chem`) and ``site``. An iterable of
        tables (one or more whole frames each, in frame order) is processed as a stream.
    pixel_size : float, optional
        nm/px; default ``atoms.attrs['pixel_size']`` (``find_atoms`` records it) or ``y_nm / y``.
    labels : sequence of str or None
        Rows to track (default dopants and vacancies); None tracks every row.
    search_range : float, optional
        Largest move between observations, nm. Default twice the host lattice's nearest-neighbour
        distance (0.28 nm in graphene, 0.37 nm in WS2): a hop plus slack.
    memory : int
        Frames a tracked atom may go undetected and keep its id.
    drift : bool or DataFrame
        True: measure it from the lattice atoms (:func:`stemflow.tracking.drift`); a table with
        ``frame``, ``dy``, ``dx`` (px) to use one already known; False: no correction.
    spacing : float, optional
        Host nearest-neighbour distance, nm (measured on the first frame with lattice atoms when
        None; required when the table has no lattice rows).
    max_step : float, optional
        Largest change of the drift step between frames, px (see :func:`stemflow.tracking.drift`).
    images : array-like (frame, y, x), optional
        The frames, for a coarse image cross-correlation before the atoms refine the drift.
    first_particle : int
        First particle id; give disjoint ranges to runs whose tables will be concatenated.
    adaptive_stop : float, optional
        Smallest search range trackpy's adaptive search may shrink to, nm (default 0.2 ×
        ``search_range``).
    same_site, new_site : float
        Site thresholds in units of the spacing (:func:`stemflow.tracking.trajectory_sites`).
    given_sites : bool
        Use the table's own ``site`` column (ids that name the same physical site in every frame)
        instead of assigning sites; by default sites are assigned and an input ``site`` column is
        kept as ``site_input``.
    persist : "auto", int or None
        Temporal evidence for sites and events: a place must be held for this many observations
        (frames where the atom is seen) to count; shorter excursions are noise. ``"auto"`` (the
        default) chooses it from the movie's own rate of one-frame excursions
        (:func:`stemflow.tracking.sites.persistence`: 1 on clean data, 2 at a few per cent); an int
        fixes it; None judges every frame on its own (no stays, no dating in gaps). With it, a hop
        that ends a gap is dated by bright ``lattice``-labelled rows in the gap (needs an
        ``intensity`` column, as ``find_atoms`` gives).

    Returns
    -------
    TrackResult
        ``trajectories``: the tracked atoms rows plus ``particle`` (int64), ``y_corr``, ``x_corr``
        (drift-corrected px, coordinates of the first frame), ``site`` (int64),
        ``state`` (str: defect, else label-coordination), ``coordination`` (int8: host atoms within
        1.5 spacings, unless given; within 1.2 spacings of the edge of the frame's lattice atoms
        the particle's nearest known value, -1 if none) and ``on_site`` (bool); sorted by frame, particle.
        ``events``: :data:`stemflow.tables.EVENTS` (see :func:`stemflow.tracking.events`).
        ``drift``: :data:`stemflow.tables.DRIFT`, one row per frame. Each table's
        ``attrs`` hold ``pixel_size`` (nm/px) and ``spacing_nm``; with ``persist``, also
        ``persist_frames``, ``one_frame_rate`` and ``move_rate`` (:func:`~stemflow.tracking.trajectory_sites`).

    Raises
    ------
    InputError
        No ``frame`` column, missing ``y``/``x``/``label``, NaN positions, unknown pixel size, no
        lattice atoms to measure the spacing from and no ``spacing``.

    Warns
    -----
    StemflowWarning
        The movie has a single frame, or no rows at all: the tables are then empty, with their
        columns.

    Notes
    -----
    Units: positions px, distances nm, time in frames. Streaming keeps at most ``memory`` + 1
    frames in the linker and two frames in the drift estimator; the tracked rows are kept.

    Examples
    --------
    >>> from stemflow.simulate import simulate_movie
    >>> mov = simulate_movie("graphene", 16, 256, drift=(1.0, -0.5), seed=3,
    ...                      defects={"Si1C3": 3}, rates={"hop": 0.2})
    >>> atoms = mov.atoms[["frame", "y", "x", "label"]]
    >>> traj, ev, dr = track(atoms, pixel_size=mov.pixel_size)
    >>> ev.query("kind == 'hop'")[["particle", "frame", "distance_nm"]]   # doctest: +SKIP
    """
    chunks, whole = _chunks(atoms)
    if isinstance(drift, pd.DataFrame):
        require_columns(drift, ["frame", "dy", "dx"], "drift", "pass the table stemflow.tracking.drift returns")
        known = drift.set_index("frame")[["dy", "dx"]]
    elif not isinstance(drift, (bool, np.bool_)):
        raise InputError(f"drift must be True, False or a drift table (frame, dy, dx); got {type(drift).__name__}")
    wanted = None if labels is None else [str(v) for v in labels]
    st = dict(px=pixel_size, spacing=spacing, first=None, last=None, n=0, attrs={}, derived=False, dopant_I=None)
    pieces, rows_drift = [], []
    estimator = None
    rescue = persist is not None and (wanted is None or "dopant" in wanted)
    recent = deque(maxlen=int(memory) + 1)       # drift-corrected dopants of the last frames
    bright_rows = []

    def coords():
        """(frame, drift-corrected positions of the tracked rows) for trackpy, frame by frame."""
        nonlocal estimator
        for chunk in chunks:
            if st["first"] is None:
                st["attrs"] = dict((whole if whole is not None else chunk).attrs)
                st["px"] = pixel_size_of(whole if whole is not None else chunk, pixel_size)
                if "label" not in chunk.columns and labels is not None:
                    raise InputError("the atoms table has no 'label' column; track needs it to choose the "
                                     "rows to follow (pass labels=None to follow every row)")
            check_finite(chunk, ["y", "x"])
            fr = chunk["frame"].to_numpy(np.int64)
            yx = chunk[["y", "x"]].to_numpy(np.float64)
            lab = chunk["label"].astype(str).to_numpy() if "label" in chunk.columns else None
            host_m = lab == "lattice" if lab is not None else np.zeros(len(fr), bool)
            keep_m = np.isin(lab, wanted) if wanted is not None else np.ones(len(fr), bool)
            has_coord = "coordination" in chunk.columns
            inten = chunk["intensity"].to_numpy(np.float64) if rescue and "intensity" in chunk.columns \
                and lab is not None else None
            bright_m = lab == "dopant" if inten is not None else None
            bounds = np.flatnonzero(np.r_[True, fr[1:] != fr[:-1], True])
            idx_all, corr_all, coord_all, on_all = [], [], [], []
            for a, b in zip(bounds[:-1], bounds[1:]):
                f = int(fr[a])
                if st["first"] is None:
                    st["first"] = f
                st["last"] = f
                st["n"] += 1
                hp = yx[a:b][host_m[a:b]]
                if st["spacing"] is None and len(hp) >= 3:
                    st["spacing"] = lattice_spacing(hp) * st["px"]
                sp_px = None if st["spacing"] is None else st["spacing"] / st["px"]
                if drift is True:
                    if estimator is None:
                        estimator = DriftEstimator(spacing=sp_px, max_step=max_step)
                    img = None if images is None else np.asarray(images[st["n"] - 1])
                    dy, dx, m = estimator.update(f, hp if len(hp) >= 3 else yx[a:b], img)
                    rows_drift.append((f, dy, dx, m))
                    d = np.array([dy, dx]) if np.isfinite(dy) else np.zeros(2)
                elif drift is False:
                    rows_drift.append((f, 0.0, 0.0, 0))
                    d = np.zeros(2)
                else:
                    if f not in known.index:
                        raise InputError(f"the drift table has no row for frame {f}; pass the drift of every "
                                         "frame (stemflow.tracking.drift(atoms))")
                    d = known.loc[f].to_numpy(np.float64)
                    rows_drift.append((f, float(d[0]), float(d[1]), 0))
                idx = a + np.flatnonzero(keep_m[a:b])
                q = yx[idx]
                if sp_px is not None and len(idx):
                    coord, on_site = host_neighbours(q, hp, sp_px)
                    if not has_coord and len(hp):   # host shell cut by the frame edge: filled in later
                        edge = (np.minimum(q - hp.min(axis=0), hp.max(axis=0) - q) < 1.2 * sp_px).any(axis=1)
                        coord = np.where(edge, -1, coord).astype(np.int8)
                else:
                    coord, on_site = np.full(len(idx), -1, np.int8), np.ones(len(idx), bool)
                if inten is not None and sp_px is not None:
                    dq = yx[a:b][bright_m[a:b]] - d
                    if len(dq):
                        st["dopant_I"] = float(np.median(inten[a:b][bright_m[a:b]]))
                    keep = _bright_host_rows(yx[a:b] - d, inten[a:b], host_m[a:b], st["dopant_I"],
                                             [*recent, dq], sp_px)
                    recent.append(dq)
                    if len(keep):
                        bright_rows.append(np.column_stack([np.full(len(keep), f), yx[a:b][keep],
                                                            yx[a:b][keep] - d, inten[a:b][keep]]))
                idx_all.append(idx)
                corr_all.append(q - d)
                coord_all.append(coord)
                on_all.append(on_site)
                yield f, q - d
            idx = np.concatenate(idx_all) if idx_all else np.empty(0, np.int64)
            piece = chunk.iloc[idx].copy()
            corr = np.vstack(corr_all) if corr_all else np.empty((0, 2))
            piece["y_corr"], piece["x_corr"] = corr[:, 0], corr[:, 1]
            if not has_coord:
                piece["coordination"] = np.concatenate(coord_all) if coord_all else np.empty(0, np.int8)
                st["derived"] = True
            piece["on_site"] = np.concatenate(on_all) if on_all else np.empty(0, bool)
            pieces.append(piece)

    stream = coords()
    first = next(stream, None)
    if first is None:
        warnings.warn("the atoms table is empty: there are no frames to track, so the trajectories, events "
                      "and drift are empty. Find atoms first (stemflow.find_atoms on a (frame, y, x) stack)",
                      StemflowWarning, stacklevel=2)
        return _empty_result(whole)
    if st["spacing"] is None:
        raise InputError("the host lattice spacing is unknown: the first frame has no 'lattice' atoms. Pass "
                         "spacing= (nm, e.g. 0.142 for graphene) or include the lattice atoms in the table")
    px, sp = st["px"], st["spacing"]
    sr = (2.0 * sp if search_range is None else float(search_range)) / px
    stop = 0.2 * sr if adaptive_stop is None else adaptive_stop / px

    def chain():
        yield first
        yield from stream

    ids = list(link_positions(chain(), sr, memory=int(memory), adaptive_stop=stop))
    traj = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()
    traj["particle"] = (np.concatenate(ids) if ids else np.empty(0, np.int64)) + np.int64(first_particle)
    if drift is True and estimator is not None:
        dr = finish_drift(rows_drift, st["first"], st["last"])
    else:
        dr = pd.DataFrame(rows_drift, columns=DRIFT.names).astype(
            {"frame": np.int64, "dy": np.float64, "dx": np.float64, "matched": np.int64})
    state = st

    if state["n"] < 2:
        warnings.warn("the movie has a single frame: there is nothing to link, so the trajectories and "
                      "events are empty. Pass the atoms of two or more frames", StemflowWarning, stacklevel=2)
        traj = traj.iloc[:0]
    if not given_sites or "site" not in traj.columns or traj["site"].isna().any():
        if "site" in traj.columns:
            traj = traj.rename(columns={"site": "site_input"})
        traj = trajectory_sites(traj, sp / px, same=same_site, new=new_site, persist=persist)
    site_attrs = {k: traj.attrs[k] for k in ("persist_frames", "persist_frames_side", "one_frame_rate", "move_rate")
                  if k in traj.attrs}
    if len(traj):
        # Counted here or given by chem, a coordination flickering without the atom moving is
        # noise: a real change moves it (see _steady_coordination).
        traj = _steady_coordination(traj, same_site * sp / px)
    traj["coordination"] = traj["coordination"].astype(np.int8)
    traj["on_site"] = traj["on_site"].astype(bool)
    traj["state"] = state_column(traj).astype(str).to_numpy() if len(traj) else pd.Series(dtype=str)
    traj["particle"] = traj["particle"].astype(np.int64)
    traj = traj.sort_values(["frame", "particle"], kind="stable").reset_index(drop=True)
    traj = traj[[c for c in traj.columns if c not in _ADDED]
                + [c for c in _ADDED if c in traj.columns]]
    meta = dict(state["attrs"], pixel_size=px, spacing_nm=sp, **site_attrs)
    ev = events(traj, pixel_size=px, first_frame=state["first"], last_frame=state["last"])
    if bright_rows and "stay" in traj.columns:
        bright = pd.DataFrame(np.vstack(bright_rows), columns=["frame", "y", "x", "y_corr", "x_corr", "intensity"])
        ev = _date_hops_in_gaps(ev, traj, bright.astype({"frame": np.int64}), sp / px, same_site)
    traj = traj.drop(columns="stay", errors="ignore")
    traj.attrs.update(meta)
    ev.attrs.update(meta)
    dr.attrs.update(meta)
    return TrackResult(traj, ev, dr)

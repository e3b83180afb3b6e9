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

import dataclasses
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..errors import InputError, StemflowWarning
from ._validate import check_finite, pixel_size_of, require_columns, require_frame
from ..tables import DRIFT, LATTICES, TRAJECTORIES
from .alignment import DriftEstimator, finish_drift, lattice_spacing

#: Heavy atoms on an amorphous support have no host lattice to measure a spacing on: the distance
#: between neighbouring carbon sites a heavy atom binds to stands in for it, nm (the support's C–C
#: bond, :data:`stemflow.tables.LATTICES`), so the default search range is 0.28 nm a frame, a move of
#: at least 0.11 nm is a hop and detections within 0.04 nm of each other are one site.
AMORPHOUS_SPACING_NM = LATTICES["amorphous"]["bond"]
from .linking import link_positions
from .options import TrackOptions
from .sites import host_neighbours, trajectory_sites
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


def _edge_dopants_back(chunk: pd.DataFrame) -> pd.DataFrame:
    """The network's dopants that the chemistry could not check at the frame's edge
    (``dopant_check`` ``"edge"``, labelled ``unknown`` by :func:`stemflow.chem.check_dopants`)
    labelled ``dopant`` again: in a movie the neighbouring frames judge them, and a dopant that
    drifts near the edge keeps its trajectory and its hops."""
    if "dopant_check" not in chunk.columns or "label" not in chunk.columns:
        return chunk
    edge = chunk["dopant_check"].astype(str).to_numpy() == "edge"
    if not edge.any():
        return chunk
    lab = chunk["label"].astype(str).to_numpy().copy()
    lab[edge] = "dopant"
    cats = chunk["label"].cat.categories if isinstance(chunk["label"].dtype, pd.CategoricalDtype) else None
    return chunk.assign(label=pd.Categorical(lab, categories=cats) if cats is not None and "dopant" in cats
                        else lab)


class _Pass:
    """One pass over a movie's frames: what :func:`track` learns frame by frame.

    :meth:`positions` streams each frame's drift-corrected positions of the tracked rows to the
    linker; on the way it measures the drift (:class:`~stemflow.tracking.DriftEstimator`, or a
    given table), counts each tracked row's host neighbours
    (:func:`~stemflow.tracking.host_neighbours`), keeps the tracked rows and sets aside the bright
    host-labelled rows next to recent dopants (:func:`_bright_host_rows`). Memory: the kept rows, a
    drift row per frame, and ``memory`` + 1 frames of recent dopants.
    """

    def __init__(self, opts: TrackOptions, pixel_size, drift, images, whole):
        self.opts, self.drift, self.images, self.whole = opts, drift, images, whole
        self.known = drift.set_index("frame")[["dy", "dx"]] if isinstance(drift, pd.DataFrame) else None
        self.px, self.spacing = pixel_size, opts.spacing
        self.first = self.last = None
        self.n, self.attrs, self.dopant_intensity = 0, {}, None
        self.estimator = None
        self.rescue = opts.persist is not None and (opts.labels is None or "dopant" in opts.labels)
        self.recent = deque(maxlen=opts.memory + 1)       # drift-corrected dopants of the last frames
        self.pieces, self.drift_rows, self.bright_rows = [], [], []

    def _begin(self, chunk: pd.DataFrame) -> None:
        source = self.whole if self.whole is not None else chunk
        self.attrs = dict(source.attrs)
        if self.opts.persist == "auto" and self.attrs.get("decoded_over_frames"):
            # the labels already weigh the neighbouring frames (find_atoms_movie's hidden Markov
            # model): a stay of one frame there is evidence, not noise to be smoothed a second time
            self.opts = dataclasses.replace(self.opts, persist=None)
            self.rescue = False
        self.px = pixel_size_of(source, self.px)
        if self.spacing is None and self.attrs.get("lattice") == "amorphous":
            self.spacing = AMORPHOUS_SPACING_NM          # no host lattice to measure: see the constant
        if "label" not in chunk.columns and self.opts.labels is not None:
            raise InputError("the atoms table has no 'label' column; track needs it to choose the "
                             "rows to follow (pass labels=None to follow every row)")

    def _drift_of(self, f: int, host: np.ndarray, rows: np.ndarray, spacing_px) -> np.ndarray:
        """Drift (dy, dx) px of frame ``f`` (measured from its host atoms, given, or none)."""
        if self.drift is True:
            if self.estimator is None:
                self.estimator = DriftEstimator(spacing=spacing_px, max_step=self.opts.max_step)
            img = None if self.images is None else np.asarray(self.images[self.n - 1])
            dy, dx, m = self.estimator.update(f, host if len(host) >= 3 else rows, img)
            self.drift_rows.append((f, dy, dx, m))
            return np.array([dy, dx]) if np.isfinite(dy) else np.zeros(2)
        if self.drift is False:
            self.drift_rows.append((f, 0.0, 0.0, 0))
            return np.zeros(2)
        if f not in self.known.index:
            raise InputError(f"the drift table has no row for frame {f}; pass the drift of every "
                             "frame (stemflow.tracking.drift(atoms))")
        d = self.known.loc[f].to_numpy(np.float64)
        self.drift_rows.append((f, float(d[0]), float(d[1]), 0))
        return d

    @staticmethod
    def _neighbourhood(q, host, spacing_px, counted: bool):
        """Coordination and on-site flag of the tracked rows ``q`` from the frame's host atoms; -1
        where the host shell is cut by the edge of the frame's lattice (filled in later)."""
        if spacing_px is None or not len(q):
            return np.full(len(q), -1, np.int8), np.ones(len(q), bool)
        coord, on_site = host_neighbours(q, host, spacing_px)
        if counted and len(host):
            edge = (np.minimum(q - host.min(axis=0), host.max(axis=0) - q) < 1.2 * spacing_px).any(axis=1)
            coord = np.where(edge, -1, coord).astype(np.int8)
        return coord, on_site

    def _set_aside(self, f, yx, d, inten, host_m, dopant_m, spacing_px) -> None:
        """Keep the frame's bright host-labelled rows next to recent dopants (for dating hops)."""
        dq = yx[dopant_m] - d
        if len(dq):
            self.dopant_intensity = float(np.median(inten[dopant_m]))
        keep = _bright_host_rows(yx - d, inten, host_m, self.dopant_intensity, [*self.recent, dq], spacing_px)
        self.recent.append(dq)
        if len(keep):
            self.bright_rows.append(np.column_stack([np.full(len(keep), f), yx[keep], yx[keep] - d, inten[keep]]))

    def positions(self, chunks: Iterable[pd.DataFrame]) -> Iterator[tuple[int, np.ndarray]]:
        """``(frame, drift-corrected positions px of the tracked rows)``, frame by frame."""
        wanted = self.opts.labels
        for chunk in chunks:
            if self.first is None:
                self._begin(chunk)
            check_finite(chunk, ["y", "x"])
            chunk = _edge_dopants_back(chunk)
            fr = chunk["frame"].to_numpy(np.int64)
            yx = chunk[["y", "x"]].to_numpy(np.float64)
            lab = chunk["label"].astype(str).to_numpy() if "label" in chunk.columns else None
            host_m = lab == "lattice" if lab is not None else np.zeros(len(fr), bool)
            keep_m = np.isin(lab, wanted) if wanted is not None else np.ones(len(fr), bool)
            counted = "coordination" not in chunk.columns
            inten = chunk["intensity"].to_numpy(np.float64) if self.rescue and "intensity" in chunk.columns \
                and lab is not None else None
            bounds = np.flatnonzero(np.r_[True, fr[1:] != fr[:-1], True])
            idx_all, corr_all, coord_all, on_all = [], [], [], []
            for a, b in zip(bounds[:-1], bounds[1:]):
                f = int(fr[a])
                if self.first is None:
                    self.first = f
                self.last = f
                self.n += 1
                host = yx[a:b][host_m[a:b]]
                if self.spacing is None and len(host) >= 3:
                    self.spacing = lattice_spacing(host) * self.px
                sp_px = None if self.spacing is None else self.spacing / self.px
                d = self._drift_of(f, host, yx[a:b], sp_px)
                idx = a + np.flatnonzero(keep_m[a:b])
                q = yx[idx]
                coord, on_site = self._neighbourhood(q, host, sp_px, counted)
                if inten is not None and sp_px is not None:
                    self._set_aside(f, yx[a:b], d, inten[a:b], host_m[a:b], lab[a:b] == "dopant", sp_px)
                idx_all.append(idx)
                corr_all.append(q - d)
                coord_all.append(coord)
                on_all.append(on_site)
                yield f, q - d
            piece = chunk.iloc[np.concatenate(idx_all)].copy()
            corr = np.vstack(corr_all)
            piece["y_corr"], piece["x_corr"] = corr[:, 0], corr[:, 1]
            if counted:
                piece["coordination"] = np.concatenate(coord_all)
            piece["on_site"] = np.concatenate(on_all)
            self.pieces.append(piece)

    def trajectories(self, ids: list, first_particle: int) -> pd.DataFrame:
        """The kept rows with their ``particle`` ids (``ids``: the linker's, one array per frame)."""
        traj = pd.concat(self.pieces, ignore_index=True) if self.pieces else pd.DataFrame()
        traj["particle"] = (np.concatenate(ids) if ids else np.empty(0, np.int64)) + np.int64(first_particle)
        return traj

    def drift_table(self) -> pd.DataFrame:
        """:data:`stemflow.tables.DRIFT`, one row per frame."""
        if self.drift is True and self.estimator is not None:
            return finish_drift(self.drift_rows, self.first, self.last)
        return pd.DataFrame(self.drift_rows, columns=DRIFT.names).astype(
            {"frame": np.int64, "dy": np.float64, "dx": np.float64, "matched": np.int64})

    def bright(self) -> pd.DataFrame:
        """The rows set aside: ``frame``, ``y``, ``x``, ``y_corr``, ``x_corr`` (px), ``intensity``."""
        cols = ["frame", "y", "x", "y_corr", "x_corr", "intensity"]
        if not self.bright_rows:
            return pd.DataFrame(columns=cols)
        return pd.DataFrame(np.vstack(self.bright_rows), columns=cols).astype({"frame": np.int64})


def _sites_and_states(traj: pd.DataFrame, opts: TrackOptions, spacing_px: float) -> pd.DataFrame:
    """Sites (assigned, or the table's own), steady coordination and ``state`` of the trajectories."""
    if not opts.given_sites or "site" not in traj.columns or traj["site"].isna().any():
        if "site" in traj.columns:
            traj = traj.rename(columns={"site": "site_input"})
        traj = trajectory_sites(traj, spacing_px, same=opts.same_site, new=opts.new_site, persist=opts.persist)
    site_attrs = {k: traj.attrs[k] for k in ("persist_frames", "persist_frames_side", "one_frame_rate", "move_rate")
                  if k in traj.attrs}
    if len(traj):
        # Counted here or given by chem, a coordination flickering without the atom moving is
        # noise: a real change moves it (see _steady_coordination).
        traj = _steady_coordination(traj, opts.same_site * spacing_px)
    traj["coordination"] = traj["coordination"].astype(np.int8)
    traj["on_site"] = traj["on_site"].astype(bool)
    traj["state"] = state_column(traj).astype(str).to_numpy() if len(traj) else pd.Series(dtype=str)
    traj["particle"] = traj["particle"].astype(np.int64)
    traj = traj.sort_values(["frame", "particle"], kind="stable").reset_index(drop=True)
    traj = traj[[c for c in traj.columns if c not in _ADDED] + [c for c in _ADDED if c in traj.columns]]
    traj.attrs = site_attrs
    return traj


def track(atoms, pixel_size: float | None = None, options: TrackOptions | dict | None = None, *, drift=True,
          images=None, first_particle: int = 0, **keywords) -> TrackResult:
    """Drift-correct, link and find the events of a movie's atoms table.

    The steps are the public ones, streamed: per frame, the drift
    (:class:`~stemflow.tracking.DriftEstimator`, as :func:`~stemflow.tracking.drift`), the host
    neighbourhood of each tracked row (:func:`~stemflow.tracking.host_neighbours`) and linking
    (:func:`~stemflow.tracking.link_positions`, as :func:`~stemflow.tracking.link`); then, on the
    trajectories, :func:`~stemflow.tracking.trajectory_sites` and :func:`~stemflow.tracking.events`.

    Parameters
    ----------
    atoms : DataFrame or iterable of DataFrame
        Atoms table of a movie (DESIGN.md): ``frame``, ``y``, ``x`` (px), ``label`` and, when known,
        ``coordination`` and ``defect`` (from :mod:`stemflow.chem`) and ``site``. An iterable of
        tables (one or more whole frames each, in frame order) is processed as a stream. Rows the
        chemistry could not check at a frame's edge (``dopant_check`` ``"edge"``, labelled
        ``unknown``) are followed as the dopants the network called them: in a movie the
        neighbouring frames judge them.
    pixel_size : float, optional
        nm/px; default ``atoms.attrs['pixel_size']`` (``find_atoms`` records it) or ``y_nm / y``.
    options : TrackOptions or dict, optional
        How to link and judge (:class:`~stemflow.tracking.TrackOptions`); keywords replace single
        fields.
    drift : bool or DataFrame
        True: measure it from the lattice atoms (:func:`stemflow.tracking.drift`); a table with
        ``frame``, ``dy``, ``dx`` (px) to use one already known; False: no correction.
    images : array-like (frame, y, x), optional
        The frames, for a coarse image cross-correlation before the atoms refine the drift.
    first_particle : int
        First particle id; give disjoint ranges to runs whose tables will be concatenated.
    **keywords
        Fields of :class:`~stemflow.tracking.TrackOptions`: ``labels`` (rows to track, default
        dopants and vacancies), ``search_range`` (nm, default twice the host nearest-neighbour
        distance), ``memory`` (frames, default 3), ``spacing`` (nm), ``max_step`` (px),
        ``adaptive_stop`` (nm), ``same_site``/``new_site`` (spacings), ``given_sites`` and
        ``persist`` (observations: ``"auto"`` chooses it from the movie's own rate of one-frame
        excursions, :func:`stemflow.tracking.sites.persistence`; None judges every frame on its own,
        with no stays and no dating in gaps). With ``persist``, a hop that ends a gap is dated by
        bright ``lattice``-labelled rows in the gap (needs an ``intensity`` column, as
        ``find_atoms`` gives).

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
        ``attrs`` hold ``pixel_size`` (nm/px), ``spacing_nm`` and ``track_options``
        (:meth:`TrackOptions.manifest`); with ``persist``, also ``persist_frames``,
        ``one_frame_rate`` and ``move_rate`` (:func:`~stemflow.tracking.trajectory_sites`).

    Raises
    ------
    InputError
        No ``frame`` column, missing ``y``/``x``/``label``, NaN positions, unknown pixel size, no
        lattice atoms to measure the spacing from and no ``spacing``, an unknown or out-of-range
        option.

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
    opts = TrackOptions.from_keywords(options, **keywords)
    chunks, whole = _chunks(atoms)
    if isinstance(drift, pd.DataFrame):
        require_columns(drift, ["frame", "dy", "dx"], "drift", "pass the table stemflow.tracking.drift returns")
    elif not isinstance(drift, (bool, np.bool_)):
        raise InputError(f"drift must be True, False or a drift table (frame, dy, dx); got {type(drift).__name__}")
    else:
        drift = bool(drift)
    one = _Pass(opts, pixel_size, drift, images, whole)
    stream = one.positions(chunks)
    first = next(stream, None)
    if first is None:
        warnings.warn("the atoms table is empty: there are no frames to track, so the trajectories, events "
                      "and drift are empty. Find atoms first (stemflow.find_atoms on a (frame, y, x) stack)",
                      StemflowWarning, stacklevel=2)
        return _empty_result(whole)
    if one.spacing is None:
        raise InputError("the host lattice spacing is unknown: the first frame has no 'lattice' atoms. Pass "
                         "spacing= (nm, e.g. 0.142 for graphene) or include the lattice atoms in the table; heavy "
                         "atoms on an amorphous support: a table of find_atoms(..., lattice='amorphous') says so "
                         f"in attrs['lattice'], and {AMORPHOUS_SPACING_NM} nm is taken")
    px, sp = one.px, one.spacing
    sr = (2.0 * sp if opts.search_range is None else opts.search_range) / px
    stop = 0.2 * sr if opts.adaptive_stop is None else opts.adaptive_stop / px
    ids = list(link_positions(chain([first], stream), sr, memory=opts.memory, adaptive_stop=stop))
    traj = one.trajectories(ids, first_particle)
    dr = one.drift_table()
    if one.n < 2:
        warnings.warn("the movie has a single frame: there is nothing to link, so the trajectories and "
                      "events are empty. Pass the atoms of two or more frames", StemflowWarning, stacklevel=2)
        traj = traj.iloc[:0]
    traj = _sites_and_states(traj, one.opts, sp / px)
    meta = dict(one.attrs, pixel_size=px, spacing_nm=sp, **traj.attrs, track_options=one.opts.manifest())
    ev = events(traj, pixel_size=px, first_frame=one.first, last_frame=one.last)
    bright = one.bright()
    if len(bright) and "stay" in traj.columns:
        ev = _date_hops_in_gaps(ev, traj, bright, sp / px, opts.same_site)
    traj = traj.drop(columns="stay", errors="ignore")
    for table in (traj, ev, dr):
        table.attrs = dict(meta)
    return TrackResult(traj, ev, dr)

"""Lattice sites of dopants and vacancies, so that a hop is a change of site.

A dopant or vacancy sits on a site of the host lattice most of the time, and now and then
somewhere in between (a 4-fold Si sits in a divacancy, half a bond from its 3-fold site). Sites
are found from the drift-corrected positions of each trajectory, relative to the host lattice's
nearest-neighbour distance b:

* an observation within ``same`` × b of the current site is on it (the site's position is the
  mean of such observations);
* one within ``hop`` × b is displaced but still on that site (the bond-centred 4-fold state);
* one further away is on a new site: a hop.

Which observations may anchor a site comes from the host atoms of the same frame: an observation
is *on a lattice site* when at least two host atoms lie one bond length (0.8–1.15 b) from it, as
they do around a substitutional dopant or a vacancy but not around a bond-centred atom (its
neighbours are 1.32 b away). Sites of all trajectories are then merged by position into one
numbering, so two particles visiting the same place share a site id.

**Temporal evidence** (``persist``, on by default). At low dose one frame can lie: a dopant is
placed a third of a bond off, a false detection is linked in for a frame, a 4-fold Si lands on the
wrong side of the 0.75 b line. So the rules above are applied to *stays*, not to single frames:

1. each trajectory's positions are grouped into *places* (clusters of radius ``same`` × b);
2. a run of consecutive observations at one place is a stay when it holds for ``k`` observations
   (trajectory ends: see :func:`persistence`); shorter runs are noise and join the stay around
   them (between two different stays, the split that fits the positions best dates the change);
3. each stay's mean position, with its observations' ``on_site`` majority as anchor, goes through
   the site rules above — a displacement is judged on a mean of many frames, not on one;
4. a trajectory seen fewer than 3 times is one stay (two lone detections make no hop).

``k`` is chosen per movie from the frame-level error rates measured on the movie itself: ε, the
fraction of observations that leave a place for one observation and come back (A x A), beyond
what real moves there and back explain, and q, the fraction of consecutive pairs that change
place otherwise. A run of L observations is taken as real when a real stay of that length is
likelier than L errors, q²(1 - q)^(L-1) > ε^L; with no one-frame excursions (clean data, high
dose) ``k`` is 1 and every frame counts, as without ``persist``. Excursions of hop size (at least
``new`` × b from the places on both sides) and side steps (half a spacing to ``new`` × b: a 4-fold
Si's) get their own ``k`` from their own rates; a run in another label than its trajectory's
(a dopant's track through one ``vacancy``) needs at least two observations.

Units: positions px, ``spacing`` px, thresholds in units of the spacing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..errors import InputError
from ._validate import check_finite, require_columns, require_table

__all__ = ["trajectory_sites", "host_neighbours", "persistence", "SAME_SITE", "NEW_SITE", "MAX_PERSIST"]

#: Observations within this many spacings of a site are on it.
SAME_SITE = 0.3
#: Observations this many spacings or more from the current site are on a new site (a hop).
NEW_SITE = 0.75
#: Largest number of observations a place must be held for to count as a stay.
MAX_PERSIST = 5


def host_neighbours(points: np.ndarray, host: np.ndarray, spacing: float,
                    cutoff: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Host atoms around each point of one frame: a coordination count and an on-site flag.

    Parameters
    ----------
    points : (n, 2) array
        Positions of the dopants / vacancies, px.
    host : (m, 2) array
        Positions of the host lattice atoms of the same frame, px.
    spacing : float
        Host nearest-neighbour distance b, px.
    cutoff : float
        Bonding cutoff in units of b: 1.5 b counts the 3 neighbours of a substitutional Si in
        graphene (1.0 b) and the 4 of a bond-centred one (1.32 b) but not the next shell (1.73 b).

    Returns
    -------
    coordination : (n,) int8
        Host atoms within ``cutoff`` × b.
    on_site : (n,) bool
        At least two host atoms lie 0.8–1.15 b away.

    Examples
    --------
    A substitutional dopant with its 3 host neighbours one bond away, and a point half a bond off it:

    >>> import numpy as np
    >>> from stemflow.tracking import host_neighbours
    >>> host = np.array([[1.0, 0.0], [-0.5, 0.866], [-0.5, -0.866]])     # px
    >>> coordination, on_site = host_neighbours(np.array([[0.0, 0.0], [0.5, 0.0]]), host, spacing=1.0)
    >>> coordination.tolist(), on_site.tolist()
    ([3, 3], [True, False])
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    host = np.asarray(host, np.float64).reshape(-1, 2)
    if len(points) == 0 or len(host) == 0:
        return np.zeros(len(points), np.int8), np.ones(len(points), bool)
    k = min(8, len(host))
    d, _ = cKDTree(host).query(points, k=k)
    d = d.reshape(len(points), k) / spacing
    coordination = (d <= cutoff).sum(axis=1).astype(np.int8)
    on_site = ((d >= 0.8) & (d <= 1.15)).sum(axis=1) >= 2
    return coordination, on_site


def _particle_sites(p: np.ndarray, anchor_ok: np.ndarray, same: float, new: float,
                    weight: np.ndarray | None = None):
    """Local site index of each observation (or stay) of one trajectory, and the sites' positions.

    ``p``: (n, 2) drift-corrected positions in units of the spacing, in frame order;
    ``anchor_ok``: observations allowed to fix a site's position; ``weight``: observations each
    row stands for (a stay's length; default 1).
    """
    n = len(p)
    w = np.ones(n, np.int64) if weight is None else np.asarray(weight, np.int64)
    site = np.empty(n, np.int64)
    centres: list[np.ndarray] = []
    weights: list[int] = []
    anchored: list[bool] = []
    cur = -1
    for i in range(n):
        q = p[i]
        if cur >= 0:
            d = float(np.hypot(*(q - centres[cur])))
            if d < new:
                site[i] = cur
                if anchor_ok[i] and (not anchored[cur]):       # first true anchor replaces a provisional one
                    centres[cur], weights[cur], anchored[cur] = q.copy(), int(w[i]), True
                elif anchor_ok[i] == anchored[cur] and d <= same:
                    weights[cur] += int(w[i])
                    centres[cur] = centres[cur] + (q - centres[cur]) * (w[i] / weights[cur])
                continue
        centres.append(q.copy())
        weights.append(int(w[i]))
        anchored.append(bool(anchor_ok[i]))
        cur = len(centres) - 1
        site[i] = cur
    return site, np.asarray(centres).reshape(-1, 2)


def _places(p: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Group one trajectory's positions (units of the spacing, frame order) into places.

    Leader clustering with running means (a point joins the nearest place within ``radius``, else
    starts one), then rounds of: every point to its nearest place, places re-centred, places
    closer than ``radius`` merged. Returns the place of each point (int64, 0, 1, ... in order of
    first visit) and the places' mean positions.
    """
    centres = np.empty((len(p), 2))
    counts = np.zeros(len(p), np.int64)
    m = 0
    for q in p:
        if m:
            d = np.hypot(*(centres[:m] - q).T)
            j = int(np.argmin(d))
            if d[j] <= radius:
                counts[j] += 1
                centres[j] += (q - centres[j]) / counts[j]
                continue
        centres[m], counts[m] = q, 1
        m += 1
    centres = centres[:m]
    lab = np.zeros(len(p), np.int64)
    for _ in range(10):
        lab = np.argmin(((p[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        _, first, lab = np.unique(lab, return_index=True, return_inverse=True)
        lab = np.argsort(np.argsort(first))[lab]                  # numbered in order of first visit
        w = np.bincount(lab).astype(np.float64)
        centres = np.column_stack([np.bincount(lab, p[:, 0]), np.bincount(lab, p[:, 1])]) / w[:, None]
        pairs = cKDTree(centres).query_pairs(radius, output_type="ndarray")
        if len(pairs) == 0:
            return lab.astype(np.int64), centres
        g = coo_array((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(centres),) * 2)
        _, merged = connected_components(g, directed=False)
        w = np.bincount(merged, w)
        centres = np.column_stack([np.bincount(merged, centres[:, 0] * np.bincount(lab)),
                                   np.bincount(merged, centres[:, 1] * np.bincount(lab))]) / w[:, None]
    lab = np.argmin(((p[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    _, lab = np.unique(lab, return_inverse=True)
    w = np.bincount(lab).astype(np.float64)
    centres = np.column_stack([np.bincount(lab, p[:, 0]), np.bincount(lab, p[:, 1])]) / w[:, None]
    return lab.astype(np.int64), centres


def _runs(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal values: start index, length and value of each."""
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    return starts, np.diff(np.r_[starts, len(lab)]), lab[starts]


def persistence(one_frame: float, move: float, max_k: int = MAX_PERSIST) -> tuple[int, int]:
    """Observations a place must be held for to count as a stay, from the frame-level error rates.

    Parameters
    ----------
    one_frame : float
        ε: fraction of observations that leave their place for one observation and come back
        (A x A), the rate of one-frame errors.
    move : float
        q: fraction of consecutive observation pairs that change place otherwise (moves, per
        observation; per frame when every frame is seen).
    max_k : int
        Upper bound of the answer.

    Returns
    -------
    k : int
        Smallest run length L (observations) for which a real stay of exactly L observations is
        likelier than L errors at one place: q² (1 - q)^(L-1) > ε^L. 1 when ε = 0.
    k_end : int
        The same for a run cut by the start or end of the trajectory, whose stay may go on
        unseen: q (1 - q)^(L-1) > ε^L.

    Notes
    -----
    Errors are taken as independent from frame to frame, so L errors at one place have
    probability at most ε^L; the rule errs towards keeping short stays.
    """
    eps = float(np.clip(one_frame, 0.0, 1.0))
    q = float(np.clip(move, 1e-9, 1.0 - 1e-9))

    def first(real):
        for L in range(1, int(max_k) + 1):
            if real(L) > eps**L:
                return L
        return int(max_k)
    return first(lambda L: q * q * (1 - q) ** (L - 1)), first(lambda L: q * (1 - q) ** (L - 1))


def _smooth(lab: np.ndarray, p: np.ndarray, centres: np.ndarray, need) -> np.ndarray:
    """Place of each observation after runs shorter than they need to be (``need(i, lengths,
    vals)``, observations, for run i) are merged into the stays around them."""
    starts, lengths, vals = _runs(lab)
    r = len(starts)
    conf = np.array([lengths[i] >= need(i, lengths, vals) for i in range(r)], bool)
    if not conf.any():
        conf[int(np.argmax(lengths))] = True
    out = lab.copy()
    i = 0
    while i < r:
        if conf[i]:
            i += 1
            continue
        j = i
        while j < r and not conf[j]:
            j += 1
        a, b = starts[i], (starts[j] if j < r else len(lab))     # observations a..b-1 are unconfirmed
        prev = vals[i - 1] if i > 0 else None
        nxt = vals[j] if j < r else None
        if prev is None or nxt is None or prev == nxt:
            out[a:b] = nxt if prev is None else prev
        else:       # one change between two different stays: the split that fits best
            d0 = np.hypot(*(p[a:b] - centres[prev]).T)
            d1 = np.hypot(*(p[a:b] - centres[nxt]).T)
            cost = np.r_[0.0, np.cumsum(d0)] + np.r_[np.cumsum(d1[::-1])[::-1], 0.0]
            s = int(np.argmin(cost))
            out[a:a + s], out[a + s:b] = prev, nxt
        i = j
    return out


def _error_rates(places, mains, lo: float, hi: float = np.inf, back: float = 0.0) -> tuple[float, float]:
    """(ε, q) of :func:`persistence`, pooled over the trajectories.

    ``places``: (place of each observation, places' centres) per trajectory; ``mains``: whether
    each run carries the trajectory's main label (None: all do). Counted are moves between places
    ``lo`` to ``hi`` spacings apart, and one-observation excursions (A x A) of that size in the
    main label (excursions in another label are handled by the label rule). The excursions real
    moves there and back would give, ``back`` × q² per pair (1/3 for hops: 3 neighbouring
    sites; 1 for side steps, which come back), are taken off ε, and so is one standard deviation
    of the count (Poisson): one-frame errors are claimed only when they stand out.
    """
    n_obs = n_pairs = blips = moves = 0
    for (lab, centres), main in zip(places, mains):
        n_obs += len(lab)
        n_pairs += max(len(lab) - 1, 0)
        _, lengths, vals = _runs(lab)
        if len(vals) < 2:
            continue
        d = np.hypot(*(centres[vals[1:]] - centres[vals[:-1]]).T)          # change i -> i+1
        far = (d >= lo) & (d < hi)
        moves += int(far.sum())
        if len(vals) >= 3:
            ok = np.ones(len(vals) - 2, bool) if main is None else main[1:-1]
            blips += int(((lengths[1:-1] == 1) & (vals[:-2] == vals[2:]) & far[:-1] & ok).sum())
    q = max(moves - 2 * blips, 1) / max(n_pairs, 1)
    eps = max(blips - n_pairs * q * q * back - np.sqrt(blips), 0.0) / n_obs if n_obs else 0.0
    return eps, q


def _labels_of_runs(labels: np.ndarray | None, lab: np.ndarray) -> np.ndarray | None:
    """Whether each run of ``lab`` carries the trajectory's most common label (None: no labels)."""
    if labels is None:
        return None
    values, counts = np.unique(labels, return_counts=True)
    main = labels == values[np.argmax(counts)]
    starts, lengths, _ = _runs(lab)
    return np.add.reduceat(main, starts) * 2 >= lengths


def check_persist(persist):
    """``persist`` as :func:`trajectory_sites` takes it: ``"auto"``, an int ≥ 1 or None.

    Parameters
    ----------
    persist : object
        The value given.

    Returns
    -------
    "auto", int or None
        The value, an int where one was given as a numpy integer.

    Raises
    ------
    InputError
        Anything else (a bool, a float, 0).

    Examples
    --------
    >>> import numpy as np
    >>> check_persist(np.int64(2)), check_persist("auto")
    (2, 'auto')
    """
    if not (persist is None or persist == "auto" or (isinstance(persist, (int, np.integer))
                                                     and not isinstance(persist, bool) and persist >= 1)):
        raise InputError(f"persist={persist!r} must be 'auto', a number of observations ≥ 1, or None")
    return persist if persist is None or persist == "auto" else int(persist)


def trajectory_sites(trajectories: pd.DataFrame, spacing: float, *, same: float = SAME_SITE,
                 new: float = NEW_SITE, persist: int | str | None = "auto") -> pd.DataFrame:
    """Give every observation of every trajectory a lattice-site id.

    Parameters
    ----------
    trajectories : DataFrame
        ``frame``, ``particle`` and positions — drift-corrected ``y_corr``, ``x_corr`` when present,
        else ``y``, ``x`` (px). An optional boolean ``on_site`` column (see
        :func:`host_neighbours`) says which observations may fix a site's position; without it all
        may.
    spacing : float
        Host lattice nearest-neighbour distance, px (0.142 nm in graphene, 0.184 nm projected
        W–S in WS2, divided by the pixel size).
    same, new : float
        Thresholds in units of ``spacing``: within ``same`` of a site an observation is on it;
        ``new`` or further away it is on another site (a hop); in between it is displaced from
        the same site.
    persist : "auto", int or None
        Temporal evidence (see the module notes): a place must be held for this many
        observations to be a stay; ``"auto"`` chooses it from the movie's own one-frame error
        rate (:func:`persistence`); None judges every observation on its own (no stays).

    Returns
    -------
    DataFrame
        A copy with ``site`` (int64): ids numbered across all trajectories; observations of
        different particles within ``same`` × spacing of each other's site share the id; and,
        unless ``persist`` is None, ``stay`` (int64, numbered per particle from 0: runs of
        observations at one place, the unit whose mean position was judged). ``attrs`` gain
        ``persist_frames`` (k of hop-size excursions), ``persist_frames_side`` (k of side steps),
        ``one_frame_rate`` (ε) and ``move_rate`` (q, hop-size).

    Raises
    ------
    InputError
        Missing columns, NaN positions, or thresholds out of order.

    Examples
    --------
    One particle that sits for three frames, then moves one spacing (5 px) and stays:

    >>> import pandas as pd
    >>> from stemflow.tracking import trajectory_sites
    >>> traj = pd.DataFrame({"frame": range(6), "particle": 0, "x_corr": 0.0,
    ...                      "y_corr": [0.0, 0.1, 0.0, 5.0, 5.1, 5.0]})
    >>> t = trajectory_sites(traj, spacing=5.0)
    >>> t["site"].tolist(), t["stay"].tolist()
    ([0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1])
    >>> t.attrs["persist_frames"]
    1
    """
    trajectories = require_table(trajectories, "trajectories")
    require_columns(trajectories, ["frame", "particle"], "trajectories",
                    "link the atoms first (stemflow.tracking.link or stemflow.tracking.track)")
    if not (np.isfinite(spacing) and spacing > 0):
        raise InputError(f"spacing={spacing} must be a positive distance in px (the host lattice's "
                         "nearest-neighbour distance)")
    if not 0 < same < new:
        raise InputError(f"thresholds must satisfy 0 < same < new; got same={same}, new={new}")
    persist = check_persist(persist)
    pos = ["y_corr", "x_corr"] if {"y_corr", "x_corr"} <= set(trajectories.columns) else ["y", "x"]
    require_columns(trajectories, pos, "trajectories")
    check_finite(trajectories, pos, "trajectories")
    out = trajectories.copy()
    if len(out) == 0:
        out["site"] = pd.Series(dtype=np.int64)
        if persist is not None:
            out["stay"] = pd.Series(dtype=np.int64)
        return out
    order = np.lexsort((out["frame"].to_numpy(), out["particle"].to_numpy()))
    part = out["particle"].to_numpy()[order]
    p = out[pos].to_numpy(np.float64)[order] / spacing
    ok = out["on_site"].to_numpy(bool)[order] if "on_site" in out.columns else np.ones(len(out), bool)
    labels = out["label"].astype(str).to_numpy()[order] if "label" in out.columns else None
    starts = np.flatnonzero(np.r_[True, part[1:] != part[:-1]])
    ends = np.r_[starts[1:], len(part)]
    local = np.empty(len(part), np.int64)
    stay = np.zeros(len(part), np.int64)
    centres, offset = [], 0
    if persist is None:
        for a, b in zip(starts, ends):
            s, c = _particle_sites(p[a:b], ok[a:b], same, new)
            local[a:b] = s + offset
            centres.append(c)
            offset += len(c)
    else:
        places = [_places(p[a:b], same) for a, b in zip(starts, ends)]
        mains = [_labels_of_runs(None if labels is None else labels[a:b], lab)
                 for (a, b), (lab, _) in zip(zip(starts, ends), places)]
        if persist == "auto":
            eps, q = _error_rates(places, mains, new, back=1 / 3)     # what could be a hop
            eps_n, q_n = _error_rates(places, mains, 0.5, new, back=1.0)   # a side step comes back
            k, k_end = persistence(eps, q)
            k_n = k_n_end = persistence(eps_n, q_n)[1]     # a side stay ends by coming back, not by q
        else:
            eps = q = float("nan")
            k = k_end = k_n = k_n_end = int(persist)
        for (a, b), (lab, pc), main in zip(zip(starts, ends), places, mains):

            def need(i, lengths, vals):
                end = i == 0 or i == len(vals) - 1
                nb = [vals[j] for j in (i - 1, i + 1) if 0 <= j < len(vals)]
                side = all(np.hypot(*(pc[vals[i]] - pc[j])) < new for j in nb)
                n = (k_n_end if end else k_n) if side else (k_end if end else k)
                if main is not None and not main[i]:
                    n = max(n, 2)        # a dopant's track through one 'vacancy': not a stay alone
                return n
            # Seen fewer than 3 times, nothing is held: a track of two lone detections has no hop.
            sm = _smooth(lab, p[a:b], pc, need) if b - a >= 3 else np.full(b - a, lab[0])
            st, lengths, vals = _runs(sm)
            run = np.repeat(np.arange(len(st)), lengths)
            inlier = lab == sm
            # A stay's position and anchor come from its own observations (not the noise merged in).
            mean = np.vstack([p[a:b][(run == i) & inlier].mean(axis=0) for i in range(len(st))])
            anchor = np.array([ok[a:b][(run == i) & inlier].mean() >= 0.5 for i in range(len(st))])
            s, c = _particle_sites(mean, anchor, same, new, np.bincount(run[inlier], minlength=len(st)))
            local[a:b] = s[run] + offset
            stay[a:b] = run
            centres.append(c)
            offset += len(c)
        out.attrs.update(persist_frames=int(k), persist_frames_side=int(k_n), one_frame_rate=float(eps),
                         move_rate=float(q))
    centres = np.vstack(centres)
    # One numbering for all trajectories: sites closer than `same` are the same site.
    pairs = cKDTree(centres).query_pairs(same, output_type="ndarray")
    g = coo_array((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(centres),) * 2)
    _, ids = connected_components(g, directed=False)
    site = np.empty(len(out), np.int64)
    site[order] = ids[local]
    out["site"] = site
    if persist is not None:
        out["stay"] = np.empty(len(out), np.int64)
        out.loc[out.index[order], "stay"] = stay
    return out

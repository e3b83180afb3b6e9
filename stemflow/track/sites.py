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

__all__ = ["assign_sites", "host_neighbours", "SAME_SITE", "NEW_SITE"]

#: Observations within this many spacings of a site are on it.
SAME_SITE = 0.3
#: Observations this many spacings or more from the current site are on a new site (a hop).
NEW_SITE = 0.75


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


def _particle_sites(p: np.ndarray, anchor_ok: np.ndarray, same: float, new: float):
    """Local site index of each observation of one trajectory, and the sites' positions.

    ``p``: (n, 2) drift-corrected positions in units of the spacing, in frame order;
    ``anchor_ok``: observations allowed to fix a site's position.
    """
    n = len(p)
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
                    centres[cur], weights[cur], anchored[cur] = q.copy(), 1, True
                elif anchor_ok[i] == anchored[cur] and d <= same:
                    weights[cur] += 1
                    centres[cur] = centres[cur] + (q - centres[cur]) / weights[cur]
                continue
        centres.append(q.copy())
        weights.append(1)
        anchored.append(bool(anchor_ok[i]))
        cur = len(centres) - 1
        site[i] = cur
    return site, np.asarray(centres).reshape(-1, 2)


def assign_sites(trajectories: pd.DataFrame, spacing: float, *, same: float = SAME_SITE,
                 new: float = NEW_SITE) -> pd.DataFrame:
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

    Returns
    -------
    DataFrame
        A copy with ``site`` (int64): ids numbered across all trajectories; observations of
        different particles within ``same`` × spacing of each other's site share the id.

    Raises
    ------
    InputError
        Missing columns, NaN positions, or thresholds out of order.
    """
    trajectories = require_table(trajectories, "trajectories")
    require_columns(trajectories, ["frame", "particle"], "trajectories",
                    "link the atoms first (stemflow.track.link or stemflow.track.track)")
    if not (np.isfinite(spacing) and spacing > 0):
        raise InputError(f"spacing={spacing} must be a positive distance in px (the host lattice's "
                         "nearest-neighbour distance)")
    if not 0 < same < new:
        raise InputError(f"thresholds must satisfy 0 < same < new; got same={same}, new={new}")
    pos = ["y_corr", "x_corr"] if {"y_corr", "x_corr"} <= set(trajectories.columns) else ["y", "x"]
    require_columns(trajectories, pos, "trajectories")
    check_finite(trajectories, pos, "trajectories")
    out = trajectories.copy()
    if len(out) == 0:
        out["site"] = pd.Series(dtype=np.int64)
        return out
    order = np.lexsort((out["frame"].to_numpy(), out["particle"].to_numpy()))
    part = out["particle"].to_numpy()[order]
    p = out[pos].to_numpy(np.float64)[order] / spacing
    ok = out["on_site"].to_numpy(bool)[order] if "on_site" in out.columns else np.ones(len(out), bool)
    starts = np.flatnonzero(np.r_[True, part[1:] != part[:-1]])
    ends = np.r_[starts[1:], len(part)]
    local = np.empty(len(part), np.int64)
    centres, offset = [], 0
    for a, b in zip(starts, ends):
        s, c = _particle_sites(p[a:b], ok[a:b], same, new)
        local[a:b] = s + offset
        centres.append(c)
        offset += len(c)
    centres = np.vstack(centres)
    # One numbering for all trajectories: sites closer than `same` are the same site.
    pairs = cKDTree(centres).query_pairs(same, output_type="ndarray")
    g = coo_array((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(centres),) * 2)
    _, ids = connected_components(g, directed=False)
    site = np.empty(len(out), np.int64)
    site[order] = ids[local]
    out["site"] = site
    return out

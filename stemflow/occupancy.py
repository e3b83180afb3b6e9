"""Which sites hold a dopant in which frame: column amplitudes and hidden Markov paths.

At a dose where one frame shows a carbon column as a handful of counts, the network cannot say
frame by frame where the dopants are, but the movie can: the host lattice stays put (once the
frames are registered), the dopants jump only now and then, and every frame adds evidence. This
module does the counting; :func:`stemflow.lowdose.find_atoms_movie` feeds it.

1. :func:`column_amplitudes`: the frames are modelled as a flat background plus one Gaussian
   probe (σ in px) per candidate site; a linear least-squares fit (one sparse factorisation for
   the whole movie) gives every site's amplitude in every frame, counts at the probe's peak.
   Neighbouring columns overlap, so the joint fit keeps one bright dopant from lending its
   counts to the host columns beside it.
2. :func:`amplitude_levels`: the host level (median of all sites), the dopant level (median
   where the caller's evidence, e.g. the network on summed frames, saw a dopant) and the noise
   of each, as ``var = v0 + k · level``: read noise plus shot noise.
3. :func:`occupancy`: sites seen as dopants (and the sites a place between sites seen as a
   dopant's displaces, and, with ``amplitude_seed``, sites whose own amplitudes favour a dopant
   over a few frames), with their neighbours, form groups; each group holds
   a fixed number of dopants (the median the evidence saw there) and its states are the ways of
   placing them on the group's sites, no two closer than 0.6 spacing. A dopant stays with
   probability ``1 - move_rate`` per frame or moves to a site within 1.2 spacings. Viterbi gives
   the most probable placement in every frame, the forward-backward pass the probability of each
   site being a dopant. One noisy frame cannot make a hop: a jump there and back costs two moves.
   Places between the sites (a 4-fold Si halfway between two) are candidates too; their *profile*
   says which host columns a dopant there displaces. Given the columns' overlaps (``gram``,
   :func:`column_gram`), such places are fitted as columns of their own and the evidence for a
   placement is the log-likelihood ratio of a linear Gaussian model of the joint fit: the
   amplitude change it makes at every column, weighed with the overlaps. Without them a place is
   judged by what a column there does to the sites' fitted amplitudes alone, which keeps less
   than half of what tells a dopant between two sites from one on either (the part of its image
   the sites' columns do not span is lost). A move onto such a place is
   ``BETWEEN_WEIGHT`` times as likely a priori as a move onto a site, and from one such place a
   dopant moves only onto a site (a 4-fold Si becomes 3-fold before it moves on). The first
   frame's placements are weighed as moves are (on development movies at 1000 e⁻/Å², judged by
   the profiles alone, equal weights there read a Si's first frame as 4-fold more often than it
   was: hop recall 0.918 against 0.925).

Units: positions and σ in px; amplitudes in the frames' units (counts); ``move_rate`` per frame.
"""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.linalg import splu
from scipy.spatial import cKDTree
from scipy.special import logsumexp
from scipy.stats import median_abs_deviation

from .errors import InputError

__all__ = ["column_amplitudes", "column_gram", "amplitude_levels", "occupancy", "Levels", "MAX_STATES"]

#: Prior weight of a move onto a place between lattice sites (``profiles``) against one onto a site:
#: a 3-fold Si in graphene has three bond-centred (4-fold) places and three sites around it; a
#: move to either kind is taken as about as likely, the bond-centred ones somewhat less.
BETWEEN_WEIGHT = 0.5

#: Frames over which a site's own evidence is summed to seed a group (``amplitude_seed``).
AMPLITUDE_FRAMES = 3

#: Groups with more placements than this are solved site by site (two states per site).
MAX_STATES = 2000


#: Least share of a column's information (its footprint's Σ g², of the whole footprint's) that a
#: frame must hold for the column to count as observed in it: a column at the frame's edge, or
#: beside the strip a registration shift leaves empty, is still weighed when half of it is seen.
MIN_INFORMATION = 0.5


def column_amplitudes(registered, valid, sites, sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude of a Gaussian column at every site in every frame (joint least squares).

    Parameters
    ----------
    registered : ndarray, (frame, y, x)
        Frames on a common grid (:func:`stemflow.registration.shift_frames`), counts.
    valid : ndarray, (frame, y, x) bool
        Where ``registered`` holds data.
    sites : array-like, (n, 2)
        Candidate column positions ``(y, x)`` on that grid, px.
    sigma_px : float
        The probe's Gaussian σ, px.

    Returns
    -------
    amplitude : ndarray, (frame, n)
        Peak counts of each site's column (background removed); NaN where not observed.
    observed : ndarray, (frame, n) bool
        True where the site's centre is in the frame and the frame's pixels holding data carry
        at least :data:`MIN_INFORMATION` of its footprint's (3 σ) information, Σ g².

    Notes
    -----
    Pixels without data in a frame (the strip a registration shift leaves empty) are filled with
    the movie's mean there, and each amplitude's departure from the mean's is scaled back by the
    share of the footprint the frame does hold: for an isolated column that equals a fit to the
    pixels with data alone, without a separate fit per frame.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:40, :40]
    >>> img = 1.0 + 5 * np.exp(-((yy - 20) ** 2 + (xx - 15) ** 2) / (2 * 2.0**2))
    >>> amp, seen = column_amplitudes(img[None], np.ones((1, 40, 40), bool), [[20, 15], [20, 25]], 2.0)
    >>> amp.round(2).tolist(), seen.tolist()         # the fit's Gaussian stops at 3 σ: 4.998
    ([[5.0, 0.0]], [[True, True]])
    """
    reg = np.asarray(registered, np.float64)
    valid = np.asarray(valid, bool)
    sites = np.asarray(sites, np.float64).reshape(-1, 2)
    if reg.ndim != 3 or valid.shape != reg.shape:
        raise InputError(f"registered {reg.shape} and valid {valid.shape}: expected two stacks (frame, y, x) "
                         "of one shape")
    if not sigma_px > 0:
        raise InputError(f"sigma_px={sigma_px}: the probe's σ must be > 0 px")
    t_n, h, w = reg.shape
    n = len(sites)
    if n == 0:
        return np.zeros((t_n, 0)), np.zeros((t_n, 0), bool)
    r = int(np.ceil(3 * sigma_px))
    dy, dx = np.mgrid[-r:r + 2, -r:r + 2]
    base = np.floor(sites).astype(np.int64)
    yy = base[:, 0, None, None] + dy            # (n, k, k)
    xx = base[:, 1, None, None] + dx
    g = np.exp(-((yy - sites[:, 0, None, None]) ** 2 + (xx - sites[:, 1, None, None]) ** 2) / (2 * sigma_px**2))
    foot = g > np.exp(-4.5)
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w) & foot
    col = np.broadcast_to(np.arange(n)[:, None, None], yy.shape)
    pix = (yy * w + xx)[inside]
    gm = sparse.csc_matrix((g[inside], (pix, col[inside])), shape=(h * w, n))
    info = sparse.csc_matrix((g[inside] ** 2, (pix, col[inside])), shape=(h * w, n))
    gm = sparse.hstack([gm, sparse.csc_matrix(np.ones((h * w, 1)))], format="csc")
    flat = valid.reshape(t_n, -1)
    data = reg.reshape(t_n, -1)
    # pixels without data: few (strips at the edges), so they are handled as a sparse matrix and
    # the frames are never copied
    empty = sparse.csr_matrix(~flat, dtype=np.float64)                 # (frame, pixel)
    counts = t_n - np.asarray(empty.sum(axis=0)).ravel()
    fill = (data.sum(axis=0) - np.asarray(empty.multiply(data).sum(axis=0)).ravel()) / np.maximum(counts, 1)
    fill[counts == 0] = fill[counts > 0].mean() if (counts > 0).any() else 0.0   # the movie's mean there
    rhs = np.asarray(gm.T @ data.T)                                    # (n + 1, frame)
    if empty.nnz:                                                      # … with the mean where a frame is empty
        rhs += (gm.T @ (empty.multiply(fill[None]) - empty.multiply(data)).T.tocsc()).toarray()
    gtg = (gm.T @ gm).tocsc() + 1e-9 * sparse.eye(n + 1, format="csc")
    lu = splu(gtg)
    amp = lu.solve(rhs)[:n].T                                          # (frame, n)
    amp_fill = lu.solve(np.asarray(gm.T @ fill))[:n]
    in_frame = np.asarray(info.sum(axis=0), np.float64).ravel()        # Σ g² over the pixels in the frame
    seen = in_frame[None] - (empty @ info).toarray()                   # … over those holding data
    whole = np.where(foot, g**2, 0.0).sum(axis=(1, 2))
    share = seen / np.maximum(in_frame, 1e-12)[None]
    centre_in = ((sites >= 0) & (sites <= np.array([h, w]) - 1)).all(axis=1)
    observed = (seen >= MIN_INFORMATION * whole[None]) & centre_in[None]
    amp = amp_fill[None] + (amp - amp_fill[None]) / np.maximum(share, MIN_INFORMATION)
    amp[~observed] = np.nan
    return amp, observed


def column_gram(sites, sigma_px: float) -> sparse.csr_matrix:
    """Overlaps of the Gaussian columns :func:`column_amplitudes` fits.

    Parameters
    ----------
    sites : array-like, (n, 2)
        Column positions ``(y, x)``, px.
    sigma_px : float
        The probe's Gaussian σ, px.

    Returns
    -------
    scipy.sparse.csr_matrix, (n, n)
        Σ over pixels of g_i · g_j on the fit's footprints (3 σ), divided by the median column's
        Σ g²: about 1 on the diagonal, 0 between columns more than 6 σ apart. Every footprint is
        taken whole (the frame's edges are not known here).

    Examples
    --------
    >>> g = column_gram([[20.0, 20.0], [20.0, 27.0], [20.0, 60.0]], 4.67)
    >>> g.toarray().round(2).tolist()           # the 2nd column overlaps the 1st: exp(-7² / (4 σ²))
    [[1.0, 0.57, 0.0], [0.57, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    sites = np.asarray(sites, np.float64).reshape(-1, 2)
    n = len(sites)
    if n == 0:
        return sparse.csr_matrix((0, 0))
    r = int(np.ceil(3 * sigma_px))
    dy, dx = np.mgrid[-r:r + 2, -r:r + 2]
    base = np.floor(sites).astype(np.int64)
    yy = base[:, 0, None, None] + dy
    xx = base[:, 1, None, None] + dx
    g = np.exp(-((yy - sites[:, 0, None, None]) ** 2 + (xx - sites[:, 1, None, None]) ** 2) / (2 * sigma_px**2))
    foot = g > np.exp(-4.5)
    y0, x0 = yy.min(), xx.min()
    w = int(xx.max() - x0 + 1)
    pix = ((yy - y0) * w + (xx - x0))[foot]
    col = np.broadcast_to(np.arange(n)[:, None, None], yy.shape)[foot]
    _, pix = np.unique(pix, return_inverse=True)
    gm = sparse.csc_matrix((g[foot], (pix, col)), shape=(int(pix.max()) + 1, n))
    gram = (gm.T @ gm).tocsr()
    return gram / float(np.median(gram.diagonal()))


class Levels:
    """Amplitude levels of host columns, dopants and empty sites, and the noise at each.

    Attributes
    ----------
    host, dopant : float
        Median amplitude of host columns and of dopants, counts.
    v0, k : float
        Noise model: the variance of an amplitude of mean ``a`` is ``v0 + k · a``, and never
        less than the host's (read noise and the background's shot noise set that floor).
    """

    def __init__(self, host: float, dopant: float, v0: float, k: float):
        self.host, self.dopant, self.v0, self.k = float(host), float(dopant), float(v0), float(k)

    def sd(self, level: float) -> float:
        """Standard deviation of an amplitude whose mean is ``level``, counts."""
        return float(np.sqrt(max(self.v0 + self.k * max(level, self.host), 1e-24)))

    def loglik(self, amp: np.ndarray, level: float) -> np.ndarray:
        """Gaussian log-likelihood of ``amp`` at mean ``level`` (NaN → 0: no evidence)."""
        s = self.sd(level)
        out = -0.5 * ((amp - level) / s) ** 2 - np.log(s)
        return np.where(np.isfinite(out), out, 0.0)

    def __repr__(self):
        return (f"Levels(host={self.host:.4g}, dopant={self.dopant:.4g}, sd_host={self.sd(self.host):.3g}, "
                f"sd_dopant={self.sd(self.dopant):.3g})")


def _mad(v):
    v = v[np.isfinite(v)]
    return float(median_abs_deviation(v, scale="normal")) if len(v) else np.nan


def amplitude_levels(amp, host_sites, dopant_obs) -> Levels:
    """Host and dopant levels and their noise, robustly from the amplitudes.

    Parameters
    ----------
    amp : ndarray, (frame, n)
        :func:`column_amplitudes`' amplitudes.
    host_sites : array-like of bool, (n,)
        Sites that are host columns most of the time (lattice sites, not extra candidates).
    dopant_obs : (array of frame, array of site)
        Where independent evidence saw a dopant.

    Returns
    -------
    Levels

    Examples
    --------
    >>> import numpy as np
    >>> amp = np.array([[1.0, 1.1, 4.0], [0.9, 1.0, 4.4], [1.0, 1.2, 4.2], [1.1, 0.9, 3.8]])
    >>> lv = amplitude_levels(amp, [True, True, False], ([0, 1, 2, 3], [2, 2, 2, 2]))
    >>> round(lv.host, 2), round(lv.dopant, 2), lv.sd(4.1) > lv.sd(1.0)
    (1.0, 4.1, True)
    """
    amp = np.asarray(amp, np.float64)
    host = amp[:, np.asarray(host_sites, bool)]
    mu_h, sd_h = float(np.nanmedian(host)), _mad(host.ravel())
    f, s = (np.asarray(v, np.int64) for v in dopant_obs)
    d = amp[f, s] if len(f) else np.zeros(0)
    d = d[np.isfinite(d)]
    if len(d) < 3 or not np.isfinite(sd_h):
        raise InputError("too few dopant or host observations to set the amplitude levels")
    mu_d, sd_d = float(np.median(d)), _mad(d)
    k = max((sd_d**2 - sd_h**2) / (mu_d - mu_h), 0.0) if mu_d > mu_h else 0.0
    return Levels(mu_h, mu_d, sd_h**2 - k * mu_h, k)


def _groups(sites, seeds, radius):
    """Seeds with the sites within ``radius`` of them, joined where they share sites."""
    from scipy.sparse.csgraph import connected_components

    near = cKDTree(sites).query_ball_point(sites[seeds], radius)
    rows = np.concatenate([np.full(len(nb), s, np.int64) for s, nb in zip(seeds, near)])
    cols = np.concatenate([np.asarray(nb, np.int64) for nb in near])
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(sites), len(sites)))
    _, label = connected_components(graph, directed=False)
    members = np.unique(np.r_[np.asarray(seeds, np.int64), cols])
    return [members[label[members] == c] for c in np.unique(label[members])]


def _hmm(e, moves, move_rate, weight=None):
    """Viterbi path and posterior of each state: ``e`` (frame, state) log-likelihoods; a move
    into state ``k`` is ``weight[k]`` times as likely as one into a state of weight 1, and so is
    being in it at the first frame."""
    t_n, n = e.shape
    w = np.ones(n) if weight is None else np.asarray(weight, np.float64)
    logt = np.full((n, n), -np.inf)
    stay = np.log1p(-move_rate) if n > 1 else 0.0
    for i, m in enumerate(moves):
        logt[i, i] = stay if m else 0.0
        if m:
            logt[i, m] = np.log(move_rate * w[m] / w[m].sum())
    v = e[0] + np.log(w / w.sum())
    back = np.zeros((t_n, n), np.int64)
    alpha = np.empty((t_n, n))
    alpha[0] = v
    for t in range(1, t_n):
        sc = v[:, None] + logt
        back[t] = sc.argmax(axis=0)
        v = sc.max(axis=0) + e[t]
        alpha[t] = logsumexp(alpha[t - 1][:, None] + logt, axis=0) + e[t]
    path = np.empty(t_n, np.int64)
    path[-1] = int(v.argmax())
    for t in range(t_n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    beta = np.zeros((t_n, n))
    for t in range(t_n - 2, -1, -1):
        beta[t] = logsumexp(logt + (e[t + 1] + beta[t + 1])[None, :], axis=1)
    post = alpha + beta
    post = np.exp(post - logsumexp(post, axis=1, keepdims=True))
    return path, post


def occupancy(amp, sites, host_sites, dopant_obs, levels: Levels, spacing_px: float, *,
              move_rate: float = 0.1, n_frames_evidence: int = 2,
              profiles: dict | None = None, gram=None,
              amplitude_seed: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The sites that hold a dopant in each frame, with their probability.

    Parameters
    ----------
    amp : ndarray, (frame, n)
        :func:`column_amplitudes`' amplitudes (NaN where not observed: no evidence).
    sites : array-like, (n, 2)
        Candidate positions, px.
    host_sites : array-like of bool, (n,)
        Sites that hold a host column when they hold no dopant (False: extra candidates, such as
        a dopant's place between two lattice sites, empty when they hold no dopant).
    dopant_obs : (array of frame, array of site)
        Where independent evidence (the network on summed frames) saw a dopant.
    levels : Levels
        :func:`amplitude_levels`.
    spacing_px : float
        The host's nearest-neighbour distance, px.
    move_rate : float
        Prior probability per frame that a dopant moves, in (0, 1).
    n_frames_evidence : int
        A site seeds a group when the evidence saw a dopant there in at least this many frames;
        a place between sites (``profiles``) that does brings the sites it displaces into the group.
    profiles : dict, optional
        Candidates between lattice sites, such as a dopant's place halfway between two: index →
        ``(sites, weights, emptied)``. A dopant there removes the host columns of
        ``sites[emptied]`` (the columns it displaces). Without ``gram`` such a candidate has no
        amplitude of its own (its ``amp`` column is NaN) and a dopant there adds
        ``levels.dopant · weights`` to the amplitudes of ``sites`` (what a fit without it gives
        for a column at that place); with ``gram`` the weights are not used and may be None.
    gram : sparse or ndarray, (n, n), optional
        The overlaps of the fitted columns (:func:`column_gram`, 1 on the diagonal), when every
        candidate, those between sites included, was fitted. The evidence for a placement is then
        that of a linear Gaussian model of the joint fit: with ``δ`` the amplitude change it makes
        at each column (a dopant's level in, the host level of displaced columns out) and ``r``
        the amplitudes less the no-dopant levels, ``(δ·G·r - ½ δ·G·δ) / s²`` per frame, ``s`` the
        amplitude noise halfway between the host and dopant levels. Columns not observed in a
        frame give no evidence there.
    amplitude_seed : float, optional
        Log-likelihood ratio (nats) over ``AMPLITUDE_FRAMES`` consecutive frames above which a
        site's own amplitudes (a dopant on it alone against none) make it reach out as a seed
        does: its neighbours join its group, and groups it touches merge. A dopant that wanders
        in stays of a few frames is seen by summed-frame evidence on few of its sites, and the
        sites beyond those would stay out of reach. Such a site brings no dopant of its own: a
        group the evidence never saw a dopant in is still left empty. None: the evidence alone.

    Returns
    -------
    dopant : ndarray, (frame, n) bool
        The most probable placement (Viterbi) in every frame.
    prob : ndarray, (frame, n) float
        Posterior probability that each site holds a dopant in each frame.

    Examples
    --------
    Two sites; the dopant sits on the first for 5 frames, then on the second, and one noisy frame
    (frame 2) makes the second look brighter for a moment:

    >>> import numpy as np
    >>> amp = np.array([[4.0, 1.0]] * 5 + [[1.0, 4.0]] * 5)
    >>> amp[2] = [3.0, 3.2]
    >>> lv = Levels(host=1.0, dopant=4.0, v0=0.3, k=0.0)
    >>> dop, prob = occupancy(amp, [[0, 0], [0, 14]], [True, True], ([0, 1, 8, 9], [0, 0, 1, 1]), lv, 14.0)
    >>> dop[:, 1].astype(int).tolist()
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    """
    amp = np.asarray(amp, np.float64)
    sites = np.asarray(sites, np.float64).reshape(-1, 2)
    host_sites = np.asarray(host_sites, bool)
    if not 0 < move_rate < 1:
        raise InputError(f"move_rate={move_rate}: expected a probability per frame in (0, 1)")
    t_n, n = amp.shape
    dop = np.zeros((t_n, n), bool)
    prob = np.zeros((t_n, n))
    f, s = (np.asarray(v, np.int64) for v in dopant_obs)
    seen = np.bincount(s, minlength=n)
    seeds = np.flatnonzero(seen >= n_frames_evidence)
    if n == 0 or len(seeds) == 0:
        return dop, prob
    profiles = profiles or {}
    base = np.where(host_sites, levels.host, 0.0)
    if gram is None:
        if any(v[1] is None for v in profiles.values()):
            raise InputError("profiles without weights need gram: the places between sites fitted as columns")
        l_host = np.logaddexp(np.log(0.95) + levels.loglik(amp, levels.host),
                              np.log(0.05) + levels.loglik(amp, 0.0))
        l_none = np.where(host_sites[None], l_host, levels.loglik(amp, 0.0))
        llr = levels.loglik(amp, levels.dopant) - l_none
    else:
        gram = sparse.csr_matrix(gram)
        if gram.shape != (n, n):
            raise InputError(f"gram {gram.shape}: expected the overlaps of the {n} candidates, ({n}, {n})")
        seen_all = np.isfinite(amp)
        g_resid = np.asarray((gram @ np.where(seen_all, amp - base[None], 0.0).T).T)     # (frame, n)
        s2 = levels.sd(0.5 * (levels.host + levels.dopant)) ** 2

    def linear(state):
        """Log-likelihood ratio, per frame, of a placement against no dopant in the group, for a
        linear Gaussian model of the joint fit (``gram``)."""
        delta = {}
        for k in state:
            delta[int(k)] = levels.dopant - base[k]
            if k in profiles:
                idx, _, emptied = profiles[k]
                for i in idx[emptied]:
                    delta.setdefault(int(i), -base[i])
        idx = np.fromiter(delta, np.int64)
        d = np.fromiter(delta.values(), np.float64)[None] * seen_all[:, idx]     # (frame, m)
        block = gram[idx][:, idx].toarray()
        return ((d * g_resid[:, idx]).sum(axis=1) - 0.5 * np.einsum("ti,ij,tj->t", d, block, d)) / s2

    def evidence(state):
        """Log-likelihood ratio, per frame, of a placement against no dopant in the group."""
        if gram is not None:
            return linear(state)
        if not any(k in profiles for k in state):
            return llr[:, list(state)].sum(axis=1)
        expect = {}
        for k in state:
            if k in profiles:
                idx, w, emptied = profiles[k]
                for i, wi, ei in zip(idx, w, emptied):
                    expect[int(i)] = (0.0 if ei else expect.get(int(i), base[i])) + levels.dopant * wi
            else:
                expect[k] = levels.dopant
        return sum(levels.loglik(amp[:, i], v) - l_none[:, i] for i, v in expect.items())

    # a place between sites seen as a dopant's brings the sites it displaces: a Si there sits on one
    # of them before and after, and may hop on from it
    ends = [profiles[int(k)][0][profiles[int(k)][2]] for k in seeds if int(k) in profiles]
    reach = np.unique(np.concatenate([seeds, *ends])).astype(np.int64) if ends else seeds
    if amplitude_seed is not None:
        # sites whose own amplitudes say "dopant" over a few frames extend the groups: a dopant that
        # wanders in short stays is often missed by the evidence (each summed frame holds it on one
        # site for a part of its frames only) and would leave its group's sites unreached
        if gram is None:
            single = np.where(np.isfinite(amp), llr, 0.0)
        else:
            d_i = levels.dopant - base
            single = (d_i[None] * g_resid - 0.5 * (d_i**2 * gram.diagonal())[None]) / s2 * seen_all
        run = ndimage.uniform_filter1d(single, AMPLITUDE_FRAMES, axis=0, mode="constant") * AMPLITUDE_FRAMES
        strong = np.flatnonzero(run.max(axis=0) > amplitude_seed)
        strong = strong[~np.isin(strong, list(profiles))]
        reach = np.union1d(reach, strong).astype(np.int64)
    for grp in _groups(sites, reach, 1.2 * spacing_px):
        per_frame = np.bincount(f[np.isin(s, grp)], minlength=t_n)
        m = int(np.round(np.median(per_frame)))
        m = max(m, 1 if per_frame.mean() > 0.3 else 0)
        if m == 0:
            continue
        p = sites[grp]
        dd = np.hypot(*(p[:, None] - p[None]).transpose(2, 0, 1))
        ok = dd > 0.6 * spacing_px
        n_states = comb(len(grp), m)
        if n_states > MAX_STATES:
            states = [(i,) for i in range(len(grp))]
            per_site = True
        else:
            states = [c for c in itertools.combinations(range(len(grp)), m)
                      if all(ok[a, b] for a, b in itertools.combinations(c, 2))]
            per_site = False
        if per_site:
            for i, site in enumerate(grp):
                e = np.column_stack([np.zeros(t_n), evidence((int(site),))])
                path, post = _hmm(e, [[1], [0]], move_rate)
                dop[:, site] = path == 1
                prob[:, site] = post[:, 1]
            continue
        index = {c: i for i, c in enumerate(states)}
        adj = (dd <= 1.2 * spacing_px) & (dd > 0)
        off = np.array([int(k) in profiles for k in grp])
        adj &= ~(off[:, None] & off[None, :])     # from one place between sites to another: via a site
        moves = []
        for c in states:
            mv = set()
            for j, a in enumerate(c):
                for b in np.flatnonzero(adj[a]):
                    if b not in c:
                        nc = tuple(sorted(c[:j] + (int(b),) + c[j + 1:]))
                        if nc in index:
                            mv.add(index[nc])
            moves.append(sorted(mv))
        members = np.zeros((len(states), len(grp)))
        for i, c in enumerate(states):
            members[i, list(c)] = 1.0
        e = np.column_stack([evidence(tuple(int(grp[a]) for a in c)) for c in states])   # (frame, state)
        n_between = np.array([sum(int(grp[a]) in profiles for a in c) for c in states])
        path, post = _hmm(e, moves, move_rate, weight=BETWEEN_WEIGHT ** n_between)
        dop[:, grp] = members[path] > 0
        prob[:, grp] = post @ members
    return dop, np.clip(prob, 0.0, 1.0)

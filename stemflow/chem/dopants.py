"""Dopants on the local lattice: where each one sits, its first shell, and whether it is one.

A heavy dopant in graphene (Si, P, …) is seen as a bright column, but so are hydrocarbon
contamination, adatoms, bright noise and the cut-off blobs at the frame's edge; and the tail of a
heavy atom's probe brightens the space around it, which a finder may read as extra host columns.
What tells them apart is physics and geometry, measured here against the *local* lattice:

* **the local lattice.** The frame's fitted lattice (:func:`~stemflow.chem.sites.fit_lattice`) is
  shifted near each dopant by the local phase of the host columns around it (geometric phase
  analysis on the atoms: the phase of ``Σ w exp(2πi g·f)`` over the columns' fractional
  coordinates ``f`` for the two first-order reflections ``g``), so a frame whose scan bends the
  lattice still gives the right sites at the dopant. Where that leaves the columns around a
  dopant off their sites (a grain turned from the rest, a frame bent more than its fit follows),
  the lattice is fitted afresh to those columns alone and taken when it explains them better
  (:func:`_own_map`, :data:`_MISFIT_OK`).
* **where it sits.** On a site (substitutional: Si1C3) or at the midpoint of a bond whose two
  sites it replaces (Si in a divacancy: Si1C4, and the Si of Si2C6, Si3C6 …), whichever is
  nearer; farther than :data:`OFF_LATTICE` bond from both it is *off the lattice* (a hexagon
  centre: an adatom, or contamination).
* **its shell.** The sites next to the sites it holds, less those other dopants of its group
  hold; each shell site counts once when a host column lies on it (within :data:`ON_SHELL`
  bond), however many blobs the finder put there, and a blob between sites (a halo) counts for
  none. Its coordination is its occupied shell sites plus the dopants bonded to it: 3 for
  Si1C3, 4 for Si1C4.
* **whether it is one** (graphene, with the image): its intensity above the local background
  (the median of the hexagon centres around it, which contamination raises with it) must be
  more than :data:`MIN_CONTRAST` times that of the host columns around it (Z-contrast); it
  must not be much wider than they are (its shoulder, :data:`MAX_WIDTH`); it must sit on the lattice with host
  columns on at least :data:`MIN_SHELL` of its shell sites; and its shell must lie inside the
  frame (:data:`EDGE_BONDS`); and the network must be sure of it (``prob`` at least
  :data:`MIN_DOPANT_PROB`). A dopant that fails is relabelled: ``lattice`` when it sits on a site
  with the intensity of a host column, else ``unknown`` (a blob that is not a dopant: its
  ``element`` is ``""`` and it takes no part in bonds or defects). Its verdict is the
  ``dopant_check`` column.

Units: positions in px; distances in bonds (a/√3) unless stated; intensities in image units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..noise import DIM_COUNTS, counts_per_nm2
from ..tables import LATTICES
from ._common import bond_cutoffs, frame_groups, label_categories, labels_of, resolve, with_attrs
from .sites import NEIGHBOUR_CELLS, BASIS, LatticeFit, bond_orientation, fit_frame, lattice_matrix, site_id

__all__ = ["check_dopants", "dopant_geometry", "DopantGeometry", "CHECKS", "OFF_LATTICE", "ON_SHELL",
           "MIN_CONTRAST", "MAX_WIDTH", "MIN_SHELL", "MAX_BONDS", "EDGE_BONDS", "MIN_DOPANT_PROB"]

#: A dopant nearer a site than the midpoint of any bond holds that site (substitutional: Si1C3);
#: nearer a bond's midpoint, it holds both sites of the bond (a divacancy: Si1C4, the Si of
#: Si2C6, Si3C6). Farther than this many bonds from both it is off the lattice: the points
#: farthest from every site and midpoint are the hexagon centres (1 and 0.87 bond away), where
#: adatoms sit; 0.45 is half-way, and 3–6 times the localisation error of real 60 kV frames
#: (0.05–0.15 bond, the dev set's labels).
OFF_LATTICE = 0.45
#: A host column within this many bonds of a shell site occupies it. The C next to a Si relaxes
#: 0.1–0.4 bond outwards (Si–C is 0.17–0.19 nm against C–C 0.142 nm); sites are a bond apart, so
#: 0.5 is the most that still tells one site from the next.
ON_SHELL = 0.5
#: Least intensity of a dopant over a host column, both above the local background. Z-contrast
#: puts a single Si at (14/6)**1.7 ≈ 4.2 C columns (3.9–5.4 for γ = 1.6–2); 2 is the geometric
#: mean of 1 (a host column) and 4.2, so a column below it is more like C than Si. (The dev set's
#: Si measure 4.5–15 by it, its host columns 0.6–1.6.)
MIN_CONTRAST = 2.0
#: Largest *shoulder excess* of a dopant: its shoulder (mean of the ring 0.5–0.75 bond out over
#: that of the disk within 0.25 bond, both above the local background) less the median shoulder
#: of its host references. A single atom is as wide as the probe, like every host column, and
#: reads about −0.1 (the dev set's isolated Si: −0.4 to 0.08); a blob twice as wide as the probe
#: reads 0.3, contamination patches 0.3–0.4 until they are wide enough to be the background
#: itself. 0.2 lies between. Dopants bonded to other dopants are not held to it (their
#: neighbours' images fill the ring).
MAX_WIDTH = 0.2
#: Least class probability of a dopant (the network's mean dopant probability over the blob,
#: ``prob``) in frames that hold many counts. Every true dopant of simulated frames at 10⁴–10⁵
#: e⁻/Å² and 10–16 pm/px with a 1.1 Å probe reads at least 0.93, those of the real dev set at
#: least 0.91; a blob the network gives 0.6–0.9 is as likely contamination or a scan glitch (7 of
#: the dev set's 9 false dopants). Reported as a dopant, one in ten such would be wrong even if
#: ``prob`` were perfectly calibrated. In frames with fewer than :data:`stemflow.noise.DIM_COUNTS`
#: detected counts per nm² the network's doubt is counting noise, not what the blob is (simulated
#: graphene with nuisances below it: the true Si found read 0.41–0.98, the false dopants
#: 0.45–0.90; ``benchmarks/dopant_gate.py``), and the other checks decide alone.
MIN_DOPANT_PROB = 0.9
#: Host columns bonded to a dopant lie this far from it, bonds: no closer than 0.85 (Si–C,
#: 0.17–0.19 nm, is longer than C–C, 0.142 nm; 0.15 bond is left for the localisation error: a
#: blob closer is the halo of the dopant's probe tail), no farther than 1.55 (the second
#: neighbours of a site lie at 1.73; the dev set's labelled Si–C reach 1.48).
MIN_HOST_GAP = 0.85
MAX_HOST_GAP = 1.55
#: Least occupancy of a host column that bonds to a dopant: a column is brighter than the
#: background around it (an empty spot reads about 0 or less, a C column 1; next to a heavy atom
#: its probe tail raises the hexagon centres that make the background, and a real C reads as low
#: as 0.2, so nothing above 0 is refused).
MIN_HOST_OCCUPANCY = 0.0
#: Projected Si–C bond, bonds (0.175 nm): the candidate nearest it is taken first.
SI_C_BOND = 1.23
#: Least angle between two bonds of a dopant, degrees: 120° for three-fold Si, 82° and 98° for Si
#: in a divacancy; two blobs closer in angle are one neighbour and its halo.
MIN_BOND_ANGLE = 50.0
#: Least angle between a dopant's bond to a host column and to another dopant, degrees: a column
#: at a Si–C distance (1.2 bond) within 30° of a Si–Si bond (1.65 bond) would lie 0.86 bond or
#: less from the other Si, nearer than a bond: it is the overlap of their halos.
MIN_DOPANT_ANGLE = 30.0
#: Fewest host columns or dopants bonded to a dopant: every dopant in graphene binds three or
#: four; on the noisiest real frames the finder may miss two of them, but a blob with none is no
#: dopant of the lattice (it floats on contamination or vacuum).
MIN_SHELL = 1
#: Most bonds of a dopant (host columns and dopants together): a dopant in graphene binds three
#: (a site) or four (a divacancy); a fifth blob at a bond's distance is the halo of its own or a
#: bonded dopant's probe tail (inside a Si trimer the three tails overlap), so where the local
#: lattice does not explain its surroundings the host columns nearest the Si–C bond are kept.
MAX_BONDS = 4
#: A dopant closer than this many bonds to the frame's edge cannot be checked: its first shell
#: (1–1.3 bond out) and the tail of its own image are cut by the edge.
EDGE_BONDS = 1.3
#: Window (Gaussian σ, lattice constants) of the local phase that shifts the lattice at a dopant,
#: and the radius (bonds) around every dopant whose columns take no part (its relaxed shell).
_PHASE_SIGMA = 1.5
_PHASE_SKIP = 1.6
_PHASE_COHERENCE = 0.5 / 3
#: Columns within this many bonds of a dopant group (none of its relaxed shells) measure how well
#: a local lattice explains its surroundings (:func:`_misfit`, the median distance of those columns
#: from their sites, bonds). Below :data:`_MISFIT_OK` (21 pm in graphene, about 1.5× the scatter of
#: real columns found at 15.6 pm/px) the frame's fit bent to them is kept as it is; above it the
#: lattice fitted to them alone (:func:`_own_map`) is taken where it explains them better.
_MISFIT_REACH = 3.5
_MISFIT_OK = 0.15
#: The lattice fitted to the columns around alone is taken only when it leaves them at most this
#: many bonds (median) from its sites: 2.5 times the scatter of real columns found at 15.6 pm/px
#: (13 pm, 0.1 bond; the worst real development frame needs 0.23). Columns scattered at random
#: (an amorphous patch), with a lattice fitted to them, sit a median 0.25 bond from its sites, so
#: about half such patches keep the frame's fit by this rule alone (the dopant check's contrast,
#: width and ``prob`` still apply).
_MISFIT_OWN = 0.25
#: Background: the image within this many lattice constants of the dopant, none within this
#: many bonds of it (its own image; a dopant in a divacancy has two hexagon centres 0.87 bond
#: away).
_HOLLOW_REACH = 2.5
_HOLLOW_SKIP = 1.2
#: Host columns within this many lattice constants are the dopant's references.
_REF_REACH = 2.5
#: Disk (bonds) over which a column's intensity is averaged, and the window of its width.
_DISK = 0.25
_RING = (0.5, 0.75)

#: Verdicts of the ``dopant_check`` column.
CHECKS = ["", "dopant", "host", "dim", "wide", "off_lattice", "no_shell", "edge", "uncertain"]


@dataclass
class DopantGeometry:
    """Where the dopants of one frame sit on its local lattice.

    Attributes
    ----------
    rows : ndarray of int
        Row positions (in the frame) of the dopants.
    kind : ndarray of str
        ``"site"``, ``"bond"`` (the midpoint of two sites), ``"off"`` (neither), ``""`` (no lattice).
    offset : ndarray of float
        Distance (bonds) to the nearest site.
    shift : ndarray (n, 2)
        Local shift (px) of the fitted lattice at each dopant (from the frame fit's nearest site
        where the local lattice was fitted afresh).
    core : list of set
        Sites (ids) each dopant holds.
    shell : list of dict
        Shell sites of each dopant (id → position px, neighbours of its core that no dopant of its
        group holds).
    occupied : list of dict
        Shell site id → host rows (frame positions) on it, for each dopant.
    group : ndarray of int
        Dopants bonded to each other (within the dopant–dopant bond cutoff) share a group.
    n_dopant_nb : ndarray of int
        Dopants bonded to each dopant.
    directions : list of list
        Host rows bonded to each dopant, one per direction (:func:`_directions`).
    consistent : ndarray of bool
        Whether the local lattice explains every host column at a bond's distance.
    misfit : ndarray of float
        Median distance (bonds) of the host columns around each dopant's group from the sites of
        its local lattice (:func:`_misfit`; NaN without one).
    """

    rows: np.ndarray
    kind: np.ndarray
    offset: np.ndarray
    shift: np.ndarray
    core: list = field(default_factory=list)
    shell: list = field(default_factory=list)
    occupied: list = field(default_factory=list)
    group: np.ndarray = None
    n_dopant_nb: np.ndarray = None
    directions: list = field(default_factory=list)
    consistent: np.ndarray = None
    misfit: np.ndarray = None

    def neighbour_rows(self, k) -> list:
        """Host rows bonded to dopant ``k``: those on its occupied shell sites (one per site)
        when the local lattice explains every host column around it, else one per direction, the
        nearest the Si–C bond first, up to :data:`MAX_BONDS` bonds with its bonded dopants."""
        if self.consistent[k]:
            return [rr[0] for rr in self.occupied[k].values()]
        return list(self.directions[k])[:max(MAX_BONDS - int(self.n_dopant_nb[k]), 0)]

    def coordination(self) -> np.ndarray:
        """Occupied shell sites plus bonded dopants of each dopant (-1 where off the lattice)."""
        n = np.array([len(self.neighbour_rows(k)) for k in range(len(self.rows))], np.int64)
        return np.where(np.isin(self.kind, ["site", "bond"]), n + self.n_dopant_nb, -1)

    def shell_rows(self, which) -> set:
        """Host rows on the occupied shell sites of the dopants ``which`` (indices into ``rows``),
        one per site: the union of their shells, each site counted once."""
        out: set = set()
        for k in which:
            out.update(self.neighbour_rows(k))
        return out


def _local_shift(fit: LatticeFit, hpos: np.ndarray, at: np.ndarray, skip_pos: np.ndarray,
                 skip: float) -> np.ndarray:
    """Shift (px) of the fitted lattice at ``at`` from the local phase of the host columns.

    For the two first-order reflections of the two-site lattice the sum over one cell's sites is
    ``1 + exp(2πi/3)``, of phase π/3; a local shift ``δ`` (fractional) adds ``2π g·δ``. Columns
    within ``skip`` px of ``skip_pos`` (the dopants: their shells relax) are left out.
    """
    out = np.zeros((len(at), 2))
    if len(hpos) < 6 or len(at) == 0:
        return out
    f = np.linalg.solve(fit.M, (hpos - fit.correction(hpos) - fit.t).T).T
    if len(skip_pos):
        keep = cKDTree(skip_pos).query(hpos)[0] > skip
        hpos, f = hpos[keep], f[keep]
    if len(hpos) < 6:
        return out
    sigma = _PHASE_SIGMA * fit.a
    tree = cKDTree(hpos)
    for k, q in enumerate(at):
        idx = np.asarray(tree.query_ball_point(q, 3 * sigma), np.int64)
        if len(idx) < 6:
            continue
        w = np.exp(-0.5 * (np.hypot(*(hpos[idx] - q).T) / sigma) ** 2)
        z = (w[:, None] * np.exp(2j * np.pi * f[idx])).sum(axis=0)
        # A perfect lattice gives |z| = w.sum() / 2 (the two sites' phases are 120° apart); below a
        # third of that the columns around are no lattice to speak of: keep the fit.
        if (np.abs(z) < _PHASE_COHERENCE * w.sum()).any():
            continue
        d = (np.angle(z) - np.pi / 3) / (2 * np.pi)
        d = (d + 0.5) % 1.0 - 0.5
        out[k] = fit.M @ d
    return out


def _local_map(fit: LatticeFit, hpos: np.ndarray, centre: np.ndarray, shift: np.ndarray,
               skip_pos: np.ndarray, bond_px: float) -> LatticeFit:
    """The lattice fitted to the host columns around ``centre`` alone: an affine map (rotation,
    strain, translation) from the frame fit's cells to px, weighted by a Gaussian window of
    :data:`_PHASE_SIGMA` lattice constants, the columns within :data:`_PHASE_SKIP` bond of a
    dopant left out. Real frames bend (scan distortion, a rippled sheet): near a dopant the lattice
    may be turned by 20° or shifted by half a bond from the frame's fit. Falls back to the frame
    fit shifted by ``shift`` when too few columns are around."""
    fallback = LatticeFit(fit.M, fit.t + shift + fit.correction(centre[None])[0], np.zeros((0, 2)),
                          np.zeros((0, 2)), fit.sigma)
    if len(hpos) < 6:
        return fallback
    sigma = _PHASE_SIGMA * fit.a
    d = np.hypot(*(hpos - centre).T)
    near = d < 2.5 * sigma
    if len(skip_pos):
        near &= cKDTree(skip_pos).query(hpos)[0] > _PHASE_SKIP * bond_px
    P, w = hpos[near], np.exp(-0.5 * (d[near] / sigma) ** 2)
    if len(P) < 6:
        return fallback
    return _refine_affine(fallback, P, w, 0.35 * bond_px, fit.a)


def _refine_affine(local: LatticeFit, P: np.ndarray, w: np.ndarray, tol_px: float, a: float) -> LatticeFit:
    """``local`` refined three times by a weighted least-squares affine map from its cells to the
    columns ``P`` (weights ``w``) within ``tol_px`` of their sites; stops, keeping the last map,
    when fewer than 6 columns are that close or when a lattice vector would depart more than 20 %
    from ``a`` px (a wrong local solution)."""
    none = np.zeros((0, 2))
    for _ in range(3):
        c, s_, p = local.snap(P)
        ok = np.hypot(*(P - p).T) < tol_px
        if ok.sum() < 6:
            return local
        X = np.column_stack([c[ok] + BASIS[s_[ok]], np.ones(int(ok.sum()))])
        sw = np.sqrt(w[ok])[:, None]
        A, *_ = np.linalg.lstsq(X * sw, P[ok] * sw, rcond=None)
        M, t = A[:2].T, A[2]
        if np.abs(np.linalg.norm(M, axis=0) / a - 1).max() > 0.2:
            return local
        local = LatticeFit(M, t, none, none, local.sigma)
    return local


def _around(hpos: np.ndarray, centre: np.ndarray, skip_pos: np.ndarray, bond_px: float) -> np.ndarray:
    """Host columns within :data:`_MISFIT_REACH` bond of ``centre``, none within :data:`_PHASE_SKIP`
    bond of a dopant (its relaxed shell): boolean mask over ``hpos``."""
    near = np.hypot(*(hpos - centre).T) < _MISFIT_REACH * bond_px
    if len(skip_pos):
        near &= cKDTree(skip_pos).query(hpos)[0] > _PHASE_SKIP * bond_px
    return near


def _own_map(hpos: np.ndarray, centre: np.ndarray, skip_pos: np.ndarray, bond_px: float,
             a: float) -> LatticeFit | None:
    """The lattice fitted afresh to the host columns around ``centre``, without the frame's fit:
    orientation from the six-fold mean of their bond angles, bond from their median, origin on the
    column that puts most columns (weighted by a Gaussian window of :data:`_PHASE_SIGMA` lattice
    constants ``a`` px) within 0.3 bond of a site, then the weighted affine refinement of
    :func:`_local_map`. Columns within :data:`_PHASE_SKIP` bond of a dopant take no part; None
    with fewer than 6 columns within :data:`_MISFIT_REACH` bond or 4 bonds among them."""
    P = hpos[_around(hpos, centre, skip_pos, bond_px)]
    if len(P) < 6:
        return None
    _, length, _, ok, theta = bond_orientation(P, bond_px)
    if ok.sum() < 4:
        return None
    b = float(np.median(length[ok]))
    M = lattice_matrix(theta, b * np.sqrt(3.0))
    w = np.exp(-0.5 * (np.hypot(*(P - centre).T) / (_PHASE_SIGMA * a)) ** 2)
    # Every column as the origin: distance of every column to its nearest site of either
    # sublattice. An origin on the wrong sublattice puts half the columns on hexagon centres, so
    # the best score picks the right one.
    f = np.linalg.solve(M, (P[None, :, :] - P[:, None, :]).reshape(-1, 2).T).T
    dist = np.full(len(f), np.inf)
    for s in (0, 1):
        r = (f - BASIS[s] - np.rint(f - BASIS[s])) @ M.T
        dist = np.minimum(dist, np.hypot(*r.T))
    score = ((dist.reshape(len(P), len(P)) < 0.3 * b) * w[None, :]).sum(axis=1)
    none = np.zeros((0, 2))
    return _refine_affine(LatticeFit(M, P[int(np.argmax(score))], none, none, 1.0), P, w, 0.35 * b, a)


def _misfit(local: LatticeFit, hpos: np.ndarray, centre: np.ndarray, skip_pos: np.ndarray,
            bond_px: float) -> float:
    """Median distance (bonds) of the host columns around ``centre`` from their nearest site of
    ``local``: those within :data:`_MISFIT_REACH` bond of it, none within :data:`_PHASE_SKIP` bond of
    a dopant (its relaxed shell). NaN with fewer than 6 such columns."""
    near = _around(hpos, centre, skip_pos, bond_px)
    if near.sum() < 6:
        return float("nan")
    _, _, p = local.snap(hpos[near])
    return float(np.median(np.hypot(*(hpos[near] - p).T)) / bond_px)


def _groups(pos: np.ndarray, cut_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Groups of dopants bonded to each other, and the number of dopants bonded to each."""
    n = len(pos)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = cKDTree(pos).query_pairs(cut_px, output_type="ndarray")
    g = sparse.coo_array((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    nb = np.bincount(pairs.ravel(), minlength=n) if len(pairs) else np.zeros(n, np.int64)
    return comp.astype(np.int64), nb.astype(np.int64)


def dopant_geometry(fit: LatticeFit | None, pos: np.ndarray, labels: np.ndarray, bond_px: float,
                    dopant_cut_px: float, occupancy: np.ndarray | None = None) -> DopantGeometry:
    """Sites, shells and coordination of the dopants of one frame on its local lattice.

    Parameters
    ----------
    fit : LatticeFit or None
        The frame's fitted lattice (None: every dopant gets kind ``""`` and no shell).
    pos : ndarray (n, 2)
        Positions (px) of the frame's rows.
    labels : ndarray of str (n,)
        Their labels; ``dopant`` rows are placed, ``lattice`` rows are the host columns.
    bond_px : float
        The host bond (a/√3), px.
    dopant_cut_px : float
        Dopant–dopant bond cutoff, px (Si–Si 0.27 nm in graphene).
    occupancy : ndarray (n,), optional
        The rows' occupancy (:func:`~stemflow.chem.occupancy.column_occupancy`); a host row below
        :data:`MIN_HOST_OCCUPANCY` is no column and bonds to no dopant.

    Returns
    -------
    DopantGeometry
        One entry per ``dopant`` row: its kind of place, offset (bonds) from the nearest site,
        local lattice shift (px), core and shell sites, and the host rows on its shell.

    Examples
    --------
    >>> from stemflow.chem import dopant_geometry, fit_lattice
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 96, pixel_size=0.012, seed=1, defects={"Si1C3": 1})
    >>> pos = sim.atoms[["y", "x"]].to_numpy()                 # px
    >>> labels = sim.atoms["label"].astype(str).to_numpy()
    >>> bond_px = 0.142 / 0.012                                # C–C bond, px
    >>> fit = fit_lattice(pos, labels == "lattice", bond_px)
    >>> geo = dopant_geometry(fit, pos, labels, bond_px, dopant_cut_px=0.27 / 0.012)
    >>> geo.kind.tolist(), geo.coordination().tolist()         # substitutional, three C around
    (['site'], [3])
    """
    rows = np.flatnonzero(labels == "dopant")
    m = len(rows)
    dpos = pos[rows]
    group, nb = _groups(dpos, dopant_cut_px)
    geo = DopantGeometry(rows, np.full(m, "", dtype=object), np.full(m, np.nan), np.zeros((m, 2)),
                         [set() for _ in range(m)], [dict() for _ in range(m)], [dict() for _ in range(m)],
                         group, nb, [[] for _ in range(m)], np.zeros(m, bool))
    host = np.flatnonzero(labels == "lattice")
    hpos = pos[host]
    # Host rows that may bond to a dopant: columns (not an empty spot the finder took for one)
    # no nearer any dopant than a bond can be (else they are its halo).
    bondable = host
    if m and len(host):
        gap_ok = cKDTree(dpos).query(hpos)[0] >= MIN_HOST_GAP * bond_px
        if occupancy is not None:
            occ = np.asarray(occupancy, np.float64)[host]
            gap_ok &= ~(occ < MIN_HOST_OCCUPANCY)
        bondable = host[gap_ok]
    geo.directions = _directions(pos, bondable, dpos, bond_px, dopant_cut_px)
    geo.misfit = np.full(m, np.nan)
    if fit is None or m == 0:
        # No lattice fits the frame as a whole: its columns are too few or too scattered for one,
        # and a lattice fitted to a few of them near a dopant would place it by chance.
        return geo
    # One local lattice per group (at its centre), so that the dopants of a group share their sites.
    centres = np.array([dpos[group == g].mean(axis=0) for g in range(group.max() + 1)])
    gshift = _local_shift(fit, hpos, centres, dpos, _PHASE_SKIP * bond_px)
    maps: list = []
    own_used = np.zeros(len(centres), bool)
    gmis = np.full(len(centres), np.nan)
    for g in range(len(centres)):
        lm = _local_map(fit, hpos, centres[g], gshift[g], dpos, bond_px)
        mis = _misfit(lm, hpos, centres[g], dpos, bond_px)
        # Where the frame's fit, bent to the columns around, leaves them off its sites, the lattice
        # fitted to those columns alone may explain them better: a frame that bends more than its
        # fit follows, a grain turned from the rest.
        own = _own_map(hpos, centres[g], dpos, bond_px, fit.a) if not mis <= _MISFIT_OK else None
        if own is not None:
            mis_own = _misfit(own, hpos, centres[g], dpos, bond_px)
            if mis_own < mis and mis_own <= _MISFIT_OWN:
                lm, mis, own_used[g] = own, mis_own, True
        maps.append(lm)
        gmis[g] = mis
    geo.misfit = gmis[group]
    cells = np.zeros((m, 2), np.int64)
    subs = np.zeros(m, np.int64)
    sites = np.zeros((m, 2))
    for k in range(m):
        lm = maps[group[k]]
        c, s_, p = lm.snap(dpos[k:k + 1])
        cells[k], subs[k], sites[k] = c[0], s_[0], p[0]
        ref = fit.snap(p)[2][0] if own_used[group[k]] else fit.position(c, s_)[0]
        geo.shift[k] = p[0] - ref
    geo.offset = np.hypot(*(dpos - sites).T) / bond_px
    core_pos: list = [dict() for _ in range(m)]
    for k in range(m):
        c, s, lm = cells[k], int(subs[k]), maps[group[k]]
        core_pos[k][int(site_id(c, [s])[0])] = (c, s)
        nbc = c + NEIGHBOUR_CELLS[s]
        nbp = lm.position(nbc, np.full(3, 1 - s))
        mids = 0.5 * (sites[k] + nbp)
        j = int(np.argmin(np.hypot(*(mids - dpos[k]).T)))
        d_mid = np.hypot(*(mids[j] - dpos[k])) / bond_px
        if min(geo.offset[k], d_mid) > OFF_LATTICE:
            geo.kind[k] = "off"
            core_pos[k] = {}
        elif geo.offset[k] <= d_mid:
            geo.kind[k] = "site"
        else:
            geo.kind[k] = "bond"
            core_pos[k][int(site_id(nbc[j], [1 - s])[0])] = (nbc[j], 1 - s)
    geo.core = [set(cp) for cp in core_pos]
    group_core: dict = {}
    for k in range(m):
        group_core.setdefault(int(group[k]), set()).update(geo.core[k])
    htree = cKDTree(pos[bondable]) if len(bondable) else None
    for k in range(m):
        if not geo.core[k]:
            continue
        cand_c, cand_s = [], []
        for c, s in core_pos[k].values():
            cand_c.append(c + NEIGHBOUR_CELLS[s])
            cand_s.append(np.full(3, 1 - s))
        cc, ss = np.vstack(cand_c), np.concatenate(cand_s)
        ids = site_id(cc, ss)
        keep = ~np.isin(ids, list(group_core[int(group[k])]))
        ids, cc, ss = ids[keep], cc[keep], ss[keep]
        ids, first = np.unique(ids, return_index=True)
        cc, ss = cc[first], ss[first]
        sp = maps[group[k]].position(cc, ss)
        geo.shell[k] = {int(i): p for i, p in zip(ids, sp)}
        if htree is None:
            continue
        on_shell = set()
        bpos = pos[bondable]
        for i, p in zip(ids, sp):
            on = htree.query_ball_point(p, ON_SHELL * bond_px)
            if on:
                d = np.hypot(*(bpos[on] - p).T)
                geo.occupied[k][int(i)] = [int(bondable[on[q]]) for q in np.argsort(d)]
                on_shell.update(int(bondable[q]) for q in on)
        # The local lattice explains the dopant's surroundings when every host column at a bond's
        # distance from it lies on one of its shell sites, and those on them are at a bond's distance.
        dk = np.hypot(*(bpos - dpos[k]).T)
        around = bondable[(dk >= MIN_HOST_GAP * bond_px) & (dk <= MAX_HOST_GAP * bond_px)]
        first = [rr[0] for rr in geo.occupied[k].values()]
        gap = np.hypot(*(pos[first] - dpos[k]).T) / bond_px if first else np.zeros(0)
        geo.consistent[k] = (len(around) > 0 and set(int(h) for h in around) <= on_shell
                             and bool(((gap >= MIN_HOST_GAP) & (gap <= MAX_HOST_GAP)).all()))
    return geo


def _directions(pos, host, dpos, bond_px, dopant_cut_px) -> list:
    """Host rows bonded to each dopant, one per direction: rows (``host``: those that may bond)
    between :data:`MIN_HOST_GAP` and :data:`MAX_HOST_GAP` bond away, the nearest to the Si–C bond
    length first, each at least :data:`MIN_BOND_ANGLE` from those taken and
    :data:`MIN_DOPANT_ANGLE` from the dopants bonded to it."""
    out = []
    if len(host) == 0:
        return [[] for _ in range(len(dpos))]
    hpos = pos[host]
    for k, q in enumerate(dpos):
        d = np.hypot(*(hpos - q).T)
        cand = np.flatnonzero((d >= MIN_HOST_GAP * bond_px) & (d <= MAX_HOST_GAP * bond_px))
        taken_ang = []
        dop_ang = [np.arctan2(*(o - q)) for o in dpos[np.hypot(*(dpos - q).T) <= dopant_cut_px]
                   if np.hypot(*(o - q)) > 0]
        keep = []
        for c in cand[np.argsort(np.abs(d[cand] / bond_px - SI_C_BOND))]:
            ang = np.arctan2(*(hpos[c] - q))
            if all(abs(np.angle(np.exp(1j * (ang - t)))) >= np.deg2rad(MIN_BOND_ANGLE) for t in taken_ang) \
                    and all(abs(np.angle(np.exp(1j * (ang - t)))) >= np.deg2rad(MIN_DOPANT_ANGLE) for t in dop_ang):
                keep.append(int(host[c]))
                taken_ang.append(ang)
        out.append(keep)
    return out


def dopant_geometry_frames(atoms, pixel_size, lattice, cutoffs=None):
    """Per frame: (frame, rows, fit, geometry), for graphene-like lattices."""
    table = bond_cutoffs(lattice, cutoffs)
    dop_el = "Si"
    cut_nm = table.get(f"{dop_el}-{dop_el}", table["default"])
    bond_px = LATTICES[lattice]["bond"] / pixel_size
    pos = atoms[["y", "x"]].to_numpy(np.float64)
    labels = labels_of(atoms)
    occ = atoms["occupancy"].to_numpy(np.float64) if "occupancy" in atoms.columns else None
    for fr, rows in frame_groups(atoms):
        fit = fit_frame(pos[rows], labels[rows], bond_px)
        yield fr, rows, fit, dopant_geometry(fit, pos[rows], labels[rows], bond_px, cut_nm / pixel_size,
                                             None if occ is None else occ[rows])


def _disk_offsets(radius: float):
    k = int(np.ceil(radius))
    dy, dx = np.mgrid[-k:k + 1, -k:k + 1]
    m = dy ** 2 + dx ** 2 <= radius * radius
    return dy[m], dx[m]


def _patches(img: np.ndarray, centres: np.ndarray, radius: float):
    """Pixel values (n, p) in a disk of ``radius`` px around each centre (rounded), NaN outside
    the image, and the offsets (p,) ``dy``, ``dx`` (px) of the disk's pixels from the true
    centres (n, p)."""
    dy, dx = _disk_offsets(radius)
    c = np.rint(centres).astype(np.int64)
    yy, xx = c[:, :1] + dy, c[:, 1:] + dx
    ok = (yy >= 0) & (yy < img.shape[0]) & (xx >= 0) & (xx < img.shape[1])
    v = np.where(ok, img[np.clip(yy, 0, img.shape[0] - 1), np.clip(xx, 0, img.shape[1] - 1)], np.nan)
    return v, yy - centres[:, :1], xx - centres[:, 1:]


def dopant_image_features(img: np.ndarray, pos: np.ndarray, labels: np.ndarray, rows: np.ndarray,
                          bond_px: float) -> pd.DataFrame:
    """Contrast and width of the dopants ``rows`` against the host columns around each.

    Parameters
    ----------
    img : ndarray (y, x)
        The frame.
    pos : ndarray (n, 2)
        Positions (px) of the frame's rows; ``labels`` their labels.
    rows : ndarray of int
        The dopants (row positions).
    bond_px : float
        Host bond, px.

    Returns
    -------
    DataFrame
        One row per dopant: ``background`` (the local background: the 10th percentile of the
        disk-averaged image within 2.5 lattice constants, the level of the hexagon centres,
        which contamination raises with the columns), ``contrast`` (the dopant's disk mean over
        the median of its host references', both above the background; NaN without references)
        and ``width`` (the shoulder excess of :data:`MAX_WIDTH`: about 0 for a blob as wide as the
        probe, more for a wider one).
    """
    img = np.asarray(img, np.float64)
    a_px = bond_px * np.sqrt(3.0)
    n = len(rows)
    out = pd.DataFrame({"background": np.full(n, np.nan), "contrast": np.full(n, np.nan),
                        "width": np.full(n, np.nan)})
    if n == 0:
        return out
    host = np.flatnonzero(labels == "lattice")
    dpos = pos[rows]
    # Host references: away from every dopant (its halo brightens the columns next to it).
    if len(host):
        far = cKDTree(dpos).query(pos[host])[0] > _PHASE_SKIP * bond_px
        host = host[far]
    hv, _, _ = _patches(img, pos[host], _DISK * bond_px) if len(host) else (np.zeros((0, 1)), None, None)
    full = np.isfinite(hv).all(axis=1)                 # disks inside the frame: one reduction
    h_mean = np.full(len(hv), np.nan)
    if full.any():
        h_mean[full] = hv[full].mean(axis=1)
    with np.errstate(invalid="ignore"):
        h_mean[~full] = [np.mean(v[np.isfinite(v)]) if np.isfinite(v).any() else np.nan for v in hv[~full]]
    dv, _, _ = _patches(img, dpos, _DISK * bond_px)
    d_mean = np.nanmean(dv, axis=1)
    # Disk-averaged image, for the background.
    from scipy.ndimage import convolve

    dy, dx = _disk_offsets(_DISK * bond_px)
    k = int(max(np.abs(dy).max(), 1))
    ker = np.zeros((2 * k + 1, 2 * k + 1))
    ker[dy + k, dx + k] = 1.0
    smooth = convolve(img, ker / ker.sum(), mode="nearest")
    gy, gx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    htree = cKDTree(pos[host]) if len(host) else None
    rv_, ry_, rx_ = _patches(img, np.vstack([dpos, pos[host]]), _RING[1] * bond_px)
    rr_ = np.hypot(ry_, rx_)
    ring = (rr_ >= _RING[0] * bond_px) & (rr_ <= _RING[1] * bond_px) & np.isfinite(rv_)
    core = (rr_ <= _DISK * bond_px) & np.isfinite(rv_)
    with np.errstate(invalid="ignore", divide="ignore"):
        ring_mean = np.where(ring, rv_, 0).sum(axis=1) / ring.sum(axis=1)
        core_mean = np.where(core, rv_, 0).sum(axis=1) / core.sum(axis=1)
    for q in range(n):
        y, x = dpos[q]
        r = _HOLLOW_REACH * a_px
        y0, y1 = int(max(0, np.floor(y - r))), int(min(img.shape[0], np.ceil(y + r) + 1))
        x0, x1 = int(max(0, np.floor(x - r))), int(min(img.shape[1], np.ceil(x + r) + 1))
        d2 = (gy[y0:y1, x0:x1] - y) ** 2 + (gx[y0:y1, x0:x1] - x) ** 2
        win = (d2 <= r * r) & (d2 >= (_HOLLOW_SKIP * bond_px) ** 2)
        if not win.any():
            continue
        base = float(np.percentile(smooth[y0:y1, x0:x1][win], 10))
        out.loc[q, "background"] = base
        if htree is None:
            continue
        ref = htree.query_ball_point(dpos[q], _REF_REACH * a_px)
        if len(ref) < 3:
            continue
        hm = h_mean[ref][np.isfinite(h_mean[ref])]
        if len(hm) < 3:
            continue
        level = float(np.median(hm)) - base
        if level > 0:
            out.loc[q, "contrast"] = (d_mean[q] - base) / level
        # Shoulder: the ring's level over the core's, both above the background; the dopant's
        # less the median of its references'.
        with np.errstate(invalid="ignore", divide="ignore"):
            sh_d = (ring_mean[q] - base) / (core_mean[q] - base)
            ref_core = core_mean[n + np.asarray(ref)] - base
            ref_ring = ring_mean[n + np.asarray(ref)] - base
            sh_h = np.median(ref_ring) / np.median(ref_core)
        out.loc[q, "width"] = sh_d - sh_h
    return out


def check_dopants(atoms: pd.DataFrame, image, pixel_size: float | None = None, lattice: str | None = None, *,
                  cutoffs: dict | None = None) -> pd.DataFrame:
    """Confirm each ``dopant`` row of the finder by Z-contrast, width and place on the lattice.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table: ``y``, ``x`` (px), ``label``; optional ``frame`` (index into a stack).
    image : ndarray
        The image (y, x) or stack (frame, y, x) the atoms were found in.
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``. Only graphene is checked (its dopants are heavier than
        the host; in MX2 a dopant may be lighter than the metal it replaces): other lattices come
        back with ``dopant_check`` ``"dopant"`` on every dopant.
    cutoffs : dict, optional
        Bond cutoffs (nm), as for :func:`~stemflow.chem.bonds.find_bonds` (the dopant–dopant one
        groups dopants).

    Returns
    -------
    DataFrame
        A copy of ``atoms`` with ``dopant_check`` (category, ``""`` for rows that were no dopant):
        ``"dopant"`` (confirmed), or why it is not one — ``"edge"`` (within
        :data:`EDGE_BONDS` bond of the frame's edge), ``"dim"`` (contrast below
        :data:`MIN_CONTRAST`), ``"wide"`` (width above :data:`MAX_WIDTH`), ``"off_lattice"``
        (neither on a site nor at a bond's midpoint, and bonded to no other dopant),
        ``"no_shell"`` (fewer than :data:`MIN_SHELL` host columns on its shell sites or bonded
        dopants), ``"uncertain"`` (``prob`` below :data:`MIN_DOPANT_PROB`, in frames holding at
        least :data:`stemflow.noise.DIM_COUNTS` detected counts per nm²) — and ``label``
        changed for those: ``"lattice"`` for a ``"dim"`` one on a site
        (a host column), ``"unknown"`` for the others.

    Notes
    -----
    The contrast and width are taken against the host columns within 2.5 lattice constants and
    the background of the same neighbourhood (:func:`dopant_image_features`), so a contamination
    patch that raises both leaves the contrast as it is. Checks need the frame's lattice to be
    fitted for the place and shell; without a fit only the edge, contrast and width are checked.

    Examples
    --------
    >>> from stemflow.chem import check_dopants
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 96, pixel_size=0.012, seed=1, defects={"Si1C3": 1})
    >>> atoms = sim.atoms[["frame", "y", "x", "label"]].copy()
    >>> atoms.loc[18, "label"] = "dopant"                      # a C column called a dopant
    >>> out = check_dopants(atoms, sim.image, pixel_size=0.012, lattice="graphene")
    >>> out.loc[out["dopant_check"] != "", ["label", "dopant_check"]]
          label dopant_check
    16   dopant       dopant
    18  lattice          dim
    """
    from .occupancy import image_of_frame

    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    out = atoms.copy()
    labels = labels_of(out).astype(object)
    verdict = np.full(len(out), "", dtype=object)
    verdict[labels == "dopant"] = "dopant"
    if lattice == "graphene" and image is not None and (labels == "dopant").any():
        bond_px = LATTICES[lattice]["bond"] / pixel_size
        pos = out[["y", "x"]].to_numpy(np.float64)
        prob = out["prob"].to_numpy(np.float64) if "prob" in out else None
        for fr, rows, fit, geo in dopant_geometry_frames(out, pixel_size, lattice, cutoffs):
            if len(geo.rows) == 0:
                continue
            img = image_of_frame(image, fr)
            h, w = img.shape
            doubt_counts = not counts_per_nm2(img, pixel_size) < DIM_COUNTS     # NaN: held to prob too
            lp = pos[rows]
            feats = dopant_image_features(img, lp, labels[rows], geo.rows, bond_px)
            coord = geo.coordination()
            gsize = np.bincount(geo.group)[geo.group]
            for k, r in enumerate(geo.rows):
                y, x = lp[r]
                edge = min(y, x, h - 1 - y, w - 1 - x) / bond_px
                why = "dopant"
                con, wid = feats["contrast"].iloc[k], feats["width"].iloc[k]
                if edge < EDGE_BONDS:
                    why = "edge"
                elif np.isfinite(con) and con < MIN_CONTRAST:
                    why = "dim"
                elif np.isfinite(wid) and wid > MAX_WIDTH and gsize[k] == 1:
                    why = "wide"
                elif gsize[k] == 1 and (len(geo.directions[k]) > 4 or
                                        (geo.kind[k] == "off" and len(geo.directions[k]) != 3)):
                    why = "off_lattice"
                elif geo.kind[k] in ("site", "bond") and coord[k] < MIN_SHELL:
                    why = "no_shell"
                elif prob is not None and doubt_counts and prob[rows[r]] < MIN_DOPANT_PROB:
                    why = "uncertain"
                verdict[rows[r]] = why
                if why != "dopant":
                    on_site = geo.kind[k] == "site"
                    labels[rows[r]] = "lattice" if (why == "dim" and on_site) else "unknown"
    out["label"] = pd.Categorical(labels.astype(str), categories=label_categories(atoms, labels))
    out["dopant_check"] = pd.Categorical(verdict.astype(str), categories=CHECKS)
    return with_attrs(out, atoms, pixel_size, lattice)

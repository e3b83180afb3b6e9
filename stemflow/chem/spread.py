"""How single atoms are spread: how many per nm², how far apart, in pairs or clusters, and whether
they sit closer together (or farther apart) than atoms placed at random would.

For single-atom catalysts (Pt, Fe, Ir … on carbon, carbon nitride or oxide) these are the figures
a frame is taken for: the metal's surface density, the distance to the nearest other metal atom,
how many atoms have a partner within bonding distance (dimers, trimers, larger groups), and whether
the pattern departs from complete spatial randomness (CSR). The same functions serve dopants in a
crystal (Si in graphene, Mo in WS2), selected by ``label``.

Three views, each over an atoms table (``frame`` optional, ``y``, ``x`` px, ``label``):

- :func:`atom_groups`: per atom, the distance to its nearest neighbour (``nn_nm``) and the group
  it forms with the atoms within ``within_nm`` of it (single linkage: ``group``, ``group_size``).
- :func:`dispersion`: per frame, the count, density, nearest-neighbour distances, the Clark–Evans
  aggregation index with the edge correction of Donnelly (1978) for a rectangular frame
  (R = observed mean nearest-neighbour distance / that expected under CSR: below 1 clustered,
  above 1 dispersed; ``clark_evans_z`` its standard score), and the groups by size.
- :func:`ripley_l`: Ripley's L function over radii, pooled over the frames, with the translation
  edge correction, against the envelope of CSR patterns of the same counts in the same frames.

The heavy-atom finder keeps one of two local maxima closer than
:data:`~stemflow.chem.heavy.HEAVY_MIN_SEPARATION_NM` along either axis, so no pattern it finds
holds pairs closer than that: the CSR patterns of :func:`ripley_l` keep the same exclusion (a
square, as the finder's), so a deficit at the smallest radii is not read as dispersion.

:func:`ripley_l` pools frames as different areas (independent fields of view). The frames of a
movie show one area again and again: pass one of them, or the statistics would count the same
pattern many times over and call nearly any movie clustered.

Units: positions in px, pixel size in nm/px, distances in nm, densities per nm², areas in nm².
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..errors import InputError, check_positive, require_pixel_size
from ..tables import ATOMIC_NUMBER, DISPERSION, LABELS
from ._common import check_atoms, frame_groups, labels_of
from .heavy import HEAVY_MIN_SEPARATION_NM

__all__ = ["atom_groups", "dispersion", "ripley_l", "finder_exclusion_nm", "DIMER_NM", "CLARK_EVANS_MIN_ATOMS"]

#: Two atoms within this distance (nm) of each other are a pair. Metal–metal bonds are 0.25–0.29 nm
#: (Fe 0.25, Ir 0.27, Pt 0.28, Au 0.29); projection can only shorten them, and the finder places
#: heavy atoms to a few hundredths of a nm: 1.2 × the longest bond.
DIMER_NM = 0.35

#: Fewest atoms in a frame for the Clark–Evans standard score (Donnelly's approximation holds from
#: about this many; fewer give ``clark_evans_z`` NaN, R is still given).
CLARK_EVANS_MIN_ATOMS = 7


def finder_exclusion_nm(pixel_size: float) -> float:
    """Least distance (nm) along the larger of the two axes between two heavy atoms the finder reports:
    its local maxima are searched over a square of ± round(HEAVY_MIN_SEPARATION_NM / pixel size) px,
    so two kept maxima lie at least one pixel more apart along y or along x.

    Parameters
    ----------
    pixel_size : float
        nm/px.

    Returns
    -------
    float
        nm (Chebyshev distance).

    Examples
    --------
    >>> round(finder_exclusion_nm(0.03), 3)      # ±5 px searched: 6 px apart at least
    0.18
    """
    pixel_size = require_pixel_size(pixel_size)
    return (max(1, int(round(HEAVY_MIN_SEPARATION_NM / pixel_size))) + 1) * pixel_size


def _window(atoms: pd.DataFrame, shape, pixel_size: float) -> tuple[float, float]:
    """The frame's height and width in nm from ``shape`` (px) or ``atoms.attrs['frame_shape']``."""
    if shape is None:
        shape = atoms.attrs.get("frame_shape")
    if shape is None:
        raise InputError("the frame size is unknown: pass shape=(height, width) in px (the image's last two "
                         "dimensions); find_atoms and stemflow run record it in atoms.attrs['frame_shape']")
    try:
        h, w = (float(v) for v in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be (height, width) in px; got {shape!r}") from None
    check_positive(h, "shape[0] (frame height)", "px")
    check_positive(w, "shape[1] (frame width)", "px")
    return h * pixel_size, w * pixel_size


def _check_inside(atoms: pd.DataFrame, keep: np.ndarray, h_nm: float, w_nm: float, pixel_size: float) -> None:
    """Refuse counted atoms outside the frame (pixel centres −0.5 … size − 0.5 px)."""
    yx = atoms[["y", "x"]].to_numpy(np.float64)[keep]
    h, w = h_nm / pixel_size, w_nm / pixel_size
    out = (yx[:, 0] < -0.5) | (yx[:, 0] > h - 0.5) | (yx[:, 1] < -0.5) | (yx[:, 1] > w - 0.5)
    if out.any():
        raise InputError(f"{int(out.sum())} atom(s) lie outside a frame of {h:g} × {w:g} px (y up to "
                         f"{yx[:, 0].max():.1f}, x up to {yx[:, 1].max():.1f} px): pass the shape of the frames "
                         "the table was found on (shape=(height, width) px)")


def _selected(atoms, pixel_size, label, element):
    """Checked table, pixel size, and the boolean mask of the rows that are the atoms counted."""
    atoms = check_atoms(atoms)
    pixel_size = require_pixel_size(atoms.attrs.get("pixel_size") if pixel_size is None else pixel_size)
    labels = labels_of(atoms)
    if label is not None and str(label) not in LABELS and str(label) not in set(labels):
        raise InputError(f"label {label!r} is not a label of stemflow ({', '.join(LABELS)}) nor of this table "
                         f"({', '.join(sorted(set(labels))) or 'no rows'}); heavy atoms on a support are 'dopant'")
    if element is not None:
        symbol = {e.lower(): e for e in ATOMIC_NUMBER}.get(str(element).lower())    # "pt" is Pt
        if symbol is None:
            raise InputError(f"element {element!r} is not an element symbol (Pt, Fe, Si ...)")
        element = symbol
    keep = np.ones(len(atoms), bool) if label is None else labels == str(label)
    if element is not None:
        if "element" not in atoms.columns:
            raise InputError(f"element={element!r} asks for the column 'element', which this table lacks; find "
                             "heavy atoms with find_atoms(..., lattice='amorphous', elements=(...)) or identify "
                             "a crystal's atoms first (stemflow.chem.identify)")
        keep &= atoms["element"].astype(str).to_numpy() == str(element)
    return atoms, pixel_size, keep


def _positions_nm(atoms: pd.DataFrame, rows: np.ndarray, pixel_size: float) -> np.ndarray:
    """(n, 2) positions in nm, the frame's corner at 0 (pixel centres at (i + 0.5) · pixel size)."""
    return (atoms[["y", "x"]].to_numpy(np.float64)[rows] + 0.5) * pixel_size


def _groups(p: np.ndarray, within_nm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-neighbour distance (NaN for a lone atom), group id and group size of each point."""
    n = len(p)
    nn = np.full(n, np.nan)
    if n == 0:
        return nn, np.zeros(0, np.int64), np.zeros(0, np.int64)
    tree = cKDTree(p)
    if n > 1:
        nn = tree.query(p, k=2)[0][:, 1]
    pairs = tree.query_pairs(within_nm, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    size = np.bincount(group)[group]
    return nn, group.astype(np.int64), size.astype(np.int64)


def atom_groups(atoms: pd.DataFrame, pixel_size: float | None = None, *, within_nm: float = DIMER_NM,
                label: str | None = "dopant", element: str | None = None) -> pd.DataFrame:
    """Each atom's nearest neighbour and the group it forms with its neighbours, frame by frame.

    Parameters
    ----------
    atoms : DataFrame
        An atoms table (``y``, ``x`` px, ``label``; ``frame`` for a stack).
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    within_nm : float
        Two atoms closer than this (nm) belong to one group; groups join through shared members
        (single linkage). Default :data:`DIMER_NM`.
    label : str or None
        The atoms counted (``"dopant"``: heavy atoms on an amorphous support, dopants in a
        crystal); None counts every row.
    element : str, optional
        Count only rows whose ``element`` is this (after ``elements=`` or identification).

    Returns
    -------
    DataFrame
        A copy of ``atoms`` with ``nn_nm`` (nm to the nearest other counted atom of the same
        frame; NaN for an atom alone in its frame and for rows not counted), ``group`` (an id
        unique within the frame, -1 for rows not counted) and ``group_size`` (1 for an isolated
        atom, 2 for a pair ...; 0 for rows not counted).

    Examples
    --------
    >>> import pandas as pd
    >>> atoms = pd.DataFrame({"y": [10.0, 10.0, 50.0], "x": [10.0, 19.0, 50.0], "label": "dopant"})
    >>> g = atom_groups(atoms, pixel_size=0.03)        # 9 px apart = 0.27 nm: a pair
    >>> g["group_size"].tolist(), g["nn_nm"].round(2).tolist()
    ([2, 2, 1], [0.27, 0.27, 1.52])
    """
    within_nm = check_positive(within_nm, "within_nm", "nm")
    atoms, pixel_size, keep = _selected(atoms, pixel_size, label, element)
    out = atoms.copy()
    nn = np.full(len(atoms), np.nan)
    group = np.full(len(atoms), -1, np.int64)
    size = np.zeros(len(atoms), np.int64)
    for _, rows in frame_groups(atoms):
        rows = rows[keep[rows]]
        nn[rows], group[rows], size[rows] = _groups(_positions_nm(atoms, rows, pixel_size), within_nm)
    out["nn_nm"], out["group"], out["group_size"] = nn, group, size
    out.attrs.update(atoms.attrs)
    return out


def _clark_evans(nn: np.ndarray, area: float, perimeter: float) -> tuple[float, float]:
    """Clark–Evans R and its standard score, with Donnelly's (1978) correction for the frame's edge
    (nearest neighbours are sought within the frame only); NaN under 2 atoms (the score: under
    :data:`CLARK_EVANS_MIN_ATOMS`)."""
    n = len(nn)
    if n < 2:
        return np.nan, np.nan
    expected = 0.5 * np.sqrt(area / n) + (0.0514 + 0.041 / np.sqrt(n)) * perimeter / n
    variance = 0.0703 * area / n**2 + 0.037 * perimeter * np.sqrt(area / n**5)
    mean = float(np.mean(nn))
    z = (mean - expected) / np.sqrt(variance) if n >= CLARK_EVANS_MIN_ATOMS else np.nan
    return mean / expected, z


def dispersion(atoms: pd.DataFrame, pixel_size: float | None = None, shape=None, *, within_nm: float = DIMER_NM,
               label: str | None = "dopant", element: str | None = None, frames=None) -> pd.DataFrame:
    """Density, nearest-neighbour distances, clustering and groups of single atoms, frame by frame.

    Parameters
    ----------
    atoms : DataFrame
        An atoms table (``y``, ``x`` px, ``label``; ``frame`` for a stack).
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    shape : (int, int), optional
        The frame's height and width, px; default ``atoms.attrs["frame_shape"]`` (recorded by
        :func:`stemflow.find_atoms` and ``stemflow run``). The whole frame is the area the
        density is over: crop the table and pass the crop's shape to leave out vacuum or a
        particle.
    within_nm : float
        Pair distance of :func:`atom_groups`, nm.
    label, element
        The atoms counted, as for :func:`atom_groups`.
    frames : iterable of int, optional
        The frames to report, including those where nothing was found (a frame without atoms has no
        row in an atoms table); default the frames the table holds (none for a stack's empty
        table; a row of zeros for one image's).

    Returns
    -------
    DataFrame
        One row per frame: ``frame``, ``n_atoms``, ``area_nm2``, ``density_per_nm2`` (nm⁻²),
        ``nn_median_nm`` and ``nn_mean_nm`` (nm to the nearest other atom of the frame),
        ``clark_evans`` (R: 1 for CSR, < 1 clustered, > 1 dispersed; Donnelly's edge correction;
        NaN under 2 atoms), ``clark_evans_z`` (its standard score; |z| > 1.96 departs from CSR at
        the 5 % level; NaN under :data:`CLARK_EVANS_MIN_ATOMS` atoms), ``isolated_share`` (atoms with no other
        within ``within_nm``), and the groups by size: ``singles``, ``pairs``, ``triples``,
        ``larger``. ``attrs`` holds ``pixel_size``, ``within_nm``, ``label``, ``element``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> yx = rng.uniform(0, 512, (60, 2))                       # 60 atoms at random in a 512² frame
    >>> atoms = pd.DataFrame({"y": yx[:, 0], "x": yx[:, 1], "label": "dopant"})
    >>> d = dispersion(atoms, pixel_size=0.03, shape=(512, 512))
    >>> round(float(d.density_per_nm2[0]), 3), bool(abs(d.clark_evans_z[0]) < 1.96)
    (0.254, True)
    """
    within_nm = check_positive(within_nm, "within_nm", "nm")
    atoms, pixel_size, keep = _selected(atoms, pixel_size, label, element)
    h_nm, w_nm = _window(atoms, shape, pixel_size)
    _check_inside(atoms, keep, h_nm, w_nm, pixel_size)
    area, perimeter = h_nm * w_nm, 2 * (h_nm + w_nm)
    by_frame = {f: rows[keep[rows]] for f, rows in frame_groups(atoms)}
    if frames is not None:
        if "frame" not in atoms.columns and len(atoms):
            raise InputError("frames= needs a 'frame' column in the atoms table (a stack's table)")
        by_frame = {int(f): by_frame.get(int(f), np.zeros(0, np.int64)) for f in frames}
    elif not by_frame and "frame" not in atoms.columns:
        by_frame = {None: np.zeros(0, np.int64)}         # one image with no atom: a row of zeros
    rows_out = []
    for frame, rows in by_frame.items():
        nn, _, size = _groups(_positions_nm(atoms, rows, pixel_size), within_nm)
        n = len(rows)
        r, z = _clark_evans(nn, area, perimeter)
        sizes = np.bincount(size)[1:] // np.arange(1, size.max() + 1) if n else np.zeros(0, np.int64)
        count = lambda k: int(sizes[k - 1]) if len(sizes) >= k else 0     # noqa: E731 - groups of size k
        rows_out.append({"frame": -1 if frame is None else int(frame), "n_atoms": n, "area_nm2": area,
                         "density_per_nm2": n / area,
                         "nn_median_nm": float(np.median(nn)) if n > 1 else np.nan,
                         "nn_mean_nm": float(np.mean(nn)) if n > 1 else np.nan,
                         "clark_evans": r, "clark_evans_z": z,
                         "isolated_share": float(np.mean(size == 1)) if n else np.nan,
                         "singles": count(1), "pairs": count(2), "triples": count(3),
                         "larger": int(sizes[3:].sum()) if len(sizes) > 3 else 0})
    out = DISPERSION.conform(pd.DataFrame(rows_out, columns=DISPERSION.names))
    if "frame" not in atoms.columns and frames is None:
        out = out.drop(columns="frame")
    out.attrs.update(pixel_size=pixel_size, within_nm=within_nm, label=label, element=element,
                     frame_shape=[h_nm / pixel_size, w_nm / pixel_size])
    return out


def _pair_sums(p: np.ndarray, h: float, w: float, radii: np.ndarray) -> np.ndarray:
    """Σ over ordered pairs closer than each radius of the translation weight area / ((w − |dx|)(h − |dy|))."""
    if len(p) < 2:
        return np.zeros(len(radii))
    pairs = cKDTree(p).query_pairs(float(radii[-1]), output_type="ndarray")
    if not len(pairs):
        return np.zeros(len(radii))
    d = p[pairs[:, 0]] - p[pairs[:, 1]]
    dist = np.hypot(d[:, 0], d[:, 1])
    weight = h * w / ((h - np.abs(d[:, 0])) * (w - np.abs(d[:, 1])))
    order = np.argsort(dist)
    cum = np.concatenate([[0.0], np.cumsum(weight[order])])
    return 2 * cum[np.searchsorted(dist[order], radii, side="right")]


def _csr(n: int, h: float, w: float, core: float, square: bool, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniform in an h × w window, none within ``core`` of another (Euclidean, or along
    the larger axis when ``square``), by sequential inhibition: a point too close to one already
    placed is drawn again."""
    p = rng.uniform((0, 0), (h, w), (n, 2))
    if core <= 0 or n < 2:
        return p
    norm = np.inf if square else 2
    for _ in range(100):
        pairs = cKDTree(p).query_pairs(core * (1 - 1e-9), p=norm, output_type="ndarray")
        if not len(pairs):
            return p
        redo = np.unique(pairs[:, 1])
        p[redo] = rng.uniform((0, 0), (h, w), (len(redo), 2))
    raise InputError(f"{n} atoms cannot be placed at least {core:.3g} nm apart in a {h:.3g} × {w:.3g} nm frame; "
                     "pass hard_core_nm=0 (or a smaller value)")


def _pooled_l(points: list, h: float, w: float, radii: np.ndarray) -> np.ndarray:
    """L(r) − r (nm) pooled over frames: K = area · Σ pair weights / Σ n(n − 1)."""
    pairs = sum(n * (n - 1) for n in map(len, points))
    if pairs == 0:
        return np.full(len(radii), np.nan)
    k = h * w * sum(_pair_sums(p, h, w, radii) for p in points) / pairs
    return np.sqrt(k / np.pi) - radii


def ripley_l(atoms: pd.DataFrame, pixel_size: float | None = None, shape=None, *, radii_nm=None,
             label: str | None = "dopant", element: str | None = None, simulations: int = 99,
             alpha: float = 0.05, hard_core_nm: float | None = None, seed: int = 0) -> pd.DataFrame:
    """Ripley's L function of the atoms against complete spatial randomness (CSR).

    L(r) − r is 0 on average for atoms placed independently at random; above 0 they have more
    neighbours within r than chance gives (clustering at that scale), below 0 fewer (dispersion).
    The translation edge correction makes it unbiased in a rectangular frame; the frames are pooled
    (K weighted by each frame's number of pairs) as different areas: for a movie of one area pass
    one frame. The envelope is global (the maximum absolute
    deviation test): ``simulations`` CSR patterns with the same number of atoms in every frame give
    the mean curve and how far a random pattern strays from it at its worst radius; the band is the
    mean ± the deviation that only a share ``alpha`` of them exceed. A CSR pattern leaves the band
    somewhere with chance ``alpha`` (a pointwise band, one per radius, would be left far more often).

    Parameters
    ----------
    atoms : DataFrame
        An atoms table (``y``, ``x`` px, ``label``; ``frame`` for a stack).
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    shape : (int, int), optional
        The frame's height and width, px; default ``atoms.attrs["frame_shape"]``.
    radii_nm : array-like, optional
        Radii, nm, increasing; default 40 radii from ``max(hard_core_nm, 0.05)`` to a quarter of
        the frame's shorter side.
    label, element
        The atoms counted, as for :func:`atom_groups`.
    simulations : int
        CSR patterns for the envelope (0: none); at least 1 / ``alpha`` − 1 (19 for 5 %).
    alpha : float
        Chance that a CSR pattern leaves the envelope somewhere (the test's level).
    hard_core_nm : float, optional
        Least distance between two simulated atoms, nm (Euclidean). Default: for a table of heavy
        atoms on an amorphous support (``attrs["lattice"]`` ``"amorphous"`` or not recorded), the
        finder's own exclusion, :func:`finder_exclusion_nm` along the larger axis, so that the CSR
        patterns lack close pairs as the found ones do; 0 (plain CSR) for a crystal's dopants.
    seed : int
        Random seed of the CSR patterns.

    Returns
    -------
    DataFrame
        ``radius_nm``; ``l_minus_r_nm`` (nm); ``csr_mean_nm``, ``csr_low_nm``, ``csr_high_nm`` (the
        random patterns' mean and the envelope, nm; NaN without simulations); ``verdict``: ``"clustered"`` above the envelope, ``"dispersed"``
        below it, ``"random"`` inside, ``"unknown"`` without an envelope or under 2 atoms. ``attrs``: ``atoms``, ``frames``, ``simulations``,
        ``alpha``, ``p_value`` (the share of patterns, the observed one among them, that stray at
        least as far as the observed one: at or under ``alpha`` the atoms are not placed at random,
        and the curve leaves the envelope), ``hard_core_nm`` and ``pixel_size``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> centres = rng.uniform(50, 460, (15, 2))                  # 15 clusters of 4 atoms each
    >>> yx = np.repeat(centres, 4, axis=0) + rng.normal(0, 8, (60, 2))
    >>> atoms = pd.DataFrame({"y": yx[:, 0], "x": yx[:, 1], "label": "dopant"})
    >>> l = ripley_l(atoms, pixel_size=0.03, shape=(512, 512), radii_nm=[0.5, 1.0])
    >>> l["verdict"].tolist()
    ['clustered', 'clustered']
    """
    atoms, pixel_size, keep = _selected(atoms, pixel_size, label, element)
    h, w = _window(atoms, shape, pixel_size)
    square = hard_core_nm is None
    if square:
        heavy = atoms.attrs.get("lattice") in (None, "amorphous")
        hard_core_nm = finder_exclusion_nm(pixel_size) if heavy else 0.0
    hard_core_nm = float(hard_core_nm)
    if not np.isfinite(hard_core_nm) or hard_core_nm < 0:
        raise InputError(f"hard_core_nm must be ≥ 0 nm; got {hard_core_nm}")
    if radii_nm is None:
        radii = np.linspace(max(hard_core_nm, 0.05), min(h, w) / 4, 40)
    else:
        radii = np.asarray(radii_nm, np.float64).ravel()
        if not len(radii) or not np.all(np.isfinite(radii)) or np.any(radii <= 0) or np.any(np.diff(radii) <= 0):
            raise InputError(f"radii_nm must be positive, finite and increasing (nm); got {radii_nm!r}")
        if radii[-1] >= min(h, w):
            raise InputError(f"radii_nm reach {radii[-1]:g} nm, beyond the frame's shorter side ({min(h, w):.3g} nm); "
                             "keep them under a quarter of it")
    alpha = float(alpha)
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be between 0 and 1 (the test's level, e.g. 0.05); got {alpha}")
    simulations = int(simulations)
    if simulations < 0 or 0 < simulations < round(1 / alpha) - 1:
        raise InputError(f"simulations={simulations} is too few for a test at alpha={alpha:g}: pass at least "
                         f"{round(1 / alpha) - 1} (or 0 for no envelope)")
    _check_inside(atoms, keep, h, w, pixel_size)
    points = [_positions_nm(atoms, rows[keep[rows]], pixel_size) for _, rows in frame_groups(atoms)]
    points = [p for p in points if len(p)]
    observed = _pooled_l(points, h, w, radii)
    mean = low = high = np.full(len(radii), np.nan)
    p_value = np.nan
    if simulations and points:         # the envelope: the maximum absolute deviation test over the radii
        rng = np.random.default_rng(seed)
        sims = np.array([_pooled_l([_csr(len(p), h, w, hard_core_nm, square, rng) for p in points], h, w, radii)
                         for _ in range(simulations)])
        ok = np.isfinite(sims).all(axis=0) & np.isfinite(observed)
        if ok.any():
            # the mean over the simulated curves and the observed one: under CSR all of them are
            # exchangeable, so the observed curve strays furthest with chance exactly 1 / (s + 1)
            mean = np.full(len(radii), np.nan)
            mean[ok] = (sims[:, ok].sum(axis=0) + observed[ok]) / (simulations + 1)
            stray = np.max(np.abs(sims[:, ok] - mean[ok]), axis=1)
            k = max(int(np.floor(alpha * (simulations + 1))), 1)
            width = np.sort(stray)[::-1][k - 1]               # the k-th largest: exceeded by a share alpha
            low, high = mean - width, mean + width
            t = np.max(np.abs(observed[ok] - mean[ok]))
            p_value = float((1 + np.sum(stray >= t)) / (simulations + 1))
    verdict = np.where(observed > high, "clustered", np.where(observed < low, "dispersed", "random")).astype(object)
    verdict[~(np.isfinite(observed) & np.isfinite(low) & np.isfinite(high))] = "unknown"
    out = pd.DataFrame({"radius_nm": radii, "l_minus_r_nm": observed, "csr_mean_nm": mean, "csr_low_nm": low,
                        "csr_high_nm": high, "verdict": verdict})
    out.attrs.update(atoms=int(sum(map(len, points))), frames=len(points), simulations=simulations, alpha=alpha,
                     p_value=p_value, hard_core_nm=hard_core_nm, pixel_size=pixel_size)
    return out

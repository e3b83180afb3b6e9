"""Unsupervised classes of defects: rotation-invariant local descriptors, PCA, Gaussian mixture + BIC.

Each defect complex (:func:`~stemflow.chem.defects.defect_table`) is described around its centre
by the rows of the atoms table near it — rotation does not enter, only distances:

* **geometry** — how many host atoms, dopants and vacancies (rows and empty sites) lie in five
  shells around the centre (radii in bonds, so the same for every pixel size and lattice);
* **intensity** — the summed intensity of the columns in the same shells and the intensity at the
  centre, relative to a pristine host column (background removed in MX2), so independent of
  dose and detector gain;
* **image** (optional) — the patch sampled on a polar grid (radius 0…2.5 bonds) and the moduli of
  its Fourier coefficients along the angle.

The features are standardised, reduced by PCA (components explaining 90 % of the variance, at
most 10), and a Gaussian mixture is fitted for 1…``max_classes`` components; the number of
classes is the one of lowest BIC. Nothing is told how many kinds of defects there are.

Units: positions in px, radii in bonds (a/√3), angles in degrees.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import InputError
from ..tables import LATTICES
from ._common import frame_groups, labels_of, resolve, with_attrs

__all__ = ["defect_descriptors", "cluster_descriptors", "classify_defects", "defect_patches",
           "class_mean_patches"]


def _frame_image(image, frame):
    img = np.asarray(image)
    if img.ndim == 2:
        return img
    if img.ndim == 3:
        return img[0 if frame is None else int(frame)]
    raise InputError(f"image must be (y, x) or (frame, y, x); got shape {img.shape}")


def _host_level(atoms, rows, labels):
    """Reference intensity of a frame: the median of its pristine columns (of the metal sublattice
    in MX2, whose columns are the brightest); 1.0 without intensities."""
    if "intensity" not in atoms.columns:
        return 1.0
    sel = labels[rows] == "lattice"
    if "sublattice" in atoms.columns:
        sub = atoms["sublattice"].to_numpy()[rows]
        if (sel & (sub == 0)).any() and str(atoms.attrs.get("lattice")) in ("ws2", "mos2"):
            sel = sel & (sub == 0)
    v = atoms["intensity"].to_numpy(np.float64)[rows][sel]
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) and np.median(v) > 0 else 1.0


def _polar(img, centre, bond_px, n_r=11, n_t=36, rmax=2.5):
    r = np.linspace(0, rmax, n_r) * bond_px
    t = np.linspace(0, 2 * np.pi, n_t, endpoint=False)
    yy = centre[0] + r[:, None] * np.sin(t)[None, :]
    xx = centre[1] + r[:, None] * np.cos(t)[None, :]
    return ndimage.map_coordinates(np.asarray(img, np.float64), [yy, xx], order=1, mode="nearest")


_SHELLS = np.array([0.0, 0.35, 0.75, 1.25, 1.85, 2.3])   # bonds: centre, 1st, 2nd, 3rd, 4th shell


def _relative_intensity(atoms, rows, labels, lattice, bond_px):
    """Column intensities of a frame relative to a pristine host column, background removed in
    MX2 (from the metal and chalcogen levels and the Z-contrast law); NaN-free."""
    if "intensity" not in atoms.columns:
        return np.zeros(len(rows))
    inten = atoms["intensity"].to_numpy(np.float64)[rows]
    if lattice in ("ws2", "mos2") and "sublattice" in atoms.columns:
        from .elements import local_levels
        metal, chalc = LATTICES[lattice]["host"]
        sub = atoms["sublattice"].to_numpy()[rows]
        lab = labels[rows]
        pos = atoms[["y", "x"]].to_numpy(np.float64)[rows]
        base, i_m, _ = local_levels(pos, inten, (lab == "lattice") & (sub == 0), (lab == "lattice") & (sub == 1),
                                     pos, metal, chalc, 1.7, 2.5 * np.sqrt(3) * bond_px)
        rel = (inten - base) / np.where(i_m - base > 0, i_m - base, np.nan)
    else:
        rel = inten / _host_level(atoms, rows, labels)
    return np.nan_to_num(rel)


def defect_descriptors(atoms: pd.DataFrame, defects: pd.DataFrame, pixel_size: float | None = None,
                       lattice: str | None = None, image=None) -> np.ndarray:
    """Rotation-invariant descriptors of each defect complex.

    Parameters
    ----------
    atoms : DataFrame
        The atoms table the complexes were found in (``y``, ``x`` px, ``label``; optional
        ``frame``, ``intensity``, ``sublattice``).
    defects : DataFrame
        Its :func:`~stemflow.chem.defects.defect_table` (``y``, ``x``, ``n_empty``, optional
        ``frame``).
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``.
    image : ndarray, optional
        (y, x) or (frame, y, x); adds the polar image features (11 radii × 7 angular Fourier
        moduli of the patch, divided by the host level).

    Returns
    -------
    ndarray (n_defects, n_features)
        Square roots of the number of ``lattice``, ``dopant`` and ``vacancy`` rows (empty sites
        counted as vacancies at the centre) in five shells around the centre (0–0.35, 0.35–0.75,
        0.75–1.25, 1.25–1.85, 1.85–2.3 bonds), of the summed relative intensity of all columns in
        the same shells, and the log of the relative intensity at the centre: 21 features,
        unchanged by rotation, dose and pixel size. Then the image features when asked.

    Notes
    -----
    Relative intensity: a column's intensity over that of a pristine host column (the metal in
    MX2, where the background is first removed using the metal and chalcogen levels nearby).

    Examples
    --------
    >>> from stemflow.chem import defect_descriptors, defect_table
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 128, pixel_size=0.012, seed=2, defects={"Si1C3": 2, "V1": 2})
    >>> atoms = sim.atoms[["frame", "y", "x", "label"]]
    >>> dt = defect_table(atoms, pixel_size=0.012, lattice="graphene")
    >>> defect_descriptors(atoms, dt, pixel_size=0.012, lattice="graphene").shape
    (3, 21)
    >>> defect_descriptors(atoms, dt, pixel_size=0.012, lattice="graphene", image=sim.image).shape
    (3, 98)
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    bond_px = LATTICES[lattice]["bond"] / pixel_size
    labels = labels_of(atoms)
    pos = atoms[["y", "x"]].to_numpy(np.float64)
    n_sh = len(_SHELLS) - 1
    n_geo = 4 * n_sh + 1
    n_img = 11 * 7 if image is not None else 0
    X = np.zeros((len(defects), n_geo + n_img))
    if len(defects) == 0:
        return X
    dframe = defects["frame"].to_numpy() if "frame" in defects.columns else None
    for fr, rows in frame_groups(atoms):
        sel = np.flatnonzero(dframe == fr) if dframe is not None else np.arange(len(defects))
        if len(sel) == 0:
            continue
        centres = defects[["y", "x"]].to_numpy(np.float64)[sel]
        lab = labels[rows]
        p = pos[rows]
        rel = _relative_intensity(atoms, rows, labels, lattice, bond_px)
        tree = cKDTree(p)
        n_empty = defects["n_empty"].to_numpy(np.float64)[sel]
        for k, c, ne in zip(sel, centres, n_empty):
            idx = np.asarray(tree.query_ball_point(c, _SHELLS[-1] * bond_px), np.int64)
            r = np.hypot(*(p[idx] - c).T) / bond_px if len(idx) else np.empty(0)
            sh = np.clip(np.digitize(r, _SHELLS) - 1, 0, n_sh - 1)
            f = [np.bincount(sh[lab[idx] == kind], minlength=n_sh)[:n_sh].astype(float)
                 for kind in ("lattice", "dopant", "vacancy")]
            f[2][0] += ne
            f.append(np.maximum(np.bincount(sh, weights=rel[idx], minlength=n_sh)[:n_sh], 0.0))
            centre = rel[idx][sh == 0].mean() if (sh == 0).any() else 0.0
            X[k, :n_geo] = np.concatenate([np.sqrt(np.concatenate(f)), [np.log(max(centre, 1e-2))]])
        if image is not None:
            img = _frame_image(image, fr)
            level = _host_level(atoms, rows, labels)
            for k, c in zip(sel, centres):
                pp = _polar(img, c, bond_px) / level
                X[k, n_geo:] = np.abs(np.fft.rfft(pp, axis=1))[:, :7].ravel() / pp.shape[1]
    return X


def cluster_descriptors(X: np.ndarray, max_classes: int = 8, random_state: int = 0,
                        variance: float = 0.9) -> tuple[np.ndarray, dict]:
    """Standardise, PCA, Gaussian mixtures of 1…``max_classes`` components; the lowest BIC wins.

    Parameters
    ----------
    X : ndarray (n, f)
        Descriptors.
    max_classes : int
        Largest number of classes tried.
    random_state : int
        Seed of the mixtures' initialisation.
    variance : float
        Fraction of the variance the PCA keeps (at most 10 components).

    Returns
    -------
    labels : ndarray of int64 (n,)
        Class of each row, numbered by decreasing size (0 = most common).
    info : dict
        ``n_classes``, ``bic`` (list, one per number tried), ``n_components`` (PCA).

    Examples
    --------
    >>> import numpy as np
    >>> from stemflow.chem import cluster_descriptors
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0.0, 0.1, (30, 3)), rng.normal(5.0, 0.1, (10, 3))])
    >>> labels, info = cluster_descriptors(X, max_classes=3)
    >>> np.bincount(labels).tolist(), info["n_classes"], len(info["bic"])
    ([30, 10], 2, 3)
    """
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, np.float64)
    n = len(X)
    if n == 0:
        return np.empty(0, np.int64), {"n_classes": 0, "bic": [], "n_components": 0}
    if n < 3:
        return np.zeros(n, np.int64), {"n_classes": 1, "bic": [], "n_components": 0}
    Z = StandardScaler().fit_transform(X)
    Z = Z[:, np.isfinite(Z).all(axis=0) & (Z.std(axis=0) > 0)]
    if Z.shape[1] == 0:
        return np.zeros(n, np.int64), {"n_classes": 1, "bic": [], "n_components": 0}
    pca = PCA(n_components=min(10, Z.shape[1], n - 1), random_state=random_state).fit(Z)
    keep = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), variance) + 1)
    keep = max(1, min(keep, pca.n_components_))
    Y = pca.transform(Z)[:, :keep]
    bics, models = [], []
    # The matrices are tiny (a few components): BLAS threads only contend, most of all on a Dask
    # worker that runs several tasks at once.
    with warnings.catch_warnings(), threadpool_limits(1):
        # identical descriptors make k-means initialisation complain
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(1, min(max_classes, n) + 1):
            gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-2, n_init=3,
                                 random_state=random_state).fit(Y)
            bics.append(float(gm.bic(Y)))
            models.append(gm)
    best = int(np.argmin(bics))
    lab = models[best].predict(Y)
    order = np.argsort(-np.bincount(lab, minlength=best + 1), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[lab].astype(np.int64), {"n_classes": int(len(np.unique(lab))), "bic": bics,
                                        "n_components": keep}


def classify_defects(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None,
                     image=None, *, defects: pd.DataFrame | None = None, max_classes: int = 8,
                     random_state: int = 0, image_features: bool = False) -> pd.DataFrame:
    """Unsupervised classes of the defect complexes: the ``cluster`` column.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table; complexes are found with :func:`~stemflow.chem.defects.find_defects`
        unless it already has ``defect_id`` and ``defects`` is given.
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``.
    image : ndarray, optional
        (y, x) or (frame, y, x); used only with ``image_features``.
    defects : DataFrame, optional
        The complexes' :func:`~stemflow.chem.defects.defect_table`, if already computed.
    max_classes : int
        Largest number of classes tried (BIC chooses among 1…max_classes).
    random_state : int
        Seed of the mixtures.
    image_features : bool
        Add the polar image features of :func:`defect_descriptors` (off by default: on the
        simulated benchmark they lower the agreement with the true kinds, see docs/chem.md).

    Returns
    -------
    DataFrame
        The atoms table (with the defect columns) plus ``cluster`` (int64: the class of the row's
        complex, 0 for the most common class; -1 for rows in no complex). ``df.attrs["classes"]``
        holds ``n_classes``, the BIC curve and the PCA size.

    Examples
    --------
    >>> from stemflow.chem import classify_defects
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 128, pixel_size=0.012, seed=2, defects={"Si1C3": 2, "V1": 2})
    >>> atoms = sim.atoms[["frame", "y", "x", "label"]]
    >>> c = classify_defects(atoms, pixel_size=0.012, lattice="graphene", max_classes=3)
    >>> members = c[c["cluster"] >= 0]
    >>> members["defect"].tolist()
    ['V1', 'V1', 'Si1C3']
    >>> bool(members["cluster"].iloc[0] == members["cluster"].iloc[1])   # the two V1 share a class
    True
    >>> sorted(c.attrs["classes"])
    ['bic', 'n_classes', 'n_components']
    """
    from .defects import analyse_defects

    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    if defects is None or "defect_id" not in atoms.columns:
        atoms, defects = analyse_defects(atoms, pixel_size, lattice)
    X = defect_descriptors(atoms, defects, pixel_size, lattice, image=image if image_features else None)
    lab, info = cluster_descriptors(X, max_classes=max_classes, random_state=random_state)
    out = atoms.copy()
    cluster = np.full(len(out), -1, np.int64)
    did = out["defect_id"].to_numpy(np.int64)
    if len(defects):       # a complex is (frame, defect_id): ids are numbered within each frame
        ids = defects["defect_id"].to_numpy(np.int64).tolist()
        m = did >= 0
        if "frame" in out.columns:
            lut = dict(zip(zip(defects["frame"].to_numpy(np.int64).tolist(), ids), lab))
            keys = zip(out["frame"].to_numpy(np.int64)[m].tolist(), did[m].tolist())
        else:
            lut, keys = dict(zip(ids, lab)), did[m].tolist()
        cluster[m] = [lut.get(k, -1) for k in keys]
    out["cluster"] = cluster
    out = with_attrs(out, atoms, pixel_size, lattice)
    out.attrs["classes"] = info
    return out


def defect_patches(defects: pd.DataFrame, image, pixel_size: float, lattice: str, size: float = 6.0,
                   n: int = 41) -> np.ndarray:
    """Image patches around each complex, turned to a common orientation.

    Parameters
    ----------
    defects : DataFrame
        :func:`~stemflow.chem.defects.defect_table` (``y``, ``x`` px, ``angle`` deg, optional
        ``frame``).
    image : ndarray
        (y, x) or (frame, y, x).
    pixel_size : float
        nm/px.
    lattice : str
        Lattice name (sets the bond length).
    size : float
        Patch side, bonds.
    n : int
        Patch side, samples.

    Returns
    -------
    ndarray (n_defects, n, n)
        Patches rotated by ``-angle`` (long axis of each complex along x), each divided by its
        own mean so that doses mix.

    Examples
    --------
    >>> from stemflow.chem import defect_patches, defect_table
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 128, pixel_size=0.012, seed=2, defects={"Si1C3": 2, "V1": 2})
    >>> atoms = sim.atoms[["frame", "y", "x", "label"]]
    >>> dt = defect_table(atoms, pixel_size=0.012, lattice="graphene")
    >>> p = defect_patches(dt, sim.image, pixel_size=0.012, lattice="graphene", size=6.0, n=41)
    >>> p.shape, round(float(p[0].mean()), 6)         # 6 bonds (0.85 nm) square, mean 1
    ((3, 41, 41), 1.0)
    """
    bond_px = LATTICES[lattice]["bond"] / pixel_size
    u = (np.linspace(-0.5, 0.5, n) * size * bond_px)
    gy, gx = np.meshgrid(u, u, indexing="ij")
    out = np.zeros((len(defects), n, n))
    fr = defects["frame"].to_numpy() if "frame" in defects.columns else [None] * len(defects)
    for k, (y, x, a, f) in enumerate(zip(defects["y"], defects["x"], defects["angle"], fr)):
        t = np.deg2rad(a)
        yy = y + gx * np.sin(t) + gy * np.cos(t)
        xx = x + gx * np.cos(t) - gy * np.sin(t)
        p = ndimage.map_coordinates(np.asarray(_frame_image(image, f), np.float64), [yy, xx], order=1,
                                    mode="nearest")
        m = p.mean()
        out[k] = p / m if m > 0 else p
    return out


def class_mean_patches(patches: np.ndarray, labels) -> dict[int, np.ndarray]:
    """Mean patch of each class: ``{class: (n, n) array}`` (classes < 0 left out).

    Parameters
    ----------
    patches : ndarray (n_defects, n, n)
        Patches, e.g. from :func:`defect_patches` (each divided by its own mean).
    labels : array_like of int (n_defects,)
        Class of each patch (:func:`cluster_descriptors`, or the ``cluster`` of
        :func:`classify_defects` per complex); negative classes are left out.

    Returns
    -------
    dict of int to ndarray (n, n)
        The mean patch of each class present, keyed by class (same units as ``patches``).

    Examples
    --------
    >>> import numpy as np
    >>> from stemflow.chem import class_mean_patches
    >>> patches = np.stack([np.full((5, 5), v) for v in (1.0, 3.0, 2.0, 9.0)])
    >>> means = class_mean_patches(patches, [0, 0, 1, -1])
    >>> sorted(means), means[0].shape, float(means[0][0, 0]), float(means[1][0, 0])
    ([0, 1], (5, 5), 2.0, 2.0)
    """
    labels = np.asarray(labels)
    return {int(c): patches[labels == c].mean(axis=0) for c in np.unique(labels) if c >= 0}

"""``identify``: the whole chemical identification of an atoms table in one call.

Sites (:mod:`~stemflow.chem.sites`) → occupancy and the dopants' check
(:mod:`~stemflow.chem.occupancy`, :mod:`~stemflow.chem.dopants`) → elements (:mod:`~stemflow.chem.elements`) → bonds and
coordination (:mod:`~stemflow.chem.bonds`) → rings and defect complexes
(:mod:`~stemflow.chem.rings`, :mod:`~stemflow.chem.defects`) → unsupervised classes
(:mod:`~stemflow.chem.classes`).

Units: positions in px, the pixel size in nm/px.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..errors import StemflowWarning
from ..spacing import PIXEL_SIZE_TOLERANCE
from ..tables import IDENTIFIED, LATTICES
from ._common import frame_groups, label_categories, resolve, with_attrs
from .bonds import coordination
from .classes import classify_defects
from .defects import analyse_defects
from .dopants import CHECKS, check_dopants
from .elements import assign_elements, measure_intensity
from .occupancy import column_occupancy
from .sites import assign_sites
from .vacuum import VACUUM_SHARE, vacuum_rows

__all__ = ["identify", "lattice_scale", "EDGE_NM", "SCALE_TOLERANCE"]

#: Atoms closer than this to the frame edge (nm) get coordination -1 when the image is known.
EDGE_NM = 0.15

#: When the found lattice's own bond (:func:`lattice_scale`) disagrees with the given pixel size by
#: more than this (relative), the chemistry measures bonds and sites with the lattice's ruler
#: instead, and says so. Real 60 kV graphene dev frames read 0.97–1.07 (median 1.02); with their
#: pixel sizes given 10 % too small or too large, defect types fall from 0.955 to 0.848 / 0.788
#: with the given ruler, 0.879 / 0.894 with the lattice's; 15 %: 0.591 / 0.545 against 0.848 /
#: 0.818 (``benchmarks/pixel_size_error.py``). The network still sees the wrong scale: pass the
#: pixel size the warning gives.
SCALE_TOLERANCE = 0.05
#: Fewest ``lattice`` rows for :func:`lattice_scale` to measure anything.
_MIN_SCALE_ROWS = 20


def lattice_scale(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None) -> float:
    """How long the found lattice's bonds are, over the lattice's own bond, at ``pixel_size``.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table: ``y``, ``x`` (px), ``label``; optional ``frame``.
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``.

    Returns
    -------
    float
        The median, over the ``lattice`` rows of every frame, of the distance to their three
        nearest ``lattice`` neighbours (nm), divided by the lattice's bond
        (:data:`stemflow.tables.LATTICES`): about 1 when the pixel size is right, 1.1 when it is
        given 10 % too large. NaN without a bond (amorphous) or with fewer than 20 rows.

    Examples
    --------
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 128, pixel_size=0.012, seed=0)
    >>> t = sim.atoms[["y", "x", "label"]]
    >>> round(lattice_scale(t, 0.012, "graphene"), 2), round(lattice_scale(t, 0.0132, "graphene"), 2)
    (1.0, 1.1)
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    bond = LATTICES[lattice]["bond"]
    if bond is None:
        return float("nan")
    lab = atoms["label"].astype(str).to_numpy()
    pos = atoms[["y", "x"]].to_numpy(np.float64)
    dist = []
    for _, rows in frame_groups(atoms):
        p = pos[rows][lab[rows] == "lattice"]
        if len(p) >= 4:
            dist.append(cKDTree(p).query(p, k=4)[0][:, 1:].ravel())
    if not dist or sum(len(d) for d in dist) < 3 * _MIN_SCALE_ROWS:
        return float("nan")
    return float(np.median(np.concatenate(dist))) * pixel_size / bond


#: Relative agreement between the found columns' spacing and another lattice's bond for
#: :func:`identify` to name that lattice when the one asked for is far off (the real MoS2 frame of
#: ``benchmarks/real_data.py``, asked for as graphene: 0.95 of MoS2's bond at the file's pixel size).
_OTHER_LATTICE_TOLERANCE = 0.1


def _mismatch_message(scale: float, pixel_size: float, lattice: str) -> str:
    """What :func:`identify` says when the found columns are more than
    :data:`~stemflow.spacing.PIXEL_SIZE_TOLERANCE` off ``lattice``'s bond: the spacing found, the
    pixel size that would make it right, and the other lattices whose bond it fits."""
    found = scale * LATTICES[lattice]["bond"]                       # nm, at the given pixel size
    off = {name: abs(found / spec["bond"] - 1) for name, spec in LATTICES.items()
           if name not in (lattice, "amorphous") and spec["bond"] is not None}
    fits = sorted(name for name in off if off[name] <= _OTHER_LATTICE_TOLERANCE)    # by name: one message
    bonds = " and ".join(f"{n} ({LATTICES[n]['bond']:.3f} nm)" for n in fits)
    other = (f"; the spacing found fits {bonds} within {_OTHER_LATTICE_TOLERANCE:.0%}: if that is what this is, "
             "pass " + " or ".join(f"lattice='{n}'" for n in fits)) if fits else ""
    return (f"the {lattice} columns found are {scale:.2f}× its bond apart ({found:.3f} nm against "
            f"{LATTICES[lattice]['bond']:.3f} nm at pixel_size={pixel_size:.5g} nm/px), more than "
            f"{PIXEL_SIZE_TOLERANCE:.0%} off: sites, bonds, elements and defects are not to be trusted. Either the "
            f"pixel size is about {pixel_size / scale:.4g} nm/px, or this is not {lattice}{other}")


_DTYPES = {c.name: c.dtype for c in IDENTIFIED.columns}


def identify(atoms: pd.DataFrame, pixel_size: float | None = None, lattice: str | None = None,
             image=None, *, element_map: dict | None = None, cutoffs: dict | None = None,
             gamma: float = 1.7, classes: bool = True, max_classes: int = 8,
             random_state: int = 0) -> pd.DataFrame:
    """What every atom is, how it is bonded, which site it holds and which defect it belongs to.

    Parameters
    ----------
    atoms : DataFrame
        Atoms table as :func:`stemflow.find_atoms` returns it: ``y``, ``x`` (px), ``label``
        (``lattice``/``dopant``/``vacancy``), optional ``frame``, ``intensity`` and the rest.
    pixel_size : float, optional
        nm/px. Default ``atoms.attrs["pixel_size"]`` (set by ``find_atoms``).
    lattice : {"graphene", "ws2", "mos2", "amorphous"}, optional
        Default ``atoms.attrs["lattice"]``.
    image : ndarray, optional
        The image (y, x) or stack (frame, y, x) the atoms were found in. Measures ``intensity``
        when the table has none (tells metal from chalcogen sites in MX2) and the ``occupancy``
        of every column and empty site (tells ``V_S`` from ``V_S2``, vetoes network vacancies
        on intact columns, confirms empty sites the network missed); adds image features to the
        unsupervised classes. Without it the chalcogen count is a cruder Z-contrast estimate
        and nothing is vetoed.
    element_map : dict, optional
        Changes to :data:`~stemflow.chem.elements.ELEMENT_MAPS` for the lattice.
    cutoffs : dict, optional
        Bond cutoffs (nm) replacing :data:`~stemflow.chem.bonds.BOND_CUTOFFS`, e.g.
        ``{"Si-Si": 0.25}``.
    gamma : float
        Z-contrast exponent (intensity ∝ Z**gamma) for naming dopants by intensity.
    classes : bool
        Fit the unsupervised classes (``cluster``); False leaves ``cluster`` at -1.
    max_classes : int
        Largest number of classes the BIC chooses from.
    random_state : int
        Seed of the Gaussian mixtures.

    Returns
    -------
    DataFrame
        A copy of ``atoms`` with ``element`` (category, ``""`` for an empty site), ``count``
        (int8 atoms in the column), ``occupancy`` (float64: the column's background-free
        intensity over that of the intact columns of its sublattice nearby, NaN without
        ``image``), ``coordination`` (int8 bonded atoms), ``site`` (int64 id),
        ``sublattice`` (int8, 0 = A/metal, 1 = B/chalcogen, -1 unfitted), ``site_y``, ``site_x``
        (float64 px of the ideal site), ``defect`` (category: ``Si1C3``, ``V2``, ``SW``, ``Mo_W``
        …, ``""`` for none), ``defect_id`` (int64, -1 for none), ``cluster`` (int64
        unsupervised class of the row's complex, -1 for none) and ``dopant_check`` (category:
        for the network's dopants ``"dopant"`` when confirmed, else why not — ``edge``, ``dim``,
        ``wide``, ``off_lattice``, ``no_shell`` —, ``""`` for other rows; checked in graphene
        with ``image`` only, see :func:`~stemflow.chem.dopants.check_dopants`). A dopant that
        fails is relabelled ``lattice`` (a host column) or ``unknown`` (no atom of the lattice:
        no element, no bonds, in no defect); in MX2, a ``vacancy`` on a column the image shows
        intact (its occupancy, with ``image``) is relabelled ``lattice``, and a chalcogen
        ``lattice`` row the network doubted (``prob`` under
        :data:`stemflow.chem.defects.DOUBTFUL`) on a column the image shows empty or half empty
        is relabelled ``vacancy`` (``prob`` one minus the network's). ``df.attrs`` keeps those of
        ``atoms`` and records ``pixel_size`` (as given), ``chem_pixel_size`` (the one bonds and
        sites were measured with, see Warns), ``lattice`` and ``classes`` (number of classes and
        the BIC curve).

    Warns
    -----
    StemflowWarning
        The found lattice's bonds (:func:`lattice_scale`) are more than :data:`SCALE_TOLERANCE`
        and at most :data:`stemflow.spacing.PIXEL_SIZE_TOLERANCE` longer or shorter than the
        lattice's at the given pixel size: the chemistry then measures with the lattice's own
        ruler (``pixel_size / scale``), and the message gives that pixel size.
    StemflowWarning
        The found lattice's bonds are more than :data:`~stemflow.spacing.PIXEL_SIZE_TOLERANCE`
        off: the pixel size is far off or the lattice is another (the message names the lattices
        whose bond the spacing found fits, e.g. MoS2 asked for as graphene); the chemistry is
        measured at the given pixel size and is not to be trusted.
    StemflowWarning
        Some ``lattice`` or ``vacancy`` rows sit where the image shows no lattice
        (:func:`~stemflow.chem.vacuum_rows`: a hole in the sheet): they are labelled ``unknown``
        and counted in ``attrs["vacuum_rows"]``.

    Raises
    ------
    InputError
        No pixel size, an unknown lattice (the message lists the known ones), missing ``y``,
        ``x`` or ``label`` columns, NaN positions.

    Notes
    -----
    With ``image``, ``coordination`` is -1 for atoms within :data:`EDGE_NM` (0.15 nm) of the
    frame edge, where neighbours may lie outside the frame. An empty table gives an empty table with all the columns above. Each step is also a
    function of its own (:func:`~stemflow.chem.assign_sites`,
    :func:`~stemflow.chem.assign_elements`, :func:`~stemflow.chem.coordination`,
    :func:`~stemflow.chem.find_defects`, :func:`~stemflow.chem.classify_defects`), and
    :func:`~stemflow.chem.defect_table` gives one row per complex.

    Examples
    --------
    >>> import stemflow
    >>> from stemflow.chem import identify
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 256, pixel_size=0.012, seed=0, defects={"Si1C4": 1})
    >>> atoms = identify(stemflow.find_atoms(sim.image, pixel_size=0.012, lattice="graphene"))  # doctest: +SKIP
    >>> atoms.query("label == 'dopant'")[["element", "coordination", "defect"]]           # doctest: +SKIP
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    out = atoms.copy()
    if len(out) == 0:
        for c in IDENTIFIED.names:
            out[c] = pd.Series(dtype=_DTYPES[c] if _DTYPES[c] != "category" else "str")
            if _DTYPES[c] == "category":
                out[c] = out[c].astype(pd.CategoricalDtype([""]))
        out = with_attrs(out, atoms, pixel_size, lattice)
        out.attrs.update(chem_pixel_size=pixel_size, vacuum_rows=0)
        return out
    given = pixel_size
    scale = lattice_scale(atoms, pixel_size, lattice)
    if np.isfinite(scale) and SCALE_TOLERANCE < abs(scale - 1) <= PIXEL_SIZE_TOLERANCE:
        pixel_size = given / scale        # the chemistry measures with the lattice's own ruler
        warnings.warn(f"the {lattice} columns found are {scale:.3f}× its bond apart at pixel_size={given:.5g} "
                      f"nm/px: bonds and sites are measured at {pixel_size:.5g} nm/px, the lattice's own ruler; "
                      "if that is the true sampling, pass it as pixel_size so that the finder sees the right scale "
                      "too", StemflowWarning, stacklevel=2)
    elif np.isfinite(scale) and abs(scale - 1) > PIXEL_SIZE_TOLERANCE:
        warnings.warn(_mismatch_message(scale, given, lattice), StemflowWarning, stacklevel=2)
    on_vacuum = vacuum_rows(out, image, pixel_size, lattice) if image is not None else np.zeros(len(out), bool)
    if on_vacuum.any():
        labels = out["label"].astype(str).to_numpy()
        labels[on_vacuum] = "unknown"
        out["label"] = pd.Categorical(labels, categories=label_categories(out, labels))
        warnings.warn(f"{int(on_vacuum.sum())} lattice/vacancy row(s) sit where the image shows no lattice (vacuum: "
                      f"the mean over a square four bonds wide is under {VACUUM_SHARE:.0%} of the lattice's), or "
                      "are empty sites at its edge: labelled unknown", StemflowWarning, stacklevel=2)
    has_int = "intensity" in out.columns and np.isfinite(out["intensity"].to_numpy(np.float64)).any()
    if image is not None and not has_int:
        out["intensity"] = measure_intensity(out, image, 0.25 * LATTICES[lattice]["bond"] / pixel_size)
    out = assign_sites(out, pixel_size, lattice)
    if image is not None:
        out = column_occupancy(out, image, pixel_size, lattice)
        out = check_dopants(out, image, pixel_size, lattice, cutoffs=cutoffs)
    else:
        if "occupancy" not in out.columns:
            out["occupancy"] = np.full(len(out), np.nan)
        verdict = np.where(out["label"].astype(str).to_numpy() == "dopant", "dopant", "")
        out["dopant_check"] = pd.Categorical(verdict, categories=CHECKS)
    out = assign_elements(out, pixel_size, lattice, element_map=element_map, gamma=gamma)
    out = coordination(out, pixel_size, lattice, cutoffs=cutoffs)
    out, table = analyse_defects(out, pixel_size, lattice, cutoffs, element_map, gamma, image=image)
    if classes:
        out = classify_defects(out, pixel_size, lattice, image, defects=table, max_classes=max_classes,
                               random_state=random_state)
        info = out.attrs.get("classes")
    else:
        out["cluster"] = np.full(len(out), -1, np.int64)
        info = None
    # A vacancy of the network on a column the image shows intact (vetoed by its occupancy, MX2)
    # holds atoms: its label says so, as its element and count already do.
    vetoed = ((out["label"].astype(str).to_numpy() == "vacancy") & (out["count"].to_numpy() > 0)
              & (out["defect"].astype(str).to_numpy() == ""))
    if vetoed.any():
        labels = out["label"].astype(str).to_numpy()
        labels[vetoed] = "lattice"
        out["label"] = pd.Categorical(labels, categories=out["label"].cat.categories
                                      if isinstance(out["label"].dtype, pd.CategoricalDtype) else None)
    if image is not None:
        # Neighbours beyond the frame edge are not seen: there the coordination is unknown (-1).
        h, w = np.shape(image)[-2:]
        reach = EDGE_NM / pixel_size
        cut = ~(out["y"].between(reach, h - 1 - reach) & out["x"].between(reach, w - 1 - reach))
        out.loc[cut.to_numpy(), "coordination"] = np.int8(-1)
    out = with_attrs(out, atoms, given, lattice)
    out.attrs["chem_pixel_size"] = pixel_size
    out.attrs["vacuum_rows"] = int(on_vacuum.sum())
    if info is not None:
        out.attrs["classes"] = info
    return out

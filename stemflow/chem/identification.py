"""``identify``: the whole chemical identification of an atoms table in one call.

Sites (:mod:`~stemflow.chem.sites`) → occupancy and the dopants' check
(:mod:`~stemflow.chem.occupancy`, :mod:`~stemflow.chem.dopants`) → elements (:mod:`~stemflow.chem.elements`) → bonds and
coordination (:mod:`~stemflow.chem.bonds`) → rings and defect complexes
(:mod:`~stemflow.chem.rings`, :mod:`~stemflow.chem.defects`) → unsupervised classes
(:mod:`~stemflow.chem.classes`).

Units: positions in px, the pixel size in nm/px.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..tables import IDENTIFIED, LATTICES
from ._common import resolve, with_attrs
from .bonds import coordination
from .classes import classify_defects
from .defects import analyse_defects
from .dopants import CHECKS, check_dopants
from .elements import assign_elements, measure_intensity
from .occupancy import column_occupancy
from .sites import assign_sites

__all__ = ["identify", "EDGE_NM"]

#: Atoms closer than this to the frame edge (nm) get coordination -1 when the image is known.
EDGE_NM = 0.15


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
        intact (its occupancy, with ``image``) is relabelled ``lattice``. ``df.attrs`` keeps those of
        ``atoms`` and records ``pixel_size``, ``lattice`` and ``classes`` (number of classes and
        the BIC curve).

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
        return with_attrs(out, atoms, pixel_size, lattice)
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
    out = with_attrs(out, atoms, pixel_size, lattice)
    if info is not None:
        out.attrs["classes"] = info
    return out

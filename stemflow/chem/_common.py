"""Shared pieces of :mod:`stemflow.chem`: lattice constants, input checks, per-frame iteration.

Units: lattice constants and cutoffs in nm, positions in px (``y``, ``x``) converted to nm with
the pixel size (nm/px).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError, check_positive

#: What ``chem`` knows of each lattice: lattice constant ``a`` (nm; None for the amorphous
#: support), host elements (metal, chalcogen for MX2) and the projected nearest-neighbour
#: (bond) distance between columns, nm.
LATTICE_PARAMS = {
    "graphene": dict(a=0.246, host=("C",), bond=0.246 / np.sqrt(3)),
    "ws2": dict(a=0.318, host=("W", "S"), bond=0.318 / np.sqrt(3)),
    "mos2": dict(a=0.316, host=("Mo", "S"), bond=0.316 / np.sqrt(3)),
    "amorphous": dict(a=None, host=("C",), bond=0.142),
}

#: Atomic numbers of the elements ``chem`` may name.
ATOMIC_NUMBER = {
    "H": 1, "B": 5, "C": 6, "N": 7, "O": 8, "Si": 14, "P": 15, "S": 16, "Ti": 22, "V": 23,
    "Cr": 24, "Mn": 25, "Fe": 26, "Co": 27, "Ni": 28, "Cu": 29, "Se": 34, "Nb": 41, "Mo": 42,
    "Re": 75, "Te": 52, "Ta": 73, "W": 74, "Pt": 78, "Au": 79,
}

#: Columns every function of ``chem`` needs in an atoms table.
REQUIRED = ("y", "x", "label")


def is_mx2(lattice: str) -> bool:
    """True for the 2H transition-metal dichalcogenides (two sublattices: metal, chalcogen)."""
    return lattice in ("ws2", "mos2")


def check_lattice(lattice) -> str:
    """The lattice name, or an :class:`InputError` that lists the known ones."""
    if lattice is None:
        raise InputError("the lattice is unknown: pass lattice= (one of "
                         f"{', '.join(LATTICE_PARAMS)}), or use a table from find_atoms(..., lattice=...), "
                         "which records it in df.attrs['lattice']")
    name = str(lattice).lower()
    if name not in LATTICE_PARAMS:
        raise InputError(f"unknown lattice {lattice!r}; known lattices: {', '.join(LATTICE_PARAMS)}")
    return name


def check_pixel_size(pixel_size) -> float:
    """The pixel size as a positive float (nm/px), or an :class:`InputError` saying how to give it."""
    if pixel_size is None:
        raise InputError("the pixel size is unknown: pass pixel_size= in nm/px (e.g. 0.012 for 12 pm/px), "
                         "or use a table from find_atoms, which records it in df.attrs['pixel_size']")
    return check_positive(pixel_size, "pixel_size", "nm/px (e.g. 0.012 for 12 pm/px)")


def check_atoms(atoms, required=REQUIRED) -> pd.DataFrame:
    """Check an atoms table: a DataFrame with ``required`` columns and finite ``y``, ``x``."""
    if not isinstance(atoms, pd.DataFrame):
        raise InputError(f"atoms must be a pandas DataFrame (an atoms table with y, x in px and label); "
                         f"got {type(atoms).__name__}")
    missing = [c for c in required if c not in atoms.columns]
    if missing:
        raise InputError(f"the atoms table lacks column(s) {missing}; chem needs y, x (px) and label "
                         "(lattice/dopant/vacancy), as find_atoms returns them")
    for c in ("y", "x"):
        if not pd.api.types.is_numeric_dtype(atoms[c]):
            raise InputError(f"column {c!r} must be numeric (px); got dtype {atoms[c].dtype}")
    bad = ~np.isfinite(atoms[["y", "x"]].to_numpy(np.float64)).all(axis=1)
    if bad.any():
        raise InputError(f"{int(bad.sum())} row(s) have NaN/inf y or x; drop them first "
                         "(atoms.dropna(subset=['y', 'x']))")
    if "frame" in atoms.columns and atoms["frame"].isna().any():
        raise InputError("column 'frame' has NaN; every row needs its frame number")
    return atoms


def resolve(atoms, pixel_size=None, lattice=None, required=REQUIRED):
    """Checked table, pixel size (nm/px) and lattice name, taken from ``atoms.attrs`` when not given."""
    atoms = check_atoms(atoms, required)
    if pixel_size is None:
        pixel_size = atoms.attrs.get("pixel_size")
    if lattice is None:
        lattice = atoms.attrs.get("lattice")
    return atoms, check_pixel_size(pixel_size), check_lattice(lattice)


def labels_of(atoms: pd.DataFrame) -> np.ndarray:
    """The ``label`` column as an array of plain strings."""
    return atoms["label"].astype(str).to_numpy()


def frame_groups(atoms: pd.DataFrame):
    """(frame value, integer row positions) for each frame; one group (frame None) without ``frame``."""
    if len(atoms) == 0:
        return []
    if "frame" not in atoms.columns:
        return [(None, np.arange(len(atoms)))]
    codes, uniq = pd.factorize(atoms["frame"], sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
    return [(uniq[k], order[bounds[k]:bounds[k + 1]]) for k in range(len(uniq))]


def positions_nm(atoms: pd.DataFrame, pixel_size: float) -> np.ndarray:
    """(n, 2) positions ``(y, x)`` in nm from the ``y``, ``x`` columns (px)."""
    return atoms[["y", "x"]].to_numpy(np.float64) * pixel_size


def with_attrs(out: pd.DataFrame, atoms: pd.DataFrame, pixel_size: float, lattice: str) -> pd.DataFrame:
    """``out`` carrying ``atoms.attrs`` plus the pixel size and lattice used."""
    out.attrs.update(atoms.attrs)
    out.attrs.update(pixel_size=pixel_size, lattice=lattice)
    return out

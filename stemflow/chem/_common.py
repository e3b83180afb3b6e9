"""Shared pieces of :mod:`stemflow.chem`: input checks, per-frame iteration (constants: :mod:`stemflow.tables`).

Units: lattice constants and cutoffs in nm, positions in px (``y``, ``x``) converted to nm with
the pixel size (nm/px).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError, require_pixel_size
from ..tables import LATTICES

#: Columns every function of ``chem`` needs in an atoms table.
REQUIRED = ("y", "x", "label")


def is_mx2(lattice: str) -> bool:
    """True for the 2H transition-metal dichalcogenides (two sublattices: metal, chalcogen)."""
    return lattice in ("ws2", "mos2")


def check_lattice(lattice) -> str:
    """The lattice name, or an :class:`InputError` that lists the known ones."""
    if lattice is None:
        raise InputError("the lattice is unknown: pass lattice= (one of "
                         f"{', '.join(LATTICES)}), or use a table from find_atoms(..., lattice=...), "
                         "which records it in df.attrs['lattice']")
    name = str(lattice).lower()
    if name not in LATTICES:
        raise InputError(f"unknown lattice {lattice!r}; known lattices: {', '.join(LATTICES)}")
    return name


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
    return atoms, require_pixel_size(pixel_size), check_lattice(lattice)


def labels_of(atoms: pd.DataFrame) -> np.ndarray:
    """The ``label`` column as an array of plain strings."""
    return atoms["label"].astype(str).to_numpy()


def label_categories(atoms: pd.DataFrame, labels) -> list:
    """Categories for a new ``label`` column: those of ``atoms["label"]`` (when categorical), then
    any new label of ``labels``, sorted."""
    cats = [str(c) for c in atoms["label"].cat.categories] if isinstance(atoms["label"].dtype,
                                                                           pd.CategoricalDtype) else []
    return cats + sorted(set(np.asarray(labels).astype(str).tolist()) - set(cats))


def frame_groups(atoms: pd.DataFrame):
    """(frame value, integer row positions) for each frame; one group (frame None) without ``frame``."""
    if len(atoms) == 0:
        return []
    if "frame" not in atoms.columns:
        return [(None, np.arange(len(atoms)))]
    groups = atoms.groupby("frame", sort=True, observed=True).indices     # frame → row positions, in order
    return [(frame, np.asarray(rows, np.int64)) for frame, rows in groups.items()]


def positions_nm(atoms: pd.DataFrame, pixel_size: float) -> np.ndarray:
    """(n, 2) positions ``(y, x)`` in nm from the ``y``, ``x`` columns (px)."""
    return atoms[["y", "x"]].to_numpy(np.float64) * pixel_size


def with_attrs(out: pd.DataFrame, atoms: pd.DataFrame, pixel_size: float, lattice: str) -> pd.DataFrame:
    """``out`` carrying ``atoms.attrs`` plus the pixel size and lattice used."""
    out.attrs.update(atoms.attrs)
    out.attrs.update(pixel_size=pixel_size, lattice=lattice)
    return out


#: Default cutoffs (nm) per lattice: ``{"A-B": cutoff}`` for element pairs (any order), and
#: ``"default"`` for pairs not listed.
BOND_CUTOFFS = {
    "graphene": {"C-C": 0.175, "C-Si": 0.21, "Si-Si": 0.27, "default": 0.175},
    "amorphous": {"C-C": 0.175, "C-Pt": 0.23, "Pt-Pt": 0.28, "default": 0.175},
    "ws2": {"S-W": 0.23, "Mo-S": 0.23, "Cr-S": 0.23, "Se-W": 0.23, "Mo-Se": 0.23,
            "default": 0.23},
    "mos2": {"Mo-S": 0.23, "S-W": 0.23, "Cr-S": 0.23, "Mo-Se": 0.23, "Se-W": 0.23, "default": 0.23},
}

def pair_key(a: str, b: str) -> str:
    """The cutoff table's key of an element pair, in either order: ``pair_key("Si", "C") == "C-Si"``."""
    return "-".join(sorted((a, b)))


def bond_cutoffs(lattice: str, cutoffs: dict | None = None) -> dict:
    """The cutoff table (nm) for ``lattice`` with ``cutoffs`` (``{"Si-C": 0.2}``, any order) applied."""
    table = dict(BOND_CUTOFFS[lattice])
    for k, v in (cutoffs or {}).items():
        parts = str(k).split("-")
        if k != "default" and len(parts) != 2:
            raise InputError(f"bond cutoff key {k!r} must name two elements like 'Si-C', or be 'default'")
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise InputError(f"bond cutoff {k}={v!r} must be a number of nm") from None
        if not (np.isfinite(v) and v >= 0):
            raise InputError(f"bond cutoff {k}={v} must be a finite number of nm ≥ 0")
        table[k if k == "default" else pair_key(*parts)] = v
    return table

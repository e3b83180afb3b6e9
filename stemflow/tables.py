"""The tables that pass between stemflow's stages, as code; the network's classes; the lattices.

This is the ground floor: every stage imports its column lists, dtypes and constants from here,
and no other module defines a column list. Only numpy and pandas (pyarrow for the Parquet
metadata, imported when used).

Units: positions ``y``, ``x`` in px (sub-pixel, row and column of the image), ``y_nm``, ``x_nm``
in nm, lattice constants and bond lengths in nm, frames counted from 0.

Examples
--------
>>> from stemflow.tables import ATOMS, EVENTS
>>> ATOMS.names[:4]
['frame', 'y', 'x', 'y_nm']
>>> ATOMS.unit("y_nm")
'nm'
>>> empty = EVENTS.empty()
>>> list(empty.columns) == EVENTS.names and len(empty) == 0
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = ["CLASSES", "LABELS", "EVENT_KINDS", "ATOMIC_NUMBER", "LATTICES", "Column", "Table", "ATOMS", "LOCATED",
           "TRUTH", "TRAJECTORIES", "EVENTS", "DRIFT", "DEFECTS", "BONDS", "RINGS", "SITES", "EMPTY_SITES",
           "IDENTIFIED", "PRIOR", "SCORES", "DISPERSION", "parquet_metadata", "attrs_from_metadata", "recorded_attrs",
           "METADATA_KEY"]

#: The network's output classes, in channel order (the class masks' uint8 codes).
CLASSES = ("background", "lattice", "dopant", "vacancy")
#: Labels of the atoms table before chemistry names elements: the foreground classes.
LABELS = CLASSES[1:]
#: Kinds of events, the categories of the events table's ``kind``.
EVENT_KINDS = ("hop", "coordination_change", "transformation", "appear", "vanish")

#: Atomic numbers of the elements stemflow simulates or names.
ATOMIC_NUMBER = {symbol: z for z, symbol in enumerate((
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
    "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U").split(), start=1)}

_SQRT3 = float(np.sqrt(3.0))
#: The lattices stemflow knows: lattice constant ``a`` (nm; None for the amorphous support),
#: host elements (metal, chalcogen for MX2), the dopant the simulator places, and the projected
#: nearest-neighbour (bond) distance between columns ``bond`` (nm; a/√3 for the hexagonal ones).
LATTICES = {
    "graphene": dict(a=0.246, host=("C",), dopant="Si", bond=0.246 / _SQRT3),
    "ws2": dict(a=0.318, host=("W", "S"), dopant="Mo", bond=0.318 / _SQRT3),
    "mos2": dict(a=0.316, host=("Mo", "S"), dopant="W", bond=0.316 / _SQRT3),
    "amorphous": dict(a=None, host=("C",), dopant="Pt", bond=0.142),
}


@dataclass(frozen=True)
class Column:
    """One column of a table: name, dtype (a pandas dtype string, or ``"category"``), unit, meaning."""

    name: str
    dtype: str
    unit: str = ""
    doc: str = ""
    required: bool = False


@dataclass(frozen=True)
class Table:
    """A table's contract: its columns in order, their dtypes and units, which are required.

    Attributes
    ----------
    name : str
        The table's name (``atoms``, ``events`` ...), recorded in Parquet metadata.
    columns : tuple of Column
        The documented columns, in order. Tables may carry more columns; those are kept after.
    categories : dict
        Categories of the ``category`` columns (others found in the data are appended, never lost).
    """

    name: str
    columns: tuple[Column, ...]
    categories: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def names(self) -> list[str]:
        """Column names, in order."""
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        """Names of the columns every table of this kind must have."""
        return [c.name for c in self.columns if c.required]

    def unit(self, name: str) -> str:
        """The unit of column ``name`` (``""`` when it has none)."""
        return {c.name: c.unit for c in self.columns}[name]

    @property
    def units(self) -> dict[str, str]:
        """``{column: unit}`` for the columns that have one."""
        return {c.name: c.unit for c in self.columns if c.unit}

    def _dtype(self, col: Column, values=None):
        if col.dtype != "category":
            return col.dtype
        cats = list(dict(self.categories).get(col.name, ()))
        if values is not None:
            cats += sorted(set(values.astype(str)) - set(cats))
        return pd.CategoricalDtype(cats)

    def empty(self, names=None) -> pd.DataFrame:
        """A table with no rows and the columns ``names`` (default: all), typed."""
        cols = [c for c in self.columns if names is None or c.name in names]
        order = self.names if names is None else list(names)
        by = {c.name: c for c in cols}
        return pd.DataFrame({n: pd.Series([], dtype=self._dtype(by[n]) if n in by else "float64")
                             for n in order})

    def check(self, df, what: str | None = None, fix: str = "") -> pd.DataFrame:
        """``df`` when it is a DataFrame holding the required columns, else an :class:`InputError`."""
        what = what or f"the {self.name} table"
        if not isinstance(df, pd.DataFrame):
            raise InputError(f"{what} must be a pandas DataFrame; got {type(df).__name__}")
        missing = [c for c in self.required if c not in df.columns]
        if missing:
            raise InputError(f"{what} lacks column(s) {missing}; "
                             + (fix or f"it needs {self.required} ({', '.join(self._described(missing))})"))
        return df

    def _described(self, names) -> list[str]:
        by = {c.name: c for c in self.columns}
        return [f"{n} in {by[n].unit}" if by[n].unit else n for n in names]

    def conform(self, df: pd.DataFrame, names=None) -> pd.DataFrame:
        """``df`` with the columns ``names`` (default: the table's documented ones that it holds)
        first, in order and cast to their dtypes, then its other columns; index reset.

        Categories found beyond the documented ones are kept (appended), never turned into NaN.
        """
        by = {c.name: c for c in self.columns}
        names = [n for n in (self.names if names is None else names) if n in df.columns]
        out = df[names + [c for c in df.columns if c not in names]].copy()
        for n in names:
            if n in by:
                col = by[n]
                values = out[n] if col.dtype != "category" else out[n].astype(str)
                out[n] = values.astype(self._dtype(col, values if col.dtype == "category" else None))
        return out.reset_index(drop=True)


def _c(name, dtype, unit="", doc="", required=False) -> Column:
    return Column(name, dtype, unit, doc, required)


_POS = (_c("y", "float64", "px", "row of the centre (sub-pixel)", True),
        _c("x", "float64", "px", "column of the centre (sub-pixel)", True))
_POS_NM = (_c("y_nm", "float64", "nm", "y times the pixel size"), _c("x_nm", "float64", "nm", "x times the pixel size"))

#: One row per atomic column or defect site found: what ``find_atoms`` and ``stemflow run`` return.
ATOMS = Table("atoms", (
    _c("frame", "int64", "frames", "frame index (stacks and runs)"),
    *_POS, *_POS_NM,
    _c("label", "category", "", "lattice / dopant / vacancy, or an element once identified", True),
    _c("prob", "float32", "", "mean class probability of the blob, 0–1"),
    _c("intensity", "float32", "image units", "image value at the centre"),
), categories=(("label", LABELS),))

#: What :func:`stemflow.locating` returns: atoms in px with the blob's area.
LOCATED = Table("located", (
    *_POS,
    _c("label", "category", "", "class of the blob", True),
    _c("prob", "float32", "", "mean class probability of the blob"),
    _c("intensity", "float32", "image units", "image value at the centre (NaN without an image)"),
    _c("area", "int64", "px²", "pixels in the blob"),
), categories=(("label", LABELS),))

#: Ground truth of the simulator, one row per column or vacancy site in view per frame.
TRUTH = Table("truth", (
    _c("frame", "int64", "frames"), *_POS, *_POS_NM,
    _c("element", "category", "", "element symbol of the column"),
    _c("count", "int8", "atoms", "atoms stacked in the column"),
    _c("label", "category", "", "lattice / dopant / vacancy", True),
    _c("site", "int64", "", "lattice site index"),
    _c("defect", "category", "", "defect complex the site belongs to ('' for none)"),
    _c("defect_id", "int64", "", "defect complex id within its frame (-1 for none)"),
    _c("particle", "int64", "", "id of the defect across frames (-1 for lattice)"),
), categories=(("label", LABELS),))

#: Columns :func:`stemflow.tracking.track` adds to the atoms rows it keeps.
TRAJECTORIES = Table("trajectories", (
    _c("particle", "int64", "", "trajectory id (trackpy's convention)", True),
    _c("y_corr", "float64", "px", "y after drift correction"),
    _c("x_corr", "float64", "px", "x after drift correction"),
    _c("site", "int64", "", "lattice site the defect sits on (-1: none)"),
    _c("state", "object", "", "defect / label-coordination state"),
    _c("coordination", "int8", "neighbours", "host neighbours within the bond cutoff (-1: unknown)"),
    _c("on_site", "bool", "", "whether the observation sits on a lattice site"),
))

#: What happened to a defect between two frames.
EVENTS = Table("events", (
    _c("particle", "int64", "", "trajectory id", True),
    _c("frame", "int64", "frames", "first frame showing the new state", True),
    _c("kind", "category", "", "hop / coordination_change / transformation / appear / vanish", True),
    _c("y0", "float64", "px", "position before"), _c("x0", "float64", "px", "position before"),
    _c("y1", "float64", "px", "position after"), _c("x1", "float64", "px", "position after"),
    _c("distance_nm", "float64", "nm", "distance moved"),
    _c("state0", "category", "", "state before"), _c("state1", "category", "", "state after"),
    _c("site0", "int64", "", "lattice site before (-1: none)"),
    _c("site1", "int64", "", "lattice site after (-1: none)"),
), categories=(("kind", EVENT_KINDS),))

#: Specimen drift per frame relative to the first (subtract it from positions).
DRIFT = Table("drift", (
    _c("frame", "int64", "frames", "", True),
    _c("dy", "float64", "px", "drift along y", True), _c("dx", "float64", "px", "drift along x", True),
    _c("matched", "int64", "atoms", "atoms paired in the fine stage"),
))

#: One row per defect complex found by :func:`stemflow.chem.defect_table`.
DEFECTS = Table("defects", (
    _c("defect_id", "int64", "", "", True), _c("defect", "object", "", "name, e.g. Si1C3, V_S2", True),
    *_POS, *_POS_NM,
    _c("angle", "float64", "degrees", "orientation"), _c("n_dopant", "int64", "atoms"),
    _c("n_vacancy", "int64", "sites"), _c("n_empty", "int64", "sites"), _c("n_shell", "int64", "atoms"),
    _c("at_edge", "bool", "", "complex touches the field of view's edge"),
    _c("rows", "object", "", "rows of the atoms table in the complex"),
))

#: Bonds between atoms (``find_bonds``).
BONDS = Table("bonds", (
    _c("i", "int64", "", "row of one atom", True), _c("j", "int64", "", "row of the other", True),
    _c("element_i", "object"), _c("element_j", "object"), _c("length_nm", "float64", "nm"),
))

#: Rings of the bond graph (``find_rings``).
RINGS = Table("rings", (
    _c("ring", "int64"), _c("size", "int64", "atoms"), *_POS, _c("atoms", "object", "", "rows of the ring's atoms"),
))

#: Columns :func:`stemflow.chem.assign_sites` adds to an atoms table.
SITES = Table("sites", (
    _c("site", "int64"), _c("sublattice", "int8", "", "0 metal / A, 1 chalcogen / B"),
    _c("site_y", "float64", "px"), _c("site_x", "float64", "px"),
))

#: Lattice sites with no atom found on them (``empty_sites``).
EMPTY_SITES = Table("empty_sites", (
    *_POS, *_POS_NM, _c("site", "int64"), _c("sublattice", "int8"), _c("n_neighbours", "int64", "atoms"),
    _c("detected", "bool"),
))

#: Columns ``identify`` adds to an atoms table.
IDENTIFIED = Table("identified", (
    _c("element", "category", "", "element symbol"), _c("count", "int8", "atoms", "atoms in the column"),
    _c("occupancy", "float64", "", "fraction of the column's expected intensity"),
    _c("coordination", "int8", "neighbours", "host neighbours (-1: at the edge, unknown)"),
    _c("site", "int64", "", "lattice site (-1: off-lattice)"), _c("sublattice", "int8", "", "0 metal / A, 1 chalcogen / B"),
    _c("site_y", "float64", "px"), _c("site_x", "float64", "px"),
    _c("defect", "category", "", "defect complex, e.g. Si1C3 ('' for none)"), _c("defect_id", "int64"),
    _c("cluster", "int64", "", "unsupervised class of the neighbourhood"),
    _c("dopant_check", "category", "", "verdict of the dopant checks"),
))

#: Column ``lattice_prior`` adds.
PRIOR = Table("prior", (_c("prior_weight", "float64", "", "0–1: how well the row fits the lattice"),))

#: How single atoms are spread, one row per frame (:func:`stemflow.chem.dispersion`).
DISPERSION = Table("dispersion", (
    _c("frame", "int64", "frames"), _c("n_atoms", "int64", "atoms"), _c("area_nm2", "float64", "nm²"),
    _c("density_per_nm2", "float64", "nm⁻²"),
    _c("nn_median_nm", "float64", "nm", "median distance to the nearest other atom of the frame"),
    _c("nn_mean_nm", "float64", "nm", "mean distance to the nearest other atom of the frame"),
    _c("clark_evans", "float64", "", "Clark–Evans R (Donnelly's edge correction): 1 random, < 1 clustered"),
    _c("clark_evans_z", "float64", "", "standard score of R (NaN under CLARK_EVANS_MIN_ATOMS)"),
    _c("isolated_share", "float64", "", "atoms with no other within the pair distance"),
    _c("singles", "int64", "groups"), _c("pairs", "int64", "groups"), _c("triples", "int64", "groups"),
    _c("larger", "int64", "groups", "groups of four or more"),
))

#: Per-class detection scores (:func:`stemflow.score`).
SCORES = Table("scores", (
    _c("tp", "int64"), _c("fp", "int64"), _c("fn", "int64"), _c("precision", "float64"),
    _c("recall", "float64"), _c("f1", "float64"), _c("rmse_px", "float64", "px"),
))

#: Key of stemflow's record in a Parquet file's schema metadata.
METADATA_KEY = b"stemflow"


def parquet_metadata(table: Table, attrs: dict | None = None) -> dict[bytes, bytes]:
    """Schema metadata recording a table's kind, units and calibration in a Parquet file.

    Parameters
    ----------
    table : Table
        The table's contract (its name and units are recorded).
    attrs : dict, optional
        The DataFrame's ``attrs``; JSON-serialisable values (scalars, and dicts and lists of them)
        are kept (``pixel_size`` in nm/px, ``lattice``, ``model``, ``track_options`` ...), others
        dropped.

    Returns
    -------
    dict
        ``{METADATA_KEY: JSON bytes}``, to merge into a pyarrow schema's metadata.

    Examples
    --------
    >>> import json
    >>> import numpy as np
    >>> from stemflow.tables import DRIFT, METADATA_KEY, parquet_metadata
    >>> meta = parquet_metadata(DRIFT, {"pixel_size": 0.01, "mean": np.zeros(3)})   # arrays are dropped
    >>> rec = json.loads(meta[METADATA_KEY])
    >>> rec["table"], rec["units"]["dy"], rec["attrs"]
    ('drift', 'px', {'pixel_size': 0.01})
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("stemflow")
    except PackageNotFoundError:
        __version__ = "unknown"
    kept = {}
    for k, v in (attrs or {}).items():
        if isinstance(v, (np.generic,)):
            v = v.item()
        if isinstance(v, (str, int, float, bool, dict, list)) or v is None:
            try:
                json.dumps(v)
            except (TypeError, ValueError):
                continue
            kept[str(k)] = v
    rec = {"table": table.name, "units": table.units, "stemflow": __version__, "attrs": kept}
    return {METADATA_KEY: json.dumps(rec).encode()}


def attrs_from_metadata(metadata: dict | None) -> dict:
    """The ``attrs`` a Parquet file's stemflow record holds (``{}`` when it has none).

    Parameters
    ----------
    metadata : dict or None
        A Parquet schema's metadata (``pyarrow.parquet.read_schema(path).metadata``: bytes keys
        and values), as :func:`parquet_metadata` wrote it; None for a file without any.

    Returns
    -------
    dict
        The recorded ``attrs`` (``pixel_size`` in nm/px, ``lattice``, ...); ``{}`` when there is
        no stemflow record or it is not valid JSON.

    Examples
    --------
    >>> from stemflow.tables import DRIFT, attrs_from_metadata, parquet_metadata
    >>> attrs_from_metadata(parquet_metadata(DRIFT, {"pixel_size": 0.01, "lattice": "graphene"}))
    {'pixel_size': 0.01, 'lattice': 'graphene'}
    >>> attrs_from_metadata(None), attrs_from_metadata({b"pandas": b"{}"})
    ({}, {})
    """
    raw = (metadata or {}).get(METADATA_KEY)
    if not raw:
        return {}
    try:
        return dict(json.loads(raw).get("attrs", {}))
    except (ValueError, AttributeError):
        return {}


def recorded_attrs(path) -> dict:
    """The ``attrs`` a Parquet file — or the first part of a folder of parts — records
    (:func:`attrs_from_metadata` of its schema; ``{}`` when there is no file or no record).

    Parameters
    ----------
    path : str or Path
        A ``.parquet`` file, or a folder of ``*.parquet`` parts (a run's ``atoms.parquet``).

    Returns
    -------
    dict
        ``pixel_size`` (nm/px), ``lattice``, ``model``, ... as written.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import pyarrow as pa, pyarrow.parquet as pq
    >>> path = Path(tempfile.mkdtemp()) / "drift.parquet"
    >>> t = pa.table({"frame": [0]}).replace_schema_metadata(parquet_metadata(DRIFT, {"pixel_size": 0.01}))
    >>> pq.write_table(t, path)
    >>> recorded_attrs(path), recorded_attrs(path.parent / "none")
    ({'pixel_size': 0.01}, {})
    """
    import pyarrow.parquet as pq
    from pathlib import Path

    path = Path(path)
    first = path if path.is_file() else next(iter(sorted(path.glob("*.parquet"))), None) if path.is_dir() else None
    return attrs_from_metadata(pq.read_schema(first).metadata) if first is not None else {}

"""Constants and small helpers shared by the io modules (units, dims, extensions)."""

from __future__ import annotations

import importlib
import os
import re
import unicodedata
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError, check_positive

MB = 1_000_000
TARGET_CHUNK_MB = 128
MAX_CHUNK_MB = 256
AUTO_CHECK_FINITE_BYTES = 1_000_000_000

#: Canonical dims by number of dimensions.
CANONICAL_DIMS = {
    2: ("y", "x"),
    3: ("frame", "y", "x"),
    4: ("scan_y", "scan_x", "k_y", "k_x"),
    5: ("frame", "scan_y", "scan_x", "k_y", "k_x"),
}
_FRAME = ("frame", "frames", "time", "t", "slice", "stack", "n", "z")
#: Accepted dim names (case-insensitive) → canonical name; ``[0]`` for images/movies, ``[1]`` 4D.
DIM_ALIASES = (
    {
        "frame": _FRAME,
        "y": ("y", "row", "rows", "height", "scan_y", "ry", "sy"),
        "x": ("x", "col", "cols", "column", "columns", "width", "scan_x", "rx", "sx"),
    },
    {
        "frame": _FRAME,
        "scan_y": ("scan_y", "y", "ry", "sy", "real_y", "probe_y", "row", "rows"),
        "scan_x": ("scan_x", "x", "rx", "sx", "real_x", "probe_x", "col", "cols"),
        "k_y": ("k_y", "ky", "qy", "q_y", "det_y", "detector_y"),
        "k_x": ("k_x", "kx", "qx", "q_x", "det_x", "detector_x"),
    },
)
GENERIC_DIM = re.compile(r"^((phony_)?dim|axis)_?\d+$|^<undefined>$|^$")

ZARR_EXT = (".zarr",)
NPY_EXT = (".npy",)
TIFF_EXT = (".tif", ".tiff")
H5_EXT = (".h5", ".hdf5", ".hdf", ".hspy")      # .hspy: HyperSpy's own HDF5 files
DM_EXT = (".dm3", ".dm4")
EMD_EXT = (".emd",)
MRC_EXT = (".mrc",)
SUPPORTED_EXTENSIONS = ZARR_EXT + NPY_EXT + TIFF_EXT + H5_EXT + DM_EXT + EMD_EXT + MRC_EXT
PREFERRED_NAMES = ("image", "data", "signal")

NM_PER = {"nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "å": 0.1, "a": 0.1, "angstrom": 0.1,
           "pm": 1e-3, "μm": 1e3, "um": 1e3, "micron": 1e3, "micrometer": 1e3, "mm": 1e6, "m": 1e9}
MRAD_PER = {"mrad": 1.0, "rad": 1e3, "μrad": 1e-3, "urad": 1e-3}
IO_EXTRA = 'pip install "stemflow[io]"'


def unit_factor(units, table):
    """Factor from ``units`` to the table's unit, or None when not a known unit of that kind."""
    if units is None:
        return None
    key = unicodedata.normalize("NFKC", str(units)).strip().lower()
    return table.get(key.rstrip("s") if key.endswith(("meters", "metres")) else key)


def require_module(module, what):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"reading {what} needs the optional package {module.split('.')[0]!r}, which is not "
            f"installed; install it with: {IO_EXTRA}"
        ) from err


def plain_value(value):
    """An HDF5/zarr attribute value as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return plain_value(value[()]) if value.ndim == 0 else value.tolist()
    return value


def nbytes_on_disk(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum((Path(root) / f).stat().st_size for root, _, files in os.walk(path) for f in files)


def is_zarr_dir(path):
    return path.is_dir() and (
        path.suffix.lower() == ".zarr"
        or any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zarray"))
    )


positive_option = check_positive

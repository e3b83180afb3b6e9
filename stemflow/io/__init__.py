"""Open, validate and write STEM data as dask-backed :class:`xarray.DataArray`.

Every reader ends in the same normalisation, so whatever the source the result has

* dims ``("y", "x")``, ``("frame", "y", "x")``, ``("scan_y", "scan_x", "k_y", "k_x")`` or
  ``("frame", "scan_y", "scan_x", "k_y", "k_x")``;
* real-space coords (``y``, ``x`` or ``scan_y``, ``scan_x``) equal to index × pixel size in nm
  (coord attrs ``{"units": "nm"}``), or the pixel index (``{"units": "px"}``) when the pixel size
  is unknown; ``k_y``, ``k_x`` in mrad when ``attrs["k_pixel_size"]`` (mrad/px) is known, else in
  px; ``frame`` = integer frame index;
* ``attrs["pixel_size"]`` (float, nm/px) and ``attrs["pixel_size_units"] = "nm"`` when known;
* dask chunks of whole frames (whole diffraction patterns for 4D-STEM), ~128 MB each.

Sizes are in MB = 10**6 bytes throughout.

Importing this module is light (no dask): the readers are imported on first use.
"""

from ..lazy import lazy_names
from ._backend import StemflowBackendEntrypoint
from ._common import CANONICAL_DIMS, DIM_ALIASES, MB, SUPPORTED_EXTENSIONS

__all__ = [
    "open_stem",
    "to_zarr",
    "default_compressors",
    "describe",
    "find_nonfinite_frames",
    "check_finite",
    "StemflowBackendEntrypoint",
    "CANONICAL_DIMS",
    "DIM_ALIASES",
    "SUPPORTED_EXTENSIONS",
    "MB",
    "write_movie",
    "write_4d",
    "truth_paths",
    "read_parquet_parts",
    "to_hyperspy",
    "from_hyperspy",
    "atoms_to_markers",
]

#: Names imported on first use (their modules import dask): name → module.
_LAZY = {"open_stem": "._open", "describe": "._open", "find_nonfinite_frames": "._open", "check_finite": "._open",
         "to_zarr": "._write", "default_compressors": "._write", "write_movie": "._simulated", "write_4d": "._simulated",
         "truth_paths": "._simulated", "read_parquet_parts": "._parquet", "to_hyperspy": "._hyperspy",
         "from_hyperspy": "._hyperspy", "atoms_to_markers": "._hyperspy"}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())

"""The xarray backend: ``xr.open_dataset(path, engine="stemflow")``."""

from __future__ import annotations

import os
from pathlib import Path

from xarray.backends import BackendEntrypoint

from ._common import DM_EXT, EMD_EXT, NPY_EXT, TIFF_EXT


# ----------------------------------------------------------------------------- xarray backend
class StemflowBackendEntrypoint(BackendEntrypoint):
    """``xr.open_dataset(path, engine="stemflow")``: what :func:`open_stem` returns, as a
    Dataset with one data variable (named after the source array, else ``image``)."""

    description = "STEM data (Zarr, HDF5, TIFF, NumPy, DM3/DM4, EMD) opened lazily by stemflow.open_stem"
    url = "https://github.com/stemflow/stemflow/blob/main/docs/io.md"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "pixel_size", "dataset", "check_finite")

    def open_dataset(self, filename_or_obj, *, drop_variables=None, pixel_size=None, dataset=None,
                     check_finite="auto"):
        from ._open import open_stem          # dask: imported only when a file is opened

        arr = open_stem(filename_or_obj, pixel_size=pixel_size, dataset=dataset, check_finite=check_finite)
        ds = arr.to_dataset(name=arr.name if arr.name is not None else "image")
        if drop_variables:
            drop = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables)
            ds = ds.drop_vars(drop, errors="ignore")
        return ds

    def guess_can_open(self, filename_or_obj):
        """True for the file extensions stemflow reads, except Zarr and HDF5, which xarray's own
        engines open too (use ``engine="stemflow"`` for those)."""
        try:
            ext = Path(os.fspath(filename_or_obj)).suffix.lower()
        except TypeError:
            return False
        return ext in NPY_EXT + TIFF_EXT + DM_EXT + EMD_EXT

"""The ``.stem`` accessor on :class:`xarray.DataArray`: a thin layer over plain functions.

``import stemflow`` registers it. Each method calls a plain stemflow function with the
DataArray's data, coords and attrs; no state is kept on the accessor.
"""

from __future__ import annotations

import xarray as xr

from . import io

__all__ = ["StemAccessor"]


@xr.register_dataarray_accessor("stem")
class StemAccessor:
    """``da.stem``: stemflow on a DataArray (dims and attrs as :func:`stemflow.io.open_stem` makes)."""

    def __init__(self, da: xr.DataArray):
        self._da = da

    @property
    def pixel_size(self) -> float | None:
        """Real-space pixel size in nm/px (``attrs["pixel_size"]``), or None when unknown."""
        value = self._da.attrs.get("pixel_size")
        return None if value is None else float(value)

    @property
    def k_pixel_size(self) -> float | None:
        """Diffraction-space pixel size in mrad/px (``attrs["k_pixel_size"]``), or None."""
        value = self._da.attrs.get("k_pixel_size")
        return None if value is None else float(value)

    def info(self) -> str:
        """Text summary: dims, shape, dtype, chunks (shape, MB per chunk, count), pixel size
        (nm/px) and size in memory; the same as :func:`stemflow.io.describe`."""
        return io.describe(self._da)

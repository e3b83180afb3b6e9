"""stemflow."""

from . import accessor  # registers the .stem accessor
from .io import open_stem, to_zarr

__all__ = ["open_stem", "to_zarr"]

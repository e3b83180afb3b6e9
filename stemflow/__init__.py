"""stemflow: atoms, dopants and vacancies in atomically resolved STEM data, at any scale.

The public functions work on numpy arrays, xarray DataArrays and pandas DataFrames::

    import stemflow
    da = stemflow.open_stem("movie.zarr")                       # dask-backed, dims named, nm coords
    atoms = stemflow.find_atoms(da.isel(frame=0), lattice="graphene")
    stemflow.score(atoms, truth)                                # precision / recall / F1 per class

Importing stemflow is light: numpy, pandas, scipy and xarray. The network (torch) is imported
when a function that needs it is first used, e.g. ``find_atoms`` or ``load_model``.
"""

from __future__ import annotations

import importlib

from . import accessor  # noqa: F401  (registers the .stem accessor)
from .locate import locate
from .metrics import match, score

__all__ = ["open_stem", "to_zarr", "find_atoms", "locate", "match", "score", "load_model"]

#: Public names imported on first use (their modules import torch or dask): name → module.
_LAZY = {"open_stem": ".io", "to_zarr": ".io", "find_atoms": ".find", "load_model": ".nn.weights"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stemflow' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

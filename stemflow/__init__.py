"""stemflow: atoms, dopants and vacancies in atomically resolved STEM data, at any scale.

The public functions work on numpy arrays, xarray DataArrays and pandas DataFrames::

    import stemflow
    da = stemflow.open_stem("movie.zarr")                       # dask-backed, dims named, nm coords
    atoms = stemflow.find_atoms(da.isel(frame=0), lattice="graphene")
    stemflow.score(atoms, truth)                                # precision / recall / F1 per class
"""

from . import accessor  # registers the .stem accessor
from .find import find_atoms
from .io import open_stem, to_zarr
from .locate import locate
from .metrics import match, score
from .nn.weights import load_model

__all__ = ["open_stem", "to_zarr", "find_atoms", "locate", "match", "score", "load_model"]

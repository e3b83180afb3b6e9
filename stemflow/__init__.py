"""stemflow: atoms, dopants and vacancies in atomically resolved STEM data, at any scale.

The notebook chain, every step a plain function over numpy / xarray / pandas::

    import stemflow
    da = stemflow.open_stem("movie.zarr")                      # dask-backed, dims named, nm coords
    atoms = stemflow.find_atoms(da.isel(frame=slice(0, 50)), lattice="graphene")   # px and nm
    atoms = stemflow.identify(atoms, image=da.isel(frame=slice(0, 50)))   # elements, defects
    traj, events, drift = stemflow.track(atoms)                # trajectories, hops (nm), drift (px)

    summary = stemflow.run("movie.zarr", out="run/")           # the same on a Dask cluster, resumable
    r = stemflow.open_run("run/")                              # the run directory as one object

Importing stemflow is light (numpy, pandas, scipy, xarray): the network (torch) and Dask are
imported when a function that needs them is first used. The tables that pass between the steps
are :mod:`stemflow.tables`.
"""

from __future__ import annotations

from . import accessor  # noqa: F401  (registers the .stem accessor)
from . import errors  # noqa: F401  (stemflow.errors.InputError ... always at hand)
from .lazy import lazy_names

#: The public names, each imported from its module on first use: name → module.
_API = {
    # data in and out
    "open_stem": ".io", "to_zarr": ".io", "write_movie": ".io",
    "virtual_image": ".parallel.virtual", "center_of_mass": ".parallel.virtual",
    # the steps
    "load_model": ".nn.weights", "find_atoms": ".find", "find_atoms_movie": ".lowdose", "locate": ".locating", "identify": ".chem",
    "track": ".tracking",
    # at scale
    "run": ".parallel", "open_run": ".results", "read_atoms": ".results",
    # scoring against simulated truth
    "score": ".metrics", "match": ".metrics",
    "simulate_image": ".simulate", "simulate_movie": ".simulate", "simulate_4d": ".simulate",
}

__all__ = list(_API)


__getattr__, __dir__ = lazy_names(__name__, _API, globals())

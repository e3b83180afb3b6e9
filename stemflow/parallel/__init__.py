"""Scale-out: the Dask pipeline from Zarr (or any :func:`stemflow.open_stem` input) to Parquet.

* :func:`run` — input → ``OUT/atoms.parquet`` on a Dask cluster, resumable (``stemflow run``);
* :func:`read_atoms` — the table a run wrote;
* :func:`virtual_image`, :func:`center_of_mass` — 4D-STEM virtual detectors computed chunk by
  chunk (the masks and sums on numpy blocks are :mod:`stemflow.detectors`);
* :func:`connect` — the cluster a run uses (local processes, one worker per GPU, or a scheduler).
"""

from .cluster import ClusterError, connect, dashboard_link
from ..results import read_atoms
from .output import OutputMismatchError
from .pipeline import RunSummary, run
from .virtual import center_of_mass, virtual_image

__all__ = ["run", "RunSummary", "read_atoms", "virtual_image", "center_of_mass",
           "connect", "dashboard_link", "ClusterError", "OutputMismatchError"]

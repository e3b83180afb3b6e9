"""Scale-out: the Dask pipeline from Zarr (or any :func:`stemflow.open_stem` input) to Parquet.

* :func:`run` — input → ``OUT/atoms.parquet`` on a Dask cluster, resumable (``stemflow run``);
* :func:`read_atoms` — the table a run wrote;
* :func:`virtual_image`, :func:`center_of_mass`, :func:`detector_mask` — 4D-STEM virtual
  detectors computed chunk by chunk;
* :func:`connect` — the cluster a run uses (local processes, one worker per GPU, or a scheduler).
"""

from .cluster import ClusterError, connect
from .output import OutputMismatchError, read_atoms
from .pipeline import RunSummary, run
from .virtual import DETECTORS, center_of_mass, detector_mask, virtual_image

__all__ = ["run", "RunSummary", "read_atoms", "virtual_image", "center_of_mass", "detector_mask", "DETECTORS",
           "connect", "ClusterError", "OutputMismatchError"]

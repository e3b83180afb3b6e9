"""
# A run on a Dask cluster

`stemflow.run` finds the atoms of a whole dataset on a Dask cluster, writes one Parquet part per
chunk, atomically, and tracks movies on the client; `open_run` is the run as one object. Here the
cluster is a small in-process one handed over as `client=`; by default `run` starts a local
cluster of one worker process per core, and `scheduler="tcp://HOST:8786"` uses yours.
"""

import tempfile
from pathlib import Path

from distributed import Client, LocalCluster

import stemflow
from stemflow.io import write_movie

# %%
# ## A movie in Zarr
work = Path(tempfile.mkdtemp())
movie = stemflow.simulate_movie("graphene", frames=8, shape=(160, 160), pixel_size=0.012, seed=3,
                                defects={"Si1C3": 2, "V1": 1}, rates={"hop": 0.2})
paths = write_movie(movie, work / "movie.zarr", progress=False, frame_chunk_mb=0.25)
print(stemflow.open_stem(paths["store"]).chunks)

# %%
# ## Run
# Resumable: the same call again computes only the parts that are missing.
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
client = Client(cluster)
summary = stemflow.run(paths["store"], work / "run", client=client, progress=False)
print(summary)

# %%
# ## The results object
# Tables carry their units and calibration; the run knows whether it is complete.
r = stemflow.open_run(work / "run")
print(r)
atoms = r.atoms()
print(atoms.attrs["pixel_size"], "nm/px;", len(atoms), "atoms in", atoms.frame.nunique(), "frames")
print(r.table("events").head())

# %%
client.close()
cluster.close()

"""
# 4D-STEM → virtual detector → atoms

A small simulated 4D-STEM scan (a diffraction pattern at every probe position) is opened lazily,
reduced to a HAADF image by a virtual detector chunk by chunk, and the atoms are found on it.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

import stemflow
from stemflow.io import write_4d
from stemflow.plot import plot_atoms

# %%
# ## A scan on disk
# 96 × 96 probe positions at 20 pm/px, 48² detector pixels each, written as Zarr with its truth.
work = Path(tempfile.mkdtemp())
det = stemflow.simulate.fourd.Detector(shape=(48, 48), k_pixel_size=256.0 / 48)
paths = write_4d(work / "scan.zarr", "graphene", (96, 96), detector=det, pixel_size=0.02, seed=2,
                 defects={"Si1C3": 2}, progress=False)
scan = stemflow.open_stem(paths["store"])
print(scan)

# %%
# ## Virtual detectors
# A detector is a mask over the diffraction plane; `virtual_image` applies it block by block
# (Dask), so scans larger than memory reduce in one pass.
haadf = stemflow.virtual_image(scan, "haadf").compute()
bf = stemflow.virtual_image(scan, "bf").compute()
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
haadf.plot.imshow(ax=axes[0], cmap="gray", add_colorbar=False)
bf.plot.imshow(ax=axes[1], cmap="gray", add_colorbar=False)
axes[0].set_title("HAADF")
axes[1].set_title("BF")

# %%
# ## Atoms on the HAADF image
atoms = stemflow.find_atoms(haadf, pixel_size=0.02)
print(atoms.groupby("label").size())
fig, ax = plt.subplots(figsize=(5, 5))
plot_atoms(atoms, image=haadf.values, ax=ax)

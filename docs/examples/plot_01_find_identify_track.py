"""
# Simulate → find → identify → track

A short movie of Si-doped graphene with vacancies, simulated with its exact truth; the network
finds the atoms frame by frame, chemistry names the defect complexes, and tracking links the
dopants into trajectories and finds their hops. Units: positions px, distances nm, time in frames.
"""

import matplotlib.pyplot as plt

import stemflow
from stemflow.plot import plot_atoms, plot_trajectories

# %%
# ## A movie with its truth
# 12 frames of 192² px at 12 pm/px, 10⁵ e⁻/Å² per frame, drifting; 3-fold Si (Si1C3) that hop,
# 4-fold Si (Si1C4) and single vacancies (V1).
movie = stemflow.simulate_movie("graphene", frames=12, shape=(192, 192), pixel_size=0.012, seed=5,
                                drift=(0.3, -0.2), defects={"Si1C3": 3, "Si1C4": 1, "V1": 1},
                                rates={"hop": 0.15})
stack = movie.images()
print(stack.shape, stack.dtype)

# %%
# ## Find the atoms
# `find_atoms` takes a frame or a (frame, y, x) stack and the pixel size (nm/px); for crystalline
# lattices it also runs the chemical identification (`element`, `coordination`, `defect`).
atoms = stemflow.find_atoms(stack, pixel_size=movie.pixel_size)
print(atoms.groupby("label").size())
print(atoms.loc[atoms.label == "dopant", ["frame", "y", "x", "element", "coordination", "defect"]].head())

# %%
# ## Scored against the truth
# Precision, recall and F1 per class over all frames, matching within half a bond.
print(stemflow.score(atoms, movie.atoms, pixel_size=movie.pixel_size).round(3))

# %%
# The first frame, coloured by defect complex (scale bar in nm from the table's pixel size).
fig, ax = plt.subplots(figsize=(5, 5))
plot_atoms(atoms, frame=0, image=stack[0], by="defect", ax=ax, size=6)

# %%
# ## Track
# Drift is measured on the lattice atoms; dopants and vacancies are linked, given lattice sites,
# and their hops and coordination changes become events.
traj, events, drift = stemflow.track(atoms)
print(events[["kind", "particle", "frame", "distance_nm"]])

# %%
fig, ax = plt.subplots(figsize=(5, 5))
plot_trajectories(traj, image=stemflow.plot.mean_frame(stack, drift), ax=ax, by="state")

"""Dynamics: drift, trajectories, events and their statistics, from atoms tables of a movie.

Every function takes and returns pandas DataFrames with documented columns, so the steps chain in
a notebook::

    from stemflow.tracking import track, dwell_times, transition_matrix, diffusion
    traj, ev, dr = track(atoms, pixel_size=0.01)          # atoms of a movie: frame, y, x, label
    ev.query("kind == 'hop'")                              # hops: particle, frame, y0, x0, y1, x1, ...
    transition_matrix(traj, dose=1e5)                      # per-frame (and per-dose) rates
    diffusion(traj)                                        # D in nm²/frame

or one step at a time: :func:`drift` → :func:`subtract_drift` → :func:`link` →
:func:`trajectory_sites` → :func:`events`.

Units: positions in tables px (``y``, ``x``; drift-corrected ``y_corr``, ``x_corr``), distances
given to functions in nm, drift in px, time in frames (s where a frame time is given), dose in
e⁻/Å² per frame.
"""

from .alignment import DriftEstimator, drift, lattice_spacing, subtract_drift
from .linking import DEFAULT_LABELS, link, link_iter, link_positions
from .options import TrackOptions
from .pipeline import TrackResult, track
from .sites import host_neighbours, trajectory_sites
from .stats import diffusion, dwell_times, event_rates, msd, transition_matrix
from .transitions import events, state_column

__all__ = ["track", "TrackResult", "TrackOptions", "drift", "subtract_drift", "DriftEstimator", "lattice_spacing", "link",
           "link_iter", "link_positions", "trajectory_sites", "host_neighbours", "events", "state_column", "dwell_times",
           "transition_matrix", "event_rates", "msd", "diffusion", "DEFAULT_LABELS"]

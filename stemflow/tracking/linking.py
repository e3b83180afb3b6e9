"""Linking atoms of successive frames into trajectories with trackpy.

Dopants and vacancies (or any labels, all atoms included) are linked on their drift-corrected
positions with :func:`trackpy.link_df_iter`, one frame at a time, so the linker holds only the
last ``memory`` frames however long the movie is. Oversized subnetworks are resolved by trackpy's
adaptive search (the search range shrinks by ``adaptive_step`` until the subnet is solvable).
Particle ids count up from ``first_particle``, so tables linked in separate runs or chunks can be
given disjoint ids.

Units: positions px, ``search_range`` nm (converted with the pixel size), frames.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
import trackpy

from ..errors import InputError
from ._validate import check_finite, pixel_size_of, require_columns, require_frame, require_table

__all__ = ["link", "link_iter", "link_positions", "DEFAULT_LABELS"]

#: Labels linked by default: the defects, whose motion is the point of tracking.
DEFAULT_LABELS = ("dopant", "vacancy")


@contextlib.contextmanager
def quiet_trackpy():
    """Silence trackpy's per-frame progress messages while linking, then restore its level."""
    log = logging.getLogger("trackpy")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def _positions(df: pd.DataFrame) -> list[str]:
    return ["y_corr", "x_corr"] if {"y_corr", "x_corr"} <= set(df.columns) else ["y", "x"]


def select_labels(df: pd.DataFrame, labels) -> pd.DataFrame:
    """Rows of ``df`` whose ``label`` is in ``labels`` (all rows when ``labels`` is None)."""
    if labels is None:
        return df
    if "label" not in df.columns:
        raise InputError("the table has no 'label' column to choose the rows to link; pass labels=None to "
                         "link every row, or a table from stemflow.find_atoms")
    return df[df["label"].astype(str).isin([str(s) for s in labels])]


def link_iter(frames: Iterable[pd.DataFrame], search_range: float, *, memory: int = 3,
              pos_columns=("y_corr", "x_corr"), adaptive_stop: float | None = None,
              adaptive_step: float = 0.95, first_particle: int = 0) -> Iterator[pd.DataFrame]:
    """Link a stream of per-frame tables; yield each frame's table with ``particle`` added.

    Parameters
    ----------
    frames : iterable of DataFrame
        One table per frame, in increasing ``frame`` order, each with ``frame`` and the
        ``pos_columns`` (px). Frames may be empty.
    search_range : float
        Largest distance a particle moves between observations, px.
    memory : int
        Frames a particle may go unseen and still keep its id.
    pos_columns : sequence of str
        Position columns (px), default the drift-corrected ``y_corr``, ``x_corr``.
    adaptive_stop, adaptive_step : float
        trackpy's adaptive search: on an oversized subnetwork the search range is multiplied by
        ``adaptive_step`` until the subnet is solvable or the range falls below ``adaptive_stop``
        px (default 0.2 × ``search_range``).
    first_particle : int
        Id of the first trajectory; ids are unique within the stream.

    Yields
    ------
    DataFrame
        The frame's table with ``particle`` (int64).

    Notes
    -----
    Memory is bounded by ``memory`` frames, whatever the number of frames. Each yielded table is a
    copy (trackpy's :func:`~trackpy.link_df_iter`); :func:`link` on a whole table skips that copy.

    Examples
    --------
    >>> import pandas as pd
    >>> from stemflow.tracking import link_iter
    >>> frames = [pd.DataFrame({"frame": [0, 0], "y_corr": [0.0, 5.0], "x_corr": [0.0, 5.0]}),
    ...           pd.DataFrame({"frame": [1, 1], "y_corr": [5.2, 0.1], "x_corr": [5.1, 0.0]})]
    >>> [df["particle"].tolist() for df in link_iter(frames, 1.0, first_particle=10)]
    [[10, 11], [11, 10]]
    """
    if not (np.isfinite(search_range) and search_range > 0):
        raise InputError(f"search_range={search_range} must be a positive distance")
    if adaptive_stop is None:
        adaptive_stop = 0.2 * search_range
    pos_columns = list(pos_columns)
    with quiet_trackpy():
        it = trackpy.link_df_iter(iter(frames), search_range, pos_columns=pos_columns, t_column="frame",
                                  memory=int(memory), adaptive_stop=adaptive_stop,
                                  adaptive_step=adaptive_step)
        for df in it:
            df["particle"] = df["particle"].to_numpy(np.int64) + np.int64(first_particle)
            yield df


def link_positions(frames: Iterable[tuple[int, np.ndarray]], search_range: float, *, memory: int = 3,
                   adaptive_stop: float | None = None, adaptive_step: float = 0.95) -> Iterator[np.ndarray]:
    """Link a stream of per-frame positions; yield each frame's particle ids.

    The array form of :func:`link_iter` (no table is copied): what :func:`link` and
    :func:`stemflow.track` stream their positions through.

    Parameters
    ----------
    frames : iterable of (int, ndarray)
        ``(frame, positions)`` in increasing frame order; positions (n, 2) px, ``(y, x)``.
    search_range : float
        Largest distance a particle moves between observations, px.
    memory : int
        Frames a particle may go unseen and still keep its id.
    adaptive_stop, adaptive_step : float
        As for :func:`link_iter` (default stop 0.2 × ``search_range``).

    Yields
    ------
    ndarray of int64
        The particle id of each position of the frame, in order.

    Examples
    --------
    >>> import numpy as np
    >>> frames = [(0, np.array([[0.0, 0.0], [5.0, 5.0]])), (1, np.array([[5.2, 5.1], [0.1, 0.0]]))]
    >>> [ids.tolist() for ids in link_positions(frames, 1.0)]
    [[0, 1], [1, 0]]
    """
    if not (np.isfinite(search_range) and search_range > 0):
        raise InputError(f"search_range={search_range} must be a positive distance")
    if adaptive_stop is None:
        adaptive_stop = 0.2 * search_range
    with quiet_trackpy():
        for _, ids in trackpy.linking.link_iter(iter(frames), search_range, memory=int(memory),
                                                adaptive_stop=adaptive_stop, adaptive_step=adaptive_step):
            yield np.asarray(ids, np.int64)


def _link_arrays(frame: np.ndarray, pos: np.ndarray, search_range: float, **kwargs) -> np.ndarray:
    """Particle ids of rows sorted by ``frame``, linked frame by frame (:func:`link_positions`)."""
    bounds = np.flatnonzero(np.r_[True, frame[1:] != frame[:-1], True])
    coords = ((int(frame[a]), pos[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))
    ids = list(link_positions(coords, search_range, **kwargs))
    return np.concatenate(ids) if ids else np.empty(0, np.int64)


def link(atoms: pd.DataFrame, search_range: float | None = None, *, pixel_size: float | None = None,
         labels=DEFAULT_LABELS, memory: int = 3, adaptive_stop: float | None = None,
         adaptive_step: float = 0.95, first_particle: int = 0) -> pd.DataFrame:
    """Link atoms of successive frames into trajectories (trackpy, streamed frame by frame).

    Parameters
    ----------
    atoms : DataFrame
        Atoms table of a movie: ``frame``, ``y``, ``x`` (px), ``label``; drift-corrected
        ``y_corr``, ``x_corr`` (:func:`stemflow.tracking.subtract_drift`) are linked when present.
    search_range : float
        Largest distance an atom moves between observations, nm (a hop in graphene is 0.142 nm,
        an S vacancy's step in WS2 0.318 nm). Required.
    pixel_size : float, optional
        nm/px; default ``atoms.attrs['pixel_size']``.
    labels : sequence of str or None
        Labels to link (default dopants and vacancies); None links every row.
    memory : int
        Frames an atom may go undetected and keep its id.
    adaptive_stop, adaptive_step : float, optional
        trackpy's adaptive search; ``adaptive_stop`` in nm (default 0.2 × ``search_range``).
    first_particle : int
        First trajectory id (ids are ``first_particle``, ``first_particle + 1``, ...).

    Returns
    -------
    DataFrame
        The selected rows with ``particle`` (int64), sorted by ``frame`` then ``particle``; the
        index is reset. ``attrs`` are kept.

    Raises
    ------
    InputError
        Missing ``frame``/``y``/``x``/``label``, NaN positions, no pixel size or no search range.

    Examples
    --------
    >>> from stemflow.simulate import simulate_movie
    >>> mov = simulate_movie("graphene", 8, 192, seed=0, defects={"Si1C3": 2})
    >>> t = link(mov.atoms[["frame", "y", "x", "label"]], 0.3, pixel_size=mov.pixel_size)
    >>> int(t.particle.nunique())
    2
    """
    atoms = require_table(atoms)
    require_frame(atoms)
    require_columns(atoms, ["y", "x"])
    if search_range is None:
        raise InputError("link needs search_range= (nm), the largest step between observations; e.g. "
                         "0.3 for dopant hops in graphene. stemflow.tracking.track chooses it from the lattice")
    px = pixel_size_of(atoms, pixel_size)
    rows = select_labels(atoms, labels)
    pos = _positions(rows)
    check_finite(rows, pos)
    stop = None if adaptive_stop is None else adaptive_stop / px
    if len(rows) == 0:
        out = rows.copy()
        out["particle"] = pd.Series(dtype=np.int64)
        return out.reset_index(drop=True)
    out = rows.sort_values("frame", kind="stable").reset_index(drop=True)
    sr = float(search_range) / px
    out["particle"] = _link_arrays(out["frame"].to_numpy(np.int64), out[pos].to_numpy(np.float64), sr,
                                   memory=memory, adaptive_stop=0.2 * sr if stop is None else stop,
                                   adaptive_step=adaptive_step) + np.int64(first_particle)
    out = out.sort_values(["frame", "particle"], kind="stable").reset_index(drop=True)
    out.attrs.update(atoms.attrs)
    return out

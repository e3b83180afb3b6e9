"""Rows on vacuum: where the image shows no lattice at all, the network's rows are not atoms.

The network was trained on frames full of lattice; over a hole in the sheet (vacuum with a little
background) it can still place lattice and vacancy rows. The image tells: averaged over a square
four bonds wide around the row, a lattice region reads about the same everywhere (columns and
hollows together; a vacancy takes a fraction of it away), while vacuum reads little. A row whose
mean is under :data:`VACUUM_SHARE` of the median over the frame's ``lattice`` rows, and more than
:data:`VACUUM_Z` robust SDs below it, sits on vacuum. Near the hole's edge that square still holds
sheet, so rows there that are no column (``vacancy`` rows, and ``lattice`` rows whose own column
reads empty) are taken as the hole's when they lie within :data:`EDGE_REACH` bonds of pixels whose
square reads as vacuum; the rim's columns read full and stay.

Units: positions in px, the pixel size in nm/px.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import median_abs_deviation

from ..tables import LATTICES
from ._common import frame_groups, labels_of, resolve
from .occupancy import image_of_frame

__all__ = ["vacuum_rows", "VACUUM_RADIUS", "VACUUM_SHARE", "VACUUM_Z", "EDGE_REACH"]

#: Half the side of the square averaged around each row, bonds: wide enough that an empty site (a
#: missing W in WS2 is the brightest column of its neighbourhood) leaves most of it.
VACUUM_RADIUS = 2.0
#: Least mean over that square, as a share of the frame's median over its ``lattice`` rows,
#: of a row on the sheet. Simulated graphene (with V1, V2) and WS2 (with V_S, V_S2, V_W) frames
#: without holes read at least 0.75 from 3000 to 10⁵ e⁻/Å²; rows deep in a hole of vacuum (5 % of
#: the lattice's mean) far less (``tests/test_chem.py``).
VACUUM_SHARE = 0.35
#: ... and more than this many robust SDs (of the ``lattice`` rows' means) below the median.
VACUUM_Z = -4.0
#: How far (bonds) from the vacuum's pixels (those whose square reads as above) rows that are no
#: column are part of the hole: near a straight edge the square still holds sheet, and its mean
#: falls under VACUUM_SHARE only 0.15 of its side (0.6 bond) inside the hole.
EDGE_REACH = 1.5


def vacuum_rows(atoms: pd.DataFrame, image, pixel_size: float | None = None, lattice: str | None = None) -> np.ndarray:
    """Which ``lattice`` and ``vacancy`` rows sit where the image shows no lattice (vacuum).

    Parameters
    ----------
    atoms : DataFrame
        Atoms table: ``y``, ``x`` (px), ``label``; optional ``frame`` (index into a stack).
    image : ndarray
        The image (y, x) or stack (frame, y, x) the atoms were found in.
    pixel_size : float, optional
        nm/px; default ``atoms.attrs["pixel_size"]``.
    lattice : str, optional
        Default ``atoms.attrs["lattice"]``.

    Returns
    -------
    ndarray of bool
        One per row: True for a ``lattice`` or ``vacancy`` row whose mean over a square of side
        twice :data:`VACUUM_RADIUS` around it is under :data:`VACUUM_SHARE` of its frame's median
        over the ``lattice`` rows and more than :data:`VACUUM_Z` robust SDs below it, and the
        rows of the hole's edge that are no column (within :data:`EDGE_REACH` bonds of such
        pixels: ``vacancy`` rows and ``lattice`` rows whose column reads empty). All False
        for lattices without a bond (amorphous) or frames with fewer than 20 ``lattice`` rows.

    Examples
    --------
    >>> import numpy as np
    >>> from stemflow.simulate import simulate_image
    >>> sim = simulate_image("graphene", 160, pixel_size=0.012, seed=0)
    >>> img = sim.image.copy()
    >>> img[40:120, 40:120] = 0.02 * img.mean()                        # a hole in the sheet
    >>> t = sim.atoms[["y", "x", "label"]]
    >>> on_vacuum = vacuum_rows(t, img, 0.012, "graphene")
    >>> deep = t.y.between(66, 94) & t.x.between(66, 94)                # the square inside the hole
    >>> bool(on_vacuum[deep.to_numpy()].all()), int(on_vacuum[~t.y.between(35, 125).to_numpy()].sum())
    (True, 0)
    """
    atoms, pixel_size, lattice = resolve(atoms, pixel_size, lattice)
    out = np.zeros(len(atoms), bool)
    bond = LATTICES[lattice]["bond"]
    if bond is None or len(atoms) == 0 or image is None:
        return out
    labels = labels_of(atoms)
    pos = atoms[["y", "x"]].to_numpy(np.float64)
    side = 2 * int(round(VACUUM_RADIUS * bond / pixel_size)) + 1
    col = 2 * int(round(0.3 * bond / pixel_size)) + 1
    for fr, rows in frame_groups(atoms):
        img = np.asarray(image_of_frame(image, fr), np.float64)
        square = ndimage.uniform_filter(img, size=side, mode="nearest")      # one pass per frame
        yi = np.clip(np.rint(pos[rows, 0]).astype(np.int64), 0, img.shape[0] - 1)
        xi = np.clip(np.rint(pos[rows, 1]).astype(np.int64), 0, img.shape[1] - 1)
        m = square[yi, xi]
        ref = m[(labels[rows] == "lattice") & np.isfinite(m)]
        if len(ref) < 20:
            continue
        med = float(np.median(ref))
        sd = float(median_abs_deviation(ref, scale="normal"))
        if not (med > 0 and sd > 0):
            continue
        vacuum = (m < VACUUM_SHARE * med) & ((m - med) / sd < VACUUM_Z)
        # the same per pixel, where the square lies wholly inside the frame (a frame's edge can read dark)
        core = (square < VACUUM_SHARE * med) & ((square - med) / sd < VACUUM_Z)
        h = side // 2
        if h:
            core[:h], core[-h:], core[:, :h], core[:, -h:] = False, False, False, False
        if core.any():
            reach = ndimage.distance_transform_edt(~core)[yi, xi]
            colmap = ndimage.uniform_filter(img, size=col, mode="nearest")
            hollow = _reads_empty(colmap[yi, xi], float(np.median(colmap[core])), labels[rows])
            vacuum |= (reach <= EDGE_REACH * bond / pixel_size) & hollow
        out[rows] = np.isin(labels[rows], ["lattice", "vacancy"]) & vacuum
    return out


def _reads_empty(c: np.ndarray, vacuum: float, labels: np.ndarray) -> np.ndarray:
    """Rows that are no column: ``vacancy`` rows, and ``lattice`` rows whose column mean ``c`` is
    below halfway from the vacuum's (``vacuum``, the median over the vacuum's pixels) to the lower
    quartile of the ``lattice`` rows' (about an S2 pair's level in MX2, a C column's in graphene)."""
    empty = labels == "vacancy"
    lat = labels == "lattice"
    if lat.any():
        sheet = float(np.percentile(c[lat], 25))
        if sheet > vacuum:
            empty |= lat & (c < vacuum + 0.5 * (sheet - vacuum))
    return empty

"""HyperSpy interoperability, without a hard dependency: signals in and out, atoms as markers.

* :func:`from_hyperspy` — a HyperSpy signal (lazy or not) → a DataArray with stemflow's dims and nm
  (real space) / mrad (diffraction) calibration, what :func:`stemflow.open_stem` does with one;
* :func:`to_hyperspy` — a DataArray → a ``Signal2D`` (lazy when the data are dask) whose axes carry
  the names, scales, offsets and units, navigation first (frames, scan positions), signal last;
* :func:`atoms_to_markers` — an atoms table → HyperSpy ``Points`` markers, one per label, per frame
  for movies, in the signal's calibrated units.

HyperSpy is imported only inside these functions; without it they raise
:class:`~stemflow.errors.MissingDependencyError` naming the install.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import InputError, MissingDependencyError
from ._common import MRAD_PER, NM_PER, unit_factor

__all__ = ["from_hyperspy", "to_hyperspy", "atoms_to_markers", "is_hyperspy_signal"]

_NAVIGATION = {"frame", "scan_y", "scan_x"}


def _hs():
    try:
        import hyperspy.api as hs
    except ImportError as err:
        raise MissingDependencyError("this needs HyperSpy, which is not installed: pip install hyperspy "
                                     "(stemflow reads .hspy files without it)") from err
    return hs


def is_hyperspy_signal(obj) -> bool:
    """Whether ``obj`` is a HyperSpy signal (checked without importing HyperSpy)."""
    return any(c.__module__.startswith("hyperspy.") and c.__name__.endswith("Signal")
               for c in type(obj).__mro__)


def from_hyperspy(signal) -> xr.DataArray:
    """A HyperSpy signal as a DataArray: array order, axis names as dims, calibration in attrs.

    Parameters
    ----------
    signal : hyperspy BaseSignal
        Lazy signals stay lazy (their dask array is used as it is).

    Returns
    -------
    xarray.DataArray
        Dims named after the signal's axes (unnamed: ``dim_i``), ``pixel_size`` (nm/px) from the
        real-space axes and ``k_pixel_size`` (mrad/px) from the diffraction axes where their units
        say so, and the signal's title as the name. Give it to :func:`stemflow.open_stem`, which
        maps the names (``x``/``y``, ``time``, ``kx``/``ky`` ...) to stemflow's dims.

    Examples
    --------
    >>> import hyperspy.api as hs                                          # doctest: +SKIP
    >>> s = hs.signals.Signal2D(np.zeros((4, 64, 64)))                      # doctest: +SKIP
    >>> from_hyperspy(s).dims                                               # doctest: +SKIP
    ('dim_0', 'dim_1', 'dim_2')
    """
    axes = sorted(signal.axes_manager._axes, key=lambda a: a.index_in_array)
    names = [a.name if isinstance(a.name, str) and a.name and a.name != "<undefined>" else f"dim_{i}"
             for i, a in enumerate(axes)]
    if len(set(names)) != len(names):
        names = [f"dim_{i}" for i in range(len(axes))]
    attrs = {}
    real = [-2, -1] if len(axes) <= 3 else [-4, -3]
    for i in (real[1], real[0]):
        f = unit_factor(getattr(axes[i], "units", None), NM_PER)
        if f and getattr(axes[i], "scale", None):
            attrs["pixel_size"] = float(axes[i].scale) * f
            break
    if len(axes) >= 4:
        f = unit_factor(getattr(axes[-1], "units", None), MRAD_PER)
        if f and getattr(axes[-1], "scale", None):
            attrs["k_pixel_size"] = float(axes[-1].scale) * f
    title = signal.metadata.get_item("General.title", None) if hasattr(signal, "metadata") else None
    return xr.DataArray(signal.data, dims=names, attrs=attrs, name=title or None)


def _axis(name: str, size: int, da: xr.DataArray) -> dict:
    if name in ("y", "x", "scan_y", "scan_x") and da.attrs.get("pixel_size"):
        return {"name": name, "size": size, "scale": float(da.attrs["pixel_size"]), "units": "nm",
                "navigate": name.startswith("scan")}
    if name in ("k_y", "k_x") and da.attrs.get("k_pixel_size"):
        return {"name": name, "size": size, "scale": float(da.attrs["k_pixel_size"]), "units": "mrad",
                "navigate": False}
    return {"name": name, "size": size, "scale": 1.0, "units": "px" if name != "frame" else "",
            "navigate": name in _NAVIGATION}


def to_hyperspy(da: xr.DataArray):
    """A stemflow DataArray as a HyperSpy ``Signal2D``, lazy when its data are dask.

    Parameters
    ----------
    da : xarray.DataArray
        ``(y, x)``, ``(frame, y, x)``, ``(scan_y, scan_x, k_y, k_x)`` or 5-D, as
        :func:`stemflow.open_stem` gives.

    Returns
    -------
    hyperspy.signals.Signal2D or LazySignal2D
        Navigation axes ``frame`` / ``scan_y``, ``scan_x``; signal axes the last two dims. Real-
        space axes in nm (``pixel_size``), diffraction axes in mrad (``k_pixel_size``), others in
        px; the DataArray's name as the title.

    Raises
    ------
    MissingDependencyError
        HyperSpy is not installed.
    InputError
        Fewer than 2 dims.

    Examples
    --------
    >>> import stemflow                                                       # doctest: +SKIP
    >>> s = stemflow.open_stem("movie.zarr").stem.to_hyperspy()               # doctest: +SKIP
    >>> s.axes_manager.signal_axes[0].units                                   # doctest: +SKIP
    'nm'
    """
    if da.ndim < 2:
        raise InputError(f"to_hyperspy needs at least 2 dims (an image); got dims {da.dims}")
    hs = _hs()
    axes = [_axis(str(d), int(n), da) for d, n in zip(da.dims, da.shape)]
    signal = hs.signals.Signal2D(da.data, axes=axes)
    if da.name is not None:
        signal.metadata.General.title = str(da.name)
    if hasattr(da.data, "dask"):
        signal = signal.as_lazy()
    return signal


def atoms_to_markers(atoms: pd.DataFrame, signal=None, *, by: str = "label", pixel_size: float | None = None,
                     size: float = 8.0) -> list:
    """Atoms as HyperSpy ``Points`` markers: one marker per value of ``by``, frame by frame.

    Parameters
    ----------
    atoms : DataFrame
        ``y``, ``x`` (px), ``by`` and, for movies, ``frame``.
    signal : hyperspy Signal2D, optional
        The signal they will be drawn on: positions are put in its signal axes' units (offset +
        px × scale); movies get one set of points per navigation index. Without it: nm when
        ``pixel_size`` (or ``atoms.attrs["pixel_size"]``) is known, else px, one frame.
    by : str
        Column whose values get their own marker (and colour).
    pixel_size : float, optional
        nm/px when no signal is given.
    size : float
        Marker size, points.

    Returns
    -------
    list of hyperspy.api.plot.markers.Points
        Add them with ``signal.add_marker(markers, permanent=True)`` (saved with the signal).

    Raises
    ------
    MissingDependencyError
        HyperSpy is not installed.
    InputError
        Missing columns.

    Examples
    --------
    >>> s = da.stem.to_hyperspy()                                            # doctest: +SKIP
    >>> s.add_marker(atoms_to_markers(atoms, s), permanent=True)             # doctest: +SKIP
    """
    hs = _hs()
    missing = [c for c in ("y", "x", by) if c not in atoms.columns]
    if missing:
        raise InputError(f"the atoms table lacks {missing}; atoms_to_markers needs y, x (px) and {by!r}")
    if signal is not None:
        sx, sy = signal.axes_manager.signal_axes[:2]
        to_x = lambda v: sx.offset + v * sx.scale      # noqa: E731
        to_y = lambda v: sy.offset + v * sy.scale      # noqa: E731
        nav = signal.axes_manager.navigation_shape[::-1]     # array order
    else:
        ps = pixel_size if pixel_size is not None else atoms.attrs.get("pixel_size") or 1.0
        to_x = to_y = lambda v: v * ps                  # noqa: E731
        nav = ()
    movie = "frame" in atoms.columns and len(nav) == 1
    colours = {"lattice": "yellow", "dopant": "red", "vacancy": "cyan"}
    palette = iter(["magenta", "orange", "lime", "white", "blue", "pink"])
    out = []
    values = atoms[by].astype(str)
    for v in sorted(values.unique()):
        t = atoms[values == v]
        colour = colours.get(v) or next(palette, "white")
        if movie:
            offsets = np.empty(nav, dtype=object)
            first = int(atoms["frame"].min())
            groups = dict(tuple(t.groupby("frame")))
            for i in range(nav[0]):
                g = groups.get(first + i)
                offsets[i] = (np.column_stack([to_x(g["x"].to_numpy()), to_y(g["y"].to_numpy())])
                              if g is not None else np.empty((0, 2)))
        else:
            offsets = np.column_stack([to_x(t["x"].to_numpy()), to_y(t["y"].to_numpy())])
        marker = hs.plot.markers.Points(offsets=offsets, sizes=size, color=colour)
        marker.name = f"atoms_{v}"           # one named marker per value, kept apart when saved
        out.append(marker)
    return out

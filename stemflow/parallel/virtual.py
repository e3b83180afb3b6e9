"""Virtual detectors: 4D-STEM diffraction patterns → images, chunk by chunk.

A virtual detector is a weight per detector pixel (a mask, :mod:`stemflow.detectors`); the image
is, at every probe position, the sum of the pattern times the weights. The sums run over each Dask chunk of whole
patterns with :func:`dask.array.blockwise`, so the 4D data are read once, a chunk at a time, and
never held whole in memory; the result is the small (scan_y, scan_x) image (or a stack of them for
5-D data). Angles are in mrad when the data carry ``attrs["k_pixel_size"]`` (mrad/px), else in
detector pixels.
"""

from __future__ import annotations

import dask.array as dsa
import numpy as np
import xarray as xr

from ..detectors import DETECTORS, com_weights, detector_mask, reduce_patterns
from ..errors import InputError

__all__ = ["virtual_image", "center_of_mass"]

def _as_4d(data):
    """(DataArray with canonical dims, k_pixel_size) from what the virtual detector accepts."""
    if not isinstance(data, xr.DataArray):
        from ..io import open_stem

        arr = np.asarray(data) if not isinstance(data, dsa.Array) else data
        if arr.ndim not in (4, 5):
            raise InputError(f"a virtual detector needs 4D-STEM data (scan_y, scan_x, k_y, k_x) or 5-D with a "
                             f"frame axis first; got shape {arr.shape}")
        import warnings

        from ..errors import StemflowWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StemflowWarning)
            data = open_stem(arr, check_finite=False)
    dims = tuple(data.dims)
    if dims not in (("scan_y", "scan_x", "k_y", "k_x"), ("frame", "scan_y", "scan_x", "k_y", "k_x")):
        raise InputError(f"a virtual detector needs dims (scan_y, scan_x, k_y, k_x) or (frame, scan_y, scan_x, "
                         f"k_y, k_x); got {dims}. Open the data with stemflow.open_stem, which names them")
    if np.dtype(data.dtype).kind not in "iuf":
        raise InputError(f"4D-STEM data of dtype {data.dtype} cannot be summed; convert to a real type first")
    return data


def _weights(data, detector, inner, outer, center, k_pixel_size):
    shape = (data.sizes["k_y"], data.sizes["k_x"])
    kps = k_pixel_size if k_pixel_size is not None else data.attrs.get("k_pixel_size")
    if isinstance(detector, (np.ndarray, list, tuple)) and not isinstance(detector, str):
        mask = np.asarray(detector)
        if mask.shape != shape:
            raise InputError(f"the detector mask has shape {mask.shape} but the patterns are {shape} (k_y, k_x)")
        if not np.isfinite(mask.astype(np.float64)).all():
            raise InputError("the detector mask holds NaN or Inf weights; use 0/1 or finite weights")
        return mask, "mask"
    return detector_mask(shape, detector, inner=inner, outer=outer, k_pixel_size=kps, center=center), str(detector)


def _contract(x: dsa.Array, weights: np.ndarray) -> dsa.Array:
    """Blockwise sums over the last two axes of ``x`` with ``weights`` (k_y, k_x, m)."""
    nd = x.ndim
    if len(x.chunks[-2]) > 1 or len(x.chunks[-1]) > 1:
        x = x.rechunk({nd - 2: -1, nd - 1: -1})
    w = dsa.from_array(weights.astype(np.float64), chunks=-1, name=False)
    lead = "abc"[:nd - 2]
    # concatenate=False: the one block along k_y, k_x reaches the kernel as it was read; with
    # concatenate=True Dask copies every chunk once more before the sums (a fifth of the time)
    return dsa.blockwise(_reduce_block, lead + "m", x, lead + "kl", w, "klm", concatenate=False,
                         dtype=np.float64, meta=np.empty((0,) * (nd - 1), np.float64))


def _reduce_block(blocks, weights):
    """:func:`reduce_patterns` on the single block Dask passes, nested in lists, along the
    contracted k_y, k_x axes (:func:`_contract` makes each of them one chunk)."""
    while isinstance(blocks, list):
        (blocks,) = blocks
    while isinstance(weights, list):
        (weights,) = weights
    return reduce_patterns(blocks, weights)


def _image_coords(data):
    coords = {}
    for old, new in (("scan_y", "y"), ("scan_x", "x"), ("frame", "frame")):
        if old in data.coords:
            c = data.coords[old]
            coords[new] = xr.Variable(new, c.values, c.attrs)
    return coords


def virtual_image(data, detector="haadf", *, inner=None, outer=None, center=None, k_pixel_size=None) -> xr.DataArray:
    """Image of a virtual detector over 4D-STEM data, computed lazily chunk by chunk.

    Parameters
    ----------
    data : xarray.DataArray, dask or numpy array
        4D-STEM ``(scan_y, scan_x, k_y, k_x)`` or ``(frame, scan_y, scan_x, k_y, k_x)``, as
        :func:`stemflow.open_stem` gives it; arrays are opened with it first.
    detector : str or ndarray
        A named annular detector (:data:`DETECTORS`: ``bf``, ``abf``, ``adf``, ``maadf``,
        ``haadf``), ``"annular"`` with ``inner``/``outer``, or a (k_y, k_x) weight mask.
    inner, outer : float, optional
        Collection angles, mrad when calibrated (``attrs["k_pixel_size"]``), else detector px.
    center : (float, float), optional
        Pattern centre, detector px (default: the middle of the detector).
    k_pixel_size : float, optional
        mrad/px; overrides ``attrs["k_pixel_size"]``.

    Returns
    -------
    xarray.DataArray of float64
        Dims ``(y, x)`` or ``(frame, y, x)``, dask-backed (call ``.compute()``), coords and
        ``attrs["pixel_size"]`` (nm/px) carried over from the scan, ``attrs["detector"]`` and
        ``attrs["detector_mask_px"]`` (pixels in the mask). Ready for :func:`stemflow.find_atoms`.

    Examples
    --------
    >>> da = stemflow.open_stem("scan.zarr")                           # doctest: +SKIP
    >>> img = stemflow.parallel.virtual_image(da, "adf", inner=60, outer=120).compute()  # doctest: +SKIP
    """
    data = _as_4d(data)
    mask, name = _weights(data, detector, inner, outer, center, k_pixel_size)
    x = data.data if isinstance(data.data, dsa.Array) else dsa.from_array(data.data, chunks="auto")
    out = _contract(x, np.asarray(mask, np.float64)[..., None])[..., 0]
    dims = ("frame", "y", "x") if data.ndim == 5 else ("y", "x")
    attrs = {k: v for k, v in data.attrs.items() if k in ("pixel_size", "pixel_size_units")}
    attrs.update(detector=name, units="counts", detector_mask_px=int(np.count_nonzero(mask)))
    if inner is not None or outer is not None or name in DETECTORS:
        lo, hi = DETECTORS.get(name, (inner, outer))
        attrs["detector_angles"] = [float(inner if inner is not None else lo), float(outer if outer is not None else hi)]
    return xr.DataArray(out, dims=dims, coords=_image_coords(data), attrs=attrs, name=name)


def center_of_mass(data, *, mask=None, center=None, k_pixel_size=None) -> xr.DataArray:
    """Centre of mass of each diffraction pattern relative to the pattern centre.

    Parameters
    ----------
    data : xarray.DataArray, dask or numpy array
        4D-STEM data as for :func:`virtual_image`.
    mask : ndarray of bool, optional
        Detector pixels to include (k_y, k_x); default all.
    center : (float, float), optional
        Pattern centre, detector px (default the middle of the detector).
    k_pixel_size : float, optional
        mrad/px; overrides ``attrs["k_pixel_size"]``.

    Returns
    -------
    xarray.DataArray of float64
        Dims ``(component, y, x)`` (or ``(component, frame, y, x)``) with ``component`` =
        ``com_y``, ``com_x``: the shift in mrad when calibrated, else in detector px
        (``attrs["units"]``). NaN where a pattern has no counts inside the mask.

    Examples
    --------
    >>> import stemflow
    >>> scan = stemflow.simulate_4d("graphene", scan_shape=(16, 16), seed=0)
    >>> com = stemflow.center_of_mass(scan.data)
    >>> com.dims, com.attrs["units"]
    (('component', 'y', 'x'), 'px')
    """
    data = _as_4d(data)
    kps = k_pixel_size if k_pixel_size is not None else data.attrs.get("k_pixel_size")
    w = com_weights((data.sizes["k_y"], data.sizes["k_x"]), mask=mask, center=center, k_pixel_size=kps)
    x = data.data if isinstance(data.data, dsa.Array) else dsa.from_array(data.data, chunks="auto")
    s = _contract(x, w)
    total = s[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        com = dsa.stack([s[..., 1] / total, s[..., 2] / total])
    dims = ("component", "frame", "y", "x") if data.ndim == 5 else ("component", "y", "x")
    coords = {"component": ["com_y", "com_x"], **_image_coords(data)}
    attrs = {k: v for k, v in data.attrs.items() if k in ("pixel_size", "pixel_size_units")}
    attrs["units"] = "mrad" if kps else "px"
    return xr.DataArray(com, dims=dims, coords=coords, attrs=attrs, name="center_of_mass")

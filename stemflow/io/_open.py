"""open_stem: validation and normalisation of every source; finite checks; describe."""

from __future__ import annotations

import math
import os
import warnings

import dask.array as dsa
from dask.utils import format_bytes
import numpy as np
import xarray as xr

from ..errors import InputError, StemflowWarning
from ._hyperspy import from_hyperspy, is_hyperspy_signal
from ._common import (
    GENERIC_DIM, MRAD_PER, NM_PER, AUTO_CHECK_FINITE_BYTES, CANONICAL_DIMS, DIM_ALIASES, MAX_CHUNK_MB,
    MB, SUPPORTED_EXTENSIONS, TARGET_CHUNK_MB, nbytes_on_disk, positive_option, unit_factor,
)
from ._read import read_path, zarr_dims


# ----------------------------------------------------------------------------- normalisation
def _check_dtype(dtype):
    kind = np.dtype(dtype).kind
    if kind in "iuf":
        return
    if kind == "c":
        fix = "take the magnitude first: np.abs(data) (or data.real)"
    elif kind == "b":
        fix = "convert it first: data.astype('uint8')"
    else:
        fix = "convert it to an integer or float array first"
    raise InputError(f"data of dtype {np.dtype(dtype)} is not a real number type stemflow can use; {fix}")


def _canonical_dims(names, ndim):
    """Map names to canonical dims. Returns (new names in the data's order, warning or None)."""
    canon = CANONICAL_DIMS[ndim]
    table = DIM_ALIASES[ndim >= 4]
    lookup = {a: c for c, aliases in table.items() if c in canon for a in aliases}
    mapped = []
    for n in names:
        key = str(n).strip().lower()
        mapped.append(None if GENERIC_DIM.match(key) else lookup.get(key, "?"))
    known = [m for m in mapped if m is not None]
    if "?" not in known and len(set(known)) == len(known):
        free = iter(c for c in canon if c not in known)
        return [m if m is not None else next(free) for m in mapped], None
    return list(canon), (
        f"dims {tuple(names)} are not all names stemflow knows; taking them by position as "
        f"{canon}. If that is wrong, rename them first (da.rename(...)); see docs/io.md for the "
        "accepted names"
    )


def _rename_dims(arr, new):
    old = list(arr.dims)
    if old == list(new):
        return arr
    tmp = {o: f"__stemflow_{i}" for i, o in enumerate(old)}
    arr = arr.rename(tmp)
    return arr.rename({tmp[o]: n for o, n in zip(old, new)})


def _spacing(coord, table):
    """(spacing in the table's unit, factor) of a uniform 1-D numeric coord with known units."""
    factor = unit_factor(coord.attrs.get("units"), table)
    values = np.asarray(coord.values)
    if factor is None or values.dtype.kind not in "iuf" or values.ndim != 1:
        return None
    if values.size < 2:
        return math.nan, factor
    steps = np.diff(values.astype(np.float64))
    if not np.allclose(steps, steps[0], rtol=1e-6, atol=0) or steps[0] <= 0:
        return None
    return float(steps[0]) * factor, factor


def _calibrate(arr, dims, override, attr, units_attr, table, unit, warn_square=False):
    """Coords of ``dims`` as index × size in ``unit`` (kept when already so); returns the size."""
    size = None
    if override is not None:
        size = positive_option(override, attr, f"{unit}/px")
    elif arr.attrs.get(attr) is not None:
        factor = unit_factor(arr.attrs.get(units_attr, unit), table)
        if factor is None:
            raise InputError(f"attrs[{units_attr!r}] = {arr.attrs[units_attr]!r} is not a unit stemflow "
                             f"knows; use {unit} (or one of {', '.join(table)}) or pass {attr}= in {unit}/px")
        size = positive_option(arr.attrs[attr], f"attrs[{attr!r}]", f"{arr.attrs.get(units_attr, unit)}/px") * factor
    else:
        for d in reversed(dims):
            sp = _spacing(arr[d], table) if d in arr.coords else None
            if sp and math.isfinite(sp[0]):
                size = sp[0]
                break
    coords = {}
    for d in dims:
        n = arr.sizes[d]
        sp = _spacing(arr[d], table) if d in arr.coords and override is None else None
        if size is None:
            old = arr.coords[d] if d in arr.coords else None
            if old is None or old.attrs.get("units") != "px" or not np.array_equal(old.values, np.arange(n)):
                coords[d] = xr.Variable(d, np.arange(n), {"units": "px"})
        elif sp and (math.isnan(sp[0]) or math.isclose(sp[0], size, rel_tol=1e-6)):
            if sp[1] != 1.0:
                coords[d] = xr.Variable(d, arr[d].values * sp[1], {**arr[d].attrs, "units": unit})
        else:
            if sp and warn_square:
                warnings.warn(f"the {d} coords step by {sp[0]:.6g} {unit}, not pixel_size = {size:.6g} "
                              f"{unit}/px; stemflow assumes square pixels and rebuilt the {d} coords "
                              f"as index × pixel_size", StemflowWarning, stacklevel=4)
            coords[d] = xr.Variable(d, np.arange(n) * size, {"units": unit})
    if coords:
        arr = arr.assign_coords(coords)
    if size is None:
        arr.attrs.pop(attr, None)
        arr.attrs.pop(units_attr, None)
    else:
        arr.attrs[attr], arr.attrs[units_attr] = float(size), unit
    return arr, size


def chunk_plan(shape, dims, itemsize, target_bytes, store=None):
    """Chunks by dim: the last two dims whole; leading dims grouped C-order to ~``target_bytes``.

    The innermost leading dims are kept whole while they fit (a scan row is one contiguous read);
    the first that does not is sized by :func:`dask.array.core.normalize_chunks` (``"auto"``, in
    multiples of the store's chunks where that fits) and the dims before it get 1. A store chunk
    larger than that is kept whole up to ``MAX_CHUNK_MB``, so no stored chunk is read by two tasks.
    """
    from dask.array.core import normalize_chunks

    spec, split = [-1] * len(shape), None
    step = math.prod(shape[-2:]) * itemsize  # bytes per index of dim i (with everything after it)
    for i in reversed(range(len(shape) - 2)):
        if shape[i] == 1 or step * shape[i] <= target_bytes:
            step *= shape[i]
            continue
        spec[:i], spec[i], split = [1] * i, "auto", i
        break
    previous = tuple((store or {}).get(d, n) for d, n in zip(dims, shape))
    chunks = normalize_chunks(tuple(spec), tuple(shape), limit=target_bytes, dtype=np.dtype(f"V{itemsize}"),
                              previous_chunks=previous)
    plan = {d: c[0] for d, c in zip(dims, chunks)}
    if split is not None:
        s = (store or {}).get(dims[split])
        if s and plan[dims[split]] < s < shape[split] and s * step <= MAX_CHUNK_MB * MB:
            plan[dims[split]] = s
    return plan


def _user_chunks(chunks, dims, plan):
    if isinstance(chunks, bool) or not isinstance(chunks, (int, dict)):
        raise InputError(f"chunks= must be an int (frames per chunk) or a dict by dim name, e.g. "
                         f"{{{dims[0]!r}: 16}}; got {chunks!r}")
    if isinstance(chunks, int):
        if len(dims) == 2:
            raise InputError(f"chunks={chunks} counts frames, but a 2-D image {dims} has none; pass a "
                             "dict such as {'y': 1024, 'x': 1024} to tile it")
        if chunks < 1:
            raise InputError(f"chunks= must be at least 1 (frames per chunk); got {chunks}")
        chunks = {dims[0]: chunks, **{d: -1 for d in dims[1:-2]}}
    unknown = [k for k in chunks if k not in dims]
    if unknown:
        raise InputError(f"chunks= names dims {unknown} that the data does not have; its dims are "
                         f"{dims}")
    return {**plan, **chunks}


def _normalise(arr, *, pixel_size=None, chunks=None, check_finite="auto", store=None, source=None):
    """Validate and normalise a DataArray (lazy, dask or numpy data) as documented in open_stem."""
    where = f" in {source}" if source else ""
    _check_dtype(arr.dtype)
    if arr.ndim not in CANONICAL_DIMS:
        raise InputError(
            f"data{where} has {arr.ndim} dims {tuple(arr.dims)} of shape {tuple(arr.shape)}; stemflow "
            "expects 2-D (y, x), 3-D (frame, y, x), 4-D (scan_y, scan_x, k_y, k_x) or 5-D (frame, "
            "scan_y, scan_x, k_y, k_x); select or squeeze dims first (da.isel(...), da.squeeze())"
        )
    new, warning = _canonical_dims(arr.dims, arr.ndim)
    if warning:
        warnings.warn(warning, StemflowWarning, stacklevel=3)
    store = {n: store[o] for o, n in zip(arr.dims, new) if o in store} if store else None
    arr = _rename_dims(arr, new).transpose(*CANONICAL_DIMS[arr.ndim])
    dims = arr.dims
    empty = [d for d in dims if arr.sizes[d] == 0]
    if empty:
        raise InputError(f"data{where} is empty: dim {empty[0]!r} has length 0 (shape "
                         f"{tuple(arr.shape)}); check the selection or file that produced it")
    arr = arr.copy(deep=False)
    arr.attrs = dict(arr.attrs)
    real = ("y", "x") if arr.ndim <= 3 else ("scan_y", "scan_x")
    arr, ps = _calibrate(arr, real, pixel_size, "pixel_size", "pixel_size_units", NM_PER, "nm", True)
    if ps is None:
        warnings.warn(
            f"no pixel size found{where}; coords are in pixels (units 'px') and attrs has no "
            "'pixel_size'. Pass open_stem(..., pixel_size=<nm per pixel>) or set attrs['pixel_size'] "
            "(nm/px) to calibrate", StemflowWarning, stacklevel=3)
    if arr.ndim >= 4:
        arr, _ = _calibrate(arr, ("k_y", "k_x"), None, "k_pixel_size", "k_pixel_size_units", MRAD_PER, "mrad")
    if "frame" in dims:
        old = arr.coords["frame"] if "frame" in arr.coords else None
        if old is None or old.dtype.kind not in "iu":
            if old is not None and "time" not in arr.coords:
                arr = arr.assign_coords(time=("frame", old.values, old.attrs))
            arr = arr.assign_coords(frame=np.arange(arr.sizes["frame"]))
    # chunks: whole frames, ~128 MB
    plan = chunk_plan(arr.shape, dims, arr.dtype.itemsize, TARGET_CHUNK_MB * MB, store)
    if chunks is not None and chunks != "auto":
        plan = _user_chunks(chunks, dims, plan)
    elif store and any(store.get(d, arr.sizes[d]) < arr.sizes[d] for d in dims[-2:]):
        split = tuple(store.get(d, arr.sizes[d]) for d in dims)
        fix = ("Re-write it once with stemflow.to_zarr(da, path) to fix this for good" if source else
               "Chunk it in whole frames where it is made to avoid this")
        warnings.warn(
            f"the data{where} is chunked {split}, which splits each {'pattern' if arr.ndim >= 4 else 'frame'} "
            f"{tuple(arr.shape[-2:])}; rechunking to whole frames {tuple(plan.values())} (more reads and "
            f"memory per task). {fix}", StemflowWarning, stacklevel=3)
    arr = arr.chunk(plan)
    arr.encoding = {"source": source, "preferred_chunks": store} if source else {}
    if not store:
        arr.encoding.pop("preferred_chunks", None)
    if check_finite not in ("auto", True, False):
        raise InputError(f"check_finite must be 'auto', True or False; got {check_finite!r}")
    if check_finite is True or (check_finite == "auto" and arr.dtype.kind == "f" and arr.nbytes < AUTO_CHECK_FINITE_BYTES):
        bad = find_nonfinite_frames(arr)
        if bad:
            raise InputError(_nonfinite_message(bad, dims[0] if arr.ndim >= 3 else None))
    return arr


def _store_chunks_of(data, dims):
    if isinstance(data, dsa.Array):
        return {d: c[0] for d, c in zip(dims, data.chunks)}
    return None


def open_stem(source, *, pixel_size=None, dataset=None, chunks=None, check_finite="auto", check_chunks=True):
    """Open STEM data lazily as a validated, dask-backed :class:`xarray.DataArray`.

    Parameters
    ----------
    source : str, os.PathLike, numpy.ndarray, dask.array.Array, xarray.DataArray or HyperSpy signal
        A Zarr v2/v3 store (bare array, or group such as one written by ``xarray.Dataset.to_zarr``
        or :func:`to_zarr`, or HyperSpy's ``.zspy``), a ``.npy`` (memory-mapped), ``.tif``/``.tiff``,
        ``.h5``/``.hdf5``/``.hspy`` (HyperSpy's axes give the dims and calibration),
        ``.dm3``/``.dm4``, ``.emd`` or ``.mrc`` file (these need rosettasciio:
        ``pip install "stemflow[io]"``), data already in memory, or a HyperSpy signal (lazy or not;
        HyperSpy itself is not required otherwise).
    pixel_size : float, optional
        Real-space pixel size in nm/px (scan step for 4D-STEM). Overrides the file's calibration.
    dataset : str or int, optional
        Which array to open: the array name in a Zarr group (``"sub/image"`` for nested groups),
        the internal path in an HDF5 file, the series index in a TIFF, the signal index or title
        in a DM/EMD file. Without it: the only array of ≥2 dims, else (Zarr) one named
        ``image``, ``data`` or ``signal``, else an error listing the candidates.
    chunks : int or dict, optional
        Override the default chunks. An int is the number of frames per chunk (scan rows for
        4-D data), the other leading dims whole; a dict maps dim names to anything
        :meth:`xarray.DataArray.chunk` accepts. Default: whole frames (whole diffraction
        patterns), frames grouped to ~128 MB a chunk (32–256 MB).
    check_finite : {"auto", True, False}
        Scan for NaN/Inf frames and raise :class:`InputError` naming them. ``"auto"`` scans float
        data under ~1 GB only (integer data is always finite); larger data are checked chunk by
        chunk by the pipeline (:func:`check_finite`), or explicitly with
        :func:`find_nonfinite_frames`.
    check_chunks : bool
        Zarr stores: list the store once and refuse it when chunks were never written (an
        interrupted write: they would read as blank frames), naming the frames.

    Returns
    -------
    xarray.DataArray
        Dims ``(y, x)``, ``(frame, y, x)``, ``(scan_y, scan_x, k_y, k_x)`` or ``(frame, scan_y,
        scan_x, k_y, k_x)``. ``attrs["pixel_size"]`` (nm/px) and ``attrs["pixel_size_units"] =
        "nm"`` when known; for 4D, ``attrs["k_pixel_size"]`` (mrad/px) when known. Coords: see
        :mod:`stemflow.io`. ``encoding["source"]`` is the path; ``encoding["preferred_chunks"]`` the
        store's own chunks when known.

    Raises
    ------
    InputError
        Path not found, wrong number of dims, non-numeric or complex dtype, empty data, NaN/Inf
        frames, Zarr chunks never written, bad ``chunks=``/``dataset=``/``pixel_size=``.
    FormatError
        Unknown file format.
    MissingDependencyError
        The reader's optional package (h5py, tifffile, rosettasciio) is missing.

    Warns
    -----
    StemflowWarning
        No pixel size (coords are then in px); store chunks that split frames (rechunked);
        dim names that had to be taken by position.

    Notes
    -----
    Nothing is read except metadata, index coords and, for small float data, the finite check.
    Dim names in the store (xarray's ``_ARRAY_DIMENSIONS``, zarr v3 ``dimension_names``, HDF5
    dimension labels, DM/EMD axis names) are used when they are canonical or known aliases
    (:data:`DIM_ALIASES`: e.g. ``time``/``t`` → ``frame``, ``ky`` → ``k_y``); names like
    ``dim_0`` count as unnamed and are taken by position.

    Examples
    --------
    >>> import numpy as np, stemflow
    >>> da = stemflow.open_stem(np.zeros((4, 64, 64), np.float32) + 1, pixel_size=0.0125)
    >>> da.dims, da.attrs["pixel_size"], float(da.x[1])
    (('frame', 'y', 'x'), 0.0125, 0.0125)
    """
    store, name, src = None, None, None
    if isinstance(source, xr.DataArray):
        arr, name = source, source.name
        store = _store_chunks_of(source.data, source.dims)
    elif isinstance(source, (np.ndarray, dsa.Array)):
        arr = xr.DataArray(source, dims=[f"dim_{i}" for i in range(source.ndim)])
        store = _store_chunks_of(source, arr.dims)
    elif isinstance(source, (str, os.PathLike)):
        arr, store, name = read_path(source, dataset, check_chunks)
        src = os.fspath(source)
    elif is_hyperspy_signal(source):            # lazy signals stay lazy
        arr = from_hyperspy(source)
        name = arr.name
        store = _store_chunks_of(arr.data, arr.dims)
    elif type(source).__module__.startswith("zarr") and hasattr(source, "shape"):
        dims = [d or f"dim_{i}" for i, d in enumerate(zarr_dims(source) or (None,) * source.ndim)]
        attrs = {k: v for k, v in source.attrs.asdict().items() if k != "_ARRAY_DIMENSIONS"}
        arr = xr.DataArray(dsa.from_zarr(source), dims=dims, attrs=attrs)
        store = _store_chunks_of(arr.data, arr.dims)
    else:
        raise InputError(f"cannot open a {type(source).__name__}; pass a path ({', '.join(SUPPORTED_EXTENSIONS)}), "
                         "a NumPy or dask array, an xarray.DataArray or a HyperSpy signal")
    out = _normalise(arr, pixel_size=pixel_size, chunks=chunks, check_finite=check_finite,
                     store=store, source=src)
    out.name = name
    return out


# ----------------------------------------------------------------------------- finite checks
def _nonfinite_message(frames, dim="frame"):
    shown = ", ".join(str(f) for f in frames[:20]) + (f", … ({len(frames)} in all)" if len(frames) > 20 else "")
    if dim is None:
        return ("the image contains NaN or Inf; fill them first, e.g. da.fillna(0) or "
                "da.where(np.isfinite(da), 0)")
    what = "scan rows" if dim == "scan_y" else "frames"
    return (f"{what} {shown} contain NaN or Inf; drop them with da.isel({dim}=...) or fill them "
            "(e.g. da.fillna(0) or da.where(np.isfinite(da), 0))")


def find_nonfinite_frames(data):
    """Indices of frames that hold NaN or Inf, in one streaming pass (a dask reduction per frame).

    Parameters
    ----------
    data : xarray.DataArray, dask.array.Array or numpy.ndarray
        Canonical-dims data. The "frame" is the index along the first dim for 3-D and 5-D data
        (``frame``), scan rows (``scan_y``) for 4-D data; a 2-D image is one frame, 0.

    Returns
    -------
    list of int
        Positional indices (use with ``da.isel(frame=...)``), ascending; empty for integer data.

    Examples
    --------
    >>> import numpy as np
    >>> from stemflow.io import find_nonfinite_frames
    >>> stack = np.ones((4, 8, 8), np.float32)
    >>> stack[2, 3, 3] = np.nan
    >>> find_nonfinite_frames(stack)
    [2]
    >>> find_nonfinite_frames(np.ones((3, 8, 8), np.uint8))        # integer data is always finite
    []
    """
    x = data.data if isinstance(data, xr.DataArray) else data
    if np.dtype(x.dtype).kind not in "fc":
        return []
    x = x if isinstance(x, dsa.Array) else dsa.from_array(np.asarray(x), chunks=-1)
    if x.ndim < 3:
        return [0] if not bool(dsa.isfinite(x).all().compute()) else []
    ok = dsa.isfinite(x).all(axis=tuple(range(1, x.ndim))).compute()
    return [int(i) for i in np.flatnonzero(~ok)]


def check_finite(block, frame_offset=0, *, dim="frame"):
    """Raise :class:`InputError` naming the frames of ``block`` that hold NaN or Inf.

    Cheap per-chunk check for the pipeline (the block is in memory already).

    Parameters
    ----------
    block : numpy.ndarray
        One chunk; axis 0 is the frame axis for ≥3-D blocks, a 2-D block is one frame.
    frame_offset : int
        Index of the block's first frame in the whole array, so messages name global frames.
    dim : str
        Name of the frame dim for the message (``"frame"``, or ``"scan_y"`` for 4-D data).

    Returns
    -------
    None
        When every value of ``block`` is finite (integer blocks always are).

    Raises
    ------
    InputError
        The block holds NaN or Inf; the message names the frames (``frame_offset`` + index).

    Examples
    --------
    >>> import numpy as np
    >>> from stemflow.errors import InputError
    >>> from stemflow.io import check_finite
    >>> block = np.ones((4, 8, 8), np.float32)
    >>> check_finite(block) is None
    True
    >>> block[2, 0, 0] = np.inf
    >>> try:
    ...     check_finite(block, frame_offset=100)
    ... except InputError as e:
    ...     print(str(e).split(";")[0])
    frames 102 contain NaN or Inf
    """
    block = np.asarray(block)
    if block.dtype.kind not in "fc":
        return
    if block.ndim < 3:
        bad = [] if np.isfinite(block).all() else [0]
    else:
        bad = np.flatnonzero(~np.isfinite(block).all(axis=tuple(range(1, block.ndim)))).tolist()
    if bad:
        raise InputError(_nonfinite_message([frame_offset + int(b) for b in bad], dim))


# ----------------------------------------------------------------------------- describe
def _summary(arr, source=None, on_disk=None):
    lines = [f"source:       {source or 'in-memory DataArray'}"]
    if arr.name is not None:
        lines.append(f"name:         {arr.name}")
    lines += [
        "dims:         " + ", ".join(f"{d}: {n}" for d, n in arr.sizes.items()),
        f"shape:        {tuple(arr.shape)}",
        f"dtype:        {arr.dtype}",
    ]
    if isinstance(arr.data, dsa.Array):
        chunk = tuple(c[0] for c in arr.data.chunks)
        per = math.prod(chunk) * arr.dtype.itemsize
        lines.append(f"chunks:       {chunk}, {format_bytes(per)} per chunk, {arr.data.npartitions} chunk{'s' if arr.data.npartitions != 1 else ''}")
    else:
        lines.append("chunks:       none (in memory)")
    stored = arr.encoding.get("preferred_chunks")
    if stored:
        lines.append(f"stored as:    {tuple(stored.get(d, n) for d, n in arr.sizes.items())} chunks on disk")
    ps = arr.attrs.get("pixel_size")
    lines.append(f"pixel size:   {ps:.6g} nm/px" if ps is not None else "pixel size:   unknown")
    if arr.ndim >= 4:
        kps = arr.attrs.get("k_pixel_size")
        lines.append(f"k pixel size: {kps:.6g} mrad/px" if kps is not None else "k pixel size: unknown")
    lines.append(f"in memory:    {format_bytes(arr.nbytes)} ({arr.nbytes} bytes)")
    if on_disk is not None:
        lines.append(f"on disk:      {format_bytes(on_disk)} ({on_disk} bytes)")
    return "\n".join(lines)


def describe(source, *, dataset=None):
    """A text summary of a dataset, as printed by ``stemflow info PATH``.

    Dims, shape, dtype, chunks (shape, bytes per chunk, number of chunks), the store's own chunks
    when known, pixel size in nm/px (or "unknown"), k pixel size in mrad/px for 4-D data, size in
    memory and, for paths, size on disk (all files of the store). MB = 10**6 bytes.
    Reads only metadata; a DataArray is described as it is (not normalised).

    Parameters
    ----------
    source : str, os.PathLike, numpy.ndarray, dask.array.Array or xarray.DataArray
        Anything :func:`open_stem` opens.
    dataset : str or int, optional
        Which array of a multi-array file to describe, as for :func:`open_stem`.

    Returns
    -------
    str
        One ``key: value`` line per item, without a trailing newline.

    Examples
    --------
    >>> import numpy as np
    >>> from stemflow.io import describe
    >>> print(describe(np.zeros((4, 32, 32), np.float32)))
    source:       in-memory DataArray
    dims:         frame: 4, y: 32, x: 32
    shape:        (4, 32, 32)
    dtype:        float32
    chunks:       (4, 32, 32), 16.00 kiB per chunk, 1 chunk
    pixel size:   unknown
    in memory:    16.00 kiB (16384 bytes)
    """
    if isinstance(source, xr.DataArray):
        return _summary(source, source.encoding.get("source"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StemflowWarning)
        arr = open_stem(source, dataset=dataset, check_finite=False)
    if isinstance(source, (str, os.PathLike)) and "://" not in os.fspath(source):
        return _summary(arr, os.fspath(source), nbytes_on_disk(source))
    return _summary(arr)

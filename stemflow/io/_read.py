"""Readers: each format to a lazy DataArray (no data read), its store chunks and its name."""

from __future__ import annotations

import importlib
import itertools
import os
import threading
import warnings
from pathlib import Path

import dask.array as dsa
import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from ..errors import FormatError, InputError, InputNotFoundError, MissingDependencyError, StemflowWarning
from ._common import (
    DM_EXT, EMD_EXT, H5_EXT, MRC_EXT, IO_EXTRA, MRAD_PER, NM_PER, NPY_EXT, PREFERRED_NAMES,
    TIFF_EXT, SUPPORTED_EXTENSIONS, is_zarr_dir, plain_value, require_module, unit_factor,
)


# ----------------------------------------------------------------------------- lazy file access
class _FileArray(BackendArray):
    """A picklable, lazily read array in a file.

    Only ``(kind, path, key)`` travel with the dask graph; the file is opened on first read in
    each process (so no open HDF5 handle or memmap is ever pickled).
    """

    def __init__(self, kind, path, key, shape, dtype):
        self.kind, self.path, self.key = kind, str(path), key
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self._handle, self._lock = None, threading.Lock()

    def __getstate__(self):
        return {k: self.__dict__[k] for k in ("kind", "path", "key", "shape", "dtype")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._handle, self._lock = None, threading.Lock()

    def __dask_tokenize__(self):
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        return (type(self).__name__, self.kind, self.path, self.key, self.shape, str(self.dtype), stamp)

    def _open(self):
        with self._lock:
            if self._handle is None:
                self._handle = _OPENERS[self.kind](self.path, self.key)
            return self._handle

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._read
        )

    def _read(self, key):
        return np.asarray(self._open()[key])


def _open_tiff(path, series):
    tifffile = require_module("tifffile", "TIFF files")
    try:
        return tifffile.memmap(path, series=series, mode="r")
    except ValueError:  # compressed or not contiguous: read through tifffile's zarr store
        import zarr

        return zarr.open(tifffile.imread(path, aszarr=True, series=series), mode="r")


def _open_h5(path, key):
    return require_module("h5py", "HDF5 files").File(path, "r")[key]


def _open_zarr_array(path, key):
    import zarr

    with read_pipeline():
        return zarr.open_array(store=path, path=key or "", mode="r")


#: Codec pipeline of the Rust ``zarrs`` package for zarr-python, used to read when it is installed:
#: it decodes chunks outside Python's lock, where zarr's own pipeline decodes one chunk at a time
#: (``benchmarks/bench_virtual.py``). ``STEMFLOW_ZARR_PIPELINE=zarr`` reads with zarr's own.
ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"


def read_pipeline():
    """Context in which Zarr arrays are opened for reading: with ``zarrs``' codec pipeline when it
    is importable and not turned off by ``STEMFLOW_ZARR_PIPELINE=zarr``, else zarr's default.

    An array keeps the pipeline it was opened with (also when pickled to a Dask worker), so the
    setting never leaks into the rest of the process. Codecs that ``zarrs`` does not support
    are decoded by zarr's own pipeline for that array.
    """
    import contextlib
    import importlib.util

    import zarr

    if os.environ.get("STEMFLOW_ZARR_PIPELINE", "auto").lower() == "zarr" or importlib.util.find_spec("zarrs") is None:
        return contextlib.nullcontext()
    return zarr.config.set({"codec_pipeline.path": ZARRS_PIPELINE})


_OPENERS = {
    "npy": lambda path, key: np.load(path, mmap_mode="r"),
    "tiff": _open_tiff,
    "h5": _open_h5,
    "zarr": _open_zarr_array,
}


def _lazy(kind, path, key, shape, dtype, dims=None, **kw):
    """A lazily indexed DataArray over :class:`_FileArray` (no data read)."""
    dims = dims or tuple(f"dim_{i}" for i in range(len(shape)))
    var = xr.Variable(dims, indexing.LazilyIndexedArray(_FileArray(kind, path, key, shape, dtype)))
    return xr.DataArray(var, **kw)


# ----------------------------------------------------------------------------- readers
# Each reader returns (DataArray with lazy or dask data, store chunks by dim or None, name).


def _read_npy(path, dataset):
    try:
        arr = np.load(path, mmap_mode="r")
    except ValueError as err:
        raise InputError(
            f"{path} cannot be memory-mapped ({err}); stemflow needs a numeric .npy array: save it "
            "with np.save(path, np.asarray(data, dtype=np.float32))"
        ) from err
    return _lazy("npy", path, None, arr.shape, arr.dtype), None, None


def _read_tiff(path, dataset):
    tifffile = require_module("tifffile", "TIFF files")
    try:
        series = 0 if dataset is None else int(dataset)
    except (TypeError, ValueError):
        raise InputError(f"dataset= for a TIFF is the series index (an int); got {dataset!r}") from None
    with tifffile.TiffFile(path) as tf:
        if not 0 <= series < len(tf.series):
            raise InputError(f"{path} has {len(tf.series)} image series; pass dataset=0 .. "
                             f"{len(tf.series) - 1} to choose one")
        s = tf.series[series]
        if "S" in s.axes and s.shape[s.axes.index("S")] > 1:
            if s.axes.index("S") < s.axes.index("Y"):
                # separate planes: how tifffile stores a (3 or 4, y, x) stack by default — frames,
                # far more often than a colour image in STEM
                warnings.warn(f"{path} stores {s.shape[s.axes.index('S')]} planes as colour samples (axes "
                              f"{s.axes!r}, as tifffile writes a 3- or 4-frame stack by default); reading them as "
                              "frames. If this is a colour image, convert it to greyscale first", StemflowWarning,
                              stacklevel=4)
            else:
                raise InputError(f"{path} holds colour/multi-sample images (axes {s.axes!r}); stemflow "
                                 "needs greyscale: convert it, e.g. keep one channel or the mean")
        attrs = {}
        ps = _tiff_pixel_size(tf.pages[0], tf.imagej_metadata)
        if ps is not None:
            attrs["pixel_size"] = ps
        shape, dtype = s.shape, s.dtype
    return _lazy("tiff", path, series, shape, dtype, attrs=attrs), None, None


def _tiff_pixel_size(page, imagej):
    """nm/px from the X resolution tag: ImageJ ``unit`` or a metric ResolutionUnit. INCH is
    ignored (it is nearly always a screen dpi, not a calibration)."""
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
    if not num or not den:
        return None
    per_px = den / num  # resolution unit per pixel
    factor = unit_factor((imagej or {}).get("unit"), NM_PER)
    if factor is None:
        unit_tag = page.tags.get("ResolutionUnit")
        factor = {3: 1e7, 4: 1e6, 5: 1e3}.get(int(unit_tag.value) if unit_tag else 1)
    return per_px * factor if factor else None


def _read_h5(path, dataset):
    h5py = require_module("h5py", "HDF5 files")
    with h5py.File(path, "r") as f:
        found = []
        f.visititems(lambda n, o: found.append(f"/{n}") if isinstance(o, h5py.Dataset) and o.ndim >= 2 else None)
        if dataset is not None:
            obj = f.get(dataset)
            if not isinstance(obj, h5py.Dataset):
                raise InputError(f"{path} has no dataset {dataset!r}; datasets of ≥2 dims: "
                                 f"{', '.join(found) or 'none'}; pass one of them as dataset=")
        elif len(found) == 1:
            obj = f[found[0]]
        else:
            raise InputError(
                f"{path} holds {len(found)} datasets of ≥2 dims ({', '.join(found) or 'none'}); "
                "pass the one to open as dataset=, e.g. dataset=" + repr(found[0] if found else "/data")
            )
        skip = {"DIMENSION_LIST", "CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LABELS"}
        attrs = {k: plain_value(v) for k, v in obj.attrs.items() if k not in skip}
        dims = [d.label or None for d in obj.dims]
        _hyperspy_axes(obj, dims, attrs)
        key, shape, dtype, chunks = obj.name, obj.shape, obj.dtype, obj.chunks
    names = tuple(d if d else f"dim_{i}" for i, d in enumerate(dims))
    da = _lazy("h5", path, key, shape, dtype, dims=names, attrs=attrs)
    store = dict(zip(names, chunks)) if chunks else None
    return da, store, key.rsplit("/", 1)[-1]


def _hyperspy_axes(obj, dims, attrs):
    """Axis names and pixel size of a HyperSpy .hspy/.hdf5 signal (``axis-i`` groups)."""
    parent = obj.parent
    axes = [parent.get(f"axis-{i}") for i in range(obj.ndim)]
    if obj.name.rsplit("/", 1)[-1] != "data" or any(a is None for a in axes):
        return
    meta = [{k: plain_value(v) for k, v in a.attrs.items()} for a in axes]
    for i, m in enumerate(meta):
        dims[i] = dims[i] or _axis_name(m)
    _calibration_from_axes(meta, attrs)


def _axis_name(meta: dict):
    name = meta.get("name")
    return name if isinstance(name, str) and name and name != "<undefined>" else None


def _zarr_hyperspy_axes(node, parent, name, ndim, attrs):
    """Dim names and calibration of a HyperSpy signal in Zarr (``.zspy``: ``data`` beside
    ``axis-0`` … groups holding name, scale, units); None for other layouts."""
    if name != "data":
        return None
    grp = node[parent] if parent else node
    try:
        metas = [dict(grp[f"axis-{i}"].attrs) for i in range(ndim)]
    except KeyError:
        return None
    _calibration_from_axes(metas, attrs)
    names = [_axis_name(m) for m in metas]
    return names if len(set(n for n in names if n)) == len([n for n in names if n]) else None


def _calibration_from_axes(axes, attrs):
    """Set attrs pixel_size / k_pixel_size from per-axis ``scale`` and ``units`` (array order)."""
    real = [-2, -1] if len(axes) <= 3 else [-4, -3]
    for i in (real[1], real[0]):
        f = unit_factor(axes[i].get("units"), NM_PER)
        if f and axes[i].get("scale"):
            attrs.setdefault("pixel_size", float(axes[i]["scale"]) * f)
            break
    if len(axes) >= 4:
        f = unit_factor(axes[-1].get("units"), MRAD_PER)
        if f and axes[-1].get("scale"):
            attrs.setdefault("k_pixel_size", float(axes[-1]["scale"]) * f)


def _read_rsciio(path, dataset, ext):
    module, what = (("rsciio.digitalmicrograph", "DM3/DM4 files") if ext in DM_EXT else
                    ("rsciio.mrc", "MRC files") if ext in MRC_EXT else ("rsciio.emd", "EMD files"))
    try:
        reader = importlib.import_module(module).file_reader
    except ImportError as err:
        raise MissingDependencyError(
            f"reading {what} needs rosettasciio, which is not installed; install it with: {IO_EXTRA}"
        ) from err
    signals = [s for s in reader(str(path), lazy=True) if np.ndim(s["data"]) >= 2]
    titles = [s.get("metadata", {}).get("General", {}).get("title") or f"#{i}" for i, s in enumerate(signals)]
    listing = ", ".join(f"{i}: {t!r} {tuple(s['data'].shape)}" for i, (t, s) in enumerate(zip(titles, signals)))
    if dataset is not None:
        pick = [i for i, t in enumerate(titles) if t == dataset or str(i) == str(dataset)]
        if not pick:
            raise InputError(f"{path} has no signal {dataset!r}; signals: {listing}; pass an index or title as dataset=")
        sig = signals[pick[0]]
    elif len(signals) == 1:
        sig = signals[0]
    else:
        raise InputError(f"{path} holds {len(signals)} image signals ({listing or 'none'}); "
                         "pass the one to open as dataset= (index or title)")
    axes = sorted(sig["axes"], key=lambda a: a.get("index_in_array", 0))
    attrs = {}
    _calibration_from_axes(axes, attrs)
    data = sig["data"]
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(data, chunks=data.shape)
    dims = tuple(str(a.get("name") or f"dim_{i}") for i, a in enumerate(axes))
    if len(set(dims)) != len(dims):
        dims = tuple(f"dim_{i}" for i in range(len(dims)))
    da = _repack_h5(data, dims)
    if da is None:
        da = xr.DataArray(data, dims=dims)
    da.attrs.update(attrs)
    name = sig.get("metadata", {}).get("General", {}).get("title") or None
    return da, None, name


def _repack_h5(data, dims):
    """rosettasciio's lazy EMD arrays hold an open h5py.Dataset, which cannot be pickled for
    distributed workers. When the array is that dataset up to a transpose (checked on a sample),
    rebuild it over a picklable :class:`_FileArray`; else return None (keep rsciio's array)."""
    try:
        import h5py

        nodes = [getattr(v, "value", v) for v in dict(data.__dask_graph__()).values()]
    except Exception:  # pragma: no cover - no h5py or an unusual graph
        return None
    found = [v for v in nodes if isinstance(v, h5py.Dataset)]
    if len(found) != 1 or 1 in data.shape or found[0].dtype != data.dtype:
        return None
    h5 = found[0]
    kept = [i for i, n in enumerate(h5.shape) if n != 1]
    sample = tuple(slice(0, min(n, 8)) for n in data.shape)
    ref = np.asarray(data[sample])
    if ref.size < 2 or np.ptp(ref) == 0:
        return None
    full = _lazy("h5", h5.file.filename, h5.name, h5.shape, h5.dtype)
    squeezed = full.isel({f"dim_{i}": 0 for i, n in enumerate(h5.shape) if n == 1})
    hits = []
    for perm in itertools.permutations(range(len(kept))):
        if tuple(h5.shape[kept[p]] for p in perm) != data.shape:
            continue
        cand = squeezed.transpose(*(f"dim_{kept[p]}" for p in perm))
        if np.array_equal(cand[sample].values, ref, equal_nan=True):
            hits.append(cand)
    if len(hits) != 1:
        return None
    out = hits[0]
    return out.rename(dict(zip(out.dims, dims)))


def zarr_dims(arr):
    names = arr.metadata.dimension_names if arr.metadata.zarr_format == 3 else arr.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(names) if names and any(names) else None


def zarr_stored_keys(arr) -> set[str]:
    """Keys of the chunks (shards) of a Zarr array that exist in its store (the store is listed
    once; no chunk is read)."""
    from zarr.core.sync import sync

    sp = arr.store_path
    prefix = f"{sp.path}/" if sp.path else ""

    async def _keys():
        return [k async for k in sp.store.list_prefix(prefix)]

    return {k[len(prefix):] for k in sync(_keys())}


def zarr_chunk_rows(arr, start: int, stop: int) -> list[tuple[int, ...]]:
    """Grid coordinates of the stored chunks (shards) holding rows ``start:stop`` of axis 0."""
    step = (arr.shards or arr.chunks)
    grid = [range(-(-n // c)) for n, c in zip(arr.shape, step)]
    first, last = start // step[0], (max(stop, start + 1) - 1) // step[0]
    import itertools

    return [(i, *rest) for i in range(first, last + 1) for rest in itertools.product(*grid[1:])]


def zarr_missing_rows(arr) -> list[tuple[int, int]]:
    """Ranges ``[a, b)`` of axis 0 (frames) some of whose chunks were never written."""
    if arr.size == 0:
        return []
    have = zarr_stored_keys(arr)
    step = (arr.shards or arr.chunks)[0]
    missing = []
    for i in range(-(-arr.shape[0] // step)):
        a, b = i * step, min(arr.shape[0], (i + 1) * step)
        if any(arr.metadata.encode_chunk_key(c) not in have for c in zarr_chunk_rows(arr, a, b)):
            if missing and missing[-1][1] == a:
                missing[-1] = (missing[-1][0], b)
            else:
                missing.append((a, b))
    return missing


def _check_written(arr, path):
    """Refuse a store whose chunks were not all written (they would read as blank frames)."""
    miss = zarr_missing_rows(arr)
    if not miss:
        return
    n = sum(b - a for a, b in miss)
    dim = (zarr_dims(arr) or ("axis 0",))[0] or "axis 0"
    where = ", ".join(f"{a}–{b - 1}" if b - a > 1 else str(a) for a, b in miss[:5])
    raise InputError(f"{path}: {n} of {arr.shape[0]} {dim} entries were never written (indices {where}"
                     f"{' …' if len(miss) > 5 else ''}): their chunks are missing from the store, so they would "
                     "read as blank frames. Finish writing the store, or open only the written part "
                     "(open_stem(..., check_chunks=False) then .isel)")


def zarr_array(path, dataset=None):
    """The Zarr array ``open_stem`` reads from a store: ``(array, key, root node)``, opened with
    :func:`read_pipeline`."""
    with read_pipeline():
        return _zarr_array(path, dataset)


def _zarr_array(path, dataset=None):
    import zarr

    node = zarr.open(store=str(path), mode="r")
    key = ""
    if isinstance(node, zarr.Group):
        arrays = dict(node.arrays())
        coord_names = set()
        for a in arrays.values():
            coord_names.update(zarr_dims(a) or ())
            coord_names.update(str(a.attrs.get("coordinates", "")).split())
        candidates = [n for n, a in arrays.items() if a.ndim >= 2 and n not in coord_names]
        experiments = node.get("Experiments")
        if not candidates and isinstance(experiments, zarr.Group):      # HyperSpy's .zspy layout
            candidates = [f"Experiments/{t}/data" for t, g in experiments.groups()
                          if isinstance(g.get("data"), zarr.Array) and g["data"].ndim >= 2]
            arrays = {n: node[n] for n in candidates}
        listing = ", ".join(f"{n!r} {arrays[n].shape}" for n in candidates) or "none"
        if dataset is not None:
            key = str(dataset).strip("/")
            if not isinstance(node.get(key), zarr.Array):
                raise InputError(f"{path} has no array {dataset!r}; arrays of ≥2 dims: {listing}; "
                                 "pass one of them as dataset=")
        elif len(candidates) == 1:
            key = candidates[0]
        else:
            key = next((n for n in PREFERRED_NAMES if n in candidates), None)
            if key is None:
                raise InputError(f"{path} holds {len(candidates)} arrays of ≥2 dims ({listing}); "
                                 "pass the one to open as dataset=")
        return node[key], key, node
    return node, key, node


def _read_zarr(path, dataset, check_chunks: bool = True):
    arr, key, node = zarr_array(path, dataset)
    parent = (key.rsplit("/", 1)[0] if "/" in key else None) if key else None
    name = key.rsplit("/", 1)[-1] or None
    if check_chunks:
        _check_written(arr, path)
    dims = zarr_dims(arr)
    store_chunks = arr.shards or arr.chunks
    if dims is None or not key:
        # a bare array, or a group array without dim names: read it as it is
        attrs = {k: v for k, v in arr.attrs.asdict().items() if k != "_ARRAY_DIMENSIONS"}
        if dims is None and key:
            dims = _zarr_hyperspy_axes(node, parent, name, arr.ndim, attrs)      # HyperSpy's .zspy
        names = tuple(d or f"dim_{i}" for i, d in enumerate(dims or (None,) * arr.ndim))
        da = _lazy("zarr", path, key, arr.shape, arr.dtype, dims=names, attrs=attrs)
        return da, dict(zip(names, store_chunks)), name
    # written by xarray: let it read the coords, attrs and dims (raw values, no masking)
    grp = node[parent] if parent else node
    undimmed = [n for n, a in grp.arrays() if zarr_dims(a) is None]
    with warnings.catch_warnings(), read_pipeline():       # the arrays xarray opens keep the pipeline
        warnings.simplefilter("ignore", RuntimeWarning)
        ds = xr.open_zarr(str(path), group=parent, chunks=None, mask_and_scale=False,
                          drop_variables=undimmed)
    da = ds[name]
    for var in [da.variable, *(c.variable for c in da.coords.values())]:
        for k in ("_FillValue", "missing_value"):
            if k in var.attrs:
                var.encoding[k] = var.attrs.pop(k)
    return da, dict(zip(da.dims, store_chunks)), name


def read_path(source, dataset, check_chunks: bool = True):
    text = os.fspath(source)
    if "://" in str(text):  # a URL: let zarr/fsspec find it
        return _read_zarr(text, dataset, check_chunks)
    path = Path(text).expanduser()
    if not path.exists():
        raise InputNotFoundError(f"path not found: {str(path)!r} (working directory {os.getcwd()!r}); check "
                         "the spelling, or pass an absolute path")
    ext = path.suffix.lower()
    if path.is_dir():
        if is_zarr_dir(path):
            return _read_zarr(path, dataset, check_chunks)
        raise FormatError(f"{path} is a directory but not a Zarr store (no zarr.json, .zgroup or "
                          f".zarray); pass a Zarr store or a file ({', '.join(SUPPORTED_EXTENSIONS)})")
    if ext in NPY_EXT:
        return _read_npy(path, dataset)
    if ext in TIFF_EXT:
        return _read_tiff(path, dataset)
    if ext in H5_EXT:
        return _read_h5(path, dataset)
    if ext in DM_EXT + EMD_EXT + MRC_EXT:
        return _read_rsciio(path, dataset, ext)
    raise FormatError(f"unknown format {ext or '(no extension)'!r} of {path}; stemflow reads "
                      f"{', '.join(SUPPORTED_EXTENSIONS)} (Zarr v2/v3 directories), or a NumPy/dask "
                      "array or DataArray; convert the file to one of these")

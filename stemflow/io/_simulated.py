"""Write simulated movies and 4D-STEM scans to Zarr, with their truth tables beside them.

``movie.zarr`` gets the ``image`` (frame, y, x; float32 counts) and ``mask`` (uint8 class codes)
arrays in chunks of whole frames; ``movie.atoms.parquet``, ``movie.events.parquet`` and
``movie.drift.parquet`` hold the ground truth. Frames are rendered chunk by chunk as the store is
written (dask), so a movie larger than memory is fine. Output appears under its final name only
once complete: a failed or interrupted write leaves no store that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..simulate.fourd import Detector, diffraction_patterns
from ..simulate.movie import SimulatedMovie, simulate_image
from ..tables import CLASSES
from ._write import to_zarr

__all__ = ["write_movie", "write_4d", "truth_paths"]

_FRAME_CHUNK_MB = 128


def truth_paths(store) -> dict[str, Path]:
    """Paths of the truth tables written beside ``store`` (``X.zarr`` → ``X.atoms.parquet``, ...).

    Parameters
    ----------
    store : str or Path
        The Zarr store of a simulated movie or scan (``.zarr`` suffix or not). Nothing is read.

    Returns
    -------
    dict of str to Path
        ``{"atoms": ..., "events": ..., "drift": ...}``: the Parquet files in the store's
        directory. :func:`write_movie` writes all three, :func:`write_4d` only ``atoms``.

    Examples
    --------
    >>> from stemflow.io import truth_paths
    >>> {k: p.name for k, p in truth_paths("runs/movie.zarr").items()}
    {'atoms': 'movie.atoms.parquet', 'events': 'movie.events.parquet', 'drift': 'movie.drift.parquet'}
    """
    store = Path(store)
    stem = store.name[:-5] if store.name.endswith(".zarr") else store.name
    return {name: store.with_name(f"{stem}.{name}.parquet") for name in ("atoms", "events", "drift")}


def _coords(n: int, pixel_size: float) -> tuple[np.ndarray, dict]:
    return np.arange(n) * pixel_size, {"units": "nm"}


def _progress(enabled: bool, desc: str):
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    from tqdm.dask import TqdmCallback

    return TqdmCallback(desc=desc, unit="chunk")


def _write_store(ds, tmp: Path, frame_chunk_mb: float, progress: bool, desc: str):
    """Write ``ds`` to ``tmp`` on a thread pool of our own, so that after a failure every task that
    was still running has finished before the partial store is removed."""
    import dask
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max(1, os.cpu_count() or 1))
    try:
        with dask.config.set(scheduler="threads", pool=pool), _progress(progress, desc):
            to_zarr(ds, tmp, frame_chunk_mb=frame_chunk_mb)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        pool.shutdown(wait=True)


def _check_target(final: Path, overwrite: bool):
    if final.exists() and not overwrite:
        raise FileExistsError(f"{str(final)!r} already exists; pass overwrite=True (--overwrite) or choose another path")


def write_movie(movie: SimulatedMovie, store, *, overwrite: bool = False, progress: bool = True,
                frame_chunk_mb: float = _FRAME_CHUNK_MB) -> dict[str, Path]:
    """Render ``movie`` into a Zarr store and write its truth tables beside it.

    Parameters
    ----------
    movie : SimulatedMovie
    store : str or Path
        Zarr directory to create (``.zarr`` suffix recommended).
    overwrite : bool
        Replace existing outputs.
    progress : bool
        Show a progress bar while frames are rendered.
    frame_chunk_mb : float
        Target Zarr chunk size, MB (whole frames per chunk).

    Returns
    -------
    dict
        ``{"store": ..., "atoms": ..., "events": ..., "drift": ...}`` paths.

    Examples
    --------
    >>> import tempfile, stemflow
    >>> movie = stemflow.simulate_movie("graphene", frames=3, shape=(64, 64), seed=1)
    >>> paths = stemflow.write_movie(movie, tempfile.mkdtemp() + "/movie.zarr")
    >>> stemflow.open_stem(paths["store"]).shape
    (3, 64, 64)
    """
    import dask.array as da
    import xarray as xr

    final = Path(store)
    paths = truth_paths(final)
    for p in (final, *paths.values()):
        _check_target(p, overwrite)
    n, (h, w) = movie.n_frames, movie.shape
    per_chunk = int(max(1, min(n, frame_chunk_mb * 1e6 // (h * w * 4))))
    index = da.arange(n, chunks=per_chunk)

    def render_images(block):
        return movie.images(int(block[0]), int(block[-1]) + 1)

    def render_masks(block):
        return movie.masks(int(block[0]), int(block[-1]) + 1)

    chunks = (index.chunks[0], (h,), (w,))
    images = da.map_blocks(render_images, index, new_axis=[1, 2], chunks=chunks, dtype=np.float32,
                           meta=np.empty((0, 0, 0), np.float32))
    masks = da.map_blocks(render_masks, index, new_axis=[1, 2], chunks=chunks, dtype=np.uint8,
                          meta=np.empty((0, 0, 0), np.uint8))
    ps = movie.pixel_size
    y, yattrs = _coords(h, ps)
    x, xattrs = _coords(w, ps)
    attrs = {"pixel_size": ps, "pixel_size_units": "nm", "long_name": "simulated HAADF-STEM",
             "units": "counts", "classes": list(CLASSES), "dose": float(movie.imaging.dose),
             "dose_units": "e/Å² per frame",
             "simulation": json.dumps(movie.params), "truth": {k: p.name for k, p in paths.items()}}
    ds = xr.Dataset(
        {"image": (("frame", "y", "x"), images, attrs),
         "mask": (("frame", "y", "x"), masks, {"classes": list(CLASSES), "pixel_size": ps,
                                                  "pixel_size_units": "nm"})},
        coords={"frame": ("frame", np.arange(n)), "y": ("y", y, yattrs), "x": ("x", x, xattrs)},
        attrs=attrs)
    tables = {"atoms": movie.atoms, "events": movie.events, "drift": movie.drift}
    with contextlib.ExitStack() as stack:     # on leaving: the truth tables first, the store last
        tmp = stack.enter_context(atomic_path(final, replace=overwrite))
        tmp_tables = {k: stack.enter_context(atomic_path(paths[k])) for k in tables}
        _write_store(ds, tmp, frame_chunk_mb, progress, f"rendering {n} frames")
        for k, df in tables.items():
            df.to_parquet(tmp_tables[k], index=False)
    return {"store": final, **paths}


def write_4d(store, lattice: str = "graphene", scan_shape=(128, 128), *,
             detector: Detector = Detector(), rows_per_chunk: int | None = None, seed: int = 0,
             overwrite: bool = False, progress: bool = True, frame_chunk_mb: float = _FRAME_CHUNK_MB,
             **options) -> dict[str, Path]:
    """Simulate a 4D-STEM scan straight into Zarr, block of scan rows by block of scan rows.

    The real-space frame (and its truth) is simulated first; diffraction patterns are generated
    per block with a seed per block, so scans far larger than memory can be written. ``options``
    go to :func:`~stemflow.simulate.simulate_image` (``pixel_size`` nm/px, ``dose`` e⁻/Å², ...).
    Writes ``store`` with a ``data`` array (scan_y, scan_x, k_y, k_x; uint16 counts), the
    expected ``adf`` image, and ``X.atoms.parquet`` beside it.

    Parameters
    ----------
    store : str or Path
        Zarr directory to create (``.zarr`` suffix recommended).
    lattice : str
        Specimen, a key of :data:`stemflow.tables.LATTICES` (``"graphene"``, ``"ws2"``, ...).
    scan_shape : (int, int)
        Scan positions (scan_y, scan_x), at least 16 on a side.
    detector : Detector
        Diffraction camera: pattern shape (k_y, k_x) px, ``k_pixel_size`` mrad/px, convergence
        and ADF angles (mrad).
    rows_per_chunk : int, optional
        Scan rows per chunk (and per block of patterns); default: as many as fit
        ``frame_chunk_mb``.
    seed : int
        Seed of the real-space frame and of every block's patterns: the same seed writes the
        same scan.
    overwrite : bool
        Replace existing outputs.
    progress : bool
        Show a progress bar while patterns are written.
    frame_chunk_mb : float
        Target Zarr chunk size, MB.
    **options
        Passed to :func:`~stemflow.simulate.simulate_image` (``pixel_size`` nm/px, ``dose``
        e⁻/Å², ...).

    Returns
    -------
    dict of str to Path
        ``{"store": ..., "atoms": ...}`` paths.

    Raises
    ------
    FileExistsError
        An output exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile
    >>> from stemflow.io import open_stem, write_4d
    >>> paths = write_4d(tempfile.mkdtemp() + "/s.zarr", "graphene", (16, 16), progress=False)
    >>> sorted(paths)
    ['atoms', 'store']
    >>> open_stem(paths["store"], dataset="data").dims
    ('scan_y', 'scan_x', 'k_y', 'k_x')
    """
    import dask.array as da
    import xarray as xr

    final = Path(store)
    atoms_path = truth_paths(final)["atoms"]
    for p in (final, atoms_path):
        _check_target(p, overwrite)
    sim = simulate_image(lattice, scan_shape, seed=seed, **options)
    im = sim.imaging
    electrons = im.dose * im.pixel_A**2
    sy, sx = sim.expected.shape
    ky, kx = detector.shape
    if rows_per_chunk is None:
        rows_per_chunk = int(max(1, frame_chunk_mb * 1e6 // (sx * ky * kx * 2)))
    adf = da.from_array(sim.expected, chunks=(rows_per_chunk, sx))

    def block(expected, block_info=None):
        loc = block_info[0]["chunk-location"][0]
        rng = np.random.default_rng([seed, 5, loc])
        return diffraction_patterns(expected, electrons, detector, rng=rng)

    data = adf.map_blocks(block, new_axis=[2, 3], chunks=(adf.chunks[0], (sx,), (ky,), (kx,)),
                          dtype=np.uint16, meta=np.empty((0, 0, 0, 0), np.uint16))
    ps = im.pixel_size
    sy_c, yattrs = _coords(sy, ps)
    sx_c, xattrs = _coords(sx, ps)
    kyc = (np.arange(ky) - (ky - 1) / 2) * detector.k_pixel_size
    kxc = (np.arange(kx) - (kx - 1) / 2) * detector.k_pixel_size
    attrs = {"pixel_size": ps, "pixel_size_units": "nm", "k_pixel_size": detector.k_pixel_size,
             "k_pixel_size_units": "mrad", "units": "counts",
             "detector": json.dumps({"shape": list(detector.shape), "k_pixel_size": detector.k_pixel_size,
                                     "convergence": detector.convergence, "adf": list(detector.adf)}),
             "simulation": json.dumps(sim.params)}
    ds = xr.Dataset(
        {"data": (("scan_y", "scan_x", "k_y", "k_x"), data, attrs),
         "adf": (("scan_y", "scan_x"), sim.expected, {"long_name": "expected ADF counts", "pixel_size": ps,
                                                      "pixel_size_units": "nm"})},
        coords={"scan_y": ("scan_y", sy_c, yattrs), "scan_x": ("scan_x", sx_c, xattrs),
                "k_y": ("k_y", kyc, {"units": "mrad"}), "k_x": ("k_x", kxc, {"units": "mrad"})},
        attrs=attrs)
    with atomic_path(final, replace=overwrite) as tmp, atomic_path(atoms_path) as tmp_atoms:
        _write_store(ds, tmp, frame_chunk_mb, progress, f"writing {sy}×{sx} diffraction patterns")
        sim.atoms.to_parquet(tmp_atoms, index=False)
    return {"store": final, "atoms": atoms_path}

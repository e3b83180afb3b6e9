"""Tests of stemflow.io: every reader against the NumPy array it was written from."""

from __future__ import annotations

import os
import sys
import warnings

import cloudpickle
import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from stemflow.errors import FormatError, InputError, MissingDependencyError, StemflowWarning
from stemflow.io import (
    StemflowBackendEntrypoint,
    check_finite,
    describe,
    find_nonfinite_frames,
    open_stem,
    to_zarr,
)

MB = 1e6
PS = 0.05  # nm/px used throughout


@pytest.fixture
def movie():
    rng = np.random.default_rng(0)
    return rng.integers(0, 60000, size=(8, 32, 48), dtype=np.uint16)


def quiet_open(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StemflowWarning)
        return open_stem(*args, **kw)


def assert_calibrated(arr, ref, ps=PS):
    """Values, dtype and coords against the reference written, not against the code."""
    assert isinstance(arr.data, da.Array)
    assert arr.dtype == ref.dtype
    np.testing.assert_array_equal(arr.values, ref)
    real = ("y", "x") if ref.ndim <= 3 else ("scan_y", "scan_x")
    for d, n in zip(real, ref.shape[-2:] if ref.ndim <= 3 else ref.shape[-4:-2]):
        np.testing.assert_allclose(arr[d].values, np.arange(n) * ps, rtol=1e-12)
        assert arr[d].attrs["units"] == "nm"
    assert arr.attrs["pixel_size"] == pytest.approx(ps)
    assert arr.attrs["pixel_size_units"] == "nm"


# ----------------------------------------------------------------------------- Zarr
@pytest.mark.parametrize("zarr_format, shards", [(2, None), (3, None), (3, 4)])
def test_to_zarr_round_trip_is_bit_exact(tmp_path, movie, zarr_format, shards):
    src = open_stem(movie, pixel_size=PS)
    src.attrs["voltage_kV"] = 60.0
    src.attrs["note"] = "graphene"
    path = tmp_path / "movie.zarr"
    # 0.004 MB = 4000 B: one 32×48 uint16 frame (3072 B) per chunk
    to_zarr(src, path, frame_chunk_mb=0.004, shards=shards, zarr_format=zarr_format)

    raw = zarr.open_array(str(path), path="image", mode="r")  # what is on disk
    assert raw.metadata.zarr_format == zarr_format
    assert raw.chunks == (1, 32, 48)
    assert raw.shards == ((shards, 32, 48) if shards else None)
    np.testing.assert_array_equal(raw[:], movie)

    back = open_stem(path)
    assert_calibrated(back, movie)
    np.testing.assert_array_equal(back["frame"].values, np.arange(8))
    assert back["frame"].dtype.kind == "i"
    assert back.attrs == {"pixel_size": PS, "pixel_size_units": "nm", "voltage_kV": 60.0, "note": "graphene"}
    assert back.name == "image"
    xr.testing.assert_identical(back.rename(None), src)


def test_to_zarr_shards_by_default_into_inner_chunks_of_whole_frames(tmp_path, monkeypatch):
    from stemflow.io import _write

    monkeypatch.setattr(_write, "INNER_CHUNK_MB", 0.02)       # 20 kB: 4 frames of 48² uint16 per inner chunk
    movie = np.random.default_rng(2).integers(0, 60000, size=(44, 48, 48), dtype=np.uint16)
    to_zarr(open_stem(movie, pixel_size=PS), tmp_path / "m.zarr", frame_chunk_mb=0.1)
    raw = zarr.open_array(str(tmp_path / "m.zarr"), path="image", mode="r")
    assert raw.chunks == (4, 48, 48) and raw.shards[0] % 4 == 0 and 8 <= raw.shards[0] <= 21, (raw.chunks, raw.shards)
    back = open_stem(tmp_path / "m.zarr")
    assert all(c % raw.shards[0] == 0 for c in back.data.chunks[0][:-1])    # no shard read by two tasks
    np.testing.assert_array_equal(back.values, movie)
    np.testing.assert_array_equal(back.isel(frame=slice(5, 7)).values, movie[5:7])
    to_zarr(open_stem(movie, pixel_size=PS), tmp_path / "v2.zarr", frame_chunk_mb=0.1, zarr_format=2)
    assert zarr.open_array(str(tmp_path / "v2.zarr"), path="image", mode="r").shards is None
    to_zarr(open_stem(movie, pixel_size=PS), tmp_path / "none.zarr", frame_chunk_mb=0.1, shards=None)
    assert zarr.open_array(str(tmp_path / "none.zarr"), path="image", mode="r").shards is None
    # a movie of 4D scans too large for one shard each: the shards are cut along the scan rows
    scans = xr.DataArray(da.zeros((3, 100, 100, 128, 128), dtype=np.uint16, chunks=(1, 10, 100, 128, 128)),
                         dims=("frame", "scan_y", "scan_x", "k_y", "k_x"))
    monkeypatch.setattr(_write, "INNER_CHUNK_MB", 4.0)
    plan = _write._write_plan(scans, 128)
    chunks, shards = _write._auto_shards(scans, plan)
    assert plan["frame"] == 1 and 1 < plan["scan_y"] < 100
    assert (chunks["frame"], chunks["scan_y"], shards["scan_y"]) == (1, 1, plan["scan_y"])
    (tmp_path / "m.zarr" / "image" / "c" / "1" / "0" / "0").unlink()          # the second shard lost
    n = raw.shards[0]
    with pytest.raises(InputError, match=f"indices {n}–{2 * n - 1}"):
        open_stem(tmp_path / "m.zarr")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_to_zarr_compresses_counts_with_blosc_lz4_bitshuffle_unless_told(tmp_path, zarr_format):
    counts = np.random.default_rng(1).poisson(3.0, size=(4, 64, 64)).astype(np.uint16)
    src = open_stem(counts, pixel_size=PS)
    to_zarr(src, tmp_path / "a.zarr", zarr_format=zarr_format)
    to_zarr(src, tmp_path / "b.zarr", zarr_format=zarr_format, compressors="zarr")
    ours = zarr.open_array(str(tmp_path / "a.zarr"), path="image", mode="r")
    (codec,) = ours.compressors
    config = codec.get_config() if zarr_format == 2 else codec.to_dict()["configuration"]
    assert config["cname"] == "lz4" and config["shuffle"] in (2, "bitshuffle")
    theirs = zarr.open_array(str(tmp_path / "b.zarr"), path="image", mode="r").compressors[0]
    assert repr(theirs) != repr(codec)                               # zarr's own default kept
    np.testing.assert_array_equal(open_stem(tmp_path / "a.zarr").values, counts)

    def size(p):
        return sum(f.stat().st_size for f in (tmp_path / p).rglob("c*") if f.is_file())

    assert size("a.zarr") < counts.nbytes / 2                       # it does compress counts


def test_zarr_is_read_with_the_zarrs_pipeline_when_installed_and_not_elsewhere(tmp_path, movie, monkeypatch):
    pytest.importorskip("zarrs", reason="zarrs (the io extra) is not installed")
    to_zarr(open_stem(movie, pixel_size=PS), tmp_path / "m.zarr", frame_chunk_mb=0.004)
    from stemflow.io._read import zarr_array

    arr, _, _ = zarr_array(tmp_path / "m.zarr")
    assert type(arr._async_array.codec_pipeline).__module__.startswith("zarrs")
    assert zarr.config.get("codec_pipeline.path") != "zarrs.ZarrsCodecPipeline"   # no leak into the process
    back = cloudpickle.loads(cloudpickle.dumps(open_stem(tmp_path / "m.zarr").data))   # as a Dask worker gets it
    np.testing.assert_array_equal(np.asarray(back), movie)
    import zarrs

    reads = []
    original = zarrs.ZarrsCodecPipeline.read

    async def counted(self, *args, **kwargs):
        reads.append(1)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(zarrs.ZarrsCodecPipeline, "read", counted)
    np.testing.assert_array_equal(open_stem(tmp_path / "m.zarr").values, movie)   # written by xarray: its reader
    assert reads, "open_stem's pixels were not read through zarrs"
    monkeypatch.setenv("STEMFLOW_ZARR_PIPELINE", "zarr")
    reads.clear()
    arr, _, _ = zarr_array(tmp_path / "m.zarr")
    assert not type(arr._async_array.codec_pipeline).__module__.startswith("zarrs")
    np.testing.assert_array_equal(open_stem(tmp_path / "m.zarr").values, movie)
    assert not reads


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_xarray_written_dataset_picks_image_and_keeps_coords(tmp_path, movie, zarr_format):
    mask = (movie > 30000).astype(np.uint8)
    ds = xr.Dataset(
        {"image": (("frame", "y", "x"), movie, {"pixel_size": PS, "detector": "HAADF"}),
         "mask": (("frame", "y", "x"), mask)},
        coords={"frame": np.arange(8), "y": ("y", np.arange(32) * PS, {"units": "nm"}),
                "x": ("x", np.arange(48) * PS, {"units": "nm"})},
    )
    ds.to_zarr(tmp_path / "ds.zarr", zarr_format=zarr_format, consolidated=False)
    img = open_stem(tmp_path / "ds.zarr")
    assert img.name == "image"
    assert_calibrated(img, movie)
    assert img.attrs["detector"] == "HAADF"
    m = open_stem(tmp_path / "ds.zarr", dataset="mask", pixel_size=PS)
    np.testing.assert_array_equal(m.values, mask)


def test_to_zarr_writes_a_dataset_with_image_and_mask(tmp_path, movie):
    img = open_stem(movie, pixel_size=PS)
    ds = xr.Dataset({"image": img, "mask": (img > 30000).astype("uint8")})
    to_zarr(ds, tmp_path / "ds.zarr", frame_chunk_mb=0.007, shards=4)  # 2 frames per chunk
    g = zarr.open_group(str(tmp_path / "ds.zarr"), mode="r")
    assert g["image"].chunks == (2, 32, 48) and g["mask"].chunks == (2, 32, 48)
    assert g["image"].shards == (4, 32, 48)
    back = open_stem(tmp_path / "ds.zarr", dataset="mask")
    np.testing.assert_array_equal(back.values, (movie > 30000).astype("uint8"))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_bare_zarr_array_with_attrs(tmp_path, movie, zarr_format):
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=movie.shape, chunks=(4, 32, 48),
                          dtype=movie.dtype, zarr_format=zarr_format)
    z[:] = movie
    z.attrs["pixel_size"] = 0.5
    z.attrs["pixel_size_units"] = "Å"
    assert_calibrated(open_stem(tmp_path / "a.zarr"), movie, ps=0.05)


def test_zarr_v3_dimension_names_alias_time_to_frame(tmp_path, movie):
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=movie.shape, chunks=(8, 32, 48),
                          dtype=movie.dtype, dimension_names=("time", "row", "col"))
    z[:] = movie
    arr = open_stem(tmp_path / "a.zarr", pixel_size=PS)
    assert arr.dims == ("frame", "y", "x")
    assert_calibrated(arr, movie)


def test_zarr_group_with_unpreferred_names_lists_candidates(tmp_path, movie):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    for name in ("haadf", "bf"):
        g.create_array(name, shape=movie.shape, dtype=movie.dtype)[:] = movie
    with pytest.raises(InputError, match=r"'haadf'.*'bf'.*dataset=|'bf'.*'haadf'.*dataset="):
        open_stem(tmp_path / "g.zarr")
    with pytest.raises(InputError, match="no array 'adf'.*dataset="):
        open_stem(tmp_path / "g.zarr", dataset="adf")
    np.testing.assert_array_equal(quiet_open(tmp_path / "g.zarr", dataset="bf").values, movie)


def test_store_that_splits_frames_is_rechunked_with_warning(tmp_path, movie):
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=movie.shape, chunks=(2, 16, 16), dtype=movie.dtype)
    z[:] = movie
    with pytest.warns(StemflowWarning, match=r"splits each frame.*to_zarr"):
        arr = open_stem(tmp_path / "a.zarr", pixel_size=PS)
    assert arr.data.chunks[1:] == ((32,), (48,))
    np.testing.assert_array_equal(arr.values, movie)


def test_to_zarr_streams_without_materialising(tmp_path):
    class Guard:
        """An array that refuses any read larger than two frames."""
        shape, dtype, ndim = (16, 64, 64), np.dtype("float32"), 3

        def __getitem__(self, key):
            frames = range(16)[key[0]]
            assert len(frames) <= 2, f"read {len(frames)} frames at once"
            return np.full((len(frames), 64, 64), 1.5, np.float32)

    lazy = da.from_array(Guard(), chunks=(2, 64, 64), asarray=False)
    arr = open_stem(lazy, pixel_size=PS, check_finite=False)
    to_zarr(arr, tmp_path / "g.zarr", frame_chunk_mb=0.04)  # 2 frames (32 kB) per chunk
    back = zarr.open_array(str(tmp_path / "g.zarr"), path="image", mode="r")
    assert back.chunks == (2, 64, 64)
    assert np.all(back[:] == 1.5)


def test_to_zarr_refuses_to_overwrite(tmp_path, movie):
    arr = open_stem(movie, pixel_size=PS)
    to_zarr(arr, tmp_path / "a.zarr")
    with pytest.raises(InputError, match="already exists.*overwrite=True"):
        to_zarr(arr * 2, tmp_path / "a.zarr")
    to_zarr((arr * 2).astype("uint16"), tmp_path / "a.zarr", overwrite=True)
    np.testing.assert_array_equal(open_stem(tmp_path / "a.zarr").values, (movie * 2).astype("uint16"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="not a Zarr store"):
        to_zarr(arr, tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "precious"


def test_shards_that_are_not_whole_chunks_are_rejected(tmp_path, movie):
    arr = open_stem(movie, pixel_size=PS)
    with pytest.raises(InputError, match="not a whole number of chunks.*multiple of 2"):
        to_zarr(arr, tmp_path / "a.zarr", frame_chunk_mb=0.007, shards=3)
    with pytest.raises(InputError, match="zarr_format=3"):
        to_zarr(arr, tmp_path / "b.zarr", shards=4, zarr_format=2)


# ----------------------------------------------------------------------------- other formats
def test_npy_is_memory_mapped_and_warns_without_pixel_size(tmp_path, movie):
    np.save(tmp_path / "m.npy", movie)
    with pytest.warns(StemflowWarning, match=r"no pixel size.*pixel_size="):
        arr = open_stem(tmp_path / "m.npy")
    assert "pixel_size" not in arr.attrs
    assert arr["x"].attrs["units"] == "px"
    np.testing.assert_array_equal(arr["x"].values, np.arange(48))
    np.testing.assert_array_equal(arr.values, movie)
    assert_calibrated(open_stem(tmp_path / "m.npy", pixel_size=PS), movie)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff_with_imagej_calibration(tmp_path, movie, compression):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "m.tif", movie, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"unit": "nm"}, compression=compression)
    arr = open_stem(tmp_path / "m.tif")
    assert_calibrated(arr, movie, ps=0.25)
    assert len(cloudpickle.dumps(arr)) < 100_000  # the file, not its data, travels


def test_tiff_with_centimetre_resolution_unit(tmp_path, movie):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "m.tif", movie[0], resolution=(1e7 / 0.5, 1e7 / 0.5), resolutionunit="CENTIMETER")
    arr = open_stem(tmp_path / "m.tif")
    assert arr.dims == ("y", "x")
    assert arr.attrs["pixel_size"] == pytest.approx(0.5, rel=1e-6)


def test_h5_dataset_path_listing_and_pickling(tmp_path, movie):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.create_dataset("exp/haadf", data=movie, chunks=(1, 32, 48)).attrs["pixel_size"] = PS
        f["exp/bf"] = movie[0]
        f["exp/dose"] = np.arange(8.0)
    with pytest.raises(InputError, match=r"/exp/bf.*/exp/haadf.*dataset=|/exp/haadf.*/exp/bf.*dataset="):
        open_stem(tmp_path / "m.h5")
    arr = open_stem(tmp_path / "m.h5", dataset="/exp/haadf")
    assert arr.name == "haadf"
    assert_calibrated(arr, movie)
    clone = cloudpickle.loads(cloudpickle.dumps(arr))
    np.testing.assert_array_equal(clone.values, movie)
    with pytest.raises(InputError, match="no dataset 'exp/nope'"):
        open_stem(tmp_path / "m.h5", dataset="exp/nope")


def test_rsciio_emd_calibration_in_angstrom(tmp_path):
    emd = pytest.importorskip("rsciio.emd")
    data = np.arange(3 * 8 * 10, dtype=np.float32).reshape(3, 8, 10)
    axes = [{"name": "t", "size": 3, "scale": 1.0, "offset": 0.0, "units": "s", "navigate": True},
            {"name": "y", "size": 8, "scale": 0.5, "offset": 0.0, "units": "Å", "navigate": False},
            {"name": "x", "size": 10, "scale": 0.5, "offset": 0.0, "units": "Å", "navigate": False}]
    emd.file_writer(str(tmp_path / "s.emd"), {"data": data, "axes": axes, "original_metadata": {},
                                              "metadata": {"General": {"title": "haadf"}, "Signal": {}}})
    arr = open_stem(tmp_path / "s.emd")
    assert arr.dims == ("frame", "y", "x")
    assert_calibrated(arr, data, ps=0.05)
    np.testing.assert_array_equal(cloudpickle.loads(cloudpickle.dumps(arr)).values, data)


@pytest.mark.parametrize("name", ["scan.dm4", "scan.emd"])
def test_missing_rosettasciio_names_the_extra(tmp_path, monkeypatch, name):
    (tmp_path / name).write_bytes(b"\0" * 16)
    for mod in ("rsciio", "rsciio.digitalmicrograph", "rsciio.emd"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(MissingDependencyError, match=r'pip install "stemflow\[io\]"'):
        open_stem(tmp_path / name)


# ----------------------------------------------------------------------------- dims and coords
@pytest.mark.parametrize("shape, dims", [
    ((6, 7), ("y", "x")),
    ((3, 6, 7), ("frame", "y", "x")),
    ((4, 5, 6, 7), ("scan_y", "scan_x", "k_y", "k_x")),
    ((2, 4, 5, 6, 7), ("frame", "scan_y", "scan_x", "k_y", "k_x")),
])
def test_dims_are_named_from_ndim(shape, dims):
    ref = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    arr = open_stem(ref, pixel_size=PS)
    assert arr.dims == dims
    assert_calibrated(arr, ref)
    if len(shape) >= 4:
        assert arr["k_x"].attrs["units"] == "px"
        np.testing.assert_array_equal(arr["k_x"].values, np.arange(7))


def test_4d_k_pixel_size_gives_mrad_coords():
    ref = np.zeros((4, 5, 6, 7), np.uint16)
    arr = open_stem(xr.DataArray(ref, attrs={"k_pixel_size": 0.25}), pixel_size=PS)
    np.testing.assert_allclose(arr["k_x"].values, np.arange(7) * 0.25)
    assert arr["k_y"].attrs["units"] == "mrad"
    assert arr.attrs["k_pixel_size"] == 0.25


def test_aliases_and_transposed_dims_are_mapped():
    ref = np.arange(3 * 6 * 7, dtype=np.uint16).reshape(3, 6, 7)
    arr = open_stem(xr.DataArray(ref.transpose(2, 1, 0), dims=("col", "row", "time")), pixel_size=PS)
    assert arr.dims == ("frame", "y", "x")
    np.testing.assert_array_equal(arr.values, ref)


def test_unknown_dim_names_are_taken_by_position_with_warning():
    with pytest.warns(StemflowWarning, match=r"by position as \('frame', 'y', 'x'\)"):
        arr = open_stem(xr.DataArray(np.zeros((3, 6, 7), np.uint8), dims=("a", "b", "c")), pixel_size=PS)
    assert arr.dims == ("frame", "y", "x")


def test_pixel_size_from_coords_units_and_override():
    ref = np.zeros((6, 7), np.uint8)
    src = xr.DataArray(ref, dims=("y", "x"), coords={"y": ("y", np.arange(6) * 2.0, {"units": "Å"}),
                                                     "x": ("x", np.arange(7) * 2.0, {"units": "Å"})})
    arr = open_stem(src)
    assert arr.attrs["pixel_size"] == pytest.approx(0.2)
    np.testing.assert_allclose(arr["x"].values, np.arange(7) * 0.2)
    over = open_stem(src, pixel_size=0.3)
    assert over.attrs["pixel_size"] == 0.3
    np.testing.assert_allclose(over["y"].values, np.arange(6) * 0.3)


def test_existing_canonical_dataarray_keeps_coords_attrs_and_name():
    ref = np.ones((3, 6, 7), np.float32)
    src = xr.DataArray(ref, dims=("frame", "y", "x"), name="haadf", attrs={"pixel_size": 0.1, "kV": 60},
                       coords={"frame": [10, 11, 12], "y": ("y", 5 + np.arange(6) * 0.1, {"units": "nm"}),
                               "x": ("x", np.arange(7) * 0.1, {"units": "nm"})})
    arr = open_stem(src)
    assert arr.name == "haadf" and arr.attrs["kV"] == 60
    np.testing.assert_array_equal(arr["frame"].values, [10, 11, 12])
    np.testing.assert_array_equal(arr["y"].values, src["y"].values)


def test_non_integer_frame_coord_becomes_time_and_frame_is_the_index():
    seconds = np.array([0.0, 0.5, 1.0])
    src = xr.DataArray(np.zeros((3, 6, 7), np.uint8), dims=("time", "y", "x"),
                       coords={"time": ("time", seconds, {"units": "s"})})
    arr = open_stem(src, pixel_size=PS)
    np.testing.assert_array_equal(arr["frame"].values, [0, 1, 2])
    np.testing.assert_array_equal(arr["time"].values, seconds)
    assert arr["time"].dims == ("frame",) and arr["time"].attrs["units"] == "s"


# ----------------------------------------------------------------------------- chunks
def test_default_chunks_of_a_big_movie_are_whole_frames_of_32_to_256_mb():
    big = da.zeros((10_000, 1024, 1024), dtype=np.uint16, chunks=(1, 1024, 1024))  # 21 GB, lazy
    arr = open_stem(big, pixel_size=PS)
    frames, ys, xs = arr.data.chunks
    assert ys == (1024,) and xs == (1024,)
    frame_bytes = 1024 * 1024 * 2
    assert all(32 * MB <= f * frame_bytes <= 256 * MB for f in frames[:-1])
    assert sum(frames) == 10_000


def test_default_chunks_of_4d_keep_whole_patterns():
    big = da.zeros((256, 256, 128, 128), dtype=np.float32, chunks=(1, 256, 128, 128))  # 4.3 GB, lazy
    arr = open_stem(big, pixel_size=PS)
    sy, sx, ky, kx = arr.data.chunks
    assert ky == (128,) and kx == (128,) and sx == (256,)
    per = sy[0] * 256 * 128 * 128 * 4
    assert 32 * MB <= per <= 256 * MB


def test_single_small_movie_is_one_chunk_not_one_per_frame(movie):
    assert open_stem(movie, pixel_size=PS).data.chunks == ((8,), (32,), (48,))


def test_chunks_override_int_dict_and_unknown_dim(movie):
    assert open_stem(movie, pixel_size=PS, chunks=3).data.chunks[0] == (3, 3, 2)
    assert open_stem(movie, pixel_size=PS, chunks={"x": 16}).data.chunks == ((8,), (32,), (16, 16, 16))
    with pytest.raises(InputError, match=r"\['k_x'\].*\('frame', 'y', 'x'\)"):
        open_stem(movie, pixel_size=PS, chunks={"k_x": 4})
    with pytest.raises(InputError, match="counts frames"):
        open_stem(movie[0], pixel_size=PS, chunks=2)


# ----------------------------------------------------------------------------- bad input
def test_unknown_format_lists_supported_extensions(tmp_path):
    (tmp_path / "a.xyz").write_text("hi")
    with pytest.raises(FormatError, match=r"'\.xyz'.*\.zarr.*\.npy.*\.tif.*\.h5.*\.dm3.*\.emd"):
        open_stem(tmp_path / "a.xyz")


def test_path_not_found(tmp_path):
    with pytest.raises(InputError, match="path not found.*missing.npy"):
        open_stem(tmp_path / "missing.npy")


@pytest.mark.parametrize("shape", [(5,), (1, 2, 3, 4, 5, 6)])
def test_wrong_number_of_dims_says_what_is_expected(shape):
    with pytest.raises(InputError, match=rf"{len(shape)} dims.*\(frame, y, x\).*\(scan_y, scan_x, k_y, k_x\)"):
        open_stem(np.zeros(shape, np.float32))


@pytest.mark.parametrize("dtype, fix", [(np.complex64, "np.abs"), (bool, "astype"), ("U3", "convert")])
def test_non_numeric_dtypes_are_rejected_with_the_fix(dtype, fix):
    with pytest.raises(InputError, match=rf"dtype.*{fix}"):
        open_stem(np.zeros((4, 4), dtype=dtype))


def test_empty_array_names_the_zero_length_dim():
    with pytest.raises(InputError, match=r"empty: dim 'frame' has length 0"):
        open_stem(np.zeros((0, 4, 4), np.float32))


def test_nan_frames_are_reported_by_index():
    ref = np.ones((20, 4, 4), np.float32)
    ref[3, 1, 1] = np.nan
    ref[17, 0, 0] = np.inf
    with pytest.raises(InputError, match=r"frames 3, 17 contain NaN or Inf.*isel\(frame="):
        open_stem(ref, pixel_size=PS)
    arr = open_stem(ref, pixel_size=PS, check_finite=False, chunks=4)  # 5 chunks: a streaming pass
    assert find_nonfinite_frames(arr) == [3, 17]
    assert find_nonfinite_frames(arr.data) == [3, 17]
    assert find_nonfinite_frames(np.ones((3, 4, 4), np.int16)) == []
    with pytest.raises(InputError, match=r"frames 17 contain"):
        check_finite(ref[15:20], frame_offset=15)
    check_finite(ref[4:10], frame_offset=4)


def test_bad_pixel_size_is_rejected(movie):
    with pytest.raises(InputError, match="pixel_size must be a positive number in nm/px"):
        open_stem(movie, pixel_size=-1)


# ----------------------------------------------------------------------------- describe, backend
def test_describe_reports_shape_chunks_pixel_size_and_sizes(tmp_path, movie):
    path = tmp_path / "m.zarr"
    to_zarr(open_stem(movie, pixel_size=PS), path, frame_chunk_mb=0.013)  # 4 frames = 12288 B
    text = describe(path)
    assert "frame: 8, y: 32, x: 48" in text
    assert "uint16" in text
    # working chunks: the whole 24.6 kB movie in one; the store's own chunks listed too
    assert "chunks:       (8, 32, 48), 24.00 kiB per chunk, 1 chunk\n" in text
    assert "stored as:    (4, 32, 48)" in text
    assert "(2, 32, 48), 6.00 kiB per chunk, 4 chunks" in describe(open_stem(path, chunks=2))
    assert "0.05 nm/px" in text
    assert f"({movie.nbytes} bytes)" in text
    disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    assert f"({disk} bytes)" in text
    np.save(tmp_path / "m.npy", movie)
    assert "pixel size:   unknown" in describe(tmp_path / "m.npy")


def test_xarray_backend_opens_with_engine_stemflow(tmp_path, movie):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["a/haadf"] = movie
        f["a/bf"] = movie
    ds = xr.open_dataset(tmp_path / "m.h5", engine="stemflow", dataset="/a/bf", pixel_size=PS)
    assert list(ds.data_vars) == ["bf"]
    assert_calibrated(ds["bf"], movie)
    np.save(tmp_path / "m.npy", movie)
    ds = xr.open_dataset(tmp_path / "m.npy", pixel_size=PS)  # guessed from the extension
    assert list(ds.data_vars) == ["image"]
    assert isinstance(ds["image"].data, da.Array)
    assert list(xr.open_dataset(tmp_path / "m.npy", engine="stemflow", pixel_size=PS,
                                drop_variables=["image"]).data_vars) == []
    to_zarr(open_stem(movie, pixel_size=PS), tmp_path / "m.zarr")
    ds = xr.open_dataset(tmp_path / "m.zarr", engine="stemflow")
    assert list(ds.data_vars) == ["image"]
    assert_calibrated(ds["image"], movie)
    be = StemflowBackendEntrypoint()
    assert be.guess_can_open("a.tiff") and be.guess_can_open("b.dm4") and not be.guess_can_open("c.nc")


def test_open_stem_result_computes_under_the_threaded_scheduler(tmp_path, movie):
    np.save(tmp_path / "m.npy", movie)
    arr = open_stem(tmp_path / "m.npy", pixel_size=PS, chunks=2)
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(arr.sum("frame").values, movie.sum(0, dtype=np.uint64))


@pytest.mark.parametrize("fmt", [2, 3])
def test_a_store_with_chunks_never_written_is_refused_naming_the_frames(tmp_path, fmt):
    import zarr

    path = tmp_path / "holes.zarr"
    arr = zarr.create_array(str(path), shape=(100, 16, 16), chunks=(2, 16, 16), dtype="float32", zarr_format=fmt)
    arr[0:4] = np.random.default_rng(0).random((4, 16, 16))       # an interrupted write: 2 of 50 chunks
    arr[50:52] = 1.0
    with pytest.raises(InputError, match=r"94 of 100 .*indices 4–49, 52–99\)"):
        open_stem(path, pixel_size=0.01)
    da = open_stem(path, pixel_size=0.01, check_chunks=False)        # on request, as it is
    assert da.sizes["frame"] == 100
    arr[:] = 1.0                                                     # once whole, it opens
    assert open_stem(path, pixel_size=0.01).sizes["frame"] == 100


def test_a_three_frame_tiff_written_with_tifffile_defaults_opens_as_frames(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    stack = np.random.default_rng(0).random((3, 32, 40)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", stack)                  # stored as planar RGB by default
    with pytest.warns(StemflowWarning, match="reading them as frames"):
        da = open_stem(tmp_path / "s.tif", pixel_size=0.01)
    assert da.dims == ("frame", "y", "x") and np.array_equal(da.values, stack)
    rgb = (np.random.default_rng(1).random((32, 40, 3)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")  # interleaved: a colour picture
    with pytest.raises(InputError, match="colour"):
        open_stem(tmp_path / "rgb.tif", pixel_size=0.01)


def _hspy(path, data, axes):
    """A HyperSpy-style HDF5 signal: /Experiments/s/data with axis-i groups (name, scale, units)."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        g = f.create_group("Experiments/s")
        g.create_dataset("data", data=data)
        for i, (name, scale, units) in enumerate(axes):
            a = g.create_group(f"axis-{i}")
            a.attrs.update(name=name, scale=scale, units=units)
    return path


@pytest.mark.parametrize("axes, pixel_size, k_pixel_size, dims", [
    # 4D-STEM: the scan axes give the pixel size (Å → nm), the detector's last axis mrad/px
    ([("y", 0.5, "Å"), ("x", 0.5, "Å"), ("ky", 0.8, "mrad"), ("kx", 0.8, "mrad")], 0.05, 0.8,
     ("scan_y", "scan_x", "k_y", "k_x")),
    # the scan's x axis calibrated, y not: x is used
    ([("y", 1.0, "<undefined>"), ("x", 0.02, "nm"), ("ky", 1.5, "mrad"), ("kx", 1.5, "mrad")], 0.02, 1.5,
     ("scan_y", "scan_x", "k_y", "k_x")),
    # a detector in px: no k calibration
    ([("y", 0.02, "nm"), ("x", 0.02, "nm"), ("ky", 1.0, "px"), ("kx", 1.0, "px")], 0.02, None,
     ("scan_y", "scan_x", "k_y", "k_x")),
    # a movie: the last two axes are real space, in pm
    ([("time", 1.0, "s"), ("y", 12.0, "pm"), ("x", 12.0, "pm")], 0.012, None, ("frame", "y", "x")),
    ([("y", 0.3, "nm"), ("x", 0.3, "nm")], 0.3, None, ("y", "x")),
])
def test_hyperspy_axes_give_dims_and_calibration(tmp_path, axes, pixel_size, k_pixel_size, dims):
    shape = (3, 4, 8, 8)[-len(axes):] if len(axes) == 4 else (2, 16, 16)[-len(axes):]
    path = _hspy(tmp_path / "signal.hspy", np.ones(shape, np.float32), axes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StemflowWarning)
        arr = open_stem(path)
    assert arr.dims == dims
    assert arr.attrs.get("pixel_size") == pytest.approx(pixel_size, rel=1e-9)
    assert arr.attrs.get("k_pixel_size") == (None if k_pixel_size is None else pytest.approx(k_pixel_size))


def test_chunk_plan_keeps_scan_rows_and_stored_chunks_whole():
    from stemflow.io._open import chunk_plan

    mb = 10**6
    dims4 = ("scan_y", "scan_x", "k_y", "k_x")
    # whole scan rows, C-order, ~128 MB: 15 rows of 256 patterns of 128² uint16 (dask alone would spread it 62 × 62)
    assert chunk_plan((256, 256, 128, 128), dims4, 2, 128 * mb) == {"scan_y": 15, "scan_x": 256, "k_y": 128, "k_x": 128}
    # a stored chunk larger than the target is read by one task, not cut in two (up to 256 MB)
    assert chunk_plan((1000, 512, 512), ("frame", "y", "x"), 2, 1 * mb, {"frame": 33})["frame"] == 33
    assert chunk_plan((1000, 512, 512), ("frame", "y", "x"), 2, 1 * mb, {"frame": 999})["frame"] == 1   # 524 MB: cut
    # in multiples of the stored chunks where they fit
    assert chunk_plan((1000, 512, 512), ("frame", "y", "x"), 2, 128 * mb, {"frame": 64})["frame"] == 192
    # a length-1 scan dim counts as whole
    assert chunk_plan((124, 1, 852, 1118), dims4, 2, 1 * mb, {"scan_y": 13})["scan_y"] == 13

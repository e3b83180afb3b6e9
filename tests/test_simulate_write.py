"""Writing simulated data: what is written is what was simulated, and nothing half-written looks done."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from stemflow.simulate import simulate_movie
from stemflow.io import truth_paths, write_4d, write_movie


@pytest.fixture(scope="module")
def small_movie():
    return simulate_movie("graphene", 6, 64, seed=3, drift=(0.5, 0.2), defects={"Si1C3": 2, "V1": 1},
                          rates={"hop": 0.3, "vacancy": 0.3})


def test_written_movie_equals_the_rendered_frames(tmp_path, small_movie):
    paths = write_movie(small_movie, tmp_path / "m.zarr", progress=False, frame_chunk_mb=0.04)
    ds = xr.open_zarr(paths["store"])
    assert ds.image.dims == ("frame", "y", "x")
    images, masks = small_movie.render()
    assert np.array_equal(ds.image.values, images)
    assert np.array_equal(ds.mask.values, masks)
    assert ds.image.encoding["chunks"][1:] == (64, 64)  # whole frames per chunk
    assert ds.attrs["pixel_size"] == small_movie.pixel_size
    assert np.allclose(np.diff(ds.x.values), small_movie.pixel_size)
    for name in ("atoms", "events", "drift"):
        back = pd.read_parquet(paths[name])
        want = getattr(small_movie, name)
        pd.testing.assert_frame_equal(back, want, check_categorical=False)


def test_existing_output_is_refused_without_overwrite(tmp_path, small_movie):
    write_movie(small_movie, tmp_path / "m.zarr", progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_movie(small_movie, tmp_path / "m.zarr", progress=False)
    write_movie(small_movie, tmp_path / "m.zarr", progress=False, overwrite=True)


def test_failed_write_leaves_nothing_that_looks_complete(tmp_path, small_movie, monkeypatch):
    calls = {"n": 0}
    original = type(small_movie).image

    def failing(self, frame):
        calls["n"] += 1
        if frame == 4:
            raise RuntimeError("renderer died")
        return original(self, frame)

    monkeypatch.setattr(type(small_movie), "image", failing)
    with pytest.raises(RuntimeError, match="renderer died"):
        write_movie(small_movie, tmp_path / "m.zarr", progress=False, frame_chunk_mb=0.02)
    assert not (tmp_path / "m.zarr").exists()
    assert not any(p.exists() for p in truth_paths(tmp_path / "m.zarr").values())
    assert list(tmp_path.iterdir()) == []  # no partial files left behind either


def test_4d_store_holds_patterns_whose_virtual_adf_is_the_image(tmp_path):
    paths = write_4d(tmp_path / "s.zarr", "graphene", (24, 24), seed=1, dose=1e7, pixel_size=0.02,
                     progress=False, rows_per_chunk=5)
    ds = xr.open_zarr(paths["store"])
    assert ds.data.dims == ("scan_y", "scan_x", "k_y", "k_x")
    assert ds.data.encoding["chunks"][2:] == (64, 64)
    k = np.hypot(*np.meshgrid(ds.k_y.values, ds.k_x.values, indexing="ij"))
    ring = (k >= 60) & (k <= 120)
    virtual = (ds.data.values * ring).sum(axis=(2, 3))
    assert np.corrcoef(virtual.ravel(), ds.adf.values.ravel())[0, 1] > 0.99
    assert ds.attrs["k_pixel_size"] == 4.0
    truth = pd.read_parquet(paths["atoms"])
    inside = truth[truth.y.between(0, 23) & truth.x.between(0, 23)]
    assert len(inside) >= 5 and set(truth["label"].astype(str)) <= {"lattice", "dopant", "vacancy"}
    adf = ds.adf.values
    at = adf[np.rint(inside.y).astype(int), np.rint(inside.x).astype(int)]
    assert (at > np.median(adf)).all()                # every true column sits on a bright spot


def test_written_4d_scan_carries_the_dose_and_the_same_frame_as_simulate_4d(tmp_path):
    """Every probe position gets dose × pixel area electrons (e⁻/Å² × Å²); the expected ADF image
    is the one simulate_4d makes with the same seed; k coordinates are mrad about the centre."""
    import json

    from stemflow import simulate_4d

    dose, px = 2e5, 0.02                                              # e⁻/Å², nm/px
    paths = write_4d(tmp_path / "d.zarr", "graphene", (16, 16), seed=1, dose=dose, pixel_size=px,
                     progress=False, rows_per_chunk=5)
    ds = xr.open_zarr(paths["store"])
    per_pattern = ds.data.values.sum(axis=(2, 3)) / (dose * (10 * px) ** 2)
    assert 0.97 < per_pattern.mean() <= 1.0 and per_pattern.std() < 0.02
    ref = simulate_4d("graphene", (16, 16), seed=1, dose=dose, pixel_size=px)
    assert np.array_equal(ds.adf.values, ref.image)
    assert ds.attrs["pixel_size"] == px and ds.scan_x.values[1] == pytest.approx(px)
    k = ds.k_y.values
    assert k[0] == pytest.approx(-k[-1]) and np.diff(k) == pytest.approx(np.full(len(k) - 1, 4.0))
    det = json.loads(ds.attrs["detector"])
    assert det["shape"] == [64, 64] and det["k_pixel_size"] == 4.0
    with pytest.raises(FileExistsError):
        write_4d(tmp_path / "d.zarr", "graphene", (16, 16), progress=False)

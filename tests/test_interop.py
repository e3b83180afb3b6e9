"""HyperSpy interoperability (.hspy/.zspy, signals in and out, markers) and real files read with
rosettasciio."""

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

import stemflow

ROOT = Path(__file__).resolve().parents[1]
PX = 0.012


def _zspy(path, data, axes):
    """A store laid out as HyperSpy writes .zspy (Experiments/<title>/data beside axis-i groups)."""
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    e = g.create_group("Experiments/movie")
    a = e.create_array("data", shape=data.shape, dtype=data.dtype, chunks=(1, *data.shape[1:]))
    a[:] = data
    for i, (name, scale, units) in enumerate(axes):
        e.create_group(f"axis-{i}").attrs.update(name=name, scale=scale, offset=0.0, units=units,
                                                 size=data.shape[i], navigate=i == 0)
    return path


def test_a_zspy_store_opens_lazily_with_its_axes_and_calibration(tmp_path):
    data = np.random.default_rng(0).random((3, 40, 56)).astype(np.float32)
    p = _zspy(tmp_path / "movie.zspy", data, [("time", 1.0, "s"), ("y", 1.2, "Å"), ("x", 1.2, "Å")])
    da = stemflow.open_stem(p)
    assert da.dims == ("frame", "y", "x") and da.shape == data.shape and hasattr(da.data, "dask")
    assert da.attrs["pixel_size"] == pytest.approx(0.12)                 # Å → nm
    np.testing.assert_array_equal(da.values, data)


def _write_mrc(path, data, apix_angstrom):
    """A minimal MRC2014 file (mode 2, float32): what cryo/ET software writes for image stacks."""
    nz, ny, nx = data.shape
    h = np.zeros(256, np.int32)
    hf = h.view(np.float32)
    h[0:3], h[3], h[7:10] = (nx, ny, nz), 2, (nx, ny, nz)
    hf[10:13] = (nx * apix_angstrom, ny * apix_angstrom, nz * apix_angstrom)
    hf[13:16] = 90.0
    h[16:19] = (1, 2, 3)
    hf[19:22] = (data.min(), data.max(), data.mean())
    head = bytearray(h.tobytes())
    head[208:216] = b"MAP " + bytes([0x44, 0x44, 0, 0])
    path.write_bytes(bytes(head) + np.ascontiguousarray(data, np.float32).tobytes())
    return path


def test_an_mrc_stack_opens_lazily_with_its_calibration(tmp_path):
    pytest.importorskip("rsciio", reason="rosettasciio is not installed (pip install 'stemflow[io]')")
    data = (np.arange(3 * 32 * 40) % 997).astype(np.float32).reshape(3, 32, 40)
    da = stemflow.open_stem(_write_mrc(tmp_path / "stack.mrc", data, 1.2))    # 1.2 Å/px
    assert da.dims == ("frame", "y", "x") and hasattr(da.data, "dask")
    assert da.attrs["pixel_size"] == pytest.approx(0.12)
    np.testing.assert_array_equal(da.values, data)


hs = pytest.importorskip("hyperspy.api", reason="HyperSpy is not installed (pip install hyperspy)")


@pytest.fixture(scope="module")
def movie():
    mov = stemflow.simulate_movie("graphene", 3, 160, pixel_size=PX, seed=2, defects={"Si1C3": 2, "V1": 1})
    return mov


def test_signals_go_in_and_out_with_their_calibration(movie, tmp_path):
    da = stemflow.open_stem(movie.images(), pixel_size=PX)
    s = da.stem.to_hyperspy()
    assert type(s).__name__ == "LazySignal2D"                             # dask data stay lazy
    nav, (sx, sy) = s.axes_manager.navigation_axes, s.axes_manager.signal_axes
    assert [a.name for a in nav] == ["frame"] and (sx.name, sy.name) == ("x", "y")
    assert (sx.scale, sx.units) == (PX, "nm") and sy.size == 160
    back = stemflow.open_stem(s)
    assert back.dims == ("frame", "y", "x") and back.attrs["pixel_size"] == PX and hasattr(back.data, "dask")
    np.testing.assert_array_equal(back.values, da.values)
    # HyperSpy's own .hspy file, read by stemflow without HyperSpy's help
    s.compute()
    s.save(tmp_path / "movie.hspy")
    f = stemflow.open_stem(tmp_path / "movie.hspy")
    assert f.dims == ("frame", "y", "x") and f.attrs["pixel_size"] == pytest.approx(PX)
    np.testing.assert_array_equal(f.values, da.values)


def test_atoms_become_markers_at_their_calibrated_positions(movie, tmp_path):
    from stemflow.io import atoms_to_markers

    da = stemflow.open_stem(movie.images(), pixel_size=PX)
    s = da.stem.to_hyperspy()
    atoms = movie.atoms[["frame", "y", "x", "label"]]
    markers = atoms_to_markers(atoms, s)
    assert sorted(m.name for m in markers) == ["atoms_dopant", "atoms_lattice", "atoms_vacancy"]
    dop = next(m for m in markers if m.name == "atoms_dopant")
    for f in range(3):
        want = atoms[(atoms.frame == f) & (atoms.label == "dopant")][["x", "y"]].to_numpy() * PX
        np.testing.assert_allclose(dop.kwargs["offsets"][f], want)          # per frame, in nm
    s.add_marker(markers, permanent=True)
    s.compute()
    s.save(tmp_path / "marked.hspy")
    assert set(hs.load(tmp_path / "marked.hspy").metadata.Markers.keys()) == {m.name for m in markers}


def _real_dm3(tmp_path_factory) -> Path:
    cached = ROOT / "benchmarks" / "_cache" / "example_Se_implanted_MoS2.dm3"
    if cached.exists():
        return cached
    dest = tmp_path_factory.mktemp("temul")
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "temul-toolkit==0.1.9", "-d",
                        str(dest), "-q"], check=True, timeout=180, capture_output=True)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"the real .dm3 comes inside the temul-toolkit wheel, which could not be fetched ({e})")
    wheel = next(dest.glob("temul_toolkit-*.whl"))
    target = dest / "example_Se_implanted_MoS2.dm3"
    with zipfile.ZipFile(wheel) as z:
        target.write_bytes(z.read("temul/example_data/experimental/example_Se_implanted_MoS2.dm3"))
    return target


def test_a_real_dm3_opens_lazily_with_its_calibration(tmp_path_factory):
    pytest.importorskip("rsciio", reason="rosettasciio is not installed (pip install 'stemflow[io]')")
    da = stemflow.open_stem(_real_dm3(tmp_path_factory))
    assert da.dims == ("y", "x") and da.shape == (1024, 1024) and hasattr(da.data, "dask")
    assert da.attrs["pixel_size"] == pytest.approx(0.0127, rel=0.01)      # nm/px, from the file
    frame = da.values
    assert np.isfinite(frame).all() and frame.std() > 0


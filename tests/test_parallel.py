"""The Dask pipeline with real worker processes, scored against the simulator's ground truth."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import stemflow
from stemflow.errors import InputError, StemflowWarning
from stemflow.detectors import detector_mask
from stemflow.parallel import (ClusterError, OutputMismatchError, center_of_mass, connect, read_atoms,
                               run, virtual_image)
from stemflow.rundir import complete_parts, part_path
from stemflow.nn.infer import tiles
from stemflow.parallel.pipeline import plan_parts
from stemflow.simulate import simulate_image, simulate_movie
from stemflow.simulate.fourd import Detector
from stemflow.io import write_4d, write_movie
from stemflow.tables import EVENTS
from stemflow.tracking import TrackOptions

distributed = pytest.importorskip("distributed")

PX = 0.02  # nm/px: the bundled network's own sampling, so no resampling
EDGE = 0.15 / PX  # px: columns cut by the frame edge have no well-defined centre


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes; they advertise a GPU resource so that the tasks'
    resource annotation is exercised (the device is still the CPU here)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  resources={"GPU": 1}) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    """12 frames of Si-doped graphene with vacancies, 128² px, stored in chunks of 2 frames."""
    mov = simulate_movie("graphene", 12, 128, seed=3, pixel_size=PX, drift=(0.3, -0.2),
                         defects={"Si1C3": 0.4, "V1": 0.2})
    store = tmp_path_factory.mktemp("movie") / "movie.zarr"
    write_movie(mov, store, progress=False, frame_chunk_mb=2 * 128 * 128 * 4 / 1e6)
    return mov, store


@pytest.fixture(scope="module")
def reference(client, movie, tmp_path_factory):
    """An undisturbed run over the movie, one frame per part."""
    _, store = movie
    out = tmp_path_factory.mktemp("runs") / "reference"
    summary = run(store, out, client=client, frames_per_part=1, progress=False)
    return summary, read_atoms(out)


def _inner(t, shape):
    h, w = shape
    return t[t.y.between(EDGE, h - 1 - EDGE) & t.x.between(EDGE, w - 1 - EDGE)].reset_index(drop=True)


def test_run_finds_the_simulated_atoms_in_every_frame(movie, reference):
    mov, _ = movie
    summary, atoms = reference
    assert (summary.parts, summary.computed, summary.skipped, summary.frames) == (12, 12, 0, 12)
    assert summary.rows == len(atoms)
    assert sorted(atoms.frame.unique()) == list(range(12))
    for f in (0, 11):
        s = stemflow.score(_inner(atoms[atoms.frame == f], mov.shape),
                           _inner(mov.atoms[mov.atoms.frame == f], mov.shape), pixel_size=PX)
        assert s.loc["lattice", "f1"] > 0.98
        assert s.loc["lattice", "rmse_px"] < 0.3
        assert s.loc["dopant", "recall"] >= 0.9


def test_parts_carry_the_gpu_resource_annotation(client, movie, tmp_path):
    _, store = movie
    seen = []

    def restrictions(part):
        seen.append(client.run_on_scheduler(lambda dask_scheduler: [
            ts.resource_restrictions for key, ts in dask_scheduler.tasks.items() if "stemflow-part" in str(key)]))

    run(store, tmp_path / "out", client=client, frames="0:4", frames_per_part=2, progress=False, on_part=restrictions)
    flat = [r for rs in seen for r in rs]
    assert flat and all(r == {"GPU": 1} for r in flat)


def test_each_part_is_read_by_a_task_of_its_own_that_a_spare_thread_runs_ahead(movie, reference, tmp_path):
    """Prefetch: on a worker with two threads and one GPU slot, the next part's frames are read
    while a part's network holds the GPU (their task intervals overlap), the parts' frames leave
    the worker's memory as the parts finish, and the table is the undisturbed one."""
    from distributed import get_task_stream

    _, store = movie
    held = []

    def reads_in_memory(part):
        held.append(sum("stemflow-read" in str(k) for k, w in c.who_has().items() if w))

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0",
                                  resources={"GPU": 1}) as cluster, distributed.Client(cluster) as c:
        with get_task_stream(c) as ts:
            run(store, tmp_path / "out", client=c, frames_per_part=1, progress=False, on_part=reads_in_memory)
    spans = {}
    for t in ts.data:
        kind = "read" if "stemflow-read" in str(t["key"]) else "part" if "stemflow-part" in str(t["key"]) else None
        if kind:
            (start, stop), = [(s["start"], s["stop"]) for s in t["startstops"] if s["action"] == "compute"]
            spans.setdefault(kind, []).append((start, stop))
    assert len(spans.get("read", [])) == len(spans["part"]) == 12, "the parts were not read by tasks of their own"
    overlapping = sum(any(a < d and c_ < b for c_, d in spans["part"]) for a, b in spans["read"])
    assert overlapping >= 3, f"only {overlapping} of 12 reads ran while a part was computing"
    assert len(held) == 12 and max(held[-3:]) <= 4, held        # not every part's frames kept to the end
    pd.testing.assert_frame_equal(read_atoms(tmp_path / "out"), reference[1])


def test_worker_killed_mid_run_gives_the_same_table(client, movie, reference, tmp_path):
    _, store = movie
    killed = []

    def kill_a_busy_worker(part):
        if killed:
            return
        busy = [w for w, keys in client.processing().items() if keys]
        assert busy, "no worker was busy when the first part finished"
        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    summary = run(store, tmp_path / "out", client=client, frames_per_part=1, progress=False,
                  on_part=kill_a_busy_worker)
    assert killed and summary.computed == 12
    pd.testing.assert_frame_equal(read_atoms(tmp_path / "out"), reference[1])
    client.wait_for_workers(2, timeout=60)
    assert killed[0] not in client.run(os.getpid).values()


def _idle(client, timeout=30):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not any(client.run(lambda dask_worker: len(dask_worker.state.executing)).values()):
            return
        time.sleep(0.05)


def test_interrupted_run_resumes_computing_only_the_missing_parts(client, movie, reference, tmp_path):
    _, store = movie
    out = tmp_path / "out"

    class Interrupt(Exception):
        pass

    def stop_after_three(part, count=[]):
        count.append(part)
        if len(count) == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(store, out, client=client, frames_per_part=1, progress=False, on_part=stop_after_three)
    _idle(client)  # tasks already running when the run stopped still finish their parts
    before = complete_parts(out)
    assert 3 <= len(before) < 12
    with pytest.raises(stemflow.errors.StemflowError, match="incomplete"):
        read_atoms(out)                                   # a stopped run is not a table
    computed = []
    summary = run(store, out, client=client, frames_per_part=1, progress=False, on_part=lambda s: computed.append(s["part"]))
    assert (summary.skipped, summary.computed) == (len(before), 12 - len(before))
    assert sorted(computed) == sorted(set(range(12)) - before)
    pd.testing.assert_frame_equal(read_atoms(out), reference[1])
    again = run(store, out, client=client, frames_per_part=1, progress=False)
    assert (again.computed, again.skipped, again.rows) == (0, 12, len(reference[1]))


def test_a_resume_with_other_settings_is_refused_unless_overwrite(client, movie, reference, tmp_path):
    _, store = movie
    out = reference[0].out
    with pytest.raises(OutputMismatchError, match=r"parameters\.lattice.*--overwrite"):
        run(store, out, client=client, frames_per_part=1, lattice="ws2", progress=False)
    with pytest.raises(OutputMismatchError, match="parameters.threshold"):
        run(store, out, client=client, frames_per_part=1, threshold=0.6, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a run")
    with pytest.raises(OutputMismatchError, match="holds no stemflow run"):
        run(store, tmp_path / "other", client=client, frames="0:1", progress=False)
    s = run(store, tmp_path / "other", client=client, frames="0:1", overwrite=True, progress=False)
    assert s.computed == 1 and json.loads((tmp_path / "other" / "manifest.json").read_text())["complete"]


def test_a_run_made_with_one_pass_resumes_under_the_default_and_an_explicit_flips_must_match(client, movie,
                                                                                             tmp_path):
    # runs made before four passes became the default name no flips in their manifest
    _, store = movie
    out = tmp_path / "one"
    run(store, out, client=client, frames="0:2", frames_per_part=1, flips=1, progress=False, track=False)
    assert "flips" not in json.loads((out / "manifest.json").read_text())["parameters"]
    again = run(store, out, client=client, frames="0:2", frames_per_part=1, progress=False, track=False)
    assert (again.computed, again.skipped) == (0, 2)
    with pytest.raises(OutputMismatchError, match="parameters.flips"):
        run(store, out, client=client, frames="0:2", frames_per_part=1, flips=4, progress=False, track=False)


def test_tiles_equal_whole_frames(client, tmp_path):
    mov = simulate_movie("graphene", 1, 256, seed=8, pixel_size=PX, defects={"Si1C3": 0.3, "V1": 0.2})
    img = xr.DataArray(mov.images(), dims=("frame", "y", "x"), attrs={"pixel_size": PX})
    model = stemflow.load_model("default", device="cpu")
    assert len(tiles(256, 224, model.receptive_field // 2 + 1)) == 6  # 6 × 6 tiles with halos
    whole = run(img, tmp_path / "whole", client=client, tile=1024, progress=False)
    tiled = run(img, tmp_path / "tiled", client=client, tile=224, progress=False)
    a, b = read_atoms(whole.out), read_atoms(tiled.out)
    assert len(a) == len(b) and (a.label == b.label).all()
    np.testing.assert_allclose(b[["y", "x"]], a[["y", "x"]], atol=1e-3)
    s = stemflow.score(_inner(b, mov.shape), _inner(mov.atoms, mov.shape), pixel_size=PX)
    assert s.loc["lattice", "f1"] > 0.98 and s.loc["vacancy", "recall"] >= 0.8
    from stemflow.preprocess import normalize

    norm = normalize(mov.images()[0])
    p_whole, _ = model.maps(norm, tile=1024)
    p_tiled, _ = model.maps(norm, tile=224)
    np.testing.assert_allclose(p_tiled, p_whole, atol=1e-4)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    det = Detector(shape=(32, 32), k_pixel_size=8.0)
    store = tmp_path_factory.mktemp("scan") / "scan.zarr"
    write_4d(store, "graphene", (96, 96), detector=det, rows_per_chunk=10, seed=2, pixel_size=PX, progress=False,
             defects={"Si1C3": 1})
    return store, det


def test_virtual_image_equals_the_numpy_reduction_exactly(scan):
    store, det = scan
    da = stemflow.open_stem(store, dataset="data", chunks={"scan_y": 10})
    assert da.attrs["k_pixel_size"] == 8.0 and len(da.chunks[0]) > 1
    data = np.asarray(zarr.open_array(str(store / "data")))
    for name, inner, outer in (("adf", 60.0, 120.0), ("bf", None, None), ("haadf", None, None)):
        img = virtual_image(da, name, inner=inner, outer=outer)
        assert img.dims == ("y", "x") and img.attrs["pixel_size"] == PX
        mask = detector_mask((32, 32), name, inner=inner, outer=outer, k_pixel_size=8.0)
        np.testing.assert_array_equal(img.values, (data * mask).sum(axis=(2, 3)))
    # the simulator's own ADF annulus gives back the image it was made from, up to shot noise
    adf = virtual_image(da, det.adf_mask()).values
    expected = np.asarray(zarr.open_array(str(store / "adf")))
    z = (adf - expected) / np.sqrt(expected)  # Poisson: mean 0, standard deviation 1
    assert abs(z.mean()) < 0.05 and 0.9 < z.std() < 1.1
    # 5-D: a frame axis in front gives one image per frame, the same numbers
    part = data[:24, :24]
    five = stemflow.open_stem(np.stack([part, part[::-1]]), pixel_size=PX, check_finite=False)
    got = virtual_image(five, "annular", inner=5, outer=12).values
    mask = detector_mask((32, 32), "annular", inner=5, outer=12)
    np.testing.assert_array_equal(got[1], (part[::-1] * mask).sum(axis=(2, 3)))
    np.testing.assert_array_equal(da.stem.virtual_image("adf", inner=60, outer=120).values,
                                  virtual_image(da, "adf", inner=60, outer=120).values)


def test_virtual_image_sums_each_chunk_as_it_was_read(monkeypatch):
    # the kernel must get the chunk the reader made, not a copy of it: a copy per chunk cost a
    # fifth of the time from a Zarr (benchmarks/bench_virtual.py)
    import dask.array as dsa

    import stemflow.parallel.virtual as virtual

    made, seen = [], []

    def block(block_info=None):
        (a, b) = block_info[None]["array-location"][0]
        made.append(np.full((b - a, 4, 8, 8), a + 1, np.uint16))
        return made[-1]

    arr = dsa.map_blocks(block, chunks=((3, 3, 2), (4,), (8,), (8,)), dtype=np.uint16)
    real = virtual.reduce_patterns
    monkeypatch.setattr(virtual, "reduce_patterns", lambda b, w: seen.append(b) or real(b, w))
    data = xr.DataArray(arr, dims=("scan_y", "scan_x", "k_y", "k_x"))
    got = np.asarray(virtual_image(data, "annular", inner=0, outer=3).data.compute(scheduler="sync"))
    assert len(seen) == 3 and all(any(s is m for m in made) for s in seen)
    np.testing.assert_array_equal(got[:, 0], np.repeat([1, 4, 7], [3, 3, 2]) * detector_mask((8, 8), "annular",
                                                                                          inner=0, outer=3).sum())


def test_center_of_mass_finds_a_shifted_disk():
    ky = kx = 33
    yy, xx = np.mgrid[:ky, :kx]
    shifts = [(0.0, 0.0), (2.0, -3.0), (-4.0, 1.0)]
    pats = np.stack([(np.hypot(yy - 16 - dy, xx - 16 - dx) <= 5).astype(np.uint16) * 100 for dy, dx in shifts])
    data = stemflow.open_stem(pats.reshape(1, 3, ky, kx), pixel_size=PX, check_finite=False)
    com = center_of_mass(data, k_pixel_size=2.0).values
    np.testing.assert_allclose(com[:, 0].T, np.array(shifts) * 2.0, atol=1e-9)


def test_run_on_a_4d_scan_finds_the_atoms_of_its_virtual_image(client, scan, tmp_path):
    store, _ = scan
    s = run(store, tmp_path / "out", client=client, dataset="data", detector="adf:60:120", progress=False)
    atoms = read_atoms(s.out)
    truth = pd.read_parquet(store.with_name("scan.atoms.parquet"))
    sc = stemflow.score(_inner(atoms, (96, 96)), _inner(truth, (96, 96)), pixel_size=PX)
    assert s.parts == 1 and (atoms.frame == 0).all()
    assert sc.loc["lattice", "f1"] > 0.95
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["parameters"]["detector"] == {"detector": "adf", "inner": 60.0, "outer": 120.0}


def test_save_probabilities_writes_class_maps_in_the_same_pass(client, movie, tmp_path):
    mov, store = movie
    run(store, tmp_path / "out", client=client, frames="4:6", save_probabilities=True, progress=False)
    probs = zarr.open_array(str(tmp_path / "out" / "probabilities.zarr"))
    assert probs.shape == (12, 4, 128, 128) and np.isnan(probs[0]).all()
    p = probs[4].astype(np.float32)
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=0.01)
    truth = mov.masks(4, 5)[0]
    assert (p.argmax(axis=0) == truth).mean() > 0.9
    atoms = read_atoms(tmp_path / "out")
    assert sorted(atoms.frame.unique()) == [4, 5]


def test_bad_inputs_get_errors_naming_the_fix(client, movie, tmp_path):
    _, store = movie
    with pytest.raises(InputError, match="pixel_size"), pytest.warns(StemflowWarning, match="no pixel size"):
        run(np.ones((2, 64, 64), np.float32), tmp_path / "a", client=client, progress=False)
    with pytest.raises(InputError, match="unknown lattice"):
        run(store, tmp_path / "b", client=client, lattice="diamond", progress=False)
    with pytest.raises(InputError, match="select nothing"):
        run(store, tmp_path / "c", client=client, frames="8:3", progress=False)
    with pytest.raises(InputError, match="4D-STEM data only"):
        run(store, tmp_path / "d", client=client, detector="haadf", progress=False)
    with pytest.raises(InputError, match="not calibrated"):
        virtual_image(np.ones((4, 4, 16, 16), np.uint16), "haadf")
    with pytest.raises(InputError, match="holds no detector pixel"):
        detector_mask((16, 16), "annular", inner=50, outer=60)
    bad = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    bad[2, 5, 5] = np.nan
    with pytest.raises(InputError, match="frames 2 contain NaN"):
        run(xr.DataArray(bad, dims=("frame", "y", "x"), attrs={"pixel_size": PX}), tmp_path / "e", client=client,
            frames_per_part=1, progress=False)
    _idle(client)


def test_the_table_of_a_failed_run_is_never_read_as_whole(client, tmp_path):
    from stemflow.results import IncompleteRunError, track_run
    from stemflow.report import write_report

    bad = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    bad[2, 5, 5] = np.nan
    out = tmp_path / "e"
    with pytest.raises(InputError, match="frames 2 contain NaN"):
        run(xr.DataArray(bad, dims=("frame", "y", "x"), attrs={"pixel_size": PX}), out, client=client,
            frames_per_part=1, progress=False)
    _idle(client)
    with pytest.raises(IncompleteRunError, match=r"parts missing \(frames .*2.*failed: frames 2–2: .*NaN"):
        read_atoms(out)
    with pytest.raises(IncompleteRunError, match="incomplete"):
        track_run(out, pixel_size=PX)
    with pytest.raises(IncompleteRunError, match="incomplete"):
        write_report(out)
    with pytest.warns(StemflowWarning, match="lacks those frames"):
        some = read_atoms(out, partial=True)
    assert some.attrs["complete"] is False and [2, 3] in some.attrs["missing_frames"]
    assert 2 not in set(some["frame"])


def test_chunks_that_split_frames_are_rechunked_with_a_warning(client, movie, tmp_path):
    mov, _ = movie
    store = tmp_path / "split.zarr"
    arr = zarr.create_array(str(store), shape=(2, 128, 128), chunks=(1, 64, 64), dtype="float32")
    arr[:] = mov.images(0, 2)
    with pytest.warns(StemflowWarning, match="splits each frame"):
        s = run(store, tmp_path / "out", client=client, pixel_size=PX, progress=False)
    atoms = read_atoms(s.out)
    sc = stemflow.score(_inner(atoms[atoms.frame == 1], mov.shape),
                        _inner(mov.atoms[mov.atoms.frame == 1], mov.shape), pixel_size=PX)
    assert sc.loc["lattice", "f1"] > 0.98


def test_a_scheduler_that_does_not_answer_is_an_error_within_seconds():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match="no Dask scheduler answered.*--scheduler"):
        with connect(f"tcp://127.0.0.1:{port}", timeout=1, quiet=True):
            pass
    assert time.monotonic() - t0 < 10


def test_parts_follow_the_input_chunks():
    assert plan_parts((4, 4, 2), 0, 10) == [(0, 4), (4, 8), (8, 10)]
    assert plan_parts((4, 4, 2), 3, 9) == [(3, 4), (4, 8), (8, 9)]
    assert plan_parts((4, 4), 0, 8, frames_per_part=3) == [(0, 3), (3, 4), (4, 7), (7, 8)]


def test_cli_run_writes_the_table_and_refuses_a_different_run(client, movie, tmp_path, capsys):
    from stemflow.cli import main

    mov, store = movie
    out = tmp_path / "cli"
    args = ["run", str(store), "--out", str(out), "--frames", "2:4", "--scheduler", client.scheduler.address, "--quiet"]
    assert main(args) == 0
    assert "2 frames" in capsys.readouterr().out
    atoms = pd.read_parquet(out / "atoms.parquet")
    assert sorted(atoms.frame.unique()) == [2, 3]
    assert part_path(out, 0).exists()
    assert main(args + ["--threshold", "0.7"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--threshold", "0.7", "--overwrite"]) == 0


def test_run_with_the_lattice_prior_on_the_workers(client, movie, tmp_path):
    """The prior runs per frame on the workers; its columns reach the table and the manifest."""
    _, store = movie
    out = tmp_path / "prior"
    run(store, out, client=client, frames=slice(0, 4), frames_per_part=2, progress=False, track=False,
        lattice_prior=True)
    atoms = read_atoms(out)
    assert {"y_fit", "x_fit", "prior_weight", "site", "defect"} <= set(atoms.columns)
    assert sorted(atoms.frame.unique()) == [0, 1, 2, 3]
    assert (atoms.prior_weight < 1).mean() > 0.3
    params = json.loads((out / "manifest.json").read_text())["parameters"]
    assert params["lattice_prior"] and params["refine"] and params["identify"]


def test_run_averages_the_offsets_over_flips_on_the_workers_as_find_atoms_does(client, movie, tmp_path):
    mov, store = movie
    out = tmp_path / "flips"
    run(store, out, client=client, frames=slice(0, 2), frames_per_part=2, progress=False, track=False, flips=2)
    atoms = read_atoms(out).sort_values(["frame", "y", "x"]).reset_index(drop=True)
    assert json.loads((out / "manifest.json").read_text())["parameters"]["flips"] == 2
    frames = np.stack([np.asarray(mov.images()[k], np.float32) for k in (0, 1)])
    ref = stemflow.find_atoms(frames, PX, flips=2).sort_values(["frame", "y", "x"]).reset_index(drop=True)
    plain = stemflow.find_atoms(frames, PX).sort_values(["frame", "y", "x"]).reset_index(drop=True)
    np.testing.assert_allclose(atoms[["y", "x"]].to_numpy(), ref[["y", "x"]].to_numpy(), atol=1e-4)
    assert np.abs(atoms[["y", "x"]].to_numpy() - plain[["y", "x"]].to_numpy()).max() > 0.01


def test_parts_with_different_label_categories_read_back_without_losing_a_label(tmp_path):
    import pandas as pd

    from stemflow.results import read_atoms

    folder = tmp_path / "atoms.parquet"
    folder.mkdir()
    base = dict(frame=[0], y=[1.0], x=[2.0], y_nm=[0.01], x_nm=[0.02], prob=[0.9], intensity=[1.0])
    pd.DataFrame({**base, "label": pd.Categorical(["lattice"], categories=["lattice", "dopant", "vacancy"])}
                 ).to_parquet(folder / "part-00000.parquet")
    pd.DataFrame({**base, "frame": [1], "label": pd.Categorical(["unknown"], categories=["lattice", "dopant",
                                                                                     "vacancy", "unknown"])}
                 ).to_parquet(folder / "part-00001.parquet")
    df = read_atoms(tmp_path)
    assert df["label"].astype(str).tolist() == ["lattice", "unknown"]


def test_a_corrupt_chunk_is_named_with_its_store_key_and_frames(client, movie, tmp_path):
    import shutil

    from stemflow.results import IncompleteRunError

    _, store = movie
    copy = tmp_path / "damaged.zarr"
    shutil.copytree(store, copy)
    chunk = copy / "image" / "c" / "1" / "0" / "0"                  # frames 2–3 (chunks of 2 frames)
    assert chunk.is_file()
    chunk.write_bytes(b"not a compressed chunk" * 10)
    with pytest.raises(InputError, match=r"damaged.zarr: frames 2–3 could not be read \(chunk image/c/1/0/0\)"):
        run(copy, tmp_path / "out", client=client, frames_per_part=2, progress=False)
    _idle(client)
    with pytest.raises(IncompleteRunError, match="frames 2–3 could not be read"):
        read_atoms(tmp_path / "out")


def test_a_relative_out_lands_where_the_client_reads_it(client, movie, reference, tmp_path, monkeypatch):
    _, store = movie
    monkeypatch.chdir(tmp_path)              # the client's working directory is not the workers'
    summary = run(store, "relative_out", client=client, frames_per_part=4, progress=False)
    assert summary.rows == len(reference[1])
    # parts of 4 frames here, of 1 in the reference: the network sees batches of other sizes, whose
    # float sums differ in the last bits (~1e-6 in the maps), and the lattice fit of the
    # identification carries that into site_x at ~1e-7 px; everything else is equal
    pd.testing.assert_frame_equal(read_atoms(tmp_path / "relative_out"), reference[1], check_exact=False,
                                  rtol=1e-6, atol=1e-5)


def test_parts_the_client_cannot_see_fail_the_run_loudly(tmp_path):
    from stemflow import rundir as results
    from stemflow.parallel import output
    from stemflow.parallel.pipeline import _check_parts_here

    output.prepare(tmp_path, {"format": "x", "parts": [[0, 2], [2, 4]]})
    output.write_part(tmp_path, 0, output.empty_atoms())
    with pytest.raises(stemflow.errors.StemflowError, match="1 of 2 parts .*part 1: missing.*do not share"):
        _check_parts_here(tmp_path, [{"part": 0, "rows": 0}, {"part": 1, "rows": 5}], [[0, 2], [2, 4]])
    assert results.run_status(tmp_path)["failed"][0]["frames"] == [2, 4]


def test_a_rerun_recomputes_the_parts_whose_pixels_were_rewritten(client, movie, tmp_path):
    import shutil

    mov, store = movie
    copy = tmp_path / "edited.zarr"
    shutil.copytree(store, copy)
    first = run(copy, tmp_path / "out", client=client, frames_per_part=4, progress=False)
    assert (first.computed, first.changed) == (3, 0)
    arr = zarr.open_array(str(copy / "image"), mode="r+")
    arr[4:8] = arr[4:8][:, ::-1, :]                   # same shape, dtype and attrs; other pixels
    again = run(copy, tmp_path / "out", client=client, frames_per_part=4, progress=False)
    assert (again.changed, again.computed, again.skipped) == (1, 1, 2)
    assert "1 of them because their input changed" in str(again)
    fresh = run(copy, tmp_path / "fresh", client=client, frames_per_part=4, progress=False)
    pd.testing.assert_frame_equal(read_atoms(tmp_path / "out"), read_atoms(tmp_path / "fresh"))
    assert fresh.rows == again.rows
    trusted = run(copy, tmp_path / "out", client=client, frames_per_part=4, progress=False, verify_input=False)
    assert (trusted.computed, trusted.skipped) == (0, 3)


def test_one_run_at_a_time_per_output_directory(client, movie, reference, tmp_path):
    import socket

    from stemflow.parallel.output import LOCK, RunLockedError

    _, store = movie
    out = tmp_path / "out"
    out.mkdir()
    lock = out / LOCK
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "now"}))
    with pytest.raises(RunLockedError, match=f"another run \\(pid {os.getpid()}"):
        run(store, out, client=client, frames_per_part=4, progress=False)
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "since": "then"}))  # gone
    with pytest.warns(StemflowWarning, match="is gone; taking over"):
        summary = run(store, out, client=client, frames_per_part=4, progress=False)
    assert summary.rows == len(reference[1]) and not lock.exists()


_RERUN = """
import sys
from stemflow.parallel import run
if __name__ == "__main__":
    for _ in range(2):       # stemflow's own cluster each time, and no default Dask client in this process
        s = run(sys.argv[1], sys.argv[2], n_workers=1, progress=False, track=False, frames=(0, 4))
        print(s.computed, s.skipped, s.changed)
"""


def test_a_rerun_in_a_fresh_process_checks_its_parts_on_its_own_cluster(movie, tmp_path):
    """The input check of a rerun goes through the run's client, not a default one the user may
    not have (the test fixtures' client is a default client, which hid this)."""
    _, store = movie
    script = tmp_path / "rerun.py"
    script.write_text(_RERUN)
    r = subprocess.run([sys.executable, str(script), str(store), str(tmp_path / "run")], capture_output=True,
                       text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    first, second = (line.split() for line in r.stdout.split("\n")[:2])
    assert int(first[0]) >= 1 and first[1:] == ["0", "0"]          # computed, none skipped or changed
    assert second == ["0", first[0], "0"]                           # all skipped, none changed


def test_open_run_is_the_run_directory_as_one_object(reference, tmp_path):
    import shutil

    from stemflow import open_run
    from stemflow.results import IncompleteRunError

    summary, atoms = reference
    r = open_run(summary.out)
    assert r.complete and r.pixel_size == PX and repr(r).startswith(f"<stemflow run {Path(summary.out).name!r}: complete")
    got = r.atoms()
    pd.testing.assert_frame_equal(got, atoms)
    assert got.attrs["pixel_size"] == PX and got.attrs["lattice"] == "graphene"
    events = r.table("events")
    assert list(events.columns) == EVENTS.names
    assert events.attrs["pixel_size"] == PX and events.attrs["spacing_nm"] > 0      # from the file's own metadata
    assert events.attrs["track_options"]["labels"] == ["dopant", "vacancy"]          # how it was tracked
    pd.testing.assert_frame_equal(r.events, events)
    import pyarrow.parquet as pq

    from stemflow.tables import attrs_from_metadata

    files = sorted(f for f in Path(summary.out).rglob("*.parquet") if f.is_file())
    assert len(files) >= 4                                         # parts and the three tracking tables
    for f in files:                                                # every Parquet file carries its calibration
        assert attrs_from_metadata(pq.read_schema(f).metadata).get("pixel_size") == PX, f
    part = attrs_from_metadata(pq.read_schema(files[0]).metadata)   # and the parts their provenance
    assert part["source"].endswith("movie.zarr") and len(part["model_sha256"]) == 64 and part["lattice"] == "graphene"
    assert len(r.trajectories) and list(r.drift.columns) == ["frame", "dy", "dx", "matched"]
    ds = r.to_xarray()
    assert ds.sizes["atom"] == len(got) and ds["y_nm"].attrs["units"] == "nm" and ds["y"].attrs["units"] == "px"
    assert ds.attrs["pixel_size"] == PX
    page = r._repr_html_()
    assert "complete" in page and "INCOMPLETE" not in page and "pixel size" in page and "events.parquet" in page
    import matplotlib

    matplotlib.use("Agg")
    ax = r.plot_atoms(frame=3)
    assert ax.get_title() == "frame 3" and sum(len(c.get_offsets()) for c in ax.collections) == (got.frame == 3).sum()
    assert any(type(a).__name__ == "AnchoredSizeBar" for a in ax.artists)          # scale bar from the run's calibration
    with pytest.raises(InputError, match="unknown table 'atoms'"):
        r.table("atoms")
    # a copy with a part missing reads as incomplete everywhere
    broken = tmp_path / "broken"
    shutil.copytree(summary.out, broken)
    next(iter(sorted((broken / "atoms.parquet").glob("part-*.parquet")))).unlink()
    b = open_run(broken)
    assert not b.complete and "incomplete (1 of" in repr(b)
    assert "INCOMPLETE: 1 of" in b._repr_html_()
    with pytest.raises(IncompleteRunError, match="parts missing"):
        b.atoms()
    with pytest.raises(IncompleteRunError):
        b.table("events")
    with pytest.raises(InputError, match="not a run directory"):
        open_run(tmp_path / "nothing")


def test_write_part_keeps_its_record_the_calibration_and_pandas_metadata(tmp_path):
    import pyarrow.parquet as pq

    from stemflow import results, rundir
    from stemflow.parallel import output

    out = tmp_path / "new" / "run"                       # parents created as needed
    df = pd.DataFrame({"frame": [3, 3], "y": [1.0, 2.0], "x": [4.0, 5.0], "y_nm": [0.01, 0.02],
                       "x_nm": [0.04, 0.05], "label": ["dopant", "Si"], "prob": [0.9, 0.8],
                       "intensity": [10.0, 11.0]}, index=[7, 8])
    df.attrs.update(pixel_size=0.01, lattice="graphene")
    output.write_part(out, 5, df, meta={"input": "abc", "model": "0f"})
    assert rundir.part_meta(out, 5) == {"input": "abc", "model": "0f"}
    path = rundir.part_path(out, 5)
    meta = pq.read_schema(path).metadata
    assert b"pandas" in meta and b"stemflow" in meta             # pyarrow's own record kept beside ours
    back = results.read_atoms(out / rundir.ATOMS_DIR)
    assert list(back.columns) == list(df.columns) and back.index.tolist() == [0, 1]   # no index column
    assert back["label"].tolist() == ["dopant", "Si"] and back.attrs["pixel_size"] == 0.01
    with pytest.raises(InputError, match=r"lacks columns \['prob'\]"):
        output.write_part(out, 6, df.drop(columns="prob"))
    assert not rundir.part_path(out, 6).exists()


def test_record_failure_names_the_error_once_per_part_and_marks_the_run_incomplete(tmp_path):
    from stemflow import rundir
    from stemflow.parallel import output

    output.prepare(tmp_path, {"format": "x", "parts": [[0, 2], [2, 4]]})
    output.finish(tmp_path, rows=0)
    assert rundir.read_manifest(tmp_path)["complete"] is True
    output.record_failure(tmp_path, 1, (2, 4), ValueError("bad\n   frame  2"))
    output.record_failure(tmp_path, 0, (0, 2), "written by a worker but missing")
    output.record_failure(tmp_path, 1, (2, 4), KeyError("again"))          # replaces the first record
    m = rundir.read_manifest(tmp_path)
    assert m["complete"] is False
    assert sorted((f["part"], f["frames"], f["error"]) for f in m["failed"]) == [
        (0, [0, 2], "written by a worker but missing"), (1, [2, 4], "KeyError: 'again'")]
    output.record_failure(tmp_path / "no-run", 0, (0, 1), "x")            # no manifest: nothing to record


def test_input_digest_changes_with_any_pixel_dtype_or_shape():
    from stemflow.parallel.output import input_digest

    a = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    assert input_digest(a) == input_digest(a.copy()) and len(input_digest(a)) == 32
    b = a.copy()
    b[1, 2, 3] += 1
    assert input_digest(b) != input_digest(a)
    assert input_digest(a.astype(np.int16)) != input_digest(a)             # same bytes, other dtype
    assert input_digest(a.reshape(2, 4, 3)) != input_digest(a)             # same bytes, other shape
    assert input_digest(np.asfortranarray(a)) == input_digest(a)           # layout in memory does not matter


def test_manifest_values_from_numpy_and_paths_are_written_as_json(tmp_path):
    from stemflow import rundir
    from stemflow.parallel import output

    output.prepare(tmp_path, {"format": "x", "parts": [(0, 2)], "input": {"n": np.int64(3), "px": np.float32(0.5),
                                                                     "path": tmp_path / "a.zarr", "shape": (2, 3)}})
    m = rundir.read_manifest(tmp_path)
    assert m["input"] == {"n": 3, "px": 0.5, "path": str(tmp_path / "a.zarr"), "shape": [2, 3]}
    assert m["parts"] == [[0, 2]]
    with pytest.raises(TypeError, match="not JSON-serialisable: object"):
        output.prepare(tmp_path / "b", {"format": "x", "parts": [], "input": {"bad": object()}})


def test_the_workers_check_the_pixel_size_against_the_lattice_as_find_atoms_does():
    from stemflow import load_model
    from stemflow.find import FindOptions
    from stemflow.parallel.worker import find_frames

    sim = simulate_image("graphene", 256, seed=4, pixel_size=0.01)
    with pytest.warns(StemflowWarning, match=r"frame 7.*pixel size is probably|pixel size is probably.*frame 7"):
        find_frames(sim.image[None], 7, load_model(), 0.03, FindOptions(identify=False))


def test_what_the_workers_warn_reaches_the_client_once_per_kind_and_the_manifest(client, tmp_path):
    """Worker processes' own output is not seen where a run was started: MoS2 frames asked for as
    graphene (the default) warn on the workers, and the run issues those warnings on the client,
    each kind once (messages alike but for their numbers) with the parts that said it, returns them
    in the summary and records them in the manifest. Frames that warn of nothing say nothing."""
    import json
    import warnings

    from stemflow import open_run

    frames = np.stack([simulate_image("mos2", 128, pixel_size=PX, seed=s).image for s in range(4)])
    da = xr.DataArray(frames, dims=("frame", "y", "x"), attrs={"pixel_size": PX}).chunk({"frame": 1})
    with pytest.warns(StemflowWarning) as caught:
        summary = run(da, tmp_path / "mos2", client=client, progress=False, track=False, frames_per_part=1)
    ours = [str(w.message) for w in caught if "from the workers" not in str(w.message)]
    assert any("graphene columns found are" in m and "lattice='mos2'" in m for m in ours), ours
    assert any("of the 4 parts computed" in m for m in ours), ours
    assert len(ours) == len(summary.warnings) and len(ours) == len(set(ours)), ours
    assert all(k["parts"] for k in summary.warnings)
    mosaic = [k for k in summary.warnings if "columns found" in k["message"]][0]
    assert mosaic["parts"] == [0, 1, 2, 3], mosaic
    manifest = json.loads((tmp_path / "mos2" / "manifest.json").read_text())
    assert manifest["warnings"] == summary.warnings
    with pytest.warns(StemflowWarning):               # the same workers say the same again on a rerun
        again = run(da, tmp_path / "mos2", client=client, progress=False, track=False, frames_per_part=1,
                    overwrite=True)
    assert again.warnings == summary.warnings
    resumed = run(da, tmp_path / "mos2", client=client, progress=False, track=False, frames_per_part=1)
    assert resumed.computed == 0 and resumed.warnings == []          # nothing computed, nothing said now …
    manifest = json.loads((tmp_path / "mos2" / "manifest.json").read_text())
    assert manifest["warnings"] == summary.warnings                  # … and the run keeps what it said
    from stemflow.report import write_report

    page = write_report(tmp_path / "mos2").read_text()
    assert "<h2>Warnings</h2>" in page and "pass lattice=&#x27;mos2&#x27;" in page and "(parts 0, 1, 2, 3)" in page
    assert open_run(tmp_path / "mos2").atoms is not None
    g = np.stack([simulate_image("graphene", 128, pixel_size=PX, seed=s).image for s in range(2)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", StemflowWarning)
        quiet = run(xr.DataArray(g, dims=("frame", "y", "x"), attrs={"pixel_size": PX}).chunk({"frame": 1}),
                    tmp_path / "graphene", client=client, progress=False, track=False)
    assert quiet.warnings == []


def test_each_part_keeps_its_own_warnings_when_a_worker_runs_parts_side_by_side(tmp_path):
    """One worker process with four threads finds parts concurrently: the warnings each part
    returns are those its own frames raised (MoS2 frames asked for as graphene warn, graphene
    frames do not), not its neighbours'."""
    frames = np.stack([simulate_image("mos2" if k % 2 == 0 else "graphene", 128, pixel_size=PX, seed=k).image
                       for k in range(8)])
    da = xr.DataArray(frames, dims=("frame", "y", "x"), attrs={"pixel_size": PX}).chunk({"frame": 1})
    with distributed.LocalCluster(n_workers=1, threads_per_worker=4, processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        with pytest.warns(StemflowWarning):
            summary = run(da, tmp_path / "mixed", client=c, progress=False, track=False, frames_per_part=1)
    said = {p for k in summary.warnings if "columns found" in k["message"] for p in k["parts"]}
    assert said == {0, 2, 4, 6}, summary.warnings
    assert all(set(k["parts"]) <= {0, 2, 4, 6} for k in summary.warnings), summary.warnings


def test_bad_track_options_are_refused_before_any_frame_is_computed(movie, tmp_path):
    _, store = movie
    with pytest.raises(InputError, match="unknown tracking option.*serch_range"):
        run(store, tmp_path / "r", progress=False, track_options={"serch_range": 0.3})
    with pytest.raises(InputError, match="memory"):
        run(store, tmp_path / "r", progress=False, track_options=TrackOptions(memory=2).manifest() | {"memory": -1})
    assert not (tmp_path / "r").exists()


def test_the_dashboard_link_is_given_only_when_it_serves_the_dashboard():
    import http.server
    import threading
    import urllib.request

    from stemflow.parallel import connect, dashboard_link

    with connect(n_workers=1, quiet=True) as client:
        link, message = dashboard_link(client)
        assert link == client.dashboard_link and message == f"dashboard: {link}"
        with urllib.request.urlopen(link, timeout=10) as r:
            assert r.status == 200 and b"needs bokeh" not in r.read().lower()

    class NoBokeh(http.server.BaseHTTPRequestHandler):        # what a scheduler without bokeh serves
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"Dask needs bokeh>=3.1.0 for the dashboard.")

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NoBokeh)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fake = types.SimpleNamespace(dashboard_link=f"http://127.0.0.1:{server.server_port}/status")
        link, message = dashboard_link(fake)
        assert link is None and 'pip install "bokeh>=3.1"' in message
    finally:
        server.shutdown()
    with socket.socket() as s:                      # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link, message = dashboard_link(types.SimpleNamespace(dashboard_link=f"http://127.0.0.1:{port}/status"))
    assert link is None and "not reachable from here" in message
    assert dashboard_link(types.SimpleNamespace(dashboard_link=None)) == (None, "no dashboard (the scheduler serves none)")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_pattern_sums_are_exact_on_the_integer_path_and_the_float_path(dtype):
    from stemflow.detectors import reduce_patterns

    rng = np.random.default_rng(5)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    hi = int(info.max) if info is not None else 1000
    lo = int(info.min) if info is not None else -1000
    block = rng.integers(lo, hi, size=(3, 70, 12, 12), endpoint=True).astype(dtype)   # 210 patterns, odd batches
    ring = detector_mask((12, 12), "annular", inner=2, outer=5)
    disk = detector_mask((12, 12), "annular", inner=0, outer=2)
    empty = np.zeros((12, 12))
    ref = block.astype(np.float64)
    for masks in ([ring, disk, empty], [ring, 0.5 * disk]):          # 0/1 masks, then a weighted one
        w = np.stack(masks, axis=-1)
        got = reduce_patterns(block, w)
        want = np.einsum("abyx,yxm->abm", ref, w)
        assert got.dtype == np.float64 and got.shape == (3, 70, len(masks))
        np.testing.assert_array_equal(got, want)                      # integers: exact either way
    # the largest uint16 patterns do not overflow the integer accumulator
    full = np.full((2, 64, 64), 65535, np.uint16)
    assert reduce_patterns(full, np.ones((64, 64, 1)))[:, 0].tolist() == [65535.0 * 4096] * 2


def test_run_low_dose_parts_read_context_and_match_the_whole_movie(client, tmp_path):
    """Each part is found with its neighbours' frames as context (find_atoms_movie): parts of two
    frames, too few alone, find the Si of a 1000 e⁻/Å² movie as one pass over it does."""
    mov = simulate_movie("graphene", 16, 160, seed=41, pixel_size=0.01, drift=(0.0, 0.0), drift_jitter=0.5,
                         dose=1000, defects={"Si1C3": 3}, rates={"hop": 0.1})
    store = tmp_path / "dim.zarr"
    write_movie(mov, store, progress=False, frame_chunk_mb=4 * 160 * 160 * 4 / 1e6)
    out = tmp_path / "low"
    run(store, out, client=client, progress=False, track=False, identify=False, low_dose=True, frames_per_part=2)
    atoms = read_atoms(out)
    assert sorted(atoms.frame.unique()) == list(range(16))
    truth = mov.atoms[mov.atoms.label == "dopant"]
    found = atoms[atoms.label.astype(str) == "dopant"]
    m = stemflow.match(found[["frame", "y", "x"]], truth[["frame", "y", "x"]], 0.3 * 0.142 / 0.01)
    assert len(m) >= 0.95 * len(truth) and len(m) >= 0.95 * len(found)
    params = json.loads((out / "manifest.json").read_text())["parameters"]
    assert params["low_dose"] is True and params["window"] == 2
    # the parts say how they were found, so tracking them does not smooth the decoded frames again
    from stemflow.results import track_run

    assert track_run(out, report=False).trajectories.attrs["track_options"]["persist"] is None
    # left to the run, the first frames decide: dose-limited, so the same table -- and no chemistry
    # of single low-dose frames unless asked for (it made 'unknown' Si and flickering states)
    summary = run(store, tmp_path / "auto", client=client, progress=False, track=False, frames_per_part=2)
    assert summary.low_dose and summary.low_dose_check["summed_share"] < summary.low_dose_check["single_share"]
    pd.testing.assert_frame_equal(read_atoms(tmp_path / "auto"), atoms)
    assert json.loads((tmp_path / "auto" / "manifest.json").read_text())["parameters"]["identify"] is False
    forced = run(store, tmp_path / "frames", client=client, progress=False, track=False, identify=False,
                 low_dose=False, frames=(0, 6), frames_per_part=2)
    assert not forced.low_dose and forced.low_dose_check is None
    assert "low_dose" not in json.loads((tmp_path / "frames" / "manifest.json").read_text())["parameters"]
    # the same command without low_dose resumes that run as it was made, rather than refusing it
    again = run(store, tmp_path / "frames", client=client, progress=False, track=False, identify=False,
                frames=(0, 6), frames_per_part=2)
    assert not again.low_dose and again.skipped == 3 and again.computed == 0
    with pytest.raises(InputError, match="save_probabilities"):
        run(store, tmp_path / "b", client=client, progress=False, low_dose=True, save_probabilities=True)
    assert not (tmp_path / "b").exists()


def test_low_dose_options_are_checked():
    from stemflow.find import FindOptions

    with pytest.raises(InputError, match="refine"):
        FindOptions(low_dose=True, refine=True)
    with pytest.raises(InputError, match="amorphous"):
        FindOptions(low_dose=True, lattice="amorphous")
    with pytest.raises(InputError, match="window"):
        FindOptions(low_dose=True, window=-1)
    assert "low_dose" not in FindOptions().manifest()


def test_a_movie_of_heavy_atoms_on_a_support_is_found_tracked_and_its_spread_reported(client, tmp_path):
    # no host lattice: the run tracks the heavy atoms all the same, records the frame size, and the
    # report says how the atoms are spread (of one frame: the frames of a movie show one area)
    from stemflow.chem import dispersion

    mov = simulate_movie("amorphous", 4, 160, seed=5, pixel_size=0.03, defects={"Pt1": 12})
    store = tmp_path / "pt.zarr"
    write_movie(mov, store, progress=False)
    out = tmp_path / "run"
    run(store, out, client=client, lattice="amorphous", progress=False)
    atoms = read_atoms(out)
    assert atoms.attrs["frame_shape"] == [160, 160] and atoms.attrs["lattice"] == "amorphous"
    assert (out / "trajectories.parquet").exists() and (out / "report.html").exists()
    d = dispersion(atoms)
    assert d["frame"].tolist() == [0, 1, 2, 3] and (d["n_atoms"] >= 10).all()
    assert stemflow.open_run(out).dispersion().equals(d)
    assert "Ripley&#x27;s L of frame 0 only" in (out / "report.html").read_text()

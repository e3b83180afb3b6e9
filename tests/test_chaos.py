"""Faults on a real cluster: a `dask scheduler` and `dask worker` processes on loopback, started
from other working directories, as on a facility's cluster. A worker killed mid-run and a client
killed and restarted must each end in the table of an undisturbed run."""

import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from stemflow.parallel import read_atoms, run
from stemflow.simulate import simulate_movie
from stemflow.io import write_movie

distributed = pytest.importorskip("distributed")
PX = 0.02


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout=60.0, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached in {timeout:.0f} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-threaded worker processes, each started in its own directory."""
    base = tmp_path_factory.mktemp("cluster")
    addr = f"tcp://127.0.0.1:{_port()}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", addr.rsplit(":", 1)[1], "--no-dashboard"],
                              cwd=base, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    workers = []
    for k in range(2):
        d = base / f"w{k}"
        d.mkdir()
        p = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", addr, "--nthreads", "1",
                              "--nworkers", "1", "--no-nanny", "--no-dashboard", "--local-directory", str(d)],
                             cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        workers.append(p)
    client = distributed.Client(addr, timeout=60)
    try:
        _wait(lambda: len(client.nthreads()) == 2, 90, "two workers")
        yield addr, client, workers
    finally:
        client.close()
        for p in procs:
            p.kill()
            p.wait(10)


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    mov = simulate_movie("graphene", 12, 128, seed=5, pixel_size=PX, defects={"Si1C3": 0.4, "V1": 0.2})
    store = tmp_path_factory.mktemp("movie") / "movie.zarr"
    write_movie(mov, store, progress=False, frame_chunk_mb=2 * 128 * 128 * 4 / 1e6)
    return store


@pytest.fixture(scope="module")
def reference(movie, tmp_path_factory):
    """The undisturbed table, from an in-process local cluster."""
    out = tmp_path_factory.mktemp("ref") / "ref"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as c, \
            distributed.Client(c) as cl:
        run(movie, out, client=cl, frames_per_part=2, progress=False, track=False)
    return read_atoms(out)


def test_a_worker_killed_mid_run_on_a_real_cluster_gives_the_undisturbed_table(cluster, movie, reference,
                                                                               tmp_path, monkeypatch):
    addr, client, workers = cluster
    monkeypatch.chdir(tmp_path)                 # a relative --out, from a directory no worker started in
    killed = []

    def kill_one(stats):
        if not killed:
            victim = workers[0] if workers[0].poll() is None else workers[1]
            victim.send_signal(signal.SIGKILL)
            killed.append(victim.pid)

    run(movie, "out", scheduler=addr, frames_per_part=2, progress=False, track=False, on_part=kill_one)
    assert killed
    pd.testing.assert_frame_equal(read_atoms(tmp_path / "out"), reference)


def test_a_client_killed_and_restarted_gives_the_undisturbed_table(cluster, movie, reference, tmp_path):
    addr, client, workers = cluster
    _wait(lambda: len(client.nthreads()) >= 1, 30, "a live worker")
    out = tmp_path / "out"
    code = (f"from stemflow.parallel import run\n"
            f"run({str(movie)!r}, {str(out)!r}, scheduler={addr!r}, frames_per_part=2, progress=False, track=False)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / "atoms.parquet"
    _wait(lambda: parts.is_dir() and any(parts.glob("part-*.parquet")) or p.poll() is not None, 120, "a first part")
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    from stemflow.rundir import complete_parts

    before = complete_parts(out)
    again = run(movie, out, scheduler=addr, frames_per_part=2, progress=False, track=False)
    # tasks the dead client had started may still finish their parts before the rerun looks
    assert again.skipped >= max(1, len(before)) and again.skipped + again.computed == again.parts
    pd.testing.assert_frame_equal(read_atoms(out), reference)

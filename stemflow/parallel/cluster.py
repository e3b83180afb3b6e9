"""Where a run executes: a local cluster, an existing scheduler, or one worker per GPU.

:func:`connect` gives a :class:`distributed.Client`:

* ``scheduler`` (or the ``DASK_SCHEDULER_ADDRESS`` environment variable) → connect to that
  scheduler (dask-jobqueue on SLURM, dask-kubernetes, ``dask scheduler`` by hand, ...); a
  scheduler that does not answer within ``timeout`` seconds is a :class:`ClusterError`;
* otherwise, with dask-cuda installed and GPUs visible → ``LocalCUDACluster``, one worker per GPU,
  each advertising the resource ``GPU=1``;
* otherwise → ``LocalCluster`` of processes, one thread each, as many as CPU cores.

The dashboard link is printed so the run can be watched, once it is known to serve the dashboard
(:func:`dashboard_link`).
"""

from __future__ import annotations

import contextlib
import os
import sys

from ..errors import MissingDependencyError, StemflowError

__all__ = ["connect", "dashboard_link", "ClusterError", "gpu_count", "task_resources", "SCHEDULER_ENV"]

#: Environment variable naming a scheduler to connect to (same name as the Dask convention).
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


class ClusterError(StemflowError, ConnectionError):
    """No Dask scheduler could be reached or started."""


def dashboard_link(client, timeout: float = 3.0) -> tuple[str | None, str]:
    """The client's dashboard link if it serves the dashboard from here, and what to print.

    Parameters
    ----------
    client : distributed.Client
        A connected client.
    timeout : float
        Seconds to wait for the dashboard's answer.

    Returns
    -------
    link : str or None
        ``client.dashboard_link`` when an HTTP GET of it answers with the dashboard; None when
        the scheduler serves none, serves only Dask's "needs bokeh" page, or cannot be reached
        from this machine.
    message : str
        ``"dashboard: LINK"``, or why there is none and what to do.

    Examples
    --------
    >>> from stemflow.parallel import connect, dashboard_link
    >>> with connect(n_workers=1, quiet=True) as client:          # doctest: +SKIP
    ...     print(dashboard_link(client)[1])
    dashboard: http://127.0.0.1:8787/status
    """
    import urllib.error
    import urllib.request

    try:
        link = client.dashboard_link
    except Exception:          # no dashboard configured on the scheduler
        link = None
    if not link:
        return None, "no dashboard (the scheduler serves none)"
    try:
        with urllib.request.urlopen(link, timeout=timeout) as r:
            body = r.read(1 << 16)
            status = r.status
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return None, f"dashboard not reachable from here at {link} ({reason}); open it on the scheduler's machine"
    if status != 200 or b"needs bokeh" in body.lower():
        return None, ("no dashboard: the scheduler lacks bokeh (pip install \"bokeh>=3.1\" where the scheduler "
                      f"runs); {link} serves only a notice")
    return link, f"dashboard: {link}"


def gpu_count() -> int:
    """GPUs that a ``LocalCUDACluster`` would use: 0 unless dask-cuda is installed and sees some."""
    try:
        from dask_cuda.utils import get_n_gpus
    except ImportError:
        return 0
    try:
        return int(get_n_gpus())
    except Exception:  # no driver, no NVML: no GPUs
        return 0


def task_resources(client) -> dict | None:
    """``{"GPU": 1}`` when the cluster's workers advertise GPUs (so each task holds one), else None."""
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
    workers = info.get("workers", {}).values()
    return {"GPU": 1} if any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers) else None


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


#: glibc's mmap threshold for worker processes, bytes (its largest adaptive value, 32 MB).
MMAP_THRESHOLD = 32 * 1024 * 1024


def _local_cluster(n_gpu, n_workers, threads_per_worker, dash, cluster_kwargs):
    from distributed import LocalCluster

    if n_gpu:
        from dask_cuda import LocalCUDACluster

        # two threads at least: while one runs the network on the GPU (the task holds the GPU
        # resource), the other reads the next part (stemflow.parallel.worker.read_part)
        return LocalCUDACluster(threads_per_worker=max(2, threads_per_worker), dashboard_address=dash,
                                resources={"GPU": 1}, **cluster_kwargs)
    return LocalCluster(n_workers=n_workers or _cores(), threads_per_worker=threads_per_worker,
                        processes=True, dashboard_address=dash, **cluster_kwargs)


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def connect(scheduler: str | None = None, *, n_workers: int | None = None, threads_per_worker: int = 1,
            gpu: bool | None = None, timeout: float = 5.0, dashboard: bool = True, quiet: bool = False,
            **cluster_kwargs):
    """A Dask client for a run; a local cluster it starts is closed on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``). Default: the environment variable
        ``DASK_SCHEDULER_ADDRESS``, else a local cluster.
    n_workers : int, optional
        Local cluster only: worker processes (default: one per CPU core, or one per GPU).
    threads_per_worker : int
        Local cluster only: threads per worker process (the network uses as many torch threads).
        GPU workers get at least 2: one reads the next part while the other's network holds the GPU.
    gpu : bool, optional
        Local cluster only: ``True`` insists on ``LocalCUDACluster`` (error without dask-cuda or
        GPUs), ``False`` never uses it; default: use it when dask-cuda is installed and GPUs exist.
    timeout : float
        Seconds to wait for an existing scheduler to answer.
    dashboard : bool
        Serve (local) and print the dashboard link.
    quiet : bool
        Print nothing.
    **cluster_kwargs
        Passed to ``LocalCluster`` / ``LocalCUDACluster`` (e.g. ``memory_limit``).

    Yields
    ------
    distributed.Client
        Connected to the scheduler (not set as the default client). On exit the client is
        closed, and so is a local cluster started here; a remote scheduler keeps running.

    Raises
    ------
    ClusterError
        The scheduler did not answer within ``timeout`` s.
    MissingDependencyError
        ``gpu=True`` without dask-cuda or a visible GPU.

    Examples
    --------
    >>> from stemflow.parallel import connect
    >>> with connect(n_workers=2, quiet=True) as client:          # doctest: +SKIP
    ...     print(client.submit(sum, [1, 2, 3]).result())
    6
    """
    from distributed import Client

    address = scheduler or os.environ.get(SCHEDULER_ENV) or None
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    if address:
        try:
            client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as e:
            src = "--scheduler" if scheduler else f"${SCHEDULER_ENV}"
            raise ClusterError(
                f"no Dask scheduler answered at {address!r} (from {src}) within {timeout:g} s ({type(e).__name__}); "
                "check the address (tcp://HOST:8786) and that the scheduler is running and reachable, or leave "
                f"--scheduler out (and unset {SCHEDULER_ENV}) to start a local cluster") from None
        try:
            if dashboard:
                say(f"Dask scheduler {address}; {dashboard_link(client)[1]}")
            yield client
        finally:
            client.close()
        return
    n_gpu = 0 if gpu is False else gpu_count()
    if gpu and not n_gpu:
        raise MissingDependencyError("gpu=True needs dask-cuda and a visible GPU: pip install \"stemflow[gpu]\" "
                                     "on a machine with CUDA GPUs, or leave gpu unset to run on CPU workers")
    dash = ":0" if dashboard else None
    # distributed starts workers with MALLOC_TRIM_THRESHOLD_ set, which also switches off glibc's
    # adaptive mmap threshold: every array over 128 kB is then mmap'ed and unmapped afresh, and
    # the network's passes run ~25 % slower (measured: 3.2 vs 4.3 frames/s of 512²). Raising the
    # mmap threshold back keeps both the fast allocation and the memory trimming.
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    environ.setdefault("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = _local_cluster(n_gpu, n_workers, threads_per_worker, dash, cluster_kwargs)
    client = Client(cluster, set_as_default=False)
    try:
        if dashboard:
            what = f"{n_gpu} GPU worker(s)" if n_gpu else f"{len(cluster.workers)} worker process(es) × {threads_per_worker} thread(s)"
            say(f"local Dask cluster, {what}; {dashboard_link(client)[1]}")
        yield client
    finally:
        client.close()
        cluster.close()

"""Run the heavy steps' chunks in-process, on local worker processes or on a Dask cluster.

The steps (``segment``, ``predict``, ``explain``, ``interventions dry-run``, ``evaluate``)
cut their work into chunks that are pure functions of their arguments (frames of an
input, cells, grid points, runs), hand the chunk function and the chunks to
:meth:`Executor.map`, and consume the results *in order*. The same chunks and the same
seeds are computed whichever executor runs them, so a cluster's results are identical to
the in-process run. Only the driver (the calling process) writes the project: workers
read their inputs and return arrays, so the project's atomic writer and its lock work as
they do in-process.

Executors, chosen by the user (:class:`Cluster`):

- in-process (default): the chunks run one after another in the calling process;
- ``workers=N``: a :class:`distributed.LocalCluster` of N worker processes (one thread
  each) started for the job and stopped after it;
- ``scheduler="tcp://HOST:8786"``: an existing Dask scheduler with its workers (``dask
  scheduler`` / ``dask worker``), which must run the same HemaLens version and be able to
  read the input files and the project at the same paths.

Faults are Dask's: a worker that dies mid-task has its tasks rerun elsewhere (the
scheduler's ``allowed-failures``); a scheduler that cannot be reached within
``connect_timeout`` seconds raises a one-line :class:`HemaLensError` naming the address;
cancelling the job's :class:`~hemalens.engine.jobs.Progress` cancels the futures still
pending and raises :class:`~hemalens.engine.jobs.Cancelled` in the driver.

Dask is imported only when a cluster is used, so the default path never loads it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hemalens.engine.errors import HemaLensError
from hemalens.engine.jobs import Cancelled, CancelOnly, Progress, checkpoint

__all__ = ["Cluster", "Executor", "IN_PROCESS", "open_executor", "parse_cluster"]

#: Dask configuration for the worker processes HemaLens starts. Dask's nanny sets
#: ``MALLOC_TRIM_THRESHOLD_=65536`` in its workers, which switches off glibc's dynamic mmap
#: threshold: every large array is then mmapped and page-faulted afresh, and the hologram
#: import ran 1.8-2.2x slower in a worker than in-process. Unset it (None unsets).
#: Workers started with ``dask worker`` need the same: see the README.
WORKER_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

#: How often (seconds) the driver looks at the job's cancel flag while waiting on futures.
POLL_S = 0.2
#: A job waiting this long on a cluster with no worker connected fails in one line
#: instead of waiting for ever (every worker died, or none was ever started).
NO_WORKERS_S = 120.0


@dataclass(frozen=True)
class Cluster:
    """Where a job's chunks run.

    Parameters
    ----------
    workers : int
        0 runs in-process (default); N >= 1 starts a local cluster of N worker processes.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://HOST:8786``); wins over ``workers``.
    connect_timeout : float
        Seconds to wait for the scheduler before giving up.
    """

    workers: int = 0
    scheduler: str | None = None
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if int(self.workers) < 0:
            raise ValueError(f"workers must be 0 (in-process) or more, got {self.workers}")
        if self.scheduler is not None and not str(self.scheduler).strip():
            raise ValueError("the scheduler address is empty")

    @property
    def in_process(self) -> bool:
        """True when no Dask cluster is involved."""
        return self.scheduler is None and int(self.workers) == 0

    def describe(self) -> str:
        """Describe the executor in a few words (status texts, results)."""
        if self.scheduler is not None:
            return f"scheduler {self.scheduler}"
        if self.workers:
            return f"{self.workers} local worker process(es)"
        return "in-process"


IN_PROCESS = Cluster()


def parse_cluster(
    workers: int | None = None, scheduler: str | None = None, *, connect_timeout: float = 10.0
) -> Cluster:
    """Build a :class:`Cluster` from the CLI's ``--workers``/``--scheduler`` or a GUI setting.

    Parameters
    ----------
    workers : int, optional
        Local worker processes (None or 0: in-process).
    scheduler : str, optional
        ``tcp://HOST:PORT`` or ``HOST:PORT`` (``tcp://`` is added); empty means none.
    connect_timeout : float
        Seconds to wait for the scheduler.

    Returns
    -------
    Cluster
    """
    address = (scheduler or "").strip() or None
    if address is not None and "://" not in address:
        address = f"tcp://{address}"
    return Cluster(workers=int(workers or 0), scheduler=address,
                   connect_timeout=float(connect_timeout))


class Executor:
    """Maps a chunk function over chunks, in-process or on a Dask client.

    Use :func:`open_executor`; the Dask client (and a local cluster) live as long as the
    ``with`` block.
    """

    def __init__(self, cluster: Cluster, client: Any = None) -> None:
        self.cluster = cluster
        self.client = client

    @property
    def n_workers(self) -> int:
        """Workers available now (1 in-process)."""
        if self.client is None:
            return 1
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def share(self, obj: Any) -> Any:
        """Send ``obj`` to every worker once; pass the result as a task argument.

        In-process ``obj`` itself; on a cluster a future the workers resolve to it, so
        large arrays shared by many tasks travel once per worker, not once per task.

        Parameters
        ----------
        obj : object
            Picklable data.

        Returns
        -------
        object
        """
        if self.client is None:
            return obj
        return self.client.scatter(obj, broadcast=True, hash=False)

    def map(
        self,
        fn: Callable[..., Any],
        tasks: Iterable[Sequence[Any]],
        *,
        progress: Progress | None = None,
        window: int | None = None,
        pass_cancel: bool = False,
        threads: int = 1,
    ) -> Iterator[Any]:
        """Yield ``fn(*args)`` for each ``args`` in ``tasks``, in order.

        Parameters
        ----------
        fn : callable
            A module-level function (workers import it by name), pure in its arguments.
        tasks : iterable of sequences
            Positional arguments of each call.
        progress : Progress, optional
            Cancellation is checked between results (in-process) or every
            :data:`POLL_S` seconds while waiting (cluster); it cancels the pending
            futures and raises :class:`~hemalens.engine.jobs.Cancelled`.
        window : int, optional
            Tasks in flight at once on a cluster (default four per worker): bounds the
            memory results take while the driver consumes them in order.
        pass_cancel : bool
            In-process, call ``fn(*args, progress=...)`` with a progress that only
            forwards cancellation, so a long chunk stops early (its own bar is not shown);
            on a cluster the pending futures are cancelled instead.
        threads : int
            In-process, run up to this many chunks at once in threads (for chunk
            functions that spend their time in code that releases the GIL: FFTs, image
            filters); results still come in order and are the same.

        Yields
        ------
        object
            The results, in the order of ``tasks``. A task's exception is raised here.
        """
        if self.client is None:
            cancel_only = {"progress": CancelOnly(progress)} if pass_cancel else {}
            if threads <= 1:
                for args in tasks:
                    checkpoint(progress)
                    yield fn(*args, **cancel_only)
                return
            yield from _map_threads(fn, iter(tasks), cancel_only, progress, threads)
            return
        yield from self._map_dask(fn, iter(tasks), progress, window or 4 * self.n_workers + 2)

    def _map_dask(self, fn, tasks, progress, window) -> Iterator[Any]:
        pending: deque = deque()

        def fill() -> None:
            while len(pending) < window:
                args = next(tasks, None)
                if args is None:
                    return
                pending.append(self.client.submit(fn, *args, pure=False))

        try:
            fill()
            while pending:
                head = pending[0]
                finished = threading.Event()
                head.add_done_callback(lambda _f, ev=finished: ev.set())
                alone_since: float | None = None
                while not finished.wait(POLL_S):
                    if progress is not None and progress.is_cancelled():
                        raise Cancelled("cancelled by the user")
                    alone_since = self._check_workers(alone_since)
                if progress is not None and progress.is_cancelled():
                    raise Cancelled("cancelled by the user")
                result = head.result()
                pending.popleft()
                head.release()
                fill()
                yield result
        except BaseException:
            if pending:
                self.client.cancel(list(pending), force=True)
            raise


    def _check_workers(self, alone_since: float | None) -> float | None:
        """Fail in one line once the cluster has had no worker for :data:`NO_WORKERS_S`."""
        if self.client.scheduler_info().get("workers"):
            return None
        now = time.monotonic()
        if alone_since is None:
            return now
        if now - alone_since >= NO_WORKERS_S:
            raise HemaLensError(
                f"{self.cluster.describe()}: no Dask worker has been connected for "
                f"{NO_WORKERS_S:g} s; start workers (`dask worker SCHEDULER`) or run without "
                "--scheduler/--workers")
        return alone_since


def _map_threads(fn, tasks, kwargs, progress, threads) -> Iterator[Any]:
    """In-process map over a thread pool, ``threads + 1`` chunks ahead, results in order."""
    from concurrent.futures import ThreadPoolExecutor

    pending: deque = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="hemalens-chunk") as pool:
        try:
            while True:
                while len(pending) < threads + 1:
                    args = next(tasks, None)
                    if args is None:
                        break
                    pending.append(pool.submit(fn, *args, **kwargs))
                if not pending:
                    return
                checkpoint(progress)
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _connect(cluster: Cluster) -> tuple[Any, Any]:
    """Start or reach the cluster; one-line HemaLensError when it cannot be reached."""
    try:
        from dask import config as dask_config
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - dask is a dependency
        raise HemaLensError(f"running on a Dask cluster needs dask.distributed: {err}") from err
    if cluster.scheduler is not None:
        try:
            client = Client(cluster.scheduler, timeout=cluster.connect_timeout,
                            set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise HemaLensError(f"{cluster.scheduler}: cannot reach the Dask scheduler "
                                f"within {cluster.connect_timeout:g} s ({reason[:200]})") from err
        return client, None
    with dask_config.set(WORKER_ENVIRON):
        local = LocalCluster(n_workers=int(cluster.workers), threads_per_worker=1,
                             processes=True, dashboard_address=None, silence_logs=40)
    try:
        client = Client(local, set_as_default=False)
    except BaseException:
        local.close()
        raise
    return client, local


@contextlib.contextmanager
def open_executor(cluster: Cluster | None = None) -> Iterator[Executor]:
    """Open the executor for one job and close it (and a local cluster) afterwards.

    Parameters
    ----------
    cluster : Cluster, optional
        Default in-process.

    Yields
    ------
    Executor

    Raises
    ------
    HemaLensError
        The scheduler cannot be reached (one line naming its address).
    """
    cluster = cluster or IN_PROCESS
    if cluster.in_process:
        yield Executor(cluster)
        return
    client, local = _connect(cluster)
    try:
        yield Executor(cluster, client)
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=10)
        if local is not None:
            with contextlib.suppress(Exception):
                local.close(timeout=10)


def worker_threads() -> int:
    """Threads a chunk may use: the process's CPU share (1 on a Dask worker thread)."""
    try:
        from distributed import get_worker

        get_worker()
        return 1
    except (ImportError, ValueError):
        return os.cpu_count() or 1

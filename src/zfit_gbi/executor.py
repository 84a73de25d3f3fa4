"""Where independent tasks run: in this process, in local worker processes, or on Dask.

One interface for the work that splits into independent, seeded tasks: the members of a
generator ensemble (:meth:`~zfit_gbi.generators.FlowEnsemble.train`, bootstrap retrainings
included) and the masses of a scan (:func:`zfit_gbi.pipeline.scan`). Every task carries its own
seed, so the results are the same, seed for seed, whichever executor runs them.

``executor`` is one of:

* ``None`` or ``"sequential"``: one after the other in this process (the default);
* ``"processes"`` or ``"processes:N"``: N local worker processes (default: the CPU count),
  kept between calls until the program ends (or :func:`shutdown_workers`): a run's later calls
  (the ensembles of its retraining rounds, its toys) skip starting Python and TensorFlow, and
  the workers reuse the training steps they traced;
* ``"dask"``: a ``dask.distributed`` ``LocalCluster`` started for the call;
* ``"tcp://host:port"`` (any scheduler address): the Dask cluster behind it (dask-jobqueue
  users start their HTCondor / Slurm cluster and give its address);
* a ``distributed.Client`` object.

Dask needs the ``dask`` extra: ``pip install "zfit-gbi[dask]"``.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

__all__ = ["check_executor", "describe", "run_tasks", "shutdown_workers"]

T = TypeVar("T")
R = TypeVar("R")

_POOLS: dict[int, ProcessPoolExecutor] = {}  # "processes:N" -> its kept worker pool


def shutdown_workers() -> None:
    """Stop the worker processes that ``"processes"`` executors keep between calls (done at
    exit; call it to free their memory earlier)."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_workers)


def _pool(n: int) -> ProcessPoolExecutor:
    import multiprocessing as mp

    if n not in _POOLS:  # spawn: a forked TensorFlow runtime is not safe to use in the child
        _POOLS[n] = ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"))
    return _POOLS[n]


def describe(executor: Any) -> str:
    """A short name of an executor spec, for logs and summaries."""
    if executor is None:
        return "sequential"
    if isinstance(executor, str):
        return executor
    return f"dask client {getattr(executor, 'scheduler_info', dict)().get('address', '?')}"


def check_executor(executor: Any) -> None:
    """Raise ``ValueError`` naming the allowed forms when ``executor`` is an unknown name."""
    if executor is None or not isinstance(executor, str):
        return
    if executor in ("sequential", "processes", "dask") or executor.startswith(("tcp://", "tls://", "inproc://")):
        return
    if executor.startswith("processes:") and executor.split(":", 1)[1].isdigit() and int(executor.split(":", 1)[1]) >= 1:
        return
    msg = (f"unknown executor {executor!r}; use 'sequential', 'processes', 'processes:N' (N >= 1), 'dask' "
           "or a Dask scheduler address such as 'tcp://host:8786'")
    raise ValueError(msg)


def run_tasks(fn: Callable[[T], R], tasks: Sequence[T], *, executor: Any = None, progress: str | None = None) -> list[R]:
    """``[fn(t) for t in tasks]``, run where ``executor`` says, results in the order of ``tasks``.

    ``fn`` must be a module-level function and the tasks and results plain data (arrays, dicts),
    so they can travel to other processes or machines. ``progress``: a progress-bar label (tasks
    done in this process or in worker processes; a Dask run reports on its dashboard).

    Raises:
        ValueError: for an unknown executor name.
        ImportError: for a Dask executor without dask installed (naming the extra).
    """
    check_executor(executor)
    tasks = list(tasks)
    from tqdm.auto import tqdm

    def bar(results: Any) -> list[R]:
        return list(tqdm(results, total=len(tasks), desc=progress, disable=None if progress else True, leave=False))

    if executor is None or executor == "sequential" or len(tasks) <= 1:
        return bar(map(fn, tasks))
    if isinstance(executor, str) and executor.startswith("processes"):
        n = int(executor.split(":", 1)[1]) if ":" in executor else (os.cpu_count() or 1)
        pool = _pool(n)
        try:
            return bar(pool.map(fn, tasks))
        except BaseException:  # a task's error, a broken pool or Ctrl-C: the next call starts fresh workers
            _POOLS.pop(n, None)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        msg = f"executor {describe(executor)!r} needs dask: pip install 'zfit-gbi[dask]'"
        raise ImportError(msg) from err
    if isinstance(executor, str):
        if executor == "dask":
            with LocalCluster(n_workers=min(len(tasks), os.cpu_count() or 1), threads_per_worker=1, processes=True) as cluster, \
                    Client(cluster) as client:
                return client.gather(client.map(fn, tasks, pure=False))
        with Client(executor) as client:
            return client.gather(client.map(fn, tasks, pure=False))
    return executor.gather(executor.map(fn, tasks, pure=False))

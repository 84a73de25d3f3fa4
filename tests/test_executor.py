"""The executor interface: an ensemble trained in this process, in worker processes and on a
Dask LocalCluster gives the same members, seed for seed."""

from __future__ import annotations

import numpy as np
import pytest

from zfit_gbi.executor import check_executor, run_tasks, shutdown_workers
from zfit_gbi.generators import FlowConfig, FlowEnsemble, TrainConfig


def _square(v: int) -> int:
    return v * v


def _pid(v: int) -> int:
    import os
    import time

    time.sleep(0.2)  # so that both workers take tasks
    if v < 0:
        raise ValueError("negative task")
    return os.getpid()


def test_run_tasks_and_names():
    assert run_tasks(_square, [1, 2, 3]) == [1, 4, 9]
    assert run_tasks(_square, [1, 2, 3], executor="sequential") == [1, 4, 9]
    for bad in ("proceses", "processes:0", "processes:x", "slurm"):
        with pytest.raises(ValueError, match="unknown executor"):
            check_executor(bad)


def test_ensemble_identical_on_every_executor():
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    rng = np.random.default_rng(0)
    x, m = rng.uniform(0.1, 0.9, size=(1000, 2)), rng.uniform(3.0, 4.0, size=(1000, 1))
    kw = {"features": ("a", "b"), "bounds": {"a": (0.0, 1.0), "b": (0.0, 1.0)}, "context_names": ("m",), "k": 2,
          "config": FlowConfig(n_layers=2, hidden_units=(8, 8)), "train": TrainConfig(epochs=2, batch_size=256, progress=False, seed=4)}
    ref = FlowEnsemble.train(x, m, **kw)
    lp = ref.log_prob(x[:50], m[:50])
    par = FlowEnsemble.train(x, m, executor="processes:2", **kw)
    np.testing.assert_array_equal(par.log_prob(x[:50], m[:50]), lp)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        dk = FlowEnsemble.train(x, m, executor=client, **kw)
    np.testing.assert_array_equal(dk.log_prob(x[:50], m[:50]), lp)
    assert [f.history.best_val_loss for f in dk.members] == [f.history.best_val_loss for f in ref.members]
    assert [f.history.n_train for f in dk.members] == [f.history.n_train for f in ref.members]


def test_worker_processes_are_kept_between_calls():
    """'processes:N' keeps its workers for the next call (no new Python and TensorFlow start per
    call); a failing task or shutdown_workers() replaces them."""
    import os

    from zfit_gbi import executor

    first = set(run_tasks(_pid, [1, 2, 3, 4], executor="processes:2"))
    workers = set(executor._POOLS[2]._processes)
    assert len(workers) == 2
    assert first <= workers
    assert os.getpid() not in first
    assert set(run_tasks(_pid, [1, 2, 3, 4], executor="processes:2")) <= workers
    with pytest.raises(ValueError, match="negative task"):
        run_tasks(_pid, [1, -1], executor="processes:2")
    assert 2 not in executor._POOLS
    assert not set(run_tasks(_pid, [1, 2, 3, 4], executor="processes:2")) & workers
    shutdown_workers()
    assert not executor._POOLS

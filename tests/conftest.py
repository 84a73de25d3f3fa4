"""Shared fixtures: the embedded benchmark and small flows trained once per test session.

Models are tiny (a few thousand parameters, a few epochs) so the whole suite runs on 2 CPU
cores in a few minutes; TensorFlow starts once per process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.generators import Flow, FlowConfig, TrainConfig

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

SMALL = FlowConfig(transform="affine", n_layers=4, hidden_units=(32, 32))
FAST = TrainConfig(epochs=25, batch_size=512, learning_rate=3e-3, patience=5, progress=False, seed=3)


@pytest.fixture(autouse=True)
def _stop_kept_workers():
    """'processes' executors keep their worker processes until exit; a test's workers (with
    TensorFlow and their models loaded) must not stay for the rest of the session."""
    yield
    from zfit_gbi.executor import shutdown_workers

    shutdown_workers()


@pytest.fixture(scope="session")
def bench() -> ResonantBenchmark:
    return ResonantBenchmark()


@pytest.fixture(scope="session")
def train_events(bench):
    """Background-only training sample over the whole fit window."""
    return bench.sample(30000, 0, seed=11)


@pytest.fixture(scope="session")
def sideband_events(bench):
    """Background-only events of the sidebands only (a larger sample, as in the demo)."""
    ev = bench.sample(40000, 0, seed=12)
    return ev.select(bench.windows.in_sidebands(ev["mjj"]))


@pytest.fixture(scope="session")
def cond_flow(bench, train_events) -> Flow:
    """p(x | mjj) trained on background over the whole fit window."""
    f = Flow(bench.features, bench.bounds, ("mjj",), SMALL)
    f.fit(train_events.array(bench.features), train_events["mjj"], train=FAST)
    return f


@pytest.fixture(scope="session")
def sideband_flow(bench, sideband_events) -> Flow:
    """p(x | mjj) trained on the sidebands only."""
    f = Flow(bench.features, bench.bounds, ("mjj",), SMALL)
    f.fit(sideband_events.array(bench.features), sideband_events["mjj"], train=FAST)
    return f


@pytest.fixture(scope="session")
def uncond_flow(bench, train_events) -> Flow:
    """p(x) ignoring mjj, tiny."""
    f = Flow(bench.features, bench.bounds, (), FlowConfig(n_layers=2, hidden_units=(16, 16)))
    f.fit(train_events.array(bench.features)[:8000], train=FAST, epochs=5)
    return f


def gaussian_logit_baseline(x_train: np.ndarray, x_test: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """log-density of the best m-independent Gaussian in logit space (with its Jacobian):
    the simple model a flow must beat."""
    from scipy.stats import multivariate_normal

    def to_z(x):
        u = (x - low) / (high - low)
        return np.log(u) - np.log1p(-u), -np.sum(np.log(high - low) + np.log(u) + np.log1p(-u), axis=1)

    z_tr, _ = to_z(x_train)
    z_te, jac = to_z(x_test)
    mvn = multivariate_normal(z_tr.mean(axis=0), np.cov(z_tr.T))
    return mvn.logpdf(z_te) + jac

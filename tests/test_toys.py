"""Pseudo-experiments from a fixed model (zfit_gbi.toys): sampling, reproducibility, and the fast
subset of the statistical validation (benchmarks/validation.py runs 200 toys; ``pytest -m slow``
runs a larger subset here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2

from zfit_gbi.generators import Flow, FlowConfig
from zfit_gbi.model import build_model
from zfit_gbi.toys import Toy, ToyStudy, sample_toy, toy_study

N_BKG = 3000


@pytest.fixture(scope="module")
def model(bench, sideband_flow):
    sim = bench.signal_simulation(4000, seed=43)
    sig = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=2, hidden_units=(16, 16)))
    sig.fit(sim.array(bench.features), sim["mjj"], epochs=8, batch_size=256, learning_rate=3e-3, progress=False, seed=4)
    data = bench.sample(N_BKG, 0, seed=44)
    return build_model(resonant="mjj", features=bench.features, windows=bench.windows, background_generator=sideband_flow,
                       signal_generator=sig, data_masses=data["mjj"], signal_masses=sim["mjj"], background_mass="exppoly2",
                       prefix="toy_")


def _assert_calibrated(st) -> None:
    """Tolerances from the number k of valid toys: the pull mean within 3 standard errors of 0,
    the width inside the chi-square(k - 1) 0.1 % .. 99.9 % quantiles around 1, the 68.3 %
    coverage within 3 binomial errors, the CLs coverage not below 0.95 by more than 3."""
    k = len(st.valid)
    mean, _ = st.pull_mean()
    assert abs(mean) < 3 / math.sqrt(k), st
    width, _ = st.pull_width()
    lo, hi = (math.sqrt(chi2.ppf(q, k - 1) / (k - 1)) for q in (0.001, 0.999))
    assert lo < width < hi, st
    cov, _ = st.coverage()
    assert abs(cov - 0.683) < 3 * math.sqrt(0.683 * 0.317 / k), st
    lim, _ = st.limit_coverage()
    assert lim >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / k), st


def test_sample_toy_is_reproducible_and_follows_the_model(model):
    a = sample_toy(model, 40, N_BKG, seed=5)
    b = sample_toy(model, 40, N_BKG, seed=5)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.columns == ("mjj", *model.features)
    assert abs(len(a) - (N_BKG + 40)) < 5 * math.sqrt(N_BKG)  # Poisson yields
    big = sample_toy(model, 0, 20_000, seed=6, poisson=False)
    assert len(big) == 20_000
    # the masses follow the model's background shape: mean of m against the shape's own mean
    grid = np.linspace(*model.background.mass_pdf.space.limit1d, 4001)
    dens = np.asarray(model.background.mass_pdf.pdf(grid))
    mean = np.sum(grid * dens) / np.sum(dens)
    std = math.sqrt(np.sum((grid - mean) ** 2 * dens) / np.sum(dens))
    assert abs(big["mjj"].mean() - mean) < 4 * std / math.sqrt(len(big))
    # and the features come from the generator at those masses (mean log-density of its own samples)
    lp = model.background.generator.log_prob(big.array(model.features), big["mjj"])
    assert np.all(np.isfinite(lp))


def test_toy_study_fast_subset(model):
    """10 toys with 40 signal events: pulls, the 68 % interval and the CLs limit, judged with
    tolerances from the toy count (3 standard errors; the width against the chi-square 0.1 %
    quantiles); the toys are the first 10 of any study with this seed."""
    n = 10
    st = toy_study(model, n_signal=40, n_background=N_BKG, n_toys=n, seed=3, limit=True, n_asimov=5000, progress=False)
    assert len(st.valid) == n, [t.message for t in st.toys if not t.valid]
    _assert_calibrated(st)
    again = toy_study(model, n_signal=40, n_background=N_BKG, n_toys=2, seed=3, first=1, interval=False, progress=False)
    # the same events and fit: toy 1 does not depend on toy 0 (it once was drawn from toy 0's fit)
    assert again.toys[0].n_background == st.toys[1].n_background
    assert again.toys[0].poi_hat == pytest.approx(st.toys[1].poi_hat, abs=1e-4 * st.toys[1].error)
    assert "pull mean" in repr(st)


def test_background_only_toys_fast_subset(model):
    """10 background-only toys: n_hat consistent with 0 and p0 in (0, 0.5] (0.5 exactly when
    n_hat <= 0); uniformity of 2 p0 is judged on 200 toys by benchmarks/validation.py."""
    n = 10
    st = toy_study(model, n_signal=0, n_background=N_BKG, n_toys=n, seed=4, interval=False, p0=True, progress=False)
    mean, _ = st.pull_mean()
    assert abs(mean) < 3 / math.sqrt(n), st
    p0 = np.array([t.p0 for t in st.valid])
    assert np.all((p0 > 0) & (p0 <= 0.5))
    assert np.all((p0 == 0.5) == (np.array([t.poi_hat for t in st.valid]) <= 0))
    assert 0 <= st.p0_test()["ks_pvalue_2p0_uniform"] <= 1 or st.p0_test()["n"] < 2


def test_toy_study_rejects_bad_settings(model):
    with pytest.raises(ValueError, match="n_toys must be at least 1"):
        toy_study(model, n_signal=10, n_background=N_BKG, n_toys=0)


@pytest.mark.slow
def test_toy_study_pulls_and_coverage_slow(model):
    """80 toys: the pull mean within 3 standard errors of 0, the width within the chi-square
    0.1 % quantiles of 1, the 68 % coverage within 3 binomial errors, the 95 % CLs coverage
    not below 0.95 by more than 3 binomial errors."""
    n = 80
    st = toy_study(model, n_signal=40, n_background=N_BKG, n_toys=n, seed=7, limit=True, n_asimov=5000, progress=False)
    assert len(st.valid) >= n - 2
    _assert_calibrated(st)


def test_p0_ks_against_the_asymptotic_null():
    """The KS distance to the asymptotic null (half the p0 at 1/2, the rest uniform below) is taken
    on both sides of the jump: null p0 pass, p0 from a biased fit (too many n_hat <= 0) fail."""
    from scipy.stats import norm

    from zfit_gbi.toys import _ks_asymptotic_null

    rng = np.random.default_rng(1)
    z = rng.normal(size=400)
    assert _ks_asymptotic_null(np.where(z > 0, norm.sf(z), 0.5)) > 0.01
    z = rng.normal(size=400) - 0.4
    assert _ks_asymptotic_null(np.where(z > 0, norm.sf(z), 0.5)) < 1e-3


def test_likelihood_pulls_use_the_profile_interval():
    """sign(n_hat - n) sqrt(q(n)): with q the -2 Delta ln L at the truth; toys without it are skipped."""
    toys = [Toy(0, 1, 10, 100, True, poi_hat=14.0, error=2.0, q_truth=4.0), Toy(1, 2, 10, 100, True, poi_hat=9.0, error=1.0, q_truth=0.25),
            Toy(2, 3, 10, 100, True, poi_hat=11.0, error=1.0), Toy(3, 4, 10, 100, False, message="no minimum")]
    st = ToyStudy(truth=10.0, n_signal=10.0, n_background=100.0, cl=0.95, toys=toys)
    np.testing.assert_allclose(st.likelihood_pulls, [2.0, -0.5])
    np.testing.assert_allclose(st.pulls, [2.0, -1.0, 1.0])
    assert st.likelihood_pull_mean()[0] == pytest.approx(0.75)
    summary = st.summary()
    assert summary["poi_median"] == 11.0
    assert summary["error_poi_correlation"] == pytest.approx(np.corrcoef([14.0, 9.0, 11.0], [2.0, 1.0, 1.0])[0, 1])
    assert "likelihood pull mean" in repr(st)

"""R-ANODE on a small synthetic case with known densities (tiny flows, few epochs).

Background: x ~ N(0, 1)^2 with m uniform on the signal region [0, 1]; signal: x ~ N(1.5, 0.3)^2
with m ~ N(0.5, 0.1). Both densities are known exactly, so log p_B is exact and only the signal
flow is learned. The signal's mass peak is what stops the flow from absorbing background: with
p_S(m) = p_B(m) every w >= w_true would fit the data equally well.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from zfit_gbi.data import DataError
from zfit_gbi.generators import Flow, FlowConfig, TrainConfig
from zfit_gbi.ranode import calibrated_p_value, mixture_scan

BOX = {"a": (-5.0, 5.0), "b": (-5.0, 5.0)}


def _flow(seed: int) -> Flow:
    return Flow(("a", "b"), BOX, (), FlowConfig(n_layers=2, hidden_units=(16, 16)), seed=seed)


def _scan(n_b: int, n_s: int, seed: int, *, epochs: int, n_folds: int, grid, refine: int):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(n_b, 2)), rng.normal(1.5, 0.3, size=(n_s, 2))]).clip(-4.9, 4.9)
    m = np.concatenate([rng.uniform(size=n_b), rng.normal(0.5, 0.1, size=n_s).clip(0.001, 0.999)])
    train = TrainConfig(epochs=epochs, batch_size=256, learning_rate=3e-3, patience=6, progress=False, jit_compile=False)
    return mixture_scan(x, m, log_signal_mass=norm.logpdf(m, 0.5, 0.1), log_background=norm.logpdf(x).sum(axis=1), make_flow=_flow,
                        w_grid=grid, n_folds=n_folds, train=train, seed=seed, refine=refine, progress=False)


def test_mixture_scan_mechanics():
    scan = _scan(600, 100, 1, epochs=4, n_folds=2, grid=[0.03, 0.15, 0.6], refine=1)
    assert scan.w.shape == (4,)
    assert np.all(np.diff(scan.w) > 0)
    assert scan.fold_log_likelihood.shape == (4, 2)
    assert np.all(np.isfinite(scan.log_likelihood))
    lo, hi = scan.interval()
    assert lo <= scan.w_hat <= hi
    assert scan.interval(2.0)[0] <= lo
    d = scan.to_dict()
    assert d["signal_yield"]["value"] == pytest.approx(scan.w_hat * 700)
    assert "N_S=" in repr(scan)


def test_mixture_scan_estimates():
    """The estimator on a made-up scan: an exact parabola in sqrt(w) gives its vertex, zero
    training noise and the curvature's error; scatter adds a noise error; a scan without a
    maximum among its best points gives no interval ([0, 1])."""
    from zfit_gbi.ranode import MixtureScan

    w = np.geomspace(0.02, 0.5, 9)
    ll = 100 - 2000 * (np.sqrt(w) - np.sqrt(0.1)) ** 2
    s = MixtureScan(w, ll, ll[:, None], 1000)
    assert s.w_hat == pytest.approx(0.1, rel=1e-9)
    stat, noise = s.errors()
    assert stat == pytest.approx(2 * np.sqrt(0.1) * np.sqrt(0.5 / 2000), rel=1e-9)
    assert noise == pytest.approx(0.0, abs=1e-9)
    assert s.q0 == pytest.approx(200, rel=1e-9)
    noisy = MixtureScan(w, ll + np.array([0, 3, -3, 3, -3, 3, -3, 3, 0]), ll[:, None], 1000)
    assert noisy.errors()[1] > 0
    lo, hi = noisy.interval()
    assert lo < noisy.w_hat < hi
    rising = MixtureScan(w, np.linspace(1, 50, 9), np.zeros((9, 1)), 1000)
    assert rising.interval() == (0.0, 1.0)
    assert np.isnan(rising.errors()[0])
    # such an interval is said to be unconstrained in the run's notes, with the reason
    from zfit_gbi.data_driven import unconstrained_note

    assert unconstrained_note(s) is None
    assert "widen signal.data_driven.w_range" in unconstrained_note(rising)
    flat = MixtureScan(w, -np.linspace(1, 50, 9), np.zeros((9, 1)), 1000)  # LL < 0 everywhere: no signal
    assert flat.interval() == (0.0, 1.0)
    assert "no maximum inside the w scan" in unconstrained_note(flat)
    # fewer background members or flows than the yield was measured to need: said so
    from zfit_gbi.data_driven import settings_note

    assert settings_note(8, 2) is None
    for members, seeds in ((3, 1), (8, 1), (3, 2), (1, 1)):
        note = settings_note(members, seeds)
        assert f"{members} member" in note
        assert "background.generator.ensemble: 8" in note
        assert "signal.data_driven.seeds: 2" in note
    # a background error (from scans with each ensemble member) adds in quadrature
    bg = MixtureScan(w, ll, ll[:, None], 1000, background_error=2 * stat)
    assert bg.w_hat == s.w_hat
    assert bg.interval()[1] - bg.w_hat == pytest.approx(np.sqrt(5) * stat, rel=1e-9)
    assert bg.upper_limit(0.95) - bg.w_hat == pytest.approx(np.sqrt(5) * (s.upper_limit(0.95) - s.w_hat), rel=1e-9)


def test_background_jackknife_note():
    """The member jackknife (``gbi run``'s scans with each background member left out) sets the
    background error about the full ensemble's w and notes when it exceeds the statistical
    error; a scan without a maximum gets that note only if the left-out scans disagree (all
    at the grid's end, as on LHCO at the largest injection, is no evidence either way)."""
    from zfit_gbi.data_driven import _jackknife
    from zfit_gbi.ranode import MixtureScan

    w = np.geomspace(0.02, 0.5, 9)
    s = MixtureScan(w, 100 - 2000 * (np.sqrt(w) - np.sqrt(0.1)) ** 2, np.zeros((9, 1)), 1000)
    stat = s.errors()[0]
    rows = [{"w_hat": 0.1 + d, "w_interval": [0.0, 1.0]} for d in (-3 * stat, 0.0, 3 * stat)]
    scan, report, notes = _jackknife(s, rows, 1000.0)
    assert scan.background_error == pytest.approx(np.sqrt(2 / 3 * 18) * stat, rel=1e-9)
    assert report["error"] == pytest.approx(1000 * scan.background_error)
    assert len(notes) == 1
    assert "statistical error" in notes[0]
    assert "100 events with all 3 members" in notes[0]
    assert _jackknife(s, [{"w_hat": 0.1 + d, "w_interval": [0.0, 1.0]} for d in (-stat / 3, 0.0, stat / 3)], 1000.0)[2] == []
    rising = MixtureScan(w, np.linspace(1, 50, 9), np.zeros((9, 1)), 1000)
    same = [{"w_hat": 0.5, "w_interval": [0.0, 1.0]}] * 3
    assert _jackknife(rising, same, 1000.0)[2] == []  # every scan at the grid's end: nothing to say beyond the scan's own note
    apart = [{"w_hat": v, "w_interval": [0.0, 1.0]} for v in (0.2, 0.5, 0.5)]
    assert "no statistical error: the scan has no maximum" in _jackknife(rising, apart, 1000.0)[2][0]


def test_toy_limits_follow_the_datas_rule(monkeypatch):
    """A background-only toy is scanned with the ensemble average only; its scan gets the data's
    background (jackknife) error, so its limit holds that error as the data's does
    (``MixtureScan.upper_limit``: w_hat + z sigma with the error in quadrature), and
    ``toy_limits`` keeps the limit of a toy whose scan has a maximum above LL = 0 (the
    mass-only branch, for toys without one, is run by ``test_run_data_driven``). A scan with a
    maximum but LL < 0 everywhere has no parabolic limit: its own limit is the first scan point
    where 2 delta LL reaches z^2 (29 events in an empty sliding window where the mass-only
    limits were 120-390), a bound only on signals its flows learned."""
    from types import SimpleNamespace

    import zfit_gbi.data_driven as dd
    from zfit_gbi.data import Windows
    from zfit_gbi.ranode import MixtureScan

    w = np.geomspace(0.02, 0.5, 9)
    s = MixtureScan(w, 100 - 2000 * (np.sqrt(w) - np.sqrt(0.1)) ** 2, np.zeros((9, 1)), 1000)
    stat = s.errors()[0]
    monkeypatch.setattr(dd, "_scan", lambda *a, **k: s)
    task = {"settings": None, "x": None, "m": None, "la": None, "lb": None, "seed": 0, "cl": 0.95}
    z = norm.ppf(0.95)
    alone = dd._scan_task(task)
    assert alone["has_maximum"]
    assert alone["parabolic_limit"]
    below = MixtureScan(w, -5 - 2000 * (np.sqrt(w) - np.sqrt(0.1)) ** 2, np.zeros((9, 1)), 1000)
    assert below.has_maximum  # a finite error: its parabola has a maximum
    assert not below.parabolic_limit  # ... but LL < 0 everywhere
    assert below.upper_limit(0.95) == pytest.approx(w[0])  # the first-scan-point rule: a bound on nothing in the data
    assert alone["upper_limit"] == pytest.approx(s.w_hat + z * stat, rel=1e-9)
    toy = dd._scan_task({**task, "background_error": 2 * stat})
    assert toy["upper_limit"] == pytest.approx(s.w_hat + z * np.sqrt(5) * stat, rel=1e-9)

    no_model = SimpleNamespace(model=SimpleNamespace(get_params=lambda floating=None: []))
    out = dd.toy_limits([toy, alone], [np.array([1.5])] * 2, no_model, np.array([0.5, 1.5, 2.5]), Windows((0.0, 3.0), (1.0, 2.0)), 0.95, 1000.0)
    assert out == pytest.approx([1000 * toy["upper_limit"], 1000 * alone["upper_limit"]])


def test_scan_estimator_on_the_exact_likelihood():
    """The vertex of the scan's parabola is the maximum-likelihood w, and its curvature the
    maximum-likelihood error, on the exact held-out curve LL(w) = sum_i log(1 + w (r_i - 1))
    of this module's synthetic case (exact r_i = p_S / p_B; no training noise) at the default
    grid's points (``signal.data_driven``: 6 log-spaced from 1e-3 to 0.1 and 2 refined), for
    signal fractions of 0.5-4 %. The error is conservative on this coarse grid (measured 17, 9
    and 1 % above the maximum-likelihood error, which equals the 2 delta LL = 1 half-width
    here). A parabola in log w, the estimator before 2026-11-28, fails this test: its vertex
    was 17-18 % high here (and 11-14 % low on the embedded benchmark: the sign depends on where
    the grid points fall)."""
    from scipy.optimize import minimize_scalar

    from zfit_gbi.ranode import MixtureScan, refine_points

    rng = np.random.default_rng(3)
    for n_b, n_s in ((20_000, 100), (20_000, 300), (20_000, 800)):
        x = np.concatenate([rng.normal(size=(n_b, 2)), rng.normal(1.5, 0.3, size=(n_s, 2))])
        m = np.concatenate([rng.uniform(size=n_b), rng.normal(0.5, 0.1, size=n_s).clip(0.001, 0.999)])
        d = np.expm1(norm.logpdf(m, 0.5, 0.1) + norm.logpdf(x, 1.5, 0.3).sum(axis=1) - norm.logpdf(x).sum(axis=1))

        def ll(w: np.ndarray, d: np.ndarray = d) -> np.ndarray:
            return np.array([np.sum(np.log1p(wi * d)) for wi in np.atleast_1d(w)])

        w_mle = minimize_scalar(lambda w, ll=ll: -ll(w)[0], bounds=(0, 0.5), method="bounded", options={"xatol": 1e-8}).x
        err_mle = 1 / np.sqrt(np.sum((d / (1 + w_mle * d)) ** 2))
        w = np.geomspace(1e-3, 0.1, 6)
        w = np.union1d(w, refine_points(w, ll(w), 2))
        s = MixtureScan(w, ll(w), ll(w)[:, None], len(d))
        assert s.w_hat == pytest.approx(w_mle, rel=0.03), n_s
        assert abs(s.w_hat - w_mle) < 0.3 * err_mle, n_s
        assert 0.95 * err_mle < s.errors()[0] < 1.25 * err_mle, n_s  # measured: 17, 9, 1 % large (the coarse grid's average curvature)


def test_training_noise_error_pooled_over_folds():
    """The training-noise error of w_hat from its points' scatter, on 2000 made-up scans: an
    exact parabola in sqrt(w) split over 3 folds, each fold's points with their own Gaussian
    noise (as each fold's flows are their own). Pooled over the folds the error matches the
    spread of w_hat (within 10 %) and is more than 3 times too small in 3.2 % of the scans; from
    the total's five points alone (2 degrees of freedom) in 16.3 % (measured; the bounds below
    are those fractions -+ 3 binomial errors over 2000 scans, 0.4 and 0.8 %)."""
    from zfit_gbi.ranode import MixtureScan

    rng = np.random.default_rng(7)
    w = np.geomspace(0.01, 0.1, 8)
    curve = 100 - 2000 * (np.sqrt(w) - np.sqrt(0.04)) ** 2
    w_hat, pooled, total = [], [], []
    for _ in range(2000):
        folds = curve[:, None] / 3 + rng.normal(0, 1.0, size=(8, 3))
        s = MixtureScan(w, folds.sum(axis=1), folds, 1000)
        w_hat.append(s.w_hat)
        pooled.append(s.errors()[1])
        total.append(MixtureScan(w, folds.sum(axis=1), folds.sum(axis=1)[:, None], 1000).errors()[1])
    spread = np.std(w_hat)
    assert np.sqrt(np.mean(np.square(pooled))) == pytest.approx(spread, rel=0.1)
    assert np.mean(np.array(pooled) < spread / 3) < 0.045
    assert np.mean(np.array(total) < spread / 3) > 0.14


def test_mixture_scan_errors():
    with pytest.raises(ValueError, match="w_grid"):
        mixture_scan(np.zeros((100, 2)), np.zeros(100), log_signal_mass=np.zeros(100), log_background=np.zeros(100),
                     make_flow=_flow, w_grid=[0.1, 0.2])
    with pytest.raises(DataError, match="log_background"):
        mixture_scan(np.zeros((100, 2)), np.zeros(100), log_signal_mass=np.zeros(100), log_background=np.full(100, np.nan),
                     make_flow=_flow, w_grid=[0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="too few"):
        mixture_scan(np.zeros((30, 2)), np.zeros(30), log_signal_mass=np.zeros(30), log_background=np.zeros(30),
                     make_flow=_flow, w_grid=[0.1, 0.2, 0.3], n_folds=3)


@pytest.mark.slow
def test_mixture_scan_recovers_the_fraction():
    """200 signal events in 2200: the true fraction inside the scan's 3 sigma interval
    (statistical and training-noise errors; one seeded case, not a coverage study), an interval
    that still says something (narrower than the fraction itself), and clearly significant;
    without signal, no significance. Measured 2026-11-28 with the parabola in sqrt(w): w_hat
    0.113 -+ 0.011 against 0.091, a pull of +2.1. The held-out curve itself peaks there (its
    best point 0.119): the 2 x 16 flow trained 40 epochs on ~1500 events is broader than the
    signal and takes in some background (p_S(m) / p_B(m) is at most 4 here). The scan's
    estimator on the exact densities of the same events gives 0.0910 against the exact maximum
    likelihood 0.0908 (``test_scan_estimator_on_the_exact_likelihood``). At stop 16 (older
    training code, the parabola in log w) it was 0.078 -+ 0.005, a pull of -2.5."""
    scan = _scan(2000, 200, 1, epochs=40, n_folds=3, grid=np.geomspace(0.01, 0.5, 7), refine=4)
    lo, hi = scan.interval(3.0)
    assert lo < 200 / 2200 < hi
    assert hi - lo < 200 / 2200 * 1.5
    assert scan.significance > 5
    null = _scan(2000, 0, 2, epochs=40, n_folds=3, grid=np.geomspace(0.003, 0.3, 6), refine=0)
    assert null.significance < 3


def test_calibrated_p_value():
    null = np.arange(99.0)  # 99 pseudo-experiments
    assert calibrated_p_value(200.0, null)[0] == pytest.approx(1 / 100)
    p, z = calibrated_p_value(49.5, null)
    assert p == pytest.approx(50 / 100)
    assert z == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="non-empty"):
        calibrated_p_value(1.0, [])


def _background_only(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x, m = rng.normal(size=(n, 2)).clip(-4.9, 4.9), rng.uniform(size=n)
    return x, m, norm.logpdf(m, 0.5, 0.1), norm.logpdf(x).sum(axis=1)


def _null_t(seed: int) -> float:
    x, m, la, lb = _background_only(800, seed)
    train = TrainConfig(epochs=8, batch_size=256, learning_rate=3e-3, patience=4, progress=False, jit_compile=False)
    return mixture_scan(x, m, log_signal_mass=la, log_background=lb, make_flow=_flow, w_grid=np.geomspace(0.005, 0.2, 4), n_folds=2,
                        train=train, seed=seed, refine=0, progress=False).t


@pytest.mark.slow
def test_calibrated_p_values_uniform_without_signal():
    """Background-only data sets, each calibrated against background-only pseudo-experiments
    scanned the same way (NullCalibration on the continuous t = 2 max LL): the calibrated
    p-values are uniform. KS test on 16 data sets against 24 toys (its own p-value > 0.01: a
    1 % false alarm rate for a correct calibration; the discreteness of 24 toys shifts the
    p-values by at most 1/25, far inside the KS critical distance 0.39 at n = 16), and no
    data set reaches p < 0.01 (expected 0.16 of them)."""
    from scipy.stats import kstest

    from zfit_gbi.ranode import NullCalibration

    null = NullCalibration(np.array([_null_t(1000 + i) for i in range(24)]))
    p = np.array([null.p_value(_null_t(i))["p0"] for i in range(16)])
    assert kstest(p - 0.5 / 25, "uniform").pvalue > 0.01
    assert p.min() > 0.01
    assert null.t_null.std() > 0  # the statistic is not degenerate


def test_null_calibration_fitted_tail():
    """The quoted p-value is the empirical one (a bound when no toy reaches t); the fitted tail
    on an exact half-chi2 null with scale 2 recovers c and (1 - f0) chi2_1 sf(t / c)."""
    from scipy.stats import chi2

    from zfit_gbi.ranode import NullCalibration

    rng = np.random.default_rng(3)
    t_null = np.where(rng.uniform(size=4000) < 0.5, -rng.exponential(size=4000), 2 * rng.chisquare(1, size=4000))
    null = NullCalibration(t_null)
    assert null.scale == pytest.approx(2.0, rel=0.06)  # 2000 positive values: 3 sigma = 3 sqrt(2 / 2000) = 0.095
    far = null.p_value(60.0)
    assert far["bound"]
    assert far["p0"] == pytest.approx(1 / 4001)
    assert far["p0_fitted"] == pytest.approx(0.5 * chi2.sf(60.0 / null.scale, 1), rel=1e-6)
    assert far["significance_fitted"] > 4
    near = null.p_value(1.0)
    assert not near["bound"]
    assert near["p0"] == pytest.approx(0.5 * chi2.sf(0.5, 1), abs=0.03)
    assert near["p0_fitted"] == pytest.approx(near["p0"], abs=0.03)
    assert "4000 background-only toys" in repr(null)


def test_upper_limit_from_scan():
    """The one-sided limit: w_hat + 1.645 sigma on an exact parabola; from the point crossing
    without a maximum (every LL < 0: the first w where 2 (0 - LL) >= 1.645^2)."""
    from zfit_gbi.ranode import MixtureScan

    w = np.geomspace(0.02, 0.5, 9)
    ll = 100 - 2000 * (np.sqrt(w) - np.sqrt(0.1)) ** 2
    s = MixtureScan(w, ll, ll[:, None], 1000)
    stat, _ = s.errors()
    assert s.upper_limit(0.95) == pytest.approx(0.1 + 1.6449 * stat, rel=1e-4)
    falling = MixtureScan(w, -np.linspace(0.5, 8, 9), np.zeros((9, 1)), 1000)
    up = falling.upper_limit(0.95)
    assert w[0] < up < w[1]  # 2 |LL| = 1, 2.875, ...: crosses 2.706 between the first two points
    assert up == pytest.approx(np.exp(np.log(w[0]) + (2.706 - 1) / 1.875 * np.log(w[1] / w[0])), rel=1e-3)
    assert np.isnan(MixtureScan(w, -np.full(9, 0.1), np.zeros((9, 1)), 1000).upper_limit(0.95))


def test_parabola_fallback_through_zero():
    """A noisy small-signal scan (the LHCO R&D pseudo signal region's, as gbi run measured it):
    its five best points bracket a maximum in sqrt(w) (they did not in log w, the estimator
    before 2026-11-28); made worse (the point at w = 0.04 raised by 1, so those points rise to
    the grid's second-to-last point), they bracket none, and the quadratic in w through
    LL(0) = 0 gives the vertex, finite errors and an interval around it; on an exact quadratic
    it is exact."""
    from zfit_gbi.ranode import MixtureScan

    w = np.array([0.001, 0.0025, 0.0063, 0.0117, 0.0158, 0.0215, 0.0398, 0.1])
    ll = np.array([1.0896, 1.4451, 2.2792, 3.537, 5.7419, -0.6149, 5.5372, -1.2163])
    measured = MixtureScan(w, ll, ll[:, None], 18335)
    assert measured.parabola().kind == "sqrt"
    assert 0.02 < measured.w_hat < 0.05
    assert all(np.isfinite(measured.errors()))
    ll[6] += 1
    s = MixtureScan(w, ll, ll[:, None], 18335)
    p = s.parabola()
    assert p.kind == "linear"
    assert 0.03 < s.w_hat < 0.06
    stat, noise = s.errors()
    assert np.isfinite(stat)
    assert noise > 0
    lo, hi = s.interval()
    assert lo < s.w_hat < hi
    assert p.at(np.array([s.w_hat]))[0] == pytest.approx(p.ll_hat)
    exact = 200 * w - 5000 * w**2  # the through-zero fit of an exact quadratic: vertex 0.02, no scatter
    a, b, c, vertex, noise, rms = MixtureScan._vertex(np.stack([w**2, w], axis=1), exact, w, lower=0.0)
    assert (a, b, c) == (pytest.approx(-5000), pytest.approx(200), 0.0)
    assert vertex == pytest.approx(0.02, rel=1e-9)
    assert noise == pytest.approx(0.0, abs=1e-9)
    assert rms == pytest.approx(0.0, abs=1e-9)

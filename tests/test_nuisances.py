"""Generator-error nuisance parameters: eigen-variations and up/down interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import zfit

from zfit_gbi.generators import FlowEnsemble
from zfit_gbi.nuisances import EigenVariation, UpDownVariation
from zfit_gbi.pdfs import JointFlowPDF, to_zfit_data


@pytest.fixture(scope="module")
def pair(cond_flow, sideband_flow):
    """Two decent, different generators of the same density (whole window vs sidebands only)."""
    return FlowEnsemble([cond_flow, sideband_flow], "prob")


@pytest.fixture(scope="module")
def masses(bench):
    return bench.sample(20000, 0, seed=31)["mjj"]


def is_normalized(pdf, n=100_000, seed=0):
    """Importance-sampling integral over the joint space with a uniform proposal
    (estimate, standard error)."""
    rng = np.random.default_rng(seed)
    lo, hi = np.array([2.9, 0, 0, 0, 0]), np.array([4.1, 1, 1, 1, 1])
    u = lo + (hi - lo) * rng.random((n, 5))
    p = pdf.pdf(zfit.Data.from_numpy(obs=pdf.space, array=u)).numpy() * np.prod(hi - lo)
    return p.mean(), p.std() / np.sqrt(n)


def test_eigen_directions_carry_the_ensemble_variance(pair, masses, bench):
    var = EigenVariation.from_ensemble(pair, masses, n_components=1, n_mc=5000, prefix="eig_t1")
    assert len(var.params) == 1
    assert var.explained[0] == pytest.approx(1.0)  # K = 2: one direction carries everything
    ev = bench.sample(500, 0, seed=32)
    x, m = ev.array(bench.features), ev["mjj"]
    cols = var.columns(x, m)
    lp = pair.member_log_probs(x, m[:, None])
    d = lp - lp.mean(axis=0)
    # with all K - 1 directions kept, sum_j v_j^2 equals the members' variance of log p
    np.testing.assert_allclose(cols[:, 1] ** 2, np.sum(d**2, axis=0) / (len(pair) - 1), rtol=1e-8)
    np.testing.assert_allclose(cols[:, 0], pair.log_prob(x, m[:, None]), rtol=1e-10)
    assert "K=2" in repr(var)


@pytest.mark.parametrize("theta", [0.0, 1.5, -2.5])
def test_eigen_varied_pdf_is_normalized(pair, masses, theta):
    var = EigenVariation.from_ensemble(pair, masses, n_components=1, n_mc=20000, prefix=f"eig_n{abs(theta)}".replace(".", "_"))
    mjj = zfit.Space("mjj", limits=(2.9, 4.1))
    pdf = JointFlowPDF(zfit.pdf.Exponential(-2.0, obs=mjj), pair, variation=var)
    var.params[0].set_value(theta)
    est, err = is_normalized(pdf)
    assert abs(est - 1) < 5 * err + 0.02


def test_updown_reproduces_up_and_down(cond_flow, sideband_flow, masses, bench):
    """At a = +1 (-1) the varied density is the up (down) generator's, up to the Monte Carlo
    normalization (both are normalized, so Z(+-1) = 1 within its error)."""
    var = UpDownVariation.from_generators(cond_flow, sideband_flow, cond_flow, masses, n_mc=20000, prefix="ud_t")
    mjj = zfit.Space("mjj", limits=(2.9, 4.1))
    pdf = JointFlowPDF(zfit.pdf.Uniform(2.9, 4.1, obs=mjj), cond_flow, variation=var)
    ev = bench.sample(300, 0, seed=33)
    data = to_zfit_data(ev, pdf.space)
    x, m = ev.array(bench.features), ev["mjj"]
    var.params[0].set_value(1.0)
    got = pdf.log_pdf(data).numpy() + np.log(1.2)
    np.testing.assert_allclose(got, sideband_flow.log_prob(x, m), atol=0.03)
    var.params[0].set_value(-1.0)
    got = pdf.log_pdf(data).numpy() + np.log(1.2)
    np.testing.assert_allclose(got, cond_flow.log_prob(x, m), atol=1e-9)  # down == nominal here
    var.params[0].set_value(2.0)  # exponential extrapolation: still a normalized density
    est, err = is_normalized(pdf)
    assert abs(est - 1) < 5 * err + 0.02


def test_nuisance_is_profiled_with_its_constraint(pair, masses, bench):
    """In an extended fit the eigen parameter floats with its N(0, 1) constraint and gets a
    finite Hesse error; without the constraint term the loss is different."""
    var = EigenVariation.from_ensemble(pair, masses, n_components=1, n_mc=5000, prefix="eig_fit")
    mjj = zfit.Space("mjj", limits=(2.9, 4.1))
    nb = zfit.Parameter("nb_eig_fit", 3000, 0, 1e5)
    lam = zfit.Parameter("lam_eig_fit", -2.0, -20, 5)
    pdf = JointFlowPDF(zfit.pdf.Exponential(lam, obs=mjj), pair, variation=var, extended=nb)
    data = to_zfit_data(bench.sample(3000, 0, seed=34), pdf.space)
    loss = zfit.loss.ExtendedUnbinnedNLL(pdf, data, constraints=[var.constraint])
    assert var.params[0] in loss.get_params()
    res = zfit.minimize.Minuit(gradient="zfit").minimize(loss)
    assert res.valid
    res.hesse()
    err = res.params[var.params[0]]["hesse"]["error"]
    assert 0 < err < 1.5
    assert abs(res.params[var.params[0]]["value"]) < 3


def test_hisigma_sideband_constant(bench, cond_flow):
    """Outside the signal region the feature density is the uniform one of the box."""
    mjj = zfit.Space("mjj", limits=(2.9, 4.1))
    pdf = JointFlowPDF(zfit.pdf.Uniform(2.9, 4.1, obs=mjj), cond_flow, sideband_constant=(3.3, 3.7))
    ev = bench.sample(400, 0, seed=35)
    lp = pdf.log_pdf(to_zfit_data(ev, pdf.space)).numpy() + np.log(1.2)
    m = ev["mjj"]
    sr = (m >= 3.3) & (m < 3.7)
    np.testing.assert_allclose(lp[~sr], 0.0, atol=1e-12)  # log(1 / volume of [0, 1]^4)
    np.testing.assert_allclose(lp[sr], cond_flow.log_prob(ev.array(bench.features)[sr], m[sr]), rtol=1e-10)
    s = pdf.sample(4000).value().numpy()
    side = (s[:, 0] < 3.3) | (s[:, 0] >= 3.7)
    assert abs(s[side, 2].mean() - 0.5) < 0.03  # uniform features in the sidebands


@pytest.mark.slow  # a statistical check on large samples: 90 s on 2 cores
def test_weighted_sample_is_the_varied_density(pair, masses):
    """JointFlowPDF.weighted_sample (the Asimov sample): nominal events with the exact ratio
    varied / nominal. At theta = 0 every ratio is 1; at theta != 0 the ratios average to 1
    (the variation is normalized) and the weighted mean of the eigen direction v(x) is the
    tilted expectation d log Z / d theta (from the variation's own, independent MC sample).
    The PDF's own sampler (accept-reject by the factor, used for toys) reaches the same tilt;
    sampling-importance-resampling with 8 candidates, used before, reached only about 75 %."""
    import tensorflow as tf

    var = EigenVariation.from_ensemble(pair, masses, n_components=1, n_mc=20000, prefix="eig_ws")
    mjj = zfit.Space("mjj", limits=(2.9, 4.1))
    pdf = JointFlowPDF(zfit.pdf.Exponential(-2.0, obs=mjj), pair, variation=var)
    vals, ratio = pdf.weighted_sample(5000, seed=1)
    assert vals.shape == (5000, 5)
    np.testing.assert_array_equal(ratio, 1.0)
    theta = 2.0
    var.params[0].set_value(theta)
    vals, ratio = pdf.weighted_sample(40_000, seed=2)
    assert np.all(ratio > 0)
    assert ratio.mean() == pytest.approx(1.0, abs=0.05)
    v = var.columns(vals[:, 1:], vals[:, 0])[:, 1]
    weighted = np.average(v, weights=ratio)
    h = 1e-4
    dlogz = (var.log_norm([tf.constant(theta + h, tf.float64)]) - var.log_norm([tf.constant(theta - h, tf.float64)])).numpy() / (2 * h)
    tilt = dlogz - v.mean()
    assert tilt > 0.02  # a visible tilt
    err = v.std() / np.sqrt(40_000 / np.mean(ratio**2))
    assert abs(weighted - dlogz) < 5 * err + 0.1 * tilt
    zfit.settings.set_seed(3)
    toys = pdf.sample(20_000).value().numpy()
    assert toys.shape == (20_000, 5)
    v_toys = var.columns(toys[:, 1:], toys[:, 0])[:, 1]
    assert abs(v_toys.mean() - dlogz) < 5 * v_toys.std() / np.sqrt(len(v_toys)) + 0.1 * tilt

"""Flows as zfit PDFs: normalization, sampling, an extended fit, graph/eager modes, gradients, caching."""

from __future__ import annotations

import numpy as np
import pytest
import zfit

from zfit_gbi.data import DataError
from zfit_gbi.pdfs import ConditionalFlowPDF, FlowPDF, JointFlowPDF, to_zfit_data


def feature_space(bench, **override):
    space = None
    for f in bench.features:
        s = zfit.Space(f, limits=override.get(f, bench.bounds[f]))
        space = s if space is None else space * s
    return space


def signal_model(bench, mjj, yield_):
    """Parametric signal: Gauss(mjj) x truncated Gaussians in the features (fixed shapes, near
    the benchmark's signal)."""
    sig_m = zfit.pdf.Gauss(zfit.Parameter("smu", 3.5, floating=False), zfit.Parameter("ssig", 0.035, floating=False), obs=mjj)
    comps = [sig_m]
    for f, (mean, width) in zip(bench.features, [(0.16, 0.05), (0.3, 0.085), (0.45, 0.15), (0.45, 0.15)], strict=True):
        lo, hi = bench.bounds[f]
        comps.append(
            zfit.pdf.TruncatedGauss(
                zfit.Parameter(f"m_{f}", mean, floating=False), zfit.Parameter(f"w_{f}", width, floating=False),
                low=lo, high=hi, obs=zfit.Space(f, limits=(lo, hi)),
            )
        )
    return zfit.pdf.ProductPDF(comps, extended=yield_)


def test_flow_pdf_normalized_on_its_box(bench, uncond_flow):
    obs = feature_space(bench)
    pdf = FlowPDF(uncond_flow, obs)
    assert float(pdf.integrate(obs)[0]) == pytest.approx(1.0)  # registered exactly
    x = bench.sample_background_features(np.full(100, 3.5), np.random.default_rng(0))
    data = zfit.Data.from_numpy(obs=obs, array=x)
    np.testing.assert_allclose(pdf.log_pdf(data).numpy(), uncond_flow.log_prob(x), rtol=1e-12)
    assert "Flow(" in str(pdf)
    assert "val loss" in repr(pdf)


def test_sub_box_falls_back_to_numerical_normalization(bench, uncond_flow):
    """On a space smaller than the box the PDF is renormalized numerically: it integrates to 1
    over the sub-box (checked with an independent uniform Monte Carlo)."""
    sub = feature_space(bench, mj1=(0.0, 0.3))
    pdf = FlowPDF(uncond_flow, sub)
    rng = np.random.default_rng(1)
    u = rng.random((200_000, 4))
    u[:, 0] *= 0.3
    p = pdf.pdf(zfit.Data.from_numpy(obs=sub, array=u)).numpy()
    est, err = p.mean() * 0.3, p.std() * 0.3 / np.sqrt(len(p))
    assert abs(est - 1.0) < 5 * err + 0.01
    s = pdf.sample(3000).value().numpy()
    assert s[:, 0].max() <= 0.3  # sampling honours the sub-range (accept-reject)


def test_conditional_pdf(bench, cond_flow):
    mjj = zfit.Space("mjj", limits=bench.fit_window)
    obs = mjj * feature_space(bench)
    pdf = ConditionalFlowPDF(cond_flow, obs)
    ev = bench.sample(200, 0, seed=3)
    data = to_zfit_data(ev, obs)
    expected = cond_flow.log_prob(ev.array(bench.features), ev["mjj"]) - np.log(bench.fit_window[1] - bench.fit_window[0])
    np.testing.assert_allclose(pdf.log_pdf(data).numpy(), expected, rtol=1e-10)
    s = pdf.sample(500).value().numpy()
    assert s.shape == (500, 5)
    assert np.all((s[:, 0] >= 2.9) & (s[:, 0] <= 4.1))


def test_joint_pdf_is_normalized(bench, cond_flow):
    """p(m) p(x|m) integrates to 1 over the joint space: importance sampling from the PDF's own
    sampler mixed with a uniform proposal."""
    mjj = zfit.Space("mjj", limits=bench.fit_window)
    lam = zfit.Parameter("lam_norm", -2.0)
    joint = JointFlowPDF(zfit.pdf.Exponential(lam, obs=mjj), cond_flow)
    rng = np.random.default_rng(4)
    n = 100_000
    own = joint.sample(n // 2).value().numpy()
    lo = np.array([2.9, 0, 0, 0, 0])
    hi = np.array([4.1, 1, 1, 1, 1])
    uni = lo + (hi - lo) * rng.random((n // 2, 5))
    xs = np.concatenate([own, uni])
    p = joint.pdf(zfit.Data.from_numpy(obs=joint.space, array=xs)).numpy()
    q = 0.5 * p + 0.5 / np.prod(hi - lo)
    w = p / q
    assert abs(w.mean() - 1) < max(0.01, 5 * w.std() / np.sqrt(n))


@pytest.fixture(scope="module")
def fit_setup(bench, sideband_flow):
    mjj = zfit.Space("mjj", limits=bench.fit_window)
    lam = zfit.Parameter("lam_fit", -2.0, -20, 5)
    nb = zfit.Parameter("nb_fit", 5000, 0, 50000)
    ns = zfit.Parameter("ns_fit", 50, -500, 5000)
    bkg = JointFlowPDF(zfit.pdf.Exponential(lam, obs=mjj), sideband_flow, extended=nb)
    sig = signal_model(bench, mjj, ns)
    model = zfit.pdf.SumPDF([bkg, sig])
    return {"model": model, "bkg": bkg, "params": (lam, nb, ns)}


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "eager"])
def test_extended_fit_recovers_injected_signal(bench, fit_setup, graph):
    """Parametric signal + flow background trained on background only: the fitted yield is
    within 3 sigma of the injected one, with a valid Minuit minimum, in graph and eager mode."""
    model, bkg = fit_setup["model"], fit_setup["bkg"]
    lam, nb, ns = fit_setup["params"]
    n_sig = 120
    # background from the benchmark, signal from the parametric signal model itself
    bkg_ev = bench.sample(6000, 0, seed=21)
    sig_ev = model.pdfs[1].sample(n_sig).value().numpy()
    cols = list(model.space.obs)
    values = np.concatenate([bkg_ev.array(cols), sig_ev])
    data = zfit.Data.from_numpy(obs=model.space, array=values)
    before = zfit.run.get_graph_mode()  # "auto" by default; forcing True afterwards would slow every later test
    zfit.run.set_graph_mode(graph)
    try:
        for p, v in ((lam, -2.0), (nb, 5000), (ns, 50)):
            p.set_value(v)
        loss = zfit.loss.ExtendedUnbinnedNLL(model, data)
        grads = loss.gradient([lam, nb, ns]).numpy()
        assert np.all(np.abs(grads) > 0)  # gradients reach every parameter
        misses = bkg.cache.misses
        result = zfit.minimize.Minuit(gradient="zfit").minimize(loss)
        assert result.valid
        result.hesse(name="hesse")
        err = result.params[ns]["hesse"]["error"]
        assert abs(result.params[ns]["value"] - n_sig) < 3 * err
        assert 0 < err < 50
        # the network ran at most once for this dataset; every minimizer call hit the cache
        assert bkg.cache.misses - misses <= 1
        assert bkg.cache.hits > 10
    finally:
        zfit.run.set_graph_mode(before)


def test_cache_off_gives_same_values(bench, sideband_flow):
    mjj = zfit.Space("mjj", limits=bench.fit_window)
    lam = zfit.Parameter("lam_nc", -2.0)
    a = JointFlowPDF(zfit.pdf.Exponential(lam, obs=mjj), sideband_flow)
    b = JointFlowPDF(zfit.pdf.Exponential(lam, obs=mjj), sideband_flow, cache=False)
    ev = bench.sample(300, 10, seed=8)
    data = to_zfit_data(ev, a.space)
    np.testing.assert_allclose(a.log_pdf(data).numpy(), b.log_pdf(data).numpy(), rtol=1e-12)
    assert a.cache.misses == 1
    assert b.cache.misses == 0


def test_sampling_for_toys(bench, fit_setup):
    model = fit_setup["model"]
    sampler = model.create_sampler(n=2000)
    first = sampler.value().numpy().copy()
    sampler.resample()
    second = sampler.value().numpy()
    assert first.shape == second.shape == (2000, 5)
    assert not np.allclose(first, second)
    assert np.all((second[:, 1:] >= 0) & (second[:, 1:] <= 1))


def test_bad_data_for_zfit(bench, sideband_flow):
    mjj = zfit.Space("mjj", limits=bench.fit_window)
    joint = JointFlowPDF(zfit.pdf.Exponential(zfit.Parameter("lam_bad", -1.0), obs=mjj), sideband_flow)
    ev = bench.sample(50, 0, seed=1)
    vals = ev.values.copy()
    vals[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        to_zfit_data(type(ev)(vals, ev.columns), joint.space)
    vals = ev.values.copy()
    vals[5, 0] = 5.0
    with pytest.raises(DataError, match="mjj: 1 events outside"):
        to_zfit_data(type(ev)(vals, ev.columns), joint.space)
    kept = to_zfit_data(type(ev)(vals, ev.columns), joint.space, clip=True)
    assert kept.nevents == 49
    with pytest.raises(DataError, match="missing column"):
        to_zfit_data(ev.with_columns(["mjj", "mj1"]), joint.space)


def test_wrong_generator_for_pdf(bench, cond_flow, uncond_flow):
    mjj = zfit.Space("mjj", limits=bench.fit_window)
    with pytest.raises(ValueError, match="conditional"):
        FlowPDF(cond_flow, feature_space(bench))
    with pytest.raises(ValueError, match="unconditional"):
        ConditionalFlowPDF(uncond_flow, mjj * feature_space(bench))
    with pytest.raises(ValueError, match="features"):
        FlowPDF(uncond_flow, zfit.Space("mj1", limits=(0, 1)))
    other = zfit.Space("mgg", limits=(0.1, 0.2))
    with pytest.raises(ValueError, match="conditioned on exactly 'mgg'"):
        JointFlowPDF(zfit.pdf.Uniform(0.1, 0.2, obs=other), cond_flow)
    with pytest.raises(ValueError, match="outside the generator's box"):
        FlowPDF(uncond_flow, feature_space(bench, mj1=(-0.5, 1.0)))

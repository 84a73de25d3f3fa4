"""Inference: fits, discovery and CLs limits through hepstats, with an unbinned Asimov dataset."""

from __future__ import annotations

import numpy as np
import pytest
import zfit
from scipy.stats import norm

from zfit_gbi.generators import Flow, FlowConfig, FlowEnsemble, TrainConfig
from zfit_gbi.inference import (
    FitError,
    discovery,
    fit,
    look_elsewhere,
    look_elsewhere_upcrossings,
    profile_scan,
    upper_limit,
)
from zfit_gbi.pdfs import FlowPDF

BOUNDS = (0.1, 3.0)
# hepstats' own test (tests/hypotests/test_upperlimit.py, asymptotic calculator) asserts these
# CLs limits on Nsig for this model and data, each with rel=0.1
HEPSTATS_REFERENCE = {"observed": 15.73, "expected": 11.93, "expected_p1": 16.60, "expected_m1": 8.59, "expected_p2": 22.25}


def hepstats_data() -> tuple[zfit.Space, zfit.Data, int]:
    """hepstats' test data: 300 exponential(tau = -2) + 10 Gaussian(1.2, 0.1) events in [0.1, 3]."""
    obs = zfit.Space("x", limits=BOUNDS)
    np.random.seed(0)  # noqa: NPY002  (the legacy generator reproduces hepstats' own data)
    data = np.concatenate((np.random.exponential(0.5, 300), np.random.normal(1.2, 0.1, 10)))  # noqa: NPY002
    data = data[(data > BOUNDS[0]) & (data < BOUNDS[1])]
    return obs, zfit.Data.from_numpy(obs=obs, array=data), len(data)


@pytest.fixture(scope="module")
def exp_flow() -> Flow:
    """A 1-D spline flow trained on 200k samples of the same exponential on a slightly wider box
    (used on [0.1, 3] with zfit's numerical renormalization)."""
    rng = np.random.default_rng(1)
    lo, hi, lam = 0.0, 3.2, -2.0
    xs = np.log(np.exp(lam * lo) + rng.random(200_000) * (np.exp(lam * hi) - np.exp(lam * lo))) / lam
    f = Flow(["x"], {"x": (-0.1, 3.3)}, (), FlowConfig(transform="rqs", n_layers=1, hidden_units=(8,), n_bins=16, tail_bound=4.0))
    f.fit(xs[:, None], epochs=30, batch_size=1024, progress=False)
    return f


def make_loss(kind: str, flow: Flow | None = None):
    obs, data, n = hepstats_data()
    nsig = zfit.Parameter(f"Nsig_{kind}", 20.0, -20.0, n)
    nbkg = zfit.Parameter(f"Nbkg_{kind}", n, 0.0, n * 1.1)
    sig = zfit.pdf.Gauss(obs=obs, mu=1.2, sigma=0.1, extended=nsig)
    if kind == "flow":
        bkg = FlowPDF(flow, obs, extended=nbkg)
    else:
        lam = zfit.Parameter(f"lambda_{kind}", -2.0, -4.0, -1.0)
        bkg = zfit.pdf.Exponential(obs=obs, lambda_=lam, extended=nbkg)
    return zfit.loss.ExtendedUnbinnedNLL(zfit.pdf.SumPDF([sig, bkg]), data), nsig


def test_hepstats_reference_limits_analytic_and_flow(exp_flow):
    """The analytic model reproduces hepstats' asserted limits (rel 0.1, as hepstats' own test),
    and with the exponential replaced by a flow trained on exponential samples the limits agree
    with the analytic-background limits within 10 %."""
    scan = np.linspace(0.0, 25.0, 15)
    loss_a, nsig_a = make_loss("analytic")
    lim_a = upper_limit(loss_a, nsig_a, scan=scan)
    assert lim_a.observed == pytest.approx(HEPSTATS_REFERENCE["observed"], rel=0.1)
    assert lim_a.expected[2] == pytest.approx(HEPSTATS_REFERENCE["expected"], rel=0.1)
    assert lim_a.expected[1] == pytest.approx(HEPSTATS_REFERENCE["expected_m1"], rel=0.1)
    assert lim_a.expected[3] == pytest.approx(HEPSTATS_REFERENCE["expected_p1"], rel=0.1)
    assert lim_a.expected[4] == pytest.approx(HEPSTATS_REFERENCE["expected_p2"], rel=0.1)

    loss_f, nsig_f = make_loss("flow", exp_flow)
    lim_f = upper_limit(loss_f, nsig_f, scan=scan)
    assert lim_f.observed == pytest.approx(lim_a.observed, rel=0.1)
    for a, f in zip(lim_a.expected, lim_f.expected, strict=True):
        assert f == pytest.approx(a, rel=0.1)
    assert lim_f.expected[0] < lim_f.expected[2] < lim_f.expected[4]


def test_fit_summary_and_profile(exp_flow):
    loss, nsig = make_loss("flow", exp_flow)
    s = fit(loss, nsig)
    assert s.valid
    assert s.poi == nsig.name
    assert 0 < s.poi_error_low < 20
    assert 0 < s.poi_error_high < 20
    assert s.correlation[nsig.name][nsig.name] == pytest.approx(1.0)
    # the profile scan reaches 1 at about one error from the minimum
    scan = profile_scan(loss, nsig, [s.poi_value, s.poi_value + s.poi_error_high, s.poi_value - s.poi_error_low])
    assert scan[0] == pytest.approx(0.0, abs=1e-3)
    assert scan[1] == pytest.approx(1.0, abs=0.1)
    assert scan[2] == pytest.approx(1.0, abs=0.1)
    assert "Nsig_flow" in repr(s)


def test_discovery_grows_with_signal():
    """Z from hepstats' Discovery increases with the injected yield and is 0 for a negative fit."""
    obs = zfit.Space("y", limits=(0.0, 1.0))
    zs = []
    for k, n_sig in enumerate((0, 40, 120)):
        rng = np.random.default_rng(100 + k)
        x = np.concatenate([rng.random(1000), np.clip(rng.normal(0.5, 0.03, n_sig), 0, 1)])
        data = zfit.Data.from_numpy(obs=obs, array=x)
        ns = zfit.Parameter(f"ns_disc{k}", 10.0, -200.0, 2000.0)
        nb = zfit.Parameter(f"nb_disc{k}", 1000.0, 0.0, 5000.0)
        model = zfit.pdf.SumPDF([
            zfit.pdf.Gauss(0.5, 0.03, obs=obs, extended=ns),
            zfit.pdf.Uniform(0.0, 1.0, obs=obs, extended=nb),
        ])
        zs.append(discovery(zfit.loss.ExtendedUnbinnedNLL(model, data), ns).significance)
    assert zs[0] < 2.0
    assert zs[0] < zs[1] < zs[2]
    # a 120-event peak over ~1000 flat events in a 0.03-wide window is a large excess
    assert zs[2] > 5.0


def test_invalid_minimum_is_an_error(monkeypatch):
    """When every attempt ends in an invalid minimum (here: Minuit stopped after too few
    calls), fit() raises FitError saying what was tried; it never returns the result."""
    obs = zfit.Space("z", limits=(0.0, 1.0))
    data = zfit.Data.from_numpy(obs=obs, array=np.random.default_rng(0).normal(0.4, 0.1, 500).clip(0, 1))
    mu = zfit.Parameter("mu_inv", 0.9, 0.0, 1.0)
    sigma = zfit.Parameter("sigma_inv", 0.5, 0.01, 1.0)
    n = zfit.Parameter("n_inv", 100.0, 0.0, 1e4)
    loss = zfit.loss.ExtendedUnbinnedNLL(zfit.pdf.Gauss(mu, sigma, obs=obs, extended=n), data)
    real = zfit.minimize.Minuit.__init__

    def starved(self, *args, **kwargs):
        kwargs["maxiter"] = 3
        real(self, *args, **kwargs)

    monkeypatch.setattr(zfit.minimize.Minuit, "__init__", starved)
    with pytest.raises(FitError, match="no valid minimum after 2 attempts"):
        fit(loss, n, retries=2)


def _peak_model(tag: str, n_bkg: int = 2000, seed: int = 0):
    """Flat background and a narrow peak: p_S / p_B reaches ~80, so n_S < -n_B / 80 makes the
    mixture density negative for the events under the peak (NaN NLL)."""
    obs = zfit.Space("w", limits=(0.0, 1.0))
    x = np.random.default_rng(seed).random(n_bkg)
    data = zfit.Data.from_numpy(obs=obs, array=x)
    ns = zfit.Parameter(f"ns_{tag}", 0.0, -n_bkg, n_bkg)
    nb = zfit.Parameter(f"nb_{tag}", n_bkg, 0.0, 3 * n_bkg)
    model = zfit.pdf.SumPDF([zfit.pdf.Gauss(0.5, 0.005, obs=obs, extended=ns), zfit.pdf.Uniform(0.0, 1.0, obs=obs, extended=nb)])
    return zfit.loss.ExtendedUnbinnedNLL(model, data), ns, nb


def test_fit_recovers_from_a_start_where_the_density_is_negative():
    """A start with n_S far below the boundary (NaN NLL there) restarts from n_S = 0 and finds
    the same minimum as a fit started at 0; the minimum lies inside the allowed region."""
    loss, ns, nb = _peak_model("nan")
    ref = fit(loss, ns, minos=False)
    ns.set_value(-400.0)
    nb.set_value(2000.0)
    assert not np.isfinite(float(loss.value()))
    s = fit(loss, ns, minos=False)
    assert s.valid
    assert s.poi_value == pytest.approx(ref.poi_value, abs=0.05 * ref.errors[ns.name])
    assert s.poi_value > -2000 / 80


def test_profile_scan_is_inf_where_no_background_makes_the_density_positive():
    """Below n_S = -n_B,max / 80 the mixture density is negative under the peak for any
    background yield: the profile scan says inf there (no likelihood) instead of failing the
    whole scan (a gbi run on data without signal failed so at its profile-scan stage)."""
    loss, ns, _ = _peak_model("infeasible")
    s = fit(loss, ns, minos=False)
    q = profile_scan(loss, ns, [s.poi_value, -300.0])
    assert q[0] == pytest.approx(0.0, abs=1e-3)
    assert q[1] == np.inf
    assert float(ns.value()) == pytest.approx(s.poi_value, abs=0.05 * s.errors[ns.name])  # back at the minimum
    from zfit_gbi.inference import _conditional_nll

    with pytest.raises(RuntimeError, match="density is negative"):  # the default still raises
        _conditional_nll(loss, ns, [-300.0])


def test_default_limit_scan_reaches_every_expected_band():
    """Data with a deficit under the peak (70 % of the events within 2 widths removed): the
    fitted n_S is negative (-22) and its Hesse error small (2.4), so four of those errors fall
    short of the +2 sigma expected limit (27); the default scan is extended until every CLs
    curve crosses 0.05, so no limit comes back NaN."""
    loss, ns, _ = _peak_model("deficit")
    x = loss.data[0].value()[:, 0].numpy()
    drop = (np.abs(x - 0.5) < 0.01) & (np.random.default_rng(5).random(x.size) > 0.3)
    data = zfit.Data.from_numpy(obs=loss.data[0].space, array=x[~drop])
    loss = zfit.loss.ExtendedUnbinnedNLL(loss.model[0], data)
    s = fit(loss, ns, minos=False)
    assert s.poi_value < 0
    lim = upper_limit(loss, ns, n_points=8)
    assert np.all(np.isfinite(lim.expected)), lim.expected
    assert np.isfinite(lim.observed)
    assert lim.expected[4] > 4 * s.errors[ns.name]  # the band lies beyond the original scan


def test_wald_upper_limit_against_hepstats():
    """The Wald form of the asymptotic CLs limit: 1.96 sigma at mu_hat = 0 (the median expected
    limit), the expected band at mu_hat = n sigma, and on a fitted peak yield (a parabola near
    enough) hepstats' scan to a few per cent."""
    from scipy.stats import norm

    from zfit_gbi.inference import wald_upper_limit

    assert wald_upper_limit(0.0, 10.0) == pytest.approx(10 * norm.ppf(0.975))
    for mu_hat in (-15.0, -5.0, 0.0, 10.0, 30.0):  # the definition: CLs = CLs+b / CLb = 0.05 at the limit
        mu = wald_upper_limit(mu_hat, 10.0)
        assert norm.cdf((mu_hat - mu) / 10) / norm.cdf(mu_hat / 10) == pytest.approx(0.05, rel=1e-9)
    assert 0 < wald_upper_limit(-30.0, 10.0) < wald_upper_limit(0.0, 10.0)  # CLs keeps a deficit's limit positive
    assert np.isnan(wald_upper_limit(5.0, 0.0))
    obs = zfit.Space("w", limits=(0.0, 1.0))
    x = np.random.default_rng(2).random(3000)
    ns = zfit.Parameter("ns_wald", 0.0, -1000, 3000)
    nb = zfit.Parameter("nb_wald", 3000, 0.0, 9000)
    model = zfit.pdf.SumPDF([zfit.pdf.Gauss(0.5, 0.05, obs=obs, extended=ns), zfit.pdf.Uniform(0.0, 1.0, obs=obs, extended=nb)])
    loss = zfit.loss.ExtendedUnbinnedNLL(model, zfit.Data.from_numpy(obs=obs, array=x))
    s = fit(loss, ns, minos=False)
    lim = upper_limit(loss, ns, n_points=8)
    assert wald_upper_limit(s.poi_value, s.errors[ns.name]) == pytest.approx(lim.observed, rel=0.05)


def _spurious_peak_model(tag: str, n_sig: int):
    """The flat + narrow-peak model with a spurious-signal nuisance of 15 events on the yield,
    on 2000 background and ``n_sig`` peak events."""
    from zfit_gbi.nuisances import SpuriousSignal

    obs = zfit.Space("w", limits=(0.0, 1.0))
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.random(2000), rng.normal(0.5, 0.005, n_sig)])
    ns = zfit.Parameter(f"ns_{tag}", 0.0, -2000, 4000)
    nb = zfit.Parameter(f"nb_{tag}", 2000, 0.0, 6000)
    ss = SpuriousSignal(15.0, prefix=f"sp_{tag}")
    sig = zfit.pdf.Gauss(0.5, 0.005, obs=obs, extended=ss.yield_of(ns, f"nsig_{tag}"))
    model = zfit.pdf.SumPDF([sig, zfit.pdf.Uniform(0.0, 1.0, obs=obs, extended=nb)])
    data = zfit.Data.from_numpy(obs=obs, array=x)
    return zfit.loss.ExtendedUnbinnedNLL(model, data, constraints=[ss.constraint]), ns, ss


def test_limit_notes_a_nuisance_at_its_bound_in_the_background_only_fit():
    """With 300 signal events (error ~18) the background-only fit (n_S = 0) moves the
    15-event spurious-signal theta to ~8 sigma, beyond its bound 5: the limits stay finite and
    the result says that the expected band comes from a fit with that theta at its bound; with
    10 signal events nothing is noted."""
    loss, ns, ss = _spurious_peak_model("bound", 300)
    lim = upper_limit(loss, ns, n_points=6, n_asimov=5000)
    assert np.isfinite(lim.observed)
    assert np.all(np.isfinite(lim.expected))
    assert not lim.problems
    assert any(f"{ss.name} = 5 sits at its bound 5" in n for n in lim.notes), lim.notes
    assert lim.to_dict()["notes"] == list(lim.notes)
    loss, ns, ss = _spurious_peak_model("free", 10)
    lim = upper_limit(loss, ns, n_points=6, n_asimov=5000)
    assert np.isfinite(lim.observed)
    assert not lim.notes, lim.notes


def test_profile_errors_match_hesse_for_a_parabolic_likelihood():
    """Where Minos is not used, the profile-likelihood crossings (secant on sqrt(2 dNLL)) equal
    the Hesse error for a Gaussian mean (an exactly parabolic NLL) and are asymmetric for a
    Poisson-like yield near zero."""
    from zfit_gbi.inference import _profile_errors

    obs = zfit.Space("v", limits=(-10.0, 10.0))
    data = zfit.Data.from_numpy(obs=obs, array=np.random.default_rng(1).normal(0.3, 1.0, 4000))
    mu = zfit.Parameter("mu_prof", 0.0, -2.0, 2.0)
    loss = zfit.loss.UnbinnedNLL(zfit.pdf.Gauss(mu, 1.0, obs=obs), data)
    s = fit(loss, mu, minos=False)
    lo, hi = _profile_errors(loss, mu, s.poi_value, s.errors[mu.name], s.nll)
    assert lo == pytest.approx(1 / np.sqrt(4000), rel=0.01)
    assert hi == pytest.approx(1 / np.sqrt(4000), rel=0.01)
    assert float(mu.value()) == pytest.approx(s.poi_value)  # restored

    loss, ns, _ = _peak_model("asym", n_bkg=500, seed=3)
    s = fit(loss, ns, minos=False)
    lo, hi = _profile_errors(loss, ns, s.poi_value, s.errors[ns.name], s.nll)
    assert lo < hi  # the likelihood rises steeply towards the negative-density boundary
    q = profile_scan(loss, ns, [s.poi_value - lo, s.poi_value + hi])
    np.testing.assert_allclose(q, 1.0, atol=0.01)


def test_envelope_interval_spans_the_alternative_models():
    """Two equally good models whose POI minima differ by 0.05: the envelope's interval is the
    union of the two 68 % intervals (width 2 sigma + 0.05); one model alone gives 2 sigma."""
    from zfit_gbi.inference import envelope_interval

    obs = zfit.Space("u", limits=(-10.0, 10.0))
    data = zfit.Data.from_numpy(obs=obs, array=np.random.default_rng(2).normal(0.0, 1.0, 2500))
    losses, pois = [], []
    for k, shift in enumerate((0.0, 0.05)):
        mu = zfit.Parameter(f"mu_env{k}", 0.0, -2.0, 2.0)
        mean = zfit.ComposedParameter(f"mean_env{k}", lambda params, s=shift: params["mu"] + s, params={"mu": mu})
        losses.append(zfit.loss.UnbinnedNLL(zfit.pdf.Gauss(mean, 1.0, obs=obs), data))
        pois.append(mu)
    sigma = 1 / np.sqrt(2500)
    one = envelope_interval(losses[:1], pois[:1])
    assert one["error_low"] + one["error_high"] == pytest.approx(2 * sigma, rel=0.01)
    env = envelope_interval(losses, pois)
    assert env["error_low"] + env["error_high"] == pytest.approx(2 * sigma + 0.05, rel=0.01)
    assert env["values"][0] - env["values"][1] == pytest.approx(0.05, abs=1e-4)


def test_asimov_of_a_nearly_background_free_signal_matches_the_exact_one():
    """The Asimov q_mu,A of a narrow peak (p_S / p_B up to 80) on a flat background equals the
    exact one (quadrature, n_B profiled) to 0.05 sigma in sqrt(q) for every Asimov seed. With the
    background-only Asimov drawn from the background alone, its few events under the peak left
    the Asimov best fit up to a sigma away from n_S = 0 (sqrt(q_mu,A) off by up to 0.5 here)."""
    from hepstats.hypotests.parameters import POI, POIarray
    from scipy.optimize import minimize_scalar

    from zfit_gbi.inference import UnbinnedAsimovCalculator, _minimizer

    loss, ns, _ = _peak_model("asimov_peak", n_bkg=2000, seed=4)
    mus = np.array([10.0, 20.0])
    x = np.linspace(0.0, 1.0, 400_001)
    g = np.exp(-0.5 * ((x - 0.5) / 0.005) ** 2) / (0.005 * np.sqrt(2 * np.pi))

    def profiled_nll(mu: float) -> float:  # Asimov data: 2000 flat events (the fit at n_S = 0)
        def nll(b):
            return mu + b - 2000.0 * np.trapezoid(np.log(mu * g + b), x)

        return minimize_scalar(nll, bounds=(1500.0, 2500.0), method="bounded", options={"xatol": 1e-9}).fun

    exact = np.sqrt([2 * (profiled_nll(mu) - profiled_nll(0.0)) for mu in mus])
    for seed in range(4):
        calc = UnbinnedAsimovCalculator(loss, _minimizer(poi=ns), n_asimov=20_000, seed=seed)
        q = calc.qalt(POIarray(ns, mus), POI(ns, 0.0), onesided=True, onesideddiscovery=False, qtilde=True)
        np.testing.assert_allclose(np.sqrt(q), exact, atol=0.05)


WINDOW, SIGNAL_REGION = (2.9, 4.1), (3.3, 3.7)


class _EdgeSplitEnsemble(FlowEnsemble):
    """Two copies of one flow with log-densities split by +-y, y = g(m) (x_0 - 1/2): member
    densities p (1 +- tanh y), so the ensemble (mean probability, and what it samples) is the
    flow itself. g = 0.5 in the signal region and 60 above m = 4: the members disagree by up to
    e^30 at the edge of the fit window, as tiny sideband-trained ensembles do there."""

    def member_log_probs(self, x, context=None, **kw):
        lp = self.members[0].log_prob(x, context, **kw)
        m = np.asarray(context, dtype=np.float64).reshape(-1)
        y = np.where(m > 4.0, 60.0, 0.5) * (np.asarray(x)[:, 0] - 0.5)
        split = np.logaddexp(y, -y)  # log(1 +- tanh y) = log 2 +- y - log(e^y + e^-y)
        return np.stack([lp + np.log(2.0) + y - split, lp + np.log(2.0) - y - split])


@pytest.fixture(scope="module")
def tiny_cond_flow() -> Flow:
    """p(x0, x1 | m): one 8-unit MAF block, two epochs (seconds)."""
    rng = np.random.default_rng(7)
    x, m = rng.beta(2.0, 2.0, (3000, 2)), rng.uniform(*WINDOW, 3000)
    f = Flow(["x0", "x1"], {"x0": (0.0, 1.0), "x1": (0.0, 1.0)}, ("m",), FlowConfig(transform="affine", n_layers=1, hidden_units=(8,)))
    f.fit(x, m, train=TrainConfig(epochs=2, batch_size=512, progress=False, seed=1))
    return f


def _edge_model(tag: str, flow: Flow, *, nuisance: bool):
    """The pipeline's kind of model on (m, x0, x1): background exp(lambda m) p_B(x | m), signal
    Gauss(3.5, 0.04) p(x | m), 3000 background-only events. With ``nuisance`` p_B is the split
    ensemble with its eigen-variation built from the signal-region masses (as ``gbi run`` does),
    else the flow itself (the same nominal density). Returns the loss, the POI, the variation
    and the background PDF."""
    from zfit_gbi.nuisances import EigenVariation
    from zfit_gbi.pdfs import JointFlowPDF

    m_space = zfit.Space("m", limits=WINDOW)
    lam = zfit.Parameter(f"lam_{tag}", -1.0, -5.0, 5.0)
    nb = zfit.Parameter(f"nb_{tag}", 3000.0, 0.0, 10000.0)
    ns = zfit.Parameter(f"ns_{tag}", 0.0, -100.0, 1000.0)
    events, _ = JointFlowPDF(zfit.pdf.Exponential(lam, obs=m_space), flow).weighted_sample(3000, seed=5)
    constraints, variation, gen = [], None, flow
    if nuisance:
        m = events[:, 0]
        gen = _EdgeSplitEnsemble([flow, flow])
        sr = (m >= SIGNAL_REGION[0]) & (m < SIGNAL_REGION[1])
        variation = EigenVariation.from_ensemble(gen, m[sr], n_components=1, n_mc=5000, prefix=f"eig_{tag}")
        constraints.append(variation.constraint)
    bkg = JointFlowPDF(zfit.pdf.Exponential(lam, obs=m_space), gen, variation=variation, extended=nb)
    sig = JointFlowPDF(zfit.pdf.Gauss(3.5, 0.04, obs=m_space), flow, bkg.space, extended=ns)
    data = zfit.Data.from_numpy(obs=bkg.space, array=events)
    return zfit.loss.ExtendedUnbinnedNLL(zfit.pdf.SumPDF([sig, bkg]), data, constraints=constraints), ns, variation, bkg


def test_limit_with_a_generator_nuisance_far_outside_its_normalization(tiny_cond_flow):
    """Regression (``gbi run`` with tiny eigen-varied flows gave CLs = 1 at every tested POI and
    NaN limits). The eigen-variation is normalized on signal-region masses; it was also applied
    at the fit window's edge, where the ensemble members disagree by e^30: there the background
    density integrated to far more than 1, the fit pinned theta on a few edge events, and the
    Asimov sample's weight sat on a handful of events, so the Asimov best fit lay far from
    n_S = 0 (q_mu,A = 0 everywhere; here: observed NaN, expected median 2-3 events instead of ~40).
    The variation now acts where it was normalized: the density integrates to 1 at any theta
    and the limits are those of the same model without the nuisance (which hardly varies the
    signal region)."""
    loss, ns, variation, bkg = _edge_model("edge_var", tiny_cond_flow, nuisance=True)
    loss0, ns0, _, _ = _edge_model("edge_nom", tiny_cond_flow, nuisance=False)
    scan = np.linspace(0.0, 120.0, 9)
    lim = upper_limit(loss, ns, scan=scan, n_asimov=5000, refine=False)
    ref = upper_limit(loss0, ns0, scan=scan, n_asimov=5000, refine=False)
    assert np.isfinite(lim.observed)
    assert np.all(np.isfinite(lim.expected))
    assert lim.expected[0] < lim.expected[2] < lim.expected[4]
    assert lim.observed == pytest.approx(ref.observed, rel=0.05)
    for a, b in zip(lim.expected, ref.expected, strict=True):
        assert a == pytest.approx(b, rel=0.05)
    assert lim.problems == ()
    # one prior sigma away from the nominal the varied background is still normalized: the
    # nominal's events over the whole window, reweighted by varied / nominal, average to 1
    variation.params[0].set_value(1.0)
    _, ratio = bkg.weighted_sample(20_000, seed=3)
    assert ratio.mean() == pytest.approx(1.0, abs=0.05)


def test_unnormalized_variation_gives_nan_limits_and_says_why(tiny_cond_flow):
    """Forced to act everywhere (``mass_range=None``), far outside where it was normalized, the
    variation makes a density that integrates to ~1e42 at the fitted theta (at its -5 limit);
    the limit is NaN with the reasons in ``problems`` (and the log), not numbers from it (this
    model's expected limit came out at 2.8 events, the nuisance-free one's at ~40)."""
    loss, ns, variation, _ = _edge_model("edge_everywhere", tiny_cond_flow, nuisance=True)
    variation.mass_range = None
    lim = upper_limit(loss, ns, scan=np.linspace(0.0, 120.0, 5), n_asimov=5000, refine=False)
    assert np.isnan(lim.observed)
    assert np.all(np.isnan(lim.expected))
    assert any("not usable" in p and "averages" in p for p in lim.problems)
    assert any("best fit to the data is not valid" in p for p in lim.problems)


def test_spurious_signal_member_fits_start_where_asked():
    """A likelihood with two minima in a shared shape parameter t (PAWS's signal parameters
    can have several): started at the local one (t = +1) a member's fit stays there (POI -1);
    with ``start`` (the pipeline's grid over t's range) each member's fit finds the global
    minimum (t = -1, POI +1), so the spurious-signal width compares like with like."""
    from zfit_gbi.inference import spurious_signal
    from zfit_gbi.pipeline import _signal_parameter_profiles

    obs = zfit.Space("v", limits=(-10.0, 10.0))
    t = zfit.Parameter("t_two_minima", 1.0, -1.5, 1.5)
    losses, pois = [], []
    for k in range(2):  # two "members": the same model on two data sets drawn like the truth
        data = zfit.Data.from_numpy(obs=obs, array=np.random.default_rng(40 + k).normal(0.0, 0.9, 4000))
        mu = zfit.Parameter(f"mu_two_minima{k}", 0.0, -3.0, 3.0)
        mean = zfit.ComposedParameter(f"mean_two_minima{k}", lambda params: params["mu"] + params["t"], params={"mu": mu, "t": t})
        sigma = zfit.ComposedParameter(f"sigma_two_minima{k}", lambda params: 1.0 + 0.3 * (params["t"] ** 2 - 1.0) ** 2 + 0.1 * params["t"], params={"t": t})
        losses.append(zfit.loss.UnbinnedNLL(zfit.pdf.Gauss(mean, sigma, obs=obs), data))
        pois.append(mu)
    stuck = fit(losses[0], pois[0], minos=False)
    assert stuck.values[t.name] == pytest.approx(1.0, abs=0.1)  # the local minimum: what a start at +1 gives
    assert stuck.poi_value == pytest.approx(-1.0, abs=0.1)
    calls = []

    def start(loss) -> None:
        calls.append(loss)
        t.set_value(1.0)  # as the previous fit left it
        _signal_parameter_profiles([t], loss, 7)

    ss = spurious_signal(losses, pois, start=start)
    assert calls == losses
    assert list(ss.yields) == pytest.approx([1.0, 1.0], abs=0.1)
    assert ss.width < 0.1


def test_look_elsewhere_trials_factor():
    one = look_elsewhere([3.5], [0.01], 0.4)
    assert one["trials_factor"] == 1
    assert one["global_p0"] == pytest.approx(0.01)
    g = look_elsewhere([0.0, 1.0, 2.0, 3.0], [0.3, 0.01, None, float("nan")], 1.0)  # failed windows left out
    assert g["mass"] == 1.0
    assert g["trials_factor"] == 2
    assert g["global_p0"] == pytest.approx(1 - 0.99**2)
    fine = look_elsewhere(np.linspace(0, 3, 13), np.full(13, 0.2), 1.0)  # a finer scan adds no trials
    assert fine["trials_factor"] == pytest.approx(4.0)
    assert fine["global_significance"] < fine["local_significance"]
    assert look_elsewhere([1.0, 2.0], [0.9, 0.7], 0.5)["global_significance"] == 0.0  # a deficit: Z = 0
    with pytest.raises(ValueError, match="one value each per mass"):
        look_elsewhere([1.0, 2.0], [0.1], 1.0)
    with pytest.raises(ValueError, match="window_width must be positive"):
        look_elsewhere([1.0], [0.1], 0.0)
    with pytest.raises(ValueError, match="no mass has a p0"):
        look_elsewhere([1.0], [None], 1.0)


def test_look_elsewhere_is_calibrated_for_independent_windows():
    """Background-only scans of 6 disjoint windows (uniform local p0): the global p-value is
    uniform, so it falls below 0.05 in 5 % of the scans, within 3 binomial errors of 4000."""
    rng = np.random.default_rng(5)
    n = 4000
    p_glob = np.array([look_elsewhere(np.arange(6.0), rng.random(6), 1.0)["global_p0"] for _ in range(n)])
    for alpha in (0.05, 0.32):
        assert abs(np.mean(p_glob < alpha) - alpha) < 3 * np.sqrt(alpha * (1 - alpha) / n)


def test_look_elsewhere_upcrossings_mechanics():
    m = np.arange(7.0)
    z = np.array([0.5, 1.5, 0.2, 3.0, 1.2, 0.1, 2.0])  # rises through Z = 1 three times
    g = look_elsewhere_upcrossings(m[::-1], norm.sf(z)[::-1], z0=1.0)  # any order of masses
    assert g["upcrossings"] == 3
    assert g["mass"] == 3.0
    assert g["local_significance"] == pytest.approx(3.0)
    assert g["global_p0"] == pytest.approx(norm.sf(3.0) + 3 * np.exp(-(9 - 1) / 2))
    assert g["trials_factor"] == pytest.approx(g["global_p0"] / norm.sf(3.0))
    flat = look_elsewhere_upcrossings(m, norm.sf(np.full(7, 0.5)), z0=1.0)  # never above z0: nothing added
    assert flat["global_p0"] == pytest.approx(norm.sf(0.5))
    with pytest.raises(ValueError, match="z0 must be"):
        look_elsewhere_upcrossings(m, norm.sf(z), z0=-1.0)


def test_look_elsewhere_upcrossings_is_calibrated_on_smooth_null_scans():
    """1000 background-only scans: a smooth Gaussian local Z(m) (correlation length 5 points,
    200 points), N(1) counted on each scan itself. The global p-value falls below 0.05 in at most
    5 % of the scans (+ 3 binomial errors; Gross-Vitells is an upper bound) and not absurdly less
    (above 2.5 %), while the local p0 alone would claim 0.05 in far more of them."""
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(1)
    n, alpha = 1000, 0.05
    z = np.array([gaussian_filter1d(rng.normal(size=260), 5.0)[30:-30] for _ in range(n)])
    z /= z.std()
    p_glob = np.array([look_elsewhere_upcrossings(np.arange(200.0), norm.sf(zi))["global_p0"] for zi in z])
    frac = np.mean(p_glob < alpha)
    assert 0.5 * alpha < frac < alpha + 3 * np.sqrt(alpha * (1 - alpha) / n)
    assert np.mean(norm.sf(z.max(axis=1)) < alpha) > 4 * alpha

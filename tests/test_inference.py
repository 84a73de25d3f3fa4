"""Inference: fits, discovery and CLs limits through hepstats, with an unbinned Asimov dataset."""

from __future__ import annotations

import numpy as np
import pytest
import zfit

from zfit_gbi.generators import Flow, FlowConfig
from zfit_gbi.inference import FitError, discovery, fit, profile_scan, upper_limit
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

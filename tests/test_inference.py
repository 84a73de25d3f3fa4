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

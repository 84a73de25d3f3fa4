"""1-D mass shapes: normalization, closure fits, fits to the benchmark spectrum, input checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zfit
from scipy import stats

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.shapes import (
    BACKGROUND_SHAPES,
    SHAPES,
    SIGNAL_SHAPES,
    DijetPDF,
    ExpPolyPDF,
    MassFit,
    fit_mass_shape,
    mass_shape,
)

LOW, HIGH = 2.9, 4.1  # TeV, the benchmark's fit window
GRID = np.linspace(LOW, HIGH, 24001)

# true parameters of the closure tests (by role), away from every limit
TRUTH = {
    "dijet": {"p1": 10.0, "p2": 4.0, "p3": 0.5},
    "exppoly2": {"c1": 3.0, "c2": -0.8},
    "exppoly3": {"c1": 3.0, "c2": -1.0, "c3": 0.5},
    "bernstein3": {"b1": 0.5, "b2": 0.3, "b3": 0.1},
    "bernstein4": {"b1": 0.6, "b2": 0.3, "b3": 0.2, "b4": 0.1},
}


@pytest.fixture(scope="module")
def obs() -> zfit.Space:
    return zfit.Space("mjj", limits=(LOW, HIGH))


def density(pdf) -> np.ndarray:
    """The normalized pdf on GRID."""
    return pdf.pdf(GRID).numpy()


def sample(pdf, n: int, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF sample of ``pdf`` on GRID (exact to the grid's resolution)."""
    y = density(pdf)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(GRID))])
    return np.interp(rng.random(n), cdf / cdf[-1], GRID)


def nll_numpy(pdf, m: np.ndarray) -> float:
    return float(-np.sum(np.log(pdf.pdf(m).numpy())))


# ---- construction, normalization, integrals -----------------------------------------------
def test_kind_constants():
    assert set(BACKGROUND_SHAPES) == {"dijet", "exppoly2", "exppoly3", "bernstein3", "bernstein4"}
    assert set(SIGNAL_SHAPES) == {"gauss", "dscb"}
    assert SHAPES == BACKGROUND_SHAPES + SIGNAL_SHAPES


@pytest.mark.parametrize("kind", SHAPES)
def test_normalized_on_range(kind, obs):
    pdf, params = mass_shape(kind, obs, prefix=f"norm_{kind}")
    assert all(p.name.startswith(f"norm_{kind}_") for p in params.values())
    y = density(pdf)
    assert np.all(np.isfinite(y))
    assert np.all(y >= 0)
    assert abs(np.trapezoid(y, GRID) - 1) < 1e-4
    # a sub-range (a sideband): zfit's integral agrees with the grid
    sel = GRID <= 3.3
    z_int = float(pdf.integrate((LOW, 3.3)).numpy()[0])
    assert z_int == pytest.approx(np.trapezoid(y[sel], GRID[sel]), abs=1e-6)
    assert 0 < z_int < 1


def test_signal_mean_defaults_to_centre(obs):
    _, params = mass_shape("dscb", obs, prefix="centre")
    assert float(params["mu"].value()) == pytest.approx(0.5 * (LOW + HIGH))
    _, params = mass_shape("gauss", obs, prefix="centre_init", init={"mu": 3.4, "sigma": 0.05})
    assert float(params["mu"].value()) == 3.4
    assert float(params["sigma"].value()) == 0.05


def test_quadrature_normalization_is_used_not_a_numeric_fallback(obs, monkeypatch):
    """Dijet and exp-poly normalize with their registered quadrature (exact, any parameters),
    never through zfit's Simpson or Monte Carlo integration."""
    from zfit.core import integration

    def boom(*args, **kwargs):
        raise AssertionError("zfit numeric integration was called")

    monkeypatch.setattr(integration, "simpson_integrate", boom)
    monkeypatch.setattr(integration, "mc_integrate", boom)
    p = {k: zfit.Parameter(f"q_{k}", v) for k, v in {"p1": 30.0, "p2": -6.0, "p3": -2.0}.items()}
    shapes = [
        DijetPDF(obs, p["p1"], p["p2"], p["p3"], sqrt_s=13.0),
        ExpPolyPDF(obs, [zfit.Parameter("q_c1", 12.0), zfit.Parameter("q_c2", -4.0), 1.5]),
    ]
    for pdf in shapes:
        y = density(pdf)
        assert abs(np.trapezoid(y, GRID) - 1) < 1e-6
        sel = (GRID >= 3.3) & (GRID <= 3.7)
        assert float(pdf.integrate((3.3, 3.7)).numpy()[0]) == pytest.approx(np.trapezoid(y[sel], GRID[sel]), rel=1e-7)
        with pytest.raises(AssertionError, match="numeric integration"):  # control: the patch bites
            pdf.numeric_integrate(obs)


def test_dijet_matches_formula(obs):
    pdf = DijetPDF(obs, 7.0, 5.0, 0.3, sqrt_s=13.0)
    z = GRID / 13.0
    f = (1 - z) ** 7.0 * z ** -(5.0 + 0.3 * np.log(z))
    np.testing.assert_allclose(density(pdf), f / np.trapezoid(f, GRID), rtol=1e-7)


def test_exppoly_matches_formula(obs):
    pdf = ExpPolyPDF(obs, [2.0, -0.5, 0.25])
    t = (GRID - LOW) / (HIGH - LOW)
    f = np.exp(-(2.0 * t - 0.5 * t**2 + 0.25 * t**3))
    np.testing.assert_allclose(density(pdf), f / np.trapezoid(f, GRID), rtol=1e-7)


def test_zfit_sampler_follows_the_dijet_density(obs):
    pdf = DijetPDF(obs, 10.0, 4.0, 0.5)
    zfit.settings.set_seed(7)
    s = pdf.sample(4000).value().numpy()[:, 0]
    assert s.min() >= LOW
    assert s.max() <= HIGH
    y = density(pdf)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(GRID))])
    assert stats.kstest(s, lambda v: np.interp(v, GRID, cdf)).pvalue > 1e-3


def test_invalid_construction(obs):
    with pytest.raises(ValueError, match="sqrt_s"):
        DijetPDF(zfit.Space("mjj", limits=(2.0, 14.0)), 1.0, 1.0, 0.0, sqrt_s=13.0)
    with pytest.raises(ValueError, match="at least one"):
        ExpPolyPDF(obs, [])
    with pytest.raises(ValueError, match="1-D"):
        mass_shape("gauss", obs * zfit.Space("x", limits=(0, 1)), prefix="twod")


def test_unknown_kind_names_the_allowed_ones(obs):
    with pytest.raises(ValueError, match="unknown mass shape 'landau'") as err:
        mass_shape("landau", obs, prefix="bad")
    assert all(k in str(err.value) for k in SHAPES)


def test_bad_init(obs):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['tau'\]"):
        mass_shape("exppoly2", obs, prefix="badinit", init={"tau": 1.0})
    with pytest.raises(ValueError, match="outside the allowed range"):
        mass_shape("gauss", obs, prefix="badinit2", init={"mu": 5.0})


# ---- fits ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", BACKGROUND_SHAPES)
def test_closure_fit(kind, obs):
    """Sample a shape with known parameters; a fit from the default start recovers them."""
    rng = np.random.default_rng(100 + BACKGROUND_SHAPES.index(kind))
    truth_pdf, _ = mass_shape(kind, obs, prefix=f"truth_{kind}", init=TRUTH[kind])
    m = sample(truth_pdf, 20000, rng)
    pdf, params = mass_shape(kind, obs, prefix=f"clos_{kind}")
    fit = fit_mass_shape(pdf, m)
    assert fit.valid
    truth = {params[k].name: v for k, v in TRUTH[kind].items()}
    # fit.nll is the full -sum(log p) at the minimum, below its value at the truth
    assert fit.nll == pytest.approx(nll_numpy(pdf, m), abs=1e-6)
    delta = nll_numpy(truth_pdf, m) - fit.nll
    assert 0 <= delta < 0.5 * stats.chi2.ppf(0.9999, len(truth))
    if kind != "dijet":
        pulls = fit.pull(truth)
        assert all(abs(p) < 4 for p in pulls.values()), pulls
        return
    # dijet: on a narrow window (z = 0.22-0.32) p1, p2, p3 are ~0.999 correlated along a long,
    # flat valley, so Hesse errors understate their spread (25 toys: Hesse-pull std ~3-4, some
    # pulls > 7 at a delta NLL of ~1). Pulls from the profile likelihood instead (as MINOS): fix
    # one parameter at its true value, refit the others.
    for role, value in TRUTH["dijet"].items():
        for p in params.values():
            p.set_value(fit.values[p.name])
        params[role].set_value(value)
        params[role].floating = False
        try:
            profiled = fit_mass_shape(pdf, m)
        finally:
            params[role].floating = True
        pull = np.sqrt(2 * max(profiled.nll - fit.nll, 0.0))
        assert pull < 4, (role, pull, fit)


def test_dijet_fit_in_a_narrow_box_is_rescued(obs):
    """With tighter limits Minuit's first pass on this sample ends invalid along the dijet's flat
    valley (zfit 0.28, iminuit 2.33); the second pass (strategy 2, exact gradient) is valid."""
    rng = np.random.default_rng(1006)
    m = sample(mass_shape("dijet", obs, prefix="box_truth", init=TRUTH["dijet"])[0], 20000, rng)
    p1 = zfit.Parameter("box_p1", 5.0, -100.0, 300.0)
    p2 = zfit.Parameter("box_p2", 5.0, -100.0, 100.0)
    p3 = zfit.Parameter("box_p3", 0.0, -50.0, 50.0)
    pdf = DijetPDF(obs, p1, p2, p3)
    fit = fit_mass_shape(pdf, m)
    assert fit.valid
    truth_pdf = DijetPDF(obs, *TRUTH["dijet"].values())
    assert 0 <= nll_numpy(truth_pdf, m) - fit.nll < 0.5 * stats.chi2.ppf(0.9999, 3)


@pytest.mark.parametrize("kind", ["dijet", "exppoly2"])
def test_power_law_spectrum_is_fit_well(kind, obs):
    """The benchmark's m^-8 background on [2.9, 4.1] TeV: the fitted density agrees with the
    true one to a few per cent everywhere in the window."""
    bench = ResonantBenchmark()
    m = bench.sample_background_mass(200_000, np.random.default_rng(2))
    pdf, _ = mass_shape(kind, obs, prefix=f"plaw_{kind}")
    fit_mass_shape(pdf, m)
    g = np.linspace(LOW, HIGH, 121)
    ratio = pdf.pdf(g).numpy() / np.exp(bench.log_prob_background_mass(g))
    assert np.max(np.abs(ratio - 1)) < 0.03, ratio


@pytest.mark.parametrize("kind", SIGNAL_SHAPES)
def test_signal_fit_recovers_gaussian_mean_and_width(kind, obs):
    mu, sigma = 3.5, 0.035
    m = np.random.default_rng(5).normal(mu, sigma, 10000)
    pdf, params = mass_shape(kind, obs, prefix=f"gfit_{kind}")
    fit = fit_mass_shape(pdf, m)
    pulls = fit.pull({params["mu"].name: mu, params["sigma"].name: sigma})
    assert all(abs(p) < 4 for p in pulls.values()), fit
    assert fit.errors[params["sigma"].name] < 0.02 * sigma  # ~ sigma / sqrt(2 n)


def test_dscb_closure_with_tails(obs):
    truth = {"mu": 3.5, "sigma": 0.035, "alphal": 1.5, "nl": 5.0, "alphar": 2.0, "nr": 8.0}
    truth_pdf, _ = mass_shape("dscb", obs, prefix="dscb_truth", init=truth)
    m = sample(truth_pdf, 20000, np.random.default_rng(3))
    pdf, params = mass_shape("dscb", obs, prefix="dscb_clos")
    fit = fit_mass_shape(pdf, m)
    pulls = fit.pull({params[k].name: v for k, v in truth.items()})
    assert all(abs(p) < 4 for p in pulls.values()), fit


def test_weighted_fit(obs):
    """Constant weights w: same minimum; the asymptotically corrected errors equal the
    unweighted ones (a naive weighted Hesse would shrink them by sqrt(w))."""
    m = sample(mass_shape("exppoly2", obs, prefix="wtruth", init=TRUTH["exppoly2"])[0], 5000, np.random.default_rng(9))
    pdf, params = mass_shape("exppoly2", obs, prefix="wfit")
    plain = fit_mass_shape(pdf, m)
    for p in params.values():
        p.set_value(1.0)
    weighted = fit_mass_shape(pdf, m, np.full(m.size, 4.0))
    for name in plain.values:
        assert weighted.values[name] == pytest.approx(plain.values[name], abs=0.05 * plain.errors[name])
        assert weighted.errors[name] == pytest.approx(plain.errors[name], rel=0.05)
    assert weighted.nll == pytest.approx(4 * plain.nll, rel=1e-6)
    with pytest.raises(ValueError, match="shape of the masses"):
        fit_mass_shape(pdf, m, np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        fit_mass_shape(pdf, m, np.full(m.size, np.nan))


def test_floating_false_freezes_the_fitted_shape(obs):
    m = np.random.default_rng(4).normal(3.5, 0.04, 3000)
    pdf, params = mass_shape("gauss", obs, prefix="freeze")
    fit = fit_mass_shape(pdf, m)
    assert all(p.floating for p in params.values())
    fit2 = fit_mass_shape(pdf, m, floating=False)
    assert not any(p.floating for p in params.values())
    assert fit2.values == pytest.approx(fit.values, abs=1e-4)
    assert float(params["mu"].value()) == pytest.approx(fit2.values["freeze_mu"])
    with pytest.raises(ValueError, match="no floating parameter"):
        fit_mass_shape(pdf, m)


def test_invalid_fit_raises(obs):
    """A Gaussian fitted to a flat spectrum runs its width into the upper limit: no silent result."""
    m = np.random.default_rng(6).uniform(LOW, HIGH, 5000)
    pdf, _ = mass_shape("gauss", obs, prefix="invalid")
    with pytest.raises(RuntimeError, match=r"invalid fit of invalid_gauss.*at limit"):
        fit_mass_shape(pdf, m)


def test_bad_masses(obs):
    pdf, _ = mass_shape("exppoly2", obs, prefix="badm")
    m = np.random.default_rng(8).uniform(LOW, HIGH, 100)
    m_nan = m.copy()
    m_nan[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_mass_shape(pdf, m_nan)
    with pytest.raises(ValueError, match=r"outside the shape's range \[2.9, 4.1\]"):
        fit_mass_shape(pdf, np.append(m, 4.5))
    with pytest.raises(ValueError, match="no masses"):
        fit_mass_shape(pdf, np.array([]))


def test_massfit_is_frozen_and_printable():
    fit = MassFit(values={"a_mu": 3.5, "a_n": 5.0}, errors={"a_mu": 0.01}, valid=True, nll=-12.5)
    text = repr(fit)
    assert "a_mu=3.5 ± 0.01" in text
    assert "a_n=5 (fixed)" in text
    assert "nll=-12.5" in text
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.valid = False  # type: ignore[misc]
    assert fit.pull({"a_mu": 3.48}) == pytest.approx({"a_mu": 2.0})

"""The binned route: templates from generators, the HistFactory spec, pyhf inference."""

from __future__ import annotations

import copy

import numpy as np
import pyhf
import pytest

from pyhf_gbi import infer as B
from pyhf_gbi.templates import BinnedTemplates, Binning, SidebandFit, make_templates
from pyhf_gbi.workspace import (
    build_spec,
    is_portable,
    portable,
    read_spec,
    validate_spec,
    write_spec,
)


def tiny_templates(variation: float = 0.1) -> BinnedTemplates:
    """Three bins by hand: background 100/60/20, signal 1/5/10 per POI unit, data 105/75/45."""
    bkg = np.array([100.0, 60.0, 20.0])
    up = bkg * np.array([1 + variation, 1.0, 1 - variation])
    up *= bkg.sum() / up.sum()
    down = bkg * np.array([1 - variation, 1.0, 1 + variation])
    down *= bkg.sum() / down.sum()
    return BinnedTemplates(
        binning=Binning(np.array([3.3, 3.4, 3.5, 3.6])), resonant="mjj", data=np.array([105.0, 75.0, 45.0]),
        signal=np.array([0.1, 0.5, 1.0]), signal_var=np.zeros(3), background=bkg, background_var=(0.01 * bkg) ** 2,
        sideband=SidebandFit(1000.0, float(bkg.sum()), 0.05, {}, {}), variations={"gen_eigen_0": (up, down)},
        signal_scale=1.0, n_generated=10**6)


def test_spec_is_valid_histfactory(tmp_path):
    t = tiny_templates()
    spec = build_spec(t)
    pyhf.schema.validate(spec, "workspace.json")
    assert is_portable(spec)
    ws = pyhf.Workspace(spec)
    model = ws.model()
    assert model.config.poi_name == "n_sig"
    assert set(model.config.parameters) == {"n_sig", "bkg_norm", "mc_stat", "gen_eigen_0"}
    np.testing.assert_allclose(model.expected_actualdata(model.config.suggested_init()), t.background + t.signal * model.config.suggested_init()[model.config.poi_index])
    custom = build_spec(t, variations="custom")
    assert not is_portable(custom)
    validate_spec(custom)
    assert is_portable(portable(custom))
    # written atomically and read back; a broken file or a bad spec is named
    path = write_spec(custom, tmp_path / "ws.json")
    assert read_spec(path) == custom
    bad = copy.deepcopy(spec)
    bad["channels"][0]["samples"][1]["modifiers"][0]["type"] = "normsyst"
    with pytest.raises(pyhf.exceptions.InvalidSpecification):
        validate_spec(bad)
    (tmp_path / "cut.json").write_text(path.read_text()[:200])
    with pytest.raises(ValueError, match=r"cut\.json: not a JSON workspace"):
        read_spec(tmp_path / "cut.json")
    hists = t.hists()
    assert hists["background"].values().tolist() == t.background.tolist()
    assert hists["background"].axes[0].name == "mjj"


def test_spurious_signal_sample():
    """width * theta more signal events (a zero sample with a linear histosys, as many POI
    units as the width is events / signal_scale): the fitted POI is unchanged and its error
    grows in quadrature; the variation is linear beyond +-1."""
    t = tiny_templates()
    plain = B.fit(build_spec(t))
    t.signal_scale, t.spurious_width, t.spurious_name = 2.0, 2.0 * 1.5 * plain.poi_error, "gen_spurious"
    spec = build_spec(t)
    pyhf.schema.validate(spec, "workspace.json")
    assert is_portable(spec)
    model = pyhf.Workspace(spec).model()
    pars = model.config.suggested_init()
    pars[model.config.par_slice("gen_spurious")] = [2.0]
    base = model.expected_actualdata(model.config.suggested_init())
    np.testing.assert_allclose(model.expected_actualdata(pars) - base, 2.0 * t.signal * 1.5 * plain.poi_error)
    f = B.fit(spec)
    assert f.poi_value == pytest.approx(plain.poi_value, abs=0.01 * plain.poi_error)
    assert f.poi_error == pytest.approx(np.hypot(plain.poi_error, 1.5 * plain.poi_error), rel=0.005)  # measured: 0.04 % off (Hesse numerics)


def test_limits_and_discovery_match_pyhf():
    """A hand-made model: our wrappers give what pyhf itself gives for the same spec."""
    spec = build_spec(tiny_templates())
    lim = B.upper_limit(spec)
    with B.numpy_backend():
        ws = pyhf.Workspace(spec)
        model, data = ws.model(), ws.data(ws.model())
        obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, model, scan=None, level=0.05, rtol=1e-5)
        p0 = float(pyhf.infer.hypotest(0.0, data, model, test_stat="q0"))
        cls_at = float(pyhf.infer.hypotest(lim.expected[2], data, model, test_stat="qtilde", return_expected=True)[1])
    assert lim.observed == pytest.approx(float(obs), rel=1e-3)
    assert list(lim.expected) == pytest.approx(sorted(float(e) for e in exp), rel=1e-3)
    assert cls_at == pytest.approx(0.05, abs=1e-3)
    d = B.discovery(spec)
    assert d.p0 == pytest.approx(p0, rel=1e-3)
    assert B.discovery(spec, fitted=B.fit(spec)).p0 == pytest.approx(p0, rel=1e-3)  # the fit's minimum reused as the free fit
    # the limit scan for the plot: monotone expected band around the median
    sc = lim.scan
    assert np.all(np.asarray(sc["cls_expected_m2"]) <= np.asarray(sc["cls_expected"]) + 1e-12)
    assert np.all(np.asarray(sc["cls_expected"]) <= np.asarray(sc["cls_expected_p2"]) + 1e-12)
    f = B.fit(spec)
    assert f.poi_value > 0
    assert f.poi_error_low == pytest.approx(f.poi_error, rel=0.2)
    assert f.poi_error_high == pytest.approx(f.poi_error, rel=0.2)


@pytest.mark.parametrize("case", ["gbi", "deficit"])
def test_scan_hypotest_is_pyhf_hypotest(case):
    """QtildeCLs (three fits once, two per POI value, warm starts) gives pyhf.infer.hypotest's
    observed and expected CLs at POI values below, at and above the fitted one, in any order;
    "deficit": fewer events than background, the fitted POI at its bound 0."""
    with B.numpy_backend():
        if case == "gbi":
            model, data = B.model_and_data(build_spec(tiny_templates()))
        else:
            model = pyhf.simplemodels.uncorrelated_background(signal=[5.0, 10.0, 3.0], bkg=[50.0, 60.0, 40.0], bkg_uncertainty=[5.0, 6.0, 4.0])
            data = np.array([44.0, 52.0, 37.0, *model.config.auxdata])
        bounds = B._bounds(model)
        scan = B.QtildeCLs(model, data, bounds)
        # a fit() with a negative POI (it allows them) says nothing about the POI >= 0 fit: not used
        unused = B.BinnedFit("mu", -1.0, 1.0, 1.0, 1.0, {}, {}, 0.0, tuple(np.full(model.config.npars, 0.5)))
        refit = B.QtildeCLs(model, data, bounds, fitted=unused)
        mus = [3.0, 0.5 * max(scan.poi_hat, 0.1), 1.0, 6.0, 2.0]
        for mu in mus:
            ref_obs, ref_exp = pyhf.infer.hypotest(mu, data, model, par_bounds=bounds, test_stat="qtilde", return_expected_set=True)
            for s in (scan, refit):
                obs, exp = s(mu)
                assert obs == pytest.approx(float(ref_obs), rel=1e-4, abs=1e-7), mu
                assert exp == pytest.approx([float(v) for v in ref_exp], rel=1e-4, abs=1e-7), mu


def test_scan_fit_with_invalid_quick_minimum_is_repeated(monkeypatch):
    """A Minuit strategy-0 fit whose minimum is invalid is repeated with the default strategy
    (not the whole scan with scipy): the same CLs as pyhf's hypotest."""
    spec = build_spec(tiny_templates())
    real, calls = pyhf.infer.mle.fixed_poi_fit, []

    def flaky(*args, **kwargs):
        calls.append(kwargs.get("strategy"))
        if kwargs.get("strategy") == 0:
            raise pyhf.exceptions.FailedMinimization(type("R", (), {"message": "invalid minimum", "success": False})())
        return real(*args, **kwargs)

    with B.numpy_backend():
        model, data = B.model_and_data(spec)
        bounds = B._bounds(model)
        ref_obs, ref_exp = pyhf.infer.hypotest(2.0, data, model, par_bounds=bounds, test_stat="qtilde", return_expected_set=True)
        monkeypatch.setattr(pyhf.infer.mle, "fixed_poi_fit", flaky)
        obs, exp = B.QtildeCLs(model, data, bounds)(2.0)
    assert calls[0] == 0  # tried quick first
    assert None in calls  # then repeated with the default strategy
    assert obs == pytest.approx(float(ref_obs), rel=1e-4)
    assert exp == pytest.approx([float(v) for v in ref_exp], rel=1e-4)


def test_custom_modifier_zero_variation_is_the_plain_workspace():
    t = tiny_templates(variation=0.0)
    plain, custom = build_spec(t), build_spec(t, variations="custom")
    fp, fc = B.fit(plain), B.fit(custom)
    assert fc.poi_value == pytest.approx(fp.poi_value, rel=1e-6)
    assert fc.twice_nll == pytest.approx(fp.twice_nll, abs=1e-8)
    assert B.upper_limit(custom).expected[2] == pytest.approx(B.upper_limit(plain).expected[2], rel=1e-4)


def test_benchmark_closure(bench, sideband_flow, cond_flow):
    """Background-only benchmark data: the sideband-trained generator's templates describe the
    signal region (signal yield consistent with 0, total within the normalization error);
    signal templates from the simulation carry the expected signal fraction in the SR."""
    import zfit

    from zfit_gbi.nuisances import UpDownVariation
    from zfit_gbi.shapes import mass_shape

    ev = bench.sample(20000, 0, seed=21)
    sim = bench.signal_simulation(4000, seed=22)
    w = bench.windows
    fit_ev = ev.select(w.in_fit(ev["mjj"]))
    pdf, _ = mass_shape("dijet", zfit.Space("mjj", limits=w.fit), prefix="closure_bkg")
    sr_m = fit_ev["mjj"][w.in_signal_region(fit_ev["mjj"])]
    updown = UpDownVariation.from_generators(sideband_flow, cond_flow, cond_flow, sr_m, n_mc=5000, prefix="closure_gen",
                                             mass_range=w.signal_region)
    t = make_templates(resonant="mjj", features=bench.features, windows=w, mass_pdf=pdf, background_generator=sideband_flow,
                       signal_generator=sideband_flow, data=fit_ev, sidebands=fit_ev.select(w.in_sidebands(fit_ev["mjj"])),
                       simulation=sim.select(w.in_fit(sim["mjj"])), variation=updown, mass_bins=5, n_generated=100_000, seed=3)
    up, down = t.variations["closure_gen_0"]
    # shape-only variations: the totals are the nominal's, the shape is not (another generator)
    assert up.sum() == pytest.approx(t.background.sum(), rel=1e-9)
    assert down.sum() == pytest.approx(t.background.sum(), rel=1e-9)
    assert np.max(np.abs(up / t.background - 1)) > 1e-3
    n_sr = float(t.data.sum())
    assert abs(t.background.sum() - n_sr) < 3 * np.sqrt(n_sr + (t.sideband.rel_error * n_sr) ** 2)
    f = B.fit(build_spec(t, variations="custom"))
    assert abs(f.poi_value) < 3 * f.poi_error
    frac = np.mean(w.in_signal_region(sim["mjj"][w.in_fit(sim["mjj"])]))
    assert t.signal.sum() == pytest.approx(frac, rel=1e-9)


def test_same_binned_model_in_zfit_and_pyhf():
    """The binned spec fitted by zfit + hepstats (global observables shifted to the conditional
    fit, as pyhf does) gives pyhf's limits; the custom modifier too."""
    from pyhf_gbi.zfit_binned import to_zfit
    from zfit_gbi.inference import upper_limit

    for i, kind in enumerate(("histosys", "custom")):
        spec = build_spec(tiny_templates(variation=0.2), variations=kind)
        ref = B.upper_limit(spec)
        zm = to_zfit(spec, prefix=f"same{i}_")
        lim = upper_limit(zm.loss, zm.poi)
        assert lim.observed == pytest.approx(ref.observed, rel=0.01)
        assert list(lim.expected) == pytest.approx(list(ref.expected), rel=0.01)


def test_binning_index_with_variation_split():
    """Flat index (i_mass * n_score + i_score) * n_split + i_split, each score bin with its own
    edges in each variation direction; the split needs the directions."""
    b = Binning(np.array([0.0, 1.0, 2.0]), np.array([0.0]), np.array([[[-1.0], [1.0]], [[0.0], [0.0]]]))
    assert (b.n_score, b.n_var, b.n_split, b.per_mass, b.n_bins) == (2, 2, 4, 8, 16)
    m = np.array([0.5, 0.5, 1.5, 1.5, 3.0])
    score = np.array([-1.0, 1.0, -1.0, 1.0, 0.0])
    u = np.array([[0.0, -1.0], [0.0, 1.0], [-2.0, 1.0], [2.0, -1.0], [0.0, 0.0]])
    # event 0: score bin 0 (edge -1: u0 = 0 above -> 1), u1 below 0 -> 0: split 1
    # event 1: score bin 1 (edge 1: u0 = 0 below -> 0), u1 above -> 1: split 2
    assert b.index(m, score, u).tolist() == [1, 4 + 2, 8 + 2, 12 + 1, -1]
    with pytest.raises(ValueError, match="directions"):
        b.index(m, score)
    h = b.to_hist(np.arange(16.0))
    assert h.values().shape == (2, 2, 4)
    assert h.values()[1, 0, 2] == 10.0


def test_variation_split_refines_the_score_bins(bench, sideband_flow, cond_flow, monkeypatch):
    """Split by the variation's direction, every template (data, signal, background, up/down)
    sums back to the unsplit one over the split bins; the generated background fills the
    split bins of a score bin equally (quantile edges); the up/down templates differ most
    between the split bins (the split follows the variation)."""
    import zfit

    from zfit_gbi.nuisances import UpDownVariation
    from zfit_gbi.shapes import mass_shape

    ev = bench.sample(8000, 100, seed=23)
    sim = bench.signal_simulation(4000, seed=24)
    w = bench.windows
    fit_ev = ev.select(w.in_fit(ev["mjj"]))
    pdf, _ = mass_shape("dijet", zfit.Space("mjj", limits=w.fit), prefix="split_bkg")
    sr_m = fit_ev["mjj"][w.in_signal_region(fit_ev["mjj"])]
    # up: another generator, down: the nominal itself, so the direction is u = log(p_up / p_nominal) / 2
    updown = UpDownVariation.from_generators(sideband_flow, cond_flow, sideband_flow, sr_m, n_mc=5000, prefix="split_gen",
                                             mass_range=w.signal_region)
    kw = {"resonant": "mjj", "features": bench.features, "windows": w, "mass_pdf": pdf, "background_generator": sideband_flow,
          "signal_generator": cond_flow, "data": fit_ev, "sidebands": fit_ev.select(w.in_sidebands(fit_ev["mjj"])),
          "simulation": sim.select(w.in_fit(sim["mjj"])), "variation": updown, "mass_bins": 2, "score_bins": 3, "n_generated": 12_000,
          "min_bkg_per_bin": 1, "seed": 3}
    plain = make_templates(**kw)
    sizes: list[int] = []
    log_prob = sideband_flow.log_prob
    monkeypatch.setattr(sideband_flow, "log_prob", lambda x, *a, **k: sizes.append(len(x)) or log_prob(x, *a, **k))
    split = make_templates(**kw, variation_bins=3)
    # the variation's nominal is the background generator: the score reuses the variation's
    # column 0, so the generated events pass through it twice (nominal, down), not three times
    assert sizes.count(12_000) == 2
    b = split.binning
    assert (b.n_split, b.n_bins) == (3, 3 * plain.binning.n_bins)
    assert np.array_equal(b.score_edges, plain.binning.score_edges)

    def merged(a: np.ndarray) -> np.ndarray:
        return a.reshape(-1, b.n_split).sum(axis=1)

    for name in ("data", "signal", "background"):
        assert merged(getattr(split, name)) == pytest.approx(getattr(plain, name), rel=1e-9, abs=1e-12), name
    (up, down), (up0, down0) = split.variations["split_gen_0"], plain.variations["split_gen_0"]
    assert merged(up) == pytest.approx(up0, rel=1e-9)
    assert merged(down) == pytest.approx(down0, rel=1e-9)
    # quantile edges: a third of each score bin's generated events in each split bin
    per_score = split.background.reshape(b.n_mass, b.n_score, b.n_split).sum(axis=0)
    assert per_score / per_score.sum(axis=1, keepdims=True) == pytest.approx(np.full_like(per_score, 1 / 3), abs=0.01)
    # the variation moves events from the low-u to the high-u split bin of every score bin
    ratio = (up / split.background).reshape(b.n_mass, b.n_score, b.n_split)
    assert np.all(ratio[..., 2] > ratio[..., 0])
    assert "x 3 variation bins" in repr(split)

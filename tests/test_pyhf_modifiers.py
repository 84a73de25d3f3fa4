"""Tests of the custom pyhf modifier ``gbi_expshape`` (pyhf_gbi.modifiers)."""

from __future__ import annotations

import copy

import numpy as np
import pyhf
import pytest

from pyhf_gbi.modifiers import (
    MODIFIER_TYPE,
    expshape_factor,
    make_model,
    modifier_set,
    to_histosys,
    uses_expshape,
)

NOM = [120.0, 90.0, 60.0, 35.0, 20.0]
HI = [100.0, 85.0, 65.0, 45.0, 30.0]  # total 325 == sum(NOM)
LO = [140.0, 95.0, 55.0, 25.0, 10.0]  # total 325 == sum(NOM)
SIG = [2.0, 6.0, 12.0, 6.0, 2.0]


@pytest.fixture(autouse=True)
def _numpy_backend():
    """Run every test on the numpy backend and restore the previous backend afterwards."""
    tensorlib, optimizer = pyhf.get_backend()
    pyhf.set_backend("numpy")
    yield
    pyhf.set_backend(tensorlib, optimizer)


def expshape(name: str, hi, lo) -> dict:
    return {"name": name, "type": MODIFIER_TYPE, "data": {"hi_data": list(hi), "lo_data": list(lo)}}


def one_channel_spec(bkg_mods: list[dict], sig=SIG, nom=NOM) -> dict:
    return {
        "channels": [
            {
                "name": "sr",
                "samples": [
                    {
                        "name": "signal",
                        "data": list(sig),
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {"name": "background", "data": list(nom), "modifiers": bkg_mods},
                ],
            }
        ]
    }


def pars_for(model, **values) -> np.ndarray:
    pars = np.asarray(model.config.suggested_init(), dtype=float)
    for name, value in values.items():
        pars[model.config.par_slice(name)] = value
    return pars


def by_sample(model, pars) -> dict[str, np.ndarray]:
    """Expected main-model yields per sample, ``{sample: (n_global_bins,)}``."""
    rates = np.asarray(model.main_model.expected_data(pars, return_by_sample=True))
    return dict(zip(model.config.samples, rates, strict=True))


# 1. zero variation == zero-variation histosys (same parameter and constraint) ---------------


def test_zero_variation_matches_histosys():
    mods = [
        expshape("gen_eigen_0", NOM, NOM),
        {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
    ]
    custom = make_model(one_channel_spec(mods))
    ref_mods = copy.deepcopy(mods)
    ref_mods[0]["type"] = "histosys"
    plain = pyhf.Model(one_channel_spec(ref_mods))  # validated by pyhf

    assert custom.config.par_order == plain.config.par_order
    assert custom.config.auxdata == plain.config.auxdata
    assert custom.config.suggested_init() == plain.config.suggested_init()
    assert custom.config.suggested_bounds() == plain.config.suggested_bounds()
    assert custom.config.param_set("gen_eigen_0").pdf_type == "normal"
    assert custom.config.param_set("gen_eigen_0").width() == [1.0]

    observed = [125.0, 100.0, 75.0, 40.0, 18.0]
    for point in [
        {},
        {"mu": 0.0, "gen_eigen_0": 1.3},
        {"mu": 2.5, "gen_eigen_0": -0.7, "bkg_norm": 0.4},
        {"mu": 1.0, "gen_eigen_0": 4.9, "bkg_norm": -2.0},
    ]:
        p_c, p_p = pars_for(custom, **point), pars_for(plain, **point)
        np.testing.assert_allclose(
            custom.expected_actualdata(p_c), plain.expected_actualdata(p_p), rtol=1e-12
        )
        np.testing.assert_allclose(custom.expected_data(p_c), plain.expected_data(p_p), rtol=1e-12)
        for aux in ({"gen_eigen_0": 0.0, "bkg_norm": 0.0}, {"gen_eigen_0": 0.3, "bkg_norm": -0.8}):
            d_c = observed + [aux[name] for name in custom.config.auxdata_order]
            d_p = observed + [aux[name] for name in plain.config.auxdata_order]
            np.testing.assert_allclose(
                custom.logpdf(p_c, d_c), plain.logpdf(p_p, d_p), rtol=1e-12, atol=1e-12
            )


# 2. values at +-1, 0.5 and total conservation ----------------------------------------------


def test_values_at_plus_minus_one_and_reference():
    hi_scaled = [2.0 * h for h in HI]  # totals differ from the nominal
    lo_scaled = [0.5 * x for x in LO]
    model = make_model(one_channel_spec([expshape("a", hi_scaled, lo_scaled)]))
    nom = np.asarray(NOM)

    def bkg(alpha):
        return by_sample(model, pars_for(model, a=alpha))["background"]

    np.testing.assert_allclose(bkg(1.0), np.asarray(HI), rtol=1e-12)  # scaled to the nominal
    np.testing.assert_allclose(bkg(-1.0), np.asarray(LO), rtol=1e-12)
    np.testing.assert_allclose(bkg(0.0), nom, rtol=1e-14)
    np.testing.assert_allclose(
        bkg(0.5), nom * expshape_factor(nom, hi_scaled, lo_scaled, 0.5), rtol=1e-12
    )
    for alpha in (2.7, -3.0, 5.0, -0.2):
        np.testing.assert_allclose(bkg(alpha).sum(), nom.sum(), rtol=1e-12)
    # the signal sample is untouched
    np.testing.assert_allclose(by_sample(model, pars_for(model, a=2.7))["signal"], SIG)

    # hi/lo with the nominal total: exactly the templates
    exact = make_model(one_channel_spec([expshape("a", HI, LO)]))
    np.testing.assert_allclose(
        by_sample(exact, pars_for(exact, a=1.0))["background"], HI, rtol=1e-12
    )
    np.testing.assert_allclose(
        by_sample(exact, pars_for(exact, a=-1.0))["background"], LO, rtol=1e-12
    )


def test_reference_function():
    nom = np.asarray(NOM)
    f = expshape_factor(nom, HI, LO, [-3.0, -1.0, 0.0, 0.5, 1.0, 2.7])
    assert f.shape == (6, len(NOM))
    np.testing.assert_allclose((nom * f).sum(axis=-1), nom.sum(), rtol=1e-12)
    np.testing.assert_allclose(nom * f[1], LO, rtol=1e-12)
    np.testing.assert_allclose(f[2], 1.0, rtol=0, atol=0)
    np.testing.assert_allclose(nom * f[4], HI, rtol=1e-12)
    # exponential in alpha before the normalisation: f(2) = f(1)^2 up to a constant
    f2 = expshape_factor(nom, HI, LO, 2.0)
    ratio = f2 / (np.asarray(HI) / nom) ** 2
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)
    # empty / non-positive bins get f = 1 before the normalisation
    g = expshape_factor([10.0, 0.0, 5.0], [20.0, 3.0, -1.0], [5.0, 3.0, 0.0], 1.0)
    assert g[1] == g[2]
    np.testing.assert_allclose(g[0] / g[2], 2.0)
    # huge ratios are clipped at exp(20)
    h = expshape_factor([1.0, 1.0], [1e30, 1.0], [1.0, 1.0], 1.0)
    np.testing.assert_allclose(h[0] / h[1], np.exp(20.0), rtol=1e-12)


def test_normalisation_per_channel_and_missing_sample():
    spec = one_channel_spec([expshape("a", HI, LO)])
    spec["channels"].append(
        {
            "name": "cr",
            "samples": [
                {
                    "name": "background",
                    "data": [300.0, 200.0],
                    "modifiers": [expshape("a", [360.0, 100.0], [250.0, 260.0])],
                },
                {"name": "other", "data": [5.0, 5.0], "modifiers": []},
            ],
        }
    )
    model = make_model(spec)
    assert model.config.channels == ["cr", "sr"]  # global bins: cr first
    for alpha in (-1.7, -1.0, 0.3, 1.0, 3.1):
        rates = by_sample(model, pars_for(model, a=alpha))
        cr, sr = rates["background"][:2], rates["background"][2:]
        np.testing.assert_allclose(sr, NOM * expshape_factor(NOM, HI, LO, alpha), rtol=1e-12)
        ref_cr = np.asarray([300.0, 200.0]) * expshape_factor(
            [300.0, 200.0], [360.0, 100.0], [250.0, 260.0], alpha
        )
        np.testing.assert_allclose(cr, ref_cr, rtol=1e-12)
        np.testing.assert_allclose(rates["other"], [5.0, 5.0, 0, 0, 0, 0, 0], atol=0)
        np.testing.assert_allclose(rates["signal"], [0.0, 0.0, *SIG], atol=0)


# 3. two samples / two modifiers -------------------------------------------------------------


def test_two_samples_and_two_modifiers_multiply():
    hi2 = [110.0, 80.0, 60.0, 40.0, 35.0]
    lo2 = [125.0, 95.0, 62.0, 30.0, 13.0]
    sig_hi, sig_lo = [1.0, 5.0, 14.0, 7.0, 3.0], [3.0, 7.0, 10.0, 5.0, 1.0]
    spec = one_channel_spec([expshape("a", HI, LO), expshape("b", hi2, lo2)])
    spec["channels"][0]["samples"][0]["modifiers"].append(expshape("c", sig_hi, sig_lo))
    model = make_model(spec)
    assert {"a", "b", "c", "mu"} <= set(model.config.par_order)
    nom = np.asarray(NOM)
    for a, b, c in [(0.0, 0.0, 0.0), (0.8, -1.4, 0.0), (-2.2, 3.0, 1.5), (1.0, 1.0, -1.0)]:
        rates = by_sample(model, pars_for(model, a=a, b=b, c=c, mu=1.7))
        ref = nom * expshape_factor(nom, HI, LO, a) * expshape_factor(nom, hi2, lo2, b)
        np.testing.assert_allclose(rates["background"], ref, rtol=1e-12)
        # "a"/"b" leave the signal alone, "c" does not touch the background
        np.testing.assert_allclose(
            rates["signal"],
            1.7 * np.asarray(SIG) * expshape_factor(SIG, sig_hi, sig_lo, c),
            rtol=1e-12,
        )


def test_shared_name_across_samples_and_with_normsys():
    spec = one_channel_spec([expshape("a", HI, LO)])
    spec["channels"][0]["samples"][0]["modifiers"] += [
        expshape("a", [1.0, 5.0, 14.0, 7.0, 3.0], [3.0, 7.0, 10.0, 5.0, 1.0]),
        {"name": "a", "type": "normsys", "data": {"hi": 1.2, "lo": 0.8}},
    ]
    model = make_model(spec)
    assert model.config.par_order.count("a") == 1
    assert model.config.param_set("a").n_parameters == 1
    rates = by_sample(model, pars_for(model, a=1.0))
    np.testing.assert_allclose(
        rates["signal"], 1.2 * np.asarray([1.0, 5.0, 14.0, 7.0, 3.0]) * 28 / 30, rtol=1e-12
    )
    np.testing.assert_allclose(rates["background"], HI, rtol=1e-12)


def test_batched_model_matches_unbatched():
    spec = one_channel_spec([expshape("a", HI, LO), expshape("b", LO, HI)])
    model = make_model(spec)
    batched = make_model(spec, batch_size=3)
    points = [{"a": 0.0, "b": 0.0}, {"a": 1.3, "b": -0.4, "mu": 2.0}, {"a": -2.0, "b": 2.5}]
    pars = np.stack([pars_for(model, **p) for p in points])
    got = np.asarray(batched.expected_actualdata(pars))
    assert got.shape == (3, len(NOM))
    for row, p in zip(got, pars, strict=True):
        np.testing.assert_allclose(row, model.expected_actualdata(p), rtol=1e-12)
    data = np.asarray(model.expected_data(pars[1]))
    np.testing.assert_allclose(
        batched.logpdf(pars, data), [model.logpdf(p, data)[0] for p in pars], rtol=1e-12
    )


def test_bad_modifier_data_raises():
    with pytest.raises(pyhf.exceptions.InvalidModifier):
        make_model(one_channel_spec([expshape("a", HI[:-1], LO)]))
    bad = one_channel_spec([{"name": "a", "type": MODIFIER_TYPE, "data": {"hi_data": HI}}])
    with pytest.raises(pyhf.exceptions.InvalidModifier):
        make_model(bad, validate=False)
    with pytest.raises(pyhf.exceptions.InvalidSpecification):
        make_model(bad)  # schema check of the portable spec: histosys without lo_data


# 4. fit and hypotest ------------------------------------------------------------------------


def _fit_model_and_data():
    model = make_model(one_channel_spec([expshape("gen_eigen_0", HI, LO)]), poi_name="mu")
    truth = pars_for(model, mu=1.0, gen_eigen_0=0.6)
    data = np.asarray(model.expected_data(truth))
    return model, truth, data


@pytest.mark.parametrize("optimizer", ["scipy", "minuit"])
def test_fit_and_hypotest(optimizer):
    pyhf.set_backend("numpy", optimizer)
    model, truth, data = _fit_model_and_data()
    bestfit = np.asarray(pyhf.infer.mle.fit(data, model))
    np.testing.assert_allclose(bestfit, truth, atol=2e-3)

    cls_obs, cls_exp = pyhf.infer.hypotest(
        1.0, data, model, test_stat="qtilde", return_expected=True
    )
    assert 0.0 < float(cls_obs) <= 1.0
    assert 0.0 < float(cls_exp) <= 1.0
    cls_excluded = pyhf.infer.hypotest(8.0, data, model, test_stat="qtilde")
    assert float(cls_excluded) < float(cls_obs)


# 5. portable histosys workspace -------------------------------------------------------------


def test_to_histosys_validates_and_agrees_at_nodes():
    spec = one_channel_spec([expshape("a", HI, LO)])
    spec["channels"][0]["samples"][0]["modifiers"].append(
        {"name": "lumi_like", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}}
    )
    before = copy.deepcopy(spec)
    portable = to_histosys(spec)
    assert spec == before  # input untouched
    assert not uses_expshape(portable)
    assert uses_expshape(spec)
    mods = portable["channels"][0]["samples"][1]["modifiers"]
    assert mods == [{"name": "a", "type": "histosys", "data": {"hi_data": HI, "lo_data": LO}}]
    pyhf.schema.validate(portable, "model.json")
    plain = pyhf.Model(portable)  # validation on
    custom = make_model(spec)
    assert plain.config.par_order == custom.config.par_order
    for alpha in (-1.0, 0.0, 1.0):
        for mu in (0.0, 1.4):
            p = pars_for(custom, a=alpha, mu=mu, lumi_like=0.3)
            np.testing.assert_allclose(custom.expected_data(p), plain.expected_data(p), rtol=1e-12)
    # and they differ in between (additive polynomial vs exponential, shape-only)
    p = pars_for(custom, a=0.5)
    assert not np.allclose(custom.expected_actualdata(p), plain.expected_actualdata(p), rtol=1e-6)


def test_make_model_and_modifier_set_plain_specs():
    ms = modifier_set()
    assert set(pyhf.modifiers.histfactory_set) < set(ms)
    assert ms[MODIFIER_TYPE][1].name == MODIFIER_TYPE
    # plain specs keep pyhf's validation
    plain = one_channel_spec([])
    assert make_model(plain).config.par_order == ["mu"]
    broken = one_channel_spec([{"name": "x", "type": "histosys", "data": {"hi_data": HI}}])
    with pytest.raises(pyhf.exceptions.InvalidSpecification):
        make_model(broken)
    # direct use through pyhf.Model with the modifier set
    spec = one_channel_spec([expshape("a", HI, LO)])
    m = pyhf.Model(spec, validate=False, modifier_set=ms, poi_name="mu")
    np.testing.assert_allclose(by_sample(m, pars_for(m, a=1.0))["background"], HI, rtol=1e-12)
    # pyhf model settings pass through
    m0 = make_model(spec, poi_name=None, modifier_settings={"histosys": {"interpcode": "code0"}})
    assert m0.config.poi_name is None

"""PAWS-style signal (zfit_gbi.paws): the parametrized classifier, its persistence, the ratio as
a signal density, a fit of the yield and the signal parameter, and `gbi run` with
signal.model: parametrized."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.classifier import ClassifierConfig
from zfit_gbi.data import DataError
from zfit_gbi.paws import ClassifierRatio, ParametrizedClassifier, train_parametrized_classifier

GRID = (0.1, 0.2, 0.3, 0.4)


@pytest.fixture(scope="module")
def classifier(bench, sideband_flow):
    sim = bench.signal_simulation(1500, seed=31, mj1=GRID)
    sr = sim.select(bench.windows.in_signal_region(sim["mjj"]))
    clf = train_parametrized_classifier(sr.array(bench.features), sr["mjj"], sr["signal_mj1"], sideband_flow, parameters=["signal_mj1"],
                                        config=ClassifierConfig(hidden=(32, 32), epochs=12, batch_size=256, patience=3), seed=3)
    return clf, sr


def test_parametrized_simulation(bench):
    sim = bench.signal_simulation(500, seed=1, mj1=[0.1, 0.4])
    assert sim.columns[-1] == "signal_mj1"
    assert len(sim) == 1000
    lo, hi = sim["signal_mj1"] == 0.1, sim["signal_mj1"] == 0.4
    assert sim["mj1"][lo].mean() < 0.15
    assert sim["mj1"][hi].mean() > 0.3
    shifted = ResonantBenchmark(signal_mj1=0.4)
    assert shifted.sample(0, 2000, seed=1)["mj1"].mean() == pytest.approx(sim["mj1"][hi].mean(), abs=0.02)
    with pytest.raises(ValueError, match="signal_mj1"):
        ResonantBenchmark(signal_mj1=1.5)
    with pytest.raises(ValueError, match="mj1"):
        bench.signal_simulation(10, mj1=[0.2, 1.0])


def test_classifier_learns_the_parameter(bench, classifier):
    """Signal simulated at mj1 = 0.3: the ratio is largest at theta = 0.3 among the grid
    (averaged over those events), and the float64 TF expression equals the numpy one."""
    clf, _ = classifier
    assert clf.parameters == ("signal_mj1",)
    assert clf.ranges["signal_mj1"] == (0.1, 0.4)
    ev = bench.signal_simulation(2000, seed=77, mj1=[0.3])
    x, m = ev.array(bench.features), ev["mjj"]
    means = [clf.log_ratio(x, m, [t]).mean() for t in GRID]
    assert int(np.argmax(means)) == GRID.index(0.3), means
    assert means[2] > 1.0  # signal events are signal-like at their own parameter
    t = clf.log_ratio_tensor(x, m, [0.25]).numpy()
    np.testing.assert_allclose(t, clf.log_ratio(x, m, [0.25]), rtol=1e-10, atol=1e-10)
    assert "signal_mj1 in [0.1, 0.4]" in repr(clf)


def test_classifier_save_load(tmp_path, bench, classifier):
    clf, sr = classifier
    folder = clf.save(tmp_path / "clf")
    back = ParametrizedClassifier.load(folder)
    x, m = sr.array(bench.features)[:200], sr["mjj"][:200]
    np.testing.assert_array_equal(back.log_ratio(x, m, [0.2]), clf.log_ratio(x, m, [0.2]))
    assert back.config == clf.config
    blob = (folder / "weights.npz").read_bytes()
    (folder / "weights.npz").write_bytes(blob[:-10])
    with pytest.raises(DataError, match="checksum"):
        ParametrizedClassifier.load(folder)
    (folder / "weights.npz").write_bytes(blob)
    meta = json.loads((folder / "classifier.json").read_text())
    (folder / "classifier.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(DataError, match="format version"):
        ParametrizedClassifier.load(folder)
    with pytest.raises(DataError, match="not a saved classifier"):
        ParametrizedClassifier.load(tmp_path / "nowhere")


def test_training_input_errors(bench, sideband_flow):
    sim = bench.signal_simulation(300, seed=2, mj1=[0.2])
    with pytest.raises(DataError, match="single value"):
        train_parametrized_classifier(sim.array(bench.features), sim["mjj"], sim["signal_mj1"], sideband_flow, parameters=["signal_mj1"])
    x = sim.array(bench.features)
    x[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        train_parametrized_classifier(x, sim["mjj"], None, sideband_flow)


def test_fit_recovers_yield_and_parameter(bench, sideband_flow, classifier):
    """Data with 400 signal events at mj1 = 0.25 (between two simulated points) in 20000
    background events: the profile over the parameter's range peaks next to 0.25, and the fit
    from there finds the parameter and the yield within 3 of their errors (one seeded data
    set; the classifier's interpolation between grid points is part of what is tested)."""
    from zfit_gbi.inference import _conditional_nll, fit
    from zfit_gbi.model import build_model

    clf, sr = classifier
    truth = ResonantBenchmark(signal_mj1=0.25)
    ev = truth.sample(20000, 400, seed=8)
    w = bench.windows
    ratio = ClassifierRatio.build(clf, sideband_flow, sr["mjj"], n_mc=10000, seed=1, prefix="tp", mass_range=w.signal_region)
    with pytest.raises(ValueError, match="either signal_generator"):
        build_model(resonant="mjj", features=bench.features, windows=w, background_generator=sideband_flow, signal_generator=sideband_flow,
                    signal_ratio=ratio, data_masses=ev["mjj"], signal_masses=sr["mjj"])
    model = build_model(resonant="mjj", features=bench.features, windows=w, background_generator=sideband_flow, signal_generator=None,
                        signal_ratio=ratio, data_masses=ev["mjj"], signal_masses=sr["mjj"], background_mass="exppoly2", prefix="tp_")
    assert "classifier ratio" in repr(model)
    (theta,) = model.signal_params
    model.reset(len(ev))
    assert float(theta.value()) == pytest.approx(0.25)  # the middle of [0.1, 0.4]
    loss = model.loss(ev)
    grid = np.linspace(0.1, 0.4, 7)
    nll = _conditional_nll(loss, theta, grid)
    assert abs(grid[int(np.argmin(nll))] - 0.25) <= 0.05 + 1e-9, nll
    theta.set_value(float(grid[int(np.argmin(nll))]))
    s = fit(loss, model.poi, minos=False)
    t_hat, t_err = s.values[theta.name], s.errors[theta.name]
    assert 0 < t_err < 0.05
    assert abs(t_hat - 0.25) < 3 * t_err, (t_hat, t_err)
    assert abs(s.poi_value - 400) < 3 * s.errors[model.poi.name], (s.poi_value, s.errors[model.poi.name])
    # the signal density is normalized where the ratio acts: Z(theta) averages r over the generator's events
    log_z = float(ratio.log_norm([theta.value()]))
    assert abs(log_z) < 0.5  # a calibrated classifier has Z = 1 (log Z = 0)


def test_config_parametrized(tmp_path):
    from zfit_gbi.config import ConfigError, ConfigWarning, validate_config

    cols = ["mjj", "mj1", "label"]
    raw = {
        "data": {"path": "d.npy", "columns": cols, "resonant": "mjj", "features": ["mj1"]},
        "windows": {"fit": [2.9, 4.1], "signal_region": [3.3, 3.7]},
        "signal": {"model": "parametrized", "simulation": {"path": "s.npy", "columns": [*cols, "theta"]},
                   "parametrized": {"parameters": ["theta"], "classifier": {"hidden": [8], "epochs": 2}}},
    }
    cfg = validate_config(raw, base_dir=tmp_path)
    assert cfg.signal.parametrized.parameters == ["theta"]
    assert cfg.signal.parametrized.classifier.hidden == [8]
    bad = json.loads(json.dumps(raw))
    bad["signal"]["parametrized"]["parameters"] = ["thetta"]
    with pytest.raises(ConfigError, match="thetta"):
        validate_config(bad, base_dir=tmp_path)
    bad["signal"]["parametrized"]["parameters"] = ["mj1"]
    bad["signal"]["simulation"]["columns"] = [*cols]
    with pytest.raises(ConfigError, match="data columns"):
        validate_config(bad, base_dir=tmp_path)
    bad = json.loads(json.dumps(raw))
    del bad["signal"]["simulation"]
    with pytest.raises(ConfigError, match=r"signal\.simulation"):
        validate_config(bad, base_dir=tmp_path)
    bad = json.loads(json.dumps(raw))
    bad["signal"]["parametrized"]["classifer"] = {}
    with pytest.raises(ConfigError, match="classifier"):
        validate_config(bad, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"inference\.backend"):
        validate_config({**raw, "inference": {"backend": "pyhf"}}, base_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate_config({**raw, "inference": {"backend": "both"}}, base_dir=tmp_path)
    assert any(issubclass(w.category, ConfigWarning) and "unbinned route only" in str(w.message) for w in caught)


def test_run_parametrized(tmp_path, capsys):
    """`gbi run` with signal.model: parametrized on a small data set whose signal sits at
    mj1 = 0.3: the summary's signal_parameters (value, error, range, profiles), the parameter
    held at its fit for the discovery, the profile plot, the saved classifier; gbi plot refuses;
    gbi scan fits the parameter at every mass (worker processes loading the saved classifier)."""
    import yaml

    from zfit_gbi.cli import main

    bench = ResonantBenchmark(signal_mj1=0.3)
    np.save(tmp_path / "data.npy", bench.sample(8000, 250, seed=5).values)
    np.save(tmp_path / "sim.npy", bench.signal_simulation(1200, seed=6, mj1=GRID).values)
    cols = ["mjj", "mj1", "delta_mj", "tau21_j1", "tau21_j2", "label"]
    cfg = {
        "data": {"path": "data.npy", "columns": cols, "resonant": "mjj", "features": cols[1:5], "bounds": {f: [0.0, 1.0] for f in cols[1:5]}},
        "windows": {"fit": [2.9, 4.1], "signal_region": [3.3, 3.7]},
        "background": {"mass_shape": "exppoly2",
                       "generator": {"type": "maf-affine", "layers": 2, "hidden": 16, "epochs": 4, "batch_size": 256, "seed": 1}},
        "signal": {"model": "parametrized", "simulation": {"path": "sim.npy", "columns": [*cols, "signal_mj1"]},
                   "parametrized": {"parameters": ["signal_mj1"], "classifier": {"hidden": [32, 32], "epochs": 8}, "n_mc": 5000,
                                    "profile_points": 4}},
        "inference": {"discovery": True, "profile_points": 0},
        "plots": {"formats": ["png"]},
    }
    path = tmp_path / "paws.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert "signal parameter signal_mj1" in capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["signal_model"] == "parametrized"
    assert s["backend"] == "zfit"
    sp = s["signal_parameters"]["signal_mj1"]
    assert sp["range"] == [0.1, 0.4]
    assert 0.1 <= sp["value"] <= 0.4
    assert sp["error"] > 0
    assert len(sp["grid"]["values"]) == 4
    prof = sp["profile"]
    assert min(prof["minus_2_delta_nll"]) < 0.05  # the fitted value is on the fine profile
    assert s["parameters"][sp["parameter"]]["value"] == sp["value"]
    assert s["discovery"]["significance"] > 0
    assert "profile_signal_mj1.png" in s["plots"]
    assert (out / "models" / "signal_classifier" / "weights.npz").exists()
    assert not (out / "models" / "signal").exists()
    assert main(["plot", str(out)]) == 1
    assert "parametrized" in capsys.readouterr().err
    # gbi scan: the classifier trained once and saved, each mass fitted on a worker process that loads it
    scan = tmp_path / "scan"
    assert main(["scan", str(path), "--out", str(scan), "--masses", "3.45", "3.55", "2", "--quiet", "--models", str(out / "models"),
                 "--executor", "processes:2"]) == 0
    rows = json.loads((scan / "scan.json").read_text())["rows"]
    assert [r["mass"] for r in rows] == [3.45, 3.55]
    for r in rows:
        assert r["fit_valid"]
        theta = r["signal_parameters"]["signal_mj1"]
        assert 0.1 <= theta["value"] <= 0.4
        assert theta["error"] > 0
    assert (scan / "models" / "signal_classifier" / "classifier.json").exists()

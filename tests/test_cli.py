"""The ``gbi`` command, run in-process (TensorFlow starts once per test session)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from zfit_gbi.cli import main
from zfit_gbi.pipeline import SUMMARY_SCHEMA


def test_demo_small(tmp_path, capsys):
    """The demo in smoke mode (tiny networks, 3 epochs): the full pipeline runs, prints the
    result table with the oracle and the closure table, and writes its files atomically."""
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--n-background", "20000", "--n-signal", "100", "--n-simulation", "3000",
                 "--smoke", "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    for word in ("signal yield", "oracle", "Sideband-interpolation closure", "time [s]", "CLs 95% upper limit"):
        assert word in text
    demo = json.loads((out / "demo.json").read_text())
    sr = demo["closure"]["signal_region"]
    assert sr["n"] > 500
    # even a tiny 3-epoch generator is far closer to the truth than the uniform density on the
    # box (whose KL is the mean true log-density, about 3.3 nats)
    assert -0.1 < sr["kl_estimate"] < 0.5 * sr["mean_log_p_true"]
    summary = json.loads((out / "result" / "summary.json").read_text())
    assert summary["fit_valid"] is True
    assert not list(out.rglob(".*.tmp"))

    assert main(["inspect", str(out / "result" / "models" / "background")]) == 0
    text = capsys.readouterr().out
    assert "features: mj1, delta_mj, tau21_j1, tau21_j2" in text
    assert "context:  mjj" in text
    assert "ensemble" in text
    assert "layout 1" in text  # always named: a results folder says which network it holds


def test_errors_and_usage(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert "gbi: error:" in err
    assert "model.json" in err
    assert "Traceback" not in err
    assert main([]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--epochs", "many"])
    assert exc.value.code == 2


def _tiny_config(tmp_path, bench, **override):
    import numpy as np
    import yaml

    np.save(tmp_path / "data.npy", bench.sample(6000, 60, seed=5).values)
    np.save(tmp_path / "sim.npy", bench.signal_simulation(3000, seed=6).values)
    cols = ["mjj", "mj1", "delta_mj", "tau21_j1", "tau21_j2", "label"]
    gen = {"type": "maf-affine", "layers": 2, "hidden": 16, "epochs": 3, "batch_size": 256, "seed": 1}
    cfg = {
        "data": {"path": "data.npy", "columns": cols, "resonant": "mjj", "features": cols[1:5],
                 "bounds": {f: [0.0, 1.0] for f in cols[1:5]}},
        "windows": {"fit": [2.9, 4.1], "signal_region": [3.3, 3.7]},
        "background": {"mass_shape": "exppoly2", "generator": gen},
        "signal": {"simulation": {"path": "sim.npy", "columns": cols}, "mass_shape": "gauss", "generator": {**gen, "seed": 2}},
        "nuisances": {"generator": "none"},
        "inference": {"discovery": True},
    }
    for key, value in override.items():
        cfg[key] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_writes_summary(tmp_path, bench, capsys):
    cfg = _tiny_config(tmp_path, bench)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    for key in ("signal_yield", "background_yield", "discovery", "upper_limit", "nuisances", "fit_valid", "n_events", "timings", "versions"):
        assert key in s
    assert s["fit_valid"] is True
    assert s["n_events"]["fit"] == 6060
    # where it computed: TensorFlow's GPUs (a list, empty on a CPU machine) and the CPU count
    assert isinstance(s["devices"]["gpus"], list)
    assert s["devices"]["cpus"] >= 1
    assert set(s) <= set(SUMMARY_SCHEMA), set(s) - set(SUMMARY_SCHEMA)  # every key documented
    # signal_in_sidebands: auto, and this narrow signal puts nothing in the sidebands: no retraining
    assert s["background_training"]["applied"] is False
    assert s["background_training"]["simulated_signal_share_in_sidebands"] < 0.02
    assert set(s["signal_yield"]) == {"value", "error_low", "error_high", "error_method"}
    assert s["signal_yield"]["error_method"] in ("minos", "profile")
    assert s["discovery"]["significance"] >= 0
    assert (out / "models" / "background" / "model.json").exists()
    # the post-fit plots, PNG and PDF, listed in the summary; the profile scan has its minimum at the fit
    assert "cls_scan.png" not in s["plots"]  # no upper limit in this config
    for name in ("postfit_mass", "closure_features", "profile_scan", "training_background", "training_signal"):
        for fmt in ("png", "pdf"):
            assert (out / f"{name}.{fmt}").stat().st_size > 5000, name
            assert f"{name}.{fmt}" in s["plots"]
    ps = s["profile_scan"]
    assert min(ps["minus_2_delta_nll"]) < 0.2
    assert ps["minus_2_delta_nll"][0] > 1
    assert ps["minus_2_delta_nll"][-1] > 1
    assert "signal yield" in capsys.readouterr().out
    # gbi plot re-draws them from the folder in another style (and label), without refitting
    before = (out / "postfit_mass.png").stat().st_mtime_ns
    assert main(["plot", str(out), "--style", "LHCb", "--experiment", "LHC Olympics", "--formats", "png", "--quiet"]) == 0
    assert "wrote 5 files" in capsys.readouterr().out
    assert (out / "postfit_mass.png").stat().st_mtime_ns > before
    assert main(["plot", str(tmp_path / "nowhere")]) == 1
    assert "no summary.json" in capsys.readouterr().err
    # the same config and seed give the same numbers
    out2 = tmp_path / "out2"
    assert main(["run", str(cfg), "--out", str(out2), "--quiet"]) == 0
    s2 = json.loads((out2 / "summary.json").read_text())
    assert s2["signal_yield"]["value"] == pytest.approx(s["signal_yield"]["value"], rel=1e-6)


def test_train_fit_limit(tmp_path, bench, capsys):
    """gbi train saves the generators (and train.json, training curves); gbi fit and gbi limit
    reuse them with --models: the same fit both times, only the limit computed by gbi limit,
    with the flags overriding the config; bad --models and bad flag values are clear errors."""
    cfg = _tiny_config(tmp_path, bench, inference={"discovery": True, "upper_limit": {"cl": 0.95, "n_points": 6}, "n_asimov": 5000})
    trained = tmp_path / "trained"
    assert main(["train", str(cfg), "--out", str(trained), "--quiet"]) == 0
    assert "--models" in capsys.readouterr().out
    rep = json.loads((trained / "train.json").read_text())
    assert rep["generators"]["background"]["members"] == 1
    assert rep["generators"]["signal"]["epochs"] == [3]
    assert rep["n_events"]["simulation"] > 2000
    assert (trained / "models" / "signal" / "model.json").exists()
    assert "training_background.png" in rep["plots"]

    models = str(trained / "models")
    assert main(["fit", str(cfg), "--out", str(tmp_path / "fit"), "--models", models, "--quiet"]) == 0
    capsys.readouterr()
    f = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert f["discovery"] is None
    assert f["upper_limit"] is None
    assert f["fit_valid"] is True
    assert f["config"]["background"]["generator"] == {"path": str((trained / "models" / "background").absolute())}
    assert "training_signal.png" in f["plots"]  # the loaded generators keep their training history

    assert main(["limit", str(cfg), "--out", str(tmp_path / "lim"), "--models", models, "--cl", "0.9", "--n-points", "5", "--quiet"]) == 0
    assert "CLs 90% upper limit" in capsys.readouterr().out
    lim = json.loads((tmp_path / "lim" / "summary.json").read_text())
    assert lim["discovery"] is None
    assert lim["upper_limit"]["cl"] == 0.9
    assert len(lim["upper_limit"]["scan"]["poi"]) >= 5
    assert lim["upper_limit"]["observed"] > lim["signal_yield"]["value"]
    assert lim["signal_yield"]["value"] == pytest.approx(f["signal_yield"]["value"], rel=1e-6)
    assert "cls_scan.png" in lim["plots"]

    assert main(["fit", str(cfg), "--out", str(tmp_path / "x"), "--models", str(tmp_path / "nowhere")]) == 1
    assert "no saved generator" in capsys.readouterr().err

    # saved generators must model what the config asks for, on a box that holds the data
    import numpy as np
    import yaml

    for change, text in ((lambda c: c["data"].update(features=c["data"]["features"][:3], bounds={}),
                          ("the saved background generator models p(mj1, delta_mj, tau21_j1, tau21_j2 | mjj) but the config asks for "
                          "p(mj1, delta_mj, tau21_j1 | mjj)")),
                         (lambda c: c["data"]["bounds"].update(mj1=[-1.0, 1.0]),
                          "the data's mj1 range (-1.0, 1.0) reaches outside the saved generator's box [0.0, 1.0]")):
        c = yaml.safe_load(cfg.read_text())
        change(c)
        other = tmp_path / "other.yaml"
        other.write_text(yaml.safe_dump(c))
        assert main(["fit", str(other), "--out", str(tmp_path / "x"), "--models", models, "--quiet"]) == 1
        assert text in capsys.readouterr().err
    # a signal simulation with almost nothing in the fit window
    np.save(tmp_path / "few.npy", bench.signal_simulation(3000, seed=6).values[:5])
    c = yaml.safe_load(cfg.read_text())
    c["signal"]["simulation"]["path"] = "few.npy"
    (tmp_path / "few.yaml").write_text(yaml.safe_dump(c))
    assert main(["fit", str(tmp_path / "few.yaml"), "--out", str(tmp_path / "x"), "--models", models, "--quiet"]) == 1
    assert "few.npy: only 5 signal-simulation events inside the fit window (2.9, 4.1)" in capsys.readouterr().err
    assert main(["limit", str(cfg), "--out", str(tmp_path / "x"), "--models", models, "--cl", "1.5"]) == 1
    err = capsys.readouterr().err
    assert "inference.upper_limit.cl" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x" / "summary.json").exists()


def test_run_config_error(tmp_path, bench, capsys):
    cfg = _tiny_config(tmp_path, bench, windows={"fit": [2.9, 4.1], "signal_region": [3.8, 3.7]})
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "windows" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_scan(tmp_path, bench, capsys):
    """gbi scan: one set of generators, a fit and a local significance per hypothesised mass,
    scan.json and the local-p0 plot; masses outside the fit window are an error naming them."""
    cfg = _tiny_config(tmp_path, bench)
    out = tmp_path / "scan"
    assert main(["scan", str(cfg), "--out", str(out), "--masses", "3.4", "3.6", "2", "--quiet"]) == 0
    res = json.loads((out / "scan.json").read_text())
    assert [r["mass"] for r in res["rows"]] == [3.4, 3.6]
    assert all(r["fit_valid"] and r["significance"] >= 0 for r in res["rows"])
    assert (out / "scan_p0.png").exists()
    printed = capsys.readouterr().out
    assert "local Z" in printed
    g = res["look_elsewhere"]  # the global significance from the local curve's upcrossings
    assert g["local_p0"] == min(r["p0"] for r in res["rows"]) <= g["global_p0"]
    assert g["method"].startswith("upcrossings")
    assert g["upcrossings"] >= 0
    assert f"global Z {g['global_significance']:.2f}" in printed
    # the same scan on two worker processes (the generators loaded from the first run): same rows
    out2 = tmp_path / "scan2"
    assert main(["scan", str(cfg), "--out", str(out2), "--masses", "3.4", "3.6", "2", "--quiet",
                 "--models", str(out / "models"), "--executor", "processes:2"]) == 0
    assert json.loads((out2 / "scan.json").read_text())["rows"] == res["rows"]
    # with a CLs limit, every row says what a summary's does: why it is NaN, what to know about it
    lim_cfg = _tiny_config(tmp_path, bench, inference={"discovery": True, "upper_limit": {"cl": 0.95, "n_points": 6}})
    assert main(["scan", str(lim_cfg), "--out", str(tmp_path / "lim"), "--masses", "3.5", "3.5", "1", "--quiet",
                 "--models", str(out / "models")]) == 0
    (row,) = json.loads((tmp_path / "lim" / "scan.json").read_text())["rows"]
    assert 0 < row["observed"] < np.inf
    assert row["problems"] == []
    assert isinstance(row["notes"], list)
    assert (tmp_path / "lim" / "scan_limits.png").exists()
    assert main(["scan", str(cfg), "--out", str(out), "--masses", "3.4", "3.6", "2", "--executor", "threads"]) == 1
    assert "unknown executor 'threads'" in capsys.readouterr().err
    assert main(["scan", str(cfg), "--out", str(out), "--masses", "3.4", "5.0", "2", "--quiet"]) == 1
    assert "scan masses [5.0] lie outside the fit window" in capsys.readouterr().err
    assert main(["scan", str(cfg), "--out", str(out), "--masses", "3.4", "3.6", "2.5"]) == 2


def test_binned_backend_and_export(tmp_path, bench, capsys):
    """backend both: the binned (pyhf) results next to the unbinned ones, the workspace files
    written; gbi export-pyhf with the saved generators writes a workspace plain pyhf reads."""
    import pyhf
    import yaml

    from pyhf_gbi import infer as B

    ens = {"type": "maf-affine", "layers": 2, "hidden": 16, "epochs": 3, "batch_size": 256, "seed": 1, "ensemble": 2}
    cfg = _tiny_config(tmp_path, bench, nuisances={"generator": "eigen", "n_eigen": 1},
                       inference={"discovery": True, "backend": "both", "profile_points": 0},
                       binned={"mass_bins": 2, "score_bins": 3, "n_generated": 20000})
    raw = yaml.safe_load(cfg.read_text())
    raw["background"]["generator"] = ens
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "both"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert "binned (pyhf) yield" in capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["backend"] == "both"
    z, b = s["results"]["zfit"], s["results"]["pyhf"]
    assert z["signal_yield"] == s["signal_yield"]
    assert b["bins"]["mass"] == 2
    assert b["workspace"] == ["workspace.json", "workspace_portable.json"]
    assert "gen_eigen_0" in b["variations"]
    assert b["discovery"]["significance"] >= 0
    assert b["signal_yield"]["error_low"] > 0
    for name in ("postfit_binned.png", "postfit_mass.png"):
        assert name in s["plots"]
    # export with the run's saved generators (no retraining); portable: plain pyhf reads it
    raw["background"]["generator"] = {"path": str(out / "models" / "background")}
    raw["signal"]["generator"] = {"path": str(out / "models" / "signal")}
    cfg.write_text(yaml.safe_dump(raw))
    ws_path = tmp_path / "export" / "workspace.json"
    assert main(["export-pyhf", str(cfg), "--out", str(ws_path), "--quiet"]) == 0
    assert "histosys:gen_eigen_0" in capsys.readouterr().out
    spec = json.loads(ws_path.read_text())
    ws = pyhf.Workspace(spec)
    assert ws.model().config.poi_name == "n_sig"
    lim = B.upper_limit(spec)
    assert 0 < lim.expected[2] < lim.expected[4]
    assert main(["export-pyhf", str(tmp_path / "missing.yaml"), "--out", str(ws_path)]) == 1
    # backend pyhf alone: the binned results are the run's results
    raw["inference"]["backend"] = "pyhf"
    raw["plots"] = {"enabled": False}
    cfg.write_text(yaml.safe_dump(raw))
    only = tmp_path / "pyhf_only"
    assert main(["run", str(cfg), "--out", str(only), "--quiet"]) == 0
    s1 = json.loads((only / "summary.json").read_text())
    assert s1["backend"] == "pyhf"
    assert set(s1["results"]) == {"pyhf"}
    assert s1["signal_yield"]["value"] == pytest.approx(b["signal_yield"]["value"], rel=1e-3)
    assert "gen_eigen_0" in s1["nuisances"]
    assert main(["plot", str(only)]) == 1
    assert "binned-only run" in capsys.readouterr().err


def test_run_with_spurious_signal(tmp_path, bench):
    """nuisances.spurious_signal: true measures the width with the background ensemble's members
    (one fit each), adds the constrained nuisance, records it; gbi plot reuses the width."""
    import yaml

    cfg = _tiny_config(tmp_path, bench, nuisances={"generator": "none", "spurious_signal": True},
                       inference={"discovery": False, "profile_points": 0}, plots={"enabled": False})
    raw = yaml.safe_load(cfg.read_text())
    raw["background"]["generator"]["ensemble"] = 2
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "ss"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    ss = s["spurious_signal"]
    assert len(ss["member_yields"]) == 2
    assert ss["width"] == pytest.approx(abs(ss["member_yields"][0] - ss["member_yields"][1]) / 2**0.5)
    assert ss["parameter"] == "gen_spurious"
    assert abs(s["nuisances"]["gen_spurious"]["value"]) < 1
    assert main(["plot", str(out), "--formats", "png"]) == 0
    assert (out / "postfit_mass.png").exists()
    # a given width: no ensemble needed, nothing measured; the binned route gets it too
    raw["nuisances"]["spurious_signal"] = 5.0
    raw["background"]["generator"]["ensemble"] = 1
    raw["inference"]["backend"] = "both"
    raw["binned"] = {"mass_bins": 2, "score_bins": 3, "n_generated": 20000}
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--out", str(tmp_path / "ss5"), "--quiet"]) == 0
    s5 = json.loads((tmp_path / "ss5" / "summary.json").read_text())
    assert s5["spurious_signal"] == {"width": 5.0, "member_yields": [], "parameter": "gen_spurious"}
    assert "gen_spurious" in s5["results"]["pyhf"]["variations"]
    ws = json.loads((tmp_path / "ss5" / "workspace.json").read_text())
    assert "spurious_signal" in [smp["name"] for smp in ws["channels"][0]["samples"]]


def test_run_models_the_signal_in_the_sidebands(tmp_path, bench, capsys, caplog, monkeypatch):
    """background.signal_in_sidebands: model fits, retrains the background generator with the
    fitted signal in the sidebands modelled, fits again; summary.json records each round, the
    saved generator says how it was trained, --models reuses it as saved, and a generator
    trained on the plain sidebands is refused for this setting (it cannot be retrained)."""
    import shutil

    import yaml

    cfg = _tiny_config(tmp_path, bench, inference={"discovery": False, "profile_points": 0}, plots={"enabled": False})
    raw = yaml.safe_load(cfg.read_text())
    raw["background"]["signal_in_sidebands"] = "model"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "sb"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "background generator, signal in the sidebands modelled (1)" in printed
    s = json.loads((out / "summary.json").read_text())
    bt = s["background_training"]
    assert bt["signal_in_sidebands"] == "model"
    assert bt["applied"] is True
    assert bt["loaded"] is None
    # this narrow signal puts nothing in the sidebands: the retrained generator gives the same
    # yield, so the second round's fit says converged and nothing is retrained again
    assert [(it["retrained"], it["converged"]) for it in bt["iterations"]] == [(True, False), (False, True)]
    assert bt["converged"] is True
    it = bt["iterations"][0]
    assert it["signal_yield"] > 0
    assert 0 <= it["sideband_signal_events"] < it["signal_yield"]
    assert abs(bt["iterations"][1]["poi"] - it["poi"]) < 0.2 * it["poi_error"]
    meta = json.loads((out / "models" / "background" / "model.json").read_text())
    assert [f["history"]["objective"] for f in meta["flows"]] == ["mixture"]
    assert "signal in the sidebands" in "".join(s["timings"])
    # --models: used as saved, no training
    assert main(["run", str(cfg), "--out", str(tmp_path / "again"), "--models", str(out / "models"), "--quiet"]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["background_training"]["loaded"].endswith("background")
    assert again["signal_yield"]["value"] == pytest.approx(s["signal_yield"]["value"], rel=1e-6)
    # a background generator trained on the sidebands as they are: refused, naming the way out
    plain = tmp_path / "plain"
    shutil.copytree(out / "models", plain)
    meta["flows"][0]["history"]["objective"] = "likelihood"
    (plain / "background" / "model.json").write_text(json.dumps(meta))
    assert main(["run", str(cfg), "--out", str(tmp_path / "refused"), "--models", str(plain), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "trained on the sidebands as they are" in err
    assert "signal_in_sidebands: ignore" in err
    # one retraining allowed and a tolerance no move meets: the fit after it checks it, finds the
    # yield not settled, and says so
    import zfit_gbi.pipeline

    monkeypatch.setattr(zfit_gbi.pipeline, "SIDEBAND_SIGNAL_TOLERANCE", 0.0)
    with caplog.at_level(logging.WARNING, logger="zfit_gbi.pipeline"):
        assert main(["train", str(cfg), "--out", str(tmp_path / "one"), "--set", "background.signal_in_sidebands_iterations=1",
                     "--quiet"]) == 0
    one = json.loads((tmp_path / "one" / "train.json").read_text())["background_training"]
    assert [(it["retrained"], it["converged"]) for it in one["iterations"]] == [(True, False), (False, False)]
    assert one["converged"] is False
    assert "had not settled after 1 retraining (moves of the yield per round: " in caplog.text
    assert "raise background.signal_in_sidebands_iterations" in caplog.text


def test_toys_and_interval_are_the_same_on_every_executor(tmp_path, bench, capsys):
    """gbi toys on a results folder: toy i depends on (seed, i) only, so two worker processes
    (blocks of toys, each worker loading the folder once) give the sequential study's toys; the
    same for gbi interval's toys (those of tested value k depend on (seed, k) only)."""
    cfg = _tiny_config(tmp_path, bench, inference={"discovery": False, "profile_points": 0}, plots={"enabled": False})
    out = tmp_path / "r"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    args = ["toys", str(out), "--n-toys", "4", "--n-signal", "60", "--seed", "3", "--quiet"]
    assert main(args) == 0
    assert "pull width" in capsys.readouterr().out
    seq = json.loads((out / "toys.json").read_text())
    assert main([*args, "--executor", "processes:2"]) == 0
    par = json.loads((out / "toys.json").read_text())
    assert (seq["settings"]["chunks"], par["settings"]["chunks"]) == (1, 4)
    assert [t["index"] for t in par["toys"]] == [0, 1, 2, 3]
    for a, b in zip(seq["toys"], par["toys"], strict=True):
        assert (a["seed"], a["n_signal"], a["n_background"], a["valid"]) == (b["seed"], b["n_signal"], b["n_background"], b["valid"])
        assert b["poi_hat"] == pytest.approx(a["poi_hat"], abs=1e-4 * a["error"])
        assert b["error"] == pytest.approx(a["error"], rel=1e-4)
    assert seq["summary"]["truth"] == 60
    assert main(["toys", str(tmp_path), "--n-toys", "2"]) == 1
    assert "no summary.json" in capsys.readouterr().err

    # gbi interval (Feldman-Cousins) on the same folder: the same belt sequentially and on 2 processes
    args = ["interval", str(out), "--n-toys", "3", "--values", "0", "150", "2", "--seed", "2", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Feldman-Cousins" in printed
    assert "interval.png" in printed
    seq = json.loads((out / "interval.json").read_text())
    assert (out / "interval.png").stat().st_size > 10_000
    assert main([*args, "--executor", "processes:2"]) == 0
    par = json.loads((out / "interval.json").read_text())
    assert par["settings"]["tasks"] > 1  # blocks of (value, toys) jobs
    assert len(seq["values"]) == 3  # 0, 150 and the best fit
    assert seq["n_toys"] == par["n_toys"] == [3, 3, 3]
    for a, b in zip(seq["toys"], par["toys"], strict=True):
        assert b == pytest.approx(a, abs=1e-3)
    assert (par["low"], par["high"]) == pytest.approx((seq["low"], seq["high"]), abs=1e-3)
    assert seq["low"] <= seq["poi_hat"] <= seq["high"] or seq["poi_hat"] < 0
    assert main(["interval", str(out), "--n-toys", "0"]) == 1
    assert "n_toys must be at least 1" in capsys.readouterr().err


def test_run_fit_that_does_not_converge(tmp_path, bench, capsys, monkeypatch):
    """A minimizer starved of calls (3 per Migrad, also in the NaN-region restart) never yields a
    result: exit 1, the error says what was tried, no summary.json; the trained generators stay."""
    import zfit

    from zfit_gbi import inference

    cfg = _tiny_config(tmp_path, bench, inference={"discovery": False})
    real = zfit.minimize.Minuit.__init__

    def starved(self, *args, **kwargs):
        kwargs["maxiter"] = 3
        real(self, *args, **kwargs)

    real_fit = inference.fit

    def starving_fit(*args, **kwargs):  # the mass-shape prefits run normally, the model fit starves
        monkeypatch.setattr(zfit.minimize.Minuit, "__init__", starved)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(inference, "fit", starving_fit)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no valid minimum after 3 attempts (Minuit strategies 0 and 2, jittered starts)" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "summary.json").exists()
    assert (tmp_path / "o" / "models" / "background" / "model.json").exists()


class _InterruptingBar:
    """A training progress bar whose ``update`` raises KeyboardInterrupt (Ctrl-C) at call ``at``."""

    calls = 0

    def __init__(self, at: int):
        self.at = at

    def __call__(self, *args, **kwargs):
        return self

    def update(self, *args):
        _InterruptingBar.calls += 1
        if _InterruptingBar.calls == self.at:
            raise KeyboardInterrupt

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


@pytest.mark.parametrize(("ensemble", "at", "kind", "members"),
                         [(1, 2, "Flow", 0), pytest.param(2, 5, "FlowEnsemble", 1, marks=pytest.mark.slow)])
def test_run_interrupted_during_training(tmp_path, bench, capsys, monkeypatch, ensemble, at, kind, members):
    """Ctrl-C in the background training: exit 130, no summary, nothing half-written, and what
    was trained so far saved as models/background.interrupted (a single flow: its best weights;
    an ensemble: the finished members)."""
    from zfit_gbi.generators import load, training

    gen = {"type": "maf-affine", "layers": 2, "hidden": 16, "epochs": 3, "patience": 5, "batch_size": 256, "seed": 1, "ensemble": ensemble}
    cfg = _tiny_config(tmp_path, bench, background={"mass_shape": "exppoly2", "generator": gen})
    _InterruptingBar.calls = 0
    monkeypatch.setattr(training, "_progress", _InterruptingBar(at))
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 130
    assert "gbi: interrupted" in capsys.readouterr().err
    assert not (out / "summary.json").exists()
    assert not (out / "models" / "background").exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    kept = load(out / "models" / "background.interrupted")
    assert type(kept).__name__ == kind
    if kind == "Flow":
        assert kept.history.stopped == "interrupted"
        assert len(kept.history.val_loss) == 2  # Ctrl-C at the end of epoch 2: its weights were the best
    else:
        assert len(kept.members) == members


def test_run_data_driven(tmp_path, bench, capsys, monkeypatch):
    """signal.model: data-driven on the tiny config, one line changed (the simulation then gives
    p_S(m) only): the R-ANODE scan, its background-only calibration, the summary fields every
    mode has, the scan and calibration plots; and the same without a simulation (a Gaussian
    p_S(m) from signal.mass/width). Commands the mode does not have say so."""
    import yaml

    cfg = _tiny_config(tmp_path, bench)
    raw = yaml.safe_load(cfg.read_text())
    dd = {"w_range": [0.005, 0.2], "n_w": 3, "refine": 0, "folds": 2, "null_toys": 5}
    raw["signal"].update({"data_driven": dd})  # read by the data-driven mode only
    raw["signal"]["generator"]["jit_compile"] = False  # many short trainings of a tiny flow
    raw["background"]["generator"]["ensemble"] = 2  # the data are also scanned with each member alone
    raw["inference"]["upper_limit"] = {"cl": 0.95}
    raw["plots"] = {"formats": ["png"]}
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "dd"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--set", "signal.modle=data-driven"]) == 1
    assert "signal.modle" in capsys.readouterr().err
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--set", "signal.model=data-driven"]) == 0
    text = capsys.readouterr().out
    assert "signal yield (R-ANODE)" in text
    assert "mass-only fit yield" in text
    s = json.loads((out / "summary.json").read_text())
    assert s["signal_model"] == "data-driven"
    assert set(s) <= set(SUMMARY_SCHEMA), set(s) - set(SUMMARY_SCHEMA)  # every key documented
    assert "computed on: " in text
    y, r = s["signal_yield"], s["ranode"]
    assert y["value"] == pytest.approx(r["w_hat"] * s["n_events"]["signal_region"] / r["signal_fraction_in_signal_region"])
    assert y["error_low"] >= 0
    assert y["error_high"] >= 0
    assert len(r["w"]) == 3
    assert len(r["null"]["t_null"]) == 5
    # the jackknife over the 2 members (each left out: the other alone) joins the statistical
    # and training-noise errors of w
    bm = r["background_members"]
    assert len(bm["w_hat"]) == 2
    assert r["w_error_background"] == pytest.approx(np.sqrt(0.5 * sum((w - r["w_hat"]) ** 2 for w in bm["w_hat"])))
    to_fit = s["n_events"]["signal_region"] / r["signal_fraction_in_signal_region"]
    assert bm["error"] == pytest.approx(r["w_error_background"] * to_fit)
    assert bm["signal_yield"] == pytest.approx([w * to_fit for w in bm["w_hat"]])
    if r["w_interval"][0] > 0:
        total = np.sqrt(r["w_error_statistical"] ** 2 + r["w_error_training_noise"] ** 2 + r["w_error_background"] ** 2)
        assert r["w_interval"][1] - r["w_hat"] == pytest.approx(total)
    assert any("2 members and signal.data_driven.seeds is 1" in n for n in y["notes"])  # fewer than measured to be needed
    d = s["discovery"]
    assert d["calibrated"]["p0"] >= 1 / 6  # 5 toys: the empirical p is at least 1 / 6
    assert d["significance"] == d["calibrated"]["significance"]
    assert d["asymptotic"]["significance"] == pytest.approx(np.sqrt(d["q0"]))
    ul = s["upper_limit"]
    # the expected band: each toy's limit by the data's rule (the mass-only fit's without a maximum)
    from scipy.stats import norm

    lims, mass_only = np.array(r["null_upper_limit"]), ~np.array(r["null_parabolic_limit"])
    assert len(lims) == 5
    assert np.all(np.isfinite(lims[mass_only]) & (lims[mass_only] > 0))
    # a scan without a maximum never gives its own limit
    assert not np.any(np.array(r["null_parabolic_limit"]) & ~np.array(r["null_has_maximum"]))
    assert ul["expected"] == pytest.approx(np.quantile(lims[np.isfinite(lims)], norm.cdf([-2, -1, 0, 1, 2])))
    assert f"({mass_only.sum()} without a maximum above the background-only likelihood" in ul["calculator"]
    if np.isfinite(r["w_error_statistical"]) and max(r["log_likelihood"]) > 0:  # the scan's own one-sided limit
        assert ul["calculator"].startswith("R-ANODE scan")
        assert ul["observed"] > y["value"]
    else:  # no maximum above LL = 0: the scan bounds no signal its flows did not learn, so the mass-only fit's limit, with a note
        assert ul["calculator"].startswith("mass-only fit's CLs limit")
        assert 0 < ul["observed"] < np.inf
        assert ul["expected"][0] < ul["expected"][2] < ul["expected"][4]
        assert any("is the mass-only fit's" in n for n in y["notes"])
    assert s["results"]["zfit"]["signal_yield"] == y
    for name in ("ranode_scan.png", "ranode_calibration.png", "training_background.png"):
        assert name in s["plots"]
        assert (out / name).stat().st_size > 5000
    assert (out / "ranode_scan.json").exists()
    assert main(["plot", str(out)]) == 1
    assert "data-driven" in capsys.readouterr().err
    # gbi scan slides the windows with the mass: these data end at the fit window's edges
    assert main(["scan", str(cfg), "--out", str(tmp_path / "sc"), "--masses", "3.4", "3.6", "2", "--set", "signal.model=data-driven"]) == 1
    assert "slide with the scanned mass" in capsys.readouterr().err
    assert not (tmp_path / "sc").exists()  # nothing trained, nothing written

    raw["signal"]["model"] = "data-driven"
    del raw["signal"]["simulation"]  # no simulation at all: a Gaussian p_S(m)
    raw["signal"].update({"mass": 3.5, "width": 0.1, "data_driven": {**dd, "null_toys": 0}})
    cfg.write_text(yaml.safe_dump(raw))
    # and a scan without a maximum (held-out LL < 0 at every w: its flows learned no signal), so
    # that the limit is the mass-only fit's whatever the tiny flows do
    import zfit_gbi.data_driven
    from zfit_gbi.ranode import MixtureScan

    def falling(settings, x, m, la, lb, seed, progress):
        return MixtureScan(np.geomspace(0.005, 0.2, 3), -np.array([1.0, 5.0, 20.0]), np.zeros((3, 1)), len(x))

    monkeypatch.setattr(zfit_gbi.data_driven, "_scan", falling)
    assert main(["run", str(cfg), "--out", str(tmp_path / "dd2"), "--quiet", "--models", str(out / "models")]) == 0  # background only
    s2 = json.loads((tmp_path / "dd2" / "summary.json").read_text())
    assert "background generator" in s2["timings"]
    assert s2["config"]["background"]["generator"] == {"path": str(out / "models" / "background")}
    assert s2["discovery"]["calibrated"] is None
    assert "asymptotic" in s2["discovery"]["calculator"]
    ul2 = s2["upper_limit"]
    assert ul2["calculator"].startswith("mass-only fit's CLs limit")
    assert 0 < ul2["observed"] < np.inf  # the scan's own would be ~ its first w (LL(0.005) = -1)
    assert ul2["expected"][0] < ul2["expected"][2] < ul2["expected"][4]
    assert any("is the mass-only fit's" in n for n in s2["signal_yield"]["notes"])
    assert s2["signal_yield"]["error_high"] > 0  # [0, all signal-region events]
    assert s2["ranode"]["signal_fraction_in_signal_region"] == pytest.approx(0.9545, abs=1e-3)  # +-2 sigma of the Gaussian


def _sliding_config(tmp_path):
    import yaml

    from zfit_gbi.benchmark import ResonantBenchmark

    wide = ResonantBenchmark(fit_window=(2.7, 4.3))  # data beyond the configured fit window
    np.save(tmp_path / "data.npy", wide.sample(6000, 150, seed=5).values)
    cols = ["mjj", "mj1", "delta_mj", "tau21_j1", "tau21_j2", "label"]
    gen = {"type": "maf-affine", "layers": 2, "hidden": 16, "epochs": 3, "batch_size": 256, "seed": 1, "jit_compile": False}
    raw = {
        "data": {"path": "data.npy", "columns": cols, "resonant": "mjj", "features": cols[1:5], "bounds": {f: [0.0, 1.0] for f in cols[1:5]}},
        "windows": {"fit": [2.9, 4.1], "signal_region": [3.3, 3.7]},
        "background": {"mass_shape": "exppoly2", "generator": gen},
        "signal": {"model": "data-driven", "mass": 3.5, "width": 0.1, "generator": {**gen, "seed": 2},
                   "data_driven": {"w_range": [0.005, 0.2], "n_w": 3, "refine": 0, "folds": 2, "null_toys": 0}},
        "nuisances": {"generator": "none"},
        "inference": {"discovery": True},
        "plots": {"formats": ["png"]},
    }
    cfg = tmp_path / "dd.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def test_scan_data_driven_refuses_before_training(tmp_path, capsys):
    """A sliding-window scan (gbi scan, signal.model: data-driven) whose window at some mass
    leaves the data, or with --models (one window's generator), is an error before anything
    trains or is written."""
    cfg = _sliding_config(tmp_path)
    assert main(["scan", str(cfg), "--out", str(tmp_path / "far"), "--masses", "3.0", "3.6", "2", "--quiet"]) == 1
    assert "mass 3 (fit window [2.4, 3.6])" in capsys.readouterr().err
    assert not (tmp_path / "far").exists()
    models = tmp_path / "models"
    (models / "background").mkdir(parents=True)
    (models / "background" / "model.json").write_text("{}")
    assert main(["scan", str(cfg), "--out", str(tmp_path / "m"), "--masses", "3.4", "3.6", "2", "--quiet", "--models", str(models)]) == 1
    assert "serves one window only" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_scan_data_driven_slides_the_windows(tmp_path, capsys):
    """gbi scan with signal.model: data-driven is a sliding-window search: the fit window and
    the signal region move with the mass (widths kept), each window a full data-driven run in
    its own folder (background generator retrained on that window's sidebands). (slow: two
    trainings, 50 s; the refusals are in the default suite.)"""
    cfg = _sliding_config(tmp_path)
    out = tmp_path / "scan"
    assert main(["scan", str(cfg), "--out", str(out), "--masses", "3.4", "3.6", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "each window's gbi run" in printed
    s = json.loads((out / "scan.json").read_text())
    assert s["sliding_windows"] is True
    g = s["look_elsewhere"]  # two windows 0.2 apart, each 0.4 wide: 1.5 independent windows
    assert g["trials_factor"] == pytest.approx(1.5)
    assert g["local_p0"] == min(r["p0"] for r in s["rows"]) <= g["global_p0"]
    assert f"global Z {g['global_significance']:.2f}" in printed
    assert s["masses"] == [3.4, 3.6]
    n_sr = []
    for r, fit, sr in zip(s["rows"], ([2.8, 4.0], [3.0, 4.2]), ([3.2, 3.6], [3.4, 3.8]), strict=True):
        assert "error" not in r, r
        assert r["windows"]["fit"] == pytest.approx(fit)
        assert r["windows"]["signal_region"] == pytest.approx(sr)
        run = json.loads((out / r["folder"] / "summary.json").read_text())  # a complete data-driven run per window
        assert run["signal_model"] == "data-driven"
        assert run["config"]["windows"]["signal_region"] == pytest.approx(sr)
        assert run["config"]["signal"]["mass"] == r["mass"]
        assert (out / r["folder"] / "models" / "background" / "model.json").exists()
        assert r["fit_valid"] == run["fit_valid"]  # (tiny flows: the R-ANODE interval may hit the w grid's edge)
        assert r["signal_yield"] == run["signal_yield"]["value"]
        assert r["significance"] == run["discovery"]["significance"] >= 0
        assert r["background_error"] == 0.0  # one background member: no jackknife
        assert r["signal_yield_notes"] == run["signal_yield"].get("notes", [])
        n_sr.append(r["n_signal_region"])
    assert n_sr[0] != n_sr[1]
    assert "scan_p0.png" in s["plots"]


def test_scan_prints_each_windows_yield_notes(tmp_path, capsys, monkeypatch):
    """gbi scan prints a window's yield notes (data-driven: the background jackknife's warning)
    under the table, per mass (the scan itself stubbed: this is the printout only)."""
    import zfit_gbi.pipeline

    note = "the R-ANODE yield depends on the background generator: 446 events with all 3 members"
    rows = [{"mass": 3.4, "fit_valid": True, "signal_yield": 446.5, "signal_yield_error": 170.5, "significance": 1.3,
             "signal_yield_notes": [note], "background_error": 166.0},
            {"mass": 3.6, "fit_valid": True, "signal_yield": 12.0, "signal_yield_error": 9.0, "significance": 0.4,
             "signal_yield_notes": [], "background_error": 3.0},
            # a scan without a maximum has a limit (the mass-only fit's) and a Z, but no interval
            {"mass": 3.8, "fit_valid": False, "signal_yield": 40.0, "signal_yield_error": 900.0, "significance": 0.2,
             "observed": 307.0, "expected": [80.0, 110.0, 150.0, 210.0, 280.0], "signal_yield_notes": []},
            {"mass": 4.0, "fit_valid": False, "error": "only 12 events in the signal region"}]
    monkeypatch.setattr(zfit_gbi.pipeline, "scan", lambda *a, **k: {"rows": rows, "sliding_windows": True})
    cfg = _sliding_config(tmp_path)
    assert main(["scan", str(cfg), "--out", str(tmp_path / "s"), "--masses", "3.4", "3.6", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"note on the signal yield at 3.4: {note}" in printed
    assert "at 3.6:" not in printed
    line = next(ln for ln in printed.splitlines() if ln.strip().startswith("3.8"))
    assert "40.0 (no maximum)" in line
    assert "307.0" in line
    assert "150.0" in line
    assert "fit failed" in next(ln for ln in printed.splitlines() if ln.strip().startswith("4 "))

"""The ``gbi`` command, run in-process (TensorFlow starts once per test session)."""

from __future__ import annotations

import json

import pytest

from zfit_gbi.cli import main


def test_demo_small(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--n-background", "20000", "--n-signal", "100", "--epochs", "2",
                 "--layers", "2", "--hidden", "16", "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "Sideband-interpolation closure" in text
    assert "all SR" in text
    assert "time [s]" in text
    closure = json.loads((out / "closure.json").read_text())
    assert len(closure["bins"]) == 4
    sr = closure["signal_region"]
    assert sr["n"] > 1000
    # even a 2-epoch generator is a density close to the truth, not garbage
    assert abs(sr["kl_estimate"]) < 1.0
    assert not list(out.glob(".*.tmp"))
    assert (out / "background_generator" / "model.json").exists()

    assert main(["inspect", str(out / "background_generator")]) == 0
    text = capsys.readouterr().out
    assert "features: mj1, delta_mj, tau21_j1, tau21_j2" in text
    assert "context:  mjj" in text


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

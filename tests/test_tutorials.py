"""The tutorials run, in their smoke mode, in this process (no new TensorFlow start-up)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


@pytest.mark.parametrize("script", sorted(p.name for p in TUTORIALS.glob("[0-9][0-9]_*.py")))
def test_tutorial_smoke(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, "--smoke"])
    runpy.run_path(str(TUTORIALS / script), run_name="__main__")  # the tutorial asserts its own result
    assert capsys.readouterr().out.strip()

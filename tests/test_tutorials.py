"""The tutorials run as a user runs them (``python tutorials/NN_name.py --smoke``).

They run in one child process each: a tutorial creates zfit parameters with fixed names, and
zfit (0.28) reuses compiled graphs across same-named parameters of earlier models in the same
process, which can poison a later fit; a fresh process is also exactly what a user does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
NEEDS_DATA = {"04_lhco_rnd.py": SHARED / "lhco_rnd_sr", "05_cms_dimuon.py": SHARED / "cms_dimuon"}  # real data: --data FOLDER


# smoke runs of over a minute on 2 cores whose pieces are tested elsewhere (test_pyhf_*.py,
# test_inference.py, test_ranode.py, test_classifier.py, test_cli.py) run with the slow suite
# (pytest -m slow) to keep CI well under its 30 minutes
SLOW = {"02_cls_limits.py", "03_binned_pyhf.py", "04_lhco_rnd.py"}


@pytest.mark.parametrize("script", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                    for n in sorted(p.name for p in TUTORIALS.glob("[0-9][0-9]_*.py"))])
def test_tutorial_smoke(script, tmp_path):
    cmd = [sys.executable, str(TUTORIALS / script), "--smoke"]
    if script in NEEDS_DATA:
        folder = NEEDS_DATA[script].resolve()
        if not folder.is_dir():
            pytest.skip(f"{script} needs the real data in {folder} (absent)")
        cmd += ["--data", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # the tutorial asserts its own result
    assert proc.stdout.strip()


@pytest.mark.parametrize("name", sorted(p.name for p in TUTORIALS.glob("*.yaml")))
def test_tutorial_configs_validate(name):
    """Every tutorial YAML is a valid config (a key typo would otherwise show only in a long run)
    whose data path, relative to the YAML's folder, points into ``../shared/data``."""
    from zfit_gbi.config import load_config

    cfg = load_config(TUTORIALS / name, check_paths=False)
    assert cfg.data.path.resolve().is_relative_to(SHARED.resolve())

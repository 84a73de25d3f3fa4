"""Feldman-Cousins against the profile-likelihood interval on a small signal, end to end with the CLI.

The embedded benchmark with 10,000 background events and 5 injected signal events (seed 31;
signal simulation seed 32), a 4-block affine background flow: ``gbi run`` on it, then
``gbi interval`` (``--n-toys`` per tested value, default grid, worker processes). Writes
``results/interval_small_signal.json`` with both intervals, the belt and the wall times, and
leaves the run folder (plots, ``interval.png``) in ``--out``.

Run: ``python benchmarks/interval_small_signal.py --out /tmp/fc`` (about 20 minutes on 2 CPU
cores with ``--n-toys 50 --executor processes:2``, the settings of the README's numbers).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml
from _common import report  # type: ignore[import-not-found]

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.cli import main as gbi


def write_inputs(folder: Path) -> Path:
    """The data, the signal simulation and the config of the run; returns the config's path."""
    b = ResonantBenchmark()
    ev = b.sample(10_000, 5, seed=31)
    np.save(folder / "data.npy", ev.values)
    np.save(folder / "sim.npy", b.signal_simulation(10_000, seed=32).values)
    cols = list(ev.columns)
    gen = {"type": "maf-affine", "layers": 4, "hidden": 48, "epochs": 30, "batch_size": 256, "learning_rate": 3e-3, "patience": 6, "seed": 1}
    cfg = {"data": {"path": "data.npy", "columns": cols, "resonant": "mjj", "features": list(b.features),
                    "bounds": {k: list(v) for k, v in b.bounds.items()}},
           "windows": {"fit": list(b.windows.fit), "signal_region": list(b.windows.signal_region)},
           "background": {"mass_shape": "dijet", "generator": gen},
           "signal": {"simulation": {"path": "sim.npy", "columns": cols}, "mass_shape": "gauss",
                      "generator": {**gen, "layers": 3, "hidden": 32, "seed": 2}},
           "nuisances": {"generator": "none"}, "inference": {"discovery": True}}
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="working folder (inputs, the run folder res/)")
    ap.add_argument("--n-toys", type=int, default=50)
    ap.add_argument("--executor", default="processes:2")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = write_inputs(args.out)
    res = args.out / "res"
    t0 = time.perf_counter()
    if gbi(["run", str(cfg), "--out", str(res), "--quiet"]) != 0:
        raise SystemExit("gbi run failed")
    t1 = time.perf_counter()
    if gbi(["interval", str(res), "--n-toys", str(args.n_toys), "--executor", args.executor, "--quiet"]) != 0:
        raise SystemExit("gbi interval failed")
    t2 = time.perf_counter()
    s = json.loads((res / "summary.json").read_text())["signal_yield"]
    iv = json.loads((res / "interval.json").read_text())
    rows = [{"method": "profile likelihood (Minos)", "low": s["value"] - s["error_low"], "high": s["value"] + s["error_high"], "best": s["value"]},
            {"method": "Feldman-Cousins (gbi interval)", "low": iv["low"], "high": iv["high"], "best": iv["poi_hat"]}]
    report("interval_small_signal", rows, {"n_toys": args.n_toys, "executor": args.executor, "run_seconds": t1 - t0,
                                           "interval_seconds": t2 - t1, "belt": {k: iv[k] for k in ("values", "t_observed", "critical", "n_toys")}})


if __name__ == "__main__":
    main()

"""PAWS-style GBI (``signal.model: parametrized``) against the simulation mode when the
simulation's signal parameter is wrong, on the embedded benchmark.

The data hold a signal whose ``mj1`` centre (the analogue of the LHCO daughter mass m_Y) is
``--truth`` TeV (default 0.27, between the grid points). Fitted on the same events, with the same
sideband-trained background ensemble (the demo's settings):

* ``simulation @ 0.15``: HI-SIGMA mode with a signal flow trained on a simulation at the demo's
  mj1 = 0.15 TeV (a wrong signal hypothesis: what a search with one simulated point does);
* ``simulation @ truth``: the same with a simulation at the true mj1 (the reference a search
  cannot have);
* ``parametrized``: PAWS-style: one classifier trained on simulations at 8 mj1 points
  (0.10 ... 0.45 TeV, 5000 events each), the signal's mj1 fitted together with its yield;
* ``oracle``: the exact densities at the true mj1.

Discovery Z is asymptotic (the parametrized row's at its fitted mj1: local). No limits (time).
Run: ``python benchmarks/paws.py`` (about 5 minutes on 2 CPU cores: the three runs took 3.5);
``--quick``: smaller networks and samples.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import report  # type: ignore[import-not-found]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--truth", type=float, default=0.27, help="the signal's mj1 centre in the data (TeV)")
    ap.add_argument("--n-signal", type=int, default=300)
    ap.add_argument("--n-background", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    logging.getLogger("zfit_gbi").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    from importlib.resources import files

    from zfit_gbi.benchmark import ResonantBenchmark
    from zfit_gbi.config import load_config, override_config
    from zfit_gbi.pipeline import run

    bench = ResonantBenchmark(signal_mj1=args.truth)
    n_bkg = 30_000 if args.quick else args.n_background
    data = bench.sample(n_bkg, args.n_signal, seed=args.seed)
    grid = np.linspace(0.10, 0.45, 8)
    n_sim = 2000 if args.quick else 5000
    tmp = Path(tempfile.mkdtemp(prefix="gbi_paws_"))
    np.save(tmp / "data.npy", data.values)
    np.save(tmp / "signal_simulation.npy", ResonantBenchmark().signal_simulation(20_000, seed=args.seed + 1).values)
    np.save(tmp / "sim_truth.npy", bench.signal_simulation(20_000, seed=args.seed + 1).values)
    np.save(tmp / "sim_grid.npy", bench.signal_simulation(n_sim, seed=args.seed + 2, mj1=grid).values)
    (tmp / "demo.yaml").write_text((files("zfit_gbi") / "configs" / "demo.yaml").read_text())
    base = load_config(tmp / "demo.yaml")
    cols = [*bench.columns, "label"]
    common = {"nuisances": {"generator": "none"}, "inference": {"backend": "zfit", "upper_limit": None, "profile_points": 0, "minos": True}}
    if args.quick:
        common["background"] = {"generator": {"ensemble": 1, "layers": 3, "hidden": 32, "epochs": 12}}
    runs = {
        "simulation @ 0.15": {"signal": {"simulation": {"path": str(tmp / "signal_simulation.npy"), "columns": cols}}},
        "simulation @ truth": {"signal": {"simulation": {"path": str(tmp / "sim_truth.npy"), "columns": cols}}},
        "parametrized": {"signal": {"model": "parametrized",
                                    "simulation": {"path": str(tmp / "sim_grid.npy"), "columns": [*cols, "signal_mj1"]},
                                    "parametrized": {"parameters": ["signal_mj1"],
                                                     "classifier": {"hidden": [64, 64], "epochs": 15} if args.quick else {}}}},
    }
    rows = []
    models = None
    for name, change in runs.items():
        cfg = override_config(base, {**common, **change}, source=name)
        if models is not None:  # the same background ensemble for every row
            cfg = override_config(cfg, {"background": {"generator": {"path": str(models)}}}, source=name)
        out = tmp / name.replace(" ", "_").replace("@", "at")
        t = time.perf_counter()
        s = run(cfg, out, quiet=True)
        seconds = time.perf_counter() - t
        models = models or out / "models" / "background"
        y = s["signal_yield"]
        sp = (s.get("signal_parameters") or {}).get("signal_mj1")
        rows.append({"method": name, "injected_signal": args.n_signal, "signal_yield": round(y["value"], 1),
                     "error_low": round(y["error_low"], 1), "error_high": round(y["error_high"], 1),
                     "significance": round(s["discovery"]["significance"], 2),
                     "fitted_mj1": None if sp is None else round(sp["value"], 4), "mj1_error": None if sp is None else round(sp["error"], 4),
                     "seconds": round(seconds, 1)})
    o = bench.oracle(data)
    rows.append({"method": "oracle", "injected_signal": args.n_signal, "signal_yield": round(o["signal_yield"], 1),
                 "error_low": round(o["error"], 1), "error_high": round(o["error"], 1), "significance": round(o["significance"], 2),
                 "fitted_mj1": None, "mj1_error": None, "seconds": 0.0})
    report("paws_quick" if args.quick else "paws", rows, {"truth_mj1": args.truth, "simulation_grid": grid.tolist(),
                                                          "n_background": n_bkg, "quick": args.quick})


if __name__ == "__main__":
    main()

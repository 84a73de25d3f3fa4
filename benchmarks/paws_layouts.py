"""The PAWS-style signal parameter against the generator's layout (why layout 1 stays the default).

The test suite's PAWS fit (``tests/test_paws.py::test_fit_recovers_yield_and_parameter``), repeated
for each ``FlowConfig.layout`` and training seed of its small background generator (4 x 2x32 affine
MAF, 25 epochs on the sidebands of 40k background events): a parametrized classifier trained on
simulation at 0.10-0.40 TeV against that generator, data with 400 signal events at mj1 = 0.25 TeV
in 20000 background events, the fitted parameter and yield.

Rows: ``layout``, ``seed``, ``theta`` and ``theta_error`` (TeV), ``signal_yield`` and its error.

Run: ``python benchmarks/paws_layouts.py`` (about 8 minutes on 2 CPU cores: 4 seeds x 2 layouts).
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import report  # type: ignore[import-not-found]

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.classifier import ClassifierConfig
from zfit_gbi.generators import Flow, FlowConfig, TrainConfig
from zfit_gbi.inference import _conditional_nll, fit
from zfit_gbi.model import build_model
from zfit_gbi.paws import ClassifierRatio, train_parametrized_classifier

GRID = [0.1, 0.2, 0.3, 0.4]  # simulated signal_mj1 points, as tests/test_paws.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layouts", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 7, 9])
    args = ap.parse_args()
    bench = ResonantBenchmark()
    w = bench.windows
    sb = bench.sample(40000, 0, seed=12)
    sb = sb.select(w.in_sidebands(sb["mjj"]))
    sim = bench.signal_simulation(1500, seed=31, mj1=GRID)
    sr = sim.select(w.in_signal_region(sim["mjj"]))
    data = ResonantBenchmark(signal_mj1=0.25).sample(20000, 400, seed=8)
    rows = []
    for seed in args.seeds:
        for layout in args.layouts:
            gen = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=4, hidden_units=(32, 32), layout=layout))
            gen.fit(sb.array(bench.features), sb["mjj"], train=TrainConfig(epochs=25, batch_size=512, learning_rate=3e-3, patience=5,
                                                                               progress=False, seed=seed))
            clf = train_parametrized_classifier(sr.array(bench.features), sr["mjj"], sr["signal_mj1"], gen, parameters=["signal_mj1"],
                                                config=ClassifierConfig(hidden=(32, 32), epochs=12, batch_size=256, patience=3), seed=3)
            tag = f"pl{layout}s{seed}"
            ratio = ClassifierRatio.build(clf, gen, sr["mjj"], n_mc=10000, seed=1, prefix=tag, mass_range=w.signal_region)
            model = build_model(resonant="mjj", features=bench.features, windows=w, background_generator=gen, signal_generator=None,
                                signal_ratio=ratio, data_masses=data["mjj"], signal_masses=sr["mjj"], background_mass="exppoly2",
                                prefix=f"{tag}_")
            (theta,) = model.signal_params
            model.reset(len(data))
            loss = model.loss(data)
            grid = np.linspace(0.1, 0.4, 7)
            theta.set_value(float(grid[int(np.argmin(_conditional_nll(loss, theta, grid)))]))
            s = fit(loss, model.poi, minos=False)
            rows.append({"layout": layout, "seed": seed, "theta": s.values[theta.name], "theta_error": s.errors[theta.name],
                         "signal_yield": s.poi_value, "signal_yield_error": s.errors[model.poi.name]})
            print(rows[-1], flush=True)
    report("paws_layouts", rows, {"truth": {"theta": 0.25, "n_signal": 400}})


if __name__ == "__main__":
    main()

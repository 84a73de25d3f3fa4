"""Asymptotic CLs (unbinned weighted-sample Asimov) against toys on the 5-D benchmark model.

The GBI model of the embedded benchmark (background p_B(m) exp-poly x sideband-trained flow,
signal Gauss x simulation-trained flow) is fitted to background-only data; the CLs upper limit
on the signal yield is computed twice through hepstats ``UpperLimit`` on the same scan points:
with :class:`zfit_gbi.inference.UnbinnedAsimovCalculator` (asymptotic) and with hepstats'
``FrequentistCalculator`` (toys sampled from the 5-D model, each refitted). Discovery is
compared on a sample with injected signal (Z about 2, where toys resolve p0).

The toy limits carry Monte Carlo error: CLs near 0.05 from n toys has a binomial error of
about sqrt(0.05 * 0.95 / n) / (1 - p_b); the table prints that error propagated to the limit
(through the local slope of CLs) so the agreement is judged against it.

Run: ``python benchmarks/asymptotic_vs_toys.py [--toys 300]`` (about 25 minutes on 2 CPU
cores with 300 toys per point; ``--quick``: 60 toys, about 6 minutes).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from _common import report

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.generators import Flow, FlowConfig, TrainConfig
from zfit_gbi.inference import discovery, fit, upper_limit
from zfit_gbi.model import build_model

N_BKG = 10_000
N_SIG_DISCOVERY = 8


def _limit_error(lim, n_toys: int, alpha: float = 0.05) -> float:
    """Monte Carlo error of a toy limit from the binomial error of CLs at the crossing."""
    x, cls = np.asarray(lim.scan["poi"]), np.asarray(lim.scan["cls_observed"])
    i = int(np.argmax(cls <= alpha))
    if i == 0:
        return math.nan
    slope = (cls[i] - cls[i - 1]) / (x[i] - x[i - 1])
    return abs(math.sqrt(alpha * (1 - alpha) / n_toys) / slope) if slope else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toys", type=int, default=300, help="toys per hypothesis (default 300)")
    ap.add_argument("--quick", action="store_true", help="60 toys per hypothesis")
    ap.add_argument("--epochs", type=int, default=25, help="generator training epochs (default 25)")
    args = ap.parse_args()
    n_toys = 60 if args.quick else args.toys

    bench = ResonantBenchmark()
    t0 = time.perf_counter()
    side = bench.sample(40_000, 0, seed=12)
    side = side.select(bench.windows.in_sidebands(side["mjj"]))
    fast = TrainConfig(epochs=args.epochs, batch_size=512, learning_rate=3e-3, patience=5, progress=False, seed=3)
    bkg = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=4, hidden_units=(32, 32)), seed=1)
    bkg.fit(side.array(bench.features), side["mjj"], train=fast)
    sim = bench.signal_simulation(6000, seed=41)
    sig = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=3, hidden_units=(32, 32)), seed=2)
    sig.fit(sim.array(bench.features), sim["mjj"], train=fast)
    t_train = time.perf_counter() - t0

    data0 = bench.sample(N_BKG, 0, seed=2024)
    data1 = bench.sample(N_BKG, N_SIG_DISCOVERY, seed=2025)
    model = build_model(
        resonant="mjj", features=bench.features, windows=bench.windows, background_generator=bkg,
        signal_generator=sig, data_masses=data0["mjj"], signal_masses=sim["mjj"], background_mass="exppoly2",
    )
    model.reset(len(data0))
    loss0 = model.loss(data0)
    best = fit(loss0, model.poi, minos=False)
    print(f"trained in {t_train:.0f} s; background-only fit: n_sig = {best.poi_value:.1f} +- {best.errors[model.poi.name]:.1f}")

    rows = []
    t = time.perf_counter()
    asym = upper_limit(loss0, model.poi, calculator="asymptotic", n_points=10, n_asimov=100_000, seed=7)
    t_asym = time.perf_counter() - t
    # toys exactly at the asymptotic limits: if the asymptotic formulae hold, the toys' CLs there
    # is 1 - CL (observed at the observed limit, the expected median at the expected one, ...)
    grid = np.unique(np.round([0.0, asym.observed, *asym.expected[1:4], 1.5 * asym.expected[4]], 6))
    if not np.all(np.isfinite(grid)):  # a NaN POI would send the minimizer into a NaN region
        print(f"warning: asymptotic limits not all finite ({asym.problems or 'scan did not cross'}); toys skip them")
        grid = grid[np.isfinite(grid)]
    print(f"asymptotic: observed {asym.observed:.2f}, expected {np.round(asym.expected, 2)}; toy grid {np.round(grid, 2)}")
    model.reset(len(data0))
    asym_grid = upper_limit(loss0, model.poi, calculator="asymptotic", scan=grid, n_asimov=100_000, seed=7, refine=False)
    model.reset(len(data0))
    t = time.perf_counter()
    toys = upper_limit(loss0, model.poi, calculator="toys", scan=grid, n_toys=n_toys, seed=7)
    t_toys = time.perf_counter() - t
    lims = {"asymptotic": asym, "asymptotic (toy grid)": asym_grid, "toys": toys}
    for (kind, lim), sec in zip(lims.items(), (t_asym, math.nan, t_toys), strict=True):
        rows.append({
            "quantity": "CLs limit", "calculator": kind, "observed": lim.observed,
            "-2s": lim.expected[0], "-1s": lim.expected[1], "median": lim.expected[2], "+1s": lim.expected[3], "+2s": lim.expected[4],
            "mc_error": _limit_error(lim, n_toys) if kind == "toys" else 0.0, "seconds": sec,
        })
    n_disc = 2 * n_toys  # discovery toys (600 in the full run)
    for kind in ("asymptotic", "toys"):
        model.reset(len(data1))
        t = time.perf_counter()
        d = discovery(model.loss(data1), model.poi, calculator=kind, n_toys=n_disc, n_asimov=100_000, seed=8)
        mc = math.sqrt(max(d.p0 * (1 - d.p0), 1 / n_disc) / n_disc) if kind == "toys" else 0.0
        rows.append({"quantity": "discovery Z (p0 in median)", "calculator": kind, "observed": d.significance, "-2s": math.nan, "-1s": math.nan,
                     "median": d.p0, "+1s": math.nan, "+2s": math.nan, "mc_error": mc, "seconds": time.perf_counter() - t})
    a, b = lims["asymptotic"], lims["toys"]
    at = {}
    for name, key, value in (("observed", "cls_observed", asym.observed), ("-1s", "cls_expected_m1", asym.expected[1]),
                             ("median", "cls_expected", asym.expected[2]), ("+1s", "cls_expected_p1", asym.expected[3])):
        if not np.isfinite(value):
            continue
        i = int(np.argmin(np.abs(grid - value)))
        c = float(toys.scan[key][i])
        at[name] = {"poi": float(grid[i]), "cls_toys": c, "binomial_error": math.sqrt(0.025 * 0.975 / n_toys) / 0.5 if name == "median" else math.nan}
        print(f"toys' CLs at the asymptotic {name} limit {grid[i]:.2f}: {c:.3f} (asymptotic: {1 - asym.cl:.3f})")
    rel = {"observed": b.observed / a.observed - 1, "median": b.expected[2] / a.expected[2] - 1}
    print(f"\ntoys / asymptotic - 1: observed {rel['observed']:+.1%}, expected median {rel['median']:+.1%}")
    report("asymptotic_vs_toys", rows, {"n_toys": n_toys, "n_background": N_BKG, "n_signal_discovery": N_SIG_DISCOVERY,
                                        "relative_difference": rel,
                                        "grid": grid.tolist(), "toys_cls_at_asymptotic_limits": at, "cls_curves": {k: v.scan for k, v in lims.items()}})


if __name__ == "__main__":
    main()

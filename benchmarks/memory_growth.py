"""Memory over many trainings and toy fits in one process: what an R-ANODE scan, an ensemble or
a toy study leaves behind.

Trainings of one architecture share one traced (and, with ``jit_compile``, XLA-compiled) step
function, and evaluations one evaluator; each toy builds its own zfit likelihood graph. Once
they are finished nothing should hold them; this script measures the resident memory (RSS), the
live TensorFlow ``FuncGraph`` objects and the time after each of ``--trainings`` flow trainings
with an evaluation (with and without XLA, the choice a user has in ``TrainConfig.jit_compile``,
and with XLA but every flow traced anew, as before 2026-11-27) and after each of ``--toys`` toy
fits of a GBI model, and reports the growth per item (a least-squares slope over the items after
the first, in MB).

Run: ``python benchmarks/memory_growth.py`` (about 3 minutes on 2 cores; ``--quick``: 1 minute).
``--flow rqs --parts trainings --trainings 4 --epochs 4 --name memory_growth_rqs``: the same for
the package's default spline generator (5 x 2x64), with the first epoch (where a step is traced)
and the later ones timed apart (about 4 minutes).
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
from _common import report  # type: ignore[import-not-found]

from zfit_gbi._tf import tf  # noqa: F401  (TensorFlow imported quietly, before FuncGraph)
from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.generators import Flow, FlowConfig, TrainConfig
from zfit_gbi.model import build_model
from zfit_gbi.toys import toy_study


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def func_graphs() -> int:
    """Live TensorFlow graphs of traced functions."""
    from tensorflow.python.framework.func_graph import FuncGraph

    return sum(isinstance(o, FuncGraph) for o in gc.get_objects())


def slope(values: list[float]) -> float:
    """Growth per item: least-squares slope, the first item (imports, first traces) left out."""
    y = np.asarray(values[1:], float)
    return float(np.polyfit(np.arange(len(y)), y, 1)[0]) if len(y) >= 2 else float("nan")


def measure(what: str, n: int, step) -> dict:
    """Run ``step(i)`` for ``i < n``, with memory and live graphs after each (garbage collected)."""
    rss, graphs, seconds = [], [], []
    for i in range(n):
        t0 = time.perf_counter()
        step(i)
        gc.collect()
        seconds.append(time.perf_counter() - t0)
        rss.append(rss_mb())
        graphs.append(func_graphs())
        print(f"  {what} {i + 1}/{n}: {rss[-1]:.0f} MB, {graphs[-1]} graphs", flush=True)
    return {"what": what, "items": n, "rss_first_mb": rss[0], "rss_last_mb": rss[-1], "growth_mb_per_item": slope(rss),
            "graphs_first": graphs[0], "graphs_last": graphs[-1], "seconds_per_item": float(np.median(seconds))}


FLOWS = {"affine": FlowConfig(n_layers=4, hidden_units=(32, 32)),  # 4 x 2x32 affine MAF blocks
         "rqs": FlowConfig(transform="rqs", n_layers=5, hidden_units=(64, 64), n_bins=8)}  # the package's default generator


def trainings(bench: ResonantBenchmark, n: int, jit: bool, epochs: int, *, shared: bool = True, flow: str = "affine") -> dict:
    """``n`` trainings of a new flow each, and one evaluation of it; ``shared=False`` clears
    the shared training steps and evaluators before each (every flow traced anew: what the
    package did before 2026-11-27 and what a training loop written per flow does)."""
    from zfit_gbi.generators import flows, training

    ev = bench.sample(20_000, 0, seed=1)
    sb = ev.select(bench.windows.in_sidebands(ev["mjj"]))
    x, m = sb.array(bench.features), sb["mjj"]
    first, later, evaluation = [], [], []

    def train(i: int) -> None:
        if not shared:
            training._WORKSPACES.clear()
            flows._EVALUATORS.clear()
        f = Flow(bench.features, bench.bounds, ("mjj",), FLOWS[flow])
        h = f.fit(x, m, train=TrainConfig(epochs=epochs, batch_size=256, seed=i, progress=False, jit_compile=jit))
        first.append(h.epoch_seconds[0])
        later.extend(h.epoch_seconds[1:])
        t0 = time.perf_counter()
        f.log_prob(x, m)
        evaluation.append(time.perf_counter() - t0)

    what = f"{flow} training + evaluation ({'XLA' if jit else 'no XLA'}{'' if shared else ', traced per flow'})"
    row = measure(what, n, train)
    # the first epoch holds the step's tracing (and XLA compilation) where it happens
    return {**row, "first_epoch_seconds": float(np.median(first)), "later_epoch_seconds": float(np.median(later)) if later else float("nan"),
            "evaluation_seconds": float(np.median(evaluation))}


def toys(bench: ResonantBenchmark, n: int) -> dict:
    sb_events = bench.sample(20_000, 0, seed=2)
    sb = sb_events.select(bench.windows.in_sidebands(sb_events["mjj"]))
    bkg = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=4, hidden_units=(32, 32)))
    bkg.fit(sb.array(bench.features), sb["mjj"], epochs=5, batch_size=256, progress=False, seed=3)
    sim = bench.signal_simulation(4000, seed=4)
    sig = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=2, hidden_units=(16, 16)))
    sig.fit(sim.array(bench.features), sim["mjj"], epochs=5, batch_size=256, progress=False, seed=5)
    data = bench.sample(3000, 0, seed=6)
    model = build_model(resonant="mjj", features=bench.features, windows=bench.windows, background_generator=bkg,
                        signal_generator=sig, data_masses=data["mjj"], signal_masses=sim["mjj"], background_mass="exppoly2",
                        prefix="mem_")
    return measure("toy fit (sample, fit, 68 % interval)", n,
                   lambda i: toy_study(model, n_signal=40, n_background=3000, n_toys=1, first=i, seed=7, progress=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trainings", type=int, default=10)
    ap.add_argument("--toys", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="4 trainings each, 4 toys")
    ap.add_argument("--parts", nargs="+", choices=("trainings", "toys"), default=["trainings", "toys"])
    ap.add_argument("--flow", choices=sorted(FLOWS), default="affine", help="the flow trained: affine 4 x 2x32, or rqs 5 x 2x64 (8 bins)")
    ap.add_argument("--name", default="memory_growth")
    args = ap.parse_args()
    if args.quick:
        args.trainings, args.toys = 4, 4
    bench = ResonantBenchmark()
    rows = []
    if "trainings" in args.parts:
        rows = [trainings(bench, args.trainings, jit, args.epochs, flow=args.flow) for jit in (False, True)]
        rows.append(trainings(bench, args.trainings, True, args.epochs, shared=False, flow=args.flow))
    if "toys" in args.parts:
        rows.append(toys(bench, args.toys))
    report(args.name, rows, {"settings": vars(args), "notes": [
        "growth_mb_per_item: least-squares slope of RSS after each item, the first item left out",
        f"flows: {args.flow} ({FLOWS[args.flow]}), 4 features given m_jj, trained on the benchmark's sideband events, then log p of them",
        "traced per flow: the shared training steps and evaluators cleared before each training (the behaviour before 2026-11-27)",
    ]})


if __name__ == "__main__":
    main()

"""Likelihood scaling: NLL + gradient time and peak memory against the number of events.

The GBI model of the package (``zfit_gbi.model.build_model``: dijet mass shape x conditional
flow background, Gaussian x flow signal; 5 observables: m_jj and 4 features) on benchmark events,
10^4 to 10^7 of them, each size in its own process so that its peak memory is its own.

Per size:

* ``density_seconds``: the first loss + gradient call, which evaluates both generators once on
  every event (batched, 16384 events at a time) and caches the per-event densities;
* ``nll_grad_seconds``: the median of later loss + gradient calls with changed parameters
  (the generators are fixed, so their densities come from the cache: this is the minimizer's
  cost per step; ``generator_passes`` counts the network evaluations: 1 per generator);
* ``peak_memory_mb``: the process's peak resident memory, ``baseline_memory_mb`` the same right
  before the events were made (TensorFlow and zfit alone);
* ``fit_seconds`` (Migrad + Hesse) and ``limit_seconds`` (asymptotic CLs, hepstats) where asked.

``uncached_nll_grad_seconds``: what a plain custom zfit PDF does (the networks evaluated inside
zfit's graph on every call), up to ``--baseline-max`` events.

Run: ``python benchmarks/likelihood.py`` (about 8 minutes on 2 CPU cores, most of it the
limits and the 10^7-event process); ``--quick``: 10^4 to 10^6 events, a fit on 10^5 and no limit, about 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import report


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train(models: Path, epochs: int) -> None:
    from zfit_gbi.benchmark import ResonantBenchmark
    from zfit_gbi.generators import Flow, FlowConfig, io

    bench = ResonantBenchmark()
    side = bench.sample(60_000, 0, seed=1)
    side = side.select(bench.windows.in_sidebands(side["mjj"]))
    sim = bench.signal_simulation(20_000, seed=2)
    cfg = FlowConfig(n_layers=5, hidden_units=(64, 64))
    for name, ev in (("background", side), ("signal", sim)):
        flow = Flow(bench.features, bench.bounds, ("mjj",), cfg)
        flow.fit(ev.array(bench.features), ev["mjj"], epochs=epochs, progress=False, seed=3)
        io.save(flow, models / name)


def build(models: Path, ev, prefix: str, cache: bool):
    from zfit_gbi.benchmark import ResonantBenchmark
    from zfit_gbi.generators import io
    from zfit_gbi.model import build_model

    bench = ResonantBenchmark()
    sim = bench.signal_simulation(20_000, seed=2)
    model = build_model(resonant="mjj", features=bench.features, windows=bench.windows,
                        background_generator=io.load(models / "background"), signal_generator=io.load(models / "signal"),
                        data_masses=ev["mjj"], signal_masses=sim["mjj"], prefix=prefix)
    for pdf in (model.background, model.signal):
        pdf.use_cache = cache
    return model


def worker(args: argparse.Namespace) -> dict:
    from zfit_gbi._tf import tf  # noqa: F401
    from zfit_gbi.benchmark import ResonantBenchmark
    from zfit_gbi.inference import fit, upper_limit

    n = args.n
    base = peak_mb()
    bench = ResonantBenchmark()
    n_sig = int(0.005 * n)
    ev = bench.sample(n - n_sig, n_sig, seed=11)
    model = build(args.models, ev, "c_", cache=True)
    model.reset(n)
    loss = model.loss(ev)
    params = list(loss.get_params())
    out: dict = {"n_events": n, "n_params": len(params)}
    t = time.perf_counter()
    loss.value_gradient(params)
    out["density_seconds"] = time.perf_counter() - t
    times = []
    for i in range(args.calls):
        model.n_sig.set_value(0.001 * n * (i + 1) / args.calls)
        t = time.perf_counter()
        loss.value_gradient(params)
        times.append(time.perf_counter() - t)
    out["nll_grad_seconds"] = float(np.median(times))
    out["generator_passes"] = model.background.cache.misses + model.signal.cache.misses
    if n <= args.baseline_max:
        plain = build(args.models, ev, "u_", cache=False)
        plain.reset(n)
        ploss = plain.loss(ev)
        pparams = list(ploss.get_params())
        ploss.value_gradient(pparams)  # tracing
        ptimes = []
        for i in range(max(3, args.calls // 3)):
            plain.n_sig.set_value(0.001 * n * (i + 1))
            t = time.perf_counter()
            ploss.value_gradient(pparams)
            ptimes.append(time.perf_counter() - t)
        out["uncached_nll_grad_seconds"] = float(np.median(ptimes))
    if n in args.fit:
        model.reset(n)
        t = time.perf_counter()
        res = fit(loss, model.poi, minos=False)
        out["fit_seconds"] = time.perf_counter() - t
        out["signal_yield"] = res.poi_value
        out["injected_signal"] = n_sig
    if n in args.limit:
        t = time.perf_counter()
        lim = upper_limit(loss, model.poi, cl=0.95, calculator="asymptotic", n_points=8)
        out["limit_seconds"] = time.perf_counter() - t
        out["observed_limit"] = lim.observed
    out["baseline_memory_mb"] = base
    out["peak_memory_mb"] = peak_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 10_000_000])
    ap.add_argument("--fit", type=int, nargs="*", default=[100_000, 1_000_000], help="sizes that also get a fit")
    ap.add_argument("--limit", type=int, nargs="*", default=[100_000, 1_000_000], help="sizes that also get a CLs limit")
    ap.add_argument("--calls", type=int, default=10, help="timed loss + gradient calls per size")
    ap.add_argument("--baseline-max", type=int, default=100_000, help="largest size for the uncached baseline")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="10^4 to 10^6 events, a fit on 10^5, no limit")
    ap.add_argument("--name", default="likelihood", help="results/<name>.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.quick:
        args.sizes, args.fit, args.limit, args.epochs = [10_000, 100_000, 1_000_000], [100_000], [], 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        print(f"training the two generators ({args.epochs} epochs) ...", flush=True)
        train(models, args.epochs)
        for n in args.sizes:
            print(f"{n:>10,} events ...", flush=True)
            cmd = [sys.executable, __file__, "--worker", "--n", str(n), "--models", str(models), "--calls", str(args.calls),
                   "--baseline-max", str(args.baseline_max), "--fit", *map(str, args.fit), "--limit", *map(str, args.limit)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"the {n}-event process failed (exit {proc.returncode})")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cols = ["n_events", "density_seconds", "nll_grad_seconds", "uncached_nll_grad_seconds", "generator_passes",
            "fit_seconds", "limit_seconds", "baseline_memory_mb", "peak_memory_mb"]
    table = [{c: r.get(c, float("nan")) for c in cols} | {k: v for k, v in r.items() if k not in cols} for r in rows]
    report(args.name, table)
    big = [r for r in rows if r["n_events"] == 1_000_000]
    if big:
        print(f"NLL + gradient on 10^6 events: {big[0]['nll_grad_seconds']:.3f} s (target < 1 s)")


if __name__ == "__main__":
    main()

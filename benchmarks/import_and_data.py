"""Import time of the package (paid by every ``gbi`` command), benchmark generation speed, and
memory-bounded flow evaluation on 10^7 events.

Import times are measured in fresh processes, each ``--repeat`` times (median), next to the
imports a user pays anyway (tensorflow, zfit). Prints a table and writes
``benchmarks/results/import_and_data.json``.

Run: ``python benchmarks/import_and_data.py`` (about 3 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

from _common import report


def import_time(stmt: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        code = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n-eval", type=int, default=10_000_000)
    args = ap.parse_args()
    rows = []
    for what, stmt in [
        ("import zfit_gbi (top level)", "import zfit_gbi"),
        ("import tensorflow", "import tensorflow"),
        ("import zfit", "import zfit"),
        ("import zfit_gbi.generators", "import zfit_gbi.generators"),
        ("import zfit_gbi.pdfs (TF + TFP + zfit)", "import zfit_gbi.pdfs"),
    ]:
        rows.append({"what": what, "seconds": import_time(stmt, args.repeat), "note": "fresh process, median"})

    import numpy as np

    from zfit_gbi.benchmark import ResonantBenchmark
    from zfit_gbi.generators import Flow, FlowConfig

    bench = ResonantBenchmark()
    t = time.perf_counter()
    ev = bench.sample(1_000_000, 5000, seed=1)
    rows.append({"what": "benchmark.sample(10^6 + 5000 signal)", "seconds": time.perf_counter() - t, "note": f"{len(ev)} events"})
    t = time.perf_counter()
    bench.log_prob_background(ev)
    rows.append({"what": "exact log p_B on 10^6 events", "seconds": time.perf_counter() - t, "note": ""})

    flow = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=5, hidden_units=(64, 64)))
    flow.fit(ev.array(bench.features)[:20000], ev["mjj"][:20000], epochs=1, progress=False)
    # the same evaluation without XLA (plain tf.function, what a user writes by hand), on 10^6 events
    rng = np.random.default_rng(0)
    x6, m6 = rng.random((1_000_000, 4)), 2.9 + 1.2 * rng.random(1_000_000)
    times = {}
    for jit in (False, True):
        Flow.eval_jit = jit
        flow._log_prob_fn = None
        flow.log_prob(x6[:1000], m6[:1000])  # compile
        t = time.perf_counter()
        flow.log_prob(x6, m6)
        times[jit] = time.perf_counter() - t
        rows.append({"what": f"Flow.log_prob on 1e+06 events, {'XLA' if jit else 'plain tf.function'}", "seconds": times[jit], "note": f"{1e6 / times[jit]:.3g} events/s"})
    n = args.n_eval
    x = rng.random((n, 4))
    m = 2.9 + 1.2 * rng.random(n)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    lp = flow.log_prob(x, m)
    dt = time.perf_counter() - t
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append({
        "what": f"Flow.log_prob on {n:.0e} events (5x64 MAF, float64)", "seconds": dt,
        "note": f"{n / dt:.3g} events/s; peak RSS +{rss1 - rss0:.0f} MB over inputs ({x.nbytes / 2**20 + m.nbytes / 2**20:.0f} MB)",
    })
    assert np.all(np.isfinite(lp))
    report("import_and_data", rows)


if __name__ == "__main__":
    main()

"""How much the per-dataset density cache saves in a zfit fit.

The same extended fit (exponential mass shape x conditional flow background + a parametric
signal) on the benchmark, with the flow PDF's cache on (the default) and off (the network runs in
zfit's graph on every loss and gradient call, which is what a plain custom zfit PDF does).
Prints a table and writes ``benchmarks/results/pdf_caching.json``.

Run: ``python benchmarks/pdf_caching.py [--events 20000]`` (about 2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import zfit
from _common import report

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.generators import Flow, FlowConfig
from zfit_gbi.pdfs import JointFlowPDF, to_zfit_data


def build(bench, flow, cache, tag):
    mjj = zfit.Space("mjj", limits=bench.fit_window)
    lam = zfit.Parameter(f"lam_{tag}", -2.0, -20, 5)
    nb = zfit.Parameter(f"nb_{tag}", 10000, 0, 1e6)
    ns = zfit.Parameter(f"ns_{tag}", 50, -1000, 1e5)
    bkg = JointFlowPDF(zfit.pdf.Exponential(lam, obs=mjj), flow, extended=nb, cache=cache)
    comps = [zfit.pdf.Gauss(3.5, 0.035, obs=mjj)]
    for f, (mu, s) in zip(bench.features, [(0.16, 0.05), (0.3, 0.085), (0.45, 0.15), (0.45, 0.15)], strict=True):
        comps.append(zfit.pdf.TruncatedGauss(mu, s, low=0.0, high=1.0, obs=zfit.Space(f, limits=(0.0, 1.0))))
    sig = zfit.pdf.ProductPDF(comps, extended=ns)
    return zfit.pdf.SumPDF([bkg, sig]), (lam, nb, ns), bkg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args()
    bench = ResonantBenchmark()
    train = bench.sample(60000, 0, seed=1)
    flow = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=5, hidden_units=(64, 64)))
    flow.fit(train.array(bench.features), train["mjj"], epochs=10, progress=False)
    ev = bench.sample(args.events, args.events // 100, seed=2)
    rows = []
    for cache in (True, False):
        model, params, bkg = build(bench, flow, cache, "c" if cache else "n")
        data = to_zfit_data(ev, model.space)
        loss = zfit.loss.ExtendedUnbinnedNLL(model, data)
        t = time.perf_counter()
        loss.value_gradient(params)
        first = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(args.calls):
            params[0].set_value(-2.0 + 0.01 * i)
            loss.value_gradient(params)
        per_call = (time.perf_counter() - t) / args.calls
        for p, v in zip(params, (-2.0, 10000, 50), strict=True):
            p.set_value(v)
        t = time.perf_counter()
        res = zfit.minimize.Minuit(gradient="zfit").minimize(loss)
        fit = time.perf_counter() - t
        rows.append({
            "cache": "on" if cache else "off (network in graph)", "events": args.events,
            "first_call_s": first, "per_value_gradient_ms": 1e3 * per_call, "fit_s": fit,
            "fit_calls": int(res.info.get("n_eval", -1)) if hasattr(res, "info") else -1,
            "signal_yield": float(res.params[params[2]]["value"]), "valid": bool(res.valid),
            "network_passes": bkg.cache.misses if cache else "every call",
        })
    speedup = rows[1]["per_value_gradient_ms"] / rows[0]["per_value_gradient_ms"]
    report("pdf_caching", rows, {"speedup_per_call": speedup})
    print(f"cache speed-up per loss+gradient call: x{speedup:.1f}")
    assert np.isclose(rows[0]["signal_yield"], rows[1]["signal_yield"], rtol=1e-3), "cached and uncached fits disagree"


if __name__ == "__main__":
    main()

"""The binned route against the unbinned one on the embedded benchmark (the `gbi demo` events).

Rows (95 % CLs limits on the signal yield, asymptotic; observed and expected -2s..+2s):

* the oracle's median expected limit (exact densities, background yield known);
* the unbinned GBI fit (zfit + hepstats), from the demo's summary;
* the binned workspace (4 m bins x 10 learned-score bins, the generator eigen-variations as the
  custom ``gbi_expshape`` modifier, MC ``staterror``, sideband ``normsys``) with pyhf, and the
  *same* binned model converted to zfit (:func:`pyhf_gbi.zfit_binned.to_zfit`) with hepstats:
  the two must agree within 2 %;
* the portable twin (standard ``histosys``) with pyhf and with zfit + hepstats;
* what the binned limit is made of: pyhf without the generator variations, and without them
  and without the MC staterror.

A second table (``fits`` in the JSON) gives, for the unbinned fit and each binned pyhf model,
the fitted yield with its profile-likelihood errors, the discovery Z, and the generator
nuisances (theta, in units of their prior width) at the background-only fit (POI = 0) and at
the best fit: how far the variations move to absorb the signal-region excess when no signal
is allowed.

Run: ``python benchmarks/binned_vs_unbinned.py [--demo DIR]``. ``DIR`` is a finished
``gbi demo --out DIR`` folder (its config runs both backends); without it the demo is run first
into ``gbi-demo-binned`` (about 6 minutes on 2 CPU cores). The limits themselves take about
10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from _common import print_table, report

KEYS = ["-2s", "-1s", "median", "+1s", "+2s"]


def _row(route: str, model: str, observed: float, expected, seconds: float) -> dict:
    return {"route": route, "model": model, "observed": float(observed), **dict(zip(KEYS, map(float, expected), strict=True)),
            "seconds": round(seconds, 1)}


def _without(spec: dict, types: set[str], names: set[str] | None = None) -> dict:
    out = copy.deepcopy(spec)
    for c in out["channels"]:
        for s in c["samples"]:
            s["modifiers"] = [m for m in s["modifiers"] if not (m["type"] in types and (names is None or m["name"] in names))]
    return out


def _fit_row(model: str, spec: dict, variations: set[str]) -> dict:
    """The binned fit, discovery Z and the generator nuisances at POI = 0 and at the best fit."""
    import numpy as np
    import pyhf

    from pyhf_gbi import infer as B

    t = time.perf_counter()
    f = B.fit(spec)
    d = B.discovery(spec)
    with B.numpy_backend():
        m, data = B.model_and_data(spec)
        bounds = [tuple(b) for b in m.config.suggested_bounds()]
        at0 = np.asarray(pyhf.infer.mle.fixed_poi_fit(0.0, data, m, par_bounds=bounds))
    names = [n for n in m.config.par_order if n in variations]
    return {"model": model, "yield": f.poi_value, "err_low": f.poi_error_low, "err_high": f.poi_error_high, "Z": d.significance,
            **{f"{n} at 0": float(at0[m.config.par_slice(n)][0]) for n in names},
            **{f"{n} at best": float(f.values[n]) for n in names}, "seconds": round(time.perf_counter() - t, 1)}


def oracle_expected(n_background: float, seed: int = 3) -> float:
    """Median expected CLs limit (q~_mu asymptotics) with the benchmark's exact densities and
    the background yield known: sqrt(q_mu,A) = 1.96 with
    q_mu,A = 2 [mu - B E_B ln(1 + mu r / B)], r = p_S / p_B, the expectation by importance
    sampling over pooled background and signal events (balance heuristic)."""
    import numpy as np
    from scipy.optimize import brentq

    from zfit_gbi.benchmark import ResonantBenchmark

    bench = ResonantBenchmark()
    w = bench.windows
    bkg = bench.sample(2_000_000, 0, seed=seed)
    sig = bench.sample(0, 400_000, seed=seed + 1)
    ratios = []
    for ev in (bkg, sig):
        ev = ev.select(w.in_fit(ev["mjj"]))
        ratios.append(np.exp(bench.log_prob_signal(ev) - bench.log_prob_background(ev)))
    r = np.concatenate(ratios)
    weight = 1.0 / (len(ratios[0]) + len(ratios[1]) * r)  # E_B[f] = sum f / (n_B + n_S r)

    def q(mu: float) -> float:
        return 2.0 * (mu - n_background * float(np.sum(weight * np.log1p(mu * r / n_background))))

    return float(brentq(lambda mu: q(mu) - 1.96**2, 0.01, 10 * np.sqrt(n_background)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", type=Path, default=None, help="a finished `gbi demo --out DIR` folder")
    args = ap.parse_args()
    demo = args.demo
    if demo is None:
        from zfit_gbi.cli import main as gbi

        demo = Path("gbi-demo-binned")
        if not (demo / "result" / "summary.json").exists():
            gbi(["demo", "--out", str(demo), "--quiet"])
    result = demo / "result"
    summary = json.loads((result / "summary.json").read_text())
    if "pyhf" not in summary.get("results", {}):
        raise SystemExit(f"{result}/summary.json has no binned results: run the demo with inference.backend both")

    import zfit

    from pyhf_gbi import infer as B
    from pyhf_gbi.zfit_binned import to_zfit
    from zfit_gbi.inference import upper_limit

    rows = []
    t = time.perf_counter()
    oracle = oracle_expected(float(summary["background_yield"]["value"]))
    rows.append({"route": "oracle", "model": "exact densities, B known", "observed": float("nan"), **dict.fromkeys(KEYS, float("nan")),
                 "median": oracle, "seconds": round(time.perf_counter() - t, 1)})
    u = summary["results"]["zfit"]["upper_limit"]
    rows.append(_row("unbinned zfit+hepstats", "GBI likelihood, eigen nuisances", u["observed"], u["expected"], summary["timings"]["upper limit"]))
    custom = json.loads((result / "workspace.json").read_text())
    portable = json.loads((result / "workspace_portable.json").read_text())
    variations = set(summary["results"]["pyhf"]["variations"])
    for i, (name, spec) in enumerate((("gbi_expshape variations", custom), ("histosys variations", portable))):
        t = time.perf_counter()
        lim = B.upper_limit(spec)
        rows.append(_row("binned pyhf", name, lim.observed, lim.expected, time.perf_counter() - t))
        t = time.perf_counter()
        zm = to_zfit(spec, prefix=f"b{i}_")
        zlim = upper_limit(zm.loss, zm.poi, calculator="asymptotic")
        rows.append(_row("binned zfit+hepstats", name, zlim.observed, zlim.expected, time.perf_counter() - t))
        zfit.param.set_values(list(zm.params.values()), [zm.inits[k] for k in zm.params])
    for name, spec in (("no generator variations", _without(custom, {"gbi_expshape", "histosys"}, variations)),
                       ("no variations, no staterror", _without(custom, {"gbi_expshape", "histosys", "staterror"}))):
        t = time.perf_counter()
        lim = B.upper_limit(spec)
        rows.append(_row("binned pyhf", name, lim.observed, lim.expected, time.perf_counter() - t))
    z = summary["results"]["zfit"]
    fits = [{"model": "unbinned zfit (demo summary)", "yield": float(z["signal_yield"]["value"]),
             "err_low": float(z["signal_yield"].get("error_low", float("nan"))),
             "err_high": float(z["signal_yield"].get("error_high", float("nan"))),
             "Z": float(z["discovery"]["significance"])}]
    for name, spec in (("gbi_expshape variations", custom), ("histosys variations", portable),
                       ("no generator variations", _without(custom, {"gbi_expshape", "histosys"}, variations))):
        fits.append(_fit_row(name, spec, variations))
    pairs = {}
    for r in rows:
        pairs.setdefault(r["model"], {})[r["route"]] = r
    agreement = {}
    for model, p in pairs.items():
        if {"binned pyhf", "binned zfit+hepstats"} <= set(p):
            a, b = p["binned pyhf"], p["binned zfit+hepstats"]
            agreement[model] = {k: b[k] / a[k] - 1.0 for k in ["observed", *KEYS]}
    for model, d in agreement.items():
        print(f"zfit+hepstats / pyhf - 1 ({model}): " + ", ".join(f"{k} {v:+.2%}" for k, v in d.items()))
    print("\nfits (yield with profile-likelihood errors, discovery Z, generator nuisances at POI = 0 and at the best fit):")
    print_table(fits)
    print()
    report("binned_vs_unbinned", rows, {"agreement_zfit_over_pyhf_minus_1": agreement, "demo": str(demo),
                                        "bins": summary["results"]["pyhf"]["bins"], "fits": fits})


if __name__ == "__main__":
    main()

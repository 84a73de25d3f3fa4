"""Do the generator-error nuisances cover the generator's own error? A retraining toy study.

With few sideband events the background generator p_B(x | m) is noticeably wrong, and wrong
differently for every training sample: the fitted signal yield inherits a bias that the
statistical error of the fit does not know about, so the nuisance-free fit under-covers. The
eigen-variations of a bootstrap ensemble (methods.md section 5) should widen the interval by
about the right amount.

For each of ``--retrainings`` independent sideband samples of ``--train-events`` events, a
bootstrap ensemble of ``--members`` small flows is trained; for each of ``--toys`` independent
data sets (background + ``N_SIG`` injected signal events) the yield is fitted twice:

* ``none``:  the ensemble average, no nuisance parameter;
* ``eigen``: the same plus ``members - 1`` Gaussian-constrained eigen-variations;
* ``spurious``: the ensemble average plus the spurious-signal nuisance on the yield, its width
  the spread of the yields fitted to the same data set with each member alone
  (:func:`zfit_gbi.inference.spurious_signal`);
* ``eigen+spurious``: both nuisances;
* ``envelope`` (with ``--envelope``): discrete profiling over the members, one fit each
  (:func:`zfit_gbi.inference.envelope_interval`).

Reported per treatment: the pull mean and width ((n_hat - n_true) / sigma, Hesse), the
coverage of the Minos 68 % interval, and the mean interval width. Every retraining gets its own
data sets (no shared fluctuation). The spread of the per-retraining mean bias estimates the
generator's own error (plus data noise / sqrt(toys)); the median post-fit error of the eigen
nuisances shows how strongly the data constrain them (1 = prior only). A reference run with a large training sample
(``--train-events 60000``) shows the nuisance-free fit covering when the generator is good.

Run: ``python benchmarks/generator_nuisances.py --members 5`` for the README's numbers (10
retrainings x 5 members x 4 toys: 47 minutes on 2 busy CPU cores, 2.2 GB of memory; 14 GB before
the constraint graphs were freed, 2026-11-28);
``--quick`` (3 retrainings x 3 members x 2 toys) for a 5-minute smoke version; ``--report``
recomputes the rows from the stored fits.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import zfit
from _common import RESULTS, report

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.generators import FlowConfig, FlowEnsemble, TrainConfig
from zfit_gbi.inference import FitError, envelope_interval, fit, spurious_signal
from zfit_gbi.model import build_model
from zfit_gbi.nuisances import EigenVariation, SpuriousSignal

N_BKG = 40_000
N_SIG = 200


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-events", type=int, default=3000, help="sideband events per training sample (default 3000)")
    ap.add_argument("--retrainings", type=int, default=None, help="retrainings (default 10; --quick 3)")
    ap.add_argument("--members", type=int, default=3, help="bootstrap ensemble size (default 3)")
    ap.add_argument("--toys", type=int, default=4, help="data sets per retraining (default 4)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 40; --quick 15)")
    ap.add_argument("--quick", action="store_true", help="3 retrainings x 2 toys, 15 epochs")
    ap.add_argument("--envelope", action="store_true", help="also the envelope over the ensemble members (one fit per member)")
    ap.add_argument("--no-spurious", action="store_true", help="without the spurious-signal treatments")
    ap.add_argument("--name", default="generator_nuisances", help="results/<name>.json")
    ap.add_argument("--report", action="store_true", help="recompute the rows of results/<name>.json from its stored fits")
    args = ap.parse_args()
    if args.report:
        _recompute(args.name)
        return
    if args.quick:
        args.toys = 2
    if args.epochs is None:
        args.epochs = 15 if args.quick else 40
    if args.retrainings is None:
        args.retrainings = 3 if args.quick else 10

    bench = ResonantBenchmark()
    sim = bench.signal_simulation(20_000, seed=41)
    cfg = FlowConfig(n_layers=4, hidden_units=(32, 32))
    sig = FlowEnsemble.train(sim.array(bench.features), sim["mjj"], features=bench.features, bounds=bench.bounds,
                             context_names=("mjj",), k=1, config=cfg, bootstrap=False,
                             train=TrainConfig(epochs=args.epochs, batch_size=512, learning_rate=3e-3, patience=6, progress=False, seed=5)).members[0]

    records = []
    t0 = time.perf_counter()
    for r in range(args.retrainings):
        ev = bench.sample(int(args.train_events / 0.62) + 100, 0, seed=100 + r)  # ~62 % of the fit window are sidebands
        ev = ev.select(bench.windows.in_sidebands(ev["mjj"]))
        ev = ev.select(np.arange(min(len(ev), args.train_events)))
        tc = TrainConfig(epochs=args.epochs, batch_size=256, learning_rate=3e-3, patience=6, progress=False, seed=1000 * r)
        ens = FlowEnsemble.train(ev.array(bench.features), ev["mjj"], features=bench.features, bounds=bench.bounds,
                                 context_names=("mjj",), k=args.members, config=cfg, train=tc, bootstrap=True)
        # independent data sets for every retraining: pulls share no data fluctuation
        datasets = [bench.sample(N_BKG, N_SIG, seed=5000 + 100 * r + t, poisson=True) for t in range(args.toys)]
        n_true = [int((d["label"] == 1).sum()) for d in datasets]
        sr_m = datasets[0].select(bench.windows.in_signal_region(datasets[0]["mjj"]))["mjj"]
        common = {"resonant": "mjj", "features": bench.features, "windows": bench.windows, "signal_generator": sig,
                  "data_masses": datasets[0]["mjj"], "signal_masses": sim["mjj"], "background_mass": "dijet"}
        var = EigenVariation.from_ensemble(ens, sr_m, n_components=args.members - 1, n_mc=20_000, seed=r, prefix=f"r{r}_eig")
        models = {"none": build_model(background_generator=ens, prefix=f"r{r}none_", **common),
                  "eigen": build_model(background_generator=ens, variation=var, prefix=f"r{r}eigen_", **common)}
        members = []
        if args.envelope or not args.no_spurious:
            members = [build_model(background_generator=mem, prefix=f"r{r}m{k}_", **common) for k, mem in enumerate(ens.members)]
        for t, data in enumerate(datasets):
            fitted = dict(models)
            if not args.no_spurious:  # the width from this data set's fits with each member alone
                for mk in members:
                    mk.reset(len(data))
                try:
                    ss = spurious_signal([mk.loss(data) for mk in members], [mk.poi for mk in members], prefix=f"r{r}t{t}_ss")
                except FitError as err:
                    print(f"retraining {r} toy {t} spurious: {err}")
                else:  # a SpuriousSignal serves one model: the second gets its own with the same width
                    fitted["spurious"] = build_model(background_generator=ens, spurious_signal=ss, prefix=f"r{r}t{t}sp_", **common)
                    fitted["eigen+spurious"] = build_model(background_generator=ens, variation=var, prefix=f"r{r}t{t}es_",
                                                           spurious_signal=SpuriousSignal(ss.width, ss.yields, prefix=f"r{r}t{t}_ss2"), **common)
            if args.envelope:
                for mk in members:
                    mk.reset(len(data))
                try:
                    env = envelope_interval([mk.loss(data) for mk in members], [mk.poi for mk in members])
                    records.append({"retraining": r, "toy": t, "treatment": "envelope", "n_true": n_true[t], "value": env["value"],
                                    "error": 0.5 * (env["error_low"] + env["error_high"]), "error_low": env["error_low"],
                                    "error_high": env["error_high"], "nuisances": {}, "members": env["values"]})
                except FitError as err:
                    print(f"retraining {r} toy {t} envelope: {err}")
            for kind, model in fitted.items():
                model.reset(len(data))
                try:
                    s = fit(model.loss(data), model.poi, minos=True)
                except FitError as err:
                    print(f"retraining {r} toy {t} {kind}: {err}")
                    continue
                records.append({"retraining": r, "toy": t, "treatment": kind, "n_true": n_true[t], "value": s.poi_value,
                                "error": s.errors[model.poi.name], "error_low": s.poi_error_low, "error_high": s.poi_error_high,
                                "nuisances": {p.name: [s.values[p.name], s.errors[p.name]] for p in model.nuisances
                                              if model.spurious is None or p is not model.spurious.param},
                                "spurious_width": model.spurious.width if model.spurious is not None else None})
            zfit.run.clear_graph_cache()  # a model per data set: its graphs would stay cached
        done = [x for x in records if x["retraining"] == r]
        print(f"[{time.perf_counter() - t0:6.0f} s] retraining {r + 1}/{args.retrainings}: "
              + ", ".join(f"{x['treatment']} {x['value'] - x['n_true']:+.1f}/{x['error']:.1f}" for x in done[:6]), flush=True)

    rows = _rows(records)
    report(args.name, rows, {"train_events": args.train_events, "retrainings": args.retrainings, "members": args.members,
                             "toys": args.toys, "epochs": args.epochs, "n_background": N_BKG, "n_signal": N_SIG, "fits": records,
                             "note": ("pulls within one retraining share the generator's error: the errors quoted assume independence and are optimistic; "
                                     "retraining_spread is the spread of the per-retraining mean bias (it includes data noise / sqrt(toys))")})


def _rows(records: list[dict]) -> list[dict]:
    """One row per treatment from the fits: pulls (n_hat - n_true) / Hesse error (mean, width,
    RMS), coverage of the Minos interval, mean interval, mean bias, and the spread between
    retrainings of the per-retraining mean bias (the generator's own error, plus data noise /
    sqrt(toys)); ``generator_error`` is that spread with the data noise (``data_noise``)
    taken out in quadrature."""
    rows = []
    # the data's share of the per-retraining spread: the statistical error (the nuisance-free
    # fit's, which holds no generator error) over sqrt(data sets per retraining)
    plain = [x for x in records if x["treatment"] == "none"]
    per_retraining = len(plain) / len({x["retraining"] for x in plain}) if plain else math.nan
    data_noise = math.sqrt(np.mean([x["error"] ** 2 for x in plain]) / per_retraining) if plain else math.nan
    for kind in ("none", "eigen", "spurious", "eigen+spurious", "envelope"):
        rec = [x for x in records if x["treatment"] == kind]
        if not rec:
            continue
        v, tru, err = (np.array([x[k] for x in rec]) for k in ("value", "n_true", "error"))
        lo, hi = np.array([x["error_low"] for x in rec]), np.array([x["error_high"] for x in rec])
        pull = (v - tru) / err
        n = len(pull)
        by_retraining = [np.mean([x["value"] - x["n_true"] for x in rec if x["retraining"] == i]) for i in sorted({x["retraining"] for x in rec})]
        nuis_err = [e for x in rec for _, e in x["nuisances"].values()]
        widths = [x["spurious_width"] for x in rec if x.get("spurious_width") is not None]
        rows.append({
            "treatment": kind, "fits": n, "pull_mean": float(pull.mean()), "pull_mean_err": float(pull.std(ddof=1) / math.sqrt(n)),
            "pull_width": float(pull.std(ddof=1)), "pull_width_err": float(pull.std(ddof=1) / math.sqrt(2 * (n - 1))),
            "pull_width_mad": float(1.4826 * np.median(np.abs(pull - np.median(pull)))), "pull_rms": float(np.sqrt(np.mean(pull**2))),
            "coverage_68": float(np.mean((tru >= v - lo) & (tru <= v + hi))), "coverage_err": float(math.sqrt(0.68 * 0.32 / n)),
            "mean_interval": float(np.mean(lo + hi)), "mean_bias": float(np.mean(v - tru)),
            "retraining_spread": float(np.std(by_retraining, ddof=1)), "data_noise": data_noise,
            "generator_error": math.sqrt(max(float(np.var(by_retraining, ddof=1)) - data_noise**2, 0.0)),
            "nuisance_postfit_error": float(np.median(nuis_err)) if nuis_err else math.nan,
            "spurious_width": float(np.median(widths)) if widths else math.nan,
        })
    return rows


def _recompute(name: str) -> None:
    """The rows of ``results/<name>.json`` again from its stored fits (the run's date and settings stay)."""
    path = RESULTS / f"{name}.json"
    doc = json.loads(path.read_text())
    doc["rows"] = _rows(doc["fits"])
    path.write_text(json.dumps(doc, indent=2, default=float))
    for row in doc["rows"]:
        print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    print(f"rewrote {path}")


if __name__ == "__main__":
    main()

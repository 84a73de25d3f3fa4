"""Sideband interpolation of the background generator, measured with the exact density.

The closure test of ``validation.py`` sees the generated background through a classifier; here
the benchmark's exact p(x | m) gives the generator's error directly: KL(true || generator) of
p(x | m) at fixed m across the fit window, for the generator trained on the sidebands (what
GBI does) and for its twin trained on as many true signal-region background events (what no
analysis has: no interpolation). Inside the signal region the difference between the two
columns is the interpolation's error; in the sidebands the first column is the plain
estimation error, which grows towards high m where the falling spectrum leaves few events.

Rows: ``m``, ``region`` (SB / SR), ``kl_sideband_trained``, ``kl_signal_region_trained`` (nats,
each from ``--samples`` true events at that m, with its Monte Carlo error).

Run: ``python benchmarks/interpolation.py`` (about 4 minutes on 2 CPU cores: the package's
default generator, maf-rqs 5 x 2x64 with 8 bins, a 3-member bootstrap ensemble, trained on the
sidebands of 10k fit-window events as in ``validation.py``); ``--quick``: 8 epochs, 5000 samples.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from _common import report  # type: ignore[import-not-found]

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.generators import FlowConfig, FlowEnsemble, TrainConfig

GEN_DEFAULT = FlowConfig(transform="rqs", n_layers=5, hidden_units=(64, 64), n_bins=8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-background", type=int, default=10_000, help="fit-window events whose sidebands train the generator")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--samples", type=int, default=20_000, help="true events per mass point")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="8 epochs, 5000 samples per mass point")
    ap.add_argument("--name", default="interpolation", help="results/<name>.json")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.samples = 8, 5000
    b = ResonantBenchmark()
    w = b.windows
    data = b.sample(args.n_background, 0, seed=args.seed)
    sb = data.select(w.in_sidebands(data["mjj"]))
    sr = b.sample(8 * args.n_background, 0, seed=args.seed + 23)
    sr = sr.select(w.in_signal_region(sr["mjj"]))
    sr = sr.select(np.arange(len(sr)) < len(sb))
    tc = TrainConfig(epochs=args.epochs, batch_size=256, learning_rate=3e-3, patience=6, progress=False, seed=args.seed)
    gens = {}
    for name, ev in (("sideband_trained", sb), ("signal_region_trained", sr)):
        print(f"training the {name.replace('_', ' ')} generator on {len(ev)} events ...", flush=True)
        gens[name] = FlowEnsemble.train(ev.array(b.features), ev["mjj"], features=b.features, bounds=b.bounds, context_names=("mjj",),
                                        k=3, config=GEN_DEFAULT, train=tc, bootstrap=True)
    rng = np.random.default_rng(args.seed + 5)
    lo, hi = w.fit
    rows = []
    for m in np.linspace(lo + 0.02, hi - 0.02, 13):
        mm = np.full(args.samples, m)
        x = b.sample_background_features(mm, rng)
        truth = b.log_prob_background_features(x, mm)
        row = {"m": float(m), "region": "SR" if w.signal_region[0] <= m < w.signal_region[1] else "SB"}
        for name, g in gens.items():
            d = truth - np.asarray(g.log_prob(x, mm[:, None]))
            row[f"kl_{name}"] = float(np.mean(d))
            row[f"kl_{name}_error"] = float(np.std(d) / math.sqrt(len(d)))
        rows.append(row)
    report(args.name, rows, {"generator": GEN_DEFAULT.__dict__, "n_sideband_events": len(sb), "epochs": args.epochs,
                                   "samples_per_mass": args.samples, **summary(rows, sum(w.signal_region) / 2)})
    print(summary(rows, sum(w.signal_region) / 2))


def summary(rows: list[dict], centre: float) -> dict:
    """The sideband-trained generator's KL excess over its signal-region twin: mean over the
    signal-region points and at the point nearest the centre (nats, with its error)."""
    sr = [r for r in rows if r["region"] == "SR"]
    c = min(sr, key=lambda r: abs(r["m"] - centre))
    return {"mean_kl_excess_in_signal_region": float(np.mean([r["kl_sideband_trained"] - r["kl_signal_region_trained"] for r in sr])),
            "kl_excess_at_centre": c["kl_sideband_trained"] - c["kl_signal_region_trained"],
            "kl_excess_at_centre_error": math.hypot(c["kl_sideband_trained_error"], c["kl_signal_region_trained_error"]), "centre": c["m"]}


if __name__ == "__main__":
    main()

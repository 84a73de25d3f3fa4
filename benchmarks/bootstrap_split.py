"""Bootstrap ensembles and early stopping: where the validation events come from.

A bootstrap member trains on a resample of the events drawn with replacement. Resampled first
and split into training and validation events after (what ``FlowEnsemble.train`` did until
2026-11-28, and what resampling by hand and calling ``Flow.fit`` still does), copies of most
validation events are also training events: the validation loss keeps falling while the flow
overfits, and early stopping never stops. ``FlowEnsemble.train(bootstrap=True)`` now holds the
validation events out before the resampling (distinct events the member never trains on).

Three 3-member ensembles of the same architecture on the same sideband events, per seed:

* ``resample, then split``: each member ``Flow.fit`` on a bootstrap resample (the old way);
* ``bootstrap (held-out validation)``: ``FlowEnsemble.train(bootstrap=True)``;
* ``no resampling``: ``FlowEnsemble.train(bootstrap=False)`` (members differ by seed only).

Rows: ``seed``, ``ensemble``, ``kl_signal_region`` (KL of the true p(x | m) against the
ensemble over true signal-region background events, nats, with its Monte Carlo error),
``best_epochs`` and ``epochs_run`` of the members.

Run: ``python benchmarks/bootstrap_split.py`` (about 4 minutes on 2 CPU cores: the package's
default spline architecture, maf-rqs 5 x 2x64, on the sidebands of 10k fit-window events of the
embedded benchmark, 30 epochs at 3e-3 with patience 6, as ``interpolation.py``);
``--transform affine`` the demo's 4 x 2x48 MAF.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from _common import report  # type: ignore[import-not-found]
from interpolation import GENERATORS  # type: ignore[import-not-found]

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.generators import Flow, FlowConfig, FlowEnsemble, TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-background", type=int, default=10_000, help="fit-window events whose sidebands train the generators")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--transform", choices=tuple(GENERATORS), default="rqs")
    ap.add_argument("--name", default="bootstrap_split", help="results/<name>.json")
    args = ap.parse_args()
    b = ResonantBenchmark()
    w = b.windows
    cfg = FlowConfig(**GENERATORS[args.transform])
    rows = []
    for seed in args.seeds:
        data = b.sample(args.n_background, 0, seed=seed)
        sb = data.select(w.in_sidebands(data["mjj"]))
        x, m = sb.array(b.features), sb["mjj"]
        test = b.sample(40_000, 0, seed=seed + 99)
        test = test.select(w.in_signal_region(test["mjj"]))
        xt, mt = test.array(b.features), test["mjj"]
        tc = TrainConfig(epochs=args.epochs, batch_size=256, learning_rate=3e-3, patience=6, progress=False, seed=seed)
        common = {"features": b.features, "bounds": b.bounds, "context_names": ("mjj",), "k": 3, "config": cfg, "train": tc}
        members = []
        for i in range(3):  # the old way, by hand: resample, then Flow.fit splits the resample
            idx = np.random.default_rng(10_000 + seed + i).integers(0, len(x), len(x))
            f = Flow(b.features, b.bounds, ("mjj",), cfg, seed=seed + i)
            f.fit(x[idx], m[idx], train=TrainConfig(**{**tc.__dict__, "seed": seed + i}))
            members.append(f)
        ensembles = {"resample, then split": FlowEnsemble(members),
                     "bootstrap (held-out validation)": FlowEnsemble.train(x, m, bootstrap=True, **common),
                     "no resampling": FlowEnsemble.train(x, m, bootstrap=False, **common)}
        for name, ens in ensembles.items():
            d = b.log_prob_background_features(xt, mt) - np.asarray(ens.log_prob(xt, mt[:, None]))
            rows.append({"seed": seed, "ensemble": name, "kl_signal_region": float(np.mean(d)),
                         "kl_signal_region_error": float(np.std(d) / math.sqrt(len(d))),
                         "best_epochs": [f.history.best_epoch + 1 for f in ens.members],
                         "epochs_run": [len(f.history.val_loss) for f in ens.members]})
            print(rows[-1], flush=True)
    report(args.name, rows, {"generator": GENERATORS[args.transform], "n_sideband_events": len(sb), "epochs": args.epochs})


if __name__ == "__main__":
    main()

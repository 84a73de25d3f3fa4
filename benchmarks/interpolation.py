"""Sideband interpolation of the background generator, measured with the exact density.

The closure test of ``validation.py`` sees the generated background through a classifier; here
the benchmark's exact p(x | m) gives the generator's error directly: KL(true || generator) of
p(x | m) at fixed m across the fit window, for the generator trained on the sidebands (what
GBI does) and for its twin trained on as many true signal-region background events (what no
analysis has: no interpolation). Inside the signal region the difference between the two
columns is the interpolation's error; in the sidebands the first column is the plain
estimation error, which grows towards high m where the falling spectrum leaves few events.
Besides the fixed masses, the KL averaged over true events of the signal region and of the
sidebands (their own m spectrum): what a fit of those events sees.

Rows: ``layout``, ``seed``, ``m``, ``region`` (SB / SR, or ``SR events`` / ``SB events`` for the
averages), ``kl_sideband_trained``, ``kl_signal_region_trained`` (nats, each from ``--samples``
true events, with its Monte Carlo error). ``--layouts 1 4 --seeds 4`` compares network layouts
(:attr:`zfit_gbi.generators.FlowConfig.layout`) seed by seed: ``layouts`` in the JSON holds the
mean over seeds and the paired difference to the first layout with its error (the seeds'
spread / sqrt(seeds)).

Run: ``python benchmarks/interpolation.py`` (about 2 minutes on 2 CPU cores: the package's
default generator, maf-rqs 5 x 2x64 with 8 bins, default layout, a 3-member bootstrap ensemble,
trained on the sidebands of 10k fit-window events as in ``validation.py``); ``--transform
affine`` the demo's and validation's 4 x 2x48 MAF; ``--quick``: 8 epochs, 5000 samples.
``--layouts 1 4 --seeds 4 --name interpolation_layouts`` (and ``--transform affine
--name interpolation_layouts_affine``): about 10 minutes each.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
from _common import report  # type: ignore[import-not-found]

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.generators import FlowConfig, FlowEnsemble, TrainConfig

GENERATORS = {"rqs": {"transform": "rqs", "n_layers": 5, "hidden_units": (64, 64), "n_bins": 8},  # GeneratorConfig's default
              "affine": {"transform": "affine", "n_layers": 4, "hidden_units": (48, 48)}}  # the demo's and validation.py's


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-background", type=int, default=10_000, help="fit-window events whose sidebands train the generator")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--samples", type=int, default=20_000, help="true events per mass point")
    ap.add_argument("--seed", type=int, default=1, help="the first seed (events and training)")
    ap.add_argument("--seeds", type=int, default=1, help="repeat with seeds seed, seed + 1, ...: new events and trainings")
    ap.add_argument("--layouts", type=int, nargs="+", default=[FlowConfig().layout], help="FlowConfig.layout values to compare")
    ap.add_argument("--transform", choices=tuple(GENERATORS), default="rqs")
    ap.add_argument("--quick", action="store_true", help="8 epochs, 5000 samples per mass point")
    ap.add_argument("--name", default="interpolation", help="results/<name>.json")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.samples = 8, 5000
    b = ResonantBenchmark()
    w = b.windows
    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        data = b.sample(args.n_background, 0, seed=seed)
        sb = data.select(w.in_sidebands(data["mjj"]))
        sr = b.sample(8 * args.n_background, 0, seed=seed + 23)
        sr = sr.select(w.in_signal_region(sr["mjj"]))
        sr = sr.select(np.arange(len(sr)) < len(sb))
        tc = TrainConfig(epochs=args.epochs, batch_size=256, learning_rate=3e-3, patience=6, progress=False, seed=seed)
        # test events: fixed masses across the window, and each region's own spectrum
        rng = np.random.default_rng(seed + 5)
        tests = []
        for m in np.linspace(w.fit[0] + 0.02, w.fit[1] - 0.02, 13):
            mm = np.full(args.samples, m)
            tests.append(({"m": float(m), "region": "SR" if w.signal_region[0] <= m < w.signal_region[1] else "SB"},
                          b.sample_background_features(mm, rng), mm))
        many = b.sample(8 * args.samples, 0, seed=seed + 31)
        for region, inside in (("SR events", w.in_signal_region(many["mjj"])), ("SB events", w.in_sidebands(many["mjj"]))):
            ev = many.select(inside)
            ev = ev.select(np.arange(len(ev)) < args.samples)
            tests.append(({"m": float(np.mean(ev["mjj"])), "region": region}, ev.array(b.features), ev["mjj"]))
        for layout in args.layouts:
            cfg = FlowConfig(**GENERATORS[args.transform], layout=layout)
            gens = {}
            for name, ev in (("sideband_trained", sb), ("signal_region_trained", sr)):
                print(f"seed {seed}, layout {layout}: training the {name.replace('_', ' ')} generator on {len(ev)} events ...", flush=True)
                gens[name] = FlowEnsemble.train(ev.array(b.features), ev["mjj"], features=b.features, bounds=b.bounds, context_names=("mjj",),
                                                k=3, config=cfg, train=tc, bootstrap=True)
            for where, x, mm in tests:
                truth = b.log_prob_background_features(x, mm)
                row = {"layout": layout, "seed": seed, **where}
                for name, g in gens.items():
                    d = truth - np.asarray(g.log_prob(x, mm[:, None]))
                    row[f"kl_{name}"] = float(np.mean(d))
                    row[f"kl_{name}_error"] = float(np.std(d) / math.sqrt(len(d)))
                rows.append(row)
    per_layout = {str(layout): summary([r for r in rows if r["layout"] == layout], sum(w.signal_region) / 2) for layout in args.layouts}
    report(args.name, rows, {"generator": GENERATORS[args.transform], "layouts": args.layouts, "seeds": args.seeds,
                             "n_sideband_events": len(sb), "epochs": args.epochs, "samples_per_mass": args.samples,
                             **per_layout[str(args.layouts[0])], "by_layout": per_layout,
                             "paired": paired(rows, args.layouts)})
    for layout, summ in per_layout.items():
        print(f"layout {layout}: {summ}")
    if len(args.layouts) > 1:
        print(json.dumps(paired(rows, args.layouts), indent=1))


def paired(rows: list[dict], layouts: list[int]) -> dict:
    """Per layout and averaged region (``SR events`` / ``SB events``) and generator: the mean KL
    over seeds and its difference to the first layout, paired by seed, with the error of that
    mean (the spread over seeds / sqrt(seeds); ``nan`` for one seed)."""
    out: dict = {}
    for region in ("SR events", "SB events"):
        for gen in ("sideband_trained", "signal_region_trained"):
            kl = {la: np.array([r[f"kl_{gen}"] for r in rows if r["layout"] == la and r["region"] == region]) for la in layouts}
            for la in layouts:
                d = kl[la] - kl[layouts[0]]
                err = float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
                out[f"{region}, {gen}, layout {la}"] = {"mean_kl": float(np.mean(kl[la])), "minus_first_layout": float(np.mean(d)),
                                                        "error": err}
    return out


def summary(rows: list[dict], centre: float) -> dict:
    """The sideband-trained generator's KL excess over its signal-region twin: mean over the
    signal-region points and at the point nearest the centre (nats, with its error)."""
    sr = [r for r in rows if r["region"] == "SR"]
    c = min(sr, key=lambda r: abs(r["m"] - centre))  # of the first seed
    return {"mean_kl_excess_in_signal_region": float(np.mean([r["kl_sideband_trained"] - r["kl_signal_region_trained"] for r in sr])),
            "kl_excess_at_centre": c["kl_sideband_trained"] - c["kl_signal_region_trained"],
            "kl_excess_at_centre_error": math.hypot(c["kl_sideband_trained_error"], c["kl_signal_region_trained_error"]), "centre": c["m"]}


if __name__ == "__main__":
    main()

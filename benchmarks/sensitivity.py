"""Sensitivity: significance and CLs limit against injected signal, method by method.

On the embedded benchmark (``zfit_gbi.benchmark.ResonantBenchmark``, the ``gbi demo`` windows:
fit 2.9-4.1 TeV, signal region 3.3-3.7 TeV), for injections of S / sqrt(B) in the signal region
from 0.5 to 5 and several seeds, every method sees the same events:

* ``oracle``: the extended fit with the true densities (no limit computed: the reference Z);
* ``gbi_unbinned``: this package's zfit model, dijet mass shape x sideband-trained conditional
  flow (ensemble of 3, ``--members K`` for K, no generator-error nuisance, so it compares with the others on equal
  footing), asymptotic discovery and CLs limit with hepstats;
* ``gbi_binned``: the same generators as pyhf templates (4 mass x 10 score bins), pyhf
  discovery and CLs;
* ``idealized``: as ``gbi_unbinned`` but with the background flow trained on an independent
  background sample *in the signal region*, as large as the sideband sample (no interpolation
  error, the same training statistics);
* ``mass_only``: the 1-D fit of m_jj (dijet + Gaussian signal shape);
* ``cathode_cut``: a CATHODE-style classifier (signal-region data against generated background,
  3-fold, out-of-fold scores), a cut keeping 2 % of the signal-region data, the background
  after the cut from the same cut on the sidebands and a sideband fit (bump hunt); counting Z and
  a counting CLs limit (pyhf, background error included);
* ``gbi_data_driven``: ``gbi run`` with ``signal.model: data-driven`` (R-ANODE: no signal
  features from simulation, only p_S(m)) on the same events with the same background ensemble
  (saved and loaded by path), the package's default scan (``--dd-seeds``: flows per fold and w) and member jackknife, no
  background-only toys (``null_toys: 0``: its Z is the *asymptotic* one, which the README
  shows is not to be quoted for this mode; its yield interval, with the jackknife error, and its
  limit are what the row is for: ``error_low``, ``error_high``). About 2 minutes per data set.

Simplification, stated: the background flows are trained once per seed on the sidebands of the
background-only sample; at the largest injection the sidebands hold about 0.1 % signal, which
is neglected. ``upper_limit`` is the observed 95 % CLs limit on the signal events in the fit
window (the cut-and-count limit is on events passing the cut, divided by the signal efficiency
of the cut, which a user would take from simulation; here from the truth labels).

``--dataset lhco``: the same methods but the oracle on the real LHC Olympics R&D events
(``--data``, default ``../shared/data/lhco_rnd_sr``; without them the script says so and writes
nothing), with tutorial 04's pseudo signal region 3.44-3.56 TeV in the fit window 3.3-3.7 TeV,
``exppoly2`` mass shapes and 4 features:

* the data of seed ``s`` are the true background of one mixed file (``sr_mixed_a`` for even
  seeds, ``sr_mixed_b`` for odd: 59,605 / 61,747 events, about 17,600 / 18,200 in the signal
  region) plus signal events drawn (seeded) from the 20,000 signal events of
  ``sr_sig_enriched``; injections at S / sqrt(B) = 0.5, 1, 2.5, 5 in the signal region
  (42 % of the signal lies there);
* the signal flow is trained once on ``sr_signal_only`` without those 20,000 events (disjoint
  from every injected event);
* the background ensemble is retrained for every injection on the data's sidebands, *signal
  included* (as in a real search; at S / sqrt(B) = 5 the sidebands hold about 2 % signal);
* ``idealized``: an ensemble trained on the true background of the *other* mixed file over the
  whole fit window (independent events, signal region included, as many as the data's sidebands
  hold): no interpolation, no contamination, the same training statistics;
* no oracle (the true densities of real events are unknown): the ratio printed is GBI /
  idealized.

Rows: ``dataset, method, injected_signal, s_over_sqrt_b, seed, signal_yield, significance,
upper_limit``; a summary (median significance, limit, injected and fitted yield over seeds per
method and injection, and the ratio of GBI to the oracle) follows the table.

Run: ``python benchmarks/sensitivity.py`` (3 seeds x 5 injections, about 50 minutes on 2 CPU
cores); ``--quick``: 1 seed, 3 injections, smaller samples, significances only (no limits),
about 4 minutes. ``python benchmarks/sensitivity.py --dataset lhco --seeds 2`` writes
``results/sensitivity_lhco.json`` (2 seeds x 4 injections; the time it took is in the JSON's
``seconds``).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import DATA_DRIVEN_SIGNAL, report

from pyhf_gbi import infer as B
from pyhf_gbi.templates import make_templates, sideband_expectation
from pyhf_gbi.workspace import build_spec
from zfit_gbi._tf import tf  # noqa: F401
from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.classifier import ClassifierConfig, cathode_scores
from zfit_gbi.data import LHCO_COLUMNS, Events, Windows, box_from_data, read_lhco
from zfit_gbi.generators import Flow, FlowConfig, FlowEnsemble, TrainConfig
from zfit_gbi.inference import FitError, counting_significance, discovery, fit, upper_limit
from zfit_gbi.model import build_mass_model, build_model

FLOW = FlowConfig(n_layers=4, hidden_units=(48, 48))
LHCO_FEATURES = ("mj1", "delta_mj", "tau21_j1", "tau21_j2")
LHCO_WINDOWS = Windows(fit=(3.3, 3.7), signal_region=(3.44, 3.56))  # the pseudo signal region of tutorial 04
ROW_KEYS = ("dataset", "method", "injected_signal", "s_over_sqrt_b", "seed", "signal_yield", "error_low", "error_high", "significance",
            "upper_limit")
METHODS = ("oracle", "gbi_unbinned", "idealized", "gbi_binned", "mass_only", "cathode_cut", "gbi_data_driven")
SIG_FLOW = FlowConfig(n_layers=3, hidden_units=(32, 32))
CUT = 0.02


def counting_limit(n: float, b: float, b_err: float) -> float:
    """95 % CLs upper limit on the signal count of a counting experiment (pyhf, asymptotic)."""
    import pyhf

    pyhf.set_backend("numpy")
    hi = max(10.0, 5 * (math.sqrt(max(b, 1.0)) + b_err) + max(n - b, 0.0))
    unit = hi / 10.0  # the POI (bounded to [0, 10] by the simple model) counts units of hi / 10 events
    model = pyhf.simplemodels.uncorrelated_background(signal=[unit], bkg=[max(b, 1e-3)], bkg_uncertainty=[max(b_err, 1e-3)])
    obs, _ = pyhf.infer.intervals.upper_limits.upper_limit([n, *model.config.auxdata], model, scan=np.linspace(0, 10, 41), level=0.05)
    return float(obs) * unit


def unbinned(name, features, bkg_gen, sig_gen, data, sim, windows, prefix, seed, n_asimov, limits, background_mass="dijet"):
    """Fit, discovery and (if ``limits``) the CLs limit of the GBI model: ``(row, model)``."""
    model = build_model(resonant="mjj", features=features, windows=windows, background_generator=bkg_gen,
                        signal_generator=sig_gen, data_masses=data["mjj"], signal_masses=sim["mjj"], background_mass=background_mass,
                        prefix=prefix)
    loss = model.loss(data)
    res = fit(loss, model.poi, minos=False)
    z = discovery(loss, model.poi, n_asimov=n_asimov, seed=seed).significance
    lim = upper_limit(loss, model.poi, cl=0.95, n_points=8, n_asimov=n_asimov, seed=seed).observed if limits else math.nan
    return {"method": name, "signal_yield": res.poi_value, "error_low": res.poi_error_low, "error_high": res.poi_error_high,
            "significance": z, "upper_limit": lim}, model


def _failed(name: str, err: Exception) -> dict:
    return {"method": name, "signal_yield": math.nan, "significance": math.nan, "upper_limit": math.nan, "error": str(err)}


def data_driven(data: Events, *, features, windows: Windows, bkg_gen, sim: Events, box, seed: int, background_mass: str,
                flow: tuple[int, int, int] = (3, 32, 25), flows: int = 1, executor: str = "sequential") -> dict:
    """``gbi run`` in ``signal.model: data-driven`` on ``data`` with ``bkg_gen`` (saved, loaded by
    path): the row of ``gbi_data_driven``."""
    import tempfile

    from zfit_gbi.config import validate_config
    from zfit_gbi.generators import save
    from zfit_gbi.pipeline import run

    with tempfile.TemporaryDirectory(prefix="gbi_sens_dd_") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "data.npy", data.values)
        np.save(tmp / "sim.npy", sim.values)
        save(bkg_gen, tmp / "background")
        raw = {
            "data": {"path": str(tmp / "data.npy"), "columns": list(data.columns), "resonant": "mjj", "features": list(features),
                     "bounds": {f: [float(v) for v in box[f]] for f in features}},
            "windows": {"fit": list(windows.fit), "signal_region": list(windows.signal_region)},
            "background": {"mass_shape": background_mass, "generator": {"path": str(tmp / "background")}},
            "signal": {"model": "data-driven", "simulation": {"path": str(tmp / "sim.npy"), "columns": list(sim.columns)},
                       "mass_shape": "gauss",
                       "generator": {**DATA_DRIVEN_SIGNAL, "layers": flow[0], "hidden": flow[1], "epochs": flow[2], "seed": 2 + seed},
                       "data_driven": {"null_toys": 0, "seeds": flows}},
            "inference": {"discovery": True, "upper_limit": {"cl": 0.95}, "seed": seed},
            "compute": {"executor": executor},
            "plots": {"enabled": False},
        }
        s = run(validate_config(raw, base_dir=tmp), tmp / "out", quiet=True)
    y = s["signal_yield"]
    return {"method": "gbi_data_driven", "signal_yield": y["value"], "error_low": y["error_low"], "error_high": y["error_high"],
            "significance": s["discovery"]["significance"], "upper_limit": s["upper_limit"]["observed"]}


def methods(data, *, features, windows, bkg_gen, ideal_gen, sig_gen, sim, seed, tag, args, clf, background_mass, box) -> list[dict]:
    """The methods of ``args.methods`` but the oracle on one data set: ``gbi_unbinned`` and
    ``idealized`` (zfit), ``gbi_binned`` (pyhf), ``mass_only``, ``cathode_cut`` and
    ``gbi_data_driven``; one row each (``gbi_binned`` and ``cathode_cut`` need ``gbi_unbinned``'s
    mass shape)."""
    found, models = [], {}
    for name, gen in (("gbi_unbinned", bkg_gen), ("idealized", ideal_gen)):
        if name not in args.methods:
            continue
        try:
            row, models[name] = unbinned(name, features, gen, sig_gen, data, sim, windows, f"{name[:2]}{tag}", seed,
                                         args.n_asimov, args.limits, background_mass)
        except FitError as err:
            row = _failed(name, err)
        found.append(row)
    gbi_model = models.get("gbi_unbinned")

    # the binned route: the same generators as pyhf templates
    parts = windows.split(data, "mjj")
    if gbi_model is not None and "gbi_binned" in args.methods:
        t = make_templates(resonant="mjj", features=features, windows=windows, mass_pdf=gbi_model.background.mass_pdf,
                           background_generator=bkg_gen, signal_generator=sig_gen, data=data, sidebands=parts["sidebands"],
                           simulation=sim, mass_bins=4, score_bins=10, n_generated=100_000, seed=seed)
        spec = build_spec(t)
        f = B.fit(spec)
        found.append({"method": "gbi_binned", "signal_yield": f.poi_value, "significance": B.discovery(spec, fitted=f).significance,
                      "upper_limit": B.upper_limit(spec, cl=0.95, fitted=f).observed if args.limits else math.nan})

    if "mass_only" in args.methods:
        mm = build_mass_model(resonant="mjj", windows=windows, data_masses=data["mjj"], signal_masses=sim["mjj"],
                              background_mass=background_mass, prefix=f"mo{tag}")
        mloss = mm.loss(data)
        try:
            mres = fit(mloss, mm.poi, minos=False)
            found.append({"method": "mass_only", "signal_yield": mres.poi_value, "error_low": mres.poi_error_low, "error_high": mres.poi_error_high,
                          "significance": discovery(mloss, mm.poi, n_asimov=args.n_asimov, seed=seed).significance,
                          "upper_limit": upper_limit(mloss, mm.poi, cl=0.95, n_points=8, n_asimov=args.n_asimov, seed=seed).observed
                          if args.limits else math.nan})
        except FitError as err:
            found.append(_failed("mass_only", err))
    if "gbi_data_driven" in args.methods:
        try:
            found.append(data_driven(data, features=features, windows=windows, bkg_gen=bkg_gen, sim=sim, box=box, seed=seed,
                                     background_mass=background_mass, flow=tuple(args.dd_flow), flows=args.dd_seeds, executor=args.dd_executor))
        except (FitError, ValueError) as err:
            found.append(_failed("gbi_data_driven", err))

    if "cathode_cut" not in args.methods or gbi_model is None:
        return found
    sr, sb = parts["signal_region"], parts["sidebands"]
    cs = cathode_scores(sr.array(features), sr["mjj"], bkg_gen, n_folds=3, oversample=2, n_background=60_000,
                        config=clf, seed=seed, progress=False)
    thr, n_kept, _ = cs.cut(CUT)
    sb_kept = sb["mjj"][cs.score(sb.array(features), seed=seed) >= thr]
    if len(sb_kept) > 10:
        bump = sideband_expectation(gbi_model.background.mass_pdf, sb_kept, windows)
        b, b_err = bump.expected, bump.expected * bump.rel_error
        sig_eff = float(np.sum(sr["label"][cs.data >= thr]) / max(np.sum(data["label"]), 1.0))
        lim = (counting_limit(n_kept, b, b_err) / sig_eff if sig_eff > 0 else math.inf) if args.limits else math.nan
        found.append({"method": "cathode_cut", "signal_yield": (n_kept - b) / sig_eff if sig_eff > 0 else math.nan,
                      "significance": counting_significance(n_kept, b, b_err), "upper_limit": lim})
    return found


def benchmark_events(bench: ResonantBenchmark, seed: int, n_background: int, s_over_sqrt_b) -> tuple[Events, list[int], Events]:
    """Seed ``seed``'s events on the embedded benchmark: ``(background, injections, signal
    pool)``; injection ``k`` is ``pool[:n]`` with S / sqrt(B) = k in the signal region
    (``benchmarks/ranode_bias.py`` uses the same events)."""
    windows = bench.windows
    eff_sr = float(np.mean(windows.in_signal_region(bench.sample(0, 100_000, seed=3)["mjj"])))
    bkg = bench.sample(n_background, 0, seed=100 + seed)
    b_sr = float(np.sum(windows.in_signal_region(bkg["mjj"])))
    injections = [round(k * math.sqrt(b_sr) / eff_sr) for k in s_over_sqrt_b]
    return bkg, injections, bench.sample(0, max(injections), seed=200 + seed)


def benchmark(args, train: TrainConfig, clf: ClassifierConfig) -> list[dict]:
    """The embedded benchmark's rows (the oracle included)."""
    bench = ResonantBenchmark()
    windows = bench.windows
    features = bench.features
    sim = bench.signal_simulation(20_000, seed=2)
    sim = sim.select(windows.in_fit(sim["mjj"]))
    sig_gen = FlowEnsemble.train(sim.array(features), sim["mjj"], features=features, bounds=bench.bounds, context_names=("mjj",),
                                 k=1, config=SIG_FLOW, train=train, bootstrap=False)
    rows = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        bkg, injections, pool = benchmark_events(bench, seed, args.n_background, args.s_over_sqrt_b)
        side = bkg.select(windows.in_sidebands(bkg["mjj"]))
        bkg_gen = FlowEnsemble.train(side.array(features), side["mjj"], features=features, bounds=bench.bounds, context_names=("mjj",),
                                     k=args.members, config=FLOW, train=train)
        # as many true signal-region background events as the sidebands hold: equal training statistics
        b_sr = float(np.sum(windows.in_signal_region(bkg["mjj"])))
        true_sr = bench.sample(int(args.n_background * len(side) / b_sr) + 1000, 0, seed=300 + seed)
        true_sr = true_sr.select(windows.in_signal_region(true_sr["mjj"]))
        true_sr = true_sr.select(np.arange(len(true_sr)) < len(side))
        ideal_gen = FlowEnsemble.train(true_sr.array(features), true_sr["mjj"], features=features, bounds=bench.bounds,
                                       context_names=("mjj",), k=args.members, config=FLOW, train=train) if "idealized" in args.methods else None
        for i, (k, n_inj) in enumerate(zip(args.s_over_sqrt_b, injections, strict=True)):
            data = Events(np.concatenate([bkg.values, pool.values[:n_inj]]), bkg.columns)
            data = data.select(windows.in_fit(data["mjj"]))
            found = []
            if "oracle" in args.methods:
                o = bench.oracle(data)
                found.append({"method": "oracle", "signal_yield": o["signal_yield"], "significance": o["significance"], "upper_limit": math.nan})
            found += methods(data, features=features, windows=windows, bkg_gen=bkg_gen, ideal_gen=ideal_gen, sig_gen=sig_gen, sim=sim,
                             seed=seed, tag=f"s{seed}i{i}_", args=args, clf=clf, background_mass="dijet", box=bench.bounds)
            rows += _rows("benchmark", found, n_inj, k, seed, t0)
    return rows


def lhco_inputs(folder: str | Path, quick: bool = False) -> dict | None:
    """The LHCO events every LHCO benchmark uses: ``backgrounds`` (the true background of
    ``sr_mixed_a`` and ``_b``), ``pool`` (the 20,000 signal events of ``sr_sig_enriched``, to
    inject), ``sim`` (``sr_signal_only`` without them: the simulation), ``box`` and ``eff_sr`` (the
    signal's fraction in the pseudo signal region); None (and a message) when the files are absent."""
    folder = Path(folder)
    names = ("sr_mixed_a.npy", "sr_mixed_b.npy", "sr_signal_only.npy", "sr_sig_enriched.npy")
    if not all((folder / n).exists() for n in names):
        print(f"LHCO data not found in {folder} (needs {', '.join(names)}); pass --data FOLDER. No LHCO rows.")
        return None
    mixed = [read_lhco(folder / f"sr_mixed_{s}.npy") for s in "ab"]
    sig_only, enriched = read_lhco(folder / "sr_signal_only.npy"), read_lhco(folder / "sr_sig_enriched.npy")
    pool = enriched.select(enriched["label"] == 1)  # the injected signal: disjoint from the simulation below
    held = {r.tobytes() for r in pool.values}
    sim = sig_only.select(np.array([r.tobytes() not in held for r in sig_only.values]))
    if quick:
        sim = sim.select(np.arange(len(sim)) < 10_000)
    box = box_from_data(Events(np.concatenate([m.values for m in mixed] + [sig_only.values]), LHCO_COLUMNS), LHCO_FEATURES, margin=0.01)
    return {"backgrounds": [m.select(m["label"] == 0) for m in mixed], "pool": pool, "sim": sim, "box": box,
            "eff_sr": float(np.mean(LHCO_WINDOWS.in_signal_region(pool["mjj"])))}


def lhco(args, train: TrainConfig, clf: ClassifierConfig) -> list[dict] | None:
    """The real LHCO R&D signal-region events (pseudo signal region 3.44-3.56 TeV in 3.3-3.7 TeV,
    as tutorial 04): None when the data are absent."""
    inputs = lhco_inputs(args.data, args.quick)
    if inputs is None:
        return None
    features, windows = LHCO_FEATURES, LHCO_WINDOWS
    backgrounds, pool, sim, box, eff_sr = (inputs[k] for k in ("backgrounds", "pool", "sim", "box", "eff_sr"))
    sig_gen = Flow(features, box, ("mjj",), FLOW, seed=2)
    sig_gen.fit(sim.array(features), sim["mjj"], train=train)
    rows = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        rng = np.random.default_rng(400 + seed)
        bkg, other = backgrounds[seed % 2], backgrounds[1 - seed % 2]  # data from one file, the idealized generator from the other
        if args.quick:
            bkg = bkg.select(rng.random(len(bkg)) < 0.5)
        b_sr = float(np.sum(windows.in_signal_region(bkg["mjj"])))
        injections = [round(k * math.sqrt(b_sr) / eff_sr) for k in args.s_over_sqrt_b]
        n_side = int(np.sum(windows.in_sidebands(bkg["mjj"])))
        ideal = other.select(rng.permutation(len(other)) < n_side)  # true background over the fit window, as many as the sidebands hold
        t_seed = replace(train, seed=train.seed + seed)
        ideal_gen = FlowEnsemble.train(ideal.array(features), ideal["mjj"], features=features, bounds=box, context_names=("mjj",), k=args.members,
                                       config=FLOW, train=t_seed) if "idealized" in args.methods else None
        for i, (k, n_inj) in enumerate(zip(args.s_over_sqrt_b, injections, strict=True)):
            sig = pool.select(np.isin(np.arange(len(pool)), rng.choice(len(pool), n_inj, replace=False)))
            data = Events(np.concatenate([bkg.values, sig.values]), LHCO_COLUMNS)
            side = windows.split(data, "mjj")["sidebands"]  # signal included, as in a real search: retrained per injection
            bkg_gen = FlowEnsemble.train(side.array(features), side["mjj"], features=features, bounds=box, context_names=("mjj",), k=args.members,
                                         config=FLOW, train=t_seed)
            found = methods(data, features=features, windows=windows, bkg_gen=bkg_gen, ideal_gen=ideal_gen, sig_gen=sig_gen, sim=sim,
                            seed=seed, tag=f"l{seed}i{i}_", args=args, clf=clf, background_mass="exppoly2", box=box)
            rows += _rows("lhco_rnd", found, n_inj, k, seed, t0)
    return rows


def _rows(dataset: str, found: list[dict], n_inj: int, k: float, seed: int, t0: float) -> list[dict]:
    z = {r["method"]: r["significance"] for r in found}
    print(f"[{dataset}, seed {seed}, S/sqrt(B) {k:g}, {n_inj} injected, {time.perf_counter() - t0:.0f} s] "
          + ", ".join(f"{m} {v:.2f}" for m, v in z.items()), flush=True)
    return [{"dataset": dataset, "injected_signal": n_inj, "s_over_sqrt_b": k, "seed": seed, **r} for r in found]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("benchmark", "lhco"), default="benchmark",
                    help="the embedded benchmark, or the LHCO R&D events of --data (results/<name>_lhco.json)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lhco_rnd_sr"),
                    help="folder with the LHCO sr_*.npy files (--dataset lhco)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--s-over-sqrt-b", type=float, nargs="+", default=None, help="injections (default 0.5 1 2 3 5; LHCO 0.5 1 2.5 5)")
    ap.add_argument("--n-background", type=int, default=None, help="background events in the fit window (benchmark; default 100k, --quick 30k)")
    ap.add_argument("--epochs", type=int, default=None, help="generator training epochs (default 25, --quick 8)")
    ap.add_argument("--n-asimov", type=int, default=50_000)
    ap.add_argument("--clf-epochs", type=int, default=20, help="CATHODE classifier epochs")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                    help="the methods to run (default all; --quick: all but gbi_data_driven; gbi_binned and cathode_cut need gbi_unbinned)")
    ap.add_argument("--dd-flow", type=int, nargs=3, default=[3, 32, 25], metavar=("LAYERS", "HIDDEN", "EPOCHS"),
                    help="gbi_data_driven's signal flow (maf-affine; default the demo's 3 x 32, 25 epochs)")
    ap.add_argument("--members", type=int, default=3, help="members of every background ensemble (sideband-trained and idealized; default 3)")
    ap.add_argument("--dd-seeds", type=int, default=1, help="gbi_data_driven's signal.data_driven.seeds (flows per fold and w; default 1)")
    ap.add_argument("--dd-executor", default="sequential", help="gbi_data_driven's compute.executor (its member jackknife; e.g. processes:2)")
    ap.add_argument("--no-limits", dest="limits", action="store_false", help="significances only (the CLs limits take most of the time)")
    ap.add_argument("--quick", action="store_true", help="1 seed, 3 injections, 30k background events (LHCO: half a file), 8 epochs, no limits")
    ap.add_argument("--name", default=None, help="results/<name>.json (default sensitivity, sensitivity_lhco)")
    args = ap.parse_args()
    is_lhco = args.dataset == "lhco"
    if args.quick:
        args.seeds, args.n_asimov, args.limits, args.clf_epochs = 1, 10_000, False, 8
    if args.methods is None:
        args.methods = [m for m in METHODS if not (args.quick and m == "gbi_data_driven")]
    if args.n_background is None:
        args.n_background = 30_000 if args.quick else 100_000
    if args.epochs is None:
        args.epochs = 8 if args.quick else 25
    if args.s_over_sqrt_b is None:  # --quick: 3 injections unless given
        args.s_over_sqrt_b = [1.0, 3.0, 5.0] if args.quick else [0.5, 1.0, 2.5, 5.0] if is_lhco else [0.5, 1.0, 2.0, 3.0, 5.0]
    name = args.name or ("sensitivity_lhco" if is_lhco else "sensitivity")
    train = TrainConfig(epochs=args.epochs, batch_size=512, learning_rate=2e-3, patience=6, progress=False, seed=1)
    clf = ClassifierConfig(hidden=(64, 64, 64), epochs=args.clf_epochs, batch_size=512, patience=4, seed=5)
    t_start = time.perf_counter()
    rows = lhco(args, train, clf) if is_lhco else benchmark(args, train, clf)
    if rows is None:
        return
    summary = []
    for k in args.s_over_sqrt_b:
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["s_over_sqrt_b"] == k and r["method"] == method]
            zs, lims = [r["significance"] for r in sel], [r["upper_limit"] for r in sel]
            summary.append({"s_over_sqrt_b": k, "method": method, "median_significance": float(np.nanmedian(zs)),
                            "median_upper_limit": float(np.nanmedian(lims)) if np.any(np.isfinite(lims)) else math.nan,
                            "median_injected": float(np.median([r["injected_signal"] for r in sel])),
                            "median_signal_yield": float(np.nanmedian([r["signal_yield"] for r in sel])), "seeds": len(zs)})
    report(name, [{k: r.get(k, "") for k in ROW_KEYS} for r in rows], {"summary": summary, "settings": vars(args), "seconds": time.perf_counter() - t_start,
                                                                      "errors": [r for r in rows if "error" in r]})
    print("\nmedian over seeds: significance (and observed 95 % CLs limit)")
    methods_ = list(dict.fromkeys(s["method"] for s in summary))
    print("S/sqrt(B)  " + "  ".join(f"{m:>16}" for m in methods_))
    for k in args.s_over_sqrt_b:
        cells = {s["method"]: s for s in summary if s["s_over_sqrt_b"] == k}
        print(f"{k:9g}  " + "  ".join(f"{cells[m]['median_significance']:6.2f} ({cells[m]['median_upper_limit']:6.0f})" for m in methods_))
    ref = "idealized" if is_lhco else "oracle"
    for k in args.s_over_sqrt_b:
        cells = {s["method"]: s["median_significance"] for s in summary if s["s_over_sqrt_b"] == k}
        if cells.get(ref, 0) > 0 and "gbi_unbinned" in cells:
            print(f"S/sqrt(B) {k:g}: GBI unbinned / {ref} = {cells['gbi_unbinned'] / cells[ref]:.2f}")


if __name__ == "__main__":
    main()

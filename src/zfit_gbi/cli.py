"""The ``gbi`` command: the only place that knows about files, flags and exit codes.

Exit codes: 0 success, 1 a clear error (bad input, bad file), 2 bad usage, 130 interrupted.
Errors print one line without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

log = logging.getLogger("zfit_gbi")

EXAMPLES = {
    "demo": "gbi demo --out gbi-demo                 # the embedded benchmark, about 4-5 minutes on 2 CPU cores",
    "run": "gbi run analysis.yaml --out results      # or --models trained/models; --set signal.model=data-driven",
    "train": "gbi train analysis.yaml --out trained  # generators only: trained/models/{background,signal}",
    "fit": "gbi fit analysis.yaml --out fit --models trained/models",
    "limit": "gbi limit analysis.yaml --out limit --models trained/models --cl 0.95 --calculator asymptotic",
    "inspect": "gbi inspect gbi-demo/result/models/background",
    "plot": "gbi plot gbi-demo/result --style ATLAS --label Internal",
    "scan": "gbi scan gbi-demo/demo.yaml --out scan --masses 3.35 3.65 7",
    "toys": "gbi toys gbi-demo/result --n-toys 200 --n-signal 100 --limit --executor processes:2",
    "interval": "gbi interval gbi-demo/result --n-toys 200 --executor processes:2   # Feldman-Cousins, about 2 h of CPU",
    "export-pyhf": "gbi export-pyhf gbi-demo/demo.yaml --out workspace.json   # then: pyhf cls --testpoi 80 workspace.json",
}


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), line, *(fmt.format(*r) for r in rows)])


# ---------------------------------------------------------------------------------------------
# gbi demo
# ---------------------------------------------------------------------------------------------


def _settings(pairs: list[str] | None) -> dict[str, Any]:
    """``--set a.b=VALUE`` pairs as a nested mapping; VALUE is read as YAML (``3``, ``true``,
    ``[0.001, 0.1]``, ``data-driven``)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key or any(not k for k in key.split(".")):
            msg = f"--set {pair!r}: expected KEY=VALUE with a dotted key, e.g. --set signal.model=data-driven"
            raise ValueError(msg)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"--set {pair!r}: the value is not YAML ({err})") from None
        *parents, last = key.split(".")
        node = out
        for k in parents:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise TypeError(f"--set {pair!r}: {k} is set twice, once as a value")
        node[last] = value
    return out


def _config(args: argparse.Namespace, changes: dict[str, Any] | None = None) -> Any:
    """The validated config of ``args.config`` with ``--set``, ``--models`` and ``changes`` applied."""
    from .config import load_config, override_config
    from .pipeline import use_models

    cfg = load_config(args.config)
    settings = _settings(getattr(args, "set", None))
    if settings:
        cfg = override_config(cfg, settings, source=f"{args.config} with --set")
    if getattr(args, "models", None):
        cfg = use_models(cfg, args.models)
    return override_config(cfg, changes, source="command line") if changes else cfg


def cmd_run(args: argparse.Namespace) -> int:
    """Run the analysis of a YAML config and print the summary."""
    from .pipeline import run

    summary = run(_config(args), args.out, quiet=args.quiet)
    _print_summary(summary)
    print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train and save the generators of a config (no fit)."""
    from .pipeline import train

    rep = train(_config(args), args.out, quiet=args.quiet)
    rows = []
    for name, g in rep["generators"].items():
        for k in range(g["members"]):
            rows.append([name if k == 0 else "", str(k), str(g["n_train"][k]), f"{g['best_epoch'][k]}/{g['epochs'][k]}",
                         f"{g['best_val_loss'][k]:.4f}", g["stopped"][k], f"{g['seconds'][k]:.0f}"])
    print()
    print(_table(rows, ["generator", "member", "train events", "best epoch", "val loss", "stopped", "time [s]"]))
    print(f"wrote {Path(args.out) / 'models'} and {Path(args.out) / 'train.json'}; reuse with: --models {Path(args.out) / 'models'}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    """The maximum-likelihood fit only: yields, errors, nuisances, profile scan and plots."""
    from .pipeline import run

    summary = run(_config(args, {"inference": {"discovery": False, "upper_limit": None}}), args.out, quiet=args.quiet)
    _print_summary(summary)
    print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0


def cmd_limit(args: argparse.Namespace) -> int:
    """The CLs upper limit (with the fit it starts from), no discovery test."""
    from .config import override_config
    from .pipeline import run

    cfg = _config(args)
    ul = cfg.inference.upper_limit.model_dump(mode="json") if cfg.inference.upper_limit is not None else {}
    ul.update({k: getattr(args, k) for k in ("cl", "calculator", "n_toys", "n_points") if getattr(args, k) is not None})
    cfg = override_config(cfg, {"inference": {"discovery": False, "upper_limit": ul, "profile_points": 0}}, source="command line")
    summary = run(cfg, args.out, quiet=args.quiet)
    _print_summary(summary)
    print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0


def _print_summary(s: dict[str, Any], truth: dict[str, float] | None = None) -> None:
    y = s["signal_yield"]
    rows = [["signal yield", f"{y['value']:.1f} -{y['error_low']:.1f} +{y['error_high']:.1f}", "" if truth is None else f"{truth['n_signal']:.0f} injected"]]
    rows.append(["background yield", f"{s['background_yield']['value']:.0f} +- {s['background_yield']['error']:.0f}", ""])
    data_driven = s.get("signal_model") == "data-driven"
    if data_driven:
        r, mo = s["signal_yield_signal_region"], s["mass_only"]
        rows[0][0] = "signal yield (R-ANODE)"
        rows.append(["  in the signal region", f"{r['value']:.1f} [{r['low']:.1f}, {r['high']:.1f}]", f"w = {s['ranode']['w_hat']:.3g}"])
        rows.append(["mass-only fit yield", f"{mo['value']:.1f} -{mo['error_low']:.1f} +{mo['error_high']:.1f}", "signal shape fixed"])
        bm = s["ranode"].get("background_members")
        if bm:
            rows.append(["  each background member left out", ", ".join(f"{v:.0f}" for v in bm["signal_yield"]),
                         f"jackknife error {bm['error']:.0f} (in the interval)"])
    if s.get("discovery"):
        d = s["discovery"]
        ref = "" if truth is None else f"oracle {truth['oracle_significance']:.2f}"
        bound = bool(data_driven and d.get("calibrated") and d["calibrated"]["bound"])
        if data_driven:
            ref = (f"asymptotic {d['asymptotic']['significance']:.2f}" + ("" if d.get("calibrated") else " only")
                   + (f"; {ref}" if ref else ""))
        rows.append(["significance Z", f"{'> ' if bound else ''}{d['significance']:.2f} (p0 {'< ' if bound else ''}{d['p0']:.2g})", ref])
    if s.get("upper_limit"):
        u = s["upper_limit"]
        e = u["expected"]
        name = f"{u['cl']:.0%} upper limit" if data_driven else f"CLs {u['cl']:.0%} upper limit"
        rows.append([name, f"{u['observed']:.1f} observed",
                     "" if e is None else f"expected {e[2]:.1f} (+1s {e[3]:.1f}, -1s {e[1]:.1f})"])
    for name, v in (s.get("signal_parameters") or {}).items():  # PAWS-style
        rows.append([f"signal parameter {name}", f"{v['value']:.4g} +- {v['error']:.2g}",
                     f"simulated [{v['range'][0]:.4g}, {v['range'][1]:.4g}]; Z and limit at this value"])
    for name, v in s.get("nuisances", {}).items():
        rows.append([f"nuisance {name}", f"{v['value']:+.2f} +- {v['error']:.2f}", "prior N(0, 1)"])
    rows.append(["fit valid", str(s["fit_valid"]), f"{s['n_events']['fit']} events, {s['n_events']['signal_region']} in the signal region"])
    b = s.get("results", {}).get("pyhf")
    if b is not None and s.get("backend") == "both":  # the binned route next to the unbinned one
        y = b["signal_yield"]
        rows.append(["binned (pyhf) yield", f"{y['value']:.1f} -{y['error_low']:.1f} +{y['error_high']:.1f}",
                     f"{b['bins']['mass']} mass x {b['bins']['score']} score"
                     + (f" x {b['bins']['variation']} variation" if b["bins"].get("variation", 1) > 1 else "") + " bins"])
        if b.get("discovery"):
            rows.append(["binned (pyhf) Z", f"{b['discovery']['significance']:.2f}", ""])
        if b.get("upper_limit"):
            u = b["upper_limit"]
            e = u["expected"]
            rows.append([f"binned CLs {u['cl']:.0%} limit", f"{u['observed']:.1f} observed", f"expected {e[2]:.1f} (+1s {e[3]:.1f}, -1s {e[1]:.1f})"])
    print()
    print(_table(rows, ["quantity", "result", "reference"]))
    for note in s["signal_yield"].get("notes", []):
        print(f"\nnote on the signal yield: {note}")
    for note in (s.get("upper_limit") or {}).get("notes", []):
        print(f"\nnote on the CLs limit: {note}")
    print("\ntime [s]: " + ", ".join(f"{k} {v:.1f}" for k, v in s["timings"].items()))
    if s.get("devices"):
        d = s["devices"]
        print("computed on: " + (", ".join(d["gpus"]) + f" and {d['cpus']} CPU cores" if d["gpus"] else f"{d['cpus']} CPU cores (TensorFlow sees no GPU)"))


def _closure(bench: Any, model_dir: Path, *, seed: int, n: int) -> dict[str, Any]:
    """Sideband-interpolation closure of the saved background generator: exact vs learned
    log p_B(x | m) on an independent background-only sample in the signal region, in 4 mass bins."""
    import numpy as np

    from .generators import load

    gen = load(model_dir)
    t = time.perf_counter()
    test = bench.sample(n, 0, seed=seed)
    w = bench.windows
    sr = test.select(w.in_signal_region(test[bench.resonant]))
    x, m = sr.array(bench.features), sr[bench.resonant]
    lt = bench.log_prob_background_features(x, m)
    lf = gen.log_prob(x, m[:, None])
    edges = np.linspace(*w.signal_region, 5)
    bins, rows = [], []
    for lo, hi, sel in [(edges[i], edges[i + 1], (m >= edges[i]) & (m < edges[i + 1])) for i in range(4)] + [(edges[0], edges[-1], np.ones(len(m), bool))]:
        d = lt[sel] - lf[sel]
        entry = {"mjj_low": float(lo), "mjj_high": float(hi), "n": int(sel.sum()), "mean_log_p_true": float(lt[sel].mean()),
                 "mean_log_p_learned": float(lf[sel].mean()), "kl_estimate": float(d.mean()),
                 "kl_error": float(d.std() / np.sqrt(sel.sum())), "mean_abs_diff": float(np.abs(d).mean())}
        bins.append(entry)
        rows.append([f"{lo:.2f}-{hi:.2f}", str(entry["n"]), f"{entry['mean_log_p_true']:.4f}", f"{entry['mean_log_p_learned']:.4f}",
                     f"{entry['kl_estimate']:.4f} +- {entry['kl_error']:.4f}", f"{entry['mean_abs_diff']:.4f}"])
    print("\nSideband-interpolation closure of the background generator in the signal region")
    print("(independent background-only events; log p_B(x | mjj) in nats; KL = mean(log p_true - log p_learned)):")
    print(_table(rows, ["mjj [TeV]", "events", "<log p_true>", "<log p_learned>", "KL estimate", "<|diff|>"]))
    return {"bins": bins[:-1], "signal_region": bins[-1], "seconds": time.perf_counter() - t}


def cmd_demo(args: argparse.Namespace) -> int:
    """Write the benchmark data next to the shipped demo config and run it."""
    import shutil
    from importlib.resources import files

    import numpy as np

    from .benchmark import ResonantBenchmark
    from .config import load_config
    from .pipeline import run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = ResonantBenchmark()
    data = bench.sample(args.n_background, args.n_signal, seed=args.seed)
    sim = bench.signal_simulation(args.n_simulation, seed=args.seed + 1)
    np.save(out / "data.npy", data.values)
    np.save(out / "signal_simulation.npy", sim.values)
    shutil.copyfile(str(files("zfit_gbi") / "configs" / "demo.yaml"), out / "demo.yaml")
    cfg = load_config(out / "demo.yaml")
    if args.smoke:  # a quick check of the whole chain (tiny networks; numbers are not meaningful)
        for gen in (cfg.background.generator, cfg.signal.generator):
            gen.layers, gen.hidden, gen.epochs = 2, 16, 3
        cfg.background.generator.ensemble = 2
        cfg.nuisances.n_eigen = 1
        cfg.inference.upper_limit.n_points = 5
        cfg.inference.n_asimov = 5000
    if args.epochs is not None:
        for gen in (cfg.background.generator, cfg.signal.generator):
            gen.epochs = args.epochs
    oracle = bench.oracle(data)
    if not args.quiet:
        print(f"benchmark: {len(data)} events ({args.n_signal} signal injected), {bench.windows}; config {out / 'demo.yaml'}")
    summary = run(cfg, out / "result", quiet=args.quiet)
    closure = _closure(bench, out / "result" / "models" / "background", seed=args.seed + 1000, n=args.n_background)
    summary["closure"] = closure
    _print_summary(summary, {"n_signal": args.n_signal, "oracle_significance": oracle["significance"]})
    print(f"(oracle: the likelihood ratio with the exact densities, the best any method can do; its fitted yield {oracle['signal_yield']:.1f} +- {oracle['error']:.1f})")
    from ._atomic import write_json_atomic

    write_json_atomic(out / "demo.json", {"oracle": oracle, "closure": closure, "n_signal_injected": args.n_signal, "summary": str(out / "result" / "summary.json")})
    print(f"wrote {out / 'result' / 'summary.json'} and {out / 'demo.json'}")
    return 0


# ---------------------------------------------------------------------------------------------
# gbi inspect
# ---------------------------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    """Describe a saved generator without building it."""
    from .generators.io import read_metadata

    meta = read_metadata(args.model)
    print(f"{args.model}: {meta['kind']} ({len(meta['flows'])} flow(s)), format {meta['format_version']}")
    if meta["kind"] == "ensemble":
        print(f"  aggregate: {meta['aggregate']}")
    f0 = meta["flows"][0]
    cfg = f0["config"]
    print(f"  features: {', '.join(f0['features'])}")
    print(f"  context:  {', '.join(f0['context']) or '(none)'}")
    print("  bounds:   " + ", ".join(f"{k} [{a:g}, {b:g}]" for k, (a, b) in f0["bounds"].items()))
    print(f"  architecture: MAF-{cfg['transform']}, {cfg['n_layers']} blocks x {cfg['hidden_units']}" + (", batch norm" if cfg["batch_norm"] else "")
          + f", layout {cfg.get('layout', 1)}")  # format-1 files: layout 1
    for k, f in enumerate(meta["flows"]):
        h = f["history"]
        best = h["val_loss"][h["best_epoch"]] if h.get("best_epoch", -1) >= 0 else float("nan")
        print(f"  flow {k}: trained on {h['n_train']} events, best val loss {best:.4f} at epoch {h['best_epoch'] + 1}/{len(h['val_loss'])} ({h['stopped']})")
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    """Mass scan over signal-region hypotheses with one set of generators."""
    import numpy as np

    from .pipeline import scan

    changes = {"compute": {"executor": args.executor}} if args.executor else None
    cfg = _config(args, changes)
    lo, hi, n = args.masses
    if int(n) != n or n < 1:
        print(f"gbi: error: --masses LOW HIGH N needs an integer N >= 1, got {n:g}", file=sys.stderr)
        return 2
    res = scan(cfg, args.out, np.linspace(lo, hi, int(n)), quiet=args.quiet)
    rows = []
    for r in res["rows"]:
        if "error" in r or r.get("signal_yield") is None:  # the window's run or fit raised
            rows.append([f"{r['mass']:.4g}", "fit failed", "", "", ""])
            continue
        lim = f"{r['observed']:.1f}" if r.get("observed") is not None else ""
        exp = f"{r['expected'][2]:.1f}" if r.get("expected") is not None else ""
        z = f"{r['significance']:.2f}" if r.get("significance") is not None else ""
        # a data-driven window whose R-ANODE scan has no maximum: no interval, but a limit (the mass-only fit's) and a Z
        yld = f"{r['signal_yield']:.1f} +- {r['signal_yield_error']:.1f}" if r.get("fit_valid") else f"{r['signal_yield']:.1f} (no maximum)"
        rows.append([f"{r['mass']:.4g}", yld, z, lim, exp])
    sliding = res.get("sliding_windows", False)  # data-driven: calibrated Z and the R-ANODE limit, windows slide with the mass
    print(_table(rows, ["mass", "signal yield", "Z" if sliding else "local Z", "limit obs" if sliding else "CLs obs",
                        "limit exp" if sliding else "CLs exp"]))
    said = (("signal_yield_notes", "note on the signal yield"), ("problems", "problem with the CLs limit"), ("notes", "note on the CLs limit"))
    for r in res["rows"]:  # what to know about a yield, why a limit is NaN, what to know about a finite one (per mass)
        for key, what in said:
            for text in r.get(key) or []:
                print(f"{what} at {r['mass']:.4g}: {text}")
    if sliding:
        print(f"each window's gbi run: {Path(args.out)}/mass_<m>/ (summary.json, plots)")
    if res.get("look_elsewhere"):
        g = res["look_elsewhere"]
        print(f"largest local Z {g['local_significance']:.2f} at {g['mass']:.4g}; global Z {g['global_significance']:.2f} "
              f"(p0 {g['global_p0']:.3g}, trials factor {g['trials_factor']:.3g}: {g['method']})")
    print(f"wrote {Path(args.out) / 'scan.json'}")
    return 0


def cmd_export_pyhf(args: argparse.Namespace) -> int:
    """Write the binned HistFactory workspace of a config (pyhf JSON)."""
    from .config import load_config
    from .pipeline import export_workspace

    cfg = load_config(args.config)
    spec = export_workspace(cfg, args.out, custom=args.custom, quiet=args.quiet)
    chan = spec["channels"][0]
    mods = sorted({f"{m['type']}:{m['name']}" for smp in chan["samples"] for m in smp["modifiers"]})
    print(f"wrote {args.out}: channel {chan['name']} with {len(chan['samples'][0]['data'])} bins, samples "
          f"{[smp['name'] for smp in chan['samples']]}, modifiers {', '.join(mods)}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Re-draw the plots of a results folder (no retraining, no refit)."""
    from .pipeline import replot

    written = replot(args.folder, style=args.style, formats=args.formats, label=args.label, experiment=args.experiment)
    print(f"wrote {len(written)} files in {args.folder}: {', '.join(written)}")
    return 0


def cmd_toys(args: argparse.Namespace) -> int:
    """Pseudo-experiments from a results folder's fitted model: pulls and coverage."""
    from .pipeline import toys

    study = toys(args.folder, n_toys=args.n_toys, n_signal=args.n_signal, seed=args.seed, limit=args.limit, p0=args.p0,
                 executor=args.executor, quiet=args.quiet)
    print(study)
    print(f"wrote {Path(args.folder) / 'toys.json'}")
    return 130 if study.interrupted else 0


def cmd_interval(args: argparse.Namespace) -> int:
    """A Feldman-Cousins interval (toys) for a results folder's signal yield."""
    import numpy as np

    from .pipeline import interval

    values = None if args.values is None else np.linspace(args.values[0], args.values[1], int(args.values[2]))
    r = interval(args.folder, values=values, n_toys=args.n_toys, cl=args.cl, seed=args.seed, executor=args.executor, quiet=args.quiet)
    print(r)
    print(f"wrote {Path(args.folder) / 'interval.json'}, {Path(args.folder) / 'interval.png'}")
    return 0


# ---------------------------------------------------------------------------------------------


def _command(sub: Any, common: argparse.ArgumentParser, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand with the common flags and its example (``EXAMPLES[name]``) in ``--help``."""
    return sub.add_parser(name, parents=[common], help=help, epilog=f"example:\n  {EXAMPLES[name]}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gbi",
        description="Generator-based inference: normalizing flows in zfit, hepstats and pyhf.",
        epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="only print results and errors")
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = _command(sub, common, "demo", "run the full analysis on the embedded benchmark (about 4-5 minutes)")
    demo.add_argument("--out", default="gbi-demo", help="output folder (default: gbi-demo)")
    demo.add_argument("--seed", type=int, default=1, help="seed of the benchmark events (default: 1)")
    demo.add_argument("--n-background", type=int, default=100_000, help="background events in the fit window (default: 100000)")
    demo.add_argument("--n-signal", type=int, default=300, help="injected signal events (default: 300)")
    demo.add_argument("--n-simulation", type=int, default=20_000, help="signal-simulation events (default: 20000)")
    demo.add_argument("--epochs", type=int, default=None, help="override the training epochs of the demo config")
    demo.add_argument("--smoke", action="store_true", help="tiny networks and few epochs: checks the chain in about a minute")
    demo.set_defaults(func=cmd_demo)

    def analysis(name: str, help: str, config_help: str, out_help: str, *, models: bool = True) -> argparse.ArgumentParser:
        """A subcommand on a YAML config: CONFIG, --out and (for those that can load them) --models."""
        p = _command(sub, common, name, help)
        p.add_argument("config", help=config_help)
        p.add_argument("--out", required=True, help=out_help)
        p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                       help="change one config key (YAML value), e.g. --set signal.model=data-driven; repeatable")
        if models:
            p.add_argument("--models", default=None, metavar="FOLDER",
                           help="load both generators from this folder (models/ of gbi train or gbi run) instead of training")
        return p

    analysis("run", "run the analysis of a YAML config: generators, fit, discovery, CLs limit",
             "the YAML config (see the README for the keys)", "output folder (summary.json, models/, plots)").set_defaults(func=cmd_run)
    analysis("train", "train and save the generators of a config (no fit)", "the YAML config (as for gbi run)",
             "output folder (models/, train.json, training curves)", models=False).set_defaults(func=cmd_train)
    analysis("fit", "fit the signal yield only (no discovery test, no limit)",
             "the YAML config (as for gbi run; inference.discovery and upper_limit are ignored)",
             "output folder (summary.json, models/, plots)").set_defaults(func=cmd_fit)
    limp = analysis("limit", "CLs upper limit on the signal yield (no discovery test)",
                    "the YAML config (as for gbi run; inference.upper_limit gives the defaults)", "output folder (summary.json, models/, CLs plot)")
    limp.add_argument("--cl", type=float, default=None, help="confidence level (default: the config's, else 0.95)")
    limp.add_argument("--calculator", choices=["asymptotic", "toys"], default=None, help="CLs calculator (default: the config's, else asymptotic)")
    limp.add_argument("--n-toys", type=int, default=None, help="toys per tested POI value (toys calculator)")
    limp.add_argument("--n-points", type=int, default=None, help="POI values in the CLs scan (>= 4)")
    limp.set_defaults(func=cmd_limit)

    insp = _command(sub, common, "inspect", "describe a saved generator")
    insp.add_argument("model", help="folder written by gbi (model.json + weights.npz)")
    insp.set_defaults(func=cmd_inspect)

    scanp = _command(sub, common, "scan", "mass scan: fit, local significance and CLs limit at each hypothesised mass "
                     "(signal.model data-driven: the windows slide with the mass, one full run per window)")
    scanp.add_argument("config", help="the YAML config (as for gbi run; signal.mass is overridden)")
    scanp.add_argument("--out", required=True, help="output folder (scan.json, models/, plots)")
    scanp.add_argument("--set", action="append", default=None, metavar="KEY=VALUE", help="change one config key (YAML value); repeatable")
    scanp.add_argument("--masses", nargs=3, type=float, required=True, metavar=("LOW", "HIGH", "N"),
                       help="N hypothesised masses from LOW to HIGH (resonant variable's unit)")
    scanp.add_argument("--models", default=None, metavar="FOLDER",
                       help="load both generators from this folder (models/ of gbi train or gbi run) instead of training")
    scanp.add_argument("--executor", default=None, metavar="WHERE",
                       help="where the masses run: sequential, processes[:N], dask or a Dask scheduler address (default: compute.executor)")
    scanp.set_defaults(func=cmd_scan)

    exp = _command(sub, common, "export-pyhf", "write the binned HistFactory workspace (pyhf JSON) of a config")
    exp.add_argument("config", help="the YAML config (as for gbi run; the binned section sets the bins)")
    exp.add_argument("--out", required=True, help="the workspace JSON to write (trained generators go to <stem>_models/)")
    exp.add_argument("--custom", action="store_true",
                     help="generator variations as the gbi_expshape modifier (pyhf_gbi.modifiers) instead of standard histosys")
    exp.set_defaults(func=cmd_export_pyhf)

    plot = _command(sub, common, "plot", "re-draw the plots of a results folder (e.g. in another experiment's style)")
    plot.add_argument("folder", help="a folder written by gbi run (summary.json, models/)")
    plot.add_argument("--style", choices=["CMS", "ATLAS", "LHCb"], default=None, help="mplhep style (default: the run's)")
    plot.add_argument("--formats", nargs="+", choices=["png", "pdf"], default=None, help="file formats (default: the run's)")
    plot.add_argument("--label", default=None, help="text next to the experiment label (default: the run's)")
    plot.add_argument("--experiment", default=None, help="the name the label starts with (default: the run's, else the style's)")
    plot.set_defaults(func=cmd_plot)

    tp = _command(sub, common, "toys", "pseudo-experiments from a results folder's fitted model: signal-yield pulls, interval and limit coverage")
    tp.add_argument("folder", help="a folder written by gbi run (summary.json, models/); toys.json is written there")
    tp.add_argument("--n-toys", type=int, default=100, help="number of pseudo-experiments (default 100)")
    tp.add_argument("--n-signal", type=float, default=None, help="true signal events in the fit window (default: the fitted yield, at least 0)")
    tp.add_argument("--seed", type=int, default=1, help="toy i's seed depends on (seed, i) only (default 1)")
    tp.add_argument("--limit", action="store_true", help="also the coverage of the CLs upper limit (CLs at the truth per toy)")
    tp.add_argument("--p0", action="store_true", help="also the asymptotic discovery p0 per toy (background-only calibration with --n-signal 0)")
    tp.add_argument("--executor", default=None, metavar="WHERE",
                    help="where the toys run: sequential (default), processes[:N], dask or a Dask scheduler address")
    tp.set_defaults(func=cmd_toys)

    ip = _command(sub, common, "interval", "a Feldman-Cousins (toys) interval for a results folder's signal yield: covers where the "
                  "profile-likelihood interval does not (small signals)")
    ip.add_argument("folder", help="a folder written by gbi run (summary.json, models/); interval.json and interval.png are written there")
    ip.add_argument("--n-toys", type=int, default=200, help="toys per tested value (default 200)")
    ip.add_argument("--values", nargs=3, type=float, default=None, metavar=("LOW", "HIGH", "N"),
                    help="tested POI values (signal events, or mu), N from LOW to HIGH (default: 9 around the fit); the best fit is added")
    ip.add_argument("--cl", type=float, default=0.6827, help="confidence level (default 0.6827)")
    ip.add_argument("--seed", type=int, default=1, help="the toys of tested value k depend on (seed, k) only (default 1)")
    ip.add_argument("--executor", default=None, metavar="WHERE",
                    help="where the toys run: sequential (default), processes[:N], dask or a Dask scheduler address")
    ip.set_defaults(func=cmd_interval)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.debug else (logging.ERROR if args.quiet else logging.WARNING), format="gbi: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("gbi: interrupted (outputs already written are complete; nothing half-written was left)", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        print(f"gbi: error: {str(err) or type(err).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``gbi`` command: the only place that knows about files, flags and exit codes.

Exit codes: 0 success, 1 a clear error (bad input, bad file), 2 bad usage, 130 interrupted.
Errors print one line without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

log = logging.getLogger("zfit_gbi")

EXAMPLES = {
    "demo": "gbi demo --out gbi-demo            # the embedded benchmark, about 1-2 minutes on 2 CPU cores",
    "inspect": "gbi inspect gbi-demo/background_generator",
}


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temporary file in the same folder and move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), line, *(fmt.format(*r) for r in rows)])


# ---------------------------------------------------------------------------------------------
# gbi demo
# ---------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the background generator on the benchmark sidebands and print the closure table."""
    import numpy as np

    from .benchmark import ResonantBenchmark
    from .generators import Flow, FlowConfig, TrainConfig, save

    out = Path(args.out)
    timings: dict[str, float] = {}
    bench = ResonantBenchmark()
    windows = bench.windows

    t = time.perf_counter()
    data = bench.sample(args.n_background, args.n_signal, seed=args.seed)
    parts = windows.split(data, bench.resonant)
    sb = parts["sidebands"]
    timings["data"] = time.perf_counter() - t
    if not args.quiet:
        print(f"benchmark: {len(data)} events ({args.n_signal} signal), {windows}")
        print(f"           sidebands {len(sb)}, signal region {len(parts['signal_region'])} events")

    t = time.perf_counter()
    flow = Flow(bench.features, bench.bounds, (bench.resonant,), FlowConfig(n_layers=args.layers, hidden_units=(args.hidden, args.hidden)))
    train = TrainConfig(epochs=args.epochs, batch_size=512, learning_rate=2e-3, patience=8, seed=args.seed, progress=not args.quiet)
    flow.fit(sb.array(bench.features), sb[bench.resonant], sb.weights, train)
    timings["train"] = time.perf_counter() - t
    save(flow, out / "background_generator")
    if not args.quiet:
        print(flow)

    # closure in the signal region on an independent background-only sample
    t = time.perf_counter()
    test = bench.sample(args.n_background, 0, seed=args.seed + 1000)
    sr = test.select(windows.in_signal_region(test[bench.resonant]))
    x, m = sr.array(bench.features), sr[bench.resonant]
    lt = bench.log_prob_background_features(x, m)
    lf = flow.log_prob(x, m)
    timings["closure"] = time.perf_counter() - t

    edges = np.linspace(*windows.signal_region, 5)
    rows, table = [], []
    for i in range(len(edges) - 1):
        sel = (m >= edges[i]) & (m < edges[i + 1])
        d = lt[sel] - lf[sel]
        entry = {
            "mjj_low": float(edges[i]), "mjj_high": float(edges[i + 1]), "n": int(sel.sum()),
            "mean_log_p_true": float(lt[sel].mean()), "mean_log_p_learned": float(lf[sel].mean()),
            "kl_estimate": float(d.mean()), "kl_error": float(d.std() / np.sqrt(sel.sum())),
            "mean_abs_diff": float(np.abs(d).mean()),
        }
        table.append(entry)
        rows.append([f"{edges[i]:.2f}-{edges[i + 1]:.2f}", str(entry["n"]), f"{entry['mean_log_p_true']:.4f}",
                     f"{entry['mean_log_p_learned']:.4f}", f"{entry['kl_estimate']:.4f} +- {entry['kl_error']:.4f}",
                     f"{entry['mean_abs_diff']:.4f}"])
    d = lt - lf
    total = {"n": len(d), "mean_log_p_true": float(lt.mean()), "mean_log_p_learned": float(lf.mean()),
             "kl_estimate": float(d.mean()), "kl_error": float(d.std() / np.sqrt(len(d))), "mean_abs_diff": float(np.abs(d).mean())}
    rows.append(["all SR", str(len(d)), f"{total['mean_log_p_true']:.4f}", f"{total['mean_log_p_learned']:.4f}",
                 f"{total['kl_estimate']:.4f} +- {total['kl_error']:.4f}", f"{total['mean_abs_diff']:.4f}"])
    timings["total"] = sum(timings.values())

    print("\nSideband-interpolation closure in the signal region (background-only test events;")
    print("log p_B(x | mjj) in nats; KL = mean(log p_true - log p_learned), 0 for a perfect generator):")
    print(_table(rows, ["mjj [TeV]", "events", "<log p_true>", "<log p_learned>", "KL estimate", "<|diff|>"]))
    print("\ntime [s]: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    write_json_atomic(
        out / "closure.json",
        {"bins": table, "signal_region": total, "timings": timings, "generator": str(out / "background_generator"),
         "settings": {k: v for k, v in vars(args).items() if k != "func"}},
    )
    print(f"wrote {out / 'closure.json'} and {out / 'background_generator'}")
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
    print(f"  architecture: MAF-{cfg['transform']}, {cfg['n_layers']} blocks x {cfg['hidden_units']}" + (", batch norm" if cfg["batch_norm"] else ""))
    for k, f in enumerate(meta["flows"]):
        h = f["history"]
        best = h["val_loss"][h["best_epoch"]] if h.get("best_epoch", -1) >= 0 else float("nan")
        print(f"  flow {k}: trained on {h['n_train']} events, best val loss {best:.4f} at epoch {h['best_epoch'] + 1}/{len(h['val_loss'])} ({h['stopped']})")
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    return 0


# ---------------------------------------------------------------------------------------------


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

    demo = sub.add_parser(
        "demo", parents=[common], help="train the background generator on the embedded benchmark and show its closure",
        epilog=f"example:\n  {EXAMPLES['demo']}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="gbi-demo", help="output folder (default: gbi-demo)")
    demo.add_argument("--seed", type=int, default=1, help="seed of data and training (default: 1)")
    demo.add_argument("--n-background", type=int, default=150_000, help="background events in the fit window")
    demo.add_argument("--n-signal", type=int, default=600, help="injected signal events")
    demo.add_argument("--epochs", type=int, default=40, help="maximum training epochs")
    demo.add_argument("--layers", type=int, default=5, help="MAF blocks")
    demo.add_argument("--hidden", type=int, default=64, help="hidden units per MADE layer")
    demo.set_defaults(func=cmd_demo)

    insp = sub.add_parser(
        "inspect", parents=[common], help="describe a saved generator",
        epilog=f"example:\n  {EXAMPLES['inspect']}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    insp.add_argument("model", help="folder written by gbi (model.json + weights.npz)")
    insp.set_defaults(func=cmd_inspect)
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
        print(f"gbi: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

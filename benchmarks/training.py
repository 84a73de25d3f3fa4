"""Generator training: this package (TensorFlow Probability) against nflows (PyTorch).

nflows is the library CATHODE-era and HI-SIGMA code trains its flows with, so it is what a
physicist would pick instead. Both frameworks train the same architecture on the same events
with the same split, optimizer, batch size, gradient clipping and cosine learning-rate schedule,
for the same number of epochs (no early stopping, so epochs are comparable), for the two anchor
settings of ``methods.md`` section 8:

* ``cathode``: affine MAF, 15 MADE blocks of 2 x 128 hidden units, batch norm, Adam 1e-4, batch 2048;
* ``hisigma``: autoregressive rational-quadratic spline, 5 blocks of 2 x 32, 24 bins, tail bound 5,
  Adam 1e-3, batch 256.

The events are the embedded benchmark's sidebands (4 features conditioned on m_jj). The
validation loss is ``-mean log p(x | m)`` in the original coordinates for both (nflows trains
in the same preprocessed logit-space coordinates as ``zfit_gbi.generators.Flow``; the Jacobian of
that map is added back), so losses compare directly.

Columns: ``seconds_per_epoch`` (median epoch, training plus validation, after the first),
``first_epoch_seconds`` (includes tracing and XLA compilation; ``--no-xla`` adds rows without XLA,
the choice for short trainings), ``events_per_second`` (training
events / seconds_per_epoch), ``val_loss`` (after the last epoch), ``best_val_loss``, and
``seconds_to_equal_loss``: wall time until the validation loss first reaches the worse of the two
frameworks' best losses (the ``no slower at equal loss`` comparison).

nflows runs in its own interpreter (``_nflows_worker.py``), so it can live in another virtual
environment: ``python -m venv nf && nf/bin/pip install nflows torch``, then
``--nflows-python nf/bin/python``. Without nflows its rows are skipped with a message.

``--seeds N`` repeats every training with N seeds (each its own split, the same for both
frameworks) and adds a summary over them (``summary`` in the JSON): the mean best loss, its
spread and standard error, the median times, and the loss difference paired by seed (seeds
differ by 0.005 nats in the CATHODE setting, more than the frameworks do with layout 4).

``--mixed-precision float16 bfloat16`` adds this package's flow trained with mixed precision
(``TrainConfig.mixed_precision``, XLA); with ``--no-nflows`` only this package's rows
(``results/training_mixed_precision_cpu.json``: what mixed precision costs on a CPU).

``--nflows-init tfp`` starts nflows' MADEs as this package's layouts 1 and 2 start theirs
(Glorot, zero biases, output x 0.01; ``tfp-output``: only the output x 0.01): what the start
costs (``results/training_init_tfp*.json``, with ``--settings cathode --layout 2``, 4 minutes each).

Run: ``python benchmarks/training.py --no-xla --seeds 3`` (21 minutes on 2 CPU cores: 100k
events, 15 epochs per setting, framework and seed); ``--quick``: 20k events, 3 epochs, about
1.5 minutes per seed.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import device, print_table, report

from zfit_gbi._tf import tf
from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.generators import Flow, FlowConfig, TrainConfig

WORKER = Path(__file__).resolve().parent / "_nflows_worker.py"


def settings(name: str, layout: int | None = None) -> tuple[FlowConfig, TrainConfig]:
    """The preset's flow and training settings; ``layout`` overrides the preset's ``FlowConfig.layout``."""
    fcfg, tcfg = (FlowConfig.cathode(), TrainConfig.cathode()) if name == "cathode" else (FlowConfig.hisigma(), TrainConfig.hisigma())
    return (fcfg if layout is None else replace(fcfg, layout=layout)), tcfg


def sideband_events(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], dict]:
    bench = ResonantBenchmark()
    ev = bench.sample(int(n / 0.55), 0, seed=seed)  # about 55 % of the fit window lies in the sidebands
    side = ev.select(bench.windows.in_sidebands(ev["mjj"]))
    side = side.select(np.arange(len(side)) < n)
    return side.array(bench.features), side["mjj"][:, None], bench.features, bench.bounds


def row(framework: str, name: str, device: str, n_train: int, epoch_seconds: list[float], val_loss: list[float], n_params: int) -> dict:
    steady = epoch_seconds[1:] or epoch_seconds
    spe = float(np.median(steady))
    return {"framework": framework, "settings": name, "device": device, "n_parameters": n_params, "n_train": n_train,
            "epochs": len(epoch_seconds), "first_epoch_seconds": epoch_seconds[0], "seconds_per_epoch": spe,
            "events_per_second": n_train / spe, "val_loss": val_loss[-1], "best_val_loss": min(val_loss),
            "_epoch_seconds": epoch_seconds, "_val_losses": val_loss}


def time_to(r: dict, target: float) -> float:
    t = np.cumsum(r["_epoch_seconds"])
    hit = np.nonzero(np.asarray(r["_val_losses"]) <= target + 1e-9)[0]
    return float(t[hit[0]]) if hit.size else math.inf


def train_split(n: int, tcfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(validation, training)`` indices exactly as ``train_flow`` draws them (seeded permutation)."""
    perm = np.random.default_rng(tcfg.seed).permutation(n)
    n_val = max(1, round(tcfg.validation_fraction * n))
    return perm[:n_val], perm[n_val:]


def nflows_inputs(folder: Path, name: str, flow: Flow, x: np.ndarray, m: np.ndarray, tcfg: TrainConfig, device: str,
                  init: str = "nflows") -> tuple[Path, Path]:
    """The worker's inputs: the events in the flow's preprocessed coordinates with train_flow's
    seeded split (so both frameworks see the same training and validation events), and the
    settings. ``flow`` must be adapted (its standardization set) on the training part."""
    fcfg = flow.config
    i_val, i_tr = train_split(len(x), tcfg)
    box = flow._preprocessing(tf.float64)
    z = box.inverse(tf.constant(x, tf.float64)).numpy()
    logj = box.inverse_log_det_jacobian(tf.constant(x[i_val], tf.float64), event_ndims=1).numpy()
    c = (m - flow.c_mean) / flow.c_std
    s = {"transform": fcfg.transform, "n_layers": fcfg.n_layers, "hidden": fcfg.hidden_units[0],
         "hidden_layers": len(fcfg.hidden_units), "n_bins": fcfg.n_bins, "tail_bound": fcfg.tail_bound,
         "batch_norm": fcfg.batch_norm, "learning_rate": tcfg.learning_rate, "batch_size": tcfg.batch_size,
         "clipnorm": tcfg.clipnorm, "epochs": tcfg.epochs, "seed": tcfg.seed, "device": device, "init": init}
    data, sfile = folder / f"{name}.npz", folder / f"{name}.json"
    np.savez(data, z_train=z[i_tr], c_train=c[i_tr], z_val=z[i_val], c_val=c[i_val], logj_val=logj)
    sfile.write_text(json.dumps(s))
    return data, sfile


def gpu_inputs(folder: Path, args: argparse.Namespace, x: np.ndarray, m: np.ndarray, features, bounds) -> None:
    """Write the nflows inputs for a machine with a GPU and torch but no TensorFlow; run there
    ``python _nflows_worker.py DIR/<settings>.npz DIR/<settings>.json > <settings>.out.json``,
    bring the ``.out.json`` files back and read them with ``--gpu-outputs``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in args.settings:
        fcfg, tcfg = settings(name, args.layout)
        tcfg = TrainConfig(**{**tcfg.__dict__, "epochs": args.epochs, "seed": args.seed, "progress": False})
        flow = Flow(features, bounds, ("mjj",), fcfg)
        _, i_tr = train_split(len(x), tcfg)
        flow.adapt(x[i_tr], m[i_tr])  # what train_flow does before its first epoch
        nflows_inputs(folder, name, flow, x, m, tcfg, "cuda")
    print(f"wrote {folder}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000, help="sideband events (train + validation; default 100000)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--settings", nargs="+", default=["cathode", "hisigma"], choices=["cathode", "hisigma"])
    ap.add_argument("--nflows-python", default=sys.executable, help="interpreter with nflows and torch (default: this one)")
    ap.add_argument("--nflows-device", default="cpu", help="torch device for nflows: cpu or cuda")
    ap.add_argument("--nflows-init", default="nflows", choices=["nflows", "tfp", "tfp-output"],
                    help="start nflows' MADEs as nflows does (default), as this package's layouts 1 and 2 do (Glorot, zero "
                         "biases, output x 0.01: 'tfp'), or with only the output layer x 0.01 ('tfp-output')")
    ap.add_argument("--seed", type=int, default=1, help="the events' seed, and the first training seed")
    ap.add_argument("--seeds", type=int, default=1, help="training seeds per setting and framework (seed, seed + 1, ...; default 1)")
    ap.add_argument("--no-xla", action="store_true", help="also train this package's flow without XLA (jit_compile=False)")
    ap.add_argument("--quick", action="store_true", help="20k events, 3 epochs")
    ap.add_argument("--mixed-precision", nargs="*", default=[], choices=["float16", "bfloat16"],
                    help="also train this package's flow (XLA) with mixed precision in these dtypes")
    ap.add_argument("--no-nflows", action="store_true", help="only this package's rows")
    ap.add_argument("--layout", type=int, choices=[1, 2, 3, 4], default=None,
                    help="this package's FlowConfig.layout (default: the presets', 4; 1 is FlowConfig's default)")
    ap.add_argument("--name", default="training", help="results/<name>.json")
    ap.add_argument("--gpu-inputs", type=Path, default=None, help="only write the nflows inputs for a GPU machine to this folder")
    ap.add_argument("--gpu-outputs", type=Path, default=None, help="only report the nflows rows found in this folder (<settings>.out.json)")
    args = ap.parse_args()
    if args.quick:
        args.events, args.epochs = 20_000, 3
    if args.gpu_outputs is not None:
        rows = []
        for name in args.settings:
            out = json.loads((args.gpu_outputs / f"{name}.out.json").read_text())
            r = row(f"nflows {out['torch']} (PyTorch)", name, out["device"], out["n_train"], out["epoch_seconds"], out["val_loss"], out["n_parameters"])
            r.pop("_epoch_seconds"), r.pop("_val_losses")
            rows.append(r)
        report(args.name, rows, {"device": f"GPU {rows[0]['device']} (nflows rows only)", "events": args.events, "epochs": args.epochs,
                                 "notes": ["nflows on the GPU machine; this package's TensorFlow could not be installed there (see the README)"]})
        return
    x, m, features, bounds = sideband_events(args.events, args.seed)
    if args.gpu_inputs is not None:
        gpu_inputs(args.gpu_inputs, args, x, m, features, bounds)
        return
    rows, notes = [], []
    for name, seed in ((n, args.seed + k) for n in args.settings for k in range(args.seeds)):
        fcfg, tcfg = settings(name, args.layout)
        tcfg = TrainConfig(**{**tcfg.__dict__, "epochs": args.epochs, "patience": args.epochs + 1, "seed": seed, "progress": False})
        variants = []
        runs = [(True, None)] + [(False, None)] * args.no_xla + [(True, mp) for mp in args.mixed_precision]
        for jit, mp in runs:
            flow = Flow(features, bounds, ("mjj",), fcfg)
            label = ("zfit_gbi (TFP, XLA" if jit else "zfit_gbi (TFP, no XLA") + (f", mixed {mp})" if mp else ")")
            print(f"[{name}, seed {seed}] {label}: {len(x)} events, {args.epochs} epochs ...", flush=True)
            h = flow.fit(x, m, train=TrainConfig(**{**tcfg.__dict__, "jit_compile": jit, "mixed_precision": mp}))
            variants.append({**row(label, name, device(), h.n_train, h.epoch_seconds, h.val_loss, flow.n_parameters),
                             "seed": seed, "layout": fcfg.layout, "mixed_precision": mp})
            if len(variants) == 1:
                trained = flow  # adapted to the split's training part: nflows' inputs are standardised alike
        rows += variants
        ours = variants[0]
        if args.no_nflows:
            continue

        with tempfile.TemporaryDirectory() as tmp:
            data, sfile = nflows_inputs(Path(tmp), name, trained, x, m, tcfg, args.nflows_device, args.nflows_init)
            print(f"[{name}, seed {seed}] nflows (PyTorch) ...", flush=True)
            proc = subprocess.run([args.nflows_python, str(WORKER), str(data), str(sfile)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            notes.append(f"nflows rows skipped ({name}): {why}")
            print(notes[-1], file=sys.stderr)
            continue
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        label = f"nflows {out['torch']} (PyTorch)" + ("" if args.nflows_init == "nflows" else f", started as {args.nflows_init}")
        theirs = {**row(label, name, out["device"], out["n_train"], out["epoch_seconds"], out["val_loss"],
                        out["n_parameters"]), "seed": seed}
        rows.append(theirs)
        target = max(ours["best_val_loss"], theirs["best_val_loss"])
        for r in (*variants, theirs):
            r["seconds_to_equal_loss"] = time_to(r, target)
    for r in rows:
        r.setdefault("seconds_to_equal_loss", math.nan)
    curves = [{"framework": r["framework"], "settings": r["settings"], "seed": r["seed"], "epoch_seconds": r.pop("_epoch_seconds"),
               "val_loss": r.pop("_val_losses")} for r in rows]
    summary = summarize(rows)
    report(args.name, rows, {"events": args.events, "epochs": args.epochs, "seeds": args.seeds, "notes": notes, "curves": curves,
                             "summary": summary})
    print(f"\nover {args.seeds} training seed(s):")
    print_table(summary)


def summarize(rows: list[dict]) -> list[dict]:
    """Per setting and framework, over the seeds: the best validation loss (mean, standard
    deviation, and the standard error of the mean: what "equal loss" is judged against), the
    median time per epoch and time to equal loss, their ratio to nflows', and the loss minus
    nflows' paired by seed (mean and its standard error)."""
    out = []
    for name in dict.fromkeys(r["settings"] for r in rows):
        for fw in dict.fromkeys(r["framework"] for r in rows if r["settings"] == name):
            rs = [r for r in rows if r["settings"] == name and r["framework"] == fw]
            loss = np.array([r["best_val_loss"] for r in rs])
            sd = float(loss.std(ddof=1)) if len(rs) > 1 else math.nan
            out.append({"settings": name, "framework": fw, "seeds": len(rs), "best_val_loss_mean": float(loss.mean()),
                        "best_val_loss_std": sd, "best_val_loss_sem": sd / math.sqrt(len(rs)),
                        "seconds_per_epoch": float(np.median([r["seconds_per_epoch"] for r in rs])),
                        "seconds_to_equal_loss": float(np.median([r["seconds_to_equal_loss"] for r in rs]))})
        ref = next((o for o in out if o["settings"] == name and o["framework"].startswith("nflows")), None)
        theirs = {r["seed"]: r["best_val_loss"] for r in rows if r["settings"] == name and r["framework"].startswith("nflows")}
        for o in out:
            if o["settings"] == name:
                o["epoch_time_vs_nflows"] = o["seconds_per_epoch"] / ref["seconds_per_epoch"] if ref else math.nan
                o["loss_minus_nflows"] = o["best_val_loss_mean"] - ref["best_val_loss_mean"] if ref else math.nan
                # paired by seed (the same split for both): the seeds' own spread cancels
                d = np.array([r["best_val_loss"] - theirs[r["seed"]] for r in rows
                              if r["settings"] == name and r["framework"] == o["framework"] and r["seed"] in theirs])
                o["paired_loss_minus_nflows"] = float(d.mean()) if d.size else math.nan
                o["paired_loss_minus_nflows_sem"] = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.nan
    return out


if __name__ == "__main__":
    main()

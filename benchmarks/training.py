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

Run: ``python benchmarks/training.py --no-xla`` (about 10 minutes on 2 CPU cores: 100k events,
15 epochs per setting and framework); ``--quick``: 20k events, 3 epochs, about 1.5 minutes.
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
from _common import device, report

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


def nflows_inputs(folder: Path, name: str, flow: Flow, x: np.ndarray, m: np.ndarray, tcfg: TrainConfig, device: str) -> tuple[Path, Path]:
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
         "clipnorm": tcfg.clipnorm, "epochs": tcfg.epochs, "seed": tcfg.seed, "device": device}
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
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-xla", action="store_true", help="also train this package's flow without XLA (jit_compile=False)")
    ap.add_argument("--quick", action="store_true", help="20k events, 3 epochs")
    ap.add_argument("--layout", type=int, choices=[1, 2], default=None,
                    help="this package's FlowConfig.layout (default: the presets', 2; 1 is FlowConfig's default)")
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
    for name in args.settings:
        fcfg, tcfg = settings(name, args.layout)
        tcfg = TrainConfig(**{**tcfg.__dict__, "epochs": args.epochs, "patience": args.epochs + 1, "seed": args.seed, "progress": False})
        variants = []
        for jit in (True, False) if args.no_xla else (True,):
            flow = Flow(features, bounds, ("mjj",), fcfg)
            label = "zfit_gbi (TFP, XLA)" if jit else "zfit_gbi (TFP, no XLA)"
            print(f"[{name}] {label}: {len(x)} events, {args.epochs} epochs ...", flush=True)
            h = flow.fit(x, m, train=TrainConfig(**{**tcfg.__dict__, "jit_compile": jit}))
            variants.append({**row(label, name, device(), h.n_train, h.epoch_seconds, h.val_loss, flow.n_parameters), "layout": fcfg.layout})
        rows += variants
        ours = variants[0]

        with tempfile.TemporaryDirectory() as tmp:
            data, sfile = nflows_inputs(Path(tmp), name, flow, x, m, tcfg, args.nflows_device)
            print(f"[{name}] nflows (PyTorch) ...", flush=True)
            proc = subprocess.run([args.nflows_python, str(WORKER), str(data), str(sfile)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            notes.append(f"nflows rows skipped ({name}): {why}")
            print(notes[-1], file=sys.stderr)
            continue
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        theirs = row(f"nflows {out['torch']} (PyTorch)", name, out["device"], out["n_train"], out["epoch_seconds"], out["val_loss"], out["n_parameters"])
        rows.append(theirs)
        target = max(ours["best_val_loss"], theirs["best_val_loss"])
        for r in (*variants, theirs):
            r["seconds_to_equal_loss"] = time_to(r, target)
    for r in rows:
        r.setdefault("seconds_to_equal_loss", math.nan)
    curves = [{"framework": r["framework"], "settings": r["settings"], "epoch_seconds": r.pop("_epoch_seconds"),
               "val_loss": r.pop("_val_losses")} for r in rows]
    report(args.name, rows, {"events": args.events, "epochs": args.epochs, "notes": notes, "curves": curves})
    for name in args.settings:
        pair = [r for r in rows if r["settings"] == name and (r["framework"] == "zfit_gbi (TFP, XLA)" or r["framework"].startswith("nflows"))]
        if len(pair) == 2:
            print(f"{name}: zfit_gbi / nflows time per epoch = {pair[0]['seconds_per_epoch'] / pair[1]['seconds_per_epoch']:.2f}, "
                  f"time to equal loss = {pair[0]['seconds_to_equal_loss'] / pair[1]['seconds_to_equal_loss']:.2f}")


if __name__ == "__main__":
    main()

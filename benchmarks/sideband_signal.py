"""Signal in the sidebands: the fitted yield against the truth on the real LHCO events, with the
background generator trained on the sidebands as they are and with the signal there modelled.

The LHCO signal is broad in m_jj (sigma about 0.12 TeV): with tutorial 04's pseudo signal region
3.44-3.56 TeV in the fit window 3.3-3.7 TeV more than half of it lies in the sidebands, where the
background generator p_B(x | m) learns it as background, so the fit of the whole window finds
too little signal (``sensitivity_lhco.json``: 10-20 % short from S / sqrt(B) = 2.5 on).
``background.signal_in_sidebands: model`` fits, then retrains p_B(x | m) on the sidebands inside
the mixture (1 - f(m)) p_B(x | m) + f(m) p_S(x | m) with f(m) the fitted signal's share at each
event's mass and p_S the simulated signal fixed, and fits again. Per seed and injection:

* ``gbi_unbinned``: the background ensemble trained on the sidebands as they are (the default);
* ``gbi_signal_modelled``: the same, retrained once with the fitted signal modelled; with
  ``--rounds R`` also ``gbi_signal_modelled_round2`` ... ``_roundR``, each retrained with the
  signal fraction of the previous round's fit (``background.signal_in_sidebands_iterations``);
* ``..._spurious`` (not with ``--no-spurious``): each of these generators, the plain one
  included, with the spurious-signal nuisance (``nuisances.spurious_signal: true``: its width
  the spread of the yields fitted with each of the 3 members alone), the generator's own error
  on the yield in the interval;
* ``gbi_run`` and ``gbi_run_spurious``: the round ``gbi run`` stops at (:func:`what_gbi_run_returns`),
  copies of those rows with ``round`` and ``settled``;
* ``idealized``: an ensemble trained on the true background of the other file over the whole
  fit window (no signal, no interpolation; as in ``sensitivity.py``);
* with ``--sideband-truth``, ``sidebands_background_only``: an ensemble trained on the same
  sidebands with their signal events removed by label (interpolated like the others): the best
  that modelling the signal there can reach.

Each row has the fitted yield, its Minos interval, the pull against the true signal count in
the fit window and whether the 68 % interval holds the truth; the rows of the sideband-trained
generators also ``true_sideband_signal`` (signal events in the sidebands, by label) and
``fitted_sideband_signal`` (what the plain fit puts there, i.e. what round 1 models). Setup as ``sensitivity.py
--dataset lhco`` (the same events, flows and training settings; 3-member ensembles of 4 x 48
affine MAFs, 25 epochs). The seeds draw different signal events; the background of a seed is
one of the two mixed files, so seeds 0 and 2 share their background events.

``--flow rqs`` uses the package's default generator (5 x 2x64 rational-quadratic spline MAFs,
8 bins) for the background ensembles and the signal flow instead (``results/sideband_signal_rqs.json``:
``--flow rqs --seeds 2 --rounds 3 --s-over-sqrt-b 0 1 2.5 5``, 80 minutes: about 9.5 minutes
per injection and seed with the 3 rounds and the spurious-signal fits; its seed 0 with
``--rounds 0 --no-spurious --sideband-truth``: ``results/sideband_signal_truth.json``, 20 minutes).

Run: ``python benchmarks/sideband_signal.py`` (2 seeds x 5 injections including none, about 30
minutes on 2 CPU cores); writes ``results/sideband_signal.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import RESULTS, report
from sensitivity import FLOW, LHCO_FEATURES, LHCO_WINDOWS, lhco_inputs

from zfit_gbi._tf import tf  # noqa: F401
from zfit_gbi.data import LHCO_COLUMNS, Events
from zfit_gbi.generators import Flow, FlowConfig, FlowEnsemble, TrainConfig
from zfit_gbi.inference import FitError, fit, spurious_signal
from zfit_gbi.model import build_model

RQS = FlowConfig(transform="rqs", n_layers=5, hidden_units=(64, 64), n_bins=8)  # the package's default generator


def gbi_fit(bkg_gen, sig_gen, data: Events, sim: Events, prefix: str, *, spurious: bool = False):
    """The sensitivity benchmark's GBI model fitted with Minos: ``(fit result, model)``; with
    ``spurious`` the spurious-signal nuisance, its width from fits with each ensemble member
    alone (``nuisances.spurious_signal: true``)."""
    common = {"resonant": "mjj", "features": LHCO_FEATURES, "windows": LHCO_WINDOWS, "signal_generator": sig_gen,
              "data_masses": data["mjj"], "signal_masses": sim["mjj"], "background_mass": "exppoly2"}
    ss = None
    if spurious:
        members = [build_model(background_generator=mb, prefix=f"{prefix}ss{k}_", **common) for k, mb in enumerate(bkg_gen.members)]
        for mk in members:
            mk.reset(len(data))
        ss = spurious_signal([mk.loss(data) for mk in members], [mk.poi for mk in members], prefix=f"{prefix}gen_spurious")
    model = build_model(background_generator=bkg_gen, prefix=prefix, spurious_signal=ss, **common)
    return fit(model.loss(data), model.poi, minos=True), model


def what_gbi_run_returns(rows: list[dict]) -> list[dict]:
    """The rows ``gbi run`` would return: per cell, the first fit of the chain plain, round 1,
    round 2, ... at which the package's loop stops (``zfit_gbi.pipeline._model_sideband_signal``):
    no fitted signal, or a move from the previous fit below the package's rule
    (:func:`zfit_gbi.pipeline._settled`); else the last round. The error in the rule is the mean
    of the Minos errors (the package uses Hesse's: the same to a few per cent here). Methods
    ``gbi_run`` (with its ``round`` and ``settled``, the package's ``converged``) and, with
    ``--spurious``, ``gbi_run_spurious`` (that round's generator with the nuisance, as with
    ``nuisances.spurious_signal: true``)."""
    from zfit_gbi.pipeline import _settled

    out = []
    for cell in dict.fromkeys((r["seed"], r["s_over_sqrt_b"]) for r in rows):
        by = {r["method"]: r for r in rows if (r["seed"], r["s_over_sqrt_b"]) == cell}
        chain = ["gbi_unbinned", "gbi_signal_modelled"]
        while f"gbi_signal_modelled_round{len(chain)}" in by:
            chain.append(f"gbi_signal_modelled_round{len(chain)}")
        chain = [by[n] for n in chain if n in by]
        if not chain:
            continue
        pick, settled = len(chain) - 1, False
        for j, row in enumerate(chain):
            if row["signal_yield"] <= 0 or (j > 0 and _settled(row["signal_yield"] - chain[j - 1]["signal_yield"],
                                                               (row["error_low"] + row["error_high"]) / 2)):
                pick, settled = j, True
                break
        for suffix in ("", "_spurious"):
            if (found := by.get(f"{chain[pick]['method']}{suffix}")) is not None:
                out.append({**found, "method": f"gbi_run{suffix}", "round": pick, "settled": settled})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lhco_rnd_sr"))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--s-over-sqrt-b", type=float, nargs="+", default=[0.0, 1.0, 2.5, 5.0, 7.5])
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--flow", choices=("affine", "rqs"), default="affine",
                    help="affine: the sensitivity benchmark's 4 x 48 affine MAFs; rqs: the package's default generator (5 x 2x64 spline MAFs, 8 bins) for background and signal")
    ap.add_argument("--rounds", type=int, default=1, help="fit-and-retrain rounds (signal_in_sidebands_iterations); rows for each")
    ap.add_argument("--no-spurious", dest="spurious", action="store_false", help="without the spurious-signal rows")
    ap.add_argument("--sideband-truth", action="store_true",
                    help="add the row sidebands_background_only: the ensemble trained on the sidebands' true background alone (their signal removed by label): what modelling the signal there can reach at best")
    ap.add_argument("--resume", action="store_true",
                    help="keep the cells (seed, injection) already in results/<name>.json from a run with the same settings and compute the rest; the file is rewritten after every cell either way. (with several seeds the script already runs one child process per seed and resumes between them)")
    ap.add_argument("--name", default=None, help="results/<name>.json (default sideband_signal, sideband_signal_rqs)")
    ap.add_argument("--one-process", action="store_true", help="all seeds in this process (default: one child process per seed)")
    args = ap.parse_args()
    args.name = args.name or ("sideband_signal" if args.flow == "affine" else "sideband_signal_rqs")
    if args.seeds > 1 and not args.one_process:
        # TensorFlow keeps every XLA-compiled training step until the process ends (about 0.35 GB
        # per 5 x 2x64 spline flow, read with free during the run: 3 seeds x 4 injections x 3 rounds ran 24 GB out of memory);
        # one process per seed, each resuming from the file the last one wrote
        argv, skip = [], False
        for a in sys.argv[1:]:
            if skip or a.startswith("--seeds="):
                skip = False
                continue
            if a == "--seeds":
                skip = True
                continue
            argv.append(a)
        for n in range(1, args.seeds + 1):
            cmd = [sys.executable, __file__, *argv, "--seeds", str(n), "--one-process", *(["--resume"] if n > 1 and "--resume" not in argv else [])]
            subprocess.run(cmd, check=True)
        return
    flow = FLOW if args.flow == "affine" else RQS
    inputs = lhco_inputs(args.data)
    if inputs is None:
        return
    t_start = time.perf_counter()
    same = ("s_over_sqrt_b", "epochs", "flow", "rounds", "spurious", "sideband_truth", "data")
    rows, seconds_before = [], 0.0
    path = RESULTS / f"{args.name}.json"
    if args.resume and path.is_file():
        old = json.loads(path.read_text())
        changed = [k for k in same if old.get("settings", {}).get(k) != vars(args)[k]]
        if changed:
            raise SystemExit(f"--resume: {path} was written with other settings ({', '.join(changed)}); remove it or match them")
        rows, seconds_before = old["rows"], float(old.get("seconds", 0.0))
        print(f"--resume: {len({(r['seed'], r['s_over_sqrt_b']) for r in rows})} cells from {path}")
    done = {(r["seed"], r["s_over_sqrt_b"]) for r in rows}
    backgrounds, pool, sim, box, eff_sr = (inputs[k] for k in ("backgrounds", "pool", "sim", "box", "eff_sr"))
    train = TrainConfig(epochs=args.epochs, batch_size=512, learning_rate=2e-3, patience=6, progress=False, seed=1)
    sig_gen = Flow(LHCO_FEATURES, box, ("mjj",), flow, seed=2)
    if not all((seed, k) in done for seed in range(args.seeds) for k in args.s_over_sqrt_b):
        sig_gen.fit(sim.array(LHCO_FEATURES), sim["mjj"], train=train)
    ensemble = {"features": LHCO_FEATURES, "bounds": box, "context_names": ("mjj",), "k": 3, "config": flow}
    for seed in range(args.seeds):
        rng = np.random.default_rng(400 + seed)
        bkg, other = backgrounds[seed % 2], backgrounds[1 - seed % 2]
        b_sr = float(np.sum(LHCO_WINDOWS.in_signal_region(bkg["mjj"])))
        n_side = int(np.sum(LHCO_WINDOWS.in_sidebands(bkg["mjj"])))
        t_seed = replace(train, seed=train.seed + seed)
        ideal = other.select(rng.permutation(len(other)) < n_side)
        if all((seed, k) in done for k in args.s_over_sqrt_b):
            continue
        ideal_gen = FlowEnsemble.train(ideal.array(LHCO_FEATURES), ideal["mjj"], train=t_seed, **ensemble)
        for i, k in enumerate(args.s_over_sqrt_b):
            n_inj = round(k * math.sqrt(b_sr) / eff_sr)
            sig = pool.select(np.isin(np.arange(len(pool)), rng.choice(len(pool), n_inj, replace=False)))  # drawn either way: the seed's later cells
            if (seed, k) in done:
                continue
            data = Events(np.concatenate([bkg.values, sig.values]), LHCO_COLUMNS)
            data = data.select(LHCO_WINDOWS.in_fit(data["mjj"]))
            truth = float(np.sum(data["label"]))
            side = LHCO_WINDOWS.split(data, "mjj")["sidebands"]
            x, m = side.array(LHCO_FEATURES), side["mjj"]
            plain = FlowEnsemble.train(x, m, train=t_seed, **ensemble)
            found = {}
            gens = [("gbi_unbinned", plain), ("idealized", ideal_gen)]
            if args.sideband_truth:
                pure = side.select(side["label"] == 0)
                gens.append(("sidebands_background_only", FlowEnsemble.train(pure.array(LHCO_FEATURES), pure["mjj"], train=t_seed, **ensemble)))
            if args.spurious:  # the plain generator with the nuisance: what gbi run returns with spurious_signal: true and no round
                gens.insert(1, ("gbi_unbinned_spurious", plain))
            for method, gen in gens:
                try:
                    found[method] = gbi_fit(gen, sig_gen, data, sim, f"{method[:2]}{method[-3:]}{seed}_{i}_", spurious=method.endswith("_spurious"))
                except FitError as err:
                    print(f"{method}: {err}")
            extra = {}
            if "gbi_unbinned" in found:
                fitted = found["gbi_unbinned"][1]
                f = fitted.signal_fraction(m)
                log_ps = sig_gen.log_prob(x, m)  # once per cell: the signal flow is fixed
                extra = {"fitted_sideband_signal": float(np.sum(f)), "true_sideband_signal": float(np.sum(side["label"]))}
                for r in range(1, args.rounds + 1):  # round r: retrain with f from the previous fit, fit again
                    if not np.any(f > 0):  # no fitted signal: the package keeps the generator it has
                        break
                    modelled = FlowEnsemble.train(x, m, train=t_seed, mixture=fitted.background_mixture(m, log_ps), **ensemble)
                    name = "gbi_signal_modelled" + ("" if r == 1 else f"_round{r}")
                    variants = (((name, False), (f"{name}_spurious", True)) if args.spurious else ((name, False),))
                    for method, spurious in variants:
                        try:
                            found[method] = gbi_fit(modelled, sig_gen, data, sim, f"r{r}{method[-3:]}{seed}_{i}_", spurious=spurious)
                        except FitError as err:
                            print(f"{method}: {err}")
                    if name not in found:
                        break
                    fitted = found[name][1]
                    f = fitted.signal_fraction(m)
            for method, (res, model) in found.items():
                lo, hi = res.poi_error_low, res.poi_error_high
                err = hi if truth > res.poi_value else lo
                rows.append({"dataset": "lhco_rnd", "method": method, "injected_signal": truth, "s_over_sqrt_b": k, "seed": seed,
                             "signal_yield": res.poi_value, "error_low": lo, "error_high": hi,
                             "pull": (res.poi_value - truth) / err, "covered": bool(res.poi_value - lo <= truth <= res.poi_value + hi),
                             **(extra if method not in ("idealized", "sidebands_background_only") else {}),
                             "spurious_width": model.spurious.width if model.spurious is not None else None})
            print(f"[seed {seed}, S/sqrt(B) {k:g}, {truth:.0f} signal events, {time.perf_counter() - t_start:.0f} s] "
                  + ", ".join(f"{r['method']} {r['signal_yield']:.0f} ({r['pull']:+.2f})" for r in rows[-len(found):]), flush=True)
            report(args.name, rows, {"complete": False, "settings": vars(args), "seconds": seconds_before + time.perf_counter() - t_start},
                   quiet=True)
    if args.rounds:  # derived rows, recomputed: without rounds they would copy gbi_unbinned
        rows = [r for r in rows if not r["method"].startswith("gbi_run")] + what_gbi_run_returns(rows)
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        pulls = np.array([r["pull"] for r in sel])
        sig = [r for r in sel if r["injected_signal"] > 0]
        summary.append({"method": method, "fits": len(sel), "mean_pull": float(np.mean(pulls)),
                        "pull_error": float(np.std(pulls, ddof=1) / math.sqrt(len(pulls))) if len(pulls) > 1 else math.nan,
                        "rms_pull": float(np.sqrt(np.mean(pulls**2))), "covered": int(sum(r["covered"] for r in sel)),
                        "mean_relative_bias_with_signal": float(np.mean([(r["signal_yield"] - r["injected_signal"]) / r["injected_signal"]
                                                                          for r in sig])) if sig else math.nan})
    for s in summary:
        print(f"{s['method']:>20}: mean pull {s['mean_pull']:+.2f} +- {s['pull_error']:.2f}, RMS {s['rms_pull']:.2f}, "
              f"68 % interval holds the truth in {s['covered']} of {s['fits']}, mean relative bias with signal "
              f"{100 * s['mean_relative_bias_with_signal']:+.1f} %")
    report(args.name, rows, {"complete": True, "summary": summary, "settings": vars(args),
                             "seconds": seconds_before + time.perf_counter() - t_start})


if __name__ == "__main__":
    main()

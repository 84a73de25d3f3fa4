"""The config-driven analysis behind ``gbi run``: data -> generators -> model -> inference -> summary.

``run(cfg, out)`` reads the events named in the config, trains (or loads) the background
generator on the sidebands and the signal generator on the signal simulation, builds the
extended GBI model with the chosen generator-error nuisances, fits it, runs discovery and the
CLs upper limit through hepstats, and writes ``out/summary.json`` (schema: :data:`SUMMARY_SCHEMA`),
the trained models under ``out/models/`` and a post-fit plot. Every file is written atomically.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import write_json_atomic
from .data import DataError, Events, Windows, box_from_data, read_events, validate
from .generators import Flow, FlowConfig, FlowEnsemble, TrainConfig, load, save

log = logging.getLogger(__name__)

__all__ = ["SUMMARY_SCHEMA", "devices", "export_workspace", "replot", "run", "scan", "toys", "train", "use_models", "versions", "write_json_atomic"]

SUMMARY_SCHEMA: dict[str, str] = {
    "signal_yield": "{value, error_low, error_high, error_method[, notes]}: fitted signal events in the fit window; asymmetric errors from Minos, or from the profile-likelihood crossings where Minos fails; notes (data-driven): what to know before quoting it",
    "mu": "{value, error_low, error_high} when inference.poi is 'mu', else null",
    "background_yield": "{value, error}: fitted background events in the fit window",
    "discovery": "{q0, p0, significance, calculator} of the background-only hypothesis (null if disabled)",
    "upper_limit": "{cl, observed, expected: [-2s, -1s, median, +1s, +2s], calculator, scan, problems, notes} on the signal yield (null if disabled); scan: the CLs values (observed, expected and its bands) at each tested POI value, in POI units; problems: why the limits are NaN; notes: what to know about finite ones (a nuisance at its bound in the fit the expected band comes from)",
    "nuisances": "{name: {value, error}} of the generator-error nuisance parameters (the spurious-signal one included)",
    "spurious_signal": "{width, member_yields, parameter} of nuisances.spurious_signal: the width (signal events) of the nuisance on the signal yield and, when measured, the yield fitted with each background ensemble member alone (null if off)",
    "background_training": "simulation mode: {signal_in_sidebands, simulated_signal_share_in_sidebands, applied, loaded, iterations: [{signal_yield, poi, poi_error, background_yield, sideband_signal_events, retrained, converged}], converged (false: the limit of retrainings was reached before the yield settled)} of background.signal_in_sidebands (null with 'ignore')",
    "parameters": "{name: {value, error}} of every floating parameter",
    "fit_valid": "bool: the minimum is valid (an invalid one is an error, never a summary)",
    "signal_model": "simulation | data-driven | parametrized (signal.model)",
    "signal_parameters": "parametrized only: {name: {value, error, range, profile: {values, minus_2_delta_nll}}} of the fitted signal-model parameters (discovery and upper_limit are quoted at these values: local)",
    "signal_yield_signal_region": "data-driven only: {value, low, high}: the R-ANODE estimate w N_SR and its interval in the signal region",
    "ranode": "data-driven only: the R-ANODE scan {w, log_likelihood, w_hat, w_interval, errors, q0, t, ...}, signal_fraction_in_signal_region (of p_S(m)), background_members ({method, w_hat, w_interval, signal_yield, error} of the data scanned with each background ensemble member left out in turn; error, their jackknife error, is in the interval; null without an ensemble or signal.data_driven.member_scans), null (the background-only toys' t values, scale, zero_fraction), null_w_hat, settings",
    "mass_only": "data-driven only: {value, error_low, error_high}: the mass-only fit's signal yield in the fit window (signal shape fixed), the baseline",
    "n_events": "{fit, signal_region, sidebands}: event counts in the windows",
    "windows": "{fit, signal_region}",
    "bounds": "{feature: [low, high]}: the observable box the densities are normalized on",
    "profile_scan": "{poi, minus_2_delta_nll}: profile likelihood scan of the POI (null if disabled; a null entry where the POI is so negative that the model density is negative for some event)",
    "correlation": "{name: {name: rho}} correlation matrix of the floating parameters at the minimum",
    "plots": "[file names] of the plots written next to summary.json",
    "backend": "zfit | pyhf | both (inference.backend)",
    "results": "{backend: {signal_yield, discovery, upper_limit, ...}} side by side; pyhf adds parameters, bins, background_yield (SR, from the sideband fit) and workspace (file names)",
    "timings": "{stage: seconds}",
    "versions": "{package: version}",
    "devices": "{gpus: [the GPUs TensorFlow sees, 'GPU:0 (name, compute capability x.y)'], cpus: CPU count}: where the run computed (TensorFlow trains and evaluates on the first GPU when it sees one)",
    "config": "the validated configuration",
}


@contextmanager
def _stage(timings: dict[str, float], name: str, quiet: bool):
    if not quiet:
        print(f"[gbi] {name} ...", flush=True)
    t = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t, 3)


def devices() -> dict[str, Any]:
    """Where TensorFlow computes: ``{gpus: [...], cpus: n}``, the GPUs it sees (training and
    evaluation run on the first of them when there is one) and the CPU count."""
    import os

    from ._tf import tf

    gpus = []
    for d in tf.config.list_physical_devices("GPU"):
        try:
            info = tf.config.experimental.get_device_details(d)
        except Exception:  # noqa: BLE001  (details are optional; the device is what matters)
            info = {}
        cc = info.get("compute_capability")
        gpus.append(f"{d.name.removeprefix('/physical_device:')} ({info.get('device_name', 'unknown')}"
                    + (f", compute capability {cc[0]}.{cc[1]})" if cc else ")"))
    return {"gpus": gpus, "cpus": os.cpu_count()}


def versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on (``unknown`` if absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("zfit-gbi", "zfit", "hepstats", "pyhf", "tensorflow", "tensorflow-probability", "iminuit", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _generator(g: Any, events: Events, features: tuple[str, ...], resonant: str, box: dict, what: str, quiet: bool, k_min: int = 1,
               executor: Any = None, mixture: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Flow | FlowEnsemble:
    """Load ``g.path`` or train on ``events`` (features | resonant); ``mixture``: per-event
    ``(w, log_a, log_b)`` of the mixture to train in (:func:`zfit_gbi.generators.training.train_flow`)."""
    if g.is_saved:
        gen = load(g.path)
        if tuple(gen.features) != features or tuple(gen.context) != (resonant,):
            msg = (
                f"{g.path}: the saved {what} generator models p({', '.join(gen.features)} | {', '.join(gen.context)}) "
                f"but the config asks for p({', '.join(features)} | {resonant})"
            )
            raise DataError(msg)
        for f in features:
            lo, hi = gen.bounds[f]
            if box[f][0] < lo or box[f][1] > hi:
                msg = f"{g.path}: the data's {f} range {box[f]} reaches outside the saved generator's box [{lo}, {hi}]"
                raise DataError(msg)
        return gen
    fc = FlowConfig(**g.flow_kwargs())
    tc = TrainConfig(**g.train_kwargs(), progress=not quiet)
    x, m = events.array(features), events[resonant]
    k = max(int(g.ensemble), 1)
    if k < k_min:
        msg = f"the chosen nuisance treatment needs an ensemble of at least {k_min} {what} generators; set {what}.generator.ensemble >= {k_min}"
        raise DataError(msg)
    if k == 1:
        flow = Flow(features, box, (resonant,), fc, seed=g.seed)
        try:
            flow.fit(x, m, events.weights, tc, mixture=mixture)
        except KeyboardInterrupt as err:  # the flow now holds the best weights so far
            err.partial_generator = flow  # type: ignore[attr-defined]
            raise
        return flow
    return FlowEnsemble.train(
        x, m, features=features, bounds=box, context_names=(resonant,), k=k, config=fc, train=tc,
        bootstrap=g.bootstrap, weights=events.weights, aggregate=g.aggregate, executor=executor, mixture=mixture,
    )


def _generators(cfg: Any, parts: dict[str, Events], sim: Events, box: dict, out: Path | None, timings: dict[str, float],
                quiet: bool) -> tuple[Flow | FlowEnsemble, Flow | FlowEnsemble | None]:
    """The background generator (sidebands) and the signal generator (simulation; None unless
    ``signal.model`` is ``simulation``), trained or loaded as the config says, and saved under
    ``out/models`` unless ``out`` is None."""
    features, resonant = tuple(cfg.data.features), cfg.data.resonant
    k_min = _k_min(cfg)
    gens: list[Any] = [None, None]
    jobs = [("background", cfg.background.generator, parts["sidebands"].with_columns([resonant, *features]))]
    if cfg.signal.model == "simulation":
        jobs.append(("signal", cfg.signal.generator, sim))
    for i, (what, g, events) in enumerate(jobs):
        with _stage(timings, f"{what} generator", quiet):
            try:
                gen = _generator(g, events, features, resonant, box, what, quiet, k_min if what == "background" else 1,
                                 executor=None if cfg.compute.executor == "sequential" else cfg.compute.executor)
            except KeyboardInterrupt as err:
                _save_interrupted(err, out, what)
                raise
            if out is not None:
                save(gen, out / "models" / what)
        gens[i] = gen
    return gens[0], gens[1]


def _k_min(cfg: Any) -> int:
    """The smallest background ensemble the nuisance treatment works with."""
    return 2 if cfg.nuisances.generator in ("eigen", "envelope", "updown") or cfg.nuisances.spurious_signal is True else 1


#: ``signal_in_sidebands: auto`` models the signal in the sidebands from this share of the
#: simulated signal (fit window) there on: the yield's bias is at most about that fraction
AUTO_SIDEBAND_SHARE = 0.02
#: the fit-and-retrain rounds stop once the yield moved by less than this fraction of its error
SIDEBAND_SIGNAL_TOLERANCE = 0.2


def _settled(move: float, error: float) -> bool:
    """Whether a round's move of the POI (POI units) stops the fit-and-retrain rounds: less
    than :data:`SIDEBAND_SIGNAL_TOLERANCE` of the POI's ``error``.

    Not the scatter of independently trained generators (sqrt(2 / K) times the spread of the
    yields fitted with each of K ensemble members alone): the rounds retrain with the same
    seeds, so one round's move is mostly the iteration's drift, not noise (on the LHCO events
    the moves keep their sign round after round; a stop within that scatter, 2-25 events, ends
    seed 0 at 313 injected a round early, 15 events further from the truth, and seed 1 at none
    at 10 instead of 12: ``benchmarks/results/sideband_signal_rqs.json``)."""
    return abs(move) < SIDEBAND_SIGNAL_TOLERANCE * error


def _model_sideband_signal(cfg: Any, bkg_gen: Flow | FlowEnsemble, sig_gen: Flow | FlowEnsemble, parts: dict[str, Events], sim: Events,
                           box: dict, out: Path | None, timings: dict[str, float], quiet: bool) -> tuple[Flow | FlowEnsemble, dict[str, Any] | None]:
    """``background.signal_in_sidebands``: with ``model`` (or ``auto`` when at least
    :data:`AUTO_SIDEBAND_SHARE` of the simulated signal in the fit window lies in the sidebands)
    fit the model, then retrain the background generator on the sidebands inside the mixture
    (1 - f(m)) p_B(x | m) + f(m) p_S(x | m), f the fitted signal's share at each event's mass
    (:meth:`GBIModel.signal_fraction`), p_S the signal generator fixed; fit again and repeat, at
    most ``signal_in_sidebands_iterations`` retrainings (a last fit checks the last one), until the yield moves by less than
    :data:`SIDEBAND_SIGNAL_TOLERANCE` of its error (each round starts from the previous fit, whose
    f is too small while the generator still holds signal: a fixed-point iteration). Returns the generator to use (saved over
    ``out/models/background``) and what ``summary.json`` records (``background_training``;
    None for ``ignore`` and the other signal models).

    A loaded background generator is used as saved when it was trained this way (its training
    history says ``objective: mixture``); one trained on the plain sidebands is an error where
    the signal would be modelled (it cannot be retrained: its training settings are not in the
    config)."""
    from .inference import fit
    from .model import build_model

    bg, resonant = cfg.background, cfg.data.resonant
    if bg.signal_in_sidebands == "ignore" or cfg.signal.model != "simulation":
        return bkg_gen, None
    windows = Windows(tuple(cfg.windows.fit), tuple(cfg.windows.signal_region))
    w_sim = np.ones(len(sim)) if sim.weights is None else sim.weights
    in_fit, in_sb = windows.in_fit(sim[resonant]), windows.in_sidebands(sim[resonant])
    share = float(np.sum(w_sim[in_sb]) / max(np.sum(w_sim[in_fit]), np.finfo(float).tiny))
    applied = bg.signal_in_sidebands == "model" or share >= AUTO_SIDEBAND_SHARE
    report: dict[str, Any] = {"signal_in_sidebands": bg.signal_in_sidebands, "simulated_signal_share_in_sidebands": share,
                              "applied": applied, "loaded": None, "iterations": [], "converged": None}
    if not applied:
        return bkg_gen, report
    if bg.generator.is_saved:
        if all(h.objective == "mixture" for h in _histories(bkg_gen)):
            report["loaded"] = str(bg.generator.path)
            return bkg_gen, report
        msg = (f"{bg.generator.path}: this background generator was trained on the sidebands as they are, but "
               f"{100 * share:.0f} % of the simulated signal lies in the sidebands and background.signal_in_sidebands is "
               f"{bg.signal_in_sidebands!r} (retrain it with the fitted signal there modelled): train it in this run "
               "(no --models / background.generator.path) or set background.signal_in_sidebands: ignore")
        raise DataError(msg)
    features = tuple(cfg.data.features)
    side = parts["sidebands"].with_columns([resonant, *features])
    x, m = side.array(features), side[resonant]
    w_ev = np.ones(len(side)) if side.weights is None else side.weights
    log_ps = sig_gen.log_prob(x, m)  # once: the signal generator is fixed through the rounds
    executor = None if cfg.compute.executor == "sequential" else cfg.compute.executor
    # f needs n_S, n_B and the mass shapes only: the rounds fit without the generator-error
    # treatments (no eigen-variation sampling, no spurious-signal member fits per round)
    inputs = _model_inputs(cfg, sig_gen, parts, sim)
    previous, settled = None, False
    for it in range(bg.signal_in_sidebands_iterations + 1):  # the last fit only checks the last retraining
        with _stage(timings, f"fit for the signal in the sidebands ({it + 1})", quiet):
            model = build_model(background_generator=bkg_gen, prefix=f"sbsig{it}_", **inputs)
            res = fit(model.loss(parts["fit"]), model.poi, minos=False)
            f = model.signal_fraction(m)
        rec = {"signal_yield": model.signal_yield, "poi": res.poi_value, "poi_error": res.errors[model.poi.name],
               "background_yield": float(model.n_bkg.value()), "sideband_signal_events": float(np.sum(w_ev * f)), "retrained": False,
               "converged": previous is not None and _settled(res.poi_value - previous, res.errors[model.poi.name])}
        report["iterations"].append(rec)
        if not quiet:
            print(f"  round {it + 1}: fitted signal {rec['signal_yield']:.1f} events, of them {rec['sideband_signal_events']:.1f} "
                  "in the sidebands" + (" (converged)" if rec["converged"] else ""), flush=True)
        if rec["converged"] or not np.any(f > 0):  # settled, or no fitted signal: the generator we have is the right one
            settled = True
            break
        if it == bg.signal_in_sidebands_iterations:  # the limit of retrainings reached
            break
        previous = res.poi_value
        with _stage(timings, f"background generator, signal in the sidebands modelled ({it + 1})", quiet):
            try:
                bkg_gen = _generator(bg.generator, side, features, resonant, box, "background", quiet, _k_min(cfg), executor=executor,
                                     mixture=model.background_mixture(m, log_ps))
            except KeyboardInterrupt as err:
                _save_interrupted(err, out, "background")
                raise
        rec["retrained"] = True
    report["converged"] = settled
    if not settled:
        its = report["iterations"]
        moves = ", ".join(f"{b['poi'] - a['poi']:+.3g}" for a, b in itertools.pairwise(its))
        n = len(its) - 1
        log.warning("background.signal_in_sidebands: the yield had not settled after %d retraining%s (moves of the yield per "
                    "round: %s; it settles when a round moves it by less than %.1f of its error, %.3g): the final fit may still "
                    "find too little signal; raise background.signal_in_sidebands_iterations (the rounds retrain with the same seeds, so "
                    "moves of one sign are the iteration still converging, not noise)", n, "" if n == 1 else "s", moves,
                    SIDEBAND_SIGNAL_TOLERANCE, its[-1]["poi_error"])
    if out is not None:
        save(bkg_gen, out / "models" / "background")
    return bkg_gen, report


def _save_interrupted(err: KeyboardInterrupt, out: Path | None, what: str) -> None:
    """Keep what an interrupted training got so far (the best weights of the interrupted flow,
    or an ensemble's finished members) as ``out/models/<what>.interrupted``: a complete,
    loadable model under a name no later command mistakes for a finished one."""
    partial = getattr(err, "partial_generator", None)
    if out is None or partial is None:
        return
    path = save(partial, out / "models" / f"{what}.interrupted")
    log.warning("interrupted: the %s generator trained so far is saved in %s (use it with generator: {path: ...})", what, path)


def _histories(gen: Flow | FlowEnsemble) -> list[Any]:
    """The training history of every member (one for a single flow)."""
    return gen.history if isinstance(gen.history, list) else [gen.history]


def _describe(gen: Flow | FlowEnsemble) -> dict[str, Any]:
    """What ``train.json`` records of a generator: members, events, epochs, best validation loss."""
    hs = _histories(gen)
    return {
        "members": len(hs),
        "features": list(gen.features),
        "context": list(gen.context),
        "n_train": [h.n_train for h in hs],
        "epochs": [len(h.val_loss) for h in hs],
        "best_epoch": [h.best_epoch + 1 for h in hs],
        "best_val_loss": [h.best_val_loss for h in hs],
        "stopped": [h.stopped for h in hs],
        "seconds": [round(h.seconds, 2) for h in hs],
    }


def _simulation_mode(cfg: Any, command: str, *, parametrized: bool = False) -> None:
    """A clear error for the commands the data-driven (and, unless ``parametrized``, the
    parametrized) mode does not have (yet)."""
    if cfg.signal.model != "simulation" and not (parametrized and cfg.signal.model == "parametrized"):
        how = ("learns the signal in gbi run's R-ANODE scan" if cfg.signal.model == "data-driven"
               else "builds the signal from a parametrized classifier trained in gbi run")
        msg = (f"{command} needs signal.model 'simulation' (a signal generator trained on simulation); signal.model "
               f"{cfg.signal.model!r} {how}: use gbi run (one mass hypothesis per run: signal.mass)")
        raise DataError(msg)


def train(cfg: Any, out: str | Path, *, quiet: bool = False) -> dict[str, Any]:
    """``gbi train``: train (or load) the background generator on the sidebands and the signal
    generator on the simulation, save both under ``out/models/{background,signal}``, draw the
    training curves and write ``out/train.json`` (atomically); returns that report.

    ``gbi fit``, ``gbi limit`` and ``gbi run`` reuse the saved generators with
    ``--models out/models`` (:func:`use_models`)."""
    from ._tf import tf  # noqa: F401

    _simulation_mode(cfg, "gbi train")

    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with _stage(timings, "read data", quiet):
        parts, sim, box = _read_inputs(cfg)
    if cfg.background.generator.is_saved and cfg.signal.generator.is_saved:
        log.warning("both generators are loaded from saved folders: nothing is trained, they are copied to %s", out / "models")
    bkg_gen, sig_gen = _generators(cfg, parts, sim, box, out, timings, quiet)
    bkg_gen, sideband_signal = _model_sideband_signal(cfg, bkg_gen, sig_gen, parts, sim, box, out, timings, quiet)
    plots: list[str] = []
    if cfg.plots.enabled:
        from . import plotting as P

        with _stage(timings, "plots", quiet):
            plots = _training_plots(P, bkg_gen, sig_gen, out, cfg.plots)
    report = {
        "models": {"background": str(out / "models" / "background"), "signal": str(out / "models" / "signal")},
        "generators": {"background": _describe(bkg_gen), "signal": _describe(sig_gen)},
        "background_training": sideband_signal,
        "n_events": {"sidebands": len(parts["sidebands"]), "simulation": len(sim)},
        "bounds": {k: list(v) for k, v in box.items()},
        "plots": plots,
        "timings": timings,
        "versions": versions(), "devices": devices(),
        "config": json.loads(cfg.model_dump_json()),
    }
    write_json_atomic(out / "train.json", report)
    return report


def use_models(cfg: Any, folder: str | Path) -> Any:
    """``cfg`` with both generators loaded from ``folder/background`` and ``folder/signal``
    (the ``models`` folder written by :func:`train` or :func:`run`); for ``signal.model``
    ``data-driven`` or ``parametrized`` the background generator only (the signal flow or
    classifier is trained by the run).

    Raises:
        DataError: when a generator folder is missing.
    """
    from .config import override_config

    folder = Path(folder).expanduser().absolute()
    which = ("background", "signal") if cfg.signal.model == "simulation" else ("background",)
    missing = [str(folder / w) for w in which if not (folder / w / "model.json").is_file()]
    if missing:
        msg = f"--models {folder}: no saved generator in {', '.join(missing)} (expected the models/ folder written by gbi train or gbi run)"
        raise DataError(msg)
    return override_config(cfg, {w: {"generator": {"path": str(folder / w)}} for w in which}, source=f"--models {folder}")


def run(cfg: Any, out: str | Path, *, quiet: bool = False) -> dict[str, Any]:
    """Run the analysis described by a validated config; returns the summary (also written).

    ``inference.backend`` picks the unbinned route (``zfit``), the binned one (``pyhf``:
    templates, ``out/workspace.json``, pyhf.infer) or ``both``; ``summary["results"]`` holds
    each backend's signal yield, discovery and limit side by side, the top-level fields are the
    unbinned ones (the binned ones for ``pyhf`` alone)."""
    from ._tf import tf  # noqa: F401

    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    resonant = cfg.data.resonant
    windows = Windows(tuple(cfg.windows.fit), tuple(cfg.windows.signal_region))
    seed = int(cfg.inference.seed)

    with _stage(timings, "read data", quiet):
        parts, sim, box = _read_inputs(cfg)
        fit_events = parts["fit"]
        counts = windows.counts(fit_events, resonant)

    if cfg.signal.model == "data-driven":
        from .data_driven import run_data_driven

        summary, plots = run_data_driven(cfg, out, parts, sim, box, timings, quiet)
        return _finish(cfg, out, summary, "zfit", counts, windows, plots, timings)

    poi_kind = cfg.inference.poi
    bkg_gen, sig_gen = _generators(cfg, parts, sim, box, out, timings, quiet)
    bkg_gen, sideband_signal = _model_sideband_signal(cfg, bkg_gen, sig_gen, parts, sim, box, out, timings, quiet)
    ratio = None
    if cfg.signal.model == "parametrized":
        with _stage(timings, "signal classifier", quiet):
            ratio = _paws_ratio(cfg, bkg_gen, sim, windows, out, seed, quiet)

    with _stage(timings, "model", quiet):
        model, common = _build(cfg, bkg_gen, sig_gen, parts, sim, seed, signal_ratio=ratio)
        loss = model.loss(fit_events)
        scale = model.reference_yield if poi_kind == "mu" else 1.0  # POI units -> signal events

    backend = "zfit" if ratio is not None else cfg.inference.backend  # parametrized: unbinned only (ConfigWarning)
    plots: list[str] = []
    summary: dict[str, Any] = {}
    if backend in ("zfit", "both"):
        summary, plots = _unbinned(cfg, out, model, common, loss, fit_events, windows, bkg_gen, sig_gen, counts, scale, timings, quiet)
    binned = None
    if backend in ("pyhf", "both"):
        binned = _binned(cfg, out, model, bkg_gen, sig_gen, parts, sim, seed, timings, quiet)
        plots = sorted({*plots, *binned.pop("_plots")})
    if backend == "pyhf":  # the binned results are the run's results
        summary = {
            "signal_yield": binned["signal_yield"], "mu": binned["mu"], "background_yield": binned["background_yield"],
            "discovery": binned["discovery"], "upper_limit": binned["upper_limit"], "profile_scan": None,
            "nuisances": {k: v for k, v in binned["parameters"].items() if k in binned["variations"]},
            "spurious_signal": None,
            "parameters": binned["parameters"], "fit_valid": True, "correlation": {},
        }
    if binned is not None:
        summary["results"] = {"pyhf": binned}
    summary["background_training"] = sideband_signal
    return _finish(cfg, out, summary, backend, counts, windows, plots, timings)


def _finish(cfg: Any, out: Path, summary: dict[str, Any], backend: str, counts: dict[str, int], windows: Windows, plots: list[str],
            timings: dict[str, float]) -> dict[str, Any]:
    """The run-wide fields of ``summary``; writes ``out/summary.json`` and returns it."""
    results = summary.pop("results", {})
    if backend != "pyhf":
        results = {"zfit": {k: summary.get(k) for k in ("signal_yield", "discovery", "upper_limit")}, **results}
    summary.setdefault("signal_model", cfg.signal.model)
    summary.update({
        "backend": backend,
        "results": results,
        "n_events": counts,
        "windows": {"fit": list(windows.fit), "signal_region": list(windows.signal_region)},
        "plots": plots,
        "timings": timings,
        "versions": versions(), "devices": devices(),
        "config": json.loads(cfg.model_dump_json()) if hasattr(cfg, "model_dump_json") else None,
    })
    write_json_atomic(out / "summary.json", summary)
    return summary


def _unbinned(cfg: Any, out: Path, model: Any, common: dict[str, Any], loss: Any, fit_events: Events, windows: Windows, bkg_gen: Any,
              sig_gen: Any, counts: dict[str, int], scale: float, timings: dict[str, float], quiet: bool) -> tuple[dict[str, Any], list[str]]:
    """The unbinned (zfit + hepstats) inference of :func:`run`: the summary's result fields and the plots."""
    import zfit

    from .inference import discovery, envelope_discovery, fit, profile_scan, upper_limit
    from .model import build_model

    with _stage(timings, "fit", quiet):
        profiles = _signal_parameter_profiles(model.signal_params, loss, cfg.signal.parametrized.profile_points)  # also the fit's start
        summary_fit = fit(loss, model.poi, minos=cfg.inference.minos)
    params = list(loss.get_params(floating=True))
    signal_parameters = None
    if model.signal_params:
        signal_parameters = {}
        with _stage(timings, "signal parameter profiles", quiet):
            for name, p in zip(model.signal_ratio.classifier.parameters, model.signal_params, strict=True):
                v, e = summary_fit.values[p.name], summary_fit.errors[p.name]
                fine = np.unique(np.clip(np.linspace(v - 4 * e, v + 4 * e, 9), float(p.lower), float(p.upper)))
                delta = profile_scan(loss, p, fine)
                zfit.param.set_values(params, [summary_fit.values[q.name] for q in params])
                grid = profiles[p.name]
                signal_parameters[name] = {
                    "parameter": p.name, "value": v, "error": e, "range": [float(p.lower), float(p.upper)],
                    "profile": {"values": fine.tolist(), "minus_2_delta_nll": _json_numbers(delta)},
                    "grid": {"values": grid[0], "minus_2_delta_nll": [max(2 * (x - summary_fit.nll), 0.0) for x in grid[1]]},
                }

    result: dict[str, Any] = {}
    treatment, poi_kind, seed = cfg.nuisances.generator, cfg.inference.poi, int(cfg.inference.seed)
    with _held(model.signal_params):  # discovery and limit at the fitted signal parameters (local significance)
        if cfg.inference.discovery:
            with _stage(timings, "discovery", quiet):
                if treatment == "envelope":
                    losses, pois = [], []
                    for i, member in enumerate(bkg_gen.members):
                        mk = build_model(background_generator=member, prefix=f"env{i}_", **common)
                        losses.append(mk.loss(fit_events))
                        pois.append(mk.poi)
                    env = envelope_discovery(losses, pois)
                    result["discovery"] = {"q0": env["q0"], "p0": env["p0"], "significance": env["significance"], "calculator": "asymptotic (envelope)"}
                else:
                    inf = cfg.inference
                    disc = discovery(loss, model.poi, calculator=inf.discovery_calculator, n_toys=inf.discovery_n_toys, n_asimov=inf.n_asimov, seed=seed)
                    result["discovery"] = disc.to_dict()
        if cfg.inference.upper_limit is not None:
            ul = cfg.inference.upper_limit
            with _stage(timings, "upper limit", quiet):
                scan = None if ul.scan is None else np.linspace(ul.scan[0], ul.scan[1], ul.n_points)
                lim = upper_limit(loss, model.poi, cl=ul.cl, calculator=ul.calculator, scan=scan, n_points=ul.n_points,
                                  n_toys=ul.n_toys, n_asimov=cfg.inference.n_asimov, seed=seed)
                result["upper_limit"] = {"cl": lim.cl, "observed": lim.observed * scale, "expected": [e * scale for e in lim.expected],
                                         "calculator": lim.calculator, "scan": lim.scan, "problems": list(lim.problems), "notes": list(lim.notes)}

    if cfg.inference.profile_points:  # theta profiled, like the quoted (Minos) interval
        with _stage(timings, "profile scan", quiet):
            lo_e, hi_e = summary_fit.poi_error_low, summary_fit.poi_error_high
            grid = np.linspace(summary_fit.poi_value - 3 * lo_e, summary_fit.poi_value + 3 * hi_e, cfg.inference.profile_points)
            delta = profile_scan(loss, model.poi, grid)
            # null where the POI is below what the events allow (the density negative for some event)
            result["profile_scan"] = {"poi": grid.tolist(), "minus_2_delta_nll": _json_numbers(delta)}

    zfit.param.set_values(params, [summary_fit.values[p.name] for p in params])  # back to the best fit (the scans moved them)
    plots: list[str] = []
    if cfg.plots.enabled:
        with _stage(timings, "plots", quiet):
            plots = _plots(cfg, out, model, fit_events, windows, bkg_gen, sig_gen, result, lim if cfg.inference.upper_limit is not None else None, seed,
                           signal_parameters)

    s = summary_fit
    summary = {
        "signal_yield": {"value": s.poi_value * scale, "error_low": s.poi_error_low * scale, "error_high": s.poi_error_high * scale, "error_method": s.poi_error_method},
        "mu": {"value": s.poi_value, "error_low": s.poi_error_low, "error_high": s.poi_error_high} if poi_kind == "mu" else None,
        "background_yield": {"value": s.values[model.n_bkg.name], "error": s.errors[model.n_bkg.name]},
        "discovery": result.get("discovery"),
        "upper_limit": result.get("upper_limit"),
        "profile_scan": result.get("profile_scan"),
        "nuisances": {p.name: {"value": s.values[p.name], "error": s.errors[p.name]} for p in model.nuisances},
        "spurious_signal": model.spurious.to_dict() if model.spurious is not None else None,
        "parameters": {k: {"value": v, "error": s.errors.get(k)} for k, v in s.values.items()},
        "fit_valid": s.valid,
        "correlation": s.correlation,
        "signal_parameters": signal_parameters,
    }
    return summary, plots


@contextmanager
def _held(params: list[Any]):
    """Hold ``params`` fixed at their current values inside the block (floating again after)."""
    for p in params:
        p.floating = False
    try:
        yield
    finally:
        for p in params:
            p.floating = True


def _signal_parameter_profiles(params: list[Any], loss: Any, n_points: int) -> dict[str, tuple[list[float], list[float]]]:
    """Profile likelihood of each signal-model parameter (PAWS-style) on ``n_points`` over its
    simulated range (every other parameter, the POI included, profiled): ``{name: (values,
    NLL minima)}``. Each parameter is left at its best grid point: the fit starts there (a
    likelihood in a classifier's parameter can have several minima)."""
    from .inference import _conditional_nll

    out: dict[str, tuple[list[float], list[float]]] = {}
    for p in params:
        grid = np.linspace(float(p.lower), float(p.upper), n_points)
        nll = _conditional_nll(loss, p, grid)
        p.set_value(float(grid[int(np.argmin(nll))]))
        out[p.name] = (grid.tolist(), [float(v) for v in nll])
    return out


def _paws_ratio(cfg: Any, bkg_gen: Any, sim: Events, windows: Windows, out: Path | None, seed: int, quiet: bool,
                classifier: Any = None) -> Any:
    """The PAWS-style signal density of ``signal.model: parametrized``: the parametrized
    classifier trained on the simulation's signal-region events against the background
    generator (saved under ``out/models/signal_classifier``; ``classifier``: a trained one, not
    retrained) as a :class:`~zfit_gbi.paws.ClassifierRatio`."""
    from .classifier import ClassifierConfig
    from .paws import ClassifierRatio, train_parametrized_classifier

    resonant, features = cfg.data.resonant, tuple(cfg.data.features)
    pc = cfg.signal.parametrized
    sr = sim.select(windows.in_signal_region(sim[resonant]))
    if len(sr) < 100:
        msg = f"{cfg.signal.simulation.path}: only {len(sr)} signal-simulation events in the signal region {windows.signal_region}; the parametrized classifier needs >= 100"
        raise DataError(msg)
    params = tuple(pc.parameters)
    clf = classifier
    if clf is None:
        clf_cfg = ClassifierConfig(**{**pc.classifier.model_dump(), "hidden": tuple(pc.classifier.hidden)})
        clf = train_parametrized_classifier(sr.array(features), sr[resonant], sr.array(params) if params else None, bkg_gen,
                                            parameters=params, oversample=pc.oversample, config=clf_cfg, seed=seed, progress=not quiet)
    if out is not None:
        clf.save(out / "models" / "signal_classifier")
    return ClassifierRatio.build(clf, bkg_gen, sr[resonant], n_mc=pc.n_mc, seed=seed, prefix="sig", mass_range=windows.signal_region)


def _templates(cfg: Any, model: Any, bkg_gen: Any, sig_gen: Any, parts: dict[str, Events], sim: Events, seed: int) -> Any:
    """The binned route's templates (:mod:`pyhf_gbi.templates`) from the run's objects."""
    from pyhf_gbi.templates import make_templates

    mu = cfg.inference.poi == "mu"
    b = cfg.binned
    t = make_templates(
        resonant=cfg.data.resonant, features=cfg.data.features, windows=Windows(tuple(cfg.windows.fit), tuple(cfg.windows.signal_region)),
        mass_pdf=model.background.mass_pdf, background_generator=bkg_gen, signal_generator=sig_gen, data=parts["fit"],
        sidebands=parts["sidebands"], simulation=sim, variation=model.variation, mass_bins=b.mass_bins, score_bins=b.score_bins,
        variation_bins=b.split_for(0 if model.variation is None else len(model.variation.params)),
        n_generated=b.n_generated, signal_scale=float(cfg.inference.reference_yield) if mu else 1.0,
        signal_mass_hypothesis=cfg.signal.mass, poi_name="mu" if mu else "n_sig", seed=seed,
    )
    if model.spurious is not None:  # the same width (and parameter name) as the unbinned route
        t.spurious_width, t.spurious_name = model.spurious.width, model.spurious.name
    return t


def export_workspace(cfg: Any, path: str | Path, *, custom: bool = False, quiet: bool = False) -> dict[str, Any]:
    """``gbi export-pyhf``: train (or load) the generators, build the binned templates and
    write the HistFactory workspace to ``path`` (atomically). Standard modifiers only (plain
    pyhf reads it) unless ``custom``: then the generator variations use ``gbi_expshape``.
    Trained generators are saved next to it in ``<stem>_models/``. Returns the spec."""
    from pyhf_gbi.workspace import build_spec, write_spec

    from ._tf import tf  # noqa: F401

    _simulation_mode(cfg, "gbi export-pyhf")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with _stage(timings, "read data", quiet):
        parts, sim, box = _read_inputs(cfg)
    bkg_gen, sig_gen = _generators(cfg, parts, sim, box, path.parent / f"{path.stem}_models", timings, quiet)
    with _stage(timings, "binned templates", quiet):
        model, _ = _build(cfg, bkg_gen, sig_gen, parts, sim, int(cfg.inference.seed))
        t = _templates(cfg, model, bkg_gen, sig_gen, parts, sim, int(cfg.inference.seed))
        spec = build_spec(t, variations="custom" if custom else "histosys")
        write_spec(spec, path)
    return spec


def _binned(cfg: Any, out: Path, model: Any, bkg_gen: Any, sig_gen: Any, parts: dict[str, Events], sim: Events, seed: int,
            timings: dict[str, float], quiet: bool) -> dict[str, Any]:
    """The binned (pyhf) inference of :func:`run`: templates, ``out/workspace.json`` (and its
    portable twin when custom modifiers are used), fit, discovery, CLs limit and plots."""
    from pyhf_gbi import infer as B
    from pyhf_gbi.workspace import SPURIOUS_SAMPLE, build_spec, is_portable, portable, write_spec

    with _stage(timings, "binned templates", quiet):
        t = _templates(cfg, model, bkg_gen, sig_gen, parts, sim, seed)
        spec = build_spec(t, variations=cfg.binned.modifier)
        files = [write_spec(spec, out / "workspace.json").name]
        if not is_portable(spec):
            files.append(write_spec(portable(spec), out / "workspace_portable.json").name)
    scale = t.signal_scale
    with _stage(timings, "binned fit", quiet):
        f = B.fit(spec)
    res: dict[str, Any] = {
        "signal_yield": {"value": f.poi_value * scale, "error_low": f.poi_error_low * scale, "error_high": f.poi_error_high * scale,
                         "error": f.poi_error * scale, "error_method": "profile"},
        "mu": {"value": f.poi_value, "error_low": f.poi_error_low, "error_high": f.poi_error_high} if cfg.inference.poi == "mu" else None,
        "parameters": {k: {"value": v, "error": f.errors[k]} for k, v in f.values.items()},
        "variations": sorted(t.variations) + ([t.spurious_name] if t.spurious_width > 0 else []),
        "background_yield": {"value": float(t.background.sum()), "error": float(t.background.sum() * t.sideband.rel_error),
                             "region": "signal_region", "from": "sideband fit"},
        "bins": {"mass": t.binning.n_mass, "score": t.binning.n_score, "variation": t.binning.n_split,
                 "mass_edges": t.binning.mass_edges.tolist(), "score_edges": t.binning.score_edges.tolist()},
        "workspace": files,
        "discovery": None,
        "upper_limit": None,
    }
    if cfg.inference.discovery:
        with _stage(timings, "binned discovery", quiet):
            res["discovery"] = B.discovery(spec, fitted=f).to_dict()
    lim = None
    if cfg.inference.upper_limit is not None:
        with _stage(timings, "binned upper limit", quiet):
            lim = B.upper_limit(spec, cl=cfg.inference.upper_limit.cl, n_points=cfg.inference.upper_limit.n_points, fitted=f)
            res["upper_limit"] = {"cl": lim.cl, "observed": lim.observed * scale, "expected": [e * scale for e in lim.expected],
                                  "calculator": lim.calculator, "scan": lim.scan}
    written: list[Path] = []
    if cfg.plots.enabled:
        from . import plotting as P

        pc = cfg.plots
        with _stage(timings, "binned plots", quiet), P.style(pc.style, pc.experiment) as exp:
            by = B.expected_by_sample(spec, f.pars)
            fig, axes = P.mass_axes()
            sig = by["signal"] + by.get(SPURIOUS_SAMPLE, 0.0)  # n_S + width * theta
            P.plot_binned_fit(t.data, {"background": by["background"], "signal": sig}, t.binning.mass_edges, t.binning.per_mass,
                              axes=axes, experiment=exp, text=pc.label, resonant=cfg.data.resonant, unit=pc.unit,
                              split=t.binning.n_split)
            written += P.save(fig, out / "postfit_binned", pc.formats)
            if lim is not None:
                fig, ax = P.plt.subplots(figsize=(8, 6))
                P.plot_cls(lim, ax=ax, poi_label=r"$\mu$" if cfg.inference.poi == "mu" else r"Signal yield $N_S$ (binned, pyhf)",
                           experiment=exp, text=pc.label)
                written += P.save(fig, out / "cls_scan_pyhf", pc.formats)
    res["_plots"] = [p.name for p in written]
    return res


def _read_inputs(cfg: Any) -> tuple[dict[str, Events], Events | None, dict[str, tuple[float, float]]]:
    """The data split into windows, the signal simulation in the fit window (None when the
    config has none) and the feature box."""
    d = cfg.data
    features, resonant = tuple(d.features), d.resonant
    windows = Windows(tuple(cfg.windows.fit), tuple(cfg.windows.signal_region))
    data = read_events(d.path, d.columns, tree=d.tree)
    if d.weight:
        data = Events(data.values, data.columns, data[d.weight], data.source)
    data = validate(data, [resonant, *features], what="data")
    parts = windows.split(data, resonant)
    windows.check_data_cover_fit(data, resonant)
    s, sim = cfg.signal.simulation, None  # no simulation: signal.model data-driven without one
    params = list(cfg.signal.parametrized.parameters) if cfg.signal.model == "parametrized" else []
    if s is not None:
        sim = read_events(s.path, s.columns, tree=s.tree)
        sim = validate(sim, [resonant, *features, *params], what="signal simulation")
        sim = sim.select(windows.in_fit(sim[resonant]))
        if len(sim) < 10:
            raise DataError(f"{s.path}: only {len(sim)} signal-simulation events inside the fit window {windows.fit}")
    # the feature box: the configured bounds, else the data and simulation range with a margin
    both = Events(np.concatenate([parts["fit"].array(features), *([] if sim is None else [sim.array(features)])]), features,
                  source=str(d.path))
    box = box_from_data(both, features, margin=d.bounds_margin)
    for f, (lo, hi) in (d.bounds or {}).items():
        box[f] = (float(lo), float(hi))
    parts["fit"] = validate(parts["fit"], [resonant, *features], box, what="data")
    if sim is not None:
        sim = validate(sim, [resonant, *features, *params], box, what="signal simulation")
    return parts, sim, box


def _build(cfg: Any, bkg_gen: Any, sig_gen: Any, parts: dict[str, Events], sim: Events, seed: int, *,
           prefix: str = "", mass: float | None = None, signal_ratio: Any = None) -> tuple[Any, dict[str, Any]]:
    """The GBI model of the config (with its generator-error variation) and the keyword
    arguments shared by every model of the run (the envelope builds one per member).
    ``prefix`` makes every parameter name unique (several models in one process); ``mass``
    overrides ``signal.mass``; ``signal_ratio`` is the PAWS-style signal (``sig_gen`` None)."""
    from .model import build_model
    from .nuisances import EigenVariation

    resonant = cfg.data.resonant
    windows = Windows(tuple(cfg.windows.fit), tuple(cfg.windows.signal_region))
    treatment = cfg.nuisances.generator
    sr_m = parts["signal_region"][resonant]
    variation = None
    if treatment == "eigen":
        variation = EigenVariation.from_ensemble(bkg_gen, sr_m, n_components=cfg.nuisances.n_eigen, n_mc=cfg.nuisances.n_mc, seed=seed,
                                                 prefix=f"{prefix}gen_eigen", mass_range=windows.signal_region)
    elif treatment == "updown":
        variation = _updown_from_ensemble(bkg_gen, sr_m, seed, cfg.nuisances.n_mc, prefix=f"{prefix}gen_updown", mass_range=windows.signal_region)
    common = _model_inputs(cfg, sig_gen, parts, sim, mass=mass, signal_ratio=signal_ratio)
    spurious = _spurious(cfg, bkg_gen, common, parts["fit"], prefix)
    return build_model(background_generator=bkg_gen, variation=variation, spurious_signal=spurious, prefix=prefix, **common), common


def _model_inputs(cfg: Any, sig_gen: Any, parts: dict[str, Events], sim: Events, *, mass: float | None = None,
                  signal_ratio: Any = None) -> dict[str, Any]:
    """The :func:`~zfit_gbi.model.build_model` keyword arguments the config fixes (all but the
    background generator, the generator-error treatments and the prefix)."""
    resonant, poi_kind = cfg.data.resonant, cfg.inference.poi
    return {
        "resonant": resonant, "features": tuple(cfg.data.features), "windows": Windows(tuple(cfg.windows.fit), tuple(cfg.windows.signal_region)),
        "signal_generator": sig_gen, "data_masses": parts["fit"][resonant], "signal_masses": sim[resonant], "signal_weights": sim.weights,
        "background_mass": cfg.background.mass_shape, "signal_mass": cfg.signal.mass_shape,
        "hisigma_sidebands": cfg.model.hisigma_sidebands, "sqrt_s": cfg.background.sqrt_s,
        "signal_shape": "constrained" if cfg.signal.float_shape else "fixed",
        "poi": poi_kind, "reference_yield": cfg.inference.reference_yield if poi_kind == "mu" else None,
        "signal_mass_hypothesis": cfg.signal.mass if mass is None else mass, "signal_ratio": signal_ratio,
    }


def _spurious(cfg: Any, bkg_gen: Any, common: dict[str, Any], events: Events, prefix: str) -> Any:
    """The spurious-signal nuisance of ``nuisances.spurious_signal``: None, a given width, or the
    width measured by fitting ``events`` with each background ensemble member alone."""
    from .inference import spurious_signal
    from .model import build_model
    from .nuisances import SpuriousSignal

    ss = cfg.nuisances.spurious_signal
    if ss is False:
        return None
    if ss is not True:
        return SpuriousSignal(float(ss), prefix=f"{prefix}gen_spurious")
    members = getattr(bkg_gen, "members", [])
    if len(members) < 2:
        msg = f"nuisances.spurious_signal: true needs a background ensemble of >= 2 members to measure the width, the generator has {max(len(members), 1)}"
        raise DataError(msg)
    losses, pois = [], []
    for k, member in enumerate(members):
        mk = build_model(background_generator=member, prefix=f"{prefix}ss{k}_", **common)
        mk.reset(len(events))
        losses.append(mk.loss(events))
        pois.append(mk.poi)
    scale = common["reference_yield"] if common["poi"] == "mu" else 1.0
    ratio = common["signal_ratio"]  # PAWS: each member's fit starts its signal parameters as the main fit does
    params = list(ratio.params) if ratio is not None else []

    def start(loss: Any) -> None:
        _signal_parameter_profiles(params, loss, cfg.signal.parametrized.profile_points)

    return spurious_signal(losses, pois, scale=scale, prefix=f"{prefix}gen_spurious", start=start if params else None)


def scan(cfg: Any, out: str | Path, masses: np.ndarray, *, quiet: bool = False) -> dict[str, Any]:
    """Mass scan: the generators are trained (or loaded) once, then for every hypothesised
    signal mass the simulation-fitted signal shape is moved there (``signal.mass``), the model
    is fitted and the discovery test and the CLs limit are computed (asymptotic). Writes
    ``out/scan.json`` (one row per mass; ``look_elsewhere``: the smallest local p0 and its global
    p-value from the upcrossings of the local Z curve,
    :func:`zfit_gbi.inference.look_elsewhere_upcrossings`, meaningful for a scan finer than the
    signal's mass resolution), the trained models, and the Brazil band and local-p0 plots;
    returns the scan.

    The masses run where ``compute.executor`` says (:mod:`zfit_gbi.executor`): one after the
    other here, or in worker processes / on Dask, each worker reading the data and the saved
    generators once; the rows are the same either way.

    ``signal.model: data-driven`` scans differently (:func:`zfit_gbi.data_driven.sliding_scan`):
    the windows slide with the mass and every window is a full data-driven run.

    Args:
        masses: Hypothesised signal masses (resonant variable's unit), inside the fit window
            (data-driven: each the centre of a shifted signal region).
    """
    from tqdm.auto import tqdm

    from ._tf import tf  # noqa: F401

    if cfg.signal.model == "data-driven":
        from .data_driven import sliding_scan

        return sliding_scan(cfg, out, masses, quiet=quiet)
    _simulation_mode(cfg, "gbi scan", parametrized=True)
    if cfg.background.signal_in_sidebands == "model" and not cfg.background.generator.is_saved:
        log.warning("gbi scan trains one background generator for every mass: background.signal_in_sidebands 'model' "
                    "(a retraining for one fitted signal) is not used; the sidebands are taken as they are")
    # 'auto' is 'ignore' here: the signal's share in the sidebands depends on the mass hypothesis
    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    masses = np.asarray(masses, dtype=float)
    windows = Windows(tuple(cfg.windows.fit), tuple(cfg.windows.signal_region))
    bad = masses[~((masses > windows.fit[0]) & (masses < windows.fit[1]))]
    if bad.size:
        raise DataError(f"scan masses {bad.tolist()} lie outside the fit window {list(windows.fit)}")
    timings: dict[str, float] = {}
    with _stage(timings, "read data", quiet):
        parts, sim, box = _read_inputs(cfg)
    bkg_gen, sig_gen = _generators(cfg, parts, sim, box, out, timings, quiet)
    ratio = None
    if cfg.signal.model == "parametrized":  # one classifier for every mass (saved: workers load it)
        with _stage(timings, "signal classifier", quiet):
            ratio = _paws_ratio(cfg, bkg_gen, sim, windows, out, int(cfg.inference.seed), quiet)
    executor = cfg.compute.executor
    with _stage(timings, "scan", quiet):
        if executor == "sequential":
            rows = [_scan_point(cfg, bkg_gen, sig_gen, parts, sim, i, float(m), ratio)
                    for i, m in enumerate(tqdm(masses, desc="mass scan", unit="mass", disable=quiet or None))]
        else:  # each worker loads the data and the just-saved generators once, then fits its masses
            from .executor import run_tasks

            config = cfg.model_dump(mode="json")
            tasks = [{"config": config, "models": str((out / "models").absolute()), "index": i, "mass": float(m)}
                     for i, m in enumerate(masses)]
            rows = run_tasks(_scan_task, tasks, executor=executor)
    result = {"masses": masses.tolist(), "rows": rows, "timings": timings, "versions": versions(), "devices": devices(),
              "config": json.loads(cfg.model_dump_json())}
    if sum(r.get("p0") is not None for r in rows) >= 2:  # asymptotic q0 on one data set: the local Z curve's upcrossings
        from .inference import look_elsewhere_upcrossings

        result["look_elsewhere"] = look_elsewhere_upcrossings([r["mass"] for r in rows], [r.get("p0") for r in rows])
    write_json_atomic(out / "scan.json", result)
    if cfg.plots.enabled:
        result["plots"] = _scan_plots(cfg, out, rows)
        write_json_atomic(out / "scan.json", result)
    return result


def _scan_plots(cfg: Any, out: Path, rows: list[dict[str, Any]]) -> list[str]:
    """The scan's Brazil band (rows with an observed and expected limit) and local p0 plots
    (rows that failed, with an ``error``, left out)."""
    from . import plotting as P

    ok = [r for r in rows if "error" not in r]  # a data-driven window whose interval failed still has its p0
    label = f"${cfg.data.resonant}$ [{cfg.plots.unit}]"
    written: list[Path] = []
    with P.style(cfg.plots.style, cfg.plots.experiment) as exp:
        lim = [r for r in ok if r.get("observed") is not None and r.get("expected") is not None and np.isfinite(r["observed"])]
        if lim:
            fig, ax = P.plt.subplots(figsize=(8, 6))
            P.plot_brazil([r["mass"] for r in lim], [r["observed"] for r in lim], [r["expected"] for r in lim], ax=ax,
                          cl=lim[0]["cl"], mass_label=label, experiment=exp, text=cfg.plots.label)
            written += P.save(fig, out / "scan_limits", cfg.plots.formats)
        disc = [r for r in ok if r.get("p0") is not None]
        if disc:
            fig, ax = P.plt.subplots(figsize=(8, 6))
            P.plot_p0_scan([r["mass"] for r in disc], [r["p0"] for r in disc], ax=ax, mass_label=label, experiment=exp, text=cfg.plots.label)
            written += P.save(fig, out / "scan_p0", cfg.plots.formats)
    return sorted(p.name for p in written)


def _scan_point(cfg: Any, bkg_gen: Any, sig_gen: Any, parts: dict[str, Events], sim: Events, i: int, mass: float,
                ratio: Any = None) -> dict[str, Any]:
    """One row of :func:`scan`: fit, discovery and (if configured) the CLs limit at ``mass``;
    with a PAWS-style ``ratio`` the signal parameters are fitted too (started from their
    profile's best grid point) and held at their fit for the discovery and the limit."""
    from .inference import FitError, discovery, fit, upper_limit

    seed = int(cfg.inference.seed)
    ul = cfg.inference.upper_limit
    scale = cfg.inference.reference_yield if cfg.inference.poi == "mu" else 1.0
    model, _ = _build(cfg, bkg_gen, sig_gen, parts, sim, seed, prefix=f"scan{i}_", mass=mass, signal_ratio=ratio)
    model.reset(len(parts["fit"]))
    loss = model.loss(parts["fit"])
    row: dict[str, Any] = {"mass": mass}
    try:
        _signal_parameter_profiles(model.signal_params, loss, cfg.signal.parametrized.profile_points)
        f = fit(loss, model.poi, minos=False)
    except FitError as err:
        return {**row, "fit_valid": False, "error": str(err)}
    if ratio is not None:
        row["signal_parameters"] = {n: {"value": f.values[p.name], "error": f.errors[p.name]}
                                    for n, p in zip(ratio.classifier.parameters, model.signal_params, strict=True)}
    with _held(model.signal_params):  # local: at the fitted signal parameters
        d = discovery(loss, model.poi, n_asimov=cfg.inference.n_asimov, seed=seed)
        row.update({"fit_valid": True, "signal_yield": f.poi_value * scale, "signal_yield_error": f.errors[model.poi.name] * scale,
                    "q0": d.q0, "p0": d.p0, "significance": d.significance})
        if ul is not None:
            lim = upper_limit(loss, model.poi, cl=ul.cl, n_points=ul.n_points, n_asimov=cfg.inference.n_asimov, seed=seed)
            row.update({"cl": lim.cl, "observed": lim.observed * scale, "expected": [e * scale for e in lim.expected],
                        "problems": list(lim.problems), "notes": list(lim.notes)})
    return row


@functools.lru_cache(maxsize=2)
def _scan_inputs(config_json: str, models: str) -> tuple[Any, Any, Any, dict[str, Events], Events, Any]:
    """A worker's config, generators and data, read once per worker process."""
    from .config import validate_config

    cfg = use_models(validate_config(json.loads(config_json), source="<scan task>"), models)
    parts, sim, box = _read_inputs(cfg)
    bkg_gen, sig_gen = _generators(cfg, parts, sim, box, None, {}, True)
    ratio = None
    if cfg.signal.model == "parametrized":  # the classifier the scan trained and saved
        from .paws import ParametrizedClassifier

        windows = Windows(tuple(cfg.windows.fit), tuple(cfg.windows.signal_region))
        clf = ParametrizedClassifier.load(Path(models) / "signal_classifier")
        ratio = _paws_ratio(cfg, bkg_gen, sim, windows, None, int(cfg.inference.seed), True, classifier=clf)
    return cfg, bkg_gen, sig_gen, parts, sim, ratio


def _scan_task(task: dict[str, Any]) -> dict[str, Any]:
    """:func:`scan` on another executor: one mass, from plain data (module level, so that worker
    processes and Dask can run it)."""
    from ._tf import tf  # noqa: F401

    cfg, bkg_gen, sig_gen, parts, sim, ratio = _scan_inputs(json.dumps(task["config"], sort_keys=True), task["models"])
    return _scan_point(cfg, bkg_gen, sig_gen, parts, sim, int(task["index"]), float(task["mass"]), ratio)


def _run_folder(out: Path, summary: dict[str, Any], plots: dict[str, Any] | None = None) -> tuple[Any, Any, dict[str, Events], Any, Any]:
    """A finished ``gbi run`` folder back in memory: ``(cfg, model, parts, bkg_gen, sig_gen)``
    with the model at ``summary``'s fitted parameters (:func:`_read_summary`; saved generators,
    the data its config names, the spurious-signal width the run measured; nothing retrained or
    refitted). ``plots`` replaces the config's ``plots`` section."""
    import zfit

    from .config import validate_config

    path = out / "summary.json"
    raw = dict(summary["config"])
    for what in ("background", "signal"):
        raw[what] = {**raw[what], "generator": {"path": str(out / "models" / what)}}
    if plots is not None:
        raw["plots"] = plots
    if summary.get("spurious_signal"):  # the width the run measured (not measured again)
        raw["nuisances"] = {**raw.get("nuisances", {}), "spurious_signal": float(summary["spurious_signal"]["width"])}
    cfg = validate_config(raw, source=path)
    parts, sim, box = _read_inputs(cfg)
    bkg_gen, sig_gen = _generators(cfg, parts, sim, box, None, {}, True)
    model, _ = _build(cfg, bkg_gen, sig_gen, parts, sim, int(cfg.inference.seed))
    values = summary.get("parameters", {})
    params = [p for p in model.loss(parts["fit"]).get_params(floating=True) if p.name in values]
    zfit.param.set_values(params, [values[p.name]["value"] for p in params])
    return cfg, model, parts, bkg_gen, sig_gen


def replot(out: str | Path, *, style: str | None = None, formats: list[str] | None = None, label: str | None = None,
           experiment: str | None = None) -> list[str]:
    """Re-draw the plots of a finished ``gbi run`` folder (e.g. in another experiment's style)
    from its summary.json, saved generators and the data files its config names; returns the
    written file names. Nothing is retrained or refitted: the parameters are the summary's."""
    from ._tf import tf  # noqa: F401
    from .inference import LimitResult

    out = Path(out)
    summary = _read_summary(out)
    plots = {**summary["config"].get("plots", {}), "enabled": True}
    for key, value in (("style", style), ("formats", formats), ("label", label), ("experiment", experiment)):
        if value is not None:
            plots[key] = value
    cfg, model, parts, bkg_gen, sig_gen = _run_folder(out, summary, plots)
    result = {"profile_scan": summary["profile_scan"]} if summary.get("profile_scan") else {}
    limit = None
    ul = summary.get("upper_limit")
    if ul and ul.get("scan"):
        limit = LimitResult(ul["cl"], ul["observed"], tuple(ul["expected"]), ul["calculator"], ul["scan"])
    windows = Windows(tuple(cfg.windows.fit), tuple(cfg.windows.signal_region))
    return _plots(cfg, out, model, parts["fit"], windows, bkg_gen, sig_gen, result, limit, int(cfg.inference.seed))


def toys(out: str | Path, *, n_toys: int, n_signal: float | None = None, seed: int = 1, limit: bool = False, p0: bool = False,
         executor: Any = None, chunks: int | None = None, quiet: bool = False) -> Any:
    """Pseudo-experiments for a finished ``gbi run`` folder: drawn from its fitted model (the
    summary's parameters, generator nuisances at 0) and fitted by it
    (:func:`zfit_gbi.toys.toy_study`); writes ``out/toys.json`` (summary and every toy) and
    returns the :class:`~zfit_gbi.toys.ToyStudy`.

    Args:
        n_toys: Number of pseudo-experiments.
        n_signal: True signal events in the fit window (default: the fitted yield, at least 0).
        seed: Toy ``i``'s seed depends on ``(seed, i)`` only: the same toys and results on every
            executor and for any split.
        limit, p0: Also CLs at the truth (limit coverage) / the asymptotic discovery p0.
        executor: Where the toys run (:mod:`zfit_gbi.executor`); every worker loads the folder
            once and fits a contiguous block of toys.
        chunks: Number of blocks for a parallel executor (default: min(n_toys, 8)); one block
            when sequential.
    """
    from ._tf import tf  # noqa: F401
    from .executor import check_executor, run_tasks
    from .toys import ToyStudy

    out = Path(out).absolute()
    check_executor(executor)
    if n_toys < 1:
        raise ValueError(f"n_toys must be at least 1, got {n_toys}")
    summary = _read_summary(out)
    if n_signal is None:
        n_signal = max(float(summary["signal_yield"]["value"]), 0.0)
    sequential = executor is None or executor == "sequential"
    n_chunks = 1 if sequential else int(chunks or min(n_toys, 8))
    edges = np.linspace(0, n_toys, n_chunks + 1).round().astype(int)
    tasks = [{"folder": str(out), "first": int(a), "n_toys": int(b - a), "n_signal": float(n_signal), "seed": int(seed),
              "limit": bool(limit), "p0": bool(p0), "progress": sequential and not quiet} for a, b in itertools.pairwise(edges) if b > a]
    blocks = [ToyStudy.from_dict(d) for d in run_tasks(_toys_task, tasks, executor=None if sequential else executor)]
    b0 = blocks[0]
    study = ToyStudy(truth=b0.truth, n_signal=b0.n_signal, n_background=b0.n_background, cl=b0.cl,
                     toys=sorted((t for b in blocks for t in b.toys), key=lambda t: t.index), interrupted=any(b.interrupted for b in blocks))
    doc = {**study.to_dict(), "settings": {"n_toys": n_toys, "n_signal": float(n_signal), "seed": seed, "limit": limit, "p0": p0,
                                           "executor": str(executor or "sequential"), "chunks": len(tasks)},
           "versions": versions(), "devices": devices()}
    write_json_atomic(out / "toys.json", doc)
    return study


def interval(out: str | Path, *, values: Any = None, n_toys: int = 200, cl: float = 0.6827, seed: int = 1, executor: Any = None,
             chunks: int | None = None, quiet: bool = False) -> Any:
    """A Feldman-Cousins (Neyman, toys) interval for a finished ``gbi run`` folder's signal
    yield (:func:`zfit_gbi.toys.feldman_cousins`): the interval that covers where the
    profile-likelihood one does not (small signals where the background is nearly empty).
    Writes ``out/interval.json`` (the belt and every toy's statistic) and
    ``out/interval.png``; returns the :class:`~zfit_gbi.toys.NeymanInterval`.

    Args:
        values: Tested POI values (the POI's unit: signal events, or mu), increasing; default:
            9 values from max(0, n_hat - 3 sigma_low) to max(n_hat, 0) + 4 sigma_high. The best
            fit is always added.
        n_toys: Toys per tested value (200 give each critical value to about +-0.2).
        cl: Confidence level.
        seed: Value ``k``'s toys depend on ``(seed, k)`` only: the same interval on every
            executor and for any split.
        executor: Where the toys run (:mod:`zfit_gbi.executor`); each worker loads the folder once.
        chunks: Number of task blocks for a parallel executor (default: min(jobs, 8)).
    """
    from ._tf import tf  # noqa: F401
    from .executor import check_executor, run_tasks
    from .toys import neyman_interval, neyman_plan

    out = Path(out).absolute()
    check_executor(executor)
    if n_toys < 1:
        raise ValueError(f"n_toys must be at least 1, got {n_toys}")
    if not 0 < cl < 1:
        raise ValueError(f"cl must be in (0, 1), got {cl}")
    summary = _read_summary(out)
    cfg, model, parts, _, _ = _run_folder(out, summary, {"enabled": False})
    scale = 1.0 if model.poi is model.n_sig else float(model.reference_yield)
    if values is None:
        sy = summary["signal_yield"]
        hat = float(sy["value"])
        values = np.linspace(max(hat - 3 * float(sy["error_low"]), 0.0), max(hat, 0.0) + 4 * float(sy["error_high"]), 9) / scale
    # the model is at the run's fitted parameters (_run_folder): the plan's data fit starts there
    best, points = neyman_plan(model, model.loss(parts["fit"]), values, bound=0.0)
    sequential = executor is None or executor == "sequential"
    n_chunks = 1 if sequential else int(chunks or 8)
    # jobs: (point, first toy, toys); a point's toys are split so that every worker has work
    per_point = 1 if sequential else max(1, -(-n_chunks // len(points)))
    jobs = [(k, int(a), int(b - a)) for k in range(len(points))
            for a, b in itertools.pairwise(np.linspace(0, n_toys, per_point + 1).round().astype(int)) if b > a]
    edges = np.linspace(0, len(jobs), min(n_chunks, len(jobs)) + 1).round().astype(int)
    tasks = [{"folder": str(out), "points": {str(k): points[k] for k, _, _ in jobs[a:b]}, "seed": int(seed),
              "jobs": jobs[a:b], "progress": sequential and not quiet} for a, b in itertools.pairwise(edges) if b > a]
    done = [r for block in run_tasks(_interval_task, tasks, executor=None if sequential else executor) for r in block]
    if any(r["interrupted"] for r in done):
        raise KeyboardInterrupt
    stats: list[list[float]] = [[] for _ in points]
    failed = [0] * len(points)
    for r in sorted(done, key=lambda r: (r["k"], r["first"])):
        stats[r["k"]] += r["t"]
        failed[r["k"]] += r["failed"]
    result = neyman_interval([p["value"] for p in points], [p["t_observed"] for p in points], stats, cl=cl, bound=0.0, poi_hat=best["poi_hat"])
    doc = {"poi": model.poi.name, "events_per_poi": scale, **result.to_dict(), "failed_toys": failed,
           "settings": {"n_toys": n_toys, "cl": cl, "seed": seed, "executor": str(executor or "sequential"), "tasks": len(tasks)},
           "versions": versions(), "devices": devices()}
    write_json_atomic(out / "interval.json", doc)
    from . import plotting as P

    pc = cfg.plots
    with P.style(pc.style, pc.experiment) as exp:
        fig, ax = P.plt.subplots(figsize=(8, 6))
        P.plot_neyman(result, ax=ax, poi_label=r"$\mu$" if scale != 1.0 else r"Signal yield $N_S$", experiment=exp, text=pc.label)
        P.save(fig, out / "interval", ("png",))
        P.plt.close(fig)
    return result


def _interval_task(task: dict[str, Any]) -> list[dict[str, Any]]:
    """A block of :func:`interval`'s toys (module level, so that worker processes and Dask can run it)."""
    from ._tf import tf  # noqa: F401
    from .toys import _point_seed, neyman_toys

    _, model, _, _ = _toys_inputs(task["folder"])
    out = []
    for k, first, n in task["jobs"]:
        st = neyman_toys(model, task["points"][str(k)], n_toys=n, first=first, seed=_point_seed(task["seed"], k), bound=0.0,
                         progress=task["progress"])
        out.append({"k": k, "first": first, "t": [t.q_truth for t in st.valid], "failed": len(st.toys) - len(st.valid), "interrupted": st.interrupted})
        if st.interrupted:
            break
    return out


def _json_numbers(a: Any) -> list[float | None]:
    """A profile's values for JSON: ``None`` where not finite (no likelihood there; JSON has no inf)."""
    return [float(x) if np.isfinite(x) else None for x in np.asarray(a, dtype=float)]


def _read_summary(out: Path) -> dict[str, Any]:
    """``out/summary.json`` of a finished unbinned ``gbi run`` (with its config), or a
    :class:`DataError` naming what is wrong."""
    path = out / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{out}: no summary.json; is this a folder written by `gbi run`?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a gbi summary ({err})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("config"), dict):
        raise DataError(f"{path}: not a gbi summary (no 'config' section)")
    if summary.get("signal_model") == "parametrized":
        raise DataError(f"{path}: a parametrized (PAWS-style) run; its plots are written by gbi run, and gbi toys/plot do not "
                        "reload its classifier yet (rerun gbi run with --models for the background generator)")
    if summary.get("signal_model") == "data-driven":
        raise DataError(f"{path}: a data-driven (R-ANODE) run; its plots (ranode_scan, ranode_calibration) are written by gbi run, "
                        "and its calibration toys are part of the run (signal.data_driven.null_toys)")
    if summary.get("backend") == "pyhf":
        raise DataError(f"{path}: a binned-only run (inference.backend pyhf); gbi plot and gbi toys use the unbinned fit, "
                        "and the binned plots (postfit_binned, cls_scan_pyhf) are written by the run itself")
    return summary


@functools.lru_cache(maxsize=1)
def _toys_inputs(folder: str) -> tuple[Any, Any, dict[str, Any], dict[Any, float]]:
    """A worker's config, model (at the run's fitted parameters: the truth) and summary, built
    once per worker process."""
    summary = _read_summary(Path(folder))
    cfg, model, _, _, _ = _run_folder(Path(folder), summary, {"enabled": False})
    truth = {p: float(p.value()) for p in model.model.get_params(floating=True)}
    return cfg, model, summary, truth


def _toys_task(task: dict[str, Any]) -> dict[str, Any]:
    """A block of toys of :func:`toys` (module level, so that worker processes and Dask can run it)."""
    from ._tf import tf  # noqa: F401
    from .toys import toy_study

    cfg, model, summary, truth = _toys_inputs(task["folder"])
    for p, v in truth.items():
        p.set_value(v)
    for p in model.nuisances:  # toys are drawn at the nominal generator
        p.set_value(0.0)
    ul = cfg.inference.upper_limit
    study = toy_study(model, n_signal=task["n_signal"], n_background=float(summary["background_yield"]["value"]), n_toys=task["n_toys"],
                      first=task["first"], seed=task["seed"], limit=task["limit"], p0=task["p0"], cl=ul.cl if ul is not None else 0.95,
                      n_asimov=cfg.inference.n_asimov, progress=task["progress"])
    return study.to_dict()


def _plots(cfg: Any, out: Path, model: Any, events: Events, windows: Windows, bkg_gen: Any, sig_gen: Any,
           result: dict[str, Any], limit: Any, seed: int, signal_parameters: dict[str, Any] | None = None) -> list[str]:
    """The run's plots (PNG/PDF per ``cfg.plots``); returns the written file names."""
    from . import plotting as P

    pc = cfg.plots
    poi_label = r"$\mu$" if cfg.inference.poi == "mu" else r"Signal yield $N_S$"
    written: list[Path] = []
    with P.style(pc.style, pc.experiment) as exp:
        fig, axes = P.mass_axes()
        P.plot_mass_fit(model, events, windows, axes=axes, experiment=exp, text=pc.label, unit=pc.unit)
        written += P.save(fig, out / "postfit_mass", pc.formats)

        axs = P.plot_feature_closure(model, events, windows, seed=seed, experiment=exp, text=pc.label)
        written += P.save(axs[0, 0].figure, out / "closure_features", pc.formats)

        if "profile_scan" in result:
            fig, ax = P.plt.subplots(figsize=(8, 6))
            ps = result["profile_scan"]
            P.plot_profile_scan(ps["poi"], ps["minus_2_delta_nll"], ax=ax, poi_label=poi_label, experiment=exp, text=pc.label)
            written += P.save(fig, out / "profile_scan", pc.formats)

        if limit is not None and limit.scan:
            fig, ax = P.plt.subplots(figsize=(8, 6))
            P.plot_cls(limit, ax=ax, poi_label=poi_label, experiment=exp, text=pc.label)
            written += P.save(fig, out / "cls_scan", pc.formats)

        for name, sp in (signal_parameters or {}).items():  # PAWS-style: each parameter's profile
            fig, ax = P.plt.subplots(figsize=(8, 6))
            P.plot_profile_scan(sp["profile"]["values"], sp["profile"]["minus_2_delta_nll"], ax=ax, poi_label=name, experiment=exp,
                                text=pc.label)
            ax.axvline(sp["value"], color="0.4", ls=":", lw=1)
            written += P.save(fig, out / f"profile_{name}", pc.formats)

    return sorted({*(p.name for p in written), *_training_plots(P, bkg_gen, sig_gen, out, pc)})


def _training_plots(P: Any, bkg_gen: Any, sig_gen: Any, out: Path, pc: Any) -> list[str]:
    """Training curves of both generators (every ensemble member; ``sig_gen`` None: the
    background's only) with the run's plots section ``pc`` (style, label, formats); file names
    written."""
    written: list[Path] = []
    with P.style(pc.style, pc.experiment) as exp:
        for gen, name in ((bkg_gen, "background"), (sig_gen, "signal")):
            if gen is None:
                continue
            hs = _histories(gen)
            if any(len(h.train_loss) for h in hs):
                fig, ax = P.plt.subplots(figsize=(8, 6))
                mixed = name == "background" and all(h.objective == "mixture" for h in hs)
                title = "Background generator,\nsignal in the sidebands modelled" if mixed else f"{name.capitalize()} generator"
                P.plot_training(hs, ax=ax, title=title, experiment=exp, text=pc.label)
                written += P.save(fig, out / f"training_{name}", pc.formats)
    return [p.name for p in written]


def _updown_from_ensemble(ens: FlowEnsemble, masses: np.ndarray, seed: int, n_mc: int, prefix: str = "gen_updown",
                          mass_range: tuple[float, float] | None = None):
    """Up/down generators from an ensemble: the two members whose mean log-density on the
    nominal's own signal-region samples is highest and lowest (the ensemble's extremes)."""
    from .nuisances import UpDownVariation

    rng = np.random.default_rng(seed)
    m = rng.choice(np.asarray(masses), size=min(5000, len(masses)))
    x = ens.sample(len(m), m[:, None], seed=seed)
    scores = ens.member_log_probs(x, m[:, None]).mean(axis=1)
    up, down = ens.members[int(np.argmax(scores))], ens.members[int(np.argmin(scores))]
    return UpDownVariation.from_generators(ens, up, down, masses, n_mc=n_mc, seed=seed, prefix=prefix, mass_range=mass_range)

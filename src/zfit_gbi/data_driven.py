"""The ``signal.model: data-driven`` route of ``gbi run``: the signal learned from the data (R-ANODE).

The GBI paper's model-agnostic mode, on the same events and windows as the simulation mode:

1. the background generator p_B(x | m) trained on the sidebands (as in every mode), its ensemble
   averaged;
2. the mass-only fit of the fit window: N_B p_B(m) + N_S p_S(m), with p_S(m) fixed (fitted to the
   simulation if the config has one, else a Gaussian at ``signal.mass`` with ``signal.width``):
   the background mass shape normalized on the signal region, and the mass-only yield as the
   baseline next to the result;
3. the R-ANODE scan (:func:`zfit_gbi.ranode.mixture_scan`) on the signal-region events: the
   signal flow q(x) trained inside w p_S(m) q(x) + (1 - w) p_B(m) p_B(x | m) at each w, k-fold,
   the held-out log-likelihood curve giving w (so the yield), its interval and t = 2 max LL;
4. the calibration: ``null_toys`` background-only pseudo-experiments, each as many signal-region
   events as the data, masses from the fitted background mass shape and features drawn from
   the background ensemble's members in turn while the scan uses their average (as for the
   data), scanned exactly like the data (:class:`zfit_gbi.ranode.NullCalibration`): the
   calibrated p-value next to the asymptotic one, and the expected limits (each toy's limit
   by the rule the data's follows: its scan's limit where its scan has a maximum, else the
   mass-only fit's on the fit window with the toy's signal-region masses, :func:`toy_limits`).
   The toys thus carry what training the signal flow on the data does to t (fluctuations it learns) and the generator's training noise (a member is not the average),
   but not an error all members share (the sideband-to-signal-region interpolation): a
   signal-like mismodelling of that kind raises the data's t and not the toys'. Measure it
   with background-only data (the LHCO table in the README has one).

With a background ensemble (``signal.data_driven.member_scans``, on by default) the data are
also scanned with each member left out of p_B in turn: w moves with the background generator's
training noise (on the LHCO events by more than its statistical error), so the jackknife error
over the members joins the interval and the limit, and a note says when it exceeds the
statistical error.

The signal yield is reported in the fit window like every other mode (w N_SR divided by the
fraction of p_S(m) inside the signal region) and in the signal region.

``gbi scan`` in this mode is a sliding-window search (:func:`sliding_scan`): the fit window and
the signal region move together so that the signal region is centred on each hypothesised
mass, and each window is a complete run of the steps above (the background generator retrained
on *that* window's sidebands: a generator interpolating into one signal region cannot serve
another, whose events it was trained on).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from .data import Events, Windows
from .generators import Flow, FlowConfig, FlowEnsemble, TrainConfig, save
from .ranode import MixtureScan, NullCalibration, mixture_scan

__all__ = ["background_only_signal_region", "run_data_driven", "sliding_scan", "toy_limits"]

log = logging.getLogger(__name__)


def _signal_flow(features: tuple[str, ...], box: dict[str, tuple[float, float]], flow_kwargs: dict[str, Any], seed: int) -> Flow:
    """A fresh q(x): unconditional (q does not depend on m inside the signal region)."""
    return Flow(features, box, (), FlowConfig(**flow_kwargs), seed=seed)


def _settings(cfg: Any, box: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """The scan's settings as plain data (they travel to other processes for the null toys)."""
    dd, g = cfg.signal.data_driven, cfg.signal.generator
    return {"features": tuple(cfg.data.features), "box": {k: tuple(v) for k, v in box.items()}, "flow": g.flow_kwargs(),
            "train": {**g.train_kwargs(many=True), "progress": False}, "w_grid": np.geomspace(dd.w_range[0], dd.w_range[1], dd.n_w).tolist(),
            "n_folds": dd.folds, "seeds": [g.seed + i for i in range(dd.seeds)], "refine": dd.refine}


def _scan(settings: dict[str, Any], x: np.ndarray, m: np.ndarray, la: np.ndarray, lb: np.ndarray, seed: int, progress: bool) -> MixtureScan:
    return mixture_scan(x, m, log_signal_mass=la, log_background=lb,
                        make_flow=functools.partial(_signal_flow, settings["features"], settings["box"], settings["flow"]),
                        w_grid=settings["w_grid"], n_folds=settings["n_folds"], seeds=settings["seeds"],
                        train=TrainConfig(**settings["train"]), seed=seed, refine=settings["refine"], progress=progress)


def _scan_task(task: dict[str, Any]) -> dict[str, Any]:
    """One scan of given events and densities (a background-only pseudo-experiment, or the data
    with one background ensemble member left out of p_B): a module-level function, so it runs
    anywhere."""
    from ._tf import tf  # noqa: F401

    scan = _scan(task["settings"], task["x"], task["m"], task["la"], task["lb"], task["seed"], progress=False)
    # a background-only toy is scanned with the ensemble average only: the data's jackknife error
    # (how w moves with the background generator) joins its interval and limit as it joins the data's
    scan = dataclasses.replace(scan, background_error=task.get("background_error", 0.0))
    return {"t": scan.t, "w_hat": scan.w_hat, "w_interval": list(scan.interval()), "upper_limit": scan.upper_limit(task["cl"]),
            "has_maximum": scan.has_maximum, "parabolic_limit": scan.parabolic_limit}


def toy_limits(toys: list[dict[str, Any]], toy_masses: list[np.ndarray], mass_model: Any, fit_masses: np.ndarray,
               windows: Windows, cl: float, to_fit: float, progress: bool = False) -> np.ndarray:
    """Each background-only toy's upper limit by the rule the data's limit follows: the toy's
    scan limit (w, times ``to_fit``) where its scan has a maximum above the background-only
    likelihood (:attr:`MixtureScan.parabolic_limit <zfit_gbi.ranode.MixtureScan.parabolic_limit>`),
    else the mass-only fit's limit on the fit window with the signal-region masses replaced by
    the toy's (the observed sidebands kept: the toys are conditional on them, as the background
    mass shape is).

    A toy's scan limit already holds the data's member-jackknife error (``_scan_task`` gives the
    toy's scan the data's ``background_error``), as the data's limit does.

    The mass-only limit of a toy is :func:`zfit_gbi.inference.wald_upper_limit` of its fitted
    yield and Hesse error, not hepstats' scan: one fit (about 2 s) instead of about 10 s per toy;
    the same asymptotic formula with the profile likelihood taken as a parabola, within 5 % of
    hepstats' limit on a Gaussian peak (``test_wald_upper_limit_against_hepstats``).

    Args:
        toys: The toys' scan rows (``upper_limit`` in w, ``parabolic_limit``).
        toy_masses: Each toy's signal-region masses, shape ``(n_sr,)`` each.
        mass_model: The mass-only model (:class:`zfit_gbi.model.MassModel`); its parameters are
            restored afterwards.
        fit_masses: The data's fit-window masses, shape ``(n_fit,)``.
        to_fit: Signal events in the fit window per unit w.

    Returns:
        ``(n_toys,)`` limits, events in the fit window (NaN where a toy's rule gave none, or its
        fit failed).
    """
    import zfit
    from tqdm.auto import tqdm

    from .inference import FitError, fit, wald_upper_limit

    outside = fit_masses[~windows.in_signal_region(fit_masses)]
    params = list(mass_model.model.get_params(floating=None))
    saved = [float(p.value()) for p in params]
    out = np.full(len(toys), np.nan)
    try:
        for i, (toy, mt) in enumerate(tqdm(list(zip(toys, toy_masses, strict=True)), desc="toys' limits", disable=not progress)):
            if toy["parabolic_limit"]:
                out[i] = toy["upper_limit"] * to_fit
                continue
            try:
                res = fit(mass_model.loss(np.concatenate([outside, mt])), mass_model.poi, minos=False)
                out[i] = wald_upper_limit(res.poi_value, res.errors[mass_model.poi.name], cl)
            except FitError as err:
                log.warning("background-only toy %d: the mass-only fit failed (%s); its limit is left out of the expected band", i, err)
            zfit.param.set_values(params, saved)
    finally:
        zfit.param.set_values(params, saved)
    return out


def unconstrained_note(scan: MixtureScan) -> str | None:
    """What to tell the user when the scan has no parabolic maximum (its interval is then
    [0, 1] by construction: every signal-region event could be signal); None otherwise."""
    if scan.has_maximum:
        return None
    if int(np.argmax(scan.log_likelihood)) == len(scan.w) - 1 and scan.log_likelihood.max() > 0:
        why = "the held-out likelihood still rises at the largest scanned w: widen signal.data_driven.w_range"
    else:
        why = "the held-out likelihood has no maximum inside the w scan (no signal it can resolve)"
    return f"the signal yield's interval is unconstrained ([0, all signal-region events]): {why}; quote the upper limit"


def settings_note(n_members: int, seeds: int) -> str | None:
    """What to tell the user when the scan runs with fewer background members or signal flows
    than measured to be needed for an unbiased yield (None when it has enough)."""
    if n_members >= 8 and seeds >= 2:
        return None
    return (f"the background generator has {n_members} member{'s' if n_members != 1 else ''} and signal.data_driven.seeds is {seeds}: "
            "on the embedded benchmark 3 members and 1 flow per fold put the R-ANODE yield 14 % low (4 data sets, pulls to -4.7), "
            "8 members (background.generator.ensemble: 8) and signal.data_driven.seeds: 2 within 3 % (16 data sets, pull width 1.07; "
            "benchmarks/ranode_bias.py): use those before quoting the yield")


def _jackknife(scan: MixtureScan, rows: list[dict[str, Any]], to_yield: float) -> tuple[MixtureScan, dict[str, Any], list[str]]:
    """The data's scan with the background error from a jackknife over the ensemble's members.

    ``rows`` are the scans with each member left out in turn (p_B the average of the other
    K - 1): a leave-one-out average is what the full p_B is, an average, so its w differs from
    the full w by background training noise only. The error is
    sqrt((K - 1) / K sum_i (w_i - w_full)^2): the jackknife variance plus its squared bias
    estimate over K - 1 (sums about w_full, not about the mean of the w_i). The plain jackknife
    alone is not enough here: on the LHCO events one background training gave leave-one-out
    yields of 875, 765 and 865 events around a full-ensemble 2074 (plain jackknife 71, this
    one 1754). Also what the summary reports, and a note when that error exceeds the
    statistical one (the result then depends on the background training)."""
    w_k = np.array([r["w_hat"] for r in rows])
    k = len(w_k)
    error = math.sqrt((k - 1) / k * float(np.sum((w_k - scan.w_hat) ** 2)))
    stat = scan.errors()[0]
    report = {"method": "jackknife about the full ensemble's w: each member left out in turn", "w_hat": w_k.tolist(),
              "w_interval": [r["w_interval"] for r in rows], "signal_yield": (w_k * to_yield).tolist(), "error": error * to_yield}
    scan = dataclasses.replace(scan, background_error=error)
    notes = []
    # without a parabolic maximum there is no statistical error to compare with (the scan's own
    # note says so): then any spread of the left-out scans' best points is worth a note, none is not
    if error > stat if math.isfinite(stat) else error > 0:
        stat_text = f"statistical error {stat * to_yield:.0f}" if math.isfinite(stat) else "no statistical error: the scan has no maximum"
        notes.append(f"the R-ANODE yield depends on the background generator: {scan.w_hat * to_yield:.0f} events with all {k} members, "
                     f"{', '.join(f'{v:.0f}' for v in w_k * to_yield)} with each left out in turn (jackknife error {error * to_yield:.0f}, "
                     f"{stat_text}; both are in the interval). Train more or larger members "
                     "(background.generator.ensemble) before quoting the yield")
    return scan, report, notes


def background_only_signal_region(n: int, mass_model: Any, bkg_gen: Any, signal_region: tuple[float, float], seed: int,
                                  n_grid: int = 4001) -> tuple[np.ndarray, np.ndarray]:
    """``n`` background-only signal-region events: masses from the background mass shape (its
    current parameters; inverse CDF on a fine grid) and features from ``bkg_gen`` at those
    masses. Returns ``(x, m)``, shapes ``(n, n_features)`` and ``(n,)``."""
    return _BackgroundSampler(mass_model, signal_region, n_grid)(n, bkg_gen, seed)


class _BackgroundSampler:
    """Background-only signal-region events; the mass shape's inverse CDF is tabulated once."""

    def __init__(self, mass_model: Any, signal_region: tuple[float, float], n_grid: int = 4001):
        self.grid = np.linspace(*signal_region, n_grid)
        dens = np.exp(mass_model.log_densities(self.grid, signal_region)[1])
        self.cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(self.grid))])

    def __call__(self, n: int, bkg_gen: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        m = np.interp(rng.uniform(size=n) * self.cdf[-1], self.cdf, self.grid)
        return bkg_gen.sample(n, m[:, None], seed=int(rng.integers(2**31))), m


def _mass_model(cfg: Any, parts: dict[str, Events], sim: Events | None, windows: Windows) -> tuple[Any, Any]:
    """The mass-only model with p_S(m) fixed (fitted to the simulation, or the configured
    Gaussian), fitted to the fit window; returns ``(model, fit result)``."""
    from .inference import fit
    from .model import build_mass_model

    resonant, s = cfg.data.resonant, cfg.signal
    mass = s.mass if s.mass is not None else 0.5 * sum(windows.signal_region)
    if sim is None:
        mm = build_mass_model(resonant=resonant, windows=windows, data_masses=parts["fit"][resonant], background_mass=cfg.background.mass_shape,
                              signal_mass="gauss", sqrt_s=cfg.background.sqrt_s, signal_init={"mu": mass, "sigma": s.width}, prefix="dd_mass_")
    else:  # signal.mass moves the simulation-fitted peak as in the simulation mode
        mm = build_mass_model(resonant=resonant, windows=windows, data_masses=parts["fit"][resonant], signal_masses=sim[resonant],
                              background_mass=cfg.background.mass_shape, signal_mass=s.mass_shape, sqrt_s=cfg.background.sqrt_s,
                              signal_mass_hypothesis=s.mass, prefix="dd_mass_")
    for p in mm.signal_params.values():
        p.floating = False
    return mm, fit(mm.loss(parts["fit"][resonant]), mm.poi)


def run_data_driven(cfg: Any, out: Path, parts: dict[str, Events], sim: Events | None, box: dict[str, tuple[float, float]],
                    timings: dict[str, float], quiet: bool) -> tuple[dict[str, Any], list[str]]:
    """The data-driven route of :func:`zfit_gbi.pipeline.run`: the summary's result fields and the plots."""
    from scipy.stats import norm

    from ._atomic import write_json_atomic
    from .executor import run_tasks
    from .inference import upper_limit
    from .pipeline import _generator, _save_interrupted, _stage

    features, resonant = tuple(cfg.data.features), cfg.data.resonant
    windows = Windows(tuple(cfg.windows.fit), tuple(cfg.windows.signal_region))
    seed, dd, executor = int(cfg.inference.seed), cfg.signal.data_driven, cfg.compute.executor
    with _stage(timings, "background generator", quiet):
        try:
            bkg_gen = _generator(cfg.background.generator, parts["sidebands"].with_columns([resonant, *features]), features, resonant,
                                 box, "background", quiet, executor=None if executor == "sequential" else executor)
        except KeyboardInterrupt as err:
            _save_interrupted(err, out, "background")
            raise
        save(bkg_gen, out / "models" / "background")

    with _stage(timings, "mass-only fit", quiet):
        mm, mres = _mass_model(cfg, parts, sim, windows)
        frac = mm.signal_fraction(windows.signal_region)
    sr = parts["signal_region"]
    if len(sr) < 20 * dd.folds:
        msg = f"only {len(sr)} events in the signal region {windows.signal_region}: too few for the {dd.folds}-fold R-ANODE scan"
        raise ValueError(msg)

    def densities(x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        la, lbm = mm.log_densities(m, windows.signal_region)
        return la, lbm + bkg_gen.log_prob(x, m[:, None])

    settings = _settings(cfg, box)
    x, m = sr.array(features), sr[resonant]
    n_sr, to_fit = len(sr), len(sr) / frac  # w -> signal events in the signal region / in the fit window
    cl = cfg.inference.upper_limit.cl if cfg.inference.upper_limit is not None else 0.95
    members = getattr(bkg_gen, "members", None) or [bkg_gen]
    jackknife = dd.member_scans and len(members) >= 2
    la, lbm = mm.log_densities(m, windows.signal_region)
    if jackknife:  # every member evaluated once: the full and the leave-one-out averages are made from these
        member_lp = bkg_gen.member_log_probs(x, m[:, None])
        lb = lbm + bkg_gen.aggregate_log_probs(member_lp, m[:, None])
    else:
        lb = lbm + bkg_gen.log_prob(x, m[:, None])
    with _stage(timings, "R-ANODE scan", quiet):
        scan = _scan(settings, x, m, la, lb, seed, progress=not quiet)
    member_report, notes = None, []
    if jackknife:  # the same scan (folds, seeds) with each member left out of p_B in turn
        with _stage(timings, "member jackknife", quiet):
            tasks = []
            for i in range(len(members)):
                lp = np.delete(member_lp, i, axis=0)
                if len(lp) > 1:
                    others = FlowEnsemble(members[:i] + members[i + 1 :], bkg_gen.aggregate, n_norm=bkg_gen.n_norm)
                    lp = others.aggregate_log_probs(lp, m[:, None])
                tasks.append({"settings": settings, "x": x, "m": m, "la": la, "lb": lbm + lp.reshape(-1), "seed": seed, "cl": cl})
            rows = run_tasks(_scan_task, tasks, executor=executor, progress=None if quiet else "member jackknife")
        scan, member_report, notes = _jackknife(scan, rows, to_fit)
        for note in notes:
            log.warning(note)
    for note in (settings_note(len(members), dd.seeds), unconstrained_note(scan)):
        if note is not None:
            notes.append(note)
            log.warning(note)
    write_json_atomic(out / "ranode_scan.json", scan.to_dict())  # kept if the calibration is interrupted

    null, toys = None, []
    if dd.null_toys and (cfg.inference.discovery or cfg.inference.upper_limit is not None):
        with _stage(timings, "null calibration", quiet):
            tasks, toy_masses = [], []
            sample = _BackgroundSampler(mm, windows.signal_region)
            for i in range(dd.null_toys):  # drawn from each ensemble member in turn, scanned with their average
                xt, mt = sample(len(sr), members[i % len(members)], seed=seed * 100_003 + i)
                la, lb = densities(xt, mt)
                toy_masses.append(mt)
                tasks.append({"settings": settings, "x": xt, "m": mt, "la": la, "lb": lb, "seed": seed + 1 + i, "cl": cl,
                              "background_error": scan.background_error})
            toys = run_tasks(_scan_task, tasks, executor=executor, progress=None if quiet else "background-only toys")
            null = NullCalibration(np.array([t["t"] for t in toys]))

    lo, hi = scan.interval()
    result: dict[str, Any] = {}
    if cfg.inference.discovery:
        asym = {"p0": float(norm.sf(scan.significance)), "significance": scan.significance}
        calib = {**null.p_value(scan.t), **null.to_dict()} if null is not None else None
        quoted = calib if calib is not None else asym
        result["discovery"] = {"q0": scan.q0, "t": scan.t, "p0": quoted["p0"], "significance": quoted["significance"],
                               "calculator": (f"R-ANODE scan calibrated on {dd.null_toys} background-only toys"
                                              + (" (none reaches the observed t: p0 is an upper bound, Z a lower bound)" if calib["bound"] else "")
                                              if calib else "R-ANODE scan, asymptotic (no background-only toys: set signal.data_driven.null_toys)"),
                               "asymptotic": asym, "calibrated": calib}
    null_limits = None
    if cfg.inference.upper_limit is not None and toys:
        # The expected band is that of the rule the observed limit follows (the scan's limit with a
        # maximum above LL = 0, the mass-only fit's otherwise), so each toy's limit follows it too:
        # many background-only scans have no maximum, and their own "first scan point" limits
        # bound only signals their flows learned (on the demo they put the median at 76 for an
        # observed 644; in an empty sliding window, scans with a maximum but LL < 0 everywhere
        # gave 29 where the others gave 120-390).
        with _stage(timings, "toys' limits", quiet):
            null_limits = toy_limits(toys, toy_masses, mm, parts["fit"][resonant], windows, cl, to_fit, progress=not quiet)
    finite = null_limits[np.isfinite(null_limits)] if null_limits is not None else np.array([])
    toy_band = np.quantile(finite, norm.cdf([-2, -1, 0, 1, 2])).tolist() if finite.size >= 5 else None
    band_text = (f"expected band: quantiles of {finite.size} background-only toys' limits, each by the same rule "
                 f"({sum(not t['parabolic_limit'] for t in toys)} without a maximum above the background-only likelihood, "
                 "so the mass-only fit's, Wald)")
    if cfg.inference.upper_limit is not None and scan.parabolic_limit:
        result["upper_limit"] = {"cl": cl, "observed": scan.upper_limit(cl) * to_fit, "expected": toy_band, "scan": None,
                                 "calculator": "R-ANODE scan: one-sided limit of the held-out likelihood parabola (training noise and any background jackknife error included)"
                                               + (f"; {band_text}" if toy_band is not None else "; no expected band (fewer than 5 background-only toys)")}
    elif cfg.inference.upper_limit is not None:
        # No maximum above LL = 0: the scan's curve is that of a q that learned no signal
        # (held-out LL < 0 at every w, with or without a maximum) or that still rises at the grid's end. A limit read off it would bound only
        # signals like that q: on the benchmark it fell below the injected count (28 for 78,
        # 58 for 313 on LHCO). The mass-only fit assumes nothing about the features, so its CLs
        # limit holds whatever the signal's x-density: quote it.
        with _stage(timings, "mass-only limit", quiet):
            lim = upper_limit(mm.loss(parts["fit"][resonant]), mm.poi, cl=cl, n_points=8, n_asimov=20_000, seed=seed)
        calc = ("mass-only fit's CLs limit (asymptotic): the R-ANODE scan has no maximum above the background-only likelihood, "
                "so it bounds no signal its flows did not learn")
        result["upper_limit"] = {**lim.to_dict(), "calculator": calc + (f"; {band_text}" if toy_band is not None else "; expected band: the mass-only fit's (asymptotic)"),
                                 "expected": toy_band if toy_band is not None else list(lim.expected), "expected_mass_only": list(lim.expected)}
        own = scan.upper_limit(cl) * to_fit
        why = "no maximum" if not scan.has_maximum else "no maximum above the background-only likelihood (held-out LL < 0 at every w)"
        note = (f"the upper limit ({lim.observed:.0f}) is the mass-only fit's: the R-ANODE scan has {why}, and "
                + (f"its own limit ({own:.0f}) would bound only signals its flows learned" if math.isfinite(own) else "it sets no limit of its own"))
        notes.append(note)
        log.warning(note)

    summary = {
        "signal_model": "data-driven",
        "signal_yield": {"value": scan.w_hat * to_fit, "error_low": (scan.w_hat - lo) * to_fit, "error_high": (hi - scan.w_hat) * to_fit,
                         "error_method": "R-ANODE scan: held-out likelihood parabola, statistical and training-noise errors"
                                         + (", and the background generator's jackknife error over its members," if member_report else "")
                                         + " in quadrature",
                         "notes": notes},
        "signal_yield_signal_region": {"value": scan.w_hat * n_sr, "low": lo * n_sr, "high": hi * n_sr},
        "mu": None,
        "background_yield": {"value": mres.values[mm.n_bkg.name], "error": mres.errors[mm.n_bkg.name]},
        "discovery": result.get("discovery"),
        "upper_limit": result.get("upper_limit"),
        "profile_scan": None, "nuisances": {}, "spurious_signal": None,
        "ranode": {**scan.to_dict(), "signal_fraction_in_signal_region": frac, "background_members": member_report, "null": null.to_dict() if null is not None else None,
                   "null_w_hat": [t["w_hat"] for t in toys], "null_has_maximum": [t["has_maximum"] for t in toys],
                   "null_parabolic_limit": [t["parabolic_limit"] for t in toys],
                   "null_upper_limit": null_limits.tolist() if null_limits is not None else None, "settings": {k: v for k, v in settings.items() if k not in ("box", "features")}},
        "mass_only": {"value": mres.poi_value, "error_low": mres.poi_error_low, "error_high": mres.poi_error_high,
                      "error_method": mres.poi_error_method, "signal_shape": "fixed"},
        "parameters": {k: {"value": v, "error": mres.errors.get(k)} for k, v in mres.values.items()},
        "fit_valid": scan.has_maximum,
        "correlation": {},
    }
    plots = _plots(cfg, out, scan, null, bkg_gen) if cfg.plots.enabled else []
    return summary, plots


def _plots(cfg: Any, out: Path, scan: MixtureScan, null: NullCalibration | None, bkg_gen: Any) -> list[str]:
    from . import plotting as P
    from .pipeline import _training_plots

    pc = cfg.plots
    written: list[Path] = []
    with P.style(pc.style, pc.experiment) as exp:
        fig, ax = P.plt.subplots(figsize=(8, 6))
        P.plot_mixture_scan(scan, ax=ax, experiment=exp, text=pc.label)
        written += P.save(fig, out / "ranode_scan", pc.formats)
        if null is not None:
            fig, ax = P.plt.subplots(figsize=(8, 6))
            P.plot_null_calibration(null, scan.t, ax=ax, experiment=exp, text=pc.label)
            written += P.save(fig, out / "ranode_calibration", pc.formats)
    return sorted({*(p.name for p in written), *_training_plots(P, bkg_gen, None, out, pc)})


def sliding_scan(cfg: Any, out: str | Path, masses: np.ndarray, *, quiet: bool = False) -> dict[str, Any]:
    """``gbi scan`` with ``signal.model: data-driven``: a sliding-window search.

    For every mass m the configured windows are shifted by m minus the signal region's centre
    (widths kept; ``signal.mass`` = m) and :func:`zfit_gbi.pipeline.run` runs there in full into
    ``out/mass_<m>/``: background generator on that window's sidebands, mass-only fit, R-ANODE
    scan, background-only calibration. Every shifted fit window must lie inside the data (checked
    for all masses before anything trains). The windows run where ``compute.executor`` says
    (each then runs its own calibration toys in its process). Writes ``out/scan.json`` (one row
    per mass: the window, the yield and its interval, p0 and Z as the run quotes them, the limit
    and its expected band, the run's folder; ``look_elsewhere``: the smallest local p0 and its
    global p-value over the independent windows scanned, :func:`zfit_gbi.inference.look_elsewhere`)
    and the p0 and limit plots; returns the scan. A
    window that fails (too few events, a failed fit) gives a row with ``fit_valid`` false and
    the reason; Ctrl-C keeps the finished windows (their folders and ``scan.json``).
    """
    from tqdm.auto import tqdm

    from ._atomic import write_json_atomic
    from .config import validate_config
    from .data import DataError, read_events
    from .executor import run_tasks
    from .pipeline import _scan_plots, devices, versions

    out = Path(out)
    if cfg.background.generator.path is not None:
        msg = ("gbi scan with signal.model data-driven retrains the background generator in every window's sidebands; "
               f"a saved generator ({cfg.background.generator.path}, --models) serves one window only: leave it out")
        raise DataError(msg)
    masses = np.atleast_1d(np.asarray(masses, dtype=float))
    fit_w, sr_w = tuple(cfg.windows.fit), tuple(cfg.windows.signal_region)
    centre, resonant = 0.5 * (sr_w[0] + sr_w[1]), cfg.data.resonant
    d = cfg.data
    data = read_events(d.path, d.columns, tree=d.tree)
    executor = cfg.compute.executor
    tasks, bad = [], []
    for m in masses:
        shift = float(m) - centre
        raw = cfg.model_dump(mode="json")
        raw["windows"] = {k: [round(v + shift, 10) for v in w] for k, w in (("fit", fit_w), ("signal_region", sr_w))}  # no 3.9999999999999996
        raw["signal"]["mass"] = float(m)
        if executor != "sequential":  # a window in a worker runs its toys there, not in a pool of its own
            raw["compute"]["executor"] = "sequential"
        c = validate_config(raw, source=f"<gbi scan at {resonant} = {m:g}>")
        try:
            Windows(tuple(c.windows.fit), tuple(c.windows.signal_region)).check_data_cover_fit(data, resonant)
        except DataError as err:
            bad.append(f"{m:g} (fit window {list(c.windows.fit)}): {err}")
        tasks.append({"config": c.model_dump(mode="json"), "out": str((out / f"mass_{m:g}").absolute()), "mass": float(m)})
    if bad:
        msg = (f"{d.path}: the windows slide with the scanned mass (fit window {list(fit_w)}, signal region {list(sr_w)} at "
               f"{centre:g}); the data do not cover the fit window at mass " + "; ".join(bad))
        raise DataError(msg)

    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"masses": masses.tolist(), "rows": rows, "signal_model": "data-driven", "sliding_windows": True,
                              "versions": versions(), "devices": devices(), "config": json.loads(cfg.model_dump_json())}
    out.mkdir(parents=True, exist_ok=True)
    try:
        if executor == "sequential":
            for t in tqdm(tasks, desc="sliding-window scan", unit="window", disable=quiet or None):
                rows.append(_window_task(t))
                write_json_atomic(out / "scan.json", result)  # the finished windows, kept on Ctrl-C
        else:
            rows += run_tasks(_window_task, tasks, executor=executor)
    except KeyboardInterrupt:
        result["interrupted"] = True
        write_json_atomic(out / "scan.json", result)
        raise
    if any(r.get("p0") is not None for r in rows):  # the smallest local p0 against the independent windows scanned
        from .inference import look_elsewhere

        result["look_elsewhere"] = look_elsewhere([r["mass"] for r in rows], [r.get("p0") for r in rows], sr_w[1] - sr_w[0])
    if cfg.plots.enabled:
        result["plots"] = _scan_plots(cfg, out, rows)
    write_json_atomic(out / "scan.json", result)
    return result


def _window_task(task: dict[str, Any]) -> dict[str, Any]:
    """One window of :func:`sliding_scan`: a data-driven run and its scan row (module level:
    worker processes and Dask run it)."""
    from ._tf import tf  # noqa: F401
    from .config import validate_config
    from .data import DataError
    from .inference import FitError
    from .pipeline import run

    cfg = validate_config(task["config"], source=f"<gbi scan window at {task['mass']:g}>")
    out = Path(task["out"])
    row: dict[str, Any] = {"mass": task["mass"], "windows": {"fit": list(cfg.windows.fit), "signal_region": list(cfg.windows.signal_region)},
                           "folder": out.name}
    try:
        s = run(cfg, out, quiet=True)
    except (DataError, FitError, ValueError) as err:
        return {**row, "fit_valid": False, "error": str(err)}
    y, disc, ul = s["signal_yield"], s.get("discovery") or {}, s.get("upper_limit")
    row.update({"fit_valid": bool(s["fit_valid"]), "signal_yield": y["value"], "signal_yield_error_low": y["error_low"],
                "signal_yield_error_high": y["error_high"], "signal_yield_error": 0.5 * (y["error_low"] + y["error_high"]),
                "p0": disc.get("p0"), "significance": disc.get("significance"), "calculator": disc.get("calculator"),
                "asymptotic": disc.get("asymptotic"), "n_signal_region": s["n_events"]["signal_region"],
                # the background generator's share of the error (member jackknife, events; 0 without an ensemble)
                "background_error": (s["ranode"]["background_members"] or {}).get("error", 0.0),
                "signal_yield_notes": list(y.get("notes", []))})
    if ul is not None:
        row.update({"cl": ul["cl"], "observed": ul["observed"], "expected": ul["expected"]})
    return row

"""Pseudo-experiments from a fixed GBI model: pulls, interval coverage, CLs coverage and
background-only p-values.

A toy study asks whether the inference is calibrated *for the model as built*: events are drawn
from the model itself (its mass shapes at their current values, the generators' x | m, the
generator-error nuisances at 0), fitted with the same model, and the results compared with the
truth. What it does not test is whether the model is right for the data (the generator's own
error): that needs retrained generators (``benchmarks/validation.py``).

Conventions, so the numbers can be compared with other studies:

* each toy draws Poisson(n_S) signal and Poisson(n_B) background events, and the observations
  of the generator-error constraints (the global observables) from N(0, 1) (the unconditional
  ensemble, as in RooStats/pyhf toys; ``global_observables=False`` keeps them at 0);
* the pull is ``(n_hat - n_true) / sigma`` with the Hesse error;
* the 68 % profile-likelihood interval (what Minos and the profile errors report) covers the
  truth exactly when -2 Delta ln L(n_true) < 1: one conditional fit per toy, no interval search;
* a CLs upper limit covers the truth when CLs(n_true) > 1 - cl (one hypothesis test per toy,
  :func:`~zfit_gbi.inference.cls_values`; no limit scan needed).

>>> study = toy_study(model, n_signal=50, n_background=10_000, n_toys=200, seed=1)
>>> study            # the table: pull mean and width, coverage, each with its error
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import zfit
from scipy.stats import kstest, kstwo

from .data import Events
from .inference import FitError, _conditional_nll, _shifted_constraints, cls_values, discovery, fit

__all__ = ["Toy", "ToyStudy", "sample_toy", "toy_study"]

log = logging.getLogger(__name__)


def _toy_seed(seed: int, i: int) -> int:
    """Toy ``i``'s seed: independent of how many toys run (toy 7 is toy 7 in every study)."""
    return int(np.random.SeedSequence([int(seed), int(i)]).generate_state(1)[0])


def _sample_mass(pdf: Any, n: int, rng: np.random.Generator, n_grid: int = 20_001) -> np.ndarray:
    """``n`` masses from a 1-D zfit PDF at its current parameters (inverse CDF on a fine grid)."""
    lo, hi = (float(np.ravel(v)[0]) for v in pdf.space.limit1d)
    grid = np.linspace(lo, hi, n_grid)
    dens = np.clip(np.asarray(pdf.pdf(grid), dtype=float), 0.0, None)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    if not np.isfinite(cdf[-1]) or cdf[-1] <= 0:
        msg = f"the mass shape {pdf.name} has no probability in [{lo}, {hi}] at its current parameters"
        raise ValueError(msg)
    return np.interp(rng.random(n) * cdf[-1], cdf, grid)


def _sample_component(component: Any, n: int, rng: np.random.Generator, seed: int) -> np.ndarray:
    """``n`` events of one JointFlowPDF (nominal generator), columns ``(m, *features)``."""
    gen = component.generator
    m = _sample_mass(component.mass_pdf, n, rng)
    x = np.asarray(gen.sample(n, m[:, None], seed=seed), dtype=float).reshape(n, gen.n_features) if n else np.empty((0, gen.n_features))
    if component.sideband_constant is not None:  # HI-SIGMA: uniform features outside the signal region
        lo, hi = component.sideband_constant
        out = (m < lo) | (m >= hi)
        x[out] = gen.low + (gen.high - gen.low) * rng.random((int(out.sum()), gen.n_features))
    return np.column_stack([m, x])


def _draw(model: Any, n_signal: float, n_background: float, seed: int, poisson: bool) -> tuple[Events, int, int]:
    rng = np.random.default_rng(seed)
    ns = int(rng.poisson(n_signal)) if poisson else round(n_signal)
    nb = int(rng.poisson(n_background)) if poisson else round(n_background)
    parts = [_sample_component(model.signal, ns, rng, seed + 1), _sample_component(model.background, nb, rng, seed + 2)]
    values = np.concatenate(parts)[rng.permutation(ns + nb)]
    return Events(values, (model.resonant, *model.features), source=f"toy (seed {seed})"), ns, nb


def sample_toy(model: Any, n_signal: float, n_background: float, seed: int, *, poisson: bool = True) -> Events:
    """One pseudo-experiment from the model at its current shape parameters.

    Args:
        model: A :class:`~zfit_gbi.model.GBIModel`; the generator-error variation (if any) is
            taken at its nominal (nuisances 0).
        n_signal, n_background: Expected signal and background events in the fit window.
        seed: Seeds the yields, the masses and the generators' samples.
        poisson: Draw the yields from Poisson distributions (an extended toy).

    Returns:
        :class:`~zfit_gbi.data.Events` with columns ``(resonant, *features)``, shuffled.
    """
    return _draw(model, n_signal, n_background, seed, poisson)[0]


@dataclass(frozen=True)
class Toy:
    """One pseudo-experiment's result (POI in the model's unit: signal events, or mu).

    ``cls_at_truth`` and ``p0`` are NaN where they were not computed; ``valid`` is False (and
    ``message`` says why) when no valid minimum was found.
    """

    index: int
    seed: int
    n_signal: int
    n_background: int
    valid: bool
    poi_hat: float = math.nan
    error: float = math.nan
    q_truth: float = math.nan  # -2 Delta ln L at the true POI (profiled)
    cls_at_truth: float = math.nan
    p0: float = math.nan
    seconds: float = 0.0
    message: str = ""


def _mean_error(x: np.ndarray) -> tuple[float, float]:
    return (float(np.mean(x)), float(np.std(x, ddof=1) / math.sqrt(len(x)))) if len(x) > 1 else (math.nan, math.nan)


def _width_error(x: np.ndarray) -> tuple[float, float]:
    if len(x) < 2:
        return math.nan, math.nan
    s = float(np.std(x, ddof=1))
    return s, s / math.sqrt(2 * (len(x) - 1))


def _fraction(k: int, n: int) -> tuple[float, float]:
    return (k / n, math.sqrt(max(k * (n - k), 1) / n**3)) if n else (math.nan, math.nan)


def _ks_asymptotic_null(p: np.ndarray) -> float:
    """KS p-value of p0 values against the asymptotic null: P(p0 = 1/2) = 1/2, else U(0, 1/2).

    The null CDF jumps at 1/2, so the distance is taken on both sides of every data point
    (scipy's ``kstest`` compares only the right-continuous CDF and reads the tie at 1/2 as a
    distance of ~1/2); the Kolmogorov distribution is then conservative.
    """
    if len(p) < 2:
        return math.nan
    x = np.sort(np.asarray(p, dtype=float))
    u = np.unique(x)
    right = np.searchsorted(x, u, side="right") / len(x)
    left = np.searchsorted(x, u, side="left") / len(x)
    cdf_right = np.where(u < 0.5, u, 1.0)
    cdf_left = np.minimum(u, 0.5)
    d = max(np.max(np.abs(right - cdf_right)), np.max(np.abs(left - cdf_left)))
    return float(kstwo.sf(d, len(x)))


@dataclass
class ToyStudy:
    """The toys of :func:`toy_study` and their summaries (each ``(value, statistical error)``)."""

    truth: float
    n_signal: float
    n_background: float
    cl: float
    toys: list[Toy] = field(default_factory=list)
    interrupted: bool = False

    @property
    def valid(self) -> list[Toy]:
        return [t for t in self.toys if t.valid]

    @property
    def pulls(self) -> np.ndarray:
        """(n_hat - n_true) / Hesse error of the valid toys, shape ``(n_valid,)``."""
        return np.array([(t.poi_hat - self.truth) / t.error for t in self.valid])

    @property
    def likelihood_pulls(self) -> np.ndarray:
        """sign(n_hat - n_true) sqrt(-2 Delta ln L(n_true)) of the valid toys with the interval
        computed: the pull with the profile-likelihood (asymmetric) errors the package quotes.
        Hesse pulls of a yield are biased low where the error grows with the yield (Poisson-like:
        a downward fluctuation gets a smaller error); these are not."""
        t = [t for t in self.valid if np.isfinite(t.q_truth)]
        return np.array([math.copysign(math.sqrt(t.q_truth), t.poi_hat - self.truth) for t in t])

    def pull_mean(self) -> tuple[float, float]:
        return _mean_error(self.pulls)

    def pull_width(self) -> tuple[float, float]:
        return _width_error(self.pulls)

    def likelihood_pull_mean(self) -> tuple[float, float]:
        return _mean_error(self.likelihood_pulls)

    def likelihood_pull_width(self) -> tuple[float, float]:
        return _width_error(self.likelihood_pulls)

    def coverage(self) -> tuple[float, float]:
        """Fraction of toys whose 68.3 % profile-likelihood interval holds the truth
        (-2 Delta ln L(truth) < 1)."""
        q = np.array([t.q_truth for t in self.valid if np.isfinite(t.q_truth)])
        return _fraction(int(np.sum(q < 1.0)), len(q))

    def limit_coverage(self) -> tuple[float, float]:
        """Fraction of toys whose CLs upper limit lies above the truth (CLs(truth) > 1 - cl);
        CLs is conservative by construction, so expect at least ``cl``."""
        c = np.array([t.cls_at_truth for t in self.valid if np.isfinite(t.cls_at_truth)])
        return _fraction(int(np.sum(c > 1 - self.cl)), len(c))

    def p0_test(self) -> dict[str, float]:
        """Background-only calibration of the asymptotic p0 (toys with truth 0).

        Asymptotically half of the toys fit n_S <= 0 (p0 = 0.5) and the others have p0 uniform
        on (0, 0.5). Reported: the KS p-value of all p0 against that null, the fraction with
        n_hat > 0, the KS p-value of 2 p0 among those against U(0, 1), and for alpha = 0.01,
        0.05, 0.16 the fraction with p0 <= alpha (a calibrated p0 gives alpha; below alpha
        is conservative, above it overstates significances), each with its binomial error.
        """
        p = np.array([t.p0 for t in self.valid if np.isfinite(t.p0)])
        up = 2 * p[p < 0.5 - 1e-12]
        frac, ferr = _fraction(len(up), len(p))
        out: dict[str, float] = {"n": len(p), "fraction_positive": frac, "fraction_positive_error": ferr,
                                 "ks_pvalue_asymptotic_null": _ks_asymptotic_null(p),
                                 "ks_pvalue_2p0_uniform": float(kstest(up, "uniform").pvalue) if len(up) > 1 else math.nan}
        for a in (0.01, 0.05, 0.16):
            out[f"p0_below_{a}"], out[f"p0_below_{a}_error"] = _fraction(int(np.sum(p <= a)), len(p))
        return out

    def poi_mean(self) -> tuple[float, float]:
        """Mean fitted POI and its standard error (in the POI's unit)."""
        return _mean_error(np.array([t.poi_hat for t in self.valid]))

    def summary(self) -> dict[str, Any]:
        """Every summary as plain numbers (for JSON)."""
        out: dict[str, Any] = {"truth": self.truth, "n_signal": self.n_signal, "n_background": self.n_background, "cl": self.cl,
                               "n_toys": len(self.toys), "n_valid": len(self.valid), "interrupted": self.interrupted}
        for name, (v, e) in (("poi_mean", self.poi_mean()), ("pull_mean", self.pull_mean()), ("pull_width", self.pull_width()),
                             ("likelihood_pull_mean", self.likelihood_pull_mean()), ("likelihood_pull_width", self.likelihood_pull_width()),
                             ("coverage_68", self.coverage()), ("limit_coverage", self.limit_coverage())):
            out[name], out[f"{name}_error"] = v, e
        hat, err = np.array([t.poi_hat for t in self.valid]), np.array([t.error for t in self.valid])
        out["poi_median"] = float(np.median(hat)) if len(hat) else math.nan
        # > 0: the Hesse error grows with the fitted POI (a yield), so Hesse pulls lean negative
        out["error_poi_correlation"] = float(np.corrcoef(hat, err)[0, 1]) if len(hat) > 2 and np.std(err) > 0 else math.nan
        if any(np.isfinite(t.p0) for t in self.valid):
            out.update(self.p0_test())
        out["seconds_per_toy"] = float(np.mean([t.seconds for t in self.toys])) if self.toys else math.nan
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "toys": [asdict(t) for t in self.toys]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToyStudy:
        """The study back from :meth:`to_dict` (e.g. JSON written by another process)."""
        s = d["summary"]
        return cls(truth=s["truth"], n_signal=s["n_signal"], n_background=s["n_background"], cl=s["cl"],
                   toys=[Toy(**t) for t in d["toys"]], interrupted=s.get("interrupted", False))

    def __repr__(self) -> str:
        s = self.summary()
        lines = [f"ToyStudy(truth {self.truth:g}, {s['n_valid']}/{s['n_toys']} valid toys{', interrupted' if self.interrupted else ''})"]
        for k, label in (("poi_mean", "mean fitted POI"), ("pull_mean", "pull mean"), ("pull_width", "pull width"),
                         ("likelihood_pull_mean", "likelihood pull mean"), ("likelihood_pull_width", "likelihood pull width"),
                         ("coverage_68", "68 % coverage"), ("limit_coverage", f"{self.cl:.0%} CLs coverage")):
            if np.isfinite(s[k]):
                lines.append(f"  {label:>21s} = {s[k]:.3f} +- {s[k + '_error']:.3f}")
        if "ks_pvalue_2p0_uniform" in s:
            lines.append(f"  {'n_hat > 0':>21s} = {s['fraction_positive']:.3f} +- {s['fraction_positive_error']:.3f} (expect 0.5)")
            lines.append(f"  {'KS p (2 p0 ~ U)':>21s} = {s['ks_pvalue_2p0_uniform']:.3f} (toys with n_hat > 0)")
            lines.append(f"  {'KS p (p0 ~ null)':>21s} = {s['ks_pvalue_asymptotic_null']:.3g} (all toys)")
            lines.append(f"  {'P(p0 <= 0.05)':>21s} = {s['p0_below_0.05']:.3f} +- {s['p0_below_0.05_error']:.3f}")
        return "\n".join(lines)


def toy_study(
    model: Any,
    *,
    n_signal: float,
    n_background: float,
    n_toys: int,
    seed: int = 0,
    interval: bool = True,
    limit: bool = False,
    p0: bool = False,
    cl: float = 0.95,
    n_asimov: int = 20_000,
    global_observables: bool = True,
    first: int = 0,
    progress: bool = True,
) -> ToyStudy:
    """Pseudo-experiments from the model at its current parameters, each fitted by the same model.

    Args:
        model: A :class:`~zfit_gbi.model.GBIModel` with the POI ``n_sig`` or ``mu``; its current
            shape parameters are the truth (restored before every fit), its nuisances must be 0.
        n_signal, n_background: Expected signal and background events in the fit window.
        n_toys: Number of pseudo-experiments (toys ``first .. first + n_toys - 1``).
        seed: Study seed; toy ``i`` uses a seed derived from ``(seed, i)`` only, so studies
            can be split into pieces (``first``) and give the same toys.
        interval: -2 Delta ln L at the truth (a conditional fit) for the coverage of the 68 %
            profile-likelihood interval.
        limit: Also CLs at the true POI (asymptotic, ``n_asimov`` Asimov events) for the
            coverage of the ``cl`` upper limit (skipped when the truth is 0, where CLs = 1).
        p0: Also the asymptotic discovery p0 (the background-only calibration).
        global_observables: Draw the constraints' observations from N(0, 1) per toy.
        progress: A tqdm bar; Ctrl-C stops after the current toy and returns the toys done,
            with ``interrupted=True``.

    Returns:
        A :class:`ToyStudy`. A toy whose fit fails stays in the study as invalid, with the
        reason, and is left out of the summaries (their count says how many).
    """
    from tqdm.auto import tqdm

    if n_toys < 1:
        msg = f"n_toys must be at least 1, got {n_toys}"
        raise ValueError(msg)
    if any(abs(float(p.value())) > 0 for p in model.nuisances):
        msg = f"toys are drawn at the nominal generator: set the nuisances {[p.name for p in model.nuisances]} to 0 first"
        raise ValueError(msg)
    mu = model.poi is not model.n_sig
    truth = n_signal / model.reference_yield if mu else float(n_signal)
    start = {p: float(p.value()) for p in model.model.get_params(floating=True)}
    study = ToyStudy(truth=truth, n_signal=float(n_signal), n_background=float(n_background), cl=cl)
    bar = tqdm(range(first, first + n_toys), desc="toys", disable=not progress)
    try:
        for i in bar:
            t0 = time.perf_counter()
            s = _toy_seed(seed, i)
            for p, v in start.items():  # every toy from the truth (not from the last toy's fit)
                p.set_value(v)
            events, ns, nb = _draw(model, n_signal, n_background, s, True)
            model.reset(ns + nb)
            loss = _toy_loss(model, events, np.random.default_rng(s + 3) if global_observables else None)
            try:
                res = fit(loss, model.poi, minos=False)
            except FitError as err:
                study.toys.append(Toy(i, s, ns, nb, False, seconds=time.perf_counter() - t0, message=str(err)))
                continue
            best = {p: float(p.value()) for p in start}
            q_t = max(2 * (_conditional_nll(loss, model.poi, [truth])[0] - res.nll), 0.0) if interval else math.nan
            zfit.param.set_values(list(best), list(best.values()))
            cls_t = math.nan
            if limit and truth > 0:
                cls_t = float(cls_values(loss, model.poi, [truth], n_asimov=n_asimov, seed=s)["cls"][0])
            zfit.param.set_values(list(best), list(best.values()))
            p0_t = discovery(loss, model.poi, n_asimov=n_asimov, seed=s).p0 if p0 else math.nan
            err = res.errors[model.poi.name]
            study.toys.append(Toy(i, s, ns, nb, True, res.poi_value, err, q_t, cls_t, p0_t, time.perf_counter() - t0))
            # every toy's losses and calculators compile their own graphs, which zfit keeps:
            # without this a study grows by ~40 MB per toy (14 GB after 150 toys of the validation)
            zfit.run.clear_graph_cache()
            if progress:
                pulls = study.pulls
                bar.set_postfix(pull=f"{pulls.mean():+.2f}+-{pulls.std():.2f}" if len(pulls) > 1 else "")
    except KeyboardInterrupt:
        study.interrupted = True
        log.warning("toy study interrupted after %d toys; returning those", len(study.toys))
    finally:
        bar.close()
        for p, v in start.items():
            p.set_value(v)
    return study


def _toy_loss(model: Any, events: Events, rng: np.random.Generator | None):
    """The model's NLL on the toy; with ``rng``, the generator-error constraints observed at
    N(0, 1) draws (their global observables)."""
    if rng is None or not model.nuisances:
        return model.loss(events)
    shifted = _shifted_constraints(model.constraints, {p: float(rng.normal()) for p in model.nuisances})
    return zfit.loss.ExtendedUnbinnedNLL(model.model, model.data(events), constraints=shifted)

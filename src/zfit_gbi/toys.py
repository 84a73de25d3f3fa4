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

from ._tf import forget_bijector_calls
from .data import Events
from .inference import FitError, _conditional_nll, _shifted_constraints, cls_values, discovery, fit

__all__ = ["NeymanInterval", "Toy", "ToyStudy", "feldman_cousins", "neyman_interval", "neyman_plan", "neyman_toys", "sample_toy", "toy_study"]

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
    poi_bound: float | None = None,
    desc: str = "toys",
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
        poi_bound: Physical lower bound of the POI (Feldman-Cousins ordering): where the fit's
            POI lies below it, ``q_truth`` is taken against the best fit *at* the bound,
            2 (NLL(truth) - NLL(bound)). ``None``: against the free fit.
        desc: The progress bar's label.

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
    bar = tqdm(range(first, first + n_toys), desc=desc, disable=not progress)
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
            q_t = math.nan
            if interval:
                nll_t = _conditional_nll(loss, model.poi, [truth])[0]
                ref = res.nll
                if poi_bound is not None and res.poi_value < poi_bound:  # the truth at the bound: the same fit
                    ref = nll_t if truth == poi_bound else _conditional_nll(loss, model.poi, [poi_bound])[0]
                q_t = max(2 * (nll_t - ref), 0.0)
            zfit.param.set_values(list(best), list(best.values()))
            cls_t = math.nan
            if limit and truth > 0:
                cls_t = float(cls_values(loss, model.poi, [truth], n_asimov=n_asimov, seed=s)["cls"][0])
            zfit.param.set_values(list(best), list(best.values()))
            p0_t = discovery(loss, model.poi, n_asimov=n_asimov, seed=s).p0 if p0 else math.nan
            err = res.errors[model.poi.name]
            study.toys.append(Toy(i, s, ns, nb, True, res.poi_value, err, q_t, cls_t, p0_t, time.perf_counter() - t0))
            # every toy's losses and calculators compile their own graphs, which zfit keeps, and
            # with generator-error constraints TFP's bijector cache keeps them too: without these
            # a study grows by ~40 MB per toy, and by ~30 MB more with nuisances
            # (benchmarks/toy_memory.py; 11 GB after the validation's 200 toys)
            zfit.run.clear_graph_cache()
            forget_bijector_calls()
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


# ---------------------------------------------------------------------------------------------
# Neyman construction with the Feldman-Cousins ordering
# ---------------------------------------------------------------------------------------------


@dataclass
class NeymanInterval:
    """A confidence interval from a Neyman construction (Feldman-Cousins ordering) on a grid.

    At each tested POI value ``values[k]``, ``critical[k]`` is the ``cl`` quantile of the test
    statistic t = 2 (NLL(value) - NLL(best fit within the physical region)) over toys drawn at
    that value; the value is in the interval when the data's ``t_observed[k]`` does not exceed
    it. The edges are interpolated linearly in ``t_observed - critical`` between grid points.
    ``critical_range`` holds the order-statistic 68 % range of each quantile (its toy error).
    ``low_at_edge`` / ``high_at_edge``: the interval reaches the end of the grid (at the lower
    end that is the physical bound itself when the grid starts there: a one-sided interval).
    """

    low: float
    high: float
    cl: float
    values: list[float]
    t_observed: list[float]
    critical: list[float]
    critical_range: list[tuple[float, float]]
    n_toys: list[int]
    low_at_edge: bool
    high_at_edge: bool
    contiguous: bool = True
    poi_hat: float = math.nan
    bound: float | None = None
    toys: list[np.ndarray] = field(default_factory=list, repr=False)  # per value: the toys' statistic

    @property
    def accepted(self) -> np.ndarray:
        """Whether each grid value is in the interval, shape ``(n_values,)``."""
        return np.asarray(self.t_observed) <= np.asarray(self.critical)

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for JSON (``inf`` where a toy or the data is infinitely unlikely)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "toys"}
        d["critical_range"] = [list(r) for r in self.critical_range]
        d["toys"] = [np.asarray(t, dtype=float).tolist() for t in self.toys]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NeymanInterval:
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        kw["critical_range"] = [tuple(r) for r in kw.get("critical_range", [])]
        kw["toys"] = [np.asarray(t, dtype=float) for t in kw.get("toys", [])]
        return cls(**kw)

    def __repr__(self) -> str:
        edge = " (one-sided: from the physical bound)" if self.low_at_edge and self.bound is not None and self.values[0] <= self.bound else ""
        warn = "" if not self.high_at_edge else "  [the interval reaches the grid's upper end: extend the grid]"
        lines = [f"NeymanInterval({self.cl:.1%} CL, Feldman-Cousins ordering): [{self.low:.4g}, {self.high:.4g}]{edge}{warn}"]
        lines.append(f"  {'value':>10s} {'t_obs':>8s} {'critical':>8s} {'(toy range)':>17s} {'toys':>5s}  in")
        for v, t, c, (a, b), n, ok in zip(self.values, self.t_observed, self.critical, self.critical_range, self.n_toys, self.accepted, strict=True):
            lines.append(f"  {v:>10.4g} {t:>8.3f} {c:>8.3f} {f'[{a:.3f}, {b:.3f}]':>17s} {n:>5d}  {'yes' if ok else 'no'}")
        return "\n".join(lines)


def _quantile_range(t: np.ndarray, cl: float) -> tuple[float, float, float]:
    """The ``cl`` quantile of ``t`` (the smallest value whose empirical CDF reaches ``cl``: the
    Feldman-Cousins acceptance for a discrete statistic too) and its 68 % order-statistic range."""
    x = np.sort(np.asarray(t, dtype=float))
    n = len(x)
    k = min(max(math.ceil(cl * n) - 1, 0), n - 1)
    d = math.sqrt(n * cl * (1 - cl))
    lo, hi = min(max(math.floor(k - d), 0), n - 1), min(max(math.ceil(k + d), 0), n - 1)
    return float(x[k]), float(x[lo]), float(x[hi])


def neyman_interval(values: Any, t_observed: Any, t_toys: Any, *, cl: float = 0.6827, bound: float | None = None,
                    poi_hat: float = math.nan) -> NeymanInterval:
    """The Neyman-construction interval from the data's statistic and toys on a grid.

    A pure function (no fits): :func:`feldman_cousins` computes its inputs for a GBI model, and
    any other model can use it directly.

    Args:
        values: Tested POI values, increasing, shape ``(n_values,)``.
        t_observed: The data's statistic at each value, shape ``(n_values,)`` (``+inf`` where
            the data is impossible at that value).
        t_toys: For each value, the statistic of toys drawn at that value (a sequence of
            ``n_values`` arrays of any length >= 1; NaN entries, failed toys, are dropped).
        cl: Confidence level, in (0, 1).
        bound: The POI's physical lower bound, if any (only recorded, for the printout).
        poi_hat: The data's best-fit POI (only recorded).
    """
    v = np.asarray(values, dtype=float)
    t_obs = np.asarray(t_observed, dtype=float)
    if v.ndim != 1 or len(v) < 2 or not np.all(np.diff(v) > 0):
        msg = f"values must be at least 2 increasing POI values, got {v.tolist()}"
        raise ValueError(msg)
    if t_obs.shape != v.shape or np.any(np.isnan(t_obs) | (t_obs == -np.inf)):
        msg = f"t_observed must be {len(v)} numbers (one per value; +inf allowed, not NaN), got {t_obs.tolist()}"
        raise ValueError(msg)
    if len(t_toys) != len(v):
        msg = f"t_toys must hold one array of toys per value ({len(v)}), got {len(t_toys)}"
        raise ValueError(msg)
    if not 0 < cl < 1:
        msg = f"cl must be in (0, 1), got {cl}"
        raise ValueError(msg)
    toys = [np.asarray(t, dtype=float).ravel() for t in t_toys]
    toys = [t[~np.isnan(t)] for t in toys]
    if empty := [float(x) for x, t in zip(v, toys, strict=True) if len(t) == 0]:
        msg = f"no valid toys at the POI values {empty}"
        raise ValueError(msg)
    q = np.array([_quantile_range(t, cl) for t in toys])
    crit = q[:, 0]
    d = t_obs - crit  # <= 0: accepted
    acc = np.nonzero(d <= 0)[0]
    if acc.size == 0:
        msg = (f"no tested value is in the {cl:.1%} interval (the data's statistic exceeds the toys' critical value everywhere): "
               "the grid misses the interval; widen it around the best fit")
        raise ValueError(msg)
    i, j = int(acc[0]), int(acc[-1])

    def edge(a: int, b: int) -> float:  # the zero of d between grid points a (rejected) and b (accepted)
        return float(v[b]) if not np.isfinite(d[a]) else float(v[a] + (v[b] - v[a]) * d[a] / (d[a] - d[b]))

    low = float(v[0]) if i == 0 else edge(i - 1, i)
    high = float(v[-1]) if j == len(v) - 1 else edge(j + 1, j)
    return NeymanInterval(low=low, high=high, cl=float(cl), values=v.tolist(), t_observed=t_obs.tolist(), critical=crit.tolist(),
                          critical_range=[(float(a), float(b)) for a, b in q[:, 1:]], n_toys=[len(t) for t in toys],
                          low_at_edge=i == 0, high_at_edge=j == len(v) - 1, contiguous=bool(acc.size == j - i + 1),
                          poi_hat=float(poi_hat), bound=bound, toys=toys)


def _point_seed(seed: int, k: int) -> int:
    """The toy-study seed of grid point ``k`` (independent of the grid's other points)."""
    return int(np.random.SeedSequence([int(seed), 7, int(k)]).generate_state(1)[0])


def neyman_plan(model: Any, loss: Any, values: Any, *, bound: float | None = 0.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The data side of :func:`feldman_cousins`: the best fit and, at each tested value, the
    data's statistic and the conditional fit the toys are drawn from (the profile construction).

    The best fit (clipped to ``bound``) joins the tested values if it is not one of them.

    Returns ``(best, points)``: ``best`` = ``{"poi_hat", "nll_ref"}``; each point
    ``{"value", "t_observed", "n_signal", "n_background", "parameters"}`` with the conditional
    fit's floating parameters (the generator-error nuisances are set to 0 for drawing: toys
    come from the nominal generator).
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or len(v) < 1 or not np.all(np.isfinite(v)) or not np.all(np.diff(v) > 0):
        msg = f"values must be finite, increasing POI values, got {v.tolist()}"
        raise ValueError(msg)
    if bound is not None and np.any(v < bound):
        msg = f"tested values below the POI's physical bound {bound}: {v[v < bound].tolist()}"
        raise ValueError(msg)
    poi = model.poi
    res = fit(loss, poi, minos=False)
    params = list(loss.get_params(floating=True))
    best = {p: float(p.value()) for p in params}
    nll_ref = res.nll
    if bound is not None and res.poi_value < bound:
        nll_ref = _conditional_nll(loss, poi, [bound])[0]
    # the best fit (within the physical region) is always tested: t = 0 there, so the interval
    # is never empty however coarse the grid
    hat = res.poi_value if bound is None else max(res.poi_value, bound)
    scale = max(float(np.ptp(v)) if len(v) > 1 else 0.0, abs(hat), 1.0)
    if not np.any(np.abs(v - hat) <= 1e-6 * scale):
        v = np.sort(np.append(v, hat))
    nuis = {id(p) for p in model.nuisances}
    events_per_poi = float(model.reference_yield) if poi is not model.n_sig else 1.0
    points = []
    for x in v:
        zfit.param.set_values(params, list(best.values()))
        nll = _conditional_nll(loss, poi, [float(x)])[0]
        # _conditional_nll restores the POI only: the other parameters are at the conditional fit
        cond = {p.name: (0.0 if id(p) in nuis else float(p.value())) for p in params if p is not poi}
        points.append({"value": float(x), "t_observed": max(2 * (nll - nll_ref), 0.0), "n_signal": float(x) * events_per_poi,
                       "n_background": float(model.n_bkg.value()), "parameters": cond})
    zfit.param.set_values(params, list(best.values()))
    return {"poi_hat": res.poi_value, "nll_ref": nll_ref}, points


def neyman_toys(model: Any, point: dict[str, Any], *, n_toys: int, seed: int, bound: float | None = 0.0, first: int = 0,
                global_observables: bool = True, progress: bool = False) -> ToyStudy:
    """The toys of one grid point of :func:`neyman_plan`: drawn from its conditional fit and
    fitted with the Feldman-Cousins ordering (``q_truth`` of each toy is its statistic)."""
    params = {p.name: p for p in model.model.get_params(floating=True)}
    missing = sorted(set(point["parameters"]) - set(params))
    if missing:
        msg = f"the grid point's parameters {missing} are not in the model"
        raise ValueError(msg)
    start = {p: float(p.value()) for p in params.values()}
    try:
        for name, value in point["parameters"].items():
            params[name].set_value(value)
        return toy_study(model, n_signal=max(point["n_signal"], 0.0), n_background=point["n_background"], n_toys=n_toys, seed=seed,
                         first=first, interval=True, poi_bound=bound, global_observables=global_observables, progress=progress,
                         desc=f"toys at {model.poi.name} = {point['value']:.4g}")
    finally:
        for p, v in start.items():
            p.set_value(v)


def feldman_cousins(model: Any, events: Events, values: Any, *, n_toys: int = 200, cl: float = 0.6827, seed: int = 0,
                    bound: float | None = 0.0, global_observables: bool = True, progress: bool = True) -> NeymanInterval:
    """A Feldman-Cousins (unified) confidence interval for the POI from toys.

    Where the signal is small and concentrated where the background is nearly empty, the
    profile-likelihood interval does not cover (``benchmarks/coverage_small_counts.py``): at
    n_S = 0 on the embedded benchmark it holds the truth in about half the toys instead of 68 %.
    This construction covers by construction, up to the toys' statistics: at each tested value
    the critical value of t = 2 (NLL(value) - NLL(best fit with the POI >= ``bound``)) is the
    ``cl`` quantile of ``n_toys`` toys drawn at that value, and the interval is the set of
    values the data does not reject. The toys are drawn from the model's conditional fit to the
    data at each value (the background yield and shapes profiled; the generators at their
    nominal: generator-error nuisances enter through the fit and the toys' global
    observables), as in ATLAS/CMS "profile construction".

    The data's best fit (clipped to the bound) is tested too, so the interval is never empty.
    Cost: ``(len(values) + 1) * n_toys`` toys of two or three fits each (``gbi interval`` spreads
    them over an executor). 200 toys give each critical value to about +-0.2 at 68 % CL
    (``critical_range``). A grid from the bound to a few profile-likelihood errors above the
    best fit, about 10 values, is enough: the edges are interpolated.

    Args:
        model: A :class:`~zfit_gbi.model.GBIModel` (nuisances at 0 for drawing).
        events: The observed events (``model.loss`` takes them).
        values: Tested POI values, increasing, shape ``(n_values,)``.
        n_toys: Toys per value.
        cl: Confidence level (default 68.27 %).
        seed: Grid point ``k``'s toys depend on ``(seed, k)`` only.
        bound: The POI's physical lower bound (0 for a signal yield); ``None``: none.
        global_observables: Draw the constraints' observations per toy (as :func:`toy_study`).
        progress: A tqdm bar per grid point; Ctrl-C raises ``KeyboardInterrupt`` after the
            current toy, with the model restored.

    Returns:
        A :class:`NeymanInterval` (printing it shows the belt point by point).
    """
    params = list(model.model.get_params(floating=True))
    start = {p: float(p.value()) for p in params}
    try:
        best, points = neyman_plan(model, model.loss(events), values, bound=bound)
        studies = []
        for k, pt in enumerate(points):
            st = neyman_toys(model, pt, n_toys=n_toys, seed=_point_seed(seed, k), bound=bound, global_observables=global_observables,
                             progress=progress)
            if st.interrupted:
                raise KeyboardInterrupt
            studies.append(st)
    finally:
        zfit.param.set_values(params, list(start.values()))
    return neyman_interval([pt["value"] for pt in points], [pt["t_observed"] for pt in points],
                           [[t.q_truth for t in st.valid] for st in studies], cl=cl, bound=bound, poi_hat=best["poi_hat"])


def _toy_loss(model: Any, events: Events, rng: np.random.Generator | None):
    """The model's NLL on the toy; with ``rng``, the generator-error constraints observed at
    N(0, 1) draws (their global observables)."""
    if rng is None or not model.nuisances:
        return model.loss(events)
    shifted = _shifted_constraints(model.constraints, {p: float(rng.normal()) for p in model.nuisances})
    return zfit.loss.ExtendedUnbinnedNLL(model.model, model.data(events), constraints=shifted)

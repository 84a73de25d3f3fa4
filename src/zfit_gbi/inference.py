"""Inference on a GBI model: fits, profile scans, discovery and CLs limits (hepstats + iminuit).

Pure functions over a zfit loss and its parameter of interest (POI):

* :func:`fit` -- minimum with Hesse and asymmetric (Minos) errors; an invalid minimum raises
  :class:`FitError` (after retries), it is never returned as a result.
* :func:`profile_scan` -- -2 Delta ln L of the POI with the nuisance parameters profiled.
* :func:`discovery` -- q0, p0 and Z with hepstats ``Discovery`` (asymptotic or toys).
* :func:`upper_limit` -- CLs upper limit, observed and expected +-1, +-2 sigma, with hepstats
  ``UpperLimit`` (asymptotic or toys).
* :class:`UnbinnedAsimovCalculator` -- hepstats' asymptotic calculator with the Asimov dataset
  made right for multi-dimensional unbinned models: a large *weighted sample* of the model at the
  conditional best fit (weights sum to the expected yields), instead of hepstats' histogram of
  ceil(100/sqrt(ndim)) bins per dimension, each bin a numerical integral (useless in 5-D).
* :func:`envelope_discovery`, :func:`envelope_interval` -- discrete profiling over alternative
  generators (the envelope): significance, and the POI with its interval.
* :func:`spurious_signal` -- the generator's error on the signal yield from the members of a
  bootstrap ensemble, as a constrained nuisance on the yield.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import zfit
from hepstats.hypotests import Discovery, UpperLimit
from hepstats.hypotests.calculators import AsymptoticCalculator, FrequentistCalculator
from hepstats.hypotests.parameters import POI, POIarray
from scipy.stats import norm

from ._tf import forget_bijector_calls, tf  # noqa: F401  (TensorFlow first, quietly)

__all__ = [
    "DiscoveryResult",
    "FitError",
    "FitSummary",
    "LimitResult",
    "UnbinnedAsimovCalculator",
    "cls_values",
    "counting_significance",
    "discovery",
    "envelope_discovery",
    "envelope_interval",
    "fit",
    "look_elsewhere",
    "look_elsewhere_upcrossings",
    "profile_scan",
    "spurious_signal",
    "upper_limit",
    "wald_upper_limit",
]

log = logging.getLogger(__name__)


class FitError(RuntimeError):
    """The minimizer found no valid minimum; the message says what was tried."""


class _Minuit(zfit.minimize.Minuit):
    """zfit's Minuit that recovers from the region where the mixture density is negative.

    With a negative signal yield and strongly separating features, n_S p_S + n_B p_B < 0 for
    some events: the NLL is NaN there (and +inf at the boundary, so the minimum lies inside).
    Two ways in: a start inside that region (hepstats starts a toy fit from the observed best
    fit, whose negative yield can be forbidden for the toy's events), or a large Migrad step
    across the boundary (zfit pushes back and gives up after 30 in a row). In both cases the
    fit restarts with the POI at ``max(POI, 0)``, where every density is positive, with Minuit
    strategy 2 and a patient push-back. If that fails too, a ``RuntimeError`` is raised (which
    hepstats' toy loop counts as a failed toy).
    """

    def __init__(self, *args, poi: zfit.Parameter | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._poi = poi

    def _feasible_start(self, ps: list, start: list[float]) -> None:
        zfit.param.set_values(ps, start)
        if self._poi is not None and any(p is self._poi for p in ps) and float(self._poi.value()) < 0:
            self._poi.set_value(0.0)
        for theta, (poi, k) in _spurious_pairs(ps, free_poi=False):  # the signal yield poi + k theta >= 0
            if float(poi.value()) + k * float(theta.value()) < 0:
                theta.set_value(float(np.clip(-float(poi.value()) / k, theta.lower, theta.upper)))

    def minimize(self, loss, params=None, init=None):
        ps = list(params) if params is not None else list(loss.get_params(floating=True))
        pairs = _spurious_pairs(ps, free_poi=True)
        if not pairs:
            return self._minimize_once(loss, params, init, ps)
        # a spurious-signal theta and its POI both free: move along their flat direction to
        # theta = 0 (no event density changes), minimize with theta held there (the exact
        # unconditional minimum has theta = 0), then free it from that point
        for theta, (poi, k) in pairs:
            shift = float(np.clip(float(poi.value()) + k * float(theta.value()), poi.lower, poi.upper))
            poi.set_value(shift)
            theta.set_value(0.0)
        thetas = [t for t, _ in pairs]
        rest = [p for p in ps if all(p is not t for t in thetas)]
        for t in thetas:
            t.floating = False
        try:
            self._minimize_once(loss, rest, None, rest)
        finally:
            for t in thetas:
                t.floating = True
        return self._minimize_once(loss, params, None, ps)

    def _minimize_once(self, loss, params, init, ps: list):
        from zfit.minimizers.strategy import FailMinimizeNaN, make_pushback_strategy

        start = [float(p.value()) for p in ps]
        if not np.isfinite(float(loss.value())):
            self._feasible_start(ps, start)
        else:
            try:
                return super().minimize(loss, params=params, init=init)
            except (FailMinimizeNaN, RuntimeError) as err:
                log.info("minimization reached the NaN region (%s); restarting from a feasible point", type(err).__name__)
            self._feasible_start(ps, start)
        retry = zfit.minimize.Minuit(gradient="zfit", tol=self.tol, verbosity=0, mode=2, strategy=make_pushback_strategy(nan_penalty=100, nan_tol=1000))
        try:
            return retry.minimize(loss, params=params, init=init)
        except (FailMinimizeNaN, RuntimeError) as err:
            zfit.param.set_values(ps, start)
            msg = "the minimizer kept stepping into the region where the model density is negative (NaN NLL)"
            raise RuntimeError(msg) from err


def _spurious_pairs(ps: list, *, free_poi: bool) -> list[tuple[zfit.Parameter, tuple[zfit.Parameter, float]]]:
    """The spurious-signal thetas among ``ps`` with their POI (:func:`~zfit_gbi.nuisances.spurious_partner`):
    those whose POI is among ``ps`` too (``free_poi``) or not (a conditional fit)."""
    from .nuisances import spurious_partner

    out = []
    for p in ps:
        partner = spurious_partner(p)
        if partner is not None and partner[1] > 0 and any(q is partner[0] for q in ps) == free_poi:
            out.append((p, partner))
    return out


def _minimizer(mode: int = 0, poi: zfit.Parameter | None = None) -> zfit.minimize.Minuit:
    return _Minuit(gradient="zfit", tol=1e-3, verbosity=0, mode=mode, poi=poi)


def _params(loss) -> list[zfit.Parameter]:
    return list(loss.get_params(floating=True))


@dataclass(frozen=True)
class FitSummary:
    """A valid minimum: values, symmetric (Hesse) and asymmetric errors of the POI (Minos, or
    the profile-likelihood crossings where Minos fails: ``poi_error_method``), correlations."""

    values: dict[str, float]
    errors: dict[str, float]
    poi: str
    poi_error_low: float
    poi_error_high: float
    correlation: dict[str, dict[str, float]]
    nll: float
    edm: float
    valid: bool
    attempts: int
    poi_error_method: str = "hesse"

    @property
    def poi_value(self) -> float:
        return self.values[self.poi]

    def __repr__(self) -> str:
        lines = [f"FitSummary(valid={self.valid}, nll={self.nll:.3f}, edm={self.edm:.2g}, attempts={self.attempts})"]
        for k, v in self.values.items():
            extra = f"  (-{self.poi_error_low:.4g} +{self.poi_error_high:.4g})" if k == self.poi else ""
            lines.append(f"  {k:>20s} = {v:.6g} +- {self.errors.get(k, math.nan):.4g}{extra}")
        return "\n".join(lines)


def fit(loss, poi: zfit.Parameter, *, minos: bool = True, retries: int = 3) -> FitSummary:
    """Minimize ``loss`` and return the :class:`FitSummary`.

    Starts with the POI alone (every other parameter held at its start), then frees all:
    started at a POI far from the data's (a fit from n_S = 0 with a signal in the data),
    Migrad first bends the background shape towards the signal and can settle in a distant
    local minimum (seen with the 3-parameter dijet shape: Delta NLL = 8 in 1 toy of 10). Then
    tries the default start, strategy 2 and jittered starting values. Raises :class:`FitError`
    if no attempt gives a valid minimum.
    """
    from zfit.minimizers.strategy import FailMinimizeNaN

    forget_bijector_calls()  # else every earlier likelihood with constraints stays in memory (see there)
    params = _params(loss)
    if len(params) > 1 and any(p is poi for p in params):
        before = float(poi.value())
        try:
            _minimizer(0, poi).minimize(loss, params=[poi])
        except (RuntimeError, FailMinimizeNaN) as err:
            log.info("the POI-only pre-fit failed (%s); starting from %s = %g", err, poi.name, before)
            poi.set_value(before)
    start = {p: float(p.value()) for p in params}
    rng = np.random.default_rng(12345)
    result = None

    for attempt in range(1, retries + 1):
        try:
            result = _minimizer(0 if attempt == 1 else 2, poi).minimize(loss, params=params)
        except (RuntimeError, FailMinimizeNaN) as err:
            log.info("fit attempt %d failed: %s", attempt, err)
            result = None
        if result is not None and result.valid:
            break
        if result is not None:
            log.info("fit attempt %d invalid (edm %.3g); retrying", attempt, result.edm)
        for p in params:  # jitter the start around the initial values
            step = abs(start[p]) * 0.05 + 0.1
            lo = p.lower if p.lower is not None else -np.inf
            hi = p.upper if p.upper is not None else np.inf
            p.set_value(float(np.clip(start[p] + rng.normal(0, step), lo, hi)))
    if result is None or not result.valid:
        msg = (
            f"no valid minimum after {retries} attempts (Minuit strategies 0 and 2, jittered starts); "
            f"last edm {getattr(result, 'edm', math.nan):.3g}, parameters at limit: "
            f"{[p.name for p in params if result is not None and result.params[p].get('at_limit', False)]}"
        )
        raise FitError(msg)
    result.hesse(method="hesse_np", name="hesse")  # Minuit's numerical Hesse at strategy 0 is off by ~2 %
    best = {p: float(result.params[p]["value"]) for p in params}
    hesse = float(result.params[poi]["hesse"]["error"])
    err_lo = err_hi = hesse
    method = "hesse"
    if minos:
        try:
            result.errors(params=[poi], name="minos", method="minuit_minos")
            mn = result.params[poi]["minos"]
            err_lo, err_hi = abs(float(mn["lower"])), abs(float(mn["upper"]))
            zfit.param.set_values(params, [best[p] for p in params])
            # Minos can end on an invalid inner minimum and still return numbers (seen on the
            # GBI model: +32.8 where the profile crosses 1 at +24.2): check its edges on the profile
            q = 2 * (np.asarray(_conditional_nll(loss, poi, [best[poi] - err_lo, best[poi] + err_hi])) - float(result.fmin))
            if np.all(np.abs(q - 1) < 0.1):
                method = "minos"
            else:
                msg = f"its interval edges give -2 Delta ln L = {q[0]:.2f}, {q[1]:.2f} instead of 1"
                raise RuntimeError(msg)
        except Exception as err:  # noqa: BLE001  (Minos fails where its inner Migrad does not converge)
            log.info("Minos failed for %s (%s); profiling the likelihood instead", poi.name, err)
            err_lo = err_hi = hesse
            zfit.param.set_values(params, [best[p] for p in params])
            try:
                err_lo, err_hi = _profile_errors(loss, poi, best[poi], hesse, float(result.fmin))
                method = "profile"
            except (RuntimeError, ValueError) as err2:
                log.warning("no profile-likelihood interval for %s (%s); reporting the Hesse error", poi.name, err2)
        zfit.param.set_values(params, [best[p] for p in params])
    cov = result.correlation(params=params) if hasattr(result, "correlation") else None
    corr = {}
    if cov is not None:
        for i, pi in enumerate(params):
            corr[pi.name] = {pj.name: float(cov[i, j]) for j, pj in enumerate(params)}
    return FitSummary(
        values={p.name: float(result.params[p]["value"]) for p in params},
        errors={p.name: float(result.params[p]["hesse"]["error"]) for p in params},
        poi=poi.name,
        poi_error_low=float(err_lo),
        poi_error_high=float(err_hi),
        correlation=corr,
        nll=float(result.fmin),
        edm=float(result.edm),
        valid=bool(result.valid),
        attempts=attempt,
        poi_error_method=method,
    )


def _profile_errors(loss, poi: zfit.Parameter, hat: float, hesse: float, nll_min: float, *, max_iter: int = 8) -> tuple[float, float]:
    """Asymmetric errors of the POI where -2 Delta ln L = 1 (nuisances profiled), found by the
    secant method on sqrt(2 Delta NLL) (linear in the POI for a parabola), starting one Hesse
    error away. Used when Minos fails; the crossings are accurate to 0.1 % of the Hesse error."""
    lo_lim = poi.lower if poi.lower is not None else -np.inf
    hi_lim = poi.upper if poi.upper is not None else np.inf
    out = []
    for sign in (-1.0, 1.0):
        def root(x: float, sign: float = sign) -> float:
            q = 2 * (_conditional_nll(loss, poi, [x])[0] - nll_min)
            return math.copysign(math.sqrt(max(q, 0.0)), (x - hat) * sign) - 1.0

        x0, x1 = hat, float(np.clip(hat + sign * hesse, lo_lim, hi_lim))
        f0, f1 = -1.0, root(x1)
        for _ in range(max_iter):
            if abs(f1) < 1e-3 or f1 == f0:
                break
            x0, x1, f0 = x1, float(np.clip(x1 - f1 * (x1 - x0) / (f1 - f0), lo_lim, hi_lim)), f1
            f1 = root(x1)
        if abs(f1) > 0.05:
            msg = f"the profile of {poi.name} does not reach -2 Delta ln L = 1 on the {'low' if sign < 0 else 'high'} side (at the parameter limit?)"
            raise ValueError(msg)
        out.append(abs(x1 - hat))
    return out[0], out[1]


def _conditional_nll(loss, poi: zfit.Parameter, values: Sequence[float], *, infeasible: float | None = None) -> list[float]:
    """Minimum NLL with the POI fixed at each value (the other floating parameters profiled);
    the POI's value and floating state are restored afterwards. ``infeasible``: the value
    returned where no minimum exists because the model's density is negative for some event
    at that POI (a negative signal yield below what the events allow; ``math.inf``: the
    likelihood is 0 there); ``None`` raises instead."""
    mini = _minimizer()
    floating, old = poi.floating, float(poi.value())
    others = [p for p in _params(loss) if p is not poi]
    out = []
    try:
        poi.floating = False
        for v in values:
            poi.set_value(float(v))
            try:
                out.append(float(mini.minimize(loss, params=others).fmin) if others else float(loss.value()))
            except RuntimeError as err:
                if infeasible is None or "density is negative" not in str(err):
                    raise
                log.info("%s = %g: no feasible minimum (%s)", poi.name, float(v), err)
                out.append(float(infeasible))
    finally:
        poi.floating = floating
        poi.set_value(old)
    return out


def profile_scan(loss, poi: zfit.Parameter, values: Sequence[float]) -> np.ndarray:
    """-2 Delta ln L at each POI value (nuisances profiled), shape ``(len(values),)``; ``inf``
    where the POI is so negative that the model's density is negative for some event (no
    likelihood there); the POI is restored afterwards."""
    nll0 = float(_minimizer(poi=poi).minimize(loss).fmin)
    return np.maximum(2 * (np.asarray(_conditional_nll(loss, poi, values, infeasible=math.inf)) - nll0), 0.0)


# ---------------------------------------------------------------------------------------------
# hepstats calculators
# ---------------------------------------------------------------------------------------------


def _shifted_constraints(constraints: Sequence, values: dict) -> list:
    """The Gaussian constraints with their observations (the global observables) moved to
    ``values`` (``{param: value}``) where a constrained parameter has one; others unchanged."""
    out = []
    for c in constraints:
        params = list(getattr(c, "_ordered_params", []))
        if isinstance(c, zfit.constraint.GaussianConstraint) and params and any(p in values for p in params):
            obs = np.asarray(c.observation, dtype=float)
            shifted = [values.get(p, o) for p, o in zip(params, obs, strict=True)]
            out.append(zfit.constraint.GaussianConstraint(params=params, observation=shifted, cov=np.asarray(c.covariance, dtype=float)))
        else:
            out.append(c)
    return out


class _GlobalObservablesAsimov:
    """Asimov losses whose auxiliary measurements sit at the conditional fit, as in pyhf and
    RooStats (Cowan, Cranmer, Gross, Vitells 2011): hepstats keeps the constraints'
    observations at their nominal values, which for pulled nuisances lowers q_mu,A and weakens
    the expected limits (``tests/test_pyhf_zfit_binned.py`` shows both conventions against
    pyhf; ``tests/test_pyhf_workspace.py`` that this calculator gives pyhf's limits)."""

    _asimov_values: dict

    def asimov_loss(self, poi: POI):
        if poi not in self._asimov_loss:
            data = self.asimov_dataset(poi)
            old = self.loss
            values = self._asimov_values.get(poi, {})
            self._asimov_loss[poi] = type(old)(model=old.model, data=data, constraints=_shifted_constraints(old.constraints, values) or None)
        return self._asimov_loss[poi]

    def _conditional_values(self, poi: POI, ntrials_fit: int | None) -> dict:
        """Fit the nuisance parameters at the fixed POI from the best fit; ``{param: value}``."""
        minimizer = self.minimizer
        poiparam, poivalue = poi.parameter, poi.value
        self.set_params_to_bestfit()
        poiparam.floating = False
        try:
            with poiparam.set_value(poivalue):
                for _ in range(ntrials_fit or 5):
                    minimum = minimizer.minimize(loss=self.loss)
                    if minimum.valid:
                        break
                values = {p: float(minimum.params[p]["value"]) for p in minimum.params}
                # zfit's own test (the parameters sit at the minimum here); it also makes the minimum invalid
                bounded = []
                for p in minimum.params:
                    if p.at_limit:
                        bound = min((float(b) for b in (p.lower, p.upper) if b is not None), key=lambda b, v=values[p]: abs(v - b))
                        bounded.append(f"{p.name} = {values[p]:.4g} sits at its bound {bound:g}")
        finally:
            poiparam.floating = True
        if bounded:
            note = (f"the Asimov dataset at {poiparam.name} = {float(poivalue):g} (from which the expected limits come) is built "
                    f"from the conditional fit to the data there, and in that fit {', '.join(bounded)}: the data pull "
                    f"{'it' if len(bounded) == 1 else 'them'} beyond, so the expected band is that of the model at "
                    f"{'that bound' if len(bounded) == 1 else 'those bounds'} (post-fit, pyhf's convention; the observed limit "
                    "is not affected)")
            self.notes.append(note)
            log.warning(note)
        elif not minimum.valid:
            log.warning("no valid conditional fit for the Asimov dataset at %s", poi)
        values[poiparam] = float(poivalue)
        self._asimov_values = {**getattr(self, "_asimov_values", {}), poi: values}
        return values


class BinnedAsimovCalculator(_GlobalObservablesAsimov, AsymptoticCalculator):
    """hepstats' ``AsymptoticCalculator`` for binned losses (the expected counts are the Asimov
    data) with the global observables at the conditional fit (pyhf's convention)."""

    def __init__(self, input, minimizer):
        super().__init__(input, minimizer)
        self._asimov_values = {}
        self.notes: list[str] = []  # the Asimov fits' parameters at a bound (LimitResult.notes)

    def asimov_dataset(self, poi: POI, ntrials_fit: int | None = None):
        if poi not in self._asimov_dataset:
            values = self._conditional_values(poi, ntrials_fit)
            params = list(values)
            with zfit.param.set_values(params, [values[p] for p in params]):
                self._asimov_dataset[poi] = [m.to_binneddata() for m in self.model]
        return self._asimov_dataset[poi]


class UnbinnedAsimovCalculator(_GlobalObservablesAsimov, AsymptoticCalculator):
    """hepstats' ``AsymptoticCalculator`` with an unbinned, weighted-sample Asimov dataset.

    For every alternative hypothesis the nuisance parameters are fitted at the fixed POI (as in
    hepstats), then every extended component of the model is sampled ``n_asimov`` times (a
    generator with a variation at its nominal) and the pooled events are weighted by
    sum_c nu_c p_c(x) / (n_asimov sum_c q_c(x)) (``nu_c`` the yields, ``p_c`` the densities at
    the fitted values, ``q_c`` the densities the events were drawn from: multiple importance
    sampling with the balance heuristic), rescaled to sum to the expected yield: a weighted
    dataset whose density is the model's expected density, up to Monte Carlo noise.

    Pooling matters. Sampled alone, the background of a background-only hypothesis hardly
    reaches the signal-like corner of a strongly separating feature space, where the Asimov
    likelihood of the POI is decided (it sums p_S / p_B over the events): with 20000 events its
    best fit came out at n_S ~ +-2 instead of 0 and q_mu,A(10 events) anywhere between 5 and
    11 from seed to seed; the signal component's samples (drawn even at zero yield) cover that
    corner (``tests/test_inference.py``: sqrt(q_mu,A) of a narrow peak to 0.05 of the exact).

    A generator variation whose density is not usable where it is evaluated is reported in
    :attr:`problems`, and :func:`upper_limit` then returns NaN limits (instead of CLs = 1 at
    every point): over the nominal's events the ratio varied / nominal must average to 1 (a
    normalized density; within ``ratio_tolerance``) with a Kish effective sample size of at
    least ``min_ess_fraction`` of them (not a handful of events carrying the yield).

    Args:
        input: An extended unbinned zfit loss (one model, one dataset).
        minimizer: A zfit minimizer.
        n_asimov: Sample size per component.
        seed: Seed for the Asimov samples (reproducible limits).
    """

    #: a variation's ratios with a Kish effective sample size below this fraction are degenerate
    min_ess_fraction: float = 0.01
    #: a variation's ratios must average to 1 within this factor (the varied density is normalized)
    ratio_tolerance: float = 1.25

    def __init__(self, input, minimizer, *, n_asimov: int = 100_000, seed: int = 0):
        super().__init__(input, minimizer)
        self._binned_loss = False  # never bin: the unbinned loss with our weighted Asimov sample
        self.n_asimov = int(n_asimov)
        self.seed = int(seed)
        self._asimov_values = {}
        self.notes: list[str] = []  # the Asimov fits' parameters at a bound (LimitResult.notes)
        self.problems: list[str] = []

    def asimov_dataset(self, poi: POI, ntrials_fit: int | None = None):
        if poi in self._asimov_dataset:
            return self._asimov_dataset[poi]
        values = self._conditional_values(poi, ntrials_fit)
        datasets = [self._weighted_sample(m, d, values, poi) for m, d in zip(self.model, self.data, strict=True)]
        self._asimov_dataset[poi] = datasets
        return datasets

    def _weighted_sample(self, model, data, values: dict, poi: POI | None = None) -> zfit.Data:
        params = list(values)
        with zfit.param.set_values(params, [values[p] for p in params]):
            zfit.settings.set_seed(self.seed)
            pdfs = getattr(model, "pdfs", None)
            comps = pdfs if pdfs and all(p.is_extended for p in pdfs) else [model]
            yields = np.array([float(c.get_yield().value()) if c.is_extended else float(data.nevents) for c in comps])
            arrays, nominal = [], []
            for i, comp in enumerate(comps):
                # a generator with a variation is drawn at its nominal (exact; accept-reject by
                # the variation's factor is slow and SIR biased) and reweighted below
                drawn_nominal = hasattr(comp, "weighted_sample") and list(comp.space.obs) == list(model.space.obs)
                if drawn_nominal:
                    s, ratio = comp.weighted_sample(self.n_asimov, seed=self.seed + i)
                    if yields[i] > 0:
                        self._check_variation(comp, ratio, poi)
                else:
                    s = comp.sample(self.n_asimov, limits=model.space).value().numpy()
                arrays.append(s)
                nominal.append(drawn_nominal)
            x = np.concatenate(arrays)
            pooled = zfit.Data.from_numpy(obs=model.space, array=x)
            # (C, N) at the fitted values; pdf, not log_pdf: zfit 0.28's log_pdf subtracts the
            # normalization instead of its log where the PDF is normalized numerically
            with np.errstate(divide="ignore"):
                log_p = np.log(np.stack([np.asarray(c.pdf(pooled), dtype=np.float64) for c in comps]))
            log_q = np.stack([lp - c.variation_log_ratio(x) if nom else lp for c, lp, nom in zip(comps, log_p, nominal, strict=True)])
            ref = log_q.max(axis=0)  # every event has q_c > 0 for the component that drew it
            w = (yields[:, None] * np.exp(log_p - ref)).sum(axis=0) / (self.n_asimov * np.exp(log_q - ref).sum(axis=0))
        total = float(yields.sum())
        if np.all(np.isfinite(w)) and w.sum() > 0 and total > 0:
            w *= total / w.sum()
        else:
            self._problem(f"the Asimov sample's weights are not usable (sum {w.sum():.3g}, expected yield {total:.3g})")
        return zfit.Data.from_numpy(obs=model.space, array=x, weights=w)

    def _check_variation(self, comp, ratio: np.ndarray, poi: POI | None) -> None:
        """Report a varied density that is not normalized or not carried by its events."""
        if np.all(ratio == 1.0):
            return
        where = "" if poi is None else f" at the Asimov fit for {poi.name} = {poi.value:g}"
        finite = np.all(np.isfinite(ratio)) and ratio.sum() > 0
        mean = float(ratio.mean()) if finite else math.nan
        ess = float(ratio.sum() ** 2 / np.sum(ratio**2)) if finite else 0.0
        if finite and 1 / self.ratio_tolerance <= mean <= self.ratio_tolerance and ess >= self.min_ess_fraction * len(ratio):
            return
        share = float(ratio.max() / ratio.sum()) if finite else math.nan
        self._problem(
            f"the varied density of {comp.name}{where} is not usable: over {len(ratio)} events of its nominal the ratio "
            f"varied / nominal averages {mean:.3g} (1 for a normalized density) with an effective sample size of {ess:.3g} "
            f"events (the largest ratio carries {share:.1%}); the generator variation is evaluated where its normalization "
            f"sample never was, or tilts the density onto a few events"
        )

    def _problem(self, msg: str) -> None:
        log.warning(msg)
        self.problems.append(msg)


def _calculator(loss, kind: Literal["asymptotic", "toys"], *, poi: zfit.Parameter | None = None, n_toys: int = 1000, n_asimov: int = 100_000, seed: int = 0):
    mini = _minimizer(poi=poi)
    if kind == "asymptotic":
        if isinstance(loss, (zfit.loss.ExtendedBinnedNLL, zfit.loss.BinnedNLL)):
            return BinnedAsimovCalculator(loss, mini)
        return UnbinnedAsimovCalculator(loss, mini, n_asimov=n_asimov, seed=seed)
    if kind == "toys":
        zfit.settings.set_seed(seed)
        return FrequentistCalculator(loss, mini, ntoysnull=n_toys, ntoysalt=n_toys)
    msg = f"calculator must be 'asymptotic' or 'toys', got {kind!r}"
    raise ValueError(msg)


@dataclass(frozen=True)
class DiscoveryResult:
    """Discovery test of POI = 0: q0 = Z^2, p0, Z (one-sided)."""

    q0: float
    p0: float
    significance: float
    calculator: str

    def to_dict(self) -> dict[str, Any]:
        return {"q0": self.q0, "p0": self.p0, "significance": self.significance, "calculator": self.calculator}


def discovery(
    loss, poi: zfit.Parameter, *, calculator: Literal["asymptotic", "toys"] = "asymptotic", n_toys: int = 1000, n_asimov: int = 100_000, seed: int = 0
) -> DiscoveryResult:
    """q0, p0 and Z of the background-only hypothesis; Z = 0 when the fitted POI is negative.

    Asymptotic: q0 from hepstats' calculator (its best fit and its conditional NLL at POI = 0),
    Z = sqrt(q0) and p0 = Phi(-Z) evaluated in the tail (hepstats' ``Discovery`` computes
    p0 = 1 - Phi(Z), which underflows to 0 beyond Z of about 8). Toys: hepstats ``Discovery``
    with the ``FrequentistCalculator`` (p0 resolution 1 / n_toys).
    """
    calc = _calculator(loss, calculator, poi=poi, n_toys=n_toys, n_asimov=n_asimov, seed=seed)
    if calculator == "asymptotic":
        best = calc.bestfit
        nll0 = float(calc.obs_nll(POIarray(poi, [0.0]))[0])
        q0 = 2.0 * (nll0 - float(best.fmin)) if float(best.params[poi]["value"]) > 0 else 0.0
        z = math.sqrt(max(q0, 0.0))
        return DiscoveryResult(q0=max(q0, 0.0), p0=float(norm.sf(z)), significance=z, calculator=calculator)
    p0, z = Discovery(calc, POI(poi, 0.0)).result(printlevel=0)
    p0 = float(np.clip(p0, 0.0, 1.0))
    z = float(max(z, 0.0)) if np.isfinite(z) else math.inf
    return DiscoveryResult(q0=z**2, p0=p0, significance=z, calculator=calculator)


def counting_significance(n_observed: float, b_expected: float, b_error: float = 0.0) -> float:
    """Discovery Z of a cut-and-count: ``n_observed`` events over an expected background
    ``b_expected`` known to +- ``b_error`` (events), from the profile likelihood of
    Pois(n | s + b) x Gauss(b_hat | b, b_error) (Cowan et al., 2011; Cousins-Linnemann-Tucker
    for the uncertain background). Z = 0 for a deficit.
    """
    n, b, s2 = float(n_observed), float(b_expected), float(b_error) ** 2
    if b <= 0 or n < 0 or s2 < 0 or not all(map(math.isfinite, (n, b, s2))):
        msg = f"counting_significance needs n >= 0, b > 0 and a finite b_error >= 0; got n={n}, b={b}, b_error={b_error}"
        raise ValueError(msg)
    if n <= b:
        return 0.0
    if s2 == 0:
        return math.sqrt(2 * (n * math.log(n / b) - (n - b)))
    q0 = 2 * (n * math.log(n * (b + s2) / (b * b + n * s2)) - b * b / s2 * math.log1p(s2 * (n - b) / (b * (b + s2))))
    return math.sqrt(max(q0, 0.0))


def _z(p: float) -> float:
    """One-sided significance of a p-value, 0 for p >= 0.5."""
    return float(max(norm.isf(p), 0.0))


def _scan_p0(masses: Sequence[float], p0: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """The scan's masses and p0 (failed points, ``None`` or NaN, left out), sorted by mass."""
    m = np.asarray(masses, dtype=float)
    p = np.array([np.nan if v is None else float(v) for v in p0], dtype=float)
    if m.shape != p.shape or m.ndim != 1:
        msg = f"masses and p0 need one value each per mass, got shapes {m.shape} and {p.shape}"
        raise ValueError(msg)
    ok = np.isfinite(p) & np.isfinite(m)
    if not ok.any():
        msg = "no mass has a p0: nothing to correct"
        raise ValueError(msg)
    order = np.argsort(m[ok], kind="stable")
    return m[ok][order], np.clip(p[ok], 0.0, 1.0)[order]


def _global(m: np.ndarray, p: np.ndarray, p_global: float, trials: float, method: str, **extra: Any) -> dict[str, Any]:
    i = int(np.argmin(p))
    return {"mass": float(m[i]), "local_p0": float(p[i]), "local_significance": _z(p[i]), "trials_factor": trials,
            "global_p0": min(p_global, 1.0), "global_significance": _z(min(p_global, 1.0)), "method": method, **extra}


def look_elsewhere(masses: Sequence[float], p0: Sequence[float | None], window_width: float) -> dict[str, Any]:
    """Global significance of a sliding-window search: the smallest local p0 corrected for the
    number of independent windows it was looked for in.

    Windows of width ``window_width`` (resonant variable's unit) whose centres span the scanned
    masses hold disjoint events when they are a width apart, so the trials factor is
    ``n = min(n_masses, (max - min) / window_width + 1)`` and ``p_global = 1 - (1 - p_min)^n``
    (Sidak). Overlapping neighbours are correlated, which this counts as one; a finer scan than
    the width adds no trials. The usual first estimate for a bump hunt, and the one that needs no
    chi-square: the data-driven mode's p0 come from its calibration toys. For a scan of an
    asymptotic q0 on one data set see :func:`look_elsewhere_upcrossings`.

    Args:
        masses: Scanned window centres, shape ``(n_masses,)``.
        p0: Local p-values, one per mass; ``None`` or NaN (a failed window) is left out.
        window_width: Width of the region each window searches (the signal region's).

    Returns:
        ``{"mass", "local_p0", "local_significance", "trials_factor", "global_p0",
        "global_significance", "method"}``; significances are one-sided Z, 0 for p >= 0.5.
    """
    if not (math.isfinite(window_width) and window_width > 0):
        msg = f"window_width must be positive, got {window_width}"
        raise ValueError(msg)
    m, p = _scan_p0(masses, p0)
    n = float(min(len(m), (m.max() - m.min()) / window_width + 1))
    p_min = float(p.min())
    p_global = float(-np.expm1(n * np.log1p(-p_min))) if p_min < 1 else 1.0
    return _global(m, p, p_global, n, f"independent windows of width {window_width:g} over the scanned masses (Sidak)")


def look_elsewhere_upcrossings(masses: Sequence[float], p0: Sequence[float | None], *, z0: float = 1.0) -> dict[str, Any]:
    """Global significance of a mass scan of the asymptotic discovery test on one data set, from
    the upcrossings of its local significance curve (Gross and Vitells, Eur. Phys. J. C 70 (2010)
    525): ``p_global ~ p_local + N(z0) exp(-(Z_local^2 - z0^2) / 2)``.

    ``N(z0)``, the expected number of times the background-only curve Z(m) rises through ``z0``,
    is counted on the scanned curve itself (an excursion that starts at the first mass counts
    too). The count includes the excursion of a signal, if there is one, so the estimate errs on
    the conservative side; it is meaningful only for a scan much finer than the signal's mass
    resolution (neighbouring masses strongly correlated) and a local q0 that is asymptotically
    chi-square (the simulation-mode scan); a small ``z0`` counts more crossings (less
    Poisson noise in N), a large one stays closer to the tail the formula extrapolates to.

    Args:
        masses: Scanned masses, shape ``(n_masses,)`` (any order).
        p0: Local asymptotic p-values, one per mass; ``None`` or NaN is left out.
        z0: Reference level of the upcrossings, in Z.

    Returns:
        As :func:`look_elsewhere`, plus ``"upcrossings"`` (N(z0)) and ``"z0"``; the trials
        factor is ``p_global / p_local``.
    """
    if not (math.isfinite(z0) and z0 >= 0):
        msg = f"z0 must be a non-negative significance, got {z0}"
        raise ValueError(msg)
    m, p = _scan_p0(masses, p0)
    z = np.maximum(norm.isf(p), 0.0)
    above = z > z0
    n_up = int(above[0]) + int(np.sum(~above[:-1] & above[1:]))
    z_max, p_min = float(z.max()), float(p.min())
    p_global = p_min + n_up * math.exp(-(z_max**2 - z0**2) / 2) if z_max > z0 else p_min
    trials = p_global / p_min if p_min > 0 else 1.0
    return _global(m, p, p_global, trials, f"upcrossings of Z = {z0:g} on the scan (Gross-Vitells)", upcrossings=n_up, z0=z0)


@dataclass(frozen=True)
class LimitResult:
    """CLs upper limit on the POI: observed and expected (-2, -1, median, +1, +2 sigma)."""

    cl: float
    observed: float
    expected: tuple[float, float, float, float, float]
    calculator: str
    scan: dict[str, list[float]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # why the limits are NaN, empty if none
    notes: tuple[str, ...] = ()  # what to know about finite limits (a nuisance at its bound in the Asimov fit), empty if none

    def to_dict(self) -> dict[str, Any]:
        return {"cl": self.cl, "observed": self.observed, "expected": list(self.expected), "calculator": self.calculator, "scan": self.scan,
                "problems": list(self.problems), "notes": list(self.notes)}


def upper_limit(
    loss,
    poi: zfit.Parameter,
    *,
    cl: float = 0.95,
    calculator: Literal["asymptotic", "toys"] = "asymptotic",
    scan: Sequence[float] | None = None,
    n_points: int = 10,
    n_toys: int = 1000,
    n_asimov: int = 100_000,
    seed: int = 0,
    refine: bool | None = None,
) -> LimitResult:
    """CLs upper limit with hepstats ``UpperLimit`` (q~_mu test statistic).

    Args:
        scan: POI values to test; default ``n_points`` values from 0 to four Hesse errors (where
            the expected limits lie) and ``n_points // 2 + 2`` from the fitted POI to six
            errors above it (the observed limit), extended up to three times (each quadrupling the
            range) while one of the six CLs curves has not crossed 1 - cl: the Hesse error at a
            negative fitted POI can be much smaller than the expected band's width.
        refine: After the scan, add three points inside every scan interval where one of the
            six CLs curves (observed, expected -2..+2 sigma) crosses 1 - cl, recompute, and
            repeat once: the limits are then interpolated over 1/16 of the original spacing.
            Default: on for ``asymptotic`` (cheap), off for ``toys``.
    """
    auto = scan is None
    if auto:  # near zero (expected limits) and above the fitted value (observed limit)
        summary = fit(loss, poi, minos=False)
        err, hat = summary.errors[poi.name], max(summary.poi_value, 0.0)
        scan = np.unique(np.concatenate([np.linspace(0.0, 4 * err, n_points), np.linspace(hat, hat + 6 * err, n_points // 2 + 2)]))
    refine = (calculator == "asymptotic") if refine is None else refine
    alpha = 1 - cl
    calc = _calculator(loss, calculator, poi=poi, n_toys=n_toys, n_asimov=n_asimov, seed=seed)
    keys = ("cls", "expected_m2", "expected_m1", "expected", "expected_p1", "expected_p2")

    def pvalues(values):
        return _cls_pvalues(calc, poi, values)

    values = np.unique(np.asarray(scan, dtype=float))
    pv = pvalues(values)
    for _ in range(3 if auto else 0):  # a default scan is extended upwards until every curve crosses 1 - cl
        if all(np.any(pv[k][np.isfinite(pv[k])] <= alpha) for k in keys):
            break
        top = values.max()
        values = np.unique(np.concatenate([values, np.linspace(top, 4 * top, n_points // 2 + 2)[1:]]))
        pv = pvalues(values)
    for _ in range(2 if refine else 0):  # two rounds: the crossings to 1/16 of the first spacing
        extra = []
        for k in keys:
            i = np.flatnonzero((pv[k][:-1] > alpha) & (pv[k][1:] <= alpha))
            for j in i[:1]:
                extra.extend(np.linspace(values[j], values[j + 1], 5)[1:-1])
        extra = np.setdiff1d(np.round(extra, 12), values)
        if not extra.size:
            break
        values = np.unique(np.concatenate([values, extra]))
        pv = pvalues(values)
    # hepstats' UpperLimit.upperlimit() interpolates the same p-values, but with numpy >= 2.4
    # its float(<1-element array>) raises and every limit comes back as None; we interpolate
    # (log p, linear, between the bracketing points) here.
    bestfit = float(calc.bestfit.params[poi]["value"])
    observed = _crossing(values[values >= bestfit], pv["cls"][values >= bestfit], alpha)
    exp = tuple(_crossing(values, pv[k], alpha) for k in keys[1:])
    scan_info = {"poi": values.tolist(), "cls_observed": pv["cls"].tolist(), "cls_expected": pv["expected"].tolist()}
    for k in ("m2", "m1", "p1", "p2"):
        scan_info[f"cls_expected_{k}"] = pv[f"expected_{k}"].tolist()
    # a limit from a broken model or Asimov dataset is NaN, with the reasons (the calculator's
    # are logged where found), never CLs = 1 at every point or numbers from a degenerate sample
    problems = list(getattr(calc, "problems", []))
    found = []
    if not calc.bestfit.valid:
        at_limit = [p.name for p in calc.bestfit.params if calc.bestfit.params[p].get("at_limit", False)]
        found.append(f"the best fit to the data is not valid (edm {calc.bestfit.edm:.3g}, parameters at their limits: {at_limit})")
    above = values > 0
    if not problems and not found and above.any() and np.all(pv["expected"][above] >= 1 - 1e-9):
        found.append(f"the expected CLs is 1 at every tested {poi.name} > 0: the Asimov (background-only) likelihood never "
                     f"rises above its value at {poi.name} = 0 (q_mu,A = 0), so the data cannot exclude anything; the model "
                     f"or its Asimov dataset is degenerate")
    for msg in found:
        log.warning(msg)
    problems += found
    if problems:
        log.warning("no CLs upper limit on %s (limits set to NaN): %d problem(s), see above and LimitResult.problems", poi.name, len(problems))
        observed, exp = math.nan, (math.nan,) * 5
    elif not np.isfinite(observed) or not np.isfinite(exp[2]):
        log.warning("the CLs scan up to %s = %.4g does not reach CLs = %.3g; extend the scan", poi.name, values.max(), alpha)
    notes = tuple(dict.fromkeys(getattr(calc, "notes", [])))
    return LimitResult(cl=cl, observed=observed, expected=exp, calculator=calculator, scan=scan_info, problems=tuple(problems), notes=notes)


def wald_upper_limit(mu_hat: float, sigma: float, cl: float = 0.95) -> float:
    """The asymptotic CLs upper limit of a Gaussian estimate ``mu_hat`` +- ``sigma`` (POI units):
    mu_hat + sigma Phi^-1(1 - (1 - cl) Phi(mu_hat / sigma)), the q~_mu limit of Cowan, Cranmer,
    Gross, Vitells (2011) when the profile likelihood is a parabola of width ``sigma`` (the Wald
    approximation; the expected band is ``mu_hat = n sigma``, n = -2 .. 2). No fit: where the
    likelihood is not a parabola :func:`upper_limit` differs (within 5 % on a Gaussian peak,
    ``test_wald_upper_limit_against_hepstats``; further at negative ``mu_hat``).
    """
    from scipy.stats import norm

    if not (math.isfinite(mu_hat) and math.isfinite(sigma) and sigma > 0):
        return math.nan
    return float(mu_hat + sigma * norm.ppf(1 - (1 - cl) * norm.cdf(mu_hat / sigma)))


def _cls_pvalues(calc, poi: zfit.Parameter, values) -> dict[str, np.ndarray]:
    ul = UpperLimit(calc, POIarray(poi, np.asarray(values, dtype=float)), POI(poi, 0.0))
    return {k: np.asarray(v, dtype=float) for k, v in ul.pvalues(CLs=True).items()}


def cls_values(
    loss, poi: zfit.Parameter, values: Sequence[float], *, calculator: Literal["asymptotic", "toys"] = "asymptotic",
    n_toys: int = 1000, n_asimov: int = 100_000, seed: int = 0,
) -> dict[str, np.ndarray]:
    """Observed and expected CLs at the POI ``values`` (the q~_mu test of :func:`upper_limit`).

    Returns arrays of shape ``(len(values),)`` under the keys ``cls`` (observed),
    ``expected`` (median) and ``expected_m2 .. expected_p2`` (the +-1, 2 sigma bands),
    plus hepstats' ``clsb`` and ``clb``. A value is excluded at confidence level ``cl`` when
    its CLs <= 1 - cl, so a limit covers a true value exactly when CLs(true) > 1 - cl: one
    test at the truth checks a limit's coverage without computing the limit.
    """
    calc = _calculator(loss, calculator, poi=poi, n_toys=n_toys, n_asimov=n_asimov, seed=seed)
    return _cls_pvalues(calc, poi, values)


def _crossing(values: np.ndarray, pvalues: np.ndarray, alpha: float) -> float:
    """First POI value where the p-value falls to ``alpha`` (nan if it never does in the scan).

    log p is interpolated linearly between the two scan points that bracket alpha: asymptotic
    p-values fall like Gaussian tails, so log p is smooth where p itself spans decades between
    neighbouring points (a spline through p overshoots there). Far above the fit hepstats'
    asymptotic CLs can be 0/0 (both tails underflow): non-finite points carry no information
    and are dropped.
    """
    ok = np.isfinite(pvalues)
    values, pvalues = np.asarray(values, float)[ok], np.asarray(pvalues, float)[ok]
    order = np.argsort(values)
    values, pvalues = values[order], pvalues[order]
    below = np.flatnonzero(pvalues <= alpha)
    if len(values) < 2 or below.size == 0 or below[0] == 0:
        return math.nan
    i = below[0]
    x0, x1 = values[i - 1], values[i]
    l0, l1 = math.log(pvalues[i - 1]), math.log(max(pvalues[i], 1e-300))
    return float(x0 + (math.log(alpha) - l0) * (x1 - x0) / (l1 - l0))


def envelope_discovery(losses: Sequence, pois: Sequence[zfit.Parameter]) -> dict[str, Any]:
    """Discrete profiling over K alternative models (one loss and POI each, same data).

    The profile is the pointwise minimum of the K NLL curves:
    Z = sqrt(2 (min_k NLL_k(POI=0) - min_k NLL_k(hat POI))).
    """
    nll_free, nll_zero = [], []
    for loss, poi in zip(losses, pois, strict=True):
        nll_free.append(fit(loss, poi, minos=False).nll)
        nll_zero.append(_conditional_nll(loss, poi, [0.0])[0])
    q0 = max(2 * (min(nll_zero) - min(nll_free)), 0.0)
    z = math.sqrt(q0)
    return {"q0": q0, "p0": float(norm.sf(z)), "significance": z, "best_model": int(np.argmin(nll_free)), "nll_free": nll_free, "nll_zero": nll_zero}


def envelope_interval(losses: Sequence, pois: Sequence[zfit.Parameter], *, minos: bool = False, level: float = 1.0) -> dict[str, Any]:
    """The POI and its interval from discrete profiling over K alternative models (the envelope).

    Each model k is fitted (one loss and POI each, same data); its profile is approximated by a
    parabola with its own asymmetric errors around its minimum, offset by its minimum NLL; the
    envelope is the pointwise minimum of the K curves (methods.md section 5, item 2), and the
    interval is where the envelope's -2 Delta ln L stays below ``level`` (1: 68 %).

    Returns:
        ``{"value", "error_low", "error_high", "best_model", "values", "errors", "nll"}``: the
        envelope's minimum and interval, and per model its fitted POI, Hesse error and NLL
        (models whose minimum has a degenerate, zero POI error are left out, with a warning).
    """
    fits = [fit(loss, poi, minos=minos) for loss, poi in zip(losses, pois, strict=True)]
    hesse = np.array([f.errors[f.poi] for f in fits])
    usable = np.isfinite(hesse) & (hesse > 1e-6 * max(float(np.nanmax(hesse)), 1e-300))
    if not usable.all():  # a degenerate minimum (zero curvature error) would collapse the envelope
        log.warning("envelope: ignoring model(s) %s with a degenerate POI error", np.flatnonzero(~usable).tolist())
    if not usable.any():
        msg = "no model of the envelope has a usable POI error"
        raise FitError(msg)
    fits = [f for f, ok in zip(fits, usable, strict=True) if ok]
    nll = np.array([f.nll for f in fits])
    vals = np.array([f.poi_value for f in fits])
    lo = np.array([f.poi_error_low if f.poi_error_low > 0 else f.errors[f.poi] for f in fits])
    hi = np.array([f.poi_error_high if f.poi_error_high > 0 else f.errors[f.poi] for f in fits])
    span = np.max(np.maximum(lo, hi))
    grid = np.linspace(vals.min() - 4 * span, vals.max() + 4 * span, 20001)
    d = grid[None, :] - vals[:, None]
    sig = np.where(d < 0, lo[:, None], hi[:, None])
    q = 2 * (nll - nll.min())[:, None] + (d / sig) ** 2
    env = q.min(axis=0)
    inside = grid[env <= level]
    best = grid[int(np.argmin(env))]
    return {"value": float(best), "error_low": float(best - inside.min()), "error_high": float(inside.max() - best),
            "best_model": int(np.argmin(nll)), "values": vals.tolist(), "errors": [f.errors[f.poi] for f in fits], "nll": nll.tolist()}


def spurious_signal(losses: Sequence, pois: Sequence[zfit.Parameter], *, scale: float = 1.0, prefix: str = "gen_spurious",
                    start: Callable[[Any], None] | None = None):
    """The generator's error on the signal yield, measured with the members of an ensemble.

    Each loss is the same events with the model built on one member alone (no nuisances); the
    sample standard deviation of the fitted POIs (times ``scale``: the reference yield for a
    POI mu, so the width is in events) is the width of a
    :class:`~zfit_gbi.nuisances.SpuriousSignal`. Use a *bootstrap* ensemble: its spread is then
    the bootstrap estimate of how far the fitted yield moves when the generator is retrained on
    another sideband sample. Members whose fit fails are left out (with a warning); at least two
    must remain. ``start``, if given, is called with each loss before its fit (to choose the
    start of parameters whose likelihood has several minima, e.g. a PAWS signal parameter).
    """
    from .nuisances import SpuriousSignal

    yields = []
    for k, (loss, poi) in enumerate(zip(losses, pois, strict=True)):
        try:
            if start is not None:
                start(loss)
            yields.append(fit(loss, poi, minos=False).poi_value * float(scale))
        except FitError as err:
            log.warning("spurious signal: the fit with member %d failed (%s); left out", k, err)
    if len(yields) < 2:
        msg = f"the spurious-signal width needs at least 2 members whose fit converges; {len(yields)} of {len(losses)} did"
        raise FitError(msg)
    return SpuriousSignal.from_yields(yields, prefix=prefix)

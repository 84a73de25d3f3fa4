"""Inference on a binned GBI workspace with ``pyhf.infer`` (numpy backend, Minuit).

Pure functions of a spec: :func:`fit` (the POI with Hesse and profile-likelihood errors),
:func:`discovery` (q0, p0, Z) and :func:`upper_limit` (CLs with q~_mu, observed and expected
+-1/2 sigma, by pyhf's TOMS748 root finding, plus a grid for the CLs plot). Results use the
same types as the unbinned route (:class:`zfit_gbi.inference.LimitResult`,
:class:`~zfit_gbi.inference.DiscoveryResult`) so summaries and plots are shared.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyhf
from scipy.optimize import brentq
from scipy.stats import norm

from zfit_gbi.inference import DiscoveryResult, LimitResult

from .modifiers import make_model
from .workspace import negative_poi_bound

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["BinnedFit", "QtildeCLs", "discovery", "expected_by_sample", "fit", "model_and_data", "numpy_backend", "upper_limit"]


@contextmanager
def numpy_backend(optimizer: str = "minuit") -> Iterator[None]:
    """pyhf on numpy with the Minuit (or scipy) optimizer inside the block; the previous
    backend after."""
    old_backend, old_opt = pyhf.get_backend()
    opt = pyhf.optimize.minuit_optimizer(tolerance=1e-3, strategy=None) if optimizer == "minuit" else pyhf.optimize.scipy_optimizer()
    pyhf.set_backend("numpy", opt)
    try:
        yield
    finally:
        pyhf.set_backend(old_backend, old_opt)


def _robust(fn: Callable[[], T]) -> T:
    """Run ``fn`` with Minuit; if one of its fits fails (Minuit's minimum invalid, typically a
    staterror gamma at its bound), run it again with scipy's SLSQP, pyhf's default, and say so."""
    # pyhf logs a failed fit as an error with its whole result (a correlation matrix of every
    # staterror gamma: screens of numbers) before raising; the warning below says what happened
    mixins_log = logging.getLogger("pyhf.optimize.mixins")
    disabled, mixins_log.disabled = mixins_log.disabled, True
    try:
        with numpy_backend("minuit"):
            return fn()
    except pyhf.exceptions.FailedMinimization:
        log.warning("pyhf: a Minuit fit failed (invalid minimum); repeating with scipy's optimizer")
        with numpy_backend("scipy"):
            return fn()
    finally:
        mixins_log.disabled = disabled


def _quick(fit: Callable[..., T]) -> T:
    """``fit(**options)`` with Minuit's strategy 0 (no Hessian: for fits whose minimum only is
    used), again with pyhf's default strategy where that minimum is invalid; other optimizers
    as set."""
    if not isinstance(pyhf.get_backend()[1], pyhf.optimize.minuit_optimizer):
        return fit()
    try:
        return fit(strategy=0)
    except pyhf.exceptions.FailedMinimization:
        return fit()


def _fixed_fit(mu: float, data: np.ndarray, model: pyhf.pdf.Model, bounds: list[tuple[float, float]],
               starts: dict[float, list[float]]) -> tuple[list[float], float]:
    """The fit at POI = ``mu`` (:func:`_quick`), started from ``starts``' entry of the nearest
    POI value (pyhf sets the POI itself) and recorded there: ``(parameters, twice NLL)``."""
    init = starts[min(starts, key=lambda m: abs(m - mu))]
    pars, twice_nll = _quick(lambda **kw: pyhf.infer.mle.fixed_poi_fit(mu, data, model, init_pars=init, par_bounds=bounds,
                                                                      return_fitted_val=True, **kw))
    starts[mu] = np.asarray(pars).tolist()
    return starts[mu], float(np.ravel(twice_nll)[0])


def model_and_data(spec: dict[str, Any], measurement: str | None = None) -> tuple[pyhf.pdf.Model, np.ndarray]:
    """The pyhf model of a workspace spec (custom ``gbi_expshape`` modifiers supported) and
    its observed data (main bins in channel order, then the auxiliary data)."""
    meas = next((m for m in spec["measurements"] if measurement in (None, m["name"])), None)
    if meas is None:
        names = [m["name"] for m in spec["measurements"]]
        raise ValueError(f"no measurement {measurement!r} in the workspace (has {names})")
    model = make_model({"channels": spec["channels"], "parameters": meas["config"].get("parameters", [])}, poi_name=meas["config"]["poi"])
    obs = {o["name"]: o["data"] for o in spec["observations"]}
    main = np.concatenate([np.asarray(obs[c], dtype=float) for c in model.config.channels])
    return model, np.concatenate([main, np.asarray(model.config.auxdata, dtype=float)])


@dataclass(frozen=True)
class BinnedFit:
    """Maximum-likelihood fit of the binned model: the POI with Hesse and profile errors."""

    poi_name: str
    poi_value: float
    poi_error: float
    poi_error_low: float
    poi_error_high: float
    values: dict[str, Any]
    errors: dict[str, Any]
    twice_nll: float
    pars: tuple[float, ...] = ()

    def __repr__(self) -> str:
        return f"BinnedFit({self.poi_name} = {self.poi_value:.4g} -{self.poi_error_low:.3g} +{self.poi_error_high:.3g} (Hesse {self.poi_error:.3g}))"


def _bounds(model: pyhf.pdf.Model, poi_low: float | None = None) -> list[tuple[float, float]]:
    bounds = [tuple(b) for b in model.config.suggested_bounds()]
    if poi_low is not None:
        i = model.config.poi_index
        bounds[i] = (poi_low, bounds[i][1])
    return bounds


def fit(spec: dict[str, Any]) -> BinnedFit:
    """Fit the POI with negative values allowed (down to where a bin's expectation would
    vanish); Hesse errors and the profile-likelihood crossings (2 delta NLL = 1) of the POI."""
    return _robust(lambda: _fit(spec))


def _fit(spec: dict[str, Any]) -> BinnedFit:
    model, data = model_and_data(spec)
    bounds = _bounds(model, negative_poi_bound(spec))
    init = model.config.suggested_init()
    res = np.asarray(pyhf.infer.mle.fit(data, model, init_pars=init, par_bounds=bounds, return_uncertainties=True))
    best, unc = res[:, 0], res[:, 1]
    twice_nll0 = float(np.ravel(pyhf.infer.mle.twice_nll(best, data, model))[0])
    i = model.config.poi_index
    hat, err = float(best[i]), float(unc[i])
    if not (np.isfinite(err) and err > 0):  # scipy gives no errors: the profile curvature
        err = max(abs(hat), 1.0) * 0.1

    starts = {hat: best.tolist()}

    def excess(mu: float) -> float:  # each fixed fit starts from the nearest one done
        return _fixed_fit(mu, data, model, bounds, starts)[1] - twice_nll0 - 1.0

    def crossing(direction: int) -> float:
        lim = bounds[i][0] if direction < 0 else bounds[i][1]
        step = err
        for _ in range(12):
            far = hat + direction * step
            if (direction < 0 and far <= lim) or (direction > 0 and far >= lim):
                far = lim
            if excess(far) > 0:
                lo, hi = sorted((hat, far))
                return abs(brentq(excess, lo, hi, xtol=1e-4 * err) - hat)
            if far == lim:
                return math.nan
            step *= 1.6
        return math.nan

    lo, hi = crossing(-1), crossing(+1)
    names = list(model.config.par_order)
    values = {n: _unpack(best[model.config.par_slice(n)]) for n in names}
    errors = {n: _unpack(unc[model.config.par_slice(n)]) for n in names}
    return BinnedFit(model.config.poi_name, hat, err, lo, hi, values, errors, twice_nll0, tuple(float(v) for v in best))


def expected_by_sample(spec: dict[str, Any], pars: Any = None) -> dict[str, np.ndarray]:
    """Expected counts per sample (all channels' bins concatenated) at ``pars`` (a pyhf
    parameter vector; default the suggested initial values)."""
    with numpy_backend():
        model, _ = model_and_data(spec)
        p = np.asarray(model.config.suggested_init() if pars is None else pars, dtype=float)
        by = np.asarray(model.main_model.expected_data(p, return_by_sample=True))
    return {name: by[i] for i, name in enumerate(model.config.samples)}


def _unpack(a: np.ndarray) -> float | list[float]:
    a = np.ravel(a)
    return float(a[0]) if a.size == 1 else [float(v) for v in a]


def _free_fit(model: pyhf.pdf.Model, data: np.ndarray, bounds: list[tuple[float, float]], fitted: BinnedFit | None) -> tuple[list[float], float]:
    """The fit with the POI >= 0 (``bounds``): ``fitted``'s minimum where its POI is >= 0 (the
    bound then inactive: the same minimum), else a new fit. ``(parameters, twice NLL)``."""
    if fitted is not None and fitted.pars and fitted.poi_value >= 0:
        return list(fitted.pars), fitted.twice_nll
    free, twice_nll = _quick(lambda **kw: pyhf.infer.mle.fit(data, model, init_pars=model.config.suggested_init(), par_bounds=bounds,
                                                             return_fitted_val=True, **kw))
    return np.asarray(free).tolist(), float(np.ravel(twice_nll)[0])


def discovery(spec: dict[str, Any], *, fitted: BinnedFit | None = None) -> DiscoveryResult:
    """Discovery test of POI = 0 (q0, asymptotic): p0 = 1 - Phi(sqrt(q0)) with q0 from the free
    fit (POI >= 0) and the POI = 0 fit, what ``pyhf.infer.hypotest(0, ..., test_stat="q0")``
    returns (its Asimov fits do not enter the observed p0: two fits instead of four); then
    Z = Phi^-1(1 - p0). ``fitted``: a :func:`fit` of this spec, if one exists (its minimum is
    the free fit where its POI is >= 0)."""
    def q0() -> float:
        model, data = model_and_data(spec)
        bounds = _bounds(model)
        free, t_free = _free_fit(model, data, bounds, fitted)
        return max(_fixed_fit(0.0, data, model, bounds, {0.0: free})[1] - t_free, 0.0)

    z = math.sqrt(_robust(q0))
    return DiscoveryResult(q0=z * z, p0=float(norm.sf(z)), significance=z, calculator="asymptotic (pyhf)")


def upper_limit(spec: dict[str, Any], *, cl: float = 0.95, n_points: int = 8, refine: int = 2, fitted: BinnedFit | None = None) -> LimitResult:
    """CLs upper limit on the POI (q~_mu, asymptotic, ``pyhf.infer.hypotest``): observed and
    the five expected limits.

    The scan: ``n_points`` values from 0 to six Hesse errors and ``n_points // 2 + 2`` from
    the fitted POI to six errors above it (extended while a curve has not crossed), then up to
    ``refine`` rounds adding three points inside every interval, wider than 8 %, where a CLs
    curve crosses 1 - cl; the limits interpolate log CLs linearly between the bracketing
    points (as :func:`zfit_gbi.inference.upper_limit`). Agrees with pyhf's TOMS748 root
    finding (``pyhf.infer.intervals.upper_limits.upper_limit``) to 1e-3
    (``tests/test_pyhf_workspace.py``). ``fitted``: a :func:`fit` of this spec, if one exists
    (saves refitting it).
    """
    level = 1.0 - cl
    fitted = fit(spec) if fitted is None else fitted  # only its POI value and Hesse error place the scan
    return _robust(lambda: _upper_limit(spec, fitted, cl, level, n_points, refine))


class QtildeCLs:
    """Asymptotic CLs with q~_mu at any POI value, as ``pyhf.infer.hypotest(mu, data, model,
    par_bounds=bounds, test_stat="qtilde", return_expected_set=True)`` computes it, for a scan.

    ``hypotest`` runs five fits per POI value; three of them do not depend on it (the free fit
    to the data, the fit at POI = 0 that makes the Asimov data, the free fit to the Asimov
    data). Here they run once, and each POI value's two fixed-POI fits start from the fit of
    the nearest value already tested (the data's fixed fit is skipped where the fitted POI
    lies above the tested one: q~ is 0 there). With Minuit the fits use its strategy 0 (no
    Hessian: only minima enter CLs; strategy 1 where a minimum is invalid). Same numbers to 1e-4 (``tests/test_pyhf_workspace.py``);
    on the demo's workspaces about 10 times faster than a hypotest per point
    (``benchmarks/binned_limit.py``).

    Call it with a POI value: ``(CLs observed, [CLs expected at -2, -1, 0, +1, +2 sigma])``
    in pyhf's order (the first expected value is the +2 sigma limit's lowest CLs).
    """

    def __init__(self, model: pyhf.pdf.Model, data: np.ndarray, bounds: list[tuple[float, float]], *,
                 fitted: BinnedFit | None = None) -> None:
        self.model, self.data, self.bounds = model, data, bounds
        free, self._free_data = _free_fit(model, data, bounds, fitted)  # ``fitted``: a fit() of these, if one exists
        self.poi_hat = free[model.config.poi_index]
        self._starts_data = {self.poi_hat: free}  # fixed-POI fits, by POI value: the next one's start
        asimov_pars, _ = _fixed_fit(0.0, data, model, bounds, self._starts_data)  # the Asimov data: expected at the POI = 0 fit
        self._asimov = np.asarray(model.expected_data(np.asarray(asimov_pars)))
        free_a, twice_nll_a = _quick(lambda **kw: pyhf.infer.mle.fit(self._asimov, model, init_pars=asimov_pars, par_bounds=bounds,
                                                                     return_fitted_val=True, **kw))
        self._free_asimov = float(np.ravel(twice_nll_a)[0])
        self._starts_asimov = {0.0: np.asarray(free_a).tolist()}

    def __call__(self, mu: float) -> tuple[float, list[float]]:
        from pyhf.infer.calculators import AsymptoticTestStatDistribution

        mu = float(mu)
        q = 0.0  # q~_mu = 0 where the fitted POI lies above mu, by definition; pyhf fits and discards
        if self.poi_hat <= mu:
            q = max(_fixed_fit(mu, self.data, self.model, self.bounds, self._starts_data)[1] - self._free_data, 0.0)
        q_a = max(_fixed_fit(mu, self._asimov, self.model, self.bounds, self._starts_asimov)[1] - self._free_asimov, 0.0)
        sq, sq_a = math.sqrt(q), math.sqrt(q_a)
        stat = sq - sq_a if sq <= sq_a else (q - q_a) / (2 * sq_a)
        sb, b = AsymptoticTestStatDistribution(-sq_a), AsymptoticTestStatDistribution(0.0)

        def cls(t: float) -> float:
            return float(np.ravel(sb.pvalue(t))[0] / np.ravel(b.pvalue(t))[0])

        return cls(stat), [cls(float(np.ravel(b.expected_value(n))[0])) for n in (2, 1, 0, -1, -2)]


def _upper_limit(spec: dict[str, Any], fitted: BinnedFit, cl: float, level: float, n_points: int, refine: int) -> LimitResult:
    from zfit_gbi.inference import _crossing

    model, data = model_and_data(spec)
    bounds = _bounds(model)
    i = model.config.poi_index
    err, hat = max(fitted.poi_error, 1e-9), max(fitted.poi_value, 0.0)
    rows: dict[float, tuple[float, list[float]]] = {0.0: (1.0, [1.0] * 5)}  # q~_0 = 0: CLs = 1 by construction
    hypotest = QtildeCLs(model, data, bounds, fitted=fitted)

    def test(values: np.ndarray) -> None:
        for mu in values:
            mu = float(min(mu, bounds[i][1]))
            if mu not in rows:
                rows[mu] = hypotest(mu)

    def curves() -> tuple[np.ndarray, np.ndarray]:
        mus = np.array(sorted(rows))
        obs = np.array([rows[m][0] for m in mus])
        exp = np.array([rows[m][1] for m in mus])  # (n, 5)
        return mus, np.column_stack([obs, exp[:, np.argsort(exp.mean(axis=0))]])  # expected: -2 sigma (lowest CLs) first

    test(np.unique(np.concatenate([np.linspace(0.0, 6 * err, n_points)[1:], np.linspace(hat, hat + 6 * err, n_points // 2 + 2)])))
    for _ in range(refine + 6):  # first extend the scan until every curve crosses, then refine
        mus, cls = curves()
        if np.any(cls[-1] > level) and mus[-1] < bounds[i][1]:
            test(np.array([mus[-1] * 1.5 + err]))
            continue
        extra = []
        for k in range(cls.shape[1]):
            j = np.flatnonzero((cls[:-1, k] > level) & (cls[1:, k] <= level))
            for jj in j[:1]:
                if mus[jj + 1] - mus[jj] > 0.08 * mus[jj + 1]:  # brackets wider than 8 % get three points
                    extra.extend(np.linspace(mus[jj], mus[jj + 1], 5)[1:-1])
        extra = np.setdiff1d(np.round(extra, 12), mus)
        if not extra.size or refine <= 0:
            break
        refine -= 1
        test(extra)
    mus, cls = curves()
    above = mus >= fitted.poi_value
    observed = _crossing(mus[above], cls[above, 0], level)
    expected = tuple(_crossing(mus, cls[:, k], level) for k in range(1, 6))
    scan = {"poi": mus.tolist(), "cls_observed": cls[:, 0].tolist(), "cls_expected": cls[:, 3].tolist()}
    for k, j in (("m2", 1), ("m1", 2), ("p1", 4), ("p2", 5)):
        scan[f"cls_expected_{k}"] = cls[:, j].tolist()
    return LimitResult(cl=cl, observed=float(observed), expected=expected, calculator="asymptotic (pyhf)", scan=scan)

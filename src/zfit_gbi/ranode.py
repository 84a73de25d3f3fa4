"""R-ANODE: the signal density learned from the signal-region data (no simulation).

In the signal region the data density is the mixture (Das, Kasieczka, Shih 2023; GBI 2025)

    p_data(m, x) = w p_S(m) q(x | m) + (1 - w) p_B(m) p_B(x | m),

with the background fixed (``log_background`` = log p_B(m) + log p_B(x | m), the sideband fit
and the sideband-trained generator, both normalized on the signal region), the signal's mass
shape fixed (``log_signal_mass`` = log p_S(m) on the signal region: our documented choice for
the signal's m dependence, e.g. a peak fitted to the mass spectrum) and the signal feature
density q a flow trained by maximizing the *mixture* likelihood at fixed w.

:func:`mixture_scan` trains q at every w of a log-spaced grid, k-fold (each event is scored by
flows that did not see it; several seeds averaged), and returns the held-out log-likelihood
ratio to the background-only hypothesis, LL(w) = sum_i log(p_data,i(w) / p_B,i). Every w has
its own trained flows, so LL(w) scatters about a smooth curve (training noise): a parabola fitted
to the highest points (or, for a small signal, a quadratic in w through the exact LL(0) = 0) gives
w (so the signal yield w N_SR), its curvature the statistical error (2 delta LL = 1) and the
points' scatter the training-noise error, and t = 2 max LL (q0 = max(t, 0)) is the discovery
statistic: asymptotically chi2-like, but the flows are trained on the data, so quote the p-value
calibrated on background-only pseudo-experiments scanned the same way (:class:`NullCalibration`),
which is what the asymptotic Z must be checked against. ``zfit_gbi.data_driven`` runs all of it
for ``gbi run`` (``signal.model: data-driven``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from scipy.special import logsumexp

from .data import DataError
from .generators import Flow, TrainConfig

__all__ = ["MixtureScan", "NullCalibration", "Parabola", "calibrated_p_value", "mixture_scan", "refine_points", "train_in_mixture"]


def train_in_mixture(
    flow: Flow,
    x: np.ndarray,
    m: np.ndarray,
    *,
    w: float,
    log_signal_mass: np.ndarray,
    log_background: np.ndarray,
    train: TrainConfig | None = None,
) -> Flow:
    """Train ``flow`` (q(x | m), or q(x) for a flow without context) in place by maximizing
    sum_i log(w p_S(m_i) q(x_i | m_i) + (1 - w) p_B,i) at fixed ``w``; returns it.

    Args:
        x: Signal-region features, shape ``(n, n_features)``.
        m: Their resonant-variable values, shape ``(n,)`` (the flow's context if it has one).
        log_signal_mass: log p_S(m_i) on the signal region, shape ``(n,)``.
        log_background: log p_B(m_i) + log p_B(x_i | m_i) on the signal region, shape ``(n,)``.
    """
    from .generators.training import train_flow

    m = np.asarray(m, dtype=float).ravel()
    c = m[:, None] if flow.n_context else None
    train_flow(flow, x, c, None, train or TrainConfig(), mixture=(w, log_signal_mass, log_background))  # keeps flow.history
    return flow


class Parabola(NamedTuple):
    """The parabola fitted to a scan: LL = ll_hat + curvature (sqrt(w) - sqrt(w_hat))^2 through
    the best points (``kind="sqrt"``), or LL = b w - a w^2 through the exact LL(0) = 0
    (``"linear"``, the fallback; curvature = -a)."""

    w_hat: float  # the vertex (the best point when no maximum is found)
    curvature: float  # in sqrt(w) (kind "sqrt") or in w (kind "linear"); -inf when no maximum is found
    noise_error: float  # error of w_hat from the points' scatter about the parabola
    scatter: float  # that scatter, in units of ln L
    ll_hat: float  # LL at the vertex
    kind: str = "sqrt"

    def at(self, w: np.ndarray) -> np.ndarray:
        """The parabola's LL at ``w``."""
        d = np.sqrt(w) - math.sqrt(self.w_hat) if self.kind == "sqrt" else np.asarray(w) - self.w_hat
        return self.ll_hat + self.curvature * d**2


@dataclass(frozen=True)
class MixtureScan:
    """The held-out mixture likelihood against the signal fraction w.

    Attributes:
        w: The scanned fractions, shape ``(n_w,)``.
        log_likelihood: LL(w) = sum over events of log(p_data(w) / p_B), each event scored by
            flows that did not train on it; shape ``(n_w,)``; LL(0) = 0.
        fold_log_likelihood: The same per fold, shape ``(n_w, n_folds)``.
        n_events: Signal-region events.
        background_error: Error of ``w_hat`` from the background generator's training noise,
            added in quadrature to the statistical and training-noise errors in
            :meth:`interval` and :meth:`upper_limit` (0 unless set; ``gbi run`` sets it from
            the jackknife over the background ensemble's members: scans with each left out).
    """

    w: np.ndarray
    log_likelihood: np.ndarray
    fold_log_likelihood: np.ndarray
    n_events: int
    background_error: float = 0.0

    def parabola(self) -> Parabola:
        """The fitted parabola (:meth:`_parabola`, computed once: every estimate reads it)."""
        return self._parabola

    @functools.cached_property
    def _parabola(self) -> Parabola:
        """The held-out LL of independently trained flows scatters about a smooth curve
        (training noise), so the maximum and the curvature come from a fit, not from the best
        point: a least-squares parabola LL = a v^2 + b v + c in v = sqrt(w) through the (up to)
        five highest scan points; where those points bracket no maximum (small signals, whose
        curve is flat compared with the scatter), the quadratic LL = b w - a w^2 through the exact
        LL(0) = 0 and all scan points (the small-w expansion of sum_i log(1 + w (r_i - 1)); a
        grid reaching far beyond the maximum biases it; none when the best point is the grid's
        last). Without a maximum from either the curvature is ``-inf`` and ``w_hat`` the best
        point.

        Why sqrt(w): the five best points of a log-spaced grid span a factor of several in w,
        over which the mixture likelihood is far from a parabola in w or in log w; in sqrt(w),
        the variance-stabilizing variable of a Poisson yield, it is close to one. Measured on
        the embedded benchmark's signal region with the exact densities (no training noise;
        ``benchmarks/ranode_bias.py``): with the default grid (6 points and 2 refined) the
        vertex in log w fell 11-14 % below the exact maximum-likelihood w; in sqrt(w) it is
        within 1 % (``--no-scan``, rows ``exact, log-w estimator`` and ``exact, scan estimator``).

        The scatter (so the training-noise error) is estimated fold by fold where the scan has
        several folds: each fold's LL(w) is its own held-out events' curve plus the noise of its
        own flows, independent of the other folds', so the same parabola fitted to each fold
        leaves residuals whose squares, summed over the folds, estimate the noise variance of
        the total with k (n - 3) degrees of freedom (2 k at the five points) instead of the
        total's n - 3 (2: on made-up scans with 3 folds the noise error came out more than 3
        times too small in 16 % of them, pooled in 3 %; ``test_training_noise_error_pooled_over_folds``)."""
        best = int(np.argmax(self.log_likelihood))
        none = Parabola(float(self.w[best]), -math.inf, 0.0, 0.0, float(self.log_likelihood[best]))
        order = np.argsort(self.log_likelihood)[::-1][: min(5, len(self.w))]
        v, ll = np.sqrt(self.w[order]), self.log_likelihood[order]
        if len(v) < 4:
            return none
        folds = self.fold_log_likelihood
        by_fold = folds.shape == (len(self.w), folds.shape[-1]) and np.allclose(folds.sum(axis=1), self.log_likelihood)
        sqrt_fit = self._vertex(np.stack([v**2, v, np.ones_like(v)], axis=1), ll, v, folds=folds[order] if by_fold else None)
        if sqrt_fit is not None:
            a, b, c, v_hat, noise, rms = sqrt_fit
            return Parabola(v_hat**2, a, 2 * v_hat * noise, rms, a * v_hat**2 + b * v_hat + c)
        w, ll = self.w, self.log_likelihood
        rising = best == len(w) - 1  # still rising at the grid's end: no maximum inside it
        lin_fit = None if rising or len(w) < 3 else self._vertex(np.stack([w**2, w], axis=1), ll, w, lower=0.0, folds=folds if by_fold else None)
        if lin_fit is None:
            return none
        a, b, _, w_hat, noise, rms = lin_fit
        return Parabola(w_hat, a, noise, rms, a * w_hat**2 + b * w_hat, "linear")

    @staticmethod
    def _vertex(X: np.ndarray, ll: np.ndarray, u: np.ndarray, lower: float | None = None, folds: np.ndarray | None = None) -> tuple[float, ...] | None:
        """Least squares LL = X coef with coef = (a, b[, c]); the vertex -b / 2a if a < 0 and it
        lies within the points' range (from ``lower`` when given); ``(a, b, c, vertex, its error
        from the residual scatter, that scatter)`` or None. ``folds`` (shape ``(n, k)``, summing
        to ``ll``): the scatter from the same fit to each fold, pooled (see :meth:`_parabola`)."""
        coef, *_ = np.linalg.lstsq(X, ll, rcond=None)
        a, b = float(coef[0]), float(coef[1])
        lo = u.min() if lower is None else lower
        if a >= 0 or not lo <= -b / (2 * a) <= u.max():
            return None
        # with folds, the same linear fit per fold: its residuals sum to the total's
        resid = ll - X @ coef if folds is None else folds - X @ np.linalg.lstsq(X, folds, rcond=None)[0]
        rms = float(np.sqrt(np.sum(resid**2) / max(len(u) - X.shape[1], 1)))
        cov = rms**2 * np.linalg.pinv(X.T @ X)[:2, :2]
        grad = np.array([b / (2 * a * a), -1 / (2 * a)])  # d(-b / 2a) / d(a, b)
        c = float(coef[2]) if len(coef) > 2 else 0.0
        return a, b, c, -b / (2 * a), float(np.sqrt(max(grad @ cov @ grad, 0.0))), rms

    @property
    def w_hat(self) -> float:
        """The fitted maximum of LL(w) (:meth:`parabola`); 0 when LL < 0 at every scan point."""
        return self.parabola().w_hat if self.log_likelihood.max() > 0 else 0.0

    @property
    def q0(self) -> float:
        """Discovery statistic 2 max(LL, 0) over the scan points."""
        return 2.0 * max(float(self.log_likelihood.max()), 0.0)

    @property
    def significance(self) -> float:
        """Asymptotic Z = sqrt(q0) (check it with :func:`calibrated_p_value`)."""
        return math.sqrt(self.q0)

    def errors(self) -> tuple[float, float]:
        """``(statistical, training noise)`` errors of :attr:`w_hat`: from the parabola's
        curvature (2 delta LL = 1) and from the scatter of the scan points about it."""
        p = self.parabola()
        if not math.isfinite(p.curvature):  # fewer than 4 points, or no maximum found: unknown
            return math.nan, math.nan
        if p.kind == "linear":
            return math.sqrt(0.5 / -p.curvature), p.noise_error
        # the curvature's error of sqrt(w) times dw / dsqrt(w): the half-width of [(v -+ dv)^2]
        return 2 * math.sqrt(p.w_hat) * math.sqrt(0.5 / -p.curvature), p.noise_error

    def _sigma(self) -> float:
        """The statistical, training-noise and background errors of ``w_hat`` in quadrature."""
        return math.hypot(*self.errors(), self.background_error)

    def interval(self, level: float = 1.0) -> tuple[float, float]:
        """``w_hat`` -+ ``level`` times the statistical, training-noise and background errors
        added in quadrature, clipped to [0, 1]; [0, upper] when the background-only point (LL = 0) is
        within that reach of the maximum; [0, 1] when the scan has no parabolic maximum (widen
        or refine ``w_grid``)."""
        w_hat = self.w_hat
        err = level * self._sigma() if self.has_maximum else math.inf
        lo = 0.0 if self.q0 < level**2 or not math.isfinite(err) else max(w_hat - err, 0.0)
        return lo, min(w_hat + err, 1.0)

    @property
    def t(self) -> float:
        """2 max LL over the scan points, not clipped at 0: the statistic :class:`NullCalibration`
        calibrates (continuous, so its calibrated p-values are uniform without signal; q0 is
        max(t, 0))."""
        return 2.0 * float(self.log_likelihood.max())

    @property
    def has_maximum(self) -> bool:
        """True when the fitted parabola has a maximum (finite statistical error): the scan
        gives w an interval; False for a curve that still rises at the grid's end or only falls."""
        return math.isfinite(self.errors()[0])

    @property
    def parabolic_limit(self) -> bool:
        """True when :meth:`upper_limit` is the fitted parabola's: the scan has a maximum and
        its held-out LL rises above the background-only hypothesis (LL > 0) somewhere, so its
        flows learned something signal-like. Otherwise its limit is read off a curve that only
        falls (the first scan point where 2 delta LL reaches z^2, often the grid's smallest w): a
        bound on signals like those its flows learned, not on signals in the data; ``gbi run``
        then quotes the mass-only fit's limit (:mod:`zfit_gbi.data_driven`)."""
        return self.has_maximum and float(self.log_likelihood.max()) > 0

    def upper_limit(self, cl: float = 0.95) -> float:
        """One-sided upper limit on w at confidence level ``cl``: w_hat + z sigma with
        z = Phi^-1(cl) and sigma the statistical, training-noise and background errors added in
        quadrature (the profile-likelihood limit of the fitted parabola, training noise included); without
        a parabolic maximum, the first scan point above the best one (or above w = 0 when every
        LL < 0) where 2 (LL_max - LL) >= z^2, interpolated in log w. NaN when the scan never
        gets there (widen ``w_grid``)."""
        from scipy.stats import norm

        z = float(norm.ppf(cl))
        if self.parabolic_limit:
            return min(self.w_hat + z * self._sigma(), 1.0)
        ll, ref = self.log_likelihood, max(float(self.log_likelihood.max()), 0.0)
        start = int(np.argmax(ll)) if ll.max() > 0 else -1
        prev_u, prev_d = (math.log(self.w[start]), 2 * (ref - ll[start])) if start >= 0 else (None, 0.0)
        for j in range(start + 1, len(self.w)):
            d = 2 * (ref - ll[j])
            if d >= z * z:
                if prev_u is None:
                    return float(self.w[j])
                u = prev_u + (z * z - prev_d) / (d - prev_d) * (math.log(self.w[j]) - prev_u)
                return float(math.exp(u))
            prev_u, prev_d = math.log(self.w[j]), d
        return math.nan

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.interval()
        stat, noise = self.errors()
        return {"w": self.w.tolist(), "log_likelihood": self.log_likelihood.tolist(), "w_hat": self.w_hat, "w_interval": [lo, hi],
                "w_error_statistical": stat, "w_error_training_noise": noise, "w_error_background": self.background_error,
                "ll_scatter": self.parabola().scatter,
                "parabola": self.parabola().kind,
                "q0": self.q0, "t": self.t, "significance": self.significance, "n_events": self.n_events,
                "signal_yield": {"value": self.w_hat * self.n_events, "low": lo * self.n_events, "high": hi * self.n_events}}

    def __repr__(self) -> str:
        lo, hi = self.interval()
        return (f"MixtureScan(w_hat={self.w_hat:.4g} [{lo:.4g}, {hi:.4g}], N_S={self.w_hat * self.n_events:.1f} "
                f"of {self.n_events} events, q0={self.q0:.2f}, Z={self.significance:.2f} asymptotic)")


def refine_points(w: np.ndarray, log_likelihood: np.ndarray, n: int) -> np.ndarray:
    """``n`` more w values, log-spaced between the neighbours of the best grid point (not
    already in ``w``): what :func:`mixture_scan`'s ``refine`` adds. ``w`` sorted, shape
    ``(n_w,)``, with its ``log_likelihood``."""
    i = int(np.argmax(log_likelihood))
    a, b = np.log(w[max(i - 1, 0)]), np.log(w[min(i + 1, len(w) - 1)])
    return np.setdiff1d(np.exp(np.linspace(a, b, n + 2)[1:-1]), w)


def mixture_scan(
    x: np.ndarray,
    m: np.ndarray,
    *,
    log_signal_mass: np.ndarray,
    log_background: np.ndarray,
    make_flow: Callable[[int], Flow],
    w_grid: Sequence[float],
    n_folds: int = 3,
    seeds: Sequence[int] = (0,),
    train: TrainConfig | None = None,
    seed: int = 0,
    refine: int = 4,
    progress: bool = True,
) -> MixtureScan:
    """Train the signal flow at every w of ``w_grid`` (k-fold, several seeds) and return the
    held-out mixture log-likelihood (:class:`MixtureScan`).

    Args:
        x: Signal-region features, shape ``(n, n_features)``.
        m: Resonant-variable values, shape ``(n,)``.
        log_signal_mass: log p_S(m) normalized on the signal region, shape ``(n,)``.
        log_background: log p_B(m) + log p_B(x | m) normalized on the signal region, shape ``(n,)``.
        make_flow: ``seed -> Flow``: a fresh, untrained signal flow (with or without context).
        w_grid: Signal fractions in (0, 1], e.g. ``np.geomspace(1e-3, 0.5, 10)``.
        n_folds: Folds; the seeds' flows of the other folds score each fold (mean probability).
        train: Training settings (``seed`` replaced per flow).
        seed: Seed of the fold assignment.
        refine: After the grid, this many more w values (log-spaced) between the neighbours
            of the best grid point, so the maximum and the interval are resolved.
    """
    from tqdm.auto import tqdm

    x = np.asarray(x, dtype=float)
    m = np.asarray(m, dtype=float).ravel()
    la, lb = np.asarray(log_signal_mass, dtype=float).ravel(), np.asarray(log_background, dtype=float).ravel()
    n = len(x)
    for name, a in (("m", m), ("log_signal_mass", la), ("log_background", lb)):
        if a.shape != (n,) or not np.all(np.isfinite(a)):
            msg = f"mixture_scan: {name} must be finite and of shape ({n},) like x, got {a.shape}"
            raise DataError(msg)
    w = np.unique(np.asarray(w_grid, dtype=float))
    if len(w) < 3 or w[0] <= 0 or w[-1] > 1:
        msg = f"w_grid needs at least 3 values in (0, 1], got {list(w)}"
        raise ValueError(msg)
    if n_folds < 2 or n < 20 * n_folds:
        msg = f"{n} signal-region events are too few for {n_folds} folds"
        raise DataError(msg)
    train = train or TrainConfig(progress=False)
    fold = np.random.default_rng(seed).permutation(n) % n_folds
    bar = tqdm(total=(len(w) + refine) * n_folds * len(seeds), desc="R-ANODE scan", disable=None if progress else True, leave=False)

    def held_out(grid: np.ndarray) -> np.ndarray:
        ll = np.zeros((len(grid), n_folds))
        for i, wi in enumerate(grid):
            for k in range(n_folds):
                tr, te = fold != k, fold == k
                lq = []
                for s in seeds:
                    flow = train_in_mixture(make_flow(s), x[tr], m[tr], w=wi, log_signal_mass=la[tr], log_background=lb[tr],
                                            train=replace(train, seed=int(s), progress=False))
                    lq.append(flow.log_prob(x[te], m[te][:, None] if flow.n_context else None))
                    bar.update()
                lq_mean = logsumexp(np.stack(lq), axis=0) - math.log(len(seeds))
                mix = np.logaddexp(math.log(wi) + la[te] + lq_mean, (math.log1p(-wi) if wi < 1 else -np.inf) + lb[te])
                ll[i, k] = float(np.sum(mix - lb[te]))
        return ll

    try:
        ll = held_out(w)
        if refine > 0:
            extra = refine_points(w, ll.sum(axis=1), refine)
            ll = np.concatenate([ll, held_out(extra)])
            w = np.concatenate([w, extra])
            order = np.argsort(w)
            w, ll = w[order], ll[order]
    finally:
        bar.close()
    return MixtureScan(w, ll.sum(axis=1), ll, n)


def calibrated_p_value(q0: float, q0_null: Sequence[float]) -> tuple[float, float]:
    """p-value of ``q0`` from its background-only distribution ``q0_null`` (pseudo-experiments)
    and the corresponding one-sided Z: p = (1 + #(q0_null >= q0)) / (1 + n), never 0."""
    from scipy.stats import norm

    null = np.asarray(q0_null, dtype=float)
    if null.size == 0 or not np.all(np.isfinite(null)):
        msg = "q0_null must be a non-empty set of finite values"
        raise ValueError(msg)
    p = (1 + int(np.sum(null >= q0))) / (1 + null.size)
    return p, float(norm.isf(p))


@dataclass(frozen=True)
class NullCalibration:
    """The background-only distribution of the scan statistic t = 2 max LL (:attr:`MixtureScan.t`),
    from pseudo-experiments scanned exactly like the data.

    The quoted p-value of an observed t is the empirical one, (1 + #(t_null >= t)) / (1 + n):
    exact, but never below 1 / (1 + n), so when no toy reaches t it is an upper bound
    (``bound``), the Z a lower bound. Next to it, for orientation only, a fitted tail:
    t_null ~ f0 [t <= 0] + (1 - f0) c chi2_1 (the asymptotic half-chi2 of a one-parameter test,
    its scale c = the mean positive t_null, the maximum-likelihood estimate; c = 1 is Wilks);
    it extrapolates from a few toys' small t values, so it is not quoted.

    Attributes:
        t_null: t of each background-only pseudo-experiment, shape ``(n,)``.
    """

    t_null: np.ndarray

    @property
    def scale(self) -> float:
        """c: the mean of the positive t_null (NaN with fewer than 5 positive)."""
        pos = self.t_null[self.t_null > 0]
        return float(pos.mean()) if pos.size >= 5 else math.nan

    def p_value(self, t: float) -> dict[str, Any]:
        """``{p0, significance, bound, n_above, p0_fitted, significance_fitted}`` of an observed
        ``t``: the empirical p-value and Z (``bound``: no toy reaches t, so p0 is an upper and Z
        a lower bound), and the fitted tail's."""
        from scipy.stats import chi2, norm

        p_emp, z_emp = calibrated_p_value(t, self.t_null)
        c, f0 = self.scale, float(np.mean(self.t_null <= 0))
        p_fit = ((1 - f0) * float(chi2.sf(t / c, 1)) if t > 0 else 1.0) if math.isfinite(c) else math.nan
        n_above = int(np.sum(self.t_null >= t))
        return {"p0": p_emp, "significance": z_emp, "bound": n_above == 0, "n_above": n_above,
                "p0_fitted": p_fit, "significance_fitted": float(norm.isf(p_fit)) if math.isfinite(p_fit) else math.nan}

    def to_dict(self) -> dict[str, Any]:
        return {"n_toys": int(self.t_null.size), "t_null": self.t_null.tolist(), "scale": self.scale,
                "zero_fraction": float(np.mean(self.t_null <= 0))}

    def __repr__(self) -> str:
        return f"NullCalibration({self.t_null.size} background-only toys, P(t <= 0) = {np.mean(self.t_null <= 0):.2f}, scale c = {self.scale:.3g})"

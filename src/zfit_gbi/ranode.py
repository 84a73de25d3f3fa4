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
to the highest points gives w (so the signal yield w N_SR), its curvature the statistical error
(2 delta LL = 1) and the points' scatter the training-noise error, and q0 = 2 LL_max is the
discovery statistic: asymptotically chi2-like, but the flows are trained on
the data, so quote the p-value calibrated on background-only pseudo-experiments
(:func:`calibrated_p_value`), which is what the asymptotic Z must be checked against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from scipy.special import logsumexp

from .data import DataError
from .generators import Flow, TrainConfig

__all__ = ["MixtureScan", "Parabola", "calibrated_p_value", "mixture_scan", "train_in_mixture"]


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
    """The parabola LL = ll_hat + curvature (log w - log w_hat)^2 fitted to a scan's best points."""

    w_hat: float  # the vertex (the best point when no maximum is bracketed)
    curvature: float  # in log w; -inf when no maximum is bracketed
    noise_error: float  # error of w_hat from the points' scatter about the parabola
    scatter: float  # that scatter, in units of ln L
    ll_hat: float  # LL at the vertex


@dataclass(frozen=True)
class MixtureScan:
    """The held-out mixture likelihood against the signal fraction w.

    Attributes:
        w: The scanned fractions, shape ``(n_w,)``.
        log_likelihood: LL(w) = sum over events of log(p_data(w) / p_B), each event scored by
            flows that did not train on it; shape ``(n_w,)``; LL(0) = 0.
        fold_log_likelihood: The same per fold, shape ``(n_w, n_folds)``.
        n_events: Signal-region events.
    """

    w: np.ndarray
    log_likelihood: np.ndarray
    fold_log_likelihood: np.ndarray
    n_events: int

    def parabola(self) -> Parabola:
        """Least-squares parabola LL = a u^2 + b u + c in u = log w through the (up to) five
        highest scan points: the held-out LL of independently trained flows scatters (training
        noise), so the maximum and the curvature come from a fit, not from the best point.
        Without a maximum bracketed by those points the curvature is ``-inf`` and ``w_hat`` the
        best point."""
        order = np.argsort(self.log_likelihood)[::-1][: min(5, len(self.w))]
        u, ll = np.log(self.w[order]), self.log_likelihood[order]
        if len(u) < 4:
            return Parabola(float(np.exp(u[0])), -math.inf, 0.0, 0.0, float(ll[0]))
        X = np.stack([u**2, u, np.ones_like(u)], axis=1)
        coef, *_ = np.linalg.lstsq(X, ll, rcond=None)
        a, b, c = coef
        if a >= 0 or not u.min() <= -b / (2 * a) <= u.max():  # no maximum bracketed by the best points
            return Parabola(float(np.exp(u[0])), -math.inf, 0.0, 0.0, float(ll[0]))
        u_hat = float(-b / (2 * a))
        resid = ll - X @ coef
        rms = float(np.sqrt(np.sum(resid**2) / max(len(u) - 3, 1)))
        cov = rms**2 * np.linalg.pinv(X.T @ X)[:2, :2]
        grad = np.array([b / (2 * a * a), -1 / (2 * a)])  # d(-b / 2a) / d(a, b)
        w_hat = math.exp(u_hat)
        return Parabola(w_hat, float(a), w_hat * float(np.sqrt(max(grad @ cov @ grad, 0.0))), rms, float(a * u_hat**2 + b * u_hat + c))

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
        if not math.isfinite(p.curvature):  # fewer than 4 points, or no maximum inside the best ones: unknown
            return math.nan, math.nan
        return p.w_hat * math.sqrt(0.5 / -p.curvature), p.noise_error  # the statistical one from the curvature in log w

    def interval(self, level: float = 1.0) -> tuple[float, float]:
        """``w_hat`` -+ ``level`` times the statistical and training-noise errors added in
        quadrature, clipped to [0, 1]; [0, upper] when the background-only point (LL = 0) is
        within that reach of the maximum; [0, 1] when the scan has no parabolic maximum (widen
        or refine ``w_grid``)."""
        w_hat = self.w_hat
        stat, noise = self.errors()
        err = level * math.hypot(stat, noise) if math.isfinite(stat) else math.inf
        lo = 0.0 if self.q0 < level**2 or not math.isfinite(err) else max(w_hat - err, 0.0)
        return lo, min(w_hat + err, 1.0)

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.interval()
        stat, noise = self.errors()
        return {"w": self.w.tolist(), "log_likelihood": self.log_likelihood.tolist(), "w_hat": self.w_hat, "w_interval": [lo, hi],
                "w_error_statistical": stat, "w_error_training_noise": noise, "ll_scatter": self.parabola().scatter,
                "q0": self.q0, "significance": self.significance, "n_events": self.n_events,
                "signal_yield": {"value": self.w_hat * self.n_events, "low": lo * self.n_events, "high": hi * self.n_events}}

    def __repr__(self) -> str:
        lo, hi = self.interval()
        return (f"MixtureScan(w_hat={self.w_hat:.4g} [{lo:.4g}, {hi:.4g}], N_S={self.w_hat * self.n_events:.1f} "
                f"of {self.n_events} events, q0={self.q0:.2f}, Z={self.significance:.2f} asymptotic)")


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
            i = int(np.argmax(ll.sum(axis=1)))
            a, b = np.log(w[max(i - 1, 0)]), np.log(w[min(i + 1, len(w) - 1)])
            extra = np.setdiff1d(np.exp(np.linspace(a, b, refine + 2)[1:-1]), w)
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

"""The embedded resonant benchmark: a synthetic LHCO-like dataset with exact densities.

Generated on the fly from a seed (10^6 events in well under 2 s), so tests, the demo and the
validation suite need no files. Shapes follow the LHC Olympics R&D set:

* ``mjj`` (TeV): a power-law falling spectrum ``m^-k`` on the fit window [2.9, 4.1] TeV;
  the signal is a narrow Gaussian at 3.5 TeV (width 0.035 TeV), truncated to the window.
* four features, all inside a box so the exact density is normalized on it:
  ``mj1`` and ``delta_mj`` (TeV, box [0, 1]), ``tau21_j1`` and ``tau21_j2`` (box [0, 1]).
  Each is ``low + (high - low) * sigmoid(z)`` of a latent ``z``.
* background latent ``z | m``: a two-component correlated Gaussian mixture whose means and
  mixing weight move with ``m`` (so interpolating from sidebands into the signal region is a real
  test); signal latent: one Gaussian around ``mj1 = 0.15 TeV, delta_mj = 0.3 TeV, tau21 = 0.45``,
  where the background is rare but not absent.

Every density is exact (``log_prob_*``), so the oracle likelihood ratio is computable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy.special import expit, log_ndtr, logit, logsumexp

from .data import Events, Windows

__all__ = ["ResonantBenchmark"]

_FEATURES = ("mj1", "delta_mj", "tau21_j1", "tau21_j2")
_LOG2PI = float(np.log(2 * np.pi))


def _corr_cov(std: list[float], corr: dict[tuple[int, int], float]) -> np.ndarray:
    c = np.eye(len(std))
    for (i, j), r in corr.items():
        c[i, j] = c[j, i] = r
    s = np.asarray(std)
    return c * np.outer(s, s)


def _mvn_logpdf(z: np.ndarray, mean: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """log N(z; mean, L L^T) for z, mean of shape (n, d)."""
    from scipy.linalg import solve_triangular

    d = z.shape[1]
    sol = solve_triangular(chol, (z - mean).T, lower=True)
    return -0.5 * np.sum(sol**2, axis=0) - np.sum(np.log(np.diag(chol))) - 0.5 * d * _LOG2PI


@dataclass(frozen=True)
class ResonantBenchmark:
    """The synthetic resonant benchmark with exact densities.

    Args:
        fit_window: ``(low, high)`` of ``mjj`` in TeV; all events lie inside it.
        signal_region: ``(low, high)`` of the default signal region in TeV.
        signal_mass: Signal peak position in TeV.
        signal_width: Gaussian width of the signal peak in TeV.
        mass_power: Exponent ``k`` of the background spectrum ``m^-k``.
        signal_mj1: Centre of the signal's ``mj1`` distribution in TeV (its latent mean is
            ``logit(signal_mj1)``), like the daughter mass m_Y of the LHCO signal: the
            signal-model parameter of the PAWS-style mode (:mod:`zfit_gbi.paws`).
    """

    fit_window: tuple[float, float] = (2.9, 4.1)
    signal_region: tuple[float, float] = (3.3, 3.7)
    signal_mass: float = 3.5
    signal_width: float = 0.035
    mass_power: float = 8.0
    signal_mj1: float = 0.15

    resonant: ClassVar[str] = "mjj"
    features: ClassVar[tuple[str, ...]] = _FEATURES
    columns: ClassVar[tuple[str, ...]] = ("mjj", *_FEATURES)
    bounds: ClassVar[dict[str, tuple[float, float]]] = {"mj1": (0.0, 1.0), "delta_mj": (0.0, 1.0), "tau21_j1": (0.0, 1.0), "tau21_j2": (0.0, 1.0)}

    @property
    def windows(self) -> Windows:
        """The default fit window and signal region."""
        return Windows(self.fit_window, self.signal_region)

    # ---- latent model ---------------------------------------------------------------------
    @staticmethod
    def _t(m: np.ndarray) -> np.ndarray:
        return (np.asarray(m) - 3.5) / 0.6

    def _bkg_components(self, m: np.ndarray):
        t = self._t(m)[:, None]
        w_a = expit(0.3 + 0.8 * t[:, 0])
        mean_a = np.array([-1.6, -1.2, 0.9, 0.8]) + t * np.array([0.45, 0.3, -0.2, -0.15])
        mean_b = np.array([-0.9, -1.8, 0.3, 0.5]) + t * np.array([0.3, 0.25, 0.0, -0.1])
        mean_b[:, 0] += 0.15 * t[:, 0] ** 2
        return (w_a, mean_a), (1.0 - w_a, mean_b)

    _cov_a = _corr_cov([0.55, 0.7, 0.6, 0.6], {(0, 1): 0.4, (2, 3): 0.3, (0, 2): -0.2})
    _cov_b = _corr_cov([0.45, 0.5, 0.7, 0.5], {(0, 1): -0.3, (0, 2): 0.35, (1, 3): 0.2})
    def __post_init__(self) -> None:
        if not 0.0 < self.signal_mj1 < 1.0:
            msg = f"signal_mj1 must lie inside the mj1 box (0, 1) TeV, got {self.signal_mj1}"
            raise ValueError(msg)

    @staticmethod
    def _signal_mean(mj1: float | np.ndarray) -> np.ndarray:
        """Signal latent mean(s) for ``mj1`` (TeV, scalar or shape ``(n,)``): shape ``(4,)`` or ``(n, 4)``."""
        mj1 = np.asarray(mj1, dtype=float)
        rest = np.broadcast_to(np.array([logit(0.3), logit(0.45), logit(0.45)]), (*mj1.shape, 3))
        return np.concatenate([logit(mj1)[..., None], rest], axis=-1)

    @property
    def _sig_mean(self) -> np.ndarray:
        return self._signal_mean(self.signal_mj1)

    _cov_s = _corr_cov([0.4, 0.4, 0.6, 0.6], {(2, 3): 0.2})

    @property
    def _box(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([self.bounds[f][0] for f in _FEATURES])
        hi = np.array([self.bounds[f][1] for f in _FEATURES])
        return lo, hi

    def _to_features(self, z: np.ndarray) -> np.ndarray:
        lo, hi = self._box
        return lo + (hi - lo) * expit(z)

    def _to_latent(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latent z and the log-Jacobian log|dz/dx| summed over features."""
        lo, hi = self._box
        u = np.clip((x - lo) / (hi - lo), 1e-300, 1 - 1e-16)
        z = logit(u)
        log_jac = -np.sum(np.log(hi - lo) + np.log(u) + np.log1p(-u), axis=1)
        return z, log_jac

    # ---- exact densities ------------------------------------------------------------------
    def log_prob_background_mass(self, m: np.ndarray) -> np.ndarray:
        """log p_B(m), normalized on the fit window; ``m`` in TeV, shape ``(n,)``."""
        lo, hi = self.fit_window
        k = self.mass_power
        norm = (lo ** (1 - k) - hi ** (1 - k)) / (k - 1)
        return -k * np.log(m) - np.log(norm)

    def log_prob_signal_mass(self, m: np.ndarray) -> np.ndarray:
        """log p_S(m): the Gaussian peak truncated to the fit window."""
        lo, hi = self.fit_window
        mu, s = self.signal_mass, self.signal_width
        log_norm = np.log(np.exp(log_ndtr((hi - mu) / s)) - np.exp(log_ndtr((lo - mu) / s)))
        return -0.5 * ((m - mu) / s) ** 2 - np.log(s) - 0.5 * _LOG2PI - log_norm

    def log_prob_background_features(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """log p_B(x | m) on the feature box; ``x`` shape ``(n, 4)``, ``m`` shape ``(n,)``."""
        z, log_jac = self._to_latent(np.asarray(x, dtype=np.float64))
        (wa, ma), (wb, mb) = self._bkg_components(np.asarray(m, dtype=np.float64))
        la = np.log(wa) + _mvn_logpdf(z, ma, np.linalg.cholesky(self._cov_a))
        lb = np.log(wb) + _mvn_logpdf(z, mb, np.linalg.cholesky(self._cov_b))
        return np.logaddexp(la, lb) + log_jac

    def log_prob_signal_features(self, x: np.ndarray, m: np.ndarray | None = None) -> np.ndarray:
        """log p_S(x | m) (independent of ``m``) on the feature box."""
        del m
        z, log_jac = self._to_latent(np.asarray(x, dtype=np.float64))
        mean = np.broadcast_to(self._sig_mean, z.shape)
        return _mvn_logpdf(z, mean, np.linalg.cholesky(self._cov_s)) + log_jac

    def log_prob_background(self, events: Events) -> np.ndarray:
        """log p_B(m, x) of events with the benchmark's columns."""
        m = events[self.resonant]
        return self.log_prob_background_mass(m) + self.log_prob_background_features(events.array(_FEATURES), m)

    def log_prob_signal(self, events: Events) -> np.ndarray:
        """log p_S(m, x) of events with the benchmark's columns."""
        m = events[self.resonant]
        return self.log_prob_signal_mass(m) + self.log_prob_signal_features(events.array(_FEATURES), m)

    def log_prob(self, events: Events, n_signal: float, n_background: float) -> np.ndarray:
        """log of the normalized mixture ``(n_B p_B + n_S p_S) / (n_B + n_S)``."""
        tot = n_signal + n_background
        return logsumexp(
            [self.log_prob_background(events), self.log_prob_signal(events)],
            b=np.array([[n_background / tot], [n_signal / tot]]),
            axis=0,
        )

    # ---- sampling -------------------------------------------------------------------------
    def sample_background_mass(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` masses from ``m^-k`` on the fit window by inverse CDF (TeV)."""
        lo, hi = self.fit_window
        a = 1.0 - self.mass_power
        u = rng.random(n)
        return (lo**a + u * (hi**a - lo**a)) ** (1.0 / a)

    def sample_background_features(self, m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One feature vector per mass in ``m``: shape ``(len(m), 4)``."""
        n = len(m)
        (wa, ma), (_, mb) = self._bkg_components(m)
        pick_a = rng.random(n) < wa
        z = np.empty((n, 4))
        eps = rng.standard_normal((n, 4))
        z[pick_a] = ma[pick_a] + eps[pick_a] @ np.linalg.cholesky(self._cov_a).T
        z[~pick_a] = mb[~pick_a] + eps[~pick_a] @ np.linalg.cholesky(self._cov_b).T
        return self._to_features(z)

    def sample_signal_mass(self, n: int, rng: np.random.Generator, mass: float | None = None) -> np.ndarray:
        """``n`` signal masses (truncated Gaussian around ``mass``, default ``signal_mass``)."""
        from scipy.stats import truncnorm

        mu = self.signal_mass if mass is None else float(mass)
        lo, hi = self.fit_window
        s = self.signal_width
        return truncnorm.rvs((lo - mu) / s, (hi - mu) / s, loc=mu, scale=s, size=n, random_state=rng)

    def sample_signal_features(self, n: int, rng: np.random.Generator, mj1: float | np.ndarray | None = None) -> np.ndarray:
        """``n`` signal feature vectors, shape ``(n, 4)``; ``mj1`` (TeV, scalar or one per
        event) overrides :attr:`signal_mj1`."""
        mean = self._sig_mean if mj1 is None else self._signal_mean(mj1)
        z = mean + rng.standard_normal((n, 4)) @ np.linalg.cholesky(self._cov_s).T
        return self._to_features(z)

    def sample(self, n_background: int, n_signal: int = 0, seed: int = 0, *, poisson: bool = False) -> Events:
        """A dataset with columns ``mjj, mj1, delta_mj, tau21_j1, tau21_j2, label``.

        Args:
            n_background: Number (or Poisson mean, with ``poisson``) of background events.
            n_signal: Number (or Poisson mean) of signal events.
            seed: Seed of the numpy generator; the same seed gives the same events.
            poisson: Draw the counts from Poisson distributions with these means.
        """
        rng = np.random.default_rng(seed)
        if poisson:
            n_background, n_signal = int(rng.poisson(n_background)), int(rng.poisson(n_signal))
        mb = self.sample_background_mass(int(n_background), rng)
        xb = self.sample_background_features(mb, rng)
        ms = self.sample_signal_mass(int(n_signal), rng)
        xs = self.sample_signal_features(int(n_signal), rng)
        values = np.column_stack(
            [
                np.concatenate([mb, ms]),
                np.concatenate([xb, xs]),
                np.concatenate([np.zeros(len(mb)), np.ones(len(ms))]),
            ]
        )
        perm = rng.permutation(len(values))
        return Events(values[perm], (*self.columns, "label"), source=f"benchmark(seed={seed})")

    def signal_simulation(self, n: int, seed: int = 1, *, mass: float | None = None, mj1: Sequence[float] | None = None) -> Events:
        """A separate signal-simulation sample (columns as :meth:`sample`, all ``label`` 1).

        With ``mj1`` (a grid of signal ``mj1`` centres in TeV) it is a *parametrized*
        simulation: ``n`` events at each grid point, and a column ``signal_mj1`` holding each
        event's parameter (what :mod:`zfit_gbi.paws` trains its classifier on)."""
        rng = np.random.default_rng(seed)
        if mj1 is None:
            m = self.sample_signal_mass(n, rng, mass)
            x = self.sample_signal_features(n, rng)
            values = np.column_stack([m, x, np.ones(n)])
            return Events(values, (*self.columns, "label"), source=f"benchmark signal simulation(seed={seed})")
        grid = np.asarray(mj1, dtype=float).ravel()
        if not len(grid) or np.any((grid <= 0) | (grid >= 1)):
            msg = f"mj1: a non-empty grid inside (0, 1) TeV, got {grid.tolist()}"
            raise ValueError(msg)
        theta = np.repeat(grid, n)
        m = self.sample_signal_mass(len(theta), rng, mass)
        x = self.sample_signal_features(len(theta), rng, theta)
        values = np.column_stack([m, x, np.ones(len(theta)), theta])
        return Events(values, (*self.columns, "label", "signal_mj1"), source=f"benchmark parametrized signal simulation(seed={seed})")

    def oracle(self, events: Events) -> dict[str, float]:
        """The Neyman-Pearson reference: the extended likelihood fit of (n_S, n_B) with the
        exact densities; returns the fitted signal yield, its error and the discovery
        significance Z = sqrt(q0) that no method can beat on these events."""
        from iminuit import Minuit

        ls, lb = self.log_prob_signal(events), self.log_prob_background(events)
        n = float(len(events))

        def nll(ns: float, nb: float) -> float:
            return (ns + nb) - float(np.sum(np.logaddexp(np.log(np.maximum(ns, 1e-300)) + ls, np.log(nb) + lb) if ns > 0 else np.log(nb) + lb))

        free = Minuit(nll, ns=0.01 * n, nb=n)
        free.limits["ns"] = (0.0, n)
        free.limits["nb"] = (1.0, 2 * n)
        free.errordef = Minuit.LIKELIHOOD
        free.migrad()
        free.hesse()
        nll0 = n - n * np.log(n) - float(np.sum(lb))  # n_S = 0, n_B = n at its best
        q0 = max(2.0 * (nll0 - free.fval), 0.0)
        return {"signal_yield": float(free.values["ns"]), "error": float(free.errors["ns"]), "q0": q0, "significance": float(np.sqrt(q0))}

    def write(self, path: str | Path, events: Events) -> Path:
        """Write ``events`` as a ``.npy`` (columns in :attr:`columns` + label order) or ``.csv``."""
        path = Path(path)
        if path.suffix == ".npy":
            np.save(path, events.values)
        elif path.suffix == ".csv":
            header = ",".join(events.columns)
            np.savetxt(path, events.values, delimiter=",", header=header, comments="")
        else:
            msg = f"{path}: write .npy or .csv"
            raise ValueError(msg)
        return path

"""Generator errors as constrained nuisance parameters (methods.md section 5).

A *variation* turns the spread of a generator into zfit parameters theta with Gaussian
constraints theta ~ N(0, 1), so that every fit, scan and hepstats calculator profiles it:

* :class:`EigenVariation` (continuous ensemble eigen-variations): the ensemble members'
  log-densities deviate from their mean by d_k(x); their principal directions
  v_j(x) = sum_k U_kj d_k(x) / sqrt(K - 1) give
  ``p(x | theta) = p_bar(x) exp(sum_j theta_j v_j(x)) / Z(theta)``,
  Z(theta) = E_{x ~ p_bar}[exp(sum_j theta_j v_j(x))] by Monte Carlo over the generator's own
  samples at the data's masses (so it is a normalized density for every theta).
* :class:`UpDownVariation` (up/down generators, HistFactory code-4-like): per event
  r+- = p+-(x) / p_nom(x), ``p(x | a) = p_nom(x) f(x, a) / Z(a)`` with
  f = 1 + a0 a + a1 a^2 (a0 = (r+ - r-)/2, a1 = (r+ + r- - 2)/2) for |a| <= 1 (kept >= 0) and
  f = r+-^|a| outside; Z by the same Monte Carlo.

:class:`SpuriousSignal` (a background-modelling error on the signal yield, the "spurious
signal" of the ATLAS and CMS H -> gamma gamma analyses) acts on the yield, not the density: the
signal component's yield is n_S + width * theta. Its width is what the density variations
miss (``benchmarks/validation.py``): the spread of the fitted yield over generators retrained on
bootstrap resamples of the sidebands, measured with the ensemble's own members
(:func:`zfit_gbi.inference.spurious_signal`).

The ensemble average (mean probability or mean log-probability) needs no parameter (it is
:class:`~zfit_gbi.generators.FlowEnsemble` itself) and discrete profiling over bootstrap models
(the envelope) is a profiling over *models*, done in :mod:`zfit_gbi.inference`.

A variation is handed to :class:`~zfit_gbi.pdfs.JointFlowPDF` (``variation=``): it provides the
per-event columns (computed once per dataset and cached) and the TF expressions in theta.

Where it acts: Z(theta) is a Monte Carlo average over the reference masses only (e.g. the
signal region's), so the varied density is a normalized density only there. ``mass_range`` (by
default the span of the reference masses) is that region: :class:`~zfit_gbi.pdfs.JointFlowPDF`
applies the variation to events inside it and the nominal density outside. (Applied at masses
the reference sample never saw, e.g. the fit window's edges where sideband-trained ensemble
members disagree by e^15 and more, the density integrated to 2.5 instead of 1 at the fitted
theta, the sideband events pinned theta, and the weighted Asimov sample was carried by a
handful of events.)
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import zfit

from ._tf import tf
from .generators import Flow, FlowEnsemble

__all__ = ["EigenVariation", "SpuriousSignal", "UpDownVariation", "Variation", "spurious_partner"]

_CLIP = 20.0  # |log r| and |v| beyond this are clipped: a generator disagreeing by e^20 is broken


@dataclass
class Variation:
    """Base class: per-event columns ``[log p_nominal, inputs...]`` and the log-factor in theta."""

    params: list[zfit.Parameter]
    constraint: zfit.constraint.GaussianConstraint
    mc_columns: np.ndarray  # (n_mc, n_columns) at the generator's own samples
    name: str
    mass_range: tuple[float, float] | None = None  # where it acts (its normalization's masses); None: everywhere

    @property
    def n_columns(self) -> int:
        return self.mc_columns.shape[1]

    @property
    def nominal_generator(self) -> Flow | FlowEnsemble | None:
        """The generator whose log-density is column 0 of :meth:`columns` (None: unknown)."""
        return None

    def columns(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """``(n, n_columns)``: column 0 is log p_nominal(x | m), the rest feed :meth:`log_factor`."""
        raise NotImplementedError

    def log_factor(self, cols: tf.Tensor, theta: Sequence[tf.Tensor]) -> tf.Tensor:
        """log f(x, theta) per event (``(n,)``), unnormalized."""
        raise NotImplementedError

    def log_norm(self, theta: Sequence[tf.Tensor]) -> tf.Tensor:
        """log Z(theta) = log mean over the Monte Carlo sample of f(x, theta)."""
        mc = tf.constant(self.mc_columns, tf.float64)
        lf = self.log_factor(mc, theta)
        return tf.reduce_logsumexp(lf) - tf.math.log(tf.cast(tf.shape(lf)[0], tf.float64))

    def log_density(self, cols: tf.Tensor, theta: Sequence[tf.Tensor]) -> tf.Tensor:
        """Normalized log p(x | m, theta) per event."""
        return cols[:, 0] + self.log_factor(cols, theta) - self.log_norm(theta)


def _constrained_params(prefix: str, n: int) -> tuple[list[zfit.Parameter], zfit.constraint.GaussianConstraint]:
    params = [zfit.Parameter(f"{prefix}_{j}", 0.0, -5.0, 5.0, step_size=0.1) for j in range(n)]
    constraint = zfit.constraint.GaussianConstraint(params=params, observation=np.zeros(n), sigma=np.ones(n))
    return params, constraint


def _mass_range(masses: np.ndarray, mass_range: tuple[float, float] | None) -> tuple[float, float]:
    """The region where a variation normalized on ``masses`` acts: ``mass_range`` if given (it
    must contain the masses), else their span."""
    m = np.asarray(masses, dtype=np.float64).reshape(-1)
    if mass_range is None:
        return float(m.min()), float(m.max())
    lo, hi = float(mass_range[0]), float(mass_range[1])
    if not lo < hi or m.min() < lo or m.max() > hi:
        msg = f"mass_range {(lo, hi)} must contain the reference masses [{m.min():.6g}, {m.max():.6g}]"
        raise ValueError(msg)
    return lo, hi


def _reference(gen: Flow | FlowEnsemble, m: np.ndarray, n_mc: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The generator's own samples at masses drawn from ``m`` (the data's masses)."""
    rng = np.random.default_rng(seed)
    mm = rng.choice(np.asarray(m, dtype=np.float64), size=n_mc, replace=True)
    return gen.sample(n_mc, mm[:, None], seed=seed), mm


class EigenVariation(Variation):
    """Continuous eigen-variations of a :class:`FlowEnsemble` (see the module docstring).

    Build with :meth:`from_ensemble`. ``explained`` is the fraction of the ensemble's
    log-density variance (on the reference sample) carried by each kept direction.
    """

    ensemble: FlowEnsemble
    directions: np.ndarray  # (K, J): v_j = sum_k directions[k, j] * d_k
    explained: np.ndarray

    @property
    def nominal_generator(self) -> FlowEnsemble:
        return self.ensemble

    @classmethod
    def from_ensemble(
        cls,
        ensemble: FlowEnsemble,
        masses: np.ndarray,
        *,
        n_components: int = 2,
        n_mc: int = 20000,
        seed: int = 0,
        prefix: str = "gen_eigen",
        mass_range: tuple[float, float] | None = None,
    ) -> EigenVariation:
        """Principal directions of the members' log-density deviations.

        Args:
            ensemble: At least two members, conditioned on the resonant variable.
            masses: Resonant-variable values to draw the reference sample at (e.g. the data's
                signal-region masses), shape ``(n,)``.
            n_components: Number of directions (nuisance parameters) kept, at most K - 1.
            n_mc: Size of the reference / normalization sample.
            mass_range: Where the variation acts (see the module docstring); default the span
                of ``masses``.
        """
        k = len(ensemble)
        if k < 2:
            msg = "eigen-variations need an ensemble of at least 2 members"
            raise ValueError(msg)
        n_components = min(n_components, k - 1)
        x, m = _reference(ensemble, masses, n_mc, seed)
        lp = ensemble.member_log_probs(x, m[:, None])
        d = lp - lp.mean(axis=0)
        u, s, _ = np.linalg.svd(d, full_matrices=False)
        directions = u[:, :n_components] / np.sqrt(k - 1)
        params, constraint = _constrained_params(prefix, n_components)
        self = cls(params=params, constraint=constraint, mc_columns=np.empty((0, 1 + n_components)), name=prefix,
                   mass_range=_mass_range(masses, mass_range))
        self.ensemble = ensemble
        self.directions = directions
        self.explained = (s**2 / np.sum(s**2))[:n_components]
        self.mc_columns = self._columns_from(lp, m)
        return self

    def _columns_from(self, lp: np.ndarray, m: np.ndarray) -> np.ndarray:
        nominal = self.ensemble.aggregate_log_probs(lp, m[:, None])
        v = np.clip(self.directions.T @ (lp - lp.mean(axis=0)), -_CLIP, _CLIP)
        return np.column_stack([nominal, v.T])

    def columns(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        lp = self.ensemble.member_log_probs(x, m[:, None])
        return self._columns_from(lp, np.asarray(m))

    def log_factor(self, cols: tf.Tensor, theta: Sequence[tf.Tensor]) -> tf.Tensor:
        th = tf.stack([tf.cast(t, tf.float64) for t in theta])
        return tf.linalg.matvec(cols[:, 1:], th)

    def __repr__(self) -> str:
        ex = ", ".join(f"{e:.1%}" for e in self.explained)
        where = "" if self.mass_range is None else f"; acts at masses [{self.mass_range[0]:.4g}, {self.mass_range[1]:.4g}]"
        return f"EigenVariation({len(self.params)} directions of a K={len(self.ensemble)} ensemble; variance explained {ex}{where})"


class UpDownVariation(Variation):
    """One nuisance parameter interpolating between a nominal and up/down generators."""

    nominal: Flow | FlowEnsemble
    up: Flow | FlowEnsemble
    down: Flow | FlowEnsemble

    @property
    def nominal_generator(self) -> Flow | FlowEnsemble:
        return self.nominal

    @classmethod
    def from_generators(
        cls,
        nominal: Flow | FlowEnsemble,
        up: Flow | FlowEnsemble,
        down: Flow | FlowEnsemble,
        masses: np.ndarray,
        *,
        n_mc: int = 20000,
        seed: int = 0,
        prefix: str = "gen_updown",
        mass_range: tuple[float, float] | None = None,
    ) -> UpDownVariation:
        """Args: the three generators (same features, box and context), the masses at which
        to draw the normalization sample (shape ``(n,)``) and where the variation acts (default
        the span of the masses)."""
        for g in (up, down):
            if g.features != nominal.features or g.context != nominal.context or g.bounds != nominal.bounds:
                msg = "up/down generators must have the nominal's features, context and bounds"
                raise ValueError(msg)
        params, constraint = _constrained_params(prefix, 1)
        self = cls(params=params, constraint=constraint, mc_columns=np.empty((0, 3)), name=prefix, mass_range=_mass_range(masses, mass_range))
        self.nominal, self.up, self.down = nominal, up, down
        x, m = _reference(nominal, masses, n_mc, seed)
        self.mc_columns = self.columns(x, m)
        return self

    def columns(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        c = np.asarray(m)[:, None]
        lp0 = self.nominal.log_prob(x, c)
        lr_up = np.clip(self.up.log_prob(x, c) - lp0, -_CLIP, _CLIP)
        lr_dn = np.clip(self.down.log_prob(x, c) - lp0, -_CLIP, _CLIP)
        return np.column_stack([lp0, lr_up, lr_dn])

    def log_factor(self, cols: tf.Tensor, theta: Sequence[tf.Tensor]) -> tf.Tensor:
        a = tf.cast(theta[0], tf.float64)
        lr_up, lr_dn = cols[:, 1], cols[:, 2]
        r_up, r_dn = tf.exp(lr_up), tf.exp(lr_dn)
        a0 = 0.5 * (r_up - r_dn)
        a1 = 0.5 * (r_up + r_dn - 2.0)
        poly = tf.math.log(tf.maximum(1.0 + a0 * a + a1 * a * a, 1e-12))
        return tf.where(a > 1.0, a * lr_up, tf.where(a < -1.0, -a * lr_dn, poly))

    def __repr__(self) -> str:
        return f"UpDownVariation({self.params[0].name}: nominal {self.nominal!r})"


_PARTNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def spurious_partner(param: zfit.Parameter) -> tuple[zfit.Parameter, float] | None:
    """For the theta of a :class:`SpuriousSignal` in a built model: ``(poi, k)``, the POI it
    shares the signal yield with and the POI units one unit of theta is worth (the yield depends
    on ``poi + k * theta`` only); ``None`` for any other parameter.

    With both floating, the likelihood is flat along (poi, theta) -> (poi - k d, theta + d)
    except for theta's constraint, so the unconditional minimum has theta = 0 exactly; Migrad
    on the nearly degenerate pair (correlation -> -1 for a width much larger than the
    statistical error) can stop short of it. :mod:`zfit_gbi.inference` minimizes with theta
    held at 0 first (after moving along that line, which changes no event density).
    """
    return _PARTNERS.get(param)


class SpuriousSignal:
    """The generator's error on the signal yield: the signal component's yield is
    ``n_S + width * theta`` with ``theta ~ N(0, 1)`` (one zfit parameter, Gaussian-constrained).

    ``width`` (events in the fit window) is the generator's error on the fitted yield. Measured
    by :func:`zfit_gbi.inference.spurious_signal`: the sample standard deviation of the yield
    fitted to the same events with each member of a *bootstrap* ensemble alone, i.e. the
    bootstrap estimate of how much the yield moves when the generator is retrained on another
    sideband sample (with members that differ by seed only it misses the sample's part). With
    K members its relative error is about 1 / sqrt(2 (K - 1)).

    Args:
        width: Events (>= 0); 0 gives a parameter that nothing depends on.
        yields: The per-member fitted yields it came from (kept for the record).
        prefix: Name of the parameter (``<prefix>``).
    """

    def __init__(self, width: float, yields: Sequence[float] = (), *, prefix: str = "gen_spurious") -> None:
        width = float(width)
        if not np.isfinite(width) or width < 0:
            msg = f"the spurious-signal width must be a finite number of events >= 0, got {width}"
            raise ValueError(msg)
        self.width = width
        self.yields = tuple(float(y) for y in yields)
        self.name = prefix
        self.param = zfit.Parameter(prefix, 0.0, -5.0, 5.0, step_size=0.1)
        self.params = [self.param]
        self.constraint = zfit.constraint.GaussianConstraint(params=self.params, observation=[0.0], sigma=[1.0])

    @classmethod
    def from_yields(cls, yields: Sequence[float], *, prefix: str = "gen_spurious") -> SpuriousSignal:
        """Width = the sample standard deviation of ``yields`` (at least 2, all finite)."""
        y = np.asarray(yields, dtype=np.float64).reshape(-1)
        if len(y) < 2 or not np.all(np.isfinite(y)):
            msg = f"the spurious-signal width needs at least 2 finite fitted yields, got {y.tolist()}"
            raise ValueError(msg)
        return cls(float(np.std(y, ddof=1)), y, prefix=prefix)

    def yield_of(self, n_sig: zfit.Parameter, name: str, *, poi: zfit.Parameter | None = None, events_per_poi: float = 1.0) -> zfit.ComposedParameter:
        """The signal component's yield n_S + width * theta. ``poi`` (default ``n_sig``) is the
        free parameter behind n_S, ``events_per_poi`` its unit in events (the reference yield
        for mu): the minimizer uses them to keep the fit well conditioned
        (:func:`spurious_partner`)."""
        w = self.width
        free = poi if poi is not None else n_sig
        bound = _PARTNERS.get(self.param)
        if bound is not None and bound[0] is not free:  # one theta, one POI: the minimizer reads this pair
            msg = (f"SpuriousSignal {self.name!r} already serves the model of POI {bound[0].name!r}; give each model its own "
                   f"(SpuriousSignal(width, yields, prefix=...))")
            raise ValueError(msg)
        _PARTNERS[self.param] = (free, w / float(events_per_poi))
        return zfit.ComposedParameter(name, lambda params: params["n"] + w * params["t"], params={"n": n_sig, "t": self.param})

    def to_dict(self) -> dict:
        return {"width": self.width, "member_yields": list(self.yields), "parameter": self.name}

    def __repr__(self) -> str:
        src = f" from {len(self.yields)} members" if self.yields else ""
        return f"SpuriousSignal(width={self.width:.3g} events{src}, parameter {self.name!r})"

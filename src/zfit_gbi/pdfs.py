"""Generators as zfit PDFs: p(x), p(x | c) and the joint p(m) * p(x | m).

The flows' weights are not fit parameters, so the network is evaluated once per dataset: the
per-event log-densities are cached, keyed by the content of the data (a BLAKE2 hash of the
float64 array), and fed into zfit's graph through ``tf.numpy_function``. A minimizer step then
costs one hash of the data instead of a pass through the network; only the parts that depend on
floating parameters (the mass shape, the yields) are recomputed. A new dataset (a toy, a
resample) has a new hash and is evaluated once.

Normalization: a flow is a normalized density on its box, so when the PDF's space equals the
box the normalization is registered as exact (no numerical integral). Any other normalization
or integration range falls back to zfit's Monte Carlo integration.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import zfit
import zfit.z.numpy as znp
from zfit.models.functor import BaseFunctor
from zfit.util.exception import NormNotImplemented, SpecificFunctionNotImplemented

from ._tf import tf
from .generators import Flow, FlowEnsemble

__all__ = ["ConditionalFlowPDF", "DensityCache", "FlowPDF", "JointFlowPDF", "to_zfit_data"]

Generator = Flow | FlowEnsemble


class DensityCache:
    """Per-event values of an expensive function, keyed by the content of its input array.

    Args:
        fn: Maps a float64 array ``(n, k)`` to ``(n,)``.
        maxsize: Number of datasets kept (least recently used ones are dropped).
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], maxsize: int = 8):
        self.fn = fn
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._store: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        arr = np.ascontiguousarray(arr, dtype=np.float64)
        key = (arr.shape, hashlib.blake2b(memoryview(arr).cast("B"), digest_size=20).digest())
        if key in self._store:
            self.hits += 1
            self._store.move_to_end(key)
            return self._store[key]
        self.misses += 1
        value = np.asarray(self.fn(arr), dtype=np.float64)
        self._store[key] = value
        while len(self._store) > self.maxsize:
            self._store.popitem(last=False)
        return value

    def clear(self) -> None:
        self._store.clear()
        self.hits = self.misses = 0

    def __repr__(self) -> str:
        return f"DensityCache({len(self._store)} datasets, {self.hits} hits, {self.misses} misses)"


def _limits(space: zfit.Space, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rectangular limits of ``names`` in ``space`` as numpy arrays (also inside a graph)."""
    sub = space.with_obs(list(names))
    lo, hi = tf.get_static_value(sub.v1.lower), tf.get_static_value(sub.v1.upper)
    if lo is None or hi is None:
        msg = f"the limits of {list(names)} must be fixed numbers, got {sub}"
        raise ValueError(msg)
    return np.asarray(lo, dtype=np.float64).reshape(-1), np.asarray(hi, dtype=np.float64).reshape(-1)


def _space_limits(space: zfit.Space) -> tuple[np.ndarray, np.ndarray]:
    return _limits(space, space.obs)


def _check_generator(gen: Generator) -> None:
    if not isinstance(gen, Flow | FlowEnsemble):
        msg = f"expected a zfit_gbi Flow or FlowEnsemble, got {type(gen).__name__}"
        raise TypeError(msg)
    if isinstance(gen, Flow) and not gen.is_trained:
        msg = "the flow is untrained; call .fit(...) or load a saved one first"
        raise ValueError(msg)


def _rejection_sample(draw: Callable[[tf.Tensor], tf.Tensor], inside: Callable[[tf.Tensor], tf.Tensor], n, d: int):
    """Draw until ``n`` rows satisfy ``inside``: graph-safe accept-reject for sub-ranges."""
    n = tf.cast(n, tf.int32)

    def body(acc, count):
        k = 2 * (n - count) + 256
        s = draw(k)
        acc = tf.concat([acc, tf.boolean_mask(s, inside(s))], axis=0)
        return acc, tf.shape(acc)[0]

    acc0 = tf.zeros([0, d], tf.float64)
    acc, _ = tf.while_loop(
        lambda acc, count: count < n,
        body,
        [acc0, tf.constant(0)],
        shape_invariants=[tf.TensorShape([None, d]), tf.TensorShape([])],
    )
    return acc[:n]


class _GeneratorPDFMixin:
    """Shared machinery: cached density, box checks, printing."""

    generator: Generator
    _density_cache: DensityCache
    _eval_columns: tuple[str, ...]

    def _setup_cache(self, cache: bool, fn: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """``fn`` maps the ``_eval_columns`` array (features, then context) to what is cached;
        default: the generator's log-density (which validates the events itself)."""
        self.use_cache = bool(cache)
        self._density_cache = DensityCache(fn or self._generator_log_prob)

    def _split(self, values):
        """Features and context (``None`` if unconditional) of an ``_eval_columns`` array or tensor."""
        nf = self.generator.n_features
        return values[:, :nf], (values[:, nf:] if self.generator.n_context else None)

    def _generator_log_prob(self, values: np.ndarray) -> np.ndarray:
        return self.generator.log_prob(*self._split(values))

    def _tensor_log_density(self, values: tf.Tensor) -> tf.Tensor:
        return self.generator.log_prob_tensor(*self._split(values))

    def _cached_log_density(self, x) -> tf.Tensor:
        """Per-event log-density of the generator part for zfit data ``x``: shape ``(n,)``."""
        values = x.value(obs=list(self._eval_columns))
        no_tensor_path = isinstance(self.generator, FlowEnsemble) and self.generator.aggregate != "prob"
        if self.use_cache or no_tensor_path:
            out = tf.numpy_function(self._density_cache, [values], tf.float64, stateful=False)
            return tf.reshape(out, [-1])
        return self._tensor_log_density(values)

    def _log_density(self, x, norm) -> tf.Tensor:
        raise NotImplementedError

    @zfit.supports(norm="space")
    def _log_pdf(self, x, norm, params=None):
        del params
        return self._log_density(x, norm)

    @zfit.supports(norm="space")
    def _pdf(self, x, norm, params=None):
        del params
        return znp.exp(self._log_density(x, norm))

    @property
    def cache(self) -> DensityCache:
        """The per-dataset cache of generator log-densities (``hits``, ``misses``, ``clear()``)."""
        return self._density_cache

    def __str__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, obs={list(self.obs)}, generator={self.generator!r})"

    def __repr__(self) -> str:
        return self.__str__()


class FlowPDF(_GeneratorPDFMixin, zfit.pdf.BasePDF):
    """An unconditional generator p(x) as a zfit PDF over its features.

    Args:
        generator: A trained unconditional :class:`Flow` or :class:`FlowEnsemble`.
        obs: A ``zfit.Space`` whose observables are the generator's features (any order). When
            its limits equal the generator's box the PDF is exactly normalized; a sub-box is
            normalized numerically.
        extended: A yield parameter (or number) to make the PDF extended.
        cache: Cache per-event densities per dataset (default). ``False`` evaluates the network
            in the graph on every call (for comparison only).
    """

    def __init__(
        self,
        generator: Generator,
        obs: zfit.Space,
        *,
        extended: Any = None,
        norm: Any = None,
        cache: bool = True,
        name: str = "FlowPDF",
        label: str | None = None,
    ):
        _check_generator(generator)
        if generator.n_context:
            msg = f"the generator is conditional on {list(generator.context)}; use ConditionalFlowPDF or JointFlowPDF"
            raise ValueError(msg)
        if sorted(obs.obs) != sorted(generator.features):
            msg = f"obs {list(obs.obs)} must be exactly the generator's features {list(generator.features)}"
            raise ValueError(msg)
        self.generator = generator
        self._eval_columns = tuple(generator.features)
        lo, hi = _limits(obs, generator.features)
        if np.any(lo < generator.low - 1e-12) or np.any(hi > generator.high + 1e-12):
            msg = f"the space {obs} reaches outside the generator's box {generator.bounds}"
            raise ValueError(msg)
        self._exact = bool(np.allclose(lo, generator.low) and np.allclose(hi, generator.high))
        self._setup_cache(cache)
        super().__init__(obs=obs, params={}, extended=extended, norm=norm, name=name, label=label)

    def _log_density(self, x, norm):
        if norm is not False and not self._exact:
            raise NormNotImplemented
        return self._cached_log_density(x)

    @zfit.supports(norm=True)
    def _integrate(self, limits, norm, options=None, params=None):
        del options, params
        if self._exact and limits == self.space and (norm is False or norm is None or norm == self.space):
            return znp.ones([1], dtype=tf.float64)
        raise SpecificFunctionNotImplemented

    @zfit.supports()
    def _sample(self, n, limits):
        gen = self.generator
        order = [gen.features.index(o) for o in limits.obs]
        lo, hi = _limits(limits, gen.features)

        def draw(k):
            return _draw(gen, k, None)

        if np.allclose(lo, gen.low) and np.allclose(hi, gen.high):
            s = draw(n)
        else:
            s = _rejection_sample(draw, _inside_fn(lo, hi), n, gen.n_features)
        return tf.gather(s, order, axis=1)


def _inside_fn(lo: np.ndarray, hi: np.ndarray) -> Callable[[tf.Tensor], tf.Tensor]:
    def inside(s):
        return tf.reduce_all((s >= lo) & (s <= hi), axis=1)

    return inside


def _draw(gen: Generator, k, context: tf.Tensor | None) -> tf.Tensor:
    """``k`` float64 samples of the generator (graph-safe)."""
    if isinstance(gen, Flow) or gen.aggregate == "prob":
        return gen.sample_tensor(k, context)

    def np_sample(kk, cc):
        cc = None if cc.size == 0 else cc
        return gen.sample(int(kk), cc).astype(np.float64)

    cc = context if context is not None else tf.zeros([0, 0], tf.float64)
    out = tf.numpy_function(np_sample, [k, cc], tf.float64)
    return tf.reshape(out, [-1, gen.n_features])


class ConditionalFlowPDF(_GeneratorPDFMixin, zfit.pdf.BasePDF):
    """A conditional generator p(x | c) as a zfit PDF over features and context.

    On the joint space it is ``p(x | c) * U(c)``, with ``U`` uniform over the context range of
    the space, so it is a normalized density there; for a physical p(c) use
    :class:`JointFlowPDF`.

    Args:
        generator: A trained conditional :class:`Flow` or :class:`FlowEnsemble`.
        obs: A ``zfit.Space`` over the generator's features and context (any order).
        extended, norm, cache, name, label: as for :class:`FlowPDF`.
    """

    def __init__(
        self,
        generator: Generator,
        obs: zfit.Space,
        *,
        extended: Any = None,
        norm: Any = None,
        cache: bool = True,
        name: str = "ConditionalFlowPDF",
        label: str | None = None,
    ):
        _check_generator(generator)
        if not generator.n_context:
            msg = "the generator is unconditional; use FlowPDF"
            raise ValueError(msg)
        need = [*generator.features, *generator.context]
        if sorted(obs.obs) != sorted(need):
            msg = f"obs {list(obs.obs)} must be the generator's features and context {need}"
            raise ValueError(msg)
        self.generator = generator
        self._eval_columns = tuple(need)
        lo, hi = _limits(obs, generator.features)
        self._exact = bool(np.allclose(lo, generator.low) and np.allclose(hi, generator.high))
        clo, chi = _limits(obs, generator.context)
        self._log_context_volume = float(np.sum(np.log(chi - clo)))
        self._setup_cache(cache)
        super().__init__(obs=obs, params={}, extended=extended, norm=norm, name=name, label=label)

    def _log_density(self, x, norm):
        if norm is not False and not self._exact:
            raise NormNotImplemented
        return self._cached_log_density(x) - self._log_context_volume

    @zfit.supports()
    def _sample(self, n, limits):
        gen = self.generator
        flo, fhi = _limits(limits, gen.features)
        clo, chi = _limits(limits, gen.context)
        cols = [*gen.features, *gen.context]
        order = [cols.index(o) for o in limits.obs]

        def draw(k):
            u = tf.random.uniform([k, gen.n_context], dtype=tf.float64)
            c = clo + (chi - clo) * u
            return tf.concat([_draw(gen, k, c), c], axis=1)

        if np.allclose(flo, gen.low) and np.allclose(fhi, gen.high):
            s = draw(n)
        else:
            lo, hi = np.concatenate([flo, clo]), np.concatenate([fhi, chi])
            s = _rejection_sample(draw, _inside_fn(lo, hi), n, len(cols))
        return tf.gather(s, order, axis=1)


class JointFlowPDF(_GeneratorPDFMixin, BaseFunctor):
    """The joint density ``p(m) * p(x | m)``: any 1-D zfit PDF for the resonant variable times a
    conditional generator for the features.

    Normalized on its space: ``p(m)`` is normalized on the space's ``m`` range by zfit, and
    ``p(x | m)`` is normalized on the feature box for every ``m``. Gradients flow to every
    parameter of ``mass_pdf`` (and of ``variation``); the generator part is cached per dataset.

    Args:
        mass_pdf: A 1-D zfit PDF in the resonant variable (its parameters may float).
        generator: A trained :class:`Flow` / :class:`FlowEnsemble` conditioned on exactly that
            variable.
        obs: The joint space (resonant variable and features, any order); default: the mass
            PDF's space times the generator's box.
        variation: A :class:`~zfit_gbi.nuisances.Variation` of the generator (its parameters
            become parameters of this PDF; its constraint belongs in the loss). It acts at the
            masses of its ``mass_range`` (where its normalization was computed); outside, the
            feature density is the nominal one.
        sideband_constant: ``(low, high)`` of the signal region: outside it the feature density
            is replaced by the uniform density on the box (HI-SIGMA's sideband treatment, so
            sideband events constrain only p(m); use the same for signal and background).
        extended, norm, cache, name, label: as for :class:`FlowPDF`.
    """

    def __init__(
        self,
        mass_pdf: zfit.pdf.BasePDF,
        generator: Generator,
        obs: zfit.Space | None = None,
        *,
        variation: Any = None,
        sideband_constant: tuple[float, float] | None = None,
        extended: Any = None,
        norm: Any = None,
        cache: bool = True,
        name: str = "JointFlowPDF",
        label: str | None = None,
    ):
        _check_generator(generator)
        if mass_pdf.n_obs != 1:
            msg = f"mass_pdf must be 1-D, got obs {list(mass_pdf.obs)}"
            raise ValueError(msg)
        resonant = mass_pdf.obs[0]
        if tuple(generator.context) != (resonant,):
            msg = f"the generator must be conditioned on exactly {resonant!r} (the mass PDF's obs), not {list(generator.context)}"
            raise ValueError(msg)
        if obs is None:
            obs = mass_pdf.space
            for f in generator.features:
                obs = obs * zfit.Space(f, limits=generator.bounds[f])
        need = [resonant, *generator.features]
        if sorted(obs.obs) != sorted(need):
            msg = f"obs {list(obs.obs)} must be the resonant variable and the features {need}"
            raise ValueError(msg)
        self.generator = generator
        self.mass_pdf = mass_pdf
        self.resonant = resonant
        self.variation = variation
        self.sideband_constant = None if sideband_constant is None else (float(sideband_constant[0]), float(sideband_constant[1]))
        self._eval_columns = (*generator.features, resonant)
        lo, hi = _limits(obs, generator.features)
        self._exact = bool(np.allclose(lo, generator.low) and np.allclose(hi, generator.high))
        self._log_box_volume = float(np.sum(np.log(generator.high - generator.low)))
        if variation is None:
            self._setup_cache(cache)
            params = {}
        else:  # the variation's columns (log p_nominal and its inputs) are what gets cached
            self._setup_cache(True, lambda a: variation.columns(a[:, :-1], a[:, -1]))
            params = {p.name: p for p in variation.params}
        super().__init__(pdfs=[mass_pdf], obs=obs, params=params, extended=extended, norm=norm, name=name, label=label)
        # zfit creates its random generator (a tf.Variable) lazily; create it now, eagerly, so
        # that sampling the mass PDF inside our traced _sample creates no variable
        zfit.z.random.get_prng()

    def _theta(self) -> list:
        return [self.params[p.name] for p in self.variation.params]

    def _variation_acts(self, m):
        """Boolean mask (tensor or array, like ``m``) of the events with masses ``m`` the
        variation acts on; None: all of them."""
        rng = getattr(self.variation, "mass_range", None)
        if rng is None:
            return None
        return (m >= rng[0]) & (m <= rng[1])

    def _feature_log_density(self, x) -> tf.Tensor:
        if self.variation is None:
            return self._cached_log_density(x)
        values = x.value(obs=list(self._eval_columns))
        cols = tf.numpy_function(self._density_cache, [values], tf.float64, stateful=False)
        cols = tf.reshape(cols, [-1, self.variation.n_columns])
        varied = self.variation.log_density(cols, self._theta())
        acts = self._variation_acts(values[:, -1])
        return varied if acts is None else tf.where(acts, varied, cols[:, 0])

    def _log_density(self, x, norm):
        if norm is not False and not self._exact:
            raise NormNotImplemented
        m_norm = self.space.with_obs([self.resonant]) if norm is not False else False
        log_pm = self.mass_pdf.log_pdf(x, norm=m_norm)
        feat = self._feature_log_density(x)
        if self.sideband_constant is not None:
            m = x.value(obs=[self.resonant])[:, 0]
            lo, hi = self.sideband_constant
            in_sr = (m >= lo) & (m < hi)
            feat = tf.where(in_sr, feat, tf.constant(-self._log_box_volume, tf.float64))
        return log_pm + feat

    def weighted_sample(self, n: int, *, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` events of the nominal model and their exact density ratio varied / nominal.

        Returns ``(values, ratio)`` with ``values`` ``(n, n_obs)`` in the order of this PDF's
        space and ``ratio`` ``(n,)`` = f(x, theta) / Z(theta) at the current nuisance values
        where the variation acts (ones elsewhere, and everywhere without a variation): a
        weighted sample whose density is this PDF exactly in expectation, which
        sampling-importance-resampling is not (used for Asimov datasets).
        """
        gen = self.generator
        if seed is not None:
            zfit.settings.set_seed(seed)
        m = np.asarray(self.mass_pdf.sample(n, limits=self.space.with_obs([self.resonant])).value()).reshape(-1)
        x = gen.sample(len(m), m[:, None], seed=seed)
        if self.sideband_constant is not None:  # uniform features outside the signal region
            lo, hi = self.sideband_constant
            out = (m < lo) | (m >= hi)
            rng = np.random.default_rng(seed)
            x[out] = gen.low + (gen.high - gen.low) * rng.random((int(out.sum()), gen.n_features))
        cols = [self.resonant, *gen.features]
        vals = np.column_stack([m, x])[:, [cols.index(o) for o in self.space.obs]]
        return vals, np.exp(self.variation_log_ratio(vals))

    def variation_log_ratio(self, values: np.ndarray) -> np.ndarray:
        """log(this PDF / its nominal) per event, at the current nuisance values.

        ``values`` is ``(n, n_obs)`` in the order of this PDF's space. The result is
        log f(x, theta) - log Z(theta) where the variation acts and 0 elsewhere: outside its
        ``mass_range``, outside the signal region with ``sideband_constant``, and everywhere
        without a variation. (The nominal is what :meth:`weighted_sample` draws.)
        """
        values = np.asarray(values, dtype=np.float64)
        if self.variation is None or not len(values):
            return np.zeros(len(values))
        obs = list(self.space.obs)
        m = values[:, obs.index(self.resonant)]
        in_range = self._variation_acts(m)
        acts = np.ones(len(m), bool) if in_range is None else np.asarray(in_range)
        if self.sideband_constant is not None:
            acts &= (m >= self.sideband_constant[0]) & (m < self.sideband_constant[1])
        cols = self._density_cache(values[:, [obs.index(o) for o in self._eval_columns]])  # shared with the NLL's evaluation
        theta = self._theta()
        lr = (self.variation.log_factor(tf.constant(cols, tf.float64), theta) - self.variation.log_norm(theta)).numpy()
        return np.where(acts, lr, 0.0)

    @zfit.supports()
    def _sample(self, n, limits):
        gen = self.generator
        m_limits = limits.with_obs([self.resonant])
        flo, fhi = _limits(limits, gen.features)
        cols = [self.resonant, *gen.features]
        order = [cols.index(o) for o in limits.obs]
        nf = gen.n_features

        def nominal(k):
            m = tf.reshape(self.mass_pdf.sample(n=k, limits=m_limits).value(), [-1, 1])
            x = _draw(gen, tf.shape(m)[0], m)
            if self.sideband_constant is not None:  # uniform features outside the signal region
                lo, hi = self.sideband_constant
                u = gen.low + (gen.high - gen.low) * tf.random.uniform(tf.shape(x), dtype=tf.float64)
                x = tf.where((m >= lo) & (m < hi), x, u)
            return tf.concat([m, x], axis=1)

        def tilt_accept(s):
            """Accept-reject by the variation's factor f(x, theta): accept with probability
            f / f_max, f_max the largest factor on the variation's own Monte Carlo sample (or
            in the batch, if larger). Exact up to events beyond the MC sample's largest factor;
            sampling-importance-resampling with a few candidates is not (it under-tilts)."""
            if self.variation is None:
                return tf.ones(tf.shape(s)[:1], tf.bool)
            vals = tf.concat([s[:, 1:], s[:, :1]], axis=1)
            c = tf.numpy_function(lambda a: self.variation.columns(a[:, :nf], a[:, nf]), [vals], tf.float64)
            c = tf.reshape(c, [-1, self.variation.n_columns])
            theta = self._theta()
            logf = self.variation.log_factor(c, theta)
            log_max = tf.maximum(tf.reduce_max(self.variation.log_factor(tf.constant(self.variation.mc_columns, tf.float64), theta)),
                                 tf.reduce_max(logf))
            u = tf.random.uniform(tf.shape(logf), dtype=tf.float64)
            accept = tf.math.log(u) < logf - log_max
            if self.sideband_constant is not None:  # the variation acts in the signal region only
                lo, hi = self.sideband_constant
                accept = accept | (s[:, 0] < lo) | (s[:, 0] >= hi)
            acts = self._variation_acts(s[:, 0])
            return accept if acts is None else accept | ~acts

        full = np.allclose(flo, gen.low) and np.allclose(fhi, gen.high)
        if full and self.variation is None:
            s = nominal(n)
        else:
            mlo, mhi = _limits(limits, [self.resonant])
            lo, hi = np.concatenate([mlo, flo]), np.concatenate([mhi, fhi])
            inside = _inside_fn(lo, hi)
            s = _rejection_sample(nominal, lambda t: inside(t) & tilt_accept(t), n, len(cols))
        return tf.gather(s, order, axis=1)


def to_zfit_data(events, obs: zfit.Space, *, weights: np.ndarray | None = None, clip: bool = False) -> zfit.Data:
    """Validated :class:`~zfit_gbi.data.Events` -> ``zfit.Data`` on ``obs``.

    Every observable of ``obs`` must be a column; NaN/inf and events outside the space's limits
    raise a :class:`~zfit_gbi.data.DataError` (or are dropped and logged with ``clip=True``).
    """
    from .data import validate

    lo, hi = _space_limits(obs)
    bounds = {o: (a, b) for o, a, b in zip(obs.obs, lo, hi, strict=True)}
    if weights is not None:
        events = type(events)(events.values, events.columns, weights, events.source)
    ev = validate(events, list(obs.obs), bounds, clip=clip, what="data for zfit")
    return zfit.Data.from_numpy(obs=obs, array=ev.values, weights=ev.weights)


def log_volume(space: zfit.Space) -> float:
    """log of the volume of a rectangular space."""
    lo, hi = _space_limits(space)
    return float(np.sum(np.log(hi - lo)))


"""Ensembles of flows: K members from different seeds and bootstrap resamples.

Two aggregations are used in the literature:

* ``"prob"`` (GBI): the mean probability ``(1/K) sum_k p_k``, a normalized mixture; sampling
  picks a member per event.
* ``"logprob"`` (HI-SIGMA): the mean log-probability, a geometric mean, which is *not*
  normalized (its integral is <= 1). It is renormalized here per context value by importance
  sampling from the mixture, on a grid of the (1-D) context and interpolated, so that the
  result is still a density on the box. Sampling uses sampling-importance-resampling from the
  mixture.

The members are kept (:attr:`FlowEnsemble.members`): the generator-error nuisance parameters use
their spread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy.special import logsumexp

from .._tf import tf
from .flows import Flow, FlowConfig, TrainConfig

__all__ = ["FlowEnsemble"]


class FlowEnsemble:
    """K flows over the same features, box and context, aggregated into one density.

    Args:
        members: The trained flows.
        aggregate: ``"prob"`` (mean probability) or ``"logprob"`` (normalized mean log-probability).
        n_norm: Importance samples per context grid point for the ``logprob`` normalization.
    """

    def __init__(self, members: Sequence[Flow], aggregate: Literal["prob", "logprob"] = "prob", *, n_norm: int = 20000):
        if not members:
            msg = "an ensemble needs at least one member"
            raise ValueError(msg)
        if aggregate not in ("prob", "logprob"):
            msg = f"aggregate must be 'prob' or 'logprob', got {aggregate!r}"
            raise ValueError(msg)
        first = members[0]
        for k, m in enumerate(members):
            if m.features != first.features or m.context != first.context or m.bounds != first.bounds:
                msg = f"member {k} differs from member 0 in features, context or bounds"
                raise ValueError(msg)
        if aggregate == "logprob" and first.n_context > 1:
            msg = "aggregate='logprob' is normalized on a 1-D context grid; use 'prob' for multi-dimensional context"
            raise ValueError(msg)
        self.members = list(members)
        self.aggregate = aggregate
        self.n_norm = int(n_norm)
        self._log_norm_grid: tuple[np.ndarray, np.ndarray] | None = None

    # the ensemble looks like a Flow to its users
    @property
    def features(self) -> tuple[str, ...]:
        return self.members[0].features

    @property
    def context(self) -> tuple[str, ...]:
        return self.members[0].context

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return self.members[0].bounds

    @property
    def low(self) -> np.ndarray:
        return self.members[0].low

    @property
    def high(self) -> np.ndarray:
        return self.members[0].high

    @property
    def n_features(self) -> int:
        return self.members[0].n_features

    @property
    def n_context(self) -> int:
        return self.members[0].n_context

    def __len__(self) -> int:
        return len(self.members)

    @classmethod
    def train(
        cls,
        x: np.ndarray,
        context: np.ndarray | None,
        *,
        features: Sequence[str],
        bounds: Mapping[str, tuple[float, float]],
        context_names: Sequence[str] = (),
        k: int = 5,
        config: FlowConfig | None = None,
        train: TrainConfig | None = None,
        bootstrap: bool = True,
        weights: np.ndarray | None = None,
        aggregate: Literal["prob", "logprob"] = "prob",
        executor: Any = None,
        mixture: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        **overrides: Any,
    ) -> FlowEnsemble:
        """Train ``k`` members, member ``i`` with seed ``train.seed + i`` and (if ``bootstrap``)
        on a bootstrap resample of the events drawn with that seed; its validation events are
        held out before the resampling, distinct and not in its training part (:func:`_bootstrap`).

        ``executor`` (:func:`zfit_gbi.executor.run_tasks`): ``None`` trains the members one
        after the other here; ``"processes"``, ``"dask"``, a scheduler address or a Dask
        ``Client`` train them in parallel, with the same result seed for seed. A Ctrl-C during
        a sequential training re-raises ``KeyboardInterrupt`` with the members finished so far
        (a smaller ensemble) as its ``partial_generator`` attribute. ``mixture``: per-event
        ``(w, log_a, log_b)``, each of shape ``(n_events,)``, resampled with the events; every
        member trains inside that mixture (:func:`zfit_gbi.generators.training.train_flow`)."""
        from dataclasses import asdict, replace

        from ..executor import run_tasks
        from .io import flow_from_state

        base = replace(train or TrainConfig(), **overrides)
        x = np.asarray(x, dtype=np.float64)
        c = None if context is None else np.asarray(context, dtype=np.float64)
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        mix = None if mixture is None else [np.asarray(a, dtype=np.float64) for a in mixture]
        if mix is not None and any(a.shape != (len(x),) for a in mix):
            msg = f"mixture (w, log_a, log_b) must each have one value per event, shape ({len(x)},); got {[a.shape for a in mix]}"
            raise ValueError(msg)
        remote = executor not in (None, "sequential") and k > 1
        tasks = []
        for i in range(k):
            seed = base.seed + i
            idx, val = _bootstrap(len(x), base.validation_fraction, seed) if bootstrap else (np.arange(len(x)), None)
            tasks.append({
                "features": list(features), "bounds": {f: tuple(b) for f, b in bounds.items()}, "context": list(context_names),
                "config": asdict(config or FlowConfig()), "train": asdict(replace(base, seed=seed, progress=base.progress and not remote)),
                "seed": seed, "x": x[idx], "c": None if c is None else c[idx], "w": None if w is None else w[idx], "state": remote,
                "mixture": None if mix is None else tuple(a[idx] for a in mix), "validation": val,
            })
        if remote:
            out = run_tasks(_train_member, tasks, executor=executor)
        else:  # one after the other; Ctrl-C keeps the finished members on the exception
            out = []
            try:
                for task in tasks:
                    out.append(_train_member(task))
            except KeyboardInterrupt as err:
                if out:
                    err.partial_generator = cls(out, aggregate)  # type: ignore[attr-defined]
                raise
        members = [flow_from_state(*o, source=f"ensemble member {i}") if remote else o for i, o in enumerate(out)]
        return cls(members, aggregate)

    # ---- densities --------------------------------------------------------------------------
    def member_log_probs(self, x: np.ndarray, context: np.ndarray | None = None, **kw: Any) -> np.ndarray:
        """log p_k(x | c) of every member: shape ``(K, n_events)``."""
        return np.stack([m.log_prob(x, context, **kw) for m in self.members])

    def log_prob(self, x: np.ndarray, context: np.ndarray | None = None, **kw: Any) -> np.ndarray:
        """log of the aggregated density, shape ``(n_events,)``."""
        return self.aggregate_log_probs(self.member_log_probs(x, context, **kw), context)

    def aggregate_log_probs(self, member_lp: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        """Aggregate member log-densities ``(K, n)`` into the ensemble's log-density ``(n,)``."""
        k = member_lp.shape[0]
        if self.aggregate == "prob":
            return logsumexp(member_lp, axis=0) - np.log(k)
        return member_lp.mean(axis=0) - self._log_norm(context, member_lp.shape[1])

    def prob(self, x: np.ndarray, context: np.ndarray | None = None, **kw: Any) -> np.ndarray:
        return np.exp(self.log_prob(x, context, **kw))

    def _log_norm(self, context: np.ndarray | None, n: int) -> np.ndarray:
        """log of the integral of the geometric mean over the box, per event's context."""
        if self._log_norm_grid is None:
            self._log_norm_grid = self._compute_log_norm_grid()
        grid, values = self._log_norm_grid
        if self.n_context == 0:
            return np.full(n, values[0])
        c = self.members[0]._check_context(context, n)[:, 0]
        return np.interp(c, grid, values)

    def _compute_log_norm_grid(self, n_grid: int = 24) -> tuple[np.ndarray, np.ndarray]:
        m0 = self.members[0]
        if self.n_context == 0:
            grid = np.zeros(1)
        else:  # the context range the members were trained on: mean +- 3 std
            lo = m0.c_mean[0] - 3 * m0.c_std[0]
            hi = m0.c_mean[0] + 3 * m0.c_std[0]
            grid = np.linspace(lo, hi, n_grid)
        values = np.empty(len(grid))
        for i, g in enumerate(grid):
            ctx = None if self.n_context == 0 else np.array([g])
            xs = self._sample_mixture(self.n_norm, ctx, seed=1234 + i)
            cc = None if ctx is None else np.broadcast_to(ctx, (len(xs), 1))
            lp = self.member_log_probs(xs, cc)
            log_mix = logsumexp(lp, axis=0) - np.log(len(self))
            values[i] = logsumexp(lp.mean(axis=0) - log_mix) - np.log(len(xs))
        return grid, values

    # ---- sampling ---------------------------------------------------------------------------
    def _sample_mixture(self, n: int, context: np.ndarray | None, seed: int | None) -> np.ndarray:
        rng = np.random.default_rng(seed)
        which = rng.integers(0, len(self), n)
        c = self.members[0]._check_context(context, n)
        out = np.empty((n, self.n_features))
        for k, m in enumerate(self.members):
            sel = which == k
            if sel.any():
                out[sel] = m.sample(int(sel.sum()), None if c is None else c[sel], seed=int(rng.integers(2**31)))
        return out

    def sample(self, n: int, context: np.ndarray | None = None, *, seed: int | None = None, n_candidates: int = 8) -> np.ndarray:
        """``n`` samples ``(n, n_features)``: exact for ``prob``; for ``logprob`` by
        sampling-importance-resampling with ``n_candidates`` mixture draws per event."""
        if self.aggregate == "prob":
            return self._sample_mixture(n, context, seed)
        rng = np.random.default_rng(seed)
        c = self.members[0]._check_context(context, n)
        cc = None if c is None else np.repeat(c, n_candidates, axis=0)
        cand = self._sample_mixture(n * n_candidates, cc, int(rng.integers(2**31)))
        lp = self.member_log_probs(cand, cc)
        logw = (lp.mean(axis=0) - (logsumexp(lp, axis=0) - np.log(len(self)))).reshape(n, n_candidates)
        p = np.exp(logw - logw.max(axis=1, keepdims=True))
        cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
        pick = np.minimum((cum < rng.random((n, 1))).sum(axis=1), n_candidates - 1)
        return cand.reshape(n, n_candidates, -1)[np.arange(n), pick]

    # ---- TF-level (for the zfit PDFs) --------------------------------------------------------
    def log_prob_tensor(self, x: tf.Tensor, context: tf.Tensor | None = None) -> tf.Tensor:
        """The ensemble log-density as a float64 tensor (``prob`` aggregation only)."""
        if self.aggregate != "prob":
            msg = "log_prob_tensor supports aggregate='prob' only; use the cached numpy path for 'logprob'"
            raise NotImplementedError(msg)
        lps = tf.stack([m.log_prob_tensor(x, context) for m in self.members])
        return tf.reduce_logsumexp(lps, axis=0) - tf.math.log(tf.constant(len(self), tf.float64))

    def sample_tensor(self, n: int | tf.Tensor, context: tf.Tensor | None = None, *, seed=None) -> tf.Tensor:
        """``n`` float64 samples from the mixture as a tensor (every member drawn, one kept per event)."""
        del seed
        if self.aggregate != "prob":
            msg = "sample_tensor supports aggregate='prob' only"
            raise NotImplementedError(msg)
        draws = tf.stack([m.sample_tensor(n, context) for m in self.members])  # (K, n, d)
        which = tf.random.uniform([n], 0, len(self), dtype=tf.int32)
        return tf.gather(tf.transpose(draws, [1, 0, 2]), which, batch_dims=1)

    @property
    def history(self):
        return [m.history for m in self.members]

    def __repr__(self) -> str:
        vals = [m.history.best_val_loss for m in self.members]
        cond = f" | {', '.join(self.context)}" if self.context else ""
        return (
            f"FlowEnsemble(K={len(self)}, aggregate={self.aggregate!r}, p({', '.join(self.features)}{cond}); "
            f"member: {self.members[0].config}; best val loss {np.nanmean(vals):.4f} +- {np.nanstd(vals):.4f})"
        )


def _bootstrap(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A member's events: ``(indices, validation mask)``. The validation events (a seeded
    ``validation_fraction`` of the distinct events) are held out first and kept once each; the
    training part is a bootstrap resample of the rest, of its own size. Resampling first and
    splitting after would put copies of most validation events into the training part: the
    validation loss then keeps falling while the flow overfits, and early stopping never
    stops (measured before this split existed: 5 x 2x64 spline flows on 7.6k sideband events
    ran all 30 epochs and ended twice as far from the true density, in KL, as the same
    ensemble without resampling; README, "Bootstrap ensembles and early stopping")."""
    rng = np.random.default_rng(10_000 + seed)
    perm = rng.permutation(n)
    n_val = max(1, round(validation_fraction * n))
    val, rest = perm[:n_val], perm[n_val:]
    idx = np.concatenate([rest[rng.integers(0, len(rest), len(rest))], val])
    return idx, np.arange(n) >= n - n_val


def _train_member(task: dict[str, Any]) -> Any:
    """One ensemble member (module level, so worker processes can run it): the trained
    :class:`Flow`, or its plain-data state (``task["state"]``) to send back from a worker."""
    from .io import flow_state

    cfg = dict(task["config"])
    cfg["hidden_units"] = tuple(cfg["hidden_units"])
    flow = Flow(task["features"], task["bounds"], task["context"], FlowConfig(**cfg), seed=task["seed"])
    flow.fit(task["x"], task["c"], task["w"], TrainConfig(**task["train"]), mixture=task.get("mixture"), validation=task.get("validation"))
    return flow_state(flow) if task["state"] else flow

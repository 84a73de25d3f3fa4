"""Maximum-likelihood training of a :class:`~zfit_gbi.generators.Flow`.

Minibatch Adam with gradient clipping, a learning-rate schedule, a seeded validation split,
early stopping on the validation loss, a guard against NaN losses and Ctrl-C handling. The best
weights (lowest validation loss) are always the ones kept.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from .._tf import tf, tf_keras
from .flows import Flow, TrainConfig, TrainingHistory, _VariableFlow

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = ["train_flow"]


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal, silent when stderr is a file or pipe (CI logs)
    return tqdm(total=total, disable=None if enabled else True, desc=desc, unit="epoch", leave=False, dynamic_ncols=True)


def gradient_masks(mades: list, variables: list[tf.Variable]) -> list[tf.Tensor | None]:
    """The autoregressive mask of each variable that has one (``None`` for the others).

    TFP's MADE applies its masks as kernel constraints after each optimizer step, not in the
    forward pass, so the gradient of a masked-out weight is not zero (it is the gain from seeing
    the very feature being predicted). Those gradients counted in the global-norm clipping and
    shrank every real step; nflows masks in the forward pass, where they are zero. The trainer
    multiplies the gradients by these masks before the optimizer (and its clipping) sees them.
    """
    mask_of = {}
    for made in mades:
        for layer in made._network.layers:
            constraint = getattr(layer, "kernel_constraint", None)
            if constraint is not None:  # mask * kernel: applied to ones it is the mask
                mask_of[id(layer.kernel)] = tf.constant(constraint(tf.ones_like(layer.kernel)))
    return [mask_of.get(id(v)) for v in variables]


def mixed_precision(mades: list, dtype: str) -> None:
    """Compute these (built, float32) MADEs' layers in ``dtype`` (``"float16"`` or
    ``"bfloat16"``), their weights kept in float32: Keras' ``mixed_<dtype>`` policy.

    TFP builds the MADE's inner layers with an explicit float32 dtype, so a global Keras policy
    never reaches them; each inner layer gets the mixed policy here and reads its kernel and bias
    through an ``AutoCastVariable`` (as a layer built under that policy would). The variables,
    their gradients and the optimizer's state stay float32; the MADE's output is cast back to
    float32 before the transform and its log-determinant (:func:`~zfit_gbi.generators.flows._affine_fn`).
    """
    from tf_keras.src.mixed_precision import autocast_variable

    policy = tf_keras.mixed_precision.Policy(f"mixed_{dtype}")
    for made in mades:
        for layer in made._network.layers:
            if isinstance(layer, tf_keras.layers.InputLayer):
                continue
            layer._set_dtype_policy(policy)
            for name in ("kernel", "bias"):
                v = getattr(layer, name, None)
                if isinstance(v, tf.Variable) and not isinstance(v, autocast_variable.AutoCastVariable):
                    # not setattr: Keras would track the wrapper as a second weight
                    object.__setattr__(layer, name, autocast_variable.create_autocast_variable(v))


#: dynamic loss scaling for float16 training: the start, and the clean steps before it doubles
_LOSS_SCALE, _LOSS_SCALE_GROWTH = 2.0**15, 2000


class _Workspace:
    """A traced (and, with ``jit_compile``, XLA-compiled) training step and validation sum for
    one architecture, reused by every training of that architecture in this thread.

    Tracing a flow's step costs seconds (16 s for a 5-block spline flow on 2 cores, more than
    the epochs of a small training) and TensorFlow never frees a compiled program (about 0.24 GB
    per such flow): an ensemble, the fit-and-retrain rounds and an R-ANODE scan train the same
    architecture many times. The step reads the flow's box and standardisation from variables
    (:class:`_VariableFlow`); the weights, the optimizer's state and the learning rate are reset
    for each training, so a training gives the same result whether or not one ran before it.
    Measured: ``benchmarks/memory_growth.py --flow rqs`` (``results/memory_growth_rqs.json``).
    """

    def __init__(self, like: Flow, cfg: TrainConfig, mix: bool) -> None:
        self.flow = flow = _VariableFlow(like, tf.float32)
        self.nets = flow._nets32
        variables = self.nets.trainable_variables
        self.opt = opt = tf_keras.optimizers.Adam(learning_rate=cfg.learning_rate, global_clipnorm=cfg.clipnorm)
        # the optimizer's own variable: Adam copies a tf.Variable passed to it, so assigning to
        # that one leaves the rate constant: every schedule was a no-op before this
        self.lr = opt.learning_rate
        opt.build(variables)  # slots now: creating them inside the first call would trace train_step twice
        grad_masks = gradient_masks(self.nets.mades, variables)
        if cfg.mixed_precision:  # after the masks: they are found by the kernels' identity
            mixed_precision(self.nets.mades, cfg.mixed_precision)
            if not tf.config.list_physical_devices("GPU"):
                log.warning("mixed precision (%s) without a GPU: on 2 CPU cores it trained 1.0-1.6x slower per epoch than "
                            "float32 (benchmarks/results/training_mixed_precision_cpu.json)", cfg.mixed_precision)
        scaled = cfg.mixed_precision == "float16"  # bfloat16 has float32's range: no scaling
        self.loss_scale = self.clean_steps = None  # float16's loss scale and its count of clean steps
        if scaled:
            with tf.init_scope():
                self.loss_scale = tf.Variable(_LOSS_SCALE, dtype=tf.float32, trainable=False, name="loss_scale")
                self.clean_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="clean_steps")

        def event_log_lik(xb, cb, abb, training):
            lp = flow.log_prob_tensor(xb, cb, dtype=tf.float32, training=training)
            if mix:  # log(w a q + (1 - w) b), the fixed terms carried in abb = [log w a, log (1 - w) b]
                return tf.reduce_logsumexp(tf.stack([abb[:, 0] + lp, abb[:, 1]], axis=1), axis=1)
            return lp

        def apply(grads):
            # one replica, nothing to aggregate; the aggregation's tf.custom_gradient would register a
            # closure over this graph in TensorFlow's global gradient registry (kept forever)
            opt.apply_gradients(zip(grads, variables, strict=True), skip_gradients_aggregation=True)

        def apply_scaled(grads):
            """float16: skip a step whose scaled gradients overflowed and halve the scale; double
            it after ``_LOSS_SCALE_GROWTH`` clean steps (Keras' ``LossScaleOptimizer`` rule)."""
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

            def step():
                apply(grads)
                grow = self.clean_steps + 1 >= _LOSS_SCALE_GROWTH
                self.loss_scale.assign(tf.where(grow, 2.0 * self.loss_scale, self.loss_scale))
                self.clean_steps.assign(tf.where(grow, tf.constant(0, tf.int64), self.clean_steps + 1))
                return tf.constant(True)

            def skip():
                self.loss_scale.assign(tf.maximum(self.loss_scale / 2.0, 1.0))
                self.clean_steps.assign(0)
                return tf.constant(False)

            tf.cond(finite, step, skip)

        # autograph=False: no tensor-dependent Python control flow here, and autograph would convert
        # all of TFP's bijector code while tracing (seconds for a 15-block flow)
        @tf.function(jit_compile=cfg.jit_compile, reduce_retracing=True, autograph=False)
        def train_step(xb, cb, wb, abb):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_sum(wb * event_log_lik(xb, cb, abb, True)) / tf.reduce_sum(wb)
                target = loss * self.loss_scale if scaled else loss
            grads = tape.gradient(target, variables)
            if scaled:
                grads = [g / self.loss_scale for g in grads]
            grads = [g if mk is None else g * mk for g, mk in zip(grads, grad_masks, strict=True)]
            (apply_scaled if scaled else apply)(grads)
            return loss

        @tf.function(reduce_retracing=True, autograph=False)
        def val_sum(xb, cb, wb, abb):
            return -tf.reduce_sum(wb * event_log_lik(xb, cb, abb, False)), tf.reduce_sum(wb)

        self.train_step: Callable = train_step
        self.val_sum: Callable = val_sum

    def start(self, flow: Flow, learning_rate: float) -> None:
        """Set up for training ``flow``: its box, standardisation and initial weights, a fresh
        optimizer state (step count and moments zero) and the initial learning rate."""
        self.flow.take(flow, force=True)
        for v in self.opt.variables:
            v.assign(tf.zeros_like(v))
        self.lr.assign(learning_rate)
        if self.loss_scale is not None:
            self.loss_scale.assign(_LOSS_SCALE)
            self.clean_steps.assign(0)


#: the workspaces of the last few architectures, per thread (a Dask worker may train in threads)
_WORKSPACES: collections.OrderedDict = collections.OrderedDict()
_MAX_WORKSPACES = 6


def _workspace(flow: Flow, cfg: TrainConfig, mix: bool) -> _Workspace:
    """The reusable step for ``flow``'s architecture and these settings (:class:`_Workspace`);
    a subclass of :class:`Flow` (which may change the density) gets one of its own."""
    if type(flow) is not Flow:
        return _Workspace(flow, cfg, mix)
    key = (threading.get_ident(), flow.config, flow.n_features, flow.n_context, mix, bool(cfg.jit_compile), cfg.clipnorm,
           cfg.mixed_precision)
    ws = _WORKSPACES.pop(key, None) or _Workspace(flow, cfg, mix)
    _WORKSPACES[key] = ws
    while len(_WORKSPACES) > _MAX_WORKSPACES:
        _WORKSPACES.popitem(last=False)
    return ws


def train_flow(
    flow: Flow,
    x: np.ndarray,
    context: np.ndarray | None,
    weights: np.ndarray | None,
    cfg: TrainConfig,
    *,
    mixture: tuple[float | np.ndarray, np.ndarray, np.ndarray] | None = None,
    validation: np.ndarray | None = None,
) -> TrainingHistory:
    """Train ``flow`` in place (float32) and return its history.

    Args:
        flow: The flow; its standardisation is set from the training part of ``x``.
        x: Features, ``(n_events, n_features)``, inside the flow's box.
        context: Conditioning values ``(n_events, n_context)`` or ``None``.
        weights: Per-event weights ``(n_events,)`` or ``None``.
        cfg: Training settings.
        mixture: ``(w, log_a, log_b)``: maximize the likelihood of the mixture
            ``w * exp(log_a) * q(x | c) + (1 - w) * exp(log_b)`` instead of ``q(x | c)`` alone,
            where ``q`` is the flow and ``log_a``, ``log_b`` (shape ``(n_events,)``) are fixed
            per-event log-densities (R-ANODE: ``log_a`` = log p_S(m), ``log_b`` = the
            background's log p_B(m) + log p_B(x | m)); ``0 < w <= 1``, one number or one per
            event (shape ``(n_events,)``: the signal-aware background generator trains with
            ``w`` = 1 - the fitted signal fraction at each event's mass, ``log_a`` = 0 and
            ``log_b`` = log p_S(x | m)). ``w`` = 1 is plain maximum likelihood for that event.
        validation: Boolean mask ``(n_events,)`` of the events that form the validation set
            (early stopping and the kept weights), instead of a seeded random
            ``cfg.validation_fraction`` of them. A bootstrap resample must use it: drawn with
            replacement, a random split puts copies of most validation events in the training
            part, and the validation loss then keeps falling while the flow overfits
            (:meth:`FlowEnsemble.train <zfit_gbi.generators.FlowEnsemble.train>`).

    Raises:
        ValueError: for bad shapes or too few events.
        KeyboardInterrupt: after restoring the best weights so far.
    """
    x = flow._check_x(x)
    c = flow._check_context(context, len(x))
    n = len(x)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (n,) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
            msg = f"weights must be finite, non-negative and of shape ({n},)"
            raise ValueError(msg)
    if validation is not None:
        validation = np.asarray(validation)
        if validation.shape != (n,) or validation.dtype != bool:
            msg = f"validation must be a boolean mask of shape ({n},), got {validation.dtype} {validation.shape}"
            raise ValueError(msg)
    n_val = max(1, round(cfg.validation_fraction * n)) if validation is None else int(validation.sum())
    if n_val < 1:
        msg = "validation marks no event: early stopping needs at least one validation event"
        raise ValueError(msg)
    if n - n_val < 2:
        msg = f"too few events to train a flow: {n} (need at least 3 with a validation split)"
        raise ValueError(msg)
    if mixture is not None:
        w_mix = np.asarray(mixture[0], np.float64)
        log_a, log_b = np.asarray(mixture[1], np.float64), np.asarray(mixture[2], np.float64)
        if w_mix.shape not in ((), (n,)):
            msg = f"mixture fraction w must be one number or of shape ({n},), got shape {w_mix.shape}"
            raise ValueError(msg)
        w_mix = np.broadcast_to(w_mix, (n,))
        bad = w_mix[~((w_mix > 0) & (w_mix <= 1))]
        if bad.size:
            msg = f"mixture fraction w must lie in (0, 1], got {float(bad[0])}"
            raise ValueError(msg)
        if log_a.shape != (n,) or log_b.shape != (n,) or not (np.all(np.isfinite(log_a)) and np.all(np.isfinite(log_b))):
            msg = f"mixture log-densities must be finite and of shape ({n},)"
            raise ValueError(msg)
        with np.errstate(divide="ignore"):  # w = 1: the fixed term drops out (-inf)
            ab = np.stack([np.log(w_mix) + log_a, np.log1p(-w_mix) + log_b], axis=1)
    else:
        ab = None  # plain maximum likelihood: nothing extra per batch
    mix = mixture is not None

    rng = np.random.default_rng(cfg.seed)
    if validation is None:
        perm = rng.permutation(n)
        i_val, i_tr = perm[:n_val], perm[n_val:]
    else:
        i_val, i_tr = np.flatnonzero(validation), np.flatnonzero(~validation)
    flow._seed = cfg.seed
    # fresh, seeded weights: training the same flow twice with one seed gives the same result
    from .flows import _Networks

    flow._nets32 = _Networks(flow.config, flow.n_features, flow.n_context, tf.float32, cfg.seed)
    flow.adapt(x[i_tr], None if c is None else c[i_tr])

    def as32(a):
        return None if a is None else tf.constant(a, tf.float32)

    w_all = np.ones(n) if weights is None else weights
    x_tr, c_tr, w_tr, ab_tr = x[i_tr], (None if c is None else c[i_tr]), w_all[i_tr], (None if ab is None else ab[i_tr])
    x_val, c_val, w_val = as32(x[i_val]), as32(None if c is None else c[i_val]), as32(w_all[i_val])
    ab_val = as32(None if ab is None else ab[i_val])

    ws = _workspace(flow, cfg, mix)
    ws.start(flow, cfg.learning_rate)
    nets, lr, train_step, val_sum = ws.nets, ws.lr, ws.train_step, ws.val_sum

    def validation_loss() -> float:
        tot, sw = 0.0, 0.0
        step = 65536
        for i in range(0, n_val, step):
            cb = None if c_val is None else c_val[i : i + step]
            a, b = val_sum(x_val[i : i + step], cb, w_val[i : i + step], None if ab_val is None else ab_val[i : i + step])
            tot, sw = tot + float(a), sw + float(b)
        return tot / sw

    bs = min(cfg.batch_size, len(i_tr))
    n_batches = len(i_tr) // bs  # drop the remainder: one compiled shape
    hist = TrainingHistory(n_train=len(i_tr), n_val=n_val, objective="mixture" if mix else "likelihood")
    best, best_weights, wait = math.inf, nets.get_weights(), 0
    t0 = time.perf_counter()
    bar = _progress(cfg.epochs, cfg.progress, f"training {'p(' + ','.join(flow.features[:3]) + ('...' if flow.n_features > 3 else '') + ')'}")
    try:
        for epoch in range(cfg.epochs):
            if cfg.schedule == "cosine":
                lr.assign(cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs)))
            t_epoch = time.perf_counter()
            order = rng.permutation(len(i_tr))
            total = 0.0
            for b in range(n_batches):
                idx = order[b * bs : (b + 1) * bs]
                cb = None if c_tr is None else tf.constant(c_tr[idx], tf.float32)
                abb = None if ab_tr is None else tf.constant(ab_tr[idx], tf.float32)
                total += float(train_step(tf.constant(x_tr[idx], tf.float32), cb, tf.constant(w_tr[idx], tf.float32), abb))
            train_loss = total / n_batches
            val_loss = validation_loss() if math.isfinite(train_loss) else math.nan
            hist.train_loss.append(train_loss)
            hist.val_loss.append(val_loss)
            hist.learning_rate.append(float(lr.numpy()))
            hist.epoch_seconds.append(time.perf_counter() - t_epoch)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                hist.stopped = "nan"
                if hist.best_epoch >= 0:
                    log.warning(
                        "training diverged (NaN/inf loss) in epoch %d; keeping the best weights (epoch %d). "
                        "Lower the learning rate or the clipnorm.",
                        epoch + 1,
                        hist.best_epoch + 1,
                    )
                break
            if val_loss < best - 1e-6:
                best, best_weights, wait = val_loss, nets.get_weights(), 0
                hist.best_epoch = epoch
            bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}", best=f"{best:.4f}")
            bar.update()
            if hist.best_epoch != epoch:
                wait += 1
                if cfg.schedule == "plateau" and wait % max(1, cfg.patience // 2) == 0:
                    lr.assign(lr * 0.5)
                if wait >= cfg.patience:
                    hist.stopped = "early stopping"
                    break
        else:
            hist.stopped = "max epochs"
    except KeyboardInterrupt:
        hist.stopped = "interrupted"
        flow._nets32.set_weights(best_weights)
        flow.history = hist
        hist.seconds = time.perf_counter() - t0
        flow._reset_graph_cache()
        log.warning("training interrupted: kept the best weights so far (epoch %d)", hist.best_epoch + 1)
        raise
    finally:
        bar.close()
    flow._nets32.set_weights(best_weights)
    flow._reset_graph_cache()
    hist.seconds = time.perf_counter() - t0
    flow.history = hist
    if hist.best_epoch < 0:
        msg = "training produced no finite validation loss (diverged in the first epoch); lower the learning rate"
        raise RuntimeError(msg)
    return hist

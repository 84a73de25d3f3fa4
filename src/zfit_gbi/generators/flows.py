"""Conditional normalizing flows p(x | c) from TFP bijectors.

A :class:`Flow` is a masked autoregressive flow (affine or rational-quadratic-spline
transforms, optionally with batch normalization) behind a fixed preprocessing bijector that maps
the observable box ``[a, b]^n`` to ``R^n``::

    x in [a, b]^n  --(scaled logit, standardise)-->  R^n  --(MAF layers)-->  N(0, 1)^n

The preprocessing is part of the chain, Jacobian included, so ``exp(log_prob)`` is a density
normalized on exactly the box. Networks are trained in float32 and evaluated by a float64 twin
that holds the same weights, so densities seen by zfit are float64 throughout.
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from .._tf import forget_bijector_calls, tf, tf_keras, tfb, tfd

__all__ = ["Flow", "FlowConfig", "TrainConfig", "TrainingHistory"]

_EPS = {tf.float32: 1e-6, tf.float64: 1e-12}
_OUTPUT_INIT_SCALE = 0.01
# Batch-norm running statistics (used at evaluation) follow the last ~10 minibatches. Keras'
# default 0.99 averages over ~100: with CATHODE's batch 2048 that is several epochs of stale
# statistics behind the weights (nflows averages over ~20).
_BN_MOMENTUM = 0.9
_FLOATX_LOCK = threading.Lock()


@dataclass(frozen=True)
class FlowConfig:
    """Architecture of a masked autoregressive flow.

    Args:
        transform: ``"affine"`` (MAF) or ``"rqs"`` (rational-quadratic spline, Durkan et al.).
        n_layers: Number of autoregressive blocks (MADEs).
        hidden_units: Hidden layer widths of each MADE.
        n_bins: Spline bins (``rqs`` only).
        tail_bound: The spline acts on ``[-tail_bound, tail_bound]`` and is the identity outside.
        batch_norm: Batch normalization after each block (CATHODE).
        activation: Hidden activation.
        layout: ``1`` (the default, and every flow of saved format 1): batch norm before each
            block on the way from the data to the base density, the affine scale
            ``sigmoid(s + 2) + 1e-3`` applied from the base to the data side (bounded: a block can
            only stretch towards the base); TFP's MADE with the context at every layer, Glorot
            kernels, zero biases and the output layer's weights x 0.01 (each block starts near
            the identity). ``2``: nflows' block layout with that MADE: each block is the MADE
            transform and then batch norm, and an affine block maps
            ``z = x * (softplus(s) + 1e-3) + shift`` (the presets' layout until 2026-11-28; its
            saved flows keep it). ``3``: nflows' block layout with a MADE whose context enters
            the first layer only, that layer linear (a mis-reading of nflows' MADE, the presets'
            layout on 2026-11-28 only; its saved flows keep it). ``4`` (the ``cathode()`` and
            ``hisigma()`` presets): nflows' block layout *and* nflows 0.14's MADE as it
            computes, ``h1 = relu(W1 x + b1 + relu(Wc c + bc))``, ``h2 = relu(W2 h1 + b2)``,
            ``out = W3 h2 + b3`` (the context through its own biased, activated layer into the
            first), weights and biases started as PyTorch's ``nn.Linear``. Against nflows:
            ``benchmarks/training.py``. Why the default stays 1 (2026-11-28): layout 4's
            densities are 20-40 % closer to the truth on average (KL,
            ``benchmarks/interpolation.py --layouts 1 4 --seeds 4``), but not where the signal
            lives: with the test suite's small generator the PAWS-style fit's signal parameter
            comes out high in each of 4 training seeds, by 1.6 to 6.2 of its errors (layout 1:
            all within 1.3; ``benchmarks/paws_layouts.py``), and the demo's ensemble members disagree more in the most
            signal-like bins (the binned route's expected limit 82.7 instead of 29.1). The
            average KL is dominated by the bulk; a GBI fit is decided in the tail. (As the
            default, layout 2's small affine flows failed ``test_model.py::test_zero_injection``;
            layouts 3 and 4 pass ``test_model.py``.)
    """

    transform: Literal["affine", "rqs"] = "affine"
    n_layers: int = 5
    hidden_units: tuple[int, ...] = (64, 64)
    n_bins: int = 8
    tail_bound: float = 5.0
    batch_norm: bool = False
    activation: str = "relu"
    layout: Literal[1, 2, 3, 4] = 1

    def __post_init__(self) -> None:
        if self.transform not in ("affine", "rqs"):
            msg = f"FlowConfig.transform must be 'affine' or 'rqs', got {self.transform!r}"
            raise ValueError(msg)
        if self.layout not in (1, 2, 3, 4) or type(self.layout) is not int:
            msg = f"FlowConfig.layout must be 1, 2, 3 or 4, got {self.layout!r}"
            raise ValueError(msg)
        if self.n_layers < 1 or not self.hidden_units or min(self.hidden_units) < 1:
            msg = f"FlowConfig needs n_layers >= 1 and positive hidden_units, got {self}"
            raise ValueError(msg)
        if self.transform == "rqs" and (self.n_bins < 2 or self.tail_bound <= 0):
            msg = f"FlowConfig(rqs) needs n_bins >= 2 and tail_bound > 0, got {self.n_bins}, {self.tail_bound}"
            raise ValueError(msg)
        object.__setattr__(self, "hidden_units", tuple(int(h) for h in self.hidden_units))

    @classmethod
    def cathode(cls) -> FlowConfig:
        """CATHODE's background flow: MAF, 15 blocks, 128 hidden units, batch norm (nflows' layout and MADE: layout 4)."""
        return cls(transform="affine", n_layers=15, hidden_units=(128, 128), batch_norm=True, layout=4)

    @classmethod
    def hisigma(cls) -> FlowConfig:
        """HI-SIGMA's flows: autoregressive RQS, 5 layers, 32 hidden units, 24 bins, tail bound 5
        (nflows' layout and MADE: layout 4)."""
        return cls(transform="rqs", n_layers=5, hidden_units=(32, 32), n_bins=24, tail_bound=5.0, layout=4)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (minibatch Adam, validation split, early stopping).

    Args:
        epochs: Maximum number of epochs.
        batch_size: Minibatch size (events).
        learning_rate: Initial Adam learning rate.
        schedule: ``"cosine"`` decay over ``epochs``, ``"plateau"`` (halve after
            ``patience // 2`` epochs without improvement) or ``"constant"``.
        patience: Stop after this many epochs without a better validation loss.
        validation_fraction: Fraction of events held out for validation (early stopping).
        clipnorm: Global gradient-norm clipping (prevents the first-epoch divergences seen
            with conditional MAFs); ``None`` disables it.
        seed: Seed for weight initialisation, the split and the shuffling.
        jit_compile: XLA-compile the training step (about 1.4x faster per epoch for the
            CATHODE preset on 2 CPU cores, 2.3x for a 5-block spline flow, after seconds of
            compiling). The traced step is shared by every training of the same architecture in
            a thread (:mod:`zfit_gbi.generators.training`), so it is traced and compiled once
            per process, not once per training; small flows (R-ANODE's) train as fast without it.
        mixed_precision: ``None`` (the default: float32 throughout), ``"float16"`` or
            ``"bfloat16"``: the MADEs' matrix products and activations in that dtype during
            training (Keras' ``mixed_<dtype>`` policy: weights, optimizer state, the transforms,
            their log-determinants and the loss stay float32; ``"float16"`` with dynamic loss
            scaling). For GPUs with tensor cores (compute capability >= 7.0 for float16, >= 8.0
            for bfloat16); on a CPU without bfloat16 units it is slower, not faster
            (``benchmarks/training.py --mixed-precision``). Training only: the trained flow
            is saved and evaluated in float32 / float64 as any other.
        progress: Show a progress bar with the losses.
    """

    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 1e-3
    schedule: Literal["cosine", "plateau", "constant"] = "cosine"
    patience: int = 10
    validation_fraction: float = 0.2
    clipnorm: float | None = 1.0
    seed: int = 0
    jit_compile: bool = True
    mixed_precision: Literal["float16", "bfloat16"] | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mixed_precision not in (None, "float16", "bfloat16"):
            msg = f"TrainConfig.mixed_precision must be None, 'float16' or 'bfloat16', got {self.mixed_precision!r}"
            raise ValueError(msg)
        if self.schedule not in ("cosine", "plateau", "constant"):
            msg = f"TrainConfig.schedule must be 'cosine', 'plateau' or 'constant', got {self.schedule!r}"
            raise ValueError(msg)
        if not 0.0 < self.validation_fraction < 1.0:
            msg = f"TrainConfig.validation_fraction must be in (0, 1), got {self.validation_fraction}"
            raise ValueError(msg)
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            msg = f"TrainConfig needs epochs >= 1, batch_size >= 1, learning_rate > 0, got {self}"
            raise ValueError(msg)

    @classmethod
    def cathode(cls, **kw: Any) -> TrainConfig:
        """CATHODE: Adam 1e-4, batch 2048, up to 200 epochs, patience 20."""
        return cls(**{"epochs": 200, "batch_size": 2048, "learning_rate": 1e-4, "patience": 20, **kw})

    @classmethod
    def hisigma(cls, **kw: Any) -> TrainConfig:
        """HI-SIGMA: Adam 1e-3, batch 256, 100 epochs, patience 10."""
        return cls(**{"epochs": 100, "batch_size": 256, "learning_rate": 1e-3, "patience": 10, **kw})


@dataclass
class TrainingHistory:
    """Per-epoch losses (mean negative log-likelihood per event, in the preprocessed space
    plus the box Jacobian, i.e. ``-mean log p(x | c)``) and how training ended; ``seconds`` is
    the whole training, ``epoch_seconds`` the wall time of each epoch (the first one includes
    compiling the training step). ``objective``: ``"likelihood"`` (the flow's own likelihood) or
    ``"mixture"`` (the flow inside a mixture with fixed densities: an R-ANODE signal flow, or a
    background flow trained with the signal in the sidebands modelled); the losses are then
    the mixture's."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped: str = "not trained"
    n_train: int = 0
    n_val: int = 0
    seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    objective: str = "likelihood"

    @property
    def best_val_loss(self) -> float:
        """Validation loss of the kept weights (``nan`` before training)."""
        return self.val_loss[self.best_epoch] if self.best_epoch >= 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingHistory:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class _Networks:
    """The trainable pieces of one flow in one dtype: one MADE (and BN layer) per block."""

    def __init__(self, cfg: FlowConfig, n_features: int, n_context: int, dtype: tf.DType, seed: int):
        # MADE's inner Dense layers take the global dtype: set it for this build, one build at a
        # time (TensorFlow evaluates zfit's PDFs in parallel threads, which may build networks)
        with _FLOATX_LOCK:
            floatx = tf_keras.backend.floatx()
            tf_keras.backend.set_floatx(dtype.name)
            try:
                with tf.init_scope():
                    self._build(cfg, n_features, n_context, dtype, seed)
            finally:
                tf_keras.backend.set_floatx(floatx)

    def _build(self, cfg: FlowConfig, n_features: int, n_context: int, dtype: tf.DType, seed: int) -> None:
        n_params = 2 if cfg.transform == "affine" else 3 * cfg.n_bins - 1
        self.mades = [
            tfb.AutoregressiveNetwork(
                params=n_params,
                event_shape=[n_features],
                conditional=n_context > 0,
                conditional_event_shape=[n_context] if n_context else None,
                hidden_units=list(cfg.hidden_units),
                activation=cfg.activation,
                kernel_initializer=_kernel_initializer(cfg.layout, seed + 7919 * k),
                conditional_input_layers="first_layer" if cfg.layout >= 3 else "all_layers",
                dtype=dtype,
                name=f"made{k}",
            )
            for k in range(cfg.n_layers)
        ]
        self.bns = (
            # gamma >= 1e-3: the bijector's log-det is sum(log gamma) (NaN for gamma <= 0)
            [tf_keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, dtype=dtype, name=f"bn{k}", gamma_constraint=_positive)
             for k in range(cfg.n_layers)]
            if cfg.batch_norm
            else []
        )
        # build the weights now so they can be read and set
        x = tf.zeros([1, n_features], dtype)
        c = tf.zeros([1, n_context], dtype) if n_context else None
        for k, made in enumerate(self.mades):
            made(x, conditional_input=c) if n_context else made(x)
            if cfg.layout >= 3:
                _as_nflows_made(made, seed + 7919 * k, cfg.layout)
            else:
                _shrink_output_layer(made)
        for bn in self.bns:
            bn(x, training=False)

    @property
    def layers(self) -> list:
        return [*self.mades, *self.bns]

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        return [v for layer in self.layers for v in layer.trainable_variables]

    def get_weights(self) -> list[np.ndarray]:
        # copies: on CPU the arrays Keras returns can share memory with the variables, so a
        # "snapshot" of the best weights would otherwise follow every later update
        return [np.array(w, copy=True) for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        i = 0
        for layer in self.layers:
            n = len(layer.get_weights())
            layer.set_weights([np.asarray(w, dtype=layer.dtype) for w in weights[i : i + n]])
            i += n
        if i != len(weights):
            msg = f"expected {i} weight arrays, got {len(weights)}"
            raise ValueError(msg)
        # TFP's MADE keeps its autoregressive masks only as the kernels' initializer and
        # constraint (applied by the optimizer after each step), not in the forward pass: weights
        # set from outside (loaded, edited, perturbed) must be masked here, or the Jacobian is not
        # triangular and log p is not a density
        for made in self.mades:
            for layer in made._network.layers:
                constraint = getattr(layer, "kernel_constraint", None)
                if constraint is not None:
                    layer.kernel.assign(constraint(layer.kernel))


def _positive(gamma: tf.Tensor) -> tf.Tensor:
    return tf.maximum(gamma, tf.constant(1e-3, gamma.dtype))


def _kernel_initializer(layout: int, seed: int):
    """Layouts 1 and 2: Glorot. Layouts 3 and 4: PyTorch's default for ``nn.Linear``, which nflows
    keeps, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (a variance scale of 1/3)."""
    if layout >= 3:
        return tf_keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform", seed=seed)
    return tf_keras.initializers.GlorotUniform(seed=seed)


def _as_nflows_made(made, seed: int, layout: int) -> None:
    """Make a built TFP MADE (context at the first layer, PyTorch-scaled kernels) nflows' MADE.

    Both layouts: PyTorch's default biases, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (TFP starts them
    at zero), and no shrunken output layer, as nflows starts. Layout 4: the context layer gets
    its own bias and activation, ``relu(Wc c + bc)``, added before the first activation, as
    nflows 0.14's ``MADE.forward`` computes. Layout 3 instead made the first hidden layer linear
    and the context layer bias-free, a mis-reading of that code kept for its saved flows.
    Started like layout 1 (zero biases, Glorot kernels, output weights x 0.01), the CATHODE
    setting ends 15 epochs at -3.405 where nflows reaches -3.439, and nflows started that way
    follows the same slower curve (``benchmarks/training.py --layout 2 --nflows-init tfp``)."""
    layers = made._network.layers
    if layout == 3:
        first = next(la for la in layers if isinstance(la, tf_keras.layers.Activation))
        first.activation = tf_keras.activations.linear
    elif made._conditional:
        # the Dense fed by the conditional input (TFP builds it without bias or activation)
        cond_name = made._network.inputs[1].name
        ctx = next(la for la in layers if isinstance(la, tf_keras.layers.Dense) and la.input.name == cond_name)
        ctx.bias = ctx.add_weight(name="bias", shape=(ctx.units,), initializer="zeros", dtype=ctx.dtype, trainable=True)
        ctx.use_bias = True
        ctx.activation = tf_keras.activations.get(made._activation)
    rng = np.random.default_rng(seed)
    for layer in layers:
        if isinstance(layer, tf_keras.layers.Dense) and layer.use_bias:
            bound = 1.0 / math.sqrt(layer.kernel.shape[0])
            layer.bias.assign(rng.uniform(-bound, bound, layer.bias.shape).astype(layer.bias.dtype.as_numpy_dtype))


def _shrink_output_layer(made) -> None:
    """Start every block near the identity: the MADE's output layers (those after its last
    activation) get ``_OUTPUT_INIT_SCALE`` times their Glorot weights. With plain Glorot outputs
    each block's shift is of the order of its input, so an untrained stack of 15 blocks (CATHODE)
    maps sideband events to |z| ~ 1e16 and the first minibatch's loss is NaN."""
    layers = made._network.layers
    last_act = max(i for i, layer in enumerate(layers) if isinstance(layer, tf_keras.layers.Activation))
    for layer in layers[last_act + 1 :]:
        if layer.weights:
            layer.set_weights([w * _OUTPUT_INIT_SCALE for w in layer.get_weights()])


class _Sigmoid(tfb.Sigmoid):
    """``tfb.Sigmoid`` with its log-Jacobian written with ``tf.nn.softplus``.

    TFP's uses a softplus with a ``tf.custom_gradient``; in a traced function TensorFlow registers
    each such gradient in a global registry that is never emptied, and the registered closure
    holds the graph: every traced likelihood or training step stayed in memory (see
    :func:`_forget_traced_bijector_calls`). Same value; TFP's version only guards the gradient
    of softplus far in the negative tail, where ``tf.nn.softplus``'s gradient, sigmoid(x), is
    accurate too (the bijector property tests check the Jacobians against finite differences).
    """

    def _forward_log_det_jacobian(self, x):
        return -tf.nn.softplus(-x) - tf.nn.softplus(x)


def _forget_traced_bijector_calls() -> None:
    """Empty TFP's bijector cache after a call made while tracing a ``tf.function``.

    TFP remembers every bijector call in one dictionary shared by all bijectors
    (``tfb.Bijector._cache``), holding the input strongly and the output weakly. Inside a trace
    both are symbolic tensors of the same graph, so the output never dies and every traced graph
    that ever evaluated a flow (each training step function, each zfit likelihood) stayed in
    memory for the life of the process (with the two ``tf.custom_gradient`` holders, see
    :class:`_Sigmoid`: 59 MB per training of a 4-block flow, 6.5 MB after;
    ``benchmarks/memory_growth.py``). The cache
    only saves work *within* one call (the Jacobian reusing the inverse's intermediate values),
    so it is cleared after the call, and only while tracing: eager entries expire by themselves.
    """
    if not tf.executing_eagerly():
        forget_bijector_calls()


def _affine_fn(made, layout: int):
    """TFP's MAF calls ``fn(x)`` with data-side values and wants the bijector from the base side
    to the data side."""

    def fn(x, **kwargs):
        out = tf.cast(made(x, **kwargs), x.dtype)  # a mixed-precision MADE's float16 output: the transform in float32
        shift, raw = tf.unstack(out, axis=-1)
        eps = tf.constant(1e-3, out.dtype)
        if layout >= 2:  # nflows 0.14: z = x * scale + shift, i.e. x = (z - shift) / scale
            return tfb.Invert(tfb.Chain([tfb.Shift(shift), tfb.Scale(tf.math.softplus(raw) + eps)]))
        return tfb.Chain([tfb.Shift(shift), tfb.Scale(tf.sigmoid(raw + 2.0) + eps)])

    return fn


def _rqs_fn(made, n_bins: int, bound: float):
    def fn(x, **kwargs):
        out = tf.cast(made(x, **kwargs), x.dtype)  # a mixed-precision MADE's float16 output: the spline in float32
        dt = out.dtype
        w, h, s = tf.split(out, [n_bins, n_bins, n_bins - 1], axis=-1)
        min_size = tf.constant(1e-3, dt)
        span = tf.constant(2 * bound, dt)

        def sizes(raw):
            return tf.math.softmax(raw, axis=-1) * (span - n_bins * min_size) + min_size

        slopes = tf.math.softplus(s) + min_size
        return tfb.RationalQuadraticSpline(sizes(w), sizes(h), slopes, range_min=-bound)

    return fn


class Flow:
    """A conditional density estimator p(x | c) on a box, from TFP bijectors.

    Args:
        features: Feature names, in column order of ``x``.
        bounds: ``{feature: (low, high)}``; the flow is normalized on this box.
        context: Names of the conditioning variables (e.g. ``("mjj",)``); empty for an
            unconditional flow p(x).
        config: The architecture.
        seed: Weight-initialisation seed (training overrides it with ``TrainConfig.seed``).

    Shapes: ``x`` is ``(n_events, n_features)``, ``context`` is ``(n_events, n_context)``
    (or ``(n_context,)``, broadcast to every event); densities are per event, ``(n_events,)``.
    """

    def __init__(
        self,
        features: Sequence[str],
        bounds: Mapping[str, tuple[float, float]],
        context: Sequence[str] = (),
        config: FlowConfig | None = None,
        *,
        seed: int = 0,
    ):
        self.features = tuple(features)
        self.context = tuple(context)
        missing = [f for f in self.features if f not in bounds]
        if missing:
            msg = f"no bounds for feature(s) {missing}; bounds given for {list(bounds)}"
            raise ValueError(msg)
        lo = np.array([float(bounds[f][0]) for f in self.features])
        hi = np.array([float(bounds[f][1]) for f in self.features])
        if not np.all(np.isfinite(lo) & np.isfinite(hi) & (hi > lo)):
            msg = f"bounds must be finite with low < high: {dict(bounds)}"
            raise ValueError(msg)
        self.low, self.high = lo, hi
        self.config = config or FlowConfig()
        self.history = TrainingHistory()
        # standardisation of logit(x) and of the context, set from the training data
        self.x_mean = np.zeros(self.n_features)
        self.x_std = np.ones(self.n_features)
        self.c_mean = np.zeros(self.n_context)
        self.c_std = np.ones(self.n_context)
        self._seed = seed
        self._nets32 = _Networks(self.config, self.n_features, self.n_context, tf.float32, seed)
        self._nets64: _Networks | None = None
        self._dists: dict[tuple, tfd.Distribution] = {}
        self._log_prob_fn = None
        self._sample_fn = None
        self._version = 0  # counts changes of weights or standardisation (what an evaluator holds)
        self._reset_graph_cache()

    # ---- shape ---------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_context(self) -> int:
        return len(self.context)

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """``{feature: (low, high)}``: the box the density is normalized on."""
        return {f: (float(a), float(b)) for f, a, b in zip(self.features, self.low, self.high, strict=True)}

    @property
    def is_trained(self) -> bool:
        return self.history.best_epoch >= 0

    # ---- the bijector chain -----------------------------------------------------------------
    def _stat(self, name: str, dtype: tf.DType) -> tf.Tensor:
        """The box and standardisation numbers the graph uses (``low``, ``high``, ``width`` =
        high - low, ``x_mean``, ``x_std``, ``c_mean``, ``c_std``), as constants of ``dtype``
        (the trainer's reusable step reads them from variables instead)."""
        return tf.constant(self.high - self.low if name == "width" else getattr(self, name), dtype)

    def _preprocessing(self, dtype: tf.DType) -> tfb.Bijector:
        """R^n -> box: ``x = a + (b - a) * sigmoid(mean + std * z)`` (the inverse is the logit map)."""
        return tfb.Chain(
            [
                tfb.Shift(self._stat("low", dtype)),
                tfb.Scale(self._stat("width", dtype)),
                _Sigmoid(),
                tfb.Shift(self._stat("x_mean", dtype)),
                tfb.Scale(self._stat("x_std", dtype)),
            ],
            name="box",
        )

    def _networks(self, dtype: tf.DType) -> _Networks:
        return self._nets32 if dtype == tf.float32 else self._nets64

    def _distribution(self, dtype: tf.DType, training: bool) -> tfd.Distribution:
        key = (dtype, training)
        if key not in self._dists:
            with tf.init_scope():  # build eagerly: the cached objects must outlive any trace
                self._dists[key] = self._build_distribution(dtype, training)
        return self._dists[key]

    def _build_distribution(self, dtype: tf.DType, training: bool) -> tfd.Distribution:
        if True:
            nets = self._networks(dtype)
            cfg = self.config
            blocks = []
            perm = list(reversed(range(self.n_features)))
            for k, made in enumerate(nets.mades):
                fn = (
                    _affine_fn(made, cfg.layout)
                    if cfg.transform == "affine"
                    else _rqs_fn(made, cfg.n_bins, cfg.tail_bound)
                )
                blocks.append(tfb.MaskedAutoregressiveFlow(bijector_fn=fn, unroll_loop=True, name=f"maf{k}"))
                if cfg.batch_norm:
                    blocks.append(tfb.BatchNormalization(nets.bns[k], training=training, name=f"bn{k}"))
                if k < cfg.n_layers - 1 and self.n_features > 1:
                    blocks.append(tfb.Permute(perm, name=f"perm{k}"))
            # blocks are listed from the data side to the base (the order of log_prob); layout 1
            # had them the other way round, i.e. batch norm before each block on the way to the base
            chain = tfb.Chain([self._preprocessing(dtype), *(blocks if cfg.layout >= 2 else reversed(blocks))])
            base = tfd.Sample(tfd.Normal(tf.constant(0.0, dtype), tf.constant(1.0, dtype)), [self.n_features])
            return tfd.TransformedDistribution(base, chain)

    def _reset_graph_cache(self) -> None:
        """After weights or preprocessing changed: copy the weights into the float64 twin (built
        eagerly here, never inside a traced function) and forget compiled functions."""
        self._dists.clear()
        self._log_prob_fn = None
        self._sample_fn = None
        self._version += 1
        if self._nets64 is None:
            self._nets64 = _Networks(self.config, self.n_features, self.n_context, tf.float64, self._seed)
        self._nets64.set_weights(self._nets32.get_weights())

    def _condition(self, c: tf.Tensor | None) -> dict:
        if not self.n_context:
            return {}
        dt = c.dtype
        cs = (c - self._stat("c_mean", dt)) / self._stat("c_std", dt)
        return {f"maf{k}": {"conditional_input": cs} for k in range(self.config.n_layers)}

    # ---- TF-level API (graph-safe, used by the zfit PDFs and the trainer) --------------------
    def log_prob_tensor(
        self, x: tf.Tensor, context: tf.Tensor | None = None, *, dtype: tf.DType = tf.float64, training: bool = False
    ) -> tf.Tensor:
        """log p(x | c) as a tensor, shape ``(n,)``; ``x`` is ``(n, n_features)`` in ``dtype``."""
        dist = self._distribution(dtype, training)
        lo, hi = self._stat("low", dtype), self._stat("high", dtype)
        eps = _EPS[dtype] * (hi - lo)
        x = tf.clip_by_value(x, lo + eps, hi - eps)  # an event on the box edge has a finite density
        # log N(z) + ILDJ, not dist.log_prob: TFP's log_prob takes the Jacobian from the forward
        # log-det at z, which for batch norm uses the *moving* variance even in training, while
        # the normalization uses the batch's; that mismatch made the training objective improper
        # (train loss falling below the true density's, validation loss diverging)
        kw = self._condition(context)
        try:
            z = dist.bijector.inverse(x, **kw)
            return dist.distribution.log_prob(z) + dist.bijector.inverse_log_det_jacobian(x, event_ndims=1, **kw)
        finally:
            _forget_traced_bijector_calls()

    def sample_tensor(self, n: int | tf.Tensor, context: tf.Tensor | None = None, *, seed=None) -> tf.Tensor:
        """``n`` float64 samples as a tensor; ``context`` is ``(n, n_context)`` if conditional."""
        dist = self._distribution(tf.float64, False)
        try:
            return dist.sample(n, seed=seed, bijector_kwargs=self._condition(context))
        finally:
            _forget_traced_bijector_calls()

    # ---- numpy API --------------------------------------------------------------------------
    def _check_x(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            msg = f"x must have shape (n_events, {self.n_features}) for features {list(self.features)}, got {x.shape}"
            raise ValueError(msg)
        if not np.all(np.isfinite(x)):
            msg = "x contains NaN or inf"
            raise ValueError(msg)
        out = (x < self.low) | (x > self.high)
        if out.any():
            col = int(np.argmax(out.any(axis=0)))
            msg = (
                f"{int(out.any(axis=1).sum())} events lie outside the flow's box, e.g. feature "
                f"{self.features[col]!r} outside [{self.low[col]:g}, {self.high[col]:g}]"
            )
            raise ValueError(msg)
        return x

    def _check_context(self, context: np.ndarray | None, n: int) -> np.ndarray | None:
        if not self.n_context:
            if context is not None and np.size(context):
                msg = "this flow is unconditional; do not pass a context"
                raise ValueError(msg)
            return None
        if context is None:
            msg = f"this flow is conditional on {list(self.context)}; pass `context`"
            raise ValueError(msg)
        c = np.asarray(context, dtype=np.float64)
        if c.ndim == 1 and c.shape[0] == self.n_context and n != self.n_context:
            c = np.broadcast_to(c, (n, self.n_context))
        elif c.ndim == 1 and self.n_context == 1:
            c = c[:, None]
        if c.shape != (n, self.n_context):
            msg = f"context must have shape ({n}, {self.n_context}) for {list(self.context)}, got {c.shape}"
            raise ValueError(msg)
        if not np.all(np.isfinite(c)):
            msg = "context contains NaN or inf"
            raise ValueError(msg)
        return c

    #: XLA-compile the float64 evaluation (about 5x faster on CPU than plain tf.function)
    eval_jit: bool = True

    def log_prob(self, x: np.ndarray, context: np.ndarray | None = None, *, batch_size: int = 16384) -> np.ndarray:
        """log p(x | c) in float64, shape ``(n_events,)``; evaluated in fixed-size batches, so
        memory stays bounded (10^7 events need only the output array) and one compiled program
        serves every batch (the last one is padded; smaller sets are padded to a power of two).

        Args:
            x: Features, ``(n_events, n_features)``, inside the box.
            context: Conditioning values, ``(n_events, n_context)`` or ``(n_context,)``.
            batch_size: Events per batch.
        """
        x = self._check_x(x)
        c = self._check_context(context, len(x))
        n = len(x)
        # the compiled shape: a full batch, or for fewer events the next power of two (at least
        # 1024), so that data sets of every size share a few programs (an XLA compilation costs
        # about 1 s per flow; toys, Asimov samples and scans each have a different size)
        bs = batch_size if n >= batch_size else min(batch_size, max(1024, 1 << max(n - 1, 0).bit_length()))
        out = np.empty(n)
        pad_x = 0.5 * (self.low + self.high)
        pad_c = self.c_mean
        with self._evaluators() as (log_prob_fn, _):
            for i in range(0, n, bs):
                xb = x[i : i + bs]
                cb = c[i : i + bs] if c is not None else None
                k = len(xb)
                if k < bs:  # pad to the compiled shape with a harmless point inside the box
                    xb = np.concatenate([xb, np.broadcast_to(pad_x, (bs - k, self.n_features))])
                    if cb is not None:
                        cb = np.concatenate([cb, np.broadcast_to(pad_c, (bs - k, self.n_context))])
                res = log_prob_fn(tf.constant(xb), None if cb is None else tf.constant(cb))
                out[i : i + k] = res.numpy()[:k]
        return out

    def prob(self, x: np.ndarray, context: np.ndarray | None = None, **kw: Any) -> np.ndarray:
        """p(x | c), shape ``(n_events,)``."""
        return np.exp(self.log_prob(x, context, **kw))

    def sample(
        self, n: int, context: np.ndarray | None = None, *, seed: int | None = None, batch_size: int = 131072
    ) -> np.ndarray:
        """``n`` samples ``(n, n_features)``, inside the box, in batches.

        Args:
            n: Number of events.
            context: ``(n, n_context)`` (one value per event) or ``(n_context,)``.
            seed: Reproducible sampling when given.
        """
        c = self._check_context(context, n)
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.n_features))
        with self._evaluators() as (_, sample_fn):
            for i in range(0, n, batch_size):
                k = min(batch_size, n - i)
                cb = tf.constant(c[i : i + k]) if c is not None else None
                s = tf.constant(rng.integers(0, 2**31 - 1, size=2), tf.int32)
                out[i : i + k] = sample_fn(tf.constant(k), cb, s).numpy()
        return np.clip(out, self.low, self.high)

    @contextlib.contextmanager
    def _evaluators(self) -> Iterator[tuple[Any, Any]]:
        """The traced float64 ``log p`` (XLA-compiled with :attr:`eval_jit`) and sampler for this
        flow, for the duration of a ``with`` block: shared by every flow of the same
        architecture (:class:`_Evaluator`, loaded with this flow's numbers and locked meanwhile:
        TensorFlow may call it from parallel threads); a subclass of :class:`Flow` traces its own."""
        if type(self) is not Flow:
            if self._log_prob_fn is None:
                self._log_prob_fn = tf.function(lambda xb, cb: self.log_prob_tensor(xb, cb), jit_compile=self.eval_jit)
                self._sample_fn = tf.function(lambda k, cb, s: self.sample_tensor(k, cb, seed=s), reduce_retracing=True)
            yield self._log_prob_fn, self._sample_fn
            return
        key = (self.config, self.n_features, self.n_context, bool(self.eval_jit))
        with _EVALUATORS_LOCK:
            ev = _EVALUATORS.pop(key, None) or _Evaluator(self)
            _EVALUATORS[key] = ev
            while len(_EVALUATORS) > _MAX_EVALUATORS:
                _EVALUATORS.popitem(last=False)
        with ev.lock:
            ev.flow.take(self)
            yield ev.log_prob, ev.sample

    # ---- training ---------------------------------------------------------------------------
    def adapt(self, x: np.ndarray, context: np.ndarray | None = None) -> None:
        """Set the standardisation of logit(x) and of the context from training data."""
        x = self._check_x(x)
        u = np.clip((x - self.low) / (self.high - self.low), 1e-6, 1 - 1e-6)
        z = np.log(u) - np.log1p(-u)
        self.x_mean, self.x_std = z.mean(axis=0), np.maximum(z.std(axis=0), 1e-6)
        if self.n_context:
            c = self._check_context(context, len(x))
            self.c_mean, self.c_std = c.mean(axis=0), np.maximum(c.std(axis=0), 1e-12)
        self._reset_graph_cache()

    def fit(
        self,
        x: np.ndarray,
        context: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        train: TrainConfig | None = None,
        *,
        mixture: tuple[float | np.ndarray, np.ndarray, np.ndarray] | None = None,
        validation: np.ndarray | None = None,
        **overrides: Any,
    ) -> TrainingHistory:
        """Train by maximum likelihood; returns (and keeps) the :class:`TrainingHistory`.

        Ctrl-C stops training, keeps the best weights so far and re-raises.
        Keyword overrides update ``train`` (e.g. ``fit(x, c, epochs=5)``). ``mixture``: train
        inside a mixture with fixed per-event densities; ``validation``: a boolean mask of the
        validation events instead of a random split (both: see
        :func:`zfit_gbi.generators.training.train_flow`).
        """
        from .training import train_flow

        cfg = replace(train or TrainConfig(), **overrides)
        return train_flow(self, x, context, weights, cfg, mixture=mixture, validation=validation)

    # ---- weights -----------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """All network weights (float32 training copy), in a fixed order."""
        return self._nets32.get_weights()

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Set the network weights (as returned by :meth:`get_weights`)."""
        self._nets32.set_weights(weights)
        self._reset_graph_cache()

    @property
    def n_parameters(self) -> int:
        """Number of trainable network parameters."""
        return int(sum(np.prod(v.shape) for v in self._nets32.trainable_variables))

    def __repr__(self) -> str:
        cfg = self.config
        arch = f"MAF-{cfg.transform}" + (f"({cfg.n_bins} bins, tail {cfg.tail_bound:g})" if cfg.transform == "rqs" else "")
        arch += f", {cfg.n_layers} blocks x {list(cfg.hidden_units)}" + (", batch norm" if cfg.batch_norm else "")
        arch += f", layout {cfg.layout}" if cfg.layout != 1 else ""
        box = ", ".join(f"{f} in [{a:g}, {b:g}]" for f, (a, b) in self.bounds.items())
        cond = f" | {', '.join(self.context)}" if self.context else ""
        h = self.history
        trained = (
            f"trained on {h.n_train} events ({h.n_val} validation), best val loss {h.best_val_loss:.4f} "
            f"at epoch {h.best_epoch + 1}/{len(h.val_loss)} ({h.stopped})"
            if self.is_trained
            else "untrained"
        )
        return f"Flow(p({', '.join(self.features)}{cond}); {arch}; {self.n_parameters} parameters; box: {box}; {trained})"


class _VariableFlow(Flow):
    """A stand-in for every flow of one architecture: its box and standardisation numbers are
    variables of ``dtype`` (:meth:`Flow._stat`) and its networks of that dtype take the weights
    of the flow it stands in for (:meth:`take`), so one traced function serves them all."""

    def __init__(self, like: Flow, dtype: tf.DType) -> None:
        super().__init__(like.features, like.bounds, like.context, like.config, seed=like._seed)
        self._var_dtype = dtype
        with tf.init_scope():
            self._vars = {k: tf.Variable(self._value(like, k), dtype=dtype, trainable=False, name=k)
                          for k in ("low", "high", "width", "x_mean", "x_std", "c_mean", "c_std")}
        self._holds: tuple | None = None

    @staticmethod
    def _value(flow: Flow, name: str) -> np.ndarray:
        return np.asarray(flow.high - flow.low if name == "width" else getattr(flow, name), np.float64)

    def _stat(self, name: str, dtype: tf.DType) -> tf.Tensor:
        return self._vars[name] if dtype == self._var_dtype else super()._stat(name, dtype)

    def take(self, flow: Flow, *, force: bool = False) -> None:
        """Hold ``flow``'s box, standardisation and weights (of this dtype); a no-op when it
        already holds them (the same flow, unchanged since), unless ``force``."""
        key = (weakref.ref(flow), flow._version)
        if not force and self._holds == key:
            return
        for k, v in self._vars.items():
            v.assign(self._value(flow, k).astype(self._var_dtype.as_numpy_dtype))
        mine, theirs = (self._nets32, flow._nets32) if self._var_dtype == tf.float32 else (self._nets64, flow._nets64)
        mine.set_weights(theirs.get_weights())
        self._holds = key


class _Evaluator:
    """One traced (XLA-compiled) float64 ``log p(x | c)`` and sampler per architecture:
    tracing and compiling them costs seconds per flow (5 s for a 5-block spline flow on 2 cores,
    ``benchmarks/memory_growth.py --flow rqs``)
    and TensorFlow never frees a compiled program, while an ensemble, the rounds of a run and an
    R-ANODE scan evaluate many flows of one architecture. ``lock`` is held while a flow's numbers
    are loaded and used."""

    def __init__(self, like: Flow) -> None:
        self.lock = threading.RLock()
        self.flow = flow = _VariableFlow(like, tf.float64)
        self.log_prob = tf.function(lambda xb, cb: flow.log_prob_tensor(xb, cb), jit_compile=like.eval_jit)
        self.sample = tf.function(lambda k, cb, s: flow.sample_tensor(k, cb, seed=s), reduce_retracing=True)


_EVALUATORS: collections.OrderedDict = collections.OrderedDict()
_EVALUATORS_LOCK = threading.Lock()
_MAX_EVALUATORS = 8

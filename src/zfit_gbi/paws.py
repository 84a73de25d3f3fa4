"""PAWS-style signal: a classifier parametrized in the signal model's parameters.

A classifier f(x, m, theta) is trained on signal simulation at parameter points theta (class 1)
against the sideband generator's background at the same masses (class 0, each event given the
theta of a random simulated event; the classes weighted equally). Its odds are the density
ratio r = f / (1 - f) = p_S(x | m, theta) / p_B(x | m) (PAWS's kappa = 1 for balanced classes),
smooth in theta, so together with the generator it is a signal density for any theta in the
simulated range:

    p_S(x | m, theta) = p_B(x | m) r(x, m, theta) / Z(theta),
    Z(theta) = E[r] over the generator's own events at the simulation's signal-region masses.

(Z corrects the classifier's calibration on average; for a perfect classifier Z = 1.) In the
signal region the data's density is then p_B(m, x) [1 + w (p_S(m) r / (p_B(m) Z) - 1)]:
PAWS's ``1 + mu (kappa f / (1 - f) - 1)`` with the mass handle of the resonant search on top.
The ratio enters the zfit model as a :class:`~zfit_gbi.nuisances.Variation` of the background
generator whose parameters are the signal model's (free, within the simulated range, no
constraint): :class:`ClassifierRatio`. The fit gives the signal yield *and* the signal's
parameters; discovery and limits are quoted at the fitted parameters (local significance: the
parameters are undefined without signal, so the asymptotic q0 with them free is not chi2).

Where the simulation has one parameter point (the shared LHCO signal: one m_X, m_Y, m_Z), the
classifier has no theta input: the mode is HI-SIGMA with a classifier-ratio signal density
instead of a signal flow, and it can estimate no signal parameter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zfit

from ._atomic import write_json_atomic
from ._tf import tf
from .classifier import ClassifierConfig, _matrix, train_dense
from .data import DataError
from .generators import Flow, FlowEnsemble
from .nuisances import _CLIP, Variation

__all__ = ["ClassifierRatio", "ParametrizedClassifier", "train_parametrized_classifier"]

FORMAT_VERSION = 1


@dataclass
class ParametrizedClassifier:
    """log r(x, m, theta) = logit f: a dense ReLU network on standardized ``(x, m, theta)``.

    Trained with Keras (float32); evaluated by :meth:`log_ratio_tensor` as a float64 TensorFlow
    expression differentiable in theta (what the minimizer needs), and saved as arrays (no code).

    Attributes:
        features: Feature names, in input order.
        resonant: Name of the resonant variable (an input: the ratio may depend on m).
        parameters: Names of the signal-model parameters (may be empty).
        ranges: ``{parameter: (low, high)}`` simulated range of each.
        config: The training settings.
    """

    features: tuple[str, ...]
    resonant: str
    parameters: tuple[str, ...] = ()
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    config: ClassifierConfig = field(default_factory=ClassifierConfig)
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    weights: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)

    def _inputs(self, x: np.ndarray, m: np.ndarray, theta: np.ndarray | None) -> np.ndarray:
        x = _matrix(x, "x")
        m = np.asarray(m, dtype=float).reshape(-1, 1)
        if x.shape[1] != len(self.features) or len(m) != len(x):
            msg = f"expected x of shape (n, {len(self.features)}) and m of shape (n,), got {x.shape} and {m.shape[:1]}"
            raise DataError(msg)
        cols = [x, m]
        if self.parameters:
            t = np.asarray(theta, dtype=float).reshape(-1, len(self.parameters))
            cols.append(np.broadcast_to(t, (len(x), len(self.parameters))) if len(t) == 1 else t)
        return np.concatenate(cols, axis=1)

    def fit(self, x1: np.ndarray, m1: np.ndarray, theta1: np.ndarray | None, x0: np.ndarray, m0: np.ndarray,
            theta0: np.ndarray | None, *, progress: bool = False) -> ParametrizedClassifier:
        """Train class 1 (signal simulation) against class 0 (generated background), the
        classes weighted to equal total weight; early stopping on a held-out fraction."""
        a1, a0 = self._inputs(x1, m1, theta1), self._inputs(x0, m0, theta0)
        net, self.mean, self.scale, self.history = train_dense(a1, a0, self.config, progress="PAWS classifier" if progress else None)
        self.weights = [(np.asarray(d.kernel.numpy(), np.float64), np.asarray(d.bias.numpy(), np.float64)) for d in net.layers]
        return self

    def _check_trained(self) -> None:
        if not self.weights:
            msg = "the classifier is not trained; call fit or load"
            raise RuntimeError(msg)

    def log_ratio_tensor(self, x: tf.Tensor, m: tf.Tensor, theta: Sequence[Any] = ()) -> tf.Tensor:
        """log r per event (float64, shape ``(n,)``) for tensors ``x`` ``(n, n_features)`` and
        ``m`` ``(n,)``; ``theta`` one scalar (tensor or zfit parameter) per parameter."""
        x = tf.cast(x, tf.float64)
        cols = [x, tf.reshape(tf.cast(m, tf.float64), [-1, 1])]
        if self.parameters:
            t = tf.stack([tf.cast(v, tf.float64) for v in theta])
            cols.append(tf.broadcast_to(t[None, :], [tf.shape(x)[0], len(self.parameters)]))
        return self._forward(tf.concat(cols, axis=1))

    def log_ratio(self, x: np.ndarray, m: np.ndarray, theta: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
        """log r per event, shape ``(n,)``; ``theta`` one value per parameter (all events) or
        ``(n, n_parameters)``."""
        return self._forward(tf.constant(self._inputs(x, m, theta), tf.float64)).numpy()

    def _forward(self, inputs: tf.Tensor) -> tf.Tensor:
        """The network on raw inputs ``(n, n_features + 1 + n_parameters)``: log r, ``(n,)``."""
        self._check_trained()
        h = (inputs - self.mean) / self.scale
        for i, (k, b) in enumerate(self.weights):
            h = tf.matmul(h, k) + b
            if i < len(self.weights) - 1:
                h = tf.nn.relu(h)
        return tf.clip_by_value(h[:, 0], -_CLIP, _CLIP)

    # ---- persistence: arrays (npz, no pickle) + JSON metadata with a checksum ---------------
    def save(self, folder: str | Path) -> Path:
        """Write ``folder/classifier.json`` and ``folder/weights.npz``."""
        self._check_trained()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"mean": self.mean, "scale": self.scale}
        for i, (k, b) in enumerate(self.weights):
            arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = k, b
        tmp = folder / "weights.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(folder / "weights.npz")
        meta = {
            "format": "zfit-gbi parametrized classifier", "format_version": FORMAT_VERSION,
            "features": list(self.features), "resonant": self.resonant, "parameters": list(self.parameters),
            "ranges": {k: list(v) for k, v in self.ranges.items()}, "n_layers": len(self.weights),
            "config": dict(self.config.__dict__), "history": self.history,
            "sha256": hashlib.sha256((folder / "weights.npz").read_bytes()).hexdigest(),
        }
        write_json_atomic(folder / "classifier.json", meta)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ParametrizedClassifier:
        """Read a classifier written by :meth:`save` (checksum and format version checked)."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "classifier.json").read_text())
            blob = (folder / "weights.npz").read_bytes()
        except (OSError, json.JSONDecodeError) as err:
            msg = f"{folder}: not a saved classifier ({err})"
            raise DataError(msg) from err
        if meta.get("format_version") != FORMAT_VERSION:
            msg = f"{folder}: classifier format version {meta.get('format_version')!r}, this package reads {FORMAT_VERSION}"
            raise DataError(msg)
        if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
            msg = f"{folder}/weights.npz: checksum mismatch (the file was changed or truncated)"
            raise DataError(msg)
        with np.load(folder / "weights.npz", allow_pickle=False) as z:
            weights = [(z[f"kernel_{i}"], z[f"bias_{i}"]) for i in range(int(meta["n_layers"]))]
            mean, scale = z["mean"], z["scale"]
        cfg = meta["config"]
        cfg["hidden"] = tuple(cfg["hidden"])
        return cls(tuple(meta["features"]), meta["resonant"], tuple(meta["parameters"]),
                   {k: (float(v[0]), float(v[1])) for k, v in meta["ranges"].items()}, ClassifierConfig(**cfg),
                   mean, scale, weights, meta.get("history", {}))

    def __repr__(self) -> str:
        theta = ", ".join(f"{p} in [{lo:.4g}, {hi:.4g}]" for p, (lo, hi) in self.ranges.items()) or "no parameters"
        state = f"{len(self.weights) - 1} hidden layers" if self.weights else "untrained"
        return f"ParametrizedClassifier(log r({', '.join(self.features)} | {self.resonant}; {theta}), {state})"


def train_parametrized_classifier(
    x: np.ndarray,
    m: np.ndarray,
    theta: np.ndarray | None,
    background_generator: Flow | FlowEnsemble,
    *,
    parameters: Sequence[str] = (),
    oversample: int = 2,
    config: ClassifierConfig | None = None,
    seed: int = 0,
    progress: bool = False,
) -> ParametrizedClassifier:
    """Train :class:`ParametrizedClassifier` on simulated signal against generated background.

    Args:
        x: Simulated signal features, shape ``(n, n_features)`` (the generator's order).
        m: Their resonant-variable values, shape ``(n,)`` (the signal region's, where the
            ratio is used).
        theta: Their signal-model parameters, shape ``(n, len(parameters))`` (None without).
        background_generator: The sideband-trained p_B(x | m).
        parameters: Names of the parameters.
        oversample: Generated background events per simulated event; each gets the mass and
            the parameters of a random simulated event (so both classes have the same m and
            theta distributions and the odds are the ratio at fixed m and theta).
        config: Network and training settings.
        seed: Seed of the background draw (the network's is ``config.seed``).
    """
    parameters = tuple(parameters)
    x, m = _matrix(x, "signal simulation"), np.asarray(m, dtype=float).ravel()
    if len(m) != len(x) or x.shape[1] != background_generator.n_features:
        msg = f"signal simulation: x {x.shape} and m {m.shape} do not match the generator's {background_generator.n_features} features"
        raise DataError(msg)
    t = None
    ranges: dict[str, tuple[float, float]] = {}
    if parameters:
        t = np.asarray(theta, dtype=float).reshape(len(x), len(parameters))
        for j, name in enumerate(parameters):
            lo, hi = float(t[:, j].min()), float(t[:, j].max())
            if not np.all(np.isfinite(t[:, j])):
                msg = f"signal simulation: parameter column {name!r} holds NaN or inf"
                raise DataError(msg)
            if not hi > lo:
                msg = f"signal simulation: parameter column {name!r} takes the single value {lo:g}; a parametrized classifier needs several points (or no parameters)"
                raise DataError(msg)
            ranges[name] = (lo, hi)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(x), oversample * len(x))
    xb = np.asarray(background_generator.sample(len(pick), m[pick, None], seed=seed + 1))
    clf = ParametrizedClassifier(tuple(background_generator.features), str(background_generator.context[0]), parameters, ranges,
                                 config or ClassifierConfig())
    return clf.fit(x, m, t, xb, m[pick], None if t is None else t[pick], progress=progress)


class ClassifierRatio(Variation):
    """The PAWS signal density as a variation of the background generator (module docstring):
    columns ``[log p_B(x | m), x..., m]``, log-factor log r(x, m, theta), Z(theta) by Monte
    Carlo over the generator's events at the simulation's masses; parameters free within the
    simulated range, no constraint. Build with :meth:`build`."""

    classifier: ParametrizedClassifier
    generator: Flow | FlowEnsemble

    @classmethod
    def build(
        cls,
        classifier: ParametrizedClassifier,
        background_generator: Flow | FlowEnsemble,
        masses: np.ndarray,
        *,
        n_mc: int = 20000,
        seed: int = 0,
        prefix: str = "sig",
        mass_range: tuple[float, float] | None = None,
    ) -> ClassifierRatio:
        """Args: the trained classifier, the background generator, the masses of the
        normalization sample (shape ``(n,)``, e.g. the simulation's in the signal region),
        where the ratio acts (default their span; elsewhere the signal's features follow the
        generator). The parameters start in the middle of their range."""
        from .nuisances import _mass_range, _reference

        if tuple(classifier.features) != tuple(background_generator.features):
            msg = f"the classifier's features {list(classifier.features)} are not the generator's {list(background_generator.features)}"
            raise ValueError(msg)
        params = []
        for name in classifier.parameters:
            lo, hi = classifier.ranges[name]
            params.append(zfit.Parameter(f"{prefix}_{name}", 0.5 * (lo + hi), lo, hi, step_size=0.05 * (hi - lo)))
        self = cls(params=params, constraint=None, mc_columns=np.empty((0, len(classifier.features) + 2)),
                   name=f"{prefix}_paws", mass_range=_mass_range(masses, mass_range))
        self.classifier, self.generator = classifier, background_generator
        x, mm = _reference(background_generator, masses, n_mc, seed)
        self.mc_columns = self.columns(x, mm)
        return self

    def columns(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """``[log p_B(x | m), x..., m]`` (cached per dataset by the signal component)."""
        x, m = np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64).ravel()
        return np.column_stack([self.generator.log_prob(x, m[:, None]), x, m])

    def log_factor(self, cols: tf.Tensor, theta: Sequence[tf.Tensor]) -> tf.Tensor:
        nf = len(self.classifier.features)
        return self.classifier.log_ratio_tensor(cols[:, 1:1 + nf], cols[:, 1 + nf], theta)

    def __repr__(self) -> str:
        return f"ClassifierRatio({self.classifier!r}, params {[p.name for p in self.params]})"

"""The declarative run configuration of ``gbi run CONFIG.yaml``: pydantic models and YAML I/O.

Pure: pydantic, PyYAML and pathlib only (no TensorFlow, no zfit), so a config is checked in
milliseconds before any model is built.

A config is a YAML mapping::

    data:
      path: data.npy               # .npy (2-D array, columns named below), .csv, .parquet, .root
      columns: [mjj, mj1, delta_mj, tau21_j1, tau21_j2]
      tree: events                 # ROOT only
      resonant: mjj
      features: [mj1, delta_mj, tau21_j1, tau21_j2]
      bounds: {mj1: [0.0, 1.0]}    # optional per feature; default: from data with a margin
    windows:
      fit: [3.3, 3.7]
      signal_region: [3.44, 3.56]
    background:
      mass_shape: dijet            # dijet | exppoly2 | exppoly3 | bernstein3 | bernstein4
      generator: {type: maf-rqs, ensemble: 5, epochs: 100, seed: 1}   # or {path: saved_model_dir}
      signal_in_sidebands: auto    # auto | model | ignore: retrain with the fitted signal in the sidebands modelled
    signal:
      model: simulation            # simulation | data-driven (R-ANODE) | parametrized (PAWS-style)
      simulation: {path: sig.npy, columns: [mjj, mj1, delta_mj, tau21_j1, tau21_j2]}
      mass_shape: gauss            # gauss | dscb
      data_driven: {w_range: [0.001, 0.1], n_w: 6, folds: 3, null_toys: 10}   # data-driven only
      parametrized: {parameters: [signal_mj1], classifier: {epochs: 30}}      # parametrized only
      generator: {type: maf-rqs, epochs: 100, seed: 2}
    nuisances:
      generator: eigen             # none | envelope | eigen | updown
    model:
      hisigma_sidebands: false
    binned:                        # the pyhf route (inference.backend: pyhf | both)
      mass_bins: 4
      score_bins: 10
      variation_bins: null         # null: 2 with 1-2 eigen/updown variations, else 1 (no split)
    inference:
      discovery: true
      upper_limit: {cl: 0.95, calculator: asymptotic}   # asymptotic | toys
    plots:
      style: CMS                   # CMS | ATLAS | LHCb
      formats: [png, pdf]
    compute:
      executor: sequential         # processes | processes:N | dask | tcp://scheduler:8786

Rules (each violation is a :class:`ConfigError` naming the key path, e.g.
``background.generator.epochs``, and, for a choice, the allowed values):

* Unknown keys are errors everywhere (``extra="forbid"``); the message suggests the closest
  allowed key.
* Scalars are strict: an integer key takes a YAML integer only (``epochs: 1e2`` or
  ``epochs: "100"`` is an error), a boolean key ``true``/``false`` only; a float key also
  takes an integer. NaN and inf are rejected. ``1e-3`` is read as a float (PyYAML alone reads
  it as a string).
* Relative paths are resolved against the folder of the YAML file (by :func:`load_config`)
  or against the current working directory (a model built in Python); ``~`` is expanded.
  After validation every path is absolute, so a dumped config works from any folder.
* Duplicate keys in one mapping are errors (PyYAML alone keeps the last one silently).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "BACKGROUND_SHAPES",
    "DATA_SUFFIXES",
    "SIGNAL_SHAPES",
    "BackgroundConfig",
    "ComputeConfig",
    "ConfigError",
    "ConfigWarning",
    "DataConfig",
    "DataDrivenConfig",
    "GeneratorConfig",
    "InferenceConfig",
    "ModelConfig",
    "NuisanceConfig",
    "ParametrizedConfig",
    "PlotsConfig",
    "RunConfig",
    "SignalConfig",
    "SignalSimulationConfig",
    "UpperLimitConfig",
    "WindowsConfig",
    "dump_config",
    "load_config",
    "override_config",
    "validate_config",
]

BackgroundShape = Literal["dijet", "exppoly2", "exppoly3", "bernstein3", "bernstein4"]
SignalShape = Literal["gauss", "dscb"]
GeneratorType = Literal["maf-affine", "maf-rqs"]
NuisanceKind = Literal["none", "envelope", "eigen", "updown"]
Calculator = Literal["asymptotic", "toys"]
SignalModel = Literal["simulation", "data-driven", "parametrized"]

BACKGROUND_SHAPES: tuple[str, ...] = typing.get_args(BackgroundShape)
"""Background mass shapes; the same names as :data:`zfit_gbi.shapes.BACKGROUND_SHAPES`."""
SIGNAL_SHAPES: tuple[str, ...] = typing.get_args(SignalShape)
"""Signal mass shapes; the same names as :data:`zfit_gbi.shapes.SIGNAL_SHAPES`."""
DATA_SUFFIXES: tuple[str, ...] = (".npy", ".csv", ".parquet", ".pq", ".root")
"""File extensions :func:`zfit_gbi.data.read_events` reads."""

PosInt = Annotated[StrictInt, Field(ge=1)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
PosFloat = Annotated[StrictFloat, Field(gt=0)]
NonNegNumber = Annotated[StrictFloat | StrictInt, Field(ge=0)]
Name = Annotated[str, Field(min_length=1)]
Pair = tuple[StrictFloat, StrictFloat]
"""``[low, high]``, in the unit of the variable."""


class ConfigError(ValueError):
    """A bad config. The message starts with the file (or ``<config>``) and lists one problem a
    line as ``key.path: message``.

    Attributes:
        source: The file or a description of where the config came from.
        problems: ``[(key_path, message), ...]``, in the order reported.
    """

    def __init__(
        self, source: str | Path, problems: Sequence[tuple[str, str]], header: str = ""
    ) -> None:
        self.source = str(source)
        self.problems = [(str(k), str(m)) for k, m in problems]
        n = len(self.problems)
        head = header or f"invalid config ({n} problem{'s' if n != 1 else ''})"
        lines = [f"{self.source}: {head}"]
        lines += [f"  {k}: {m}" if k else f"  {m}" for k, m in self.problems]
        super().__init__("\n".join(lines))


class ConfigWarning(UserWarning):
    """A config setting that is accepted but has no effect (e.g. ``tree`` for a ``.npy`` file)."""


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _problems(problems: list[tuple[str, str]]) -> None:
    """Raise the cross-field ``problems`` (``(key relative to this model, message)``) if any.

    They travel in the error's context so that :func:`_format_errors` can report each one under
    its own key path (a model validator alone can only name the model).
    """
    if problems:
        summary = "; ".join(f"{k}: {m}" if k else m for k, m in problems)
        raise PydanticCustomError(
            "gbi_config", "{summary}", {"summary": summary, "problems": tuple(problems)}
        )


def _resolve(path: Path, info: ValidationInfo) -> Path:
    """Absolute path: relative ones against ``context["base_dir"]`` (default: the working directory)."""
    path = path.expanduser()
    if path.is_absolute():
        return path
    ctx = info.context if isinstance(info.context, Mapping) else {}
    base = Path(ctx.get("base_dir") or Path.cwd()).expanduser()
    return (base.absolute() / path) if not base.is_absolute() else base / path


def _unique(names: Sequence[str], key: str) -> list[tuple[str, str]]:
    dup = sorted({n for n in names if list(names).count(n) > 1})
    return [(key, f"duplicate name(s) {dup}")] if dup else []


def _fmt(x: float) -> str:
    return f"{x:g}"


def _check_pair(pair: tuple[float, float], key: str, what: str) -> list[tuple[str, str]]:
    lo, hi = pair
    if not lo < hi:
        return [(key, f"{what} [{_fmt(lo)}, {_fmt(hi)}] must have low < high")]
    return []


def _check_columns(
    cols: Sequence[str] | None, path: Path, tree: str | None, section: str
) -> list[tuple[str, str]]:
    """Problems with a file's ``path``/``columns``/``tree`` triple (keys relative to the section).

    ``tree`` for a non-ROOT file is not an error (the reference config writes ``tree: events``
    next to a ``.npy`` path): it is ignored with a :class:`ConfigWarning`.
    """
    out: list[tuple[str, str]] = []
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        allowed = ", ".join(DATA_SUFFIXES)
        out.append(
            (
                "path",
                f"unknown file type {suffix or '(none)'!r} of {path.name!r}; allowed: {allowed}",
            )
        )
    if suffix == ".npy" and cols is None:
        msg = (
            "required for a .npy file (a 2-D array has no column names): one name per array column"
        )
        out.append(("columns", msg))
    if tree is not None and suffix in DATA_SUFFIXES and suffix != ".root":
        msg = f"{section}.tree: only used for .root files; ignored for the {suffix} file {path.name!r}"
        warnings.warn(msg, ConfigWarning, stacklevel=2)
    if cols is not None:
        out += _unique(cols, "columns")
    return out


class _Section(BaseModel):
    """Common settings: unknown keys and NaN/inf are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------


class _EventFileSection(_Section):
    """An event file: ``path`` (resolved relative to the YAML file), ``columns`` and ``tree``
    (see :class:`DataConfig`)."""

    path: Path
    columns: list[Name] | None = None
    tree: Name | None = None

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, v: Path, info: ValidationInfo) -> Path:
        return _resolve(v, info)


class DataConfig(_EventFileSection):
    """The observed events.

    Args:
        path: Event file: ``.npy`` (2-D array, ``columns`` required), ``.csv``, ``.parquet``
            or ``.root``. Relative to the YAML file's folder.
        columns: Names of the file's columns. For ``.npy`` one per array column (required);
            for the other formats the columns to read (default: all numeric ones). Columns
            beyond ``resonant``, ``features`` and ``weight`` (e.g. a truth label) are ignored.
        tree: TTree name, ``.root`` only (default: the only tree in the file). Given for any
            other format it is ignored with a :class:`ConfigWarning`.
        resonant: The resonant variable (e.g. the dijet mass ``mjj``, in the unit of ``windows``).
        features: The auxiliary features the generators model (not ``resonant``).
        bounds: Optional ``{feature: [low, high]}`` of the flows' support, in the feature's
            unit; features not listed get the data range widened by ``bounds_margin``.
        bounds_margin: Fraction of the data range added on each side for default bounds.
        weight: Optional column of per-event weights.
    """

    resonant: Name
    features: list[Name] = Field(min_length=1)
    bounds: dict[str, Pair] = Field(default_factory=dict)
    bounds_margin: Annotated[StrictFloat, Field(ge=0)] = 0.01
    weight: Name | None = None

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        p = _check_columns(self.columns, self.path, self.tree, "data")
        p += _unique(self.features, "features")
        if self.resonant in self.features:
            p.append(("features", f"must not contain the resonant variable {self.resonant!r}"))
        if self.weight is not None and (
            self.weight == self.resonant or self.weight in self.features
        ):
            p.append(("weight", f"{self.weight!r} is the resonant variable or a feature"))
        if self.columns is not None:
            named = {"resonant": [self.resonant], "features": self.features}
            if self.weight is not None:
                named["weight"] = [self.weight]
            for key, names in named.items():
                missing = [n for n in names if n not in self.columns]
                if missing:
                    p.append((key, f"{missing} not in data.columns {self.columns}"))
        for name, pair in self.bounds.items():
            if name not in self.features:
                hint = " (its range is windows.fit)" if name == self.resonant else ""
                p.append((f"bounds.{name}", f"not a feature{hint}; features: {self.features}"))
            p += _check_pair(pair, f"bounds.{name}", "bounds")
        _problems(p)
        return self


class WindowsConfig(_Section):
    """Windows along the resonant variable, ``[low, high]`` in its unit (e.g. TeV).

    Args:
        fit: The fit window.
        signal_region: Strictly inside ``fit``, so both sidebands are non-empty; the background
            generators are trained on the sidebands ``fit`` minus ``signal_region``.
    """

    fit: Pair
    signal_region: Pair

    @model_validator(mode="after")
    def _check(self) -> WindowsConfig:
        p = _check_pair(self.fit, "fit", "window")
        p += _check_pair(self.signal_region, "signal_region", "window")
        if not p:
            (f0, f1), (s0, s1) = self.fit, self.signal_region
            if not (f0 < s0 and s1 < f1):
                msg = (
                    f"[{_fmt(s0)}, {_fmt(s1)}] must lie strictly inside the fit window "
                    f"[{_fmt(f0)}, {_fmt(f1)}] so that both sidebands are non-empty"
                )
                p.append(("signal_region", msg))
        _problems(p)
        return self

    @property
    def sidebands(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``((fit_low, sr_low), (sr_high, fit_high))``."""
        return (self.fit[0], self.signal_region[0]), (self.signal_region[1], self.fit[1])


_TRAINING_KEYS = (
    "type", "ensemble", "epochs", "seed", "layers", "hidden", "bins", "tail_bound", "batch_norm", "layout",
    "batch_size", "learning_rate", "patience", "aggregate", "bootstrap", "jit_compile", "mixed_precision",
)  # fmt: skip
_RQS_ONLY = ("bins", "tail_bound")


class GeneratorConfig(_Section):
    """A conditional generator p(features | resonant): either load a saved one or train one.

    Either ``path`` (a folder written by :func:`zfit_gbi.generators.save`, relative to the YAML
    file's folder) or training settings; giving both is an error. Training settings:

    Args:
        type: ``maf-affine`` (masked autoregressive flow) or ``maf-rqs`` (rational-quadratic
            spline MAF).
        ensemble: Number of flows in the ensemble (>= 2 for the background generator with any
            nuisance treatment but ``none``).
        epochs: Maximum training epochs (early stopping on a validation split).
        seed: Seed of the first member; member k uses ``seed + k``.
        layers: Autoregressive blocks per flow.
        hidden: Width of each of the two hidden layers of every block.
        bins: Spline bins (``maf-rqs`` only).
        tail_bound: Spline range ``[-tail_bound, tail_bound]`` in the flow's standardized
            coordinates (``maf-rqs`` only).
        batch_norm: Batch normalization after each block.
        layout: :attr:`zfit_gbi.generators.FlowConfig.layout`: ``1`` (default) this package's
            blocks and MADE; ``4`` nflows' blocks and MADE, as CATHODE and HI-SIGMA train them
            (``FlowConfig.cathode()`` / ``hisigma()``; closer to the truth on average, see
            ``FlowConfig.layout`` for why it is not the default); ``2`` and ``3`` kept for saved
            flows.
        batch_size: Minibatch size (events).
        learning_rate: Initial Adam learning rate.
        patience: Early stopping after this many epochs without improvement.
        aggregate: Ensemble average of probabilities (``prob``) or of log-probabilities
            (``logprob``); no effect for ``ensemble: 1``.
        bootstrap: Train each member on a bootstrap resample; no effect for ``ensemble: 1``.
        jit_compile: XLA-compile the training step: faster per step on CPU (2.3x for a
            5 x 2x64 spline flow) after seconds of compilation, once per architecture and
            process (trainings of one architecture share the compiled step). Unset (the
            default): XLA for the generators, not for the ``data-driven`` mode's small signal
            flows (one per w, fold and seed, and again per calibration toy), which train as
            fast without it.
        mixed_precision: ``float16`` or ``bfloat16``: train with mixed precision
            (:attr:`zfit_gbi.generators.TrainConfig.mixed_precision`; for a GPU with tensor
            cores, slower on a CPU). Unset (the default): float32. Evaluation stays float64.

    ``bins``/``tail_bound`` given with ``maf-affine`` are an error. ``model_dump`` writes only
    ``path`` for a saved generator and leaves out ``bins``/``tail_bound`` for ``maf-affine``, so
    a dump validates again.
    """

    path: Path | None = None
    type: GeneratorType = "maf-rqs"
    ensemble: PosInt = 1
    epochs: PosInt = 100
    seed: NonNegInt = 0
    layers: PosInt = 5
    hidden: PosInt = 64
    bins: Annotated[StrictInt, Field(ge=2)] = 8
    tail_bound: PosFloat = 5.0
    batch_norm: StrictBool = False
    layout: Annotated[StrictInt, Field(ge=1, le=4)] = 1
    batch_size: PosInt = 256
    learning_rate: PosFloat = 1e-3
    patience: PosInt = 10
    aggregate: Literal["prob", "logprob"] = "prob"
    bootstrap: StrictBool = True
    jit_compile: StrictBool | None = None
    mixed_precision: Literal["float16", "bfloat16"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _path_xor_training(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("path") is not None:
            given = [k for k in _TRAINING_KEYS if k in data]
            if given:
                raise PydanticCustomError(
                    "gbi_config",
                    "`path` (load a saved generator) and training settings ({given}) are mutually "
                    "exclusive; give either `path` or training settings",
                    {"given": ", ".join(given)},
                )
        return data

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else _resolve(v, info)

    @model_validator(mode="after")
    def _check(self) -> GeneratorConfig:
        p: list[tuple[str, str]] = []
        if self.type == "maf-affine":
            p += [(k, "only for type maf-rqs") for k in _RQS_ONLY if k in self.model_fields_set]
        _problems(p)
        return self

    @model_serializer(mode="wrap")
    def _dump(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        out = handler(self)
        if self.path is not None:
            return {"path": out["path"]}
        out.pop("path", None)
        for k in _RQS_ONLY if self.type == "maf-affine" else ():
            out.pop(k, None)
        return out

    @property
    def is_saved(self) -> bool:
        """True when the generator is loaded from ``path`` rather than trained."""
        return self.path is not None

    @property
    def transform(self) -> Literal["affine", "rqs"]:
        """``affine`` or ``rqs``: :attr:`zfit_gbi.generators.FlowConfig.transform`."""
        return "affine" if self.type == "maf-affine" else "rqs"

    def flow_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`zfit_gbi.generators.FlowConfig`."""
        return {
            "transform": self.transform,
            "n_layers": self.layers,
            "hidden_units": (self.hidden, self.hidden),
            "n_bins": self.bins,
            "tail_bound": self.tail_bound,
            "batch_norm": self.batch_norm,
            "layout": self.layout,
        }

    def train_kwargs(self, *, many: bool = False) -> dict[str, Any]:
        """Keyword arguments of :class:`zfit_gbi.generators.TrainConfig` (``seed`` of member 0);
        ``many``: for one of many short trainings per run (no XLA unless ``jit_compile`` is set)."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "patience": self.patience,
            "seed": self.seed,
            "jit_compile": (not many) if self.jit_compile is None else self.jit_compile,
            "mixed_precision": self.mixed_precision,
        }


class BackgroundConfig(_Section):
    """The background model p_B(m) p_B(x | m).

    Args:
        mass_shape: Parametric p_B(m) fitted over the fit window: ``dijet`` (4-parameter dijet
            function), ``exppoly2``/``exppoly3`` (exponential of a polynomial), ``bernstein3``/
            ``bernstein4`` (Bernstein polynomial).
        sqrt_s: Centre-of-mass energy of the ``dijet`` function, in the resonant variable's unit
            (13.0: TeV at the LHC).
        generator: p_B(x | m), trained on the sidebands (or loaded).
        signal_in_sidebands: ``model`` (simulation mode): fit, then retrain p_B(x | m) on the
            sidebands inside the mixture (1 - f(m)) p_B(x | m) + f(m) p_S(x | m), with f(m) the
            fitted signal's share at each sideband event's mass and p_S the simulated signal
            fixed, so that signal leaking into the sidebands (a broad resonance) is not learned
            as background; then fit again (one more training of the ensemble per iteration).
            ``ignore``: train on the sidebands as they are. ``auto`` (default): ``model`` when
            at least 2 % of the simulated signal in the fit window lies in the sidebands (then
            the yield could be biased by that much), else ``ignore`` (no extra fit).
        signal_in_sidebands_iterations: At most this many fit-and-retrain rounds of ``model``;
            they stop earlier once the fitted yield moves by less than 0.2 of its error.
    """

    mass_shape: BackgroundShape = "dijet"
    sqrt_s: PosFloat = 13.0
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    signal_in_sidebands: Literal["auto", "model", "ignore"] = "auto"
    signal_in_sidebands_iterations: PosInt = 3


class SignalSimulationConfig(_EventFileSection):
    """Simulated signal events, read like :class:`DataConfig` (same ``path``/``columns``/``tree``
    rules); they must hold the data's resonant variable and features."""

    @model_validator(mode="after")
    def _check(self) -> SignalSimulationConfig:
        _problems(_check_columns(self.columns, self.path, self.tree, "signal.simulation"))
        return self


class DataDrivenConfig(_Section):
    """The R-ANODE scan of ``signal.model: data-driven`` (:mod:`zfit_gbi.ranode`).

    The signal feature density q(x) is a flow (``signal.generator``'s architecture and
    training settings) trained on the signal-region events inside the mixture
    w p_S(m) q(x) + (1 - w) p_B(m) p_B(x | m) at each signal fraction w of the scan.

    Args:
        w_range: ``[low, high]`` of the log-spaced grid of signal fractions w (signal events
            over all events in the signal region), inside (0, 1].
        n_w: Grid points (>= 3).
        refine: More points between the neighbours of the best grid point (0: none).
        folds: k of the k-fold evaluation (every event scored by flows that did not train on
            it), >= 2.
        seeds: Flows per fold and w (their probabilities averaged).
        null_toys: Background-only pseudo-experiments (signal-region events drawn from the
            sideband generator and the background mass shape, as many as the data have), each
            scanned exactly like the data: the calibrated p-value and the expected limits. 0:
            asymptotic only. n toys resolve p-values down to 1 / (n + 1) (10: Z up to 1.34; a
            smaller p is reported as a bound); each costs as much as the data's scan, and they
            run where ``compute.executor`` says.
        member_scans: With a background ensemble of K >= 2 members, also scan the data with
            each member left out of p_B in turn (K more scans): the jackknife error of w (the
            training noise of the members' average) is added to the interval and the limit,
            and a note says when it exceeds the statistical error.
    """

    w_range: Pair = (1e-3, 0.1)
    n_w: Annotated[StrictInt, Field(ge=3)] = 6
    refine: NonNegInt = 2
    folds: Annotated[StrictInt, Field(ge=2)] = 3
    seeds: PosInt = 1
    null_toys: NonNegInt = 10
    member_scans: StrictBool = True

    @model_validator(mode="after")
    def _check(self) -> DataDrivenConfig:
        lo, hi = self.w_range
        if not 0 < lo < hi <= 1:
            _problems([("w_range", f"needs 0 < low < high <= 1, got [{_fmt(lo)}, {_fmt(hi)}]")])
        return self


class ClassifierSettings(_Section):
    """A dense ReLU classifier (:class:`zfit_gbi.classifier.ClassifierConfig`): Adam, early
    stopping on ``val_fraction`` of the events with the best weights kept."""

    hidden: Annotated[list[PosInt], Field(min_length=1)] = [64, 64, 64]
    epochs: PosInt = 30
    batch_size: PosInt = 512
    learning_rate: PosFloat = 1e-3
    patience: PosInt = 5
    val_fraction: Annotated[StrictFloat, Field(gt=0, lt=1)] = 0.2
    seed: NonNegInt = 0


class ParametrizedConfig(_Section):
    """The PAWS-style signal of ``signal.model: parametrized`` (:mod:`zfit_gbi.paws`).

    A classifier f(x, m, theta) between the signal simulation (in the signal region) and the
    background generator's events at the same masses gives the ratio p_S / p_B; the signal
    density is the generator times that ratio, and the fit gives the signal yield and the
    signal-model parameters theta.

    Args:
        parameters: Columns of ``signal.simulation`` holding each simulated event's
            signal-model parameters (e.g. the daughter masses of a generic search). Each must
            take several values; it becomes a free fit parameter within the simulated range.
            ``[]``: a simulation of one parameter point (the classifier has no theta input and
            the mode estimates the yield only).
        classifier: The classifier's architecture and training.
        oversample: Generated background events per simulated event in the training.
        n_mc: Generator events for the ratio's normalization Z(theta).
        profile_points: Values per parameter of the profile likelihood scan (the starting
            point of the fit and the ``signal_parameters`` plot); >= 3.
    """

    parameters: list[Name] = []
    classifier: ClassifierSettings = Field(default_factory=ClassifierSettings)
    oversample: PosInt = 2
    n_mc: PosInt = 20000
    profile_points: Annotated[StrictInt, Field(ge=3)] = 9

    @model_validator(mode="after")
    def _check(self) -> ParametrizedConfig:
        _problems(_unique(self.parameters, "parameters"))
        return self


class SignalConfig(_Section):
    """The signal model p_S(m) p_S(x | m).

    Args:
        model: Where p_S(x | m) comes from. ``simulation`` (HI-SIGMA): a generator trained on
            the signal simulation. ``data-driven`` (R-ANODE, the GBI paper's model-agnostic
            mode): a flow q(x) learned from the signal-region data inside the mixture
            likelihood with the background fixed (settings in ``data_driven``); no simulation
            needed. Our choice for the signal's m dependence there: p_S(m) is the mass shape
            fitted to the simulation when one is given, else a Gaussian at ``mass`` (default:
            the signal region's centre) with standard deviation ``width``, and q does not depend
            on m inside the signal region. ``parametrized`` (PAWS-style): p_S(x | m, theta) is the
            background generator times the density ratio of a classifier trained on the
            simulation, parametrized in the signal-model parameters theta (settings in
            ``parametrized``), which float in the fit; p_S(m) is fitted to the simulation.
        simulation: Signal simulation the mass shape is fitted to and the generator trained on
            (required for ``simulation`` and ``parametrized``, optional for ``data-driven``).
        mass_shape: ``gauss`` or ``dscb`` (double-sided Crystal Ball), fitted to the simulation.
        float_shape: False: the shape parameters are fixed at the simulation fit. True: they
            float with Gaussian constraints (the simulation fit's values and errors).
        mass: Optional hypothesised signal mass (resonant variable's unit), inside the fit
            window: the signal mass shape fitted to the simulation is moved there (mean set to
            it, width scaled with it); p_S(x | m) is the generator at each event's m. Default:
            the simulation's own mass.
        width: Standard deviation of the Gaussian p_S(m) of ``data-driven`` without a
            simulation (resonant variable's unit; required there, an error elsewhere).
        generator: p_S(x | m) trained on the simulation (or loaded); for ``data-driven`` the
            architecture and training settings of q (``ensemble`` must stay 1: use
            ``data_driven.seeds``; ``path`` is not possible, q is trained on the data); not used
            by ``parametrized`` (its classifier's settings are in ``parametrized.classifier``).
        data_driven: The R-ANODE scan (``data-driven`` only).
        parametrized: The parametrized classifier (``parametrized`` only).
    """

    model: SignalModel = "simulation"
    simulation: SignalSimulationConfig | None = None
    mass_shape: SignalShape = "gauss"
    float_shape: StrictBool = False
    mass: StrictFloat | None = None
    width: PosFloat | None = None
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    data_driven: DataDrivenConfig = Field(default_factory=DataDrivenConfig)
    parametrized: ParametrizedConfig = Field(default_factory=ParametrizedConfig)

    @model_validator(mode="after")
    def _check(self) -> SignalConfig:
        p: list[tuple[str, str]] = []
        if self.model in ("simulation", "parametrized"):
            if self.simulation is None:
                p.append(("simulation", f"required for model {self.model!r} (or set model: data-driven to learn the signal from the data)"))
            if self.width is not None:
                p.append(("width", "only for model 'data-driven' without a simulation (the simulation gives the signal's mass shape)"))
            cols = self.simulation.columns if self.simulation is not None else None
            if self.model == "parametrized" and cols is not None:
                missing = [c for c in self.parametrized.parameters if c not in cols]
                if missing:
                    p.append(("parametrized.parameters", f"{missing} are not columns of signal.simulation ({cols})"))
        else:
            if self.simulation is None and self.width is None:
                p.append(("width", "required for model 'data-driven' without a simulation: the standard deviation of the Gaussian p_S(m)"))
            if self.simulation is not None and self.width is not None:
                p.append(("width", "not with a simulation: the mass shape is fitted to it"))
            if self.generator.is_saved:
                p.append(("generator.path", "model 'data-driven' trains the signal flow on the data; give training settings"))
            elif self.generator.ensemble != 1:
                p.append(("generator.ensemble", "model 'data-driven' averages data_driven.seeds flows per fold; leave ensemble at 1"))
        _problems(p)
        return self


class NuisanceConfig(_Section):
    """Nuisance parameters for the background generator's errors (methods.md section 5).

    Args:
        generator: ``none`` (the ensemble average, no parameter), ``envelope`` (discrete
            profiling over the ensemble members), ``eigen`` (continuous eigen-variations of the
            ensemble, Gaussian-constrained), ``updown`` (up/down generators, from the ensemble's
            spread, with quadratic interpolation and exponential extrapolation,
            Gaussian-constrained). All but ``none`` need a background ensemble (>= 2 members).
        n_eigen: Number of eigen-variations (``eigen`` only); at most ``ensemble - 1``.
        n_mc: Monte Carlo sample size normalizing the varied densities (``eigen``, ``updown``).
        spurious_signal: The generator's error on the signal yield as one more constrained
            nuisance (the signal component's yield is n_S + width * theta, theta ~ N(0, 1);
            :class:`~zfit_gbi.nuisances.SpuriousSignal`), on top of ``generator``. ``true``:
            the width is the spread of the yield fitted with each background ensemble member
            alone (needs an ensemble >= 2, best ``bootstrap: true``); a number: the width in
            signal events in the fit window (e.g. from an earlier study); ``false``: none.
            The binned route gets the same width (a zero sample with a linear ``histosys``).
    """

    generator: NuisanceKind = "none"
    n_eigen: PosInt = 2
    n_mc: PosInt = 20000
    spurious_signal: StrictBool | NonNegNumber = False


class ModelConfig(_Section):
    """Likelihood options.

    Args:
        hisigma_sidebands: HI-SIGMA sideband treatment (methods.md section 4): the sideband
            events enter the likelihood with the background model only. False: the standard
            extended likelihood over the whole fit window.
    """

    hisigma_sidebands: StrictBool = False


class UpperLimitConfig(_Section):
    """CLs upper limit on the POI.

    Args:
        cl: Confidence level, in (0, 1).
        calculator: ``asymptotic`` (Asimov) or ``toys`` (frequentist).
        n_toys: Toys per hypothesis (``toys`` only).
        n_points: POI values in the CLs scan (>= 4).
        scan: Optional POI range ``[low, high]`` of the scan (POI unit); default: 0 to the
            fitted POI plus five errors.
    """

    cl: Annotated[StrictFloat, Field(gt=0, lt=1)] = 0.95
    calculator: Calculator = "asymptotic"
    n_toys: PosInt = 1000
    n_points: Annotated[StrictInt, Field(ge=4)] = 10
    scan: Pair | None = None

    @model_validator(mode="after")
    def _check(self) -> UpperLimitConfig:
        p = [] if self.scan is None else _check_pair(self.scan, "scan", "scan range")
        if self.scan is not None and self.scan[0] < 0:
            p.append(("scan", f"low end {_fmt(self.scan[0])} must be >= 0"))
        _problems(p)
        return self


class InferenceConfig(_Section):
    """What to compute after the fit.

    Args:
        discovery: Discovery test of POI = 0 (q0, p0, Z).
        discovery_calculator: ``asymptotic`` or ``toys`` for the discovery test.
        discovery_n_toys: Toys for a ``toys`` discovery test.
        upper_limit: CLs upper limit settings; omitted or null: no limit.
        poi: Parameter of interest: ``yield`` (signal events in the fit window) or ``mu``
            (yield / ``reference_yield``).
        reference_yield: Signal events for mu = 1; required when ``poi`` is ``mu``.
        minos: Asymmetric (Minos) errors of the POI besides Hesse.
        n_asimov: Size of the weighted Asimov sample of the asymptotic calculator.
        seed: Seed for toys and Asimov samples (a repeated run gives the same numbers).
        backend: ``zfit`` (unbinned), ``pyhf`` (binned templates, :mod:`pyhf_gbi`; settings in
            the ``binned`` section) or ``both`` (side by side in the summary).
        profile_points: POI values of the profile-likelihood scan written to the summary and
            plotted (0: no scan).
    """

    discovery: StrictBool = True
    discovery_calculator: Calculator = "asymptotic"
    discovery_n_toys: PosInt = 1000
    upper_limit: UpperLimitConfig | None = None
    poi: Literal["yield", "mu"] = "yield"
    reference_yield: PosFloat | None = None
    minos: StrictBool = True
    n_asimov: PosInt = 100_000
    seed: NonNegInt = 0
    backend: Literal["zfit", "pyhf", "both"] = "zfit"
    profile_points: Annotated[StrictInt, Field(ge=0)] = 15

    @model_validator(mode="after")
    def _check(self) -> InferenceConfig:
        p: list[tuple[str, str]] = []
        if self.backend != "zfit" and self.upper_limit is not None and self.upper_limit.calculator == "toys":
            p.append(("upper_limit.calculator", f"'toys' is available for the zfit backend only (backend is {self.backend!r}); use 'asymptotic'"))
        if self.backend != "zfit" and self.discovery and self.discovery_calculator == "toys":
            p.append(("discovery_calculator", f"'toys' is available for the zfit backend only (backend is {self.backend!r}); use 'asymptotic'"))
        if 0 < self.profile_points < 3:
            p.append(("profile_points", f"{self.profile_points}: use 0 (no scan) or at least 3"))
        if self.poi == "mu" and self.reference_yield is None:
            p.append(
                (
                    "reference_yield",
                    "required when poi is 'mu' (mu = signal yield / reference_yield)",
                )
            )
        _problems(p)
        return self


class BinnedConfig(_Section):
    """The binned route (``inference.backend: pyhf | both`` and ``gbi export-pyhf``).

    Args:
        mass_bins: Equal-width bins of the resonant variable across the signal region.
        score_bins: Bins of the learned score log p_S(x|m) - log p_B(x|m) (0: mass bins only);
            edges at quantiles of the signal's score.
        variation_bins: Split every (m, score) bin into this many bins of each generator
            variation's per-event direction (``variation_bins ** J`` for J variation
            parameters; 1: no split), so that the data constrain the variations inside the
            score bins as the unbinned fit's per-event densities do (without it the
            variations absorb the top score bins' excess: ``pyhf_gbi.templates``). ``None``
            (default): :meth:`split_for` decides (2 for one or two variation parameters).
        n_generated: Generated background events for the templates (their MC error enters as
            ``staterror``).
        modifier: How generator variations enter: ``custom`` (the ``gbi_expshape`` modifier,
            the unbinned route's exponential shape-only interpolation) or ``histosys``
            (standard HistFactory, portable).
    """

    mass_bins: Annotated[StrictInt, Field(ge=1, le=200)] = 4
    score_bins: Annotated[StrictInt, Field(ge=0, le=200)] = 10
    variation_bins: Annotated[StrictInt, Field(ge=1, le=10)] | None = None
    n_generated: Annotated[StrictInt, Field(ge=1000)] = 200_000
    modifier: Literal["custom", "histosys"] = "custom"

    def split_for(self, n_variations: int) -> int:
        """The ``variation_bins`` a run uses with ``n_variations`` generator-variation
        parameters: the configured value; by default (``None``) 2 for one or two of them
        (2 or 4 times the bins: on the demo Z 14.5 instead of 8.8 and an expected limit 30
        instead of 60, ``README``), 1 otherwise (none to split by, or 8 times the bins and
        as many ``staterror`` parameters: too slow a fit to be a default)."""
        if self.variation_bins is not None:
            return self.variation_bins
        return 2 if 1 <= n_variations <= 2 else 1


class PlotsConfig(_Section):
    """Plots written by ``gbi run`` (mplhep).

    Args:
        enabled: Write the plots (post-fit mass spectrum with pulls, signal-region feature
            closure, profile scan, CLs scan, training curves).
        style: mplhep experiment style: ``CMS``, ``ATLAS`` or ``LHCb``.
        experiment: The name the plots' label starts with; default the style's (``CMS``...).
            Set it for events no experiment recorded, e.g. ``LHC Olympics`` for the public
            R&D dataset, so its plots do not read "CMS Simulation".
        label: Text next to the experiment label (e.g. ``Simulation``, ``Open Data``).
        formats: File formats, any of ``png`` and ``pdf``.
        unit: Unit of the resonant variable on the axes.
    """

    enabled: StrictBool = True
    style: Literal["CMS", "ATLAS", "LHCb"] = "CMS"
    experiment: str | None = None
    label: str = "Simulation"
    formats: list[Literal["png", "pdf"]] = Field(default_factory=lambda: ["png", "pdf"], min_length=1)
    unit: str = "TeV"


class ComputeConfig(_Section):
    """Where the independent, seeded tasks run (:mod:`zfit_gbi.executor`).

    Args:
        executor: ``sequential`` (default, this process), ``processes`` / ``processes:N``
            (local worker processes), ``dask`` (a local Dask cluster) or a Dask scheduler
            address (``tcp://host:8786``). The members of a generator ensemble (bootstrap
            retrainings included) and the masses of ``gbi scan`` are distributed; results are
            identical seed for seed whichever executor runs them.
    """

    executor: str = "sequential"

    @field_validator("executor")
    @classmethod
    def _known(cls, v: str) -> str:
        from .executor import check_executor

        try:
            check_executor(v)
        except ValueError as err:
            raise PydanticCustomError("gbi_config", "{msg}", {"msg": str(err)}) from None
        return v


class RunConfig(_Section):
    """A whole ``gbi run`` config: see the module docstring for the YAML layout.

    Sections ``data``, ``windows`` and ``signal`` are required; ``background``, ``nuisances``,
    ``model`` and ``inference`` have defaults. The HI-SIGMA option lives in ``model:`` (it
    changes the likelihood, not the data or the inference).

    Cross-section checks: the signal simulation's ``columns`` (when given) hold the resonant
    variable and the features; ``signal.mass`` lies inside ``windows.fit``; ``envelope``,
    ``eigen`` and ``updown`` nuisances need a trained background ensemble of at least 2 members (and
    ``n_eigen <= ensemble - 1``); not checkable for a saved generator (checked when loaded).
    """

    data: DataConfig
    windows: WindowsConfig
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    signal: SignalConfig
    nuisances: NuisanceConfig = Field(default_factory=NuisanceConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    binned: BinnedConfig = Field(default_factory=BinnedConfig)
    plots: PlotsConfig = Field(default_factory=PlotsConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        p: list[tuple[str, str]] = []
        sim = self.signal.simulation
        if sim is not None and sim.columns is not None:
            missing = [c for c in (self.data.resonant, *self.data.features) if c not in sim.columns]
            if missing:
                p.append(
                    (
                        "signal.simulation.columns",
                        f"missing {missing} (data.resonant and data.features)",
                    )
                )
        m, (f0, f1) = self.signal.mass, self.windows.fit
        if m is not None and not f0 < m < f1:
            p.append(
                ("signal.mass", f"{_fmt(m)} is outside the fit window [{_fmt(f0)}, {_fmt(f1)}]")
            )
        gen, kind = self.background.generator, self.nuisances.generator
        (s0, s1) = self.windows.signal_region
        if self.signal.model == "data-driven" and m is not None and not s0 < m < s1:
            p.append(("signal.mass", f"{_fmt(m)} is outside the signal region [{_fmt(s0)}, {_fmt(s1)}], where the data-driven mode learns the signal"))
        if self.signal.model == "data-driven":
            unused = [f"{k} {v!r}" for k, v, default in (("inference.backend", self.inference.backend, "zfit"),
                                                          ("nuisances.generator", kind, "none"),
                                                          ("nuisances.spurious_signal", self.nuisances.spurious_signal, False),
                                                          ("model.hisigma_sidebands", self.model.hisigma_sidebands, False),
                                                          ("background.signal_in_sidebands", self.background.signal_in_sidebands, "auto"))
                      if v != default]
            if unused:
                warnings.warn(f"signal.model 'data-driven' runs the R-ANODE scan (no zfit fit, no binned route): {', '.join(unused)} not used; "
                              "the background ensemble enters as its average", ConfigWarning, stacklevel=2)
        if self.signal.model == "parametrized" and self.background.signal_in_sidebands == "model":
            warnings.warn("background.signal_in_sidebands 'model' needs a signal density p_S(x | m) from simulation (signal.model "
                          "'simulation'); the parametrized mode trains its background generator on the sidebands as they are",
                          ConfigWarning, stacklevel=2)
        if self.signal.model == "parametrized":
            clash = [c for c in self.signal.parametrized.parameters if c in (self.data.resonant, *self.data.features)]
            if clash:
                p.append(("signal.parametrized.parameters", f"{clash} are data columns (resonant variable or features), not signal-model parameters"))
            if self.inference.backend == "pyhf":
                p.append(("inference.backend", "'pyhf' has no parametrized signal (its templates need a signal generator); use 'zfit' with signal.model 'parametrized'"))
            elif self.inference.backend == "both":
                warnings.warn("signal.model 'parametrized' runs the unbinned route only: inference.backend 'both' acts as 'zfit'",
                              ConfigWarning, stacklevel=2)
        if kind == "envelope" and self.inference.backend != "zfit":
            p.append(("nuisances.generator", f"'envelope' (profiling over models) has no binned equivalent for inference.backend {self.inference.backend!r}; use 'eigen' or 'updown'"))
        if (self.binned.variation_bins or 1) > 1 and kind not in ("eigen", "updown"):
            p.append(("binned.variation_bins", f"splits the bins by the generator variations: needs nuisances.generator 'eigen' or 'updown' (it is {kind!r})"))
        ss = self.nuisances.spurious_signal
        if ss is True and not gen.is_saved and gen.ensemble < 2:
            p.append(("nuisances.spurious_signal", f"true measures the width with the background ensemble's members: set background.generator.ensemble >= 2 (it is {gen.ensemble}), or give the width in events"))
        if kind in ("envelope", "eigen", "updown") and not gen.is_saved:
            if gen.ensemble < 2:
                msg = f"{kind!r} needs an ensemble: set background.generator.ensemble >= 2 (it is {gen.ensemble})"
                p.append(("nuisances.generator", msg))
            elif kind == "eigen" and self.nuisances.n_eigen > gen.ensemble - 1:
                msg = (
                    f"{self.nuisances.n_eigen} > background.generator.ensemble - 1 = {gen.ensemble - 1} "
                    "(an ensemble of K members has at most K - 1 directions)"
                )
                p.append(("nuisances.n_eigen", msg))
        _problems(p)
        return self


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def _models_in(ann: Any) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in typing.get_args(ann) for m in _models_in(a)]


def _literals_in(ann: Any) -> list[Any]:
    if typing.get_origin(ann) is Literal:
        return list(typing.get_args(ann))
    if typing.get_origin(ann) in (typing.Union, types.UnionType, Annotated):
        return [v for a in typing.get_args(ann) for v in _literals_in(a)]
    return []


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The section model at ``loc`` (e.g. ``("background", "generator")``), if there is one."""
    model: type[BaseModel] | None = RunConfig
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        found = _models_in(model.model_fields[part].annotation)
        model = found[0] if found else None
    return model


def _key_path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _one_error(err: Mapping[str, Any]) -> list[tuple[str, str]]:
    loc = tuple(err.get("loc", ()))
    kind, inp = err.get("type", ""), err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "gbi_config" and "problems" in ctx:
        return [
            (_key_path(loc + tuple(k.split("."))) if k else _key_path(loc), m)
            for k, m in ctx["problems"]
        ]
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        if model is not None:
            allowed = list(model.model_fields)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msg = f"unknown key{hint}; allowed keys: {', '.join(allowed)}"
        else:
            msg = "unknown key"
    elif kind == "missing" and loc and isinstance(loc[-1], int):
        msg = "missing item: expected [low, high]"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "literal_error":
        model = _model_at(loc[:-1])
        values = (
            _literals_in(model.model_fields[loc[-1]].annotation)
            if model and loc and loc[-1] in model.model_fields
            else []
        )
        allowed = ", ".join(map(str, values)) if values else ctx.get("expected", "")
        msg = f"unknown value {inp!r}; allowed values: {allowed}"
    elif kind == "model_type" or kind == "dict_type":
        msg = f"expected a mapping (key: value), got {type(inp).__name__} {inp!r}"
    else:
        if not isinstance(inp, Mapping | list):
            msg += f" (got {inp!r})"
        if kind == "string_type" and isinstance(inp, bool):
            msg += "; YAML reads yes/no/on/off/true/false as booleans: quote the name"
    return [(_key_path(loc) or "(top level)", msg)]


def _format_errors(exc: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        out += _one_error(err)
    return out


# ---------------------------------------------------------------------------------------------
# YAML in and out
# ---------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no arbitrary objects) that rejects duplicate keys and reads ``1e-3``
    as a float (YAML 1.2 floats; PyYAML's YAML 1.1 resolver wants a dot)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def validate_config(
    raw: Any, *, base_dir: str | Path | None = None, source: str | Path = "<config>"
) -> RunConfig:
    """Validate a mapping (e.g. parsed YAML) into a :class:`RunConfig`.

    Args:
        raw: The mapping.
        base_dir: Folder that relative paths are resolved against (default: the working directory).
        source: Named at the start of an error message.

    Raises:
        ConfigError: listing every problem as ``key.path: message``.
    """
    if not isinstance(raw, Mapping):
        what = "the file is empty" if raw is None else f"got a {type(raw).__name__}"
        msg = (
            f"the top level must be a mapping with keys {', '.join(RunConfig.model_fields)}; {what}"
        )
        raise ConfigError(source, [("", msg)], header="invalid config")
    ctx = {"base_dir": Path(base_dir) if base_dir is not None else None}
    try:
        return RunConfig.model_validate(raw, context=ctx)
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc)) from None


def load_config(path: str | Path, *, check_paths: bool = True) -> RunConfig:
    """Read and validate a YAML run config.

    Args:
        path: The YAML file. Relative paths inside it are resolved against its folder.
        check_paths: Also require that the data, signal simulation and saved generator paths
            exist (reported as e.g. ``data.path: no such file``).

    Raises:
        ConfigError: for a missing or unreadable file, a YAML syntax error (with its line and
            column), a top level that is not a mapping, and every validation problem.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            path, [("", "no such config file")], header="cannot read config"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            path, [("", f"{type(err).__name__}: {err}")], header="cannot read config"
        ) from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # a yaml.SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = (
            f"line {mark.line + 1}, column {mark.column + 1}"
            if mark is not None
            else "unknown line"
        )
        what = str(err.problem or "")
        if err.context:
            cm = err.context_mark
            started = f" (from line {cm.line + 1})" if cm is not None and cm is not mark else ""
            what = f"{err.context}{started}: {what}"
        raise ConfigError(path, [(where, what)], header="YAML syntax error") from None
    except yaml.YAMLError as err:
        raise ConfigError(path, [("", str(err))], header="YAML syntax error") from None
    cfg = validate_config(raw, base_dir=path.absolute().parent, source=path)
    if check_paths:
        missing = [
            (key, f"no such file or folder: {p}") for key, p in _paths(cfg) if not p.exists()
        ]
        if missing:
            raise ConfigError(path, missing)
    return cfg


def _paths(cfg: RunConfig) -> list[tuple[str, Path]]:
    out = [("data.path", cfg.data.path)]
    if cfg.signal.simulation is not None:
        out.append(("signal.simulation.path", cfg.signal.simulation.path))
    for key, gen in (("background", cfg.background.generator), ("signal", cfg.signal.generator)):
        if gen.path is not None:
            out.append((f"{key}.generator.path", gen.path))
    return out


def dump_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write ``cfg`` as YAML (absolute paths, all keys with their values); returns the path.

    :func:`load_config` of the written file gives a config equal to ``cfg``.
    """
    path = Path(path)
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
    path.write_text(text, encoding="utf-8")
    return path


def override_config(
    cfg: RunConfig, changes: Mapping[str, Any], *, source: str | Path = "command line"
) -> RunConfig:
    """A copy of ``cfg`` with ``changes`` merged in, validated again (as ``gbi fit``/``limit``
    and ``--models`` change a loaded config).

    ``changes`` is nested like the YAML, e.g. ``{"inference": {"discovery": False}}``; mappings
    are merged key by key, except that a generator given with ``path`` replaces the whole
    generator section (a saved generator takes no training settings).

    Raises:
        ConfigError: naming ``source`` and the key path of every problem.
    """
    raw = cfg.model_dump(mode="json")

    def merge(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
        for k, v in src.items():
            if isinstance(v, Mapping) and isinstance(dst.get(k), dict) and not (k == "generator" and "path" in v):
                merge(dst[k], v)
            else:
                dst[k] = dict(v) if isinstance(v, Mapping) else v

    merge(raw, changes)
    return validate_config(raw, source=source)

"""The same binned HistFactory model as pyhf, built from zfit objects.

:func:`to_zfit` turns a pyhf workspace spec (``channels``, ``observations``, ``measurements``)
into one extended binned zfit PDF per channel, the observed :class:`zfit.data.BinnedData`, the
auxiliary measurements as zfit constraints and a :class:`zfit.loss.ExtendedBinnedNLL`, so that
zfit + hepstats and pyhf can be run on one spec and compared number by number.

The expected counts reproduce pyhf 0.7.6 (``pyhf.pdf._MainModel.expected_data``)::

    nu_cb = sum_s  prod(multiplicative factors_sb) * (nominal_sb + sum(additive deltas_sb))

with the same interpolation codes (defaults ``normsys: code4``, ``histosys: code4p``; ``code1``
and ``code0`` on request), the same staterror widths (``sigma_b = sqrt(sum_s err_sb**2) /
sum_s nom_sb`` over the samples carrying the modifier; bins with ``sigma_b == 0`` are fixed at
1), the same parameter defaults (inits, bounds, fixed) and the measurement's overrides. The
constraint terms are the same functions of the parameters as pyhf's (Gaussian for
normsys/histosys/gbi_expshape/staterror/lumi, pyhf's continuous Poisson for shapesys), so NLL
*differences* agree with ``-model.logpdf`` differences to rounding; constant terms differ.

Bins are indices: channel ``c`` with ``n`` bins lives on ``zfit.Space(c, binning=
RegularBinning(n, 0, n, name=c))`` (bin width 1, so densities equal counts).

Supported modifiers: ``normfactor``, ``normsys``, ``histosys``, ``staterror``, ``lumi``,
``shapesys``, ``shapefactor`` and the custom ``gbi_expshape`` (see
:mod:`pyhf_gbi.modifiers` for the pyhf side; the formula is implemented here again, in TF).

Parameter names: :attr:`BinnedZfitModel.params` is keyed by pyhf's labels (``"mu"``,
``"staterror_SR[0]"``, as in ``model.config.par_names``); the zfit names are ``prefix`` +
the label with every non-word character replaced by ``_`` (``staterror_SR_0``). zfit 0.28 itself
accepts two parameters with one name, but Minuit, fit results and hepstats tables key by name
(older zfit refused duplicates): give a second model in the same process its own ``prefix``.

Asimov data: hepstats' :class:`~hepstats.hypotests.calculators.AsymptoticCalculator` (0.10)
builds its Asimov dataset from the PDFs only and keeps the constraints' observations at their
nominal values (and takes ``q~_mu,A`` against mu' = 0 fixed); pyhf also moves the auxiliary data
(global observables) to the conditional MLE. With pulled nuisances this lowers ``q_mu,A``
noticeably (expected CLs and expected limits move most; observed CLs a few per cent). Use
:meth:`BinnedZfitModel.asimov_loss` / :meth:`BinnedZfitModel.asymptotic_cls` (``convention=
"pyhf"``) for pyhf's numbers; ``convention="hepstats"`` reproduces hepstats'.

Example::

    model = to_zfit(spec, prefix="ws1_")
    result = zfit.minimize.Minuit().minimize(model.loss)
    model.asymptotic_cls(1.0)["cls"]            # == pyhf.infer.hypotest(1.0, ..., "qtilde")
    model.set_values(pyhf_model, pars)          # a pyhf parameter vector onto the zfit params
    model.expected_counts()                     # {channel: (n_bins,)}
"""

from __future__ import annotations

from zfit_gbi._tf import tf  # TensorFlow first, quietly (zfit imports it)

# isort: split
import copy
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import zfit
import zfit.z.numpy as znp
from scipy.stats import norm as _normal
from zfit.core.binnedpdf import BaseBinnedPDF
from zfit.core.space import supports

__all__ = [
    "DEFAULT_MODIFIER_SETTINGS",
    "LOG_RATIO_CLIP",
    "SUPPORTED_MODIFIERS",
    "BinnedZfitModel",
    "ConstraintTerm",
    "HistFactoryChannelPDF",
    "to_zfit",
]

DEFAULT_MODIFIER_SETTINGS: dict[str, dict[str, str]] = {
    "normsys": {"interpcode": "code4"},
    "histosys": {"interpcode": "code4p"},
}
"""pyhf 0.7.6's defaults (``pyhf.pdf._ModelConfig``). A ``modifier_settings`` that is given
replaces them as a whole, as in pyhf: a type missing from it falls back to the applier's own
default (``normsys: code1``, ``histosys: code0``)."""

_APPLIER_DEFAULT_CODE = {"normsys": "code1", "histosys": "code0"}
_SUPPORTED_CODES = {"normsys": ("code1", "code4"), "histosys": ("code0", "code4p")}

SUPPORTED_MODIFIERS = (
    "normfactor",
    "normsys",
    "histosys",
    "staterror",
    "lumi",
    "shapesys",
    "shapefactor",
    "gbi_expshape",
)

LOG_RATIO_CLIP = 20.0
"""``gbi_expshape``: per-bin ``log(hi/nom)`` and ``log(lo/nom)`` are clipped to ``[-20, 20]``."""

# pyhf.interpolators.code4's A^-1 for alpha0 = 1: coefficients a_1..a_6 of the polynomial
# 1 + sum_i a_i alpha^i from b = (up - 1, dn - 1, ln(up) up, -ln(dn) dn, ln(up)^2 up, ln(dn)^2 dn).
_CODE4_AINV = np.array(
    [
        [15.0 / 16, -15.0 / 16, -7.0 / 16, -7.0 / 16, 1.0 / 16, -1.0 / 16],
        [3.0 / 2, 3.0 / 2, -9.0 / 16, 9.0 / 16, 1.0 / 16, 1.0 / 16],
        [-5.0 / 8, 5.0 / 8, 5.0 / 8, 5.0 / 8, -1.0 / 8, 1.0 / 8],
        [-3.0 / 2, -3.0 / 2, 7.0 / 8, -7.0 / 8, -1.0 / 8, -1.0 / 8],
        [3.0 / 16, -3.0 / 16, -3.0 / 16, -3.0 / 16, 1.0 / 16, -1.0 / 16],
        [1.0 / 2, 1.0 / 2, -5.0 / 16, 5.0 / 16, 1.0 / 16, 1.0 / 16],
    ]
)

_ALPHA_TYPES = ("normsys", "histosys", "gbi_expshape")

Values = Mapping[str, Any]
"""zfit parameter name -> value (a ``zfit.Parameter`` or a scalar tensor)."""

Term = Callable[[Values], tf.Tensor]


# --------------------------------------------------------------------------------------------
# parameter sets (pyhf's "paramsets")
# --------------------------------------------------------------------------------------------


@dataclass
class _ParamSet:
    """One pyhf parameter set: a scalar (``is_scalar``) or a vector of ``n`` parameters."""

    name: str
    kind: str  # "free", "normal" or "poisson"
    n: int
    is_scalar: bool
    inits: list[float] | None
    bounds: list[tuple[float, float]] | None
    fixed: list[bool] | bool
    auxdata: list[float] | None = None
    sigmas: list[float] | None = None  # normal: widths (None: 1)
    factors: list[float] | None = None  # poisson: rate factors
    uses_sigmas: bool = False  # normal with configurable widths (staterror, lumi); else width 1
    labels: list[str] = field(default_factory=list)

    def signature(self) -> tuple:
        def freeze(v: Any) -> Any:
            if isinstance(v, list | tuple):
                return tuple(freeze(x) for x in v)
            return v

        return tuple(
            freeze(getattr(self, k))
            for k in (
                "kind",
                "n",
                "is_scalar",
                "inits",
                "bounds",
                "fixed",
                "auxdata",
                "sigmas",
                "factors",
                "uses_sigmas",
            )
        )


def _alpha_set(name: str) -> _ParamSet:
    return _ParamSet(name, "normal", 1, True, [0.0], [(-5.0, 5.0)], False, auxdata=[0.0])


def _normfactor_set(name: str) -> _ParamSet:
    return _ParamSet(name, "free", 1, True, [1.0], [(0.0, 10.0)], False)


def _lumi_set(name: str) -> _ParamSet:
    return _ParamSet(name, "normal", 1, True, None, None, False, uses_sigmas=True)


def _shapefactor_set(name: str, n: int) -> _ParamSet:
    return _ParamSet(name, "free", n, False, [1.0] * n, [(0.0, 10.0)] * n, False)


def _shapesys_set(name: str, nominal: np.ndarray, uncert: np.ndarray) -> _ParamSet:
    valid = (nominal > 0) & (uncert > 0)
    safe_unc = np.where(valid, uncert, 1.0)
    factors = np.where(valid, nominal**2 / safe_unc**2, 1.0)
    n = len(nominal)
    return _ParamSet(
        name,
        "poisson",
        n,
        False,
        [1.0] * n,
        [(1e-10, 10.0)] * n,
        [bool(not v) for v in valid],
        auxdata=[float(f) for f in factors],
        factors=[float(f) for f in factors],
    )


def _staterror_set(name: str, sigmas: np.ndarray) -> _ParamSet:
    fixed = [bool(s == 0) for s in sigmas]
    sig = [1.0 if f else float(s) for s, f in zip(sigmas, fixed, strict=True)]
    n = len(sig)
    return _ParamSet(
        name,
        "normal",
        n,
        False,
        [1.0] * n,
        [(1e-10, 10.0)] * n,
        fixed,
        auxdata=[1.0] * n,
        sigmas=sig,
        uses_sigmas=True,
    )


def _apply_user_config(pset: _ParamSet, user: Mapping[str, Any]) -> None:
    """Measurement parameter config overrides (``inits``, ``bounds``, ``fixed``, ``auxdata``,
    ``sigmas``, ``factors``), with pyhf's checks."""
    allowed = {
        "free": ("inits", "bounds", "fixed"),
        "normal": ("inits", "bounds", "fixed", "auxdata")
        + (("sigmas",) if pset.uses_sigmas else ()),
        "poisson": ("inits", "bounds", "fixed", "auxdata", "factors"),
    }[pset.kind]
    for key, value in user.items():
        if key == "name":
            continue
        if key not in allowed:
            raise ValueError(
                f"parameter {pset.name!r} ({pset.kind}) does not use the {key!r} attribute"
            )
        if key == "fixed":
            if isinstance(value, bool):
                pset.fixed = value
                continue
            value = [bool(v) for v in value]
        elif key == "bounds":
            value = [tuple(float(x) for x in b) for b in value]
        else:
            value = [float(v) for v in value]
        if len(value) != pset.n:
            raise ValueError(
                f"parameter {pset.name!r}: {len(value)} values for {key!r} configured, expected {pset.n}"
            )
        setattr(pset, key, value)


# --------------------------------------------------------------------------------------------
# modifier terms (TensorFlow), each a function of a mapping zfit name -> value
# --------------------------------------------------------------------------------------------


def _scalar(values: Values, zname: str) -> tf.Tensor:
    return znp.asarray(values[zname], dtype=tf.float64)


def _vector(values: Values, znames: Sequence[str | None]) -> tf.Tensor:
    """Stack per-bin parameters; ``None`` entries are the constant 1 (bins not affected)."""
    one = tf.constant(1.0, tf.float64)
    return znp.stack([one if n is None else _scalar(values, n) for n in znames])


def _normsys_term(zname: str, hi: float, lo: float, code: str) -> Term:
    """Multiplicative scalar factor of a normsys (pyhf ``code1`` or ``code4``, alpha0 = 1)."""
    if hi <= 0 or lo <= 0:
        raise ValueError(f"normsys {zname!r}: hi ({hi}) and lo ({lo}) must be positive")
    up = tf.constant(hi, tf.float64)
    dn = tf.constant(lo, tf.float64)
    if code == "code1":

        def code1(values: Values) -> tf.Tensor:
            a = _scalar(values, zname)
            return tf.where(a > 0, tf.pow(up, tf.abs(a)), tf.pow(dn, tf.abs(a)))

        return code1

    b = np.array(
        [
            hi - 1.0,
            lo - 1.0,
            math.log(hi) * hi,
            -math.log(lo) * lo,
            math.log(hi) ** 2 * hi,
            math.log(lo) ** 2 * lo,
        ]
    )
    coeffs = [float(c) for c in _CODE4_AINV @ b]

    def code4(values: Values) -> tf.Tensor:
        a = _scalar(values, zname)
        poly = tf.constant(1.0, tf.float64)
        for i, c in enumerate(coeffs, start=1):
            poly = poly + c * tf.pow(a, float(i))
        inner = tf.where(a > -1.0, poly, tf.pow(dn, tf.abs(a)))
        return tf.where(a >= 1.0, tf.pow(up, tf.abs(a)), inner)

    return code4


def _histosys_term(
    zname: str, nominal: np.ndarray, hi: np.ndarray, lo: np.ndarray, code: str
) -> Term:
    """Additive per-bin delta of a histosys (pyhf ``code0`` or ``code4p``), shape ``(n_bins,)``."""
    d_up = tf.constant(hi - nominal, tf.float64)
    d_dn = tf.constant(nominal - lo, tf.float64)
    if code == "code0":

        def code0(values: Values) -> tf.Tensor:
            a = _scalar(values, zname)
            return tf.where(a > 0, a * d_up, a * d_dn)

        return code0

    s = tf.constant(0.5 * ((hi - nominal) + (nominal - lo)), tf.float64)
    asym = tf.constant(0.0625 * ((hi - nominal) - (nominal - lo)), tf.float64)

    def code4p(values: Values) -> tf.Tensor:
        a = _scalar(values, zname)
        a2 = tf.pow(a, 2.0)
        tmp3 = a2 * (a2 * (a2 * 3.0 - 10.0) + 15.0)
        inner = tmp3 * asym + a * s
        return tf.where(a < -1.0, a * d_dn, tf.where(a > 1.0, a * d_up, inner))

    return code4p


def _log_ratios(nominal: np.ndarray, variation: np.ndarray) -> np.ndarray:
    """``clip(log(variation / nominal), -20, 20)``; 0 where ``nominal <= 0`` or ``variation <= 0``."""
    valid = (nominal > 0) & (variation > 0)
    ratio = np.where(valid, variation, 1.0) / np.where(valid, nominal, 1.0)
    return np.where(valid, np.clip(np.log(ratio), -LOG_RATIO_CLIP, LOG_RATIO_CLIP), 0.0)


def _expshape_term(zname: str, nominal: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> Term:
    """Multiplicative shape-only factor ``F_b(alpha)`` of a ``gbi_expshape``, shape ``(n_bins,)``.

    ``f_b = (hi_b/n_b)**alpha`` (alpha >= 0) or ``(lo_b/n_b)**(-alpha)`` (alpha < 0), as
    ``exp`` of clipped log-ratios; ``F_b = f_b * sum(n) / sum(n f)`` (1 where ``sum(n f) <= 0``).
    """
    log_hi = tf.constant(_log_ratios(nominal, hi), tf.float64)
    log_lo = tf.constant(_log_ratios(nominal, lo), tf.float64)
    nom = tf.constant(nominal, tf.float64)
    nom_sum = tf.constant(float(np.sum(nominal)), tf.float64)

    def expshape(values: Values) -> tf.Tensor:
        a = _scalar(values, zname)
        f = tf.where(a >= 0.0, tf.exp(a * log_hi), tf.exp(-a * log_lo))
        total = tf.reduce_sum(nom * f)
        positive = total > 0.0
        ratio = tf.where(positive, nom_sum / tf.where(positive, total, 1.0), 1.0)
        return f * ratio

    return expshape


@dataclass
class _SampleExpectation:
    """One sample of one channel: ``prod(factors) * (nominal + sum(deltas))``, ``(n_bins,)``."""

    name: str
    nominal: np.ndarray
    deltas: list[Term] = field(default_factory=list)
    factors: list[Term] = field(default_factory=list)

    def expected(self, values: Values) -> tf.Tensor:
        rate = tf.constant(self.nominal, tf.float64)
        for delta in self.deltas:
            rate = rate + delta(values)
        for factor in self.factors:
            rate = rate * factor(values)
        return rate


@dataclass
class _ChannelExpectation:
    """Expected counts of one channel as a TF function of the parameters, ``(n_bins,)``."""

    name: str
    n_bins: int
    samples: list[_SampleExpectation]
    znames: list[str]  # zfit names of the parameters the channel depends on

    def expected(self, values: Values) -> tf.Tensor:
        total = tf.zeros(self.n_bins, tf.float64)
        for sample in self.samples:
            total = total + sample.expected(values)
        return total

    def expected_by_sample(self, values: Values) -> dict[str, tf.Tensor]:
        return {s.name: s.expected(values) for s in self.samples}


# --------------------------------------------------------------------------------------------
# zfit PDF
# --------------------------------------------------------------------------------------------


class HistFactoryChannelPDF(BaseBinnedPDF):
    """Extended binned PDF of one HistFactory channel: counts = sum of modified samples.

    Args:
        space: binned 1D space with ``n_bins`` bins (the bin index axis).
        expectation: the channel's expected counts as a function of a mapping
            zfit name -> value, returning shape ``(n_bins,)``.
        params: the zfit parameters the counts depend on, keyed by their zfit names.
        name: PDF name (also the stem of the yield parameter's name, ``<name>_yield``).
        label: human-readable label.
    """

    def __init__(
        self,
        space: zfit.Space,
        expectation: Callable[[Values], tf.Tensor],
        params: Mapping[str, zfit.Parameter],
        *,
        name: str,
        label: str | None = None,
    ) -> None:
        self._expectation = expectation
        params = dict(params)
        yield_ = zfit.ComposedParameter(
            f"{name}_yield",
            lambda p: znp.sum(expectation(p)),
            params=params,
        )
        super().__init__(obs=space, extended=yield_, params=params, name=name, label=label)
        self._areas = np.prod(space.binning.widths, axis=0)  # (n_bins,), all 1 here

    def expected(self) -> tf.Tensor:
        """Expected counts at the current parameter values, shape ``(n_bins,)``."""
        return self._expectation(self.params)

    @supports(norm="space")
    def _counts(self, x, norm=None):
        return self._expectation(self.params)

    @supports(norm="space")
    def _rel_counts(self, x, norm=None):
        counts = self._expectation(self.params)
        return counts / znp.sum(counts)

    @supports(norm="space")
    def _ext_pdf(self, x, norm):
        return self._counts(x, norm) / self._areas

    @supports(norm="space")
    def _pdf(self, x, norm):
        return self._rel_counts(x, norm) / self._areas


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConstraintTerm:
    """One auxiliary measurement (a pyhf constrained parameter set).

    Attributes:
        name: pyhf parameter-set name (``"lumi"``, ``"staterror_SR"`` ...).
        kind: ``"gaussian"`` (``Normal(obs | param, sigma)``) or ``"poisson"`` (shapesys,
            pyhf's continuous ``Poisson(obs | param * factor)``).
        params: the constrained zfit parameters, length ``n``.
        observation: nominal auxiliary data, shape ``(n,)`` (0 for alphas, 1 for staterror
            gammas, the measurement's value for lumi, the rate factors for shapesys).
        sigma: Gaussian widths, shape ``(n,)``; for ``"poisson"`` pyhf's width
            ``sqrt(1 / factor)`` (information only).
        factors: Poisson rate factors, shape ``(n,)`` (``None`` for Gaussian).
    """

    name: str
    kind: str
    params: tuple[zfit.Parameter, ...]
    observation: np.ndarray
    sigma: np.ndarray
    factors: np.ndarray | None = None

    def as_tuple(self) -> tuple[tuple[zfit.Parameter, ...], np.ndarray, np.ndarray]:
        """``(params, observation, sigma)``."""
        return self.params, self.observation, self.sigma

    def make(self, observation: Sequence[float] | np.ndarray | None = None) -> Any:
        """A new zfit constraint, with ``observation`` (shape ``(n,)``) instead of the nominal one."""
        obs = self.observation if observation is None else np.asarray(observation, dtype=np.float64)
        if obs.shape != self.observation.shape:
            raise ValueError(
                f"constraint {self.name!r}: observation shape {obs.shape}, expected {self.observation.shape}"
            )
        if self.kind == "gaussian":
            return zfit.constraint.GaussianConstraint(
                params=list(self.params),
                observation=[float(o) for o in obs],
                sigma=[float(s) for s in self.sigma],
            )
        aux = tf.constant(obs, tf.float64)
        fac = tf.constant(self.factors, tf.float64)
        lgamma = tf.math.lgamma(aux + 1.0)
        keys = [f"param_{i}" for i in range(len(self.params))]

        def poisson_nll(params: Mapping[str, Any]) -> tf.Tensor:
            rate = znp.stack([znp.asarray(params[k], dtype=tf.float64) for k in keys]) * fac
            return -tf.reduce_sum(tf.math.xlogy(aux, rate) - rate - lgamma)

        return zfit.constraint.SimpleConstraint(
            poisson_nll,
            params=dict(zip(keys, self.params, strict=True)),
            name=f"PoissonConstraint_{self.name}",
        )

    def expected_observation(self) -> np.ndarray:
        """pyhf's expected auxiliary data at the current parameter values, shape ``(n,)``."""
        vals = np.array([float(p.value()) for p in self.params])
        return vals * self.factors if self.kind == "poisson" else vals


@dataclass
class BinnedZfitModel:
    """A pyhf workspace as zfit objects (see :func:`to_zfit`).

    Attributes:
        loss: extended binned NLL of all channels with all constraints.
        poi: the parameter of interest (``None`` if the measurement has none).
        params: pyhf label (``model.config.par_names`` style) -> zfit parameter.
        pdfs: channel name -> extended binned PDF (spec order).
        data: channel name -> observed :class:`zfit.data.BinnedData`.
        constraints: the zfit constraints in :attr:`loss` (one per constrained parameter set).
        constraint_terms: the same as :class:`ConstraintTerm` (params, observation, sigma).
        paramsets: pyhf parameter-set name -> its labels (one for scalars, ``name[i]`` else).
        inits: pyhf label -> initial value (pyhf's suggested init or the measurement's).
        poi_name: pyhf name of the POI.
    """

    loss: zfit.loss.ExtendedBinnedNLL
    poi: zfit.Parameter | None
    params: dict[str, zfit.Parameter]
    pdfs: dict[str, HistFactoryChannelPDF]
    data: dict[str, zfit.data.BinnedData]
    constraints: list[Any]
    constraint_terms: list[ConstraintTerm]
    paramsets: dict[str, list[str]]
    inits: dict[str, float]
    poi_name: str | None = None
    _channels: dict[str, _ChannelExpectation] = field(default_factory=dict, repr=False)

    # ---- parameters -------------------------------------------------------------------------

    @property
    def channels(self) -> list[str]:
        """Channel names in spec order."""
        return list(self.pdfs)

    @property
    def constraint_tuples(self) -> list[tuple[tuple[zfit.Parameter, ...], np.ndarray, np.ndarray]]:
        """The constraints as ``(params, observation, sigma)``."""
        return [t.as_tuple() for t in self.constraint_terms]

    def get_values(self) -> dict[str, float]:
        """Current values, pyhf label -> float."""
        return {k: float(p.value()) for k, p in self.params.items()}

    def set_values(self, values: Any, pars: Sequence[float] | np.ndarray | None = None) -> None:
        """Set parameter values.

        Either ``set_values(pyhf_model, pars)`` with a pyhf parameter vector (shape
        ``(n_pars,)``, ordered as ``pyhf_model.config.par_names``), or ``set_values(mapping)``
        with pyhf labels (``"mu"``, ``"staterror_SR[0]"``) or parameter-set names (vector value)
        as keys. Fixed parameters are set as well.
        """
        if pars is not None:
            names = list(values.config.par_names)
            arr = np.asarray(pars, dtype=np.float64).reshape(-1)
            if len(arr) != len(names):
                raise ValueError(
                    f"got {len(arr)} parameter values for {len(names)} pyhf parameters"
                )
            mapping: dict[str, Any] = dict(zip(names, arr, strict=True))
        else:
            mapping = dict(values)
        for key, val in mapping.items():
            if key in self.params:
                self.params[key].set_value(float(val))
            elif key in self.paramsets:
                labels = self.paramsets[key]
                vec = np.atleast_1d(np.asarray(val, dtype=np.float64))
                if len(vec) != len(labels):
                    raise ValueError(
                        f"parameter set {key!r} has {len(labels)} parameters, got {len(vec)} values"
                    )
                for lab, v in zip(labels, vec, strict=True):
                    self.params[lab].set_value(float(v))
            else:
                raise KeyError(f"unknown parameter {key!r}; known: {sorted(self.params)}")

    def reset(self) -> None:
        """Set every parameter back to its initial value."""
        self.set_values(self.inits)

    # ---- expectations ----------------------------------------------------------------------

    def expected_counts(self, values: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Expected counts per channel, ``{channel: (n_bins,)}``.

        Args:
            values: optional parameter values (as for :meth:`set_values`) used for this call
                only; the current values are restored afterwards.
        """
        saved = self.get_values()
        try:
            if values:
                self.set_values(values)
            return {c: np.asarray(self.pdfs[c].expected(), dtype=np.float64) for c in self.pdfs}
        finally:
            self.set_values(saved)

    def expected_counts_by_sample(
        self, values: Mapping[str, Any] | None = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """Expected counts ``{channel: {sample: (n_bins,)}}`` (see :meth:`expected_counts`)."""
        saved = self.get_values()
        try:
            if values:
                self.set_values(values)
            return {
                c: {s: np.asarray(v) for s, v in ch.expected_by_sample(self.pdfs[c].params).items()}
                for c, ch in self._channels.items()
            }
        finally:
            self.set_values(saved)

    def expected_global_observables(
        self, values: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        """pyhf's expected auxiliary data per constrained parameter set, ``{name: (n,)}``:
        the parameter values (Gaussian) or ``gamma * factor`` (shapesys)."""
        saved = self.get_values()
        try:
            if values:
                self.set_values(values)
            return {t.name: t.expected_observation() for t in self.constraint_terms}
        finally:
            self.set_values(saved)

    # ---- losses ----------------------------------------------------------------------------

    def make_constraints(
        self, global_observables: Mapping[str, Sequence[float] | np.ndarray] | None = None
    ) -> list[Any]:
        """New zfit constraints; ``global_observables`` (parameter-set name -> ``(n,)``)
        replaces the nominal observations of those sets."""
        glob = dict(global_observables or {})
        unknown = set(glob) - {t.name for t in self.constraint_terms}
        if unknown:
            raise KeyError(f"no constraint for {sorted(unknown)}")
        return [t.make(glob.get(t.name)) for t in self.constraint_terms]

    def make_loss(
        self,
        observed: Mapping[str, Sequence[float] | np.ndarray] | None = None,
        global_observables: Mapping[str, Sequence[float] | np.ndarray] | None = None,
    ) -> zfit.loss.ExtendedBinnedNLL:
        """A new :class:`~zfit.loss.ExtendedBinnedNLL` on the same PDFs and parameters.

        Args:
            observed: channel -> counts ``(n_bins,)`` replacing the observed data (others kept).
            global_observables: parameter-set name -> ``(n,)`` replacing the constraints'
                observations (others nominal).
        """
        datas = []
        for c, pdf in self.pdfs.items():
            if observed is not None and c in observed:
                vals = np.asarray(observed[c], dtype=np.float64)
                datas.append(zfit.data.BinnedData.from_tensor(pdf.space, vals))
            else:
                datas.append(self.data[c])
        return zfit.loss.ExtendedBinnedNLL(
            list(self.pdfs.values()), datas, constraints=self.make_constraints(global_observables)
        )

    def _fit(
        self, loss: Any, minimizer: Any, poi_value: float | None
    ) -> tuple[float, dict[str, float]]:
        """Minimize ``loss`` from the initial values (POI fixed at ``poi_value`` if given);
        returns ``(nll, {label: value})`` and leaves the parameters at the minimum."""
        self.reset()
        poi = self.poi
        was_floating = poi.floating if poi is not None else None
        if poi_value is not None:
            if poi is None:
                raise ValueError("the model has no POI")
            poi.set_value(float(poi_value))
            poi.floating = False
        try:
            if any(p.floating for p in loss.get_params()):
                result = minimizer.minimize(loss)
                nll = float(result.fmin)
                if not result.valid:
                    warnings.warn(f"fit not valid (poi={poi_value})", RuntimeWarning, stacklevel=3)
            else:
                nll = float(loss.value())
        finally:
            if poi is not None:
                poi.floating = was_floating
        return nll, self.get_values()

    def asimov_loss(self, poi_value: float, minimizer: Any = None) -> zfit.loss.ExtendedBinnedNLL:
        """pyhf's Asimov loss for ``poi_value``: main data *and* global observables at the
        conditional MLE of the nuisances on the observed data (``pyhf.infer.calculators.
        generate_asimov_data``). The parameters are restored afterwards."""
        minimizer = minimizer or zfit.minimize.Minuit(tol=1e-6)
        saved = self.get_values()
        try:
            _, values = self._fit(self.loss, minimizer, poi_value)
            counts = self.expected_counts(values)
            glob = self.expected_global_observables(values)
        finally:
            self.set_values(saved)
        return self.make_loss(observed=counts, global_observables=glob)

    def asymptotic_cls(
        self,
        poi_value: float,
        minimizer: Any = None,
        *,
        convention: Literal["pyhf", "hepstats"] = "pyhf",
    ) -> dict[str, float]:
        """Asymptotic CLs with the ``q~_mu`` test statistic, background-only Asimov (mu' = 0).

        Args:
            poi_value: tested POI value ``mu``.
            minimizer: zfit minimizer (default ``Minuit(tol=1e-6)``).
            convention: ``"pyhf"`` reproduces ``pyhf.infer.hypotest(mu, data, model,
                test_stat="qtilde")``: the Asimov main data *and* global observables are at the
                mu = 0 conditional MLE (:meth:`asimov_loss`), and ``q~_mu,A`` is taken against a
                free fit to the Asimov data. ``"hepstats"`` reproduces hepstats'
                ``AsymptoticCalculator`` (0.10): the Asimov loss keeps the nominal constraint
                observations, and ``q~_mu,A`` is taken against the fit with mu fixed at 0.

        Returns:
            ``{"cls", "clsb", "clb", "cls_expected", "qmu", "qmu_A", "mu_hat"}``;
            ``cls_expected`` has 5 entries in pyhf's order (background-only test statistic at
            +2, +1, 0, -1, -2 sigma; entry 2 is the median). The free fit on the observed data
            uses the POI's bounds (for ``q~`` the lower bound should be 0, pyhf's default).
        """
        if convention not in ("pyhf", "hepstats"):
            raise ValueError(f"convention must be 'pyhf' or 'hepstats', not {convention!r}")
        minimizer = minimizer or zfit.minimize.Minuit(tol=1e-6)
        saved = self.get_values()
        try:
            nll_free, free_vals = self._fit(self.loss, minimizer, None)
            nll_mu, _ = self._fit(self.loss, minimizer, poi_value)
            mu_hat = free_vals[self.poi_name]
            qmu = 0.0 if mu_hat > poi_value else max(2.0 * (nll_mu - nll_free), 0.0)
            if convention == "pyhf":
                asimov = self.asimov_loss(0.0, minimizer)
                nll_a_ref, a_vals = self._fit(asimov, minimizer, None)
                mu_ref = a_vals[self.poi_name]
            else:
                _, values = self._fit(self.loss, minimizer, 0.0)
                asimov = self.make_loss(observed=self.expected_counts(values))
                nll_a_ref, _ = self._fit(asimov, minimizer, 0.0)
                mu_ref = 0.0
            nll_a_mu, _ = self._fit(asimov, minimizer, poi_value)
            qmu_a = 0.0 if mu_ref > poi_value else max(2.0 * (nll_a_mu - nll_a_ref), 0.0)
        finally:
            self.set_values(saved)
        sq, sq_a = math.sqrt(qmu), math.sqrt(qmu_a)
        # pyhf's q~ asymptotics: sqrt(q) - sqrt(qA) below qA, the rescaled form above
        below = sq <= sq_a or sq_a == 0.0
        teststat = sq - sq_a if below else (qmu - qmu_a) / (2.0 * sq_a)
        clsb = float(_normal.sf(teststat + sq_a))
        clb = float(_normal.sf(teststat))
        # expected band as pyhf: background-only test statistic at n sigma, cut off at -sqrt(qA)
        expected = []
        for n_sigma in (2.0, 1.0, 0.0, -1.0, -2.0):
            tb = max(n_sigma, -sq_a)
            expected.append(float(_normal.sf(tb + sq_a) / _normal.sf(tb)))
        return {
            "cls": clsb / clb,
            "clsb": clsb,
            "clb": clb,
            "cls_expected": expected,
            "qmu": qmu,
            "qmu_A": qmu_a,
            "mu_hat": mu_hat,
        }


# --------------------------------------------------------------------------------------------
# spec -> zfit
# --------------------------------------------------------------------------------------------


def _sanitize(label: str) -> str:
    return re.sub(r"\W", "_", label)


def _select_measurement(spec: Mapping[str, Any], name: str | None) -> Mapping[str, Any] | None:
    measurements = spec.get("measurements") or []
    if not measurements:
        if name is not None:
            raise ValueError(f"the spec has no measurements (asked for {name!r})")
        return None
    if name is None:
        return measurements[0]
    for m in measurements:
        if m["name"] == name:
            return m
    raise ValueError(f"no measurement {name!r} (has {[m['name'] for m in measurements]})")


def _interp_codes(modifier_settings: Mapping[str, Mapping[str, str]] | None) -> dict[str, str]:
    settings = DEFAULT_MODIFIER_SETTINGS if modifier_settings is None else modifier_settings
    codes = {}
    for mtype in ("normsys", "histosys"):
        code = dict(settings.get(mtype, {})).get("interpcode", _APPLIER_DEFAULT_CODE[mtype])
        if code not in _SUPPORTED_CODES[mtype]:
            raise NotImplementedError(
                f"{mtype} interpcode {code!r} is not supported (supported: {_SUPPORTED_CODES[mtype]}; "
                "pyhf's histosys code2 is not reproduced)"
            )
        codes[mtype] = code
    return codes


def _merge_paramset(psets: dict[str, _ParamSet], new: _ParamSet, where: str) -> None:
    old = psets.get(new.name)
    if old is None:
        psets[new.name] = new
    elif old.signature() != new.signature():
        raise ValueError(
            f"parameter {new.name!r} ({where}) is used by modifiers with different requirements "
            f"({old.kind}, n={old.n} vs {new.kind}, n={new.n}); use unique modifier names"
        )


def to_zfit(
    spec: Mapping[str, Any],
    *,
    poi_name: str | None = None,
    prefix: str = "",
    modifier_settings: Mapping[str, Mapping[str, str]] | None = None,
    measurement: str | None = None,
) -> BinnedZfitModel:
    """Build the zfit version of a pyhf workspace spec.

    Args:
        spec: workspace dict with ``channels``, ``observations``, ``measurements`` (optional
            ``version``); also a :class:`pyhf.Workspace`.
        poi_name: POI; default the measurement's ``config.poi``.
        prefix: prepended to every zfit parameter/PDF name (unique names per process).
        modifier_settings: pyhf-style interpolation settings, e.g.
            ``{"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}``;
            default pyhf 0.7.6's (``code4``/``code4p``).
        measurement: measurement name; default the first one.

    Returns:
        The :class:`BinnedZfitModel`.

    Raises:
        NotImplementedError: unsupported interpolation code.
        ValueError: unknown modifier type (naming it and the sample), inconsistent shapes,
            conflicting parameter requirements, missing lumi configuration, unknown POI.
    """
    spec = copy.deepcopy(dict(spec))
    codes = _interp_codes(modifier_settings)
    meas = _select_measurement(spec, measurement)
    user_cfg = {p["name"]: p for p in (meas["config"].get("parameters", []) if meas else [])}
    if poi_name is None and meas is not None:
        poi_name = meas["config"].get("poi")

    chan_specs = {c["name"]: c for c in spec["channels"]}
    if len(chan_specs) != len(spec["channels"]):
        raise ValueError("duplicate channel names")
    nbins: dict[str, int] = {}
    for cname, c in chan_specs.items():
        if not c["samples"]:
            raise ValueError(f"channel {cname!r} has no samples")
        nbins[cname] = len(c["samples"][0]["data"])
        for s in c["samples"]:
            if len(s["data"]) != nbins[cname]:
                raise ValueError(
                    f"sample {s['name']!r} in channel {cname!r} has {len(s['data'])} bins, expected {nbins[cname]}"
                )
            for m in s.get("modifiers", []):
                if m["type"] not in SUPPORTED_MODIFIERS:
                    raise ValueError(
                        f"unsupported modifier type {m['type']!r} (modifier {m['name']!r} on sample "
                        f"{s['name']!r} in channel {cname!r}); supported: {SUPPORTED_MODIFIERS}"
                    )

    # ---- parameter sets ----------------------------------------------------------------------
    psets: dict[str, _ParamSet] = {}
    staterror_names: list[str] = []
    shapesys_seen: set[str] = set()
    for cname, c in chan_specs.items():
        for s in c["samples"]:
            nom = np.asarray(s["data"], dtype=np.float64)
            for m in s.get("modifiers", []):
                mtype, mname, where = m["type"], m["name"], f"{m['type']} on {cname}/{s['name']}"
                if mtype in _ALPHA_TYPES:
                    _merge_paramset(psets, _alpha_set(mname), where)
                elif mtype == "normfactor":
                    _merge_paramset(psets, _normfactor_set(mname), where)
                elif mtype == "lumi":
                    _merge_paramset(psets, _lumi_set(mname), where)
                elif mtype == "shapefactor":
                    _merge_paramset(psets, _shapefactor_set(mname, nbins[cname]), where)
                elif mtype == "shapesys":
                    if mname in shapesys_seen:
                        raise ValueError(
                            f"shapesys {mname!r} is used twice ({where}); shapesys is not shared"
                        )
                    shapesys_seen.add(mname)
                    unc = np.asarray(m["data"], dtype=np.float64)
                    if unc.shape != nom.shape:
                        raise ValueError(
                            f"{where}: data has {len(unc)} bins, sample has {len(nom)}"
                        )
                    _merge_paramset(psets, _shapesys_set(mname, nom, unc), where)
                elif mtype == "staterror" and mname not in staterror_names:
                    staterror_names.append(mname)

    # staterror exactly as pyhf's staterror_builder: global bins over channels in sorted order
    sorted_channels = sorted(chan_specs)
    offsets = dict(
        zip(sorted_channels, np.cumsum([0] + [nbins[c] for c in sorted_channels[:-1]]), strict=True)
    )
    n_global = sum(nbins.values())
    all_samples = sorted({s["name"] for c in chan_specs.values() for s in c["samples"]})
    staterror_index: dict[str, dict[tuple[str, int], int]] = {}
    for mname in staterror_names:
        masks, noms, uncs = {}, {}, {}
        for sname in all_samples:
            mask = np.zeros(n_global, dtype=bool)
            nomv = np.zeros(n_global)
            uncv = np.zeros(n_global)
            for cname in sorted_channels:
                sl = slice(offsets[cname], offsets[cname] + nbins[cname])
                samp = next((x for x in chan_specs[cname]["samples"] if x["name"] == sname), None)
                if samp is None:
                    continue
                nomv[sl] = samp["data"]
                mod = next(
                    (
                        x
                        for x in samp.get("modifiers", [])
                        if x["type"] == "staterror" and x["name"] == mname
                    ),
                    None,
                )
                if mod is not None:
                    if len(mod["data"]) != nbins[cname]:
                        raise ValueError(
                            f"staterror {mname!r} on {cname}/{sname}: data has {len(mod['data'])} bins, "
                            f"sample has {nbins[cname]}"
                        )
                    mask[sl] = True
                    uncv[sl] = mod["data"]
            masks[sname], noms[sname], uncs[sname] = mask, nomv, uncv
        carriers = [sn for sn in all_samples if masks[sn].any()]
        nomsall = np.sum([noms[sn] for sn in carriers], axis=0)
        safe = np.where(nomsall > 0, nomsall, 1.0)
        relerrs = np.sqrt(
            np.sum(
                [np.where(nomsall > 0, (uncs[sn] / safe) ** 2, 0.0) for sn in all_samples], axis=0
            )
        )
        mask0 = masks[carriers[0]]
        for sn in carriers[1:]:
            if not np.array_equal(masks[sn], mask0):
                raise ValueError(
                    f"staterror {mname!r}: samples carry it on different bins (pyhf requires one mask)"
                )
        _merge_paramset(psets, _staterror_set(mname, relerrs[mask0]), f"staterror {mname}")
        gidx = np.cumsum(mask0) - 1
        index: dict[tuple[str, int], int] = {}
        for cname in sorted_channels:
            for b in range(nbins[cname]):
                g = offsets[cname] + b
                if mask0[g]:
                    index[(cname, b)] = int(gidx[g])
        staterror_index[mname] = index

    for pname, pset in psets.items():
        if pname in user_cfg:
            _apply_user_config(pset, user_cfg[pname])
        missing = [
            k
            for k, v in (
                ("inits", pset.inits),
                ("bounds", pset.bounds),
                ("auxdata", pset.auxdata),
                ("sigmas", pset.sigmas),
            )
            if v is None
            and (
                k in ("inits", "bounds")
                or (pset.kind == "normal" and (k == "auxdata" or pset.uses_sigmas))
            )
        ]
        if missing:
            raise ValueError(
                f"parameter {pname!r} needs {missing} in the measurement's parameter config "
                "(lumi has no defaults)"
            )

    if poi_name is not None:
        if poi_name not in psets:
            raise ValueError(
                f"POI {poi_name!r} is not a parameter of the model (has {sorted(psets)})"
            )
        if not psets[poi_name].is_scalar:
            raise ValueError(f"POI {poi_name!r} is not a scalar parameter")

    # ---- zfit parameters ---------------------------------------------------------------------
    params: dict[str, zfit.Parameter] = {}
    znames: dict[str, str] = {}  # label -> zfit name
    labels_of: dict[str, list[str]] = {}
    inits: dict[str, float] = {}
    taken: set[str] = set()
    for pname in sorted(psets):
        pset = psets[pname]
        fixed = pset.fixed if isinstance(pset.fixed, list) else [bool(pset.fixed)] * pset.n
        labels = [pname] if pset.is_scalar else [f"{pname}[{i}]" for i in range(pset.n)]
        pset.labels = labels
        labels_of[pname] = labels
        for i, lab in enumerate(labels):
            zname = prefix + (_sanitize(pname) if pset.is_scalar else f"{_sanitize(pname)}_{i}")
            if zname in taken:
                raise ValueError(
                    f"zfit name {zname!r} (from {lab!r}) is not unique after sanitizing"
                )
            taken.add(zname)
            lo, hi = pset.bounds[i]
            params[lab] = zfit.Parameter(
                zname, float(pset.inits[i]), lower=float(lo), upper=float(hi), floating=not fixed[i]
            )
            znames[lab] = zname
            inits[lab] = float(pset.inits[i])

    # ---- constraints -------------------------------------------------------------------------
    terms: list[ConstraintTerm] = []
    for pname in sorted(psets):
        pset = psets[pname]
        if pset.kind == "free":
            continue
        ps = tuple(params[lab] for lab in pset.labels)
        aux = np.asarray(pset.auxdata, dtype=np.float64)
        if pset.kind == "normal":
            sig = np.asarray(
                pset.sigmas if pset.sigmas is not None else [1.0] * pset.n, dtype=np.float64
            )
            terms.append(ConstraintTerm(pname, "gaussian", ps, aux, sig))
        else:
            fac = np.asarray(pset.factors, dtype=np.float64)
            terms.append(ConstraintTerm(pname, "poisson", ps, aux, np.sqrt(1.0 / fac), fac))
    constraints = [t.make() for t in terms]

    # ---- channels ----------------------------------------------------------------------------
    observations = {o["name"]: o["data"] for o in spec.get("observations", [])}
    pdfs: dict[str, HistFactoryChannelPDF] = {}
    datas: dict[str, zfit.data.BinnedData] = {}
    channels: dict[str, _ChannelExpectation] = {}
    for cname, c in chan_specs.items():
        n = nbins[cname]
        used: set[str] = set()
        samples = []
        for s in c["samples"]:
            nom = np.asarray(s["data"], dtype=np.float64)
            samp = _SampleExpectation(s["name"], nom)
            for m in s.get("modifiers", []):
                mtype, mname = m["type"], m["name"]
                if mtype in ("normfactor", "lumi"):
                    z = znames[mname]
                    samp.factors.append(lambda v, z=z: _scalar(v, z))
                    used.add(z)
                elif mtype == "normsys":
                    z = znames[mname]
                    samp.factors.append(
                        _normsys_term(
                            z, float(m["data"]["hi"]), float(m["data"]["lo"]), codes["normsys"]
                        )
                    )
                    used.add(z)
                elif mtype in ("histosys", "gbi_expshape"):
                    z = znames[mname]
                    hi = np.asarray(m["data"]["hi_data"], dtype=np.float64)
                    lo = np.asarray(m["data"]["lo_data"], dtype=np.float64)
                    if hi.shape != nom.shape or lo.shape != nom.shape:
                        raise ValueError(
                            f"{mtype} {mname!r} on {cname}/{s['name']}: hi_data/lo_data have "
                            f"{len(hi)}/{len(lo)} bins, sample has {len(nom)}"
                        )
                    if mtype == "histosys":
                        samp.deltas.append(_histosys_term(z, nom, hi, lo, codes["histosys"]))
                    else:
                        samp.factors.append(_expshape_term(z, nom, hi, lo))
                    used.add(z)
                else:  # per-bin vectors: staterror, shapesys, shapefactor
                    if mtype == "staterror":
                        idx = staterror_index[mname]
                        labs = [
                            f"{mname}[{idx[(cname, b)]}]" if (cname, b) in idx else None
                            for b in range(n)
                        ]
                    else:
                        labs = [f"{mname}[{b}]" for b in range(n)]
                    zs = [None if lab is None else znames[lab] for lab in labs]
                    samp.factors.append(lambda v, zs=zs: _vector(v, zs))
                    used.update(z for z in zs if z is not None)
            samples.append(samp)
        chan = _ChannelExpectation(cname, n, samples, sorted(used))
        channels[cname] = chan
        obs_name = cname
        binning = zfit.binned.RegularBinning(n, 0, n, name=obs_name)
        space = zfit.Space(obs_name, binning=binning)
        by_zname = {znames[lab]: p for lab, p in params.items()}
        pdf_params = {z: by_zname[z] for z in chan.znames}
        pdfs[cname] = HistFactoryChannelPDF(
            space, chan.expected, pdf_params, name=f"{prefix}{_sanitize(cname)}", label=cname
        )
        if cname not in observations:
            raise ValueError(f"no observation for channel {cname!r}")
        obs = np.asarray(observations[cname], dtype=np.float64)
        if obs.shape != (n,):
            raise ValueError(
                f"observation of channel {cname!r} has shape {obs.shape}, expected ({n},)"
            )
        datas[cname] = zfit.data.BinnedData.from_tensor(space, obs)

    loss = zfit.loss.ExtendedBinnedNLL(
        list(pdfs.values()), list(datas.values()), constraints=constraints
    )
    return BinnedZfitModel(
        loss=loss,
        poi=params[poi_name] if poi_name is not None else None,
        params=params,
        pdfs=pdfs,
        data=datas,
        constraints=constraints,
        constraint_terms=terms,
        paramsets=labels_of,
        inits=inits,
        poi_name=poi_name,
        _channels=channels,
    )

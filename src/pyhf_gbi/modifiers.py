"""Custom pyhf modifier ``gbi_expshape``: a shape-only, exponentially interpolated variation.

A learned generator's eigen-variation ``v(x)`` enters the unbinned model as
``p(x|alpha) = p(x) exp(alpha v(x)) / Z(alpha)``. Binned, that becomes a per-bin factor that
is exponential in ``alpha`` and renormalised so that the sample's yield does not change.

Spec entry on a sample (``hi_data``/``lo_data`` have the length of the sample's ``data``)::

    {"name": "gen_eigen_0", "type": "gbi_expshape",
     "data": {"hi_data": [...], "lo_data": [...]}}

With nominal ``n_b`` (the sample's ``data``) and one parameter ``alpha`` per modifier name,

    f_b(alpha) = (hi_b / n_b) ** alpha       for alpha >= 0
    f_b(alpha) = (lo_b / n_b) ** (-alpha)    for alpha <  0

(interpolation and extrapolation alike; bins with ``n_b <= 0`` or a non-positive ``hi_b``/
``lo_b`` get ``f_b = 1``; log-ratios are clipped to ``[-20, 20]``), and the modifier's
multiplicative factor is

    F_b(alpha) = f_b(alpha) * sum_b' n_b' / sum_b' n_b' f_b'(alpha),

the sums running over the bins of that sample in that channel. ``alpha`` is constrained by
``Normal(aux = 0 | alpha, 1)`` exactly like ``normsys``/``histosys`` (init 0, bounds [-5, 5]),
and the parameter is shared between all samples/channels using the same modifier name (it may
also be shared with a ``normsys``/``histosys`` of that name: the parameter requirements are
identical). Op code: multiplication, so several ``gbi_expshape`` modifiers on one sample
multiply their (individually normalised) factors.

Note that pyhf applies multiplicative factors to ``nominal + sum(additive deltas)``; the
renormalisation uses the *nominal* yield, so the sample's total is conserved exactly only when
no additive modifier (``histosys``) acts on the same sample.

Usage::

    model = make_model(spec, poi_name="mu")
    # or: pyhf.Model(spec, validate=False, modifier_set=modifier_set())
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyhf
from numpy.typing import ArrayLike
from pyhf import events
from pyhf.exceptions import InvalidModifier
from pyhf.parameters import ParamViewer
from pyhf.tensor.manager import get_backend

__all__ = [
    "LOG_RATIO_CLIP",
    "MODIFIER_TYPE",
    "ExpShapeApplier",
    "ExpShapeBuilder",
    "expshape_factor",
    "make_model",
    "modifier_set",
    "to_histosys",
    "uses_expshape",
]

MODIFIER_TYPE = "gbi_expshape"
"""The modifier ``type`` string in the HistFactory spec."""

LOG_RATIO_CLIP = 20.0
"""Per-bin log-ratios ``log(hi/nom)`` and ``log(lo/nom)`` are clipped to ``[-20, 20]``."""


def required_parset(sample_data: Sequence[float], modifier_data: Mapping[str, Any]) -> dict:
    """Parameter requirements of one ``gbi_expshape`` modifier (same as normsys/histosys).

    No ``sigmas`` key is given on purpose: ``constrained_by_normal`` then uses width 1, and
    the requirement dict is identical to pyhf's normsys/histosys ones, so a parameter name can
    be shared with those modifiers without an ``InvalidNameReuse`` error.
    """
    return {
        "paramset_type": "constrained_by_normal",
        "n_parameters": 1,
        "is_scalar": True,
        "inits": (0.0,),
        "bounds": ((-5.0, 5.0),),
        "fixed": False,
        "auxdata": (0.0,),
    }


def _log_ratios(
    nominal: np.ndarray, variation: np.ndarray, clip: float = LOG_RATIO_CLIP
) -> np.ndarray:
    """``clip(log(variation / nominal))`` per bin, 0 where undefined. Shapes ``(n_bins,)``."""
    nominal = np.asarray(nominal, dtype=np.float64)
    variation = np.asarray(variation, dtype=np.float64)
    valid = (nominal > 0.0) & (variation > 0.0)
    safe_nom = np.where(valid, nominal, 1.0)
    safe_var = np.where(valid, variation, 1.0)
    return np.where(valid, np.clip(np.log(safe_var / safe_nom), -clip, clip), 0.0)


class ExpShapeBuilder:
    """Collects per-(modifier, sample) data of ``gbi_expshape`` modifiers (pyhf builder API).

    pyhf calls :meth:`append` once per (channel, sample, modifier key) for *every* modifier of
    this type, also where the modifier does not act on that channel/sample (``thismod`` is then
    ``None``), channels in ``config.channels`` order; the per-channel pieces are concatenated
    into global-bin arrays by :meth:`finalize`.

    ``builder_data[key][sample]["data"]`` (after :meth:`finalize`, ``key = "gbi_expshape/<name>"``)
    holds float/bool arrays of shape ``(n_global_bins,)``: ``nom_data``, ``log_hi``, ``log_lo``,
    ``mask``.
    """

    is_shared = True

    def __init__(self, config: Any) -> None:
        self.builder_data: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        self.config = config
        self.required_parsets: dict[str, list[dict]] = {}

    def append(
        self,
        key: str,
        channel: str,
        sample: str,
        thismod: Mapping[str, Any] | None,
        defined_samp: Mapping[str, Any] | None,
    ) -> None:
        """Record one channel's piece for modifier ``key`` on ``sample``.

        Args:
            key: ``"gbi_expshape/<modifier name>"``.
            channel: channel name.
            sample: sample name.
            thismod: the spec's modifier dict, or ``None`` if it does not act here.
            defined_samp: the spec's sample dict (``["data"]`` is the nominal, length
                ``n_bins(channel)``), or ``None`` if the sample is absent from this channel.
        """
        data = (
            self.builder_data.setdefault(key, {})
            .setdefault(sample, {})
            .setdefault("data", {"nom_data": [], "hi_data": [], "lo_data": [], "mask": []})
        )
        nbins = self.config.channel_nbins[channel]
        nom = list(defined_samp["data"]) if defined_samp else [0.0] * nbins
        if thismod:
            moddata = thismod.get("data") or {}
            try:
                hi = list(moddata["hi_data"])
                lo = list(moddata["lo_data"])
            except (KeyError, TypeError) as err:
                raise InvalidModifier(
                    f"{key} on sample '{sample}' in channel '{channel}' needs "
                    "data = {'hi_data': [...], 'lo_data': [...]}."
                ) from err
            if not len(nom) == len(hi) == len(lo):
                raise InvalidModifier(
                    f"{key} on sample '{sample}' in channel '{channel}': sample data has "
                    f"{len(nom)} bins but hi_data has {len(hi)} and lo_data has {len(lo)}."
                )
        else:
            hi, lo = nom, nom
        data["nom_data"].append(nom)
        data["hi_data"].append(hi)
        data["lo_data"].append(lo)
        data["mask"].append([bool(thismod)] * len(nom))

        if thismod:
            self.required_parsets.setdefault(
                thismod["name"], [required_parset(nom, thismod["data"])]
            )

    def finalize(self) -> dict:
        """Concatenate the channel pieces and precompute clipped log-ratios (numpy)."""
        for modifier in self.builder_data.values():
            for sample in modifier.values():
                d = sample["data"]
                nom = np.concatenate([np.asarray(x, dtype=np.float64) for x in d["nom_data"]])
                hi = np.concatenate([np.asarray(x, dtype=np.float64) for x in d["hi_data"]])
                lo = np.concatenate([np.asarray(x, dtype=np.float64) for x in d["lo_data"]])
                mask = np.concatenate([np.asarray(x, dtype=bool) for x in d["mask"]])
                sample["data"] = {
                    "nom_data": nom,
                    "log_hi": np.where(mask, _log_ratios(nom, hi), 0.0),
                    "log_lo": np.where(mask, _log_ratios(nom, lo), 0.0),
                    "mask": mask,
                }
        return self.builder_data


class ExpShapeApplier:
    """Computes the multiplicative ``gbi_expshape`` factors (pyhf "combined modifier" API).

    :meth:`apply` returns a tensor of shape ``(n_modifiers, n_global_samples, n_alphas,
    n_global_bins)`` with ``n_alphas = batch_size or 1``; entries are exactly 1 where a
    modifier does not act.
    """

    name = MODIFIER_TYPE  # must equal the key in the modifier set (pyhf looks appliers up by it)
    op_code = "multiplication"

    def __init__(
        self,
        modifiers: Sequence[tuple[str, str]],
        pdfconfig: Any,
        builder_data: Mapping[str, Any] | None,
        batch_size: int | None = None,
    ) -> None:
        self.batch_size = batch_size
        keys = [f"{mtype}/{m}" for m, mtype in modifiers]
        mod_names = [m for m, _ in modifiers]
        parfield_shape = (batch_size, pdfconfig.npars) if batch_size else (pdfconfig.npars,)
        self.param_viewer = ParamViewer(parfield_shape, pdfconfig.par_map, mod_names)
        self._n_mods = len(keys)
        self._n_alphas = batch_size or 1

        if keys:
            assert builder_data is not None
            samples = pdfconfig.samples

            def stack(field: str) -> np.ndarray:
                # (n_mods, n_samples, 1, n_bins)
                return np.asarray(
                    [[[builder_data[k][s]["data"][field]] for s in samples] for k in keys]
                )

            self._nom = stack("nom_data")
            self._log_hi = stack("log_hi")
            self._log_lo = stack("log_lo")
            self._mask = np.tile(stack("mask"), (1, 1, self._n_alphas, 1))
            # channel indicator (n_global_bins, n_channels), channels in global-bin order
            nbins = [pdfconfig.channel_nbins[c] for c in pdfconfig.channels]
            indicator = np.zeros((sum(nbins), len(nbins)))
            start = 0
            for i, n in enumerate(nbins):
                indicator[start : start + n, i] = 1.0
                start += n
            self._indicator = indicator
            self._nom_sums = np.einsum("msab,bc->msac", self._nom, indicator)

        self._precompute()
        events.subscribe("tensorlib_changed")(self._precompute)

    def _precompute(self) -> None:
        if not self.param_viewer.index_selection:
            return
        tensorlib, _ = get_backend()
        self.nom = tensorlib.astensor(self._nom)
        self.log_hi = tensorlib.astensor(self._log_hi)
        self.log_lo = tensorlib.astensor(self._log_lo)
        self.mask = tensorlib.astensor(self._mask, dtype="bool")
        self.indicator = tensorlib.astensor(self._indicator)
        self.nom_sums = tensorlib.astensor(self._nom_sums)
        self.ones = tensorlib.ones(self._mask.shape)
        self.sum_ones = tensorlib.ones(
            (self._n_mods, self._nom.shape[1], self._n_alphas, self._indicator.shape[1])
        )
        if self.batch_size is None:
            self.indices = tensorlib.reshape(self.param_viewer.indices_concatenated, (-1, 1))

    def apply(self, pars: Any) -> Any:
        """Modification factors for parameters ``pars``.

        Args:
            pars: shape ``(n_pars,)``, or ``(batch_size, n_pars)`` for a batched model.

        Returns:
            Tensor of shape ``(n_modifiers, n_global_samples, n_alphas, n_global_bins)``, or
            ``None`` if the model has no ``gbi_expshape`` modifier.
        """
        if not self.param_viewer.index_selection:
            return None
        tensorlib, _ = get_backend()
        if self.batch_size is None:
            alphas = self.param_viewer.get(pars, self.indices)
        else:
            alphas = self.param_viewer.get(pars)
        alphas = tensorlib.reshape(alphas, (self._n_mods, 1, self._n_alphas, 1))
        abs_alphas = tensorlib.abs(alphas)
        alpha_pos = 0.5 * (abs_alphas + alphas)  # exactly alpha for alpha >= 0, else 0
        alpha_neg = 0.5 * (abs_alphas - alphas)  # exactly -alpha for alpha < 0, else 0
        f = tensorlib.exp(alpha_pos * self.log_hi + alpha_neg * self.log_lo)

        sums = tensorlib.einsum("msab,bc->msac", self.nom * f, self.indicator)
        positive = sums > 0.0
        safe_sums = tensorlib.where(positive, sums, self.sum_ones)
        nom_sums = self.nom_sums * self.sum_ones
        ratio = tensorlib.where(positive, nom_sums / safe_sums, self.sum_ones)
        norm = tensorlib.einsum("msac,bc->msab", ratio, self.indicator)
        return tensorlib.where(self.mask, f * norm, self.ones)


def modifier_set() -> dict[str, tuple[type, type]]:
    """pyhf's ``histfactory_set`` plus ``gbi_expshape``, for ``pyhf.Model(modifier_set=...)``.

    pyhf orders the model parameters by the order of the modifier set (builder by builder),
    so ``gbi_expshape`` is inserted right after ``histosys``: the parameter order then matches
    that of the :func:`to_histosys` model whenever the spec has no other ``histosys``.
    """
    out: dict[str, tuple[type, type]] = {}
    for key, value in pyhf.modifiers.histfactory_set.items():
        out[key] = value
        if key == "histosys":
            out[MODIFIER_TYPE] = (ExpShapeBuilder, ExpShapeApplier)
    out.setdefault(MODIFIER_TYPE, (ExpShapeBuilder, ExpShapeApplier))
    return out


def uses_expshape(spec: Mapping[str, Any]) -> bool:
    """Whether any sample of a model/workspace spec carries a ``gbi_expshape`` modifier."""
    return any(
        mod.get("type") == MODIFIER_TYPE
        for channel in spec.get("channels", [])
        for sample in channel.get("samples", [])
        for mod in sample.get("modifiers", [])
    )


def make_model(spec: Mapping[str, Any], **kwargs: Any) -> pyhf.pdf.Model:
    """Build a :class:`pyhf.pdf.Model` that understands ``gbi_expshape`` modifiers.

    If the spec uses ``gbi_expshape`` (which pyhf's JSON schema does not know), the schema
    check is run on the portable :func:`to_histosys` version of the spec instead (same
    structure, with the custom modifiers replaced by ``histosys``), and the model is built with
    ``validate=False``; otherwise pyhf validates as usual. ``validate=False`` skips both.

    Args:
        spec: HistFactory model spec (``{"channels": [...], "parameters": [...]}``).
        **kwargs: passed to :class:`pyhf.pdf.Model` (``poi_name``, ``modifier_settings``,
            ``batch_size``, ``validate``, ``schema``, ``version`` ...). A ``modifier_set``
            given here is merged on top of :func:`modifier_set`.
    """
    validate = kwargs.pop("validate", True)
    mods = {**modifier_set(), **(kwargs.pop("modifier_set", None) or {})}
    if uses_expshape(spec):
        if validate:
            pyhf.schema.validate(
                to_histosys(spec),
                kwargs.get("schema", "model.json"),
                version=kwargs.get("version"),
            )
        validate = False
    return pyhf.Model(spec, modifier_set=mods, validate=validate, **kwargs)


def expshape_factor(
    nominal: ArrayLike, hi: ArrayLike, lo: ArrayLike, alpha: ArrayLike
) -> np.ndarray:
    """Numpy reference of the ``gbi_expshape`` factor ``F_b(alpha)`` for one sample/channel.

    Args:
        nominal: ``(n_bins,)`` nominal yields ``n_b``.
        hi: ``(n_bins,)`` template at ``alpha = +1``.
        lo: ``(n_bins,)`` template at ``alpha = -1``.
        alpha: scalar, or any array shape ``A``.

    Returns:
        ``(n_bins,)`` for scalar ``alpha``, else ``A + (n_bins,)``; multiply by ``nominal`` to get
        the modified yields (whose sum equals ``nominal.sum()``).
    """
    nominal = np.asarray(nominal, dtype=np.float64)
    log_hi = _log_ratios(nominal, np.asarray(hi, dtype=np.float64))
    log_lo = _log_ratios(nominal, np.asarray(lo, dtype=np.float64))
    a = np.asarray(alpha, dtype=np.float64)[..., np.newaxis]
    f = np.where(a >= 0.0, np.exp(a * log_hi), np.exp(-a * log_lo))
    total = np.sum(nominal * f, axis=-1, keepdims=True)
    norm = np.where(total > 0.0, nominal.sum() / np.where(total > 0.0, total, 1.0), 1.0)
    return f * norm


def to_histosys(spec: Mapping[str, Any]) -> dict:
    """Portable copy of ``spec`` with every ``gbi_expshape`` replaced by a ``histosys``.

    The ``histosys`` keeps the modifier name and ``hi_data``/``lo_data``, so plain pyhf (and
    its JSON schema) accepts the result; works on model specs and on workspace specs alike.
    The input is not modified.

    The two models agree at ``alpha = 0`` and, up to the normalisation, at ``alpha = +-1``
    (exactly when ``hi_data``/``lo_data`` have the nominal's total). They differ elsewhere:
    ``histosys`` (default ``code4p``) interpolates additively and polynomially inside
    ``|alpha| < 1`` and extrapolates linearly outside (yields may go negative, the total is
    not conserved), whereas ``gbi_expshape`` is exponential everywhere, positive, and
    shape-only (the sample's total is constant in ``alpha``).
    """
    out = copy.deepcopy(dict(spec))
    for channel in out.get("channels", []):
        for sample in channel.get("samples", []):
            for mod in sample.get("modifiers", []):
                if mod.get("type") == MODIFIER_TYPE:
                    mod["type"] = "histosys"
                    data = mod.get("data")
                    if isinstance(data, Mapping):
                        mod["data"] = {
                            k: list(data[k]) for k in ("hi_data", "lo_data") if k in data
                        }
    return out

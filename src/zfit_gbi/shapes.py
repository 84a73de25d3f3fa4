"""1-D mass shapes p_B(m) and p_S(m) of a resonant search as zfit PDFs, and a fit for them.

``m`` is the resonant variable (e.g. ``m_jj`` in TeV); every shape is normalized on its own
``obs`` range. Background: the 4-parameter dijet function, an exponential of a polynomial
(HI-SIGMA) and a Bernstein polynomial; signal: a Gaussian and a double-sided Crystal Ball.

The dijet and exp-poly shapes have no closed-form integral; both register a composite
Gauss-Legendre quadrature (16 panels x 16 nodes) as their integral over any sub-range, so zfit
neither falls back to its Simpson rule nor to Monte Carlo, and the normalization is exact to
~1e-12 for any sensible parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# isort: off
from . import _tf  # noqa: F401  (starts TensorFlow quietly, before zfit imports it)

# isort: on
import numpy as np
import zfit
import zfit.z.numpy as znp

__all__ = [
    "BACKGROUND_SHAPES",
    "SHAPES",
    "SIGNAL_SHAPES",
    "DijetPDF",
    "ExpPolyPDF",
    "MassFit",
    "fit_mass_shape",
    "mass_shape",
]

BACKGROUND_SHAPES: tuple[str, ...] = ("dijet", "exppoly2", "exppoly3", "bernstein3", "bernstein4")
SIGNAL_SHAPES: tuple[str, ...] = ("gauss", "dscb")
SHAPES: tuple[str, ...] = BACKGROUND_SHAPES + SIGNAL_SHAPES

_GL_PANELS = 16
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)


@contextmanager
def _no_zfit_deprecations() -> Iterator[None]:
    """zfit 0.28's own limit accessors call its deprecated ``rect_limits``: hide that noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"zfit(\.|$)")
        yield


def _range(space: zfit.Space) -> tuple[float, float]:
    """``(low, high)`` of a 1-D space as floats."""
    if space.n_obs != 1:
        msg = f"a mass shape needs a 1-D space, got obs {list(space.obs)}"
        raise ValueError(msg)
    with _no_zfit_deprecations():
        lo, hi = space.limit1d
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        msg = f"the mass range must be finite with low < high, got [{lo}, {hi}]"
        raise ValueError(msg)
    return lo, hi


def _quadrature(fn: Callable[[Any], Any], lower: Any, upper: Any) -> Any:
    """Composite Gauss-Legendre integral of ``fn`` (vectorized in ``m``) from ``lower`` to ``upper``."""
    lower = znp.reshape(znp.asarray(lower, dtype=znp.float64), [])
    upper = znp.reshape(znp.asarray(upper, dtype=znp.float64), [])
    half = (upper - lower) / (2 * _GL_PANELS)
    centres = lower + half * (2 * np.arange(_GL_PANELS, dtype=np.float64) + 1)
    m = znp.reshape(centres[:, None] + half * _GL_NODES[None, :], [-1])
    w = np.tile(_GL_WEIGHTS, _GL_PANELS)
    return half * znp.sum(w * fn(m))


def _quadrature_integral(limits, params, model):
    """zfit integral hook: ``int_limits f(m) dm`` of ``model._shape`` by quadrature."""
    with _no_zfit_deprecations():
        lower, upper = limits.v1.lower, limits.v1.upper
    return _quadrature(lambda m: model._shape(m, params), lower, upper)


_ANY_1D = zfit.Space(axes=0, limits=(zfit.Space.ANY_LOWER, zfit.Space.ANY_UPPER))


class DijetPDF(zfit.pdf.BasePDF):
    """The 4-parameter dijet function ``f(z) = (1 - z)^p1 z^-(p2 + p3 ln z)``, ``z = m / sqrt_s``.

    ``p0`` (the normalization) is absorbed: the PDF is normalized on ``obs``.

    On a narrow window (e.g. 2.9-4.1 TeV at 13 TeV: z = 0.22-0.32) ``log f``, linear in
    ``(p1, p2, p3)``, is nearly degenerate: the shape is well determined, the single parameters
    are not (correlations ~0.999 along a long, flat valley; in toys their spread was several
    times their Hesse errors). Judge such fits by the shape, or use profile likelihoods.

    Args:
        obs: 1-D space of the mass, in the same unit as ``sqrt_s`` (TeV by default); ``0 < m <
            sqrt_s`` on the whole range.
        p1, p2, p3: Shape parameters (dimensionless; numbers or ``zfit.Parameter``).
        sqrt_s: Centre-of-mass energy, same unit as ``m`` (default 13 TeV).
    """

    _N_OBS = 1

    def __init__(
        self,
        obs: zfit.Space,
        p1: Any,
        p2: Any,
        p3: Any,
        sqrt_s: float = 13.0,
        *,
        extended: Any = None,
        norm: Any = None,
        name: str = "DijetPDF",
        label: str | None = None,
    ):
        lo, hi = _range(obs)
        self.sqrt_s = float(sqrt_s)
        if not (lo > 0 and hi < self.sqrt_s):
            msg = f"the dijet function needs 0 < m < sqrt_s = {self.sqrt_s:g}, got range [{lo:g}, {hi:g}]"
            raise ValueError(msg)
        # shape evaluated relative to the range centre: keeps exp() in range for any parameters
        self._log_z_ref = math.log(0.5 * (lo + hi) / self.sqrt_s)
        params = {"p1": p1, "p2": p2, "p3": p3}
        super().__init__(obs=obs, params=params, extended=extended, norm=norm, name=name, label=label)

    def _log_shape(self, m, params):
        p1, p2, p3 = params["p1"], params["p2"], params["p3"]
        z = m / self.sqrt_s
        lz = znp.log(z)
        zr = math.exp(self._log_z_ref)
        lr = self._log_z_ref
        log_f = p1 * znp.log1p(-z) - (p2 + p3 * lz) * lz
        log_ref = p1 * math.log1p(-zr) - (p2 + p3 * lr) * lr
        return log_f - log_ref

    def _shape(self, m, params):
        """Unnormalized ``f(m)``, ``m`` of shape ``(n,)``."""
        return znp.exp(self._log_shape(m, params))

    @zfit.supports()
    def _unnormalized_pdf(self, x, params):
        return self._shape(x[0], params)

    def __repr__(self) -> str:
        return f"DijetPDF(name={self.name!r}, obs={list(self.obs)}, sqrt_s={self.sqrt_s:g})"


class ExpPolyPDF(zfit.pdf.BasePDF):
    """``exp(-(c1 t + c2 t^2 + ... + cn t^n))`` with ``t = (m - low) / (high - low)`` in [0, 1].

    The HI-SIGMA background mass shape; ``t`` is fixed by the ``obs`` range at construction,
    ``order = len(coeffs)``.

    Args:
        obs: 1-D space of the mass (any unit).
        coeffs: ``c1 ... cn`` (dimensionless; numbers or ``zfit.Parameter``), at least one.
    """

    _N_OBS = 1

    def __init__(
        self,
        obs: zfit.Space,
        coeffs: Sequence[Any],
        *,
        extended: Any = None,
        norm: Any = None,
        name: str = "ExpPolyPDF",
        label: str | None = None,
    ):
        coeffs = list(coeffs)
        if not coeffs:
            msg = "ExpPolyPDF needs at least one coefficient"
            raise ValueError(msg)
        self._low, self._high = _range(obs)
        self.order = len(coeffs)
        params = {f"c{i + 1}": c for i, c in enumerate(coeffs)}
        super().__init__(obs=obs, params=params, extended=extended, norm=norm, name=name, label=label)

    def _shape(self, m, params):
        """Unnormalized ``f(m)``, ``m`` of shape ``(n,)``."""
        t = (m - self._low) / (self._high - self._low)
        poly = znp.zeros_like(t)
        for i in range(self.order, 0, -1):  # Horner: t (c1 + t (c2 + ...))
            poly = t * (params[f"c{i}"] + poly)
        return znp.exp(-poly)

    @zfit.supports()
    def _unnormalized_pdf(self, x, params):
        return self._shape(x[0], params)

    def __repr__(self) -> str:
        return f"ExpPolyPDF(name={self.name!r}, obs={list(self.obs)}, order={self.order})"


for _cls in (DijetPDF, ExpPolyPDF):
    _cls.register_analytic_integral(func=_quadrature_integral, limits=_ANY_1D)


# ---- factory --------------------------------------------------------------------------------
# role -> (start, lower, upper); the signal defaults follow the obs range (_signal_defaults)
_BKG_DEFAULTS: dict[str, dict[str, tuple[float, float, float]]] = {
    "dijet": {"p1": (5.0, -1000.0, 1000.0), "p2": (5.0, -1000.0, 1000.0), "p3": (0.0, -200.0, 200.0)},
    "exppoly2": {"c1": (3.0, -100.0, 100.0), "c2": (0.0, -100.0, 100.0)},
    "exppoly3": {"c1": (3.0, -100.0, 100.0), "c2": (0.0, -100.0, 100.0), "c3": (0.0, -100.0, 100.0)},
}


def _bernstein_defaults(degree: int) -> dict[str, tuple[float, float, float]]:
    # geometric fall from 1 to 0.1 over the range: a typical falling spectrum
    return {f"b{k}": (0.1 ** (k / degree), 0.0, 1e3) for k in range(1, degree + 1)}


def _signal_defaults(kind: str, lo: float, hi: float) -> dict[str, tuple[float, float, float]]:
    w = hi - lo
    out = {"mu": (0.5 * (lo + hi), lo, hi), "sigma": (0.03 * w, 1e-3 * w, 0.5 * w)}
    if kind == "dscb":
        out |= {
            "alphal": (1.5, 0.05, 10.0),
            "nl": (5.0, 1.0, 100.0),
            "alphar": (1.5, 0.05, 10.0),
            "nr": (5.0, 1.0, 100.0),
        }
    return out


def _defaults(kind: str, lo: float, hi: float) -> dict[str, tuple[float, float, float]]:
    if kind in _BKG_DEFAULTS:
        return dict(_BKG_DEFAULTS[kind])
    if kind.startswith("bernstein"):
        return _bernstein_defaults(int(kind.removeprefix("bernstein")))
    return _signal_defaults(kind, lo, hi)


def mass_shape(
    kind: str,
    obs: zfit.Space,
    *,
    prefix: str,
    init: Mapping[str, float] | None = None,
    sqrt_s: float = 13.0,
) -> tuple[zfit.pdf.BasePDF, dict[str, zfit.Parameter]]:
    """A 1-D mass shape and its floating parameters.

    Args:
        kind: One of :data:`BACKGROUND_SHAPES` (``dijet``, ``exppoly2``, ``exppoly3``,
            ``bernstein3``, ``bernstein4``) or :data:`SIGNAL_SHAPES` (``gauss``, ``dscb``).
        obs: 1-D space of the mass (TeV for ``dijet``, same unit as ``sqrt_s``).
        prefix: Parameter names are ``f"{prefix}_{role}"``; must be unique among the parameters
            of one loss.
        init: Starting values by role (``p1``-``p3``; ``c1``-``c3``; ``b1``-``bn``; ``mu``,
            ``sigma``, ``alphal``, ``nl``, ``alphar``, ``nr``), in the unit of ``m`` for ``mu``
            and ``sigma``. Default: the centre of the range for ``mu``, 3 % of its width for
            ``sigma``, a falling spectrum for the background shapes.
        sqrt_s: Centre-of-mass energy for ``dijet`` (same unit as ``m``).

    Returns:
        ``(pdf, params)`` with ``params`` keyed by role. Bernstein's zeroth coefficient is the
        constant 1 (identifiability) and is not in ``params``.
    """
    if kind not in SHAPES:
        msg = f"unknown mass shape {kind!r}; allowed: {', '.join(SHAPES)}"
        raise ValueError(msg)
    lo, hi = _range(obs)
    spec = _defaults(kind, lo, hi)
    init = dict(init or {})
    unknown = sorted(set(init) - set(spec))
    if unknown:
        msg = f"init has unknown parameter(s) {unknown} for {kind!r}; its parameters are {list(spec)}"
        raise ValueError(msg)
    params: dict[str, zfit.Parameter] = {}
    for role, (start, lower, upper) in spec.items():
        value = float(init.get(role, start))
        if not lower <= value <= upper:
            msg = f"init[{role!r}] = {value:g} is outside the allowed range [{lower:g}, {upper:g}] of {kind!r}"
            raise ValueError(msg)
        params[role] = zfit.Parameter(f"{prefix}_{role}", value, lower, upper)

    name = f"{prefix}_{kind}"
    pdf: zfit.pdf.BasePDF
    if kind == "dijet":
        pdf = DijetPDF(obs, params["p1"], params["p2"], params["p3"], sqrt_s=sqrt_s, name=name)
    elif kind.startswith("exppoly"):
        pdf = ExpPolyPDF(obs, list(params.values()), name=name)
    elif kind.startswith("bernstein"):
        pdf = zfit.pdf.Bernstein(obs, [1.0, *params.values()], name=name)
    elif kind == "gauss":
        pdf = zfit.pdf.Gauss(params["mu"], params["sigma"], obs=obs, name=name)
    else:
        pdf = zfit.pdf.DoubleCB(
            params["mu"], params["sigma"], params["alphal"], params["nl"], params["alphar"], params["nr"],
            obs=obs, name=name,
        )  # fmt: skip
    return pdf, params


# ---- fit ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MassFit:
    """Result of :func:`fit_mass_shape`.

    Attributes:
        values: Fitted value of every parameter of the shape, by parameter name (fixed ones too).
        errors: Symmetric (Hesse) error of each fitted parameter by name; weighted fits use the
            asymptotically correct covariance (zfit's ``weightcorr="asymptotic"``).
        valid: Minuit's minimum is valid (always ``True``: invalid fits raise).
        nll: The negative log-likelihood at the minimum.
    """

    values: dict[str, float]
    errors: dict[str, float] = field(default_factory=dict)
    valid: bool = True
    nll: float = float("nan")

    def pull(self, truth: Mapping[str, float]) -> dict[str, float]:
        """``(value - truth) / error`` for every name in ``truth``."""
        return {k: (self.values[k] - float(t)) / self.errors[k] for k, t in truth.items()}

    def __repr__(self) -> str:
        parts = []
        for k, v in self.values.items():
            parts.append(f"{k}={v:.5g} ± {self.errors[k]:.2g}" if k in self.errors else f"{k}={v:.5g} (fixed)")
        return f"MassFit(valid={self.valid}, nll={self.nll:.6g}, {', '.join(parts)})"


def _checked_masses(pdf: zfit.pdf.BasePDF, m: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    lo, hi = _range(pdf.space)
    m = np.asarray(m, dtype=np.float64)
    if m.ndim == 2 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 1:
        msg = f"masses must have shape (n,), got {m.shape}"
        raise ValueError(msg)
    if m.size == 0:
        msg = "no masses to fit"
        raise ValueError(msg)
    bad = ~np.isfinite(m)
    if bad.any():
        msg = f"{int(bad.sum())} of {m.size} masses are NaN or inf"
        raise ValueError(msg)
    out = (m < lo) | (m > hi)
    if out.any():
        msg = (
            f"{int(out.sum())} of {m.size} masses lie outside the shape's range [{lo:g}, {hi:g}] "
            f"(min {m.min():g}, max {m.max():g}); select the fit window first"
        )
        raise ValueError(msg)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        if weights.shape != m.shape:
            msg = f"weights must have the shape of the masses {m.shape}, got {weights.shape}"
            raise ValueError(msg)
        if not np.all(np.isfinite(weights)):
            msg = "weights contain NaN or inf"
            raise ValueError(msg)
        if not weights.sum() > 0:
            msg = f"the sum of the weights must be positive, got {weights.sum():g}"
            raise ValueError(msg)
    return m, weights


def fit_mass_shape(
    pdf: zfit.pdf.BasePDF,
    m: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    floating: bool = True,
) -> MassFit:
    """Unbinned (weighted) maximum-likelihood fit of a 1-D shape to masses with Minuit.

    The shape's currently floating parameters are fitted and left at the fitted values.

    Args:
        pdf: A 1-D zfit PDF, e.g. from :func:`mass_shape`.
        m: Masses, shape ``(n,)``, in the unit of the PDF's space; all inside its range.
        weights: Per-event weights, shape ``(n,)`` (e.g. sWeights); ``None`` for unweighted.
        floating: Leave the fitted parameters floating (default); ``False`` fixes them at the
            fitted values, e.g. a signal shape fitted to simulation and then frozen.

    Returns:
        A :class:`MassFit`.

    Raises:
        ValueError: NaN/inf or out-of-range masses, bad weights, or no floating parameter.
        RuntimeError: Minuit's minimum is invalid (not converged, parameter at a limit, or no
            positive-definite covariance); the parameters are left at the last values tried.
    """
    m, weights = _checked_masses(pdf, m, weights)
    fitted = list(pdf.get_params(floating=True))
    if not fitted:
        msg = f"{pdf.name} has no floating parameter to fit"
        raise ValueError(msg)
    data = zfit.Data.from_numpy(obs=pdf.space, array=m[:, None], weights=weights, name="masses")
    nll = zfit.loss.UnbinnedNLL(model=pdf, data=data)
    result = zfit.minimize.Minuit(tol=1e-4).minimize(nll, params=fitted)
    if not result.valid and not result.params_at_limit:
        # a near-degenerate valley (e.g. the dijet parameters on a narrow window): once more from
        # there, with Minuit's careful strategy and the exact (TensorFlow) gradient
        retry = zfit.minimize.Minuit(tol=1e-4, mode=2, gradient="zfit")
        result = retry.minimize(nll, params=fitted, init=result)
    if not result.valid:
        at_limit = [p.name for p in fitted if bool(p.at_limit)]
        msg = (
            f"invalid fit of {pdf.name} to {m.size} masses: {result.message or 'invalid minimum'}"
            f" (converged={result.converged}, edm={result.edm:.3g}"
            + (f", at limit: {at_limit}" if at_limit else "")
            + "); try other starting values (init=...), other limits or a different shape"
        )
        raise RuntimeError(msg)
    hesse = result.hesse(name="hesse")
    errors = {p.name: float(hesse[p]["error"]) for p in fitted}
    bad = [k for k, e in errors.items() if not (math.isfinite(e) and e > 0)]
    if bad:
        msg = f"fit of {pdf.name}: no finite positive Hesse error for {bad}; the minimum is not usable"
        raise RuntimeError(msg)
    values = {p.name: float(p.value()) for p in pdf.get_params(floating=None)}
    if not floating:
        for p in fitted:
            p.floating = False
    return MassFit(values=values, errors=errors, valid=True, nll=float(result.fmin))

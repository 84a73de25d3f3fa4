"""The resonant GBI / HI-SIGMA model: extended unbinned likelihood of signal plus background.

    L = Pois(N | n_S + n_B) prod_i [n_B p_B(m_i) p_B(x_i | m_i, theta) + n_S p_S(m_i) p_S(x_i | m_i)]
        / (n_S + n_B) * prod_k N(theta_k | 0, 1)

* p_B(m): a parametric mass shape (dijet, exp-poly, Bernstein) whose parameters float; its
  starting values come from a fit to the data's masses in the fit window.
* p_B(x | m): the sideband-trained conditional generator (a :class:`Flow` or an ensemble),
  optionally varied by a generator-error :class:`~zfit_gbi.nuisances.Variation`.
* p_S(m): Gaussian or DSCB fitted to the signal simulation, then fixed (default) or floating
  within Gaussian constraints from that fit.
* p_S(x | m): a flow trained on the signal simulation, or (PAWS-style, ``signal_ratio``) the
  background generator times a parametrized classifier's density ratio, whose signal-model
  parameters float (:mod:`zfit_gbi.paws`).

The POI is the signal yield in the fit window (``poi="yield"``) or the signal strength
``mu = n_S / reference_yield`` (``poi="mu"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import zfit

from ._tf import tf  # noqa: F401  (TensorFlow first, quietly)
from .data import Events, Windows
from .generators import Flow, FlowEnsemble
from .pdfs import JointFlowPDF, to_zfit_data
from .shapes import fit_mass_shape, mass_shape

__all__ = ["GBIModel", "MassModel", "build_mass_model", "build_model"]


@dataclass
class GBIModel:
    """A built model: the zfit pieces and what the inference needs.

    ``loss(events)`` gives the extended unbinned NLL with the generator-error constraints.
    """

    space: zfit.Space
    model: zfit.pdf.SumPDF
    background: JointFlowPDF
    signal: JointFlowPDF
    n_sig: zfit.Parameter
    n_bkg: zfit.Parameter
    poi: zfit.Parameter
    resonant: str
    features: tuple[str, ...]
    constraints: list = field(default_factory=list)
    variation: Any = None
    mass_params: dict[str, zfit.Parameter] = field(default_factory=dict)
    signal_mass_params: dict[str, zfit.Parameter] = field(default_factory=dict)
    reference_yield: float | None = None
    spurious: Any = None
    signal_ratio: Any = None

    @property
    def signal_params(self) -> list[zfit.Parameter]:
        """The signal model's free parameters (PAWS-style ``signal_ratio``; else none)."""
        return list(self.signal_ratio.params) if self.signal_ratio is not None else []

    def data(self, events: Events, *, clip: bool = False) -> zfit.Data:
        """Validated zfit data on the model's space (columns by name; extra columns ignored)."""
        return to_zfit_data(events, self.space, clip=clip)

    def loss(self, events: Events | zfit.Data, *, clip: bool = False) -> zfit.loss.ExtendedUnbinnedNLL:
        """The extended unbinned NLL (with the nuisance constraints) for these events."""
        data = events if isinstance(events, zfit.Data) else self.data(events, clip=clip)
        return zfit.loss.ExtendedUnbinnedNLL(self.model, data, constraints=list(self.constraints) or None)

    @property
    def nuisances(self) -> list[zfit.Parameter]:
        """The generator-error nuisance parameters (the variation's, then the spurious signal's)."""
        out = list(self.variation.params) if self.variation is not None else []
        return out + (list(self.spurious.params) if self.spurious is not None else [])

    @property
    def signal_yield(self) -> float:
        """The signal component's current yield (events in the fit window): n_S, plus
        width * theta with a spurious-signal term."""
        return float(self.signal.get_yield().value())

    def signal_fraction(self, masses: np.ndarray) -> np.ndarray:
        """The fitted signal's share of the events at each mass,
        f(m) = n_S p_S(m) / (n_S p_S(m) + n_B p_B(m)), at the current parameter values.

        Args:
            masses: Resonant-variable values ``(n_events,)`` inside the fit window (its unit).

        Returns:
            ``(n_events,)`` fractions in [0, 1] (0 where the signal yield is not positive).
        """
        m = np.asarray(masses, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(m)):
            msg = "masses must be finite"
            raise ValueError(msg)
        lo, hi = (float(v) for v in np.ravel(self.background.mass_pdf.space.v1.limits))
        if np.any((m < lo) | (m > hi)):
            msg = f"masses must lie inside the fit window [{lo:g}, {hi:g}] of {self.resonant}"
            raise ValueError(msg)
        n_s, n_b = max(self.signal_yield, 0.0), float(self.n_bkg.value())
        if n_s == 0.0 or len(m) == 0:
            return np.zeros(len(m))

        def density(pdf: Any) -> np.ndarray:
            return np.asarray(pdf.pdf(zfit.Data.from_numpy(obs=pdf.space, array=m[:, None])), dtype=np.float64)

        s, b = n_s * density(self.signal.mass_pdf), max(n_b, 0.0) * density(self.background.mass_pdf)
        return np.clip(s / np.maximum(s + b, np.finfo(float).tiny), 0.0, 1.0)

    def background_mixture(self, masses: np.ndarray, log_ps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The mixture a background generator retrained on sideband events maximizes with the
        fitted signal there modelled, (1 - f(m)) p_B(x | m) + f(m) p_S(x | m), f from
        :meth:`signal_fraction` and p_S the signal generator fixed: ``(1 - f, 0, log p_S)`` for
        ``mixture=`` of :meth:`Flow.fit` / :meth:`FlowEnsemble.train`.

        Args:
            masses: The events' resonant-variable values ``(n_events,)``, inside the fit window.
            log_ps: Their log p_S(x | m) ``(n_events,)``, evaluated once by the caller (the signal
                generator does not change between rounds).

        Returns:
            Three ``(n_events,)`` arrays: the background's weight 1 - f (at least 1e-6), zeros,
            and log p_S(x | m) (-1e30 where not finite: outside the signal's support).
        """
        f = np.minimum(self.signal_fraction(masses), 1.0 - 1e-6)
        log_ps = np.asarray(log_ps, dtype=np.float64)
        return 1.0 - f, np.zeros(len(f)), np.where(np.isfinite(log_ps), log_ps, -1e30)

    def reset(self, n_events: float) -> None:
        """Starting values for a new fit: n_S = 0, n_B = n_events, nuisances 0."""
        self.n_bkg.set_value(float(n_events))
        if self.poi is self.n_sig:
            self.n_sig.set_value(0.0)
        else:
            self.poi.set_value(0.0)
        for p in self.nuisances:
            p.set_value(0.0)
        for p in self.signal_params:  # the middle of the simulated range
            p.set_value(0.5 * (float(p.lower) + float(p.upper)))

    def __repr__(self) -> str:
        nuis = f", nuisances {[p.name for p in self.nuisances]}" if self.nuisances else ""
        nuis += f", spurious signal {self.spurious.width:.3g} events" if self.spurious is not None else ""
        sig = "flow" if self.signal_ratio is None else f"generator x classifier ratio ({', '.join(p.name for p in self.signal_params) or 'no parameters'})"
        return (
            f"GBIModel(obs={list(self.space.obs)}, POI {self.poi.name}, background p_B({self.resonant}) "
            f"{type(self.background.mass_pdf).__name__} x generator, signal {type(self.signal.mass_pdf).__name__} "
            f"x {sig}{nuis}{', HI-SIGMA sidebands' if self.background.sideband_constant else ''})"
        )


def _background_mass(resonant: str, windows: Windows, data_masses: np.ndarray, kind: str, sqrt_s: float, prefix: str):
    """The fit window's space, the data masses inside it and the background mass shape started
    from a fit to them (it floats in the full fit)."""
    mspace = zfit.Space(resonant, limits=windows.fit)
    m_in = np.asarray(data_masses, dtype=float)
    m_in = m_in[windows.in_fit(m_in)]
    if len(m_in) < 10:
        msg = f"only {len(m_in)} events in the fit window {windows.fit}: too few to fit a mass shape"
        raise ValueError(msg)
    bkg_m, bkg_params = mass_shape(kind, mspace, prefix=f"{prefix}bkg", sqrt_s=sqrt_s)
    fit_mass_shape(bkg_m, m_in)
    return mspace, m_in, bkg_m, bkg_params


def _signal_init(m: np.ndarray, windows: Windows) -> dict[str, float]:
    """Starting peak position and width from simulated masses inside the fit window."""
    width = np.ptp(windows.fit)
    return {"mu": float(np.median(m)), "sigma": float(np.clip(np.std(m), 1e-3 * width, 0.3 * width))}


def _move_peak(sig_params: dict[str, zfit.Parameter], m_hyp: float) -> float:
    """Move a fitted signal peak to ``m_hyp``: mean set there, width scaled with it (the
    resolution grows with the mass); returns the scale m_hyp / old mean."""
    scale = m_hyp / float(sig_params["mu"].value())
    sig_params["mu"].set_value(m_hyp)
    sig_params["sigma"].set_value(float(sig_params["sigma"].value()) * scale)
    return scale


def build_model(
    *,
    resonant: str,
    features: Sequence[str],
    windows: Windows,
    background_generator: Flow | FlowEnsemble,
    signal_generator: Flow | FlowEnsemble | None,
    data_masses: np.ndarray,
    signal_masses: np.ndarray,
    signal_weights: np.ndarray | None = None,
    background_mass: str = "dijet",
    sqrt_s: float = 13.0,
    signal_mass: str = "gauss",
    signal_shape: Literal["fixed", "constrained"] = "fixed",
    variation: Any = None,
    spurious_signal: Any = None,
    hisigma_sidebands: bool = False,
    poi: Literal["yield", "mu"] = "yield",
    reference_yield: float | None = None,
    signal_mass_hypothesis: float | None = None,
    signal_ratio: Any = None,
    prefix: str = "",
) -> GBIModel:
    """Build the extended GBI model.

    Args:
        resonant: Name of the resonant variable (the generators' context).
        features: Feature names, in the generators' order.
        windows: Fit window and signal region.
        background_generator, signal_generator: conditioned on ``resonant``; their boxes define
            the feature space.
        data_masses: The data's resonant-variable values in the fit window (for the starting
            values of the background mass shape).
        signal_masses: Signal-simulation masses (the signal mass shape is fitted to them).
        background_mass, signal_mass: shape kinds (see :mod:`zfit_gbi.shapes`).
        signal_shape: ``"fixed"`` after the simulation fit, or ``"constrained"`` (floating with
            Gaussian constraints of the simulation fit's errors).
        variation: a generator-error variation of the background generator.
        spurious_signal: a :class:`~zfit_gbi.nuisances.SpuriousSignal`: the signal
            component's yield becomes n_S + width * theta (the POI stays n_S or mu).
        hisigma_sidebands: HI-SIGMA's treatment: outside the signal region both feature
            densities are the same constant, so sideband events constrain only p_B(m).
        poi: ``"yield"`` (signal events in the fit window) or ``"mu"`` (needs
            ``reference_yield``).
        signal_mass_hypothesis: Hypothesised signal mass (unit of ``resonant``): the signal
            mass shape fitted to the simulation is moved there (its mean set to it, its width
            scaled with the mass: a constant relative resolution). p_S(x | m) is evaluated at
            each event's m, so it serves every hypothesis its simulation covers; outside the
            simulated masses the generator extrapolates in m.
        signal_ratio: PAWS-style signal (:class:`~zfit_gbi.paws.ClassifierRatio`): p_S(x | m) is
            the background generator times its density ratio (``signal_generator`` must then be
            None); its parameters float, unconstrained, within the simulated range.
        prefix: Prefix of every parameter name (several models in one session).
    """
    features = tuple(features)
    if (signal_generator is None) == (signal_ratio is None):
        msg = "give either signal_generator (a flow) or signal_ratio (PAWS-style), not both or neither"
        raise ValueError(msg)
    if signal_ratio is not None:
        signal_generator = background_generator
    for gen, what in ((background_generator, "background"), (signal_generator, "signal")):
        if tuple(gen.features) != features or tuple(gen.context) != (resonant,):
            msg = f"the {what} generator models p({', '.join(gen.features)} | {', '.join(gen.context)}), expected p({', '.join(features)} | {resonant})"
            raise ValueError(msg)
    if background_generator.bounds != signal_generator.bounds:
        msg = f"signal and background generators must share the feature box: {signal_generator.bounds} vs {background_generator.bounds}"
        raise ValueError(msg)
    mspace, m_in, bkg_m, bkg_params = _background_mass(resonant, windows, data_masses, background_mass, sqrt_s, prefix)

    s_m = np.asarray(signal_masses, dtype=float)
    keep = windows.in_fit(s_m)
    init = _signal_init(s_m[keep], windows)
    sig_m, sig_params = mass_shape(signal_mass, mspace, prefix=f"{prefix}sig", init=init)
    sfit = fit_mass_shape(sig_m, s_m[keep], None if signal_weights is None else np.asarray(signal_weights)[keep])
    if signal_mass_hypothesis is not None:
        m_hyp = float(signal_mass_hypothesis)
        if not windows.fit[0] < m_hyp < windows.fit[1]:
            msg = f"signal_mass_hypothesis {m_hyp:g} is outside the fit window {windows.fit}"
            raise ValueError(msg)
        scale = _move_peak(sig_params, m_hyp)
        sfit = type(sfit)({**sfit.values, sig_params["mu"].name: m_hyp, sig_params["sigma"].name: float(sig_params["sigma"].value())},
                          {**sfit.errors, sig_params["sigma"].name: sfit.errors.get(sig_params["sigma"].name, 0.0) * scale}, sfit.valid, sfit.nll)
    constraints = []
    if signal_shape == "fixed":
        for p in sig_params.values():
            p.floating = False
    elif signal_shape == "constrained":
        ps = list(sig_params.values())
        constraints.append(
            zfit.constraint.GaussianConstraint(
                params=ps, observation=[sfit.values[p.name] for p in ps], sigma=[max(sfit.errors[p.name], 1e-9) for p in ps]
            )
        )
    else:
        msg = f"signal_shape must be 'fixed' or 'constrained', got {signal_shape!r}"
        raise ValueError(msg)

    n_tot = float(len(m_in))
    n_bkg = zfit.Parameter(f"{prefix}n_bkg", n_tot, 0.0, 10.0 * n_tot + 100)
    if poi == "yield":
        n_sig = zfit.Parameter(f"{prefix}n_sig", 0.0, -n_tot, n_tot)
        poi_param = n_sig
    elif poi == "mu":
        if not reference_yield or reference_yield <= 0:
            msg = "poi='mu' needs a positive reference_yield (signal events in the fit window for mu = 1)"
            raise ValueError(msg)
        mu = zfit.Parameter(f"{prefix}mu", 0.0, -n_tot / reference_yield, n_tot / reference_yield)
        n_sig = zfit.ComposedParameter(f"{prefix}n_sig", lambda params: params["mu"] * reference_yield, params={"mu": mu})
        poi_param = mu
    else:
        msg = f"poi must be 'yield' or 'mu', got {poi!r}"
        raise ValueError(msg)

    sb = windows.signal_region if hisigma_sidebands else None
    background = JointFlowPDF(bkg_m, background_generator, variation=variation, sideband_constant=sb, extended=n_bkg, name=f"{prefix}background")
    sig_yield = n_sig if spurious_signal is None else spurious_signal.yield_of(
        n_sig, f"{prefix}n_sig_total", poi=poi_param, events_per_poi=reference_yield if poi == "mu" else 1.0)
    signal = JointFlowPDF(sig_m, signal_generator, background.space, variation=signal_ratio, sideband_constant=sb, extended=sig_yield,
                          name=f"{prefix}signal")
    model = zfit.pdf.SumPDF([signal, background], name=f"{prefix}gbi_model")
    if variation is not None:
        constraints.append(variation.constraint)
    if spurious_signal is not None:
        constraints.append(spurious_signal.constraint)
    return GBIModel(
        space=background.space,
        model=model,
        background=background,
        signal=signal,
        n_sig=n_sig,
        n_bkg=n_bkg,
        poi=poi_param,
        resonant=resonant,
        features=features,
        constraints=constraints,
        variation=variation,
        mass_params=bkg_params,
        signal_mass_params=sig_params,
        reference_yield=reference_yield,
        spurious=spurious_signal,
        signal_ratio=signal_ratio,
    )


@dataclass
class MassModel:
    """The mass-only bump hunt (the baseline GBI must beat): N_B p_B(m) + N_S p_S(m) in the
    resonant variable alone, the features ignored."""

    space: zfit.Space
    model: zfit.pdf.SumPDF
    n_sig: zfit.Parameter
    n_bkg: zfit.Parameter
    mass_params: dict[str, zfit.Parameter]
    signal_pdf: zfit.pdf.BasePDF
    background_pdf: zfit.pdf.BasePDF
    signal_params: dict[str, zfit.Parameter]

    def log_densities(self, m: np.ndarray, region: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """log p_S(m) and log p_B(m) at the current parameter values, each normalized on
        ``region`` (e.g. the signal region), shape ``(n,)`` each."""
        space = zfit.Space(self.space.obs[0], limits=region)
        m = np.asarray(m, dtype=float).ravel()
        out = []
        for pdf in (self.signal_pdf, self.background_pdf):
            out.append(np.log(np.asarray(pdf.pdf(m, norm=space), dtype=float)))
        return out[0], out[1]

    def signal_fraction(self, region: tuple[float, float]) -> float:
        """The fraction of the signal shape (fit-window normalized) inside ``region``."""
        space = zfit.Space(self.space.obs[0], limits=region)
        return float(np.asarray(self.signal_pdf.integrate(space, norm=self.space)).ravel()[0])

    @property
    def poi(self) -> zfit.Parameter:
        return self.n_sig

    def loss(self, m: np.ndarray | Events) -> zfit.loss.ExtendedUnbinnedNLL:
        """The extended unbinned NLL of masses ``m`` (shape ``(n,)``, or events with the
        resonant column); masses outside the fit window are an error."""
        obs = self.space.obs[0]
        events = m if isinstance(m, Events) else Events.from_dict({obs: np.asarray(m, dtype=float).ravel()}, source="masses")
        return zfit.loss.ExtendedUnbinnedNLL(self.model, to_zfit_data(events, self.space))


def build_mass_model(
    *,
    resonant: str,
    windows: Windows,
    data_masses: np.ndarray,
    signal_masses: np.ndarray | None = None,
    background_mass: str = "dijet",
    signal_mass: str = "gauss",
    sqrt_s: float = 13.0,
    signal_init: dict[str, float] | None = None,
    signal_mass_hypothesis: float | None = None,
    prefix: str = "mass_",
) -> MassModel:
    """The mass-only model of the same data: the background shape floats (started from a fit
    to ``data_masses``), the yields N_S (the POI, events in the fit window) and N_B float.

    The signal shape is fitted to ``signal_masses`` (shape ``(n,)``, the simulation) and fixed;
    without a simulation (``signal_masses=None``) it floats in the fit, started from
    ``signal_init`` (e.g. ``{"mu": 9.46, "sigma": 0.08}``, the resonant variable's unit).
    ``signal_mass_hypothesis`` moves the simulation-fitted peak there (as :func:`build_model`)."""
    mspace, m_in, bkg_m, bkg_params = _background_mass(resonant, windows, data_masses, background_mass, sqrt_s, prefix)
    if signal_masses is not None:
        s_m = np.asarray(signal_masses, dtype=float)
        s_m = s_m[windows.in_fit(s_m)]
        sig_m, sig_params = mass_shape(signal_mass, mspace, prefix=f"{prefix}sig", init={**_signal_init(s_m, windows), **(signal_init or {})})
        fit_mass_shape(sig_m, s_m, floating=False)
        if signal_mass_hypothesis is not None:
            _move_peak(sig_params, float(signal_mass_hypothesis))
    elif signal_init is None or "mu" not in signal_init:
        msg = "build_mass_model: give signal_masses (a simulation) or signal_init with at least 'mu' (the shape then floats)"
        raise ValueError(msg)
    else:
        sig_m, sig_params = mass_shape(signal_mass, mspace, prefix=f"{prefix}sig", init=dict(signal_init))
    n_tot = float(len(m_in))
    n_bkg = zfit.Parameter(f"{prefix}n_bkg", n_tot, 0.0, 10.0 * n_tot + 100)
    n_sig = zfit.Parameter(f"{prefix}n_sig", 0.0, -n_tot, n_tot)
    bkg_m.set_yield(n_bkg)
    sig_m.set_yield(n_sig)
    return MassModel(mspace, zfit.pdf.SumPDF([sig_m, bkg_m], name=f"{prefix}mass_model"), n_sig, n_bkg, bkg_params, sig_m, bkg_m,
                     sig_params)

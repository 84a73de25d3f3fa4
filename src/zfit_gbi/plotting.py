"""Publication plots with mplhep: post-fit spectra, closure, scans, CLs, training curves.

Every ``plot_*`` function draws on the axes it is given (or new ones) and returns them, so plots
compose; :func:`save` writes PNG and PDF atomically. Binned inputs are ``hist.Hist`` objects.
The experiment style (``"CMS"``, ``"ATLAS"``, ``"LHCb"``) is chosen with :func:`style`::

    with style("ATLAS"):
        fig, (ax, pull) = mass_axes()
        plot_mass_fit(model, events, windows, axes=(ax, pull))
        save(fig, "out/postfit_mass")        # out/postfit_mass.png and .pdf
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hist
import matplotlib as mpl

mpl.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt
import mplhep as hep
import numpy as np

if TYPE_CHECKING:
    from .data import Events, Windows
    from .generators import TrainingHistory
    from .inference import LimitResult
    from .model import GBIModel

__all__ = [
    "EXPERIMENTS",
    "mass_axes",
    "mass_histogram",
    "plot_brazil",
    "plot_cls",
    "plot_feature_closure",
    "plot_mass_fit",
    "plot_mixture_scan",
    "plot_p0_scan",
    "plot_profile_scan",
    "plot_roc",
    "plot_training",
    "save",
    "style",
]

EXPERIMENTS = ("CMS", "ATLAS", "LHCb")
"""Selectable mplhep styles."""

_DATA = {"color": "black", "marker": "o", "markersize": 4, "capsize": 0}
_SR_COLOR = "0.85"


@contextlib.contextmanager
def style(experiment: str = "CMS", name: str | None = None) -> Iterator[str]:
    """Use an experiment's mplhep style inside the block; yields the name the plots' label
    starts with: ``name`` if given (e.g. ``"LHC Olympics"`` for public events that no
    experiment recorded), else the experiment's."""
    key = {e.lower(): e for e in EXPERIMENTS}.get(str(experiment).lower())
    if key is None:
        msg = f"unknown plot style {experiment!r}; allowed: {', '.join(EXPERIMENTS)}"
        raise ValueError(msg)
    with plt.style.context(getattr(hep.style, key)):
        yield key if name is None else name


def _label(ax, experiment: str | None, text: str = "Simulation", rlabel: str | None = None) -> None:
    if experiment is None:
        return
    mod = {"CMS": hep.cms, "ATLAS": hep.atlas, "LHCb": hep.lhcb}.get(experiment)
    # a name of the user's (plots.experiment) gets mplhep's generic label
    draw = mod.label if mod is not None else functools.partial(hep.label.exp_label, exp=experiment)
    draw(text=text, rlabel=rlabel or "", ax=ax, data=True, loc=0, fontsize="small")


def save(fig: mpl.figure.Figure, path: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` to ``path`` with each suffix in ``formats`` (atomically: a temporary file
    in the same folder, then renamed); returns the written paths. The figure is closed."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix.lstrip(".") in formats else path
    base.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        target = base.with_name(f"{base.name}.{fmt}")
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".{fmt}")
        os.close(fd)
        try:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        out.append(target)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------
# the resonant spectrum
# ---------------------------------------------------------------------------------------------


def mass_axes(figsize: tuple[float, float] = (8, 8)) -> tuple[mpl.figure.Figure, tuple[Any, Any]]:
    """A figure with a main panel and a pull panel below it (shared x axis)."""
    fig, (ax, pull) = plt.subplots(2, 1, sharex=True, figsize=figsize, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
    return fig, (ax, pull)


def mass_histogram(m: np.ndarray, window: tuple[float, float], bins: int = 40, *, name: str = "m", label: str = "m", weights: np.ndarray | None = None) -> hist.Hist:
    """Histogram of the resonant variable in ``window``, with weight variances."""
    h = hist.Hist(hist.axis.Regular(bins, *window, name=name, label=label), storage=hist.storage.Weight())
    h.fill(np.asarray(m, dtype=float), weight=weights)
    return h


def _expected_counts(pdf, edges: np.ndarray, total: float, n_sub: int = 9) -> np.ndarray:
    """``total`` times the integral of a 1-D zfit PDF (normalized over its space) per bin
    (Gauss-Legendre in each bin)."""
    x, w = np.polynomial.legendre.leggauss(n_sub)
    lo, hi = edges[:-1, None], edges[1:, None]
    pts = 0.5 * (hi - lo) * x[None, :] + 0.5 * (hi + lo)
    dens = np.asarray(pdf.pdf(pts.ravel())).reshape(pts.shape)
    return total * np.sum(dens * w[None, :], axis=1) * 0.5 * (hi - lo)[:, 0]


def _pull_panel(pax, x: np.ndarray, observed: np.ndarray, expected: np.ndarray, width: float) -> None:
    """Bars of (observed - expected) / sqrt(expected) with 0 and +-2 lines."""
    pull = (observed - expected) / np.sqrt(np.clip(expected, 1e-9, None))
    pax.bar(x, pull, width=width, color="0.4", edgecolor="none")
    pax.axhline(0, color="black", lw=0.8)
    for k in (-2, 2):
        pax.axhline(k, color="0.5", lw=0.6, ls="--")
    lim = max(3.0, float(np.nanmax(np.abs(pull))) * 1.15)
    pax.set_ylim(-lim, lim)
    pax.set_ylabel("Pull")


def plot_mass_fit(
    model: GBIModel,
    events: Events,
    windows: Windows,
    *,
    axes: tuple[Any, Any] | None = None,
    bins: int = 40,
    experiment: str | None = "CMS",
    text: str = "Simulation",
    unit: str = "TeV",
    log: bool = True,
) -> tuple[Any, Any]:
    """Data, stacked post-fit background and signal in the fit window, the signal region
    shaded, and a pull panel (data - model) / sqrt(model).

    The model's parameters are used as they are: call it after the fit.

    Args:
        model: The fitted :class:`~zfit_gbi.model.GBIModel`.
        events: The fitted events (the resonant column is used).
        windows: Fit window and signal region.
        axes: ``(main, pull)`` axes, e.g. from :func:`mass_axes`; new ones if ``None``.
        unit: Unit of the resonant variable for the axis label.
    Returns:
        The ``(main, pull)`` axes.
    """
    if axes is None:
        _, axes = mass_axes()
    ax, pax = axes
    m = np.asarray(events[model.resonant], dtype=float)
    m = m[windows.in_fit(m)]
    h = mass_histogram(m, windows.fit, bins, name=model.resonant, label=f"${model.resonant}$ [{unit}]", weights=None)
    edges = h.axes[0].edges
    n_b = float(model.n_bkg.value())
    n_s = model.signal_yield
    b = _expected_counts(model.background.mass_pdf, edges, n_b)
    s = _expected_counts(model.signal.mass_pdf, edges, n_s)
    hb = hist.Hist(h.axes[0], storage=hist.storage.Double())
    hb[...] = b
    hs = hist.Hist(h.axes[0], storage=hist.storage.Double())
    hs[...] = np.clip(s, 0.0, None)
    hep.histplot([hb, hs], ax=ax, stack=True, histtype="fill", color=["#92dadd", "#e42536"],
                 label=[f"Background ({n_b:,.0f})", f"Signal ({n_s:,.1f})"], alpha=0.9)
    hep.histplot(h, ax=ax, histtype="errorbar", label=f"Data ({len(m):,})", **_DATA)
    for a in (ax, pax):
        a.axvspan(*windows.signal_region, color=_SR_COLOR, zorder=-1, lw=0)
    ax.text(np.mean(windows.signal_region), 0.02, "SR", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize="small")
    width = edges[1] - edges[0]
    ax.set_ylabel(f"Events / {width:.3g} {unit}")
    if log:
        ax.set_yscale("log")
        pos = h.values()[h.values() > 0]
        ax.set_ylim(0.3 * pos.min() if pos.size else 0.5, 30 * h.values().max())
    else:
        ax.set_ylim(0, 1.4 * h.values().max())
    handles, names = ax.get_legend_handles_labels()
    order = [i for i, n in enumerate(names) if n.startswith("Data")] + [i for i, n in enumerate(names) if not n.startswith("Data")][::-1]
    ax.legend([handles[i] for i in order], [names[i] for i in order], loc="upper right", fontsize="small")
    ax.set_xlabel("")
    _label(ax, experiment, text)
    _pull_panel(pax, h.axes[0].centers, h.values(), b + s, width)
    pax.set_xlabel(f"${model.resonant}$ [{unit}]")
    pax.set_xlim(*windows.fit)
    return ax, pax


def plot_binned_fit(
    data: np.ndarray,
    samples: Mapping[str, np.ndarray],
    mass_edges: Sequence[float],
    n_score: int = 1,
    *,
    axes: tuple[Any, Any] | None = None,
    experiment: str | None = "CMS",
    text: str = "Simulation",
    resonant: str = "m",
    unit: str = "TeV",
    split: int = 1,
) -> tuple[Any, Any]:
    """A binned (pyhf) signal-region fit: data, stacked post-fit samples per flat bin (mass
    bins x score bins, score increasing within each mass bin), and a pull panel.

    Args:
        data: Observed counts, shape ``(n_mass * n_score,)``.
        samples: Post-fit expected counts per sample (drawn bottom-up in the given order), each
            shape ``(n_mass * n_score,)``.
        mass_edges: The mass-bin edges (``n_mass + 1``), for the labels.
        n_score: Bins per mass bin (the score bins, times the split by the generator
            variations' directions where the templates have one: ``Binning.per_mass``).
        split: Bins of the variations' directions per score bin (``Binning.n_split``), for
            the axis label.
    """
    if axes is None:
        _, axes = mass_axes()
    ax, pax = axes
    data = np.asarray(data, dtype=float)
    n = data.size
    edges = np.arange(n + 1) - 0.5
    colors = ["#92dadd", "#e42536", "#f89c20", "#964a8b"]
    names = list(samples)
    hep.histplot([np.asarray(samples[k], float) for k in names], bins=edges, ax=ax, stack=True, histtype="fill",
                 color=colors[: len(names)], alpha=0.9, label=[f"{k.capitalize()} ({np.sum(samples[k]):,.1f})" for k in names])
    ax.errorbar(np.arange(n), data, yerr=np.sqrt(data), label=f"Data ({data.sum():,.0f})", ls="none", **_DATA)
    tot = np.sum([np.asarray(v, float) for v in samples.values()], axis=0)
    ax.set_yscale("log")
    pos = np.concatenate([data[data > 0], tot[tot > 0]])
    ax.set_ylim(0.3 * pos.min(), 60 * pos.max())
    ax.set_ylabel("Events / bin")
    handles, labels = ax.get_legend_handles_labels()
    order = [i for i, k in enumerate(labels) if k.startswith("Data")] + [i for i, k in enumerate(labels) if not k.startswith("Data")][::-1]
    ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper right", fontsize="small")
    _label(ax, experiment, text)
    _pull_panel(pax, np.arange(n), data, tot, 1.0)
    me = np.asarray(mass_edges, dtype=float)
    for a in (ax, pax):
        for i in range(1, len(me) - 1):
            a.axvline(i * n_score - 0.5, color="0.3", lw=0.8, ls=":")
        a.set_xlim(-0.5, n - 0.5)
    if n_score > 1:
        for i in range(len(me) - 1):
            pax.text((i + 0.5) * n_score - 0.5, 0.95, f"{me[i]:.3g}-{me[i + 1]:.3g}", transform=pax.get_xaxis_transform(),
                     ha="center", va="top", fontsize="x-small", color="0.2", bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1})
        inner = "score" + (f" x {split} variation" if split > 1 else "")  # short: it must fit the axis' width
        pax.set_xlabel(f"Bin (${resonant}$ [{unit}] x {inner}; score increasing)")
    else:
        pax.set_xticks(np.arange(n))
        pax.set_xticklabels([f"{me[i]:.3g}" for i in range(n)], fontsize="x-small")
        pax.set_xlabel(f"${resonant}$ bin low edge [{unit}]")
    ax.set_xlabel("")
    return ax, pax


# ---------------------------------------------------------------------------------------------
# feature closure in the signal region
# ---------------------------------------------------------------------------------------------


def _sample_joint(joint, n: int, window: tuple[float, float], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(m, x) from mass_pdf restricted to ``window`` times the nominal generator p(x | m)."""
    import zfit

    zfit.settings.set_seed(seed)
    m = np.asarray(joint.mass_pdf.sample(n, limits=window).value()).ravel()
    x = joint.generator.sample(n, m[:, None], seed=seed)
    return m, x


def _window_fraction(pdf, window: tuple[float, float], n_sub: int = 64) -> float:
    return float(_expected_counts(pdf, np.array(window, dtype=float), 1.0, n_sub)[0])


def plot_feature_closure(
    model: GBIModel,
    events: Events,
    windows: Windows,
    *,
    fig: mpl.figure.Figure | None = None,
    bins: int = 30,
    n_generated: int = 200_000,
    seed: int = 0,
    experiment: str | None = "CMS",
    text: str = "Simulation",
    labels: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Feature distributions of the signal-region data against the generated background (the
    sideband-interpolation closure) and background + fitted signal, with data / model ratio
    panels; each ratio panel's right-hand axis (0 to 1) shows the background's share of the
    model per bin. Model histograms are normalized to the post-fit yields in the signal region;
    the generator is the nominal one (nuisances at 0).

    Returns:
        The axes array ``(2, n_features)``: main panels, then ratio panels.
    """
    feats = list(model.features)
    n_f = len(feats)
    n_col = min(n_f, 2)
    n_row = -(-n_f // n_col)
    if fig is None:
        fig = plt.figure(figsize=(7 * n_col, 6.5 * n_row))
    outer = fig.add_gridspec(n_row, n_col, hspace=0.3, wspace=0.42)  # room for the share's right-hand axis label
    axs = np.empty((2, n_f), dtype=object)
    for j in range(n_f):
        inner = outer[j // n_col, j % n_col].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
        axs[0, j] = fig.add_subplot(inner[0])
        axs[1, j] = fig.add_subplot(inner[1], sharex=axs[0, j])
        axs[0, j].tick_params(labelbottom=False)
    sr = windows.signal_region
    m = np.asarray(events[model.resonant], dtype=float)
    sel = windows.in_signal_region(m)
    x_data = np.column_stack([np.asarray(events[f], dtype=float)[sel] for f in feats])
    n_b = float(model.n_bkg.value()) * _window_fraction(model.background.mass_pdf, sr)
    n_s = max(model.signal_yield, 0.0) * _window_fraction(model.signal.mass_pdf, sr)
    _, xb = _sample_joint(model.background, n_generated, sr, seed)
    _, xs = _sample_joint(model.signal, max(n_generated // 4, 1000), sr, seed + 1)
    bounds = model.background.generator.bounds
    labels = dict(labels or {})
    for j, f in enumerate(feats):
        ax, rax = axs[0, j], axs[1, j]
        axis = hist.axis.Regular(bins, *bounds[f], name=f, label=labels.get(f, f))
        hd = hist.Hist(axis, storage=hist.storage.Weight()).fill(x_data[:, j])
        hb = hist.Hist(axis, storage=hist.storage.Weight()).fill(xb[:, j], weight=np.full(len(xb), n_b / len(xb)))
        hs = hist.Hist(axis, storage=hist.storage.Weight()).fill(xs[:, j], weight=np.full(len(xs), n_s / len(xs)))
        hep.histplot(hb, ax=ax, histtype="step", color="#3f90da", lw=1.5, label="Generated background")
        hep.histplot(hb + hs, ax=ax, histtype="step", color="#e42536", lw=1.2, ls="--", label="Background + fitted signal")
        hep.histplot(hd, ax=ax, histtype="errorbar", label="Data (SR)", **_DATA)
        ax.set_ylim(0, 1.9 * max(hd.values().max(), (hb + hs).values().max()))
        ax.set_ylabel(f"Events / {axis.widths[0]:.3g}", fontsize="small")
        ax.set_xlabel("")
        ax.tick_params(labelsize="small")
        if j == 0:
            ax.legend(loc="best", fontsize="x-small")  # 1.9x headroom: the three-line legend takes the top third
            _label(ax, experiment, text)
        tot = (hb + hs).values()
        ok = tot > 0
        r = np.where(ok, hd.values() / np.where(ok, tot, 1.0), np.nan)
        r_err = np.where(ok, np.sqrt(hd.variances()) / np.where(ok, tot, 1.0), 0.0)
        rb = np.where(ok, hb.values() / np.where(ok, tot, 1.0), np.nan)
        rax.errorbar(axis.centers[ok], r[ok], yerr=r_err[ok], fmt="o", color="black", ms=3, zorder=3)
        # the share (0 to 1) on its own right-hand axis: on the ratio's 0.7-1.3 it was off the
        # panel wherever the signal dominates (the CMS dimuons' peak region)
        sax = rax.twinx()
        sax.step(axis.edges, np.r_[rb, rb[-1]], where="post", color="#3f90da", lw=1.2)
        sax.set_ylim(0, 1.1)
        sax.set_yticks([0, 0.5, 1])
        sax.tick_params(labelsize="x-small", colors="#3f90da")
        sax.set_ylabel("Bkg. share", fontsize="xx-small", color="#3f90da")  # an axis label, not a legend over the points
        rax.set_zorder(sax.get_zorder() + 1)  # the data points over the share's line
        rax.patch.set_visible(False)
        rax.axhline(1, color="black", lw=0.8)
        rax.set_ylim(0.7, 1.3)
        rax.set_ylabel("Data / model", fontsize="x-small")
        rax.tick_params(labelsize="small")
        rax.set_xlabel(labels.get(f, f), fontsize="small")
    return axs


# ---------------------------------------------------------------------------------------------
# scans and limits
# ---------------------------------------------------------------------------------------------


def plot_profile_scan(values: np.ndarray, delta: np.ndarray, *, ax=None, poi_label: str = r"$N_S$", experiment: str | None = "CMS", text: str = "Simulation"):
    """-2 Delta ln L of the POI with the 1 and 2 sigma lines (at 1 and 4)."""
    ax = ax or plt.subplots(figsize=(8, 6))[1]
    values = np.asarray(values, float)
    delta = np.array([np.nan if d is None else d for d in delta], float)  # None/inf: no likelihood there
    delta[~np.isfinite(delta)] = np.nan
    order = np.argsort(values)
    ax.plot(values[order], delta[order], "-", color="#3f90da", lw=2, label="Profile likelihood")
    ax.plot(values[order], delta[order], "o", color="#3f90da", ms=4)
    for level, name in ((1, r"$1\sigma$"), (4, r"$2\sigma$")):
        ax.axhline(level, color="0.4", ls="--", lw=1)
        ax.text(values.min(), level, f" {name}", va="bottom", ha="left", fontsize="small", color="0.3")
    top = float(np.nanmax(delta)) if np.any(np.isfinite(delta)) else 0.0
    ok = np.isfinite(delta[order])
    if np.any(ok) and not ok[0]:  # a POI so negative that the model density is negative for some event
        ax.axvspan(values[order][0], values[order][np.argmax(ok)], color="0.85", lw=0, label="no likelihood (density < 0 for some event)")
    ax.set_ylim(0, max(6.0, 1.1 * min(top, 25)))
    ax.set_xlim(values.min(), values.max())
    ax.set_xlabel(poi_label)
    ax.set_ylabel(r"$-2\,\Delta\ln L$")
    ax.legend(loc="upper right", fontsize="small")
    _label(ax, experiment, text)
    return ax


def plot_neyman(interval: Any, *, ax=None, poi_label: str = r"$N_S$", experiment: str | None = "CMS", text: str = "Simulation"):
    """The Neyman construction of :func:`zfit_gbi.toys.feldman_cousins`: the data's statistic
    at each tested value, the toys' critical values (with their toy-count range), the interval,
    and for comparison the asymptotic (Wilks) critical value."""
    from scipy.stats import chi2

    ax = ax or plt.subplots(figsize=(8, 6))[1]
    v = np.asarray(interval.values, float)
    t = np.asarray(interval.t_observed, float)
    c = np.asarray(interval.critical, float)
    rng = np.asarray(interval.critical_range, float).reshape(-1, 2)
    ax.axvspan(interval.low, interval.high, color="#94a4a2", alpha=0.35, lw=0,
               label=f"Feldman-Cousins {interval.cl:.1%} CL: [{interval.low:.3g}, {interval.high:.3g}]")
    ax.fill_between(v, rng[:, 0], rng[:, 1], color="#e42536", alpha=0.2, lw=0, step=None)
    ax.plot(v, c, "s-", color="#e42536", ms=5, lw=1.5, label=f"critical value from toys ({min(interval.n_toys)}+ per point)")
    ax.plot(v, np.minimum(t, 1e6), "o-", color="#3f90da", ms=5, lw=2, label="data")
    w = float(chi2.ppf(interval.cl, 1))
    ax.axhline(w, color="0.4", ls="--", lw=1, label=rf"asymptotic ($\chi^2_1$) critical value {w:.2f}")
    if np.isfinite(interval.poi_hat):
        ax.axvline(max(interval.poi_hat, v.min()), color="#3f90da", ls=":", lw=1)
    # the region that decides the interval: the critical values and where the data crosses them
    ax.set_ylim(0, max(3.0, 3.0 * float(np.max(rng)), 1.5 * w))
    ax.set_xlim(v.min(), v.max())
    ax.set_xlabel(poi_label)
    ax.set_ylabel(r"$t = -2\,\ln\,\lambda$ (bounded)")
    ax.legend(loc="upper center", fontsize="x-small", frameon=True, framealpha=0.9, edgecolor="none")
    _label(ax, experiment, text)
    return ax


def plot_mixture_scan(scan: Any, *, ax=None, experiment: str | None = "CMS", text: str = "Simulation", label: str = "R-ANODE (held out)"):
    """The R-ANODE scan (:class:`zfit_gbi.ranode.MixtureScan`): 2 (LL_max - LL) of the scan
    points against the signal yield w N_SR in the signal region, the parabola fitted to the
    highest points, and the interval (statistical and training-noise errors, and the
    background generator's error where the scan has one)."""
    ax = ax or plt.subplots(figsize=(8, 6))[1]
    n = scan.n_events
    fit = scan.parabola()
    w_hat, a = fit.w_hat, fit.curvature
    ref = fit.ll_hat if np.isfinite(a) else float(scan.log_likelihood.max())  # 0 at the fitted maximum
    y = 2 * (ref - scan.log_likelihood)  # points above the parabola (training noise) lie below 0
    lo, hi = scan.interval()
    ax.plot(scan.w * n, y, "o", color="#3f90da", ms=6, label=f"{label}, each point its own flows")
    if np.isfinite(a):
        span = max(hi - lo, 4 * (hi - w_hat), 1e-3)
        ww = np.linspace(max(w_hat - 3 * span, scan.w[0]), min(w_hat + 3 * span, scan.w[-1]), 200)
        if fit.kind == "linear":  # through LL(0) = 0
            ww = np.linspace(0.0, min(max(3 * hi, 2 * w_hat), scan.w[-1]), 200)
        yy = 2 * (ref - fit.at(ww))
        shape = "in w through LL(0) = 0" if fit.kind == "linear" else "in sqrt(w)"  # mathtext sqrt warns with the mplhep fonts
        ax.plot(ww * n, yy, "-", color="#3f90da", lw=1.5,
                label=f"parabola {shape}, point scatter {fit.scatter:.1f} in ln L")
    bg = float(getattr(scan, "background_error", 0.0))
    ax.axvspan(lo * n, hi * n, color="#94a4a2", alpha=0.35, lw=0,
               label=rf"$\hat N_S$ = {scan.w_hat * n:.0f} [{lo * n:.0f}, {hi * n:.0f}]"
               + (rf", background generator $\pm${bg * n:.0f} in it" if bg > 0 else ""))
    ax.axhline(1, color="0.4", ls="--", lw=1)
    ymax = max(6.0, 1.2 * float(np.sort(y)[min(4, len(y) - 1)]))
    keep = y <= ymax
    ax.set_ylim(min(0.0, float(y.min())) - 0.05 * ymax, 2.0 * ymax)  # headroom for the legend
    xs = scan.w[keep] * n
    ax.set_xlim(0.9 * min(xs.min(), lo * n), 1.1 * max(xs.max(), hi * n))
    ax.set_xlabel(r"Signal yield in the signal region $w\,N_{SR}$")
    ax.set_ylabel(r"$2\,(\ln L_{max} - \ln L)$, held out")
    ax.plot([], [], " ", label=f"background only (w = 0): $q_0$ = {scan.q0:.1f}")
    ax.legend(loc="upper left", fontsize="x-small", frameon=True, framealpha=0.9, edgecolor="none")  # over any point beneath
    _label(ax, experiment, text)
    return ax


def plot_null_calibration(null: Any, t: float, *, ax=None, experiment: str | None = "CMS", text: str = "Simulation"):
    """The background-only distribution of the R-ANODE statistic t = 2 max LL
    (:class:`zfit_gbi.ranode.NullCalibration`) with the observed t and the fitted tail
    (1 - f0) c chi2_1 (t / c) scaled to the histogram; the legend gives the calibrated p-value."""
    from scipy.stats import chi2

    ax = ax or plt.subplots(figsize=(8, 6))[1]
    tn = np.asarray(null.t_null, dtype=float)
    hi = max(float(tn.max()), t, 1.0) * 1.15
    lo = min(float(tn.min()), t, 0.0)
    edges = np.linspace(lo, hi, 21)
    h = hist.Hist.new.Reg(20, lo, hi, name="t").Double().fill(np.clip(tn, lo, hi))
    hep.histplot(h, ax=ax, histtype="fill", color="#94a4a2", alpha=0.6, label=f"background-only toys ({tn.size})")
    c, f0 = null.scale, float(np.mean(tn <= 0))
    if np.isfinite(c):
        tt = np.linspace(max(edges[0], 1e-3), hi, 300)
        ax.plot(tt, (1 - f0) * tn.size * np.diff(edges)[0] * chi2.pdf(tt / c, 1) / c, color="#3f90da", lw=1.5,
                label=rf"fitted tail $(1-f_0)\,c\,\chi^2_1$, c = {c:.2f}")
    p = null.p_value(t)
    rel = "<" if p["bound"] else "="
    ax.axvline(t, color="#bd1f01", lw=2, label=f"observed t = {t:.1f}: p {rel} {p['p0']:.3g} (Z {'>' if p['bound'] else '='} {p['significance']:.2f})")
    ax.set_xlabel(r"$t = 2\,\max_w \ln L(w)/L(0)$, held out")
    ax.set_ylabel("Pseudo-experiments")
    ax.set_ylim(0, max(float(h.values().max()), 1.0) * 2.2)  # the histogram sets the scale (the chi2_1 density diverges at 0)
    ax.legend(loc="upper right", fontsize="x-small", frameon=True, framealpha=0.9, edgecolor="none")  # over the observed line
    _label(ax, experiment, text)
    return ax


def plot_cls(limit: LimitResult, *, ax=None, poi_label: str = r"$N_S$", experiment: str | None = "CMS", text: str = "Simulation"):
    """CLs against the POI (the hypothesis-test inversion): observed, expected median with
    +-1 and +-2 sigma bands, the 1 - CL line and the limits."""
    ax = ax or plt.subplots(figsize=(8, 6))[1]
    sc = limit.scan
    x = np.asarray(sc["poi"], float)
    order = np.argsort(x)
    x = x[order]

    def col(k):
        return np.asarray(sc[k], float)[order]

    if "cls_expected_m2" in sc:
        ax.fill_between(x, col("cls_expected_m2"), col("cls_expected_p2"), color="#ffdf3a", label=r"Expected $\pm 2\sigma$", lw=0)
        ax.fill_between(x, col("cls_expected_m1"), col("cls_expected_p1"), color="#5ac85a", label=r"Expected $\pm 1\sigma$", lw=0)
    ax.plot(x, col("cls_expected"), "k--", lw=1.5, label=f"Expected (median {limit.expected[2]:.3g})")
    ax.plot(x, col("cls_observed"), "ko-", ms=4, lw=1.5, label=f"Observed (limit {limit.observed:.3g})")
    alpha = 1 - limit.cl
    ax.axhline(alpha, color="#e42536", lw=1.2, label=f"CLs = {alpha:.2g}")
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(poi_label)
    ax.set_ylabel("CLs")
    ax.legend(loc="upper right", fontsize="small")
    _label(ax, experiment, text)
    return ax


def plot_brazil(
    masses: Sequence[float],
    observed: Sequence[float],
    expected: Sequence[Sequence[float]],
    *,
    ax=None,
    cl: float = 0.95,
    mass_label: str = r"$m$ [TeV]",
    limit_label: str = r"Upper limit on $N_S$",
    experiment: str | None = "CMS",
    text: str = "Simulation",
    log: bool = False,
):
    """The Brazil band: the upper limit against the hypothesised mass.

    Args:
        expected: shape ``(n_masses, 5)``: -2, -1 sigma, median, +1, +2 sigma per mass.
    """
    ax = ax or plt.subplots(figsize=(8, 6))[1]
    m = np.asarray(masses, float)
    e = np.asarray(expected, float).reshape(len(m), 5)
    ax.fill_between(m, e[:, 0], e[:, 4], color="#ffdf3a", label=r"Expected $\pm 2\sigma$", lw=0)
    ax.fill_between(m, e[:, 1], e[:, 3], color="#5ac85a", label=r"Expected $\pm 1\sigma$", lw=0)
    ax.plot(m, e[:, 2], "k--", lw=1.5, label="Expected")
    ax.plot(m, np.asarray(observed, float), "ko-", ms=4, lw=1.5, label="Observed")
    if len(m) > 1:
        ax.set_xlim(m.min(), m.max())
    ax.set_xlabel(mass_label)
    ax.set_ylabel(f"{limit_label} ({100 * cl:g} % CL)")
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, 1.6 * np.nanmax(np.r_[e[:, 4], np.asarray(observed, float)]))
    ax.legend(loc="upper right", fontsize="small", ncol=2)
    _label(ax, experiment, text)
    return ax


def plot_p0_scan(masses: Sequence[float], p0: Sequence[float], *, ax=None, mass_label: str = r"$m$ [TeV]", experiment: str | None = "CMS", text: str = "Simulation", max_sigma: int = 5):
    """Local p0 against the hypothesised mass, log scale, with 1..max_sigma reference lines."""
    from scipy.stats import norm

    ax = ax or plt.subplots(figsize=(8, 6))[1]
    m, p = np.asarray(masses, float), np.clip(np.asarray(p0, float), 1e-300, 1.0)
    ax.plot(m, p, "ko-", ms=4, lw=1.5, label="Observed local $p_0$")
    ax.set_yscale("log")
    lo = min(p.min() * 0.3, norm.sf(max_sigma) * 0.3)
    z_max = float(norm.isf(lo))
    step = 1 if z_max <= max_sigma + 1 else int(np.ceil(z_max / max_sigma))  # e.g. 5, 10, 15 sigma for huge excesses
    for k in range(step, int(z_max) + 1, step):
        pk = norm.sf(k)
        if pk >= lo:
            ax.axhline(pk, color="#e42536", lw=0.8, ls="--")
            ax.text(m.max(), pk, f"{k}$\\sigma$ ", ha="right", va="bottom", fontsize="small", color="#e42536")
    ax.set_ylim(lo, 2.0)
    if len(m) > 1:
        ax.set_xlim(m.min(), m.max())
    ax.set_xlabel(mass_label)
    ax.set_ylabel("Local $p_0$")
    ax.legend(loc="lower left", fontsize="small")
    _label(ax, experiment, text)
    return ax


# ---------------------------------------------------------------------------------------------
# generators and classifiers
# ---------------------------------------------------------------------------------------------


def plot_training(histories: TrainingHistory | Sequence[TrainingHistory], *, ax=None, title: str | None = None, experiment: str | None = None,
                  text: str = "Simulation"):
    """Train (solid) and validation (dashed) loss per epoch for every ensemble member; the
    kept epoch is marked. ``title`` heads the legend (above the axes sits the experiment's label)."""
    hs = [histories] if hasattr(histories, "train_loss") else list(histories)
    ax = ax or plt.subplots(figsize=(8, 6))[1]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, h in enumerate(hs):
        c = colors[i % len(colors)]
        ep = np.arange(1, len(h.train_loss) + 1)
        name = f"member {i}" if len(hs) > 1 else "generator"
        ax.plot(ep, h.train_loss, "-", color=c, lw=1.5, label=f"{name}: train")
        ax.plot(ep, h.val_loss, "--", color=c, lw=1.5, label=f"{name}: validation")
        if h.best_epoch >= 0:
            ax.plot(h.best_epoch + 1, h.val_loss[h.best_epoch], "*", color=c, ms=12)
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("Epoch")
    if all(h.objective == "mixture" for h in hs):  # trained inside a mixture: its likelihood
        ax.set_ylabel(r"Mixture loss $-\langle\ln[w\,q + (1-w)\,b]\rangle$")
    else:
        ax.set_ylabel(r"Loss $-\langle\ln p(x\,|\,m)\rangle$")
    ncol = 2 if len(hs) > 2 else 1
    rows = math.ceil(2 * len(hs) / ncol) + (1 if title else 0)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.12 * rows * (hi - lo))  # room for the legend above the curves
    ax.legend(loc="upper right", fontsize="xx-small" if ncol == 2 else "x-small", ncol=ncol, title=title, title_fontsize="small")
    _label(ax, experiment, text)
    return ax


def plot_roc(labels: np.ndarray, scores: Mapping[str, np.ndarray] | np.ndarray, *, axes=None, weights: np.ndarray | None = None,
             min_background: int = 20):
    """ROC (background rejection 1/eps_B vs signal efficiency, log) and SIC
    (eps_S / sqrt(eps_B)) of one or several classifier scores. Returns ``(roc_ax, sic_ax)``.

    Points where fewer than ``min_background`` background events pass the cut are not drawn
    (their eps_B is Poisson noise)."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    rax, sax = axes
    y = np.asarray(labels).astype(bool)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    items = scores.items() if isinstance(scores, Mapping) else [("classifier", scores)]
    for name, s in items:
        order = np.argsort(-np.asarray(s, float))
        ws, wb = np.cumsum((w * y)[order]), np.cumsum((w * ~y)[order])
        eff_s, eff_b = ws / ws[-1], wb / wb[-1]
        ok = (eff_b > 0) & (np.cumsum(~y[order]) >= min(min_background, int((~y).sum())))
        auc = float(np.trapezoid(eff_s, eff_b))
        rax.plot(eff_s[ok], 1 / eff_b[ok], lw=1.5, label=f"{name} (AUC {auc:.3f})")
        sax.plot(eff_s[ok], eff_s[ok] / np.sqrt(eff_b[ok]), lw=1.5, label=name)
    e = np.linspace(1e-3, 1, 200)
    rax.plot(e, 1 / e, color="0.5", ls=":", label="random")
    sax.plot(e, np.sqrt(e), color="0.5", ls=":", label="random")
    rax.set_yscale("log")
    rax.set_xlabel(r"Signal efficiency $\epsilon_S$")
    rax.set_ylabel(r"Background rejection $1/\epsilon_B$")
    sax.set_xlabel(r"Signal efficiency $\epsilon_S$")
    sax.set_ylabel(r"SIC $\epsilon_S\,/\,\epsilon_B^{1/2}$")
    for a in axes:
        a.set_xlim(0, 1)
    lo, hi = rax.get_ylim()
    rax.set_ylim(lo, hi * 30)  # room for the legend above the curves (one legend: same colours in both panels)
    rax.legend(loc="upper right", fontsize="x-small")
    return rax, sax

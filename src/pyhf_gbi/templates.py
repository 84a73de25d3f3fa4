"""Binned templates (``hist.Hist``) from the learned generators and the signal simulation.

The binned route looks only at the signal region (SR). Per bin of the resonant variable m
(and optionally of the learned score s(x, m) = log p_S(x | m) - log p_B(x | m), the optimal
one-dimensional projection of the features for a signal-vs-background test):

* **background**: ``n_generated`` events drawn from the background model itself, m from the
  sideband-fitted mass shape p_B(m) restricted to the SR and x from the background generator
  at those masses, weighted to the sideband-fit expectation N_B(SR) (:func:`sideband_expectation`);
  the Monte Carlo error per bin is ``sqrt(sum w^2)`` (a pyhf ``staterror``);
* **generator errors**: the same generated events reweighted by the variation at theta_j = +-1
  (for the eigen-variations exp(+-v_j(x)) / Z, exactly the unbinned route's density at
  theta_j = +-1), i.e. shape-only up/down templates;
* **bins of the variations** (``variation_bins`` > 1): every (m, score) bin split further by
  each variation's per-event direction u_j(x, m) = [log f_j(+1) - log f_j(-1)] / 2 (for an
  eigen-variation u_j = v_j), at its quantiles among the generated background of that score
  bin. Binned in the score alone, a variation that lives *within* the score bins (members
  disagreeing at x that are not especially signal-like) is seen only through the bins'
  averages: the bulk bins hardly constrain it, and at POI = 0 it moves to fill the top score
  bins with what is signal. The unbinned fit sees every event's own u_j; these bins give the
  binned fit most of that information back (``benchmarks/binned_vs_unbinned.py``);
* **signal**: the signal-simulation events (moved to a hypothesised mass as in the unbinned
  route), weighted so that one POI unit is ``signal_scale`` signal events in the fit window;
* **data**: the SR events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import hist
import numpy as np

from zfit_gbi.data import DataError, Events, Windows

__all__ = ["BinnedTemplates", "Binning", "SidebandFit", "make_templates", "sideband_expectation"]


@dataclass(frozen=True)
class Binning:
    """Bins in m across the signal region, optionally times bins of the learned score, and
    optionally each (m, score) bin split by the generator variations' directions.

    ``score_edges`` are the inner edges (``n_score - 1`` values); the outer score bins are open,
    so every SR event has a bin. ``variation_edges`` (shape ``(J, n_score, n_var - 1)``) are
    the inner edges of variation j's direction u_j within each score bin (open outer bins);
    the ``n_var ** J`` combinations make the split. The flat bin index is
    ``(i_mass * n_score + i_score) * n_split + i_split``, ``i_split = sum_j i_j n_var^j``.
    """

    mass_edges: np.ndarray  # (n_mass + 1,)
    score_edges: np.ndarray = field(default_factory=lambda: np.empty(0))  # (n_score - 1,)
    variation_edges: np.ndarray = field(default_factory=lambda: np.empty((0, 1, 0)))  # (J, n_score, n_var - 1)

    @property
    def n_mass(self) -> int:
        return len(self.mass_edges) - 1

    @property
    def n_score(self) -> int:
        return len(self.score_edges) + 1

    @property
    def n_var(self) -> int:
        """Bins per variation direction (1: no split)."""
        return self.variation_edges.shape[2] + 1 if self.variation_edges.shape[0] else 1

    @property
    def n_split(self) -> int:
        """Bins each (m, score) bin is split into: ``n_var ** J``."""
        return self.n_var ** self.variation_edges.shape[0]

    @property
    def per_mass(self) -> int:
        """Bins per mass bin: ``n_score * n_split``."""
        return self.n_score * self.n_split

    @property
    def n_bins(self) -> int:
        return self.n_mass * self.per_mass

    def index(self, m: np.ndarray, score: np.ndarray | None = None, directions: np.ndarray | None = None) -> np.ndarray:
        """Flat bin index per event, shape ``(n,)``; ``-1`` outside the mass range.

        ``directions`` (shape ``(n, J)``) are the events' u_j; required when the binning splits.
        """
        m = np.asarray(m, dtype=float)
        im = np.searchsorted(self.mass_edges, m, side="right") - 1
        im = np.where(m == self.mass_edges[-1], self.n_mass - 1, im)
        inside = (im >= 0) & (im < self.n_mass)
        js = np.zeros_like(im) if score is None or self.n_score == 1 else np.searchsorted(self.score_edges, score, side="right")
        flat = im * self.n_score + js
        if self.n_split > 1:
            if directions is None:
                msg = "this binning splits by the generator variations: pass the events' directions"
                raise ValueError(msg)
            u = np.asarray(directions, dtype=float).reshape(len(m), -1)
            split = np.zeros_like(im)
            for j, edges in enumerate(self.variation_edges):
                ij = np.zeros_like(im)
                for k in range(self.n_score):  # each score bin has its own edges
                    sel = js == k
                    ij[sel] = np.searchsorted(edges[k], u[sel, j], side="right")
                split += ij * self.n_var**j
            flat = flat * self.n_split + split
        return np.where(inside, flat, -1)

    def histogram(self, idx: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sum of weights and of squared weights per flat bin, shapes ``(n_bins,)``."""
        w = np.ones(len(idx)) if weights is None else np.asarray(weights, dtype=float)
        ok = idx >= 0
        return (np.bincount(idx[ok], w[ok], minlength=self.n_bins)[: self.n_bins],
                np.bincount(idx[ok], w[ok] ** 2, minlength=self.n_bins)[: self.n_bins])

    def to_hist(self, values: np.ndarray, variances: np.ndarray | None = None, *, resonant: str = "m") -> hist.Hist:
        """A ``hist.Hist`` over (m[, score bin]) with weighted storage."""
        axes = [hist.axis.Variable(self.mass_edges, name=resonant, label=resonant)]
        if self.n_score > 1:
            axes.append(hist.axis.Integer(0, self.n_score, name="score_bin", label="score bin (increasing log p_S/p_B)"))
        if self.n_split > 1:
            axes.append(hist.axis.Integer(0, self.n_split, name="variation_bin", label="bin of the generator variations' directions"))
        h = hist.Hist(*axes, storage=hist.storage.Weight())
        shape = (self.n_mass, *(n for n in (self.n_score, self.n_split) if n > 1))
        h.view().value = np.asarray(values, float).reshape(shape)
        h.view().variance = (np.zeros(len(values)) if variances is None else np.asarray(variances, float)).reshape(shape)
        return h


@dataclass(frozen=True)
class SidebandFit:
    """The background mass shape fitted to the sideband masses only (the SR blinded).

    ``expected`` = N_SB * I_SR / I_SB is the background expectation in the SR; ``rel_error``
    combines the Poisson error of N_SB and the shape parameters' covariance (propagated
    numerically through I_SR / I_SB).
    """

    n_sideband: float
    expected: float
    rel_error: float
    values: dict[str, float]
    errors: dict[str, float]

    def __repr__(self) -> str:
        return f"SidebandFit(N_SB={self.n_sideband:g} -> N_B(SR) = {self.expected:.1f} +- {self.rel_error:.1%})"


def sideband_expectation(mass_pdf: Any, m_sidebands: np.ndarray, windows: Windows, weights: np.ndarray | None = None) -> SidebandFit:
    """Fit the (fit-window-normalized) mass shape to sideband masses with the SR excluded from
    its normalization (-sum w log p(m_i) + sum w log(1 - I_SR)) and extrapolate into the SR.

    The shape's floating parameters are left at the sideband-fit values.

    Args:
        mass_pdf: The 1-D zfit background mass shape on the fit window (e.g. a GBI model's
            ``background.mass_pdf``).
        m_sidebands: Sideband masses, shape ``(n,)``.
    """
    import zfit

    from zfit_gbi._tf import tf

    m = np.asarray(m_sidebands, dtype=float)
    if m.size < 10:
        msg = f"only {m.size} sideband events: too few for the sideband fit of the background mass shape"
        raise DataError(msg)
    if not np.all(windows.in_sidebands(m)):
        msg = "sideband_expectation: some masses lie outside the sidebands"
        raise DataError(msg)
    w = np.ones_like(m) if weights is None else np.asarray(weights, dtype=float)
    params = list(mass_pdf.get_params(floating=True))
    obs = mass_pdf.space.obs[0]
    data = zfit.Data.from_numpy(obs=mass_pdf.space, array=m[:, None])
    sr = zfit.Space(obs, limits=windows.signal_region)
    wt = tf.constant(w)
    n_sb = float(w.sum())

    def nll(params=None):
        lp = tf.math.log(mass_pdf.pdf(data))
        i_sr = mass_pdf.integrate(sr)[0]
        return -tf.reduce_sum(wt * lp) + n_sb * tf.math.log(1.0 - i_sr)

    loss = zfit.loss.SimpleLoss(nll, params, errordef=0.5)
    result = zfit.minimize.Minuit(tol=1e-4, gradient="zfit").minimize(loss)
    if not result.valid:
        msg = f"the sideband fit of the background mass shape did not converge ({result.message or 'invalid minimum'})"
        raise RuntimeError(msg)
    cov = np.asarray(result.covariance(params))
    best = np.array([float(p.value()) for p in params])

    def ratio(x: np.ndarray) -> float:
        zfit.param.set_values(params, x)
        i_sr = float(mass_pdf.integrate(sr)[0])
        return i_sr / (1.0 - i_sr)

    r0 = ratio(best)
    grad = np.zeros(len(params))
    for j in range(len(params)):
        h = 1e-3 * max(np.sqrt(cov[j, j]), 1e-12)
        up, dn = best.copy(), best.copy()
        up[j] += h
        dn[j] -= h
        grad[j] = (ratio(up) - ratio(dn)) / (2 * h)
    zfit.param.set_values(params, best)
    var_r = float(grad @ cov @ grad)
    rel = float(np.sqrt(1.0 / n_sb + var_r / r0**2))
    errors = {p.name: float(np.sqrt(cov[j, j])) for j, p in enumerate(params)}
    return SidebandFit(n_sideband=n_sb, expected=n_sb * r0, rel_error=rel, values={p.name: float(b) for p, b in zip(params, best, strict=True)},
                       errors=errors)


@dataclass
class BinnedTemplates:
    """Everything a HistFactory channel needs, per flat bin (shapes ``(n_bins,)``).

    ``variations`` maps a nuisance name to its background (up, down) templates at theta = +-1.
    ``signal_scale`` is the number of signal events in the fit window per POI unit.
    ``spurious_width`` (signal events in the fit window; 0: none) is the generator's error on
    the signal yield (:class:`zfit_gbi.nuisances.SpuriousSignal`), a constrained parameter
    ``spurious_name`` that adds ``theta * spurious_width / signal_scale`` times the signal
    template (:func:`pyhf_gbi.workspace.build_spec`).
    """

    binning: Binning
    resonant: str
    data: np.ndarray
    signal: np.ndarray
    signal_var: np.ndarray
    background: np.ndarray
    background_var: np.ndarray
    sideband: SidebandFit
    variations: dict[str, tuple[np.ndarray, np.ndarray]]
    signal_scale: float
    n_generated: int
    poi_name: str = "n_sig"
    spurious_width: float = 0.0
    spurious_name: str = "gen_spurious"

    def hists(self) -> dict[str, hist.Hist]:
        """The templates as ``hist.Hist`` (weighted storage: values and MC variances)."""
        b = self.binning
        out = {"data": b.to_hist(self.data, self.data, resonant=self.resonant),
               "signal": b.to_hist(self.signal, self.signal_var, resonant=self.resonant),
               "background": b.to_hist(self.background, self.background_var, resonant=self.resonant)}
        for name, (up, down) in self.variations.items():
            out[f"{name}_up"] = b.to_hist(up, resonant=self.resonant)
            out[f"{name}_down"] = b.to_hist(down, resonant=self.resonant)
        return out

    def __repr__(self) -> str:
        split = f" x {self.binning.n_split} variation" if self.binning.n_split > 1 else ""
        return (f"BinnedTemplates({self.binning.n_mass} mass x {self.binning.n_score} score{split} bins; data {self.data.sum():.0f}, "
                f"background {self.background.sum():.1f} (+-{self.sideband.rel_error:.1%}, {self.n_generated} generated), "
                f"signal {self.signal.sum():.3g} per POI unit, variations {list(self.variations)})")


def _sample_masses(mass_pdf: Any, lo: float, hi: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF sampling of a 1-D zfit PDF restricted to [lo, hi] (fine grid, linear CDF)."""
    grid = np.linspace(lo, hi, 4097)
    dens = np.asarray(mass_pdf.pdf(grid), dtype=float)
    mid = 0.5 * (dens[1:] + dens[:-1]) * np.diff(grid)
    cdf = np.concatenate([[0.0], np.cumsum(mid)])
    cdf /= cdf[-1]
    return np.interp(rng.random(n), cdf, grid)


def _score_edges(score_sig: np.ndarray, w_sig: np.ndarray, score_bkg: np.ndarray, n_bins: int, min_bkg: int) -> np.ndarray:
    """Inner edges at quantiles of the (weighted) signal score; adjacent bins merged until every
    bin holds at least ``min_bkg`` generated background events."""
    order = np.argsort(score_sig)
    cw = np.cumsum(w_sig[order])
    cw /= cw[-1]
    edges = np.interp(np.arange(1, n_bins) / n_bins, cw, score_sig[order])
    edges = np.unique(edges)
    while edges.size:
        counts = np.bincount(np.searchsorted(edges, score_bkg, side="right"), minlength=edges.size + 1)
        k = int(np.argmin(counts))
        if counts[k] >= min_bkg:
            break
        edges = np.delete(edges, min(k, edges.size - 1))  # merge the sparse bin with a neighbour
    return edges


def make_templates(
    *,
    resonant: str,
    features: Sequence[str],
    windows: Windows,
    mass_pdf: Any,
    background_generator: Any,
    signal_generator: Any,
    data: Events,
    sidebands: Events,
    simulation: Events,
    variation: Any = None,
    mass_bins: int = 8,
    score_bins: int = 0,
    n_generated: int = 200_000,
    signal_scale: float = 1.0,
    signal_mass_hypothesis: float | None = None,
    poi_name: str = "n_sig",
    min_bkg_per_bin: int = 50,
    variation_bins: int = 1,
    seed: int = 0,
) -> BinnedTemplates:
    """The signal-region templates of the binned route (see the module docstring).

    Args:
        resonant, features: Column names (the generators' context and features).
        mass_pdf: The background mass shape (zfit, on the fit window); fitted here to the
            sidebands (its parameters are restored afterwards).
        background_generator, signal_generator: p_B(x | m) and p_S(x | m).
        data: Events in the fit window (only those in the SR are binned).
        sidebands: Sideband events (their masses fix the background normalization).
        simulation: Signal simulation in the fit window (``weights`` respected).
        variation: A generator-error variation (:mod:`zfit_gbi.nuisances`) of the background
            generator: one up/down template pair per parameter.
        mass_bins: Equal-width bins in m across the SR.
        score_bins: Bins of the learned score (0 or 1: none); edges at quantiles of the
            signal's score, merged where fewer than ``min_bkg_per_bin`` generated background
            events would fall.
        n_generated: Generated background events (their MC error enters as ``staterror``).
        signal_scale: Signal events in the fit window per POI unit (1 for the yield,
            ``reference_yield`` for mu).
        signal_mass_hypothesis: Move the simulation to this mass (m -> m * m_hyp / median),
            as the unbinned route moves its signal shape.
        variation_bins: Split every (m, score) bin into this many bins of each variation's
            direction u_j (at its quantiles among the generated background of the score
            bin): ``variation_bins ** J`` bins for J variation parameters (1: no split; see
            the module docstring). Score bins are then merged until each split bin can hold
            ``min_bkg_per_bin`` generated events.
        seed: Seed for the generated events.
    """
    features = list(features)
    if variation_bins < 1:
        raise ValueError(f"variation_bins must be >= 1, got {variation_bins}")
    lo, hi = windows.signal_region
    sr = data.select(windows.in_signal_region(data[resonant]))
    if len(sr) == 0:
        raise DataError(f"no data events in the signal region {windows.signal_region}")
    if mass_bins < 1:
        raise ValueError(f"mass_bins must be >= 1, got {mass_bins}")
    sb = sidebands.select(windows.in_sidebands(sidebands[resonant]))
    shape_params = list(mass_pdf.get_params(floating=True))
    before = [float(p.value()) for p in shape_params]
    side = sideband_expectation(mass_pdf, sb[resonant], windows, sb.weights)
    rng = np.random.default_rng(seed)
    try:
        mb = _sample_masses(mass_pdf, lo, hi, int(n_generated), rng)
    finally:  # the caller's (e.g. an unbinned model's) shape is left as it was
        import zfit

        zfit.param.set_values(shape_params, before)
    xb = background_generator.sample(len(mb), mb[:, None], seed=int(rng.integers(2**31)))
    wb = np.full(len(mb), side.expected / len(mb))

    sm = np.asarray(simulation[resonant], dtype=float)
    sw = np.ones(len(sm)) if simulation.weights is None else np.asarray(simulation.weights, dtype=float)
    in_fit = windows.in_fit(sm)
    if not in_fit.any():
        raise DataError(f"{simulation.source}: no signal-simulation events in the fit window {windows.fit}")
    if signal_mass_hypothesis is not None:
        sm = sm * float(signal_mass_hypothesis) / float(np.median(sm[in_fit]))
        in_fit = windows.in_fit(sm)
    sw = sw * signal_scale / sw[in_fit].sum()
    sel = windows.in_signal_region(sm)
    xs, ms, ws = simulation.array(features)[sel], sm[sel], sw[sel]

    n_par = 0 if variation is None else len(variation.params)
    n_split = int(variation_bins) ** n_par
    data_x, data_m = sr.array(features), np.asarray(sr[resonant], dtype=float)
    # the variation's per-event columns of each event set (b: generated, s: simulation, d: data),
    # computed once: column 0 is the nominal log-density, so where that is the background
    # generator the score reuses it for the sets whose columns are needed anyway (the generated
    # events' with any variation, the others for the split): one pass of every member less
    cols: dict[str, np.ndarray] = {}
    nominal_is_background = variation is not None and variation.nominal_generator is background_generator
    reuse = {"b": nominal_is_background, "s": nominal_is_background and n_split > 1, "d": nominal_is_background and n_split > 1}

    def columns(which: str, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        if which not in cols:
            cols[which] = variation.columns(x, m)
        return cols[which]

    score_b = score_s = score_d = None
    if score_bins > 1:
        def score(which: str, x: np.ndarray, m: np.ndarray) -> np.ndarray:
            log_pb = columns(which, x, m)[:, 0] if reuse[which] else background_generator.log_prob(x, m[:, None])
            return signal_generator.log_prob(x, m[:, None]) - log_pb

        score_b, score_s, score_d = score("b", xb, mb), score("s", xs, ms), score("d", data_x, data_m)
        # a score bin is split n_split ways below: it needs min_bkg_per_bin per split bin
        edges = _score_edges(score_s, ws, score_b, score_bins, min_bkg_per_bin * n_split)
    else:
        edges = np.empty(0)

    log_f: list[tuple[np.ndarray, np.ndarray]] = []  # the generated events' log f_j(+1), log f_j(-1)
    if variation is not None:
        from zfit_gbi._tf import tf

        def factors(which: str, x: np.ndarray, m: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
            c = tf.constant(columns(which, x, m))

            def at(j: int, sign: float) -> np.ndarray:  # log f at theta_j = sign, the others 0
                return np.asarray(variation.log_factor(c, [tf.constant(sign if k == j else 0.0, tf.float64) for k in range(n_par)]))

            return [(at(j, 1.0), at(j, -1.0)) for j in range(n_par)]

        log_f = factors("b", xb, mb)

    u_b = u_s = u_d = None
    var_edges = np.empty((0, 1, 0))
    if n_split > 1:
        def directions(lf: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
            return np.column_stack([0.5 * (up - down) for up, down in lf])

        u_b, u_s, u_d = directions(log_f), directions(factors("s", xs, ms)), directions(factors("d", data_x, data_m))
        js = np.searchsorted(edges, score_b, side="right") if edges.size else np.zeros(len(mb), dtype=int)
        q = np.arange(1, variation_bins) / variation_bins
        var_edges = np.array([[np.quantile(u_b[js == k, j], q) for k in range(len(edges) + 1)] for j in range(n_par)])
    binning = Binning(np.linspace(lo, hi, mass_bins + 1), edges, var_edges)

    ib = binning.index(mb, score_b, u_b)
    bkg, bkg_var = binning.histogram(ib, wb)
    sig, sig_var = binning.histogram(binning.index(ms, score_s, u_s), ws)
    obs, _ = binning.histogram(binning.index(data_m, score_d, u_d), sr.weights)
    if np.any(bkg <= 0):
        raise DataError(f"the background template is empty in bins {np.flatnonzero(bkg <= 0).tolist()}: use fewer bins or more generated events")

    variations: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for p, pair in zip(variation.params if variation is not None else [], log_f, strict=True):
        hists = []
        for lf in pair:
            r = np.exp(lf - lf.max())
            hists.append(binning.histogram(ib, wb * r / r.mean())[0])
        variations[p.name.split("/")[-1]] = (hists[0], hists[1])

    return BinnedTemplates(binning=binning, resonant=resonant, data=obs, signal=sig, signal_var=sig_var, background=bkg,
                           background_var=bkg_var, sideband=side, variations=variations, signal_scale=float(signal_scale),
                           n_generated=int(n_generated), poi_name=poi_name)

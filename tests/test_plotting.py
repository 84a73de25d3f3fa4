"""Plots: every function draws on given axes and returns them; files are written atomically."""

from __future__ import annotations

import numpy as np
import pytest

from zfit_gbi import plotting as P
from zfit_gbi.generators.flows import TrainingHistory
from zfit_gbi.inference import LimitResult


def _limit() -> LimitResult:
    x = np.linspace(0, 30, 7)
    cls = np.exp(-x / 6)
    scan = {"poi": x.tolist(), "cls_observed": cls.tolist(), "cls_expected": np.exp(-x / 5).tolist()}
    for k, f in (("m2", 3), ("m1", 4), ("p1", 7), ("p2", 9)):
        scan[f"cls_expected_{k}"] = np.exp(-x / f).tolist()
    return LimitResult(0.95, 18.0, (9.0, 12.0, 15.0, 21.0, 27.0), "asymptotic", scan)


def test_style_and_save(tmp_path):
    with pytest.raises(ValueError, match="unknown plot style 'belle'; allowed: CMS, ATLAS, LHCb"), P.style("belle"):
        pass
    for exp in P.EXPERIMENTS:
        with P.style(exp.lower()) as name:
            assert name == exp
            fig, ax = P.plt.subplots()
            assert P.plot_cls(_limit(), ax=ax, experiment=name) is ax
            paths = P.save(fig, tmp_path / f"cls_{name}.png")
        assert [p.name for p in paths] == [f"cls_{name}.png", f"cls_{name}.pdf"]
        assert all(p.stat().st_size > 5000 for p in paths)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_label_names_the_configured_experiment(tmp_path):
    """plots.experiment replaces the style's name in the label (public LHCO events are no
    experiment's): the axes' texts read "LHC Olympics" and "R&D", never "CMS"."""
    with P.style("CMS", "LHC Olympics") as name:
        assert name == "LHC Olympics"
        fig, ax = P.plt.subplots()
        P.plot_cls(_limit(), ax=ax, experiment=name, text="R&D")
        texts = [t.get_text() for t in ax.texts]
        assert "LHC Olympics" in texts
        assert any("R&D" in t for t in texts)
        assert not any("CMS" in t for t in texts)
        P.save(fig, tmp_path / "cls_lhco.png", ["png"])
    with P.style("CMS") as name:
        fig, ax = P.plt.subplots()
        P.plot_cls(_limit(), ax=ax, experiment=name)
        assert "CMS" in [t.get_text() for t in ax.texts]
        P.plt.close(fig)


def test_scans_and_bands_draw_the_given_data(tmp_path):
    fig, axes = P.plt.subplots(2, 2)
    x = np.linspace(-3, 3, 13)
    ax = P.plot_profile_scan(x, x**2, ax=axes[0, 0])
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), x**2)
    m = np.linspace(3.3, 3.7, 5)
    exp = np.outer(np.ones(5), [5, 8, 10, 14, 19])
    ax = P.plot_brazil(m, np.full(5, 11.0), exp, ax=axes[0, 1])
    assert ax.get_ylim()[1] >= 19
    ax = P.plot_p0_scan(m, [0.5, 0.1, 1e-4, 0.2, 0.4], ax=axes[1, 0])
    assert ax.get_yscale() == "log"
    assert ax.get_ylim()[0] < 1e-4
    h = TrainingHistory(train_loss=[1.0, 0.5, 0.4], val_loss=[1.1, 0.6, 0.65], best_epoch=1)
    ax = P.plot_training([h, h], ax=axes[1, 1])
    assert len(ax.get_lines()) == 6  # train, validation, best-epoch marker per member
    P.save(fig, tmp_path / "grid", ("png",))
    assert (tmp_path / "grid.png").exists()


def test_roc_auc():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(2000), np.zeros(2000)]
    s = np.r_[rng.normal(1, 1, 2000), rng.normal(0, 1, 2000)]
    rax, _ = P.plot_roc(y, {"gauss": s})
    # AUC of two unit Gaussians 1 apart: Phi(1 / sqrt(2)) = 0.760, +- 0.01 for 2x2000 events
    label = rax.get_legend().get_texts()[0].get_text()
    auc = float(label.split("AUC ")[1].rstrip(")"))
    assert auc == pytest.approx(0.760, abs=0.03)


def test_mass_histogram():
    h = P.mass_histogram(np.array([3.0, 3.05, 3.5, 5.0]), (2.9, 4.1), bins=12)
    assert h.sum().value == 3  # the event outside the window is not counted in range
    assert h.axes[0].edges[0] == pytest.approx(2.9)


def test_binned_fit_pulls_and_mass_labels(tmp_path):
    data = np.array([100.0, 20.0, 5.0, 90.0, 25.0, 9.0])
    bkg = np.array([100.0, 20.0, 4.0, 90.0, 16.0, 1.0])
    sig = np.array([0.0, 0.0, 1.0, 0.0, 4.0, 4.0])
    ax, pax = P.plot_binned_fit(data, {"background": bkg, "signal": sig}, [3.3, 3.5, 3.7], n_score=3)
    pulls = [bar.get_height() for bar in pax.patches]
    np.testing.assert_allclose(pulls, (data - bkg - sig) / np.sqrt(bkg + sig))
    assert [t.get_text() for t in pax.texts] == ["3.3-3.5", "3.5-3.7"]
    assert ax.get_legend().get_texts()[0].get_text() == "Data (249)"
    P.save(ax.figure, tmp_path / "binned", ("png",))


def test_mixture_scan_plot(tmp_path):
    """The R-ANODE scan plot: the points, the fitted parabola with its vertex at 0 and the
    interval in the legend."""
    from zfit_gbi.ranode import MixtureScan

    w = np.geomspace(0.02, 0.5, 9)
    ll = 100 - 2000 * (np.sqrt(w) - np.sqrt(0.1)) ** 2
    ax = P.plot_mixture_scan(MixtureScan(w, ll, ll[:, None], 1000))
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("= 100 [" in t for t in texts)  # N_S = w_hat * 1000 = 100
    curve = ax.get_lines()[1].get_ydata()
    assert min(curve) == pytest.approx(0.0, abs=0.01)  # sampled on 200 points around the vertex
    assert not any("background generator" in t for t in texts)
    P.save(ax.figure, tmp_path / "scan", ("png",))
    ax = P.plot_mixture_scan(MixtureScan(w, ll, ll[:, None], 1000, background_error=0.03))
    assert any("background generator $\\pm$30 in it" in t.get_text() for t in ax.get_legend().get_texts())


def test_null_calibration_and_small_signal_scan_plots(tmp_path):
    """The calibration plot: the toys' histogram, the observed t with its calibrated p-value in
    the legend (a bound when no toy reaches it), the y-range set by the histogram, not by the
    diverging chi2_1 density; the scan plot of a small signal draws the parabola in w through 0."""
    from zfit_gbi.ranode import MixtureScan, NullCalibration

    null = NullCalibration(np.array([29.2, 0.3, 23.0, 14.4, 0.2, 1.3, 40.3, 3.6, 0.9, 10.7]))
    ax = P.plot_null_calibration(null, 11.5)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("p = 0.455" in t for t in texts)  # 4 of 10 toys reach 11.5: (1 + 4) / 11
    assert ax.get_ylim()[1] < 10
    ax = P.plot_null_calibration(null, 100.0)
    assert any("p < 0.0909" in t and "Z > 1.34" in t for t in (t.get_text() for t in ax.get_legend().get_texts()))
    P.save(ax.figure, tmp_path / "calibration", ("png",))
    w = np.array([0.001, 0.0025, 0.0063, 0.0117, 0.0158, 0.0215, 0.0398, 0.1])
    ll = np.array([1.0896, 1.4451, 2.2792, 3.537, 5.7419, -0.6149, 6.5372, -1.2163])  # no maximum in sqrt(w): test_ranode
    ax = P.plot_mixture_scan(MixtureScan(w, ll, ll[:, None], 18335))
    assert any("through LL(0) = 0" in t.get_text() for t in ax.get_legend().get_texts())
    P.save(ax.figure, tmp_path / "scan_linear", ("png",))


def test_neyman_plot_draws_the_belt(tmp_path):
    """plot_neyman: the data's statistic and the critical values as given, the interval in the
    legend; an impossible value (t = inf) does not break the axes."""
    from zfit_gbi.toys import neyman_interval

    v = np.array([0.0, 5.0, 10.0, 15.0])
    toys = [np.linspace(0, 2, 101)] * 4
    r = neyman_interval(v, [np.inf, 0.3, 0.8, 6.0], toys, cl=0.68, bound=0.0, poi_hat=6.0)
    ax = P.plot_neyman(r)
    ys = [line.get_ydata() for line in ax.get_lines()]
    assert any(np.allclose(y, r.critical) for y in ys if len(y) == 4)
    assert any(len(y) == 4 and y[1] == 0.3 and y[3] == 6.0 for y in ys)
    assert f"[{r.low:.3g}, {r.high:.3g}]" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert np.isfinite(ax.get_ylim()[1])
    P.save(ax.figure, tmp_path / "belt", ("png",))
    assert (tmp_path / "belt.png").stat().st_size > 10_000

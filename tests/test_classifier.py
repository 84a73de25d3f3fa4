"""The CATHODE classifier baseline and the cut-and-count significance (tiny networks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zfit_gbi.classifier import Classifier, ClassifierConfig, auc, cathode_scores
from zfit_gbi.data import DataError
from zfit_gbi.inference import counting_significance

FAST = ClassifierConfig(hidden=(16, 16), epochs=8, batch_size=512, patience=3, seed=1)


def test_counting_significance():
    assert counting_significance(50, 50) == 0.0
    assert counting_significance(40, 50, 5) == 0.0
    assert counting_significance(100, 50) == pytest.approx(math.sqrt(2 * (100 * math.log(2) - 50)))
    # large counts: s / sqrt(b + sigma_b^2)
    assert counting_significance(10_100, 10_000, 50) == pytest.approx(100 / math.sqrt(12_500), rel=0.01)
    assert counting_significance(100, 50, 1e-6) == pytest.approx(counting_significance(100, 50), rel=1e-6)
    assert counting_significance(100, 50, 10) < counting_significance(100, 50)
    with pytest.raises(ValueError, match="b > 0"):
        counting_significance(10, 0)


class _GaussGenerator:
    """Stands in for a trained p_B(x | m): standard normal features, independent of m."""

    def sample(self, n, context, seed=0):
        assert context.shape == (n, 1)
        return np.random.default_rng(seed).normal(size=(n, 2))


def test_classifier_separates_and_does_not_invent():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4000, 2)), rng.normal(size=(4000, 2)) + np.array([1.0, 0.0])
    clf = Classifier(FAST).fit(b, a)
    ta, tb = rng.normal(size=(4000, 2)), rng.normal(size=(4000, 2)) + np.array([1.0, 0.0])
    # the optimal AUC for a unit shift is Phi(1 / sqrt(2)) = 0.760
    assert auc(clf.score(tb), clf.score(ta))[0] == pytest.approx(0.760, abs=0.02)
    assert len(clf.history["val_loss"]) >= 1
    # identical classes: held-out AUC consistent with 0.5 (its error for 4000 + 4000 events is 0.0065)
    same = Classifier(FAST).fit(rng.normal(size=(4000, 2)), rng.normal(size=(4000, 2)))
    assert auc(same.score(ta), same.score(rng.normal(size=(4000, 2))))[0] == pytest.approx(0.5, abs=0.03)
    with pytest.raises(DataError, match="NaN or inf"):
        clf.score(np.array([[np.nan, 0.0]]))
    with pytest.raises(DataError, match="features"):
        Classifier(FAST).fit(a, a[:, :1])


def test_cathode_scores_find_the_signal():
    """Data = generator background + 4 % signal in a corner: the out-of-fold cut keeping the top
    5 % of the data is signal-rich, and the generated background's efficiency of that cut
    predicts the background kept (the generator is exact here)."""
    rng = np.random.default_rng(3)
    n_b, n_s = 6000, 250
    x = np.concatenate([rng.normal(size=(n_b, 2)), rng.normal(size=(n_s, 2)) * 0.3 + [2.0, 2.0]])
    truth = np.r_[np.zeros(n_b), np.ones(n_s)].astype(bool)
    res = cathode_scores(x, np.full(len(x), 3.5), _GaussGenerator(), n_folds=3, oversample=2, n_background=50_000, config=FAST, progress=False)
    assert res.data.shape == (len(x),)
    assert res.background.shape == (50_000,)
    assert len(res.classifiers) == 3
    thr, kept, eff_b = res.cut(0.05)
    sel = res.data >= thr
    assert kept == sel.sum()
    assert truth[sel].mean() > 0.5  # signal purity 4 % -> over 50 %
    b_kept = (sel & ~truth).sum()
    assert b_kept == pytest.approx(eff_b * n_b, abs=4 * math.sqrt(eff_b * n_b) + 5)
    with pytest.raises(DataError, match="too few"):
        cathode_scores(x[:15], np.full(15, 3.5), _GaussGenerator(), n_folds=3, progress=False)
    with pytest.raises(ValueError, match="data_efficiency"):
        res.cut(0.0)

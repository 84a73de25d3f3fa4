"""Flows: normalization on the box, density recovery, sideband interpolation, training behaviour."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import FAST, SMALL, gaussian_logit_baseline

from zfit_gbi.generators import Flow, FlowConfig, FlowEnsemble, TrainConfig
from zfit_gbi.generators import training as training_mod


def box_integral(density, sampler, low, high, n, rng):
    """Integral of ``density`` over the box by importance sampling from the defensive mixture
    q = 0.5 * flow + 0.5 * uniform (bounded weights p / q <= 2). Returns (estimate, std error)."""
    d = len(low)
    n_flow = rng.binomial(n, 0.5)
    xs = np.concatenate([sampler(n_flow), low + (high - low) * rng.random((n - n_flow, d))])
    p = density(xs)
    q = 0.5 * p + 0.5 / np.prod(high - low)
    w = p / q
    return w.mean(), w.std() / np.sqrt(n)


@pytest.mark.parametrize("mass", [2.95, 3.5, 4.05])
def test_conditional_flow_integrates_to_one(cond_flow, mass):
    rng = np.random.default_rng(5)
    est, err = box_integral(
        lambda x: cond_flow.prob(x, np.full(len(x), mass)),
        lambda k: cond_flow.sample(k, np.array([mass]), seed=3),
        cond_flow.low,
        cond_flow.high,
        200_000,
        rng,
    )
    assert err < 0.003  # the check below is meaningful
    assert abs(est - 1.0) < 0.01


def test_rqs_flow_integrates_to_one(bench, train_events):
    f = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(transform="rqs", n_layers=2, hidden_units=(16, 16), n_bins=6, tail_bound=4.0))
    f.fit(train_events.array(bench.features)[:4000], train_events["mjj"][:4000], train=FAST, epochs=2, jit_compile=False)
    rng = np.random.default_rng(6)
    est, err = box_integral(
        lambda x: f.prob(x, np.full(len(x), 3.4)),
        lambda k: f.sample(k, np.array([3.4]), seed=4),
        f.low,
        f.high,
        60_000,
        rng,
    )
    assert err < 0.005
    assert abs(est - 1.0) < 0.015


def test_recovers_known_conditional_density(bench, cond_flow, train_events):
    """Held-out events over the whole fit window.

    Threshold: the best mjj-independent Gaussian in the same logit space reaches a mean
    |log p - log p_true| of about 0.5 nats and a KL divergence of about 0.2 nats on this
    benchmark; a flow that learned the mjj dependence and the non-Gaussian shape must get the
    mean |difference| below 0.3 nats and 60 % of the baseline, and the KL estimate (mean of
    log p_true - log p_flow, >= 0 up to noise) below 0.1 nats."""
    test = bench.sample(20000, 0, seed=99)
    x, m = test.array(bench.features), test["mjj"]
    lt = bench.log_prob_background_features(x, m)
    lf = cond_flow.log_prob(x, m)
    lg = gaussian_logit_baseline(train_events.array(bench.features), x, cond_flow.low, cond_flow.high)
    err_flow, err_base = np.mean(np.abs(lf - lt)), np.mean(np.abs(lg - lt))
    kl = np.mean(lt - lf)
    assert err_flow < 0.3
    assert err_flow < 0.6 * err_base
    assert -0.02 < kl < 0.1


def test_interpolates_into_signal_region(bench, sideband_flow, sideband_events):
    """Trained on sideband masses only, evaluated at signal-region masses (same thresholds)."""
    test = bench.sample(40000, 0, seed=98)
    sr = test.select(bench.windows.in_signal_region(test["mjj"]))
    assert sideband_flow.history.n_train > 0
    assert not np.any(bench.windows.in_signal_region(sideband_events["mjj"]))
    x, m = sr.array(bench.features), sr["mjj"]
    lt = bench.log_prob_background_features(x, m)
    lf = sideband_flow.log_prob(x, m)
    lg = gaussian_logit_baseline(sideband_events.array(bench.features), x, sideband_flow.low, sideband_flow.high)
    err_flow, err_base = np.mean(np.abs(lf - lt)), np.mean(np.abs(lg - lt))
    assert err_flow < 0.3
    assert err_flow < 0.6 * err_base
    assert -0.02 < np.mean(lt - lf) < 0.1


def test_samples_follow_the_density(bench, cond_flow):
    """Samples drawn at one mass have the same mean log-density as true events there (a sampler
    inconsistent with log_prob would fail this)."""
    m = 3.5
    xs = cond_flow.sample(20000, np.array([m]), seed=1)
    assert np.all((xs >= cond_flow.low) & (xs <= cond_flow.high))
    rng = np.random.default_rng(2)
    xt = bench.sample_background_features(np.full(20000, m), rng)
    a = cond_flow.log_prob(xs, np.full(len(xs), m))
    b = cond_flow.log_prob(xt, np.full(len(xt), m))
    se = np.hypot(a.std(), b.std()) / np.sqrt(20000)
    assert abs(a.mean() - b.mean()) < 0.1 + 4 * se


def test_training_is_reproducible(bench, train_events):
    x, m = train_events.array(bench.features)[:3000], train_events["mjj"][:3000]
    cfg = TrainConfig(epochs=2, batch_size=256, progress=False, seed=7, jit_compile=False)
    f1 = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=2, hidden_units=(8, 8)))
    f2 = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=2, hidden_units=(8, 8)))
    f1.fit(x, m, train=cfg)
    f2.fit(x, m, train=cfg)
    np.testing.assert_allclose(f1.history.val_loss, f2.history.val_loss, rtol=1e-5)
    np.testing.assert_allclose(f1.log_prob(x[:50], m[:50]), f2.log_prob(x[:50], m[:50]), rtol=1e-5)
    assert len(f1.history.train_loss) == 2
    assert f1.history.learning_rate[0] > f1.history.learning_rate[1]  # cosine schedule
    # the schedule reaches the optimizer: the same seed with a constant rate trains the same first
    # epoch and a different second one (the cosine's is half the rate). Adam once copied the rate
    # variable the schedule assigned to, and both trainings were identical.
    f3 = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=2, hidden_units=(8, 8)))
    f3.fit(x, m, train=TrainConfig(**{**cfg.__dict__, "schedule": "constant"}))
    assert f3.history.train_loss[0] == pytest.approx(f1.history.train_loss[0], rel=1e-5)
    assert abs(f3.history.train_loss[1] - f1.history.train_loss[1]) > 1e-4


def test_one_traced_training_step_serves_every_flow_of_an_architecture(bench, train_events):
    """Trainings of one architecture share a traced (XLA-compiled) step that reads each flow's
    box and standardisation from variables: a flow trained after another, with another box and
    with batch norm (moving statistics), gets exactly what a fresh step gives it; the step is
    reused (one workspace), not traced again."""
    x, m = train_events.array(bench.features)[:2000], train_events["mjj"][:2000]
    arch = FlowConfig(n_layers=2, hidden_units=(8, 8), batch_norm=True)
    cfg = TrainConfig(epochs=2, batch_size=256, progress=False, seed=5)
    wide = {f: (lo - 0.5, hi + 0.5) for f, (lo, hi) in bench.bounds.items()}
    training_mod._WORKSPACES.clear()
    Flow(bench.features, bench.bounds, ("mjj",), arch).fit(x, m, train=TrainConfig(epochs=1, batch_size=256, progress=False, seed=1))
    after = Flow(bench.features, wide, ("mjj",), arch)
    after.fit(x, m, train=cfg)
    assert len(training_mod._WORKSPACES) == 1
    training_mod._WORKSPACES.clear()
    fresh = Flow(bench.features, wide, ("mjj",), arch)
    fresh.fit(x, m, train=cfg)
    np.testing.assert_array_equal(after.history.val_loss, fresh.history.val_loss)
    np.testing.assert_array_equal(after.log_prob(x[:200], m[:200]), fresh.log_prob(x[:200], m[:200]))
    for a, b in zip(after.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_flows_of_one_architecture_share_an_evaluator(bench, train_events):
    """Two flows of one architecture (other weights, another box) evaluated in turn through the
    one shared, compiled log p and sampler each give their own density (checked against the
    flow's own graph, evaluated eagerly) and their own samples; changing a flow's weights is
    seen by the next evaluation."""
    from zfit_gbi.generators import flows as flows_mod

    arch = FlowConfig(n_layers=2, hidden_units=(8, 8))
    x, m = train_events.array(bench.features)[:1500], train_events["mjj"][:1500]
    wide = {f: (lo - 0.5, hi + 0.5) for f, (lo, hi) in bench.bounds.items()}
    a = Flow(bench.features, bench.bounds, ("mjj",), arch)
    b = Flow(bench.features, wide, ("mjj",), arch)
    a.fit(x, m, epochs=2, progress=False, seed=1)
    b.fit(x, m, epochs=2, progress=False, seed=2)

    def own(f):  # the flow's own float64 graph with its constants, no shared evaluator
        return f.log_prob_tensor(x[:300], m[:300, None].astype(float)).numpy()

    flows_mod._EVALUATORS.clear()
    la, lb, la2 = a.log_prob(x[:300], m[:300]), b.log_prob(x[:300], m[:300]), a.log_prob(x[:300], m[:300])
    assert len(flows_mod._EVALUATORS) == 1
    np.testing.assert_allclose(la, own(a), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(lb, own(b), rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(la, la2)
    assert np.max(np.abs(la - lb)) > 0.1
    sa = a.sample(2000, np.array([3.5]), seed=4)
    sb = b.sample(2000, np.array([3.5]), seed=4)
    assert np.all((sa >= a.low) & (sa <= a.high))
    assert not np.allclose(sa, sb)  # the same seed, another flow: other samples
    np.testing.assert_array_equal(sa, a.sample(2000, np.array([3.5]), seed=4))
    # from parallel threads (TensorFlow evaluates zfit's PDFs so), each its own density
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda f: f.log_prob(x[:300], m[:300]), [a, b] * 6))
    for r, ref in zip(results, [la, lb] * 6, strict=True):
        np.testing.assert_array_equal(r, ref)
    a.set_weights(b.get_weights())  # a new version: the evaluator reloads it
    np.testing.assert_allclose(a.log_prob(x[:300], m[:300]), own(a), rtol=1e-10, atol=1e-10)


def test_early_stopping_and_history(bench, cond_flow):
    h = cond_flow.history
    assert h.stopped in ("early stopping", "max epochs")
    assert h.best_val_loss == min(h.val_loss)
    assert len(h.train_loss) == len(h.val_loss) == len(h.learning_rate)
    assert h.n_train + h.n_val == 30000
    text = repr(cond_flow)
    for word in ("MAF-affine", "mj1", "mjj", "24000", "val loss"):
        assert word in text


def hook_epochs(monkeypatch, on_epoch):
    """Replace the training progress bar by one that calls ``on_epoch(k)`` after epoch k."""

    class Bar:
        def __init__(self):
            self.n = 0

        def set_postfix(self, **kwargs):
            pass

        def update(self):
            self.n += 1
            on_epoch(self.n)

        def close(self):
            pass

    monkeypatch.setattr(training_mod, "_progress", lambda *a, **k: Bar())


def test_interrupt_keeps_best_weights(bench, train_events, monkeypatch):
    """Ctrl-C in epoch 3: the flow keeps the best weights of epochs 1-2 and the interrupt propagates."""

    def interrupt(k):
        if k == 3:
            raise KeyboardInterrupt

    hook_epochs(monkeypatch, interrupt)
    f = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=2, hidden_units=(8, 8)))
    x, m = train_events.array(bench.features)[:3000], train_events["mjj"][:3000]
    with pytest.raises(KeyboardInterrupt):
        f.fit(x, m, epochs=10, progress=False, jit_compile=False)
    assert f.history.stopped == "interrupted"
    assert f.history.best_epoch in (0, 1, 2)
    assert np.all(np.isfinite(f.log_prob(x[:20], m[:20])))


def test_divergence_in_first_epoch_raises(bench, train_events):
    """A learning rate far too large without clipping diverges at once: a clear error, never a
    broken generator."""
    f = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=2, hidden_units=(8, 8)))
    x, m = train_events.array(bench.features)[:3000], train_events["mjj"][:3000]
    with pytest.raises(RuntimeError, match="diverged"):
        f.fit(x, m, epochs=3, learning_rate=1e4, clipnorm=None, schedule="constant", progress=False, jit_compile=False)


def test_nan_loss_later_stops_and_keeps_best(bench, train_events, monkeypatch):
    """A NaN appearing in epoch 3 (weights poisoned after epoch 2) stops training, says so,
    and restores the best finite weights."""
    f = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=2, hidden_units=(8, 8)))

    def poison(k):
        if k == 2:  # the weights being trained: the reusable step's (training_mod._Workspace)
            v = next(reversed(training_mod._WORKSPACES.values())).nets.trainable_variables[0]
            v.assign(v * float("nan"))

    hook_epochs(monkeypatch, poison)
    x, m = train_events.array(bench.features)[:3000], train_events["mjj"][:3000]
    h = f.fit(x, m, epochs=6, progress=False, jit_compile=False)
    assert h.stopped == "nan"
    assert len(h.val_loss) == 3
    assert h.best_epoch in (0, 1)
    assert np.all(np.isfinite(f.log_prob(x[:20], m[:20])))


def test_bad_inputs_to_flow(bench, cond_flow):
    x = bench.sample_background_features(np.full(10, 3.5), np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        cond_flow.log_prob(x[:, :3], np.full(10, 3.5))
    with pytest.raises(ValueError, match="NaN"):
        cond_flow.log_prob(np.where(np.eye(10, 4) > 0, np.nan, x), np.full(10, 3.5))
    with pytest.raises(ValueError, match="outside the flow's box"):
        cond_flow.log_prob(x + 2.0, np.full(10, 3.5))
    with pytest.raises(ValueError, match="conditional"):
        cond_flow.log_prob(x)
    with pytest.raises(ValueError, match="bounds"):
        Flow(["a", "b"], {"a": (0, 1)})
    with pytest.raises(ValueError, match="low < high"):
        Flow(["a"], {"a": (1, 0)})
    with pytest.raises(ValueError, match="transform"):
        FlowConfig(transform="spline")
    with pytest.raises(ValueError, match="too few events"):
        Flow(["a"], {"a": (0, 1)}).fit(np.array([[0.5], [0.4]]), epochs=1)


def test_architecture_presets_build():
    cathode = Flow(["a", "b", "c", "d"], {k: (0.0, 1.0) for k in "abcd"}, ("m",), FlowConfig.cathode())
    hisigma = Flow(["a", "b", "c", "d"], {k: (0.0, 1.0) for k in "abcd"}, ("m",), FlowConfig.hisigma())
    assert "15 blocks x [128, 128], batch norm" in repr(cathode)
    assert "MAF-rqs(24 bins, tail 5)" in repr(hisigma)
    assert TrainConfig.cathode().batch_size == 2048
    assert TrainConfig.hisigma().patience == 10
    assert cathode.n_parameters > hisigma.n_parameters
    assert hisigma.sample(3, np.array([3.5]), seed=1).shape == (3, 4)


def test_batch_norm_flow_trains(bench, train_events):
    f = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=2, hidden_units=(16, 16), batch_norm=True))
    x, m = train_events.array(bench.features)[:4000], train_events["mjj"][:4000]
    h = f.fit(x, m, epochs=3, progress=False, jit_compile=False)
    assert h.val_loss[h.best_epoch] < h.val_loss[0] + 1e-9
    rng = np.random.default_rng(8)
    est, err = box_integral(
        lambda xx: f.prob(xx, np.full(len(xx), 3.6)), lambda k: f.sample(k, np.array([3.6]), seed=2), f.low, f.high, 100_000, rng
    )
    assert abs(est - 1) < max(0.015, 5 * err)


def test_deep_flow_starts_near_identity(bench, train_events):
    """CATHODE depth (15 blocks): with plain Glorot output layers the untrained stack sent the
    log-density to -3e31 (-inf for narrow MADEs) and the first minibatch's loss was NaN; the
    blocks now start near the identity, so the untrained density is that of the base Gaussian
    stretched by 15 scales of about 1.13, and training starts from finite losses (layout 1, the
    default; the CATHODE preset's layout 4 is trained in benchmarks/training.py)."""
    from zfit_gbi._tf import tf

    x, m = train_events.array(bench.features)[:3000], train_events["mjj"][:3000]
    f = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=15, hidden_units=(16, 16), batch_norm=True))
    f.adapt(x, m)
    lp = f.log_prob_tensor(tf.constant(x, tf.float32), tf.constant(m[:, None], tf.float32), dtype=tf.float32).numpy()
    assert np.all(np.isfinite(lp))
    assert -200 < lp.mean() < 10
    h = f.fit(x, m, epochs=2, batch_size=1024, learning_rate=1e-4, progress=False, jit_compile=False)
    assert np.all(np.isfinite(h.val_loss))
    assert h.val_loss[-1] < h.val_loss[0]
    assert len(h.epoch_seconds) == 2
    assert all(t > 0 for t in h.epoch_seconds)


@pytest.mark.parametrize("aggregate", ["prob", "logprob"])
def test_ensemble(bench, train_events, aggregate):
    x, m = train_events.array(bench.features)[:4000], train_events["mjj"][:4000]
    ens = FlowEnsemble.train(
        x, m, features=bench.features, bounds=bench.bounds, context_names=("mjj",), k=3,
        config=FlowConfig(n_layers=2, hidden_units=(8, 8)), epochs=2, progress=False, aggregate=aggregate, jit_compile=False,
    )
    assert len(ens.members) == 3
    # different seeds and bootstrap resamples give different members
    lp = ens.member_log_probs(x[:100], m[:100])
    assert lp.shape == (3, 100)
    assert np.std(lp, axis=0).mean() > 1e-4
    agg = ens.log_prob(x[:100], m[:100])
    if aggregate == "prob":
        np.testing.assert_allclose(agg, np.log(np.exp(lp).mean(axis=0)), rtol=1e-10)
    rng = np.random.default_rng(3)
    est, err = box_integral(
        lambda xx: ens.prob(xx, np.full(len(xx), 3.5)), lambda k: ens.sample(k, np.array([3.5]), seed=1),
        ens.low, ens.high, 60_000, rng,
    )
    assert abs(est - 1) < max(0.015, 5 * err)
    assert "K=3" in repr(ens)


def test_bootstrap_members_validate_on_events_they_never_trained_on():
    """A bootstrap member's validation events are distinct events held out before the
    resampling: none of them is in its training part (resampling first and splitting after put
    copies of most of them there, and early stopping never stopped); the training part is a
    resample of the rest, of its own size; each seed draws its own."""
    from zfit_gbi.generators.ensemble import _bootstrap

    n = 1000
    idx, val = _bootstrap(n, 0.2, seed=3)
    assert idx.shape == val.shape == (n,)
    assert val.dtype == bool
    assert val.sum() == 200
    assert len(np.unique(idx[val])) == 200
    assert not set(idx[val]) & set(idx[~val])
    assert len(np.unique(idx[~val])) < 800  # drawn with replacement
    assert set(idx[~val]) | set(idx[val]) <= set(range(n))
    idx2, _ = _bootstrap(n, 0.2, seed=4)
    assert not np.array_equal(idx, idx2)
    np.testing.assert_array_equal(_bootstrap(n, 0.2, seed=3)[0], idx)


def test_explicit_validation_mask(bench, train_events):
    """``fit(validation=mask)`` validates on exactly the masked events (the history counts them)
    and trains on the rest; a mask of the wrong shape or type, or one that marks no event, is an
    error that names it."""
    x, m = train_events.array(bench.features)[:1000], train_events["mjj"][:1000]
    mask = np.zeros(1000, bool)
    mask[:150] = True
    f = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=1, hidden_units=(8,)))
    h = f.fit(x, m, validation=mask, epochs=1, batch_size=256, progress=False, jit_compile=False)
    assert (h.n_val, h.n_train) == (150, 850)
    for bad, what in ((mask[:10], "shape"), (mask.astype(int), "boolean"), (np.zeros(1000, bool), "no event")):
        with pytest.raises(ValueError, match=what):
            f.fit(x, m, validation=bad, epochs=1, progress=False, jit_compile=False)


def test_batched_evaluation_equals_one_pass(bench, cond_flow):
    """Memory-bounded evaluation: the same log-densities in batches of 1000 (padded last batch)
    as in one pass, and for sizes below a batch (padded to a power of two)."""
    ev = bench.sample(2500, 0, seed=77)
    x, m = ev.array(bench.features), ev["mjj"]
    one = cond_flow.log_prob(x, m, batch_size=4096)
    np.testing.assert_allclose(cond_flow.log_prob(x, m, batch_size=1000), one, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cond_flow.log_prob(x[:7], m[:7]), one[:7], rtol=1e-12, atol=1e-12)


def test_finished_trainings_leave_no_graphs(bench, train_events):
    """A finished training's traced step functions are freed: TFP's bijector cache and the
    optimizer's gradient aggregation (a ``tf.custom_gradient``) each kept every traced graph
    alive, so memory grew with every training (an R-ANODE scan trains dozens)."""
    import gc

    from tensorflow.python.framework.func_graph import FuncGraph

    def graphs() -> int:
        gc.collect()
        return sum(isinstance(o, FuncGraph) for o in gc.get_objects())

    x, m = train_events.array(bench.features)[:2000], train_events["mjj"][:2000]
    flow = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=2, hidden_units=(8, 8), batch_norm=True))
    flow.fit(x, m, train=TrainConfig(epochs=1, batch_size=256, progress=False, jit_compile=False))
    flow.log_prob(x[:100], m[:100])  # the flow keeps its evaluation function (one graph) until retrained
    before = graphs()
    for seed in (1, 2):
        flow.fit(x, m, train=TrainConfig(epochs=1, batch_size=256, seed=seed, progress=False, jit_compile=False))
        flow.log_prob(x[:100], m[:100])
    assert graphs() <= before


def test_gradient_masks_are_the_made_masks(bench):
    """The trainer zeroes the gradients of the MADE's masked-out weights (TFP masks only after
    each step, so they would count in the gradient clipping): one mask per autoregressive
    kernel, equal to TFP's own, none for biases, context kernels or batch norm."""
    from zfit_gbi._tf import tf
    from zfit_gbi.generators.flows import _Networks

    cfg = FlowConfig(n_layers=2, hidden_units=(8, 8), batch_norm=True)
    nets = _Networks(cfg, len(bench.features), 1, tf.float32, 0)
    variables = nets.trainable_variables
    masks = training_mod.gradient_masks(nets.mades, variables)
    got = [m.numpy() for m in masks if m is not None]
    want = [np.asarray(mk, np.float32) for made in nets.mades for mk in made._masks]
    assert len(got) == len(want) == 2 * 3  # input, hidden, output kernel per block
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
        assert 0 < g.sum() < g.size  # a real mask, neither empty nor full
    assert sum(m is None for m in masks) == len(variables) - 6


def test_training_inside_a_mixture_mechanics(bench, train_events, tmp_path):
    """Per-event mixture fractions: w = 1 for every event is plain maximum likelihood (the same
    losses, seed for seed); the history records the objective, which a save keeps; bad fractions
    are refused by name; an ensemble resamples the mixture with its events."""
    from zfit_gbi.generators import load, save

    ev = train_events.select(np.arange(len(train_events)) < 3000)
    x, m = ev.array(bench.features), ev["mjj"]
    tc = replace(FAST, epochs=2)
    plain, mixed = (Flow(bench.features, bench.bounds, ("mjj",), SMALL, seed=4) for _ in range(2))
    plain.fit(x, m, train=tc)
    mixed.fit(x, m, train=tc, mixture=(np.ones(len(x)), np.zeros(len(x)), np.full(len(x), -3.0)))
    assert mixed.history.val_loss == pytest.approx(plain.history.val_loss, rel=1e-5)
    assert (plain.history.objective, mixed.history.objective) == ("likelihood", "mixture")
    assert load(save(mixed, tmp_path / "mixed")).history.objective == "mixture"
    with pytest.raises(ValueError, match=r"w must be one number or of shape \(3000,\)"):
        mixed.fit(x, m, train=tc, mixture=(np.ones(10), np.zeros(len(x)), np.zeros(len(x))))
    with pytest.raises(ValueError, match=r"w must lie in \(0, 1\], got 0.0"):
        mixed.fit(x, m, train=tc, mixture=(np.r_[0.0, np.ones(len(x) - 1)], np.zeros(len(x)), np.zeros(len(x))))
    ens = FlowEnsemble.train(x, m, features=bench.features, bounds=bench.bounds, context_names=("mjj",), k=2, config=SMALL,
                             train=replace(tc, epochs=1), mixture=(np.full(len(x), 0.9), np.zeros(len(x)), np.zeros(len(x))))
    assert [mb.history.objective for mb in ens.members] == ["mixture", "mixture"]


def test_background_trained_inside_the_mixture_leaves_the_signal_out(bench, sideband_events):
    """Sidebands that hold 20 % signal (features from the benchmark's signal, masses from the
    background's so that its share is f = 0.2 at every mass): a flow trained on them as they are
    learns the signal as background, one trained inside (1 - f) q + f p_S with p_S known learns
    the background. Measured by KL(true background || flow) on independent sideband background
    events (paired: the same events for every flow). Measured with training seeds 4-7: plain
    0.176-0.190 nats, mixture 0.039-0.043, a flow trained on the background events alone
    0.054-0.056 (the mixture flow is a little better: more steps per epoch); the tolerances
    (plain above clean by 0.08, mixture within 0.03 of clean) are several times that spread."""
    rng = np.random.default_rng(21)
    side = sideband_events.select(np.arange(len(sideband_events)) < 12_000)
    n_sig = 3_000
    x_b, m_b = side.array(bench.features), side["mjj"]
    x = np.vstack([x_b, bench.sample_signal_features(n_sig, rng)])
    m = np.concatenate([m_b, m_b[rng.integers(0, len(m_b), n_sig)]])
    f = n_sig / len(x)
    test = bench.sample(30_000, 0, seed=22)
    test = test.select(bench.windows.in_sidebands(test["mjj"]))
    xt, mt = test.array(bench.features), test["mjj"]
    log_true = bench.log_prob_background_features(xt, mt)

    def kl(xx, mm, mixture=None) -> float:
        flow = Flow(bench.features, bench.bounds, ("mjj",), SMALL, seed=4)
        flow.fit(xx, mm, train=FAST, mixture=mixture)
        return float(np.mean(log_true - flow.log_prob(xt, mt)))

    kl_plain = kl(x, m)
    kl_mixture = kl(x, m, (np.full(len(x), 1 - f), np.zeros(len(x)), bench.log_prob_signal_features(x)))
    kl_clean = kl(x_b, m_b)
    assert kl_plain > kl_clean + 0.08, (kl_plain, kl_clean)
    assert abs(kl_mixture - kl_clean) < 0.03, (kl_mixture, kl_clean)


@pytest.mark.parametrize("layout", [3, 4])
def test_nflows_made_layouts(bench, layout):
    """Layout 4's MADE computes as nflows 0.14's MADE.forward (non-residual, one block):
    out = W3 relu(W2 relu(W1 x + b1 + relu(Wc c + bc)) + b2) + b3. Layout 3 (nflows' as first
    read, kept for its saved flows): out = W3 relu(W2 (W1 x + Wc c + b1) + b2) + b3, a linear
    first layer and a bias-free context. Both: the context enters the first layer only, and every
    layer starts as PyTorch's nn.Linear (|w|, |b| <= 1/sqrt(fan_in), biases not zero); the float64
    twin has the same weights."""
    from zfit_gbi._tf import tf, tf_keras

    flow = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=2, hidden_units=(16, 16), layout=layout), seed=4)
    rng = np.random.default_rng(0)
    x, c = rng.standard_normal((50, 4)).astype(np.float32), rng.standard_normal((50, 1)).astype(np.float32)

    def relu(a):
        return np.maximum(a, 0)

    for made in flow._nets32.mades:
        dense = [la for la in made._network.layers if isinstance(la, tf_keras.layers.Dense)]
        ctx = [la for la in dense if la.kernel.shape[0] == 1]
        assert len(ctx) == 1
        ctx = ctx[0]
        assert ctx.use_bias is (layout == 4)
        k1, k2, k3 = (la for la in dense if la is not ctx)
        for la in (k1, k2, k3, *([ctx] if layout == 4 else [])):
            bound = 1 / np.sqrt(la.kernel.shape[0])
            assert np.max(np.abs(la.kernel.numpy())) <= bound
            assert 0 < np.max(np.abs(la.bias.numpy())) <= bound
        if layout == 4:
            h = relu(x @ k1.kernel.numpy() + k1.bias.numpy() + relu(c @ ctx.kernel.numpy() + ctx.bias.numpy()))
        else:
            h = x @ k1.kernel.numpy() + k1.bias.numpy() + c @ ctx.kernel.numpy()
        h = relu(h @ k2.kernel.numpy() + k2.bias.numpy())
        want = (h @ k3.kernel.numpy() + k3.bias.numpy()).reshape(50, 4, 2)
        np.testing.assert_allclose(made(tf.constant(x), conditional_input=tf.constant(c)).numpy(), want, rtol=1e-4, atol=1e-5)
    for a, b in zip(flow._nets32.get_weights(), flow._nets64.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-7)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_trains_in_low_precision_and_evaluates_in_float64(bench, train_events, dtype):
    """``TrainConfig.mixed_precision``: the MADEs compute in the low dtype during training, the
    weights stay float32, and the trained flow is an ordinary float64 density, normalized and as
    good as the float32 training's (the same seed, split and epochs: the two differ by rounding
    only, so their validation losses agree within a fifth of the loss's standard error)."""
    x, m = train_events.array(bench.features)[:4000], train_events["mjj"][:4000]
    arch = FlowConfig(transform="rqs", n_layers=2, hidden_units=(16, 16), n_bins=6, tail_bound=4.0)
    cfg = TrainConfig(epochs=4, batch_size=256, learning_rate=3e-3, progress=False, seed=2, jit_compile=False)
    f32 = Flow(bench.features, bench.bounds, ("mjj",), arch)
    f32.fit(x, m, train=cfg)
    mixed = Flow(bench.features, bench.bounds, ("mjj",), arch)
    mixed.fit(x, m, train=replace(cfg, mixed_precision=dtype))

    ws = next(w for k, w in training_mod._WORKSPACES.items() if k[-1] == dtype and k[1] == arch)
    out = ws.nets.mades[0](np.zeros((1, 4), np.float32), conditional_input=np.zeros((1, 1), np.float32))
    assert out.dtype.name == dtype  # the network really ran in the low precision
    assert all(v.dtype.name == "float32" for v in ws.nets.trainable_variables)
    assert all(w.dtype == np.float32 for w in mixed.get_weights())

    h32, hmix = f32.history, mixed.history
    assert hmix.val_loss[-1] < hmix.val_loss[0] - 0.05  # it learned
    lp = mixed.log_prob(x[:1000], m[:1000])
    assert lp.dtype == np.float64
    sem = float(np.std(lp) / np.sqrt(hmix.n_val))  # the validation loss's own statistical error
    # measured: 0.0004 (float16) and 0.0012 (bfloat16) for a standard error of 0.05
    assert abs(hmix.val_loss[-1] - h32.val_loss[-1]) < 0.2 * sem
    est, err = box_integral(lambda z: mixed.prob(z, np.full(len(z), 3.4)), lambda k: mixed.sample(k, np.array([3.4]), seed=4),
                            mixed.low, mixed.high, 40_000, np.random.default_rng(8))
    assert err < 0.006
    assert abs(est - 1.0) < 3 * err  # measured: 0.997 +- 0.0046 for both dtypes


def test_float16_loss_scaling_skips_overflowing_steps(bench, train_events, monkeypatch):
    """float16 training scales the loss; a step whose scaled gradients overflow changes no weight
    and halves the scale, and training then goes on at a scale that fits."""
    x, m = train_events.array(bench.features)[:3000], train_events["mjj"][:3000]
    arch = FlowConfig(n_layers=2, hidden_units=(8, 8))
    monkeypatch.setattr(training_mod, "_LOSS_SCALE", 2.0**60)  # overflows float16 in any gradient
    cfg = TrainConfig(epochs=1, batch_size=64, progress=False, seed=1, jit_compile=False, mixed_precision="float16")
    flow = Flow(bench.features, bench.bounds, ("mjj",), arch)
    flow.fit(x, m, train=cfg)
    ws = next(w for k, w in training_mod._WORKSPACES.items() if k[-1] == "float16" and k[1] == arch)
    # 37 steps: at most the first ~45 halvings are needed, so the scale fell on every step
    assert float(ws.loss_scale.numpy()) < 2.0**60
    ws.start(flow, 1e-3)
    assert float(ws.loss_scale.numpy()) == 2.0**60
    before = ws.nets.get_weights()
    f32 = np.float32
    loss = ws.train_step(x[:64].astype(f32), m[:64, None].astype(f32), np.ones(64, f32), None)
    assert np.isfinite(float(loss))  # the loss itself is unscaled and finite
    for a, b in zip(before, ws.nets.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the overflowing step was skipped
    assert float(ws.loss_scale.numpy()) == 2.0**59
    # a scale that fits: the step is taken
    ws.loss_scale.assign(2.0**10)
    ws.train_step(x[:64].astype(f32), m[:64, None].astype(f32), np.ones(64, f32), None)
    assert any(not np.array_equal(a, b) for a, b in zip(before, ws.nets.get_weights(), strict=True))
    assert float(ws.loss_scale.numpy()) == 2.0**10


def test_mixed_precision_setting_is_checked():
    with pytest.raises(ValueError, match="mixed_precision must be None, 'float16' or 'bfloat16', got 'fp16'"):
        TrainConfig(mixed_precision="fp16")

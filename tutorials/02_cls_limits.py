# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # CLs upper limits with hepstats: asymptotic vs toys, and the Brazil band
#
# The GBI model of the embedded benchmark (background: a dijet-like mass shape times a
# conditional flow learned in the sidebands; signal: a Gaussian peak times a flow learned on
# simulation) is fitted to data with a small injected signal. We then compute the 95 % CLs
# upper limit on the signal yield N_S with the q~_mu test statistic through hepstats:
#
# 1. asymptotically (Cowan et al. 2011), with an Asimov dataset for this *unbinned* model:
#    a large weighted sample of the background-only model (`UnbinnedAsimovCalculator`);
# 2. with toys (hepstats' `FrequentistCalculator`, every toy sampled from the 5-D model and
#    refitted) at the asymptotic limits: if the asymptotic formulae hold, the toys' CLs there
#    is 1 - CL = 0.05 within its binomial error;
# 3. as a Brazil band: the observed and expected limits against the hypothesised signal mass.
#
# Run as a script: `python tutorials/02_cls_limits.py` (full: about 6 minutes on 2 CPU cores,
# 150 toys per hypothesis) or `python tutorials/02_cls_limits.py --smoke` (about 1 minute,
# what CI runs; too few toys and epochs for meaningful numbers).

# %%
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import zfit
from hepstats.hypotests import UpperLimit
from hepstats.hypotests.parameters import POI, POIarray

from zfit_gbi import plotting as P
from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.generators import Flow, FlowConfig, TrainConfig
from zfit_gbi.inference import UnbinnedAsimovCalculator, fit, upper_limit
from zfit_gbi.model import build_model

SMOKE = "--smoke" in sys.argv
OUT = Path("tutorial-02")
OUT.mkdir(exist_ok=True)
N_BKG, N_SIG, EPOCHS, N_TOYS = (3_000, 10, 3, 6) if SMOKE else (10_000, 25, 25, 150)
MASSES = [3.45, 3.55] if SMOKE else [3.4, 3.45, 3.5, 3.55, 3.6]

# %% [markdown]
# ## Generators and model
# The background flow learns p_B(x | m_jj) in the sidebands of a background sample, the signal
# flow p_S(x | m_jj) on signal simulation; `build_model` assembles the extended likelihood
# N_B p_B(m) p_B(x|m) + N_S p_S(m) p_S(x|m) in zfit.

# %%
bench = ResonantBenchmark()
side = bench.sample(4 * N_BKG, 0, seed=12)
side = side.select(bench.windows.in_sidebands(side["mjj"]))
train = TrainConfig(epochs=EPOCHS, batch_size=512, learning_rate=3e-3, patience=5, progress=False, seed=3)
bkg = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=4, hidden_units=(32, 32)), seed=1)
bkg.fit(side.array(bench.features), side["mjj"], train=train)
sim = bench.signal_simulation(6000, seed=41)
sig = Flow(bench.features, bench.bounds, ("mjj",), FlowConfig(n_layers=3, hidden_units=(32, 32)), seed=2)
sig.fit(sim.array(bench.features), sim["mjj"], train=train)

data = bench.sample(N_BKG, N_SIG, seed=2024)
common = {"resonant": "mjj", "features": bench.features, "windows": bench.windows, "background_generator": bkg,
          "signal_generator": sig, "data_masses": data["mjj"], "signal_masses": sim["mjj"], "background_mass": "exppoly2"}
model = build_model(**common)
loss = model.loss(data)
best = fit(loss, model.poi)
print(f"{N_SIG} signal events injected; fitted N_S = {best.poi_value:.1f} -{best.poi_error_low:.1f} +{best.poi_error_high:.1f}")

# %% [markdown]
# ## The hepstats objects themselves
# `zfit_gbi.inference.upper_limit` is a thin layer over hepstats: a calculator (here the
# unbinned Asimov one), `UpperLimit` with the tested POI values and the background-only
# hypothesis, and CLs p-values. This is the same computation by hand for three POI values.

# %%
calc = UnbinnedAsimovCalculator(loss, zfit.minimize.Minuit(), n_asimov=20_000, seed=0)
err = best.errors[model.poi.name]
grid = np.array([1.0, 2.0, 3.0]) * err
pv = UpperLimit(calc, POIarray(model.poi, grid), POI(model.poi, 0.0)).pvalues(CLs=True)
for n, cls_obs, cls_exp in zip(grid, pv["cls"], pv["expected"], strict=True):
    print(f"N_S = {n:6.1f}: CLs observed {cls_obs:.3f}, expected (median) {cls_exp:.3f}")

# %% [markdown]
# ## The asymptotic limit
# `upper_limit` scans the POI, refines the scan where the six CLs curves (observed, expected
# median and +-1, +-2 sigma) cross 0.05, and interpolates log CLs between the bracketing points.

# %%
asym = upper_limit(loss, model.poi, calculator="asymptotic", n_points=8, n_asimov=10_000 if SMOKE else 50_000, seed=7)
e = asym.expected
print(f"asymptotic 95% CLs limit on N_S: observed {asym.observed:.1f}; expected {e[2]:.1f} "
      f"(-1 sigma {e[1]:.1f}, +1 sigma {e[3]:.1f}; -2 sigma {e[0]:.1f}, +2 sigma {e[4]:.1f})")
assert 0 < e[0] < e[1] < e[2] < e[3] < e[4], "the expected band is ordered"
assert asym.observed > best.poi_value, "the observed limit lies above the fitted yield"

with P.style("CMS", "zfit-gbi") as exp:  # synthetic events: not "CMS Simulation"
    fig, ax = P.plt.subplots(figsize=(8, 6))
    P.plot_cls(asym, ax=ax, poi_label=r"Signal yield $N_S$", experiment=exp)
    P.save(fig, OUT / "cls_asymptotic", ["png"])

# %% [markdown]
# ## Toys at the asymptotic limits
# With toys the CLs of each tested value comes from the distributions of q~_mu over toys
# sampled under the signal-plus-background and the background-only hypotheses. We test the
# asymptotic observed and median expected limits: there the toys' CLs should be 0.05, up to
# the binomial error of a p-value from N_TOYS toys. (hepstats is asked for two points, not a
# scan, so the warning that "the CLs scan does not reach CLs = 0.05" is expected here.)

# %%
points = [asym.observed, e[2]]
toys = upper_limit(loss, model.poi, calculator="toys", scan=points, n_toys=N_TOYS, seed=11)
scan = toys.scan
print(f"{N_TOYS} toys per hypothesis")
for name, n in (("observed", asym.observed), ("expected", e[2])):
    i = scan["poi"].index(n)
    cls = scan["cls_observed" if name == "observed" else "cls_expected"][i]
    # CLs = p_sb / (1 - p_b): its error is the binomial error of p_sb over the toys, divided by
    # 1 - p_b (= 0.5 for the median expected; about 1 for the observed when the data fluctuate up)
    se = math.sqrt(0.025 * 0.975 / N_TOYS) / 0.5 if name == "expected" else math.sqrt(0.05 * 0.95 / N_TOYS)
    print(f"at the asymptotic {name} limit N_S = {n:.1f}: toy CLs {cls:.3f} (asymptotic 0.050, toy error about {se:.3f})")
    if not SMOKE:
        assert abs(cls - 0.05) < 3 * se + 0.02, f"toys and asymptotics disagree at the {name} limit"

# %% [markdown]
# ## The Brazil band
# The same data, the signal hypothesis moved to other masses (the simulation-fitted signal
# mass shape is shifted, the signal feature flow is conditioned on m_jj so it follows). Each
# mass gets its own model (parameter names made unique with `prefix`).

# %%
observed, expected = [], []
for i, m in enumerate(MASSES):
    mk = build_model(**common, signal_mass_hypothesis=m, prefix=f"m{i}_")
    lim = upper_limit(mk.loss(data), mk.poi, calculator="asymptotic", n_points=4 if SMOKE else 6, n_asimov=5_000 if SMOKE else 20_000, seed=7)
    observed.append(lim.observed)
    expected.append(lim.expected)
    print(f"m = {m:.2f} TeV: observed {lim.observed:.1f}, expected {lim.expected[2]:.1f}")
assert np.all(np.isfinite(observed))
assert np.all(np.isfinite(expected))

with P.style("CMS", "zfit-gbi") as exp:  # synthetic events: not "CMS Simulation"
    fig, ax = P.plt.subplots(figsize=(8, 6))
    P.plot_brazil(MASSES, observed, expected, ax=ax, mass_label=r"$m_{jj}$ hypothesis [TeV]", experiment=exp)
    P.save(fig, OUT / "brazil", ["png"])
print(f"plots in {OUT}/")

# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Real CMS open data: the Upsilon(1S) yield, with the signal feature density learned from data
#
# CMS 2010 opposite-sign dimuon pairs with 9.0 < M < 9.7 GeV (`peakdata3.csv`): the Upsilon(1S)
# at 9.46 GeV over a continuum. There is no simulation here, so the signal's feature density is
# learned from the data themselves, as R-ANODE (and the GBI paper's model-agnostic mode) does:
#
# 1. Features from the muon kinematics: log of the dimuon pT, its rapidity y, the positive
#    muon's helicity-frame cos theta* and the muon pT asymmetry.
# 2. Mass-only fit: a Gaussian peak (floating) on an exp-poly2 continuum: the reference yield.
# 3. Background p_B(x | M): an ensemble of conditional flows trained in the mass sidebands
#    9.0-9.30 and 9.62-9.7 GeV, interpolated into the peak region 9.30-9.62 GeV. Closure in the
#    peak: data against generated background plus the fitted signal.
# 4. R-ANODE in the peak region: p_data = w p_S(M) q(x | M) + (1 - w) p_B(M) p_B(x | M) with
#    p_B fixed (the sideband-trained flows, the continuum shape of the mass fit) and p_S(M) the
#    fitted peak (our documented choice for the signal's mass dependence); the signal flow q is
#    trained by maximizing this mixture likelihood at every w of a scan, k-fold, and the
#    held-out likelihood gives w, so the Upsilon yield. Every w has its own trained flows, so
#    the held-out likelihood scatters about a smooth curve by tens of units of ln L here: the
#    interval adds that training noise to the statistical error.
# 5. The multi-dimensional fit: the GBI model with the background generator and the learned
#    signal flow (trained on all peak-region events at the fitted w), fitted for the yield.
#
# Run: `python tutorials/05_cms_dimuon.py --data ../shared/data/cms_dimuon` (full: about 15
# minutes on 2 CPU cores) or with `--smoke` (tiny networks, about 2 minutes; the numbers are not
# meaningful). Without the data folder it says so and exits.

# %%
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from zfit_gbi import plotting as P
from zfit_gbi.data import Events, Windows, box_from_data, read_cms_dimuon
from zfit_gbi.generators import Flow, FlowConfig, FlowEnsemble, TrainConfig
from zfit_gbi.inference import fit
from zfit_gbi.model import build_mass_model, build_model
from zfit_gbi.nuisances import EigenVariation
from zfit_gbi.ranode import mixture_scan, train_in_mixture

ap = argparse.ArgumentParser(description="GBI with a data-driven signal on the CMS Upsilon(1S)")
ap.add_argument("--data", default="../shared/data/cms_dimuon", help="folder with peakdata3.csv")
ap.add_argument("--out", default="tutorial-05", help="folder for the plots and results.json")
ap.add_argument("--smoke", action="store_true", help="tiny networks, few epochs: checks the chain")
ap.add_argument("--members", type=int, default=3, help="background ensemble members (the data-driven mode recommends 8)")
args = ap.parse_args()
SMOKE = args.smoke
path, out = Path(args.data) / "peakdata3.csv", Path(args.out)
if not path.exists():
    print(f"CMS dimuon data not found: {path}; pass --data FOLDER. Nothing to do.")
    raise SystemExit(0)
out.mkdir(parents=True, exist_ok=True)

FEATURES = ("log_pt", "y", "cos_theta", "pt_asym")
WINDOWS = Windows(fit=(9.0, 9.7), signal_region=(9.30, 9.62))
EPOCHS, K, FOLDS = (3, 2, 2) if SMOKE else (40, args.members, 3)
FLOW = FlowConfig(n_layers=4, hidden_units=(48, 48))
TRAIN = TrainConfig(epochs=EPOCHS, batch_size=256, learning_rate=2e-3, patience=6, progress=not SMOKE, seed=1)

# %% [markdown]
# ## The events and their features

# %%
raw = read_cms_dimuon(path)
ev = Events.from_dict({"M": raw["M"], "log_pt": np.log(raw["pt"]), "y": raw["y"], "cos_theta": raw["cos_theta"],
                       "pt_asym": raw["pt_asym"]}, source=str(path))
box = box_from_data(ev, FEATURES, margin=0.01)
parts = WINDOWS.split(ev, "M")
sb, sr = parts["sidebands"], parts["signal_region"]
print(f"{len(ev)} dimuon events: {len(sb)} in the sidebands, {len(sr)} in the peak region {WINDOWS.signal_region} GeV")

# %% [markdown]
# ## 1. Mass-only fit: the reference Upsilon(1S) yield

# %%
mm = build_mass_model(resonant="M", windows=WINDOWS, data_masses=ev["M"], background_mass="exppoly2",
                      signal_init={"mu": 9.46, "sigma": 0.08}, prefix="mo_")
mres = fit(mm.loss(ev), mm.poi)
frac_sr = mm.signal_fraction(WINDOWS.signal_region)
mu, sigma = (mres.values[mm.signal_params[k].name] for k in ("mu", "sigma"))
print(f"mass-only fit: N(Upsilon) = {mres.poi_value:.0f} -{mres.poi_error_low:.0f} +{mres.poi_error_high:.0f} in 9.0-9.7 GeV "
      f"(peak at {mu:.4f} GeV, resolution {1000 * sigma:.0f} MeV); {frac_sr:.1%} of it in the peak region")
log_ps_m, log_pb_m = mm.log_densities(sr["M"], WINDOWS.signal_region)  # the mass densities R-ANODE keeps fixed
# R-ANODE and the multi-dimensional fit below keep the peak's position and width fixed: the fair
# mass-only reference for their errors is the same fit with the peak shape fixed too
for p in mm.signal_params.values():
    p.floating = False
mfix = fit(mm.loss(ev), mm.poi)
print(f"  with the peak shape fixed: {mfix.poi_value:.0f} -{mfix.poi_error_low:.0f} +{mfix.poi_error_high:.0f}")

# %% [markdown]
# ## 2. The background generator from the sidebands

# %%
bkg_gen = FlowEnsemble.train(sb.array(FEATURES), sb["M"], features=FEATURES, bounds=box, context_names=("M",), k=K,
                             config=FLOW, train=TRAIN, bootstrap=True)
log_pb = log_pb_m + bkg_gen.log_prob(sr.array(FEATURES), sr["M"][:, None])

# %% [markdown]
# ## 3. R-ANODE: the signal feature density learned in the peak region

# %%
w0 = mres.poi_value * frac_sr / len(sr)  # where to look: around the mass-only fraction (0.52 here)


def signal_flow(seed: int) -> Flow:
    return Flow(FEATURES, box, ("M",), FlowConfig(n_layers=3, hidden_units=(32, 32)), seed=seed)


grid = np.geomspace(w0 / 4, min(4 * w0, 0.95), 4 if SMOKE else 7)
scan = mixture_scan(sr.array(FEATURES), sr["M"], log_signal_mass=log_ps_m, log_background=log_pb, make_flow=signal_flow,
                    w_grid=grid, n_folds=FOLDS, seeds=(0,) if SMOKE else (0, 1), train=TRAIN, seed=3, refine=0 if SMOKE else 4,
                    progress=not SMOKE)
lo, hi = scan.interval()
n_ranode = scan.w_hat * len(sr)
print(f"R-ANODE: {scan}")
print(f"  Upsilon events in the peak region: {n_ranode:.0f} [{lo * len(sr):.0f}, {hi * len(sr):.0f}] vs the mass-only fit's "
      f"{mres.poi_value * frac_sr:.0f} +- {mres.errors[mm.poi.name] * frac_sr:.0f}")

# %% [markdown]
# ## 4. The multi-dimensional fit with the learned signal
# The signal flow is trained once more on all peak-region events at the fitted w; the signal's
# mass shape is the mass-only fit's peak (fixed). The background generator's ensemble spread
# enters as eigen-variation nuisance parameters.

# %%
sig_gen = train_in_mixture(signal_flow(7), sr.array(FEATURES), sr["M"], w=max(scan.w_hat, grid[0]), log_signal_mass=log_ps_m,
                           log_background=log_pb, train=TRAIN)
peak = np.random.default_rng(5).normal(mu, sigma, 50_000)  # the fitted peak, as "simulated" masses for build_model
var = EigenVariation.from_ensemble(bkg_gen, sr["M"], n_components=K - 1, seed=1, prefix="cms_eigen", mass_range=WINDOWS.signal_region)
model = build_model(resonant="M", features=FEATURES, windows=WINDOWS, background_generator=bkg_gen, signal_generator=sig_gen,
                    data_masses=ev["M"], signal_masses=peak, background_mass="exppoly2", variation=var, prefix="gbi_")
res = fit(model.loss(ev), model.poi)
print(f"multi-dimensional fit: N(Upsilon) = {res.poi_value:.0f} -{res.poi_error_low:.0f} +{res.poi_error_high:.0f} in 9.0-9.7 GeV "
      f"(mass-only: {mres.poi_value:.0f} -{mres.poi_error_low:.0f} +{mres.poi_error_high:.0f}; with the peak shape fixed "
      f"-{mfix.poi_error_low:.0f} +{mfix.poi_error_high:.0f})")

# %% [markdown]
# ## Plots: the post-fit mass spectrum, the closure of the features in the peak region, the scan

# %%
with P.style("CMS") as exp:
    fig, axes = P.mass_axes()
    P.plot_mass_fit(model, ev, WINDOWS, axes=axes, experiment=exp, text="Open Data", unit="GeV")
    P.save(fig, out / "postfit_mass", ["png"])
    axs = P.plot_feature_closure(model, ev, WINDOWS, seed=2, experiment=exp, text="Open Data")
    P.save(axs[0, 0].figure, out / "closure_features", ["png"])
    fig, ax = P.plt.subplots(figsize=(8, 6))
    P.plot_mixture_scan(scan, ax=ax, experiment=exp, text="Open Data")
    P.save(fig, out / "ranode_scan", ["png"])

results = {
    "mass_only": {"n_signal": mres.poi_value, "error_low": mres.poi_error_low, "error_high": mres.poi_error_high, "mu": mu, "sigma": sigma,
                  "fraction_in_peak_region": frac_sr, "error_low_shape_fixed": mfix.poi_error_low, "error_high_shape_fixed": mfix.poi_error_high},
    "ranode": {**scan.to_dict(), "n_signal_peak_region": n_ranode},
    "multidimensional": {"n_signal": res.poi_value, "error_low": res.poi_error_low, "error_high": res.poi_error_high, "fit_valid": res.valid},
    "windows": {"fit": WINDOWS.fit, "signal_region": WINDOWS.signal_region}, "features": FEATURES, "smoke": SMOKE,
}
(out / "results.json").write_text(json.dumps(results, indent=1))
print(f"wrote {out}/results.json and plots")

if not SMOKE and K == 3:  # the claims the README quotes (at the default 3 members): the three yields agree within their errors
    err = max(mres.errors[mm.poi.name], 1.0)
    assert abs(res.poi_value - mres.poi_value) < 3 * math.hypot(err, res.poi_error_high), "multi-dimensional vs mass-only"
    assert lo * len(sr) - 3 * err * frac_sr < mres.poi_value * frac_sr < hi * len(sr) + 3 * err * frac_sr, "R-ANODE vs mass-only"
elif not SMOKE:
    print(f"the README's agreement checks are for the default 3 members, not run with {K}")

# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Quickstart: a normalizing flow as a zfit PDF
#
# We learn the background feature density p_B(x | m_jj) with a conditional flow in the
# sidebands of the embedded benchmark, put it into an ordinary zfit model next to zfit's own
# PDFs (an exponential mass shape, a Gaussian signal peak and truncated Gaussians for the signal
# features), and fit the signal yield with Minuit.
#
# Run as a script: `python tutorials/01_quickstart.py` (full: about 2 minutes on 2 CPU cores)
# or `python tutorials/01_quickstart.py --smoke` (about 30 s, what CI runs).

# %%
from __future__ import annotations

import sys

import numpy as np
import zfit

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.data import Events
from zfit_gbi.generators import Flow, FlowConfig
from zfit_gbi.pdfs import JointFlowPDF, to_zfit_data

SMOKE = "--smoke" in sys.argv
zfit.settings.set_seed(1)  # the injected signal below is drawn with zfit's generator
N_BKG, N_SIG, EPOCHS = (20_000, 150, 3) if SMOKE else (100_000, 500, 40)

# %% [markdown]
# ## Data: the embedded resonant benchmark
# 4 features (`mj1`, `delta_mj` in TeV, `tau21_j1`, `tau21_j2`) in the box [0, 1]^4 and the
# dijet mass `mjj` in the fit window [2.9, 4.1] TeV; the signal peaks at 3.5 TeV.

# %%
bench = ResonantBenchmark()
data = bench.sample(N_BKG, 0, seed=1)  # background only; the signal is injected below
windows = bench.windows
print(windows, windows.counts(data, "mjj"))
sidebands = data.select(windows.in_sidebands(data["mjj"]))

# %% [markdown]
# ## The generator: a conditional MAF trained on the sidebands only

# %%
flow = Flow(bench.features, bench.bounds, context=("mjj",), config=FlowConfig(n_layers=5, hidden_units=(64, 64)))
flow.fit(sidebands.array(bench.features), sidebands["mjj"], epochs=EPOCHS, batch_size=512, learning_rate=2e-3)
print(flow)

# %% [markdown]
# ## The zfit model
# Background: p_B(m) (zfit's `Exponential`) times the flow p_B(x | m), as one `JointFlowPDF`.
# Signal: zfit's `Gauss` in m times truncated Gaussians in the features. Both are extended.
# (The data are background-only so far; we inject events drawn from this signal model.)

# %%
mjj = zfit.Space("mjj", limits=bench.fit_window)
lam = zfit.Parameter("lam", -2.0, -20.0, 5.0)
n_bkg = zfit.Parameter("n_bkg", len(data), 0.0, 10 * len(data))
n_sig = zfit.Parameter("n_sig", 0.0, -1000.0, 10_000.0)
background = JointFlowPDF(zfit.pdf.Exponential(lam, obs=mjj), flow, extended=n_bkg)

signal_parts = [zfit.pdf.Gauss(3.5, 0.035, obs=mjj)]
for name, (mu, sigma) in zip(bench.features, [(0.16, 0.05), (0.3, 0.085), (0.45, 0.15), (0.45, 0.15)], strict=True):
    signal_parts.append(zfit.pdf.TruncatedGauss(mu, sigma, low=0.0, high=1.0, obs=zfit.Space(name, limits=(0.0, 1.0))))
signal = zfit.pdf.ProductPDF(signal_parts, extended=n_sig)
model = zfit.pdf.SumPDF([background, signal])

# inject N_SIG events drawn from this parametric signal model (so the model is exact)
injected = signal.sample(N_SIG).value().numpy()
data = Events(np.concatenate([data.array(model.space.obs), injected]), tuple(model.space.obs), source="benchmark + injected signal")

# %% [markdown]
# ## Fit

# %%
zdata = to_zfit_data(data, model.space)
loss = zfit.loss.ExtendedUnbinnedNLL(model, zdata)
result = zfit.minimize.Minuit(gradient="zfit").minimize(loss)
result.hesse()
print(result)
fitted, error = result.params[n_sig]["value"], result.params[n_sig]["hesse"]["error"]
print(f"signal yield: {fitted:.1f} +- {error:.1f} (injected {N_SIG}); pull {(fitted - N_SIG) / error:+.2f}")
print(f"network passes over the data during the fit: {background.cache.misses} (cache hits: {background.cache.hits})")
assert result.valid
assert abs(fitted - N_SIG) < 5 * error

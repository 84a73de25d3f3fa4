"""The external reference: hepstats' own upper-limit test model, analytic and with a flow.

hepstats' tests (tests/hypotests/test_upperlimit.py) fit 300 exponential + 10 Gaussian events in
[0.1, 3] and assert the asymptotic CLs limits on Nsig (observed 15.73, expected 11.93, +1 sigma
16.60, -1 sigma 8.59, +2 sigma 22.25, each to 10 %). Here the same model is run through
``zfit_gbi.inference.upper_limit`` (unbinned weighted-sample Asimov) with the analytic
exponential, and with the exponential replaced by a 1-D spline flow trained on 200k samples of
the same exponential. Prints a table and writes ``benchmarks/results/hepstats_reference.json``.

Run: ``python benchmarks/hepstats_reference.py`` (about 1 minute on 2 CPU cores).
"""

from __future__ import annotations

import numpy as np
import zfit
from _common import report

from zfit_gbi.generators import Flow, FlowConfig
from zfit_gbi.inference import upper_limit
from zfit_gbi.pdfs import FlowPDF

HEPSTATS = {"observed": 15.73, "-2s": 6.40, "-1s": 8.59, "median": 11.93, "+1s": 16.60, "+2s": 22.25}


def main() -> None:
    bounds = (0.1, 3.0)
    obs = zfit.Space("x", limits=bounds)
    np.random.seed(0)  # noqa: NPY002  (hepstats' own data)
    x = np.concatenate((np.random.exponential(0.5, 300), np.random.normal(1.2, 0.1, 10)))  # noqa: NPY002
    x = x[(x > bounds[0]) & (x < bounds[1])]
    data = zfit.Data.from_numpy(obs=obs, array=x)

    rng = np.random.default_rng(1)
    lo, hi, lam = 0.0, 3.2, -2.0
    xs = np.log(np.exp(lam * lo) + rng.random(200_000) * (np.exp(lam * hi) - np.exp(lam * lo))) / lam
    flow = Flow(["x"], {"x": (-0.1, 3.3)}, (), FlowConfig(transform="rqs", n_layers=1, hidden_units=(8,), n_bins=16, tail_bound=4.0))
    flow.fit(xs[:, None], epochs=30, batch_size=1024, progress=False)

    rows = [{"model": "hepstats test (asserted)", **HEPSTATS}]
    for kind in ("analytic", "flow"):
        nsig = zfit.Parameter(f"Nsig_{kind}", 20.0, -20.0, len(x))
        nbkg = zfit.Parameter(f"Nbkg_{kind}", len(x), 0.0, len(x) * 1.1)
        sig = zfit.pdf.Gauss(obs=obs, mu=1.2, sigma=0.1, extended=nsig)
        if kind == "flow":
            bkg = FlowPDF(flow, obs, extended=nbkg)
        else:
            bkg = zfit.pdf.Exponential(obs=obs, lambda_=zfit.Parameter("lambda", -2.0, -4.0, -1.0), extended=nbkg)
        loss = zfit.loss.ExtendedUnbinnedNLL(zfit.pdf.SumPDF([sig, bkg]), data)
        lim = upper_limit(loss, nsig, scan=np.linspace(0.0, 25.0, 15))
        rows.append({"model": f"zfit-gbi, {kind} background", "observed": lim.observed,
                     **dict(zip(["-2s", "-1s", "median", "+1s", "+2s"], lim.expected, strict=True))})
    report("hepstats_reference", rows)


if __name__ == "__main__":
    main()

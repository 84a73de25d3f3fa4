"""Seconds of the binned CLs limit (and fit, discovery) on GBI workspaces, three ways.

* ``package``: :func:`pyhf_gbi.infer.upper_limit` (the scan of :class:`~pyhf_gbi.infer.QtildeCLs`:
  the three POI-independent fits once, two warm-started Minuit strategy-0 fits per POI value);
* ``hypotest_scan``: the same scan points with ``pyhf.infer.hypotest`` at each (five fits per
  point: the package before 2026-11-28);
* ``pyhf_toms748``: what a pyhf user runs, ``pyhf.infer.intervals.upper_limits.upper_limit(data,
  model, scan=None, level=0.05)`` (TOMS748 root finding on the observed and expected curves,
  ``rtol`` 1e-3 here so that it is not held to more digits than the others) with pyhf's default
  optimizer (scipy; ``--pyhf-optimizer minuit``: one of its fits fails on the demo's workspace,
  the row then says so).

Each row: the workspace, its bins and parameters, the method, seconds, observed and expected
median limit; the package's fit (with its profile-likelihood crossings) and discovery are timed
too (``fit_seconds``, ``discovery_seconds``).

Run: ``python benchmarks/binned_limit.py --workspace DIR/result/workspace.json [more.json]``
(``gbi demo --out DIR`` writes one, with the default split of ``binned.variation_bins``; ``gbi run``
of the demo's config with ``--set binned.variation_bins=1`` the unsplit one). Without
``--workspace``: the workspace of ``gbi-demo-binned`` (the demo run there first if it is not;
``binned_vs_unbinned.py`` shares it).
About 25 minutes on 2 CPU cores for the demo's two workspaces, most of it the two pyhf ways on
the 132-parameter split workspace.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyhf
from _common import report  # type: ignore[import-not-found]

from pyhf_gbi import infer as B


class _HypotestScan:
    """``QtildeCLs``'s interface with ``pyhf.infer.hypotest`` behind it (the former scan)."""

    def __init__(self, model, data, bounds):
        self.model, self.data, self.bounds = model, data, bounds

    def __call__(self, mu):
        r = pyhf.infer.hypotest(mu, self.data, self.model, par_bounds=self.bounds, test_stat="qtilde", return_expected_set=True)
        return float(np.ravel(r[0])[0]), [float(np.ravel(v)[0]) for v in r[1]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, nargs="+", default=None)
    ap.add_argument("--methods", nargs="+", default=["package", "hypotest_scan", "pyhf_toms748"])
    ap.add_argument("--pyhf-optimizer", choices=("scipy", "minuit"), default="scipy", help="pyhf_toms748's optimizer")
    ap.add_argument("--name", default="binned_limit")
    args = ap.parse_args()
    if args.workspace is None:
        from zfit_gbi.cli import main as gbi

        demo = Path("gbi-demo-binned")
        if not (demo / "result" / "workspace.json").exists():
            gbi(["demo", "--out", str(demo), "--quiet"])
        args.workspace = [demo / "result" / "workspace.json"]
    rows = []
    for path in args.workspace:
        spec = json.loads(path.read_text())
        model, data = B.model_and_data(spec)
        info = {"workspace": str(path), "bins": int(model.config.nmaindata), "parameters": int(model.config.npars)}
        t = time.perf_counter()
        fitted = B.fit(spec)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        z = B.discovery(spec, fitted=fitted).significance
        disc_s = time.perf_counter() - t
        for method in args.methods:
            t = time.perf_counter()
            n_points, error = None, None
            if method == "pyhf_toms748":
                observed = expected = float("nan")
                try:
                    with B.numpy_backend(args.pyhf_optimizer):
                        obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, model, scan=None, level=0.05, rtol=1e-3)
                    observed, expected = float(obs), sorted(float(e) for e in exp)[2]
                except pyhf.exceptions.FailedMinimization as err:
                    error = f"FailedMinimization with {args.pyhf_optimizer}: {str(err).splitlines()[0]}"
            else:
                keep = B.QtildeCLs
                if method == "hypotest_scan":
                    B.QtildeCLs = _HypotestScan  # type: ignore[misc, assignment]
                try:
                    lim = B.upper_limit(spec, fitted=fitted)
                finally:
                    B.QtildeCLs = keep  # type: ignore[misc]
                observed, expected, n_points = lim.observed, lim.expected[2], len(lim.scan["poi"]) - 1
            row = {**info, "method": method, "seconds": round(time.perf_counter() - t, 2), "observed": observed,
                   "expected": expected, "scan_points": n_points, **({"error": error} if error else {})}
            if method == "package":
                row.update(fit_seconds=round(fit_s, 2), discovery_seconds=round(disc_s, 2), significance=z)
            rows.append(row)
            print(row, flush=True)
            report(args.name, rows, quiet=True)  # after every row: an interrupted run keeps what it measured
    report(args.name, rows)


if __name__ == "__main__":
    main()

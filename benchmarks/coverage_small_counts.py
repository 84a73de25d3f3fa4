"""Coverage of the 68 % likelihood interval at zero signal when the signal sits where the
background is nearly empty: the statistics behind the background-only rows of ``validation.py``.

On the embedded benchmark the background-only toys (drawn from the fitted GBI model itself, so
the generator is exact for them) give a 68 % profile-likelihood interval that holds n_S = 0 in
only about half the toys, a fitted n_S that leans negative and fewer than half the toys with
n_S > 0; at n_S = 60 the same intervals cover. This script shows that the cause is the
statistics, not the generator: a one-dimensional extended likelihood with exact densities, a flat
background of 10,000 events on [0, 1] and a Gaussian signal at 0.5 of width ``sigma``,
background yield fixed at its truth, toys at n_S = 0. As ``sigma`` shrinks, fewer background
events lie under the peak (2000 down to 2 within +-2 sigma), the information on n_S comes from a
handful of events, Wilks' theorem no longer describes -2 Delta ln L, and the coverage at zero
signal falls (and the fitted yield's distribution grows a long negative tail: n_S may go down to
-N_B / max(p_S / p_B)). Use toys (a Neyman construction, or ``gbi toys --n-signal 0``) for
intervals at small signal in such a case; the CLs upper limit covers by construction at zero.

The remedy, measured here too: the Feldman-Cousins interval (``zfit_gbi.toys.neyman_interval``,
the construction behind ``feldman_cousins`` and ``gbi interval``) on the same model, with
critical values from toys on a grid of s (steps of a third of the resolution, at least 0.5) and
its coverage at s = 0 and at an s between grid points (5.4 steps), next to the profile-likelihood interval's, for the widest and the
narrowest signal (``feldman_cousins`` rows of the JSON).

Run: ``python benchmarks/coverage_small_counts.py`` (about 3 minutes; ``--toys`` per width,
``--fc-toys`` for the Feldman-Cousins part).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from _common import report  # type: ignore[import-not-found]
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from zfit_gbi.toys import neyman_interval

N_B = 10_000


def _ratios(rng: np.random.Generator, sigma: float, s_true: float = 0.0) -> np.ndarray:
    """One toy's p_S / p_B per event (background uniform on [0, 1], Poisson(N_B) events, plus
    Poisson(s_true) signal events at 0.5 with width ``sigma``); events with r ~ 0 only add a
    constant to the NLL and are dropped."""
    x = np.concatenate([rng.random(rng.poisson(N_B)), rng.normal(0.5, sigma, rng.poisson(s_true))])
    r = norm.pdf(x, 0.5, sigma)
    return r[r > 1e-9]


def _nll(s: float, r: np.ndarray) -> float:
    """The extended NLL in s (b fixed at N_B), up to a constant: s - sum log(1 + s r / N_B)."""
    return s - float(np.sum(np.log1p(s * r / N_B)))


def _fit(r: np.ndarray) -> tuple[float, float]:
    """``(s_hat, NLL(s_hat))``, s free down to where the density of some event reaches 0."""
    lo = -N_B / r.max() * (1 - 1e-9) if len(r) else -N_B
    res = minimize_scalar(_nll, args=(r,), bounds=(lo, 50 * math.sqrt(N_B)), method="bounded", options={"xatol": 1e-7})
    return float(res.x), float(res.fun)


def toy(rng: np.random.Generator, sigma: float) -> tuple[float, float]:
    """One background-only toy: ``(s_hat, q(0))`` with q(0) = -2 Delta ln L at s = 0."""
    r = _ratios(rng, sigma)
    s_hat, m = _fit(r)
    return s_hat, max(2 * (_nll(0.0, r) - m), 0.0)


def _fc_t(r: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, float]:
    """Feldman-Cousins' statistic at each grid value, 2 (NLL(s) - NLL(max(s_hat, 0))), and the
    profile-likelihood (free s_hat) reference NLL."""
    s_hat, m = _fit(r)
    ref = m if s_hat >= 0 else _nll(0.0, r)
    return np.maximum(2 * (np.array([_nll(float(g), r) for g in grid]) - ref), 0.0), m


def feldman_cousins_coverage(rng: np.random.Generator, sigma: float, truths: tuple[float, ...], n_crit: int, n_exp: int) -> list[dict]:
    """Coverage of the 68.3 % Feldman-Cousins interval (:func:`zfit_gbi.toys.neyman_interval`,
    critical values from ``n_crit`` toys per grid value) and of the profile-likelihood interval
    at each true s (``truths`` in grid steps), from ``n_exp`` pseudo-experiments."""
    # the grid follows the resolution, sigma_s ~ sqrt(N_B 2 sqrt(pi) sigma) (Fisher information, large counts)
    step = max(0.5, round(math.sqrt(N_B * 2 * math.sqrt(math.pi) * sigma) / 3))
    grid = np.round(np.arange(0.0, max(15.0, 15 * step) + 1e-9, step), 6)
    crit_toys = []
    for g in grid:  # toys at each grid value: the statistic at that value
        crit_toys.append([float(_fc_t(_ratios(rng, sigma, g), np.array([g]))[0][0]) for _ in range(n_crit)])
    out = []
    for s_true in (f * step for f in truths):
        fc_in = prof_in = empty = 0
        for _ in range(n_exp):
            r = _ratios(rng, sigma, s_true)
            t, m = _fc_t(r, grid)
            prof_in += 2 * (_nll(s_true, r) - m) < 1
            try:
                iv = neyman_interval(grid, t, crit_toys, cl=0.6827, bound=0.0)
            except ValueError:  # no grid value accepted (counted: it does not cover)
                empty += 1
                continue
            fc_in += iv.low <= s_true <= iv.high
        c_fc, c_pr = fc_in / n_exp, prof_in / n_exp
        out.append({"s_true": s_true, "fc_coverage_68": c_fc, "fc_coverage_68_error": math.sqrt(c_fc * (1 - c_fc) / n_exp),
                    "profile_coverage_68": c_pr, "profile_coverage_68_error": math.sqrt(c_pr * (1 - c_pr) / n_exp),
                    "pseudo_experiments": n_exp, "empty_intervals": empty, "toys_per_grid_value": n_crit, "grid": [float(grid[0]), float(grid[-1]), len(grid)]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toys", type=int, default=2000, help="toys per signal width")
    ap.add_argument("--fc-toys", type=int, default=1000, help="Feldman-Cousins: toys per grid value and pseudo-experiments per truth")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    for sigma in (0.05, 0.005, 0.0005, 0.00005):
        s_hat, q0 = np.array([toy(rng, sigma) for _ in range(args.toys)]).T
        cov = float(np.mean(q0 < 1))
        pos = float(np.mean(s_hat > 0))
        rows.append({"signal_width": sigma, "background_under_peak": N_B * 4 * sigma, "coverage_68": cov,
                     "coverage_68_error": math.sqrt(cov * (1 - cov) / args.toys), "median_s_hat": float(np.median(s_hat)),
                     "fraction_s_hat_positive": pos, "fraction_error": math.sqrt(pos * (1 - pos) / args.toys), "toys": args.toys})
    fc_rows = []
    for sigma in (0.05, 0.00005):
        for row in feldman_cousins_coverage(rng, sigma, (0.0, 5.4), args.fc_toys, args.fc_toys):
            fc_rows.append({"signal_width": sigma, "background_under_peak": N_B * 4 * sigma, **row})
            print(f"sigma {sigma:g}, s = {row['s_true']}: Feldman-Cousins coverage {row['fc_coverage_68']:.3f} +- {row['fc_coverage_68_error']:.3f}, "
                  f"profile likelihood {row['profile_coverage_68']:.3f} +- {row['profile_coverage_68_error']:.3f}", flush=True)
    report("coverage_small_counts", rows, {"n_background": N_B, "note": "background yield fixed at its truth; toys at n_S = 0",
                                           "feldman_cousins": fc_rows})


if __name__ == "__main__":
    main()

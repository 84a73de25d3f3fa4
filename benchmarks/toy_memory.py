"""Memory per toy of ``toy_study(limit=True)``, with and without generator-error nuisances.

A small model of the embedded benchmark (3000 events; 2 x 2x16 affine flows, the background a
3-member ensemble, 5 epochs each): ``--blocks`` calls of ``toy_study`` with 5 toys each (n_S =
30, a CLs limit per toy, 5000 Asimov events), the seconds per toy and the process's resident
memory after each block, for the model without nuisances, with 2 eigen-nuisances, and (last, as
it grows) with 2 eigen-nuisances and the package's clearing of TFP's bijector cache switched off:
the package before 2026-11-28, in the same run.

The cause, found with this script: zfit's ``GaussianConstraint`` is a TFP multivariate normal,
so every traced likelihood with constraints went into TFP's shared bijector cache, which kept
the whole graph alive (``zfit_gbi._tf.forget_bijector_calls``). Before the fix (2026-11-28,
``--blocks 4``): without nuisances flat at 1.14-1.19 GB over 20 toys; with them 1.30 GB after 5
toys and 2.02 GB after 20, about 48 MB per toy; the validation's signal-toy process reached
11 GB after 200 toys and slowed from 17 to 60-74 s per toy. The numbers after the fix are in
the README's table and ``results/toy_memory.json``.

Run: ``python benchmarks/toy_memory.py [--blocks 4]`` (8 minutes with 4 blocks on 2 busy CPU cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import report  # type: ignore[import-not-found]

import zfit_gbi.inference
import zfit_gbi.toys
from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.generators import FlowConfig, FlowEnsemble, TrainConfig
from zfit_gbi.model import build_model
from zfit_gbi.nuisances import EigenVariation
from zfit_gbi.toys import toy_study


def _rss_mb() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=6, help="toy_study calls of 5 toys each, per model")
    args = ap.parse_args()
    b = ResonantBenchmark()
    w = b.windows
    tr = b.sample(8000, 0, seed=11)
    sb = tr.select(w.in_sidebands(tr["mjj"]))
    small = FlowConfig(n_layers=2, hidden_units=(16, 16))
    tc = TrainConfig(epochs=5, batch_size=256, learning_rate=3e-3, progress=False, seed=3)
    common = {"features": b.features, "bounds": b.bounds, "context_names": ("mjj",), "config": small, "train": tc}
    bg = FlowEnsemble.train(sb.array(b.features), sb["mjj"], k=3, **common)
    sim = b.signal_simulation(3000, seed=43)
    sig = FlowEnsemble.train(sim.array(b.features), sim["mjj"], k=1, bootstrap=False, **common).members[0]
    data = b.sample(3000, 0, seed=44)
    var = EigenVariation.from_ensemble(bg, data["mjj"][w.in_signal_region(data["mjj"])], n_components=2, n_mc=5000, prefix="mem_eig",
                                       mass_range=w.signal_region)
    rows = []
    treatments = (("no nuisances", None, True), ("2 eigen-nuisances", var, True), ("2 eigen-nuisances, bijector cache kept (before)", var, False))
    for name, variation, clear in treatments:
        if not clear:  # the package before the fix: nothing empties TFP's bijector cache
            zfit_gbi.toys.forget_bijector_calls = zfit_gbi.inference.forget_bijector_calls = lambda: None
        m = build_model(resonant="mjj", features=b.features, windows=w, background_generator=bg, signal_generator=sig, variation=variation,
                        data_masses=data["mjj"], signal_masses=sim["mjj"], background_mass="exppoly2", prefix=f"mem{len(rows)}_")
        for block in range(args.blocks):
            t = time.perf_counter()
            toy_study(m, n_signal=30, n_background=3000, n_toys=5, seed=10 * block, limit=True, n_asimov=5000, progress=False)
            rows.append({"model": name, "toys_done": 5 * (block + 1), "seconds_per_toy": (time.perf_counter() - t) / 5, "rss_mb": _rss_mb()})
            print(rows[-1], flush=True)
    growth = {}
    for name, *_ in treatments:
        r = [row for row in rows if row["model"] == name]
        if len(r) > 1:
            growth[name] = (r[-1]["rss_mb"] - r[0]["rss_mb"]) / (r[-1]["toys_done"] - r[0]["toys_done"])
            print(f"{name}: {growth[name]:+.1f} MB per toy after the first block")
    report("toy_memory", rows, {"growth_mb_per_toy_after_first_block": growth})


if __name__ == "__main__":
    main()

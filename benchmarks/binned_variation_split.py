"""The binned route with ``binned.variation_bins`` on the `gbi demo` events and generators.

For each ``--variation-bins`` value, ``gbi run`` on the demo's own ``demo.yaml`` with its saved
generators (``DIR/result/models/background`` and ``signal``: nothing is retrained) and
``inference.backend: pyhf``: the binned yield with its profile-likelihood errors, the discovery
Z, the CLs limits, the generator nuisances at the best fit, the number of bins and the seconds
of the binned limit. 2 is the demo's own binned route (the default split with its two
eigen-variations), 1 the route without the split.

Run: ``python benchmarks/binned_variation_split.py --demo DIR --variation-bins 1 2`` (``DIR``: a
finished ``gbi demo --out DIR``). The split's binned fit and CLs limit are the slow part: 128
bins, each with a ``staterror`` parameter (about 2 minutes, against half a minute unsplit, on 2
CPU cores; 16 minutes before the faster limit scan of ``pyhf_gbi.infer.QtildeCLs``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml
from _common import report  # type: ignore[import-not-found]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, required=True, help="a finished `gbi demo --out DIR` folder")
    ap.add_argument("--variation-bins", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=Path("gbi-variation-split"), help="where the runs write their results")
    args = ap.parse_args()
    demo = args.demo.resolve()
    raw = yaml.safe_load((demo / "demo.yaml").read_text())
    for what in ("background", "signal"):
        raw[what]["generator"] = {"path": str(demo / "result" / "models" / what)}
    raw["data"]["path"] = str(demo / raw["data"]["path"])
    raw["signal"]["simulation"]["path"] = str(demo / raw["signal"]["simulation"]["path"])
    raw["inference"]["backend"] = "pyhf"
    rows = []
    for vb in args.variation_bins:
        raw["binned"]["variation_bins"] = vb
        out = args.out / f"variation_bins_{vb}"
        out.mkdir(parents=True, exist_ok=True)
        cfg = out / "config.yaml"
        cfg.write_text(yaml.safe_dump(raw))
        subprocess.run([sys.executable, "-m", "zfit_gbi.cli", "run", str(cfg), "--out", str(out / "result"), "--quiet"], check=True)
        s = json.loads((out / "result" / "summary.json").read_text())
        y, lim, par = s["signal_yield"], s["upper_limit"], s["results"]["pyhf"]["parameters"]
        rows.append({"variation_bins": vb, "bins": s["results"]["pyhf"]["bins"]["mass"] * s["results"]["pyhf"]["bins"]["score"]
                     * s["results"]["pyhf"]["bins"].get("variation", 1),
                     "yield": y["value"], "err_low": y["error_low"], "err_high": y["error_high"], "Z": s["discovery"]["significance"],
                     "observed": lim["observed"], "expected": lim["expected"][2],
                     **{f"{k} at best": v["value"] for k, v in par.items() if k.startswith("gen_")},
                     "limit_seconds": s["timings"].get("binned upper limit")})
        print(rows[-1], flush=True)
    report("binned_variation_split", rows, {"demo": str(demo)})


if __name__ == "__main__":
    main()

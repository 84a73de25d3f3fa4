"""``gbi demo`` end to end, by stage.

Runs the command exactly as the README's first command does (``gbi demo --out DIR`` in a fresh
process) and reads the per-stage times the run writes to ``DIR/result/summary.json``
(``timings``: reading data, training each generator, building the model, fit, profile scan,
discovery, CLs limit, plots, the binned pyhf route), plus the process's wall time, which also
holds the interpreter start and the imports.

Run: ``python benchmarks/demo_stages.py`` (about 5 minutes on 2 CPU cores);
``--quick`` runs ``gbi demo --smoke`` (tiny networks, about 1 minute).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="gbi demo --smoke")
    ap.add_argument("--name", default="demo_stages", help="results/<name>.json")
    ap.add_argument("--demo", type=Path, default=None,
                    help="read a finished `gbi demo --out DIR` folder instead of running one (no whole-command wall time then)")
    args = ap.parse_args()
    if args.demo is not None:
        s = json.loads((args.demo / "result" / "summary.json").read_text())
        total = sum(float(v) for v in s["timings"].values())
        rows = [{"stage": k, "seconds": float(v), "fraction": float(v) / total} for k, v in s["timings"].items()]
        rows.append({"stage": "sum of the stages", "seconds": total, "fraction": 1.0})
        report(args.name, rows, {"command": f"gbi demo (read from {args.demo})", "signal_yield": s["signal_yield"],
                                 "significance": (s.get("discovery") or {}).get("significance")})
        return
    gbi = shutil.which("gbi")
    if gbi is None:
        raise SystemExit("the gbi command is not on PATH: install the package first (see the README)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        cmd = [gbi, "demo", "--out", str(out), "--quiet", *(["--smoke"] if args.quick else [])]
        print(" ".join(cmd[1:]), "...", flush=True)
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t
        s = json.loads((out / "result" / "summary.json").read_text())
    rows = [{"stage": k, "seconds": float(v), "fraction": float(v) / wall} for k, v in s["timings"].items()]
    rows.append({"stage": "whole command (wall, with start-up)", "seconds": wall, "fraction": 1.0})
    report(args.name, rows, {"command": "gbi demo" + (" --smoke" if args.quick else ""), "signal_yield": s["signal_yield"],
                             "significance": (s.get("discovery") or {}).get("significance")})


if __name__ == "__main__":
    main()

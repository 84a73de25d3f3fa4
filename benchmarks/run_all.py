"""Run every benchmark, one after the other, each in its own process; print what each took.

``python benchmarks/run_all.py`` reruns the full versions (several hours on 2 CPU cores; the
committed ``results/*.json`` come from them). ``--quick`` reruns all of them in reduced form
(fewer events, epochs and toys) in under 15 minutes on 2 CPU cores and writes their JSON to
``results/quick/`` (not committed), so the full results stay as they are.

``--only NAME ...`` picks benchmarks; ``--nflows-python`` is passed to ``training.py`` (an
interpreter with nflows and torch; without one the nflows rows are skipped with a message).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name: (full arguments, quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "import_and_data": ([], ["--repeat", "1", "--n-eval", "1000000"]),
    "hepstats_reference": ([], []),
    "pdf_caching": ([], ["--events", "5000", "--calls", "5"]),
    "training": (["--no-xla"], ["--quick"]),
    "likelihood": ([], ["--quick"]),
    "demo_stages": ([], ["--quick"]),
    "sensitivity": ([], ["--quick", "--s-over-sqrt-b", "3"]),
    "asymptotic_vs_toys": ([], ["--toys", "8"]),
    "generator_nuisances": ([], ["--quick", "--retrainings", "1"]),
    "paws": ([], ["--quick"]),
    "binned_vs_unbinned": ([], None),  # needs a full demo and 10 minutes of limits: full runs only
    "validation": ([], None),  # 400 toys + 20 retrainings (about an hour); its --quick alone takes 9 minutes
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced versions, under 15 minutes on 2 CPU cores")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None)
    ap.add_argument("--nflows-python", default=None, help="interpreter with nflows + torch for training.py")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.quick:
        env["GBI_BENCH_RESULTS"] = str(HERE / "results" / "quick")
    rows = []
    t_all = time.perf_counter()
    for name in args.only or list(BENCHMARKS):
        full, quick = BENCHMARKS[name]
        if args.quick and quick is None:
            rows.append({"benchmark": name, "status": "skipped (full runs only)", "seconds": 0.0})
            continue
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(quick if args.quick else full)]
        if name == "training" and args.nflows_python:
            cmd += ["--nflows-python", args.nflows_python]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=HERE, check=False)
        rows.append({"benchmark": name, "status": "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})",
                     "seconds": round(time.perf_counter() - t, 1)})
    total = time.perf_counter() - t_all
    print("\n" + "\n".join(f"{r['benchmark']:>22}  {r['status']:<26} {r['seconds']:8.1f} s" for r in rows))
    print(f"{'total':>22}  {'':<26} {total:8.1f} s")
    out = Path(env.get("GBI_BENCH_RESULTS", HERE / "results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_all.json").write_text(json.dumps({"quick": args.quick, "rows": rows, "seconds": total}, indent=2))
    if any(r["status"].startswith("failed") for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

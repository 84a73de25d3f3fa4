"""Run every benchmark, one after the other, each in its own process; print what each took.

``python benchmarks/run_all.py`` reruns the full versions (several hours on 2 CPU cores; the
committed ``results/*.json`` come from them). ``--quick`` reruns all of them in reduced form
(fewer events, epochs and toys) in under 15 minutes on 2 CPU cores and writes their JSON to
``results/quick/`` (not committed), so the full results stay as they are.

``--only NAME ...`` picks benchmarks; ``--nflows-python`` is passed to ``training.py`` (an
interpreter with nflows and torch; without one the nflows rows are skipped with a message).
``--jobs N`` runs N benchmarks at a time (default: 2 with ``--quick``, 1 for the full runs),
each one's output then in ``<results>/logs/<name>.log``: the scripts are partly single-threaded
(fits, tracing), so two at a time use 2 cores better, but each one's *own* timings then include
the other's load. The committed full results come from one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name: (full arguments, quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "import_and_data": ([], ["--repeat", "1", "--n-eval", "1000000"]),
    "hepstats_reference": ([], []),
    "pdf_caching": ([], ["--events", "5000", "--calls", "5"]),
    "training": (["--no-xla", "--seeds", "3"], ["--quick"]),
    "likelihood": ([], ["--quick"]),
    "demo_stages": ([], ["--quick"]),
    "sensitivity": (["--seeds", "2", "--s-over-sqrt-b", "0.5", "1", "2", "5"], ["--quick", "--s-over-sqrt-b", "3", "--n-background", "15000", "--epochs", "5"]),
    "asymptotic_vs_toys": ([], ["--toys", "8"]),
    "generator_nuisances": ([], ["--quick", "--retrainings", "1"]),
    "paws": ([], ["--quick"]),
    "coverage_small_counts": ([], ["--toys", "300", "--fc-toys", "200"]),
    "interpolation": ([], ["--quick"]),
    "memory_growth": ([], ["--quick"]),
    "memory_growth_rqs": (["--flow", "rqs", "--parts", "trainings", "--trainings", "4", "--epochs", "4", "--name", "memory_growth_rqs"],
                          None),  # the spline generator's tracing; 4 minutes
    "sliding_scan": ([], None),  # 16 minutes: full runs only
    "sliding_scan_toys": (["--masses", "3.2", "3.8", "--null-toys", "20", "--name", "sliding_scan_toys"], None),  # empty windows' limits against their toys; 30 minutes
    "training_mixed_precision_cpu": (["--no-nflows", "--mixed-precision", "float16", "bfloat16", "--name", "training_mixed_precision_cpu"],
                                     None),  # what mixed precision costs on the CPU; 9 minutes
    "sensitivity_lhco": (["--dataset", "lhco", "--seeds", "2", "--n-asimov", "20000"], None),  # the shared LHCO data; 40 minutes
    "sideband_signal": ([], None),  # the shared LHCO data; 30 minutes
    "sideband_signal_rqs": (["--flow", "rqs", "--seeds", "2", "--rounds", "3", "--s-over-sqrt-b", "0", "1", "2.5", "5"],
                            None),  # the package's default generator; 80 minutes
    "sideband_signal_truth": (["--flow", "rqs", "--seeds", "1", "--rounds", "0", "--no-spurious", "--sideband-truth", "--s-over-sqrt-b", "0", "1", "2.5",
                               "5", "--name", "sideband_signal_truth"], None),  # interpolation vs retraining; 20 minutes
    "binned_vs_unbinned": ([], None),  # needs a full demo and 10 minutes of limits: full runs only
    "binned_limit": ([], None),  # the demo's split workspace three ways (pyhf's own TOMS748 the slow one): full runs only
    "validation": ([], None),  # 400 toys + 20 retrainings (about an hour); its --quick alone takes 9 minutes
}
SCRIPT = {"memory_growth_rqs": "memory_growth", "sliding_scan_toys": "sliding_scan", "training_mixed_precision_cpu": "training", "sensitivity_lhco": "sensitivity", "sideband_signal_rqs": "sideband_signal", "sideband_signal_truth": "sideband_signal"}  # entries that run another entry's script with other arguments


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced versions, under 15 minutes on 2 CPU cores")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None)
    ap.add_argument("--nflows-python", default=None, help="interpreter with nflows + torch for training.py")
    ap.add_argument("--jobs", type=int, default=None, help="benchmarks at a time (default 2 with --quick, else 1)")
    args = ap.parse_args()
    jobs = args.jobs or (2 if args.quick else 1)
    env = dict(os.environ)
    if args.quick:
        env["GBI_BENCH_RESULTS"] = str(HERE / "results" / "quick")
    out = Path(env.get("GBI_BENCH_RESULTS", HERE / "results"))
    logs = out / "logs"
    if jobs > 1:
        logs.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> dict:
        full, quick = BENCHMARKS[name]
        if args.quick and quick is None:
            return {"benchmark": name, "status": "skipped (full runs only)", "seconds": 0.0}
        cmd = [sys.executable, str(HERE / f"{SCRIPT.get(name, name)}.py"), *(quick if args.quick else full)]
        if name == "training" and args.nflows_python:
            cmd += ["--nflows-python", args.nflows_python]
        print(f"\n=== {name}: {' '.join(cmd[1:])}" + (f" (output: {logs / name}.log)" if jobs > 1 else ""), flush=True)
        t = time.perf_counter()
        if jobs > 1:
            with open(logs / f"{name}.log", "w") as log:
                proc = subprocess.run(cmd, env=env, cwd=HERE, check=False, stdout=log, stderr=subprocess.STDOUT)
        else:
            proc = subprocess.run(cmd, env=env, cwd=HERE, check=False)
        row = {"benchmark": name, "status": "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})",
               "seconds": round(time.perf_counter() - t, 1)}
        if jobs > 1:
            print(f"=== {name}: {row['status']} in {row['seconds']:.0f} s", flush=True)
        return row

    t_all = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # threads only wait on the benchmarks' processes
        rows = list(pool.map(one, args.only or list(BENCHMARKS)))
    total = time.perf_counter() - t_all
    print("\n" + "\n".join(f"{r['benchmark']:>22}  {r['status']:<26} {r['seconds']:8.1f} s" for r in rows))
    print(f"{'total':>22}  {'':<26} {total:8.1f} s")
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_all.json").write_text(json.dumps({"quick": args.quick, "jobs": jobs, "rows": rows, "seconds": total}, indent=2))
    if any(r["status"].startswith("failed") for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

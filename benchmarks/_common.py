"""Helpers shared by the benchmark scripts: a results folder, a table printer, JSON output."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

#: the data-driven mode's signal flow q in these benchmarks (``signal.generator`` of ``gbi run``,
#: its seed apart): ``sensitivity.py``'s ``gbi_data_driven`` rows and ``ranode_bias.py``'s scans
DATA_DRIVEN_SIGNAL: dict[str, Any] = {"type": "maf-affine", "layers": 3, "hidden": 32, "epochs": 25, "batch_size": 512,
                                      "learning_rate": 0.002, "patience": 6}
# GBI_BENCH_RESULTS redirects the JSON (run_all.py --quick writes to results/quick, which is not committed)
RESULTS = Path(os.environ.get("GBI_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


def machine() -> dict[str, Any]:
    """Python, the architecture, TensorFlow's version and the devices it sees (the package's
    :func:`zfit_gbi.pipeline.devices`: ``gpus`` with name and compute capability, ``cpus``)."""
    from zfit_gbi._tf import tf
    from zfit_gbi.pipeline import devices

    return {"python": platform.python_version(), "machine": platform.machine(), "tensorflow": tf.__version__, **devices()}


def versions() -> dict[str, str]:
    from zfit_gbi.pipeline import versions as package_versions

    return package_versions()


def device() -> str:
    info = machine()
    gpus = info.get("gpus") or []
    return f"GPU {', '.join(gpus)}" if gpus else f"CPU ({info['cpus']} cores, {info['machine']})"


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print ``rows`` as an aligned table, one column per key (floats to 4 digits)."""
    cols = list(dict.fromkeys(c for r in rows for c in r))  # every row's keys, first seen first
    text = [[f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for t in text:
        print("  ".join(v.rjust(w) for v, w in zip(t, widths, strict=True)))


def report(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None, *, quiet: bool = False) -> Path:
    """Print ``rows`` as a table (not with ``quiet``) and write ``results/<name>.json``
    (``{"benchmark", "device", "date", "package_versions", "machine", "rows", ...}``)."""
    if quiet:
        return _write(name, rows, extra)
    print_table(rows)
    out = _write(name, rows, extra)
    print(f"\nwrote {out}")
    return out


def _write(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None) -> Path:
    import datetime

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    doc = {"benchmark": Path(name).name, "device": device(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "package_versions": versions(), "machine": machine(), "peak_rss_mb": round(peak, 1), "rows": rows, **(extra or {})}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=float))
    tmp.replace(out)  # atomic: an interrupted write leaves the previous file
    return out

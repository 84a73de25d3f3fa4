"""HistFactory specification of the binned GBI model: build, validate, write, read.

One channel (the signal region, flattened bins of m and of the learned score):

* ``signal``: the signal template, ``normfactor`` POI (``n_sig``: signal events in the fit
  window, as in the unbinned route; or ``mu``);
* ``background``: the generated background template normalized to the sideband-fit
  expectation, ``normsys`` ``bkg_norm`` with the sideband fit's relative error, MC
  ``staterror`` of the generated sample, and one shape variation per
  generator-error nuisance: standard ``histosys`` (portable: plain pyhf, HEPData), or the
  custom ``gbi_expshape`` modifier (:mod:`pyhf_gbi.modifiers`), whose exponential, shape-only
  interpolation is the unbinned route's.

The POI's bounds in the spec are ``[0, upper]`` (what CLs limits need); the fit of the yield
widens them to negative values (:func:`pyhf_gbi.infer.fit`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyhf

from zfit_gbi._atomic import write_json_atomic

from .templates import BinnedTemplates

__all__ = ["CHANNEL", "SPURIOUS_SAMPLE", "build_spec", "is_portable", "negative_poi_bound", "read_spec", "validate_spec", "write_spec"]

CHANNEL = "signal_region"
SPURIOUS_SAMPLE = "spurious_signal"
"""The sample carrying the spurious-signal term (zero nominal, a linear ``histosys``)."""
_CUSTOM = "gbi_expshape"


def build_spec(t: BinnedTemplates, *, variations: Literal["histosys", "custom"] = "histosys", measurement: str = "gbi") -> dict[str, Any]:
    """The pyhf (HistFactory 1.0.0) workspace specification of these templates.

    Args:
        variations: ``"histosys"`` (standard modifiers only) or ``"custom"``
            (``gbi_expshape``; needs :func:`pyhf_gbi.modifiers.make_model`).
    """
    if variations not in ("histosys", "custom"):
        msg = f"variations must be 'histosys' or 'custom', got {variations!r}"
        raise ValueError(msg)
    poi = t.poi_name
    bkg_err = np.sqrt(t.background_var)
    bkg_mods: list[dict[str, Any]] = [
        {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.0 + t.sideband.rel_error, "lo": max(1.0 - t.sideband.rel_error, 1e-3)}},
        {"name": "mc_stat", "type": "staterror", "data": _floats(bkg_err)},
    ]
    for name, (up, down) in t.variations.items():
        kind = "histosys" if variations == "histosys" else _CUSTOM
        bkg_mods.append({"name": name, "type": kind, "data": {"hi_data": _floats(up), "lo_data": _floats(down)}})
    # no staterror on the signal: as in the unbinned route (a flow for p_S), the simulation's
    # finite size is not a nuisance; a shared staterror would also mis-scale it (pyhf takes
    # the relative error w.r.t. the template at POI = 1 unit)
    signal = {"name": "signal", "data": _floats(t.signal), "modifiers": [{"name": poi, "type": "normfactor", "data": None}]}
    background = {"name": "background", "data": _floats(t.background), "modifiers": bkg_mods}
    samples = [signal, background]
    if t.spurious_width > 0:  # theta * width more signal events: a zero sample with a linear histosys
        shift = t.signal * (t.spurious_width / t.signal_scale)
        samples.append({"name": SPURIOUS_SAMPLE, "data": _floats(np.zeros_like(shift)), "modifiers": [
            {"name": t.spurious_name, "type": "histosys", "data": {"hi_data": _floats(shift), "lo_data": _floats(-shift)}}]})
    s_tot = float(t.signal.sum())
    upper = float(max(10.0, 5.0 * (t.data.sum() + 25.0 * np.sqrt(t.data.sum())) / max(s_tot, 1e-12)))
    return {
        "channels": [{"name": CHANNEL, "samples": samples}],
        "observations": [{"name": CHANNEL, "data": _floats(t.data)}],
        "measurements": [{"name": measurement, "config": {"poi": poi, "parameters": [
            {"name": poi, "bounds": [[0.0, upper]], "inits": [float(max(1.0, 0.1 * np.sqrt(t.data.sum()) / max(s_tot, 1e-12)))]},
        ]}}],
        "version": "1.0.0",
    }


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=float)]


def is_portable(spec: dict[str, Any]) -> bool:
    """True if every modifier is a standard HistFactory one (plain pyhf can read it)."""
    return not any(m["type"] == _CUSTOM for c in spec["channels"] for s in c["samples"] for m in s["modifiers"])


def validate_spec(spec: dict[str, Any]) -> None:
    """Validate against pyhf's workspace schema (1.0.0). A spec with ``gbi_expshape``
    modifiers is validated as its portable ``histosys`` twin plus a shape check of the custom
    entries. Raises ``pyhf.exceptions.InvalidSpecification`` or ``ValueError``."""
    if is_portable(spec):
        pyhf.schema.validate(spec, "workspace.json")
        return
    from .modifiers import to_histosys

    pyhf.schema.validate(to_histosys(spec), "workspace.json")
    for c in spec["channels"]:
        for s in c["samples"]:
            for m in s["modifiers"]:
                if m["type"] == _CUSTOM:
                    for key in ("hi_data", "lo_data"):
                        if len(m["data"][key]) != len(s["data"]):
                            msg = f"{c['name']}/{s['name']}: modifier {m['name']} {key} has {len(m['data'][key])} bins, the sample {len(s['data'])}"
                            raise ValueError(msg)


def write_spec(spec: dict[str, Any], path: str | Path) -> Path:
    """Validate and write a spec as JSON, atomically (an interrupted write leaves no file)."""
    validate_spec(spec)
    path = Path(path)
    write_json_atomic(path, spec)
    return path


def read_spec(path: str | Path) -> dict[str, Any]:
    """Read and validate a workspace JSON (a clear error for a missing or broken file)."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such workspace file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON workspace ({err})") from None
    try:
        validate_spec(spec)
    except (pyhf.exceptions.InvalidSpecification, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a valid HistFactory workspace: {err}") from None
    return spec


def negative_poi_bound(spec: dict[str, Any], fraction: float = 0.9) -> float:
    """The most negative POI value that keeps every bin's expectation positive (at nominal
    nuisances): ``-fraction * min_b(b_b / s_b)`` over bins with signal."""
    chan = spec["channels"][0]
    samples = {s["name"]: np.asarray(s["data"], float) for s in chan["samples"]}
    s, b = samples["signal"], sum(v for k, v in samples.items() if k != "signal")
    ok = s > 0
    return -fraction * float(np.min(b[ok] / s[ok])) if ok.any() else 0.0


def portable(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy with only standard modifiers (``gbi_expshape`` -> ``histosys``)."""
    if is_portable(spec):
        return copy.deepcopy(spec)
    from .modifiers import to_histosys

    return to_histosys(spec)

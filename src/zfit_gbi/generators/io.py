"""Save and load flows and ensembles: a folder with ``model.json`` and ``weights.npz``.

``model.json`` holds everything needed to rebuild the object (architecture, features, bounds,
preprocessing, context, training history, package versions) and the SHA-256 of the weights
file; ``weights.npz`` holds plain float arrays. Loading reads JSON and ``numpy.load(...,
allow_pickle=False)`` only: no code from the file is ever executed. A truncated, edited,
future-format or otherwise inconsistent folder raises :class:`ModelFileError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_atomic
from .ensemble import FlowEnsemble
from .flows import Flow, FlowConfig, TrainingHistory

__all__ = ["FORMAT_VERSION", "ModelFileError", "flow_from_state", "flow_state", "load", "save"]

FORMAT = "zfit-gbi-generator"
# 2: FlowConfig.layout is stored (format 1 knew only layout 1; its files load as such)
FORMAT_VERSION = 2
METADATA = "model.json"
WEIGHTS = "weights.npz"


class ModelFileError(ValueError):
    """A saved generator cannot be loaded; the message names the file and the problem."""


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("zfit-gbi", "tensorflow", "tensorflow-probability", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _flow_meta(flow: Flow) -> dict[str, Any]:
    return {
        "features": list(flow.features),
        "bounds": {k: list(v) for k, v in flow.bounds.items()},
        "context": list(flow.context),
        "config": {**asdict(flow.config), "hidden_units": list(flow.config.hidden_units)},
        "preprocessing": {
            "box_to_R": "logit((x - low) / (high - low)), then (z - x_mean) / x_std",
            "x_mean": flow.x_mean.tolist(),
            "x_std": flow.x_std.tolist(),
            "c_mean": flow.c_mean.tolist(),
            "c_std": flow.c_std.tolist(),
        },
        "seed": flow._seed,
        "history": flow.history.to_dict(),
    }


def save(model: Flow | FlowEnsemble, path: str | Path) -> Path:
    """Save a :class:`Flow` or :class:`FlowEnsemble` into the folder ``path`` (created if needed).

    Both files are written to temporary names and moved into place, weights first, so an
    interrupted save never leaves a folder that loads into something else.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    flows = model.members if isinstance(model, FlowEnsemble) else [model]
    arrays = {f"flow{k}/w{i}": w for k, f in enumerate(flows) for i, w in enumerate(f.get_weights())}

    def write_npz(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    write_atomic(path / WEIGHTS, write_npz)
    digest = hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "ensemble" if isinstance(model, FlowEnsemble) else "flow",
        "aggregate": model.aggregate if isinstance(model, FlowEnsemble) else None,
        "n_norm": model.n_norm if isinstance(model, FlowEnsemble) else None,
        "flows": [_flow_meta(f) for f in flows],
        "weights_file": WEIGHTS,
        "weights_sha256": digest,
        "versions": _versions(),
    }
    text = json.dumps(meta, indent=1)
    write_atomic(path / METADATA, lambda tmp: Path(tmp).write_text(text))
    return path


def _fail(file: Path, what: str) -> ModelFileError:
    return ModelFileError(f"{file}: {what}")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The validated ``model.json`` of a saved generator (no weights are read)."""
    path = Path(path)
    meta_file = path / METADATA if path.is_dir() else path
    if not meta_file.is_file():
        raise _fail(meta_file, "no such file; a saved generator is a folder with model.json and weights.npz")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _fail(meta_file, f"not valid JSON (truncated or edited?): {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(meta_file, f"not a zfit-gbi generator file (expected format {FORMAT!r})")
    version = meta.get("format_version")
    if type(version) is not int:
        raise _fail(meta_file, f"format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION or version < 1:
        raise _fail(
            meta_file,
            f"format_version {version!r} is not supported by this zfit-gbi (reads 1 to {FORMAT_VERSION}); "
            "upgrade zfit-gbi to load it",
        )
    if meta.get("kind") not in ("flow", "ensemble") or not isinstance(meta.get("flows"), list) or not meta["flows"]:
        raise _fail(meta_file, "missing or invalid 'kind' / 'flows' entries")
    return meta


def _build_flow(fm: dict[str, Any], meta_file: Path, k: int, version: int = FORMAT_VERSION) -> Flow:
    try:
        cfg = dict(fm["config"])
        cfg["hidden_units"] = tuple(cfg["hidden_units"])
        if version == 1:  # written before FlowConfig.layout existed
            if "layout" in cfg:
                raise KeyError("config.layout in a format-1 file")
            cfg["layout"] = 1
        elif "layout" not in cfg:
            raise KeyError("config.layout")
        flow = Flow(fm["features"], {f: tuple(b) for f, b in fm["bounds"].items()}, fm["context"], FlowConfig(**cfg), seed=int(fm["seed"]))
        pre = fm["preprocessing"]
        flow.x_mean, flow.x_std = np.asarray(pre["x_mean"], float), np.asarray(pre["x_std"], float)
        flow.c_mean, flow.c_std = np.asarray(pre["c_mean"], float), np.asarray(pre["c_std"], float)
        shapes = {"x_mean": flow.n_features, "x_std": flow.n_features, "c_mean": flow.n_context, "c_std": flow.n_context}
        for name, n in shapes.items():
            if getattr(flow, name).shape != (n,):
                raise ValueError(f"preprocessing {name} has shape {getattr(flow, name).shape}, expected ({n},)")
        for name in ("x_std", "c_std"):
            if not np.all(np.isfinite(getattr(flow, name)) & (getattr(flow, name) > 0)):
                raise ValueError(f"preprocessing {name} must be finite and positive")
        hist = fm.get("history", {})
        if not isinstance(hist, dict):
            raise TypeError("history must be an object")
        flow.history = TrainingHistory.from_dict(hist)
        h = flow.history
        if type(h.best_epoch) is not int or not all(isinstance(v, int | float) for v in [*h.val_loss, *h.train_loss]):
            raise TypeError("history has entries of the wrong type")
        if h.objective not in ("likelihood", "mixture"):
            raise ValueError(f"history objective {h.objective!r} is not 'likelihood' or 'mixture'")
        if not -1 <= h.best_epoch < max(len(h.val_loss), 0) or (h.best_epoch == -1 and h.val_loss):
            raise ValueError(f"history best_epoch {h.best_epoch} does not fit {len(h.val_loss)} epochs")
    except (KeyError, TypeError, ValueError) as err:
        raise _fail(meta_file, f"flow {k}: invalid entry ({type(err).__name__}: {err})") from err
    return flow


def flow_state(flow: Flow) -> tuple[dict[str, Any], list[np.ndarray]]:
    """A trained flow as plain data: its ``model.json`` entry and its weight arrays (what a
    worker process sends back; :func:`flow_from_state` rebuilds it). No pickled code."""
    return _flow_meta(flow), [np.asarray(w) for w in flow.get_weights()]


def flow_from_state(meta: dict[str, Any], weights: list[np.ndarray], *, source: str = "<worker>") -> Flow:
    """The flow described by :func:`flow_state`'s output (validated as :func:`load` does)."""
    flow = _build_flow(meta, Path(source), 0)
    try:
        flow.set_weights(list(weights))
    except ValueError as err:
        raise _fail(Path(source), f"weights do not fit the architecture ({err})") from err
    return flow


def load(path: str | Path) -> Flow | FlowEnsemble:
    """Load what :func:`save` wrote (the folder, or its ``model.json``); raises
    :class:`ModelFileError` naming the bad file."""
    path = Path(path)
    if path.name == METADATA and path.is_file():
        path = path.parent
    meta = read_metadata(path)
    meta_file = path / METADATA
    wfile = path / WEIGHTS
    if not wfile.is_file():
        raise _fail(wfile, "missing weights file")
    blob = wfile.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
        raise _fail(wfile, "checksum does not match model.json: the weights file is truncated, edited or from another model")
    try:
        npz = np.load(wfile, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise TypeError("not an .npz archive")
        with npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # any unreadable archive (bad zip, bad CRC, object arrays)
        raise _fail(wfile, f"cannot read weights ({type(err).__name__}: {err})") from err
    used: set[str] = set()
    flows = []
    for k, fm in enumerate(meta["flows"]):
        flow = _build_flow(fm, meta_file, k, meta["format_version"])
        n_w = len(flow.get_weights())
        keys = [f"flow{k}/w{i}" for i in range(n_w)]
        try:
            flow.set_weights([arrays[key] for key in keys])
        except (KeyError, ValueError) as err:
            raise _fail(wfile, f"flow {k}: weights do not fit the architecture in model.json ({err})") from err
        used.update(keys)
        flows.append(flow)
    unused = sorted(set(arrays) - used)
    if unused:
        raise _fail(
            wfile,
            f"weights do not fit the architecture in model.json: {len(unused)} arrays are not used "
            f"(e.g. {unused[0]}); model.json was edited or belongs to another model",
        )
    if meta["kind"] == "flow":
        if len(flows) != 1:
            raise _fail(meta_file, f"kind 'flow' must have exactly one flow, found {len(flows)}")
        return flows[0]
    try:
        return FlowEnsemble(flows, meta.get("aggregate") or "prob", n_norm=int(meta.get("n_norm") or 20000))
    except (TypeError, ValueError) as err:
        raise _fail(meta_file, f"invalid ensemble ({err})") from err

"""One quiet place to import TensorFlow, TFP and tf-keras.

TensorFlow's C++ start-up lines (oneDNN, CUDA probing, absl's pre-init notice) are written to
file descriptor 2 while its shared libraries load, before ``TF_CPP_MIN_LOG_LEVEL`` set from
Python takes effect. Unless the user set ``TF_CPP_MIN_LOG_LEVEL`` themselves, stderr is captured
during the import and only lines that are not those informational notices are passed on.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile

_NOISE = re.compile(r"^(I\d{4} |W\d{4} |E\d{4} .*(tfg_optimizer|cuda|cuInit)|WARNING: All log messages before absl|\s*when importing GraphDef)")


def _import_quietly():
    # ours when a parent process (e.g. an executor's worker) inherited the value we set
    user_set = "TF_CPP_MIN_LOG_LEVEL" in os.environ and os.environ.get("_ZFIT_GBI_TF_QUIET") != "1"
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        os.environ["_ZFIT_GBI_TF_QUIET"] = "1"
    os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
    if user_set or "tensorflow" in sys.modules:
        import tensorflow

        return tensorflow
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (some notebook front ends)
        import tensorflow

        return tensorflow
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
    kept = [ln for ln in text.splitlines() if ln.strip() and not _NOISE.match(ln)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
    return tensorflow


tf = _import_quietly()


class _NoRetracingNotice(logging.Filter):
    """Every flow, ensemble member and R-ANODE fold traces its own graphs once; TensorFlow's
    "triggered tf.function retracing" warning counts those as retracings and is noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_NoRetracingNotice())

import tensorflow_probability as tfp
import tf_keras

tfb = tfp.bijectors
tfd = tfp.distributions


def forget_bijector_calls() -> None:
    """Empty TFP's bijector cache, the one dictionary all bijectors share (``tfb.Bijector._cache``).

    It holds each call's input strongly and its output weakly. For a call made while tracing a
    ``tf.function`` both are symbolic tensors of the same graph, so the output never dies and the
    whole graph stays in memory for the life of the process. Our flows clear it after each traced
    call (``generators.flows``); zfit's ``GaussianConstraint`` is a TFP multivariate normal, so every
    likelihood with generator-error constraints leaves its traced graphs here too (30 to 50 MB per
    toy of a 3000-event model; ``benchmarks/toy_memory.py``). The cache only saves work *within* one
    call, so clearing it between calls changes no number.
    """
    tfb.Bijector.__dict__["_cache"].clear()


__all__ = ["forget_bijector_calls", "tf", "tf_keras", "tfb", "tfd", "tfp"]

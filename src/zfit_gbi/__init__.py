"""zfit-gbi: generator-based inference with normalizing flows in zfit, hepstats and pyhf."""

from __future__ import annotations

__version__ = "0.1.0"

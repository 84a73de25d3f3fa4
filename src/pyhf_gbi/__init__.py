"""pyhf-gbi: learned generators as binned pyhf (HistFactory) templates and modifiers."""

from __future__ import annotations

__version__ = "0.1.0"

"""Generators: TFP normalizing flows and ensembles of them, with training and save/load.

Knows nothing of zfit: numpy in, numpy out, plus graph-safe ``*_tensor`` methods.
"""

from __future__ import annotations

from .ensemble import FlowEnsemble
from .flows import Flow, FlowConfig, TrainConfig, TrainingHistory
from .io import ModelFileError, load, save

__all__ = ["Flow", "FlowConfig", "FlowEnsemble", "ModelFileError", "TrainConfig", "TrainingHistory", "load", "save"]

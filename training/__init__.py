"""Pretraining: DSeq-JEPA, the I-JEPA baseline and the release's mixed curriculum (`dseqjepa train`).

Folder `training/`, import name `dseqjepa_train` (pyproject.toml maps one to the other).
"""

from .config import ConfigError, TrainConfig, load_config
from .trainer import TrainingDiverged, TrainResult, train

__all__ = ["ConfigError", "TrainConfig", "TrainResult", "TrainingDiverged", "load_config", "train"]

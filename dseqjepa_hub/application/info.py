"""A model's configuration and parameter count, without loading (or allocating) its weights."""

from __future__ import annotations

import torch
from huggingface_hub.errors import StrictDataclassError

from ..configuration_dseqjepa import PRESETS, DSeqJEPAConfig
from ..errors import DSeqJEPAError
from ..modeling_dseqjepa import DSeqJEPAModel
from .loading import model_source


def read_config(model: str) -> DSeqJEPAConfig:
    """A preset name, a saved model folder or a Hub repo id (from the local cache when offline)."""
    if model in PRESETS:
        return DSeqJEPAConfig.from_preset(model)
    try:
        return DSeqJEPAConfig.from_pretrained(model_source(model))
    except (OSError, ValueError, StrictDataclassError) as error:
        raise DSeqJEPAError(f"cannot read a DSeq-JEPA config from {model!r}: {error}") from None


def describe(config: DSeqJEPAConfig) -> dict:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        encoder = DSeqJEPAModel(config)
    grid = config.grid_size
    return {
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "patch_grid": f"{grid[0]}x{grid[1]}",
        "tokens": grid[0] * grid[1] + int(config.use_cls_token),
        "config": {name: getattr(config, name) for name in config.own_fields()},
    }

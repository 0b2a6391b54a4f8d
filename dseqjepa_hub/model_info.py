"""A model's configuration and parameter count, without loading (or allocating) its weights."""

from __future__ import annotations

import dataclasses

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import PreTrainedConfig

from .configuration_dseqjepa import PRESETS, DSeqJEPAConfig
from .errors import DSeqJEPAError
from .modeling_dseqjepa import DSeqJEPAModel

# DSeqJEPAConfig's own fields, in their declared order (not transformers' common ones such as `dtype`).
_COMMON_FIELDS = {field.name for field in dataclasses.fields(PreTrainedConfig)}
_CONFIG_FIELDS = tuple(field.name for field in dataclasses.fields(DSeqJEPAConfig) if field.name not in _COMMON_FIELDS)


def read_config(model: str) -> DSeqJEPAConfig:
    """A preset name, a saved model folder or a Hub repo id (from the local cache when offline)."""
    if model in PRESETS:
        return DSeqJEPAConfig.from_preset(model)
    try:
        return DSeqJEPAConfig.from_pretrained(model)
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
        "config": {name: getattr(config, name) for name in _CONFIG_FIELDS},
    }

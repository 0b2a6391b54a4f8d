"""A model's configuration and parameter count, without loading (or allocating) its weights."""

from __future__ import annotations

import torch

from ..configuration_dseqjepa import PRESETS, DSeqJEPAConfig
from ..modeling_dseqjepa import DSeqJEPAModel
from .loading import DEFAULT_MODEL, default_model_path, read_config


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


def named_models() -> dict[str, dict]:
    """The models a command takes by name: `default` (the bundled model) and the size presets."""
    named = {DEFAULT_MODEL: {"what": f"the bundled model ({default_model_path()})",
                             **describe(read_config(default_model_path()))}}
    for preset in PRESETS:
        named[preset] = {"what": "a size preset (random weights)", **describe(DSeqJEPAConfig.from_preset(preset))}
    return {name: {key: entry[key] for key in ("what", "parameters", "patch_grid")} for name, entry in named.items()}

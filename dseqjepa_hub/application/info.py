"""A model's configuration and parameter count, without loading (or allocating) its weights."""

from __future__ import annotations

import torch

from ..configuration_dseqjepa import DSeqJEPAConfig
from ..modeling_dseqjepa import DSeqJEPAModel


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

"""`dseqjepa info MODEL`: a model's configuration and parameter count, without loading its weights."""

from __future__ import annotations

import inspect
import json

import torch

from .configuration_dseqjepa import PRESETS, DSeqJEPAConfig
from .modeling_dseqjepa import DSeqJEPAModel


def load_config(model: str) -> DSeqJEPAConfig:
    """A preset name, a saved model folder or a Hub repo id (from the local cache when offline)."""
    if model in PRESETS:
        return DSeqJEPAConfig.from_preset(model)
    try:
        return DSeqJEPAConfig.from_pretrained(model)
    except OSError as error:
        raise SystemExit(f"dseqjepa info: cannot read a DSeq-JEPA config from {model!r}: {error}") from None


def describe(config: DSeqJEPAConfig) -> dict:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        encoder = DSeqJEPAModel(config)
    grid = config.grid_size
    return {
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "patch_grid": f"{grid[0]}x{grid[1]}",
        "tokens": grid[0] * grid[1] + int(config.use_cls_token),
        "config": {name: getattr(config, name) for name in inspect.signature(DSeqJEPAConfig).parameters if name != "kwargs"},
    }


def run(args) -> int:
    summary = describe(load_config(args.model))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"DSeq-JEPA encoder: {summary['parameters']:,} parameters, {summary['patch_grid']} patches, "
          f"{summary['tokens']} tokens")
    for key, value in sorted(summary["config"].items()):
        print(f"  {key}: {value}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="print a model's configuration and parameter count")
    parser.add_argument("model", help="a saved model folder, a Hub repo id, or a preset name such as vit_base_patch16_224")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)

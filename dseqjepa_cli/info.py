"""`dseqjepa info MODEL [--json]`: a model's configuration and parameter count, without its weights."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = "Print a model's configuration, patch grid and parameter count (no weights are read)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved model folder, a training run or checkpoint, a Hub repo id, or a preset name "
                        "such as vit_base_patch16_224")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from dseqjepa_hub.application.info import describe
    from dseqjepa_hub.application.loading import model_config

    summary = describe(model_config(args.model))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"DSeq-JEPA encoder: {summary['parameters']:,} parameters, {summary['patch_grid']} patches, "
          f"{summary['tokens']} tokens")
    for key, value in sorted(summary["config"].items()):
        print(f"  {key}: {value}")
    return 0

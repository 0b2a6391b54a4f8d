"""`dseqjepa info [MODEL] [--json]`: a model's configuration and parameter count, without its weights;
without MODEL, the models that have a name (the bundled one and the size presets)."""

from __future__ import annotations

import argparse
import json

from dseqjepa_options import DEFAULT_MODEL

from .arguments import MODEL_HELP

DESCRIPTION = ("Print a model's configuration, patch grid and parameter count (no weights are read); without MODEL, "
               f"list the models that have a name: {DEFAULT_MODEL!r} (the bundled model) and the size presets.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help=f"{MODEL_HELP}, or a size preset such as vit_base_patch16_224 (random weights)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from dseqjepa_hub.application.info import describe, named_models
    from dseqjepa_hub.application.loading import model_config

    if args.model is None:
        names = named_models()
        if args.json:
            print(json.dumps(names, indent=2))
            return 0
        print("Models with a name (`dseqjepa info NAME` for one's configuration; any command takes the name):")
        for name, entry in names.items():
            print(f"  {name:<24} {entry['what']}: {entry['parameters']:,} parameters, {entry['patch_grid']} patches")
        print("Any other model is named by its folder, training run or checkpoint, or Hub repo id.")
        return 0
    summary = describe(model_config(args.model))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"DSeq-JEPA encoder: {summary['parameters']:,} parameters, {summary['patch_grid']} patches, "
          f"{summary['tokens']} tokens")
    for key, value in sorted(summary["config"].items()):
        print(f"  {key}: {value}")
    return 0

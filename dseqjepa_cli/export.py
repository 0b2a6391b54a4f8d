"""`dseqjepa export timm MODEL --out FILE`: a model folder as another library's weights."""

from __future__ import annotations

import argparse

DESCRIPTION = "Export a DSeq-JEPA model folder to timm VisionTransformer weights (.safetensors), checked by loading them."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=("timm",))
    parser.add_argument("model", help="DSeq-JEPA model folder")
    parser.add_argument("--out", required=True, help="output .safetensors file (must not exist)")


def run(args: argparse.Namespace) -> int:
    from dseqjepa_convert import export_timm

    export_timm(args.model, args.out)
    return 0

"""`dseqjepa convert` and `dseqjepa export timm`."""

from __future__ import annotations

import argparse
import sys

from ..configuration_dseqjepa import PRESETS
from .convert import READERS, convert
from .loading import ConversionError
from .timm_checkpoint import export_timm


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint (this project's, the authors', I-JEPA's, transformers', timm's) into a Hub folder",
        description="Convert SRC into a DSeq-JEPA model folder. The converted model is checked against the "
        "source architecture on random images (fp32, max abs difference <= 1e-4) before anything is written.",
    )
    parser.add_argument("src", help="checkpoint file or folder")
    parser.add_argument("--format", required=True, choices=sorted(READERS), dest="fmt")
    parser.add_argument("--out", required=True, help="output folder: must be absent or empty")
    parser.add_argument("--encoder", choices=("target", "context"), default="target",
                        help="which encoder of a training dict (default: target, I-JEPA's evaluation choice)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="size preset giving the number of attention heads")
    parser.add_argument("--num-heads", type=int, help="number of attention heads (shapes cannot tell it)")
    parser.add_argument("--with-predictor", action="store_true",
                        help="also save the pretraining predictor as predictor.safetensors (continued pretraining)")
    parser.add_argument("--base-model", help="Hub id of the source weights, recorded for the model card")
    parser.add_argument("--license", help="license of the source weights, recorded for the model card")
    parser.set_defaults(func=run_convert)

    export = subparsers.add_parser("export", help="export a DSeq-JEPA model folder to another library's weights")
    export.add_argument("target", choices=("timm",))
    export.add_argument("model", help="DSeq-JEPA model folder")
    export.add_argument("--out", required=True, help="output .safetensors file (must not exist)")
    export.set_defaults(func=run_export)


def run_convert(args: argparse.Namespace) -> int:
    try:
        convert(
            args.src, args.fmt, args.out, encoder=args.encoder, preset=args.preset, num_heads=args.num_heads,
            with_predictor=args.with_predictor, base_model=args.base_model, license=args.license,
        )
    except ConversionError as error:
        print(f"dseqjepa convert: error: {error}", file=sys.stderr)
        return 1
    return 0


def run_export(args: argparse.Namespace) -> int:
    try:
        export_timm(args.model, args.out)
    except ConversionError as error:
        print(f"dseqjepa export: error: {error}", file=sys.stderr)
        return 1
    return 0

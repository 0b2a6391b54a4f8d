"""`dseqjepa convert SRC --format F --out DIR`: a checkpoint into a DSeq-JEPA model folder."""

from __future__ import annotations

import argparse

from dseqjepa_options import CONVERSION_TOLERANCE, CONVERT_ENCODERS, CONVERT_FORMATS

from .arguments import integer, output_folder
from .console import log

PRESET_HELP = "size preset giving the number of attention heads (e.g. vit_base_patch16_224; see `dseqjepa info`)"
DESCRIPTION = ("Convert SRC into a DSeq-JEPA model folder. The converted model is checked against the source "
               f"architecture on random images (fp32, max abs difference <= {CONVERSION_TOLERANCE:g}) before anything is written.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="checkpoint file or folder")
    parser.add_argument("--format", required=True, choices=CONVERT_FORMATS, dest="fmt")
    parser.add_argument("--out", type=output_folder, required=True, help="output folder: must be absent or empty")
    parser.add_argument("--encoder", choices=CONVERT_ENCODERS, default="target",
                        help="which encoder of a training dict (default: target, I-JEPA's evaluation choice)")
    parser.add_argument("--preset", help=PRESET_HELP)
    parser.add_argument("--num-heads", type=integer(1, 1024), help="number of attention heads (shapes cannot tell it)")
    parser.add_argument("--with-predictor", action="store_true",
                        help="also save the pretraining predictor as predictor.safetensors (continued pretraining)")
    parser.add_argument("--base-model", help="Hub id of the source weights, recorded for the model card")
    parser.add_argument("--license", help="license of the source weights, recorded for the model card")


def run(args: argparse.Namespace) -> int:
    from dseqjepa_convert import convert

    convert(
        args.src, args.fmt, args.out, encoder=args.encoder, preset=args.preset, num_heads=args.num_heads,
        with_predictor=args.with_predictor, base_model=args.base_model, license=args.license, log=log(args),
    )
    return 0

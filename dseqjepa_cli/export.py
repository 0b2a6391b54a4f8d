"""`dseqjepa export {timm,onnx} MODEL --out FILE`: a model folder as another library's weights or an ONNX graph."""

from __future__ import annotations

import argparse

from dseqjepa_options import EXPORT_TARGETS, INPUT_SIZES, ONNX_TOLERANCE, OPSETS

from .arguments import MODEL_HELP, integer, number, output_path
from .console import log

DESCRIPTION = ("Export a DSeq-JEPA model: `timm` writes a timm model folder (model.safetensors + config.json "
               "with the architecture and preprocessing: timm.create_model('local-dir:OUT', pretrained=True)), checked by "
               "loading it; `onnx` writes an ONNX graph with outputs pooler_output, last_hidden_state and saliency, "
               "and logits for a fine-tuned classifier (whose head the timm folder keeps too), checked with onnxruntime against torch before the file is kept (needs `pip install 'dseqjepa-hub[onnx]'`).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=EXPORT_TARGETS)
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--out", type=output_path, required=True, help="timm: an output folder (absent or empty); onnx: an .onnx file (must not exist)")
    parser.add_argument("--image-size", type=integer(*INPUT_SIZES), default=None,
                        help="timm: export for this square input size (exact sin-cos positions for its grid; default: "
                             "the model's)")
    onnx = parser.add_argument_group("onnx")
    onnx.add_argument("--opset", type=integer(*OPSETS), default=18, help="ONNX opset (default: 18, the lowest the exporter writes)")
    onnx.add_argument("--dynamic", action="store_true",
                      help="dynamic batch and image size (multiples of the patch size); default: one image of the "
                           "model's size")
    onnx.add_argument("--atol", type=number(0.0, 1.0), default=ONNX_TOLERANCE,
                      help=f"largest max abs difference to torch that is accepted (default: {ONNX_TOLERANCE:g})")


def run(args: argparse.Namespace) -> int:
    if args.target == "timm":
        from dseqjepa_convert import export_timm

        export_timm(args.model, args.out, image_size=args.image_size, log=log(args))
        return 0
    from dseqjepa_convert.onnx_export import export_onnx

    export_onnx(args.model, args.out, opset=args.opset, dynamic=args.dynamic,
                tolerance=args.atol, log=log(args))
    return 0

"""`dseqjepa demo [--model M] [--port P]`: serve the browser demo on this machine."""

from __future__ import annotations

import argparse

from dseqjepa_options import DEVICES

from .arguments import add_model_option, integer
from .console import say

DESCRIPTION = ("Serve a Gradio app in the browser: upload an image (or pick an example), choose the number of regions "
               "and the minimum region fraction, and see the ranked regions, the saliency and the prediction sequence "
               "with the region table. Runs offline with the bundled model; needs `pip install 'dseqjepa-hub[demo]'`.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_option(parser)
    parser.add_argument("--port", type=integer(1, 65_535), default=7860, help="port to serve on (default: 7860)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for the network)")
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="device (default: cpu)")
    parser.add_argument("--examples", default=None, metavar="DIR",
                        help="folder of example images to offer (default: the repository's examples/images)")


def run(args: argparse.Namespace) -> int:
    from dseqjepa_hub.application.demo import build_demo, launch

    demo = build_demo(args.model, device=args.device, examples_dir=args.examples)
    say(args, f"serving the demo on http://{args.host}:{args.port} (Ctrl+C to stop)")
    launch(demo, host=args.host, port=args.port)
    return 0

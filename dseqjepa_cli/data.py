"""`dseqjepa data build {scenes,fashion-mnist} --out DIR`: build the offline data sets."""

from __future__ import annotations

import argparse

from dseqjepa_options import SEEDS

from .arguments import integer, output_folder
from .console import show_progress

DESCRIPTION = "Build an offline data set from Debian packages (installed with apt-get when missing)."


def run(args: argparse.Namespace) -> int:
    return args.build(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="build a data set into a folder")
    kinds = build.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=output_folder, required=True, help="destination folder (built beside it in <out>.partial)")
    common.add_argument(
        "--source-root",
        default="/",
        help="folder holding the packages' files in the Debian layout (usr/share/...); "
        "with the default '/', missing packages are installed with apt-get",
    )
    common.add_argument("--force", action="store_true", help="replace an existing --out folder")

    scenes = kinds.add_parser(
        "scenes", parents=[common], help="photo cut-outs (tuxpaint stamps) on photo backgrounds, with object masks"
    )
    scenes.add_argument("--seed", type=integer(*SEEDS), default=0)
    scenes.add_argument("--num-train", type=integer(1, 10_000_000), default=4000)
    scenes.add_argument("--num-val", type=integer(1, 10_000_000), default=500)
    scenes.add_argument("--image-size", type=integer(16, 4096), default=128, help="side of the square images in pixels")
    scenes.add_argument("--jpeg-quality", type=integer(1, 100), default=95)
    scenes.set_defaults(build=_build_scenes)

    fashion = kinds.add_parser("fashion-mnist", parents=[common], help="Fashion-MNIST as train/<class>/*.png, test/<class>/*.png")
    fashion.add_argument("--num-train", type=integer(1, 60_000), default=None, help="keep the first N training images (default all 60000)")
    fashion.add_argument("--num-test", type=integer(1, 10_000), default=None, help="keep the first N test images (default all 10000)")
    fashion.set_defaults(build=_build_fashion_mnist)


def _build_scenes(args: argparse.Namespace) -> int:
    from dseqjepa_train.datakit import build_scenes

    build_scenes(
        out=args.out,
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        source_root=args.source_root,
        jpeg_quality=args.jpeg_quality,
        force=args.force,
        progress=show_progress(args),
    )
    return 0


def _build_fashion_mnist(args: argparse.Namespace) -> int:
    from dseqjepa_train.datakit import build_fashion_mnist

    build_fashion_mnist(
        out=args.out,
        num_train=args.num_train,
        num_test=args.num_test,
        source_root=args.source_root,
        force=args.force,
        progress=show_progress(args),
    )
    return 0

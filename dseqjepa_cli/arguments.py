"""Argument types and groups shared by several commands."""

from __future__ import annotations

import argparse
import sys

from dseqjepa_options import DEFAULT_MAX_PIXELS, DEFAULT_MODEL, DEVICES, QUANTIZATIONS


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], found {text}")
    return value


MODEL_HELP = (f"a model folder, a training run or checkpoint, a Hub repo id, or {DEFAULT_MODEL!r} (the bundled model, "
              "offline; a local folder of that name: ./default)")


def add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL", help=f"{MODEL_HELP} (default: {DEFAULT_MODEL})")


def add_model_arguments(parser: argparse.ArgumentParser, default_batch_size: int) -> None:
    add_model_option(parser)
    parser.add_argument("--batch-size", type=positive_int, default=default_batch_size,
                        help=f"images per forward pass (default: {default_batch_size})")
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="device (default: cpu)")
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images with more pixels, a guard against decompression bombs (default: {DEFAULT_MAX_PIXELS})")
    parser.add_argument("--size", type=positive_int, default=None,
                        help="model input size in pixels, a multiple of the patch size (default: the model's)")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                        help="int8: dynamic int8 quantization of every linear layer (torch's own; CPU only; "
                             "speed and agreement with fp32 in benchmarks/RESULTS.md)")


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-column", default="image",
                        help="when the input is a Hugging Face data set (a save_to_disk folder, a Parquet or Arrow file): "
                             "its image column; outputs name each row SOURCE#ROW, its row index (default: image)")


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-workers", type=non_negative_int, default=None,
                        help="processes that decode and preprocess images while the model runs (0: all in this "
                             "process; default: min(4, CPU cores - 1) with --device cuda, min(4, CPU cores // 4) on the "
                             "CPU, where the model needs the cores)")


def report_failures(failures, what: str = "could not be read and were skipped") -> None:
    """(path, reason) pairs, one line each, on stderr."""
    if failures:
        print(f"{len(failures)} file(s) {what}:", file=sys.stderr)
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)


def report_paths(paths, what: str, limit: int = 10) -> None:
    """A count and the first `limit` paths, one line each, on stdout."""
    if paths:
        print(f"{len(paths)} image(s) {what}:")
        for path in paths[:limit]:
            print(f"  {path}")
        if len(paths) > limit:
            print(f"  ... and {len(paths) - limit} more")


def image_inputs(inputs: list[str], image_column: str | None = None) -> list:
    """The image files named by `inputs` (files, folders walked), what the walk skipped reported;
    an error when there is none. With `image_column`, one input that is a Hugging Face data set gives
    its rows (`hf_datasets.ImageRows`, named SOURCE#ROW)."""
    from dseqjepa_hub.errors import DSeqJEPAError
    from dseqjepa_hub.image_io import find_images

    if image_column is not None and len(inputs) == 1:
        from dseqjepa_hub.application.hf_datasets import ImageRows, is_dataset

        if is_dataset(inputs[0]):
            return ImageRows(inputs[0], image_column)

    paths, skipped = find_images(inputs)
    report_failures(skipped, "skipped while walking the input folders")
    if not paths:
        raise DSeqJEPAError(f"no image files found in {' '.join(inputs)}")
    return paths

"""Argument types and groups shared by several commands."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from dseqjepa_options import (
    BATCH_SIZES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MODEL,
    DEVICES,
    INPUT_SIZES,
    MAX_PIXELS,
    QUANTIZATIONS,
    WORKERS,
)


def integer(low: int, high: int):
    """An argparse type: an integer in [low, high], refused with the range otherwise (shown in --help too:
    `build_parser` adds the `bounds` of every option's type to its help)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], found {text!r}")
        return value

    parse.__name__ = "integer"
    parse.bounds = f"an integer in [{low}, {high}]"
    return parse


def number(low: float, high: float, low_open: bool = False):
    """An argparse type: a finite number in [low, high] (or (low, high] with `low_open`)."""
    bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (low < value <= high if low_open else low <= value <= high):  # NaN fails both
            raise argparse.ArgumentTypeError(f"expected a number in {bounds}, found {text!r}")
        return value

    parse.__name__ = "number"
    parse.bounds = f"a number in {bounds}"
    return parse


positive_int = integer(1, 2**31 - 1)  # a count with no range of its own
fraction = number(0.0, 1.0)


def _path(text: str) -> Path:
    if not text or "\x00" in text:
        raise argparse.ArgumentTypeError(f"expected a path, found {text!r}")
    return Path(text).expanduser()


def output_path(text: str) -> str:
    """An argparse type: a path to write (a file or a folder, as the command's choice decides)."""
    _path(text)
    return text


def output_folder(text: str) -> str:
    """An argparse type: a folder to write into (absent or a folder; an existing file is refused)."""
    path = _path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; expected a folder (absent or a folder)")
    return text


def output_file(*suffixes: str):
    """An argparse type: a file to write (an existing folder is refused), ending in one of `suffixes` if given."""

    def parse(text: str) -> str:
        path = _path(text)
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder; expected a file name")
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text}: expected a file name ending in {' or '.join(suffixes)}")
        return text

    parse.__name__ = "output file"
    return parse


MODEL_HELP = (f"a model folder, a training run or checkpoint, a Hub repo id, or {DEFAULT_MODEL!r} (the bundled model, "
              "offline; a local folder of that name: ./default)")


def add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL", help=f"{MODEL_HELP} (default: {DEFAULT_MODEL})")


def add_model_arguments(parser: argparse.ArgumentParser, default_batch_size: int) -> None:
    add_model_option(parser)
    parser.add_argument("--batch-size", type=integer(*BATCH_SIZES), default=default_batch_size,
                        help=f"images per forward pass (default: {default_batch_size})")
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="device (default: cpu)")
    parser.add_argument("--max-pixels", type=integer(*MAX_PIXELS), default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images with more pixels, a guard against decompression bombs (default: {DEFAULT_MAX_PIXELS})")
    parser.add_argument("--size", type=integer(*INPUT_SIZES), default=None,
                        help="model input size in pixels, a multiple of the patch size, at least 2 patches (default: "
                             "the model's)")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                        help="int8: dynamic int8 quantization of every linear layer (torch's own; CPU only; "
                             "speed and agreement with fp32 in benchmarks/RESULTS.md)")


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-column", default="image",
                        help="when the input is a Hugging Face data set (a save_to_disk folder, a Parquet or Arrow file, "
                             "or the repo id of one in the local HF cache): its image column; outputs name each row "
                             "SOURCE#ROW, its row index (default: image)")
    parser.add_argument("--streaming", action="store_true",
                        help="read the data set in order as a stream (Parquet read as it is, never converted nor held in "
                             "memory); under torchrun each rank reads every row and decodes its own")


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-workers", type=integer(*WORKERS), default=None,
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


def image_inputs(inputs: list[str], image_column: str | None = None, streaming: bool = False):
    """The image files named by `inputs` (files, folders walked) and what the walk skipped (reported here:
    the command then exits 1, as for unreadable files); an error when there is no file. With
    `image_column`, one input that is a Hugging Face data set gives its rows (`hf_datasets.ImageRows`,
    named SOURCE#ROW, read as a stream with `streaming`)."""
    from dseqjepa_hub.errors import DSeqJEPAError
    from dseqjepa_hub.image_io import find_images

    if image_column is not None and len(inputs) == 1:
        from dseqjepa_hub.application.hf_datasets import ImageRows, is_dataset

        if is_dataset(inputs[0]):
            return ImageRows(inputs[0], image_column, streaming=streaming), []
    if streaming:
        raise DSeqJEPAError(f"--streaming reads one Hugging Face data set (a save_to_disk folder, a Parquet or Arrow "
                            f"file, a cached repo id); {' '.join(inputs)} is not one: drop --streaming")

    paths, skipped = find_images(inputs)
    report_failures(skipped, "skipped while walking the input folders")
    if not paths:
        raise DSeqJEPAError(f"no image files found in {' '.join(inputs)}{model_folder_hint(inputs)}")
    for folder in (Path(item) for item in inputs if Path(item).is_dir()):
        if not any(path.is_relative_to(folder) for path in paths):
            raise DSeqJEPAError(f"{folder}: no image files in this folder{model_folder_hint([folder])}")
    return paths, skipped


def model_folder_hint(inputs) -> str:
    """For the first input that holds a model or a training run rather than images: how to pass it."""
    for item in inputs:
        folder = Path(item)
        if (folder / "config.json").is_file() or (folder / "checkpoints").is_dir():
            return f" (it holds a model or a training run: pass it as --model {folder})"
    return ""

"""`dseqjepa regions IMAGE_OR_DIR... [--out DIR] [--json]`: overlays (and JSON) of ranked regions."""

from __future__ import annotations

import argparse

from dseqjepa_options import DRAWING_MAX_SIDE, MAX_SIDES, NUM_REGIONS, OVERLAY_FORMATS

from .arguments import (
    add_dataset_argument,
    add_model_arguments,
    add_worker_arguments,
    fraction,
    image_inputs,
    integer,
    output_folder,
    report_failures,
    report_paths,
)
from .console import say, show_progress

DESCRIPTION = ("Rank the discriminative regions of images and write one overlay per image "
               "(OUT/<path below the input folder>.regions.jpg, or --format; with --json also .regions.json, "
               "masks in COCO RLE).")
DEFAULT_OUT = "regions_out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files or folders (walked recursively), or one Hugging Face data set (--image-column)")
    add_dataset_argument(parser)
    add_model_arguments(parser, default_batch_size=8)
    add_worker_arguments(parser)
    parser.add_argument("--out", type=output_folder, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--json", action="store_true", help="also write the regions of each image as JSON")
    parser.add_argument("--format", choices=OVERLAY_FORMATS, default=OVERLAY_FORMATS[0], dest="overlay_format",
                        help=f"overlay image format: jpg (fast, small: photos), png (lossless), webp (smallest) "
                             f"(default: {OVERLAY_FORMATS[0]})")
    parser.add_argument("--min-region-fraction", type=fraction, default=None,
                        help="area filter in [0, 1] (default: the model's)")
    parser.add_argument("--num-regions", type=integer(*NUM_REGIONS), default=None,
                        help="slots, background included (default: the model's)")
    parser.add_argument("--show-saliency", action="store_true", help="put the saliency heatmap beside each overlay")
    parser.add_argument("--skip-existing", action="store_true", help="resume: skip images whose outputs exist")
    parser.add_argument("--max-side", type=integer(*MAX_SIDES), default=DRAWING_MAX_SIDE,
                        help="decode larger photos at this many pixels a side; overlays and masks are drawn at that size "
                             f"(default: {DRAWING_MAX_SIDE})")


def run(args: argparse.Namespace) -> int:
    from dseqjepa_hub.application.loading import check_device, load_model
    from dseqjepa_hub.application.regions_job import output_stems, rank_regions_in_files

    check_device(args.device)
    paths, skipped = image_inputs(args.inputs, args.image_column, args.streaming)
    loaded = load_model(args.model, args.device, image_size=args.size, quantize=args.quantize)
    results, failures = rank_regions_in_files(
        paths,
        loaded.model,
        loaded.processor,
        out_dir=args.out,
        stems=output_stems(paths, args.inputs),
        write_json=args.json,
        min_region_fraction=args.min_region_fraction,
        num_regions=args.num_regions,
        batch_size=args.batch_size,
        show_saliency=args.show_saliency,
        skip_existing=args.skip_existing,
        overlay_format=args.overlay_format,
        model_description=loaded.description,
        max_pixels=args.max_pixels,
        max_side=args.max_side,
        num_workers=args.num_workers,
        progress=show_progress(args),
    )
    written = [result for result in results if not result["skipped"]]
    min_fraction = (loaded.model.config.min_region_fraction if args.min_region_fraction is None
                    else args.min_region_fraction)
    if not args.quiet:
        report_paths(
            [result["image"] for result in written if result["no_foreground_region"]],
            "with no foreground region, only the background (no component passed the area filter, "
            f"--min-region-fraction {min_fraction:g}: try a lower one"
            + ('; "no_foreground_region": true in their JSON)' if args.json else ")"),
        )
    report_failures(failures)
    summary = f"wrote {len(written)} overlay(s) to {args.out}" if written else "wrote no overlay"
    if args.skip_existing:
        summary += f", skipped {len(results) - len(written)} image(s) whose outputs exist (--skip-existing)"
    if failures:
        summary += f", {len(failures)} file(s) could not be read (listed above)"
    say(args, summary)
    return 1 if failures or skipped else 0

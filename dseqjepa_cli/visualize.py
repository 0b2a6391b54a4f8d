"""`dseqjepa visualize IMAGE_OR_DIR... --kind KIND --out DIR`: what a model sees, as pictures."""

from __future__ import annotations

import argparse

from dseqjepa_options import CLUSTER_METHODS, CLUSTERS, DRAWING_MAX_SIDE, LAYERS, MAX_SIDES, NUM_REGIONS, SEEDS, VISUALIZE_KINDS

from .arguments import (
    add_dataset_argument,
    add_model_arguments,
    add_worker_arguments,
    fraction,
    image_inputs,
    integer,
    output_folder,
    report_failures,
)
from .console import say, show_progress

DESCRIPTION = (
    "Draw one picture per image (OUT/<path below the input folder>.KIND.png) and an index, OUT/KIND.json. Kinds: "
    "regions (ranked regions with a legend, beside the saliency heatmap), saliency (heatmap with a colour bar), "
    "attention (CLS attention of one block, the mean and every head), similarity (cosine similarity of one patch, "
    "or the CLS token, to every patch), clusters (k-means or spectral clusters of the patch features) and sequence "
    "(the DSeq prediction sequence: context R1..Rk and target R(k+1) for every step) and pca (the first three "
    "principal components of the patch features as RGB, one basis for every image of the run, fitted on the first "
    "batch; --foreground: fitted on and drawn for the ranked regions only)."
)
DEFAULT_OUT = "visualize_out"


def query(text: str) -> str:
    text = text.strip().lower()
    if text != "cls":
        parts = text.split(",")
        if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
            raise argparse.ArgumentTypeError(f"expected 'cls' or ROW,COL (0-based patch position), found {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files or folders (walked recursively), or one Hugging Face data set (--image-column)")
    parser.add_argument("--kind", required=True, choices=VISUALIZE_KINDS, help="what to draw")
    add_dataset_argument(parser)
    add_model_arguments(parser, default_batch_size=8)
    add_worker_arguments(parser)
    parser.add_argument("--out", type=output_folder, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--max-side", type=integer(*MAX_SIDES), default=DRAWING_MAX_SIDE,
                        help=f"decode larger photos at this many pixels a side (default: {DRAWING_MAX_SIDE})")
    group = parser.add_argument_group("regions and sequence")
    group.add_argument("--num-regions", type=integer(*NUM_REGIONS), default=None,
                       help="slots, background included (default: the model's)")
    group.add_argument("--min-region-fraction", type=fraction, default=None,
                       help="area filter in [0, 1] (default: the model's)")
    group = parser.add_argument_group("attention, similarity, clusters and pca")
    group.add_argument("--layer", type=integer(*LAYERS), default=-1,
                       help="block whose output is shown, 0-based or negative from the end (default: -1, the last)")
    group.add_argument("--query", type=query, default="cls",
                       help="similarity: 'cls' (the CLS token) or ROW,COL, a patch of the grid (default: cls)")
    group.add_argument("--clusters", type=integer(*CLUSTERS), default=4, help="clusters: how many (default: 4)")
    group.add_argument("--method", choices=CLUSTER_METHODS, default="kmeans", help="clusters: algorithm")
    group.add_argument("--seed", type=integer(*SEEDS), default=0, help="clusters: random seed (default: 0)")
    group.add_argument("--foreground", action="store_true",
                       help="pca: fit the basis on the patches of the ranked regions (the saliency) and black out the rest")


def run(args: argparse.Namespace) -> int:
    from dseqjepa_hub.application.loading import check_device, load_model
    from dseqjepa_hub.application.regions_job import output_stems
    from dseqjepa_hub.application.visualize_job import output_tag, parse_query, visualize_files

    check_device(args.device)
    paths, skipped = image_inputs(args.inputs, args.image_column, args.streaming)
    loaded = load_model(args.model, args.device, image_size=args.size, quantize=args.quantize)
    options = dict(num_regions=args.num_regions, min_region_fraction=args.min_region_fraction, layer=args.layer,
                   query=parse_query(args.query), num_clusters=args.clusters, foreground=args.foreground,
                   method=args.method, seed=args.seed)
    stems = output_stems(paths, args.inputs)  # a data set's rows: NAME#ROW
    entries, failures = visualize_files(
        paths, loaded.model, loaded.processor, args.kind, out_dir=args.out, stems=stems,
        batch_size=args.batch_size, model_description=loaded.description, max_pixels=args.max_pixels,
        max_side=args.max_side, num_workers=args.num_workers, progress=show_progress(args), **options,
    )
    report_failures(failures)
    failed = f", {len(failures)} file(s) could not be read (listed above)" if failures else ""
    index = f"{output_tag(args.kind, loaded.model, **options)}.json"
    say(args, f"wrote {len(entries)} {args.kind} picture(s) and {index} to {args.out}{failed}")
    return 1 if failures or skipped else 0

"""`dseqjepa embed IMAGE_OR_DIR... --out FILE [--regions] [--pool mean|cls|tokens]`: embeddings to .safetensors or .npy."""

from __future__ import annotations

import argparse

from dseqjepa_options import EMBED_POOLS, MAX_SIDES

from .arguments import (
    add_dataset_argument,
    add_model_arguments,
    add_worker_arguments,
    image_inputs,
    integer,
    output_file,
    report_failures,
)
from .console import say, show_progress

DESCRIPTION = ("Embed images (pooled patch features, the CLS output or every token: --pool; ranked region "
               "embeddings with --regions) into FILE plus the sidecar FILE.json. Under torchrun, inputs are split "
               "across ranks, one shard each, plus STEM.index.json.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (walked recursively), or one Hugging Face data set (--image-column)")
    add_model_arguments(parser, default_batch_size=32)
    add_worker_arguments(parser)
    parser.add_argument("--out", type=output_file(), required=True, help="output file, .safetensors or .npy")
    add_dataset_argument(parser)
    parser.add_argument("--pool", choices=EMBED_POOLS, default="mean",
                        help="mean: the mean of the last-layer patch tokens, array `pooled` (N, D) (default); cls: the "
                             "CLS token's output, `pooled` (N, D); tokens: every last-layer token, `tokens` (N, T, D), "
                             "CLS first")
    parser.add_argument("--regions", action="store_true", help="also store ranked region embeddings (N, R, D)")
    parser.add_argument("--max-side", type=integer(*MAX_SIDES), default=None,
                        help="decode larger photos at this many pixels a side (faster; default: full size)")


def run(args: argparse.Namespace) -> int:
    from dseqjepa_hub.application.embed_job import NoImagesEmbeddedError, check_embedding_path, embed_to_file
    from dseqjepa_hub.application.loading import check_device

    out = check_embedding_path(args.out)
    check_device(args.device)
    paths, skipped = image_inputs(args.inputs, args.image_column, args.streaming)
    run = embed_to_file(
        paths, out, model=args.model, device=args.device, image_size=args.size, quantize=args.quantize, pool=args.pool, regions=args.regions,
        batch_size=args.batch_size, max_pixels=args.max_pixels, max_side=args.max_side, num_workers=args.num_workers,
        progress=show_progress(args),
    )
    if run.total == 0:  # no rank wrote anything
        report_failures(run.failures)
        if run.rank != 0:
            return 1
        raise NoImagesEmbeddedError(
            f"none of the {len(paths)} image file(s) could be read (listed above); nothing was written to {out}"
        )
    if run.rank == 0:
        report_failures(run.failures)  # under torchrun, every rank's (from the shard sidecars)
        arrays = {run.first: run.row_shape, **run.others}
        shapes = ", ".join(f"{name} ({', '.join(str(side) for side in (run.total, *shape))})"
                           for name, shape in arrays.items())
        failed = f"; {len(run.failures)} file(s) could not be read (listed above)" if run.failures else ""
        say(args, f"wrote {run.written}: {run.total} image(s), {shapes}{failed}")
    return 1 if run.failures or skipped else 0

"""`dseqjepa embed IMAGE_OR_DIR... --out FILE [--regions]`: embeddings to .safetensors or .npy."""

from __future__ import annotations

import argparse

from .arguments import add_model_arguments, positive_int, report_failures

DESCRIPTION = ("Embed images (pooled patch features; ranked region embeddings with --regions) into FILE "
               "plus the sidecar FILE.json. Under torchrun, inputs are split across ranks, one shard each, "
               "plus STEM.index.json.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (walked recursively)")
    add_model_arguments(parser, default_batch_size=32)
    parser.add_argument("--out", required=True, help="output file, .safetensors or .npy")
    parser.add_argument("--regions", action="store_true", help="also store ranked region embeddings (N, R, D)")
    parser.add_argument("--max-side", type=positive_int, default=None,
                        help="decode larger photos at this many pixels a side (faster; default: full size)")


def run(args: argparse.Namespace) -> int:
    import torch

    from dseqjepa_hub.embedding_files import check_embedding_path, embed_files, write_embeddings
    from dseqjepa_hub.errors import DSeqJEPAError
    from dseqjepa_hub.image_io import find_images
    from dseqjepa_hub.model_loading import check_device, load_model
    from dseqjepa_hub.sharding import shard_path, torchrun_shard, write_shard_index

    out = check_embedding_path(args.out)
    check_device(args.device)
    paths, skipped = find_images(args.inputs)
    report_failures(skipped, "skipped while walking the input folders")
    if not paths:
        raise DSeqJEPAError(f"no image files found in {' '.join(args.inputs)}")
    with torchrun_shard(args.device) as shard:
        loaded = load_model(args.model, shard.device)
        files, arrays, failures = embed_files(
            paths[shard.rank :: shard.world_size], loaded.model, loaded.processor,
            regions=args.regions, batch_size=args.batch_size, max_pixels=args.max_pixels, max_side=args.max_side,
            progress=shard.rank == 0,
        )
        if shard.world_size == 1:
            write_embeddings(out, files, arrays, failures, loaded.description)
        else:
            write_embeddings(shard_path(out, shard.rank, shard.world_size), files, arrays, failures, loaded.description)
            torch.distributed.barrier()
            if shard.rank == 0:
                failures = write_shard_index(out, shard.world_size)
    if shard.rank == 0:
        print(f"wrote {out if shard.world_size == 1 else out.with_name(out.stem + '.index.json')}")
    report_failures(failures)
    return 1 if failures else 0

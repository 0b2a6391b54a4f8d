"""`dseqjepa embed IMAGE_OR_DIR... --out FILE [--regions] [--pool mean|cls|tokens]`: embeddings to .safetensors or .npy."""

from __future__ import annotations

import argparse

from dseqjepa_options import EMBED_POOLS

from .arguments import add_model_arguments, add_worker_arguments, image_inputs, positive_int, report_failures

DESCRIPTION = ("Embed images (pooled patch features, the CLS output or every token: --pool; ranked region "
               "embeddings with --regions) into FILE plus the sidecar FILE.json. Under torchrun, inputs are split "
               "across ranks, one shard each, plus STEM.index.json.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (walked recursively)")
    add_model_arguments(parser, default_batch_size=32)
    add_worker_arguments(parser)
    parser.add_argument("--out", required=True, help="output file, .safetensors or .npy")
    parser.add_argument("--pool", choices=EMBED_POOLS, default="mean",
                        help="mean: the mean of the last-layer patch tokens, array `pooled` (N, D) (default); cls: the "
                             "CLS token's output, `pooled` (N, D); tokens: every last-layer token, `tokens` (N, T, D), "
                             "CLS first")
    parser.add_argument("--regions", action="store_true", help="also store ranked region embeddings (N, R, D)")
    parser.add_argument("--max-side", type=positive_int, default=None,
                        help="decode larger photos at this many pixels a side (faster; default: full size)")


def run(args: argparse.Namespace) -> int:
    import torch

    from dseqjepa_hub.application.embed_job import (
        NoImagesEmbeddedError,
        check_embedding_path,
        check_pool,
        embed_files,
        write_embeddings,
    )
    from dseqjepa_hub.application.loading import check_device, load_model
    from dseqjepa_hub.application.runner import default_num_workers
    from dseqjepa_hub.application.sharding import shard_path, sum_over_ranks, torchrun_shard, write_shard_index

    out = check_embedding_path(args.out)
    check_device(args.device)
    paths = image_inputs(args.inputs)
    with torchrun_shard(args.device) as shard:
        loaded = load_model(args.model, shard.device, image_size=args.size)
        check_pool(loaded.model, args.pool)
        num_workers = default_num_workers(shard.device, shard.local_world_size) if args.num_workers is None else args.num_workers
        files, arrays, failures = embed_files(
            paths[shard.rank :: shard.world_size], loaded.model, loaded.processor,
            regions=args.regions, pool=args.pool, batch_size=args.batch_size, max_pixels=args.max_pixels,
            max_side=args.max_side, num_workers=num_workers, progress=shard.rank == 0,
        )
        total = sum_over_ranks(len(files), shard)
        if total == 0:  # every rank decides alike: none writes
            report_failures(failures)
            if shard.rank != 0:
                return 1
            raise NoImagesEmbeddedError(
                f"none of the {len(paths)} image file(s) could be read (listed above); nothing was written to {out}"
            )
        if shard.world_size == 1:
            write_embeddings(out, files, arrays, failures, loaded.description, pool=args.pool)
        else:
            write_embeddings(shard_path(out, shard.rank, shard.world_size), files, arrays, failures, loaded.description,
                             pool=args.pool, allow_empty=True)
            torch.distributed.barrier()
            if shard.rank == 0:
                failures = write_shard_index(out, shard.world_size)
            torch.distributed.barrier()  # no rank exits (torchrun then stops the others) before the index exists
    if shard.rank == 0:
        first = next(iter(arrays))
        shape = ", ".join(str(side) for side in (total, *arrays[first].shape[1:]))
        where = out if shard.world_size == 1 else f"{out.with_name(out.stem + '.index.json')} and {shard.world_size} shards"
        print(f"wrote {where}: {total} image(s), {first} ({shape})")
        report_failures(failures)  # under torchrun, every rank's (from the shard sidecars)
    return 1 if failures else 0

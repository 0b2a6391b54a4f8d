"""Embeddings of image files, written to .safetensors or .npy: the body of `dseqjepa embed`.

Arrays, row i for the i-th readable image (`pool` chooses the first):
- `pooled` (N, D) float32: the mean of the last-layer patch tokens (`pool="mean"`, the model's
  `pooler_output`, I-JEPA's evaluation embedding) or the CLS token's output (`pool="cls"`);
- `tokens` (N, T, D) float32 with `pool="tokens"`: every last-layer token, CLS first when the
  model has one (T = 1 + h * w patches, or h * w);
- with regions, from the same forward pass: `regions` (N, R, D) float32 (each ranked region's
  mean patch token, zero for empty slots), `region_valid` (N, R) bool, `region_scores` (N, R)
  float32.
A JSON sidecar `FILE.json` lists the image files in row order, the unreadable ones, the model,
the pooling and the array files (for .npy each array is its own file: `STEM.npy` holds the first,
`STEM.regions.npy`, ... the others); the README documents it. Files are decoded and preprocessed
in DataLoader workers (`runner`) while the model runs; `embed_to_file` is the whole command,
torchrun shards (`sharding`) included.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from dseqjepa_options import EMBED_POOLS as POOLS  # what `embed --pool` offers

from ..errors import DSeqJEPAError
from ..image_io import DEFAULT_MAX_PIXELS
from ..image_processing_dseqjepa import DSeqJEPAImageProcessor
from ..modeling_dseqjepa import DSeqJEPAModel
from ..regions import regions_from_outputs
from .atomic import atomic_write, remove_stale_temporaries
from .loading import load_model
from .runner import ImageBatch, check_finite, default_num_workers, infer_files
from .sharding import shard_path, sum_over_ranks, torchrun_shard, write_shard_index

EMBEDDING_SUFFIXES = (".safetensors", ".npy")


class NoImagesEmbeddedError(DSeqJEPAError):
    """Not one input file could be read: there is nothing to write, and nothing is written."""


def check_embedding_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.suffix not in EMBEDDING_SUFFIXES:
        raise DSeqJEPAError(
            f"--out {out}: expected a file name ending in .safetensors or .npy, found {out.suffix or 'no extension'}"
        )
    return out


def check_pool(model: DSeqJEPAModel, pool: str) -> None:
    """Refuse a pooling the model cannot give (`cls` without a CLS token) before any work."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if pool == "cls" and not model.config.use_cls_token:
        raise DSeqJEPAError(
            f"--pool cls: the model {model.name_or_path} has no CLS token (use_cls_token=false, as I-JEPA's "
            "encoders); use --pool mean (the mean of the patch tokens) or --pool tokens"
        )


def array_shapes(model: DSeqJEPAModel, pool: str = "mean", regions: bool = False) -> dict[str, tuple[int, ...]]:
    """Shape of one image's row of each array, in the order the arrays are written."""
    config = model.config
    dim = config.hidden_size
    grid_height, grid_width = config.grid_size
    shapes = {"tokens": (grid_height * grid_width + int(config.use_cls_token), dim)} if pool == "tokens" else {"pooled": (dim,)}
    if regions:
        shapes.update(regions=(config.num_regions, dim), region_valid=(config.num_regions,), region_scores=(config.num_regions,))
    return shapes


def embed_files(
    paths: Sequence[Path],
    model: DSeqJEPAModel,
    processor: DSeqJEPAImageProcessor,
    *,
    regions: bool = False,
    pool: str = "mean",
    batch_size: int = 32,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    num_workers: int | None = None,
    progress: bool = False,
) -> tuple[list[Path], dict[str, np.ndarray], list[tuple[Path, str]]]:
    """Embed readable images -> (their paths in row order, arrays, failures).

    `pool`: "mean" (`pooled` = the mean of the patch tokens), "cls" (`pooled` = the CLS token's
    output) or "tokens" (`tokens`, every last-layer token). `max_side` decodes large photos
    smaller before preprocessing (faster, less memory; the embeddings then differ slightly from a
    full-size decode); None decodes at full size. `num_workers`: decoding processes (None:
    `runner.default_num_workers`; 0: this process).

    arrays: as the module docstring says; with no readable image, each has 0 rows (and the
    shape of the others).
    """
    check_pool(model, pool)
    shapes = array_shapes(model, pool, regions)
    done: list[Path] = []
    parts: dict[str, list[np.ndarray]] = {name: [] for name in shapes}

    def forward(pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = model(pixel_values=pixel_values, output_saliency=regions)
        if pool == "tokens":
            batch = {"tokens": outputs.last_hidden_state}
        else:
            batch = {"pooled": outputs.pooler_output if pool == "mean" else outputs.last_hidden_state[:, 0]}
        if regions:
            ranked = regions_from_outputs(outputs, model.config)  # rank_regions after its forward pass
            batch.update(regions=ranked["region_embeddings"], region_valid=ranked["valid"], region_scores=ranked["scores"])
        batch = {name: tensor if tensor.dtype == torch.bool else tensor.float() for name, tensor in batch.items()}
        finite = torch.stack([torch.isfinite(tensor).all() for tensor in batch.values() if tensor.is_floating_point()])
        return {**batch, "finite": finite.all()}

    def keep(batch: ImageBatch, arrays: dict[str, torch.Tensor]) -> None:
        check_finite(arrays, f"the model {model.name_or_path} gives non-finite embeddings for {batch.paths[0]} and this batch")
        for name in shapes:
            parts[name].append(arrays[name].numpy())
        done.extend(batch.paths)

    _, failures = infer_files(
        paths, processor, forward, keep, device=model.device, dtype=model.dtype, batch_size=batch_size,
        num_workers=num_workers, max_pixels=max_pixels, max_side=max_side, progress=progress, desc="embed",
    )
    arrays = {
        name: np.concatenate(parts[name]) if parts[name]
        else np.zeros((0, *shape), dtype=bool if name == "region_valid" else np.float32)
        for name, shape in shapes.items()
    }
    return done, arrays, failures


@dataclass
class EmbeddingRun:
    """What `embed_to_file` did on this rank: `total` images embedded over all ranks, the row
    shape of the `first` array, and the failures to report (on rank 0 under torchrun: every
    rank's, read from the shard sidecars; on the other ranks their own)."""

    rank: int
    world_size: int
    total: int
    first: str
    row_shape: tuple[int, ...]
    others: dict[str, tuple[int, ...]]  # the row shape of every other array written (--regions)
    failures: list[tuple[Path, str]]
    written: Path | str  # the file, or "STEM.index.json and K shards"


def embed_to_file(
    paths: Sequence[Path],
    out: str | os.PathLike,
    *,
    model: str | None,
    device: str,
    image_size: int | None = None,
    quantize: str | None = None,
    pool: str = "mean",
    regions: bool = False,
    batch_size: int = 32,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    num_workers: int | None = None,
    progress: bool = False,
) -> EmbeddingRun:
    """`dseqjepa embed`: load `model` and embed `paths` into `out` (+ its sidecar). Under
    torchrun (`sharding`), rank r of K embeds paths[r::K] into its shard and rank 0 writes the
    index once every shard is written. When no rank read any image nothing is written: the run
    comes back with `total` 0 (the caller reports the failures and refuses)."""
    out = check_embedding_path(out)
    with torchrun_shard(device) as shard:
        loaded = load_model(model, shard.device, image_size=image_size, quantize=quantize)
        check_pool(loaded.model, pool)
        if num_workers is None:
            num_workers = default_num_workers(shard.device, shard.local_world_size)
        files, arrays, failures = embed_files(
            paths[shard.rank :: shard.world_size], loaded.model, loaded.processor, regions=regions, pool=pool,
            batch_size=batch_size, max_pixels=max_pixels, max_side=max_side, num_workers=num_workers,
            progress=progress and shard.rank == 0,
        )
        total = sum_over_ranks(len(files), shard)  # every rank decides alike whether to write
        first = next(iter(arrays))
        others = {name: array.shape[1:] for name, array in arrays.items() if name != first}
        run = EmbeddingRun(shard.rank, shard.world_size, total, first, arrays[first].shape[1:], others, failures, out)
        if total == 0:
            return run
        if shard.world_size == 1:
            write_embeddings(out, files, arrays, failures, loaded.description, pool=pool)
            return run
        write_embeddings(shard_path(out, shard.rank, shard.world_size), files, arrays, failures, loaded.description,
                         pool=pool, allow_empty=True)
        torch.distributed.barrier()
        if shard.rank == 0:
            run.failures = write_shard_index(out, shard.world_size)
        torch.distributed.barrier()  # no rank exits (torchrun then stops the others) before the index exists
        run.written = f"{out.with_name(out.stem + '.index.json')} and {shard.world_size} shards"
        return run


def array_files(out: Path, names: Sequence[str]) -> dict[str, Path]:
    """Where each array goes: all in `out` for .safetensors; for .npy the first array in `out`, the
    others in `STEM.NAME.npy` beside it."""
    if out.suffix == ".safetensors":
        return {name: out for name in names}
    return {name: out if position == 0 else out.with_name(f"{out.stem}.{name}.npy") for position, name in enumerate(names)}


def write_embeddings(
    out: str | os.PathLike,
    files: Sequence[Path],
    arrays: dict[str, np.ndarray],
    failures: Sequence[tuple[Path, str]] = (),
    model_description: str = "",
    *,
    pool: str = "mean",
    allow_empty: bool = False,
) -> Path:
    """Write arrays to `out` (.safetensors or .npy) and the sidecar `out.json`; returns the sidecar path.

    With no image (`files` empty) nothing is written and NoImagesEmbeddedError is raised, unless
    `allow_empty` (a torchrun shard whose images all failed while other shards have some).
    """
    out = check_embedding_path(out)
    if not files and not allow_empty:
        raise NoImagesEmbeddedError(
            f"none of the {len(failures)} image file(s) could be read (listed above); nothing was written to {out}"
        )
    remove_stale_temporaries(out.parent)  # left by a killed run; never outputs
    targets = array_files(out, list(arrays))
    if out.suffix == ".safetensors":
        atomic_write(out, lambda target: save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(target)))
    else:
        for name, array in arrays.items():
            atomic_write(targets[name], lambda target, array=array: _save_npy(target, array))
    sidecar = out.with_name(out.name + ".json")
    record = {
        "files": [str(path) for path in files],
        "failures": [{"file": str(path), "reason": reason} for path, reason in failures],
        "model": model_description,
        "pool": pool,
        "arrays": {name: {"file": targets[name].name, "shape": list(array.shape), "dtype": str(array.dtype)} for name, array in arrays.items()},
    }
    atomic_write(sidecar, lambda target: target.write_text(json.dumps(record, indent=1)))
    return sidecar


def _save_npy(target: Path, array: np.ndarray) -> None:
    with open(target, "wb") as handle:
        np.save(handle, array)

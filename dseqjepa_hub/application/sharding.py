"""Embedding under torchrun: each rank r of K embeds inputs[r::K] into its own shard
`STEM.rank{r}-of-{K}.EXT` (+ sidecar), and rank 0 writes `STEM.index.json` once all are written."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch

from .atomic import atomic_write


@dataclass(frozen=True)
class Shard:
    rank: int
    world_size: int
    device: str
    local_world_size: int = 1  # ranks on this machine, which share its cores


def sum_over_ranks(value: int, shard: Shard) -> int:
    """`value` summed over every rank (all of them must call this); itself without torchrun."""
    if shard.world_size == 1:
        return value
    total = torch.tensor([value], dtype=torch.int64, device=shard.device if shard.device.startswith("cuda") else "cpu")
    torch.distributed.all_reduce(total)
    return int(total.item())


@contextmanager
def torchrun_shard(device: str) -> Iterator[Shard]:
    """This process's shard from torchrun's environment (one shard when not under torchrun);
    the process group lives for the duration of the block."""
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if world_size == 1:
        yield Shard(rank, world_size, device)
        return
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(hours=2))
    try:
        yield Shard(rank, world_size, device, local_world_size)
    finally:
        torch.distributed.destroy_process_group()


def shard_path(out: Path, rank: int, world_size: int) -> Path:
    return out.with_name(f"{out.stem}.rank{rank}-of-{world_size}{out.suffix}")


def write_shard_index(out: Path, world_size: int) -> list[tuple[Path, str]]:
    """Rank 0, after every shard is written: `STEM.index.json` listing the shards -> all failures."""
    shards, failures = [], []
    for rank in range(world_size):
        shard = shard_path(out, rank, world_size)
        sidecar = json.loads(shard.with_name(shard.name + ".json").read_text())
        shards.append({"rank": rank, "file": shard.name, "sidecar": shard.name + ".json", "num_images": len(sidecar["files"])})
        failures.extend((Path(item["file"]), item["reason"]) for item in sidecar["failures"])
    index = {"world_size": world_size, "split": "strided: rank r embeds inputs[r::world_size]", "shards": shards}
    atomic_write(out.with_name(f"{out.stem}.index.json"), lambda target: target.write_text(json.dumps(index, indent=1)))
    return failures


# ----------------------------------------------------------------------------- parsers

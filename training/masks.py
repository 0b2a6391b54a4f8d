"""I-JEPA multi-block masks (docs/METHOD.md section 4), vectorised over the batch.

As I-JEPA's MaskCollator: one context-block size and one target-block size per batch (scale
and aspect ratio from one uniform draw each), target blocks placed independently per image,
the context block minus the union of the targets, at least `min_keep` context patches (after
20 tries, one fewer target is excluded, as I-JEPA relaxes). Two departures, both fixes:
- I-JEPA draws a block's top-left corner with `randint(0, H - h)` (exclusive end) and caps
  h at H - 1, so no block ever touches the last row or column and its near-full context block
  always sits in the top-left corner. Here h <= H and top is uniform in [0, H - h].
- I-JEPA truncates every mask to the batch's shortest; here masks stay whole (boolean grids)
  and the model pads with key-padding masks instead.
"""

from __future__ import annotations

import math

import torch

from .config import ConfigError

CONTEXT_TRIES = 20


def sample_block_size(generator: torch.Generator, grid: tuple[int, int], scale: tuple[float, float],
                      aspect_ratio: tuple[float, float]) -> tuple[int, int]:
    """(h, w) of a block covering about `scale` of the grid with height/width `aspect_ratio`."""
    height, width = grid
    draw = torch.rand(1, generator=generator).item()
    area = int(height * width * (scale[0] + draw * (scale[1] - scale[0])))
    ratio = aspect_ratio[0] + draw * (aspect_ratio[1] - aspect_ratio[0])
    block_h = min(max(round(math.sqrt(area * ratio)), 1), height)
    block_w = min(max(round(math.sqrt(area / ratio)), 1), width)
    return block_h, block_w


def sample_blocks(generator: torch.Generator, shape: tuple[int, ...], grid: tuple[int, int],
                  size: tuple[int, int]) -> torch.Tensor:
    """Blocks of `size` at uniform positions (every row and column reachable): (*shape, H, W) bool."""
    height, width = grid
    block_h, block_w = size
    top = torch.randint(0, height - block_h + 1, shape, generator=generator)
    left = torch.randint(0, width - block_w + 1, shape, generator=generator)
    rows = torch.arange(height)
    cols = torch.arange(width)
    in_rows = (rows >= top[..., None]) & (rows < top[..., None] + block_h)  # (*shape, H)
    in_cols = (cols >= left[..., None]) & (cols < left[..., None] + block_w)  # (*shape, W)
    return in_rows[..., :, None] & in_cols[..., None, :]


def multiblock_masks(generator: torch.Generator, batch_size: int, grid: tuple[int, int], *,
                     context_scale=(0.85, 1.0), target_scale=(0.15, 0.2), target_aspect_ratio=(0.75, 1.5),
                     num_targets: int = 4, min_keep: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns context (B, H, W) bool and targets (B, T, H, W) bool (all targets of one batch
    have the same size); the context excludes the targets and keeps >= min_keep patches."""
    target_size = sample_block_size(generator, grid, target_scale, target_aspect_ratio)
    context_size = sample_block_size(generator, grid, context_scale, (1.0, 1.0))
    if context_size[0] * context_size[1] < min_keep:
        raise ConfigError(
            f"the context block ({context_size[0]} x {context_size[1]} patches) is smaller than "
            f"min_keep={min_keep} on a {grid[0]} x {grid[1]} grid; lower min_keep or raise context_scale"
        )
    targets = sample_blocks(generator, (batch_size, num_targets), grid, target_size)  # (B, T, H, W)
    candidates = sample_blocks(generator, (batch_size, CONTEXT_TRIES), grid, context_size)  # (B, K, H, W)

    context = torch.zeros(batch_size, *grid, dtype=torch.bool)
    chosen = torch.zeros(batch_size, dtype=torch.bool)
    for excluded_targets in range(num_targets, -1, -1):
        excluded = targets[:, :excluded_targets].any(dim=1)  # (B, H, W)
        kept = candidates & ~excluded[:, None]  # (B, K, H, W)
        enough = kept.flatten(2).sum(-1) >= min_keep  # (B, K)
        first = torch.argmax(enough.int(), dim=1)  # first candidate with enough patches
        take = enough.any(dim=1) & ~chosen  # (B,)
        context[take] = kept[take, first[take]]
        chosen |= take
        if bool(chosen.all()):
            break
    return context, targets

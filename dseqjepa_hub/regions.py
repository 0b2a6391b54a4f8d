"""Discriminative regions: the CLS-similarity saliency map and its ranked regions (METHOD.md 1-2).

Pure tensor code with no host synchronisation, shared by inference and pretraining.
"""

from __future__ import annotations

import math

import torch


def saliency_map(query: torch.Tensor, patch_keys: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """Scaled dot product of one query per image with every patch key.

    query: (D,) shared by all images (the learnable CLS token) or (B, D) per image.
    patch_keys: (B, N, D) patch outputs of the saliency block after the final LayerNorm.
    Returns (B, h, w) float32 with h * w == N.
    """
    batch, num_patches, dim = patch_keys.shape
    height, width = grid_size
    if height * width != num_patches:
        raise ValueError(f"grid_size {grid_size} does not hold {num_patches} patches")
    keys = patch_keys.float()
    if query.dim() == 1:
        scores = keys @ query.float()  # (B, N)
    else:
        scores = torch.einsum("bnd,bd->bn", keys, query.float())  # (B, N)
    return (scores / math.sqrt(dim)).reshape(batch, height, width)

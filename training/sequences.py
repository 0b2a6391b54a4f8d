"""DSeq region sequences: which regions form the context and the target of each step.

Paper (docs/METHOD.md section 3): for k = 1 .. N-1, context R1 u ... u Rk, target R(k+1).
The release (section 5, `release_compat`): its context lags one region, R1 -> R2, R1 -> R3,
R1 u R2 -> R4, R1 u R2 u R3 -> R5.
"""

from __future__ import annotations

import torch


def region_sequence(region_masks: torch.Tensor, release_compat: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """region_masks (B, N, h, w) bool, ranked, background last (empty slots all-false).

    Returns contexts (B, N-1, h, w) and targets (B, N-1, h, w): step k-1 holds step k's sets.
    """
    num_regions = region_masks.shape[1]
    if num_regions < 2:
        raise ValueError(f"a region sequence needs at least 2 regions, found {num_regions}")
    union_so_far = torch.cummax(region_masks.to(torch.uint8), dim=1).values.bool()  # R1 u .. u R(i+1)
    steps = torch.arange(num_regions - 1, device=region_masks.device)
    if release_compat:
        steps = (steps - 1).clamp(min=0)
    contexts = union_so_far[:, steps]  # (B, N-1, h, w)
    targets = region_masks[:, 1:]  # (B, N-1, h, w)
    return contexts, targets

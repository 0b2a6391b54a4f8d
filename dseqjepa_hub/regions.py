"""Discriminative regions: the CLS-similarity saliency map and its ranked regions (METHOD.md 1-2).

Pure tensor code with no host synchronisation, shared by inference and pretraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


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


@dataclass
class Regions:
    """Ranked regions of a batch of saliency maps; slot R-1 is the background.

    masks: (B, R, h, w) bool, slots 0..R-2 the kept components, best first.
    scores: (B, R) float32, mean normalised saliency inside each region, 0 for invalid slots.
    valid: (B, R) bool, False for empty slots.
    """

    masks: torch.Tensor
    scores: torch.Tensor
    valid: torch.Tensor


def extract_regions(
    saliency: torch.Tensor,
    *,
    min_region_fraction: float = 0.15,
    num_regions: int = 5,
    connectivity: int = 8,
) -> Regions:
    """METHOD.md section 2 on a batch, exactly and without host synchronisation.

    saliency: (B, h, w), any float dtype (computed in float32). Per image: min-max
    normalisation, Otsu's threshold on the 8-bit truncation (foreground strictly above it),
    `connectivity`-connected components, components with area < min_region_fraction * h * w
    dropped, the rest ranked by mean normalised saliency (ties: first pixel in raster order),
    the best num_regions - 1 kept, and the background (every other patch) in the last slot.
    """
    if saliency.dim() != 3:
        raise ValueError(f"saliency must be (B, h, w), got shape {tuple(saliency.shape)}")
    if not saliency.is_floating_point():
        raise TypeError(f"saliency must be a float tensor, got {saliency.dtype}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    if isinstance(num_regions, bool) or not isinstance(num_regions, int) or num_regions < 1:
        raise ValueError(f"num_regions must be an int >= 1 (background included), got {num_regions!r}")
    if not 0.0 <= float(min_region_fraction) <= 1.0:
        raise ValueError(f"min_region_fraction must be in [0, 1], got {min_region_fraction!r}")
    batch, height, width = saliency.shape
    num_patches = height * width
    device = saliency.device
    if batch == 0 or num_patches == 0:
        return Regions(
            masks=torch.zeros(batch, num_regions, height, width, dtype=torch.bool, device=device),
            scores=torch.zeros(batch, num_regions, dtype=torch.float32, device=device),
            valid=torch.zeros(batch, num_regions, dtype=torch.bool, device=device),
        )

    values = saliency.float().reshape(batch, num_patches)  # (B, N)
    low = values.amin(dim=1, keepdim=True)
    high = values.amax(dim=1, keepdim=True)
    normalised = (values - low) / (high - low + 1e-6)  # (B, N) float32, Eq. 1
    levels = (normalised * 255).long()  # (B, N) in 0..255, truncated like uint8(x * 255)
    foreground = levels > otsu_threshold(levels)[:, None]  # (B, N)

    labels = connected_components(foreground.view(batch, height, width), connectivity).view(batch, num_patches)
    return _rank_components(labels, foreground, normalised, min_region_fraction, num_regions, height, width)


def otsu_threshold(levels: torch.Tensor) -> torch.Tensor:
    """Otsu's threshold of each row of 8-bit levels (B, N) int64 -> (B,) int64.

    The criterion is OpenCV's (THRESH_OTSU): between-class variance over thresholds t with
    both classes non-empty, first maximum, 0 when no threshold qualifies (constant maps).
    It is evaluated in exact integer arithmetic: sigma(t) * N^2 = num^2 / den with
    num = N * s1 - S * n1 and den = n1 * (N - n1) (n1, s1: count and sum of levels <= t;
    S: sum of all levels), split as floor + remainder / den so that comparisons are exact.
    OpenCV evaluates it in float64 (or in IPP on x86 wheels); the two agree with each other
    and with this except where two thresholds giving different masks have exactly equal
    variance (symmetric histograms), which they resolve by rounding noise, differently.
    """
    batch, num_patches = levels.shape
    histogram = torch.zeros(batch, 256, dtype=torch.int64, device=levels.device)
    histogram.scatter_add_(1, levels, torch.ones_like(levels))  # (B, 256)
    bins = torch.arange(256, device=levels.device)
    n1 = histogram.cumsum(1)  # (B, 256) count of levels <= t
    s1 = (histogram * bins).cumsum(1)  # (B, 256) sum of levels <= t
    total = s1[:, -1:]  # (B, 1)
    num = (num_patches * s1 - total * n1).abs()  # |num| <= 255 N^2 / 4
    den = n1 * (num_patches - n1)
    qualifies = den > 0
    den = den.clamp(min=1)
    # num^2 / den = (q den + r)^2 / den = q^2 den + 2 q r + r^2 / den, every term within int64.
    quotient = num // den
    remainder = num - quotient * den
    whole = quotient * quotient * den + 2 * quotient * remainder + remainder * remainder // den
    fraction = (remainder * remainder % den).double() / den.double()  # exact order for N < 16000
    whole = torch.where(qualifies, whole, -1)
    best = qualifies & (whole == whole.amax(dim=1, keepdim=True))
    return torch.where(best, fraction, -1.0).argmax(dim=1)  # first maximum; 0 if none


def connected_components(foreground: torch.Tensor, connectivity: int = 8) -> torch.Tensor:
    """Label the connected components of a batch of binary grids (B, h, w) -> (B, h, w) int64.

    A foreground pixel's label is the raster index (y * w + x) of its component's first pixel;
    a background pixel's label is its own index. A fixed number of rounds, set by the grid
    size alone, is exact for every input (see `_merge_rounds`), so nothing waits on the data.
    """
    batch, height, width = foreground.shape
    num_patches = height * width
    index = torch.arange(num_patches, device=foreground.device).expand(batch, num_patches)  # (B, N)
    fg = foreground.reshape(batch, num_patches)

    # Every horizontal run of foreground starts as one tree rooted at its first pixel.
    flat_index = index.view(batch, height, width)
    starts = foreground.clone()
    starts[:, :, 1:] &= ~foreground[:, :, :-1]
    roots = torch.where(starts, flat_index, -1).cummax(dim=2).values.reshape(batch, num_patches)
    roots = torch.where(fg, roots, index)  # (B, N) root of each pixel's tree; stars throughout

    fg_pair = fg.view(1, batch, height, width)
    for trees in _merge_rounds(height * ((width + 1) // 2)):
        # lo / hi: the smallest / largest root adjacent to (or equal to) each tree's root.
        signed = torch.stack((roots, -roots)).view(2, batch, height, width)
        signed = torch.where(fg_pair, signed, num_patches)
        nearest = torch.where(fg_pair, _neighbourhood_min(signed, connectivity, num_patches), num_patches)
        extremes = torch.stack((index, -index)).scatter_reduce(
            2, roots.expand(2, batch, num_patches), nearest.view(2, batch, num_patches), "amin"
        )
        lo, hi = extremes[0], -extremes[1]  # (B, N), meaningful at roots
        # Hook every tree: down to its smallest neighbour, or, a local minimum, up to its
        # largest, unless that one hooks back down onto it (the only possible cycle).
        down = lo < index
        up = ~down & (hi > index) & (lo.gather(1, hi) != index)
        target = torch.where(down, lo, torch.where(up, hi, index))
        parents = target.gather(1, roots)
        for _ in range(max(0, math.ceil(math.log2(max(trees - 1, 1))))):
            parents = parents.gather(1, parents)
        roots = parents

    first = index.scatter_reduce(1, roots, index, "amin")  # first pixel of each root's component
    return first.gather(1, roots).view(batch, height, width)


def _merge_rounds(max_trees: int) -> list[int]:
    """Number of trees per component at the start of each merging round (an upper bound).

    Each round every tree that touches another tree merges with at least one: the hooks form
    a forest (down-hooks decrease the root index; an up-hook leaves a local minimum, whose
    target hooks down to at most that minimum, and the only closing case is refused), and a
    tree that does not hook is a local minimum whose largest neighbour hooks onto it. So the
    number of trees per component at least halves, and a forest of depth <= trees - 1 becomes
    stars again after ceil(log2(trees - 1)) pointer jumps.
    """
    counts = []
    while max_trees > 1:
        counts.append(max_trees)
        max_trees //= 2
    return counts


def _neighbourhood_min(grid: torch.Tensor, connectivity: int, fill: int) -> torch.Tensor:
    """Minimum over each pixel's 3x3 (8) or cross (4) neighbourhood of (..., h, w); `fill` outside."""
    padded = F.pad(grid, (1, 1, 1, 1), value=fill)
    if connectivity == 8:
        rows = torch.minimum(torch.minimum(padded[..., :-2], padded[..., 1:-1]), padded[..., 2:])
        return torch.minimum(torch.minimum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])
    vertical = torch.minimum(padded[..., :-2, 1:-1], padded[..., 2:, 1:-1])
    horizontal = torch.minimum(padded[..., 1:-1, :-2], padded[..., 1:-1, 2:])
    return torch.minimum(torch.minimum(vertical, horizontal), grid)


def _rank_components(labels, foreground, normalised, min_region_fraction, num_regions, height, width) -> Regions:
    """Area filter, mean scores, ranking and the background slot (all (B, N) tensors)."""
    batch, num_patches = labels.shape
    index = torch.arange(num_patches, device=labels.device)
    # Foreground values are >= 1/255, so their float64 sums are exact in any order and the
    # means are exact to rounding: the ranking does not depend on the summation order.
    area = torch.zeros(batch, num_patches, dtype=torch.int64, device=labels.device)
    area.scatter_add_(1, labels, foreground.long())
    total = torch.zeros(batch, num_patches, dtype=torch.float64, device=labels.device)
    total.scatter_add_(1, labels, torch.where(foreground, normalised.double(), 0.0))
    mean = total / area.clamp(min=1)  # (B, N) at each component's label
    min_area = min_region_fraction * height * width
    candidate = foreground & (labels == index) & (area >= min_area)
    key = torch.where(candidate, mean, -1.0)  # (B, N), -1 where no candidate component

    chosen, chosen_mean = [], []
    for _ in range(num_regions - 1):
        best = key.argmax(dim=1, keepdim=True)  # (B, 1) first maximum: ties -> first pixel
        chosen.append(best)
        chosen_mean.append(key.gather(1, best))
        key = key.scatter(1, best, -2.0)
    chosen = torch.cat(chosen, dim=1) if chosen else index.new_zeros(batch, 0)  # (B, R-1) labels
    chosen_mean = torch.cat(chosen_mean, dim=1) if chosen_mean else mean.new_zeros(batch, 0)
    chosen_valid = chosen_mean >= 0  # (B, R-1)
    component_masks = (labels[:, None, :] == chosen[:, :, None]) & foreground[:, None, :]
    component_masks &= chosen_valid[:, :, None]  # (B, R-1, N)
    background = ~component_masks.any(dim=1)  # (B, N)
    background_area = background.sum(dim=1)
    background_mean = torch.where(background, normalised.double(), 0.0).sum(dim=1) / background_area.clamp(min=1)

    masks = torch.cat((component_masks, background[:, None, :]), dim=1).view(batch, num_regions, height, width)
    valid = torch.cat((chosen_valid, (background_area > 0)[:, None]), dim=1)  # (B, R)
    scores = torch.cat((chosen_mean, background_mean[:, None]), dim=1)
    scores = torch.where(valid, scores, 0.0).float()  # (B, R)
    return Regions(masks=masks, scores=scores, valid=valid)


def region_dicts(
    *,
    masks: torch.Tensor,
    scores: torch.Tensor,
    valid: torch.Tensor,
    original_size: tuple[int, int],
    crop_box: tuple[int, int, int, int] | None = None,
    embeddings: torch.Tensor | None = None,
) -> list[dict]:
    """One image's regions (slices of `Regions`: masks (R, h, w), scores (R,), valid (R,)) as dicts.

    Only valid regions appear, ranked 1.. with the background last. `crop_box` (x0, y0, x1, y1),
    exclusive end, is the part of the original image (H, W) = `original_size` that the model saw
    (None: all of it); patch masks are stretched onto it by nearest neighbour. `embeddings`
    (R, D), e.g. each region's mean last-layer patch feature, adds `embedding` (D,) float32.
    Keys: rank, is_background, score, area_fraction, box [x0, y0, x1, y1] (original pixels,
    exclusive end; [0, 0, 0, 0] if the region falls outside the image), mask (H, W) bool,
    patch_mask (h, w) bool, and embedding when asked.
    """
    num_regions, grid_height, grid_width = masks.shape
    height, width = (int(v) for v in original_size)
    x0, y0, x1, y1 = (0, 0, width, height) if crop_box is None else (int(v) for v in crop_box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"crop_box {tuple(crop_box)} is empty")
    patch_masks = masks.cpu().numpy().astype(bool)
    score_values = scores.float().cpu().numpy()
    valid_flags = valid.cpu().numpy().astype(bool)
    vectors = None if embeddings is None else embeddings.float().cpu().numpy()
    # Original pixel -> patch row / column inside the crop box, -1 outside it.
    rows = _pixel_to_patch(np.arange(height), y0, y1, grid_height)  # (H,)
    cols = _pixel_to_patch(np.arange(width), x0, x1, grid_width)  # (W,)
    inside = (rows >= 0)[:, None] & (cols >= 0)[None, :]  # (H, W)

    regions = []
    for slot in range(num_regions):
        if not valid_flags[slot]:
            continue
        patch_mask = patch_masks[slot]
        mask = patch_mask[rows.clip(0)][:, cols.clip(0)] & inside  # (H, W)
        ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1] if len(ys) else [0, 0, 0, 0]
        region = {
            "rank": len(regions) + 1,
            "is_background": slot == num_regions - 1,
            "score": float(score_values[slot]),
            "area_fraction": float(patch_mask.mean()),
            "box": box,
            "mask": mask,
            "patch_mask": patch_mask,
        }
        if vectors is not None:
            region["embedding"] = vectors[slot]
        regions.append(region)
    return regions


def _pixel_to_patch(pixels: np.ndarray, start: int, stop: int, cells: int) -> np.ndarray:
    """Nearest-neighbour cell of each pixel coordinate in [start, stop) split into `cells`; -1 outside."""
    cell = (pixels - start) * cells // (stop - start)
    return np.where((pixels >= start) & (pixels < stop), cell, -1)

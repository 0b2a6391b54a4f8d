"""Discriminative regions: the CLS-similarity saliency map and its ranked regions (arXiv 2511.17354;
docs/METHOD.md of dseqjepa-hub, sections 1-2).

Shared by inference and pretraining. `extract_regions` has two implementations of one
specification, both tested against the same per-image OpenCV reference: on the CPU, NumPy
on the whole batch with loops that stop once nothing changes (NumPy runs on the calling
thread, so a busy machine cannot stall it in a thread team, and its per-operation cost is a
fraction of a tensor operation's); on an accelerator, tensor code with a round count set by
the grid size alone, so nothing waits on the host.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DSeqJEPAError

MAX_REGIONS = 1024  # region slots, background included: each is a (B, h, w) mask


class RegionsInputError(DSeqJEPAError, ValueError):
    """An argument of `extract_regions` (or `region_dicts`) out of its range or of the wrong type."""


def patch_tokens(hidden_states: torch.Tensor, config) -> torch.Tensor:
    """(B, [1] + N, D) tokens -> (B, N, D) patch tokens: the CLS token dropped when the model has one."""
    return hidden_states[:, int(config.use_cls_token) :]


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
    with torch.autocast(keys.device.type, enabled=False):  # float32 even inside a bf16 training step
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
    """docs/METHOD.md (of dseqjepa-hub) section 2 on a batch, exactly and without host synchronisation.

    saliency: (B, h, w), any float dtype (computed in float32). Per image: min-max
    normalisation, Otsu's threshold on the 8-bit truncation (foreground strictly above it),
    `connectivity`-connected components, components with area < min_region_fraction * h * w
    dropped, the rest ranked by mean normalised saliency (ties: first pixel in raster order),
    the best num_regions - 1 kept, and the background (every other patch) in the last slot.

    Exact (identical to a per-image OpenCV reference) for grids up to 1448 patches, and up to
    16000 patches but for ties of mean scores closer than float64 rounding; one choice is
    documented rather than copied: an exact tie of Otsu's criterion between thresholds that
    give different masks goes to the first (see `otsu_threshold`). On the CPU it runs in NumPy
    on the calling thread (`_extract_regions_on_host`); elsewhere the number of operations
    depends on (B, h, w, num_regions) alone, with no host synchronisation. Non-finite saliency
    gives unspecified regions (checking for it would synchronise with the host).
    """
    if not isinstance(saliency, torch.Tensor) or saliency.dim() != 3:
        raise RegionsInputError(f"saliency must be (B, h, w), got {getattr(saliency, 'shape', type(saliency).__name__)}")
    if not saliency.is_floating_point():
        raise RegionsInputError(f"saliency must be a float tensor, got {saliency.dtype}")
    if connectivity not in (4, 8):
        raise RegionsInputError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if isinstance(num_regions, bool) or not isinstance(num_regions, int) or not 1 <= num_regions <= MAX_REGIONS:
        raise RegionsInputError(f"num_regions must be an int in [1, {MAX_REGIONS}] (background included), "
                                f"got {num_regions!r}")
    if isinstance(min_region_fraction, bool) or not isinstance(min_region_fraction, numbers.Real) or not (
        0.0 <= min_region_fraction <= 1.0
    ):
        raise RegionsInputError(f"min_region_fraction must be a number in [0, 1], got {min_region_fraction!r}")
    batch, height, width = saliency.shape
    device = saliency.device
    if batch == 0 or height * width == 0:
        return Regions(
            masks=torch.zeros(batch, num_regions, height, width, dtype=torch.bool, device=device),
            scores=torch.zeros(batch, num_regions, dtype=torch.float32, device=device),
            valid=torch.zeros(batch, num_regions, dtype=torch.bool, device=device),
        )
    if device.type == "cpu":
        return _extract_regions_on_host(saliency, min_region_fraction, num_regions, connectivity)
    return _extract_regions_on_device(saliency, min_region_fraction, num_regions, connectivity)


def rank_regions(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    *,
    min_region_fraction: float | None = None,
    num_regions: int | None = None,
) -> dict[str, torch.Tensor]:
    """One forward pass -> saliency, ranked regions and embeddings, all batched on the model's device.

    Returns saliency (B, h, w), masks (B, R, h, w) bool, scores (B, R), valid (B, R) bool,
    region_embeddings (B, R, D) (mean of each region's last-layer patch features, zero for
    empty regions) and pooler_output (B, D). Defaults come from the model config.
    """
    outputs = model(pixel_values=pixel_values, output_saliency=True)
    return regions_from_outputs(
        outputs, model.config, min_region_fraction=min_region_fraction, num_regions=num_regions
    )


def regions_from_outputs(
    outputs, config, *, min_region_fraction: float | None = None, num_regions: int | None = None
) -> dict[str, torch.Tensor]:
    """The part of `rank_regions` after the forward pass, from a `DSeqJEPAModelOutput` with saliency."""
    regions = extract_regions(
        outputs.saliency,
        min_region_fraction=config.min_region_fraction if min_region_fraction is None else min_region_fraction,
        num_regions=config.num_regions if num_regions is None else num_regions,
    )
    patches = patch_tokens(outputs.last_hidden_state, config)  # (B, N, D)
    weights = regions.masks.flatten(2).to(patches.dtype)  # (B, R, N)
    region_embeddings = weights @ patches / weights.sum(-1, keepdim=True).clamp(min=1)  # (B, R, D)
    return {
        "saliency": outputs.saliency,
        "masks": regions.masks,
        "scores": regions.scores,
        "valid": regions.valid,
        "region_embeddings": region_embeddings,
        "pooler_output": outputs.pooler_output,
    }


def _extract_regions_on_device(saliency, min_region_fraction, num_regions, connectivity) -> Regions:
    """`extract_regions` in tensor code without host synchronisation (any device; used off the CPU)."""
    batch, height, width = saliency.shape
    num_patches = height * width
    values = saliency.float().reshape(batch, num_patches)  # (B, N)
    low = values.amin(dim=1, keepdim=True)
    high = values.amax(dim=1, keepdim=True)
    normalised = (values - low) / (high - low + 1e-6)  # (B, N) float32, Eq. 1
    levels = (normalised * 255).long().clamp(0, 255)  # (B, N) truncated like uint8(x * 255); clamp: NaN
    foreground = levels > otsu_threshold(levels)[:, None]  # (B, N)

    layout = _GridLayout(batch, height, width)
    labels = _label_components(layout, foreground.view(batch, height, width), connectivity)
    return _rank_components(layout, labels, foreground, normalised, min_region_fraction, num_regions)


def otsu_threshold(levels: torch.Tensor) -> torch.Tensor:
    """Otsu's threshold of each row of 8-bit levels (B, N) int64 -> (B,) int64.

    The criterion is OpenCV's (THRESH_OTSU): the between-class variance over thresholds t with
    both classes non-empty, first maximum, 0 when no threshold qualifies (constant maps).
    N^2 sigma(t) = num^2 / den with num = N s1 - S n1 and den = n1 (N - n1) (n1, s1: count and
    sum of the levels <= t; S: sum of all levels) is compared exactly, as an integer part plus
    a fraction. OpenCV computes sigma in float64 (or in IPP, on x86 wheels); they agree with
    this except where two thresholds that give different masks have exactly equal variance
    (symmetric histograms): OpenCV then picks by rounding noise, not the same with and
    without IPP, and this picks the first.
    """
    batch, num_patches = levels.shape
    histogram = torch.zeros(batch, 256, dtype=torch.float64, device=levels.device)
    histogram.scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float64))  # (B, 256)
    # Integers below 2^53 throughout, so float64 holds them exactly.
    n1 = histogram.cumsum(1)  # (B, 256) count of levels <= t
    s1 = (histogram * torch.arange(256, device=levels.device)).cumsum(1)  # sum of levels <= t
    num = (num_patches * s1 - s1[:, -1:] * n1).abs()  # <= 255 N^2 / 4; 0 where a class is empty
    den = (n1 * (num_patches - n1)).clamp(min=1)  # <= N^2 / 4
    # num^2 / den = q^2 den + 2 q r + r^2 / den with num = q den + r, q <= 255. For N <= 16000
    # the floors below are exact (no quotient comes within rounding of an integer) and
    # distinct fractions (r^2 mod den) / den stay distinct.
    quotient = torch.floor(num / den)
    remainder = num - quotient * den
    squared = remainder * remainder
    carry = torch.floor(squared / den)
    whole = quotient * (quotient * den + 2 * remainder) + carry
    fraction = (squared - carry * den) / den
    # Thresholds with an empty class score 0, the others more: first maximum, 0 if none.
    best = whole == whole.amax(dim=1, keepdim=True)
    return torch.where(best, fraction, -1.0).argmax(dim=1)


class _GridLayout:
    """A batch of (h, w) grids laid end to end in one flat vector of cells, with zero padding.

    Each grid gets a padding row on top (and one below if h is odd, so that rows pair up) and a
    padding column on the left, which is also the right padding of the row before: a padded grid
    is `padded_height` (H') rows of `padded_width` (W') cells, `grid_cells` (G = H' * W') cells in
    all; `padded_width + 1` more cells close the batch, `num_cells` (C) in all. Neighbours are then
    1-D shifts (by 1 and by `padded_width`), pointers are indices into the vector, and the padding
    keeps the grids apart. Cells keep the raster order of each grid.
    """

    def __init__(self, batch: int, height: int, width: int):
        self.batch, self.height, self.width = batch, height, width
        self.padded_height, self.padded_width = height + 1 + height % 2, width + 1
        self.grid_cells = self.padded_height * self.padded_width  # G, cells per padded grid
        self.num_cells = batch * self.grid_cells + self.padded_width + 1  # C

    def pad(self, grids: torch.Tensor) -> torch.Tensor:
        """(B, h, w) -> (B, H', W') with zero padding."""
        return F.pad(grids, (1, 0, 1, self.padded_height - self.height - 1))

    def interior(self, cells):
        """(..., H' * W') -> (..., h, w): view of the grids themselves."""
        grids = cells.reshape(*cells.shape[:-1], self.padded_height, self.padded_width)  # a view (tensor or array)
        return grids[..., 1 : self.height + 1, 1:]


def connected_components(foreground: torch.Tensor, connectivity: int = 8) -> torch.Tensor:
    """Label the connected components of a batch of binary grids (B, h, w) -> (B, h, w) int64.

    A foreground pixel's label is the raster index (y * w + x) of its component's first pixel;
    a background pixel's label is its own index.
    """
    batch, height, width = foreground.shape
    layout = _GridLayout(batch, height, width)
    labels = _label_components(layout, foreground, connectivity)  # (B, H' * W') padded positions
    raster = torch.zeros(layout.grid_cells, dtype=torch.int64, device=foreground.device)
    layout.interior(raster)[:] = torch.arange(height * width, device=foreground.device).view(height, width)
    return layout.interior(raster[labels])


def _label_components(layout: _GridLayout, foreground: torch.Tensor, connectivity: int) -> torch.Tensor:
    """Component labels of (B, h, w) grids in the padded layout -> (B, H' * W') int64.

    A foreground position's label is its component's first position (in raster order) within
    its padded grid; every other position's label is its own. A fixed number of rounds,
    set by the grid size alone, is exact for every input (see `_merge_rounds`), so nothing on
    a GPU waits on the data; on the CPU the rounds stop once they change nothing. Blends are integer arithmetic: torch.where and bool tensors are several
    times slower than int32 arithmetic on the CPU.
    """
    num_cells, padded_width, grid_cells = layout.num_cells, layout.padded_width, layout.grid_cells
    device = foreground.device
    dtype = torch.int32 if num_cells < 2**31 - 1 else torch.int64
    grid = layout.pad(foreground).to(dtype)  # (B, H', W')
    on = F.pad(grid.view(-1), (0, padded_width + 1))  # (C,) 1 on foreground
    background_high = (1 - on) * num_cells  # (C,) num_cells on background, 0 on foreground
    position = torch.arange(num_cells + 1, dtype=dtype, device=device)  # (C + 1,) cell C: background's root

    roots, max_trees = _initial_trees(grid, connectivity)
    roots = torch.cat((torch.maximum(F.pad(roots, (0, padded_width + 1)), background_high), position[num_cells:]))  # stars
    inner = slice(padded_width + 1, num_cells - padded_width - 1)  # every cell whose neighbourhood lies inside C
    reversed_base = num_cells - 1 - position
    # The round bound holds for every input; on the CPU, where reading a tensor costs no device
    # synchronisation, the loops also stop as soon as a round or a jump changes nothing.
    stop_early = not foreground.is_cuda
    for trees in _merge_rounds(max_trees):
        before_round = roots
        # lo / hi: the smallest / largest root adjacent to (or equal to) each tree's root; hi
        # as a minimum over reversed roots (num_cells - 1 - root, background high).
        pixel_roots = roots[:num_cells]
        reversed_roots = torch.maximum(num_cells - 1 - pixel_roots, background_high)
        owner = pixel_roots[inner].long()
        lo = position.scatter_reduce(0, owner, _neighbourhood_min(pixel_roots, padded_width, connectivity), "amin")
        hi = num_cells - 1 - reversed_base.scatter_reduce(
            0, owner, _neighbourhood_min(reversed_roots, padded_width, connectivity), "amin"
        )
        # Hook every tree: down to its smallest neighbour (lo < itself), or, a local minimum
        # (lo == itself), up to its largest neighbour, unless that one hooks straight back
        # (lo[hi] == itself; otherwise lo[hi] < itself): the only possible cycle.
        hooks_back = (position - lo.index_select(0, hi)).clamp(max=1)  # 0 or 1
        goes_up = (hooks_back - (position - lo)).clamp(min=0)  # 1: a local minimum that hooks up
        target = lo + (hi - position) * goes_up
        target[num_cells] = num_cells
        roots = target.index_select(0, roots)
        for _ in range(math.ceil(math.log2(max(trees - 1, 1)))):
            jumped = roots.index_select(0, roots)
            if stop_early and torch.equal(jumped, roots):
                break
            roots = jumped
        if stop_early and torch.equal(roots, before_round):
            break

    pixel_roots = roots[: num_cells - padded_width - 1]
    first = position.scatter_reduce(0, pixel_roots.long(), position[: num_cells - padded_width - 1], "amin")
    # Labels: the first position of each foreground pixel's component, else the pixel itself;
    # both made relative to the padded grid.
    grid_start = (position[: layout.batch] * grid_cells)[:, None].expand(layout.batch, grid_cells).reshape(-1)
    offset = position[: num_cells - padded_width - 1] - grid_start
    on = on[: num_cells - padded_width - 1]
    labels = (first.index_select(0, pixel_roots) - position[: num_cells - padded_width - 1]) * on + offset
    return labels.long().view(layout.batch, grid_cells)


def _initial_trees(grid: torch.Tensor, connectivity: int) -> tuple[torch.Tensor, int]:
    """Roots of trees that are cheap to find exactly, and the most trees one component can hold.

    grid: (B, H', W') 0/1 in the padded layout. 4-connectivity: each horizontal run is a tree
    rooted at its first pixel. 8: within a pair of rows every run of non-empty columns is
    connected, so it is a tree rooted at its first column's topmost pixel.
    Returns roots (B * H' * W',) (garbage on background) and the bound.
    """
    batch, padded_height, padded_width = grid.shape
    position = torch.arange(batch * padded_height * padded_width, dtype=grid.dtype, device=grid.device)
    position = position.view(batch, padded_height, padded_width)
    column = torch.arange(padded_width, dtype=grid.dtype, device=grid.device)
    if connectivity == 4:
        starts = grid[..., 1:] * (1 - grid[..., :-1])  # (B, H', W'-1) first pixel of a run
        marks = F.pad((position[..., 1:] + 1) * starts, (1, 0)) - 1
        return marks.cummax(dim=2).values.view(-1), (padded_height - 1) * (padded_width // 2)
    pairs = grid.view(batch, -1)[:, padded_width:].view(batch, -1, 2, padded_width)  # (B, S, 2, W') row pairs
    occupied = torch.maximum(pairs[:, :, 0], pairs[:, :, 1])  # (B, S, W')
    starts = occupied[..., 1:] * (1 - occupied[..., :-1])
    first_column = F.pad((column[1:] + 1) * starts, (1, 0)).cummax(dim=2).values - 1  # (B, S, W') run start
    # Topmost foreground pixel of each column: the top row's if set, else the bottom row's.
    column_root = position[:, 1::2] + padded_width * (1 - pairs[:, :, 0])  # (B, S, W')
    run_root = column_root.gather(2, first_column.clamp(min=0).long())  # (B, S, W') root of each run
    roots = torch.empty_like(grid)
    pair_roots = roots.view(batch, -1)[:, padded_width:].view(batch, -1, 2, padded_width)
    pair_roots.copy_(run_root[:, :, None].expand(-1, -1, 2, -1))
    roots[:, 0] = -1  # the padding row
    return roots.view(-1), (padded_height // 2) * (padded_width // 2)


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


def _neighbourhood_min(values: torch.Tensor, padded_width: int, connectivity: int) -> torch.Tensor:
    """Minimum over the 3x3 (8) or cross (4) neighbourhood of cells padded_width + 1 .. C - padded_width - 2.

    values: (..., C) padded grids laid end to end, `padded_width` cells per grid row (padding included).
    """
    num_cells, down = values.shape[-1], padded_width  # the shift from a cell to the one below it
    if connectivity == 8:
        across = torch.minimum(torch.minimum(values[..., :-2], values[..., 1:-1]), values[..., 2:])  # 1..C-2
        return torch.minimum(torch.minimum(across[..., : -2 * down], across[..., down:-down]), across[..., 2 * down :])
    sideways = torch.minimum(values[..., down : num_cells - down - 2], values[..., down + 2 : num_cells - down])
    vertical = torch.minimum(values[..., 1 : num_cells - 2 * down - 1], values[..., 2 * down + 1 : num_cells - 1])
    return torch.minimum(torch.minimum(sideways, vertical), values[..., down + 1 : num_cells - down - 1])


def _rank_components(layout, labels, foreground, normalised, min_region_fraction, num_regions) -> Regions:
    """Area filter, mean scores, ranking and the background slot.

    labels: (B, H' * W') from `_label_components`; foreground, normalised: (B, N).
    """
    batch, grid_cells = labels.shape
    device = labels.device
    on = layout.pad(foreground.view(batch, layout.height, layout.width)).reshape(batch, grid_cells)  # (B, G)
    values = layout.pad(normalised.view(batch, layout.height, layout.width).double()).reshape(batch, grid_cells)
    # Foreground values are >= 1/255, so their float64 sums are exact in any order and the
    # means exact to rounding: for N < 1448 distinct means stay distinct, ties stay ties.
    area = torch.zeros(batch, grid_cells, dtype=torch.int64, device=device).scatter_add_(1, labels, on.long())
    total = torch.zeros(batch, grid_cells, dtype=torch.float64, device=device).scatter_add_(1, labels, values * on)
    mean = total / area.clamp(min=1)  # (B, G) at each component's label
    min_area = min_region_fraction * layout.height * layout.width
    candidate = on & (labels == torch.arange(grid_cells, device=device)) & (area >= min_area)
    key = torch.where(candidate, mean, -1.0)  # (B, G)

    # Slot of each component label: 0.. for the kept ones in rank order, R-1 (background) otherwise.
    background_slot = num_regions - 1
    slot_of_label = torch.full((batch, grid_cells + 1), background_slot, dtype=torch.int64, device=device)
    kept_means, kept_sums, kept_areas = [], [], []
    for slot in range(background_slot):
        best = key.argmax(dim=1, keepdim=True)  # (B, 1) first maximum: ties -> first pixel
        best_mean = key.gather(1, best)
        kept = best_mean >= 0
        kept_means.append(best_mean)
        kept_sums.append(total.gather(1, best) * kept)
        kept_areas.append(area.gather(1, best) * kept)
        slot_of_label.scatter_(1, best + (grid_cells - best) * ~kept, slot)  # column G: nothing kept
        key.scatter_(1, best, -2.0)
    slots = layout.interior(slot_of_label[:, :grid_cells].gather(1, labels))  # (B, h, w)
    masks = slots[:, None] == torch.arange(num_regions, device=device).view(1, -1, 1, 1)  # (B, R, h, w)

    # The background holds everything else: its sum and area by subtraction.
    background_area = layout.height * layout.width - sum(kept_areas, torch.zeros_like(area[:, :1]))
    background_sum = values.sum(dim=1, keepdim=True) - sum(kept_sums, torch.zeros_like(total[:, :1]))
    scores = torch.cat(kept_means + [background_sum / background_area.clamp(min=1)], dim=1)  # (B, R)
    valid = torch.cat([scores[:, :-1] >= 0, background_area > 0], dim=1)
    return Regions(masks=masks, scores=torch.where(valid, scores, 0.0).float(), valid=valid)


def _extract_regions_on_host(saliency, min_region_fraction, num_regions, connectivity) -> Regions:
    """`extract_regions` for a CPU tensor, in NumPy on the calling thread.

    The same arithmetic as the tensor path (float32 normalisation, Otsu in exact integers,
    float64 sums that are exact for foreground values), on horizontal runs of foreground
    instead of cells, with loops that stop as soon as nothing changes.
    """
    batch, height, width = saliency.shape
    num_patches = height * width
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # non-finite maps: unspecified
        values = saliency.detach().float().numpy().reshape(batch, num_patches)
        low, high = values.min(axis=1, keepdims=True), values.max(axis=1, keepdims=True)
        normalised = (values - low) / (high - low + np.float32(1e-6))  # (B, N) float32, Eq. 1
        levels = (normalised * np.float32(255)).astype(np.int64).clip(0, 255)  # like uint8(x * 255)
    foreground = levels > _otsu_threshold_on_host(levels)[:, None]  # (B, N)

    layout = _GridLayout(batch, height, width)
    on = np.zeros(layout.num_cells, dtype=bool)
    layout.interior(on[: batch * layout.grid_cells].reshape(batch, -1))[:] = foreground.reshape(batch, height, width)
    first_cell, lengths, root = _label_runs_on_host(layout, on, connectivity)

    # Per component (indexed by its first run): area, sum, mean. Foreground cells in raster
    # order are the runs' cells in run order. (Index arrays: boolean masks index slowly.)
    foreground_index = foreground.reshape(-1).nonzero()[0]
    foreground_values = normalised.reshape(-1)[foreground_index].astype(np.float64)
    run_sums = np.add.reduceat(foreground_values, np.cumsum(lengths) - lengths)
    area = np.bincount(root, weights=lengths, minlength=len(root))
    total = np.bincount(root, weights=run_sums, minlength=len(root))
    # The candidates ranked per image by mean, ties to the first pixel (the smaller run).
    candidates = ((area > 0) & (area >= min_region_fraction * height * width)).nonzero()[0]  # as on the device
    means = total[candidates] / area[candidates]
    image = first_cell[candidates] // layout.grid_cells
    order = np.lexsort((candidates, -means, image))
    candidates, means, image = candidates[order], means[order], image[order]
    rank = np.arange(len(candidates)) - np.searchsorted(image, image)
    kept = rank < num_regions - 1
    candidates, means, image, rank = candidates[kept], means[kept], image[kept], rank[kept]

    slot_of_run = np.full(len(root), num_regions - 1)  # the background slot
    slot_of_run[candidates] = rank
    slots = np.full((batch, num_patches), num_regions - 1, dtype=np.min_scalar_type(num_regions - 1))
    slots.reshape(-1)[foreground_index] = np.repeat(slot_of_run[root], lengths)
    masks = slots.reshape(batch, 1, height, width) == np.arange(num_regions).reshape(1, -1, 1, 1)  # (B, R, h, w)
    scores = np.zeros((batch, num_regions))
    valid = np.zeros((batch, num_regions), dtype=bool)
    scores[image, rank], valid[image, rank] = means, True
    # The background holds everything else: its sum and area by subtraction, as on the device.
    background_area = num_patches - np.bincount(image, weights=area[candidates], minlength=batch)
    background_sum = normalised.sum(axis=1, dtype=np.float64) - np.bincount(
        image, weights=total[candidates], minlength=batch
    )
    valid[:, -1] = background_area > 0
    scores[:, -1] = np.where(valid[:, -1], background_sum / np.maximum(background_area, 1), 0.0)
    return Regions(
        masks=torch.from_numpy(masks), scores=torch.from_numpy(scores.astype(np.float32)), valid=torch.from_numpy(valid)
    )


def _otsu_threshold_on_host(levels: np.ndarray) -> np.ndarray:
    """`otsu_threshold` in NumPy: (B, N) int64 levels -> (B,) int64.

    The criterion num^2 / den in float64 (relative error < 1e-15) leaves a few thresholds per
    image within 1e-12 of the best; only those are compared exactly, as in `otsu_threshold` (a lone
    candidate per image is the maximum without it).
    """
    batch, num_patches = levels.shape
    offsets = 256 * np.arange(batch)[:, None]
    histogram = np.bincount((levels + offsets).reshape(-1), minlength=256 * batch).reshape(batch, 256)
    n1 = histogram.cumsum(1)  # exact integers, < 2^53 in float64 below
    s1 = (histogram * np.arange(256)).cumsum(1)
    num = np.abs(num_patches * s1 - s1[:, -1:] * n1).astype(np.float64)
    den = np.maximum(n1 * (num_patches - n1), 1).astype(np.float64)
    approximate = num * num / den
    row, threshold = np.nonzero(approximate >= approximate.max(axis=1, keepdims=True) * (1 - 1e-12))
    if len(row) == batch:  # one candidate per image (the common case): it is the exact maximum
        return threshold
    num, den = num[row, threshold], den[row, threshold]
    quotient = np.floor(num / den)
    remainder = num - quotient * den
    squared = remainder * remainder
    carry = np.floor(squared / den)
    whole = quotient * (quotient * den + 2 * remainder) + carry
    fraction = (squared - carry * den) / den
    # Per image the first exact maximum: sort by image, then criterion (descending), then threshold.
    order = np.lexsort((threshold, -fraction, -whole, row))
    row, threshold = row[order], threshold[order]
    first = np.ones(len(row), dtype=bool)
    first[1:] = row[1:] != row[:-1]
    return threshold[first]


def _label_runs_on_host(layout: _GridLayout, on: np.ndarray, connectivity: int):
    """Connected components of the padded layout's foreground on (C,) bool, as horizontal runs.

    Returns (first_cell, lengths, root), one entry per run in cell order (the padding keeps
    each run within a row): its first cell, its length, and its component's first run (whose
    first cell is the component's first pixel in raster order). Union-find over runs: two runs
    in adjacent rows touch iff one's first cell has a neighbour in the other, so one edge per
    such first cell. Each round hooks the larger root of every edge onto the smaller and jumps
    pointers until every tree is a star; the rounds stop once every edge joins one tree.
    """
    padded_width = layout.padded_width
    starts = on.copy()
    starts[1:] &= ~on[:-1]
    first_cell = starts.nonzero()[0]
    lengths = (on[:-1] & ~on[1:]).nonzero()[0] + 1 - first_cell  # the last cell is padding
    run = np.empty(len(on), dtype=np.int64)  # each foreground cell's run (other cells unused)
    run[on.nonzero()[0]] = np.repeat(np.arange(len(first_cell)), lengths)
    below, above = [], []
    for shift in (padded_width - 1, padded_width, padded_width + 1) if connectivity == 8 else (padded_width,):
        # Cell c (a row below) and c - shift (its neighbour above), both on, one of them a run's first.
        touching = (on[shift:] & on[:-shift] & (starts[shift:] | starts[:-shift])).nonzero()[0]
        below.append(run[touching + shift])
        above.append(run[touching])
    below, above = np.concatenate(below), np.concatenate(above)
    root = np.arange(len(first_cell))
    while True:
        root_below, root_above = root[below], root[above]
        if (root_below == root_above).all():
            return first_cell, lengths, root
        np.minimum.at(root, np.maximum(root_below, root_above), np.minimum(root_below, root_above))
        while True:  # trees point to smaller runs; jump until they are stars
            jumped = root[root]
            if (jumped == root).all():
                break
            root = jumped


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
    # The pixels inside both the image and the crop box, and how many of them fall in each patch row / column.
    top, bottom, row_counts = _pixels_per_patch(height, y0, y1, grid_height)
    left, right, col_counts = _pixels_per_patch(width, x0, x1, grid_width)

    regions = []
    for slot in range(num_regions):
        if not valid_flags[slot]:
            continue
        patch_mask = patch_masks[slot]
        mask = np.zeros((height, width), dtype=bool)  # (H, W): each patch stretched over its pixels
        mask[top:bottom, left:right] = np.repeat(np.repeat(patch_mask, row_counts, axis=0), col_counts, axis=1)
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


def _pixels_per_patch(size: int, start: int, stop: int, cells: int) -> tuple[int, int, np.ndarray]:
    """Pixels 0..size-1 of one axis, of which [start, stop) is split into `cells` by nearest neighbour
    (pixel p -> cell (p - start) * cells // (stop - start)) -> (first, end, counts): the pixels in both,
    [first, end), and how many of them each cell gets, (cells,). The cells are in pixel order, so
    repeating each cell counts[cell] times stretches a row of cells over pixels first..end-1."""
    first, end = (min(max(pixel, 0), size) for pixel in (start, stop))  # start < stop: first <= end
    cell = (np.arange(first, end) - start) * cells // (stop - start)
    return first, end, np.bincount(cell, minlength=cells)

"""extract_regions against an independent per-image reference on OpenCV (docs/METHOD.md section 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dseqjepa_hub.regions import (
    Regions,
    RegionsInputError,
    _extract_regions_on_device,
    _otsu_threshold_on_host,
    connected_components,
    extract_regions,
    otsu_threshold,
    region_dicts,
)

cv2 = pytest.importorskip("cv2")


def tensor_code(saliency, min_region_fraction=0.15, num_regions=5, connectivity=8):
    """The accelerator path of extract_regions, run on the CPU (a CPU tensor goes to the NumPy path)."""
    return _extract_regions_on_device(saliency, min_region_fraction, num_regions, connectivity)


@pytest.fixture(params=[extract_regions, tensor_code], ids=["numpy_on_cpu", "tensor_code"])
def extract(request):
    """Both implementations of extract_regions, each held to the same reference."""
    return request.param

GRIDS = [(14, 14), (16, 16), (32, 32), (12, 20)]


# ----------------------------------------------------------------------------- reference


def exact_otsu_variances(levels: np.ndarray) -> dict[int, tuple[int, int]]:
    """Otsu's criterion N^2 * sigma(t) = num^2 / den as exact integers, for every qualifying t."""
    histogram = np.bincount(levels.ravel(), minlength=256).tolist()
    total_count, total_sum = levels.size, int(levels.astype(np.int64).sum())
    count = level_sum = 0
    variances = {}
    for t in range(256):
        count += histogram[t]
        level_sum += t * histogram[t]
        if 0 < count < total_count:
            variances[t] = ((total_count * level_sum - total_sum * count) ** 2, count * (total_count - count))
    return variances


def reference_threshold(levels: np.ndarray) -> tuple[int, bool]:
    """OpenCV's Otsu threshold, except that an exact tie between thresholds that give different
    masks (which OpenCV resolves by rounding noise, differently with and without IPP) goes to the
    first one. Returns (threshold, whether the map has such a tie)."""
    opencv, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    opencv = int(opencv)
    variances = exact_otsu_variances(levels)
    if not variances:
        return opencv, False
    first = None
    for t, (num, den) in variances.items():  # first maximum of num / den, compared exactly
        if first is None or num * variances[first][1] > variances[first][0] * den:
            first = t
    num, den = variances[first]
    tied = [t for t, (n, d) in variances.items() if n * den == num * d]
    tie = any(not np.array_equal(levels > t, levels > first) for t in tied)
    if not np.array_equal(levels > opencv, levels > first):
        assert opencv in tied, f"OpenCV picked {opencv}, the exact maximum is at {first}"
    return first, tie


def reference_regions(saliency: np.ndarray, alpha: float, num_regions: int, connectivity: int):
    """Per-image docs/METHOD.md section 2 with OpenCV: (masks (R, h, w), scores (R,), valid (R,), tie)."""
    height, width = saliency.shape
    values = saliency.astype(np.float32)
    normalised = (values - values.min()) / (values.max() - values.min() + 1e-6)
    levels = (normalised * 255).astype(np.uint8)
    threshold, tie = reference_threshold(levels)
    _, binary = cv2.threshold(levels, threshold, 255, cv2.THRESH_BINARY)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=connectivity)
    sums = np.bincount(labels.ravel(), weights=normalised.ravel().astype(np.float64), minlength=count)
    _, first_pixels = np.unique(labels.ravel(), return_index=True)  # first raster pixel of each label
    components = []
    for k in range(1, count):
        area = stats[k, cv2.CC_STAT_AREA]
        if area < alpha * height * width:
            continue
        components.append((-sums[k] / area, int(first_pixels[k]), k))
    components.sort(key=lambda c: (c[0], c[1]))
    kept = components[: num_regions - 1]
    masks = np.zeros((num_regions, height, width), dtype=bool)
    scores = np.zeros(num_regions, dtype=np.float64)
    valid = np.zeros(num_regions, dtype=bool)
    for slot, (negative_score, _, k) in enumerate(kept):
        masks[slot], scores[slot], valid[slot] = labels == k, -negative_score, True
    background = ~masks[:-1].any(axis=0)
    masks[-1] = background
    if background.any():
        scores[-1], valid[-1] = float(normalised[background].astype(np.float64).mean()), True
    return masks, scores, valid, tie


# ----------------------------------------------------------------------------- maps


def _blobs(rng, height, width, count):
    ys, xs = np.mgrid[0:height, 0:width]
    out = np.zeros((height, width))
    for _ in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        sigma = rng.uniform(0.8, max(height, width) / 3)
        out += rng.uniform(-1, 2) * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
    return out


def _spiral(height, width):
    """A one-patch-wide spiral of foreground, rings one patch apart: very long geodesic paths."""
    out = np.zeros((height, width))
    y, x, dy, dx, turns = 0, 0, 0, 1, 0
    out[0, 0] = 1
    while turns < 2:
        ny, nx, fy, fx = y + dy, x + dx, y + 2 * dy, x + 2 * dx
        ahead_free = 0 <= ny < height and 0 <= nx < width and not out[ny, nx]
        beyond_free = not (0 <= fy < height and 0 <= fx < width) or not out[fy, fx]
        if ahead_free and beyond_free:
            y, x, turns = ny, nx, 0
            out[y, x] = 1
        else:
            dy, dx, turns = dx, -dy, turns + 1
    return out


def _sawtooth(height, width, rng):
    """Bands of diagonal steps (connected only under 8-connectivity), joined into one snake
    at alternating ends, with a few random breaks."""
    out = np.zeros((height, width))
    bands = range(0, height - 1, 3)
    for band, y in enumerate(bands):
        out[y + np.arange(width) % 2, np.arange(width)] = 1
        if y + 3 < height - 1:
            out[y + 1 : y + 4, width - 1 if band % 2 == 0 else 0] = 1
    out[rng.random(out.shape) < 0.02] = 0
    return out


def make_maps(rng: np.random.Generator, height: int, width: int, per_kind: int) -> dict[str, np.ndarray]:
    """Random and structured saliency maps of one grid size, by kind: (n, h, w) float32."""
    ys, xs = np.mgrid[0:height, 0:width]
    maps = {}
    maps["noise"] = rng.standard_normal((per_kind, height, width))
    maps["blobs"] = np.stack([_blobs(rng, height, width, rng.integers(1, 6)) for _ in range(per_kind)])
    stripes = []
    for i in range(per_kind):
        period = rng.integers(2, 7)
        phase = [ys, xs, ys + xs, ys - xs][i % 4]
        stripes.append(rng.choice(rng.uniform(0, 1, 4), size=period)[phase % period])
    maps["stripes"] = np.stack(stripes)
    checkers = []
    for i in range(per_kind):
        size = rng.integers(1, 5)
        board = ((ys // size + xs // size) % 2).astype(float)
        checkers.append(board * rng.uniform(0.5, 2) + (i % 3 == 0) * (ys >= height // 2))
    maps["checkerboard"] = np.stack(checkers)
    maps["few_levels"] = rng.integers(0, rng.integers(2, 5, size=(per_kind, 1, 1)), size=(per_kind, height, width))
    symmetric = []
    for _ in range(per_kind):  # histograms symmetric about 127.5: exact Otsu ties
        low = rng.choice(np.arange(1, 128), size=rng.integers(1, 4), replace=False)
        # Levels a and 255 - a (saliency at the middle of each 8-bit level) plus 0 and 255.
        values = np.concatenate([(low + 0.5) * 1000, (255.5 - low) * 1000, [0, 255000]])
        symmetric.append(rng.permutation(np.resize(values, height * width)).reshape(height, width))
    maps["symmetric"] = np.stack(symmetric)
    constant = np.full((per_kind, height, width), 3.0)
    constant[1::3] += 1e-7 * rng.standard_normal((len(constant[1::3]), height, width))  # near-constant
    constant[2::3, 0, 0] += 1e-3  # one patch above a constant map
    maps["constant"] = constant
    spikes = rng.standard_normal((per_kind, height, width)) * 0.01
    for i in range(per_kind):  # isolated single patches far above the rest
        for _ in range(rng.integers(1, 6)):
            spikes[i, rng.integers(height), rng.integers(width)] = rng.uniform(5, 10)
    maps["single_patches"] = spikes
    binary = (rng.random((per_kind, height, width)) < rng.uniform(0.2, 0.7, size=(per_kind, 1, 1))).astype(float)
    maps["binary_noise"] = binary + 0.5 * rng.random((per_kind, 1, 1))
    paths = [_spiral(height, width), _sawtooth(height, width, rng), _spiral(width, height).T]
    maps["paths"] = np.stack([paths[i % 3] * (1 + 0.1 * rng.random()) for i in range(per_kind)])
    blocks = np.zeros((per_kind, height, width))
    for i in range(per_kind):  # rectangles whose areas hit the area threshold exactly
        block_height, block_width = rng.integers(1, height // 2 + 1), rng.integers(1, width // 2 + 1)
        blocks[i, :block_height, :block_width] = 1.0
        blocks[i, -block_height:, -block_width:] = 0.9 + 0.1 * (i % 2)
    maps["exact_area"] = blocks
    return {kind: value.astype(np.float32) for kind, value in maps.items()}


def exact_area_maps(height: int, width: int) -> np.ndarray:
    """Two blocks, one of exactly a quarter of the grid and one a patch smaller, in both roles."""
    quarter = height * width // 4
    maps = []
    for first_value, second_value, shrink_first in [(1.0, 0.95, False), (0.95, 1.0, False), (1.0, 0.95, True)]:
        saliency = np.zeros(height * width, dtype=np.float32)
        top_left = np.zeros((height, width), dtype=bool)
        top_left[: height // 2, : width // 2] = True
        first = np.flatnonzero(top_left.ravel())
        second = np.arange(height * width - quarter, height * width)  # the last patches in raster order
        first, second = (first[1:], second) if shrink_first else (first, second[1:])
        saliency[first], saliency[second] = first_value, second_value
        maps.append(saliency.reshape(height, width))
    return np.stack(maps)


# ----------------------------------------------------------------------------- checks


def assert_matches_reference(
    maps: np.ndarray, alpha=0.15, num_regions=5, connectivity=8, dtype=torch.float32, extract=extract_regions
) -> int:
    """extract (extract_regions or its tensor path) on the whole batch == the per-image reference;
    returns how many maps had an exact Otsu tie between different foregrounds."""
    saliency = torch.from_numpy(maps).to(dtype)
    regions = extract(saliency, min_region_fraction=alpha, num_regions=num_regions, connectivity=connectivity)
    assert isinstance(regions, Regions)
    batch, height, width = maps.shape
    assert regions.masks.shape == (batch, num_regions, height, width) and regions.masks.dtype == torch.bool
    assert regions.scores.shape == (batch, num_regions) and regions.scores.dtype == torch.float32
    assert regions.valid.shape == (batch, num_regions) and regions.valid.dtype == torch.bool
    ties = 0
    for i, saliency_map in enumerate(saliency.float().numpy()):
        masks, scores, valid, tie = reference_regions(saliency_map, alpha, num_regions, connectivity)
        ties += tie
        np.testing.assert_array_equal(regions.valid[i].numpy(), valid, err_msg=f"validity of map {i}")
        np.testing.assert_array_equal(regions.masks[i].numpy(), masks, err_msg=f"masks of map {i}")
        np.testing.assert_allclose(regions.scores[i].numpy(), scores, rtol=0, atol=1e-6, err_msg=f"scores of map {i}")
    return ties


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
def test_matches_opencv_on_random_and_structured_maps(grid, extract):
    maps = make_maps(np.random.default_rng(sum(grid)), *grid, per_kind=24)
    batch = np.concatenate(list(maps.values()))
    assert len(batch) >= 250
    ties = assert_matches_reference(batch, extract=extract)
    assert ties > 0  # symmetric histograms: exact Otsu ties (see reference_threshold)


@pytest.mark.parametrize("connectivity", [8, 4])
@pytest.mark.parametrize("grid", GRIDS + [(37, 23)], ids=lambda g: f"{g[0]}x{g[1]}")
def test_matches_opencv_with_small_components(grid, connectivity, extract):
    maps = make_maps(np.random.default_rng(7 + sum(grid)), *grid, per_kind=10)
    batch = np.concatenate([maps[kind] for kind in ("single_patches", "binary_noise", "paths", "noise", "stripes")])
    assert_matches_reference(batch, alpha=0.0, num_regions=8, connectivity=connectivity, extract=extract)
    assert_matches_reference(batch, alpha=0.02, num_regions=3, connectivity=connectivity, extract=extract)


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
def test_area_threshold_hit_exactly_is_kept(grid, extract):
    maps = exact_area_maps(*grid)
    assert_matches_reference(maps, alpha=0.25, extract=extract)
    regions = extract(torch.from_numpy(maps), min_region_fraction=0.25)
    quarter = grid[0] * grid[1] // 4
    assert regions.valid[:, 0].all() and not regions.valid[:, 1:-1].any()
    assert (regions.masks[:, 0].flatten(1).sum(1) == quarter).all()


@pytest.mark.parametrize("num_regions", [1, 2, 3, 9])
def test_other_numbers_of_regions(num_regions, extract):
    maps = make_maps(np.random.default_rng(num_regions), 16, 16, per_kind=8)
    batch = np.concatenate([maps[kind] for kind in ("noise", "blobs", "checkerboard", "binary_noise", "constant")])
    assert_matches_reference(batch, alpha=0.01, num_regions=num_regions, extract=extract)


@pytest.mark.parametrize("grid", [(1, 1), (1, 9), (7, 1), (3, 5), (2, 2)], ids=str)
def test_tiny_grids(grid, extract):
    rng = np.random.default_rng(3)
    maps = np.concatenate([rng.standard_normal((40, *grid)), rng.integers(0, 3, (40, *grid))]).astype(np.float32)
    assert_matches_reference(maps, alpha=0.0, num_regions=4, extract=extract)
    assert_matches_reference(maps, alpha=0.3, num_regions=4, connectivity=4, extract=extract)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_other_float_dtypes_are_computed_in_float32(dtype, extract):
    maps = make_maps(np.random.default_rng(11), 14, 14, per_kind=6)
    batch = np.concatenate([maps[kind] for kind in ("noise", "blobs", "stripes", "few_levels")])
    assert_matches_reference(batch, dtype=dtype, extract=extract)  # the reference sees the same values cast to float32


def test_constant_and_empty_maps(extract):
    regions = extract(torch.full((3, 14, 14), 2.5))
    assert regions.valid.tolist() == [[False] * 4 + [True]] * 3
    assert regions.masks[:, -1].all() and not regions.masks[:, :-1].any()
    assert regions.scores.abs().max() == 0
    empty = extract_regions(torch.zeros(0, 14, 14))
    assert empty.masks.shape == (0, 5, 14, 14) and empty.valid.shape == (0, 5)


@pytest.mark.parametrize("connectivity", [8, 4])
def test_connected_components_match_opencv(connectivity):
    rng = np.random.default_rng(connectivity)
    grids = [rng.random((64, 20, 24)) < p for p in (0.3, 0.5, 0.6, 0.75)]
    grids.append(np.stack([_spiral(20, 24), _sawtooth(20, 24, rng), _spiral(24, 20).T, np.ones((20, 24))]) > 0)
    foreground = np.concatenate(grids)
    labels = connected_components(torch.from_numpy(foreground), connectivity).numpy()
    for i, grid in enumerate(foreground):
        count, reference = cv2.connectedComponents(grid.astype(np.uint8), connectivity=connectivity)
        for k in range(1, count):
            inside = reference == k
            first = np.flatnonzero(inside)[0]
            assert (labels[i][inside] == first).all(), f"grid {i}, component {k}"
            assert (labels[i].ravel() == first).sum() == inside.sum()


@pytest.mark.parametrize("connectivity", [8, 4])
def test_connected_components_on_batches_of_tiny_grids(connectivity):
    rng = np.random.default_rng(10 + connectivity)
    for _ in range(150):
        height, width = rng.integers(1, 8, size=2)
        foreground = rng.random((3, height, width)) < rng.uniform(0.2, 0.9)
        foreground[-1, -1, -1] = True  # the very last position of the batch
        labels = connected_components(torch.from_numpy(foreground), connectivity).numpy()
        for grid, grid_labels in zip(foreground, labels):
            count, reference = cv2.connectedComponents(grid.astype(np.uint8), connectivity=connectivity)
            for k in range(1, count):
                inside = reference == k
                assert (grid_labels[inside] == np.flatnonzero(inside)[0]).all()
            assert len(np.unique(grid_labels[grid])) == count - 1


@pytest.mark.parametrize("on_host", [False, True], ids=["tensor_code", "numpy_on_cpu"])
def test_otsu_threshold_is_the_first_exact_maximum(on_host):
    rng = np.random.default_rng(5)
    levels = np.concatenate([rng.integers(0, 256, (200, 196)), rng.integers(0, 4, (200, 196)) * 85])
    levels[:50] = np.sort(levels[:50], axis=1)
    ours = _otsu_threshold_on_host(levels) if on_host else otsu_threshold(torch.from_numpy(levels)).numpy()
    for row, threshold in zip(levels, ours):
        variances = exact_otsu_variances(row.astype(np.uint8))
        best = max(variances.values(), key=lambda v: v[0] / v[1])
        num, den = variances[int(threshold)]
        assert num * best[1] == best[0] * den
        assert all(v[0] * den < num * v[1] for t, v in variances.items() if t < threshold)
    constant = np.full((2, 10), 7)
    assert (_otsu_threshold_on_host(constant) if on_host else otsu_threshold(torch.from_numpy(constant))).tolist() == [0, 0]


def test_bad_arguments_are_named():
    """One error class (the package's, a ValueError too) for every bad argument; num_regions bounded (10**9
    slots of masks used to grow memory without bound)."""
    for arguments, match in (
        (dict(saliency=torch.zeros(14, 14)), "saliency must be"),
        (dict(saliency=[[[0.0]]]), "saliency must be"),
        (dict(saliency=torch.zeros(1, 14, 14, dtype=torch.int64)), "float"),
        (dict(connectivity=6), "connectivity"),
        (dict(num_regions=0), "num_regions"),
        (dict(num_regions=10**9), "num_regions"),
        (dict(num_regions=2.0), "num_regions"),
        (dict(min_region_fraction=1.5), "min_region_fraction"),
        (dict(min_region_fraction="0.5"), "min_region_fraction"),
    ):
        with pytest.raises(RegionsInputError, match=match):
            extract_regions(**{"saliency": torch.zeros(1, 4, 4), **arguments})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on the development machines)")
def test_cuda_matches_cpu_without_host_synchronisation():
    maps = make_maps(np.random.default_rng(1), 14, 14, per_kind=16)
    saliency = torch.from_numpy(np.concatenate(list(maps.values())))
    expected = extract_regions(saliency)
    on_device = saliency.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        regions = extract_regions(on_device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(regions.masks.cpu(), expected.masks)
    assert torch.equal(regions.valid.cpu(), expected.valid)
    assert torch.equal(regions.scores.cpu(), expected.scores)


def test_region_dicts_on_a_hand_made_case():
    masks = torch.zeros(4, 2, 4, dtype=torch.bool)  # R = 4 slots on a 2 x 4 grid
    masks[0, 0, 1:3] = True  # rank 1: patches (0, 1), (0, 2)
    masks[2, 1, 3] = True  # rank 2 (slot 1 is empty): patch (1, 3)
    masks[3] = ~(masks[0] | masks[2])  # background
    scores = torch.tensor([0.9, 0.0, 0.7, 0.2])
    valid = torch.tensor([True, False, True, True])
    embeddings = torch.arange(4 * 3, dtype=torch.float32).view(4, 3)
    # The model saw the box x 10..50, y 20..40 of an 60 x 80 (H x W) image: patches are 10 x 10 pixels.
    regions = region_dicts(
        masks=masks,
        scores=scores,
        valid=valid,
        original_size=(60, 80),
        crop_box=(10, 20, 50, 40),
        embeddings=embeddings,
    )
    assert [r["rank"] for r in regions] == [1, 2, 3]
    assert [r["is_background"] for r in regions] == [False, False, True]
    assert [r["score"] for r in regions] == pytest.approx([0.9, 0.7, 0.2])
    assert [r["area_fraction"] for r in regions] == [2 / 8, 1 / 8, 5 / 8]
    assert regions[0]["box"] == [20, 20, 40, 30]
    assert regions[1]["box"] == [40, 30, 50, 40]
    assert regions[2]["box"] == [10, 20, 50, 40]
    for region, slot in zip(regions, [0, 2, 3]):
        assert region["mask"].shape == (60, 80) and region["mask"].dtype == bool
        assert region["patch_mask"].shape == (2, 4) and region["patch_mask"].dtype == bool
        np.testing.assert_array_equal(region["patch_mask"], masks[slot].numpy())
        np.testing.assert_array_equal(region["embedding"], embeddings[slot].numpy())
        assert region["mask"].sum() == region["patch_mask"].sum() * 100  # 10 x 10 pixels per patch
        assert not region["mask"][:20].any() and not region["mask"][:, :10].any() and not region["mask"][:, 50:].any()
    whole_image = region_dicts(masks=masks, scores=scores, valid=valid, original_size=(7, 9))
    assert whole_image[0]["mask"].shape == (7, 9) and "embedding" not in whole_image[0]
    # Pixel rows 0..6 -> patch rows y * 2 // 7 = 0,0,0,0,1,1,1; columns 0..8 -> x * 4 // 9 = 0,0,0,1,1,2,2,3,3.
    assert whole_image[0]["box"] == [3, 0, 7, 4]
    with pytest.raises(ValueError, match="crop_box"):
        region_dicts(masks=masks, scores=scores, valid=valid, original_size=(60, 80), crop_box=(10, 20, 10, 40))


def test_region_dicts_follow_extract_regions():
    saliency = torch.from_numpy(make_maps(np.random.default_rng(2), 14, 14, per_kind=2)["blobs"])
    regions = extract_regions(saliency)
    for i in range(len(saliency)):
        dicts = region_dicts(
            masks=regions.masks[i], scores=regions.scores[i], valid=regions.valid[i], original_size=(224, 224)
        )
        assert len(dicts) == int(regions.valid[i].sum()) and dicts[-1]["is_background"]
        assert sum(d["area_fraction"] for d in dicts) == pytest.approx(1.0)
        assert sum(int(d["mask"].sum()) for d in dicts) == 224 * 224  # the regions tile the image


def test_non_finite_saliency_does_not_crash(extract):
    saliency = torch.randn(3, 14, 14)
    saliency[0, 2, 3] = float("nan")
    saliency[1] = float("inf")
    regions = extract(saliency)
    assert regions.masks.shape == (3, 5, 14, 14)
    assert torch.equal(regions.masks[2], extract(saliency[2:]).masks[0])  # others unaffected


@pytest.mark.parametrize("grid", [(12, 12), (14, 14), (37, 23), (40, 48)], ids=lambda g: f"{g[0]}x{g[1]}")
def test_numpy_and_tensor_paths_agree_exactly(grid):
    """The two implementations give identical masks, validity and scores on the same batch
    (all kinds of maps), at the batch sizes the CLI and training use."""
    maps = np.concatenate(list(make_maps(np.random.default_rng(sum(grid) + 1), *grid, per_kind=6).values()))
    for batch in (1, 8, len(maps)):
        saliency = torch.from_numpy(maps[:batch])
        for alpha, num_regions in [(0.15, 5), (0.0, 9)]:
            on_host = extract_regions(saliency, min_region_fraction=alpha, num_regions=num_regions)
            in_tensors = tensor_code(saliency, min_region_fraction=alpha, num_regions=num_regions)
            assert torch.equal(on_host.masks, in_tensors.masks)
            assert torch.equal(on_host.valid, in_tensors.valid)
            assert torch.equal(on_host.scores, in_tensors.scores)


def test_region_dicts_stretch_each_patch_over_its_nearest_neighbour_pixels():
    """Every pixel of the crop box (inside the image) takes its patch's value, (p - start) * cells // (stop - start)
    on each axis, and every other pixel is in no region; boxes are the masks' extents. Grids larger and smaller
    than the image, crop boxes inside it and reaching past its edges."""
    rng = np.random.default_rng(5)
    cases = [((14, 14), (480, 640), None), ((14, 14), (9, 11), None), ((3, 5), (60, 80), (10, 20, 50, 40)),
             ((8, 8), (50, 70), (-7, -3, 75, 52)), ((7, 9), (5, 4), (1, 0, 3, 6)), ((16, 12), (300, 200), (13, 40, 187, 260))]
    for (grid_height, grid_width), (height, width), crop_box in cases:
        masks = torch.from_numpy(rng.random((4, grid_height, grid_width)) < 0.4)
        regions = region_dicts(masks=masks, scores=torch.ones(4), valid=torch.ones(4, dtype=torch.bool),
                               original_size=(height, width), crop_box=crop_box)
        x0, y0, x1, y1 = (0, 0, width, height) if crop_box is None else crop_box
        y, x = np.mgrid[:height, :width]
        inside = (y >= y0) & (y < y1) & (x >= x0) & (x < x1)
        row = np.where(inside, (y - y0) * grid_height // (y1 - y0), 0)
        col = np.where(inside, (x - x0) * grid_width // (x1 - x0), 0)
        for slot, region in enumerate(regions):
            expected = masks[slot].numpy()[row, col] & inside
            np.testing.assert_array_equal(region["mask"], expected)
            ys, xs = np.nonzero(expected)
            assert region["box"] == ([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
                                     if len(ys) else [0, 0, 0, 0])

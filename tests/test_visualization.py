"""draw_regions overlays at thumbnail and photo sizes, from synthetic region dicts."""

import numpy as np
import pytest
from PIL import Image

from dseqjepa_hub.application.drawing import (
    REGION_COLORS,
    _dilate,
    _label_anchor,
    draw_regions,
    region_color,
    saliency_heatmap,
)


def make_regions(height: int, width: int) -> list[dict]:
    """Two rectangular regions and the background, as the pipeline returns them."""
    first = np.zeros((height, width), dtype=bool)
    first[height // 8 : height // 2, width // 8 : width // 2] = True
    second = np.zeros((height, width), dtype=bool)
    second[height // 2 :, width // 2 :] = True  # touches the image border
    background = ~(first | second)
    return [
        {"rank": 1, "is_background": False, "score": 0.91, "mask": first},
        {"rank": 2, "is_background": False, "score": 0.55, "mask": second},
        {"rank": 3, "is_background": True, "score": 0.12, "mask": background},
    ]


@pytest.mark.parametrize("height, width", [(64, 64), (48, 80), (3000, 4000)])
def test_overlay_fills_outlines_and_labels(height, width):
    grey = 128
    image = Image.new("RGB", (width, height), (grey, grey, grey))
    regions = make_regions(height, width)
    overlay = draw_regions(image, regions, alpha=0.5)
    assert overlay.size == image.size and overlay.mode == "RGB"
    pixels = np.asarray(overlay).astype(np.int16)

    # Background untouched, away from the labels.
    assert (pixels[-1, 0] == grey).all()
    for region in regions[:2]:
        color = np.array(region_color(region["rank"]))
        inside = pixels[region["mask"]]
        # Translucent fill in the middle, the exact colour on the outline (at the border too).
        ys, xs = np.nonzero(region["mask"])
        fill = np.round(0.5 * grey + 0.5 * color)
        assert (np.abs(inside - fill).max(axis=1) <= 1).mean() > 0.2
        assert (pixels[ys.min(), xs.min()] == color).all()
        assert (pixels[ys.max(), xs.max()] == color).all()
        # The label: text pixels (black or white) exist inside the region.
        text = np.all(inside == 0, axis=1) | np.all(inside == 255, axis=1)
        assert text.sum() > 0
        # Legible: text ink covers a visible area, growing with the image.
        assert text.sum() >= 15
        if height >= 1000:
            assert text.sum() >= 2000


def test_outline_width_scales_with_size():
    def outline_width(size):
        regions = make_regions(size, size)
        pixels = np.asarray(draw_regions(Image.new("RGB", (size, size), (128,) * 3), regions)).astype(int)
        column = size // 4  # region 1 spans rows and columns size // 8 to size // 2
        top = pixels[size // 8 : size // 4, column]  # its top outline, above the centred label
        return int(np.argmin(np.all(top == np.array(REGION_COLORS[0]), axis=1)))

    assert outline_width(64) == 1
    assert outline_width(2000) == 8


def test_saliency_heatmap_beside_and_in_crop_box():
    image = Image.new("RGB", (40, 30), (128, 128, 128))
    saliency = np.arange(4, dtype=np.float32).reshape(2, 2)
    canvas = draw_regions(image, make_regions(30, 40), show_saliency=True, saliency=saliency, saliency_box=(10, 0, 30, 30))
    gap = canvas.width - 2 * 40
    assert canvas.height == 30 and gap > 0
    heatmap = np.asarray(canvas)[:, 40 + gap :]
    assert (heatmap[:, :10] == 128).all() and (heatmap[:, 30:] == 128).all()  # outside the box: grey
    assert (heatmap[0, 10] == [68, 1, 84]).all()  # minimum: darkest stop
    assert (heatmap[29, 29] == [253, 231, 37]).all()  # maximum: brightest stop
    with pytest.raises(ValueError, match="return_saliency"):
        draw_regions(image, [], show_saliency=True)
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        saliency_heatmap(np.zeros(3), (40, 30))


def test_mask_of_wrong_size_is_refused():
    with pytest.raises(ValueError, match="mask of shape"):
        draw_regions(Image.new("RGB", (10, 10)), make_regions(20, 20))


def test_overlapping_masks_are_refused_naming_the_rank():
    """One blend tints all regions at once, which holds for disjoint masks only (as region_dicts gives them)."""
    regions = make_regions(40, 40)
    regions[1]["mask"] = regions[1]["mask"] | regions[0]["mask"]
    with pytest.raises(ValueError, match="mask of rank 2 overlaps"):
        draw_regions(Image.new("RGB", (40, 40)), regions)


def test_dilate_matches_a_direct_square_dilation():
    rng = np.random.default_rng(0)
    for _ in range(100):
        mask = rng.random((rng.integers(1, 30), rng.integers(1, 30))) < 0.1
        radius = int(rng.integers(0, 10))  # windows of 1 to 19 cells: every doubling step count
        outside = bool(rng.integers(0, 2))
        padded = np.pad(mask, radius, constant_values=outside)
        expected = np.zeros_like(mask)
        for dy in range(2 * radius + 1):
            for dx in range(2 * radius + 1):
                expected |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
        assert np.array_equal(_dilate(mask, radius, outside=outside), expected), (radius, outside)


def test_label_anchor_is_the_first_point_nearest_to_the_centroid():
    """The definition on every point of the grid (every pixel below 250k pixels, else every step-th row and
    column): shapes with ties (mirror-symmetric, rings, two blobs), sparse points, and large photos."""

    def nearest_point(mask: np.ndarray) -> tuple[int, int]:
        step = max(1, int(np.sqrt(mask.size // 250_000)))
        ys, xs = np.nonzero(mask[::step, ::step])
        if ys.size == 0:
            ys, xs, step = *np.nonzero(mask), 1
        nearest = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
        return int(xs[nearest]) * step, int(ys[nearest]) * step

    rng = np.random.default_rng(1)
    masks = []
    for _ in range(1000):
        height, width = (int(side) for side in rng.integers(1, 30, 2))
        y, x = np.mgrid[:height, :width]
        radius = (y - height / 2) ** 2 + (x - width / 2) ** 2
        half = rng.random((height, (width + 1) // 2)) < 0.5
        mirrored = np.concatenate([half, half[:, ::-1]], axis=1)
        masks += [rng.random((height, width)) < rng.random(), np.concatenate([mirrored, mirrored[::-1]], axis=0),
                  (radius < (min(height, width) / 2) ** 2) & (radius > (min(height, width) / 4) ** 2),
                  (x < width // 3) & (y < height // 3) | (x >= width - width // 3) & (y >= height - height // 3),
                  (y == rng.integers(0, height)) & (x == rng.integers(0, width)) | (y == 0) & (x == width - 1)]
    for height, width in [(480, 640), (2048, 1536), (3000, 60), (1001, 999)]:  # steps 1, 3, 1, 2
        y, x = np.ogrid[:height, :width]
        disc = (y - rng.uniform(0, height)) ** 2 + (x - rng.uniform(0, width)) ** 2 < (0.3 * min(height, width)) ** 2
        masks += [disc, ~disc, disc & (y % 7 > 0), (x % 5 == 1) & (y % 3 == 2)]
    for mask in masks:
        if mask.any():
            assert _label_anchor(mask) == nearest_point(mask), mask.shape

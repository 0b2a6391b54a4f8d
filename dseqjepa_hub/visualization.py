"""Overlays of ranked regions: `draw_regions(image, regions)` -> PIL image.

Each region (a region dict, docs/ARCHITECTURE.md) is drawn as a translucent colour fill, an
outline inside its mask, and a label "rank: score" on a patch of the region's colour placed
at the region pixel nearest to its centroid. The background region is not drawn: it is
everything else. Line widths and font sizes follow the image size, so overlays stay legible
from 64 px thumbnails to 4,000 px photos. Optionally the saliency map is shown beside the
overlay as a heatmap on the part of the image the model saw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Okabe-Ito colours (distinguishable with common colour-vision deficiencies), rank 1 first.
REGION_COLORS = (
    (213, 94, 0),
    (0, 114, 178),
    (0, 158, 115),
    (240, 228, 66),
    (204, 121, 167),
    (86, 180, 233),
    (230, 159, 0),
)

# Stops of a perceptually ordered dark-to-bright colour ramp (sampled from viridis).
_HEATMAP_STOPS = np.array(
    [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64
)


def draw_regions(
    image: Image.Image,
    regions: Sequence[dict],
    *,
    alpha: float = 0.45,
    show_saliency: bool = False,
    saliency: np.ndarray | None = None,
    saliency_box: tuple[int, int, int, int] | None = None,
) -> Image.Image:
    """Draw ranked regions over `image` (the original image the region masks refer to).

    regions: region dicts with `rank`, `score`, `is_background` and `mask` (H, W) bool.
    alpha: opacity of the region fills.
    show_saliency: put a heatmap of `saliency` (h, w), min-max normalised, to the right of
        the overlay, covering `saliency_box` (x0, y0, x1, y1; default the whole image), the
        part of the image the model saw.
    """
    image = image.convert("RGB")
    width, height = image.size
    line_width = max(1, round(math.sqrt(width * height) / 250))
    font_size = max(10, round(math.sqrt(width * height) / 30))
    font = ImageFont.load_default(size=font_size)

    overlay = image.copy()
    foreground = [region for region in regions if not region["is_background"]]
    for region in foreground:
        mask = _checked_mask(region, (height, width))
        color = region_color(region["rank"])
        tinted = Image.blend(overlay, Image.new("RGB", overlay.size, color), alpha)
        overlay.paste(tinted, mask=Image.fromarray(mask))
        overlay.paste(color, mask=Image.fromarray(_inner_outline(mask, line_width)))

    draw = ImageDraw.Draw(overlay)
    if font_size <= 16:
        draw.fontmode = "1"  # no anti-aliasing: crisper glyphs at thumbnail sizes
    for region in foreground:
        if region["mask"].any():
            text = f"{region['rank']}: {region['score']:.2f}"
            _draw_label(draw, text, _label_anchor(region["mask"]), region_color(region["rank"]), font, (width, height))

    if not show_saliency:
        return overlay
    if saliency is None:
        raise ValueError("show_saliency=True needs the saliency map (h, w); ask the pipeline for return_saliency=True")
    heatmap = saliency_heatmap(saliency, (width, height), saliency_box)
    gap = line_width * 4
    canvas = Image.new("RGB", (2 * width + gap, height), (255, 255, 255))
    canvas.paste(overlay, (0, 0))
    canvas.paste(heatmap, (width + gap, 0))
    return canvas


def region_color(rank: int) -> tuple[int, int, int]:
    """The fixed colour of a 1-based rank (cycling when there are more ranks than colours)."""
    return REGION_COLORS[(rank - 1) % len(REGION_COLORS)]


def saliency_heatmap(
    saliency: np.ndarray, image_size: tuple[int, int], box: tuple[int, int, int, int] | None = None
) -> Image.Image:
    """Colour-map a (h, w) saliency map, min-max normalised, onto `box` of an image of `image_size` (W, H).

    Patches are upsampled with nearest neighbour so the patch grid stays visible; the area
    outside `box` (not seen by the model) is grey.
    """
    width, height = image_size
    x0, y0, x1, y1 = box if box is not None else (0, 0, width, height)
    values = np.asarray(saliency, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"saliency must be a (h, w) map, found shape {values.shape}")
    low, high = values.min(), values.max()
    normalised = (values - low) / (high - low) if high > low else np.zeros_like(values)
    positions = np.linspace(0, 1, len(_HEATMAP_STOPS))
    colors = np.stack([np.interp(normalised, positions, _HEATMAP_STOPS[:, c]) for c in range(3)], axis=-1)
    patch_image = Image.fromarray(np.round(colors).astype(np.uint8))  # (h, w, 3)
    heatmap = Image.new("RGB", (width, height), (128, 128, 128))
    heatmap.paste(patch_image.resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST), (x0, y0))
    return heatmap


def _checked_mask(region: dict, shape: tuple[int, int]) -> np.ndarray:
    mask = np.asarray(region["mask"], dtype=bool)
    if mask.shape != shape:
        raise ValueError(
            f"region of rank {region['rank']} has a mask of shape {mask.shape}, but the image is {shape} (H, W); "
            "pass the original image the regions were computed for"
        )
    return mask


def _inner_outline(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of `mask` within `width` pixels of its edge (the image border counts as an edge)."""
    outline = np.zeros_like(mask)
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return outline
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    crop = mask[window]
    outline[window] = crop & _dilate(~crop, width)
    return outline


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square dilation by `radius`, with everything outside the array counted as set.

    Separable, each axis a running-window sum from a cumulative sum: O(pixels), independent of radius.
    """
    result = mask
    for axis in (0, 1):
        padded = np.pad(result, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], constant_values=True)
        counts = np.cumsum(padded, axis=axis, dtype=np.int32)
        counts = np.concatenate([np.zeros_like(counts.take([0], axis=axis)), counts], axis=axis)
        size = result.shape[axis]
        upper = counts.take(np.arange(2 * radius + 1, 2 * radius + 1 + size), axis=axis)
        lower = counts.take(np.arange(size), axis=axis)
        result = upper - lower > 0
    return result


def _label_anchor(mask: np.ndarray) -> tuple[int, int]:
    """The (x, y) of the region pixel nearest to the region's centroid (on a grid of at most ~250k points)."""
    step = max(1, math.isqrt(mask.size // 250_000))
    ys, xs = np.nonzero(mask[::step, ::step])
    if ys.size == 0:  # a region thinner than the grid
        ys, xs, step = *np.nonzero(mask), 1
    nearest = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return int(xs[nearest]) * step, int(ys[nearest]) * step


def _draw_label(draw: ImageDraw.ImageDraw, text: str, anchor: tuple[int, int], color, font, image_size) -> None:
    """Text centred on `anchor` over a patch of the region colour, shifted to stay inside the image."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(1, (bottom - top) // 5)
    box_width, box_height = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(max(anchor[0] - box_width // 2, 0), max(image_size[0] - box_width, 0))
    y = min(max(anchor[1] - box_height // 2, 0), max(image_size[1] - box_height, 0))
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    draw.rectangle((x, y, x + box_width - 1, y + box_height - 1), fill=tuple(color))
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255))

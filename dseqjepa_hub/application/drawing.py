"""Pictures of what a model computes: ranked regions, saliency, attention, patch similarity, clusters and
the DSeq prediction sequence, each as a PIL image (`dseqjepa visualize` writes them).

`draw_regions(image, regions)`: each region (a region dict, docs/ARCHITECTURE.md) is drawn as a
translucent colour fill, an outline inside its mask (the region's colour, then a black or white line
that contrasts with it), and a label "rank: score" on a patch of the region's colour placed at the
region pixel nearest to its centroid; a legend ("rank: score" per colour, or "no foreground region")
sits in the corner it hides least of. The background region is not drawn: it is everything else.
Optionally the saliency map is shown beside the overlay as a heatmap, with a colour bar, on the part
of the image the model saw.

The other pictures (`draw_saliency`, `draw_attention`, `draw_similarity`, `draw_clusters`,
`draw_sequence`, `draw_pca`) take maps from `dseqjepa_hub.application.feature_maps` on the patch grid and the
crop box that maps the grid onto the image; heatmaps carry a colour bar with their value range, beside the
map and exactly as tall as it, never over it; legends list only what is drawn.

Sizes, so that a picture reads at a glance from a 200 px thumbnail to a 4,000 px photo:
- text, line widths and markers follow the size of the panel they are drawn on (`font_size_for`: about
  1/30 of its geometric mean side, never under MIN_FONT px), and text is at least 1/READABLE_FRACTION of the
  whole picture's longer side (10 px when the picture is shown 1,000 px wide, a 4,000 px picture at 25 %);
- panels of several-panel pictures (attention heads, prediction steps) have PANEL_AREA px² whatever the
  image's shape (a panorama's panels are wide, not thin), and `readable` scales an image smaller than
  MIN_PICTURE_AREA px² up before it is drawn (`dseqjepa visualize` does);
- panels are laid out in the number of columns that brings the picture closest to FIGURE_ASPECT
  (a panorama's overlay and heat map one above the other, a photo's side by side).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from functools import lru_cache

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

MIN_FONT = 10  # px: the smallest text drawn (without anti-aliasing up to 16 px, so that it stays crisp)
READABLE_FRACTION = 100  # text is at least 1/100 of the picture's longer side
PANEL_AREA = 480 * 480  # px²: each panel of the attention and sequence pictures
MIN_PICTURE_AREA = 400 * 400  # px²: `readable` scales smaller images up to this
FIGURE_ASPECT = 16 / 9  # width:height that panel layouts aim for (a screen)


def draw_regions(
    image: Image.Image,
    regions: Sequence[dict],
    *,
    alpha: float = 0.45,
    show_saliency: bool = False,
    saliency: np.ndarray | None = None,
    saliency_box: tuple[int, int, int, int] | None = None,
    legend: bool = True,
) -> Image.Image:
    """Draw ranked regions over `image` (the original image the region masks refer to).

    regions: region dicts with `rank`, `score`, `is_background` and `mask` (H, W) bool, the masks
        disjoint (as `region_dicts` gives them).
    alpha: opacity of the region fills.
    show_saliency: put a heatmap of `saliency` (h, w), min-max normalised, beside the overlay (to its
        right, or below a wide image), covering `saliency_box` (x0, y0, x1, y1; default the whole image),
        the part of the image the model saw, and a colour bar of the raw values beside the map (never over
        it; left out beside maps under MIN_COLORBAR_HEIGHT px).
    legend: a legend of the regions ("rank: score"; "no foreground region" when only the
        background is left) in the corner of the overlay that hides the fewest region pixels (left out
        where it would cover more than half the overlay's width or height).
    """
    overlay = image.convert("RGB")  # a copy: `image` stays as it is
    width, height = overlay.size
    line_width = line_width_for(width, height)
    font_size = font_size_for(width, height)
    font = _font(font_size)

    foreground = [region for region in regions if not region["is_background"]]
    masks = [_checked_mask(region, (height, width)) for region in foreground]
    occupied = np.zeros((height, width), dtype=bool)
    for region, mask in zip(foreground, masks):
        if (occupied & mask).any():
            raise ValueError(f"draw_regions: the mask of rank {region['rank']} overlaps an earlier region's; "
                             "the region masks must be disjoint (as region_dicts gives them)")
        occupied |= mask
    # Every fill and line is drawn inside the bounding box of the pixels it changes (`_window`).
    tinted = _window(occupied)
    if tinted is not None:  # the regions are disjoint: one blend tints them all, each with its colour
        part = overlay.crop(tinted.box)
        colors = Image.new("RGB", part.size)
        for region, mask in zip(foreground, masks):
            colors.paste(region_color(region["rank"]), mask=Image.fromarray(mask[tinted.slices]))
        overlay.paste(Image.blend(part, colors, alpha), tinted.box, mask=Image.fromarray(occupied[tinted.slices]))
    for region, mask in zip(foreground, masks):
        color = region_color(region["rank"])
        inside = _window(mask)
        if inside is None:
            continue
        # Outside the coloured outline, on the background only, a black or white line, whichever
        # contrasts with the colour: the outline stays visible on image parts of the region's own colour.
        around = inside.grown(max(1, line_width // 2), (height, width))
        ring = ~mask[around.slices] & _dilate(mask[around.slices], max(1, line_width // 2), outside=False)
        overlay.paste(contrast_color(color), around.box, mask=Image.fromarray(ring & ~occupied[around.slices]))
        crop = mask[inside.slices]
        overlay.paste(color, inside.box, mask=Image.fromarray(crop & _dilate(~crop, line_width)))

    draw = ImageDraw.Draw(overlay)
    draw.fontmode = _font_mode(font_size)
    for region, mask in zip(foreground, masks):
        if mask.any():
            text = f"{region['rank']}: {region['score']:.2f}"
            _draw_label(draw, text, _label_anchor(mask), region_color(region["rank"]), font, (width, height))
    if legend:
        entries = [(region_color(r["rank"]), f"{r['rank']}: {r['score']:.2f}") for r, m in zip(foreground, masks) if m.any()]
        _draw_legend(overlay, entries or [(None, NO_FOREGROUND)], occupied, font_size)

    if not show_saliency:
        return overlay
    if saliency is None:
        raise ValueError("show_saliency=True needs the saliency map (h, w); ask the pipeline for return_saliency=True")
    heatmap = saliency_heatmap(saliency, (width, height), saliency_box)
    values = np.asarray(saliency, dtype=np.float64)
    gap = line_width * 4
    if height >= MIN_COLORBAR_HEIGHT:
        heatmap = _with_colorbar(heatmap, 0, float(values.min()), float(values.max()), font_size)
    return _arrange([overlay, heatmap], gap)


NO_FOREGROUND = "no foreground region"
MIN_COLORBAR_HEIGHT = 120  # px: beside a smaller overlay a colour bar's labels would not fit
CONTEXT_COLOR = (0, 114, 178)  # the prediction sequence: context regions (Okabe-Ito blue)
TARGET_COLOR = (213, 94, 0)  # and the target region (Okabe-Ito vermillion)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's default font at `size` px, loaded once per size and thread (`_loaded_font`)."""
    return _loaded_font(size, threading.get_ident())


@lru_cache(maxsize=32)
def _loaded_font(size: int, thread: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Loading decodes and parses the font each time (0.1 ms, four times an overlay); one per thread, as FreeType
    wants a face used by one thread at a time (a thread's number can be reused only once it has ended)."""
    return ImageFont.load_default(size=size)


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


class _Window:
    """A rectangle of an (H, W) array: `slices` (rows, columns) for NumPy, `box` (x0, y0, x1, y1) for Pillow."""

    def __init__(self, top: int, bottom: int, left: int, right: int):
        self.top, self.bottom, self.left, self.right = top, bottom, left, right
        self.slices = (slice(top, bottom), slice(left, right))
        self.box = (left, top, right, bottom)

    def grown(self, by: int, shape: tuple[int, int]) -> _Window:
        """This window `by` pixels wider on every side, inside an array of `shape`."""
        return _Window(max(self.top - by, 0), min(self.bottom + by, shape[0]), max(self.left - by, 0),
                       min(self.right + by, shape[1]))


def _window(mask: np.ndarray) -> _Window | None:
    """The bounding box of `mask`'s pixels (None when it has none)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return _Window(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def _dilate(mask: np.ndarray, radius: int, outside: bool = True) -> np.ndarray:
    """Square dilation by `radius`, with everything outside the array counted as set (`outside`) or unset.

    Separable: along each axis the OR over a window of 2 * radius + 1 cells, built by doubling (each
    step ORs the array with itself shifted, so a window of w cells grows to up to 2w): about
    log2(radius) boolean operations per axis, on bytes (an outline is a few pixels wide).
    """
    window = 2 * radius + 1
    result = mask
    for axis in (0, 1):
        covered = np.pad(result, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], constant_values=outside)
        width = 1  # covered[i] is the OR of the `width` padded cells from i on
        while width < window:
            step = min(width, window - width)
            head = tuple(slice(None, -step) if a == axis else slice(None) for a in (0, 1))
            tail = tuple(slice(step, None) if a == axis else slice(None) for a in (0, 1))
            covered = covered[head] | covered[tail]
            width += step
        result = covered
    return result


def _label_anchor(mask: np.ndarray) -> tuple[int, int]:
    """The (x, y) of the region pixel nearest to the region's centroid, the first in raster order on ties (on a
    grid of at most ~250k points).

    Without listing the points, inside their bounding box: the centroid from the row and column counts
    (integer sums, one division, as NumPy's mean of the points' coordinates), each row's nearest point among
    its nearest on either side of the centroid's column (the distances, computed as for every point, grow away
    from it), and the points of the first nearest row alone compared."""
    step = max(1, math.isqrt(mask.size // 250_000))
    grid = mask[::step, ::step]
    window = _window(grid)
    if window is None:  # a region thinner than the grid
        grid, step = mask, 1
        window = _window(grid)
    rows, columns = np.arange(window.top, window.bottom), np.arange(window.left, window.right)
    grid = grid[window.slices]
    row_counts = np.count_nonzero(grid, axis=1)
    count = row_counts.sum()
    cy = np.float64(row_counts @ rows) / count
    cx = np.float64(np.count_nonzero(grid, axis=0) @ columns) / count
    column_distance = (columns - cx) ** 2
    split = int(cx) + 1 - columns[0]  # columns before it lie at or left of the centroid, the others right of it
    inside = np.arange(len(rows))
    left = split - 1 - grid[:, split - 1 :: -1].argmax(axis=1)  # each row's last point before `split`, if any
    nearest = np.where(grid[inside, left], column_distance[left], np.inf)
    if split < len(columns):
        right = split + grid[:, split:].argmax(axis=1)  # each row's first point from `split` on, if any
        nearest = np.where(grid[inside, right], np.minimum(nearest, column_distance[right]), nearest)
    row = int(np.argmin((rows - cy) ** 2 + nearest))  # the first row holding a nearest point
    xs = np.flatnonzero(grid[row])
    x = columns[xs[np.argmin((np.full(len(xs), rows[row]) - cy) ** 2 + column_distance[xs])]]
    return int(x) * step, int(rows[row]) * step


def _draw_label(draw: ImageDraw.ImageDraw, text: str, anchor: tuple[int, int], color, font, image_size) -> None:
    """Text centred on `anchor` over a patch of the region colour, shifted to stay inside the image."""
    left, top, right, bottom = font.getbbox(text, mode="1" if draw.fontmode == "1" else "L")  # as rendered
    pad = max(1, (bottom - top) // 5)
    box_width, box_height = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(max(anchor[0] - box_width // 2, 0), max(image_size[0] - box_width, 0))
    y = min(max(anchor[1] - box_height // 2, 0), max(image_size[1] - box_height, 0))
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    draw.rectangle((x, y, x + box_width - 1, y + box_height - 1), fill=tuple(color))
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255))


def contrast_color(color) -> tuple[int, int, int]:
    """Black or white, whichever stands out against `color`."""
    return (0, 0, 0) if _luminance(color) > 110 else (255, 255, 255)


def _luminance(color) -> float:
    return 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]




def font_size_for(width: int, height: int) -> int:
    """The text size on a panel of `width` x `height` px: about 1/30 of its geometric mean side, at least
    MIN_FONT px."""
    return max(MIN_FONT, round(math.sqrt(width * height) / 30))


def line_width_for(width: int, height: int) -> int:
    """The width of outlines and markers on a panel of `width` x `height` px: about 1/250 of its geometric mean side."""
    return max(1, round(math.sqrt(width * height) / 250))


def _hairline(font_size: int) -> int:
    """The width of frames and ticks beside text of `font_size` px."""
    return max(1, round(font_size / 16))


def _font_mode(font_size: int) -> str:
    return "1" if font_size <= 16 else "L"  # no anti-aliasing for small text: crisper glyphs


def readable(image: Image.Image, box: tuple[int, int, int, int] | None = None
             ) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
    """`image` scaled up to MIN_PICTURE_AREA px² when it is smaller (a thumbnail's picture gets room for its
    text), with `box` scaled alike; larger images are returned as they are."""
    if image.width * image.height >= MIN_PICTURE_AREA:
        return image, box
    return _scaled_to_area(image, box, MIN_PICTURE_AREA)


def _scaled_to_area(image: Image.Image, box, area: int) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
    """`image` scaled (up or down, keeping its shape) to about `area` px², with `box` scaled alike."""
    scale = math.sqrt(area / (image.width * image.height))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image, box
    scaled_box = None if box is None else tuple(round(v * size[i % 2] / image.size[i % 2]) for i, v in enumerate(box))
    return image.resize(size, Image.Resampling.LANCZOS), scaled_box


def _columns(count: int, panel_size: tuple[int, int]) -> int:
    """The number of columns that lays out `count` panels of `panel_size` closest to FIGURE_ASPECT."""
    width, height = panel_size

    def distance(columns: int) -> float:
        return abs(math.log(columns * width / (math.ceil(count / columns) * height) / FIGURE_ASPECT))

    return min(range(1, count + 1), key=distance)


def _figure_font(panel_size: tuple[int, int], count: int) -> int:
    """The text size for `count` panels of `panel_size` laid out by `_columns`: the panel's, and at least
    1/READABLE_FRACTION of the picture's longer side (the panels', with a tenth more for the titles and the
    colour bar or key beside them)."""
    columns = _columns(count, panel_size)
    panels = (columns * panel_size[0], math.ceil(count / columns) * panel_size[1])
    return max(font_size_for(*panel_size), math.ceil(1.1 * max(panels) / READABLE_FRACTION))
def _corner_boxes(size: tuple[int, int], box_size: tuple[int, int], margin: int) -> list[tuple[int, int]]:
    """Top-left positions of a box in the corners, in matplotlib's "best" order: upper right, upper left,
    lower left, lower right."""
    width, height = size
    box_width, box_height = box_size
    right, bottom = width - box_width - margin, height - box_height - margin
    return [(right, margin), (margin, margin), (margin, bottom), (right, bottom)]


def _least_covering(corners, box_size, occupied: np.ndarray | None) -> tuple[int, int]:
    if occupied is None:
        return corners[0]
    box_width, box_height = box_size
    covered = [int(occupied[y : y + box_height, x : x + box_width].sum()) for x, y in corners]
    return corners[int(np.argmin(covered))]  # first minimum: the preferred corner on ties




def _legend_layout(entries: list[tuple], font_size: int) -> tuple[int, int, int, int, int]:
    """(width, height, pad, row height, swatch side) of a legend box of (colour or None, text) entries."""
    font = _font(font_size)
    boxes = [font.getbbox(text) for _, text in entries]
    text_height = max(bottom for _, _, _, bottom in boxes)
    pad = max(2, font_size // 4)
    swatch = text_height if any(color is not None for color, _ in entries) else 0
    width = 2 * pad + swatch + (pad if swatch else 0) + max(right for _, _, right, _ in boxes)
    return width, pad + (text_height + pad) * len(entries), pad, text_height + pad, swatch


def _paint_legend(image: Image.Image, entries: list[tuple], xy: tuple[int, int], font_size: int,
                  layout: tuple[int, int, int, int, int]) -> None:
    """Paint a legend of (colour or None, text) entries at `xy`, as `_legend_layout` laid it out."""
    width, height, pad, row, swatch = layout
    font = _font(font_size)
    line = _hairline(font_size)
    draw = ImageDraw.Draw(image, "RGBA")
    draw.fontmode = _font_mode(font_size)
    x, y = xy
    draw.rectangle((x, y, x + width - 1, y + height - 1), fill=(255, 255, 255, 215), outline=(40, 40, 40, 255), width=line)
    for index, (color, text) in enumerate(entries):
        top, left = y + pad + index * row, x + pad
        if color is not None:
            draw.rectangle((left, top, left + swatch - 1, top + swatch - 1), fill=tuple(color), outline=(0, 0, 0), width=line)
            left += swatch + pad
        draw.text((left, top), text, font=font, fill=(0, 0, 0))


def _draw_legend(image: Image.Image, entries: list[tuple], occupied: np.ndarray | None, font_size: int,
                 max_fraction: float = 0.5) -> bool:
    """Draw (colour or None, text) entries as a legend in place, in the corner hiding the fewest `occupied`
    pixels; left out (False) when it would exceed `max_fraction` of the image's width or height."""
    layout = _legend_layout(entries, font_size)
    width, height, pad, _, _ = layout
    if width > max_fraction * image.width or height > max_fraction * image.height:
        return False
    xy = _least_covering(_corner_boxes(image.size, (width, height), pad), (width, height), occupied)
    _paint_legend(image, entries, xy, font_size, layout)
    return True

def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3) on the viridis-like ramp."""
    positions = np.linspace(0, 1, len(_HEATMAP_STOPS))
    values = np.clip(np.asarray(values, dtype=np.float64), 0, 1)
    colors = np.stack([np.interp(values, positions, _HEATMAP_STOPS[:, c]) for c in range(3)], axis=-1)
    return np.round(colors).astype(np.uint8)




def _format_value(value: float) -> str:
    return f"{value:.3g}"


def colorbar(map_height: int, vmin: float, vmax: float, font_size: int) -> Image.Image:
    """A vertical colour bar for a map `map_height` px tall, as tall as it: the ramp from vmin (bottom) to
    vmax (top), with ticks at both ends and the middle and their values beside them (the end values within
    the strip, so that nothing is clipped)."""
    font = _font(font_size)
    texts = [_format_value(vmax), _format_value((vmin + vmax) / 2), _format_value(vmin)]
    boxes = [font.getbbox(text) for text in texts]
    pad = max(2, font_size // 4)
    line = _hairline(font_size)
    tick = max(3, pad)
    bar_width = max(8, font_size)
    text_x = pad + bar_width + tick + pad
    strip = Image.new("RGB", (text_x + max(box[2] for box in boxes) + pad, map_height), (255, 255, 255))
    ramp = colormap(np.linspace(1, 0, map_height))[:, None, :].repeat(bar_width, axis=1)  # top: vmax
    strip.paste(Image.fromarray(ramp), (pad, 0))
    draw = ImageDraw.Draw(strip)
    draw.fontmode = _font_mode(font_size)
    bottom = map_height - 1
    # framed left and right (the ramp's end rows stay whole: they are the map's extreme colours)
    draw.rectangle((pad - line, -line, pad + bar_width - 1 + line, bottom + line), outline=(0, 0, 0), width=line)
    for text, (_, top, _, low), y in zip(texts, boxes, (0, bottom // 2, bottom)):
        draw.line((pad + bar_width, y, pad + bar_width + tick, y), fill=(0, 0, 0), width=line)
        ink = low - top
        ink_top = min(max(y - ink // 2, 0), max(map_height - ink, 0))  # centred on its tick, inside the strip
        draw.text((text_x, ink_top - top), text, font=font, fill=(0, 0, 0))
    return strip


def _with_colorbar(panel: Image.Image, map_top: int, vmin: float, vmax: float, font_size: int) -> Image.Image:
    """`panel`, whose map starts `map_top` px down and reaches its bottom, with a colour bar beside the map,
    level with it and as tall."""
    bar = colorbar(panel.height - map_top, vmin, vmax, font_size)
    return _row([panel, _key(bar, panel.height, map_top)], gap=max(2, font_size // 2))


def heatmap_overlay(
    image: Image.Image,
    values: np.ndarray,
    box: tuple[int, int, int, int] | None = None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.6,
) -> Image.Image:
    """`image` with a (h, w) map colour-mapped over `box` (the part the model saw; default all of it),
    patches upsampled by nearest neighbour. The scale runs from vmin to vmax (default the map's range)."""
    image = image.convert("RGB")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected a (h, w) map, found shape {values.shape}")
    low = float(values.min()) if vmin is None else vmin
    high = float(values.max()) if vmax is None else vmax
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    x0, y0, x1, y1 = box if box is not None else (0, 0, image.width, image.height)
    colored = Image.fromarray(colormap(scaled)).resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST)
    layer = image.copy()
    layer.paste(colored, (x0, y0))
    return Image.blend(image, layer, alpha)




def _titled(panel: Image.Image, title: str, font_size: int) -> Image.Image:
    """`panel` with `title` written above it on white. A title wider than the panel is set smaller, down to
    MIN_FONT px, and past that the canvas is widened (the panel centred below it): never clipped."""
    pad = max(2, font_size // 3)
    font = _font(font_size)
    while font.getbbox(title)[2] > panel.width - 2 * pad and font_size > MIN_FONT:
        font_size -= 1
        font = _font(font_size)
    left, _, right, bottom = font.getbbox(title)
    width = max(panel.width, right - left + 2 * pad)
    canvas = Image.new("RGB", (width, panel.height + bottom + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = _font_mode(font_size)
    draw.text(((width - (right - left)) // 2 - left, pad), title, font=font, fill=(0, 0, 0))
    canvas.paste(panel, ((width - panel.width) // 2, bottom + 2 * pad))
    return canvas


def _row(panels: Sequence[Image.Image], gap: int) -> Image.Image:
    height = max(panel.height for panel in panels)
    canvas = Image.new("RGB", (sum(panel.width for panel in panels) + gap * (len(panels) - 1), height), (255, 255, 255))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + gap
    return canvas


def _grid(panels: Sequence[Image.Image], columns: int, gap: int) -> Image.Image:
    rows = [_row(panels[start : start + columns], gap) for start in range(0, len(panels), columns)]
    canvas = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + gap * (len(rows) - 1)),
                       (255, 255, 255))
    y = 0
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height + gap
    return canvas


def _arrange(panels: Sequence[Image.Image], gap: int) -> Image.Image:
    """`panels` in the grid closest to FIGURE_ASPECT (side by side for a photo, one above the other for a panorama)."""
    size = (max(panel.width for panel in panels), max(panel.height for panel in panels))
    return _grid(panels, _columns(len(panels), size), gap)


def _check_map(values, name: str, dims: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != dims:
        raise ValueError(f"{name} must have {dims} dimensions, found shape {array.shape}")
    return array


def draw_saliency(
    image: Image.Image, saliency: np.ndarray, box: tuple[int, int, int, int] | None = None, *, alpha: float = 0.6
) -> Image.Image:
    """The saliency map (h, w) over the image, with a colour bar of its raw values."""
    values = _check_map(saliency, "saliency", 2).astype(np.float64)
    panel = heatmap_overlay(image, values, box, alpha=alpha)
    size = font_size_for(*panel.size)
    titled = _titled(panel, "saliency (CLS similarity)", size)
    return _with_colorbar(titled, titled.height - panel.height, float(values.min()), float(values.max()), size)


def draw_attention(
    image: Image.Image,
    attention: np.ndarray,
    box: tuple[int, int, int, int] | None = None,
    *,
    panel_area: int = PANEL_AREA,
    alpha: float = 0.6,
) -> Image.Image:
    """CLS attention (heads, h, w): the mean over heads, then each head, each panel `panel_area` px², on one
    colour scale (0 to the largest value), with its colour bar."""
    maps = _check_map(attention, "attention", 3).astype(np.float64)
    panel, panel_box = _scaled_to_area(image.convert("RGB"), box, panel_area)
    mean = maps.mean(axis=0)
    high = float(max(maps.max(), mean.max()))
    count = len(maps) + 1
    size = _figure_font(panel.size, count)
    titles = [f"CLS attention, mean of {len(maps)} heads"] + [f"head {i + 1}" for i in range(len(maps))]
    panels = [_titled(heatmap_overlay(panel, values, panel_box, vmin=0.0, vmax=high, alpha=alpha), title, size)
              for values, title in zip([mean, *maps], titles)]
    grid = _grid(panels, _columns(count, panel.size), gap=size // 2)
    return _with_colorbar(grid, panels[0].height - panel.height, 0.0, high, size)


def draw_similarity(
    image: Image.Image,
    similarity: np.ndarray,
    box: tuple[int, int, int, int] | None = None,
    *,
    query: tuple[int, int] | None = None,
    alpha: float = 0.6,
) -> Image.Image:
    """Cosine similarity (h, w) to the query over the image, the query patch outlined (`query` (row, col);
    None for the CLS token), with a colour bar."""
    values = _check_map(similarity, "similarity", 2).astype(np.float64)
    panel = heatmap_overlay(image, values, box, alpha=alpha)
    x0, y0, x1, y1 = box if box is not None else (0, 0, panel.width, panel.height)
    size = font_size_for(*panel.size)
    if query is not None:
        rows, cols = values.shape
        row, col = query
        left, right = x0 + col * (x1 - x0) // cols, x0 + (col + 1) * (x1 - x0) // cols - 1
        top, bottom = y0 + row * (y1 - y0) // rows, y0 + (row + 1) * (y1 - y0) // rows - 1
        line = line_width_for(*panel.size)
        draw = ImageDraw.Draw(panel)
        draw.rectangle((left, top, right, bottom), outline=(255, 255, 255), width=line)
        draw.rectangle((left - line, top - line, right + line, bottom + line), outline=(0, 0, 0), width=line)
    target = "the CLS token" if query is None else f"patch ({query[0]}, {query[1]})"
    titled = _titled(panel, f"cosine similarity to {target}", size)
    return _with_colorbar(titled, titled.height - panel.height, float(values.min()), float(values.max()), size)


def cluster_color(label: int) -> tuple[int, int, int]:
    """The colour of cluster `label` (0-based): the region colours, cycling."""
    return REGION_COLORS[label % len(REGION_COLORS)]


def draw_clusters(
    image: Image.Image, labels: np.ndarray, box: tuple[int, int, int, int] | None = None, *, alpha: float = 0.55
) -> Image.Image:
    """Patch clusters (h, w) int as colours over the image, with a legend (cluster, patch count) of the
    clusters that have patches."""
    labels = _check_map(labels, "labels", 2).astype(np.int64)
    image = image.convert("RGB")
    x0, y0, x1, y1 = box if box is not None else (0, 0, image.width, image.height)
    palette = np.array([cluster_color(label) for label in range(int(labels.max()) + 1)], dtype=np.uint8)
    colored = Image.fromarray(palette[labels]).resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST)
    layer = image.copy()
    layer.paste(colored, (x0, y0))
    panel = Image.blend(image, layer, alpha)
    size = font_size_for(*panel.size)
    counts = np.bincount(labels.ravel(), minlength=len(palette))
    entries = [(cluster_color(label), f"{label + 1}: {count} patches") for label, count in enumerate(counts) if count]
    titled = _titled(panel, f"{len(entries)} clusters of the patch features", size)
    legend = _legend_image(entries, size)
    return _row([titled, _key(legend, titled.height, titled.height - panel.height)], gap=size // 2)


def draw_pca(image: Image.Image, colors: np.ndarray, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """The image beside (or above, when wide) its PCA feature map: (h, w, 3) colours in [0, 1], patches
    upsampled over `box`."""
    colors = _check_map(colors, "colors", 3)
    image = image.convert("RGB")
    x0, y0, x1, y1 = box if box is not None else (0, 0, image.width, image.height)
    pixels = (np.clip(colors, 0.0, 1.0) * 255).round().astype(np.uint8)
    panel = image.copy()
    panel.paste(Image.fromarray(pixels).resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST), (x0, y0))
    size = _figure_font(panel.size, 2)
    return _arrange([_titled(image, "image", size), _titled(panel, "first 3 principal components as RGB", size)],
                    gap=size // 2)


def _legend_image(entries: list[tuple], font_size: int) -> Image.Image:
    """A legend of (colour or None, text) entries as an image of its own."""
    layout = _legend_layout(entries, font_size)
    width, height, pad, _, _ = layout
    legend = Image.new("RGB", (width + pad, height + pad), (255, 255, 255))
    _paint_legend(legend, entries, (0, 0), font_size, layout)
    return legend


def draw_sequence(
    image: Image.Image,
    steps: Sequence[dict],
    *,
    panel_area: int = PANEL_AREA,
    dim: float = 0.6,
    alpha: float = 0.55,
) -> Image.Image:
    """The DSeq prediction sequence, one panel of `panel_area` px² per step (`maps.prediction_steps`): the
    context R1..Rk tinted blue, the target R(k+1) vermillion, the rest of the image dimmed; titled
    "step k: R1..Rk -> R(k+1)", with a context/target key. An image with a single region (no step) gives one
    panel saying so, and no key (nothing is drawn in those colours)."""
    image = image.convert("RGB")
    thumbnail, _ = _scaled_to_area(image, None, panel_area)
    size = _figure_font(thumbnail.size, max(1, len(steps)))
    dimmed = Image.blend(thumbnail, Image.new("RGB", thumbnail.size, (255, 255, 255)), dim)
    panels = []
    for step in steps:
        context = _resized_mask(step["context"], thumbnail.size)
        target = _resized_mask(step["target"], thumbnail.size)
        panel = dimmed.copy()
        for mask, color in ((context, CONTEXT_COLOR), (target, TARGET_COLOR)):
            tinted = Image.blend(thumbnail, Image.new("RGB", thumbnail.size, color), alpha)
            panel.paste(tinted, mask=Image.fromarray(mask))
        ranks = step["context_ranks"]
        context_text = f"R{ranks[0]}" if len(ranks) == 1 else f"R{ranks[0]}..R{ranks[-1]}"
        target_text = "background" if step["target_is_background"] else f"R{step['target_rank']}"
        panels.append(_titled(panel, f"step {step['step']}: {context_text} -> {target_text}", size))
    if not panels:
        return _titled(dimmed, "one region only: no prediction step", size)
    grid = _grid(panels, _columns(len(panels), thumbnail.size), gap=size // 2)
    legend = _legend_image([(CONTEXT_COLOR, "context"), (TARGET_COLOR, "target")], size)
    return _row([grid, _key(legend, grid.height, panels[0].height - thumbnail.height)], gap=size // 2)


def _key(legend: Image.Image, height: int, top: int) -> Image.Image:
    """A column holding `legend` at `top`, at least `height` tall."""
    column = Image.new("RGB", (legend.width, max(height, top + legend.height)), (255, 255, 255))
    column.paste(legend, (0, top))
    return column


def _resized_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool -> bool at `size` (W, H), nearest neighbour."""
    mask = np.asarray(mask, dtype=bool)
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    return np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST), dtype=bool)

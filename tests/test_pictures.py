"""Every picture `dseqjepa visualize` draws, looked at on four image shapes made here: a 4,000 x 3,000 photo (as
visualize decodes it, 2,048 px a side), a 600 x 900 portrait, a 200 x 150 thumbnail (scaled up for drawing, as
visualize does) and a 3,000 x 800 panorama (2,048 x 546). Each check reads the picture's pixels or the text
sizes it was drawn with:
- text is at least MIN_FONT px and 1/100 of the picture's longer side (10 px when the picture is shown 1,000 px
  wide: a 4,000 px picture at 25 % zoom), and never more than 1/6 of a panel's shorter side;
- a colour bar is beside its map (to its right, no column shared) and level with it (its ramp spans the map's rows);
- legends sit where they hide no data: a region overlay's in a free corner, the cluster and sequence keys beside
  the panels;
- panels have a readable size, and the picture's layout fits its shape (a panorama's panels one above the other).
"""

import json
import math

import numpy as np
import pytest
from PIL import Image

from dseqjepa_hub.application import drawing
from dseqjepa_hub.application.drawing import (
    CONTEXT_COLOR,
    MIN_FONT,
    MIN_PICTURE_AREA,
    PANEL_AREA,
    TARGET_COLOR,
    cluster_color,
    draw_attention,
    draw_clusters,
    draw_pca,
    draw_regions,
    draw_saliency,
    draw_sequence,
    draw_similarity,
    readable,
    region_color,
)

GREY = (128, 128, 128)  # the test photos: uniform grey, so that every saturated pixel is something drawn
SHAPES = {"photo": (2048, 1536), "portrait": (600, 900), "thumbnail": (200, 150), "panorama": (2048, 546)}
GRID = (12, 16)
KINDS = ("regions", "saliency", "attention", "similarity", "clusters", "sequence", "pca")
HEATMAP_KINDS = ("regions", "saliency", "attention", "similarity")


def photo_of(shape: str) -> Image.Image:
    """The test photo of `shape`, scaled as `dseqjepa visualize` draws it."""
    image, _ = readable(Image.new("RGB", SHAPES[shape], GREY))
    return image


def regions_for(width: int, height: int) -> list[dict]:
    """Region 1 in the left half, region 2 in the top right corner (a legend must go elsewhere), the background."""
    first = np.zeros((height, width), bool)
    first[height // 4 : 3 * height // 4, width // 8 : width // 2] = True
    second = np.zeros((height, width), bool)
    second[: height // 3, 2 * width // 3 :] = True
    return [{"rank": 1, "is_background": False, "score": 0.9, "mask": first},
            {"rank": 2, "is_background": False, "score": 0.6, "mask": second},
            {"rank": 3, "is_background": True, "score": 0.1, "mask": ~(first | second)}]


def draw(kind: str, image: Image.Image) -> Image.Image:
    rng = np.random.default_rng(0)
    values = rng.normal(size=GRID)
    if kind == "regions":
        return draw_regions(image, regions_for(*image.size), show_saliency=True, saliency=values)
    if kind == "saliency":
        return draw_saliency(image, values)
    if kind == "attention":
        return draw_attention(image, rng.random((4, *GRID)))
    if kind == "similarity":
        return draw_similarity(image, values, query=(3, 5))
    if kind == "clusters":
        return draw_clusters(image, np.arange(GRID[0] * GRID[1]).reshape(GRID) % 3 * 2)  # clusters 1, 3, 5; none 2, 4
    if kind == "pca":
        return draw_pca(image, rng.random((*GRID, 3)))
    steps = [{"step": 1, "context": regions_for(*image.size)[0]["mask"], "target": regions_for(*image.size)[1]["mask"],
              "context_ranks": [1], "target_rank": 2, "target_is_background": False}]
    return draw_sequence(image, steps)


def drawn_with_fonts(kind: str, image: Image.Image, monkeypatch) -> tuple[Image.Image, list[int]]:
    """The picture, and the size of every font it was drawn with."""
    sizes, font = [], drawing._font

    def spy(size):
        sizes.append(size)
        return font(size)

    monkeypatch.setattr(drawing, "_font", spy)
    picture = draw(kind, image)
    monkeypatch.undo()
    return picture, sizes


def saturated(pixels: np.ndarray) -> np.ndarray:
    """Pixels with colour (grey, white, black and anti-aliased text are not)."""
    return pixels.max(axis=2) - pixels.min(axis=2) > 20


def ramp_columns(pixels: np.ndarray) -> np.ndarray:
    """Columns of a colour bar's ramp: saturated colour changing from row to row far more often than a map
    of GRID[0] patch rows can (at most once per patch row)."""
    colour = saturated(pixels)
    changes = (np.any(pixels[1:] != pixels[:-1], axis=2) & colour[1:] & colour[:-1]).sum(axis=0)
    return np.nonzero(changes > 3 * GRID[0] + 10)[0]


def picture_font(map_height: int) -> int:
    """At most the font size beside a map this tall (1/30 of its side, at most 1.1/100 of a 3-panel row)."""
    return math.ceil(map_height / 20)


def run_of(mask: np.ndarray, index: int) -> tuple[int, int]:
    """First and last position of the run of True in `mask` that contains `index`."""
    start, stop = index, index
    while start > 0 and mask[start - 1]:
        start -= 1
    while stop < len(mask) - 1 and mask[stop + 1]:
        stop += 1
    return start, stop


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_text_is_readable_at_a_glance(kind, shape, monkeypatch):
    image = photo_of(shape)
    picture, sizes = drawn_with_fonts(kind, image, monkeypatch)
    smallest = max(MIN_FONT, math.ceil(max(picture.size) / 100))
    assert min(sizes) >= smallest, f"{kind} on the {shape}: {min(sizes)} px text in a {picture.size} picture"
    panel_side = min(image.size) if kind not in ("attention", "sequence") else math.sqrt(PANEL_AREA) * 0.5
    assert max(sizes) <= panel_side / 6, f"{kind} on the {shape}: {max(sizes)} px text, panels {panel_side:.0f} px"


@pytest.mark.parametrize("shape", SHAPES)
def test_title_ink_is_as_tall_as_its_font(shape, monkeypatch):
    """The font sizes above are what is drawn: the saliency title's ink in the band above the map."""
    image = photo_of(shape)
    picture, sizes = drawn_with_fonts("saliency", image, monkeypatch)
    pixels = np.asarray(picture).astype(int)
    band = pixels[: picture.height - image.height, : image.width]
    rows = np.nonzero((band < 100).all(axis=2).any(axis=1))[0]
    assert 0.7 * sizes[-1] <= rows.max() - rows.min() + 1 <= 1.3 * sizes[-1]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", HEATMAP_KINDS)
def test_colour_bar_is_beside_its_map_and_level_with_it(kind, shape):
    pixels = np.asarray(draw(kind, photo_of(shape))).astype(int)
    ramp = ramp_columns(pixels)
    assert ramp.size >= MIN_FONT * 0.8, f"{kind} on the {shape}: no colour bar"
    colour = saturated(pixels)
    colour_columns = np.nonzero(colour.any(axis=0))[0]
    maps = np.setdiff1d(colour_columns, ramp)
    assert maps.size and maps.max() < ramp.min() and ramp.max() - ramp.min() + 1 == ramp.size, (
        f"{kind} on the {shape}: the colour bar is not one strip right of the map")
    ramp_rows = np.nonzero(colour[:, ramp[len(ramp) // 2]])[0]
    middle = (ramp_rows.min() + ramp_rows.max()) // 2
    if kind == "attention":  # one bar beside the grid of heads: from the first row's maps to the last row's
        map_rows = np.nonzero(colour[:, maps].any(axis=1))[0]
        map_top, map_bottom = map_rows.min(), map_rows.max()
    else:
        map_top, map_bottom = run_of(colour[:, maps.max()], middle)
    frame = 1 + round(max(picture_font(map_bottom - map_top), MIN_FONT) / 16)  # the bar's frame covers its ends
    assert abs(ramp_rows.min() - map_top) <= frame and abs(ramp_rows.max() - map_bottom) <= frame, (
        f"{kind} on the {shape}: ramp rows {ramp_rows.min()}..{ramp_rows.max()}, map rows {map_top}..{map_bottom}")


@pytest.mark.parametrize("shape", SHAPES)
def test_the_regions_legend_hides_no_region(shape):
    image = photo_of(shape)
    width, height = image.size
    regions = regions_for(width, height)
    pixels = np.asarray(draw_regions(image, regions)).astype(int)
    legend_fill = np.all(np.abs(pixels - 235) <= 1, axis=2)  # white at 215/255 over the grey
    ys, xs = np.nonzero(legend_fill)
    assert ys.size, f"no legend on the {shape}"
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    for region in regions[:2]:
        assert not region["mask"][box].any(), f"the legend covers region {region['rank']} on the {shape}"
    swatches = [np.all(pixels[box] == region_color(rank), axis=2).sum() for rank in (1, 2)]
    assert min(swatches) > 0, "a swatch per region drawn"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["clusters", "sequence"])
def test_keys_are_beside_the_panels_and_list_what_is_drawn(kind, shape):
    picture = draw(kind, photo_of(shape))
    pixels = np.asarray(picture).astype(int)
    colours = [cluster_color(label) for label in (0, 2, 4)] if kind == "clusters" else [CONTEXT_COLOR, TARGET_COLOR]
    swatch = np.zeros(pixels.shape[:2], bool)
    for colour in colours:
        found = np.all(pixels == colour, axis=2)
        assert found.any(), f"{kind} on the {shape}: no swatch of {colour}"
        swatch |= found
    drawn = saturated(pixels) & ~swatch
    assert np.nonzero(drawn.any(axis=0))[0].max() < np.nonzero(swatch.any(axis=0))[0].min()
    if kind == "clusters":  # no key for the clusters without a patch (the map's colours are blends, never exact)
        assert not any(np.all(pixels == cluster_color(label), axis=2).any() for label in (1, 3))


@pytest.mark.parametrize("shape", SHAPES)
def test_panels_have_a_readable_size_and_the_layout_fits_the_shape(shape):
    image = photo_of(shape)
    assert image.width * image.height >= 0.99 * MIN_PICTURE_AREA
    for kind in ("attention", "sequence"):
        picture = draw(kind, image)
        panel_height = math.sqrt(PANEL_AREA * image.height / image.width)
        assert picture.height >= 0.95 * panel_height, f"{kind} panels on the {shape}"
    regions = draw("regions", image)
    wide = image.width > 2 * image.height
    if wide:  # the overlay above the heat map
        assert regions.height > 2 * image.height and regions.width < 1.3 * image.width
    else:  # side by side
        assert regions.width > 2 * image.width and regions.height < 1.1 * image.height
    aspect = regions.width / regions.height
    assert 0.5 <= aspect <= 4, f"regions picture {regions.size} on the {shape}"


def test_a_title_wider_than_its_panel_is_never_clipped_nor_tiny(monkeypatch):
    """A tall narrow strip: the similarity title is set at MIN_FONT px and the canvas widened to hold it."""
    image = photo_of("portrait").resize((60, 1200))
    picture, sizes = drawn_with_fonts("similarity", image, monkeypatch)
    assert min(sizes) >= MIN_FONT
    pixels = np.asarray(picture).astype(int)
    band = pixels[: picture.height - image.height]
    ink = np.nonzero((band < 100).all(axis=2).any(axis=0))[0]
    assert ink.min() > 0 and ink.max() - ink.min() > image.width  # the whole title, wider than the map


def save_thumbnail(path) -> None:
    """A 200 x 150 picture: a grey ramp with a red block."""
    ramp = np.linspace(0, 255, 200)[None, :, None] * np.ones((150, 1, 3))
    ramp[40:110, 60:140] = (230, 40, 20)
    Image.fromarray(ramp.astype(np.uint8)).save(path)


def test_regions_draws_a_thumbnail_scaled_up_and_keeps_its_own_size_in_the_json(tmp_path, monkeypatch):
    """`dseqjepa regions` on a 200 x 150 thumbnail, as `visualize`: the overlay (and its colour bar) at
    MIN_PICTURE_AREA, the JSON with the thumbnail's own size, boxes and masks."""
    from dseqjepa_cli import main
    from dseqjepa_hub.application.region_json import regions_from_json

    monkeypatch.chdir(tmp_path)
    save_thumbnail(tmp_path / "thumb.png")
    assert main(["regions", "thumb.png", "--out", "out", "-q", "--json", "--format", "png", "--show-saliency",
                 "--min-region-fraction", "0.02"]) == 0
    record = json.loads((tmp_path / "out" / "thumb.regions.json").read_text())
    assert record["size"] == [150, 200]
    regions = regions_from_json(record["regions"])
    assert [region["mask"].shape for region in regions] == [(150, 200)] * len(regions) and len(regions) > 1
    for region in record["regions"]:
        x0, y0, x1, y1 = region["box"]
        assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 150, region
    with Image.open(tmp_path / "out" / "thumb.regions.png") as overlay:
        assert overlay.height >= 0.99 * math.sqrt(MIN_PICTURE_AREA * 150 / 200)  # the photo's panel, scaled up
        assert overlay.width > overlay.height * 200 / 150  # and the colour bar beside it


def test_visualize_draws_a_thumbnail_scaled_up_and_indexes_it_as_it_is(tmp_path, monkeypatch, capsys):
    """`dseqjepa visualize` on a 200 x 150 thumbnail: the picture is drawn at MIN_PICTURE_AREA, the index keeps
    the thumbnail's own size and region boxes."""
    from dseqjepa_cli import main

    monkeypatch.chdir(tmp_path)
    save_thumbnail(tmp_path / "thumb.png")
    for kind in ("regions", "sequence"):
        assert main(["visualize", "thumb.png", "--kind", kind, "--model", "default", "--out", "out", "-q",
                     "--min-region-fraction", "0.02"]) == 0
        tag = kind if kind == "sequence" else "regions"
        [entry] = json.loads((tmp_path / "out" / f"{tag}-min0.02.json").read_text())["images"]
        assert entry["size"] == [150, 200]
        for region in entry["regions"]:
            x0, y0, x1, y1 = region["box"]
            assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 150, region
        with Image.open(tmp_path / "out" / f"thumb.{tag}-min0.02.png") as picture:
            assert picture.width * picture.height >= 1.5 * MIN_PICTURE_AREA  # two panels, or a panel and its key

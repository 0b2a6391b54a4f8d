"""The release's maps for any model, on synthetic images whose answer is known: CLS attention, patch
similarity, clusters, the prediction sequence; their pictures (legends, colour bars, outlines); and
`dseqjepa visualize`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAModel, extract_regions, region_dicts
from dseqjepa_hub.application.drawing import (
    _HEATMAP_STOPS,
    CONTEXT_COLOR,
    NO_FOREGROUND,
    TARGET_COLOR,
    cluster_color,
    colorbar,
    contrast_color,
    draw_attention,
    draw_clusters,
    draw_regions,
    draw_saliency,
    draw_sequence,
    draw_similarity,
    region_color,
)
from dseqjepa_hub.application.feature_maps import (
    MapError,
    cls_attention,
    cluster_patches,
    kmeans,
    layer_features,
    patch_similarity,
    prediction_steps,
    spectral_embedding,
)
from dseqjepa_options import CLUSTER_METHODS, VISUALIZE_KINDS
from dseqjepa_train.sequences import region_sequence

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
RED, GREEN, BLUE = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
BRIGHTEST, DARKEST = tuple(_HEATMAP_STOPS[-1].astype(int)), tuple(_HEATMAP_STOPS[0].astype(int))


def colour_model() -> DSeqJEPAModel:
    """A model whose patch features are the patch colours: identity blocks (all block weights zero), a patch
    embedding that puts 50 x the mean of each normalised colour channel in channels 0-2 (the sin-cos
    positions, at most 1, are small beside it), a plain final LayerNorm."""
    config = DSeqJEPAConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64)
    model = DSeqJEPAModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("blocks.") and "norm" not in name:
                param.zero_()
        weight = torch.zeros_like(model.patch_embed.proj.weight)
        for channel in range(3):
            weight[channel, channel] = 50 / 64
        model.patch_embed.proj.weight.copy_(weight)
        model.patch_embed.proj.bias.zero_()
        model.norm.weight.fill_(1.0)
        model.norm.bias.zero_()
        model.cls_token.zero_()
    return model


def attention_model() -> DSeqJEPAModel:
    """The colour model whose last block's CLS query looks for red (head 1) and for green (head 2). The CLS
    token is e_5, which no patch has: each head's query is 2 x channel 5 of the normalised token (large
    for CLS, about 0 for patches, which so attend uniformly), each key of head 1 (2) the normalised red
    (green) channel."""
    model = colour_model()
    with torch.no_grad():
        model.cls_token[0, 0, 5] = 1.0
        qkv = model.blocks[1].attn.qkv
        for head, channel in ((0, 0), (1, 1)):
            qkv.weight[head * 16, 5] = 2.0
            qkv.weight[32 + head * 16, channel] = 1.0
    return model


def pixels(grid_colours) -> torch.Tensor:
    """(h, w, 3) colours in [0, 1], one per 8 px patch -> normalised pixel values (1, 3, 8h, 8w)."""
    image = np.kron(np.asarray(grid_colours, dtype=np.float64), np.ones((8, 8, 1)))
    return torch.from_numpy(((image - MEAN) / STD).transpose(2, 0, 1)[None]).float()


def grid(height, width, colour=BLUE):
    return [[colour] * width for _ in range(height)]


# --- maps ------------------------------------------------------------------------------------------------


def test_cls_attention_finds_the_patch_the_weights_look_for():
    colours = grid(4, 4)
    colours[2][1], colours[0][3] = RED, GREEN
    attention = cls_attention(attention_model(), pixels(colours))  # (1, heads, h, w)
    assert attention.shape == (1, 2, 4, 4)
    assert attention[0, 0, 2, 1] > 0.999 and attention[0, 1, 0, 3] > 0.999  # red for head 1, green for head 2
    mean = attention[0].mean(0)
    assert mean[2, 1] == pytest.approx(0.5, abs=1e-3) and mean[0, 3] == pytest.approx(0.5, abs=1e-3)
    # Weights that attend to nothing in particular: every token, CLS included, gets 1 / 17.
    uniform = cls_attention(colour_model(), pixels(colours))
    torch.testing.assert_close(uniform, torch.full((1, 2, 4, 4), 1 / 17))


def test_cls_attention_leaves_the_attention_implementation_as_it_was():
    model = attention_model()
    assert model.config._attn_implementation == "sdpa"
    cls_attention(model, pixels(grid(4, 4)), layer=0)
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(MapError, match="layer 2: the model has 2 blocks"):
        cls_attention(model, pixels(grid(4, 4)), layer=2)


def test_patch_similarity_is_maximal_at_the_query_and_its_twin():
    colours = grid(4, 5)
    colours[1][2] = colours[3][0] = RED
    model = colour_model()
    similarity = patch_similarity(model, pixels(colours), (1, 2))[0]
    assert similarity.shape == (4, 5)
    assert similarity[1, 2] == pytest.approx(1.0, abs=1e-6) and similarity[3, 0] > 0.99
    others = np.ones((4, 5), dtype=bool)
    others[1, 2] = others[3, 0] = False
    assert similarity[torch.from_numpy(others)].max() < 0.0  # blue against red
    # The CLS query: a CLS token that is the red patch's embedding lights up the red patches.
    with torch.no_grad():
        model.cls_token.copy_(model.embed(pixels(colours))[0][0, 1 + 1 * 5 + 2])
    cls = patch_similarity(model, pixels(colours), "cls")[0]
    assert set(map(tuple, torch.nonzero(cls > 0.99).tolist())) == {(1, 2), (3, 0)}
    with pytest.raises(MapError, match=r"query patch \(4, 0\) is off the 4x5 patch grid"):
        patch_similarity(model, pixels(colours), (4, 0))


@pytest.mark.parametrize("method", CLUSTER_METHODS)  # every value `visualize --method` offers
def test_clusters_are_the_colour_bands_batched_and_seeded(method):
    bands = [[RED] * 6] * 2 + [[GREEN] * 6] * 2 + [[BLUE] * 6] * 2  # 6 x 6 grid: 48 px, not the native 32
    columns = [[BLUE, BLUE, RED, RED, GREEN, GREEN] for _ in range(6)]
    batch = torch.cat([pixels(bands), pixels(columns)])
    labels = cluster_patches(colour_model(), batch, 3, method=method, seed=1)
    assert labels.shape == (2, 6, 6)
    expected_rows = torch.tensor([0, 0, 1, 1, 2, 2])[:, None].expand(6, 6)  # numbered by first appearance
    assert torch.equal(labels[0], expected_rows) and torch.equal(labels[1], expected_rows.T)
    assert torch.equal(cluster_patches(colour_model(), batch, 3, method=method, seed=1), labels)


def test_cluster_methods_on_a_random_model_are_kmeans_of_their_embeddings():
    torch.manual_seed(0)
    model = DSeqJEPAModel(DSeqJEPAConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64)).eval()
    batch = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    features, _ = layer_features(model, batch, -1)
    unit = torch.nn.functional.normalize(features.reshape(2, 36, 32), dim=-1)
    kmeans_labels = cluster_patches(model, batch, 4, method="kmeans", seed=5)
    spectral_labels = cluster_patches(model, batch, 4, method="spectral", seed=5)
    assert torch.equal(kmeans_labels.reshape(2, 36), kmeans(unit, 4, seed=5)[0])
    assert torch.equal(spectral_labels.reshape(2, 36), kmeans(spectral_embedding(unit, 4), 4, seed=5)[0])
    assert not torch.equal(kmeans_labels, spectral_labels)


def test_kmeans_against_the_known_partition_and_spectral_against_numpy():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([centre + torch.randn(20, 2, generator=generator) for centre in centres])[None]
    labels, found = kmeans(points, 3, seed=3)
    assert torch.equal(labels[0], torch.arange(3).repeat_interleave(20))
    torch.testing.assert_close(found[0], torch.stack([points[0, i * 20 : (i + 1) * 20].mean(0) for i in range(3)]))
    with pytest.raises(MapError, match="61 clusters for 60 points"):
        kmeans(points, 61)
    # Spectral embedding: rows of the top eigenvectors of D^-1/2 W D^-1/2, unit length; compared through
    # their Gram matrix, which does not depend on the eigenvectors' signs.
    features = torch.randn(2, 30, 8, generator=generator)
    embedding = spectral_embedding(features, 4).double()
    for index in range(2):
        unit = features[index].double().numpy()
        unit /= np.linalg.norm(unit, axis=1, keepdims=True)
        affinity = np.clip(unit @ unit.T, 0, None)
        np.fill_diagonal(affinity, 0)
        scale = 1 / np.sqrt(affinity.sum(1))
        _, vectors = np.linalg.eigh(scale[:, None] * affinity * scale[None, :])
        rows = vectors[:, -4:] / np.linalg.norm(vectors[:, -4:], axis=1, keepdims=True)
        np.testing.assert_allclose((embedding[index] @ embedding[index].T).numpy(), rows @ rows.T, atol=1e-5)


def test_prediction_steps_are_the_training_sequence():
    """Against the region sequence that pretraining builds (dseqjepa_train.sequences), for the steps whose
    target is not empty (the others add nothing to the loss and are not drawn)."""
    saliency = torch.zeros(2, 8, 8)
    saliency[0, :3, :3] = 9.0
    saliency[0, 5:, 5:] = 7.0
    saliency[0, :3, 5:] = 5.0
    saliency[1, 2:6, 2:6] = 3.0  # one blob: R1 then the background
    ranked = extract_regions(saliency, min_region_fraction=0.1, num_regions=5)
    contexts, targets = region_sequence(ranked.masks)
    for index, expected_steps in ((0, 3), (1, 1)):
        regions = region_dicts(masks=ranked.masks[index], scores=ranked.scores[index], valid=ranked.valid[index],
                               original_size=(8, 8))
        steps = prediction_steps(regions)
        assert len(steps) == expected_steps
        reference = [(c.numpy(), t.numpy()) for c, t in zip(contexts[index], targets[index]) if t.any()]
        assert len(reference) == len(steps)
        for step, (context, target) in zip(steps, reference):
            assert np.array_equal(step["context"], context) and np.array_equal(step["target"], target)
        assert steps[-1]["target_is_background"] and steps[0]["context_ranks"] == [1]
        assert [step["target_rank"] for step in steps] == list(range(2, expected_steps + 2))
    assert prediction_steps([regions[-1]]) == []


# --- pictures ---------------------------------------------------------------------------------------------


def blend(a, b, alpha):
    return (1 - alpha) * np.asarray(a, float) + alpha * np.asarray(b, float)


def near(pixels_, expected, tolerance=1.0):
    """Pixels (..., 3) within `tolerance` of `expected` in every channel (PIL rounds blends its own way)."""
    return np.all(np.abs(np.asarray(pixels_, float) - np.asarray(expected, float)) <= tolerance, axis=-1)


def test_colorbar_runs_from_the_darkest_to_the_brightest():
    strip = np.asarray(colorbar(200, -1.5, 2.0, 12)).astype(int)
    ramp_column = strip[:, 6]  # inside the bar (pad 3, bar width 12)
    rows = [row for row in range(200) if tuple(ramp_column[row]) in (BRIGHTEST, DARKEST)]
    top = min(rows)
    assert tuple(ramp_column[top]) == BRIGHTEST and tuple(ramp_column[max(rows)]) == DARKEST
    assert (strip[:, 30:] < 100).all(axis=2).any()  # the value labels: dark text beside the bar


def test_saliency_picture_puts_the_brightest_colour_on_the_most_salient_patch():
    image = Image.new("RGB", (320, 240), (128, 128, 128))
    saliency = np.zeros((3, 4))
    saliency[1, 2] = 5.0
    picture = draw_saliency(image, saliency, alpha=0.6)
    pixels_ = np.asarray(picture).astype(int)
    title = picture.height - 240
    assert near(pixels_[title + 100, 200], blend((128,) * 3, BRIGHTEST, 0.6))  # patch (1, 2): x 160..239
    assert near(pixels_[title + 25, 25], blend((128,) * 3, DARKEST, 0.6))
    assert picture.width > 320  # the colour bar beside it


def test_attention_picture_shows_the_mean_and_every_head():
    image = Image.new("RGB", (40, 40), (128, 128, 128))
    maps = np.zeros((3, 5, 5))
    maps[0, 0, 0] = maps[1, 4, 4] = maps[2, 2, 2] = 1.0
    picture = draw_attention(image, maps, panel_area=40 * 40)
    assert picture.width > 2 * 40 and picture.height > 2 * 40  # 4 panels in a 2 x 2 grid, and a colour bar
    pixels_ = np.asarray(picture).astype(int)
    assert near(pixels_, blend((128,) * 3, BRIGHTEST, 0.6)).sum() >= 3 * 64  # each head's peak patch


def test_similarity_picture_outlines_the_query_patch():
    image = Image.new("RGB", (320, 320), (128, 128, 128))
    values = np.linspace(-1, 1, 25).reshape(5, 5)
    picture = draw_similarity(image, values, query=(2, 3))
    pixels_ = np.asarray(picture).astype(int)
    title = picture.height - 320
    assert tuple(pixels_[title + 128, 192]) == (255, 255, 255)  # the patch's top-left pixel: white inner line
    assert tuple(pixels_[title + 127, 191]) == (0, 0, 0)  # just outside: black outer line


def test_clusters_picture_colours_each_cluster():
    image = Image.new("RGB", (256, 256), (128, 128, 128))
    labels = np.repeat([[0, 0, 1, 2]], 4, axis=0)
    picture = draw_clusters(image, labels)
    pixels_ = np.asarray(picture).astype(int)
    top = next(y for y in range(picture.height) if near(pixels_[y, 4], blend((128,) * 3, cluster_color(0), 0.55)))
    assert top > 0  # below the title
    for column, label in ((32, 0), (160, 1), (224, 2)):
        assert near(pixels_[top : top + 256, column], blend((128,) * 3, cluster_color(label), 0.55)).all()
    for label in range(3):  # legend swatches
        assert np.all(pixels_[:, 256:] == cluster_color(label), axis=2).any()


def test_sequence_picture_tints_context_and_target_of_every_step():
    image = Image.new("RGB", (320, 320), (128, 128, 128))
    first, second = np.zeros((320, 320), bool), np.zeros((320, 320), bool)
    first[:80, :80] = True
    second[240:, 240:] = True
    regions = [
        {"rank": 1, "is_background": False, "mask": first},
        {"rank": 2, "is_background": False, "mask": second},
        {"rank": 3, "is_background": True, "mask": ~(first | second)},
    ]
    steps = prediction_steps(regions)
    picture = draw_sequence(image, steps, panel_area=320 * 320)
    pixels_ = np.asarray(picture).astype(int)
    top = picture.height - 320
    context, target = blend((128,) * 3, CONTEXT_COLOR, 0.55), blend((128,) * 3, TARGET_COLOR, 0.55)
    dimmed = blend((128,) * 3, (255, 255, 255), 0.6)
    assert near(pixels_[top + 40, 40], context) and near(pixels_[top + 280, 280], target)  # step 1: R1 -> R2
    assert near(pixels_[top + 160, 160], dimmed)
    right = [x for x in range(320, picture.width) if near(pixels_[top + 40, x], context)]
    assert right, "step 2 shows R1 in its context"
    x = right[0]  # left edge of the second panel
    assert near(pixels_[top + 280, x + 280], context) and near(pixels_[top + 160, x + 160], target)  # R1 u R2 -> bg
    single = draw_sequence(image, [], panel_area=320 * 320)
    assert single.width == 320 and single.height > 320  # one dimmed panel, titled that there is no step; no key
    shown = np.asarray(single).reshape(-1, 3)
    assert not any(np.all(shown == color, axis=1).any() for color in (CONTEXT_COLOR, TARGET_COLOR))  # the key's swatches


def test_regions_overlay_legend_outline_and_no_foreground_note():
    width, height = 400, 300
    image = Image.new("RGB", (width, height), (128, 128, 128))
    first = np.zeros((height, width), bool)
    first[100:200, 40:160] = True
    regions = [{"rank": 1, "is_background": False, "score": 0.91, "mask": first},
               {"rank": 2, "is_background": True, "score": 0.1, "mask": ~first}]
    pixels_ = np.asarray(draw_regions(image, regions)).astype(int)
    color = region_color(1)
    # Legend in the upper right corner (nothing there to hide): a swatch of the region's colour, dark text.
    corner = pixels_[:60, width - 120 :]
    assert np.all(corner == color, axis=2).sum() > 50 and (corner < 60).all(axis=2).sum() > 20
    # The outline: the region's colour on its edge, the contrasting line just outside it.
    assert tuple(pixels_[100, 100]) == color and tuple(pixels_[99, 100]) == contrast_color(color)
    assert tuple(pixels_[height - 1, 0]) == (128, 128, 128)
    plain = np.asarray(draw_regions(image, regions, legend=False)).astype(int)
    assert (plain[:60, width - 120 :] == 128).all()
    # Only the background: the image, and the legend says so.
    note = np.asarray(draw_regions(image, regions[1:])).astype(int)
    changed = np.any(note != 128, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.max() < 60 and xs.min() > width - 200 and changed.sum() > 100
    assert NO_FOREGROUND == "no foreground region"


def test_saliency_beside_the_overlay_carries_a_colour_bar_beside_the_map():
    """overlay | heat map | colour bar: the map is whole (its brightest cells included), the bar never over it."""
    from dseqjepa_hub.application.drawing import saliency_heatmap

    image = Image.new("RGB", (300, 240), (128, 128, 128))
    saliency = np.arange(12, dtype=float)[::-1].reshape(3, 4)  # the largest value in the upper left patch
    canvas = np.asarray(draw_regions(image, [], show_saliency=True, saliency=saliency)).astype(int)
    gap = next(x for x in range(300, canvas.shape[1]) if not (canvas[:, x] == 255).all()) - 300
    heatmap = canvas[:, 300 + gap : 600 + gap]
    assert np.array_equal(heatmap, np.asarray(saliency_heatmap(saliency, (300, 240))).astype(int))
    assert np.all(heatmap[:80, :75] == BRIGHTEST, axis=2).all() and np.all(heatmap[:, -75:] != BRIGHTEST, axis=2).all()
    bar = canvas[:, 600 + gap :]  # the whole ramp, and its labels
    assert bar.shape[1] > 0
    assert np.all(bar == BRIGHTEST, axis=2).any() and np.all(bar == DARKEST, axis=2).any()
    assert (bar < 40).all(axis=2).sum() > 20


# --- the command --------------------------------------------------------------------------------------------


EXAMPLE = "examples/images/coffee.jpg"


KIND_ARGUMENTS = {"regions": [], "saliency": [], "attention": ["--layer", "-2"], "similarity": ["--query", "3,4"],
                  "clusters": ["--clusters", "3", "--method", "spectral"], "sequence": ["--min-region-fraction", "0.05"],
                  "pca": ["--foreground", "--layer", "-2"]}
KIND_TAGS = {"regions": "regions", "saliency": "saliency", "attention": "attention-layer-2",  # the options in the names
             "similarity": "similarity-query3,4", "clusters": "clusters-k3-spectral", "sequence": "sequence-min0.05",
             "pca": "pca-layer-2-foreground"}


@pytest.mark.parametrize("kind", VISUALIZE_KINDS)  # every value `visualize --kind` offers
def test_visualize_command_writes_a_picture_and_an_index(kind, tmp_path, monkeypatch, capsys):
    from dseqjepa_cli import main

    extra = KIND_ARGUMENTS[kind]

    monkeypatch.chdir(default_model_dir_parent())
    out = tmp_path / "out"
    assert main(["visualize", EXAMPLE, "--kind", kind, "--out", str(out), *extra]) == 0
    tag = KIND_TAGS[kind]
    assert f"wrote 1 {kind} picture(s) and {tag}.json to {out}" in capsys.readouterr().out
    with Image.open(out / f"coffee.{tag}.png") as picture:
        assert picture.format == "PNG" and picture.width >= 64
    index = json.loads((out / f"{tag}.json").read_text())
    [entry] = index["images"]
    assert index["kind"] == kind and entry["image"] == EXAMPLE and entry["output"] == str(out / f"coffee.{tag}.png")
    if kind == "attention":
        assert entry["heads"] == 4 and entry["layer"] == -2
    if kind == "similarity":
        assert entry["query"] == [3, 4]
    if kind == "clusters":
        assert sum(entry["cluster_sizes"]) == 144 and len(entry["cluster_sizes"]) == 3
    if kind == "sequence":
        assert len(entry["steps"]) == len(entry["regions"]) - 1 and entry["steps"][0]["context_ranks"] == [1]


def test_runs_with_other_options_never_overwrite_each_other(tmp_path, monkeypatch, capsys):
    """--query 5,6 and --query cls (and other layers, cluster counts, fractions) write files of their own."""
    from dseqjepa_cli import main

    monkeypatch.chdir(default_model_dir_parent())
    out = tmp_path / "out"
    runs = [["similarity", "--query", "5,6"], ["similarity", "--query", "cls"], ["similarity", "--query", "cls",
            "--layer", "2"], ["clusters"], ["clusters", "--clusters", "3"], ["regions"], ["regions", "--num-regions", "3"]]
    for kind, *options in runs:
        assert main(["visualize", EXAMPLE, "--kind", kind, "--out", str(out), *options]) == 0
    pictures = sorted(path.name for path in out.glob("*.png"))
    assert pictures == sorted(["coffee.similarity-query5,6.png", "coffee.similarity.png", "coffee.similarity-layer2.png",
                               "coffee.clusters.png", "coffee.clusters-k3.png", "coffee.regions.png",
                               "coffee.regions-regions3.png"])
    assert len({path.read_bytes() for path in out.glob("coffee.similarity*.png")}) == 3
    assert len(list(out.glob("*.json"))) == len(runs)


def test_visualize_command_says_when_there_is_no_foreground_region(tmp_path, monkeypatch, capsys):
    from dseqjepa_cli import main

    monkeypatch.chdir(default_model_dir_parent())
    out = tmp_path / "out"
    assert main(["visualize", EXAMPLE, "--kind", "regions", "--out", str(out), "--min-region-fraction", "1"]) == 0
    assert f"{EXAMPLE}: no foreground region, only the background" in capsys.readouterr().out
    [entry] = json.loads((out / "regions-min1.json").read_text())["images"]
    assert entry["no_foreground_region"] is True and [r["is_background"] for r in entry["regions"]] == [True]
    assert main(["visualize", EXAMPLE, "--kind", "similarity", "--query", "99,0", "--out", str(out)]) == 1
    assert "query patch (99, 0) is off the 12x12 patch grid" in capsys.readouterr().err


def default_model_dir_parent():
    from dseqjepa_hub import default_model_path

    return default_model_path().parents[1]  # the repository, where examples/ lives

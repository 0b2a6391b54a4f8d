"""The saliency-ranking pipeline (in process and as remote code from a saved folder), the
`dseqjepa regions` and `dseqjepa embed` commands (torchrun included), on scikit-image photos
with a tiny random model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dseqjepa_cli import main
from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAImageProcessor, DSeqJEPAModel, SaliencyRankingPipeline
from dseqjepa_hub.application.drawing import readable
from dseqjepa_hub.application.loading import ModelLoadError, load_model
from dseqjepa_hub.application.region_json import mask_to_rle, regions_from_json, rle_to_mask
from dseqjepa_hub.application.regions_job import rank_regions_in_files
from dseqjepa_hub.image_io import load_image
from dseqjepa_hub.pipeline_saliency_ranking import save_pretrained_with_pipeline
from dseqjepa_hub.regions import extract_regions

skimage_data = pytest.importorskip("skimage.data")

MIN_FRACTION = 0.03  # a random model's saliency is noisy: a low area filter keeps several regions
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(saved folder, model, processor): 64 px input, 8 px patches (8x8 grid), width 32, 2 blocks."""
    config = DSeqJEPAConfig(
        image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    model = DSeqJEPAModel(config).eval()
    processor = DSeqJEPAImageProcessor.from_model_config(config)
    folder = tmp_path_factory.mktemp("tiny_model")
    save_pretrained_with_pipeline(model, processor, folder)
    return folder, model, processor


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three real photos of different shapes: astronaut 512x512, chelsea 451x300, coffee 600x400."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name, suffix in (("astronaut", ".png"), ("chelsea", ".jpg"), ("coffee", ".png")):
        path = folder / f"{name}{suffix}"
        Image.fromarray(getattr(skimage_data, name)()).save(path)
        paths.append(path)
    return paths


def reference_outputs(model, processor, image: Image.Image):
    """An independent forward: saliency (h, w) and patch features (N, D) of one image."""
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values, output_saliency=True)
    return outputs.saliency[0], outputs.last_hidden_state[0, 1:].numpy(), outputs.pooler_output[0].numpy()


def check_region_dicts(regions, image_size, grid=(8, 8)):
    """Contract of docs/ARCHITECTURE.md for one image's regions, with a direct resize (crop box = image)."""
    width, height = image_size
    ranks = [region["rank"] for region in regions]
    assert ranks == list(range(1, len(regions) + 1))
    assert [region["is_background"] for region in regions] == [False] * (len(regions) - 1) + [True]
    foreground_scores = [region["score"] for region in regions[:-1]]
    assert foreground_scores == sorted(foreground_scores, reverse=True)
    rows = np.arange(height) * grid[0] // height  # nearest patch of each pixel
    cols = np.arange(width) * grid[1] // width
    union = np.zeros((height, width), dtype=int)
    for region in regions:
        mask, patch_mask = region["mask"], region["patch_mask"]
        assert mask.shape == (height, width) and mask.dtype == bool
        assert patch_mask.shape == grid and patch_mask.dtype == bool
        assert np.array_equal(mask, patch_mask[np.ix_(rows, cols)])
        ys, xs = np.nonzero(mask)
        assert region["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        x0, y0, x1, y1 = region["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert region["area_fraction"] == pytest.approx(patch_mask.mean())
        union += mask
    assert (union == 1).all()  # the regions partition the image


def test_pipeline_regions_on_photos(tiny, photos):
    folder, model, processor = tiny
    pipe = SaliencyRankingPipeline(model=model, image_processor=processor, device="cpu")
    for path in photos:
        image = Image.open(path).convert("RGB")
        regions = pipe(
            str(path), min_region_fraction=MIN_FRACTION, return_embeddings=True, return_saliency=True
        )
        check_region_dicts(regions, image.size)
        assert len(regions) >= 2  # at least one component and the background

        saliency, patch_features, _ = reference_outputs(model, processor, image)
        torch.testing.assert_close(torch.from_numpy(regions[0]["saliency"]), saliency, rtol=1e-5, atol=1e-6)
        expected = extract_regions(saliency[None], min_region_fraction=MIN_FRACTION, num_regions=5)
        expected_masks = [m.numpy() for m, v in zip(expected.masks[0], expected.valid[0]) if v]
        assert all(np.array_equal(r["patch_mask"], m) for r, m in zip(regions, expected_masks, strict=True))
        for region in regions:
            mean_feature = patch_features[region["patch_mask"].ravel()].mean(axis=0)
            np.testing.assert_allclose(region["embedding"], mean_feature, rtol=1e-5, atol=1e-6)


def test_pipeline_inputs_parameters_and_batching(tiny, photos):
    _, model, processor = tiny
    pipe = SaliencyRankingPipeline(model=model, image_processor=processor, device="cpu")
    image = Image.open(photos[1]).convert("RGB")
    array = np.asarray(image)
    single = pipe(image, min_region_fraction=MIN_FRACTION)
    assert isinstance(single, list) and isinstance(single[0], dict)
    for same in (pipe(photos[1], min_region_fraction=MIN_FRACTION), pipe(array, min_region_fraction=MIN_FRACTION)):
        assert [r["box"] for r in same] == [r["box"] for r in single]

    assert "embedding" not in single[0] and "saliency" not in single[0]

    # A batch of three in forward passes of two equals one at a time.
    images = [Image.open(path).convert("RGB") for path in photos]
    batched = pipe(images, batch_size=2, min_region_fraction=MIN_FRACTION)
    assert len(batched) == 3
    for image, regions in zip(images, batched):
        alone = pipe(image, min_region_fraction=MIN_FRACTION)
        assert [r["rank"] for r in regions] == [r["rank"] for r in alone]
        assert all(np.array_equal(a["mask"], b["mask"]) for a, b in zip(regions, alone))
        np.testing.assert_allclose([r["score"] for r in regions], [r["score"] for r in alone], rtol=1e-5)

    grey_float = np.asarray(image.convert("L"), dtype=np.float32) / 255
    check_region_dicts(pipe(grey_float, min_region_fraction=MIN_FRACTION), image.size)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        pipe(np.zeros((3, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="float one in \\[0, 1\\]"):
        pipe(np.full((8, 8, 3), 300.0))


# A designed 8x8 saliency map: three components of known areas and scores on a zero background.
#   medium: rows 5-7, cols 0-3, 12 patches (0.1875), saliency 1.0
#   small:  rows 5-7, cols 5-7,  9 patches (0.1406), saliency 0.9  (under the config's 0.15)
#   large:  rows 0-3, cols 0-6, 28 patches (0.4375), saliency 0.8  (the only one over 0.4)
DESIGNED_SALIENCY = torch.zeros(8, 8)
DESIGNED_SALIENCY[5:8, 0:4] = 1.0
DESIGNED_SALIENCY[5:8, 5:8] = 0.9
DESIGNED_SALIENCY[0:4, 0:7] = 0.8
MEDIUM, SMALL, LARGE = [(DESIGNED_SALIENCY == value).numpy() for value in (1.0, 0.9, 0.8)]


class DesignedSaliencyModel(DSeqJEPAModel):
    """The tiny model with its saliency replaced by DESIGNED_SALIENCY (features left as they are)."""

    def forward(self, *args, **kwargs):
        outputs = super().forward(*args, **kwargs)
        if outputs.saliency is not None:
            outputs.saliency = DESIGNED_SALIENCY.to(outputs.saliency).expand_as(outputs.saliency).clone()
        return outputs


def test_pipeline_parameters_change_the_ranking():
    """Each option on a map where it changes the answer, so that an ignored option fails the test."""
    config = DSeqJEPAConfig(
        image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    assert (config.min_region_fraction, config.num_regions) == (0.15, 5)  # the defaults the expectations rely on
    torch.manual_seed(0)
    pipe = SaliencyRankingPipeline(
        model=DesignedSaliencyModel(config).eval(),
        image_processor=DSeqJEPAImageProcessor.from_model_config(config),
        device="cpu",
    )
    image = Image.new("RGB", (80, 64))  # 10 x 8 px per patch

    def patch_masks(regions):
        return [region["patch_mask"] for region in regions]

    def same_masks(regions, expected):
        return len(regions) == len(expected) and all(np.array_equal(a, b) for a, b in zip(regions, expected))

    # Config defaults (0.15, 5 slots): the small component is dropped, medium ranks before large.
    default = pipe(image)
    check_region_dicts(default, image.size)
    assert same_masks(patch_masks(default), [MEDIUM, LARGE, ~(MEDIUM | LARGE)])
    assert [r["area_fraction"] for r in default] == [12 / 64, 28 / 64, 24 / 64]

    # min_region_fraction=0.4: the large component alone, plus the rest as background.
    strict = pipe(image, min_region_fraction=0.4)
    check_region_dicts(strict, image.size)
    foreground = [r for r in strict if not r["is_background"]]
    assert len(foreground) == 1 and foreground[0]["area_fraction"] == 28 / 64 >= 0.4
    assert foreground[0]["box"] == [0, 0, 70, 32]
    assert same_masks(patch_masks(strict), [LARGE, ~LARGE])
    # min_region_fraction=0.03 keeps the small component too.
    loose = pipe(image, min_region_fraction=0.03)
    assert same_masks(patch_masks(loose), [MEDIUM, SMALL, LARGE, ~(MEDIUM | SMALL | LARGE)])

    # num_regions (background slot included): exactly that many regions, the best components first.
    assert len(loose) == 4
    for num_regions, kept in ((2, [MEDIUM]), (3, [MEDIUM, SMALL])):
        regions = pipe(image, min_region_fraction=0.03, num_regions=num_regions)
        check_region_dicts(regions, image.size)
        assert len(regions) == num_regions
        assert same_masks(patch_masks(regions), kept + [~np.logical_or.reduce(kept)])

    # include_background=False: the default's foreground regions, the background left out.
    no_background = pipe(image, include_background=False)
    assert len(no_background) == 2 and not any(r["is_background"] for r in no_background)
    assert same_masks(patch_masks(no_background), [MEDIUM, LARGE])


def test_saved_folder_runs_without_the_package(tiny, photos, tmp_path):
    """config.json carries auto_map + custom_pipelines and the folder the code: a process that cannot
    import dseqjepa_hub runs both pipelines from the folder alone."""
    folder, model, processor = tiny
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"]["saliency-ranking"]["impl"] == "pipeline_saliency_ranking.SaliencyRankingPipeline"
    assert {"pipeline_saliency_ranking.py", "regions.py", "modeling_dseqjepa.py"} <= {p.name for p in folder.iterdir()}
    script = f"""
import json, sys
sys.modules["dseqjepa_hub"] = None  # the package cannot be imported
from transformers import pipeline
ranking = pipeline("saliency-ranking", model={str(folder)!r}, trust_remote_code=True)
assert "transformers_modules" in type(ranking).__module__
regions = ranking({str(photos[1])!r}, min_region_fraction={MIN_FRACTION})
features = pipeline("image-feature-extraction", model={str(folder)!r}, trust_remote_code=True)
pooled = features({str(photos[1])!r}, pool=True)[0]
print(json.dumps({{"regions": [[r["rank"], r["score"], r["box"]] for r in regions], "pooled": pooled}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    remote = json.loads(done.stdout.strip().splitlines()[-1])

    local = SaliencyRankingPipeline(model=model, image_processor=processor, device="cpu")(
        photos[1], min_region_fraction=MIN_FRACTION
    )
    assert [r[0] for r in remote["regions"]] == [r["rank"] for r in local]
    assert [r[2] for r in remote["regions"]] == [r["box"] for r in local]
    np.testing.assert_allclose([r[1] for r in remote["regions"]], [r["score"] for r in local], rtol=1e-5)
    _, _, pooled = reference_outputs(model, processor, load_image(photos[1]))
    np.testing.assert_allclose(remote["pooled"], pooled, rtol=1e-4, atol=1e-5)


def write_mixed_folder(folder: Path, photos) -> tuple[list[Path], dict[str, str]]:
    """Good photos, good files in awkward formats, and bad files -> (good paths, {bad name: message})."""
    folder.mkdir()
    good = []
    for path in photos:
        target = folder / path.name
        target.write_bytes(path.read_bytes())
        good.append(target)
    chelsea = Image.open(photos[1]).convert("RGB")
    chelsea.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.asarray(chelsea.convert("L")).astype(np.uint16) * 257).save(folder / "grey16.png")
    palette = chelsea.convert("P")
    palette.save(folder / "palette.png", transparency=0)
    exif = chelsea.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: 300 wide, 451 high
    chelsea.save(folder / "rotated.jpg", exif=exif)
    good += [folder / name for name in ("cmyk.jpg", "grey16.png", "palette.png", "rotated.jpg")]

    data = photos[1].read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    Image.new("RGB", (3000, 2000)).save(folder / "bomb.png")  # 6 M pixels, over the --max-pixels 1.1 M given below
    bad = {
        "truncated.jpg": "truncated or corrupt image data",
        "empty.png": "empty file (0 bytes)",
        "notes.png": "not an image file that Pillow can read",
        "bomb.png": "3000 x 2000 = 6,000,000 pixels is above the limit of 1,100,000 pixels",
    }
    return sorted(good), bad


def test_regions_command_on_photos_and_bad_files(tiny, photos, tmp_path, monkeypatch, capsys):
    folder, model, processor = tiny
    good, bad = write_mixed_folder(tmp_path / "in", photos)
    out = tmp_path / "out"
    argv = ["regions", str(tmp_path / "in"), "--model", str(folder), "--out", str(out), "--json", "--show-saliency",
            "--min-region-fraction", str(MIN_FRACTION), "--batch-size", "3", "--max-pixels", "1100000"]
    assert main(argv) == 1  # some files failed
    stderr = capsys.readouterr().err
    assert f"{len(bad)} file(s) could not be read" in stderr
    for name, message in bad.items():
        line = next(line for line in stderr.splitlines() if line.strip().startswith(str(tmp_path / "in" / name)))
        assert message in line
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{p.stem}.regions.{ext}" for p in good for ext in ("jpg", "json")
    )

    pipe = SaliencyRankingPipeline(model=model, image_processor=processor, device="cpu")
    for path in good:
        image = load_image(path)
        overlay = Image.open(out / f"{path.stem}.regions.jpg")
        overlay.load()
        shown, _ = readable(image)  # the photos under MIN_PICTURE_AREA are drawn scaled up
        assert overlay.format == "JPEG" and overlay.height == shown.height
        assert shown.width * 2 < overlay.width < shown.width * 3  # overlay, heatmap, colour bar beside it
        record = json.loads((out / f"{path.stem}.regions.json").read_text())
        assert record["image"] == str(path) and record["size"] == [image.height, image.width]
        decoded = regions_from_json(record["regions"])
        check_region_dicts(decoded, image.size)
        expected = pipe(image, min_region_fraction=MIN_FRACTION)
        assert len(decoded) == len(expected)
        for got, want in zip(decoded, expected):
            assert np.array_equal(got["mask"], want["mask"]) and np.array_equal(got["patch_mask"], want["patch_mask"])
            assert got["box"] == want["box"] and got["rank"] == want["rank"]
            assert got["score"] == pytest.approx(want["score"], rel=1e-6)
    assert Image.open(out / "rotated.regions.jpg").height == 490  # EXIF applied (300 x 451), scaled up

    # Resuming rewrites nothing, still reports the bad files.
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(argv + ["--skip-existing"]) == 1
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_rank_regions_in_files_plain_overlay(tiny, photos, tmp_path):
    _, model, processor = tiny
    results, failures = rank_regions_in_files(
        photos[1:2], model, processor, out_dir=tmp_path, min_region_fraction=MIN_FRACTION, progress=False
    )
    assert failures == [] and len(results) == 1
    assert results[0]["json"] is None and results[0]["num_regions"] >= 2
    with Image.open(results[0]["overlay"]) as overlay:
        assert overlay.size == readable(Image.new("RGB", (451, 300)))[0].size == (490, 326)  # scaled up to 400 x 400 px²


def column_major_runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE, written out here independently: column-major runs, False first."""
    flat = mask.ravel(order="F")
    counts, current, run = [], False, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    return counts + [run]


def test_mask_rle_round_trip_in_coco_format():
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(0)
    masks = [np.zeros((3, 4), bool), np.ones((2, 5), bool), np.eye(4, 6, dtype=bool)]
    masks += [rng.random((rng.integers(1, 30), rng.integers(1, 30))) < rng.random() for _ in range(50)]
    for mask in masks:
        rle = json.loads(json.dumps(mask_to_rle(mask)))
        assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
        assert np.array_equal(rle_to_mask(rle), mask)
        assert coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode()}) == mask.sum()
        uncompressed = {"size": list(mask.shape), "counts": column_major_runs(mask)}
        assert np.array_equal(rle_to_mask(uncompressed), mask)


def expected_embeddings(model, processor, paths, num_regions=5):
    """Pooled and region embeddings computed here from the model outputs and extract_regions."""
    images = [load_image(path) for path in paths]
    with torch.no_grad():
        outputs = model(pixel_values=processor(images, return_tensors="pt")["pixel_values"], output_saliency=True)
    patches = outputs.last_hidden_state[:, 1:].numpy()
    regions = extract_regions(outputs.saliency, num_regions=num_regions)
    masks = regions.masks.flatten(2).numpy()  # (B, R, N)
    region_embeddings = np.stack(
        [[patches[b][masks[b, r]].mean(0) if masks[b, r].any() else np.zeros(patches.shape[-1]) for r in range(num_regions)] for b in range(len(paths))]
    )
    return patches.mean(1), region_embeddings, regions.valid.numpy(), regions.scores.numpy()


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_embed_command(tiny, photos, tmp_path, suffix, capsys):
    folder, model, processor = tiny
    (tmp_path / "in").mkdir()
    inputs = [tmp_path / "in" / p.name for p in photos]
    for source, target in zip(photos, inputs):
        target.write_bytes(source.read_bytes())
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    out = tmp_path / f"emb{suffix}"
    assert main(["embed", str(tmp_path / "in"), "--model", str(folder), "--out", str(out), "--regions", "--batch-size", "2"]) == 1
    assert "broken.jpg" in capsys.readouterr().err

    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["files"] == [str(p) for p in sorted(inputs)]
    assert [Path(f["file"]).name for f in sidecar["failures"]] == ["broken.jpg"]
    if suffix == ".npy":
        arrays = {name: np.load(tmp_path / info["file"]) for name, info in sidecar["arrays"].items()}
        assert sidecar["arrays"]["regions"]["file"] == "emb.regions.npy"
    else:
        from safetensors.numpy import load_file

        arrays = load_file(out)
    pooled, regions, valid, scores = expected_embeddings(model, processor, sorted(inputs))
    assert arrays["pooled"].shape == (3, 32) and arrays["regions"].shape == (3, 5, 32)
    np.testing.assert_allclose(arrays["pooled"], pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["regions"], regions, rtol=1e-5, atol=1e-6)
    assert np.array_equal(arrays["region_valid"], valid)
    np.testing.assert_allclose(arrays["region_scores"], scores, rtol=1e-6)

    assert main(["embed", str(inputs[0]), "--model", str(folder), "--out", str(tmp_path / "emb.pt")]) == 1
    assert "dseqjepa embed: error: --out" in capsys.readouterr().err


def test_embed_under_torchrun_writes_shards_and_index(tiny, photos, tmp_path):
    folder, model, processor = tiny
    inputs = [str(p) for p in photos]
    out = tmp_path / "emb.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "dseqjepa_cli", "embed", *inputs, "--model", str(folder), "--out", str(out)]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    from safetensors.numpy import load_file

    index = json.loads((tmp_path / "emb.index.json").read_text())
    assert index["world_size"] == 2
    assert [s["file"] for s in index["shards"]] == ["emb.rank0-of-2.safetensors", "emb.rank1-of-2.safetensors"]
    assert [s["num_images"] for s in index["shards"]] == [2, 1]
    pooled, _, _, _ = expected_embeddings(model, processor, photos)
    for rank, shard in enumerate(index["shards"]):
        sidecar = json.loads((tmp_path / shard["sidecar"]).read_text())
        assert sidecar["files"] == inputs[rank::2]  # strided split
        np.testing.assert_allclose(load_file(tmp_path / shard["file"])["pooled"], pooled[rank::2], rtol=1e-5, atol=1e-6)
    assert not out.exists()


def test_commands_refuse_clearly(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["regions", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 1
    assert "no image files found" in capsys.readouterr().err
    with pytest.raises(ModelLoadError, match="empty: not a model folder \\(no config.json\\)"):
        load_model(str(tmp_path / "empty"))
    for option, value in (("--num-regions", "0"), ("--batch-size", "-1"), ("--min-region-fraction", "1.5")):
        with pytest.raises(SystemExit):
            main(["regions", str(tmp_path / "empty"), option, value])
        assert "expected" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["regions", str(tmp_path / "empty"), "--device", "cuda"]) == 1
        assert "dseqjepa regions: error: --device cuda: no CUDA device" in capsys.readouterr().err


def test_pipeline_with_centre_crop_maps_regions_into_the_crop(tiny, photos):
    _, model, _ = tiny
    processor = DSeqJEPAImageProcessor.from_model_config(model.config, center_crop=True)
    image = load_image(photos[2])  # 600 x 400: the crop drops a band left and right
    x0, y0, x1, y1 = processor.crop_box(original_size=(image.height, image.width))
    assert (x0, x1) != (0, image.width)
    regions = SaliencyRankingPipeline(model=model, image_processor=processor, device="cpu")(
        image, min_region_fraction=MIN_FRACTION
    )
    union = np.zeros((image.height, image.width), dtype=int)
    for region in regions:
        union += region["mask"]
        bx0, by0, bx1, by1 = region["box"]
        assert x0 <= bx0 < bx1 <= x1 and y0 <= by0 < by1 <= y1
    assert (union[y0:y1, x0:x1] == 1).all() and union.sum() == (y1 - y0) * (x1 - x0)


def test_pipeline_factory_in_process_uses_local_code_without_prompting(tiny, photos, capsys):
    """With dseqjepa_hub imported, `pipeline_class=` runs the saved folder on this package's code."""
    from transformers import pipeline

    folder, _, _ = tiny
    pipe = pipeline("saliency-ranking", model=str(folder), pipeline_class=SaliencyRankingPipeline)
    assert type(pipe.model) is DSeqJEPAModel and type(pipe.image_processor) is DSeqJEPAImageProcessor
    check_region_dicts(pipe(photos[1], min_region_fraction=MIN_FRACTION), (451, 300))
    assert "Do you wish to run the custom code" not in capsys.readouterr().out

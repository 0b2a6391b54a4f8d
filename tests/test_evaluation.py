"""Evaluation: probes and region metrics on data with a known answer, and `dseqjepa eval` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dseqjepa_hub  # noqa: F401  (registers the Auto classes)
from dseqjepa_cli import main
from dseqjepa_hub.configuration_dseqjepa import DSeqJEPAConfig
from dseqjepa_hub.image_processing_dseqjepa import DSeqJEPAImageProcessor
from dseqjepa_hub.modeling_dseqjepa import DSeqJEPAModel
from dseqjepa_options import EVAL_TASKS
from dseqjepa_train.evaluation import region_quality
from dseqjepa_train.evaluation.features import extract_features
from dseqjepa_train.evaluation.labelled_splits import SceneRecord
from dseqjepa_train.evaluation.probes import knn_predict, linear_probe
from dseqjepa_train.evaluation.region_quality import centred_box, precision_and_iou, top1_region_scores

IMAGE, PATCH = 32, 8


def _clusters(num_classes: int, per_class: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:num_classes] * 10  # far apart
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return centres[labels] + torch.randn(len(labels), dim, generator=generator), labels


def test_linear_probe_separable_features_give_full_accuracy():
    train_x, train_y = _clusters(3, 40, 16, seed=0)
    val_x, val_y = _clusters(3, 15, 16, seed=1)
    result = linear_probe(train_x, train_y, val_x, val_y, num_classes=3, epochs=20, batch_size=32)
    assert result["top1"] == 1.0
    assert result["lr"] in (0.001, 0.01, 0.1, 1.0) and len(result["lr_search_holdout_top1"]) == 4
    # Shuffled labels cannot be learned: a probe that always wins would be broken.
    shuffled = val_y[torch.randperm(len(val_y), generator=torch.Generator().manual_seed(0))]
    assert linear_probe(train_x, train_y, val_x, shuffled, 3, epochs=20, batch_size=32, lr=0.1)["top1"] < 0.8


def test_knn_separable_clusters_and_reference_vote():
    train_x, train_y = _clusters(4, 25, 8, seed=0)
    val_x, val_y = _clusters(4, 10, 8, seed=1)
    assert (knn_predict(train_x, train_y, val_x, num_classes=4) == val_y).all()
    # Against a direct per-query implementation of the weighted vote (k=5, T=0.07).
    generator = torch.Generator().manual_seed(2)
    train_x, train_y = torch.randn(50, 6, generator=generator), torch.randint(0, 3, (50,), generator=generator)
    queries = torch.randn(20, 6, generator=generator)
    expected = []
    for query in queries:
        similarity = torch.nn.functional.cosine_similarity(query[None], train_x, dim=1)
        top = similarity.argsort(descending=True)[:5]
        votes = torch.zeros(3)
        for i in top:
            votes[train_y[i]] += torch.exp(similarity[i] / 0.07)
        expected.append(votes.argmax())
    assert torch.equal(knn_predict(train_x, train_y, queries, 3, k=5, chunk_size=7), torch.stack(expected))


def test_region_precision_and_iou():
    objects = np.zeros((2, 10, 10), dtype=bool)
    objects[0, :4, :4] = True
    objects[1, 6:, 6:] = True
    assert precision_and_iou(objects[0], objects) == (1.0, 1.0)
    disjoint = np.zeros((10, 10), dtype=bool)
    disjoint[:4, 6:] = True
    assert precision_and_iou(disjoint, objects) == (0.0, 0.0)
    half = np.zeros((10, 10), dtype=bool)
    half[:4, :8] = True  # 16 of its 32 pixels on object 0
    precision, iou = precision_and_iou(half, objects)
    assert precision == 0.5 and iou == pytest.approx(16 / 32)
    assert precision_and_iou(np.zeros((10, 10), dtype=bool), objects) == (0.0, 0.0)


def test_centred_box():
    box = centred_box(40, 80, 0.25)
    ys, xs = np.nonzero(box)
    assert box.sum() == 20 * 40 and (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 29, 20, 59)


def _tiny_model(tmp_path: Path) -> Path:
    config = DSeqJEPAConfig(
        image_size=IMAGE, patch_size=PATCH, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, predictor_hidden_size=32, predictor_num_hidden_layers=1,
    )
    torch.manual_seed(0)
    folder = tmp_path / "model"
    DSeqJEPAModel(config).save_pretrained(folder)
    DSeqJEPAImageProcessor.from_model_config(config).save_pretrained(folder)
    return folder


def _tiny_scenes(root: Path, per_split: int = 4, mislabelled_val: tuple[int, ...] = (),
                 misplaced_val_masks: tuple[int, ...] = ()) -> Path:
    """Scenes-kit layout of 48 px images: one 24 px square object per image on dark noise, "red" (even
    index) or "green" (odd), at a corner of the 4x4 grid of 12 px cells (so it covers 2x2 cells exactly).
    Val images listed in `mislabelled_val` are labelled with the other colour in labels.tsv; those in
    `misplaced_val_masks` have their object mask in the opposite corner, away from the object."""
    size, side = 48, 24
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        images, lines = [], []
        for i in range(per_split):
            colour = ("red", "green")[i % 2]
            pixels = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            y, x = (int(v) for v in rng.choice([0, size - side], 2))
            pixels[y : y + side, x : x + side] = (230, 20, 20) if colour == "red" else (20, 230, 20)
            if split == "val" and i in misplaced_val_masks:
                y, x = size - side - y, size - side - x
            label = np.zeros((size, size), dtype=np.uint8)
            label[y : y + side, x : x + side] = 1
            Image.fromarray(pixels).save(root / split / "images" / f"{i:06d}.png")
            Image.fromarray(label).save(root / split / "masks" / f"{i:06d}.png")
            images.append({"file": f"images/{i:06d}.png", "mask": f"masks/{i:06d}.png", "background": "none",
                           "objects": [{"id": 1, "category": colour, "stamp": "s", "box": [0, 0, 1, 1], "area": 1}]})
            if split == "val" and i in mislabelled_val:
                colour = "green" if colour == "red" else "red"
            lines.append(f"images/{i:06d}.png\t{colour}\n")
        (root / split / "annotations.json").write_text(json.dumps({"categories": ["green", "red"], "images": images}))
        (root / split / "labels.tsv").write_text("".join(lines))
    return root


def test_top1_region_equal_to_object_scores_one(tmp_path, monkeypatch):
    """A region covering exactly the object's patches, mapped back to a 48 px image, gives IoU 1."""
    folder = tmp_path / "scene"
    folder.mkdir()
    label = np.zeros((48, 48), dtype=np.uint8)
    label[12:24, 24:36] = 1  # patch cells rows 1, columns 2 of a 4x4 grid (12 px per cell)
    Image.fromarray(label).save(folder / "mask.png")
    Image.fromarray(np.zeros((48, 48, 3), dtype=np.uint8)).save(folder / "image.png")
    masks = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    masks[0, 0, 1, 2] = True
    masks[0, 1] = ~masks[0, 0]  # background slot

    def fake_rank_regions(model, pixel_values):
        return {"masks": masks, "scores": torch.tensor([[0.9, 0.1]]), "valid": torch.ones(1, 2, dtype=torch.bool)}

    monkeypatch.setattr(region_quality, "rank_regions", fake_rank_regions)
    config = DSeqJEPAConfig(image_size=IMAGE, patch_size=PATCH, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64)
    record = SceneRecord(folder / "image.png", folder / "mask.png", [1])
    processor = DSeqJEPAImageProcessor.from_model_config(config)
    result = top1_region_scores(DSeqJEPAModel(config), processor, [record], batch_size=1, desc="test")
    assert result["top1_on_object"] == 1.0 and result["mean_iou"] == 1.0 and result["mean_precision"] == 1.0
    assert result["mean_area_fraction"] == pytest.approx(1 / 16)
    masks[0, 0] = False
    masks[0, 0, 3, 0] = True  # a disjoint patch
    result = top1_region_scores(DSeqJEPAModel(config), processor, [record], batch_size=1, desc="test")
    assert result["top1_on_object"] == 0.0 and result["mean_iou"] == 0.0


def test_last4_features_are_normed_block_outputs(tmp_path):
    model = DSeqJEPAModel.from_pretrained(_tiny_model(tmp_path)).eval()
    processor = DSeqJEPAImageProcessor.from_pretrained(tmp_path / "model")
    scenes = _tiny_scenes(tmp_path / "data", per_split=2)
    paths = sorted((scenes / "train/images").iterdir())
    features = extract_features(model, processor, paths, layers="last4", batch_size=1)
    assert features.shape == (2, 4 * 32)
    # The last of the four equals the model's own pooled output (final norm, patch mean).
    pixel_values = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        pooled = model(pixel_values=pixel_values).pooler_output
    torch.testing.assert_close(features[:, 3 * 32 :], pooled, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(extract_features(model, processor, paths, "last", 2), pooled, rtol=1e-5, atol=1e-6)


def _brightness_saliency(monkeypatch) -> None:
    """DSeqJEPAModel's saliency becomes each patch's mean brightest channel: the top region of a
    tiny-scenes image is then its object's 2x2 patches, whatever the weights."""
    real_forward = DSeqJEPAModel.forward

    def forward(self, pixel_values, *args, output_saliency=False, **kwargs):
        outputs = real_forward(self, pixel_values, *args, output_saliency=output_saliency, **kwargs)
        if output_saliency:
            brightest = pixel_values.float().amax(dim=1, keepdim=True)  # (B, 1, S, S)
            outputs.saliency = torch.nn.functional.avg_pool2d(brightest, self.config.patch_size)[:, 0]
        return outputs

    monkeypatch.setattr(DSeqJEPAModel, "forward", forward)


def _reference_features(model_dir: Path, paths: list[Path]) -> torch.Tensor:
    """Pooled last-layer features, one image at a time, without the evaluation package."""
    model = DSeqJEPAModel.from_pretrained(model_dir).eval()
    processor = DSeqJEPAImageProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        return torch.cat([
            model(pixel_values=processor(Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]).pooler_output
            for path in paths
        ])


@pytest.mark.parametrize("task", EVAL_TASKS)  # every value `eval --task` offers
def test_eval_cli_end_to_end(tmp_path, task, capsys, monkeypatch):
    """Val image 1 (green) is labelled red and val image 0's mask lies away from its object: a
    classifier that tells the colours apart scores 3/4, and so does a top region on the object."""
    model_dir = _tiny_model(tmp_path)
    data_dir = _tiny_scenes(tmp_path / "scenes", mislabelled_val=(1,), misplaced_val_masks=(0,))
    if task == "regions":
        _brightness_saliency(monkeypatch)
    out = tmp_path / f"{task}.json"
    code = main(["eval", str(model_dir), "--data", str(data_dir), "--task", task, "--out", str(out), "--device", "cpu",
                 "--batch-size", "3", "--epochs", "20", "--lr", "0.1", "--k", "3"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["task"] == task and result["dataset"] == "scenes" and result["split"] == "val"
    assert result["n_images"] == 4 and result["model"] == str(model_dir)
    table = out.with_suffix(".md").read_text()
    assert table in capsys.readouterr().out
    assert result["value"] == 0.75  # exact: 3 of 4 images
    if task == "regions":
        assert set(result["details"]) == {"model", "centred_box", "random_init"}
        model_row = result["details"]["model"]
        assert result["value"] == model_row["top1_on_object"]
        # Top regions are exactly the objects (precision 1, IoU 1) but on the image with the misplaced mask (0, 0).
        assert model_row == {"top1_on_object": 0.75, "mean_iou": 0.75, "mean_precision": 0.75,
                             "mean_area_fraction": 0.25, "images_without_region": 0}
        assert result["details"]["random_init"] == model_row  # same saliency rule, whatever the weights
        # A centred 24 px box overlaps each corner mask by 12x12 px: precision 1/4, IoU 144 / 1008.
        centred = result["details"]["centred_box"]
        assert centred["top1_on_object"] == 0.0 and centred["mean_area_fraction"] == 0.25
        assert centred["mean_precision"] == 0.25 and centred["mean_iou"] == pytest.approx(1 / 7)
        assert "| centred_box |" in table
        return
    assert result["metric"] == "top1" and result["details"]["num_classes"] == 2 and result["details"]["n_train"] == 4
    # Recomputed from features extracted here, classes in sorted order (green 0, red 1).
    paths = {split: sorted((data_dir / split / "images").iterdir()) for split in ("train", "val")}
    train_x, val_x = (_reference_features(model_dir, paths[split]) for split in ("train", "val"))
    train_y = torch.tensor([1, 0, 1, 0])
    val_y = torch.tensor([1, 1, 1, 0])  # image 1 mislabelled
    if task == "knn":
        assert result["details"]["k"] == 3
        similarity = torch.nn.functional.normalize(val_x, dim=1) @ torch.nn.functional.normalize(train_x, dim=1).T
        votes = torch.zeros(4, 2)
        for query in range(4):
            for neighbour in similarity[query].argsort(descending=True)[:3]:
                votes[query, train_y[neighbour]] += torch.exp(similarity[query, neighbour] / 0.07)
        expected = (votes.argmax(dim=1) == val_y).float().mean().item()
    else:
        assert result["details"]["lr"] == 0.1 and result["details"]["epochs"] == 20
        expected = linear_probe(train_x, train_y, val_x, val_y, 2, epochs=20, lr=0.1)["top1"]
        assert result["details"]["train_top1"] == 1.0
    assert result["value"] == expected == 0.75


def test_eval_cli_reports_bad_data(tmp_path, capsys):
    (tmp_path / "empty/train").mkdir(parents=True)
    (tmp_path / "empty/val").mkdir()
    assert main(["eval", str(_tiny_model(tmp_path)), "--data", str(tmp_path / "empty"), "--task", "regions"]) == 1
    assert "dseqjepa eval: error: " in (err := capsys.readouterr().err) and "annotations.json not found" in err
    assert main(["eval", str(tmp_path / "model"), "--data", str(tmp_path / "nowhere"), "--task", "knn"]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["knn", "regions"])
def test_eval_cli_names_an_unreadable_image(tmp_path, task, capsys):
    """An evaluation set is curated: one unreadable image stops `eval` with one line naming it."""
    data_dir = _tiny_scenes(tmp_path / "scenes")
    broken = data_dir / "val/images/000002.png"
    broken.write_bytes(b"not a png")
    assert main(["eval", str(_tiny_model(tmp_path)), "--data", str(data_dir), "--task", task, "--device", "cpu",
                 "--batch-size", "3", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert f"dseqjepa eval: error: {broken}: not an image file" in err and "Traceback" not in err

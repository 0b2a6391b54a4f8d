"""examples/finetune_trainer.py: the HF Trainer fine-tunes the classification model, which reloads."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAForImageClassification, DSeqJEPAImageProcessor, DSeqJEPAModel

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "finetune_trainer.py"


def load_example():
    spec = importlib.util.spec_from_file_location("finetune_trainer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_image_folder(root: Path) -> None:
    """Two classes a linear head can tell apart: reddish and bluish noisy images, 10 each.

    The example holds out the first 2 files of each class (0.png, 1.png); blue/0.png is a reddish
    image, so a model that tells the colours apart scores exactly 3/4 on the held-out images.
    """
    rng = np.random.default_rng(0)
    for name, channel in (("red", 0), ("blue", 2)):
        (root / name).mkdir(parents=True)
        for index in range(10):
            pixels = rng.integers(0, 90, (32, 32, 3))
            pixels[..., 0 if (name, index) == ("blue", 0) else channel] += 150
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{index}.png")


def test_trainer_lowers_the_loss_and_the_saved_model_reloads(tmp_path):
    make_image_folder(tmp_path / "data")
    torch.manual_seed(0)
    config = DSeqJEPAConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64)
    DSeqJEPAModel(config).save_pretrained(tmp_path / "pretrained")
    DSeqJEPAImageProcessor.from_model_config(config).save_pretrained(tmp_path / "pretrained")

    result = load_example().main([
        "--data", str(tmp_path / "data"), "--model", str(tmp_path / "pretrained"),
        "--output", str(tmp_path / "finetuned"), "--max-steps", "12", "--batch-size", "8",
        "--learning-rate", "3e-3",
    ])
    losses = [entry["loss"] for entry in result["log_history"] if "loss" in entry]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3])

    # The Trainer's evaluation, recomputed from the trained model's predictions on the held-out images.
    processor = DSeqJEPAImageProcessor.from_pretrained(tmp_path / "pretrained")
    held_out = [(path, label) for label, name in enumerate(("blue", "red"))
                for path in sorted((tmp_path / "data" / name).glob("*.png"))[:2]]
    pixels = processor([Image.open(path).convert("RGB") for path, _ in held_out], return_tensors="pt")["pixel_values"]
    labels = torch.tensor([label for _, label in held_out])
    with torch.no_grad():
        logits = result["model"].eval()(pixels.to(result["model"].device)).logits.cpu()
    assert logits.argmax(dim=1).tolist() == [1, 0, 1, 1]  # colours told apart; blue/0.png is the reddish one
    assert result["metrics"]["eval_accuracy"] == (logits.argmax(dim=1) == labels).float().mean().item() == 0.75
    assert result["metrics"]["eval_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)

    reloaded = DSeqJEPAForImageClassification.from_pretrained(tmp_path / "finetuned").eval()
    processor = DSeqJEPAImageProcessor.from_pretrained(tmp_path / "finetuned")
    assert reloaded.config.id2label == {0: "blue", 1: "red"}
    images = [Image.open(path) for path in sorted((tmp_path / "data" / "red").glob("*.png"))[:4]]
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        trained = result["model"].eval()(pixels.to(result["model"].device)).logits.cpu()
        torch.testing.assert_close(reloaded(pixels).logits, trained, rtol=1e-5, atol=1e-6)

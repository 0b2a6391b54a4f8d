"""Both pipelines ("saliency-ranking", this package's, and transformers' "image-feature-extraction")
checked as transformers checks its pipelines: one image, a list, batches equal to single images,
`device`, `dtype`; and URLs, which the saliency-ranking pipeline refuses in one line when it cannot
fetch them."""

from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAImageProcessor, DSeqJEPAModel, save_pretrained_with_pipeline
from dseqjepa_hub.errors import DSeqJEPAError

PHOTOS = sorted((Path(__file__).resolve().parents[1] / "examples" / "images").glob("*.jpg"))[:3]
TASKS = ("saliency-ranking", "image-feature-extraction")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    config = DSeqJEPAConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    save_pretrained_with_pipeline(DSeqJEPAModel(config), DSeqJEPAImageProcessor.from_model_config(config), path)
    return path


@pytest.fixture(scope="module")
def images():
    return [Image.open(path).convert("RGB") for path in PHOTOS]


def comparable(task, output):
    """The numbers of one image's result: the region scores, or the token features."""
    if task == "saliency-ranking":
        return np.array([region["score"] for region in output])
    return np.asarray(output, dtype=np.float32)


@pytest.mark.parametrize("task", TASKS)
def test_one_image_a_list_and_batches(folder, images, task):
    pipe = pipeline(task, model=str(folder))
    assert pipe.device == torch.device("cpu")
    singles = [pipe(image) for image in images]
    assert isinstance(singles[0], list)
    for batch_size in (1, 2):
        outputs = pipe(images, batch_size=batch_size)
        assert isinstance(outputs, list) and len(outputs) == len(images)
        for single, output in zip(singles, outputs):
            np.testing.assert_allclose(comparable(task, output), comparable(task, single), atol=1e-5, rtol=1e-5)
    assert len(pipe(str(PHOTOS[0]))) == len(singles[0])  # a path


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), -1])
def test_device(folder, images, task, device):
    pipe = pipeline(task, model=str(folder), device=device)
    assert pipe.device == torch.device("cpu") and pipe.model.device == torch.device("cpu")
    assert pipe(images[0])


@pytest.mark.parametrize("task", TASKS)
def test_dtype(folder, images, task):
    full = pipeline(task, model=str(folder))
    half = pipeline(task, model=str(folder), dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16 and half.dtype == torch.bfloat16
    if task == "image-feature-extraction":  # bfloat16 features, near the float32 ones
        features = np.asarray(half(images[0]), dtype=np.float32)
        np.testing.assert_allclose(features, np.asarray(full(images[0]), dtype=np.float32), atol=0.15)
    else:  # regions from a bfloat16 saliency
        assert {"score", "mask", "box"} <= set(half(images[0])[0])


def test_saliency_ranking_refuses_urls_it_cannot_fetch_in_one_line(folder, monkeypatch):
    pipe = pipeline("saliency-ranking", model=str(folder))
    # Nothing listens on port 9 (discard) of this machine: the connection is refused at once.
    with pytest.raises(DSeqJEPAError, match=r"^http://127\.0\.0\.1:9/cat\.jpg: could not be downloaded") as refusal:
        pipe("http://127.0.0.1:9/cat.jpg", timeout=5)
    assert "\n" not in str(refusal.value)
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    with pytest.raises(DSeqJEPAError, match=r"^https://example\.com/cat\.jpg: a URL, and the Hub is offline") as refusal:
        pipe("https://example.com/cat.jpg")
    assert "\n" not in str(refusal.value)

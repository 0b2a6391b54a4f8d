"""The bundled default model loads, is small, and ranks regions on a bundled example photo."""

from pathlib import Path

import numpy as np
from PIL import Image
from transformers import pipeline

from dseqjepa_cli import main
from dseqjepa_hub import DSeqJEPAModel, default_model_path
from dseqjepa_hub.application.drawing import readable

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "images" / "chelsea.jpg"


def test_default_model_is_bundled_small_and_documented():
    folder = default_model_path()
    assert (folder / "model.safetensors").stat().st_size <= 25 * 2**20
    model = DSeqJEPAModel.from_pretrained(folder)
    assert model.config.use_cls_token and model.config.saliency_query == "cls_token"
    card = (folder / "README.md").read_text()
    assert "not good for" in card and "scenes" in card and "top-1" in card


def test_default_model_ranks_regions_on_an_example_photo(tmp_path):
    ranker = pipeline("saliency-ranking", model=str(default_model_path()))
    regions = ranker(str(EXAMPLE))
    width, height = Image.open(EXAMPLE).size
    assert regions and regions[-1]["is_background"]
    assert [region["rank"] for region in regions] == list(range(1, len(regions) + 1))
    for region in regions:
        assert region["mask"].shape == (height, width)
        x0, y0, x1, y1 = region["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    union = np.zeros((height, width), dtype=int)
    for region in regions:
        union += region["mask"]
    assert (union == 1).all()  # regions and background partition the image

    assert main(["regions", str(EXAMPLE), "--out", str(tmp_path)]) == 0
    with Image.open(tmp_path / "chelsea.regions.jpg") as overlay:
        assert overlay.size == readable(Image.new("RGB", (width, height)))[0].size  # under 400 x 400 px²: scaled up

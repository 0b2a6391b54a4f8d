"""`train --data` on a Hugging Face data set: a save_to_disk folder (the README's command), a Parquet file,
an unreadable row skipped and named, refusals naming the column or the split."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_init_from import readme_commands

from dseqjepa_cli import main
from dseqjepa_hub.application.hf_datasets import DatasetError, ImageRows
from dseqjepa_train import load_config, train

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def png(rng, size=(72, 80)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> datasets.Dataset:
    """8 rows: an image column `img` (row 3 damaged) and a label."""
    rng = np.random.default_rng(0)
    images = [{"bytes": png(rng), "path": None} for _ in range(8)]
    images[3] = {"bytes": b"not a PNG", "path": None}
    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"img": images, "label": list(range(8))}, features=features)


def test_readme_trains_on_a_saved_data_set(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    datasets.DatasetDict({"train": dataset}).save_to_disk("my_dataset")
    for command in readme_commands("Pretrain on a Hugging Face data set"):
        assert main(command) == 0, command
    summary = json.loads(Path("dataset_run/summary.json").read_text())
    assert summary["step"] == 2 and summary["skipped_images"] >= 1  # the damaged row
    records = [json.loads(line) for line in Path("dataset_run/metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in records)


def test_the_rows_are_the_images_in_order(dataset, tmp_path):
    dataset.to_parquet(tmp_path / "images.parquet")
    rows = ImageRows(tmp_path / "images.parquet", "img")
    assert len(rows) == 8
    expected = Image.open(io.BytesIO(dataset.cast_column("img", datasets.Image(decode=False))[5]["img"]["bytes"]))
    assert np.array_equal(np.asarray(rows.load(5)), np.asarray(expected.convert("RGB")))
    with pytest.raises(Exception, match=r"images.parquet#3"):
        rows.load(3)
    config = load_config("tiny-cpu", ["image_column=img", "batch_size=4", "num_workers=1"])
    assert train(config, tmp_path / "images.parquet", tmp_path / "run", max_steps=2).step == 2


def test_a_missing_column_or_split_is_refused_naming_it(dataset, tmp_path):
    dataset.save_to_disk(tmp_path / "flat")
    with pytest.raises(DatasetError, match=r"no column 'image' \(it has \['img', 'label'\]\)"):
        ImageRows(tmp_path / "flat")
    datasets.DatasetDict({"test": dataset}).save_to_disk(tmp_path / "dict")
    with pytest.raises(DatasetError, match=r"without a 'train' split \(it has \['test'\]\)"):
        ImageRows(tmp_path / "dict", "img")

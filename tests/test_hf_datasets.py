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
    for command in readme_commands("Hugging Face data sets: `train --data`, `embed`, `regions`"):
        # embed and regions exit 1 for the damaged row, as for a damaged file; training skips and counts it
        assert main(command) == (0 if command[0] == "train" else 1), command
    written = sorted(path.name for path in Path("dataset_regions").glob("*.regions.json"))
    assert written == [f"my_dataset#{row}.regions.json" for row in (0, 1, 2, 4, 5, 6, 7)]
    assert json.loads(Path("dataset_regions/my_dataset#6.regions.json").read_text())["image"] == "my_dataset#6"
    Path("dataset_regions/my_dataset#5.regions.jpg").unlink()  # --skip-existing redoes row 5 alone
    assert main(["regions", "my_dataset", "--image-column", "img", "--json", "--out", "dataset_regions",
                 "--skip-existing"]) == 1
    assert Path("dataset_regions/my_dataset#5.regions.jpg").is_file()
    sidecar = json.loads(Path("dataset_embeddings.npy.json").read_text())
    assert sidecar["files"] == [f"my_dataset#{row}" for row in (0, 1, 2, 4, 5, 6, 7)]
    assert [failure["file"] for failure in sidecar["failures"]] == ["my_dataset#3"]
    embeddings = np.load("dataset_embeddings.npy")
    rows = dataset.cast_column("img", datasets.Image(decode=False))
    for row in (0, 5):  # the same image saved as a file embeds to the same row
        Path(f"row{row}.png").write_bytes(rows[row]["img"]["bytes"])
    assert main(["embed", "row0.png", "row5.png", "--out", "files.npy"]) == 0
    np.testing.assert_allclose(np.load("files.npy"), embeddings[[0, 4]], rtol=1e-5, atol=1e-6)
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
    shard = rows[1::2]  # a torchrun rank's rows keep their indices
    assert len(shard) == 4 and str(shard.name(1)) == f"{tmp_path / 'images.parquet'}#3"
    assert np.array_equal(np.asarray(shard.load(2)), np.asarray(rows.load(5)))
    config = load_config("tiny-cpu", ["image_column=img", "batch_size=4", "num_workers=1"])
    assert train(config, tmp_path / "images.parquet", tmp_path / "run", max_steps=2).step == 2


def test_a_missing_column_or_split_is_refused_naming_it(dataset, tmp_path):
    dataset.save_to_disk(tmp_path / "flat")
    with pytest.raises(DatasetError, match=r"no column 'image' \(it has \['img', 'label'\]\)"):
        ImageRows(tmp_path / "flat")
    datasets.DatasetDict({"test": dataset}).save_to_disk(tmp_path / "dict")
    with pytest.raises(DatasetError, match=r"without a 'train' split \(it has \['test'\]\)"):
        ImageRows(tmp_path / "dict", "img")

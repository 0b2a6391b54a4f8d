"""Hugging Face data sets as inputs: `train --data`, `embed`, `regions`, `visualize` on a save_to_disk folder
(the README's commands), a Parquet file, a repo id in the HF caches (offline), streamed, under torchrun; an
unreadable row skipped and named, refusals naming the column, the split or the caches."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_init_from import readme_commands
from test_training_runs import losses, run_state

from dseqjepa_cli import main
from dseqjepa_hub.application.hf_datasets import DatasetError, ImageRows
from dseqjepa_hub.application.loading import load_model
from dseqjepa_hub.application.runner import image_batches
from dseqjepa_train import load_config, train
from dseqjepa_train.pretraining_data import PretrainingImages, build_loader, list_image_files

datasets = pytest.importorskip("datasets")
REPO = Path(__file__).resolve().parents[1]
READABLE = (0, 1, 2, 4, 5, 6, 7)  # the fixture's rows but the damaged one


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
    for command in readme_commands("Hugging Face data sets: `train --data`, `embed`, `regions`, `visualize`"):
        # the others exit 1 for the damaged row, as for a damaged file; training skips and counts it
        assert main(command) == (0 if command[0] == "train" else 1), command
    written = sorted(path.name for path in Path("dataset_regions").glob("*.regions.json"))
    assert written == [f"my_dataset#{row}.regions.json" for row in READABLE]
    assert json.loads(Path("dataset_regions/my_dataset#6.regions.json").read_text())["image"] == "my_dataset#6"
    Path("dataset_regions/my_dataset#5.regions.jpg").unlink()  # --skip-existing redoes row 5 alone
    assert main(["regions", "my_dataset", "--image-column", "img", "--json", "--out", "dataset_regions",
                 "--skip-existing"]) == 1
    assert Path("dataset_regions/my_dataset#5.regions.jpg").is_file()
    sidecar = json.loads(Path("dataset_embeddings.npy.json").read_text())
    assert sidecar["files"] == [f"my_dataset#{row}" for row in READABLE]
    assert [failure["file"] for failure in sidecar["failures"]] == ["my_dataset#3"]
    embeddings = np.load("dataset_embeddings.npy")
    rows = dataset.cast_column("img", datasets.Image(decode=False))
    for row in (0, 5):  # the same image saved as a file embeds to the same row
        Path(f"row{row}.png").write_bytes(rows[row]["img"]["bytes"])
    assert main(["embed", "row0.png", "row5.png", "--out", "files.npy"]) == 0
    np.testing.assert_allclose(np.load("files.npy"), embeddings[[0, 4]], rtol=1e-5, atol=1e-6)
    # streamed: the same rows, names and embeddings
    assert json.loads(Path("dataset_streamed.npy.json").read_text())["files"] == sidecar["files"]
    np.testing.assert_allclose(np.load("dataset_streamed.npy"), embeddings, rtol=1e-5, atol=1e-6)
    pictures = sorted(Path("dataset_pca").glob("*.png"))
    assert [path.name.split(".")[0] for path in pictures] == [f"my_dataset#{row}" for row in READABLE]
    index = json.loads(next(Path("dataset_pca").glob("*.json")).read_text())
    assert [entry["image"] for entry in index["images"]] == [f"my_dataset#{row}" for row in READABLE]
    summary = json.loads(Path("dataset_run/summary.json").read_text())
    assert summary["step"] == 2 and summary["skipped_images"] >= 1  # the damaged row
    records = [json.loads(line) for line in Path("dataset_run/metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in records)
    streamed = json.loads(Path("dataset_streamed_run/summary.json").read_text())
    assert streamed["step"] == 2 and streamed["weight_digests"] != summary["weight_digests"]  # another order


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


def test_a_stream_gives_the_rows_in_order_to_every_worker_and_shard(dataset, tmp_path):
    """Streamed rows: a shard keeps its row indices, two decoding workers give the batches back in order,
    each row once, the same pixels as the memory-mapped rows."""
    dataset.to_parquet(tmp_path / "images.parquet")
    rows = ImageRows(tmp_path / "images.parquet", "img")
    stream = ImageRows(tmp_path / "images.parquet", "img", streaming=True)
    assert stream.streaming and len(stream) == 8 and stream.stems()[5] == Path("images.parquet#5")
    shard = stream[1::3]
    assert [(position, str(shard.name(position))) for position, _ in shard.encoded()] == \
        [(0, f"{tmp_path / 'images.parquet'}#1"), (1, f"{tmp_path / 'images.parquet'}#4"), (2, f"{tmp_path / 'images.parquet'}#7")]
    first = next(shard.encoded([1]))
    assert np.array_equal(np.asarray(shard.decode(*first)), np.asarray(rows.load(4)))
    processor = load_model(None, "cpu").processor
    for workers in (0, 2):
        with image_batches(stream, processor, batch_size=2, num_workers=workers) as batches:
            batches = list(batches)
        names = [str(path) for batch in batches for path in [*batch.paths, *(failed for failed, _ in batch.failures)]]
        assert sorted(names) == [str(name) for name in stream.names()], workers
        assert [str(path) for batch in batches for path in batch.paths] == [str(rows.name(row)) for row in READABLE]
    with image_batches(rows, processor, batch_size=8, num_workers=0) as mapped:
        expected = next(mapped).pixel_values
    assert torch.equal(torch.cat([batch.pixel_values for batch in batches]), expected)


@pytest.fixture
def hf_caches(tmp_path, monkeypatch) -> Path:
    """Empty HF caches for this test (TMP/hub, TMP/datasets), offline."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return tmp_path


def hub_snapshot(parquet: Path, hub: Path, repo_id: str, commit: str = "0" * 40) -> None:
    """What `hf download REPO --repo-type dataset` leaves in the hub cache for a repo of one Parquet file."""
    folder = hub / f"datasets--{repo_id.replace('/', '--')}"
    (folder / "snapshots" / commit / "data").mkdir(parents=True)
    shutil.copy(parquet, folder / "snapshots" / commit / "data" / "train-00000-of-00001.parquet")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)


def prepared_copy(parquet: Path, cache: Path, repo_id: str) -> None:
    """What `load_dataset(REPO)` leaves in the datasets cache: NAMESPACE___NAME/CONFIG/VERSION/HASH/NAME-train.arrow."""
    builder = datasets.load_dataset_builder("parquet", data_files={"train": str(parquet)})
    builder.download_and_prepare()
    prepared = Path(builder.cache_dir)
    namespace, name = repo_id.split("/")
    target = cache / f"{namespace}___{name}" / "default" / prepared.parent.name / prepared.name
    shutil.copytree(prepared, target)
    for arrow in target.glob("parquet-train*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace("parquet-", f"{name}-")))


def test_a_repo_id_is_read_from_the_hf_caches_offline(dataset, hf_caches, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    dataset.to_parquet("images.parquet")
    assert main(["embed", "images.parquet", "--image-column", "img", "--out", "file.npy"]) == 1
    expected = np.load("file.npy")
    names = [f"someone/photos#{row}" for row in READABLE]

    def embed_repo(out: str, *options: str) -> np.ndarray:
        assert main(["embed", "someone/photos", "--image-column", "img", "--out", out, *options]) == 1
        assert json.loads(Path(f"{out}.json").read_text())["files"] == names
        return np.load(out)

    hub_snapshot(Path("images.parquet"), tmp_path / "hub", "someone/photos")
    np.testing.assert_allclose(embed_repo("snapshot.npy"), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embed_repo("snapshot_streamed.npy", "--streaming"), expected, rtol=1e-5, atol=1e-6)
    shutil.rmtree(tmp_path / "hub")
    shutil.rmtree(tmp_path / "datasets")  # what the snapshot's reading prepared, under another name
    with pytest.raises(DatasetError, match=r"someone/photos: no such file or folder, and not a data set in the HF "
                                           r"caches \(Couldn't find cache for someone/photos in .*datasets; no "
                                           r"snapshot in .*hub/datasets--someone--photos\)"):
        ImageRows("someone/photos", "img")
    prepared_copy(Path("images.parquet"), tmp_path / "datasets", "someone/photos")
    np.testing.assert_allclose(embed_repo("prepared.npy"), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embed_repo("prepared_streamed.npy", "--streaming"), expected, rtol=1e-5, atol=1e-6)
    assert "Traceback" not in capsys.readouterr().err
    config = load_config("tiny-cpu", ["image_column=img", "batch_size=4", "num_workers=0"])
    assert train(config, "someone/photos", tmp_path / "run", max_steps=1).step == 1


def test_embed_under_torchrun_writes_every_row_once(dataset, tmp_path):
    """Two CPU ranks (gloo) on a data set, read as mapped rows and streamed (two decoding workers a rank):
    every row once over the shards, each named by its row, embedded as in one process."""
    dataset.save_to_disk(tmp_path / "rows")
    assert main(["embed", str(tmp_path / "rows"), "--image-column", "img", "--out", str(tmp_path / "one.npy")]) == 1
    expected = dict(zip(json.loads((tmp_path / "one.npy.json").read_text())["files"], np.load(tmp_path / "one.npy")))
    for options in (["--num-workers", "0"], ["--streaming", "--num-workers", "2"]):
        out = tmp_path / options[0].strip("-") / "emb.npy"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                   "dseqjepa_cli", "embed", str(tmp_path / "rows"), "--image-column", "img", "--batch-size", "2",
                   "--out", str(out), *options]
        done = subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode != 0 and f"  {tmp_path / 'rows'}#3: " in done.stderr, done.stderr[-3000:]  # row 3 only
        index = json.loads(out.with_name("emb.index.json").read_text())
        written, failed = {}, []
        for shard in index["shards"]:
            sidecar = json.loads((out.parent / shard["sidecar"]).read_text())
            assert not set(sidecar["files"]) & set(written), options  # no row twice
            written.update(zip(sidecar["files"], np.load(out.parent / shard["file"])))
            failed += [failure["file"] for failure in sidecar["failures"]]
        assert sorted(written) == sorted(expected) and failed == [f"{tmp_path / 'rows'}#3"], options
        for name, row in written.items():
            np.testing.assert_allclose(row, expected[name], rtol=1e-5, atol=1e-6)


def test_a_missing_path_that_reads_as_a_file_is_not_taken_for_a_repo_id(tmp_path, monkeypatch, capsys):
    """OWNER/NAME that is no path here is a data set repo id; a missing image file (a typo) or a missing
    folder under an existing one stays a missing path, said as such (no HF cache lookup, no download hint)."""
    from dseqjepa_hub.application.hf_datasets import is_dataset

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert is_dataset("owner/name")
    assert not is_dataset("photos/cat.jpg") and not is_dataset("data/train")
    assert main(["embed", "photos/cat.JPG", "--out", "x.npy"]) != 0
    assert "photos/cat.JPG: file not found" in capsys.readouterr().err
    assert main(["embed", str(Path(__file__).resolve().parents[1] / "examples/images"), "--streaming", "--out", "y.npy"]) != 0
    assert "--streaming reads one Hugging Face data set" in capsys.readouterr().err and not Path("y.npy").exists()


def test_a_streamed_epoch_is_each_rank_s_rows_shuffled_and_cropped_as_files(dataset, tmp_path):
    """`train --data --streaming`: rank r of 2 draws rows r, r + 2, ... through the seeded shuffle buffer, in a new
    order each epoch; the crops are the files' crops of those rows (seeded by epoch and row), the damaged row
    replaced by the next readable one of its batch and counted."""
    dataset.to_parquet(tmp_path / "images.parquet")
    stream = list_image_files(tmp_path / "images.parquet", "img", streaming=True)
    options = {"image_size": 32, "crop_scale": (0.3, 1.0), "mean": [0.5] * 3, "std": [0.2] * 3, "seed": 0}
    ranks = [build_loader(stream, **options, batch_size=2, num_workers=0, world_size=2, rank=rank, shuffle_buffer=2)[1]
             for rank in (0, 1)]
    for epoch in (0, 1):
        drawn = [[sampler.rows.rows[position] for position, _ in sampler.order(epoch)] for sampler in ranks]
        assert sorted(drawn[0]) == [0, 2, 4, 6] and sorted(drawn[1]) == [1, 3, 5, 7], drawn
    assert [[s.rows.rows[p] for p, _ in s.order(0)] for s in ranks] != [[s.rows.rows[p] for p, _ in s.order(1)] for s in ranks]

    mapped = PretrainingImages(ImageRows(tmp_path / "images.parquet", "img"), **options)
    for world_size, rank, start in ((1, 0, 4), (2, 1, 2)):  # rank 1 of 2: positions 0, 1, ... are rows 1, 3, ...
        loader, sampler = build_loader(stream, **options, batch_size=start, num_workers=2, world_size=world_size,
                                       rank=rank, shuffle_buffer=3)
        assert sampler.num_samples == 8 // world_size
        for epoch, first in ((0, 0), (1, 0), (1, start)):
            check_streamed_crops(loader, sampler, mapped, epoch, first, batch_size=start)


def check_streamed_crops(loader, sampler, mapped, epoch: int, start: int, batch_size: int) -> None:
    """The loader's batches from (epoch, start) are the files' crops of the rows the sampler draws."""
    order = [sampler.rows.rows[position] for position, _ in sampler.order(epoch)][start:]
    expected, skipped = [], []
    for slot, row in enumerate(order):
        batch = order[slot // batch_size * batch_size:(slot // batch_size + 1) * batch_size]
        shown = next(other for other in batch[batch.index(row):] + batch if other != 3)
        expected.append(mapped.crop(mapped.paths.load(shown), epoch, row))
        skipped.append(int(row == 3))
    sampler.set_position(epoch, start)
    batches = list(loader)
    assert torch.equal(torch.cat([images for images, _ in batches]), torch.stack(expected)), (epoch, start)
    assert torch.cat([counts for _, counts in batches]).tolist() == skipped


def test_streamed_training_resumes_bit_identical(dataset, tmp_path):
    """Stopped mid-epoch and resumed (two decoding workers, a shuffle buffer), a streamed run ends with the
    uninterrupted run's weights and optimizer state, bit for bit."""
    dataset.to_parquet(tmp_path / "images.parquet")
    config = load_config("tiny-cpu", ["image_column=img", "batch_size=4", "num_workers=2", "epochs=2", "streaming=true",
                                      "shuffle_buffer=3"])
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    train(config, tmp_path / "images.parquet", straight, max_steps=3, progress=False)
    train(config, tmp_path / "images.parquet", pieces, max_steps=1, progress=False)
    assert train(config, tmp_path / "images.parquet", pieces, max_steps=3, resume=True, progress=False).step == 3
    expected, found = run_state(straight), run_state(pieces)
    assert expected.keys() == found.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, found[name]), name
    assert losses(straight) == losses(pieces)
    assert json.loads((straight / "summary.json").read_text())["skipped_images"] >= 1  # the damaged row


def test_streaming_a_folder_or_a_batch_of_unreadable_rows_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "photos" / "a.png")
    assert main(["train", "--config", "tiny-cpu", "--data", str(tmp_path / "photos"), "--output", str(tmp_path / "run"),
                 "--streaming"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--streaming reads a Hugging Face data set" in error, error
    damaged = datasets.Dataset.from_dict({"img": [{"bytes": b"not an image", "path": None}] * 4},
                                         features=datasets.Features({"img": datasets.Image()}))
    damaged.to_parquet(tmp_path / "damaged.parquet")
    assert main(["train", "--config", "tiny-cpu", "--data", str(tmp_path / "damaged.parquet"), "--output",
                 str(tmp_path / "run"), "--streaming", "--set", "image_column=img", "--set", "batch_size=4",
                 "--set", "num_workers=1"]) == 1  # raised in the decoding worker
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("dseqjepa train: error: none of the 4 rows of a batch could be read (") and \
        "Traceback" not in error, error

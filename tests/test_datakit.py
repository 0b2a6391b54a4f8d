"""The offline data kit on a fake Debian tree the tests make (no network, no apt)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dseqjepa_cli import main
from dseqjepa_train.datakit import DataKitError, build_fashion_mnist, build_scenes
from dseqjepa_train.datakit import scenes as scenes_module
from dseqjepa_train.datakit.fashion_mnist import CLASSES, read_idx
from dseqjepa_train.datakit.scenes import find_photo_stamps

STAMPS = "usr/share/tuxpaint/stamps"
BACKGROUNDS = (
    "usr/share/backgrounds/mate/nature/Aqua.jpg",
    "usr/share/backgrounds/mate/nature/Dune.jpg",
    "usr/share/doc/opencv-doc/examples/data/aero1.jpg",
    "usr/share/doc/opencv-doc/examples/data/home.jpg",
    "usr/share/wallpapers/Autumn/contents/images/2560x1600.jpg",
)


def _red_stamp(path: Path, rng: np.random.Generator, size=(72, 56), flat=False) -> None:
    """A red-dominant textured cut-out (an opaque ellipse) with many distinct colours, like a photo."""
    height, width = size[1], size[0]
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    if flat:
        rgba[..., 0] = 220
    else:
        rgba[..., 0] = rng.integers(180, 256, (height, width))
        rgba[..., 1] = rng.integers(0, 40, (height, width))
        rgba[..., 2] = rng.integers(0, 40, (height, width))
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - height / 2) / (height / 2)) ** 2 + ((xx - width / 2) / (width / 2)) ** 2 <= 1
    rgba[..., 3] = np.where(inside, 255, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, mode="RGBA").save(path)


@pytest.fixture(scope="module")
def source_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("debian")
    rng = np.random.default_rng(0)
    for category in ("animals/birds", "food/fruit"):
        for i in range(5):
            _red_stamp(root / STAMPS / category / f"{category.split('/')[-1]}{i}.png", rng)
    _red_stamp(root / STAMPS / "food/fruit/pear1_mirror.png", rng)  # twin of pear1: same group
    _red_stamp(root / STAMPS / "food/fruit/pear1.png", rng)
    for i in range(2):  # too few for their own category: merged into animals/birds
        _red_stamp(root / STAMPS / f"animals/birds/owls/owl{i}.png", rng)
    _red_stamp(root / STAMPS / "animals/birds/cartoon/drawn.png", rng)  # drawn folder
    _red_stamp(root / STAMPS / "animals/birds/vector.png", rng)  # has an SVG twin
    (root / STAMPS / "animals/birds/vector.svg").write_text("<svg/>")
    _red_stamp(root / STAMPS / "animals/birds/flat.png", rng, flat=True)  # few colours
    _red_stamp(root / STAMPS / "animals/birds/shape.png", rng)
    (root / STAMPS / "animals/birds/shape.dat").write_text("colorable\n")
    for relative in BACKGROUNDS:  # blue-dominant noise "photos"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.stack(
            [rng.integers(0, 40, (90, 120)), rng.integers(0, 40, (90, 120)), rng.integers(170, 256, (90, 120))], -1
        )
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)
    os.symlink("2560x1600.jpg", root / "usr/share/wallpapers/Autumn/contents/images/640x480.jpg")
    images = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = np.arange(30, dtype=np.uint8) % 10
    fashion = root / "usr/share/datasets/fashion-mnist"
    fashion.mkdir(parents=True)
    for prefix, count in (("train", 30), ("t10k", 20)):
        _write_idx(fashion / f"{prefix}-images-idx3-ubyte.gz", images[:count])
        _write_idx(fashion / f"{prefix}-labels-idx1-ubyte.gz", labels[:count])
    for package in ("tuxpaint-stamps-default", "mate-backgrounds", "opencv-doc", "plasma-workspace-wallpapers", "dataset-fashion-mnist"):
        doc = root / "usr/share/doc" / package
        doc.mkdir(parents=True, exist_ok=True)
        (doc / "copyright").write_text(f"Files: *\nCopyright: someone\nLicense: TEST-{package}\n")
    return root


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def _build(root: Path, out: Path, seed=3, **kwargs) -> Path:
    options = dict(num_train=6, num_val=3, image_size=48, source_root=root, seed=seed)
    options.update(kwargs)
    return build_scenes(out, **options)


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_photo_stamp_rules_and_category_merge(source_root):
    stamps = find_photo_stamps(source_root)
    names = {Path(s.path).name for s in stamps}
    assert not {"drawn.png", "vector.png", "flat.png", "shape.png"} & names
    assert {"owl0.png", "owl1.png", "birds0.png", "pear1_mirror.png"} <= names
    category = {Path(s.path).name: s.category for s in stamps}
    assert category["owl0.png"] == "animals/birds"  # merged into the parent folder
    group = {Path(s.path).name: s.group for s in stamps}
    assert group["pear1.png"] == group["pear1_mirror.png"]


def test_scenes_deterministic_disjoint_and_consistent(source_root, tmp_path):
    first = _build(source_root, tmp_path / "a")
    second = _build(source_root, tmp_path / "b")
    assert _tree_bytes(first) == _tree_bytes(second)  # same seed, identical bytes
    other = _build(source_root, tmp_path / "c", seed=4)
    assert _tree_bytes(first)["train/images/000000.jpg"] != _tree_bytes(other)["train/images/000000.jpg"]

    build = json.loads((first / "build.json").read_text())
    sources = build["sources"]
    assert not set(sources["train"]["stamps"]) & set(sources["val"]["stamps"])
    assert not set(sources["train"]["backgrounds"]) & set(sources["val"]["backgrounds"])
    pear_splits = {split for split in ("train", "val") for s in sources[split]["stamps"] if "pear1" in s}
    assert len(pear_splits) == 1  # a stamp and its mirror twin stay together
    assert "usr/share/wallpapers/Autumn/contents/images/640x480.jpg" not in sum(
        (sources[s]["backgrounds"] for s in ("train", "val")), []
    )

    for split, count in (("train", 6), ("val", 3)):
        annotations = json.loads((first / split / "annotations.json").read_text())
        assert len(annotations["images"]) == count
        labels = (first / split / "labels.tsv").read_text().splitlines()
        assert len(labels) == count
        for record, line in zip(annotations["images"], labels):
            assert record["background"] in sources[split]["backgrounds"]
            image = np.asarray(Image.open(first / split / record["file"]), dtype=np.int32)  # (48, 48, 3)
            label = np.asarray(Image.open(first / split / record["mask"]))  # (48, 48)
            assert image.shape == (48, 48, 3) and label.shape == (48, 48)
            assert 1 <= len(record["objects"]) <= 4
            assert set(np.unique(label)) - {0} == {o["id"] for o in record["objects"]}
            for obj in record["objects"]:
                assert obj["stamp"] in sources[split]["stamps"]
                ys, xs = np.nonzero(label == obj["id"])
                assert obj["area"] == len(xs)
                assert obj["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            largest = max(record["objects"], key=lambda o: o["area"])
            assert line == f"{record['file']}\t{largest['category']}"
            # Away from edges, masked pixels show the red cut-outs and the rest the blue photo.
            inside = _erode(label > 0)
            outside = _erode(label == 0)
            red, blue = image[..., 0], image[..., 2]
            assert (red[inside] > blue[inside]).all()
            assert (blue[outside] > red[outside]).all()
    licences = (first / "LICENSES.md").read_text()
    assert "TEST-tuxpaint-stamps-default" in licences and "mate-backgrounds" in licences
    assert (first / "licenses/opencv-doc.copyright").is_file()


def _erode(mask: np.ndarray, steps: int = 2) -> np.ndarray:
    for _ in range(steps):
        padded = np.pad(mask, 1)
        mask = mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask


def test_scenes_resume_after_interruption(source_root, tmp_path, monkeypatch):
    reference = _tree_bytes(_build(source_root, tmp_path / "reference"))
    original = scenes_module.compose_scene
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(scenes_module, "compose_scene", failing)
    with pytest.raises(KeyboardInterrupt):
        _build(source_root, tmp_path / "resumed")
    assert not (tmp_path / "resumed").exists()  # nothing half-built at the destination
    assert len(list((tmp_path / "resumed.partial/train/.progress").glob("*.json"))) == 4
    monkeypatch.setattr(scenes_module, "compose_scene", original)
    assert _tree_bytes(_build(source_root, tmp_path / "resumed")) == reference
    with pytest.raises(DataKitError, match="already exists"):
        _build(source_root, tmp_path / "resumed")


def test_force_replaces_a_build_only_once_the_new_one_is_complete(source_root, tmp_path, monkeypatch):
    out = tmp_path / "s"
    previous = _tree_bytes(_build(source_root, out, num_train=2, num_val=1))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scenes_module, "compose_scene", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _build(source_root, out, seed=4, num_train=2, num_val=1, force=True)
    assert _tree_bytes(out) == previous  # the interrupted rebuild left the previous build in place
    monkeypatch.undo()
    rebuilt = _tree_bytes(_build(source_root, out, seed=4, num_train=2, num_val=1, force=True))  # resumes
    assert rebuilt != previous and json.loads(rebuilt["build.json"])["seed"] == 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["s"]


def test_missing_sources_are_named(tmp_path):
    with pytest.raises(DataKitError, match="tuxpaint-stamps-default"):
        _build(tmp_path, tmp_path / "out")
    with pytest.raises(DataKitError, match="dataset-fashion-mnist"):
        build_fashion_mnist(tmp_path / "fm", source_root=tmp_path)


def test_fashion_mnist_image_folder(source_root, tmp_path):
    out = build_fashion_mnist(tmp_path / "fm", num_test=7, source_root=source_root)
    data = source_root / "usr/share/datasets/fashion-mnist"
    images = read_idx(data / "train-images-idx3-ubyte.gz")
    labels = read_idx(data / "train-labels-idx1-ubyte.gz")
    train_files = sorted((out / "train").rglob("*.png"))
    assert len(train_files) == 30 and len(list((out / "test").rglob("*.png"))) == 7
    for path in train_files:
        index = int(path.stem)
        assert path.parent.name == CLASSES[labels[index]]
        assert np.array_equal(np.asarray(Image.open(path)), images[index])
    assert "TEST-dataset-fashion-mnist" in (out / "LICENSES.md").read_text()


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as handle:
        handle.write(bytes([0, 0, 0x08, 1]) + np.asarray([10], dtype=">u4").tobytes() + bytes(5))
    with pytest.raises(DataKitError, match="header says shape"):
        read_idx(bad)
    (tmp_path / "text.idx").write_bytes(b"hello world")
    with pytest.raises(DataKitError, match="not an IDX file"):
        read_idx(tmp_path / "text.idx")


def test_cli_builds_and_reports_errors(source_root, tmp_path, capsys):
    code = main(["data", "build", "scenes", "--out", str(tmp_path / "s"), "--num-train", "2", "--num-val", "1",
                 "--image-size", "40", "--source-root", str(source_root)])
    assert code == 0 and (tmp_path / "s/val/labels.tsv").is_file()
    assert "scenes/train" not in capsys.readouterr().err  # no progress bar into a file or pipe (pytest's capture)
    code = main(["data", "build", "fashion-mnist", "--out", str(tmp_path / "f"), "--source-root", str(tmp_path / "none")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("dseqjepa data: error: ") and "dataset-fashion-mnist" in err and "Traceback" not in err


def test_missing_packages_without_apt_get_fail_clearly(monkeypatch):
    from dseqjepa_train.datakit import sources

    missing = sources.SourcePackage("dataset-fashion-mnist", "nonexistent/for/this/test", "MIT")
    monkeypatch.setitem(sources.PACKAGES, "dataset-fashion-mnist", missing)
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    with pytest.raises(DataKitError, match="apt-get is not available.*--source-root"):
        sources.ensure_packages(["dataset-fashion-mnist"], "/")

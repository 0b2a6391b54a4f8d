"""Fashion-MNIST from Debian's `dataset-fashion-mnist`, written as an image folder.

The package ships the original IDX files, gzip-compressed, in /usr/share/datasets/fashion-mnist
(`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`, `t10k-...`). IDX: a big-endian
header (two zero bytes, a type code, 0x08 = unsigned byte, the number of dimensions, one uint32
per dimension), then the values in row-major order.

Layout of a built set: build.json, LICENSES.md, licenses/, train/<class>/00000.png (28 x 28 grey),
test/<class>/00000.png; the number is the image's index in its IDX file.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import build_dir
from .sources import PACKAGES, DataKitError, ensure_packages, write_licences

PACKAGE = "dataset-fashion-mnist"
CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"), "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzip-compressed or plain) IDX file of unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise DataKitError(f"{path}: cannot read ({error})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataKitError(f"{path}: not an IDX file (the first two bytes must be zero)")
    if data[2] != 0x08:
        raise DataKitError(f"{path}: IDX type code {data[2]:#04x}, expected 0x08 (unsigned byte)")
    num_dims = data[3]
    header = 4 + 4 * num_dims
    shape = tuple(int(n) for n in np.frombuffer(data[4:header], dtype=">u4"))
    if len(data) - header != int(np.prod(shape)):
        raise DataKitError(f"{path}: header says shape {shape} ({int(np.prod(shape))} bytes), found {len(data) - header} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def build_fashion_mnist(
    out: str | Path,
    num_train: int | None = None,
    num_test: int | None = None,
    source_root: str | Path = "/",
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Write Fashion-MNIST (the first `num_train` / `num_test` images of each file, all by default) to `out`;
    a progress bar per split with `progress`."""
    out = Path(out)
    root = ensure_packages([PACKAGE], source_root)
    data_dir = root / PACKAGES[PACKAGE].marker
    limits = {"train": num_train, "test": num_test}
    parameters = {"dataset": "fashion-mnist", "format_version": 1, "classes": list(CLASSES), "limits": limits}
    with build_dir.building(out, parameters, force) as work:
        counts = {}
        for split, (image_file, label_file) in FILES.items():
            images, labels = read_idx(data_dir / image_file), read_idx(data_dir / label_file)
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DataKitError(
                    f"{data_dir}: {image_file} has shape {images.shape} and {label_file} shape {labels.shape}; "
                    "expected (N, H, W) images and N labels"
                )
            if labels.max(initial=0) >= len(CLASSES):
                raise DataKitError(f"{data_dir / label_file}: label {labels.max()} out of range 0..{len(CLASSES) - 1}")
            count = len(images) if limits[split] is None else min(limits[split], len(images))
            for name in CLASSES:
                (work / split / name).mkdir(parents=True, exist_ok=True)
            for index in tqdm(range(count), desc=f"fashion-mnist/{split}", unit="img", disable=not progress):
                path = work / split / CLASSES[labels[index]] / f"{index:05d}.png"
                if not path.exists():
                    build_dir.save_image(Image.fromarray(images[index], mode="L"), path)
            counts[split] = count
        write_licences(work, {PACKAGE: 4}, root, "the Fashion-MNIST image folder")
    print(f"wrote {counts['train']} train and {counts['test']} test images to {out}", flush=True)
    return out

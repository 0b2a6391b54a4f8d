"""Labelled evaluation data: which images, with which class or object masks.

A data folder holds splits (`train` and `val` or `test`). A split is labelled either by a
`labels.tsv` ("relative/path<TAB>class" per line, as the scenes kit writes) or, without one, as
an image folder (`<split>/<class>/*.png`). A scenes split also has `annotations.json` and
label images (0 = background, k = object k) for region quality.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dseqjepa_hub.errors import DSeqJEPAError
from dseqjepa_hub.image_io import image_extensions

EVAL_SPLITS = ("val", "test")


class EvaluationDataError(DSeqJEPAError):
    """The data folder does not have the expected layout; the message says what was expected."""


@dataclass
class LabelledSplit:
    paths: list[Path]
    labels: list[str]


def find_split(data_dir: Path, kind: str) -> Path:
    """The folder of the training split (kind="train") or the evaluation split (kind="eval": val, else test)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise EvaluationDataError(f"data folder {data_dir} does not exist")
    candidates = ["train"] if kind == "train" else list(EVAL_SPLITS)
    for name in candidates:
        if (data_dir / name).is_dir():
            return data_dir / name
    raise EvaluationDataError(f"{data_dir} has no {' or '.join(candidates)} split folder")


def load_labelled_split(split_dir: Path, max_images: int | None = None, seed: int = 0) -> LabelledSplit:
    """Images and class names of a split; `max_images` keeps a seeded random subset (in file order)."""
    labels_file = split_dir / "labels.tsv"
    paths, labels = [], []
    if labels_file.is_file():
        for number, line in enumerate(labels_file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[1]:
                raise EvaluationDataError(f"{labels_file}:{number}: expected 'path<TAB>class', found {line!r}")
            paths.append(split_dir / fields[0])
            labels.append(fields[1])
    else:
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in image_extensions() and not path.name.startswith("."):
                    paths.append(path)
                    labels.append(class_dir.name)
    if not paths:
        raise EvaluationDataError(
            f"{split_dir}: no labelled images (expected labels.tsv or class subfolders with images)"
        )
    if max_images is not None and max_images < len(paths):
        keep = np.sort(np.random.default_rng(seed).choice(len(paths), size=max_images, replace=False))
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    return LabelledSplit(paths, labels)


@dataclass
class SceneRecord:
    image: Path
    mask: Path
    object_ids: list[int]

    def object_masks(self) -> np.ndarray:
        """(K, H, W) bool, one visible mask per object."""
        label = np.asarray(Image.open(self.mask))  # (H, W) uint8
        return np.stack([label == object_id for object_id in self.object_ids])


def load_scene_records(split_dir: Path, max_images: int | None = None, seed: int = 0) -> list[SceneRecord]:
    annotations_file = split_dir / "annotations.json"
    if not annotations_file.is_file():
        raise EvaluationDataError(
            f"{annotations_file} not found: region quality needs a scenes data set (dseqjepa data build scenes)"
        )
    try:
        images = json.loads(annotations_file.read_text(encoding="utf-8"))["images"]
        records = [
            SceneRecord(split_dir / item["file"], split_dir / item["mask"], [obj["id"] for obj in item["objects"]])
            for item in images
        ]
    except (ValueError, KeyError, TypeError) as error:
        raise EvaluationDataError(f"{annotations_file}: not a scenes annotation file ({error!r})") from None
    if max_images is not None and max_images < len(records):
        keep = np.sort(np.random.default_rng(seed).choice(len(records), size=max_images, replace=False))
        records = [records[i] for i in keep]
    return records

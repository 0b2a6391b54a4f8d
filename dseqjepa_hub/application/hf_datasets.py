"""Hugging Face `datasets` as image inputs (the optional extra `datasets`): a folder written by
`Dataset.save_to_disk` (a `DatasetDict`'s "train" split), or Parquet / Arrow files, with an image column.

The rows are read from the memory-mapped Arrow files, never all at once; each image is decoded by the
one decoder (`image_io.load_image_bytes`, or `load_image` for rows that hold a path) when it is used,
and named `SOURCE#ROW` (in errors and in outputs), ROW being the data set's own row index, which a
slice (`rows[rank::world_size]`, a torchrun shard) keeps.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..errors import DSeqJEPAError
from ..image_io import DEFAULT_MAX_PIXELS, ImageLoadError, load_image, load_image_bytes

DATASET_FILES = (".parquet", ".arrow")
SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # what save_to_disk writes


class DatasetError(DSeqJEPAError):
    """A data set that cannot be read as images: `datasets` missing, no such split or image column."""


def is_dataset(source: str | os.PathLike) -> bool:
    """A folder written by save_to_disk, or a Parquet / Arrow file."""
    path = Path(source)
    if path.is_dir():
        return any((path / marker).is_file() for marker in SAVED_MARKERS)
    return path.is_file() and path.suffix in DATASET_FILES


class ImageRows:
    """The images of one column of a data set, by row index (picklable: DataLoader workers reopen the mapped files)."""

    def __init__(self, source: str | os.PathLike, image_column: str = "image"):
        try:
            import datasets
        except ImportError:
            raise DatasetError(f"{source}: reading a data set needs the `datasets` package "
                               "(pip install 'dseqjepa-hub[datasets]')") from None
        path = Path(source)
        try:
            if path.is_dir():
                dataset = datasets.load_from_disk(str(path))
                if isinstance(dataset, datasets.DatasetDict):
                    if "train" not in dataset:
                        raise DatasetError(f"{source}: a DatasetDict without a 'train' split (it has {sorted(dataset)})")
                    dataset = dataset["train"]
            else:
                dataset = datasets.Dataset.from_parquet(str(path)) if path.suffix == ".parquet" else \
                    datasets.Dataset.from_file(str(path))
        except (OSError, ValueError, FileNotFoundError) as error:
            raise DatasetError(f"{source}: not a readable data set ({' '.join(str(error).split())})") from None
        if image_column not in dataset.column_names:
            raise DatasetError(f"{source}: no column {image_column!r} (it has {dataset.column_names}); "
                               "name the image column")
        if isinstance(dataset.features[image_column], datasets.Image):
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))  # bytes: decoded here
        self.source = str(source)
        self.column = dataset.select_columns([image_column])
        self.image_column = image_column
        self.rows: Sequence[int] = range(len(dataset))  # the data set's row index of each position

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: slice | Sequence[int]) -> ImageRows:
        """A subset (a torchrun shard, rows[rank::world_size], or a list of positions) keeping the rows' indices."""
        subset = copy.copy(self)
        subset.rows = self.rows[positions] if isinstance(positions, slice) else [self.rows[i] for i in positions]
        return subset

    def names(self) -> list[Path]:
        return [self.name(position) for position in range(len(self))]

    def name(self, position: int) -> Path:
        return Path(f"{self.source}#{self.rows[position]}")

    def load(self, position: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             max_side: int | None = None) -> Image.Image:
        """The image at `position`, decoded as `image_io.load_image` says (ImageLoadError naming SOURCE#ROW)."""
        value = self.column[self.rows[position]][self.image_column]
        options = {"max_pixels": max_pixels, "max_side": max_side}
        if isinstance(value, dict) and value.get("bytes"):
            return load_image_bytes(value["bytes"], self.name(position), **options)
        if isinstance(value, dict) and value.get("path"):
            return load_image(value["path"], **options)
        if isinstance(value, bytes):
            return load_image_bytes(value, self.name(position), **options)
        raise ImageLoadError(self.name(position), f"the {self.image_column!r} value is not an encoded image "
                                                  f"({type(value).__name__})")

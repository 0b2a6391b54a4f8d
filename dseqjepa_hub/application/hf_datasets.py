"""Hugging Face `datasets` as image inputs (the optional extra `datasets`): a folder written by
`Dataset.save_to_disk` (a `DatasetDict`'s "train" split), Parquet / Arrow files, or the repo id of a data
set in the local HF cache (never fetched: what `load_dataset` prepared in the datasets cache, else the
files `hf download --repo-type dataset` left in the hub cache), with an image column.

The rows are read from the memory-mapped Arrow files, never all at once, or, with `streaming`, read in
order from the files as a `datasets.IterableDataset` (nothing converted, nothing held but the batch being
read). Each image is decoded by the one decoder (`image_io.load_image_bytes`, or `load_image` for rows that
hold a path) when it is used, and named `SOURCE#ROW` (in errors and in outputs), ROW being the data set's
own row index, which a subset (`rows[rank::world_size]`, a torchrun shard) keeps.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from PIL import Image

from ..errors import DSeqJEPAError
from ..image_io import DEFAULT_MAX_PIXELS, ImageLoadError, image_extensions, load_image, load_image_bytes

DATASET_FILES = (".parquet", ".arrow")
SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # what save_to_disk writes
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
STREAM_BATCH = 64  # rows read at a time from a stream


class DatasetError(DSeqJEPAError):
    """A data set that cannot be read as images: `datasets` missing, not cached, no such split or image column."""


def is_dataset(source: str | os.PathLike) -> bool:
    """A folder written by save_to_disk, a Parquet / Arrow file, or OWNER/NAME that is no path here (a repo id,
    looked up in the HF caches; without `datasets` installed, a missing file). A missing path that reads as a
    file or folder here (an image file's extension, or OWNER an existing folder) stays a missing path."""
    path = Path(source)
    if path.is_dir():
        return any((path / marker).is_file() for marker in SAVED_MARKERS)
    if path.exists():
        return path.is_file() and path.suffix in DATASET_FILES
    return (REPO_ID.fullmatch(str(source)) is not None and path.suffix.lower() not in image_extensions()
            and not path.parent.is_dir() and importlib.util.find_spec("datasets") is not None)


@contextlib.contextmanager
def quiet_datasets():
    """`datasets` draws a bar for every split it prepares and warns which cached copy it took: the package's
    calls stay silent (a command draws one bar per job)."""
    from datasets.utils import logging

    enabled, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if enabled:
            logging.enable_progress_bar()


def _cached_builder(repo_id: str):
    """The builder of a data set repo in the HF caches, with no network call: the copy `load_dataset` prepared
    (memory-mapped as it is), else the snapshot in the hub cache (its data files, as `load_dataset` reads a folder)."""
    import datasets
    from datasets.packaged_modules.cache.cache import Cache
    from huggingface_hub import constants, snapshot_download

    try:
        return Cache(repo_id=repo_id, dataset_name=repo_id.split("/")[-1], version="auto", hash="auto")
    except ValueError as error:  # not prepared, or several configurations (named in the message)
        prepared_error = " ".join(str(error).split())
    try:
        folder = snapshot_download(repo_id, repo_type="dataset", local_files_only=True)
    except (OSError, ValueError):
        hub = Path(constants.HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}"
        raise DatasetError(f"{repo_id}: no such file or folder, and not a data set in the HF caches ({prepared_error} "
                           f"in {datasets.config.HF_DATASETS_CACHE}; no snapshot in {hub}); load it once where there "
                           f"is a network (`hf download {repo_id} --repo-type dataset`)") from None
    return datasets.load_dataset_builder(folder)


def _count_rows(builder, source) -> int:
    """The rows of a streamed split: as recorded, else from the Parquet footers or Arrow batch headers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    splits = builder.info.splits
    if splits and "train" in splits and splits["train"].num_examples:
        return splits["train"].num_examples
    files = [str(file) for file in builder.config.data_files["train"]]
    if all(file.endswith(".parquet") for file in files):
        return sum(pq.ParquetFile(file).metadata.num_rows for file in files)
    if all(file.endswith(".arrow") for file in files):
        return sum(pa.ipc.open_stream(pa.memory_map(file)).read_all().num_rows for file in files)
    raise DatasetError(f"{source}: streaming needs Parquet or Arrow data files (or a recorded row count), "
                       f"found {sorted({Path(file).suffix for file in files})}; read it without --streaming")


def open_dataset(source: str | os.PathLike, streaming: bool = False):
    """The "train" split of `source` (see the module docstring) -> (a Dataset or, streaming, an IterableDataset,
    its number of rows)."""
    import datasets
    from pyarrow.dataset import ParquetFragmentScanOptions

    path = Path(source)
    if path.is_dir():
        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            if "train" not in dataset:
                raise DatasetError(f"{source}: a DatasetDict without a 'train' split (it has {sorted(dataset)})")
            dataset = dataset["train"]
        return (dataset.to_iterable_dataset() if streaming else dataset), len(dataset)
    if path.suffix == ".arrow" and not streaming:
        dataset = datasets.Dataset.from_file(str(path))  # memory-mapped as it is
        return dataset, len(dataset)
    if path.is_file():
        builder = datasets.load_dataset_builder(path.suffix[1:], data_files={"train": [str(path)]})
    else:
        builder = _cached_builder(str(source))
        if "train" not in (builder.config.data_files or {"train": None}):
            raise DatasetError(f"{source}: no 'train' split (it has {sorted(builder.config.data_files)})")
    if hasattr(builder.config, "fragment_scan_options"):  # Parquet: each row group read as it comes, then freed
        builder.config.fragment_scan_options = ParquetFragmentScanOptions(pre_buffer=False, use_buffered_stream=True)
        builder.config.batch_size = STREAM_BATCH
    if streaming:
        return builder.as_streaming_dataset(split="train"), _count_rows(builder, source)
    builder.download_and_prepare()  # local files only: Parquet converted once into the datasets cache, then mapped
    dataset = builder.as_dataset(split="train")
    return dataset, len(dataset)


class ImageRows:
    """The images of one column of a data set, by row index (picklable: DataLoader workers reopen the mapped
    files). With `streaming`, rows are read in order (`encoded`), never one at a time."""

    def __init__(self, source: str | os.PathLike, image_column: str = "image", *, streaming: bool = False):
        try:
            import datasets
        except ImportError:
            raise DatasetError(f"{source}: reading a data set needs the `datasets` package "
                               "(pip install 'dseqjepa-hub[datasets]')") from None
        try:
            with quiet_datasets():
                dataset, num_rows = open_dataset(source, streaming)
        except (OSError, ValueError, FileNotFoundError) as error:
            raise DatasetError(f"{source}: not a readable data set ({' '.join(str(error).split())})") from None
        if image_column not in dataset.column_names:
            raise DatasetError(f"{source}: no column {image_column!r} (it has {dataset.column_names}); "
                               "name the image column")
        if isinstance(dataset.features[image_column], datasets.Image):
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))  # bytes: decoded here
        self.source = str(source)
        self.streaming = streaming
        self.column = dataset.select_columns([image_column])
        self.image_column = image_column
        self.rows: Sequence[int] = range(num_rows)  # the data set's row index of each position, ascending

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: slice | Sequence[int]) -> ImageRows:
        """A subset (a torchrun shard, rows[rank::world_size], or ascending positions) keeping the rows' indices."""
        subset = copy.copy(self)
        subset.rows = self.rows[positions] if isinstance(positions, slice) else [self.rows[i] for i in positions]
        return subset

    def names(self) -> list[Path]:
        return [self.name(position) for position in range(len(self))]

    def name(self, position: int) -> Path:
        return Path(f"{self.source}#{self.rows[position]}")

    def stems(self) -> list[Path]:
        """Output names: NAME#ROW, NAME the source's last part (a folder, a file with its extension, a repo's name)."""
        return [Path(f"{Path(self.source).name}#{row}") for row in self.rows]

    def load(self, position: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             max_side: int | None = None) -> Image.Image:
        """The image at `position` (not streaming), decoded as `image_io.load_image` says (ImageLoadError naming SOURCE#ROW)."""
        if self.streaming:
            raise TypeError("a streamed data set is read in order: use encoded()")
        return self.decode(position, self.column[self.rows[position]][self.image_column],
                           max_pixels=max_pixels, max_side=max_side)

    def encoded(self, positions: Iterable[int] | None = None) -> Iterator[tuple[int, object]]:
        """(position, encoded image) for `positions` (ascending; default all), read in one pass over the rows."""
        wanted = iter(range(len(self)) if positions is None else positions)
        position = next(wanted, None)
        first = 0  # the row index of the batch's first row
        for batch in self.column.iter(batch_size=STREAM_BATCH):
            if position is None:
                return
            values = batch[self.image_column]
            while position is not None and self.rows[position] < first + len(values):
                yield position, values[self.rows[position] - first]
                position = next(wanted, None)
            first += len(values)

    def decode(self, position: int, value, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               max_side: int | None = None) -> Image.Image:
        """The encoded image `value` of `position` -> the image (ImageLoadError naming SOURCE#ROW)."""
        options = {"max_pixels": max_pixels, "max_side": max_side}
        if isinstance(value, dict) and value.get("bytes"):
            return load_image_bytes(value["bytes"], self.name(position), **options)
        if isinstance(value, dict) and value.get("path"):
            return load_image(value["path"], **options)
        if isinstance(value, bytes):
            return load_image_bytes(value, self.name(position), **options)
        raise ImageLoadError(self.name(position), f"the {self.image_column!r} value is not an encoded image "
                                                  f"({type(value).__name__})")

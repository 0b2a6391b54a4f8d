"""Pretraining data: an image folder or file list, random-resized crops, a resumable sampler; or a Hugging
Face data set read as a stream through a seeded shuffle buffer.

Every random choice is a function of (seed, epoch, index): the sampler yields (epoch, index)
pairs and the dataset seeds its crop from them (a stream: its order is drawn from (seed, epoch, rank),
each crop from (seed, epoch, row)). Data order and augmentation therefore do not depend on worker
processes or on earlier steps, and a resumed run sees exactly the images and crops the uninterrupted run
would have seen.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, get_worker_info
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms import functional as TF

from dseqjepa_hub.application.hf_datasets import ImageRows, is_dataset
from dseqjepa_hub.errors import DSeqJEPAError
from dseqjepa_hub.image_io import ImageLoadError, find_images, load_image

from .evaluation.labelled_splits import load_labelled_split

logger = logging.getLogger(__name__)


class TrainingDataError(DSeqJEPAError, ValueError):
    """Training images that cannot be found, listed or read."""


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (e.g. seed, epoch, index)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def list_image_files(source: str | os.PathLike, image_column: str = "image",
                     streaming: bool = False) -> list[Path] | ImageRows:
    """Images under a folder (recursive, sorted; class sub-folders are just folders), in a
    text file listing one path per line (relative paths are relative to the list's folder), the images a
    labelled split's labels.tsv lists (the data kit's `scenes/train`: not its masks/), or the `image_column`
    of a Hugging Face data set (a save_to_disk folder, a Parquet or Arrow file, a repo id in the HF caches;
    read as a stream with `streaming`)."""
    if is_dataset(source):
        rows = ImageRows(source, image_column, streaming=streaming)
        if not len(rows):
            raise TrainingDataError(f"--data {source}: the data set has no rows")
        return rows
    if streaming:
        raise TrainingDataError(f"--data {source}: --streaming reads a Hugging Face data set (a save_to_disk folder, a "
                                "Parquet or Arrow file, a repo id in the HF caches), not a folder or a file list")
    source = Path(source)
    if (source / "labels.tsv").is_file():
        paths = load_labelled_split(source).paths
        logger.info("--data %s: a labelled split, its %d images listed in labels.tsv", source, len(paths))
    elif source.is_dir():
        paths, skipped = find_images([source])
        for path, reason in skipped:
            logger.warning("skipping %s: %s", path, reason)
    elif source.is_file():
        paths = []
        for line in source.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                path = Path(line)
                paths.append(path if path.is_absolute() else source.parent / path)
    else:
        raise TrainingDataError(f"--data {source}: no such folder or file list")
    if not paths:
        raise TrainingDataError(f"--data {source}: no image files found (looked for common image extensions, recursively)")
    return paths


class PretrainingImages(Dataset):
    """Indexed by (epoch, index): a random-resized crop of image `index`, seeded by both.

    An unreadable file is skipped: the next readable image (index + 1, ...) takes its place,
    so a batch keeps its size and the epoch goes on. Each item also returns how many files
    were skipped to produce it, for the trainer's count.
    """

    def __init__(self, paths: list[Path] | ImageRows, image_size: int, crop_scale: tuple[float, float],
                 mean: list[float], std: list[float], seed: int):
        self.paths = paths
        self.image_size = image_size
        self.crop_scale = tuple(crop_scale)
        self.mean = mean
        self.std = std
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        for skipped in range(len(self.paths)):
            position = (index + skipped) % len(self.paths)
            try:
                if isinstance(self.paths, ImageRows):
                    image = self.paths.load(position)  # as load_image: the default pixel limit
                else:
                    image = load_image(self.paths[position])
            except ImageLoadError as error:
                logger.warning("skipping unreadable image %s", error)
                continue
            return self.crop(image, epoch, index), skipped
        raise TrainingDataError(f"none of the {len(self.paths)} training images could be read")

    def crop(self, image, epoch: int, index: int) -> torch.Tensor:
        """The crop of image `index` (a data set's row) in `epoch`."""
        return self.transform(image, derive_seed(self.seed, epoch, index))

    def transform(self, image, seed: int) -> torch.Tensor:
        """RandomResizedCrop(scale=crop_scale) drawn from `seed`, then ImageNet normalisation."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            top, left, height, width = RandomResizedCrop.get_params(image, self.crop_scale, (3 / 4, 4 / 3))
        crop = TF.resized_crop(image, top, left, height, width, [self.image_size, self.image_size],
                               interpolation=InterpolationMode.BILINEAR, antialias=True)
        return TF.normalize(TF.to_tensor(crop), self.mean, self.std)  # (3, S, S)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled per epoch from the seed, drop_last) that yields (epoch, index)
    pairs and can start part-way into an epoch."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Begin epoch `epoch` at its `start`-th sample (of this rank)."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        indices = list(super().__iter__())[self.start:]
        return iter([(self.epoch, index) for index in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


class StreamedPretrainingImages(IterableDataset):
    """A streamed data set (`ImageRows` with streaming) as batches of `PretrainingImages`' crops, and its own
    resumable sampler (`set_position`, `num_samples`, as `ResumableSampler`).

    Rank r of K takes rows r, r + K, ... (the slicing of the other streamed jobs) and reads them in order
    through a shuffle buffer of `buffer_size` rows: each row read replaces a row drawn from the buffer by a
    generator seeded by (seed, epoch, rank), so every epoch has its own order. An epoch is the first
    `num_samples` rows drawn (K * num_samples <= the rows: no row twice in an epoch over the ranks), in whole
    batches; a run resumed at (epoch, start) reads the epoch's order again and decodes from its `start`-th
    row on. Each crop is seeded by (seed, epoch, row) as the files' are. An unreadable row is replaced by the
    next readable one of its batch (cropped with its own seed) and counted, so a batch keeps its size.
    DataLoader worker w of W reads the stream and decodes the batches w, w + W, ... (each worker holds its
    own buffer), which the loader's round robin puts back in order.
    """

    def __init__(self, images: PretrainingImages, *, rank: int, world_size: int, batch_size: int, buffer_size: int):
        self.images = images
        self.rows: ImageRows = images.paths[rank::world_size]
        self.rank = rank
        self.batch_size = batch_size
        self.buffer_size = buffer_size
        self.num_samples = len(images.paths) // world_size
        self.epoch = self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Begin epoch `epoch` at its `start`-th row (of this rank)."""
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> Iterator[tuple[int, object]]:
        """(position in this rank's rows, encoded image) of epoch `epoch`, in the shuffle buffer's order."""
        generator = np.random.default_rng(derive_seed(self.images.seed, epoch, self.rank))
        buffer: list = []
        for item in self.rows.encoded():
            if len(buffer) < self.buffer_size:
                buffer.append(item)
                continue
            drawn = int(generator.integers(len(buffer)))
            yield buffer[drawn]
            buffer[drawn] = item
        generator.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        index, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        end = self.num_samples // self.batch_size * self.batch_size  # drop_last
        rows = islice(self.order(self.epoch), self.start, end)
        for number, batch in enumerate(iter(lambda: list(islice(rows, self.batch_size)), [])):
            if number % workers == index:
                yield self.crops(batch)

    def crops(self, batch: list[tuple[int, object]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch's crops (B, 3, S, S) and, per item, 1 where its row was unreadable and replaced."""
        decoded = []
        for position, value in batch:
            try:
                decoded.append(self.rows.decode(position, value))
            except ImageLoadError as error:
                logger.warning("skipping unreadable image %s", error)
                decoded.append(None)
        if all(image is None for image in decoded):
            raise TrainingDataError(f"none of the {len(batch)} rows of a batch could be read "
                                    f"({', '.join(str(self.rows.name(position)) for position, _ in batch)})")
        crops, skipped = [], []
        for slot, (position, _) in enumerate(batch):
            image = next(image for image in decoded[slot:] + decoded[:slot] if image is not None)
            crops.append(self.images.crop(image, self.epoch, self.rows.rows[position]))
            skipped.append(int(decoded[slot] is None))
        return torch.stack(crops), torch.tensor(skipped)


def build_loader(paths: list[Path] | ImageRows, *, image_size: int, crop_scale, mean, std, seed: int, batch_size: int,
                 num_workers: int, world_size: int, rank: int,
                 shuffle_buffer: int = 1000) -> tuple[DataLoader, ResumableSampler | StreamedPretrainingImages]:
    """The batches (crops, skipped) of `paths` and the sampler that positions them; a streamed data set is its
    own sampler (its shuffle buffer holds `shuffle_buffer` rows)."""
    dataset = PretrainingImages(paths, image_size, crop_scale, mean, std, seed)
    if isinstance(paths, ImageRows) and paths.streaming:
        sampler = StreamedPretrainingImages(dataset, rank=rank, world_size=world_size, batch_size=batch_size,
                                            buffer_size=shuffle_buffer)
    else:
        sampler = ResumableSampler(dataset, world_size, rank, seed)
    if sampler.num_samples < batch_size:
        raise TrainingDataError(
            f"{len(paths)} images give {sampler.num_samples} per process, fewer than batch_size {batch_size}; "
            "add images or lower batch_size"
        )
    if isinstance(sampler, StreamedPretrainingImages):
        loader = DataLoader(sampler, batch_size=None, num_workers=num_workers, pin_memory=torch.cuda.is_available())
    else:
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                            pin_memory=torch.cuda.is_available(), drop_last=True)
    return loader, sampler

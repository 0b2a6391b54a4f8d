"""Pretraining data: an image folder or file list, random-resized crops, a resumable sampler.

Every random choice is a function of (seed, epoch, index): the sampler yields (epoch, index)
pairs and the dataset seeds its crop from them. Data order and augmentation therefore do not
depend on worker processes or on earlier steps, and a resumed run sees exactly the images and
crops the uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
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


def list_image_files(source: str | os.PathLike, image_column: str = "image") -> list[Path] | ImageRows:
    """Images under a folder (recursive, sorted; class sub-folders are just folders), in a
    text file listing one path per line (relative paths are relative to the list's folder), the images a
    labelled split's labels.tsv lists (the data kit's `scenes/train`: not its masks/), or the `image_column`
    of a Hugging Face data set (a save_to_disk folder, a Parquet or Arrow file, a repo id in the HF caches)."""
    if is_dataset(source):
        rows = ImageRows(source, image_column)
        if not len(rows):
            raise TrainingDataError(f"--data {source}: the data set has no rows")
        return rows
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
            return self.transform(image, derive_seed(self.seed, epoch, index)), skipped
        raise TrainingDataError(f"none of the {len(self.paths)} training images could be read")

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


def build_loader(paths: list[Path] | ImageRows, *, image_size: int, crop_scale, mean, std, seed: int, batch_size: int,
                 num_workers: int, world_size: int, rank: int) -> tuple[DataLoader, ResumableSampler]:
    dataset = PretrainingImages(paths, image_size, crop_scale, mean, std, seed)
    sampler = ResumableSampler(dataset, world_size, rank, seed)
    if sampler.num_samples < batch_size:
        raise TrainingDataError(
            f"{len(paths)} images give {sampler.num_samples} per process, fewer than batch_size {batch_size}; "
            "add images or lower batch_size"
        )
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        pin_memory=torch.cuda.is_available(), drop_last=True)
    return loader, sampler

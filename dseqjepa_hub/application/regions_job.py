"""Ranked regions of image files, written as overlays (and JSON): the body of `dseqjepa regions`.

For an input image `DIR/sub/cat.jpg` given as `DIR`, the outputs are `OUT/sub/cat.regions.jpg`
(the overlay; `.png` or `.webp` with `overlay_format`) and, with `write_json`, `OUT/sub/cat.regions.json`:
  {"image": path, "size": [H, W], "original_size": [H, W], "model": ...,
   "no_foreground_region": bool, "regions": [region dict, ...]}
where "size" is that of the masks, boxes and overlay (photos above `max_side` pixels a side
are decoded smaller: DEFAULT_MAX_SIDE) and "original_size" that of the file, as displayed,
with masks in COCO RLE (`region_json`); "no_foreground_region" is true when only the
background region was found (no component passed the area filter). The README documents the
schema.

The work is a pipeline (`runner`): worker processes decode and preprocess the files
(the package's safe loader, one image at a time, as the saliency-ranking pipeline does), this
process runs the model on whole batches (`rank_regions`, one forward pass), and a few threads
turn each image's regions into region dicts (`region_dicts`), draw the overlay and write the
files atomically, so `skip_existing` can resume an interrupted run.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dseqjepa_options import DRAWING_MAX_SIDE as DEFAULT_MAX_SIDE  # overlays and masks of larger photos are drawn at this size
from dseqjepa_options import OVERLAY_FORMATS

from ..image_io import DEFAULT_MAX_PIXELS
from ..image_processing_dseqjepa import DSeqJEPAImageProcessor
from ..modeling_dseqjepa import DSeqJEPAModel
from ..regions import rank_regions, region_dicts
from .atomic import atomic_write, atomic_write_text, remove_stale_temporaries
from .drawing import draw_regions, readable
from .hf_datasets import ImageRows
from .region_json import regions_to_json
from .runner import ImageBatch, check_finite, decoded_image, infer_files

# How each overlay format is written. JPEG, the default: an overlay is a photo with a few
# outlines, and JPEG encodes one about 50x faster than PNG at a sixth of the bytes
# (benchmarks/RESULTS.md). PNG (lossless) with zlib's run-length strategy: about 4x faster than
# the default strategy for about 5 % more bytes. WebP at its fastest method: smallest files.
OVERLAY_SAVE_OPTIONS = {
    "jpg": {"format": "JPEG", "quality": 90},
    "png": {"format": "PNG", "compress_type": zlib.Z_RLE},
    "webp": {"format": "WEBP", "quality": 80, "method": 0},
}


def output_stems(paths: Sequence[Path] | ImageRows, inputs: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Relative output stems, one per input image: a data set's rows NAME#ROW; a file found under an
    input folder keeps its path below that folder, a file given directly its name; the extension is
    dropped and a clash gets "-2", "-3"..."""
    if isinstance(paths, ImageRows):
        return paths.stems()
    paths = [Path(path) for path in paths]
    folders = [Path(item) for item in inputs if Path(item).is_dir()]
    stems, taken = [], set()
    for path in paths:
        parent = next((folder for folder in folders if path.is_relative_to(folder)), None)
        stem = (path.relative_to(parent) if parent is not None else Path(path.name)).with_suffix("")
        candidate, counter = stem, 1
        while candidate in taken:
            counter += 1
            candidate = stem.with_name(f"{stem.name}-{counter}")
        taken.add(candidate)
        stems.append(candidate)
    return stems


@dataclass
class _RegionsJob:
    """One image's share of a ranked batch (CPU tensors) and where its outputs go."""

    index: int
    path: Path
    overlay_path: Path
    json_path: Path | None
    image: Image.Image | torch.Tensor  # as decoded (`runner.decoded_image`)
    original_size: tuple[int, int]
    masks: torch.Tensor  # (R, h, w)
    scores: torch.Tensor  # (R,)
    valid: torch.Tensor  # (R,)
    saliency: np.ndarray | None  # (h, w) with show_saliency
    crop_box: tuple[int, int, int, int] | None
    model_description: str
    overlay_format: str


def _write_regions(job: _RegionsJob) -> dict:
    """In a writer thread: region dicts at the image's size, the overlay and the JSON. An image under
    `drawing.MIN_PICTURE_AREA` px² is drawn scaled up (room for the text), as `dseqjepa visualize` draws it;
    the JSON keeps the image's own size, masks and boxes."""
    def regions_at(size: tuple[int, int], crop_box) -> list[dict]:
        return region_dicts(masks=job.masks, scores=job.scores, valid=job.valid, original_size=size, crop_box=crop_box)

    original = decoded_image(job.image)
    height, width = original.height, original.width
    regions = regions_at((height, width), job.crop_box)
    no_foreground = not any(not region["is_background"] for region in regions)
    image, shown_box = readable(original, job.crop_box)
    drawn = regions if image is original else regions_at((image.height, image.width), shown_box)
    overlay = draw_regions(
        image,
        drawn,
        show_saliency=job.saliency is not None,
        saliency=job.saliency,
        saliency_box=shown_box,
    )
    # The job cleared its folder's stale temporaries when it started (`rank_regions_in_files`).
    atomic_write(job.overlay_path, partial(overlay.save, **OVERLAY_SAVE_OPTIONS[job.overlay_format]), clear_stale=False)
    if job.json_path is not None:
        record = {
            "image": str(job.path),
            "size": [height, width],  # of the masks and boxes (and of the overlay, unless drawn scaled up)
            "original_size": list(job.original_size),
            "model": job.model_description,
            "no_foreground_region": no_foreground,
            "regions": regions_to_json(regions),
        }
        atomic_write_text(job.json_path, json.dumps(record), clear_stale=False)
    return {
        "index": job.index,
        "image": job.path,
        "overlay": job.overlay_path,
        "json": job.json_path,
        "num_regions": len(regions),
        "no_foreground_region": no_foreground,
        "skipped": False,
    }


def ranked_regions_forward(
    model: DSeqJEPAModel, *, num_regions: int | None = None, min_region_fraction: float | None = None,
    saliency: bool = True,
):
    """The forward pass of the region jobs (`runner.infer_files`): `rank_regions` on a batch ->
    masks, scores, valid, with `saliency` the saliency (float), and "finite" (False when the
    saliency or the scores hold NaN or inf)."""

    def forward(pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        ranked = rank_regions(model, pixel_values, min_region_fraction=min_region_fraction, num_regions=num_regions)
        outputs = {name: ranked[name] for name in ("masks", "scores", "valid")}
        outputs["finite"] = torch.isfinite(ranked["saliency"]).all() & torch.isfinite(ranked["scores"]).all()
        if saliency:
            outputs["saliency"] = ranked["saliency"].float()
        return outputs

    return forward


def batch_regions(outputs: dict[str, torch.Tensor], row: int, size: tuple[int, int], crop_box) -> list[dict]:
    """Region dicts of one image of a ranked batch (host tensors), at its decoded `size`."""
    return region_dicts(masks=outputs["masks"][row], scores=outputs["scores"][row], valid=outputs["valid"][row],
                        original_size=size, crop_box=crop_box)


def rank_regions_in_files(
    paths: Sequence[Path],
    model: DSeqJEPAModel,
    processor: DSeqJEPAImageProcessor,
    *,
    out_dir: str | os.PathLike,
    stems: Sequence[Path] | None = None,
    write_json: bool = False,
    min_region_fraction: float | None = None,
    num_regions: int | None = None,
    batch_size: int = 8,
    show_saliency: bool = False,
    skip_existing: bool = False,
    overlay_format: str = OVERLAY_FORMATS[0],
    model_description: str = "",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
    num_workers: int | None = None,
    write_threads: int | None = None,
    progress: bool = False,
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Rank regions of every image, write its overlay (and JSON) -> (results, failures).

    overlay_format: "jpg" (default), "png" or "webp" (OVERLAY_SAVE_OPTIONS).
    Images are decoded at most `max_side` pixels a side (None: full size): overlays, masks and
    boxes are in the decoded image's pixels; the JSON records both sizes.
    num_workers: decoding processes (None: `runner.default_num_workers`; 0: this
    process); write_threads: threads that draw and write (None: `runner.default_write_threads()`), at a
    lower priority than the model's (Linux).
    results: one dict per image that has its outputs, in input order: {"image", "overlay",
    "json" (or None), "num_regions", "no_foreground_region", "skipped"}; with `skip_existing`,
    images whose outputs already exist have "skipped": True (and None for the two counts).
    failures: (path, reason) for every unreadable file, which is skipped.
    """
    if overlay_format not in OVERLAY_SAVE_OPTIONS:
        raise ValueError(f"overlay_format must be one of {', '.join(OVERLAY_FORMATS)}, got {overlay_format!r}")
    out_dir = Path(out_dir)
    remove_stale_temporaries(out_dir, recursive=True)  # left by a killed run; never outputs
    if stems is None:
        stems = output_stems(paths)
    rows = paths if isinstance(paths, ImageRows) else None  # a data set's rows, named SOURCE#ROW
    paths = rows.names() if rows is not None else paths
    results: list[dict] = []
    todo: list[tuple[int, Path, Path, Path | None]] = []
    for index, (path, stem) in enumerate(zip(paths, stems, strict=True)):
        overlay_path = out_dir / f"{stem}.regions.{overlay_format}"
        json_path = out_dir / f"{stem}.regions.json" if write_json else None
        if skip_existing and overlay_path.exists() and (json_path is None or json_path.exists()):
            results.append({"index": index, "image": Path(path), "overlay": overlay_path, "json": json_path,
                            "num_regions": None, "no_foreground_region": None, "skipped": True})
        else:
            todo.append((index, Path(path), overlay_path, json_path))
    crop_box = getattr(processor, "crop_box", None)  # None: the model saw all of the image
    description = model_description or model.name_or_path
    forward = ranked_regions_forward(model, num_regions=num_regions, min_region_fraction=min_region_fraction,
                                     saliency=show_saliency)

    def jobs(batch: ImageBatch, ranked: dict[str, torch.Tensor]) -> list[partial]:
        check_finite(ranked, f"the model {description} gives non-finite saliency for {batch.paths[0]} and this batch")
        saliency = ranked["saliency"].numpy() if show_saliency else None
        for row, position in enumerate(batch.indices):
            index, path, overlay_path, json_path = todo[position]
            height, width = batch.sizes[row]
            job = _RegionsJob(
                index=index, path=path, overlay_path=overlay_path, json_path=json_path, image=batch.images[row],
                original_size=batch.original_sizes[row], masks=ranked["masks"][row], scores=ranked["scores"][row],
                valid=ranked["valid"][row], saliency=None if saliency is None else saliency[row],
                crop_box=None if crop_box is None else crop_box(original_size=(height, width)),
                model_description=model_description, overlay_format=overlay_format,
            )
            yield partial(_write_regions, job)

    inputs = [path for _, path, _, _ in todo] if rows is None else rows[[index for index, _, _, _ in todo]]
    written, failures = infer_files(
        inputs, processor, forward, jobs, device=model.device, dtype=model.dtype,
        batch_size=batch_size, num_workers=num_workers, max_pixels=max_pixels, max_side=max_side, keep_images=True,
        write_threads=write_threads, progress=progress, desc="regions", skipped=len(paths) - len(todo),
    )
    results.extend(written)
    results.sort(key=lambda result: result["index"])
    for result in results:
        del result["index"]
    return results, failures

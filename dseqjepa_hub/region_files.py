"""Ranked regions of image files, written as overlays (and JSON): the body of `dseqjepa regions`.

For an input image `DIR/sub/cat.jpg` given as `DIR`, the outputs are `OUT/sub/cat.regions.png`
(the overlay) and, with `write_json`, `OUT/sub/cat.regions.json`:
  {"image": path, "size": [H, W], "original_size": [H, W], "model": ..., "regions": [region dict, ...]}
where "size" is that of the masks, boxes and overlay (photos above `max_side` pixels a side
are decoded smaller: DEFAULT_MAX_SIDE) and "original_size" that of the file, as displayed
with masks in COCO RLE (`region_json`). Images are decoded a few batches at a time and ranked
by the saliency-ranking pipeline; each output is written atomically, so `skip_existing` can
resume an interrupted run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .atomic import atomic_write, atomic_write_text, remove_stale_temporaries
from .errors import NonFiniteOutputError
from .image_io import DEFAULT_MAX_PIXELS, load_images
from .image_processing_dseqjepa import DSeqJEPAImageProcessor
from .modeling_dseqjepa import DSeqJEPAModel
from .pipeline_saliency_ranking import SaliencyRankingPipeline
from .region_json import regions_to_json
from .visualization import draw_regions

DEFAULT_MAX_SIDE = 2048  # overlays and masks of larger photos are drawn at this size


def output_stems(paths: Sequence[Path], inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Relative output stems: a file found under an input folder keeps its path below that
    folder, a file given directly its name; the extension is dropped and a clash gets "-2", "-3"..."""
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
    model_description: str = "",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
    progress: bool = True,
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Rank regions of every image, write its overlay PNG (and JSON) -> (results, failures).

    Images are decoded at most `max_side` pixels a side (None: full size): overlays, masks and
    boxes are in the decoded image's pixels; the JSON records both sizes.
    results: one dict per written image {"image", "overlay", "json" (or None), "num_regions"};
    failures: (path, reason) for every unreadable file, which is skipped.
    """
    out_dir = Path(out_dir)
    remove_stale_temporaries(out_dir, recursive=True)  # left by a killed run; never outputs
    stems = list(stems) if stems is not None else [Path(Path(path).stem) for path in paths]
    pipe = SaliencyRankingPipeline(model=model, image_processor=processor, device=model.device)
    results, failures = [], []
    chunk = max(batch_size, 1) * 4  # images decoded at a time
    with tqdm(total=len(paths), desc="regions", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), chunk):
            todo = []
            for path, stem in zip(paths[start : start + chunk], stems[start : start + chunk]):
                overlay_path = out_dir / f"{stem}.regions.png"
                json_path = out_dir / f"{stem}.regions.json" if write_json else None
                if skip_existing and overlay_path.exists() and (json_path is None or json_path.exists()):
                    bar.update(1)
                    continue
                todo.append((Path(path), overlay_path, json_path))
            loaded, failed = load_images((path for path, _, _ in todo), max_pixels=max_pixels, max_side=max_side)
            failures.extend(failed)
            bar.update(len(failed))
            targets = {path: (overlay_path, json_path) for path, overlay_path, json_path in todo}
            if not loaded:
                continue
            ranked = pipe(
                [image for _, image in loaded],
                batch_size=batch_size,
                min_region_fraction=min_region_fraction,
                num_regions=num_regions,
                return_saliency=show_saliency,
            )
            scores = np.array([region["score"] for regions in ranked for region in regions], dtype=np.float64)
            if not np.isfinite(scores).all():
                raise NonFiniteOutputError(
                    f"the model {model_description or model.name_or_path} gives non-finite saliency for "
                    f"{loaded[0][0]} and this batch: its weights or config hold NaN or inf; stopped before writing this batch"
                )
            for (path, image), regions in zip(loaded, ranked):
                overlay_path, json_path = targets[path]
                saliency = regions[0]["saliency"] if show_saliency and regions else None
                overlay = draw_regions(
                    image,
                    regions,
                    show_saliency=show_saliency,
                    saliency=saliency,
                    saliency_box=processor.crop_box(original_size=(image.height, image.width)),
                )
                atomic_write(overlay_path, partial(overlay.save, format="PNG"))
                if json_path is not None:
                    record = {
                        "image": str(path),
                        "size": [image.height, image.width],  # of the masks and boxes
                        "original_size": list(image.info["original_size"]),
                        "model": model_description,
                        "regions": regions_to_json(regions),
                    }
                    atomic_write_text(json_path, json.dumps(record))
                results.append(
                    {"image": path, "overlay": overlay_path, "json": json_path, "num_regions": len(regions)}
                )
                bar.update(1)
    return results, failures

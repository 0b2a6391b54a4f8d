"""Pictures of image files for `dseqjepa visualize`: one PNG per image and kind, and an index JSON.

For an input image `DIR/sub/cat.jpg` given as `DIR` and `kind` K, the picture is
`OUT/sub/cat.K.png`; `OUT/K.json` lists every image written:
  {"kind": K, "model": ..., "options": {...}, "images": [{"image", "output", "size": [H, W], ...}]}
with, per kind: regions and sequence: "no_foreground_region" and the regions (rank, score,
is_background, area_fraction, box), sequence also its "steps" (step, context_ranks, target_rank);
attention: "layer", "heads"; similarity: "layer", "query"; clusters: "layer", "method",
"cluster_sizes" (patches per cluster). Images are decoded and run a batch at a time; every file
is written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dseqjepa_options import DRAWING_MAX_SIDE as DEFAULT_MAX_SIDE
from dseqjepa_options import VISUALIZE_KINDS as KINDS

from ..errors import DSeqJEPAError, NonFiniteOutputError
from ..image_io import DEFAULT_MAX_PIXELS, load_images
from ..image_processing_dseqjepa import DSeqJEPAImageProcessor
from ..modeling_dseqjepa import DSeqJEPAModel
from ..pipeline_saliency_ranking import rank_regions
from ..regions import region_dicts
from . import feature_maps as maps
from .atomic import atomic_write, atomic_write_text, remove_stale_temporaries
from .drawing import (
    draw_attention,
    draw_clusters,
    draw_regions,
    draw_saliency,
    draw_sequence,
    draw_similarity,
)


def parse_query(text: str) -> tuple[int, int] | str:
    """"cls" or "ROW,COL" (0-based patch grid position) -> "cls" or (row, col)."""
    if text.strip().lower() == "cls":
        return "cls"
    try:
        row, col = (int(part) for part in text.split(","))
    except ValueError:
        raise maps.MapError(f"query {text!r}: expected 'cls' or ROW,COL (a patch of the grid, 0-based)") from None
    return row, col


def visualize_files(
    paths: Sequence[Path],
    model: DSeqJEPAModel,
    processor: DSeqJEPAImageProcessor,
    kind: str,
    *,
    out_dir: str | os.PathLike,
    stems: Sequence[Path] | None = None,
    batch_size: int = 8,
    num_regions: int | None = None,
    min_region_fraction: float | None = None,
    layer: int = -1,
    query: tuple[int, int] | str = "cls",
    num_clusters: int = 4,
    method: str = "kmeans",
    seed: int = 0,
    model_description: str = "",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
    log=print,
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Draw `kind` for every image into `out_dir` -> (index entries of the written images, failures)."""
    if kind not in KINDS:
        raise DSeqJEPAError(f"unknown kind {kind!r}; expected one of {KINDS}")
    out_dir = Path(out_dir)
    remove_stale_temporaries(out_dir, recursive=True)
    stems = list(stems) if stems is not None else [Path(Path(path).stem) for path in paths]
    options = {"layer": layer} if kind in ("attention", "similarity", "clusters") else {}
    if kind in ("regions", "sequence"):
        options = {
            "num_regions": model.config.num_regions if num_regions is None else num_regions,
            "min_region_fraction": model.config.min_region_fraction if min_region_fraction is None else min_region_fraction,
        }
    elif kind == "similarity":
        options["query"] = query if isinstance(query, str) else list(query)
    elif kind == "clusters":
        options.update(num_clusters=num_clusters, method=method, seed=seed)
    entries, failures = [], []
    for start in range(0, len(paths), max(batch_size, 1)):
        chunk = list(zip(paths[start : start + batch_size], stems[start : start + batch_size]))
        loaded, failed = load_images((path for path, _ in chunk), max_pixels=max_pixels, max_side=max_side)
        failures.extend(failed)
        if not loaded:
            continue
        stem_of = {Path(path): stem for path, stem in chunk}
        images = [image for _, image in loaded]
        pixel_values = processor(images, return_tensors="pt")["pixel_values"].to(model.device, model.dtype)
        with torch.no_grad():
            pictures = _draw_batch(kind, model, processor, images, pixel_values, options)
        for (path, image), (picture, details) in zip(loaded, pictures):
            output = out_dir / f"{stem_of[path]}.{kind}.png"
            atomic_write(output, partial(picture.save, format="PNG"))
            entry = {"image": str(path), "output": str(output), "size": [image.height, image.width], **details}
            if entry.get("no_foreground_region"):
                log(f"{path}: no foreground region, only the background (try a lower --min-region-fraction)")
            entries.append(entry)
    index = {"kind": kind, "model": model_description, "options": options, "images": entries}
    atomic_write_text(out_dir / f"{kind}.json", json.dumps(index, indent=1) + "\n")
    return entries, failures


def _finite(values: torch.Tensor, what: str, model: DSeqJEPAModel) -> np.ndarray:
    array = values.float().cpu().numpy()
    if not np.isfinite(array).all():
        raise NonFiniteOutputError(
            f"the model {model.name_or_path} gives non-finite {what}: its weights or config hold NaN or inf; "
            "nothing was written for this batch"
        )
    return array


def _draw_batch(kind, model, processor, images, pixel_values, options) -> list[tuple[Image.Image, dict]]:
    boxes = [processor.crop_box(original_size=(image.height, image.width)) for image in images]
    if kind in ("regions", "sequence"):
        ranked = rank_regions(model, pixel_values, num_regions=options["num_regions"],
                              min_region_fraction=options["min_region_fraction"])
        saliency = _finite(ranked["saliency"], "saliency", model)
        pictures = []
        for index, (image, box) in enumerate(zip(images, boxes)):
            regions = region_dicts(
                masks=ranked["masks"][index], scores=ranked["scores"][index], valid=ranked["valid"][index],
                original_size=(image.height, image.width), crop_box=box,
            )
            details = {
                "no_foreground_region": not any(not region["is_background"] for region in regions),
                "regions": [{key: region[key] for key in ("rank", "is_background", "score", "area_fraction", "box")}
                            for region in regions],
            }
            if kind == "regions":
                picture = draw_regions(image, regions, show_saliency=True, saliency=saliency[index], saliency_box=box)
            else:
                steps = maps.prediction_steps(regions)
                details["steps"] = [{key: step[key] for key in ("step", "context_ranks", "target_rank")} for step in steps]
                picture = draw_sequence(image, steps)
            pictures.append((picture, details))
        return pictures
    if kind == "saliency":
        saliency = _finite(model(pixel_values, output_saliency=True).saliency, "saliency", model)
        return [(draw_saliency(image, values, box), {}) for image, values, box in zip(images, saliency, boxes)]
    if kind == "attention":
        attention = _finite(maps.cls_attention(model, pixel_values, options["layer"]), "attention", model)
        return [(draw_attention(image, values, box), {"layer": options["layer"], "heads": int(values.shape[0])})
                for image, values, box in zip(images, attention, boxes)]
    if kind == "similarity":
        query = options["query"] if isinstance(options["query"], str) else tuple(options["query"])
        similarity = _finite(maps.patch_similarity(model, pixel_values, query, options["layer"]), "features", model)
        patch = None if isinstance(query, str) else query
        return [(draw_similarity(image, values, box, query=patch), {"layer": options["layer"], "query": options["query"]})
                for image, values, box in zip(images, similarity, boxes)]
    labels = maps.cluster_patches(model, pixel_values, options["num_clusters"], method=options["method"],
                                  layer=options["layer"], seed=options["seed"]).cpu().numpy()
    return [(draw_clusters(image, values, box),
             {"layer": options["layer"], "method": options["method"],
              "cluster_sizes": np.bincount(values.ravel(), minlength=options["num_clusters"]).tolist()})
            for image, values, box in zip(images, labels, boxes)]

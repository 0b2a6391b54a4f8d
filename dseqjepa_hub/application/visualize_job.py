"""Pictures of image files for `dseqjepa visualize`: one PNG per image and kind, and an index JSON.

For an input image `DIR/sub/cat.jpg` given as `DIR` and `kind` K, the picture is
`OUT/sub/cat.T.png`, where the tag T is K followed by every option that differs from its default
(`similarity-query5,6`, `attention-layer-2`, `clusters-k3-spectral`, `sequence-min0.05`; K alone with
the defaults), so that runs with other options never overwrite each other; `OUT/T.json` lists every
image written:
  {"kind": K, "model": ..., "options": {...}, "images": [{"image", "output", "size": [H, W], ...}]}
with, per kind: regions and sequence: "no_foreground_region" and the regions (rank, score,
is_background, area_fraction, box), sequence also its "steps" (step, context_ranks, target_rank);
attention: "layer", "heads"; similarity: "layer", "query"; clusters: "layer", "method",
"cluster_sizes" (patches per cluster); pca: "layer", "foreground" and, with it, "foreground_fraction" (the
share of patches drawn). A pca run fits its basis on the first batch and colours every image with it,
so that a colour means the same direction of the features in every picture. Images are decoded and run a batch at a time; every file
is written atomically, through the one runner (`runner.infer_files`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

from dseqjepa_options import DRAWING_MAX_SIDE as DEFAULT_MAX_SIDE
from dseqjepa_options import VISUALIZE_KINDS as KINDS

from ..errors import DSeqJEPAError
from ..image_io import DEFAULT_MAX_PIXELS
from ..image_processing_dseqjepa import DSeqJEPAImageProcessor
from ..modeling_dseqjepa import DSeqJEPAModel
from . import feature_maps as maps
from .atomic import atomic_write, atomic_write_text, remove_stale_temporaries
from .drawing import (
    draw_attention,
    draw_clusters,
    draw_pca,
    draw_regions,
    draw_saliency,
    draw_sequence,
    draw_similarity,
    readable,
)
from .regions_job import batch_regions, output_stems, ranked_regions_forward
from .runner import Forward, ImageBatch, check_finite, decoded_image, infer_files


def parse_query(text: str) -> tuple[int, int] | str:
    """"cls" or "ROW,COL" (0-based patch grid position) -> "cls" or (row, col)."""
    if text.strip().lower() == "cls":
        return "cls"
    try:
        row, col = (int(part) for part in text.split(","))
    except ValueError:
        raise maps.MapError(f"query {text!r}: expected 'cls' or ROW,COL (a patch of the grid, 0-based)") from None
    return row, col


OPTION_TAGS = {"num_regions": "regions", "min_region_fraction": "min", "layer": "layer", "query": "query",
               "num_clusters": "k", "method": "", "seed": "seed", "foreground": "foreground"}  # option -> its prefix in an output's tag


def kind_options(kind: str, model: DSeqJEPAModel, *, num_regions: int | None = None,
                 min_region_fraction: float | None = None, layer: int = -1, query: tuple[int, int] | str = "cls",
                 num_clusters: int = 4, foreground: bool = False, method: str = "kmeans", seed: int = 0) -> dict:
    """The options that `kind` draws with (recorded in its index), the model's defaults filled in."""
    if kind in ("regions", "sequence"):
        return {
            "num_regions": model.config.num_regions if num_regions is None else num_regions,
            "min_region_fraction": model.config.min_region_fraction if min_region_fraction is None else min_region_fraction,
        }
    options = {"layer": layer} if kind in ("attention", "similarity", "clusters", "pca") else {}
    if kind == "similarity":
        options["query"] = query if isinstance(query, str) else list(query)
    elif kind == "clusters":
        options.update(num_clusters=num_clusters, method=method, seed=seed)
    elif kind == "pca":
        options["foreground"] = foreground
    return options


def output_tag(kind: str, model: DSeqJEPAModel, **chosen) -> str:
    """`kind`, then each option (`kind_options`'s) that differs from its default: what distinguishes a run's
    file names, `OUT/<image>.TAG.png` and `OUT/TAG.json`."""
    options, defaults = kind_options(kind, model, **chosen), kind_options(kind, model)
    parts = [kind]
    for name, value in options.items():
        if value != defaults[name]:
            text = ("" if isinstance(value, bool) else ",".join(str(v) for v in value) if isinstance(value, list)
                    else f"{value:g}" if isinstance(value, float) else str(value))
            parts.append(OPTION_TAGS[name] + text)
    return "-".join(parts)


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
    foreground: bool = False,
    method: str = "kmeans",
    seed: int = 0,
    model_description: str = "",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
    num_workers: int | None = None,
    write_threads: int | None = None,
    progress: bool = False,
    log=print,
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Draw `kind` for every image into `out_dir` -> (index entries of the written images, failures).

    Through the runner (`runner.infer_files`): decoded in `num_workers` processes, the model on
    whole batches, each picture drawn and written in one of `write_threads` threads."""
    if kind not in KINDS:
        raise DSeqJEPAError(f"unknown kind {kind!r}; expected one of {KINDS}")
    out_dir = Path(out_dir)
    remove_stale_temporaries(out_dir, recursive=True)
    if stems is None:
        stems = output_stems(paths)
    options = kind_options(kind, model, num_regions=num_regions, min_region_fraction=min_region_fraction, layer=layer,
                           query=query, num_clusters=num_clusters, foreground=foreground, method=method, seed=seed)
    tag = output_tag(kind, model, num_regions=num_regions, min_region_fraction=min_region_fraction, layer=layer,
                     query=query, num_clusters=num_clusters, foreground=foreground, method=method, seed=seed)
    forward, what = _forward(kind, model, options)

    def jobs(batch: ImageBatch, outputs: dict[str, torch.Tensor]):
        if what is not None:
            check_finite(outputs, f"the model {model.name_or_path} gives non-finite {what}",
                         then="nothing was written for this batch")
        for row, position in enumerate(batch.indices):
            output = out_dir / f"{stems[position]}.{tag}.png"
            box = processor.crop_box(original_size=batch.sizes[row])
            yield partial(_draw_one, kind, batch.paths[row], batch.images[row], outputs, row, box, options, output)

    entries, failures = infer_files(
        paths, processor, forward, jobs, device=model.device, dtype=model.dtype, batch_size=batch_size,
        num_workers=num_workers, max_pixels=max_pixels, max_side=max_side, keep_images=True,
        write_threads=write_threads, progress=progress, desc=kind,
    )
    for entry in entries:
        if entry.get("no_foreground_region"):
            log(f"{entry['image']}: no foreground region, only the background (try a lower --min-region-fraction)")
    index = {"kind": kind, "model": model_description, "options": options, "images": entries}
    atomic_write_text(out_dir / f"{tag}.json", json.dumps(index, indent=1) + "\n")
    return entries, failures


def _forward(kind: str, model: DSeqJEPAModel, options: dict) -> tuple[Forward, str | None]:
    """The forward pass that `kind` draws -> (forward, what its "finite" flag checks, or None)."""
    if kind in ("regions", "sequence"):
        return ranked_regions_forward(model, num_regions=options["num_regions"],
                                      min_region_fraction=options["min_region_fraction"]), "saliency"
    if kind == "clusters":  # cluster_patches refuses non-finite features itself
        return (lambda pixel_values: {"labels": maps.cluster_patches(
            model, pixel_values, options["num_clusters"], method=options["method"], layer=options["layer"],
            seed=options["seed"])}), None
    if kind == "pca":
        return _pca_forward(model, options), None
    if kind == "saliency":
        values, what = (lambda pixel_values: model(pixel_values, output_saliency=True).saliency), "saliency"
    elif kind == "attention":
        values, what = (lambda pixel_values: maps.cls_attention(model, pixel_values, options["layer"])), "attention"
    else:
        query = options["query"] if isinstance(options["query"], str) else tuple(options["query"])
        values, what = (lambda pixel_values: maps.patch_similarity(model, pixel_values, query, options["layer"])), "features"

    def forward(pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        result = values(pixel_values).float()
        return {"values": result, "finite": torch.isfinite(result).all()}

    return forward, what


def _pca_forward(model: DSeqJEPAModel, options: dict) -> Forward:
    """PCA maps, the basis fitted on the first batch (the runner forwards the batches in order) and kept."""
    fitted = {}

    def forward(pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        colors, mask, fitted["basis"] = maps.pca_tensors(model, pixel_values, layer=options["layer"],
                                                         foreground=options["foreground"], basis=fitted.get("basis"))
        return {"values": colors} if mask is None else {"values": colors, "foreground": mask}

    return forward


def _draw_one(kind, path: Path, decoded, outputs: dict, row: int, box, options: dict, output: Path) -> dict:
    """In a writer thread: one image's picture of `kind`, written to `output` -> its index entry. An image
    under `drawing.MIN_PICTURE_AREA` px² is drawn scaled up (room for the text); the entry is the image's own."""
    original = decoded_image(decoded)
    image, shown_box = readable(original, box)
    details = {}
    if kind in ("regions", "sequence"):
        regions = batch_regions(outputs, row, (original.height, original.width), box)
        details = {
            "no_foreground_region": not any(not region["is_background"] for region in regions),
            "regions": [{key: region[key] for key in ("rank", "is_background", "score", "area_fraction", "box")}
                        for region in regions],
        }
        if image is not original:  # drawn at the scaled-up size
            regions = batch_regions(outputs, row, (image.height, image.width), shown_box)
        if kind == "regions":
            picture = draw_regions(image, regions, show_saliency=True, saliency=outputs["saliency"][row].numpy(),
                                   saliency_box=shown_box)
        else:
            steps = maps.prediction_steps(regions)
            details["steps"] = [{key: step[key] for key in ("step", "context_ranks", "target_rank")} for step in steps]
            picture = draw_sequence(image, steps)
    elif kind == "pca":
        picture = draw_pca(image, outputs["values"][row].numpy(), shown_box)
        details = {"layer": options["layer"], "foreground": options["foreground"]}
        if options["foreground"]:
            details["foreground_fraction"] = float(outputs["foreground"][row].float().mean())
    elif kind == "clusters":
        labels = outputs["labels"][row].numpy()
        picture = draw_clusters(image, labels, shown_box)
        details = {"layer": options["layer"], "method": options["method"],
                   "cluster_sizes": np.bincount(labels.ravel(), minlength=options["num_clusters"]).tolist()}
    else:
        values = outputs["values"][row].numpy()
        if kind == "saliency":
            picture = draw_saliency(image, values, shown_box)
        elif kind == "attention":
            picture = draw_attention(image, values, shown_box)
            details = {"layer": options["layer"], "heads": int(values.shape[0])}
        else:
            query = options["query"]
            picture = draw_similarity(image, values, shown_box, query=None if isinstance(query, str) else tuple(query))
            details = {"layer": options["layer"], "query": query}
    atomic_write(output, partial(picture.save, format="PNG"), clear_stale=False)  # the job cleared its folder first
    return {"image": str(path), "output": str(output), "size": [original.height, original.width], **details}

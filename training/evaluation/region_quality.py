"""Region quality on the scenes set: does a model's top-1 region fall on an object?

Per image, the model's top-1 region (rank 1, not the background) is mapped to the original
image through the processor's crop box and compared with the ground-truth object masks:
- precision = |region ∩ union of objects| / |region|; the image is a hit when precision >= 0.5;
- IoU with the best-matching single object.
An image whose saliency yields no region except the background counts as a miss with
precision 0 and IoU 0.

Baselines:
- centred box: a box centred in the image with the image's aspect ratio, covering the mean area
  fraction of the model's top-1 regions (so the prior is as large as the model's regions);
- random init: a model of the same config with freshly initialised weights, same procedure.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dseqjepa_hub.modeling_dseqjepa import DSeqJEPAModel
from dseqjepa_hub.regions import rank_regions, region_dicts

from .features import infer_evaluation_images
from .labelled_splits import EvaluationDataError, SceneRecord

HIT_PRECISION = 0.5
FALLBACK_BOX_AREA = 0.25  # centred box area when the model proposes no region at all


def precision_and_iou(region: np.ndarray, objects: np.ndarray) -> tuple[float, float]:
    """region (H, W) bool, objects (K, H, W) bool -> (precision inside the union of objects,
    IoU with the best single object); (0, 0) for an empty region."""
    area = int(region.sum())
    if area == 0:
        return 0.0, 0.0
    precision = float((region & objects.any(axis=0)).sum()) / area
    intersections = (objects & region).sum(axis=(1, 2))  # (K,)
    unions = (objects | region).sum(axis=(1, 2))  # (K,)
    return precision, float((intersections / np.maximum(unions, 1)).max(initial=0.0))


def centred_box(height: int, width: int, area_fraction: float) -> np.ndarray:
    """(H, W) bool: a centred box with the image's aspect ratio covering about `area_fraction`."""
    scale = math.sqrt(min(max(area_fraction, 0.0), 1.0))
    box_h, box_w = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (height - box_h) // 2, (width - box_w) // 2
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + box_h, left : left + box_w] = True
    return mask


def summarise(scores: list[tuple[float, float]], areas: list[float | None]) -> dict:
    """Aggregate per-image (precision, IoU) and top-1 area fractions (None = no region)."""
    precision = np.array([p for p, _ in scores])
    iou = np.array([i for _, i in scores])
    present = [a for a in areas if a is not None]
    return {
        "top1_on_object": float((precision >= HIT_PRECISION).mean()),
        "mean_iou": float(iou.mean()),
        "mean_precision": float(precision.mean()),
        "mean_area_fraction": float(np.mean(present)) if present else 0.0,
        "images_without_region": len(areas) - len(present),
    }


def top1_region_scores(model, processor, records: list[SceneRecord], batch_size: int, desc: str) -> dict:
    """Score each image's top-1 region against its objects; returns `summarise`'s dict."""
    scores, areas = [], []

    def forward(pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        ranked = rank_regions(model, pixel_values)
        return {name: ranked[name] for name in ("masks", "scores", "valid")}

    def score(batch, ranked: dict[str, torch.Tensor]) -> None:
        for offset, (index, size) in enumerate(zip(batch.indices, batch.sizes)):
            record = records[index]
            regions = region_dicts(
                masks=ranked["masks"][offset],
                scores=ranked["scores"][offset],
                valid=ranked["valid"][offset],
                original_size=size,
                crop_box=processor.crop_box(original_size=size),
            )
            objects = record.object_masks()
            if objects.shape[1:] != size:
                raise EvaluationDataError(f"{record.mask}: mask size {objects.shape[1:]} differs from image size {size}")
            top = next((region for region in regions if not region["is_background"]), None)
            if top is None:
                scores.append((0.0, 0.0))
                areas.append(None)
            else:
                scores.append(precision_and_iou(top["mask"], objects))
                areas.append(float(top["mask"].mean()))

    infer_evaluation_images(model, processor, [record.image for record in records], forward, score, batch_size, desc)
    return summarise(scores, areas)


def centred_box_scores(records: list[SceneRecord], area_fraction: float) -> dict:
    scores, areas = [], []
    for record in records:
        objects = record.object_masks()
        box = centred_box(objects.shape[1], objects.shape[2], area_fraction)
        scores.append(precision_and_iou(box, objects))
        areas.append(float(box.mean()))
    return summarise(scores, areas)


def evaluate_regions(model, processor, records: list[SceneRecord], batch_size: int = 64, seed: int = 0) -> dict:
    """The model, a centred-box prior and a randomly initialised model of the same config."""
    results = {"model": top1_region_scores(model, processor, records, batch_size, "regions (model)")}
    area = results["model"]["mean_area_fraction"] if results["model"]["images_without_region"] < len(records) else FALLBACK_BOX_AREA
    results["centred_box"] = centred_box_scores(records, area)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random_model = DSeqJEPAModel(model.config)
    random_model = random_model.to(next(model.parameters()).device).eval()
    results["random_init"] = top1_region_scores(random_model, processor, records, batch_size, "regions (random init)")
    return results

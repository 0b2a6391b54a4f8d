"""Ranked regions as JSON: masks in COCO's compressed RLE (pycocotools), arrays as lists.

A region dict (docs/ARCHITECTURE.md) keeps its scalars; its `mask` (H, W) and `patch_mask`
(h, w) become `{"size": [rows, cols], "counts": "..."}`, exactly what
`pycocotools.mask.encode` writes (column-major runs, compressed to a string), so COCO tools,
SAM's and Detectron2's readers decode them as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as coco_mask


def mask_to_rle(mask: np.ndarray) -> dict:
    """A bool (H, W) mask -> COCO compressed RLE with `counts` as text."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Inverse of `mask_to_rle`; also reads COCO's uncompressed RLE (`counts` as a list of ints)."""
    height, width = rle["size"]
    if isinstance(rle["counts"], list):
        rle = coco_mask.frPyObjects(rle, height, width)
    else:
        rle = {"size": [height, width], "counts": rle["counts"].encode("ascii")}
    return coco_mask.decode(rle).astype(bool)


def regions_to_json(regions: Sequence[dict]) -> list[dict]:
    """Region dicts -> JSON-able dicts: masks run-length encoded, arrays as lists, the saliency map dropped."""
    encoded = []
    for region in regions:
        item = {}
        for key, value in region.items():
            if key == "saliency":
                continue
            if key.endswith("mask"):
                item[key] = mask_to_rle(value)
            elif isinstance(value, np.ndarray):
                item[key] = value.tolist()
            elif isinstance(value, np.generic):
                item[key] = value.item()
            else:
                item[key] = value
        encoded.append(item)
    return encoded


def regions_from_json(items: Sequence[dict]) -> list[dict]:
    """Inverse of `regions_to_json`: masks back to bool arrays, embeddings to float32 arrays."""
    regions = []
    for item in items:
        region = dict(item)
        for key, value in item.items():
            if key.endswith("mask"):
                region[key] = rle_to_mask(value)
            elif key == "embedding":
                region[key] = np.asarray(value, dtype=np.float32)
        regions.append(region)
    return regions

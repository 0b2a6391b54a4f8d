"""Frozen-encoder evaluation of one model on one data set: `evaluate` and its result files.

Result JSON (one object; docs/ARCHITECTURE.md):
  {"task", "dataset", "split", "metric", "value", "model", "n_images", "details": {...}}
linear / knn: metric "top1" (accuracy on the val or test split), details hold the probe's
settings and the train/eval sizes. regions: metric "top1_on_object" (fraction of images whose
top-1 region has precision >= 0.5 inside the objects), details hold one row per method
("model", "centred_box", "random_init") with top1_on_object, mean_iou, mean_precision,
mean_area_fraction and images_without_region. A Markdown table of the same numbers is printed
and, with --out FILE.json, written to FILE.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dseqjepa_hub.application.atomic import atomic_write
from dseqjepa_options import EVAL_TASKS as TASKS

from .features import extract_features
from .labelled_splits import EvaluationDataError, find_split, load_labelled_split, load_scene_records
from .probes import knn_accuracy, linear_probe
from .region_quality import evaluate_regions


def evaluate(
    model,
    processor,
    model_name: str,
    data_dir: str | Path,
    task: str,
    layers: str = "last",
    batch_size: int = 64,
    max_train_images: int | None = None,
    max_eval_images: int | None = None,
    epochs: int = 100,
    lr: float | None = None,
    k: int = 20,
    temperature: float = 0.07,
    seed: int = 0,
) -> dict:
    """Run one task and return the result dict (schema in the module docstring)."""
    if task not in TASKS:
        raise EvaluationDataError(f"task must be one of {TASKS}, got {task!r}")
    data_dir = Path(data_dir)
    eval_dir = find_split(data_dir, "eval")
    result = {"task": task, "dataset": data_dir.name, "split": eval_dir.name, "model": model_name}
    if task == "regions":
        records = load_scene_records(eval_dir, max_eval_images, seed)
        methods = evaluate_regions(model, processor, records, batch_size, seed)
        return {**result, "metric": "top1_on_object", "value": methods["model"]["top1_on_object"],
                "n_images": len(records), "details": methods}

    train = load_labelled_split(find_split(data_dir, "train"), max_train_images, seed)
    held_out = load_labelled_split(eval_dir, max_eval_images, seed)
    classes = sorted(set(train.labels) | set(held_out.labels))
    index = {name: i for i, name in enumerate(classes)}
    train_labels = torch.tensor([index[name] for name in train.labels])
    eval_labels = torch.tensor([index[name] for name in held_out.labels])
    train_features = extract_features(model, processor, train.paths, layers, batch_size, "features (train)")
    eval_features = extract_features(model, processor, held_out.paths, layers, batch_size, f"features ({eval_dir.name})")
    if task == "linear":
        details = linear_probe(train_features, train_labels, eval_features, eval_labels, len(classes), epochs, lr=lr, seed=seed)
    else:
        details = knn_accuracy(train_features, train_labels, eval_features, eval_labels, len(classes), k, temperature)
    details.update(layers=layers, feature_dim=train_features.shape[1], num_classes=len(classes), n_train=len(train.paths))
    return {**result, "metric": "top1", "value": details.pop("top1"), "n_images": len(held_out.paths), "details": details}


def markdown_table(result: dict) -> str:
    if result["task"] == "regions":
        lines = [
            f"Region quality on {result['dataset']}/{result['split']} ({result['n_images']} images), model {result['model']}",
            "",
            "| method | top-1 region on an object (precision >= 0.5) | mean IoU with best object | mean precision | mean area | images without a region |",
            "|---|---|---|---|---|---|",
        ]
        for method, row in result["details"].items():
            lines.append(
                f"| {method} | {row['top1_on_object']:.3f} | {row['mean_iou']:.3f} | {row['mean_precision']:.3f} "
                f"| {row['mean_area_fraction']:.3f} | {row['images_without_region']} |"
            )
        return "\n".join(lines) + "\n"
    details = result["details"]
    return (
        "| model | dataset | task | layers | top-1 | eval images | train images | classes |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {result['model']} | {result['dataset']}/{result['split']} | {result['task']} | {details['layers']} "
        f"| {result['value']:.4f} | {result['n_images']} | {details['n_train']} | {details['num_classes']} |\n"
    )


def write_results(result: dict, out: Path) -> None:
    """FILE.json and, beside it, FILE.md; each written atomically."""
    atomic_write(out, lambda p: p.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8"))
    atomic_write(out.with_suffix(".md"), lambda p: p.write_text(markdown_table(result), encoding="utf-8"))

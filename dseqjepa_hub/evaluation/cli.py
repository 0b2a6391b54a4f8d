"""`dseqjepa eval [MODEL] --data DIR --task {linear,knn,regions}`: frozen-encoder evaluation.

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

import argparse
import json
import sys
from pathlib import Path

import torch

from ..atomic import atomic_write
from ..cli_regions import resolve_model
from ..image_io import ImageLoadError
from .data import EvaluationDataError, find_split, load_labelled_split, load_scene_records
from .features import LAYER_CHOICES, extract_features
from .probes import knn_accuracy, linear_probe
from .region_quality import evaluate_regions

TASKS = ("linear", "knn", "regions")


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


def run_eval(args: argparse.Namespace) -> int:
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model, processor, model_name = resolve_model(args.model, device)
        result = evaluate(
            model, processor, model_name, args.data, args.task,
            layers=args.layers, batch_size=args.batch_size, max_train_images=args.max_train_images,
            max_eval_images=args.max_eval_images, epochs=args.epochs, lr=args.lr, k=args.k,
            temperature=args.temperature, seed=args.seed,
        )
    except (EvaluationDataError, ImageLoadError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(markdown_table(result))
    if args.out:
        write_results(result, Path(args.out))
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="linear probe, kNN or region quality of a frozen encoder")
    parser.add_argument("model", nargs="?", default=None, help="model folder or Hub repo id (default: the bundled model)")
    parser.add_argument("--data", required=True, help="data folder with train and val/test splits (dseqjepa data build)")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--out", help="write the result to this .json file and its table to the .md beside it")
    parser.add_argument("--layers", choices=LAYER_CHOICES, default="last", help="mean-pooled last layer or last four blocks")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--max-train-images", type=int, default=None, help="seeded random subset of the train split")
    parser.add_argument("--max-eval-images", type=int, default=None, help="seeded random subset of the val/test split")
    parser.add_argument("--epochs", type=int, default=100, help="linear probe epochs")
    parser.add_argument("--lr", type=float, default=None, help="linear probe learning rate (default: picked on a train hold-out)")
    parser.add_argument("--k", type=int, default=20, help="kNN neighbours")
    parser.add_argument("--temperature", type=float, default=0.07, help="kNN vote temperature")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run_eval)

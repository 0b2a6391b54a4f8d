"""`dseqjepa eval [MODEL] --data DIR --task {linear,knn,regions} [--out FILE.json]`: frozen-encoder evaluation."""

from __future__ import annotations

import argparse

from dseqjepa_options import BATCH_SIZES, DEFAULT_MODEL, EVAL_LAYERS, EVAL_TASKS, INPUT_SIZES, SEEDS

from .arguments import MODEL_HELP, integer, number, output_file, positive_int

DESCRIPTION = ("Evaluate a frozen encoder on a data set built by `dseqjepa data build`: linear probe, kNN, or the "
               "quality of its top-ranked region against the centred-box and random-init baselines.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"{MODEL_HELP} (default: {DEFAULT_MODEL})")
    parser.add_argument("--data", required=True,
                        help="data folder with splits DIR/train and DIR/val (or DIR/test), as `dseqjepa data build` "
                             "writes; each split is labelled by DIR/SPLIT/labels.tsv (relative/path<TAB>class per line) "
                             "or is an image folder DIR/SPLIT/CLASS/*.png; --task regions also needs the scenes kit's "
                             "DIR/SPLIT/annotations.json and label images")
    parser.add_argument("--task", required=True, choices=EVAL_TASKS)
    parser.add_argument("--out", type=output_file(".json"), help="write the result to this .json file and its table to the .md beside it")
    parser.add_argument("--layers", choices=EVAL_LAYERS, default="last", help="mean-pooled last layer or last four blocks")
    parser.add_argument("--batch-size", type=integer(*BATCH_SIZES), default=64)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--max-train-images", type=positive_int, default=None, help="seeded random subset of the train split")
    parser.add_argument("--max-eval-images", type=positive_int, default=None, help="seeded random subset of the val/test split")
    parser.add_argument("--epochs", type=integer(1, 100_000), default=100, help="linear probe epochs")
    parser.add_argument("--lr", type=number(0.0, 10.0, low_open=True), default=None, help="linear probe learning rate (default: picked on a train hold-out)")
    parser.add_argument("--k", type=integer(1, 10_000), default=20, help="kNN neighbours")
    parser.add_argument("--temperature", type=number(0.0, 100.0, low_open=True), default=0.07, help="kNN vote temperature")
    parser.add_argument("--seed", type=integer(*SEEDS), default=0)
    parser.add_argument("--size", type=integer(*INPUT_SIZES), default=None,
                        help="input size in pixels, a multiple of the patch size (default: the model's)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from dseqjepa_hub.application.loading import load_model
    from dseqjepa_train.evaluation import evaluate, markdown_table, write_results

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model(args.model, device, image_size=args.size)
    result = evaluate(
        loaded.model, loaded.processor, loaded.description, args.data, args.task,
        layers=args.layers, batch_size=args.batch_size, max_train_images=args.max_train_images,
        max_eval_images=args.max_eval_images, epochs=args.epochs, lr=args.lr, k=args.k,
        temperature=args.temperature, seed=args.seed,
    )
    print(markdown_table(result))
    if args.out:
        write_results(result, Path(args.out))
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0

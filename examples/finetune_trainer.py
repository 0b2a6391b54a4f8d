"""Fine-tune a DSeq-JEPA encoder for image classification with the Hugging Face Trainer.

    python examples/finetune_trainer.py --data DIR --model MODEL --output OUT [--epochs 3] [--linear-probe]

DIR holds one sub-folder per class (e.g. DIR/cat/*.jpg, DIR/dog/*.jpg); DIR/train and DIR/val
sub-folders are used as the splits when present, otherwise a fixed 20% of each class is held out.
MODEL is what the `dseqjepa` commands take: `default` (the bundled model), a saved DSeq-JEPA folder,
a training run or a Hub repo id, or a preset name (random initialisation, for smoke tests). `--linear-probe` freezes the encoder and trains a BatchNorm + linear head (the
paper's protocol). The fine-tuned model and its image processor are saved to OUT and reload with
`DSeqJEPAForImageClassification.from_pretrained(OUT)`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from dseqjepa_hub import PRESETS, DSeqJEPAConfig, DSeqJEPAForImageClassification, DSeqJEPAImageProcessor
from dseqjepa_hub.application.loading import locate_model
from dseqjepa_hub.image_io import find_images, load_image


class ImageFolderDataset(torch.utils.data.Dataset):
    """(path, label) pairs -> {"pixel_values", "labels"} examples, images read when asked for."""

    def __init__(self, samples: list[tuple[Path, int]], processor):
        self.samples = samples
        self.processor = processor

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        pixels = self.processor(load_image(path), return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "labels": label}


def split_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Class names and (train, val) samples of an image folder."""
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        splits = [
            [(path, label) for label, name in enumerate(classes) for path in find_images([root / split / name]).paths]
            for split in ("train", "val")
        ]
        return classes, splits[0], splits[1]
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise SystemExit(f"{root}: expected one sub-folder per class (at least two), found {classes}")
    train, val = [], []
    for label, name in enumerate(classes):
        paths = find_images([root / name]).paths
        held_out = max(1, len(paths) // 5)
        val += [(path, label) for path in paths[:held_out]]
        train += [(path, label) for path in paths[held_out:]]
    return classes, train, val


def build_model(model: str, classes: list[str], linear_probe: bool) -> tuple[DSeqJEPAForImageClassification, object]:
    labels = dict(
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={name: index for index, name in enumerate(classes)},
        freeze_backbone=linear_probe,
        classifier_batchnorm=linear_probe,
    )
    if model in PRESETS:
        config = DSeqJEPAConfig.from_preset(model, **labels)
        return DSeqJEPAForImageClassification(config), DSeqJEPAImageProcessor.from_model_config(config)
    folder, _ = locate_model(model)  # the commands' names: `default`, a folder, a run, a repo id
    classifier = DSeqJEPAForImageClassification.from_pretrained(folder, **labels)
    return classifier, DSeqJEPAImageProcessor.from_pretrained(folder)


def accuracy(eval_prediction) -> dict:
    logits, labels = eval_prediction
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="one sub-folder of images per class (DIR/cat/*.jpg, DIR/dog/*.jpg), or DIR/train/CLASS/ "
                             "and DIR/val/CLASS/")
    parser.add_argument("--model", required=True,
                        help="'default' (the bundled model), a model folder, training run, Hub repo id, or preset name")
    parser.add_argument("--output", type=Path, required=True, help="folder for the fine-tuned model")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--linear-probe", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    classes, train, val = split_image_folder(args.data)
    model, processor = build_model(args.model, classes, args.linear_probe)
    training_args = TrainingArguments(
        output_dir=str(args.output / "trainer"),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=1,
        remove_unused_columns=False,
        report_to=[],
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=ImageFolderDataset(train, processor),
        eval_dataset=ImageFolderDataset(val, processor),
        processing_class=processor,
        compute_metrics=accuracy,
    )
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model(str(args.output))
    print(f"validation accuracy {metrics['eval_accuracy']:.3f}; model saved to {args.output}")
    return {"metrics": metrics, "log_history": trainer.state.log_history, "model": trainer.model}


if __name__ == "__main__":
    main()

"""int8 (torch's dynamic quantization of every nn.Linear, `load_model(..., quantize="int8")`) against fp32 on
the CPU, in one run: forward speed (medians, interleaved), serialized size, and agreement: cosine of the
pooled embeddings, k-NN top-1 on the data kit's scenes, ranked regions (identical masks, IoU of the top region).

    python benchmarks/bench_quantize.py --kit /tmp/scenes     # built with `dseqjepa data build scenes` if missing
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from dseqjepa_hub.application.loading import load_model, preset_encoder, quantize_model
from dseqjepa_hub.regions import extract_regions
from dseqjepa_train.datakit import build_scenes
from dseqjepa_train.evaluation.features import extract_features
from dseqjepa_train.evaluation.labelled_splits import load_labelled_split
from dseqjepa_train.evaluation.probes import knn_accuracy


def size_mb(model: torch.nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


@torch.no_grad()
def forward_times(models: dict, pixel_values: torch.Tensor, repeats: int) -> dict[str, float]:
    times = {name: [] for name in models}
    for _ in range(repeats + 1):
        for name, model in models.items():
            started = time.perf_counter()
            model(pixel_values)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values[1:]) for name, values in times.items()}


@torch.no_grad()
def region_agreement(fp32, int8, pixel_values: torch.Tensor) -> tuple[float, float]:
    regions = [extract_regions(model(pixel_values, output_saliency=True).saliency, num_regions=5,
                               min_region_fraction=0.15) for model in (fp32, int8)]
    same = (regions[0].masks == regions[1].masks).flatten(1).all(1).float().mean().item()
    top = [r.masks[:, 0].flatten(1) for r in regions]
    union = (top[0] | top[1]).sum(1)
    iou = torch.where(union > 0, (top[0] & top[1]).sum(1) / union.clamp(min=1), 1.0).float().mean().item()  # both empty: 1
    return same, iou


def knn(model, processor, kit: Path) -> float:
    splits = [load_labelled_split(kit / split) for split in ("train", "val")]
    classes = sorted(set(splits[0].labels) | set(splits[1].labels))
    features = [extract_features(model, processor, split.paths, batch_size=64, desc=split.paths[0].parent.name)
                for split in splits]
    labels = [torch.tensor([classes.index(label) for label in split.labels]) for split in splits]
    return knn_accuracy(features[0], labels[0], features[1], labels[1], len(classes))["top1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kit", type=Path, default=Path("/tmp/dseqjepa_scenes_bench"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.kit.is_dir():
        build_scenes(args.kit, num_train=400, num_val=200, image_size=128)
    print(f"torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}, "
          f"engine {torch.backends.quantized.engine}, load {os.getloadavg()[0]:.2f}")
    fp32, processor = load_model(None)[:2]
    int8 = load_model(None, quantize="int8").model
    images = sorted((args.kit / "val" / "images").glob("*.jpg"))[:64]
    pixels = processor([Image.open(p).convert("RGB") for p in images], return_tensors="pt")["pixel_values"]
    print("| model | input | batch | fp32 (ms) | int8 (ms) | speed-up | fp32 MB | int8 MB | min cosine |")
    print("|---|---|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    small = preset_encoder("vit_small_patch16_224")
    small_int8 = preset_encoder("vit_small_patch16_224")
    small_int8.load_state_dict(small.state_dict())  # the same weights, then quantized
    cases = [("bundled (ViT width 128, 6 blocks)", fp32, int8, pixels[:32]),
             ("vit_small_patch16_224 (random weights)", small, quantize_model(small_int8, "int8"),
              torch.randn(8, 3, 224, 224))]
    for name, model, quantized, batch in cases:
        times = forward_times({"fp32": model, "int8": quantized}, batch, args.repeats)
        with torch.no_grad():
            cosine = torch.nn.functional.cosine_similarity(model(batch).pooler_output, quantized(batch).pooler_output)
        print(f"| {name} | {batch.shape[-1]} px | {len(batch)} | {times['fp32'] * 1e3:.0f} | {times['int8'] * 1e3:.0f} | "
              f"{times['fp32'] / times['int8']:.2f}x | {size_mb(model):.1f} | {size_mb(quantized):.1f} | "
              f"{cosine.min().item():.5f} |")
    same, iou = region_agreement(fp32, int8, pixels)
    print(f"\nBundled model on {len(images)} scenes (val): regions identical for {same:.1%} of the images, "
          f"top-region IoU {iou:.3f}")
    print(f"k-NN top-1 on the scenes kit ({args.kit}): fp32 {knn(fp32, processor, args.kit):.4f}, "
          f"int8 {knn(int8, processor, args.kit):.4f}")


if __name__ == "__main__":
    main()

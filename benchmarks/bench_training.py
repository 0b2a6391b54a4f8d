"""Pretraining step time and peak memory: DSeq vs I-JEPA steps, gather vs masked context,
and this project's DSeq step vs the release's approach, at the same model and batch.
`dseq-gather-4regions` replaces the regions by four row bands + background (every step valid,
contexts up to ~80 % of the patches): the costliest region layout for this project's step.

The release's approach is emulated here only (docs/METHOD.md section 5): regions per image with
OpenCV on the host, the context encoder at full length with an attention mask on all
B * (N - 1) copies of the batch (empty steps included), the predictor over the full-length
output with its inverted attention.

    python benchmarks/bench_training.py                    # CPU, ViT-Ti/16 224 px, batch 8
    python benchmarks/bench_training.py --device cuda      # ViT-B/16 224 px, bf16, batch 128

Each variant runs in its own process (peak memory: CUDA max_memory_allocated, or on the CPU
the growth of the peak resident set over the process's state before the first step).
Full train steps (target forward, regions, context encoder and predictor forward and
backward, AdamW, EMA); medians over the timed steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

VARIANTS = {
    "ijepa": dict(method="ijepa", context_mode="gather"),
    "dseq-gather": dict(method="dseq", context_mode="gather"),
    "dseq-masked": dict(method="dseq", context_mode="masked"),
    "dseq-gather-4regions": dict(method="dseq", context_mode="gather"),
    "release-dseq": dict(method="dseq", context_mode="masked", release_compat=True),
}
SETTINGS = {
    "cpu": dict(config="vit_tiny", batch_size=8, warmup=1, steps=4),
    "cuda": dict(config="vit_base", batch_size=128, warmup=5, steps=20),
}


def opencv_regions(saliency: torch.Tensor, min_region_fraction: float, num_regions: int) -> torch.Tensor:
    """The release's per-image regions (docs/METHOD.md section 2 with cv2 on the host) -> (B, R, h, w) bool."""
    import cv2

    batch, height, width = saliency.shape
    maps = saliency.float().cpu().numpy()
    masks = np.zeros((batch, num_regions, height, width), dtype=bool)
    for b in range(batch):
        normalised = (maps[b] - maps[b].min()) / (maps[b].max() - maps[b].min() + 1e-6)
        _, foreground = cv2.threshold((normalised * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        count, labels = cv2.connectedComponents(foreground, connectivity=8)
        components = []
        for label in range(1, count):
            component = labels == label
            if component.sum() >= min_region_fraction * height * width:
                components.append((normalised[component].mean(), component))
        components.sort(key=lambda item: -item[0])
        for slot, (_, component) in enumerate(components[: num_regions - 1]):
            masks[b, slot] = component
        masks[b, -1] = ~masks[b, :-1].any(0)
    return torch.from_numpy(masks).to(saliency.device)


def banded_regions(saliency: torch.Tensor, min_region_fraction: float, num_regions: int):
    """The costliest case for this project's step: N - 1 horizontal bands of rows (each about
    1/N of the image) and the background, so every step is valid and contexts grow to ~80 %."""
    from dseqjepa_hub.regions import Regions

    batch, height, width = saliency.shape
    band = torch.div(torch.arange(height, device=saliency.device) * num_regions, height, rounding_mode="floor")
    masks = (band[None, :, None] == torch.arange(num_regions, device=saliency.device)[:, None, None])
    masks = masks.expand(num_regions, height, width)[None].expand(batch, -1, -1, -1).contiguous()
    return Regions(masks=masks, scores=masks.flatten(2).float().mean(-1), valid=masks.flatten(2).any(-1))


def release_prediction_task(trainer, images, use_dseq, generator):
    """The release's DSeq step: OpenCV regions per image, every one of the B * (N-1) steps kept."""
    from dseqjepa_train.objective import PredictionTask, target_features
    from dseqjepa_train.sequences import region_sequence

    config = trainer.model_config
    with torch.no_grad(), trainer.autocast:
        output = trainer.target_encoder(images, output_saliency=True)
        targets = target_features(output.last_hidden_state, trainer.target_encoder.config)
    regions = opencv_regions(output.saliency, config.min_region_fraction, config.num_regions)
    contexts, target_masks = region_sequence(regions, release_compat=True)
    steps = contexts.shape[1]
    contexts, target_masks = contexts.flatten(0, 1), target_masks.flatten(0, 1)
    lengths = torch.stack([contexts.flatten(1).sum(1).max(), target_masks.flatten(1).sum(1).max()]).tolist()
    task = PredictionTask(contexts, torch.arange(contexts.shape[0], device=images.device) // steps, target_masks,
                          None, lengths[0], max(lengths[1], 1))
    return targets, task


def run_variant(name: str, device: str) -> dict:
    from PIL import Image

    from dseqjepa_train import trainer as trainer_module
    from dseqjepa_train.config import load_config
    from dseqjepa_train.distributed import DistributedContext
    from dseqjepa_train.trainer import Pretrainer

    setting = SETTINGS[device]
    overrides = [f"{key}={value}" for key, value in VARIANTS[name].items()]
    overrides += [f"batch_size={setting['batch_size']}", "num_workers=0"]
    config = load_config(setting["config"], overrides)
    with tempfile.TemporaryDirectory() as folder:
        for i in range(setting["batch_size"]):  # the loader needs files; the steps use fixed tensors
            Image.new("RGB", (32, 32)).save(Path(folder) / f"{i}.png")
        context = DistributedContext(0, 1, 0, torch.device(device))
        trainer = Pretrainer(config, folder, Path(folder) / "out", context)
    if name == "release-dseq":
        trainer.prediction_task = types.MethodType(release_prediction_task, trainer)
    if name == "dseq-gather-4regions":
        trainer_module.extract_regions = lambda saliency, **kwargs: banded_regions(saliency, **kwargs)
    size = trainer.model_config.image_size
    images = torch.randn(setting["batch_size"], 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)

    def synchronize():
        if device == "cuda":
            torch.cuda.synchronize()

    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, predictions = [], []
    for index in range(setting["warmup"] + setting["steps"]):
        synchronize()
        started = time.perf_counter()
        record = trainer.train_step(images)
        synchronize()
        if index >= setting["warmup"]:
            times.append(time.perf_counter() - started)
            predictions.append(record["predictions"])
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is in KiB on Linux
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_rss) / 1024
    return {"variant": name, "median_ms": 1000 * statistics.median(times), "peak_mb": peak_mb,
            "predictions_per_step": statistics.mean(predictions), "batch_size": setting["batch_size"],
            "config": setting["config"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: on a shared 2-core box more threads mostly wait)")
    parser.add_argument("--one", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    if args.one:
        print(json.dumps(run_variant(args.one, args.device)))
        return

    results = {}
    for name in args.variants:
        completed = subprocess.run([sys.executable, __file__, "--device", args.device, "--threads", str(args.threads),
                                    "--one", name],
                                   capture_output=True, text=True, check=True)
        results[name] = json.loads(completed.stdout.strip().splitlines()[-1])
        print(json.dumps(results[name]), flush=True)

    setting = SETTINGS[args.device]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"\n{setting['config']}, batch {setting['batch_size']}, {args.device} ({device_name}), torch {torch.__version__}, "
          f"{args.threads} thread(s), median of {setting['steps']} steps after {setting['warmup']} warm-up")
    print("| step | median ms | peak MB | predictions/step | time vs this I-JEPA step |")
    print("|---|---|---|---|---|")
    reference = results.get("ijepa")
    for name, result in results.items():
        ratio = f"{result['median_ms'] / reference['median_ms']:.2f}x" if reference else "-"
        print(f"| {name} | {result['median_ms']:.1f} | {result['peak_mb']:.0f} | {result['predictions_per_step']:.1f} | {ratio} |")
    if "release-dseq" in results and "dseq-gather" in results:
        speedup = results["release-dseq"]["median_ms"] / results["dseq-gather"]["median_ms"]
        print(f"\nrelease-style DSeq step / this project's DSeq step (gather): {speedup:.2f}x")


if __name__ == "__main__":
    main()

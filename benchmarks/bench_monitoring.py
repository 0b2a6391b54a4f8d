"""The cost of the training monitoring (dseqjepa_train.monitoring) per step: full train steps with the
statistics computed (log_every=1) against steps without (log_every=0), interleaved in one process on one
batch, medians; then `embedding_statistics` alone at the targets' shapes.

    python benchmarks/bench_monitoring.py                  # CPU: the bundled model's size (scenes-cpu), vit_tiny
    python benchmarks/bench_monitoring.py --device cuda    # adds vit_base, batch 128, bf16

An I-JEPA step computes the saliency only for the statistics (a DSeq step needs it anyway), so both
kinds are measured. A logging step every `log_every` (default 10) steps costs a tenth of the difference
on average.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dseqjepa_train import load_config
from dseqjepa_train.distributed import init_distributed
from dseqjepa_train.monitoring import embedding_statistics
from dseqjepa_train.trainer import Pretrainer

CASES = {
    "cpu": [("scenes-cpu", 32)],
    "cuda": [("scenes-cpu", 256), ("vit_base", 128)],
}


def images(folder: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_times(config_name: str, batch_size: int, method: str, steps: int, data: Path, device: str) -> tuple[float, float]:
    """Median seconds of a train step without and with the statistics."""
    config = load_config(config_name, [f"method={method}", f"batch_size={batch_size}", "num_workers=0",
                                       "log_every=1", "epochs=1000", "warmup_epochs=1"])
    with tempfile.TemporaryDirectory() as output:
        trainer = Pretrainer(config, data, output, init_distributed())
        batch = next(iter(trainer.loader))[0].to(trainer.dist.device)
        times: dict[bool, list[float]] = {False: [], True: []}
        for index in range(2 * steps + 4):
            monitor = bool(index % 2)
            trainer.config.log_every = 1 if monitor else 0
            synchronize(trainer.dist.device)
            started = time.perf_counter()
            trainer.train_step(batch)
            synchronize(trainer.dist.device)
            if index >= 4:  # warm-up
                times[monitor].append(time.perf_counter() - started)
    return statistics.median(times[False]), statistics.median(times[True])


def statistics_time(batch: int, tokens: int, dim: int, device: str, repeats: int = 10) -> float:
    targets = torch.randn(batch, tokens, dim, device=device)
    saliency = torch.randn(batch, int(tokens ** 0.5), int(tokens ** 0.5), device=device)
    embedding_statistics(targets, saliency).tolist()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        embedding_statistics(targets, saliency).tolist()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=8, help="timed steps of each kind, per case")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.2f}" + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""))
    print("| model | batch | step | without (ms) | with (ms) | overhead per logging step |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        data = images(Path(folder), 32)
        for config_name, batch_size in CASES[args.device]:
            for method in ("ijepa", "dseq"):
                off, on = step_times(config_name, batch_size, method, args.steps, data, args.device)
                print(f"| {config_name} | {batch_size} | {method} | {off * 1e3:.1f} | {on * 1e3:.1f} | "
                      f"{(on - off) * 1e3:+.1f} ms ({(on / off - 1) * 100:+.1f} %) |")
    print("\n| targets (B, N, D) | embedding_statistics (ms) |\n|---|---|")
    for shape in ((32, 144, 128), (128, 196, 768), (256, 196, 1024)):
        print(f"| {shape} | {statistics_time(*shape, args.device) * 1e3:.1f} |")


if __name__ == "__main__":
    main()

"""Batched `extract_regions` against the per-image OpenCV loop of the authors' release, on an
idle machine and on a busy one.

    python benchmarks/bench_regions.py [--repeats 30] [--busy N] [--tensor-code] [--device cpu|cuda]

Both sides take a (B, h, w) float32 saliency batch and return the same masks (B, R, h, w),
scores and validity (asserted equal); the loop is a lean version of the release's (one OpenCV
Otsu and one connectedComponentsWithStats per image, per-component sums by bincount). Cases:
batch 1, 8 and 256 on grids 12x12, 14x14 and 37x23. Each case runs twice, side by side: idle
(as the machine is), then busy: the benchmark starts --busy processes (default: one per core,
os.cpu_count()) that spin `while True: pass`, and stops them after the case. Prints medians over
repeats (wall clock and process CPU time) and the ratios. Torch's thread settings are left as
they are (the default: one thread per core). --tensor-code adds extract_regions' accelerator
path run on the CPU (what the CPU ran before it had its own), with fewer repeats. With --device
cuda the batched call runs under torch.cuda.set_sync_debug_mode("error"), so any host
synchronisation inside it raises (no busy processes then).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import time
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch

from dseqjepa_hub.regions import _extract_regions_on_device, extract_regions

CASES = [(batch, height, width) for height, width in [(12, 12), (14, 14), (37, 23)] for batch in (1, 8, 256)]


def opencv_loop(saliency: torch.Tensor, min_region_fraction=0.15, num_regions=5):
    """Per image on the host, as the release does it (cv2 imported here: a dev-only dependency)."""
    import cv2

    batch, height, width = saliency.shape
    maps = saliency.float().cpu().numpy()
    masks = np.zeros((batch, num_regions, height, width), dtype=bool)
    scores = np.zeros((batch, num_regions), dtype=np.float32)
    valid = np.zeros((batch, num_regions), dtype=bool)
    for i, values in enumerate(maps):
        normalised = (values - values.min()) / (values.max() - values.min() + 1e-6)
        _, binary = cv2.threshold((normalised * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        sums = np.bincount(labels.ravel(), weights=normalised.ravel(), minlength=count)
        areas = stats[:, cv2.CC_STAT_AREA]
        kept = [k for k in range(1, count) if areas[k] >= min_region_fraction * height * width]
        kept.sort(key=lambda k: -sums[k] / areas[k])  # stable: ties stay in label (raster) order
        for slot, k in enumerate(kept[: num_regions - 1]):
            masks[i, slot], scores[i, slot], valid[i, slot] = labels == k, sums[k] / areas[k], True
        background = ~masks[i, :-1].any(axis=0)
        masks[i, -1] = background
        if background.any():
            scores[i, -1], valid[i, -1] = normalised[background].mean(), True
    return torch.from_numpy(masks), torch.from_numpy(scores), torch.from_numpy(valid)


def median_seconds(function, repeats: int, synchronize=lambda: None) -> tuple[float, float]:
    """Medians of wall-clock and of process CPU time (the latter is less disturbed by other
    processes on a shared machine)."""
    function()
    synchronize()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        synchronize()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return float(np.median(wall)), float(np.median(cpu))


def make_saliency(batch, height, width, seed=0) -> torch.Tensor:
    """Smooth blobs plus noise, like real CLS-similarity maps."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, 1, height, width, generator=generator)
    smooth = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2, count_include_pad=False)
    return (smooth + 0.3 * torch.randn(batch, 1, height, width, generator=generator))[:, 0]


def _spin() -> None:
    while True:
        pass


@contextmanager
def busy_machine(processes: int):
    """`processes` busy-loop processes for the duration of the block (none for 0)."""
    workers = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.2 if workers else 0)  # let them reach their loops
        yield
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()


def tensor_code(saliency: torch.Tensor):
    """extract_regions' accelerator path, on whatever device the batch is on."""
    return _extract_regions_on_device(saliency, 0.15, 5, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--busy", type=int, default=os.cpu_count(), help="busy-loop processes in the busy runs")
    parser.add_argument("--tensor-code", action="store_true", help="also time the accelerator path on the CPU")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__},"
        f" {platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {args.device},"
        f" load average {os.getloadavg()[0]:.1f} at start"
    )
    loads = [("idle", 0)] + ([("busy", args.busy)] if args.device == "cpu" else [])
    print("| load | batch | grid | OpenCV loop wall / cpu ms | extract_regions wall / cpu ms | speed-up wall / cpu |"
          + (" tensor code wall ms |" if args.tensor_code else ""))
    for batch, height, width in CASES:
        saliency = make_saliency(batch, height, width)
        expected = opencv_loop(saliency)
        on_device = saliency.to(args.device)
        synchronize = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
        for load, processes in loads:
            with busy_machine(processes):
                loop = median_seconds(partial(opencv_loop, saliency), args.repeats)
                if args.device == "cuda":
                    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation inside raises
                try:
                    batched = median_seconds(partial(extract_regions, on_device), args.repeats, synchronize)
                    regions = extract_regions(on_device)
                finally:
                    if args.device == "cuda":
                        torch.cuda.set_sync_debug_mode("default")
                tensors = (
                    median_seconds(partial(tensor_code, saliency), max(3, args.repeats // 6))
                    if args.tensor_code
                    else None
                )
            assert torch.equal(regions.masks.cpu(), expected[0]), "batched masks differ from the OpenCV loop"
            print(
                f"| {load} ({processes} spinning) | {batch} | {height}x{width} |"
                f" {loop[0] * 1e3:.3f} / {loop[1] * 1e3:.3f} | {batched[0] * 1e3:.3f} / {batched[1] * 1e3:.3f} |"
                f" {loop[0] / batched[0]:.2f}x / {loop[1] / batched[1]:.2f}x |"
                + (f" {tensors[0] * 1e3:.2f} |" if tensors else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()

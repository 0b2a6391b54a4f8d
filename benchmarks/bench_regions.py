"""Batched `extract_regions` against the per-image OpenCV loop of the authors' release.

    python benchmarks/bench_regions.py [--threads 1 2] [--repeats 30] [--device cpu|cuda]

Both sides take a (B, h, w) float32 saliency batch and return the same masks (B, R, h, w),
scores and validity; the loop is a lean version of the release's (one OpenCV Otsu and one
connectedComponentsWithStats per image, per-component sums by bincount). Prints medians over
repeats (wall clock and process CPU time) and the ratios. With --device cuda the batched call runs under
torch.cuda.set_sync_debug_mode("error"), so any host synchronisation inside it raises.
"""

from __future__ import annotations

import argparse
import platform
import time
from functools import partial

import numpy as np
import torch

from dseqjepa_hub.regions import extract_regions

CASES = [(256, 14, 14), (64, 32, 32)]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {args.device}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch, height, width in CASES:
            saliency = make_saliency(batch, height, width)
            expected = opencv_loop(saliency)
            loop = median_seconds(partial(opencv_loop, saliency), args.repeats)
            on_device = saliency.to(args.device)
            synchronize = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
            if args.device == "cuda":
                torch.cuda.set_sync_debug_mode("error")  # any host synchronisation inside raises
            try:
                batched = median_seconds(partial(extract_regions, on_device), args.repeats, synchronize)
                regions = extract_regions(on_device)
            finally:
                if args.device == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
            assert torch.equal(regions.masks.cpu(), expected[0]), "batched masks differ from the OpenCV loop"
            print(
                f"threads {threads}  batch {batch:4d} grid {height}x{width}:"
                f"  opencv loop {loop[0] * 1e3:6.2f} ms wall {loop[1] * 1e3:6.2f} ms cpu"
                f" ({loop[0] / batch * 1e6:5.1f} us/image)"
                f"  extract_regions {batched[0] * 1e3:6.2f} ms wall {batched[1] * 1e3:6.2f} ms cpu"
                f"  speed-up {loop[0] / batched[0]:4.2f}x wall {loop[1] / batched[1]:4.2f}x cpu"
            )

if __name__ == "__main__":
    main()

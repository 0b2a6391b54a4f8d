"""Where a folder job's time goes per photo, outside the forward pass: decoding, preprocessing
(torch's default thread count against `runner.one_intra_op_thread`, which the runner uses),
drawing an overlay and encoding it, on an idle and on a busy machine.

    python benchmarks/bench_folder_parts.py [--images 16] [--repeats 7] [--busy N]

Makes `--images` 640x480 photos (as bench_folders.py), ranks their regions with the bundled
model, then times each part per photo (medians over repeats of the whole set, wall clock): idle,
then with `--busy` processes spinning (default: one per core; started and stopped here, as in
bench_regions.py). Preprocessing is timed both ways in the same run and its pixel values are
asserted equal.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import tempfile
import time
from contextlib import nullcontext
from importlib.metadata import version
from pathlib import Path

import torch
from bench_folders import make_photos
from bench_regions import busy_machine

from dseqjepa_hub.application import regions_job, runner
from dseqjepa_hub.application.drawing import draw_regions
from dseqjepa_hub.application.loading import load_model
from dseqjepa_hub.image_io import load_image
from dseqjepa_hub.regions import rank_regions, region_dicts


def per_photo_ms(function, count: int, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) / count * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--busy", type=int, default=os.cpu_count())
    args = parser.parse_args()
    loaded = load_model(None, "cpu")
    model, processor = loaded.model, loaded.processor
    work = Path(tempfile.mkdtemp(prefix="bench_folder_parts_"))
    try:
        paths = make_photos(work / "photos", args.images)
        images = [load_image(path, max_side=regions_job.DEFAULT_MAX_SIDE) for path in paths]

        def preprocess(guard) -> list[torch.Tensor]:
            pixels = []
            for image in images:
                with guard():
                    pixels.append(processor(image, return_tensors="pt")["pixel_values"][0])
            return pixels

        assert all(torch.equal(a, b) for a, b in zip(preprocess(nullcontext), preprocess(runner.one_intra_op_thread)))
        with torch.inference_mode():
            ranked = rank_regions(model, torch.stack(preprocess(runner.one_intra_op_thread)))
        regions = [region_dicts(masks=ranked["masks"][row], scores=ranked["scores"][row], valid=ranked["valid"][row],
                                original_size=(image.height, image.width)) for row, image in enumerate(images)]
        overlays = [draw_regions(image, found) for image, found in zip(images, regions)]
        parts = {
            "decode (load_image, max side 1024)": lambda: [load_image(p, max_side=regions_job.DEFAULT_MAX_SIDE) for p in paths],
            f"preprocess, torch's {torch.get_num_threads()} threads": lambda: preprocess(nullcontext),
            "preprocess, one_intra_op_thread (the runner)": lambda: preprocess(runner.one_intra_op_thread),
            "draw_regions": lambda: [draw_regions(image, found) for image, found in zip(images, regions)],
            "encode jpg (quality 90)": lambda: [o.save(io.BytesIO(), **regions_job.OVERLAY_SAVE_OPTIONS["jpg"]) for o in overlays],
        }
        results = {}
        for busy in (0, args.busy):
            with busy_machine(busy):
                for name, function in parts.items():
                    results[name, busy] = per_photo_ms(function, len(images), args.repeats)
    finally:
        shutil.rmtree(work)
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {version('torch')}, "
          f"Pillow {version('pillow')}, {args.images} photos 640x480, median of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"| part | idle ms/photo | busy ({args.busy} spinning) ms/photo |")
    print("|---|---|---|")
    for name in parts:
        print(f"| {name} | {results[name, 0]:.2f} | {results[name, args.busy]:.2f} |")


if __name__ == "__main__":
    main()

"""Where a folder job's time goes per photo: decoding, preprocessing (torch's default thread count
against `runner.one_intra_op_thread`, which the runner uses), keeping the decoded image for the
writers (a copy with decoding workers; none without), the forward pass and the rest of the ranking,
and what `dseqjepa regions` does per image in its writer threads (region dicts, the overlay, its
encoding, the JSON), on an idle and on a busy machine.

    python benchmarks/bench_folder_parts.py [--images 16] [--repeats 7] [--busy N] [--model PATH]

Makes `--images` 640x480 photos (as bench_folders.py), ranks their regions with the model
(default: the bundled one; a size preset such as vit_small_patch16_224 gives random weights, fine
for timing), then times each part per photo (medians over repeats of the whole set, wall clock):
idle, then with `--busy` processes spinning (default: one per core; started and stopped here, as in
bench_regions.py; 0: idle only). The forward pass and the ranking run on batches of 8, as
`dseqjepa regions` does. Preprocessing is timed both ways in the same run and its pixel values are
asserted equal.

Then, idle, what the writers' work (region dicts, overlay, JPEG encoding of a batch of 8, in a
writer thread as the runner starts it: `runner.BackgroundWriter`) costs beside the two things the
calling thread does, decoding and preprocessing a batch of 8, and the forward pass on it: each
alone, then both at once (wall time until both are done); the table gives what the writers add
to the calling thread's time, as a multiple of their own time alone. Sharing the cores perfectly,
they would add nothing beside the single-threaded decoding while it is the longer (a core is
free) and 1/cores of their time beside the forward pass (which keeps every core busy); run one
after the other, 1x.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from contextlib import nullcontext
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from bench_folders import make_photos
from bench_regions import busy_machine

from dseqjepa_hub.application import regions_job, runner
from dseqjepa_hub.application.drawing import draw_regions
from dseqjepa_hub.application.loading import load_model
from dseqjepa_hub.application.region_json import regions_to_json
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
    parser.add_argument("--model", default=None, help="model folder, repo id or size preset (default: the bundled model)")
    args = parser.parse_args()
    torch.manual_seed(0)  # a size preset's random weights: the same regions from run to run
    loaded = load_model(args.model, "cpu")
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
        batches = torch.stack(preprocess(runner.one_intra_op_thread)).split(8)

        def forward(rank: bool) -> list[dict]:
            with torch.inference_mode():
                return [rank_regions(model, batch) if rank else {"pooled": model(pixel_values=batch).pooler_output}
                        for batch in batches]

        ranked = {name: torch.cat([part[name] for part in forward(rank=True)]) for name in ("masks", "scores", "valid")}
        crop_box = getattr(processor, "crop_box", None)

        def dicts() -> list[list[dict]]:
            return [region_dicts(masks=ranked["masks"][row], scores=ranked["scores"][row], valid=ranked["valid"][row],
                                 original_size=(image.height, image.width),
                                 crop_box=None if crop_box is None else crop_box(original_size=(image.height, image.width)))
                    for row, image in enumerate(images)]

        regions = dicts()
        overlays = [draw_regions(image, found) for image, found in zip(images, regions)]
        print(f"regions per photo, background included: {[len(found) for found in regions]}")
        parts = {
            f"decode (load_image, max side {regions_job.DEFAULT_MAX_SIDE})":
                lambda: [load_image(p, max_side=regions_job.DEFAULT_MAX_SIDE) for p in paths],
            f"preprocess, torch's {torch.get_num_threads()} threads": lambda: preprocess(nullcontext),
            "preprocess, one_intra_op_thread (the runner)": lambda: preprocess(runner.one_intra_op_thread),
            "with decoding workers: the decoded image as a uint8 tensor (for the writers)":
                lambda: [torch.from_numpy(np.array(i)) for i in images],
            "forward pass, batches of 8": lambda: forward(rank=False),
            "rank_regions (forward + regions), batches of 8": lambda: forward(rank=True),
            "writer: region_dicts": dicts,
            "writer: draw_regions": lambda: [draw_regions(image, found) for image, found in zip(images, regions)],
            "writer: encode jpg (quality 90)":
                lambda: [o.save(io.BytesIO(), **regions_job.OVERLAY_SAVE_OPTIONS["jpg"]) for o in overlays],
            "writer: JSON (--json: RLE masks, dumps)": lambda: [json.dumps(regions_to_json(found)) for found in regions],
        }
        results = {}
        for busy in sorted({0, args.busy}):
            with busy_machine(busy):
                for name, function in parts.items():
                    results[name, busy] = per_photo_ms(function, len(images), args.repeats)
        overlap = overlap_costs(paths[:8], images[:8], regions[:8], batches[0], processor, model, args.repeats)
    finally:
        shutil.rmtree(work)
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {version('torch')}, "
          f"Pillow {version('pillow')}, model {loaded.description}, {args.images} photos 640x480, "
          f"median of {args.repeats}, load average {os.getloadavg()[0]:.1f} at the end")
    busy = [] if args.busy == 0 else [args.busy]
    print("| part | idle ms/photo |" + "".join(f" busy ({n} spinning) ms/photo |" for n in busy))
    print("|---|---|" + "---|" * len(busy))
    for name in parts:
        print(f"| {name} | {results[name, 0]:.2f} |" + "".join(f" {results[name, n]:.2f} |" for n in busy))
    print("\nWriters beside the calling thread's work, a batch of 8, idle, medians:")
    print("| calling thread's work | its time alone ms | writers' time alone ms | both at once ms | "
          "writers' cost beside it (x their time alone) |")
    print("|---|---|---|---|---|")
    for name, (alone, writers, both) in overlap.items():
        print(f"| {name} | {alone:.1f} | {writers:.1f} | {both:.1f} | {(both - alone) / writers:.2f}x |")


def overlap_costs(paths, images, regions, pixel_values, processor, model, repeats: int) -> dict:
    """{the calling thread's work: (its ms alone, the writers' ms alone, ms until both are done when run at once)}."""
    def decode() -> None:
        for path in paths:
            image = load_image(path, max_side=regions_job.DEFAULT_MAX_SIDE)
            with runner.one_intra_op_thread():
                processor(image, return_tensors="pt")

    def forward() -> None:
        with torch.inference_mode():
            model(pixel_values=pixel_values)

    def write() -> None:
        for image, found in zip(images, regions):
            draw_regions(image, found).save(io.BytesIO(), **regions_job.OVERLAY_SAVE_OPTIONS["jpg"])

    def milliseconds(function) -> float:
        start = time.perf_counter()
        function()
        return (time.perf_counter() - start) * 1e3

    def together(function) -> float:
        with runner.BackgroundWriter(threads=1) as writer:  # the runner's writer thread, at its priority
            start = time.perf_counter()
            writer.submit(write)
            function()
            writer.finish()
            return (time.perf_counter() - start) * 1e3

    costs = {}
    for name, function in (("decode + preprocess (one thread)", decode), ("forward pass (every core)", forward)):
        function(), write(), together(function)
        runs = [(milliseconds(function), milliseconds(write), together(function)) for _ in range(repeats)]
        costs[name] = tuple(statistics.median(run[k] for run in runs) for k in range(3))
    return costs


if __name__ == "__main__":
    main()

"""Folder throughput of `dseqjepa regions` and `dseqjepa embed` against decode + preprocess +
forward of the same files, in one process.

    python benchmarks/bench_folders.py [--images 120] [--repeats 5] [--device cpu|cuda] [--model PATH] [--cli]

--model also takes a size preset (e.g. vit_small_patch16_224: random weights, fine for timing).

Makes `--images` JPEG photos of 640 x 480 (crops of examples/images, quality 90) in a temporary
folder, loads the model once, then times each variant `--repeats` times, each time side by side
with its reference (alternately reference first and variant first, so that a machine that drifts
during the run weighs on both alike), after one warm-up of each; `--only` keeps the variants whose
name contains one of its comma-separated words:
- reference: for each batch, `load_image` (the safe loader the commands use) of every file, the
  processor on the batch, the model's forward pass (`inference_mode`), the output to the host;
  serially, in this process; at each command's default batch size (regions 8, embed 32);
- regions: `rank_regions_in_files` as `dseqjepa regions DIR --out OUT` runs it (overlays in the
  default format, jpg; default workers and writer threads), with `--json`, with each other
  overlay format (`--format png`, `--format webp`), and with the other worker count;
- regions, outputs not drawn: the same with each image's job cut down to its region dicts (no
  overlay, no file): what the command costs before its outputs;
- embed: `embed_files` + `write_embeddings` as `dseqjepa embed DIR --out OUT.npy`, and with the
  other worker count.
With `--cli`, also each command as a fresh process against the reference in a fresh process
(imports and model loading included on both sides, as the issue measured).
Prints median times, images per second and each variant's throughput over its reference's: the
median of the per-pair ratios with their quartiles (issue 22's goals: >= 0.95x at ViT sizes), with
the machine, load average, versions and this command.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch
import transformers
from PIL import Image

from dseqjepa_hub.application import regions_job
from dseqjepa_hub.application.embed_job import embed_files, write_embeddings
from dseqjepa_hub.application.loading import load_model
from dseqjepa_hub.application.runner import decoded_image, default_num_workers, default_write_threads
from dseqjepa_hub.image_io import load_image
from dseqjepa_hub.regions import region_dicts

REPO = Path(__file__).resolve().parents[1]
REFERENCE_SCRIPT = """
import sys, torch
from pathlib import Path
from dseqjepa_hub.image_io import load_image
from dseqjepa_hub.application.loading import load_model
loaded = load_model({model!r}, {device!r})
paths = sorted(Path(sys.argv[1]).glob("*.jpg"))
for start in range(0, len(paths), {batch_size}):
    images = [load_image(path, max_side={max_side}) for path in paths[start : start + {batch_size}]]
    pixel_values = loaded.processor(images, return_tensors="pt")["pixel_values"].to(loaded.model.device)
    with torch.inference_mode():
        loaded.model(pixel_values=pixel_values).pooler_output.cpu()
"""


def make_photos(folder: Path, count: int, size=(640, 480), seed: int = 0) -> list[Path]:
    sources = [Image.open(path).convert("RGB") for path in sorted((REPO / "examples/images").glob("*.jpg"))]
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        image = sources[index % len(sources)]
        scale = rng.uniform(0.6, 1.0)
        width, height = image.size
        crop_w, crop_h = int(width * scale), int(height * scale)
        x, y = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
        crop = image.crop((x, y, x + crop_w, y + crop_h)).resize(size, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"photo_{index:04d}.jpg"
        crop.save(path, quality=90)
        paths.append(path)
    return paths


def reference(paths, model, processor, batch_size: int, max_side) -> None:
    """Decode + preprocess + forward, serially, the output brought to the host once per batch."""
    for start in range(0, len(paths), batch_size):
        images = [load_image(path, max_side=max_side) for path in paths[start : start + batch_size]]
        pixel_values = processor(images, return_tensors="pt")["pixel_values"].to(model.device, model.dtype)
        with torch.inference_mode():
            pooled = model(pixel_values=pixel_values).pooler_output
        pooled.cpu()


def region_dicts_only(job) -> dict:
    """Stands in for `regions_job._write_regions`: the region dicts, no overlay, no file."""
    image = decoded_image(job.image)
    height, width = image.height, image.width
    regions = region_dicts(masks=job.masks, scores=job.scores, valid=job.valid, original_size=(height, width),
                           crop_box=job.crop_box)
    return {"index": job.index, "image": job.path, "overlay": None, "json": None, "num_regions": len(regions),
            "no_foreground_region": None, "skipped": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--model", default=None, help="model folder or repo id (default: the bundled model)")
    parser.add_argument("--cli", action="store_true", help="also time the commands and the reference as fresh processes")
    parser.add_argument("--only", default="", help="comma-separated words: time only the variants whose name has one")
    args = parser.parse_args()

    loaded = load_model(args.model, args.device)
    model, processor = loaded.model, loaded.processor
    workers = default_num_workers(args.device)
    other = 0 if workers else 1
    work = Path(tempfile.mkdtemp(prefix="bench_folders_"))
    try:
        photos = work / "photos"
        paths = make_photos(photos, args.images)
        out = work / "out"

        def synchronize() -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()

        def regions(json=False, num_workers=None, draw=True, overlay_format=regions_job.OVERLAY_FORMATS[0]):
            shutil.rmtree(out, ignore_errors=True)
            write = regions_job._write_regions
            if not draw:
                regions_job._write_regions = region_dicts_only
            try:
                results, failures = regions_job.rank_regions_in_files(
                    paths, model, processor, out_dir=out, write_json=json, batch_size=8, num_workers=num_workers,
                    overlay_format=overlay_format, progress=False,
                )
            finally:
                regions_job._write_regions = write
            assert len(results) == len(paths) and not failures

        def embed(num_workers=None):
            shutil.rmtree(out, ignore_errors=True)
            files, arrays, failures = embed_files(paths, model, processor, batch_size=32, num_workers=num_workers,
                                                  progress=False)
            write_embeddings(out / "emb.npy", files, arrays, failures, loaded.description)
            assert arrays["pooled"].shape[0] == len(paths)

        def command(*argv: str):
            env = {**os.environ, "PYTHONWARNINGS": "ignore"}
            return lambda: subprocess.run(argv, check=True, capture_output=True, env=env)

        ref8, ref32 = "reference: decode + preprocess + forward, batch 8", "reference, batch 32"
        variants = {  # name -> (function, the reference it is compared with)
            ref8: (lambda: reference(paths, model, processor, 8, regions_job.DEFAULT_MAX_SIDE), ref8),
            ref32: (lambda: reference(paths, model, processor, 32, None), ref32),
            f"regions (overlays; default --num-workers {workers})": (regions, ref8),
            "regions --json": (lambda: regions(json=True), ref8),
            **{f"regions --format {name}": (lambda name=name: regions(overlay_format=name), ref8)
               for name in regions_job.OVERLAY_FORMATS[1:]},
            f"regions --num-workers {other}": (lambda: regions(num_workers=other), ref8),
            "regions, outputs not drawn or written (region dicts only)": (lambda: regions(draw=False), ref8),
            f"embed (.npy; default --num-workers {workers})": (embed, ref32),
            f"embed --num-workers {other}": (lambda: embed(num_workers=other), ref32),
        }
        if args.cli:
            python = sys.executable
            cli = [python, "-m", "dseqjepa_cli"]
            model_args = [] if args.model is None else ["--model", args.model]
            for name, batch_size, max_side in (("CLI reference, batch 8", 8, regions_job.DEFAULT_MAX_SIDE),
                                               ("CLI reference, batch 32", 32, None)):
                script = REFERENCE_SCRIPT.format(model=args.model, device=args.device, batch_size=batch_size, max_side=max_side)
                variants[name] = (command(python, "-c", script, str(photos)), name)
            variants["CLI `dseqjepa regions DIR`"] = (
                command(*cli, "regions", str(photos), "--out", str(out / "cli"), "--device", args.device, *model_args),
                "CLI reference, batch 8")
            variants["CLI `dseqjepa embed DIR --out X.npy`"] = (
                command(*cli, "embed", str(photos), "--out", str(out / "cli.npy"), "--device", args.device, *model_args),
                "CLI reference, batch 32")
        words = [word for word in args.only.split(",") if word]
        timed = [name for name, (_, ref) in variants.items() if name != ref and (not words or any(w in name for w in words))]
        run = list(dict.fromkeys([variants[name][1] for name in timed] + timed))  # references first
        for name in run:  # warm-up: caches, allocator, first calls
            variants[name][0]()
            synchronize()

        def seconds(name: str) -> float:
            start = time.perf_counter()
            variants[name][0]()
            synchronize()
            return time.perf_counter() - start

        times: dict[str, list[float]] = {name: [] for name in run}
        ratios: dict[str, list[float]] = {name: [] for name in timed}
        load_before = os.getloadavg()[0]
        for repeat in range(args.repeats):
            for name in timed:
                reference_name = variants[name][1]
                if repeat % 2 == 0:
                    reference_time, variant_time = seconds(reference_name), seconds(name)
                else:
                    variant_time, reference_time = seconds(name), seconds(reference_name)
                times[reference_name].append(reference_time)
                times[name].append(variant_time)
                ratios[name].append(reference_time / variant_time)
        load_after = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"Pillow {PIL.__version__}, numpy {np.__version__}; {platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""))
    print(f"model {loaded.description}; {args.images} JPEGs 640x480; default --num-workers {workers}, writer threads "
          f"{default_write_threads()}; load average {load_before:.2f} before, {load_after:.2f} after; "
          f"{args.repeats} repeats, each variant beside its reference (alternately first and second)")
    print(f"command: python {' '.join(sys.argv)}")
    print("| variant | median s | img/s | throughput vs its reference: median of pairs (quartiles) |")
    print("|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        ratio = "(reference)"
        if name in ratios:
            low, _, high = statistics.quantiles(ratios[name], n=4) if len(ratios[name]) > 1 else ratios[name] * 3
            ratio = f"{statistics.median(ratios[name]):.2f}x ({low:.2f}-{high:.2f})"
        print(f"| {name} | {median:.2f} | {len(paths) / median:.1f} | {ratio} |")
    print("all runs (s): " + "; ".join(f"{name}: {', '.join(f'{t:.2f}' for t in values)}" for name, values in times.items()))


if __name__ == "__main__":
    main()

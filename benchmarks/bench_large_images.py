"""Peak memory and time of `dseqjepa regions` on large photos: decoded at --max-side 2048 (the
default) against a full-size decode (--max-side 100000, what every image cost before).

Each run is a fresh process; peak memory is its maximum resident set (ru_maxrss). The photos are
made here (smooth colour fields with a few shapes, so that PNGs stay small on disk).

    .venv/bin/python benchmarks/bench_large_images.py [--work /tmp/large]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZES = {  # name -> (width, height, format)
    "24 MP JPEG (6000 x 4000)": (6000, 4000, "JPEG"),
    "88 MP JPEG (11500 x 7650)": (11500, 7650, "JPEG"),
    "144 MP PNG (12000 x 12000)": (12000, 12000, "PNG"),
}
RUN = (
    "import resource, sys\n"
    "from dseqjepa_cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    "sys.exit(code)\n"
)


def make_photo(path: Path, width: int, height: int, fmt: str) -> None:
    if path.exists():
        return
    y, x = np.ogrid[:height, :width]
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = (x * 255 // width).astype(np.uint8)
    pixels[..., 1] = (y * 255 // height).astype(np.uint8)
    pixels[..., 2] = 96
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 5, height // 4, width // 2, height * 3 // 4), fill=(240, 40, 40))
    draw.rectangle((width * 3 // 5, height // 3, width * 4 // 5, height * 2 // 3), fill=(20, 20, 200))
    image.save(path, format=fmt, quality=90, compress_level=1)


def measure(photo: Path, out: Path, max_side: int) -> tuple[float, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUN, "regions", str(photo), "--out", str(out), "--max-side", str(max_side)],
                          capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    peak = float(next(line for line in done.stdout.splitlines() if line.startswith("PEAK_MB")).split()[1])
    return peak, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/dseqjepa-large-images")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{platform.machine()}, Python {platform.python_version()}, torch {version('torch')}, "
          f"Pillow {version('pillow')}; one process per run, bundled default model, CPU")
    print("| photo | full decode: peak MB / s | --max-side 2048: peak MB / s | memory ratio |")
    print("|---|---|---|---|")
    for name, (width, height, fmt) in SIZES.items():
        photo = work / f"{width}x{height}.{fmt.lower()}"
        make_photo(photo, width, height, fmt)
        full = measure(photo, work / "out-full", 100_000)
        bounded = measure(photo, work / "out-2048", 2048)
        print(f"| {name} | {full[0]:.0f} / {full[1]:.1f} | {bounded[0]:.0f} / {bounded[1]:.1f} | {full[0] / bounded[0]:.1f}x |")


if __name__ == "__main__":
    main()

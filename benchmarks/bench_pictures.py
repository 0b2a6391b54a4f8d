"""What the readable pictures cost to draw: `dseqjepa_hub.application.drawing` against another version of
that module (a copy of the file, e.g. `git show REV:dseqjepa_hub/application/drawing.py > old_drawing.py`),
on a photo as `visualize` decodes it (2,048 x 1,536) and on a 200 x 150 thumbnail, in one process,
alternating, medians of `--repeats` runs.

    python benchmarks/bench_pictures.py --before old_drawing.py

The thumbnail's regions picture is drawn as `visualize` draws it: scaled up by `drawing.readable` where the
module has it (and its regions at that size).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dseqjepa_hub.application import drawing

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_pictures import regions_for  # noqa: E402 -- the pictures the tests check: one set of regions

SIZES = {"photo 2048x1536": (2048, 1536), "thumbnail 200x150": (200, 150)}


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location("drawing_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pictures(size: tuple[int, int]):
    """(name, draw(module)) for the regions, attention and sequence pictures of a grey image of `size`."""
    rng = np.random.default_rng(0)
    image, saliency, attention = Image.new("RGB", size, (128, 128, 128)), rng.normal(size=(12, 16)), rng.random((4, 12, 16))
    regions = regions_for(*size)
    steps = [{"step": 1, "context": regions[0]["mask"], "target": regions[1]["mask"], "context_ranks": [1],
              "target_rank": 2, "target_is_background": False}]

    def draw_regions(module):
        shown = module.readable(image)[0] if hasattr(module, "readable") else image
        return module.draw_regions(shown, regions_for(*shown.size), show_saliency=True, saliency=saliency)

    return [("regions + saliency", draw_regions), ("attention", lambda module: module.draw_attention(image, attention)),
            ("sequence", lambda module: module.draw_sequence(image, steps))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a copy of another version of drawing.py")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    before = load_module(args.before)
    print("| picture | image | before (ms) | after (ms) | after / before |\n|---|---|---|---|---|")
    for label, size in SIZES.items():
        for name, draw in pictures(size):
            times = {"before": [], "after": []}
            for module in (before, drawing):  # warm-up: fonts loaded
                draw(module)
            for _ in range(args.repeats):
                for key, module in (("before", before), ("after", drawing)):
                    start = time.perf_counter()
                    draw(module)
                    times[key].append(time.perf_counter() - start)
            old, new = (statistics.median(times[key]) * 1e3 for key in ("before", "after"))
            print(f"| {name} | {label} | {old:.0f} | {new:.0f} | {new / old:.2f} |")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

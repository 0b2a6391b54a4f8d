"""`dseqjepa embed` on the same images as files, as a Parquet file read as mapped rows (converted into the
datasets cache on first use, then memory-mapped) and as a Parquet file streamed (`--streaming`): wall time,
the process's peak RSS and the bytes written to the datasets cache, each run a fresh process with a fresh
cache, the cases interleaved, medians.

    python benchmarks/bench_datasets.py                    # 512 JPEG photos-sized images, 3 repeats
    python benchmarks/bench_datasets.py --images 2048 --repeats 5
    python benchmarks/bench_datasets.py --images 2048 --stream-only   # the stream alone: RSS along the rows

--stream-only reads the Parquet file's encoded images through `ImageRows(..., streaming=True).encoded()` (no
decoding, no model) and prints the process's resident memory at each quarter of the rows: flat when the stream
holds one row group at a time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CASES = {
    "files": lambda data: [str(data / "images")],
    "parquet, mapped": lambda data: [str(data / "images.parquet"), "--image-column", "img"],
    "parquet, streamed": lambda data: [str(data / "images.parquet"), "--image-column", "img", "--streaming"],
}


ROW_GROUP = 100  # rows per Parquet row group (the unit Parquet is read in)


def make_data(folder: Path, count: int, size: int) -> None:
    """`count` JPEGs of random colour fields with grain (photo-like sizes and bytes), as files and as one Parquet
    file."""
    import datasets

    rng = np.random.default_rng(0)
    (folder / "images").mkdir()
    encoded = []
    for index in range(count):
        coarse = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((size, size * 3 // 4), Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, smooth.shape, dtype=np.int16)
        image = Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        encoded.append({"bytes": buffer.getvalue(), "path": None})
        (folder / "images" / f"{index:05d}.jpg").write_bytes(buffer.getvalue())
    features = datasets.Features({"img": datasets.Image()})
    rows = datasets.Dataset.from_dict({"img": encoded}, features=features)
    rows.to_parquet(folder / "images.parquet", batch_size=ROW_GROUP)


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def stream_only(parquet: Path) -> None:
    from dseqjepa_hub.application.hf_datasets import ImageRows

    rows = ImageRows(parquet, "img", streaming=True)
    marks, read = [resident_mb()], 0
    for position, value in rows.encoded():
        read += len(value["bytes"])
        if (position + 1) % (len(rows) // 4) == 0:
            marks.append(resident_mb())
    print(f"streamed {len(rows)} rows ({read / 2**20:.1f} MB of JPEG): resident MB at 0, 1/4 .. 4/4 of the rows: "
          + ", ".join(f"{mark:.0f}" for mark in marks))


def one_run(args: argparse.Namespace) -> None:
    """In a fresh process: embed, then print seconds, peak RSS (MB) and the cache's bytes as JSON."""
    from dseqjepa_cli import main

    start = time.perf_counter()
    code = main(["embed", *CASES[args.case](Path(args.data)), "--out", args.out, "--num-workers", "0", "--quiet"])
    seconds = time.perf_counter() - start
    cache = Path(os.environ["HF_DATASETS_CACHE"])
    written = sum(path.stat().st_size for path in cache.rglob("*") if path.is_file())
    print(json.dumps({"code": code, "seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "cache_mb": written / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=640, help="image width in pixels (height: 3/4 of it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stream-only", action="store_true", help="only the stream's resident memory along the rows")
    parser.add_argument("--one", dest="case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return one_run(args)
    with tempfile.TemporaryDirectory(prefix="bench_datasets_") as folder:
        data = Path(folder)
        make_data(data, args.images, args.size)
        parquet_mb = (data / "images.parquet").stat().st_size / 2**20
        if args.stream_only:
            return subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                                   "import bench_datasets; bench_datasets.stream_only(bench_datasets.Path(sys.argv[2]))",
                                   str(Path(__file__).parent), str(data / "images.parquet")], check=True)
        results: dict[str, list[dict]] = {case: [] for case in CASES}
        for repeat in range(args.repeats):
            for case in CASES:
                cache = data / f"cache_{repeat}_{case.replace(', ', '_')}"  # fresh: the first use of the data set
                env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "OMP_NUM_THREADS": "2"}
                done = subprocess.run([sys.executable, __file__, "--one", case, "--data", str(data),
                                       "--out", str(data / "out.npy")], env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(done.stderr[-3000:])
                result = json.loads(done.stdout.strip().splitlines()[-1])
                assert result["code"] == 0, result
                results[case].append(result)
        print(f"{args.images} images of {args.size}x{args.size * 3 // 4} px, Parquet {parquet_mb:.1f} MB in row groups of "
              f"{ROW_GROUP}; "
              f"{platform.node()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
        print("| input | seconds (median) | peak RSS MB (median) | datasets cache MB written |")
        print("|---|---|---|---|")
        for case, runs in results.items():
            median = {key: statistics.median(run[key] for run in runs) for key in ("seconds", "rss_mb", "cache_mb")}
            print(f"| {case} | {median['seconds']:.2f} | {median['rss_mb']:.0f} | {median['cache_mb']:.1f} |")


if __name__ == "__main__":
    main()

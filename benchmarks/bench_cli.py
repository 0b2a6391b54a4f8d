"""Start-up time of the `dseqjepa` command and of `import dseqjepa_hub` against importing
their heavy dependencies.

Each command runs in a fresh process, `--repeats` times, the commands taking turns (so that
the load of a shared machine falls on all of them alike); medians of wall time are reported.
`python -c "import torch, transformers"` is the yardstick. `import dseqjepa_hub` registers the
Auto classes without importing transformers' modelling, image-processing or pipeline modules;
the row with `from transformers import AutoModel` adds what the first use of the Auto classes
costs. `dseqjepa regions ONE.jpg` ranks one 640x480 photo with the bundled model (overlay
written). It has two yardsticks: (1) a fresh process that imports torch and transformers and
loads the bundled model with `AutoModel.from_pretrained` (what any transformers user pays to
hold this model: the import of transformers' modelling code included), and (2) the import row
plus the model load measured inside a process that has already imported the model code (printed
by the process itself: the load alone, without transformers' modelling imports).

    .venv/bin/python benchmarks/bench_cli.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from PIL import Image

CLI = str(Path(sys.executable).with_name("dseqjepa"))
CASES = {
    "dseqjepa --help": [CLI, "--help"],
    "dseqjepa --version": [CLI, "--version"],
    "dseqjepa regions --help": [CLI, "regions", "--help"],
    "dseqjepa train --help": [CLI, "train", "--help"],
    "dseqjepa convert --help": [CLI, "convert", "--help"],
    'python -c "import torch, transformers"': [sys.executable, "-c", "import torch, transformers"],
    'python -c "import dseqjepa_hub"': [sys.executable, "-c", "import dseqjepa_hub"],
    'python -c "import dseqjepa_hub; from transformers import AutoModel"': [
        sys.executable,
        "-c",
        "import dseqjepa_hub; from transformers import AutoModel",
    ],
}
IMPORT_AND_LOAD = 'python -c "import torch, transformers, dseqjepa_hub; AutoModel.from_pretrained(bundled)"'
CASES[IMPORT_AND_LOAD] = [
    sys.executable,
    "-c",
    "import torch, transformers, dseqjepa_hub\n"
    "from transformers import AutoModel\n"
    "AutoModel.from_pretrained(str(dseqjepa_hub.default_model_path()))",
]
MODEL_LOAD = (
    "import time, dseqjepa_hub, dseqjepa_hub.modeling_dseqjepa\n"
    "from transformers import AutoModel\n"
    "start = time.perf_counter()\n"
    "AutoModel.from_pretrained(str(dseqjepa_hub.default_model_path()))\n"
    "print(time.perf_counter() - start)\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "one.jpg"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(photo)
        cases = {**CASES, "dseqjepa regions ONE.jpg": [CLI, "regions", str(photo), "--out", str(Path(folder) / "out")]}
        times = {name: [] for name in cases}
        loads = []
        for _ in range(args.repeats):
            for name, command in cases.items():
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
            done = subprocess.run([sys.executable, "-c", MODEL_LOAD], check=True, capture_output=True, text=True)
            loads.append(float(done.stdout.split()[-1]))
    results = {name: statistics.median(seconds) for name, seconds in times.items()}
    yardstick = results['python -c "import torch, transformers"']
    model_load = statistics.median(loads)
    print(
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"torch {version('torch')}, transformers {version('transformers')}, median of {args.repeats} runs, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print("| command | median s | vs import torch, transformers |")
    print("|---|---|---|")
    for name, seconds in results.items():
        print(f"| `{name}` | {seconds:.3f} | {seconds / yardstick:.3f}x |")
    one_image = results["dseqjepa regions ONE.jpg"]
    print(
        f"`dseqjepa regions ONE.jpg` vs a fresh process importing and loading the model: {one_image:.3f} / "
        f"{results[IMPORT_AND_LOAD]:.3f} = {one_image / results[IMPORT_AND_LOAD]:.2f}x"
    )
    print(
        f"model load (in process, median): {model_load:.3f} s; `dseqjepa regions ONE.jpg` vs import + load:"
        f" {one_image:.3f} / {yardstick + model_load:.3f} = {one_image / (yardstick + model_load):.2f}x"
    )


if __name__ == "__main__":
    main()

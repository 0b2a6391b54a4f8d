"""Start-up time of the `dseqjepa` command against importing its heavy dependencies.

Each command runs in a fresh process, `--repeats` times; medians of wall time are reported.
`python -c "import torch, transformers"` is the issue's yardstick, and `import dseqjepa_hub`
(which registers the Auto classes, so imports both and torchvision) is what every `--help`
cost when the command line lived inside the hub package.

    .venv/bin/python benchmarks/bench_cli.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

CLI = str(Path(sys.executable).with_name("dseqjepa"))
CASES = {
    "dseqjepa --help": [CLI, "--help"],
    "dseqjepa --version": [CLI, "--version"],
    "dseqjepa regions --help": [CLI, "regions", "--help"],
    "dseqjepa train --help": [CLI, "train", "--help"],
    "dseqjepa convert --help": [CLI, "convert", "--help"],
    'python -c "import torch, transformers"': [sys.executable, "-c", "import torch, transformers"],
    'python -c "import dseqjepa_hub"': [sys.executable, "-c", "import dseqjepa_hub"],
}


def median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results = {name: median_seconds(command, args.repeats) for name, command in CASES.items()}
    yardstick = results['python -c "import torch, transformers"']
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"torch {version('torch')}, transformers {version('transformers')}, median of {args.repeats} runs")
    print("| command | median s | vs import torch, transformers |")
    print("|---|---|---|")
    for name, seconds in results.items():
        print(f"| `{name}` | {seconds:.3f} | {seconds / yardstick:.3f}x |")


if __name__ == "__main__":
    main()

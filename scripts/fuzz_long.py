"""The long fuzz run (issue 20): `python scripts/fuzz_long.py [--images N] [--folders N] [--commands N] [--seed S]`.

The same harness as tests/test_fuzz.py (tests/fuzzing.py) at scale: prints the outcome counts of each kind
of input as a table (recorded in docs/RELIABILITY.md) and the first examples of anything that is not a result
or a clean refusal. Exit code 1 when any traceback, hang, garbage, leftover or pickle was seen.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import torch  # noqa: E402
from fuzzing import OUTCOMES, command_paths, fuzz_commands, fuzz_images, fuzz_model_folders  # noqa: E402

from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAImageProcessor, DSeqJEPAModel  # noqa: E402

BAD = ("traceback", "hang", "garbage", "leftover", "pickle")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        model = root / "model"
        torch.manual_seed(0)
        encoder = DSeqJEPAModel(DSeqJEPAConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64))
        encoder.save_pretrained(model)
        DSeqJEPAImageProcessor.from_model_config(encoder.config).save_pretrained(model)
        paths = command_paths(root / "inputs", model)
        runs = {
            "images": lambda: fuzz_images(root / "images", args.images, args.seed),
            "model folders (x2 doors)": lambda: fuzz_model_folders(model, root / "work", args.folders, args.seed,
                                                                   Path(paths["image"])),
            "command lines": lambda: fuzz_commands(paths, args.commands, args.seed),
        }
        print("| inputs | " + " | ".join(OUTCOMES) + " | seconds |")
        print("|---|" + "---|" * (len(OUTCOMES) + 1))
        bad = 0
        for name, run in runs.items():
            start = time.perf_counter()
            counts = run()
            print(f"| {name} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + f" | {time.perf_counter() - start:.0f} |",
                  flush=True)
            examples = sorted(counts.examples, key=lambda text: not text.split(": ")[0].endswith(BAD))  # bad first
            for example in examples[:10]:
                print(f"    {example} ({counts.examples[example]})", file=sys.stderr)
            bad += sum(counts[o] for o in BAD)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

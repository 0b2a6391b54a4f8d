"""The project's own fuzzer (issue 20): seeded mutations of images, model folders and command lines, each run
through the package's doors and sorted into outcome classes.

Outcome classes:
- result: the door returned something, and it is sound (an RGB image of the size it reports, finite
  regions, a model whose every tensor is the file's);
- refusal: the package's error class (`DSeqJEPAError`), or exit code 1 / 2 from a command;
- traceback: any other exception (a bug);
- hang: the input took longer than the time limit;
- garbage: a result that is not sound (NaN scores, a model holding tensors the file does not);
- leftover: a temporary file (`.tmp-`, `.partial-`) left in an output folder;
- pickle: the marker file a hostile pickle would create exists;
- transformers: (the pipeline door only) an exception raised by transformers' `pipeline()` factory before
  any of this package's code runs (a removed or garbled config.json / preprocessor_config.json read by
  AutoConfig / AutoImageProcessor): not this package's to catch; counted and reported, not asserted.

`tests/test_fuzz.py` runs a few hundred inputs in CI; `scripts/fuzz_long.py` runs thousands and prints the
counts recorded in docs/RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import shutil
import signal
import struct
from collections import Counter
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from dseqjepa_hub.errors import DSeqJEPAError

OUTCOMES = ("result", "refusal", "traceback", "hang", "garbage", "leftover", "pickle", "transformers")
PACKAGE = Path(__file__).resolve().parents[1] / "dseqjepa_hub"
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "QOI", "DDS", "ICO", "TGA", "PPM", "PCX", "SGI", "IM",
                 "MPO", "BLP", "DIB", "SPIDER")
EXTREMES = [0, 1, -1, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 10**9, 10**20, -(10**9)]


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    """Hang after `seconds` (SIGALRM: the main thread of a POSIX process)."""

    def alarm(signum, frame):
        raise Hang

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def raised_in_the_package(error: BaseException) -> bool:
    frames = []
    traceback = error.__traceback__
    while traceback is not None:
        frames.append(traceback.tb_frame.f_code.co_filename)
        traceback = traceback.tb_next
    return any(str(PACKAGE) in frame for frame in frames)


def classify(run, check=lambda result: True, seconds: int = 60, foreign: bool = False) -> tuple[str, str]:
    """(outcome, detail) of `run()`: its result checked by `check`, the package's errors a refusal; with
    `foreign`, an exception that no frame of the package saw is transformers'."""
    try:
        with time_limit(seconds):
            result = run()
    except Hang:
        return "hang", ""
    except DSeqJEPAError as error:
        return "refusal", str(error)[:200]
    except SystemExit as exit_:
        return ("refusal" if exit_.code in (1, 2) else "traceback"), f"exit {exit_.code}"
    except Exception as error:  # noqa: BLE001 -- what the fuzzer is looking for
        outcome = "transformers" if foreign and not raised_in_the_package(error) else "traceback"
        return outcome, f"{type(error).__name__}: {str(error)[:200]}"
    if isinstance(result, int) and not isinstance(result, bool):  # a command's exit code
        return ("result" if result == 0 else "refusal" if result in (1, 2) else "garbage"), f"exit {result}"
    return ("result" if check(result) else "garbage"), ""


# ----------------------------------------------------------------------------- bytes


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One to four of: flip bits, overwrite with extreme integers, truncate, insert, duplicate, zero a run."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not data:
            data = bytearray(rng.randbytes(rng.randint(1, 64)))
        kind = rng.randrange(7)
        at = rng.randrange(len(data))
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            value = rng.choice(EXTREMES) & 0xFFFFFFFF
            data[at:at + 4] = struct.pack(rng.choice(("<I", ">I")), value)
        elif kind == 2:
            data = data[: rng.randrange(len(data) + 1)]
        elif kind == 3:
            data[at:at] = rng.randbytes(rng.randint(1, 256))
        elif kind == 4:
            end = min(len(data), at + rng.randint(1, 512))
            data[at:at] = data[at:end] * rng.randint(1, 8)
        elif kind == 5:
            data[at:at + rng.randint(1, 64)] = bytes(rng.randint(1, 64))
        else:
            header = min(len(data), 64)  # headers carry sizes, counts and offsets
            spot = rng.randrange(header)
            data[spot:spot + 2] = struct.pack("<H", rng.choice((0, 1, 0xFFFF, 0x7FFF, 0x8000)))
    return bytes(data)


# ----------------------------------------------------------------------------- images


def image_seeds(rng: random.Random) -> dict[str, bytes]:
    """Small images in every format Pillow here writes (modes: RGB, and L / RGBA / P where the format takes
    them), named with the format's extension."""
    seeds = {}
    base = Image.effect_mandelbrot((37, 29), (-2, -1.2, 1, 1.2), 60).convert("RGB")
    for fmt in IMAGE_FORMATS:
        for mode in ("RGB", "L", "RGBA", "P"):
            buffer = io.BytesIO()
            try:
                image = base.convert(mode)
                image.save(buffer, fmt)
            except (OSError, ValueError, KeyError):
                continue
            extension = {"JPEG": "jpg", "TIFF": "tif", "SPIDER": "spi"}.get(fmt, fmt.lower())
            seeds[f"{fmt}-{mode}.{extension}"] = buffer.getvalue()
    return seeds


def fuzz_images(folder: Path, count: int, seed: int, max_side: int = 512) -> Counter:
    """`count` mutants of the image seeds, each loaded by `image_io.load_image` (what the runner's workers
    and both pipelines call) with a 4 MP limit; a result must be an RGB image of a sane size."""
    from dseqjepa_hub.image_io import load_image

    rng = random.Random(seed)
    seeds = image_seeds(rng)
    names = sorted(seeds)
    counts, examples = Counter(), {}
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        name = rng.choice(names)
        path = folder / f"{index:05d}-{name}"
        path.write_bytes(mutate_bytes(seeds[name], rng))

        def sound(image) -> bool:
            return image.mode == "RGB" and 1 <= min(image.size) and max(image.size) <= max_side

        outcome, detail = classify(lambda path=path: load_image(path, max_pixels=4_000_000, max_side=max_side), sound, 20)
        counts[outcome] += 1
        if outcome not in ("result", "refusal"):
            examples.setdefault(f"{outcome}: {detail}", path)  # kept for the report
        else:
            path.unlink()
    counts.examples = examples
    return counts


# ----------------------------------------------------------------------------- model folders

MARKER = "PICKLE_RAN"


class _Hostile:
    """Unpickling this creates the marker file: a weights-only unpickler refuses it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def random_value(rng: random.Random):
    return rng.choice([
        rng.choice(EXTREMES), -rng.randint(1, 100), rng.random() * 10**rng.randint(0, 12), float("nan"),
        float("inf"), "nonsense", "", None, True, [1, 2], [224], {"a": 1}, [0.5] * rng.randint(0, 6), 0.0, 3,
        {"height": rng.choice(EXTREMES), "width": 32}, {"shortest_edge": rng.choice((0, -5, 10**6))},
    ])


def mutate_folder(folder: Path, rng: random.Random) -> str:
    """One damage to a copy of a model folder; returns what it was."""
    kind = rng.choice(("config", "config", "processor", "processor", "header", "data", "index", "pickle",
                       "truncate", "remove"))
    config, processor, weights = folder / "config.json", folder / "preprocessor_config.json", folder / "model.safetensors"
    if kind in ("config", "processor"):
        path = config if kind == "config" else processor
        values = json.loads(path.read_text())
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(sorted(values) + ["dtype", "num_regions", "hidden_size"])
            values[key] = random_value(rng)
        path.write_text(json.dumps(values))
        return kind
    data = weights.read_bytes()
    header = struct.unpack("<Q", data[:8])[0]
    if kind == "header":
        weights.write_bytes(data[:8] + mutate_bytes(data[8:8 + header], rng) + data[8 + header:])
    elif kind == "data":
        body = bytearray(data[8 + header:])
        for _ in range(rng.randint(1, 16)):
            spot = rng.randrange(0, len(body) - 4, 4)
            body[spot:spot + 4] = struct.pack("<f", rng.choice((float("nan"), float("inf"), 1e38, -1e38)))
        weights.write_bytes(data[:8 + header] + bytes(body))
    elif kind == "index":
        weights.rename(folder / "model-00001-of-00001.safetensors")
        shard = rng.choice(("model-00001-of-00001.safetensors", "../../etc/passwd", "/etc/passwd", "missing.safetensors",
                            "", 7))
        names = list(load_file(folder / "model-00001-of-00001.safetensors"))
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            rng.choice(({"weight_map": {name: shard for name in names}}, {"weight_map": shard}, [], {"metadata": {}}))))
    elif kind == "pickle":
        weights.unlink()
        hostile = {"norm.weight": _Hostile(str(folder.parent / MARKER))}
        with open(folder / "pytorch_model.bin", "wb") as handle:
            pickle.dump(hostile, handle)
    elif kind == "truncate":
        weights.write_bytes(data[: rng.randrange(len(data))])
    else:
        rng.choice((config, processor, weights)).unlink()
    return kind


def model_is_the_files(model, folder: Path) -> bool:
    """Every tensor of the loaded model is the one in the folder's safetensors (no random initialisation)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return True  # a weights-only pickle: refused before this (a hostile one) or loaded by transformers
    saved = {}
    for file in files:
        saved.update(load_file(file))
    prefix = "dseqjepa."
    state = model.state_dict()
    return all((saved.get(name, saved.get(prefix + name)) is not None
                and torch.equal(saved.get(name, saved.get(prefix + name)).to(tensor.dtype), tensor))
               for name, tensor in state.items())


def fuzz_model_folders(pristine: Path, work: Path, count: int, seed: int, image: Path) -> Counter:
    """`count` damaged copies of `pristine`, each through the loader the commands use (then a forward pass,
    checked finite as the runner checks it) and the saliency-ranking pipeline."""
    from transformers import pipeline

    from dseqjepa_hub.application.loading import load_model
    from dseqjepa_hub.pipeline_saliency_ranking import refuse_non_finite
    from dseqjepa_hub.regions import rank_regions

    rng = random.Random(seed)
    counts, examples = Counter(), {}
    for index in range(count):
        folder = work / f"{index:04d}" / "model"
        shutil.copytree(pristine, folder)
        kind = mutate_folder(folder, rng)

        def through_the_loader(folder=folder):
            loaded = load_model(folder)
            pixels = loaded.processor(Image.open(image).convert("RGB"), return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                refuse_non_finite(rank_regions(loaded.model, pixels), loaded.model)  # as the runner checks
            return loaded.model

        def through_the_pipeline(folder=folder):
            regions = pipeline("saliency-ranking", model=str(folder))(str(image))
            return all(region["score"] == region["score"] and abs(region["score"]) != float("inf") for region in regions)

        for door, run, check in (("loader", through_the_loader, lambda model, f=folder: model_is_the_files(model, f)),
                                 ("pipeline", through_the_pipeline, bool)):
            outcome, detail = classify(run, check, foreign=door == "pipeline")
            counts[outcome] += 1
            if outcome not in ("result", "refusal"):
                examples.setdefault(f"{door} {kind} {outcome}: {detail}", folder)
        if (folder.parent / MARKER).exists():
            counts["pickle"] += 1
        shutil.rmtree(folder.parent)
    counts.examples = examples
    return counts


# ----------------------------------------------------------------------------- command lines


def argument_values(rng: random.Random, paths: dict[str, str]) -> str:
    return str(rng.choice([
        rng.choice(EXTREMES), "99999999999999999999", "-0", "1e309", "nan", "inf", "-inf", "0x10", "", " ", "abc",
        "a\x00b", "3;4", "1,2", "0,0", "999,999", "cls", rng.random(), -rng.random(), 4096, 8, 16, 7,
        paths["file"], paths["folder"], paths["image"], paths["missing"], paths["model"], "../../etc/passwd",
    ]))


COMMAND_OPTIONS = {
    "regions": ["--batch-size", "--max-pixels", "--size", "--num-workers", "--out", "--min-region-fraction",
                "--num-regions", "--max-side", "--model"],
    "embed": ["--batch-size", "--max-pixels", "--size", "--num-workers", "--out", "--max-side", "--pool", "--model"],
    "visualize": ["--batch-size", "--max-pixels", "--size", "--out", "--max-side", "--num-regions", "--layer",
                  "--query", "--clusters", "--seed", "--model", "--kind", "--min-region-fraction"],
    "info": ["--device"],
    "export": ["--out", "--image-size", "--opset", "--atol"],
    "eval": ["--data", "--task", "--out", "--batch-size", "--epochs", "--lr", "--k", "--temperature", "--seed",
             "--size", "--max-train-images"],
    "train": ["--max-steps", "--config", "--out", "--set"],
    "data": ["--out", "--seed", "--num-train", "--num-val", "--image-size", "--jpeg-quality"],
    "convert": ["--format", "--out", "--num-heads", "--encoder", "--preset"],
    "push": ["--repo-id"],
    "demo": ["--port", "--model"],
}
RUN_FULLY = {"regions", "embed", "visualize", "info", "export"}  # fast on a tiny model; the others are parsed only


def random_command(rng: random.Random, paths: dict[str, str]) -> list[str]:
    command = rng.choice(sorted(COMMAND_OPTIONS))
    argv = [command]
    if command in ("regions", "embed", "visualize"):
        argv += [rng.choice([paths["image"], paths["folder"], paths["missing"], paths["file"]])]
        argv += ["--model", paths["model"], "--num-workers", "0"]
        if command == "embed":
            argv += ["--out", rng.choice([paths["out"] + "/e.npy", paths["out"] + "/e.safetensors", paths["folder"]])]
        if command == "visualize":
            argv += ["--kind", rng.choice(["regions", "saliency", "attention", "similarity", "clusters", "sequence"])]
        if command != "embed":
            argv += ["--out", paths["out"] + "/o"]
    elif command == "info":
        argv += [rng.choice([paths["model"], paths["missing"], paths["file"]])]
    elif command == "export":
        argv += ["timm", paths["model"], "--out", paths["out"] + "/t"]
    elif command == "data":
        argv += ["build", "scenes"]
    for _ in range(rng.randint(1, 4)):
        argv += [rng.choice(COMMAND_OPTIONS[command]), argument_values(rng, paths)]
    if rng.random() < 0.1:
        argv.insert(rng.randrange(1, len(argv) + 1), rng.choice(["--bogus", "-", "--", "=", "--batch-size"]))
    return argv


def leftovers(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if ".tmp-" in path.name or ".partial-" in path.name]


def fuzz_commands(paths: dict[str, str], count: int, seed: int) -> Counter:
    """`count` malformed command lines: the fast commands run on a tiny model, the others parsed only."""
    from dseqjepa_cli import build_parser, main

    rng = random.Random(seed)
    counts, examples = Counter(), {}
    out, scratch = Path(paths["out"]), Path(paths["cwd"])
    for _ in range(count):
        argv = random_command(rng, paths)
        if argv[0] in RUN_FULLY:
            def run(argv=argv):
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    return main(argv)
        else:
            def run(argv=argv):
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    build_parser(argv[0]).parse_args(argv)
                return 0
        with contextlib.chdir(scratch):  # a relative path among the arguments (`--out 16`) is written there
            outcome, detail = classify(run, seconds=120)
        counts[outcome] += 1
        if outcome not in ("result", "refusal"):
            examples.setdefault(f"{outcome}: {detail}", argv)
        if leftovers(out) or leftovers(scratch):
            counts["leftover"] += 1
            examples.setdefault("leftover", argv)
        for folder in (out, scratch):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
    counts.examples = examples
    return counts


def command_paths(root: Path, model: Path) -> dict[str, str]:
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.effect_mandelbrot((48, 40), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(root / "images" / "a.png")
    (root / "images" / "bad.qoi").write_bytes(b"qoif" + bytes(20))
    (root / "notes.txt").write_text("a file")
    (root / "out").mkdir(exist_ok=True)
    (root / "cwd").mkdir(exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return {"image": str(root / "images" / "a.png"), "folder": str(root / "images"), "file": str(root / "notes.txt"),
            "missing": str(root / "missing.png"), "model": str(model), "out": str(root / "out"),
            "cwd": str(root / "cwd")}

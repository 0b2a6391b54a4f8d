"""`dseqjepa regions` (overlays + JSON of ranked regions) and `dseqjepa embed` (embeddings to a file).

Every command's logic is a function tests call directly: `resolve_model`,
`rank_regions_in_files`, `embed_files`, `write_embeddings`, `run_embed`.

Outputs of `regions`, for an input image `DIR/sub/cat.jpg` given as `DIR`: `OUT/sub/cat.regions.png`
(the overlay) and with --json `OUT/sub/cat.regions.json`:
  {"image": path, "size": [H, W], "model": ..., "regions": [region dict, ...]}
where each region dict (docs/ARCHITECTURE.md) keeps its scalars and its `mask` (H, W) and
`patch_mask` (h, w) are run-length encoded: {"size": [rows, cols], "counts": [...]}, row-major
runs alternating False/True, starting with False (`mask_to_rle` / `rle_to_mask`).

Outputs of `embed FILE` (.safetensors or .npy): arrays `pooled` (N, D) float32 and, with
--regions, `regions` (N, R, D) float32, `region_valid` (N, R) bool, `region_scores` (N, R)
float32, row i for the i-th readable image. A JSON sidecar `FILE.json` lists the image files
in row order, the unreadable ones, the model, and the array files (for .npy, each array is its
own file: `STEM.npy`, `STEM.regions.npy`, ...). Under torchrun each rank r of K embeds
inputs[r::K] into `STEM.rank{r}-of-{K}.EXT` (+ sidecar) and rank 0 writes `STEM.index.json`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import atomic_write
from .image_io import find_images, load_images
from .image_processing_dseqjepa import DSeqJEPAImageProcessor
from .modeling_dseqjepa import DSeqJEPAModel
from .pipeline_saliency_ranking import SaliencyRankingPipeline, rank_regions
from .visualization import draw_regions

DEFAULT_REGIONS_OUT = "regions_out"


# ----------------------------------------------------------------------------- model


def resolve_model(model_arg: str | None, device: str = "cpu") -> tuple[DSeqJEPAModel, DSeqJEPAImageProcessor, str]:
    """The model the commands use -> (model in eval mode on `device`, processor, description).

    `model_arg`: a local folder or a Hub repo id (read with from_pretrained, local code, no
    remote code); None: the bundled default model (`dseqjepa_hub.default_model_path()`).
    """
    if model_arg is None:
        model_arg = str(importlib.import_module(__package__).default_model_path())
    try:
        model = DSeqJEPAModel.from_pretrained(model_arg)
        processor = DSeqJEPAImageProcessor.from_pretrained(model_arg)
    except (OSError, ValueError) as error:
        raise SystemExit(f"dseqjepa: cannot load the model {model_arg!r}: {error}") from None
    return model.to(device).eval(), processor, str(model_arg)


def require_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"dseqjepa: --device {device}: no CUDA device is available here")


# ----------------------------------------------------------------------------- regions


def mask_to_rle(mask: np.ndarray) -> dict:
    """Row-major run lengths of a bool mask, alternating False/True runs, starting with False."""
    flat = np.asarray(mask, dtype=bool).ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": list(np.shape(mask)), "counts": counts}


def rle_to_mask(rle: dict) -> np.ndarray:
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(rle["size"])


def regions_to_json(regions: Sequence[dict]) -> list[dict]:
    """Region dicts -> JSON-able dicts: masks run-length encoded, arrays as lists, the saliency map dropped."""
    encoded = []
    for region in regions:
        item = {}
        for key, value in region.items():
            if key == "saliency":
                continue
            if key.endswith("mask"):
                item[key] = mask_to_rle(value)
            elif isinstance(value, np.ndarray):
                item[key] = value.tolist()
            elif isinstance(value, np.generic):
                item[key] = value.item()
            else:
                item[key] = value
        encoded.append(item)
    return encoded


def regions_from_json(items: Sequence[dict]) -> list[dict]:
    """Inverse of `regions_to_json`: masks back to bool arrays, embeddings to float32 arrays."""
    regions = []
    for item in items:
        region = dict(item)
        for key, value in item.items():
            if key.endswith("mask"):
                region[key] = rle_to_mask(value)
            elif key == "embedding":
                region[key] = np.asarray(value, dtype=np.float32)
        regions.append(region)
    return regions


def output_stems(paths: Sequence[Path], inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Relative output stems: a file found under an input folder keeps its path below that
    folder, a file given directly its name; the extension is dropped and a clash gets "-2", "-3"..."""
    folders = [Path(item) for item in inputs if Path(item).is_dir()]
    stems, taken = [], set()
    for path in paths:
        parent = next((folder for folder in folders if path.is_relative_to(folder)), None)
        stem = (path.relative_to(parent) if parent is not None else Path(path.name)).with_suffix("")
        candidate, counter = stem, 1
        while candidate in taken:
            counter += 1
            candidate = stem.with_name(f"{stem.name}-{counter}")
        taken.add(candidate)
        stems.append(candidate)
    return stems


def rank_regions_in_files(
    paths: Sequence[Path],
    model: DSeqJEPAModel,
    processor: DSeqJEPAImageProcessor,
    *,
    out_dir: str | os.PathLike,
    stems: Sequence[Path] | None = None,
    write_json: bool = False,
    min_region_fraction: float | None = None,
    num_regions: int | None = None,
    batch_size: int = 8,
    show_saliency: bool = False,
    skip_existing: bool = False,
    model_description: str = "",
    progress: bool = True,
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Rank regions of every image, write its overlay PNG (and JSON) -> (results, failures).

    results: one dict per written image {"image", "overlay", "json" (or None), "num_regions"};
    failures: (path, reason) for every unreadable file, which is skipped.
    """
    out_dir = Path(out_dir)
    stems = list(stems) if stems is not None else [Path(Path(path).stem) for path in paths]
    pipe = SaliencyRankingPipeline(model=model, image_processor=processor, device=model.device)
    results, failures = [], []
    chunk = max(batch_size, 1) * 4  # images decoded at a time
    with tqdm(total=len(paths), desc="regions", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), chunk):
            todo = []
            for path, stem in zip(paths[start : start + chunk], stems[start : start + chunk]):
                overlay_path = out_dir / f"{stem}.regions.png"
                json_path = out_dir / f"{stem}.regions.json" if write_json else None
                if skip_existing and overlay_path.exists() and (json_path is None or json_path.exists()):
                    bar.update(1)
                    continue
                todo.append((Path(path), overlay_path, json_path))
            loaded, failed = load_images(path for path, _, _ in todo)
            failures.extend(failed)
            bar.update(len(failed))
            targets = {path: (overlay_path, json_path) for path, overlay_path, json_path in todo}
            if not loaded:
                continue
            ranked = pipe(
                [image for _, image in loaded],
                batch_size=batch_size,
                min_region_fraction=min_region_fraction,
                num_regions=num_regions,
                return_saliency=show_saliency,
            )
            for (path, image), regions in zip(loaded, ranked):
                overlay_path, json_path = targets[path]
                saliency = regions[0]["saliency"] if show_saliency and regions else None
                overlay = draw_regions(
                    image,
                    regions,
                    show_saliency=show_saliency,
                    saliency=saliency,
                    saliency_box=processor.crop_box(original_size=(image.height, image.width)),
                )
                atomic_write(overlay_path, lambda target: overlay.save(target, format="PNG"))
                if json_path is not None:
                    record = {
                        "image": str(path),
                        "size": [image.height, image.width],
                        "model": model_description,
                        "regions": regions_to_json(regions),
                    }
                    atomic_write(json_path, lambda target: target.write_text(json.dumps(record)))
                results.append(
                    {"image": path, "overlay": overlay_path, "json": json_path, "num_regions": len(regions)}
                )
                bar.update(1)
    return results, failures


def report_failures(failures: Sequence[tuple[Path, str]]) -> None:
    if failures:
        print(f"{len(failures)} file(s) could not be read and were skipped:", file=sys.stderr)
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)


def run_regions(args: argparse.Namespace) -> int:
    require_device(args.device)
    model, processor, description = resolve_model(args.model, args.device)
    paths = find_images(args.inputs)
    if not paths:
        print(f"dseqjepa regions: no image files found in {' '.join(args.inputs)}", file=sys.stderr)
        return 1
    results, failures = rank_regions_in_files(
        paths,
        model,
        processor,
        out_dir=args.out,
        stems=output_stems(paths, args.inputs),
        write_json=args.json,
        min_region_fraction=args.min_region_fraction,
        num_regions=args.num_regions,
        batch_size=args.batch_size,
        show_saliency=args.show_saliency,
        skip_existing=args.skip_existing,
        model_description=description,
    )
    print(f"wrote {len(results)} overlay(s) to {args.out}")
    report_failures(failures)
    return 1 if failures else 0


# ----------------------------------------------------------------------------- embed


def embed_files(
    paths: Sequence[Path],
    model: DSeqJEPAModel,
    processor: DSeqJEPAImageProcessor,
    *,
    regions: bool = False,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[list[Path], dict[str, np.ndarray], list[tuple[Path, str]]]:
    """Embed readable images -> (their paths in row order, arrays, failures).

    arrays: `pooled` (N, D); with `regions`, also `regions` (N, R, D), `region_valid` (N, R),
    `region_scores` (N, R) from the same forward pass.
    """
    done, failures = [], []
    parts: dict[str, list[np.ndarray]] = {}
    with tqdm(total=len(paths), desc="embed", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            loaded, failed = load_images(paths[start : start + batch_size])
            failures.extend(failed)
            if loaded:
                pixel_values = processor([image for _, image in loaded], return_tensors="pt")["pixel_values"]
                pixel_values = pixel_values.to(device=model.device, dtype=model.dtype)
                with torch.inference_mode():
                    if regions:
                        ranked = rank_regions(model, pixel_values)
                        batch = {
                            "pooled": ranked["pooler_output"],
                            "regions": ranked["region_embeddings"],
                            "region_valid": ranked["valid"],
                            "region_scores": ranked["scores"],
                        }
                    else:
                        batch = {"pooled": model(pixel_values=pixel_values).pooler_output}
                for name, tensor in batch.items():
                    tensor = tensor if tensor.dtype == torch.bool else tensor.float()
                    parts.setdefault(name, []).append(tensor.cpu().numpy())
                done.extend(path for path, _ in loaded)
            bar.update(len(paths[start : start + batch_size]))
    dim = model.config.hidden_size
    arrays = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    arrays.setdefault("pooled", np.zeros((0, dim), dtype=np.float32))
    return done, arrays, failures


def array_files(out: Path, names: Sequence[str]) -> dict[str, Path]:
    """Where each array goes: all in `out` for .safetensors; one .npy per array otherwise."""
    if out.suffix == ".safetensors":
        return {name: out for name in names}
    return {name: out if name == "pooled" else out.with_name(f"{out.stem}.{name}.npy") for name in names}


def write_embeddings(
    out: str | os.PathLike,
    files: Sequence[Path],
    arrays: dict[str, np.ndarray],
    failures: Sequence[tuple[Path, str]] = (),
    model_description: str = "",
) -> Path:
    """Write arrays to `out` (.safetensors or .npy) and the sidecar `out.json`; returns the sidecar path."""
    out = Path(out)
    if out.suffix not in (".safetensors", ".npy"):
        raise ValueError(f"--out {out}: expected a file name ending in .safetensors or .npy, found {out.suffix or 'no extension'}")
    targets = array_files(out, list(arrays))
    if out.suffix == ".safetensors":
        from safetensors.numpy import save_file

        atomic_write(out, lambda target: save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(target)))
    else:
        for name, array in arrays.items():
            atomic_write(targets[name], lambda target, array=array: _save_npy(target, array))
    sidecar = out.with_name(out.name + ".json")
    record = {
        "files": [str(path) for path in files],
        "failures": [{"file": str(path), "reason": reason} for path, reason in failures],
        "model": model_description,
        "arrays": {name: {"file": targets[name].name, "shape": list(array.shape), "dtype": str(array.dtype)} for name, array in arrays.items()},
    }
    atomic_write(sidecar, lambda target: target.write_text(json.dumps(record, indent=1)))
    return sidecar


def _save_npy(target: Path, array: np.ndarray) -> None:
    with open(target, "wb") as handle:
        np.save(handle, array)


def shard_path(out: Path, rank: int, world_size: int) -> Path:
    return out.with_name(f"{out.stem}.rank{rank}-of-{world_size}{out.suffix}")


def run_embed(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix not in (".safetensors", ".npy"):
        raise SystemExit(f"dseqjepa embed: --out {out}: expected a file name ending in .safetensors or .npy")
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = args.device
    require_device(device)
    if world_size > 1:
        if device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(hours=2))
    try:
        model, processor, description = resolve_model(args.model, device)
        paths = find_images(args.inputs)
        if not paths:
            raise SystemExit(f"dseqjepa embed: no image files found in {' '.join(args.inputs)}")
        paths = paths[rank::world_size]
        files, arrays, failures = embed_files(
            paths, model, processor, regions=args.regions, batch_size=args.batch_size, progress=rank == 0
        )
        target = shard_path(out, rank, world_size) if world_size > 1 else out
        write_embeddings(target, files, arrays, failures, description)
        if world_size > 1:
            torch.distributed.barrier()
            if rank == 0:
                failures = write_shard_index(out, world_size)
    finally:
        if world_size > 1:
            torch.distributed.destroy_process_group()
    if rank == 0:
        print(f"wrote {out if world_size == 1 else out.with_name(out.stem + '.index.json')}")
    report_failures(failures)
    return 1 if failures else 0


def write_shard_index(out: Path, world_size: int) -> list[tuple[Path, str]]:
    """Rank 0, after every shard is written: `STEM.index.json` listing the shards -> all failures."""
    shards, failures = [], []
    for rank in range(world_size):
        shard = shard_path(out, rank, world_size)
        sidecar = json.loads(shard.with_name(shard.name + ".json").read_text())
        shards.append({"rank": rank, "file": shard.name, "sidecar": shard.name + ".json", "num_images": len(sidecar["files"])})
        failures.extend((Path(item["file"]), item["reason"]) for item in sidecar["failures"])
    index = {"world_size": world_size, "split": "strided: rank r embeds inputs[r::world_size]", "shards": shards}
    atomic_write(out.with_name(f"{out.stem}.index.json"), lambda target: target.write_text(json.dumps(index, indent=1)))
    return failures


# ----------------------------------------------------------------------------- parsers


def register(subparsers: argparse._SubParsersAction) -> None:
    regions = subparsers.add_parser(
        "regions",
        help="rank discriminative regions of images; write overlays (and JSON)",
        description="Rank the discriminative regions of images and write one overlay PNG per image.",
    )
    regions.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (walked recursively)")
    _add_model_arguments(regions, default_batch_size=8)
    regions.add_argument("--out", default=DEFAULT_REGIONS_OUT, help=f"output folder (default: {DEFAULT_REGIONS_OUT})")
    regions.add_argument("--json", action="store_true", help="also write the regions of each image as JSON")
    regions.add_argument("--min-region-fraction", type=_fraction, default=None, help="area filter in [0, 1] (default: the model's)")
    regions.add_argument("--num-regions", type=_positive_int, default=None, help="slots, background included (default: the model's)")
    regions.add_argument("--show-saliency", action="store_true", help="put the saliency heatmap beside each overlay")
    regions.add_argument("--skip-existing", action="store_true", help="resume: skip images whose outputs exist")
    regions.set_defaults(func=run_regions)

    embed = subparsers.add_parser(
        "embed",
        help="embed images into a .safetensors or .npy file",
        description="Embed images (pooled patch features; region embeddings with --regions). "
        "Under torchrun, inputs are split across ranks, one shard each, plus an index.",
    )
    embed.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (walked recursively)")
    _add_model_arguments(embed, default_batch_size=32)
    embed.add_argument("--out", required=True, help="output file, .safetensors or .npy")
    embed.add_argument("--regions", action="store_true", help="also store ranked region embeddings (N, R, D)")
    embed.set_defaults(func=run_embed)


def _add_model_arguments(parser: argparse.ArgumentParser, default_batch_size: int) -> None:
    parser.add_argument("--model", default=None, metavar="PATH_OR_REPO_ID", help="model folder or Hub repo id (default: bundled model)")
    parser.add_argument("--batch-size", type=_positive_int, default=default_batch_size, help=f"images per forward pass (default: {default_batch_size})")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device (default: cpu)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], found {text}")
    return value

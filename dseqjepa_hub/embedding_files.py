"""Embeddings of image files, written to .safetensors or .npy: the body of `dseqjepa embed`.

Arrays: `pooled` (N, D) float32 and, with regions, `regions` (N, R, D) float32, `region_valid`
(N, R) bool, `region_scores` (N, R) float32, row i for the i-th readable image. A JSON sidecar
`FILE.json` lists the image files in row order, the unreadable ones, the model and the array
files (for .npy each array is its own file: `STEM.npy`, `STEM.regions.npy`, ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from .atomic import atomic_write, remove_stale_temporaries
from .errors import DSeqJEPAError, NonFiniteOutputError
from .image_io import DEFAULT_MAX_PIXELS, load_images
from .image_processing_dseqjepa import DSeqJEPAImageProcessor
from .modeling_dseqjepa import DSeqJEPAModel
from .pipeline_saliency_ranking import rank_regions

EMBEDDING_SUFFIXES = (".safetensors", ".npy")


def check_embedding_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.suffix not in EMBEDDING_SUFFIXES:
        raise DSeqJEPAError(
            f"--out {out}: expected a file name ending in .safetensors or .npy, found {out.suffix or 'no extension'}"
        )
    return out


def embed_files(
    paths: Sequence[Path],
    model: DSeqJEPAModel,
    processor: DSeqJEPAImageProcessor,
    *,
    regions: bool = False,
    batch_size: int = 32,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    progress: bool = True,
) -> tuple[list[Path], dict[str, np.ndarray], list[tuple[Path, str]]]:
    """Embed readable images -> (their paths in row order, arrays, failures).

    `max_side` decodes large photos smaller before preprocessing (faster, less memory; the
    embeddings then differ slightly from a full-size decode); None decodes at full size.

    arrays: `pooled` (N, D); with `regions`, also `regions` (N, R, D), `region_valid` (N, R),
    `region_scores` (N, R) from the same forward pass.
    """
    done, failures = [], []
    parts: dict[str, list[np.ndarray]] = {}
    with tqdm(total=len(paths), desc="embed", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            loaded, failed = load_images(paths[start : start + batch_size], max_pixels=max_pixels, max_side=max_side)
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
                if not torch.isfinite(batch["pooled"]).all():  # one check per batch
                    raise NonFiniteOutputError(
                        f"the model {model.name_or_path} gives non-finite embeddings for {loaded[0][0]} and this batch: "
                        "its weights or config hold NaN or inf; stopped before writing this batch"
                    )
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
    out = check_embedding_path(out)
    remove_stale_temporaries(out.parent)  # left by a killed run; never outputs
    targets = array_files(out, list(arrays))
    if out.suffix == ".safetensors":
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

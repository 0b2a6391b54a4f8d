"""Frozen features of a DSeq-JEPA encoder, extracted once for the probes."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from dseqjepa_hub.image_io import load_image
from dseqjepa_hub.modeling_dseqjepa import patch_tokens
from dseqjepa_options import EVAL_LAYERS as LAYER_CHOICES

from .labelled_splits import EvaluationDataError


def load_pixel_batches(processor, paths: list[Path], batch_size: int, desc: str):
    """Yield (images, pixel_values (B, 3, S, S)) batch by batch, with a progress bar."""
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch"):
        images = [load_image(path) for path in paths[start : start + batch_size]]
        yield images, processor(images=images, return_tensors="pt")["pixel_values"]


@torch.no_grad()
def pooled_features(model, pixel_values: torch.Tensor, layers: str) -> torch.Tensor:
    """Mean-pooled patch features: the final-norm last layer (B, D), or, for "last4", the outputs of
    the last four blocks, each through the final LayerNorm as the last layer is, concatenated (B, 4D)."""
    if layers == "last":
        return model(pixel_values=pixel_values).pooler_output.float()
    outputs = model(pixel_values=pixel_values, output_hidden_states=True)
    blocks = outputs.hidden_states[-4:]  # 4 x (B, [1] + N, D), before the final norm
    return torch.cat([model.norm(patch_tokens(block, model.config)).mean(dim=1) for block in blocks], dim=-1).float()


def extract_features(
    model, processor, paths: list[Path], layers: str = "last", batch_size: int = 64, desc: str = "features"
) -> torch.Tensor:
    """(N, D) or (N, 4D) float32 features on the CPU, in the order of `paths`."""
    if layers not in LAYER_CHOICES:
        raise EvaluationDataError(f"layers must be one of {LAYER_CHOICES}, got {layers!r}")
    if layers == "last4" and model.config.num_hidden_layers < 4:
        raise EvaluationDataError(f"--layers last4 needs at least 4 blocks; the model has {model.config.num_hidden_layers}")
    device = next(model.parameters()).device
    features = [
        pooled_features(model, pixel_values.to(device), layers).cpu()
        for _, pixel_values in load_pixel_batches(processor, paths, batch_size, desc)
    ]
    return torch.cat(features)

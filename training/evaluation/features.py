"""Frozen features of a DSeq-JEPA encoder, extracted once for the probes, through the one
batched-inference runner (`dseqjepa_hub.application.runner`)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from dseqjepa_hub.application.runner import image_batches, infer_files
from dseqjepa_hub.image_io import ImageLoadError

from .data import EvaluationDataError

LAYER_CHOICES = ("last", "last4")


def _refuse_unreadable(failures: list[tuple[Path, str]]) -> None:
    """An evaluation set is curated: an unreadable file stops the evaluation (one line, naming it)."""
    if failures:
        raise ImageLoadError(*failures[0])


def load_pixel_batches(processor, paths: list[Path], batch_size: int, desc: str):
    """Yield (images, pixel_values (B, 3, S, S)) batch by batch, decoded by the runner's workers,
    with a progress bar."""
    with image_batches(paths, processor, batch_size=batch_size, keep_images=True) as batches:
        for batch in tqdm(batches, total=-(-len(paths) // batch_size), desc=desc, unit="batch"):
            _refuse_unreadable(batch.failures)
            yield [Image.fromarray(image.numpy()) for image in batch.images], batch.pixel_values


@torch.no_grad()
def pooled_features(model, pixel_values: torch.Tensor, layers: str) -> torch.Tensor:
    """Mean-pooled patch features: the final-norm last layer (B, D), or, for "last4", the outputs of
    the last four blocks, each through the final LayerNorm as the last layer is, concatenated (B, 4D)."""
    if layers == "last":
        return model(pixel_values=pixel_values).pooler_output.float()
    outputs = model(pixel_values=pixel_values, output_hidden_states=True)
    prefix = model.num_prefix_tokens
    blocks = outputs.hidden_states[-4:]  # 4 x (B, [1] + N, D), before the final norm
    return torch.cat([model.norm(block[:, prefix:]).mean(dim=1) for block in blocks], dim=-1).float()


def extract_features(
    model, processor, paths: list[Path], layers: str = "last", batch_size: int = 64, desc: str = "features"
) -> torch.Tensor:
    """(N, D) or (N, 4D) float32 features on the CPU, in the order of `paths`."""
    if layers not in LAYER_CHOICES:
        raise EvaluationDataError(f"layers must be one of {LAYER_CHOICES}, got {layers!r}")
    if layers == "last4" and model.config.num_hidden_layers < 4:
        raise EvaluationDataError(f"--layers last4 needs at least 4 blocks; the model has {model.config.num_hidden_layers}")
    features: list[torch.Tensor] = []

    def forward(pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": pooled_features(model, pixel_values, layers)}

    def keep(batch, outputs: dict[str, torch.Tensor]) -> None:
        features.append(outputs["features"])

    _, failures = infer_files(paths, processor, forward, keep, device=next(model.parameters()).device,
                              batch_size=batch_size, desc=desc)
    _refuse_unreadable(failures)
    return torch.cat(features)

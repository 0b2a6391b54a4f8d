"""Frozen features of a DSeq-JEPA encoder, extracted once for the probes, through the one
batched-inference runner (`dseqjepa_hub.application.runner`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from dseqjepa_hub.application.runner import Forward, ImageBatch, infer_files
from dseqjepa_hub.image_io import ImageLoadError
from dseqjepa_hub.regions import patch_tokens
from dseqjepa_options import EVAL_LAYERS as LAYER_CHOICES

from .labelled_splits import EvaluationDataError


def _refuse_unreadable(failures: list[tuple[Path, str]]) -> None:
    """An evaluation set is curated: an unreadable file stops the evaluation (one line, naming it)."""
    if failures:
        raise ImageLoadError(*failures[0])


def infer_evaluation_images(
    model, processor, paths: list[Path], forward: Forward, keep: Callable[[ImageBatch, dict[str, torch.Tensor]], None],
    batch_size: int, desc: str,
) -> None:
    """`infer_files` on the model's device for an evaluation set: `keep(batch, outputs)` collects
    each batch's results; the first unreadable file stops the run (`ImageLoadError`)."""

    def keep_readable(batch: ImageBatch, outputs: dict[str, torch.Tensor]) -> None:
        _refuse_unreadable(batch.failures)
        keep(batch, outputs)

    _, failures = infer_files(paths, processor, forward, keep_readable, device=next(model.parameters()).device,
                              batch_size=batch_size, desc=desc)
    _refuse_unreadable(failures)  # a batch of which no file could be read never reaches the sink


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
    features: list[torch.Tensor] = []

    def forward(pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": pooled_features(model, pixel_values, layers)}

    def keep(batch, outputs: dict[str, torch.Tensor]) -> None:
        features.append(outputs["features"])

    infer_evaluation_images(model, processor, paths, forward, keep, batch_size, desc)
    return torch.cat(features)

"""The numerical check every conversion passes: source and converted model on the same random images."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dseqjepa_options import CONVERSION_TOLERANCE as TOLERANCE  # fp32, max abs difference of the final-norm tokens

from .loading import ConversionError


@torch.no_grad()
def max_token_difference(
    reference: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    *,
    num_images: int = 2,
    seed: int = 0,
    image_size: int | None = None,
) -> float:
    """Max |reference - model.last_hidden_state| on `num_images` random fp32 images of `image_size`
    (default: the model's input size)."""
    config = model.config
    side = image_size or config.image_size
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num_images, config.num_channels, side, side, generator=generator)
    expected = reference(images).float()  # (B, [1] + N, D)
    found = model.eval().float()(pixel_values=images).last_hidden_state  # (B, [1] + N, D)
    if expected.shape != found.shape:
        raise ConversionError(
            f"the converted model outputs tokens of shape {tuple(found.shape)}, the source {tuple(expected.shape)}"
        )
    return (expected - found).abs().max().item()


def verify(
    reference: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, tolerance: float = TOLERANCE,
    image_size: int | None = None,
) -> float:
    """The max difference, or a ConversionError when it is above `tolerance`."""
    difference = max_token_difference(reference, model, image_size=image_size)
    if not difference <= tolerance:  # also catches NaN
        raise ConversionError(
            f"the converted model differs from the source by {difference:.3g} (max abs, fp32), above the "
            f"tolerance {tolerance:g}: nothing was written"
        )
    return difference

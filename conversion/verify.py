"""The numerical check every conversion passes: source and converted model on the same random images."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .layout import EncoderLayout, check_tensors
from .loading import ConversionError

TOLERANCE = 1e-4  # fp32, max abs difference of the final-norm tokens


def timm_reference(
    state: dict[str, torch.Tensor],
    layout: EncoderLayout,
    layer_norm_eps: float,
    source: str,
    pos_embed_has_cls: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """timm's VisionTransformer holding `state` (timm's names = the release's): images -> forward_features tokens.

    pos_embed_has_cls: the CLS position is part of pos_embed (timm's default) rather than absent
    (the release: the CLS token gets no position embedding, timm's `no_embed_class=True`).
    """
    model = VisionTransformer(
        img_size=layout.image_size,
        patch_size=layout.patch_size,
        in_chans=layout.num_channels,
        num_classes=0,
        global_pool="avg",
        embed_dim=layout.hidden_size,
        depth=layout.num_hidden_layers,
        num_heads=layout.num_attention_heads,
        mlp_ratio=layout.intermediate_size / layout.hidden_size,
        qkv_bias=layout.qkv_bias,
        class_token=layout.use_cls_token,
        no_embed_class=not pos_embed_has_cls,
        fc_norm=False,
        norm_layer=partial(nn.LayerNorm, eps=layer_norm_eps),
        weight_init="skip",  # every tensor is loaded below
    )
    check_tensors(state, model.state_dict(), source)
    model.load_state_dict(state, strict=True)
    return model.eval().forward_features


@torch.no_grad()
def max_token_difference(
    reference: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    *,
    num_images: int = 2,
    seed: int = 0,
) -> float:
    """Max |reference - model.last_hidden_state| on `num_images` random fp32 images of the model's input size."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num_images, config.num_channels, config.image_size, config.image_size, generator=generator)
    expected = reference(images).float()  # (B, [1] + N, D)
    found = model.eval().float()(pixel_values=images).last_hidden_state  # (B, [1] + N, D)
    if expected.shape != found.shape:
        raise ConversionError(
            f"the converted model outputs tokens of shape {tuple(found.shape)}, the source {tuple(expected.shape)}"
        )
    return (expected - found).abs().max().item()


def verify(reference: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, tolerance: float = TOLERANCE) -> float:
    """The max difference, or a ConversionError when it is above `tolerance`."""
    difference = max_token_difference(reference, model)
    if not difference <= tolerance:  # also catches NaN
        raise ConversionError(
            f"the converted model differs from the source by {difference:.3g} (max abs, fp32), above the "
            f"tolerance {tolerance:g}: nothing was written"
        )
    return difference

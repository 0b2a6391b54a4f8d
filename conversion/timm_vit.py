"""timm's VisionTransformer for an encoder's sizes: the one place its arguments are built.

They serve the reference forward of the readers whose tensors carry timm's names (= the release's)
and `export timm`, whose file records them for `timm.create_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from dseqjepa_hub.configuration_dseqjepa import DSeqJEPAConfig

from .layout import EncoderLayout, check_tensors


def vit_kwargs(sizes: EncoderLayout | DSeqJEPAConfig, *, no_embed_class: bool = False) -> dict:
    """VisionTransformer keyword arguments (JSON values) for `sizes` (the two share the field names):
    no classifier, features = the final-norm tokens, pooled = the mean of the patch tokens.

    no_embed_class: the CLS token gets no position embedding (the release) rather than one inside
    pos_embed (timm's default).
    """
    return dict(
        img_size=sizes.image_size,
        patch_size=sizes.patch_size,
        in_chans=sizes.num_channels,
        embed_dim=sizes.hidden_size,
        depth=sizes.num_hidden_layers,
        num_heads=sizes.num_attention_heads,
        mlp_ratio=sizes.intermediate_size / sizes.hidden_size,
        qkv_bias=sizes.qkv_bias,
        class_token=sizes.use_cls_token,
        no_embed_class=no_embed_class,
        global_pool="avg",
        fc_norm=False,
        num_classes=0,
    )


def timm_reference(
    state: dict[str, torch.Tensor],
    layout: EncoderLayout,
    layer_norm_eps: float,
    source: str,
    pos_embed_has_cls: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """timm's VisionTransformer holding `state`: images -> forward_features tokens.

    pos_embed_has_cls: the CLS position is part of pos_embed (timm's default) rather than absent.
    """
    model = VisionTransformer(
        **vit_kwargs(layout, no_embed_class=not pos_embed_has_cls),
        norm_layer=partial(nn.LayerNorm, eps=layer_norm_eps),
        weight_init="skip",  # every tensor is loaded below
    )
    check_tensors(state, model.state_dict(), source)
    model.load_state_dict(state, strict=True)
    return model.eval().forward_features

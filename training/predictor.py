"""The JEPA predictor: a narrow ViT that predicts target-patch embeddings from context tokens.

Tensor names are the release's (docs/METHOD.md section 7): `predictor_embed`, `mask_token`,
`predictor_pos_embed` (fixed sin-cos, patches only), `predictor_blocks.{i}`, `predictor_norm`,
`predictor_proj`.
"""

from __future__ import annotations

import torch
from torch import nn

from dseqjepa_hub.configuration_dseqjepa import DSeqJEPAConfig
from dseqjepa_hub.modeling_dseqjepa import DSeqJEPABlock, additive_attention_mask, sincos_pos_embed_2d


class JEPAPredictor(nn.Module):
    def __init__(self, config: DSeqJEPAConfig):
        super().__init__()
        width = config.predictor_hidden_size
        height, grid_width = config.grid_size
        self.predictor_embed = nn.Linear(config.hidden_size, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("predictor_pos_embed", sincos_pos_embed_2d(width, height, grid_width)[None])  # (1, N, Dp)
        self.predictor_blocks = nn.ModuleList(
            DSeqJEPABlock(config, width, config.predictor_num_attention_heads, 4 * width)
            for _ in range(config.predictor_num_hidden_layers)
        )
        self.predictor_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.predictor_proj = nn.Linear(width, config.hidden_size)
        self._init_weights(config.initializer_range)

    def _init_weights(self, std: float) -> None:
        """I-JEPA's predictor init: truncated-normal linears and mask token, zero biases, unit norms."""
        nn.init.trunc_normal_(self.mask_token, std=std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, context: torch.Tensor, context_positions: torch.Tensor, context_keys: torch.Tensor,
                target_positions: torch.Tensor, target_keep: torch.Tensor, mask_token: bool = True) -> torch.Tensor:
        """Predict the encoder embedding at every target position.

        context: (S, P + Lc, D) context-encoder tokens, P prefix (CLS) tokens first.
        context_positions: (S, Lc) patch index of each non-prefix context token.
        context_keys: (S, P + Lc) bool, the context tokens the sequence may attend to.
        target_positions, target_keep: (S, Lt) patch index of each target query, and which are real.
        The target queries (mask token + sin-cos position; the position alone with
        `mask_token=False`, as the DSeq-JEPA release builds them) and the context tokens attend
        to the allowed context tokens and to the real target queries. Returns (S, Lt, D).
        """
        prefix = context.shape[1] - context_positions.shape[1]
        pos_embed = self.predictor_pos_embed[0].to(context.dtype)  # (N, Dp)
        context = self.predictor_embed(context)  # (S, P + Lc, Dp)
        context = torch.cat([context[:, :prefix], context[:, prefix:] + pos_embed[context_positions]], dim=1)
        queries = pos_embed[target_positions]  # (S, Lt, Dp)
        if mask_token:
            queries = self.mask_token.to(context.dtype) + queries
        tokens = torch.cat([context, queries], dim=1)
        mask = additive_attention_mask(torch.cat([context_keys, target_keep], dim=1), tokens.dtype)
        for block in self.predictor_blocks:
            tokens = block(tokens, mask)
        return self.predictor_proj(self.predictor_norm(tokens[:, context.shape[1]:]))  # (S, Lt, D)

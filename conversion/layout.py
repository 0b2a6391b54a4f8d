"""Encoder sizes inferred from tensor shapes (release names), and the tensor-by-tensor check.

Width, depth, patch size, channels, grid, MLP width, qkv bias and the CLS token follow from the
shapes. The head count does not: it comes from `--num-heads`, else `--preset`, else the preset
whose width matches, and is an error when none or several disagree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from dseqjepa_hub.configuration_dseqjepa import PRESETS, DSeqJEPAConfig

from .loading import ConversionError

LAYER_NORM_EPS = 1e-6  # the release's, I-JEPA's and timm's ViT default (docs/METHOD.md section 7)
_BLOCK = re.compile(r"blocks\.(\d+)\.")


@dataclass(frozen=True)
class EncoderLayout:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    patch_size: int
    num_channels: int
    grid: int
    qkv_bias: bool
    use_cls_token: bool

    @property
    def image_size(self) -> int:
        return self.grid * self.patch_size

    def config(self, **overrides) -> DSeqJEPAConfig:
        """The DSeqJEPAConfig of this encoder; `overrides` set the other fields (eps, predictor sizes, ...)."""
        return DSeqJEPAConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            qkv_bias=self.qkv_bias,
            use_cls_token=self.use_cls_token,
            **overrides,
        )


def _tensor(state: dict[str, torch.Tensor], name: str, ndim: int, source: str) -> torch.Tensor:
    if name not in state:
        raise ConversionError(f"{source}: missing tensor {name!r} (found e.g. {sorted(state)[:8]})")
    tensor = state[name]
    if tensor.dim() != ndim:
        raise ConversionError(f"{source}: {name} should have {ndim} dimensions, found shape {tuple(tensor.shape)}")
    return tensor


def infer_layout(
    state: dict[str, torch.Tensor],
    source: str,
    *,
    num_heads: int | None = None,
    preset: str | None = None,
    grid: int | None = None,
) -> EncoderLayout:
    """Sizes of a release-named encoder state dict. `grid` overrides the grid read from `pos_embed`."""
    proj = _tensor(state, "patch_embed.proj.weight", 4, source)  # (D, C, p, p)
    width, channels, patch, patch_w = proj.shape
    if patch != patch_w:
        raise ConversionError(f"{source}: non-square patches {patch}x{patch_w} are not supported")
    if grid is None:
        tokens = _tensor(state, "pos_embed", 3, source).shape[1]
        grid = math.isqrt(tokens)
        if grid * grid != tokens:
            raise ConversionError(
                f"{source}: pos_embed has {tokens} positions, not a square patch grid "
                "(a CLS position inside pos_embed? that is the timm format)"
            )
    depths = sorted({int(match.group(1)) for key in state if (match := _BLOCK.match(key))})
    if not depths:
        raise ConversionError(f"{source}: no transformer blocks (blocks.0....) found")
    if depths != list(range(len(depths))):
        raise ConversionError(f"{source}: block indices are not 0..{len(depths) - 1}: found {depths}")
    fc1 = _tensor(state, "blocks.0.mlp.fc1.weight", 2, source)
    return EncoderLayout(
        hidden_size=width,
        num_hidden_layers=len(depths),
        num_attention_heads=resolve_num_heads(width, num_heads, preset, source),
        intermediate_size=fc1.shape[0],
        patch_size=patch,
        num_channels=channels,
        grid=grid,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        use_cls_token="cls_token" in state,
    )


def resolve_num_heads(width: int, num_heads: int | None, preset: str | None, source: str) -> int:
    """Heads from --num-heads, --preset, or the one preset width that matches (the only guess allowed)."""
    if num_heads is not None:
        heads = num_heads
    elif preset is not None:
        if preset not in PRESETS:
            raise ConversionError(f"unknown --preset {preset!r}; expected one of {sorted(PRESETS)}")
        if PRESETS[preset]["hidden_size"] != width:
            raise ConversionError(
                f"{source}: --preset {preset} has width {PRESETS[preset]['hidden_size']} but the checkpoint's is {width}"
            )
        heads = PRESETS[preset]["num_attention_heads"]
    else:
        matches = {values["num_attention_heads"] for values in PRESETS.values() if values["hidden_size"] == width}
        if len(matches) != 1:
            found = "no preset has" if not matches else f"presets disagree ({sorted(matches)} heads) for"
            raise ConversionError(
                f"{source}: cannot infer the number of attention heads: {found} width {width}; "
                "pass --num-heads N or --preset NAME"
            )
        heads = matches.pop()
    if width % heads:
        raise ConversionError(f"{source}: width {width} is not divisible by {heads} attention heads")
    return heads


def check_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """Raise one ConversionError listing every missing, unexpected and mis-shaped tensor by name."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{name}: expected {tuple(expected[name].shape)}, found {tuple(state[name].shape)}"
        for name in sorted(set(state) & set(expected))
        if state[name].shape != expected[name].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {missing}")
    if unexpected:
        problems.append(f"unexpected tensors: {unexpected}")
    if misshaped:
        problems.append("mis-shaped tensors: " + "; ".join(misshaped))
    if problems:
        raise ConversionError(f"{source}: the tensors do not fit the inferred model:\n  " + "\n  ".join(problems))

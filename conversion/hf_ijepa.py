"""Reader for transformers' IJepaModel: a saved folder (config.json + weights) or a bare state dict.

transformers 4 names (`encoder.layer.{i}.attention.attention.query`, ...) are what every saved file
holds (transformers 5 writes them back on save); transformers 5 names the modules
`layers.{i}.attention.{q,k,v,o}_proj` and `layers.{i}.mlp.fc1/fc2`. Both are read. The separate
q/k/v projections are fused into the release's `attn.qkv`. The reference is transformers' own
IJepaModel holding the source tensors.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from transformers import IJepaConfig, IJepaModel

from .layout import EncoderLayout, check_tensors, resolve_num_heads
from .loading import ConversionError, as_state_dict, describe_checkpoint, load_hf_folder_state, load_tensor_file
from .source import SourceCheckpoint

DEFAULT_LAYER_NORM_EPS = 1e-6  # I-JEPA's; facebook/ijepa_* configs say the same
_V4_TO_V5 = [  # regex over transformers 4 names -> transformers 5 names
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"layers.\1.attention.q_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"layers.\1.attention.k_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"layers.\1.attention.v_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attention.o_proj."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.(layernorm_before|layernorm_after)\.", r"layers.\1.\2."),
]
_V5_TO_RELEASE = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^layers\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^layers\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
    (r"^layernorm\.", "norm."),
]


def _rename(name: str, rules: list[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        renamed, count = re.subn(pattern, replacement, name)
        if count:
            return renamed
    return name


def read_hf_ijepa(
    path, *, num_heads: int | None = None, preset: str | None = None, with_predictor: bool = False, **ignored
) -> SourceCheckpoint:
    """`ignored`: --encoder, which a single-encoder format does not have."""
    path = Path(path)
    if with_predictor:
        raise ConversionError(f"{path}: --with-predictor: a hf-ijepa checkpoint holds no JEPA predictor")
    saved_config = {}
    if path.is_dir():
        state = load_hf_folder_state(path)
        if (path / "config.json").is_file():
            saved_config = json.loads((path / "config.json").read_text())
            if saved_config.get("model_type") not in (None, "ijepa"):
                raise ConversionError(
                    f"{path}/config.json: model_type {saved_config.get('model_type')!r}, expected 'ijepa'"
                )
    else:
        loaded = load_tensor_file(path)
        if not isinstance(loaded, dict) or not any("embeddings." in str(key) for key in loaded):
            raise ConversionError(f"{path}: not a transformers IJepaModel state dict: it is {describe_checkpoint(loaded)}")
        state = as_state_dict(loaded, path)

    notes = []
    if any(key.startswith("ijepa.") for key in state):  # saved from IJepaForImageClassification
        dropped = sorted(key for key in state if not key.startswith("ijepa."))
        if dropped:
            notes.append(f"dropped the classification head {dropped}")
        state = {key.removeprefix("ijepa."): value for key, value in state.items() if key.startswith("ijepa.")}
    pooler = sorted(key for key in state if key.startswith("pooler."))
    if pooler:
        notes.append(f"dropped the unused pooler {pooler}")
    source = {_rename(key, _V4_TO_V5): value for key, value in state.items() if not key.startswith("pooler.")}
    if "embeddings.patch_embeddings.projection.weight" not in source:
        raise ConversionError(f"{path}: not a transformers IJepaModel state dict: it is {describe_checkpoint(state)}")

    layout, eps, act = _layout(source, saved_config, num_heads, preset, str(path))
    reference = IJepaModel(
        IJepaConfig(
            image_size=layout.image_size,
            patch_size=layout.patch_size,
            num_channels=layout.num_channels,
            hidden_size=layout.hidden_size,
            num_hidden_layers=layout.num_hidden_layers,
            num_attention_heads=layout.num_attention_heads,
            intermediate_size=layout.intermediate_size,
            qkv_bias=layout.qkv_bias,
            layer_norm_eps=eps,
            hidden_act=act,
        )
    ).eval()
    check_tensors(source, reference.state_dict(), str(path))
    reference.load_state_dict(source, strict=True)
    return SourceCheckpoint(
        encoder=to_release_names(source, layout.num_hidden_layers),
        layout=layout,
        reference=lambda images: reference(pixel_values=images).last_hidden_state,
        config_overrides={"layer_norm_eps": eps, "hidden_act": act, "saliency_query": "mean_patch"},
        provenance={"format": "hf-ijepa", "source": path.name, "license": "cc-by-nc-4.0"},  # facebook/ijepa_*
        notes=notes + ["no CLS token: regions are ranked with the 'mean_patch' saliency query"],
    )


def _layout(
    source: dict[str, torch.Tensor], saved_config: dict, num_heads: int | None, preset: str | None, where: str
) -> tuple[EncoderLayout, float, str]:
    proj = source["embeddings.patch_embeddings.projection.weight"]  # (D, C, p, p)
    width, channels, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    positions = source["embeddings.position_embeddings"].shape[1] if "embeddings.position_embeddings" in source else 0
    grid = math.isqrt(positions)
    if grid * grid != positions or positions == 0:
        raise ConversionError(f"{where}: embeddings.position_embeddings has {positions} positions, not a square grid")
    depth = len({key.split(".")[1] for key in source if key.startswith("layers.")})
    if num_heads is None and preset is None and "num_attention_heads" in saved_config:
        num_heads = saved_config["num_attention_heads"]
    layout = EncoderLayout(
        hidden_size=width,
        num_hidden_layers=depth,
        num_attention_heads=resolve_num_heads(width, num_heads, preset, where),
        intermediate_size=source["layers.0.mlp.fc1.weight"].shape[0] if "layers.0.mlp.fc1.weight" in source else 0,
        patch_size=patch,
        num_channels=channels,
        grid=grid,
        qkv_bias="layers.0.attention.q_proj.bias" in source,
        use_cls_token=False,
    )
    if depth == 0 or layout.intermediate_size == 0:
        raise ConversionError(f"{where}: no transformer layers (encoder.layer.0... or layers.0...) found")
    return layout, saved_config.get("layer_norm_eps", DEFAULT_LAYER_NORM_EPS), saved_config.get("hidden_act", "gelu")


def to_release_names(source: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """transformers 5 IJepaModel names -> release names, q/k/v fused into qkv."""
    state = {"pos_embed": source["embeddings.position_embeddings"]}
    for key, value in source.items():
        if ".attention." in key and re.search(r"\.(q|k|v)_proj\.", key) or key == "embeddings.position_embeddings":
            continue
        state[_rename(key, _V5_TO_RELEASE)] = value
    for index in range(depth):
        for kind in ("weight", "bias"):
            parts = [source.get(f"layers.{index}.attention.{p}_proj.{kind}") for p in "qkv"]
            if all(part is not None for part in parts):
                state[f"blocks.{index}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)  # (3D, D) or (3D,)
    return state

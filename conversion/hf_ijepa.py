"""Reader for transformers' IJepaModel: a saved folder (config.json + weights) or a bare state dict.

transformers 4 names (`encoder.layer.{i}.attention.attention.query`, ...) are what every saved file
holds (transformers 5 writes them back on save); transformers 5 names the modules
`layers.{i}.attention.{q,k,v,o}_proj` and `layers.{i}.mlp.fc1/fc2`. Both are read: renamed to the
release's names (q/k/v fused into `attn.qkv`), the sizes follow from those like every reader's
(`infer_layout`). The reference is transformers' own IJepaModel holding the source tensors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from transformers import IJepaConfig, IJepaModel

from .layout import LAYER_NORM_EPS, check_tensors, infer_layout
from .loading import ConversionError, as_state_dict, describe_checkpoint, load_hf_folder_state, load_tensor_file
from .release import IJEPA_LICENSE, IJEPA_TRAINING_TEXT
from .source import SourceCheckpoint

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
    (r"^embeddings\.position_embeddings$", "pos_embed"),
]
_QKV = re.compile(r"^layers\.(\d+)\.attention\.(q|k|v)_proj\.(weight|bias)$")


def _rename(name: str, rules: list[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        renamed, count = re.subn(pattern, replacement, name)
        if count:
            return renamed
    return name


def read_hf_ijepa(path, *, num_heads: int | None = None, preset: str | None = None, **ignored) -> SourceCheckpoint:
    """`ignored`: --encoder and --with-predictor, which a single-encoder format does not have."""
    path = Path(path)
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

    encoder = to_release_names(source)
    if num_heads is None and preset is None:
        num_heads = saved_config.get("num_attention_heads")
    layout = infer_layout(encoder, str(path), num_heads=num_heads, preset=preset)
    eps = saved_config.get("layer_norm_eps", LAYER_NORM_EPS)
    act = saved_config.get("hidden_act", "gelu")
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
        encoder=encoder,
        layout=layout,
        reference=lambda images: reference(pixel_values=images).last_hidden_state,
        config_overrides={"layer_norm_eps": eps, "hidden_act": act},
        provenance={"source": path.name},
        notes=notes,
        license=IJEPA_LICENSE,
        converted_from="a `hf-ijepa` checkpoint",
        training_text=IJEPA_TRAINING_TEXT,
    )


def to_release_names(source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 IJepaModel names -> release names, q/k/v fused into qkv (where all three are present)."""
    state = {}
    for key, value in source.items():
        qkv = _QKV.match(key)
        if qkv is None:
            state[_rename(key, _V5_TO_RELEASE)] = value
        elif qkv.group(2) == "q":
            parts = [source.get(f"layers.{qkv.group(1)}.attention.{part}_proj.{qkv.group(3)}") for part in "qkv"]
            if all(part is not None for part in parts):
                state[f"blocks.{qkv.group(1)}.attn.qkv.{qkv.group(3)}"] = torch.cat(parts, dim=0)  # (3D, D) or (3D,)
    return state

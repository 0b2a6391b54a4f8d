"""Readers for the authors' DSeq-JEPA release and I-JEPA's release (docs/METHOD.md section 7).

Both are `torch.save` dicts (`encoder`, `target_encoder`, `predictor`, ...) whose state dicts may
carry DDP's `module.` prefix, or a bare encoder state dict. Their encoder tensor names are
DSeqJEPAModel's own, so reading is a prefix strip; I-JEPA's encoder has no `cls_token`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import torch

from .layout import LAYER_NORM_EPS, infer_layout
from .loading import ConversionError, as_state_dict, describe_checkpoint, load_tensor_file, strip_prefix
from .source import SourceCheckpoint
from .timm_vit import timm_reference

ENCODER_KEYS = {"target": "target_encoder", "context": "encoder"}
_PREDICTOR_BLOCK = re.compile(r"predictor_blocks\.(\d+)\.")
IJEPA_LICENSE = "cc-by-nc-4.0"  # I-JEPA's weights, also facebook/ijepa_*; the DSeq-JEPA release names none
IJEPA_TRAINING_TEXT = (
    "Weights converted from I-JEPA (Assran et al., 2023), pretrained without labels on ImageNet "
    "with I-JEPA's multi-block objective; DSeq-JEPA's region ranking is applied at inference only."
)
DSEQ_TRAINING_TEXT = (
    "Weights converted from the DSeq-JEPA authors' release. Their ViT-B/16 recipe: ImageNet-1k, "
    "224 px, 600 epochs, batch 2048, AdamW (LR 2e-4 -> 8e-4 over 15 warm-up epochs, cosine to 1e-4, "
    "weight decay 0.04 -> 0.4), EMA 0.996 -> 1.0, random-resized crops (0.3, 1.0), predictor "
    "depth 6 width 192, DSeq steps mixed with I-JEPA multi-block steps."
)


def read_dseq_release(path, **options) -> SourceCheckpoint:
    return replace(_read_release(Path(path), "dseq-release", **options), training_text=DSEQ_TRAINING_TEXT)


def read_ijepa_release(path, **options) -> SourceCheckpoint:
    source = _read_release(Path(path), "ijepa-release", **options)
    return replace(source, license=IJEPA_LICENSE, training_text=IJEPA_TRAINING_TEXT)


def _read_release(
    path: Path,
    fmt: str,
    *,
    encoder: str = "target",
    num_heads: int | None = None,
    preset: str | None = None,
    with_predictor: bool = False,
) -> SourceCheckpoint:
    checkpoint = load_tensor_file(path)
    notes = []
    if isinstance(checkpoint, dict) and any(key in checkpoint for key in ENCODER_KEYS.values()):
        key = ENCODER_KEYS[encoder]
        if key not in checkpoint:
            raise ConversionError(f"{path}: no {key!r} entry for --encoder {encoder}; the dict has {sorted(checkpoint)}")
        state = strip_prefix(as_state_dict(checkpoint[key], f"{path}[{key!r}]"), "module.")
        predictor = None
        if with_predictor:
            if "predictor" not in checkpoint:
                raise ConversionError(f"{path}: --with-predictor, but the dict has no 'predictor' ({sorted(checkpoint)})")
            predictor = strip_prefix(as_state_dict(checkpoint["predictor"], f"{path}['predictor']"), "module.")
    elif isinstance(checkpoint, dict) and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        key, predictor = None, None
        state = strip_prefix(as_state_dict(checkpoint, path), "module.")
        notes.append(f"{path.name} is a bare encoder state dict (--encoder does not apply)")
        if with_predictor:
            raise ConversionError(f"{path}: --with-predictor, but the file holds a bare encoder state dict")
    else:
        raise ConversionError(f"{path}: not a {fmt} checkpoint: it is {describe_checkpoint(checkpoint)}")

    if "patch_embed.proj.weight" not in state:
        raise ConversionError(f"{path}: not a {fmt} checkpoint: it is {describe_checkpoint(state)}")
    has_cls = "cls_token" in state
    if fmt == "dseq-release" and not has_cls:
        raise ConversionError(
            f"{path}: the encoder has no cls_token, which every DSeq-JEPA encoder has; "
            "this looks like I-JEPA's release: use --format ijepa-release"
        )
    if fmt == "ijepa-release" and has_cls:
        raise ConversionError(
            f"{path}: the encoder has a cls_token, which I-JEPA's encoder lacks; "
            "this looks like the DSeq-JEPA release (--format dseq-release) or a timm checkpoint (--format timm)"
        )
    layout = infer_layout(state, str(path), num_heads=num_heads, preset=preset)
    overrides = {"layer_norm_eps": LAYER_NORM_EPS}
    if predictor is not None:
        overrides.update(predictor_sizes(predictor, layout.num_attention_heads, str(path)))
    return SourceCheckpoint(
        encoder=state,
        layout=layout,
        reference=timm_reference(state, layout, LAYER_NORM_EPS, str(path)),
        config_overrides=overrides,
        predictor=predictor,
        provenance={"source": path.name, "encoder": key},
        notes=notes,
        converted_from=f"a `{fmt}` checkpoint",
    )


def predictor_sizes(predictor: dict[str, torch.Tensor], num_heads: int, source: str) -> dict[str, int]:
    """predictor_hidden_size / _num_hidden_layers / _num_attention_heads from the release predictor's tensors.

    The heads are the encoder's (the release and docs/METHOD.md section 3), as shapes cannot tell them.
    """
    if "predictor_embed.weight" not in predictor:
        raise ConversionError(f"{source}: the predictor has no 'predictor_embed.weight' (found {sorted(predictor)[:8]})")
    width = predictor["predictor_embed.weight"].shape[0]  # (Dp, D)
    depth = len({int(match.group(1)) for key in predictor if (match := _PREDICTOR_BLOCK.match(key))})
    if width % num_heads:
        raise ConversionError(f"{source}: predictor width {width} is not divisible by {num_heads} heads")
    return {"predictor_hidden_size": width, "predictor_num_hidden_layers": depth, "predictor_num_attention_heads": num_heads}

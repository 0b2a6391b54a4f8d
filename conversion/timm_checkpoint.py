"""Reader for timm VisionTransformer state dicts, and `export timm` (DSeq-JEPA -> timm weights).

timm and the release share tensor names. Two differences: timm's `pos_embed` usually holds the CLS
position too (1, 1 + N, D), which DSeq-JEPA does not have (its CLS position embedding is zero), and
timm checkpoints may carry a classifier `head`. Reading folds the CLS position into `cls_token`
(the CLS token's input is cls_token + pos_embed[:, 0] in both) and drops the head; exporting writes
a zero CLS position, so that timm's default `no_embed_class=False` model loads with strict=True.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dseqjepa_hub.application.atomic import atomic_directory, check_empty_folder
from dseqjepa_hub.application.loading import check_input_size, load_model, model_config
from dseqjepa_hub.configuration_dseqjepa import PRESETS
from dseqjepa_hub.modeling_dseqjepa import DSeqJEPAForImageClassification, DSeqJEPAModel, sincos_pos_embed_2d

from .layout import LAYER_NORM_EPS, infer_layout
from .loading import ConversionError, as_state_dict, describe_checkpoint, is_square, load_tensor_file, strip_prefix
from .source import SourceCheckpoint
from .timm_vit import timm_reference, vit_kwargs
from .verify import TOLERANCE, verify

TRAINING_TEXT = "Weights converted from a timm VisionTransformer checkpoint; see the source model for its training."
_UNSUPPORTED = {  # tensor name part -> the timm feature DSeq-JEPA's encoder does not have
    "reg_token": "register tokens",
    ".ls1.": "layer scale",
    "norm_pre.": "a pre-norm before the blocks",
    ".q_norm.": "qk-norm",
    "fc_norm.": "a norm after pooling (fc_norm) instead of the final token norm",
    "attn_pool.": "attention pooling",
}


def read_timm(path, *, num_heads: int | None = None, preset: str | None = None, **ignored) -> SourceCheckpoint:
    """`ignored`: --encoder and --with-predictor, which a single-encoder format does not have."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"  # timm's Hub layout, as `export timm` writes it
    recorded = _recorded_timm_args(path)
    num_heads = num_heads or recorded.get("num_heads")
    checkpoint = load_tensor_file(path)
    if isinstance(checkpoint, dict):
        for wrapper in ("state_dict", "model", "state_dict_ema"):
            if isinstance(checkpoint.get(wrapper), dict):
                checkpoint = checkpoint[wrapper]  # timm's training checkpoints wrap the state dict
                break
    if not isinstance(checkpoint, dict) or "patch_embed.proj.weight" not in strip_prefix(checkpoint, "module."):
        raise ConversionError(f"{path}: not a timm VisionTransformer state dict: it is {describe_checkpoint(checkpoint)}")
    source = strip_prefix(as_state_dict(checkpoint, path), "module.")
    for part, feature in _UNSUPPORTED.items():
        names = [name for name in source if part in name]
        if names:
            raise ConversionError(f"{path}: the checkpoint uses {feature} ({names[:4]}), which DSeq-JEPA's encoder lacks")

    notes = []
    head = sorted(name for name in source if name.startswith("head."))
    if head:
        notes.append(f"dropped the classifier head {head}")
    state = {name: tensor for name, tensor in source.items() if not name.startswith("head.")}
    pos_embed = state.get("pos_embed")
    if pos_embed is None or pos_embed.dim() != 3:
        raise ConversionError(f"{path}: pos_embed missing or not (1, N, D)")
    pos_embed_has_cls = "cls_token" in state and is_square(pos_embed.shape[1] - 1) and not is_square(pos_embed.shape[1])
    grid = math.isqrt(pos_embed.shape[1] - pos_embed_has_cls)
    layout = infer_layout(state, str(path), num_heads=num_heads, preset=preset, grid=grid)
    if grid * grid != pos_embed.shape[1] - pos_embed_has_cls:
        raise ConversionError(f"{path}: pos_embed has {pos_embed.shape[1]} positions: not a square grid (+ CLS)")

    reference = timm_reference(state, layout, LAYER_NORM_EPS, str(path), pos_embed_has_cls)
    encoder = dict(state)
    if pos_embed_has_cls:
        encoder["cls_token"] = state["cls_token"] + pos_embed[:, :1]  # (1, 1, D)
        encoder["pos_embed"] = pos_embed[:, 1:]  # (1, N, D)
        notes.append("folded the CLS position embedding into cls_token (identical outputs)")
    return SourceCheckpoint(
        encoder=encoder,
        layout=layout,
        reference=reference,
        config_overrides={"layer_norm_eps": LAYER_NORM_EPS},
        provenance={"source": path.name},
        notes=notes,
        converted_from="a `timm` checkpoint",
        training_text=TRAINING_TEXT,
    )


def _recorded_timm_args(path: Path) -> dict:
    """The create_model arguments a timm folder's config.json (or our export's metadata) records."""
    config_file = path.parent / "config.json"
    if config_file.is_file():
        try:
            return dict(json.loads(config_file.read_text()).get("model_args") or {})
        except (json.JSONDecodeError, AttributeError):
            return {}
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                return json.loads((handle.metadata() or {}).get("timm_kwargs", "{}"))
        except (SafetensorError, OSError, json.JSONDecodeError):
            return {}
    return {}


def timm_model_args(model: DSeqJEPAModel) -> tuple[str, dict]:
    """(timm model name, create_model kwargs) of the timm ViT equivalent to `model`, features = mean of patch tokens."""
    config = model.config
    if config.hidden_act != "gelu" or config.layer_norm_eps != LAYER_NORM_EPS:
        raise ConversionError(
            f"timm's ViT uses exact GELU and LayerNorm eps {LAYER_NORM_EPS}; this model has "
            f"hidden_act={config.hidden_act!r}, layer_norm_eps={config.layer_norm_eps}"
        )
    kwargs = vit_kwargs(config)  # the CLS position inside pos_embed (written as zero), timm's default
    name = "vit_base_patch16_224"  # any vit_* name works: the kwargs above set every size
    for preset, sizes in PRESETS.items():
        expected = {"patch_size": 16, "image_size": 224, **sizes}
        if all(getattr(config, field) == expected[field] for field in _ARCHITECTURE_FIELDS):
            candidates = (preset, preset.replace(f"patch{config.patch_size}_", f"patch{config.patch_size}_gap_"))
            name = next((candidate for candidate in candidates if timm.is_model(candidate)), name)
            break
    return name, kwargs


TIMM_POOLING = {"mean": "avg", "cls": "token"}  # DSeqJEPAConfig.classifier_pooling -> timm's global_pool


class TimmHead(NamedTuple):
    """A classifier's head as timm's ViT holds it: the pooling and one linear layer."""

    global_pool: str
    weight: torch.Tensor  # (num_classes, D)
    bias: torch.Tensor
    label_names: list[str]


def timm_head(model) -> tuple[TimmHead | None, str | None]:
    """(the head of `model` for timm, None) for a classifier timm can carry, with the eval-mode BatchNorm
    of the linear probe folded into the linear layer; (None, why not, in words) for one it cannot;
    (None, None) for a model without a head."""
    if not isinstance(model, DSeqJEPAForImageClassification) or not isinstance(model.classifier, torch.nn.Linear):
        return None, None
    config = model.config
    if config.classifier_pooling not in TIMM_POOLING:
        return None, (f"timm's ViT has no {config.classifier_pooling!r} pooling (the CLS token and the patch mean side "
                      f"by side): its {config.num_labels}-class head is left out and the folder holds the encoder "
                      "(num_classes 0)")
    weight, bias = model.classifier.weight.detach().double(), model.classifier.bias.detach().double()
    if model.batchnorm is not None:  # affine-free, in eval mode: (x - mean) / sqrt(var + eps), folded in
        norm = model.batchnorm
        scale = (norm.running_var.double() + norm.eps).rsqrt()
        weight, bias = weight * scale, bias - (weight * scale) @ norm.running_mean.double()
    labels = [str(config.id2label.get(index, f"LABEL_{index}")) for index in range(config.num_labels)]
    return TimmHead(TIMM_POOLING[config.classifier_pooling], weight.float(), bias.float(), labels), None


@torch.no_grad()
def max_logit_difference(timm_model, classifier, side: int, seed: int = 0) -> float:
    """Max |timm logits - the classifier's logits| on two seeded random images of `side` pixels."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, classifier.config.num_channels, side, side, generator=generator)
    return (timm_model(images).float() - classifier.eval().float()(pixel_values=images).logits).abs().max().item()


_ARCHITECTURE_FIELDS = (
    "patch_size", "image_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
)


def export_timm(
    model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, image_size: int | None = None, log=print,
) -> tuple[str, dict, float]:
    """Write `model_dir`'s encoder as a timm model folder (timm's Hub layout: model.safetensors and
    config.json with the architecture, its arguments and the preprocessing), which
    `timm.create_model("local-dir:OUT", pretrained=True)` loads; checked by loading it that way
    and comparing the features before the folder is kept. Returns (timm name, kwargs, max abs difference).
    A fine-tuned classifier keeps its head (timm's `head`, `num_classes`, `global_pool`, the labels as
    `label_names`; the linear probe's BatchNorm folded in), checked on the logits too; a head timm
    cannot hold is left out with one line saying so.

    image_size: export for another square input size. DSeq-JEPA regenerates its sin-cos positions
    for any grid, while timm resamples its stored table (`img_size=` or `dynamic_img_size=True`),
    which differs (by up to ~1.7 in the tokens at 240 x 320 for a 224 model); exporting at the size
    you will run writes the exact sin-cos table for that grid, so timm matches there.
    """
    out_dir = Path(out_dir)
    if out_dir.suffix:
        raise ConversionError(
            f"--out {out_dir}: expected a folder (timm's layout: model.safetensors + config.json), "
            f"found a file name ending in {out_dir.suffix}"
        )
    check_empty_folder(out_dir)
    if image_size is not None:  # before the weights load
        check_input_size(image_size, model_config(model_dir).patch_size, "--image-size")
    loaded = load_model(model_dir, as_saved=True)  # a folder, run or repo id; damaged: one ModelLoadError naming the file
    saved = loaded.model.float()
    model, config = saved.base_model, saved.config
    name, kwargs = timm_model_args(model)
    head, left_out = timm_head(saved)
    if left_out:
        log(f"note: {left_out}")
    state = {key: tensor.contiguous() for key, tensor in model.state_dict().items()}
    side = image_size or config.image_size
    if side != config.image_size:
        grid = side // config.patch_size
        state["pos_embed"] = sincos_pos_embed_2d(config.hidden_size, grid, grid)[None].to(state["pos_embed"].dtype)
        kwargs["img_size"] = side
    if config.use_cls_token:
        state["pos_embed"] = torch.cat([torch.zeros_like(state["pos_embed"][:, :1]), state["pos_embed"]], dim=1)
    pretrained_cfg = _pretrained_cfg(loaded.processor, config, side)
    if head is not None:
        kwargs.update(num_classes=len(head.label_names), global_pool=head.global_pool)
        state.update({"head.weight": head.weight.contiguous(), "head.bias": head.bias.contiguous()})
        pretrained_cfg.update(num_classes=len(head.label_names), label_names=head.label_names)
    timm_config = {
        "architecture": name,
        "num_classes": kwargs["num_classes"],
        "num_features": config.hidden_size,
        "global_pool": kwargs["global_pool"],
        "model_args": kwargs,
        "pretrained_cfg": pretrained_cfg,
    }
    metadata = {"format": "pt", "timm_model": name, "timm_kwargs": json.dumps(kwargs)}
    with atomic_directory(out_dir) as partial:
        save_file(state, str(partial / "model.safetensors"), metadata=metadata)
        (partial / "config.json").write_text(json.dumps(timm_config, indent=2) + "\n")
        try:
            timm_model = timm.create_model(f"local-dir:{partial}", pretrained=True).eval()
        except RuntimeError as error:
            raise ConversionError(f"the exported folder does not load into timm's {name}: {error}") from None
        difference = verify(timm_model.forward_features, model, image_size=side)
        if head is not None:
            logits = max_logit_difference(timm_model, saved, side)
            if not logits <= TOLERANCE:  # also catches NaN
                raise ConversionError(f"timm's logits differ from the classifier's by {logits:.3g} (max abs, fp32), "
                                      f"above the tolerance {TOLERANCE:g}: nothing was written")
            difference = max(difference, logits)
    what = f"with its {len(head.label_names)}-class head, " if head is not None else ""
    log(f"wrote {out_dir}: timm.create_model('local-dir:{out_dir}', pretrained=True) loads it {what}"
        f"(max abs difference {difference:.2e}); timm.data.resolve_data_config(model=...) gives its preprocessing")
    return name, kwargs, difference


def _pretrained_cfg(processor, config, side: int) -> dict:
    """timm's description of the preprocessing the model expects, from its image processor."""
    if processor.do_center_crop and processor.size.get("shortest_edge"):
        crop_pct, crop_mode = processor.crop_size["height"] / processor.size["shortest_edge"], "center"
    else:
        crop_pct, crop_mode = 1.0, "squash"  # a direct resize to the input size, whatever the aspect ratio
    return {
        "input_size": [config.num_channels, side, side],
        "interpolation": "bicubic",
        "crop_pct": crop_pct,
        "crop_mode": crop_mode,
        "mean": list(processor.image_mean),
        "std": list(processor.image_std),
        "num_classes": 0,
        "license": "see the source model's card",
    }

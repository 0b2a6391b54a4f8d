"""Reader for this project's pretraining checkpoints (`dseqjepa train`, dseqjepa_train).

SRC is a checkpoint folder (`.../checkpoints/step_000123`), or a training output folder, whose
latest complete checkpoint is taken. The encoders are saved under DSeqJEPAModel's names with the
encoders' DSeqJEPAConfig in config.json; the sizes inferred from the tensors must agree with it.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from huggingface_hub.errors import StrictDataclassError

from dseqjepa_hub.configuration_dseqjepa import DSeqJEPAConfig
from dseqjepa_train.checkpoint import COMPLETE_MARKER, NETWORK_FILES, latest_checkpoint

from .layout import infer_layout
from .loading import ConversionError, as_state_dict, load_tensor_file
from .source import SourceCheckpoint
from .timm_vit import timm_reference

ENCODER_FILES = {"target": "target_encoder", "context": "context_encoder"}
_RECIPE_KEYS = ("method", "epochs", "batch_size", "lr", "weight_decay", "ema_start", "crop_scale", "precision")
_LAYOUT_FIELDS = {
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
    "num_channels", "image_size", "qkv_bias", "use_cls_token",
}


def find_checkpoint(path: Path) -> Path:
    if (path / COMPLETE_MARKER).is_file():
        return path
    for root in (path, path.parent):
        latest = latest_checkpoint(root)
        if latest is not None:
            return latest
    raise ConversionError(
        f"{path}: not a training checkpoint folder (no '{COMPLETE_MARKER}' marker) nor a training output "
        "folder with complete checkpoints under checkpoints/step_*"
    )


def read_training(
    path, *, encoder: str = "target", num_heads: int | None = None, preset: str | None = None,
    with_predictor: bool = False,
) -> SourceCheckpoint:
    path = Path(path)
    if not path.is_dir():
        raise ConversionError(f"{path}: the training format is a checkpoint folder (OUTPUT/checkpoints/step_N), not a file")
    folder = find_checkpoint(path)
    try:
        saved = DSeqJEPAConfig.from_json_file(str(folder / "config.json"))
    except (OSError, ValueError, StrictDataclassError) as error:
        raise ConversionError(f"{folder}/config.json: not a readable DSeqJEPAConfig ({error})") from None
    file = folder / NETWORK_FILES[ENCODER_FILES[encoder]]
    state = as_state_dict(load_tensor_file(file), file)
    layout = infer_layout(state, str(file), num_heads=num_heads or saved.num_attention_heads, preset=preset)
    disagree = [
        f"{field}: config.json {getattr(saved, field)}, tensors {getattr(layout, field)}"
        for field in sorted(_LAYOUT_FIELDS)
        if getattr(saved, field) != getattr(layout, field)
    ]
    if disagree:
        raise ConversionError(f"{file}: the tensors disagree with {folder}/config.json: " + "; ".join(disagree))
    overrides = {name: getattr(saved, name) for name in saved.own_fields() if name not in _LAYOUT_FIELDS}
    recipe = _training_config(folder)
    predictor = None
    if with_predictor:
        predictor_file = folder / NETWORK_FILES["predictor"]
        predictor = as_state_dict(load_tensor_file(predictor_file), predictor_file)
    return SourceCheckpoint(
        encoder=state,
        layout=layout,
        reference=timm_reference(state, layout, saved.layer_norm_eps, str(file)),
        config_overrides=overrides,
        predictor=predictor,
        provenance={"source": folder.name, "encoder": ENCODER_FILES[encoder], "training_config": recipe},
        training_text=_training_text(folder.name, recipe),
    )


def _training_config(folder: Path) -> dict | None:
    """The effective training config (config.yaml) for the model card's recipe, if readable."""
    try:
        loaded = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _training_text(checkpoint: str, recipe: dict | None) -> str:
    """The model card's training paragraph: the recipe's main settings ("" without a recipe: the card's default)."""
    if not recipe:
        return ""
    items = ", ".join(f"{key} {recipe[key]}" for key in _RECIPE_KEYS if key in recipe)
    return f"Pretrained with `dseqjepa train` ({checkpoint}): {items}."

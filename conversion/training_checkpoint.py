"""Reader for this project's pretraining checkpoints (`dseqjepa train`), in both layouts.

SRC is a checkpoint folder (`RUN/checkpoints/step_000123`), or a run folder, whose newest complete
checkpoint is taken. Two layouts are read, as files (this package does not import the trainer):
- model folders (written by the trainer today, dseqjepa_hub.application.loading names them):
  target_encoder/ and context_encoder/ are DSeqJEPAModel folders, predictor/ a DSeqJEPAPredictor folder;
- raw state dicts (written by earlier versions, a foreign format now): target_encoder.safetensors,
  context_encoder.safetensors and predictor.safetensors beside the encoders' config.json.
The encoders are under DSeqJEPAModel's names with their DSeqJEPAConfig; the sizes inferred from the
tensors must agree with it.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from huggingface_hub.errors import StrictDataclassError

from dseqjepa_hub.application.loading import (
    COMPLETE_MARKER,
    CONTEXT_ENCODER_DIR,
    PREDICTOR_DIR,
    RUN_CHECKPOINTS_DIR,
    SAFETENSORS_FILE,
    TARGET_ENCODER_DIR,
    complete_checkpoints,
)
from dseqjepa_hub.configuration_dseqjepa import DSeqJEPAConfig

from .layout import infer_layout
from .loading import ConversionError, as_state_dict, load_tensor_file
from .source import SourceCheckpoint
from .timm_vit import timm_reference

ENCODER_DIRS = {"target": TARGET_ENCODER_DIR, "context": CONTEXT_ENCODER_DIR}
CONFIG_FILE = "config.json"
# The earlier layout: one raw state dict per network, the encoders' config.json beside them.
RAW_FILES = {"target": "target_encoder.safetensors", "context": "context_encoder.safetensors",
             "predictor": "predictor.safetensors"}
_RECIPE_KEYS = ("method", "epochs", "batch_size", "lr", "weight_decay", "ema_start", "crop_scale", "precision")
_LAYOUT_FIELDS = {
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
    "num_channels", "image_size", "qkv_bias", "use_cls_token",
}


def find_checkpoint(path: Path) -> Path:
    """`path` if it is a complete checkpoint, else the newest complete one of the run `path` (or its parent)."""
    if (path / COMPLETE_MARKER).is_file():
        return path
    for run in (path, path.parent):
        if steps := complete_checkpoints(run):
            return steps[-1][1]
    raise ConversionError(
        f"{path}: not a training checkpoint folder (no '{COMPLETE_MARKER}' marker) nor a training output "
        f"folder with complete checkpoints under {RUN_CHECKPOINTS_DIR}/step_*"
    )


def checkpoint_files(folder: Path, encoder: str) -> tuple[Path, Path, Path]:
    """(the encoder's config.json, its weights, the predictor's weights) in either layout."""
    if (folder / ENCODER_DIRS[encoder]).is_dir():
        encoder_folder = folder / ENCODER_DIRS[encoder]
        return encoder_folder / CONFIG_FILE, encoder_folder / SAFETENSORS_FILE, folder / PREDICTOR_DIR / SAFETENSORS_FILE
    return folder / CONFIG_FILE, folder / RAW_FILES[encoder], folder / RAW_FILES["predictor"]


def read_training(
    path, *, encoder: str = "target", num_heads: int | None = None, preset: str | None = None,
    with_predictor: bool = False,
) -> SourceCheckpoint:
    path = Path(path)
    if not path.is_dir():
        raise ConversionError(f"{path}: the training format is a checkpoint folder (OUTPUT/checkpoints/step_N), not a file")
    folder = find_checkpoint(path)
    config_file, file, predictor_file = checkpoint_files(folder, encoder)
    try:
        saved = DSeqJEPAConfig.from_json_file(str(config_file))
    except (OSError, ValueError, StrictDataclassError) as error:
        raise ConversionError(f"{config_file}: not a readable DSeqJEPAConfig ({error})") from None
    state = as_state_dict(load_tensor_file(file), file)
    layout = infer_layout(state, str(file), num_heads=num_heads or saved.num_attention_heads, preset=preset)
    disagree = [
        f"{field}: config.json {getattr(saved, field)}, tensors {getattr(layout, field)}"
        for field in sorted(_LAYOUT_FIELDS)
        if getattr(saved, field) != getattr(layout, field)
    ]
    if disagree:
        raise ConversionError(f"{file}: the tensors disagree with {config_file}: " + "; ".join(disagree))
    overrides = {name: getattr(saved, name) for name in saved.own_fields() if name not in _LAYOUT_FIELDS}
    recipe = _training_config(folder)
    predictor = as_state_dict(load_tensor_file(predictor_file), predictor_file) if with_predictor else None
    return SourceCheckpoint(
        encoder=state,
        layout=layout,
        reference=timm_reference(state, layout, saved.layer_norm_eps, str(file)),
        config_overrides=overrides,
        predictor=predictor,
        provenance={"source": folder.name, "encoder": ENCODER_DIRS[encoder], "training_config": recipe},
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

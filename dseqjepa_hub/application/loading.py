"""The model that the commands, the evaluation and the Hub staging run: a folder, a Hub repo
id or the bundled default model, loaded with this package's code (never remote code).

Whatever is wrong with a folder (a pickle holding more than tensors, a safetensors file with a
damaged header, weights whose shapes disagree with config.json) becomes one `ModelLoadError`
naming the file and the problem, before transformers prints a report or a traceback.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import NamedTuple

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open

from ..configuration_dseqjepa import PRESETS, DSeqJEPAConfig
from ..errors import DSeqJEPAError
from ..image_processing_dseqjepa import DSeqJEPAImageProcessor
from ..modeling_dseqjepa import DSeqJEPAModel

logger = logging.getLogger(__name__)
SAFETENSORS_FILE = "model.safetensors"
PICKLE_FILE = "pytorch_model.bin"  # read by transformers with torch.load(weights_only=True)

# The layout of a training run (written by dseqjepa_train.checkpoint, read here and by every command):
#   RUN/checkpoints/step_000123/{target_encoder,context_encoder,predictor}/ (save_pretrained folders),
#   trainer_state.pt, config.yaml, and the COMPLETE_MARKER file written last.
RUN_CHECKPOINTS_DIR = "checkpoints"
COMPLETE_MARKER = "complete"
TARGET_ENCODER_DIR = "target_encoder"  # what every command loads from a run or a checkpoint
CONTEXT_ENCODER_DIR = "context_encoder"
PREDICTOR_DIR = "predictor"


class ModelLoadError(DSeqJEPAError):
    """A model folder or repo id that does not load as a DSeq-JEPA model, or an absent device."""


class LoadedModel(NamedTuple):
    model: DSeqJEPAModel  # in eval mode, on the requested device
    processor: DSeqJEPAImageProcessor
    description: str  # what was loaded, for outputs that record their model


def default_model_path() -> Path:
    """The bundled default model: a small DSeq-JEPA ViT pretrained here on the data kit's scenes
    (its README.md is the model card). Commands and the evaluation use it when no model is given."""
    return Path(__file__).resolve().parents[1] / "default_model"


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: no CUDA device is available here")


def check_safetensors_shapes(weights: Path, config: DSeqJEPAConfig) -> None:
    """Raise ModelLoadError if `weights` is not a readable safetensors file or its encoder
    tensors disagree in shape with the model `config` describes (head tensors are not checked)."""
    try:
        with safe_open(str(weights), framework="pt") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ModelLoadError(f"{weights}: not a readable safetensors file ({error})") from None
    with torch.device("meta"):  # shapes only
        expected = {name: tuple(tensor.shape) for name, tensor in DSeqJEPAModel(config).state_dict().items()}
    prefixes = ("", "dseqjepa.")  # the encoder alone, or inside a head
    mismatched = [
        f"{prefix}{name} is {shapes[prefix + name]}, config.json implies {shape}"
        for name, shape in expected.items()
        for prefix in prefixes
        if prefix + name in shapes and shapes[prefix + name] != shape
    ]
    if mismatched:
        more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
        raise ModelLoadError(f"{weights}: the weights do not match config.json: {'; '.join(mismatched[:3])}{more}")


def model_source(model: str | os.PathLike) -> str:
    """`model` as from_pretrained should get it; a path that is plainly local (absolute, or starting
    with ".", "~" or holding a backslash) but missing is refused at once, not looked up on the Hub."""
    text = str(model)
    path = Path(text).expanduser()
    if path.exists():
        return str(path)
    if path.is_absolute() or text.startswith((".", "~")) or "\\" in text or text.count("/") > 1:
        raise ModelLoadError(f"{text}: no such model folder")
    return text


def load_encoder(model: str | None = None, device: str = "cpu") -> DSeqJEPAModel:
    """The encoder alone (no image processor needed): `model` as in `load_model`."""
    check_device(device)
    if model in PRESETS and not Path(model).exists():
        logger.warning(
            "%s is a size preset, not trained weights: the model is RANDOMLY INITIALISED and its "
            "embeddings and regions mean nothing (give a model folder or repo id for real ones)", model,
        )
        encoder = DSeqJEPAModel(DSeqJEPAConfig.from_preset(model))
        encoder.name_or_path = f"{model} (random weights)"
        return encoder.to(device).eval()
    source = model_source(default_model_path() if model is None else model)
    try:
        config = DSeqJEPAConfig.from_pretrained(source)
    except (OSError, ValueError, StrictDataclassError) as error:
        raise ModelLoadError(f"cannot load the model {source!r}: {error}") from None
    if (Path(source) / SAFETENSORS_FILE).is_file():
        check_safetensors_shapes(Path(source) / SAFETENSORS_FILE, config)
    try:
        encoder = DSeqJEPAModel.from_pretrained(source, config=config)
    except pickle.UnpicklingError:
        raise ModelLoadError(
            f"{Path(source) / PICKLE_FILE}: holds objects other than tensors and was refused "
            "(only plain tensors are ever unpickled); convert it to safetensors from a trusted copy"
        ) from None
    except SafetensorError as error:
        raise ModelLoadError(f"{source}: a safetensors file is unreadable ({error})") from None
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the model {source!r}: {error}") from None
    return encoder.to(device).eval()


def load_model(model: str | None = None, device: str = "cpu", image_size: int | None = None) -> LoadedModel:
    """`model`: a local folder or a Hub repo id (from the cache when offline); None: the bundled model.

    image_size: run at this square input size instead of the model's (the encoder regenerates its
    positions for any grid; a multiple of the patch size): the processor resizes to it.
    """
    encoder = load_encoder(model, device)
    source = encoder.name_or_path
    if model in PRESETS and not Path(model).exists():
        processor = DSeqJEPAImageProcessor.from_model_config(encoder.config)
    else:
        try:
            processor = DSeqJEPAImageProcessor.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"cannot load the image processor of {source!r}: {error}") from None
    if image_size is not None:
        patch = encoder.config.patch_size
        if image_size < patch or image_size % patch:
            raise ModelLoadError(f"--size {image_size}: expected a multiple of the patch size {patch}")
        if processor.do_center_crop:
            processor.size = {"shortest_edge": round(image_size * processor.size.get("shortest_edge", image_size)
                                                     / processor.crop_size["height"])}
        else:
            processor.size = {"height": image_size, "width": image_size}
        processor.crop_size = {"height": image_size, "width": image_size}
    return LoadedModel(encoder, processor, source)

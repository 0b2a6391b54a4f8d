"""The model that the commands, the evaluation and the Hub staging run: a folder, a Hub repo
id or the bundled default model, loaded with this package's code (never remote code)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from .errors import DSeqJEPAError
from .image_processing_dseqjepa import DSeqJEPAImageProcessor
from .modeling_dseqjepa import DSeqJEPAModel


class ModelLoadError(DSeqJEPAError):
    """A model folder or repo id that does not load as a DSeq-JEPA model, or an absent device."""


class LoadedModel(NamedTuple):
    model: DSeqJEPAModel  # in eval mode, on the requested device
    processor: DSeqJEPAImageProcessor
    description: str  # what was loaded, for outputs that record their model


def default_model_path() -> Path:
    """The bundled default model: a small DSeq-JEPA ViT pretrained here on the data kit's scenes
    (its README.md is the model card). Commands and the evaluation use it when no model is given."""
    return Path(__file__).parent / "default_model"


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: no CUDA device is available here")


def load_model(model: str | None = None, device: str = "cpu") -> LoadedModel:
    """`model`: a local folder or a Hub repo id (from the cache when offline); None: the bundled model."""
    check_device(device)
    source = str(default_model_path() if model is None else model)
    try:
        encoder = DSeqJEPAModel.from_pretrained(source)
        processor = DSeqJEPAImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the model {source!r}: {error}") from None
    return LoadedModel(encoder.to(device).eval(), processor, source)

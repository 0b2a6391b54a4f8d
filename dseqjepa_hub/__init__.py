"""dseqjepa-hub: DSeq-JEPA vision transformers for Hugging Face transformers.

Importing the package registers the model with the Auto classes, so `AutoModel.from_pretrained`
(and `AutoBackbone`, `AutoModelForImageClassification`) finds it, and `AutoModel` the pretraining
predictor (`DSeqJEPAPredictor`, a training checkpoint's predictor/ folder), marks the classes for remote
code, so `save_pretrained` writes `auto_map` and copies
the model files (a saved folder then loads with `trust_remote_code=True` without this package),
and registers the "saliency-ranking" pipeline.
"""

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoVideoProcessor,
)

from .application.loading import default_model_path
from .configuration_dseqjepa import PRESETS, DSeqJEPAConfig, DSeqJEPAPredictorConfig
from .image_processing_dseqjepa import DSeqJEPAImageProcessor, DSeqJEPAImageProcessorPil
from .modeling_dseqjepa import (
    DSeqJEPABackbone,
    DSeqJEPAForImageClassification,
    DSeqJEPAModel,
    DSeqJEPAModelOutput,
    DSeqJEPAPredictor,
    DSeqJEPAPreTrainedModel,
)
from .pipeline_saliency_ranking import (
    SaliencyRankingPipeline,
    register_saliency_ranking_pipeline,
    save_pretrained_with_pipeline,
)
from .regions import Regions, extract_regions, region_dicts, saliency_map

try:
    __version__ = version("dseqjepa-hub")  # the one place it is set: pyproject.toml
except PackageNotFoundError:  # a checkout that is not installed (torch.hub.load(..., source="local")): read it there
    __version__ = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
__all__ = [
    "PRESETS",
    "DSeqJEPABackbone",
    "DSeqJEPAConfig",
    "DSeqJEPAForImageClassification",
    "DSeqJEPAImageProcessor",
    "DSeqJEPAImageProcessorPil",
    "DSeqJEPAModel",
    "DSeqJEPAModelOutput",
    "DSeqJEPAPredictor",
    "DSeqJEPAPredictorConfig",
    "DSeqJEPAPreTrainedModel",
    "Regions",
    "SaliencyRankingPipeline",
    "default_model_path",
    "extract_regions",
    "region_dicts",
    "saliency_map",
    "save_pretrained_with_pipeline",
]

AutoConfig.register(DSeqJEPAConfig.model_type, DSeqJEPAConfig, exist_ok=True)
AutoModel.register(DSeqJEPAConfig, DSeqJEPAModel, exist_ok=True)
AutoModelForImageClassification.register(DSeqJEPAConfig, DSeqJEPAForImageClassification, exist_ok=True)
AutoBackbone.register(DSeqJEPAConfig, DSeqJEPABackbone, exist_ok=True)
AutoConfig.register(DSeqJEPAPredictorConfig.model_type, DSeqJEPAPredictorConfig, exist_ok=True)
AutoModel.register(DSeqJEPAPredictorConfig, DSeqJEPAPredictor, exist_ok=True)
AutoImageProcessor.register(
    DSeqJEPAConfig,
    image_processor_classes={"torchvision": DSeqJEPAImageProcessor, "pil": DSeqJEPAImageProcessorPil},
    exist_ok=True,
)
# No video processor: said here, so that transformers' pipelines (which look for one) do not read the
# image processor's `auto_map` as one and ask on the terminal whether to run the folder's code.
AutoVideoProcessor.register(DSeqJEPAConfig, video_processor_classes={}, exist_ok=True)
DSeqJEPAConfig.register_for_auto_class()
DSeqJEPAModel.register_for_auto_class("AutoModel")
DSeqJEPAForImageClassification.register_for_auto_class("AutoModelForImageClassification")
DSeqJEPABackbone.register_for_auto_class("AutoBackbone")
DSeqJEPAPredictorConfig.register_for_auto_class()
DSeqJEPAPredictor.register_for_auto_class("AutoModel")
DSeqJEPAImageProcessor.register_for_auto_class("AutoImageProcessor")
DSeqJEPAImageProcessorPil.register_for_auto_class("AutoImageProcessor")
register_saliency_ranking_pipeline()


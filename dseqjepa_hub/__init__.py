"""dseqjepa-hub: DSeq-JEPA vision transformers for Hugging Face transformers.

Importing the package registers the model with the Auto classes, so `AutoModel.from_pretrained`
finds it, marks the classes for remote code, so `save_pretrained` writes `auto_map` and copies
the model files (a saved folder then loads with `trust_remote_code=True` without this package),
and registers the "saliency-ranking" pipeline.
"""

from pathlib import Path

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
)

from .configuration_dseqjepa import PRESETS, DSeqJEPAConfig
from .image_processing_dseqjepa import DSeqJEPAImageProcessor, DSeqJEPAImageProcessorPil
from .modeling_dseqjepa import (
    DSeqJEPAForImageClassification,
    DSeqJEPAModel,
    DSeqJEPAModelOutput,
    DSeqJEPAPreTrainedModel,
)
from .pipeline_saliency_ranking import (
    SaliencyRankingPipeline,
    register_saliency_ranking_pipeline,
    save_pretrained_with_pipeline,
)
from .regions import Regions, extract_regions, region_dicts, saliency_map

__version__ = "0.1.0"
__all__ = [
    "PRESETS",
    "DSeqJEPAConfig",
    "DSeqJEPAForImageClassification",
    "DSeqJEPAImageProcessor",
    "DSeqJEPAImageProcessorPil",
    "DSeqJEPAModel",
    "DSeqJEPAModelOutput",
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
AutoImageProcessor.register(
    DSeqJEPAConfig,
    image_processor_classes={"torchvision": DSeqJEPAImageProcessor, "pil": DSeqJEPAImageProcessorPil},
    exist_ok=True,
)
DSeqJEPAConfig.register_for_auto_class()
DSeqJEPAModel.register_for_auto_class("AutoModel")
DSeqJEPAForImageClassification.register_for_auto_class("AutoModelForImageClassification")
DSeqJEPAImageProcessor.register_for_auto_class("AutoImageProcessor")
DSeqJEPAImageProcessorPil.register_for_auto_class("AutoImageProcessor")
register_saliency_ranking_pipeline()


def default_model_path() -> Path:
    """The bundled default model: a small DSeq-JEPA ViT pretrained here on the data kit's scenes
    (its README.md is the model card). The CLI and the evaluation use it when no model is given."""
    return Path(__file__).parent / "default_model"

"""Where a run starts: random weights, or (config `init_from`, `dseqjepa train --init-from MODEL`) a model
that the one loader loads, for continued pretraining on the user's images.

Both encoders start from the model; the predictor from the model's own (a run's or checkpoint's
predictor/, or a model folder's predictor/ subfolder) where it has one, else freshly initialised, said
in one line. The run's architecture is the model's: a `model_preset` or `model` field of the config that
says otherwise is refused, naming the field; so is a DSeq method for a model without a CLS token.
The model's image processor (its normalisation) feeds the training data and is saved with every
checkpoint, so that the result preprocesses as the model it came from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dseqjepa_hub.application.loading import load_model, load_predictor
from dseqjepa_hub.application.loading import model_config as saved_config
from dseqjepa_hub.configuration_dseqjepa import PRESETS, DSeqJEPAConfig, DSeqJEPAPredictorConfig
from dseqjepa_hub.image_processing_dseqjepa import DSeqJEPAImageProcessor
from dseqjepa_hub.modeling_dseqjepa import DSeqJEPAModel, DSeqJEPAPredictor

from .config import ConfigError, TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class StartingPoint:
    encoder: DSeqJEPAModel  # the context encoder's weights (the target encoder starts as its copy)
    predictor: DSeqJEPAPredictor
    processor: DSeqJEPAImageProcessor  # the training data's normalisation, saved with every checkpoint


def check_architecture(config: TrainConfig, model_config: DSeqJEPAConfig, description: str) -> None:
    """Refuse a config whose `model_preset` or `model` fields differ from the model's config, naming the field."""
    fix = f"with init_from the architecture is the model's ({description})"
    if config.model_preset is not None:
        preset = DSeqJEPAConfig.from_preset(config.model_preset)
        for name in sorted({*PRESETS[config.model_preset], *DSeqJEPAConfig.required_fields}):
            if getattr(preset, name) != getattr(model_config, name):
                raise ConfigError(f"model_preset {config.model_preset}: {name} is {getattr(preset, name)}, the model's "
                                  f"is {getattr(model_config, name)}; {fix}: set model_preset: null")
    for name, value in config.model.items():
        if getattr(model_config, name) != value:
            raise ConfigError(f"model.{name}: {value!r} in the config, {getattr(model_config, name)!r} in the model; "
                              f"{fix}: drop model.{name}")
    if config.method != "ijepa" and not model_config.use_cls_token:
        raise ConfigError(f"method {config.method!r} ranks regions by the CLS token, which the model {description} "
                          "does not have (an I-JEPA model?): set method: ijepa")


def starting_point(config: TrainConfig) -> StartingPoint:
    """The networks and image processor a run starts from (seed the RNG first: fresh weights draw from it)."""
    if config.init_from is None:
        model_config = config.model_config()
        return StartingPoint(DSeqJEPAModel(model_config), _fresh_predictor(model_config),
                             DSeqJEPAImageProcessor.from_model_config(model_config))
    check_architecture(config, saved_config(config.init_from), config.init_from)  # before any weights load
    loaded = load_model(config.init_from)
    encoder = loaded.model.float().train()
    found = load_predictor(config.init_from, encoder.config)
    if found is None:
        predictor = _fresh_predictor(encoder.config)
        logger.info("init_from %s: both encoders start from it; the predictor is new (the model has none)",
                    loaded.description)
    else:
        predictor = found[0].float().train()
        logger.info("init_from %s: both encoders start from it, the predictor from %s", loaded.description, found[1])
    return StartingPoint(encoder, predictor, loaded.processor)


def _fresh_predictor(model_config: DSeqJEPAConfig) -> DSeqJEPAPredictor:
    return DSeqJEPAPredictor(DSeqJEPAPredictorConfig.from_encoder_config(model_config))


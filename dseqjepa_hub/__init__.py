"""dseqjepa-hub: DSeq-JEPA vision transformers for Hugging Face transformers.

Importing the package registers the model with the Auto classes, so `AutoModel.from_pretrained`
(and `AutoBackbone`, `AutoModelForImageClassification`) finds it, and `AutoModel` the pretraining
predictor (`DSeqJEPAPredictor`, a training checkpoint's predictor/ folder), marks the classes for remote
code, so `save_pretrained` writes `auto_map` and copies
the model files (a saved folder then loads with `trust_remote_code=True` without this package),
and registers the image processors with `AutoImageProcessor` and the "saliency-ranking" pipeline.

The import stays light: it registers the configurations and imports none of transformers'
modelling, image-processing or pipeline modules (which bring scipy, torchvision and most of
transformers). Each of this package's modules registers its own classes as its last statement,
and is imported as soon as the transformers module it registers with has been
(`transformers.models.auto.modeling_auto`, `...image_processing_auto`, `transformers.pipelines`):
at once if it already is, otherwise by a finder on `sys.meta_path` that imports it right after
that module's code has run. The package's names load on first use (PEP 562).
"""

import importlib
import importlib.abc
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from transformers import AutoConfig

from .configuration_dseqjepa import PRESETS, DSeqJEPAConfig, DSeqJEPAPredictorConfig
from .regions import Regions, extract_regions, rank_regions, region_dicts, saliency_map

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
    "rank_regions",
    "region_dicts",
    "saliency_map",
    "save_pretrained_with_pipeline",
]

AutoConfig.register(DSeqJEPAConfig.model_type, DSeqJEPAConfig, exist_ok=True)
AutoConfig.register(DSeqJEPAPredictorConfig.model_type, DSeqJEPAPredictorConfig, exist_ok=True)
DSeqJEPAConfig.register_for_auto_class()
DSeqJEPAPredictorConfig.register_for_auto_class()

# Names that need transformers' heavy modules, loaded on first use.
_LAZY_NAMES = {
    **dict.fromkeys(
        [
            "DSeqJEPABackbone",
            "DSeqJEPAForImageClassification",
            "DSeqJEPAModel",
            "DSeqJEPAModelOutput",
            "DSeqJEPAPredictor",
            "DSeqJEPAPreTrainedModel",
        ],
        "modeling_dseqjepa",
    ),
    "DSeqJEPAImageProcessor": "image_processing_dseqjepa",
    "DSeqJEPAImageProcessorPil": "image_processing_dseqjepa",
    "SaliencyRankingPipeline": "pipeline_saliency_ranking",
    "save_pretrained_with_pipeline": "pipeline_saliency_ranking",
    "default_model_path": "application.loading",
}


def __getattr__(name: str):
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a registration right after a module's code has run: finds the module's spec with the
    other finders and wraps its loader's `exec_module`. Only the public import protocol is used."""

    def __init__(self, registrations: dict):
        self.registrations = registrations  # module name -> function

    def find_spec(self, name, path, target=None):
        if name not in self.registrations:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisteringLoader(spec.loader, self.registrations.pop(name))
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader, registration):
        self.loader, self.registration = loader, registration

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.registration()

    def __getattr__(self, name):  # get_source, is_package, ...: the wrapped loader's
        return getattr(self.loader, name)


# Each module registers its classes as its last statement (so importing one that is already being
# imported, when its own imports brought in the transformers module, is fine: it registers once done).
_pending = {}
for _transformers_module, _module in [
    ("transformers.models.auto.modeling_auto", "modeling_dseqjepa"),
    ("transformers.models.auto.image_processing_auto", "image_processing_dseqjepa"),
    ("transformers.pipelines", "pipeline_saliency_ranking"),
]:
    if _transformers_module in sys.modules:
        importlib.import_module(f"{__name__}.{_module}")
    else:
        _pending[_transformers_module] = lambda module=_module: importlib.import_module(f"{__name__}.{module}")
if _pending:
    sys.meta_path.insert(0, _AfterImport(_pending))

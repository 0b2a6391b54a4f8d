"""torch.hub entry points: DSeq-JEPA encoders from this repository, as DINOv2's hubconf.py offers its models.

    import torch
    model = torch.hub.load("path/to/dseqjepa-hub", "dseqjepa_default", source="local")  # the bundled model
    model = torch.hub.load("path/to/dseqjepa-hub", "dseqjepa_vit_base_patch16_224", source="local")  # random init
    model = torch.hub.load(..., "dseqjepa_vit_base_patch16_224", source="local", weights="org/name-or-folder")

Only the model core is imported (dseqjepa_hub/configuration_dseqjepa.py, modeling_dseqjepa.py and the
core files they import), loaded as a package of its own without running dseqjepa_hub/__init__.py,
so the checkout works without `pip install` (torch, transformers, timm, numpy, pillow and
huggingface_hub are the dependencies). Every entry point returns a `DSeqJEPAModel` in eval mode;
`model(pixel_values, output_saliency=True)` gives pooler_output, last_hidden_state and saliency.
"""

import importlib as _importlib
import sys as _sys
import types as _types
from pathlib import Path as _Path

dependencies = ["torch", "transformers", "timm", "numpy", "PIL", "huggingface_hub"]

_HERE = _Path(__file__).resolve().parent
_CORE_PACKAGE = "_dseqjepa_hub_core"  # the core files of dseqjepa_hub/, without the package's __init__


def _core(module: str):
    if _CORE_PACKAGE not in _sys.modules:
        package = _types.ModuleType(_CORE_PACKAGE)
        package.__path__ = [str(_HERE / "dseqjepa_hub")]
        _sys.modules[_CORE_PACKAGE] = package
    return _importlib.import_module(f"{_CORE_PACKAGE}.{module}")


def _preset_model(preset: str, weights: str | None, overrides: dict):
    configuration = _core("configuration_dseqjepa")
    modeling = _core("modeling_dseqjepa")
    if weights is not None:
        if overrides:
            raise ValueError(f"weights={weights!r} come with their own configuration; drop {sorted(overrides)}")
        model = modeling.DSeqJEPAModel.from_pretrained(weights)
        expected = configuration.DSeqJEPAConfig.from_preset(preset)
        fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size")
        wrong = [f"{name} {getattr(model.config, name)} (preset {getattr(expected, name)})" for name in fields
                 if getattr(model.config, name) != getattr(expected, name)]
        if wrong:
            raise ValueError(f"weights={weights!r} are not a {preset} model: {', '.join(wrong)}")
        return model.eval()
    return modeling.DSeqJEPAModel(configuration.DSeqJEPAConfig.from_preset(preset, **overrides)).eval()


def dseqjepa_default(**kwargs):
    """The bundled default model (dseqjepa_hub/default_model: 1.2 M parameters, 96 px, patch 8), pretrained
    here on synthetic scenes so that everything runs offline; not a useful feature extractor. kwargs go to
    `from_pretrained` (e.g. attn_implementation="eager")."""
    return _core("modeling_dseqjepa").DSeqJEPAModel.from_pretrained(_HERE / "dseqjepa_hub" / "default_model", **kwargs).eval()


def _entry_point(preset: str):
    def entry(weights: str | None = None, **overrides):
        return _preset_model(preset, weights, overrides)

    entry.__name__ = f"dseqjepa_{preset}"
    entry.__doc__ = (
        f"DSeq-JEPA {preset} encoder: random initialisation (no weights are published), or `weights`, a model "
        "folder or Hub repo id of this size; other keyword arguments override DSeqJEPAConfig fields."
    )
    return entry


dseqjepa_vit_tiny_patch16_224 = _entry_point("vit_tiny_patch16_224")
dseqjepa_vit_small_patch16_224 = _entry_point("vit_small_patch16_224")
dseqjepa_vit_base_patch16_224 = _entry_point("vit_base_patch16_224")
dseqjepa_vit_large_patch16_224 = _entry_point("vit_large_patch16_224")
dseqjepa_vit_huge_patch14_224 = _entry_point("vit_huge_patch14_224")
dseqjepa_vit_huge_patch16_448 = _entry_point("vit_huge_patch16_448")
dseqjepa_vit_giant_patch16_224 = _entry_point("vit_giant_patch16_224")

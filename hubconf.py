"""torch.hub entry points: DSeq-JEPA encoders from this repository, as DINOv2's hubconf.py offers its models.

    import torch
    model = torch.hub.load("path/to/dseqjepa-hub", "dseqjepa_default", source="local")  # the bundled model
    model = torch.hub.load("path/to/dseqjepa-hub", "dseqjepa_vit_base_patch16_224", source="local")  # random init
    model = torch.hub.load(..., "dseqjepa_vit_base_patch16_224", source="local", weights="org/name-or-folder")

Every entry point loads through the package's one loader (dseqjepa_hub.application.loading), imported
from this checkout, which need not be pip-installed (torch, transformers, timm, numpy, pillow and
huggingface_hub are the dependencies): `weights` may be a model folder, a training run or checkpoint,
a Hub repo id, or "default" (the bundled model, of no preset's size: `dseqjepa_default`), and a damaged one is refused with the same one-line `ModelLoadError` as the
`dseqjepa` commands give. Each returns a `DSeqJEPAModel` in eval mode;
`model(pixel_values, output_saliency=True)` gives pooler_output, last_hidden_state and saliency.
"""

from dseqjepa_hub.application.loading import load_encoder as _load_encoder
from dseqjepa_hub.application.loading import torch_hub_entry_point as _entry_point

dependencies = ["torch", "transformers", "timm", "numpy", "PIL", "huggingface_hub"]


def dseqjepa_default(**kwargs):
    """The bundled default model (dseqjepa_hub/default_model: 1.2 M parameters, 96 px, patch 8), pretrained
    here on synthetic scenes so that everything runs offline; not a useful feature extractor. kwargs go to
    `from_pretrained` (e.g. attn_implementation="eager")."""
    return _load_encoder("default", **kwargs)


dseqjepa_vit_tiny_patch16_224 = _entry_point("vit_tiny_patch16_224")
dseqjepa_vit_small_patch16_224 = _entry_point("vit_small_patch16_224")
dseqjepa_vit_base_patch16_224 = _entry_point("vit_base_patch16_224")
dseqjepa_vit_large_patch16_224 = _entry_point("vit_large_patch16_224")
dseqjepa_vit_huge_patch14_224 = _entry_point("vit_huge_patch14_224")
dseqjepa_vit_huge_patch16_448 = _entry_point("vit_huge_patch16_448")
dseqjepa_vit_giant_patch16_224 = _entry_point("vit_giant_patch16_224")

"""DSeq-JEPA model configuration and the size presets (I-JEPA's ViT sizes)."""

from __future__ import annotations

from transformers import PretrainedConfig

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# Encoder and predictor sizes as I-JEPA's presets; the predictor keeps the encoder's head count
# (METHOD.md section 3) and is 192 wide and 6 deep up to ViT-B, 384 wide and 12 deep above.
PRESETS: dict[str, dict] = {
    "vit_tiny_patch16_224": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768),
    "vit_small_patch16_224": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "vit_base_patch16_224": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "vit_large_patch16_224": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        predictor_hidden_size=384, predictor_num_hidden_layers=12,
    ),
    "vit_huge_patch14_224": dict(
        patch_size=14, hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120,
        predictor_hidden_size=384, predictor_num_hidden_layers=12,
    ),
    "vit_huge_patch16_448": dict(
        image_size=448, hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120,
        predictor_hidden_size=384, predictor_num_hidden_layers=12,
    ),
    "vit_giant_patch16_224": dict(
        hidden_size=1408, num_hidden_layers=40, num_attention_heads=16, intermediate_size=6144,
        predictor_hidden_size=384, predictor_num_hidden_layers=12,
    ),
}

# Fields a saved config.json must carry (the ones that decide tensor shapes), and the type of
# every field that is checked when a config is built.
REQUIRED_FIELDS = ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_INT_FIELDS = (
    "image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "num_regions", "predictor_hidden_size", "predictor_num_hidden_layers",
    "predictor_num_attention_heads",
)
_FLOAT_FIELDS = ("layer_norm_eps", "min_region_fraction", "initializer_range")
_BOOL_FIELDS = ("qkv_bias", "use_cls_token", "classifier_batchnorm", "freeze_backbone")
_CHOICES = {
    "saliency_query": ("cls_token", "mean_patch"),
    "classifier_pooling": ("mean", "cls", "cls+mean"),
    "hidden_act": ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu"),
}


class DSeqJEPAConfig(PretrainedConfig):
    r"""Configuration of a DSeq-JEPA vision transformer (and of I-JEPA's, with `use_cls_token=False`).

    Args:
        image_size, patch_size, num_channels: input geometry; the patch grid is image_size // patch_size.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: encoder sizes.
        qkv_bias, layer_norm_eps, hidden_act: block details (release: bias, 1e-6, GELU).
        use_cls_token: prepend a learnable CLS token with a zero position embedding. False gives
            I-JEPA's encoder, whose regions are then ranked with the `saliency_query` fallback.
        saliency_layer: 0-based index of the block whose patch outputs (after the final norm) are the
            saliency keys; default the second-to-last block.
        saliency_query: "cls_token" (the learnable CLS parameter, the paper) or "mean_patch" (the mean
            of the normalised patch keys of each image: the fallback for weights without a CLS token).
        min_region_fraction, num_regions: region extraction (alpha = 0.15, N = 5 with the background).
        predictor_hidden_size, predictor_num_hidden_layers, predictor_num_attention_heads: the
            pretraining predictor, so that a checkpoint's predictor can travel with the encoder.
        image_mean, image_std: normalisation the model was trained with.
        classifier_pooling, classifier_batchnorm, freeze_backbone: `DSeqJEPAForImageClassification`
            head: pooled features ("mean" of patch tokens, "cls", or "cls+mean" concatenated), an
            affine-free BatchNorm before the linear layer (the linear-probe head), a frozen encoder.
    """

    model_type = "dseqjepa"

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        num_channels: int = 3,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-6,
        hidden_act: str = "gelu",
        use_cls_token: bool = True,
        saliency_layer: int | None = None,
        saliency_query: str | None = None,
        min_region_fraction: float = 0.15,
        num_regions: int = 5,
        predictor_hidden_size: int = 192,
        predictor_num_hidden_layers: int = 6,
        predictor_num_attention_heads: int | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        initializer_range: float = 0.02,
        classifier_pooling: str = "mean",
        classifier_batchnorm: bool = False,
        freeze_backbone: bool = False,
        **kwargs,
    ):
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.qkv_bias = qkv_bias
        self.layer_norm_eps = layer_norm_eps
        self.hidden_act = hidden_act
        self.use_cls_token = use_cls_token
        self.saliency_layer = num_hidden_layers - 2 if saliency_layer is None else saliency_layer
        self.saliency_query = saliency_query or ("cls_token" if use_cls_token else "mean_patch")
        self.min_region_fraction = min_region_fraction
        self.num_regions = num_regions
        self.predictor_hidden_size = predictor_hidden_size
        self.predictor_num_hidden_layers = predictor_num_hidden_layers
        self.predictor_num_attention_heads = predictor_num_attention_heads or num_attention_heads
        self.image_mean = list(IMAGENET_MEAN if image_mean is None else image_mean)
        self.image_std = list(IMAGENET_STD if image_std is None else image_std)
        self.initializer_range = initializer_range
        self.classifier_pooling = classifier_pooling
        self.classifier_batchnorm = classifier_batchnorm
        self.freeze_backbone = freeze_backbone
        super().__init__(**kwargs)
        self.validate_fields()

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.image_size // self.patch_size, self.image_size // self.patch_size

    def validate_fields(self) -> None:
        """Raise ValueError naming the field, what was expected and what was found."""
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"DSeqJEPAConfig.{name}: expected a positive int, found {value!r}")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"DSeqJEPAConfig.{name}: expected a float, found {value!r}")
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"DSeqJEPAConfig.{name}: expected true or false, found {getattr(self, name)!r}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"DSeqJEPAConfig.{name}: expected one of {choices}, found {getattr(self, name)!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"DSeqJEPAConfig: hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.predictor_hidden_size % self.predictor_num_attention_heads:
            raise ValueError(
                f"DSeqJEPAConfig: predictor_hidden_size ({self.predictor_hidden_size}) must be divisible by "
                f"predictor_num_attention_heads ({self.predictor_num_attention_heads})"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"DSeqJEPAConfig: image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})"
            )
        if isinstance(self.saliency_layer, bool) or not isinstance(self.saliency_layer, int) or not (
            0 <= self.saliency_layer < self.num_hidden_layers
        ):
            raise ValueError(
                f"DSeqJEPAConfig.saliency_layer: expected a block index in [0, {self.num_hidden_layers - 1}], "
                f"found {self.saliency_layer!r}"
            )
        if self.saliency_query == "cls_token" and not self.use_cls_token:
            raise ValueError("DSeqJEPAConfig.saliency_query: 'cls_token' needs use_cls_token=True; use 'mean_patch'")
        if not 0.0 <= self.min_region_fraction <= 1.0:
            raise ValueError(f"DSeqJEPAConfig.min_region_fraction: expected a value in [0, 1], found {self.min_region_fraction}")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if len(value) != self.num_channels or not all(isinstance(v, (int, float)) for v in value):
                raise ValueError(f"DSeqJEPAConfig.{name}: expected {self.num_channels} numbers, found {value!r}")

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        missing = [name for name in REQUIRED_FIELDS if name not in config_dict]
        if missing:
            raise ValueError(f"DSeqJEPAConfig: the saved config is missing required field(s) {missing}")
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "DSeqJEPAConfig":
        """A config for one of `PRESETS` (e.g. "vit_base_patch16_224"), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"Unknown DSeq-JEPA preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

"""DSeq-JEPA model configuration and the size presets (I-JEPA's ViT sizes).

A typed, strict dataclass as transformers 5 writes configs: every field is type- and range-checked
whenever it is set, the relations between fields when the config is built and when it is saved.
(No `from __future__ import annotations` here: `strict` checks real types, not strings.)
"""

import dataclasses
import math
import os
import sys

from huggingface_hub.dataclasses import as_validated_field, strict  # transformers' own config machinery
from transformers.backbone_utils import BackboneConfigMixin
from transformers.configuration_utils import PreTrainedConfig

from .errors import load_errors_as
from .regions import MAX_REGIONS

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")  # `dtype` in config.json (or "auto", or none)
MAX_TOKENS = 16_384  # patches of one input (a 2048 x 2048 image at patch 16): attention grows with their square

# Encoder and predictor sizes as I-JEPA's presets; the predictor keeps the encoder's head count
# (paper, arXiv 2511.17354; docs/METHOD.md of dseqjepa-hub, section 3) and is 192 wide and 6 deep
# up to ViT-B, 384 wide and 12 deep above.
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


# Field validators: `strict` runs them, after the type check, whenever the field is set.
@as_validated_field
def _positive(value: int) -> None:  # a size or a count
    if value < 1:
        raise ValueError(f"expected a positive int, found {value!r}")


@as_validated_field
def _fraction(value: float) -> None:
    if not 0.0 <= value <= 1.0:  # NaN fails every comparison
        raise ValueError(f"expected a number in [0, 1], found {value!r}")


@as_validated_field
def _epsilon(value: float) -> None:
    if not 0.0 < value < math.inf:
        raise ValueError(f"expected a finite number > 0, found {value!r}")


def physical_memory() -> int | None:
    """This machine's RAM in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_dtype(dtype) -> None:
    if dtype is not None and str(dtype).removeprefix("torch.") not in ("auto", *FLOAT_DTYPES):
        raise ValueError(f"DSeqJEPAConfig.dtype: expected one of {('auto', *FLOAT_DTYPES)} or none, found {dtype!r}")


def check_memory(parameters: int, what: str) -> None:
    """Refuse, before anything is built, a model whose float32 weights alone exceed this machine's memory."""
    needed, available = 4 * parameters, physical_memory()
    if available is not None and needed > available:
        raise ValueError(f"{what}: {parameters:,} parameters need {needed / 2**30:,.1f} GiB in float32, more than "
                         f"this machine's {available / 2**30:,.1f} GiB of memory (a damaged config.json?)")


def check_tokens(image_size: int, patch_size: int, what: str) -> None:
    """Refuse inputs of more than MAX_TOKENS patches, with the attention cost that would have taken."""
    tokens = (image_size // patch_size) ** 2
    if tokens > MAX_TOKENS:
        raise ValueError(f"{what}: {image_size} pixels at patch {patch_size} is {tokens:,} tokens an image, whose "
                         f"attention scores take {tokens**2 * 4 / 2**30:,.0f} GiB a head; at most {MAX_TOKENS:,} tokens "
                         f"(a side of {int(MAX_TOKENS**0.5) * patch_size} pixels) are accepted")


def _served_in_this_process(custom_pipelines: dict) -> bool:
    """Whether every task of a folder's `custom_pipelines` is registered in this process by dseqjepa_hub."""
    pipelines = sys.modules.get("transformers.pipelines")  # never imported: nothing is registered
    if pipelines is None:
        return False
    tasks = pipelines.PIPELINE_REGISTRY.supported_tasks
    return all(task in tasks and tasks[task]["impl"].__module__.startswith("dseqjepa_hub.") for task in custom_pipelines)


class SavedConfigMixin:
    """Loading a saved config.json: the fields that decide tensor shapes (`required_fields`) must be
    written in it, and anything unreadable, missing or invalid raises one `ModelLoadError` naming the
    class or the folder (never a dataclass or JSON traceback)."""

    required_fields: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        with load_errors_as(cls.__name__):
            missing = [name for name in cls.required_fields if name not in config_dict]
            if missing:
                raise ValueError(f"the saved config is missing required field(s) {missing}")
            return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        with load_errors_as(f"cannot load a {cls.__name__} from {pretrained_model_name_or_path}"):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


@strict
class DSeqJEPAConfig(SavedConfigMixin, BackboneConfigMixin, PreTrainedConfig):
    r"""Configuration of a DSeq-JEPA vision transformer (and of I-JEPA's, with `use_cls_token=False`).

    Args:
        image_size, patch_size, num_channels: input geometry; the patch grid is image_size // patch_size.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: encoder sizes.
        qkv_bias, layer_norm_eps, hidden_act: block details (release: bias, 1e-6, GELU).
        use_cls_token: prepend a learnable CLS token with a zero position embedding. False gives
            I-JEPA's encoder, whose regions are then ranked with the `saliency_query` fallback.
        saliency_layer: 0-based index of the block whose patch outputs (after the final norm) are the
            saliency keys; default (None) the second-to-last block.
        saliency_query: "cls_token" (the learnable CLS parameter, the paper) or "mean_patch" (the mean
            of the normalised patch keys of each image: the fallback for weights without a CLS token);
            default (None) the first with a CLS token, else the second.
        min_region_fraction, num_regions: region extraction (alpha = 0.15, N = 5 with the background).
        predictor_hidden_size, predictor_num_hidden_layers, predictor_num_attention_heads: the
            pretraining predictor, so that a checkpoint's predictor can travel with the encoder; its
            head count defaults (None) to the encoder's.
        classifier_pooling, classifier_batchnorm, freeze_backbone: `DSeqJEPAForImageClassification`
            head: pooled features ("mean" of patch tokens, "cls", or "cls+mean" concatenated), an
            affine-free BatchNorm before the linear layer (the linear-probe head), a frozen encoder.
        out_features, out_indices (keyword arguments, as DINOv2's), apply_layernorm, reshape_hidden_states:
            `DSeqJEPABackbone` (`AutoBackbone`): the stages "stem", "stage1".."stageL" to return (default
            the last), the final LayerNorm on each, and (B, D, h, w) maps without the CLS token.
    """

    model_type = "dseqjepa"
    required_fields = ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                       "intermediate_size")

    image_size: int = _positive(default=224)
    patch_size: int = _positive(default=16)
    num_channels: int = _positive(default=3)
    hidden_size: int = _positive(default=768)
    num_hidden_layers: int = _positive(default=12)
    num_attention_heads: int = _positive(default=12)
    intermediate_size: int = _positive(default=3072)
    qkv_bias: bool = True
    layer_norm_eps: float = _epsilon(default=1e-6)
    hidden_act: str = "gelu"
    use_cls_token: bool = True
    saliency_layer: int | None = None
    saliency_query: str | None = None
    min_region_fraction: float = _fraction(default=0.15)
    num_regions: int = _positive(default=5)
    predictor_hidden_size: int = _positive(default=192)
    predictor_num_hidden_layers: int = _positive(default=6)
    predictor_num_attention_heads: int | None = None
    initializer_range: float = _fraction(default=0.02)
    classifier_pooling: str = "mean"
    classifier_batchnorm: bool = False
    freeze_backbone: bool = False
    apply_layernorm: bool = True
    reshape_hidden_states: bool = True

    def __post_init__(self, **kwargs):
        check_dtype(kwargs.get("dtype", getattr(self, "dtype", None)))  # before transformers reads it as torch.<dtype>
        check_tokens(self.image_size, self.patch_size, "DSeqJEPAConfig.image_size")  # before a list of the layers
        check_memory(self.parameter_count(), "DSeqJEPAConfig")
        if self.saliency_layer is None:
            self.saliency_layer = self.num_hidden_layers - 2
        if self.saliency_query is None:
            self.saliency_query = "cls_token" if self.use_cls_token else "mean_patch"
        if self.predictor_num_attention_heads is None:
            self.predictor_num_attention_heads = self.num_attention_heads
        kwargs.pop("stage_names", None)  # saved by to_dict; always derived from the depth
        self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, self.num_hidden_layers + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)
        if getattr(self, "custom_pipelines", None) and _served_in_this_process(self.custom_pipelines):
            # The folder's pipeline is this process's registered one (the package is imported): without
            # its entry, transformers takes the registry's class instead of asking for trust_remote_code.
            # Saving a model writes the entry again (`DSeqJEPAPreTrainedModel.save_pretrained`).
            self.custom_pipelines = {}

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.image_size // self.patch_size, self.image_size // self.patch_size

    def validate_architecture(self):
        """Part of `@strict`-powered validation: the relations between fields, and the choices."""
        super().validate_architecture()
        for name, choices in (
            ("saliency_query", ("cls_token", "mean_patch")),
            ("classifier_pooling", ("mean", "cls", "cls+mean")),
            ("hidden_act", ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"DSeqJEPAConfig.{name}: expected one of {choices}, found {getattr(self, name)!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"DSeqJEPAConfig: hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_size % 4:
            raise ValueError(f"DSeqJEPAConfig: hidden_size ({self.hidden_size}) must be divisible by 4 (the 2-D "
                             "sin-cos position embedding)")
        check_dtype(getattr(self, "dtype", None))
        architectures = getattr(self, "architectures", None)
        if architectures is not None and not (
            isinstance(architectures, list) and architectures and all(isinstance(name, str) for name in architectures)
        ):
            raise ValueError(f"DSeqJEPAConfig.architectures: expected a list of class names, found {architectures!r}")
        if self.num_regions > MAX_REGIONS:
            raise ValueError(f"DSeqJEPAConfig.num_regions: expected at most {MAX_REGIONS}, found {self.num_regions}")
        check_tokens(self.image_size, self.patch_size, "DSeqJEPAConfig.image_size")
        check_memory(self.parameter_count(), "DSeqJEPAConfig")
        if self.predictor_num_attention_heads < 1:
            raise ValueError(
                "DSeqJEPAConfig.predictor_num_attention_heads: expected a positive int, "
                f"found {self.predictor_num_attention_heads!r}"
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
        if not 0 <= self.saliency_layer < self.num_hidden_layers:
            raise ValueError(
                f"DSeqJEPAConfig.saliency_layer: expected a block index in [0, {self.num_hidden_layers - 1}], "
                f"found {self.saliency_layer!r}"
            )
        if self.saliency_query == "cls_token" and not self.use_cls_token:
            raise ValueError("DSeqJEPAConfig.saliency_query: 'cls_token' needs use_cls_token=True; use 'mean_patch'")

    def parameter_count(self) -> int:
        """Parameters and buffers of the encoder this config describes, counted from the fields alone,
        before anything is built."""
        d, inner, tokens = self.hidden_size, self.intermediate_size, (self.image_size // self.patch_size) ** 2
        block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (2 * d * inner + inner + d)  # norms, qkv, proj, MLP
        embeddings = self.num_channels * self.patch_size**2 * d + d + d + tokens * d  # patches, CLS, sin-cos
        return embeddings + self.num_hidden_layers * block + 2 * d

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "DSeqJEPAConfig":
        """A config for one of `PRESETS` (e.g. "vit_base_patch16_224"), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"Unknown DSeq-JEPA preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def own_fields(cls) -> tuple[str, ...]:
        """This config's own field names, in declared order (not transformers' common ones such as `dtype`)."""
        common = {field.name for field in dataclasses.fields(PreTrainedConfig)}
        return tuple(field.name for field in dataclasses.fields(cls) if field.name not in common)


@strict
class DSeqJEPAPredictorConfig(SavedConfigMixin, PreTrainedConfig):
    r"""Configuration of the JEPA pretraining predictor (`DSeqJEPAPredictor`): a narrow ViT that reads
    context-encoder tokens and predicts encoder embeddings at target patches.

    Args:
        encoder_hidden_size: width of the encoder tokens it reads and of the embeddings it predicts.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: predictor sizes; the MLP
            width defaults (None) to 4 * hidden_size, as I-JEPA's.
        image_size, patch_size: the encoder's input geometry, whose patch grid the fixed sin-cos
            position embedding covers.
        qkv_bias, layer_norm_eps, hidden_act: block details, the encoder's.
        initializer_range: std of the truncated-normal init of the linear layers and the mask token.
    `from_encoder_config` builds it from a `DSeqJEPAConfig` (its `predictor_*` fields).
    """

    model_type = "dseqjepa_predictor"
    required_fields = ("encoder_hidden_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "image_size",
                       "patch_size")

    encoder_hidden_size: int = _positive(default=768)
    hidden_size: int = _positive(default=192)
    num_hidden_layers: int = _positive(default=6)
    num_attention_heads: int = _positive(default=12)
    intermediate_size: int | None = None
    image_size: int = _positive(default=224)
    patch_size: int = _positive(default=16)
    qkv_bias: bool = True
    layer_norm_eps: float = _epsilon(default=1e-6)
    hidden_act: str = "gelu"
    initializer_range: float = _fraction(default=0.02)

    def __post_init__(self, **kwargs):
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        super().__post_init__(**kwargs)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.image_size // self.patch_size, self.image_size // self.patch_size

    def validate_architecture(self):
        """Part of `@strict`-powered validation: the relations between fields, and the choices."""
        super().validate_architecture()
        choices = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")
        if self.hidden_act not in choices:
            raise ValueError(f"DSeqJEPAPredictorConfig.hidden_act: expected one of {choices}, found {self.hidden_act!r}")
        if self.intermediate_size < 1:
            raise ValueError(
                f"DSeqJEPAPredictorConfig.intermediate_size: expected a positive int, found {self.intermediate_size!r}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"DSeqJEPAPredictorConfig: hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_size % 4:
            raise ValueError(
                f"DSeqJEPAPredictorConfig: hidden_size ({self.hidden_size}) must be divisible by 4 "
                "(the 2-D sin-cos position embedding)"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"DSeqJEPAPredictorConfig: image_size ({self.image_size}) must be divisible by "
                f"patch_size ({self.patch_size})"
            )

    @classmethod
    def from_encoder_config(cls, config: DSeqJEPAConfig) -> "DSeqJEPAPredictorConfig":
        """The predictor that pretrains the encoder `config` describes (its `predictor_*` fields)."""
        return cls(
            encoder_hidden_size=config.hidden_size,
            hidden_size=config.predictor_hidden_size,
            num_hidden_layers=config.predictor_num_hidden_layers,
            num_attention_heads=config.predictor_num_attention_heads,
            image_size=config.image_size,
            patch_size=config.patch_size,
            qkv_bias=config.qkv_bias,
            layer_norm_eps=config.layer_norm_eps,
            hidden_act=config.hidden_act,
            initializer_range=config.initializer_range,
        )


__all__ = ["DSeqJEPAConfig", "DSeqJEPAPredictorConfig"]

"""DSeq-JEPA vision transformer for transformers: outputs, encoder, base model, classification head.

The encoder is the authors' release ViT (paper: arXiv 2511.17354; docs/METHOD.md of dseqjepa-hub,
sections 1 and 7): conv patch embedding, an optional CLS token with a zero position embedding, fixed
2-D sin-cos position embeddings for the patches, pre-norm blocks with fused qkv, a final LayerNorm.
Its state-dict names are the release's (`patch_embed.proj`, `cls_token`, `pos_embed`,
`blocks.{i}.attn.qkv`, ..., `norm`), so converting a release checkpoint is a prefix rename.

Hidden states and attentions are recorded by transformers' output capturing (`_can_record_outputs`):
hooks on the blocks and attention modules, active only when a forward pass asks for them.
"""

import contextlib
import difflib
import inspect
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Unpack

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple
from transformers.utils.hub import cached_file
from transformers.utils.output_capturing import capture_outputs

from .configuration_dseqjepa import DSeqJEPAConfig, DSeqJEPAPredictorConfig
from .errors import ModelLoadError, load_errors_as
from .regions import patch_tokens, saliency_map

logger = logging.get_logger(__name__)

# The `**kwargs` (TransformersKwargs) a forward pass reads; `return_dict` is taken by the decorators
# before it. Any other name is refused, so that a misspelt option fails instead of doing nothing.
OUTPUT_KWARGS = frozenset({"output_hidden_states", "output_attentions"})
LOSS_KWARGS = frozenset({"num_items_in_batch"})  # Trainer's, for the classification loss


def sincos_pos_embed_2d(dim: int, height: int, width: int, device=None) -> torch.Tensor:
    """I-JEPA's fixed 2-D sin-cos position embedding for a (height, width) patch grid -> (height*width, dim).

    As in I-JEPA (and MAE), the first half of the channels encodes the column index and the second
    half the row index, each as [sin | cos] over dim/4 frequencies 1 / 10000^(2i/(dim/2)).
    Computed in float64, returned in float32.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, found {dim}")
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float64, device=device),
        torch.arange(width, dtype=torch.float64, device=device),
        indexing="ij",
    )
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim / 4))  # (dim/4,)

    def embed_1d(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1) * omega  # (h*w, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([embed_1d(cols), embed_1d(rows)], dim=1).float()  # (h*w, dim)


@dataclass
class DSeqJEPAModelOutput(BaseModelOutputWithPooling):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, 1 + num_patches, hidden_size)`):
        Final-norm tokens, the CLS token first when the model has one.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        Mean of the patch tokens of `last_hidden_state` (I-JEPA's evaluation protocol).
    saliency (`torch.FloatTensor` of shape `(batch_size, grid_height, grid_width)`, *optional*):
        CLS-similarity saliency of every patch (docs/METHOD.md of dseqjepa-hub, section 1), with
        `output_saliency=True`.
    """

    saliency: torch.FloatTensor | None = None


def check_forward_kwargs(model: nn.Module, kwargs: dict, accepted: frozenset[str]) -> None:
    """Refuse the keyword arguments `model.forward` would otherwise ignore (a misspelt option, say)."""
    for name in kwargs:
        if name not in accepted:
            parameters = inspect.signature(model.forward).parameters.values()
            known = [*accepted, *(p.name for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD)]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{type(model).__name__}.forward() got an unexpected keyword argument {name!r}{hint}")


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention that also returns the attention probabilities. (B, H, L, d) in, (B, L, H, d) out."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Lq, Lk)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, Lq, H, d)
    return attn_output, attn_weights


class DSeqJEPAAttention(nn.Module):
    def __init__(self, config: DSeqJEPAConfig, hidden_size: int, num_heads: int):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, d)
        implementation = self.config._attn_implementation
        if output_attentions and implementation != "eager":
            # Only eager attention computes the weights; the outputs are the same within float error.
            logger.warning_once(
                f"output_attentions=True: attention weights are computed with eager attention in this pass "
                f"(the model uses {implementation!r})"
            )
            implementation = "eager"
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self, query, key, value, attention_mask, scaling=self.scaling, dropout=0.0
        )
        return self.proj(attn_output.reshape(batch, length, -1)), attn_weights


class DSeqJEPAMLP(nn.Module):
    def __init__(self, config: DSeqJEPAConfig, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class DSeqJEPABlock(GradientCheckpointingLayer):
    """Pre-norm transformer block of the sizes its config gives: the encoder's, or the predictor's."""

    def __init__(self, config: DSeqJEPAConfig | DSeqJEPAPredictorConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = DSeqJEPAAttention(config, config.hidden_size, config.num_attention_heads)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = DSeqJEPAMLP(config, config.hidden_size, config.intermediate_size)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> torch.Tensor:
        attn_output, _ = self.attn(self.norm1(hidden_states), attention_mask, output_attentions)  # recorded on `attn`
        hidden_states = hidden_states + attn_output
        return hidden_states + self.mlp(self.norm2(hidden_states))


def additive_attention_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Bool mask (True = may attend), (B, Lk) keys or (B, Lq, Lk) pairs -> additive (B, 1, Lq|1, Lk) in `dtype`."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise ValueError(f"attention_mask must be a bool tensor (True = may attend), found {mask.dtype}")
    if mask.dim() == 2:
        mask = mask[:, None, None, :]  # (B, 1, 1, Lk)
    elif mask.dim() == 3:
        mask = mask[:, None]  # (B, 1, Lq, Lk)
    else:
        raise ValueError(f"attention_mask must be (B, Lk) or (B, Lq, Lk), found shape {tuple(mask.shape)}")
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


# What every saved folder maps to the core files it carries (remote code).
AUTO_MAP = {
    "AutoConfig": "configuration_dseqjepa.DSeqJEPAConfig",
    "AutoModel": "modeling_dseqjepa.DSeqJEPAModel",
    "AutoModelForImageClassification": "modeling_dseqjepa.DSeqJEPAForImageClassification",
    "AutoBackbone": "modeling_dseqjepa.DSeqJEPABackbone",
    "AutoImageProcessor": "image_processing_dseqjepa.DSeqJEPAImageProcessor",
}
PIPELINE_TASK = "saliency-ranking"
PIPELINE_ENTRY = {"impl": "pipeline_saliency_ranking.SaliencyRankingPipeline", "pt": ["AutoModel"], "tf": [], "type": "image"}
CORE_FILES = ("configuration_dseqjepa.py", "modeling_dseqjepa.py", "image_processing_dseqjepa.py", "regions.py",
              "pipeline_saliency_ranking.py", "image_io.py", "errors.py")


def copy_core_files(loaded_from: str, save_directory: str | os.PathLike) -> None:
    """Copy the remote-code core files into `save_directory`: from this module's folder, which holds them
    all when this is the package; when this module runs as remote code, its folder in the modules cache
    holds only what it imports, and the others come from the folder or Hub repo it was loaded from."""
    here = Path(__file__).parent
    for name in CORE_FILES:
        source = here / name
        if not source.is_file():
            source = loaded_from and cached_file(loaded_from, name, _raise_exceptions_for_missing_entries=False,
                                                 _raise_exceptions_for_connection_errors=False)
        if source:
            shutil.copyfile(source, Path(save_directory) / name)


def image_processor_class(config: DSeqJEPAConfig, folder: str | os.PathLike) -> type:
    """The image processor class that `AutoImageProcessor` gives for `config`, looked up rather than
    imported (a model file does not import its processing file): the class registered for the config's
    class (dseqjepa_hub/__init__.py registers it), else, running as remote code without the package, the
    class that `folder`'s `auto_map` names in its copy of the core files."""
    # Imported here: transformers' image-processing auto module pulls in torchvision and more.
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

    if type(config) in IMAGE_PROCESSOR_MAPPING:
        return IMAGE_PROCESSOR_MAPPING[type(config)]["torchvision"]
    remote_class = get_class_from_dynamic_module(AUTO_MAP["AutoImageProcessor"], folder)
    remote_class.register_for_auto_class()  # as AutoImageProcessor does: its preprocessor_config.json names it
    return remote_class


@contextlib.contextmanager
def no_progress_bars():
    """transformers draws a progress bar for every model it loads or saves; the package's calls draw none
    (a command draws one bar per job, a library call stays silent unless something is wrong)."""
    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


HEAD_TENSORS = (r"^classifier\.", r"^batchnorm\.")  # DSeqJEPAForImageClassification's own tensors


class WholeWeightsLoading:
    """`from_pretrained` as one door: whatever stops a folder or repo from loading (a damaged config,
    safetensors file or index, a missing file...) raises `ModelLoadError` naming it, the original
    exception chained; and weights that do not cover the model are refused instead of initialised at
    random (transformers' "newly initialized" note): a tensor missing, one the model has no place for,
    or one of another shape. Only a head the folder was not trained with (`_optional_weights`, e.g. a
    classifier over an encoder folder) may be missing or ignored."""

    _optional_weights: tuple[str, ...] = ()  # name prefixes of tensors a folder may lack or hold unused

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, output_loading_info: bool = False, **kwargs):
        source = pretrained_model_name_or_path
        if torch.get_default_device().type == "meta":  # a programming error: transformers' own RuntimeError says so
            return super().from_pretrained(source, *args, output_loading_info=output_loading_info, **kwargs)
        with load_errors_as(f"cannot load a {cls.__name__} from {source}"):
            model, info = super().from_pretrained(source, *args, output_loading_info=True, **kwargs)
        wrong = {
            "lacks": sorted(name for name in info["missing_keys"] if not name.startswith(cls._optional_weights)),
            "holds tensors it has no place for:": sorted(
                name for name in info["unexpected_keys"] if not name.startswith(cls._optional_weights)),
            "holds tensors of other shapes:": sorted(  # (name, shape in the file, shape in the model)
                key[0] for key in info["mismatched_keys"] if not key[0].startswith(cls._optional_weights)),
        }
        for what, names in wrong.items():
            if names:
                listed = ", ".join(names[:3]) + (f" (and {len(names) - 3} more)" if len(names) > 3 else "")
                raise ModelLoadError(f"{source}: the weights do not fit the {cls.__name__} its config.json describes: "
                                     f"the checkpoint {what} {listed}")
        return (model, info) if output_loading_info else model


class DSeqJEPAPreTrainedModel(WholeWeightsLoading, PreTrainedModel):
    config: DSeqJEPAConfig
    _optional_weights = ("classifier.", "batchnorm.")  # a classifier head over an encoder folder, or the reverse
    base_model_prefix = "dseqjepa"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["DSeqJEPABlock"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True  # the encoder forward, saliency included (tests/test_loading_like_transformers.py)
    # hidden_states: the blocks' input (the embeddings) then every block's output; attentions: computed eagerly
    _can_record_outputs = {"hidden_states": DSeqJEPABlock, "attentions": DSeqJEPAAttention}
    # A classifier's head, left out on purpose where its encoder or backbone is loaded (AutoModel, the
    # pipelines): from_pretrained says so in one line instead of transformers' LOAD REPORT.
    _keys_to_ignore_on_load_unexpected = list(HEAD_TENSORS)

    def __init__(self, config: DSeqJEPAConfig, *inputs, **kwargs):
        config.validate_architecture()  # fields changed after the config was built (from_pretrained(p, **kwargs))
        super().__init__(config, *inputs, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loading without its progress bar; an encoder or backbone loaded from a classifier's
        folder says in one line that the head was left out."""
        with no_progress_bars():
            loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading info) on request
        saved = (model.config.architectures or [None])[0]
        if saved == "DSeqJEPAForImageClassification" and not isinstance(model, DSeqJEPAForImageClassification):
            logger.warning(f"{cls.__name__} from {pretrained_model_name_or_path}: its classification head was left out "
                           "(an encoder was asked for; DSeqJEPAForImageClassification loads the head)")
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save, then the folder made self-contained: its config.json maps every Auto
        class and the "saliency-ranking" pipeline to the core files copied beside the weights, so it
        loads with every Auto class and both pipelines, with this package or with
        `trust_remote_code=True` without it. A folder without a `preprocessor_config.json` gets the
        image processor for this config (`image_processor_class`), as the pipelines need one."""
        self.config.auto_map = dict(AUTO_MAP)
        self.config.custom_pipelines = {PIPELINE_TASK: dict(PIPELINE_ENTRY)}
        try:
            with no_progress_bars():
                super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.config.custom_pipelines = {}  # in memory the registry serves it (see DSeqJEPAConfig)
        copy_core_files(self.name_or_path, save_directory)
        if not (Path(save_directory) / "preprocessor_config.json").is_file():
            image_processor_class(self.config, save_directory).from_model_config(self.config).save_pretrained(save_directory)

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        """transformers' choice, less `paged|eager`: it reads a paged KV cache, which only generation has
        (transformers maps the other `paged|` names, deprecated, to the plain ones before this)."""
        if requested_attention is not None and requested_attention.startswith("paged|"):
            raise ValueError(
                f"{type(self).__name__} does not support attn_implementation={requested_attention!r} (paged "
                "attention needs a generation KV cache): use 'eager', 'sdpa' or 'flex_attention'"
            )
        return super().get_correct_attn_implementation(requested_attention, is_init_check)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, DSeqJEPAModel):
            if module.cls_token is not None:
                init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            height, width = module.config.grid_size
            init.copy_(module.pos_embed, sincos_pos_embed_2d(module.config.hidden_size, height, width)[None])
        else:
            super()._init_weights(module)


class DSeqJEPAModel(DSeqJEPAPreTrainedModel):
    """The DSeq-JEPA encoder. `forward` returns final-norm tokens, their patch mean and, on request, the saliency."""

    def __init__(self, config: DSeqJEPAConfig):
        super().__init__(config)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if config.use_cls_token else None
        height, width = config.grid_size
        # Fixed, never trained; persistent so the state dict keeps the release's `pos_embed`.
        self.register_buffer("pos_embed", sincos_pos_embed_2d(config.hidden_size, height, width)[None])  # (1, N, D)
        self.blocks = nn.ModuleList([DSeqJEPABlock(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.cls_token is not None else 0

    def get_input_embeddings(self) -> nn.Module:
        return self.patch_embed.proj

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(f"pixel_values must be a (batch, channels, height, width) tensor, found {shape}")
        _, channels, height, width = pixel_values.shape
        config = self.config
        if channels != config.num_channels:
            raise ValueError(
                f"pixel_values has {channels} channel(s) but the model expects {config.num_channels}: "
                "convert images to RGB (the image processor does this)"
            )
        if height % config.patch_size or width % config.patch_size:
            raise ValueError(
                f"input size {height}x{width} is not a multiple of the patch size {config.patch_size}"
            )

    def position_embeddings(self, height: int, width: int) -> torch.Tensor:
        """(1, height * width, D) sin-cos position embeddings of a patch grid: the `pos_embed` buffer on the
        config's grid, regenerated (I-JEPA's formula, `sincos_pos_embed_2d`) on any other grid.

        While a graph is being exported (torch.export, the ONNX exporters) they are always computed from the
        grid's size, so that an exported graph with a dynamic image size holds the formula, not one grid's values.
        """
        exporting = torch.compiler.is_exporting() or torch.jit.is_tracing()
        if not exporting and (height, width) == self.config.grid_size:
            return self.pos_embed
        return sincos_pos_embed_2d(self.config.hidden_size, height, width, device=self.pos_embed.device)[None]

    def embed(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Pixels -> tokens with position embeddings, CLS first when present: ((B, [1] + N, D), (h, w)).

        Any input size divisible by the patch size works (`interpolate_pos_encoding` is accepted and ignored).
        """
        self._check_pixel_values(pixel_values)
        patches = self.patch_embed.proj(pixel_values.to(self.patch_embed.proj.weight.dtype))  # (B, D, h, w)
        height, width = patches.shape[-2:]
        tokens = patches.flatten(2).transpose(1, 2)  # (B, N, D)
        tokens = tokens + self.position_embeddings(height, width).to(tokens.dtype)
        if self.cls_token is not None:  # the CLS token's position embedding is zero
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        return tokens, (height, width)

    def encode(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the blocks and the final norm on (B, L, D) tokens -> (B, L, D).

        attention_mask: bool, (B, L) keys or (B, L, L) query-key pairs, True = may attend; with
            attn_implementation "eager" or "sdpa" (transformers' flex_attention reads a dense mask out of
            bounds here, and corrupts memory on the CPU).
        """
        if attention_mask is not None and self.config._attn_implementation == "flex_attention":
            raise ValueError(
                "DSeqJEPAModel.encode: an attention_mask needs attn_implementation 'sdpa' or 'eager', "
                "not 'flex_attention' (model.set_attn_implementation('sdpa'))"
            )
        mask = additive_attention_mask(attention_mask, tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens, mask)
        return self.norm(tokens)

    def saliency_from_block(self, block_output: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        """(B, [1] + N, D) output of the saliency block -> (B, h, w) CLS-similarity saliency (docs/METHOD.md
        of dseqjepa-hub, section 1)."""
        keys = self.norm(patch_tokens(block_output, self.config))  # (B, N, D)
        if self.config.saliency_query == "cls_token":
            query = self.cls_token[0, 0]  # (D,) the learnable parameter, not the CLS output
        else:
            query = keys.mean(dim=1)  # (B, D) fallback for encoders without a CLS token
        return saliency_map(query, keys, grid_size)

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool | None = None,
        output_saliency: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> DSeqJEPAModelOutput:
        r"""
        interpolate_pos_encoding (`bool`, *optional*): accepted for compatibility and ignored: any input size
            divisible by the patch size runs, with sin-cos position embeddings regenerated for its grid.
        output_saliency (`bool`, *optional*): also return `saliency`, from block `config.saliency_layer` of this pass.
        output_hidden_states, output_attentions, return_dict: as in every transformers model; `hidden_states`
            are taken before the final norm (the last one too); attentions are computed with eager attention
            whatever the model's `attn_implementation`.
        """
        check_forward_kwargs(self, kwargs, OUTPUT_KWARGS)
        output_attentions = bool(kwargs.get("output_attentions", self.config.output_attentions))
        hidden_states, grid_size = self.embed(pixel_values)  # (B, [1] + N, D)
        saliency = None
        for index, block in enumerate(self.blocks):
            hidden_states = block(hidden_states, output_attentions=output_attentions)
            if output_saliency and index == self.config.saliency_layer:
                saliency = self.saliency_from_block(hidden_states, grid_size)  # (B, h, w)
        last_hidden_state = self.norm(hidden_states)
        return DSeqJEPAModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=patch_tokens(last_hidden_state, self.config).mean(dim=1),  # (B, D)
            saliency=saliency,
        )

    def forward_intermediates(
        self,
        pixel_values: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list | tuple[torch.Tensor, list]:
        """Outputs of chosen blocks, with timm's `VisionTransformer.forward_intermediates` semantics.

        indices: the last n blocks for an int n, every block for None, else 0-based block indices
            (negative ones count from the end); results come in block order.
        norm: pass each intermediate through the final LayerNorm.
        output_fmt: "NCHW" -> patch tokens as (B, D, h, w) feature maps; "NLC" -> (B, N, D).
        return_prefix_tokens: each intermediate becomes (patch tokens, prefix tokens (B, 1, D)); a model
            without a CLS token has no prefix tokens and returns the patch tokens alone, as timm does.
        stop_early: run no block after the last one asked for (the final features are then that block's).
        Returns the intermediates alone with `intermediates_only`, else (final-norm tokens (B, [1] + N, D),
        intermediates).
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', found {output_fmt!r}")
        take = block_indices(len(self.blocks), indices)
        hidden_states, (height, width) = self.embed(pixel_values)
        blocks = self.blocks[: max(take) + 1] if stop_early else self.blocks
        intermediates = []
        for index, block in enumerate(blocks):
            hidden_states = block(hidden_states)
            if index in take:
                intermediates.append(self.norm(hidden_states) if norm else hidden_states)
        prefix = self.num_prefix_tokens
        prefix_tokens = [tokens[:, :prefix] for tokens in intermediates]
        intermediates = [patch_tokens(tokens, self.config) for tokens in intermediates]
        if output_fmt == "NCHW":
            intermediates = [patch_feature_map(tokens, (height, width)) for tokens in intermediates]
        if return_prefix_tokens and prefix:
            intermediates = list(zip(intermediates, prefix_tokens))
        if intermediates_only:
            return intermediates
        return self.norm(hidden_states), intermediates

    def get_intermediate_layers(
        self,
        pixel_values: torch.Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_prefix_tokens: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple:
        """DINOv2's `get_intermediate_layers`: the last `n` blocks (an int) or the blocks at indices `n`,
        patch tokens (B, N, D), or (B, D, h, w) with `reshape`, through the final norm unless `norm=False`.

        return_class_token: each output becomes (patch tokens, CLS token (B, D)), as in DINOv2;
        return_prefix_tokens: (patch tokens, prefix tokens (B, 1, D)), as in timm.
        """
        if return_class_token and return_prefix_tokens:
            raise ValueError("ask for return_class_token (DINOv2's form) or return_prefix_tokens (timm's), not both")
        if return_class_token and not self.num_prefix_tokens:
            raise ValueError("return_class_token=True needs a model with a CLS token (use_cls_token=True)")
        outputs = self.forward_intermediates(
            pixel_values, n, return_prefix_tokens=return_prefix_tokens or return_class_token, norm=norm,
            output_fmt="NCHW" if reshape else "NLC", intermediates_only=True, stop_early=True,
        )
        if return_class_token:
            outputs = [(patches, prefix[:, 0]) for patches, prefix in outputs]
        return tuple(outputs)


def block_indices(num_blocks: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's `feature_take_indices`: None -> every block, n -> the last n, a sequence -> those (negative from the end)."""
    if indices is None:
        indices = num_blocks
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= num_blocks:
            raise ValueError(f"the last {indices} blocks: expected 1 to {num_blocks}")
        return list(range(num_blocks - indices, num_blocks))
    taken = []
    for index in indices:
        absolute = num_blocks + index if index < 0 else index
        if not 0 <= absolute < num_blocks:
            raise ValueError(f"block index {index} is out of range for {num_blocks} blocks")
        taken.append(absolute)
    if not taken:
        raise ValueError("no block indices given")
    return taken


def patch_feature_map(patches: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """(B, h * w, D) patch tokens in raster order -> (B, D, h, w) feature map."""
    height, width = grid_size
    return patches.reshape(patches.shape[0], height, width, -1).permute(0, 3, 1, 2).contiguous()


class DSeqJEPABackbone(BackboneMixin, DSeqJEPAPreTrainedModel):
    """The encoder as a transformers backbone (`AutoBackbone`), with DINOv2's conventions.

    Stages are "stem" (the embeddings) and "stage1".."stageL" (each block's output); `config.out_features`
    or `config.out_indices` choose them (default: the last). Each feature map goes through the final
    LayerNorm when `config.apply_layernorm` and, when `config.reshape_hidden_states`, loses its CLS token
    and becomes (B, D, h, w) for any input size divisible by the patch size; otherwise it is (B, [1] + N, D).
    The weights are the encoder's (`dseqjepa.` prefix), so `AutoBackbone.from_pretrained` reads any model folder.
    """

    def __init__(self, config: DSeqJEPAConfig):
        super().__init__(config)
        self.dseqjepa = DSeqJEPAModel(config)
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.dseqjepa.patch_embed.proj

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BackboneOutput:
        r"""
        Returns `BackboneOutput(feature_maps, hidden_states, attentions)`: one feature map per stage in
        `out_features`, in stage order.
        """
        check_forward_kwargs(self, kwargs, OUTPUT_KWARGS)
        kwargs["output_hidden_states"] = True
        outputs = self.dseqjepa(pixel_values, return_dict=True, **kwargs)
        grid_size = (pixel_values.shape[-2] // self.config.patch_size, pixel_values.shape[-1] // self.config.patch_size)
        feature_maps = ()
        for stage, hidden_state in zip(self.stage_names, outputs.hidden_states):
            if stage not in self.out_features:
                continue
            if self.config.apply_layernorm:
                hidden_state = self.dseqjepa.norm(hidden_state)
            if self.config.reshape_hidden_states:
                hidden_state = patch_feature_map(patch_tokens(hidden_state, self.config), grid_size)
            feature_maps += (hidden_state,)
        return BackboneOutput(feature_maps=feature_maps, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class DSeqJEPAForImageClassification(DSeqJEPAPreTrainedModel):
    """A linear head over pooled encoder features; with `classifier_batchnorm` and `freeze_backbone` the
    paper's linear probe (affine-free BatchNorm, then a linear layer, on a frozen encoder)."""

    def __init__(self, config: DSeqJEPAConfig):
        super().__init__(config)
        if config.classifier_pooling != "mean" and not config.use_cls_token:
            raise ValueError(
                f"DSeqJEPAConfig.classifier_pooling: {config.classifier_pooling!r} needs a CLS token "
                "(use_cls_token=True); use 'mean'"
            )
        self.num_labels = config.num_labels
        self.dseqjepa = DSeqJEPAModel(config)
        features = config.hidden_size * (2 if config.classifier_pooling == "cls+mean" else 1)
        self.batchnorm = nn.BatchNorm1d(features, affine=False, eps=1e-6) if config.classifier_batchnorm else None
        self.classifier = nn.Linear(features, config.num_labels) if config.num_labels > 0 else nn.Identity()
        if config.freeze_backbone:
            self.dseqjepa.requires_grad_(False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loading, then `freeze_backbone` applied again: loading replaces the parameters."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading info) on request
        if model.config.freeze_backbone:
            model.dseqjepa.requires_grad_(False)
        return loaded

    def classify(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """The head: the encoder's (B, [1] + N, D) final-norm tokens -> (B, num_labels) logits."""
        features = self.pool(last_hidden_state)
        if self.batchnorm is not None:
            features = self.batchnorm(features)
        return self.classifier(features)

    def pool(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """(B, [1] + N, D) -> (B, D) or (B, 2D) as `classifier_pooling` says."""
        patch_mean = patch_tokens(last_hidden_state, self.config).mean(dim=1)
        if self.config.classifier_pooling == "mean":
            return patch_mean
        if self.config.classifier_pooling == "cls":
            return last_hidden_state[:, 0]
        return torch.cat([last_hidden_state[:, 0], patch_mean], dim=-1)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): class indices (or, for a
            multi-label or regression head, targets of shape `(batch_size, num_labels)`).
        """
        loss_kwargs = {name: kwargs.pop(name) for name in LOSS_KWARGS if name in kwargs}
        check_forward_kwargs(self, kwargs, OUTPUT_KWARGS)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_backbone):
            outputs = self.dseqjepa(
                pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
            )
        logits = self.classify(outputs.last_hidden_state)
        loss = self.loss_function(labels, logits, self.config, **loss_kwargs) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class DSeqJEPAPredictor(WholeWeightsLoading, PreTrainedModel):
    """The JEPA pretraining predictor: a narrow ViT that predicts target-patch embeddings from context
    tokens (docs/METHOD.md of dseqjepa-hub, section 5), kept beside the encoder as transformers keeps
    `VJEPA2Predictor`. Its tensor names are the release's (section 7): `predictor_embed`, `mask_token`,
    `predictor_pos_embed` (fixed sin-cos, patches only), `predictor_blocks.{i}`, `predictor_norm`,
    `predictor_proj`.
    """

    config: DSeqJEPAPredictorConfig
    main_input_name = "context"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DSeqJEPABlock"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = True

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loading without its progress bar."""
        with no_progress_bars():
            return super().from_pretrained(*args, **kwargs)

    def save_pretrained(self, *args, **kwargs):
        """transformers' save without its progress bar."""
        with no_progress_bars():
            return super().save_pretrained(*args, **kwargs)

    def __init__(self, config: DSeqJEPAPredictorConfig):
        config.validate_architecture()  # fields changed after the config was built
        super().__init__(config)
        height, width = config.grid_size
        self.predictor_embed = nn.Linear(config.encoder_hidden_size, config.hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.register_buffer("predictor_pos_embed", sincos_pos_embed_2d(config.hidden_size, height, width)[None])
        self.predictor_blocks = nn.ModuleList(DSeqJEPABlock(config) for _ in range(config.num_hidden_layers))
        self.predictor_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.predictor_proj = nn.Linear(config.hidden_size, config.encoder_hidden_size)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """I-JEPA's predictor init: truncated-normal linears and mask token, zero biases, unit norms."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, DSeqJEPAPredictor):
            init.trunc_normal_(module.mask_token, mean=0.0, std=std)
            height, width = module.config.grid_size
            init.copy_(module.predictor_pos_embed, sincos_pos_embed_2d(module.config.hidden_size, height, width)[None])
        else:
            super()._init_weights(module)

    def forward(
        self,
        context: torch.Tensor,
        context_positions: torch.Tensor,
        context_keys: torch.Tensor,
        target_positions: torch.Tensor,
        target_keep: torch.Tensor,
        mask_token: bool = True,
    ) -> torch.Tensor:
        """Predict the encoder embedding at every target position.

        context: (S, P + Lc, D) context-encoder tokens, P prefix (CLS) tokens first.
        context_positions: (S, Lc) patch index of each non-prefix context token.
        context_keys: (S, P + Lc) bool, the context tokens the sequence may attend to.
        target_positions, target_keep: (S, Lt) patch index of each target query, and which are real.
        The target queries (mask token + sin-cos position; the position alone with
        `mask_token=False`, as the DSeq-JEPA release builds them) and the context tokens attend
        to the allowed context tokens and to the real target queries. Returns (S, Lt, D).
        """
        prefix = context.shape[1] - context_positions.shape[1]
        pos_embed = self.predictor_pos_embed[0].to(context.dtype)  # (N, Dp)
        context = self.predictor_embed(context)  # (S, P + Lc, Dp)
        context = torch.cat([context[:, :prefix], context[:, prefix:] + pos_embed[context_positions]], dim=1)
        queries = pos_embed[target_positions]  # (S, Lt, Dp)
        if mask_token:
            queries = self.mask_token.to(context.dtype) + queries
        tokens = torch.cat([context, queries], dim=1)
        mask = additive_attention_mask(torch.cat([context_keys, target_keep], dim=1), tokens.dtype)
        for block in self.predictor_blocks:
            tokens = block(tokens, mask)
        return self.predictor_proj(self.predictor_norm(tokens[:, context.shape[1]:]))  # (S, Lt, D)


__all__ = [
    "DSeqJEPABackbone",
    "DSeqJEPABlock",
    "DSeqJEPAForImageClassification",
    "DSeqJEPAModel",
    "DSeqJEPAModelOutput",
    "DSeqJEPAPredictor",
    "DSeqJEPAPreTrainedModel",
    "sincos_pos_embed_2d",
]

if __name__.startswith("dseqjepa_hub."):  # the package's copy registers its classes (transformers registers a remote copy)
    from transformers import AutoBackbone, AutoModel, AutoModelForImageClassification

    AutoModel.register(DSeqJEPAConfig, DSeqJEPAModel, exist_ok=True)
    AutoModelForImageClassification.register(DSeqJEPAConfig, DSeqJEPAForImageClassification, exist_ok=True)
    AutoBackbone.register(DSeqJEPAConfig, DSeqJEPABackbone, exist_ok=True)
    AutoModel.register(DSeqJEPAPredictorConfig, DSeqJEPAPredictor, exist_ok=True)
    # Marked for remote code: `save_pretrained` writes `auto_map` and copies the model files.
    DSeqJEPAModel.register_for_auto_class("AutoModel")
    DSeqJEPAForImageClassification.register_for_auto_class("AutoModelForImageClassification")
    DSeqJEPABackbone.register_for_auto_class("AutoBackbone")
    DSeqJEPAPredictor.register_for_auto_class("AutoModel")

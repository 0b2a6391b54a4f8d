"""The pretraining config: one flat strict dataclass, YAML files, `--set key=value` overrides.

`TrainConfig` is a `huggingface_hub` strict dataclass, as `DSeqJEPAConfig` is: every field is type- and
range-checked whenever it is set, the relations between fields (`validate_*`) when the config is built.
A value from a YAML file or from `--set` is read as YAML, then converted to its field's declared type
where it reads as one (600 -> 600.0 for a float, [0.3, 1] or "0.3,1" -> (0.3, 1.0) for a pair, "none"
-> None where None is allowed): the type decides, so a new field needs no parsing code. An unknown key
or a wrong value fails at start-up, in one line naming the key. Encoder fields live under `model` (a
`DSeqJEPAConfig` preset plus field overrides, read against `DSeqJEPAConfig`'s own fields the same way),
e.g. `--set model.hidden_size=64`.
(No `from __future__ import annotations` here: `strict` checks real types, not strings.)
"""

import dataclasses
import difflib
import math
import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from huggingface_hub.dataclasses import as_validated_field, strict, type_validator
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassError

from dseqjepa_hub.application.atomic import atomic_write_text
from dseqjepa_hub.configuration_dseqjepa import PRESETS, DSeqJEPAConfig
from dseqjepa_hub.errors import DSeqJEPAError

CONFIG_DIR = Path(__file__).parent / "configs"

Number = float | int  # an int is a valid float (PEP 484), as transformers' configs write it
Pair = tuple[float, float]
NULLS = ("null", "none", "~")  # text read as None where a field allows None
BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


class ConfigError(DSeqJEPAError, ValueError):
    """A config file, key or value that cannot be used; the message names it."""


# Field validators: `strict` runs them, after the type check, whenever the field is set.
@as_validated_field
def _positive(value: int) -> None:  # a size or a count of steps
    if value < 1:
        raise ValueError(f"expected a positive int, found {value!r}")


@as_validated_field
def _count(value: int) -> None:
    if value < 0:
        raise ValueError(f"expected an int >= 0, found {value!r}")


@as_validated_field
def _finite(value: Number | Pair | None) -> None:  # inf and NaN reach no schedule
    numbers = value if isinstance(value, tuple) else (value,)
    if not all(number is None or math.isfinite(number) for number in numbers):
        raise ValueError(f"expected finite numbers, found {value!r}")


@as_validated_field
def _non_negative(value: Number) -> None:  # a rate or a length of warm-up
    if not 0 <= value < math.inf:  # NaN fails every comparison
        raise ValueError(f"expected a finite number >= 0, found {value!r}")


@as_validated_field
def _length(value: Number) -> None:  # epochs
    if not 0 < value < math.inf:
        raise ValueError(f"expected a finite number > 0, found {value!r}")


@as_validated_field
def _scale_range(value: Pair) -> None:  # a range of fractions of the image
    low, high = value
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"expected 0 < low <= high <= 1, found {list(value)}")


@as_validated_field
def _preset_name(value: str | None) -> None:
    if value is not None and value not in PRESETS:
        raise ValueError(f"expected one of {sorted(PRESETS)} or null, found {value!r}")


@strict
@dataclass
class TrainConfig:
    # Continued pretraining: the model both encoders (and, when it has one, the predictor) start from,
    # anything `load_model` takes ("default": the bundled model); null: random weights. Its architecture
    # is the run's: model_preset and model may only repeat it (dseqjepa_train.init_from).
    init_from: str | None = None
    # Encoder (and predictor) sizes: a DSeqJEPAConfig preset, then field overrides.
    model_preset: str | None = _preset_name(default="vit_base_patch16_224")
    model: dict[str, Any] = field(default_factory=dict)
    # Objective. method: dseq (DSeq steps only), ijepa (the baseline), mixed (a DSeq step with
    # probability lambda, lambda linear from lambda_start to lambda_end over training).
    method: Literal["dseq", "ijepa", "mixed"] = "dseq"
    lambda_start: Number = _finite(default=0.0)
    lambda_end: Number = _finite(default=1.0)
    context_mode: Literal["gather", "masked"] = "gather"  # gather: drop non-context tokens; masked: full length + attention mask
    release_compat: bool = False  # the release's lagging contexts and predictor (inverted attention, no mask token)
    # I-JEPA multi-block masks (docs/METHOD.md section 4).
    context_scale: Pair = _scale_range(default=(0.85, 1.0))
    target_scale: Pair = _scale_range(default=(0.15, 0.2))
    target_aspect_ratio: Pair = _finite(default=(0.75, 1.5))
    num_targets: int = _positive(default=4)
    min_keep: int = _positive(default=10)
    # Data.
    crop_scale: Pair = _scale_range(default=(0.3, 1.0))
    image_column: str = "image"  # --data a Hugging Face data set: the column holding the images
    streaming: bool = False  # --data a Hugging Face data set read as a stream (pretraining_data.StreamedPretrainingImages)
    shuffle_buffer: int = _positive(default=1000)  # streaming: the rows a seeded shuffle buffer holds (per decoding worker)
    batch_size: int = _positive(default=256)  # per process
    num_workers: int = _count(default=8)
    # Optimisation (docs/METHOD.md section 6).
    epochs: Number = _length(default=600.0)
    warmup_epochs: Number = _non_negative(default=15.0)
    start_lr: Number = _non_negative(default=2e-4)
    lr: Number = _non_negative(default=8e-4)
    final_lr: Number = _non_negative(default=1e-4)
    weight_decay: Number = _non_negative(default=0.04)
    final_weight_decay: Number = _non_negative(default=0.4)
    ema_start: Number = _finite(default=0.996)
    ema_end: Number = _finite(default=1.0)
    betas: Pair = _finite(default=(0.9, 0.999))
    grad_clip: Number | None = _finite(default=None)
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16 autocast on CUDA; the CPU always runs fp32
    compile: bool = False
    seed: int = 0
    # Output.
    checkpoint_every: int = _positive(default=1000)  # steps; a checkpoint is also written at the end
    keep_checkpoints: int = _count(default=3)  # newest complete checkpoints kept; 0 keeps all
    tensorboard: bool = False
    # Monitoring (dseqjepa_train.monitoring), into metrics.jsonl and TensorBoard: every log_every steps
    # (0: never) the effective rank and normalised std of the target embeddings and the saliency's
    # entropy; every eval_every steps (0: never) a k-NN top-1 on eval_data's labelled train / val splits
    # (at most eval_images each). A collapse: rank below collapse_rank or std x sqrt(D) below
    # collapse_std for collapse_patience logs in a row; a warning, and with stop_on_collapse the end.
    log_every: int = _count(default=10)
    eval_every: int = _count(default=0)
    eval_data: str | None = None
    eval_images: int = _positive(default=1000)
    collapse_rank: Number = _non_negative(default=1.5)
    collapse_std: Number = _non_negative(default=0.05)
    collapse_patience: int = _positive(default=3)
    stop_on_collapse: bool = False

    def validate_release_compat(self) -> None:
        """Part of `@strict`-powered validation, as the class validators below."""
        if self.release_compat and self.context_mode != "masked":
            raise ValueError(
                "release_compat: true needs context_mode: masked (the release's predictor reads the "
                "full-length context encoder output)"
            )

    def validate_monitoring(self) -> None:
        if self.eval_every and self.eval_data is None:
            raise ValueError("eval_every > 0 needs eval_data: a folder with labelled train/ and val/ splits")
        if self.stop_on_collapse and not self.log_every:
            raise ValueError("stop_on_collapse: true needs log_every > 0 (collapse is read from the logged statistics)")

    def validate_model(self) -> None:
        """The encoder's own checks, at load time, and the CLS token that DSeq steps rank regions by
        (with init_from, checked against the model's own config when it is loaded)."""
        if self.init_from is not None:
            return
        use_cls_token = self.model_config().use_cls_token
        if self.method != "ijepa" and not use_cls_token:
            raise ValueError(f"method {self.method!r} ranks regions by the CLS token: set model.use_cls_token: true")

    def model_config(self) -> DSeqJEPAConfig:
        """The encoder's DSeqJEPAConfig (its validation errors are re-raised naming `model`)."""
        try:
            if self.model_preset is None:
                return DSeqJEPAConfig(**self.model)
            return DSeqJEPAConfig.from_preset(self.model_preset, **self.model)
        except (ValueError, StrictDataclassError) as error:
            raise ConfigError(f"model: {_reason(error)}") from None

    def to_dict(self) -> dict:
        """Plain values, the pairs as lists, so that YAML and JSON write plain sequences."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in dataclasses.asdict(self).items()}


def _reason(error: Exception) -> str:
    """A validation error in one line: a class validator's own message, else the error's lines joined."""
    if isinstance(error, StrictDataclassClassValidationError):
        error = error.__cause__
    return " ".join(str(error).split())


def _parse(value: Any, kind: Any) -> Any:
    """`value` as read from YAML (600, "1e-3", [0.3, 1], "0.3,1.0", "none", "yes") converted to the type
    `kind` where it reads as one (600.0, 0.001, (0.3, 1.0), None, True); returned as it is otherwise, for
    the field's type check to refuse."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):
        return _parse_union(value, args)
    if origin in (tuple, list):
        return _parse_sequence(value, origin, args)
    return _parse_scalar(value, kind)


def _parse_union(value: Any, members: tuple) -> Any:
    if type(None) in members and (value is None or isinstance(value, str) and value.lower() in NULLS):
        return None
    for member in members:  # the first member the value reads as, in the order the type names them
        parsed = _parse(value, member)
        try:
            type_validator("", parsed, member)
        except TypeError:
            continue
        return parsed
    return value


def _parse_sequence(value: Any, origin: type, args: tuple) -> Any:  # tuple[float, float], list[float]
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        return value
    item_types = args if origin is tuple else args * len(items)
    if len(item_types) != len(items):
        return value
    return origin(_parse(item, item_type) for item, item_type in zip(items, item_types))


def _parse_scalar(value: Any, kind: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return value
    if kind is bool and isinstance(value, str):
        return BOOLEANS.get(value.lower(), value)
    if kind is int and isinstance(value, float) and not value.is_integer():
        return value  # 8.5 is no int
    if kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            return value
    return value


def _type_name(kind: Any) -> str:
    """How a field's type reads in an error: "int", "float | int | None", "one of ('bf16', 'fp32')"."""
    if get_origin(kind) is Literal:
        return f"one of {get_args(kind)}"
    return kind.__name__ if isinstance(kind, type) else str(kind)


def _unknown(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(str(key).rsplit(".", 1)[-1], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _read_fields(owner: type, names: list[str], values: dict, prefix: str = "") -> dict:
    """`values` as fields of the strict dataclass `owner`: each key one of `names`, each value converted
    to its field's type, then checked by the field's own `@strict` validators (the type check first)."""
    kinds = {item.name: item.type for item in dataclasses.fields(owner)}
    read = {}
    for key, value in values.items():
        if key not in names:
            raise _unknown(f"{prefix}{key}", names)
        read[key] = _parse(value, kinds[key])
        for validator in owner.__validators__[key]:
            try:
                validator(read[key])
            except TypeError:
                raise ConfigError(f"{prefix}{key}: expected {_type_name(kinds[key])}, found {value!r}") from None
            except ValueError as error:
                raise ConfigError(f"{prefix}{key}: {error}") from None
    return read


FIELD_NAMES = [item.name for item in dataclasses.fields(TrainConfig)]
# What only watches the run (nothing trained depends on it): the keys `--resume` lets change.
MONITORING_KEYS = ("log_every", "eval_every", "eval_data", "eval_images", "collapse_rank", "collapse_std",
                   "collapse_patience", "stop_on_collapse")


def config_from_dict(values: dict, source: str = "config") -> TrainConfig:
    """Build a TrainConfig from plain values (read from YAML, or a checkpoint's), rejecting unknown keys."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, found {type(values).__name__}")
    try:
        kwargs = _read_fields(TrainConfig, FIELD_NAMES, values)
        kwargs["model"] = _read_fields(DSeqJEPAConfig, list(DSeqJEPAConfig.own_fields()), kwargs.get("model", {}), "model.")
        return TrainConfig(**kwargs)
    except StrictDataclassClassValidationError as error:
        raise ConfigError(f"{source}: {_reason(error)}") from None
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A YAML file path, or the name of a shipped config ("vit_base", "tiny-cpu")."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if shipped.is_file() and path.parent == Path("."):
        return shipped
    available = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config {str(name_or_path)!r}: no such file and no shipped config of that name; shipped: {available}")


def parse_overrides(overrides: list[str]) -> dict:
    """["lr=1e-3", "model.hidden_size=64"] -> {"lr": "1e-3", "model": {"hidden_size": 64}}.

    Values are read as YAML scalars or lists ("[0.3, 1.0]"); types are fixed by `config_from_dict`.
    """
    values: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "model"):
            raise ConfigError(f"--set {item!r}: {_unknown(key, FIELD_NAMES)}")
        if len(parts) == 2:
            values.setdefault("model", {})[parts[1]] = value
        else:
            values[key] = value
    return values


def load_config(name_or_path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (a file or a shipped name) and apply `key=value` overrides."""
    path = resolve_config_path(name_or_path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, found {type(values).__name__}")
    extra = parse_overrides(list(overrides))
    for origin, model in ((path, values.get("model")), ("--set", extra.get("model"))):
        if not isinstance(model or {}, dict):
            raise ConfigError(f"{origin}: model: expected a mapping of DSeqJEPAConfig fields, found {model!r}")
    model = {**(values.get("model") or {}), **extra.pop("model", {})}
    merged = {**values, **extra, "model": model}
    source = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)
    return config_from_dict(merged, source=source)


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    """Write the effective config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))

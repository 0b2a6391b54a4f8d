"""The pretraining config: one flat dataclass, YAML files, `--set key=value` overrides.

Every key is checked by name and coerced to its declared type when a config is built, so a
typo fails at start-up (naming the key) instead of being silently ignored. Encoder fields live
under `model` (a `DSeqJEPAConfig` preset plus field overrides), e.g. `--set model.hidden_size=64`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub.errors import StrictDataclassError

from dseqjepa_hub.application.atomic import atomic_write_text
from dseqjepa_hub.configuration_dseqjepa import PRESETS, DSeqJEPAConfig
from dseqjepa_hub.errors import DSeqJEPAError

CONFIG_DIR = Path(__file__).parent / "configs"
METHODS = ("dseq", "ijepa", "mixed")
CONTEXT_MODES = ("gather", "masked")
PRECISIONS = ("bf16", "fp32")


class ConfigError(DSeqJEPAError, ValueError):
    """A config file, key or value that cannot be used; the message names it."""


@dataclass
class TrainConfig:
    # Encoder (and predictor) sizes: a DSeqJEPAConfig preset, then field overrides.
    model_preset: str | None = "vit_base_patch16_224"
    model: dict = field(default_factory=dict)
    # Objective. method: dseq (DSeq steps only), ijepa (the baseline), mixed (a DSeq step with
    # probability lambda, lambda linear from lambda_start to lambda_end over training).
    method: str = "dseq"
    lambda_start: float = 0.0
    lambda_end: float = 1.0
    context_mode: str = "gather"  # gather: drop non-context tokens; masked: full length + attention mask
    release_compat: bool = False  # the release's lagging contexts and predictor (inverted attention, no mask token)
    # I-JEPA multi-block masks (docs/METHOD.md section 4).
    context_scale: tuple[float, float] = (0.85, 1.0)
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect_ratio: tuple[float, float] = (0.75, 1.5)
    num_targets: int = 4
    min_keep: int = 10
    # Data.
    crop_scale: tuple[float, float] = (0.3, 1.0)
    batch_size: int = 256  # per process
    num_workers: int = 8
    # Optimisation (docs/METHOD.md section 6).
    epochs: float = 600.0
    warmup_epochs: float = 15.0
    start_lr: float = 2e-4
    lr: float = 8e-4
    final_lr: float = 1e-4
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    ema_start: float = 0.996
    ema_end: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None
    precision: str = "bf16"  # bf16 autocast on CUDA; the CPU always runs fp32
    compile: bool = False
    seed: int = 0
    # Output.
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at the end
    keep_checkpoints: int = 3  # newest complete checkpoints kept; 0 keeps all
    tensorboard: bool = False

    def __post_init__(self) -> None:
        self._check_values()

    def _check_values(self) -> None:
        for item in dataclasses.fields(self):  # inf and NaN reach no schedule (lr=nan was refused, lr=inf was not)
            value = getattr(self, item.name)
            numbers = value if isinstance(value, (tuple, list)) else (value,)
            if any(isinstance(x, float) and not math.isfinite(x) for x in numbers):
                raise ConfigError(f"{item.name}: expected finite numbers, found {value!r}")
        for name in ("start_lr", "lr", "final_lr", "weight_decay", "final_weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: expected a number >= 0, found {getattr(self, name)!r}")
        choices = {"method": METHODS, "context_mode": CONTEXT_MODES, "precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: expected one of {allowed}, found {getattr(self, name)!r}")
        if self.release_compat and self.context_mode != "masked":
            raise ConfigError(
                "release_compat: true needs context_mode: masked (the release's predictor reads the "
                "full-length context encoder output)"
            )
        if self.model_preset is not None and self.model_preset not in PRESETS:
            raise ConfigError(f"model_preset: expected one of {sorted(PRESETS)} or null, found {self.model_preset!r}")
        for name in ("context_scale", "target_scale", "crop_scale"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 1.0:
                raise ConfigError(f"{name}: expected 0 < low <= high <= 1, found {[low, high]}")
        for name in ("batch_size", "num_targets", "min_keep", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: expected a positive int, found {getattr(self, name)}")
        if self.epochs <= 0 or self.warmup_epochs < 0:
            raise ConfigError(f"epochs must be > 0 and warmup_epochs >= 0, found {self.epochs} and {self.warmup_epochs}")
        model_config = self.model_config()  # the encoder's own checks, at load time
        if self.method != "ijepa" and not model_config.use_cls_token:
            raise ConfigError(f"method {self.method!r} ranks regions by the CLS token: set model.use_cls_token: true")

    def model_config(self) -> DSeqJEPAConfig:
        """The encoder's DSeqJEPAConfig (its validation errors are re-raised naming `model`)."""
        try:
            if self.model_preset is None:
                return DSeqJEPAConfig(**self.model)
            return DSeqJEPAConfig.from_preset(self.model_preset, **self.model)
        except (ValueError, StrictDataclassError) as error:
            raise ConfigError(f"model: {error}") from None

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so that YAML and JSON write plain sequences."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
_MODEL_TYPES = {  # DSeqJEPAConfig's own fields, type as text
    f.name: f.type.__name__ if isinstance(f.type, type) else str(f.type)
    for f in dataclasses.fields(DSeqJEPAConfig)
    if f.name in DSeqJEPAConfig.own_fields()
}


def _coerce(key: str, value: Any, annotation: str) -> Any:
    """`value` as the type written in `annotation` (e.g. "float | None", "tuple[float, float]")."""
    expected = f"expected {annotation}, found {value!r}"
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
        if "None" in annotation:
            return None
        raise ConfigError(f"{key}: {expected}")
    base = annotation.replace(" | None", "")
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
                return value.lower() in ("true", "yes", "on")
            raise ValueError
        if base == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
        if base.startswith("tuple[float"):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or len(items) != 2:
                raise ValueError
            return tuple(_coerce(key, item, "float") for item in items)
        if base.startswith("list[float]"):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise ValueError
            return [_coerce(key, item, "float") for item in items]
        if base == "dict":
            if not isinstance(value, dict):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {expected}") from None
    raise ConfigError(f"{key}: unsupported field type {annotation}")


def _unknown(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def config_from_dict(values: dict, source: str = "config") -> TrainConfig:
    """Build a TrainConfig from plain values, rejecting unknown keys and coercing types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, found {type(values).__name__}")
    kwargs = {}
    for key, value in values.items():
        if key not in _FIELD_TYPES:
            raise ConfigError(f"{source}: {_unknown(key, list(_FIELD_TYPES))}")
        kwargs[key] = _coerce(key, value, _FIELD_TYPES[key])
    model = {}
    for key, value in kwargs.get("model", {}).items():
        if key not in _MODEL_TYPES:
            raise ConfigError(f"{source}: {_unknown(f'model.{key}', list(_MODEL_TYPES))}")
        model[key] = _coerce(f"model.{key}", value, _MODEL_TYPES[key])
    kwargs["model"] = model
    try:
        return TrainConfig(**kwargs)
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
            raise ConfigError(f"--set {item!r}: {_unknown(key, list(_FIELD_TYPES))}")
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
    if not isinstance(values.get("model") or {}, dict):
        raise ConfigError(f"{path}: model: expected a mapping of DSeqJEPAConfig fields, found {values['model']!r}")
    extra = parse_overrides(list(overrides))
    model = {**(values.get("model") or {}), **extra.pop("model", {})}
    merged = {**values, **extra, "model": model}
    source = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)
    return config_from_dict(merged, source=source)


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    """Write the effective config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))

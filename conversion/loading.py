"""Safe reading of checkpoint files, and a description of what a state dict looks like.

Every torch pickle goes through `torch.load(weights_only=True)`: a file that refers to code
(a class, a function such as `os.system`) is refused with the name of what it refers to, and
nothing in it runs. Truncated and unreadable files give a `ConversionError` naming the file.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from dseqjepa_hub.errors import DSeqJEPAError


class ConversionError(DSeqJEPAError):
    """A checkpoint that cannot be converted, with the reason in words (file, tensor names, shapes)."""


def load_tensor_file(path: str | Path) -> object:
    """A `.safetensors` file -> dict of tensors; anything else -> whatever `torch.load(weights_only=True)` gives."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ConversionError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        try:
            return load_file(path, device="cpu")
        except SafetensorError as error:
            raise ConversionError(f"{path}: not a readable safetensors file (truncated or corrupt: {error})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found or "Weights only load failed" in str(error):
            what = found.group(1) if found else "a Python object"
            raise ConversionError(
                f"{path}: refused: the file refers to code ({what}), which a weights file must not contain. "
                "Only tensors and plain containers are loaded (torch.load weights_only=True); nothing in the "
                "file was run. If you made the file yourself, re-save just the state dicts "
                "(torch.save({'target_encoder': ...}, ...)) in a trusted environment."
            ) from None
        raise ConversionError(f"{path}: not a readable checkpoint (truncated or corrupt: {error})") from None
    except Exception as error:  # noqa: BLE001 -- the unpickler on garbage raises anything (IndexError, KeyError, ...)
        raise ConversionError(f"{path}: not a readable checkpoint (truncated or corrupt: {type(error).__name__}: "
                              f"{error})") from error


def load_hf_folder_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a transformers model folder: model.safetensors, its sharded index, or pytorch_model.bin."""
    folder = Path(folder)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return as_state_dict(load_tensor_file(folder / name), folder / name)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = folder / index_name
        if index_path.is_file():
            try:
                shards = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as error:
                raise ConversionError(f"{index_path}: not a valid shard index ({error})") from error
            outside = [shard for shard in shards if not isinstance(shard, str) or Path(shard).name != shard
                       or shard in ("", ".", "..")]
            if outside:  # "../../etc/passwd": shards are files of this folder, nothing else is opened
                raise ConversionError(f"{index_path}: names shard files outside its folder: {outside[:3]}")
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(as_state_dict(load_tensor_file(folder / shard), folder / shard))
            return state
    raise ConversionError(
        f"{folder}: no weights found (expected model.safetensors, pytorch_model.bin or a sharded index)"
    )


def as_state_dict(obj: object, source: str | Path) -> dict[str, torch.Tensor]:
    """Check that `obj` is a flat name -> tensor mapping."""
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{source}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    not_tensors = [key for key, value in obj.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ConversionError(
            f"{source}: expected a state dict (name -> tensor); these entries are not tensors: {not_tensors[:8]}"
            f" (a training dict? its keys are {sorted(map(str, obj))[:12]})"
        )
    return obj


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove `prefix` (e.g. DDP's "module.") from every key that has it."""
    return {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in state.items()}


def describe_checkpoint(obj: object) -> str:
    """What a loaded checkpoint looks like, in words: used to explain a wrong --format."""
    if not isinstance(obj, dict):
        return f"a {type(obj).__name__}, not a dict"
    if any(key in obj for key in ("encoder", "target_encoder")):
        encoder = obj.get("target_encoder", obj.get("encoder"))
        if isinstance(encoder, dict):
            keys = {str(key).removeprefix("module.") for key in encoder}
            kind = "DSeq-JEPA release (dseq-release)" if "cls_token" in keys else "I-JEPA release (ijepa-release)"
            return f"a {kind} training dict with keys {sorted(map(str, obj))}"
    keys = [str(key).removeprefix("module.") for key in obj]
    if any(key.startswith(("embeddings.patch_embeddings", "ijepa.embeddings")) for key in keys):
        return "a transformers IJepaModel state dict (hf-ijepa)"
    if "blocks.0.attn.qkv.weight" in keys and "pos_embed" in keys:
        pos_embed = obj.get("pos_embed", obj.get("module.pos_embed"))
        if "cls_token" in keys and isinstance(pos_embed, torch.Tensor) and is_square(pos_embed.shape[1] - 1):
            return "a timm VisionTransformer state dict with the CLS position in pos_embed (timm)"
        if any(key.startswith(("head.", "fc_norm.")) for key in keys):
            return "a timm VisionTransformer state dict (timm)"
        kind = "dseq-release" if "cls_token" in keys else "ijepa-release"
        return f"a bare release encoder state dict ({kind}, or timm)"
    if any(key.startswith("predictor_") for key in keys):
        return "a predictor state dict (no encoder)"
    return f"an unrecognised dict with keys {sorted(keys)[:12]}"


def is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n

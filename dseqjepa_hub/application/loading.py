"""The one model loader: what every command, the evaluation, the exports, the Hub staging and
torch.hub (hubconf.py) load, always with this package's code (never remote code).

A model is named by a folder, a training run or one of its checkpoints, a Hub repo id (its files
from the HF cache; fetched unless offline), a size preset (random weights), or `default` or nothing
(the bundled model, never looked up on the Hub; a local folder named `default` is `./default`).
Without a network (the Hub does not answer within HUB_PROBE_TIMEOUT seconds, one try) or with
HF_HUB_OFFLINE=1, a repo id comes from the HF cache with no further network call, or is refused at
once in one line naming the id, the cache folder and HF_HUB_OFFLINE. Every named folder is checked once, before anything is allocated: config.json (a readable,
valid DSeq-JEPA config naming a known class in `architectures`), the image processor
(preprocessor_config.json, or one made from the config where the folder has none: the channels and
the patch size must fit the config) and the weights (safetensors headers, or a weights-only
unpickling of pytorch_model.bin onto the meta device: every tensor the class needs, none it does
not account for, each of the shape config.json implies). Whatever is wrong becomes one
`ModelLoadError` naming the file and the problem, the same in every command.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import pickle
import re
import threading
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from huggingface_hub import constants, get_session, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError, StrictDataclassError
from safetensors import SafetensorError, safe_open

from ..configuration_dseqjepa import PRESETS, DSeqJEPAConfig, DSeqJEPAPredictorConfig, check_tokens
from ..errors import ModelLoadError, one_line
from ..image_processing_dseqjepa import DSeqJEPAImageProcessor
from ..modeling_dseqjepa import (
    DSeqJEPABackbone,
    DSeqJEPAForImageClassification,
    DSeqJEPAModel,
    DSeqJEPAPredictor,
    DSeqJEPAPreTrainedModel,
)

logger = logging.getLogger(__name__)
CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"  # a sharded model: tensor name -> shard file
PICKLE_FILE = "pytorch_model.bin"  # only ever read with torch.load(weights_only=True)
HUB_FILES = [CONFIG_FILE, PROCESSOR_FILE, SAFETENSORS_FILE, SAFETENSORS_INDEX, "model-*-of-*.safetensors"]
DEFAULT_MODEL = "default"  # names the bundled model (= dseqjepa_options.DEFAULT_MODEL; hubconf.py imports no options)
HUB_PROBE_TIMEOUT = 2.0  # seconds: one request, no retries, before a repo id is taken from the HF cache alone
MODEL_CLASSES = {cls.__name__: cls for cls in (DSeqJEPAModel, DSeqJEPAForImageClassification, DSeqJEPABackbone)}

# The layout of a training run (written by dseqjepa_train.checkpoint, read here and by every command):
#   RUN/checkpoints/step_000123/{target_encoder,context_encoder,predictor}/ (save_pretrained folders),
#   trainer_state.pt, config.yaml, and the COMPLETE_MARKER file written last.
RUN_CHECKPOINTS_DIR = "checkpoints"
COMPLETE_MARKER = "complete"
TARGET_ENCODER_DIR = "target_encoder"  # what every command loads from a run or a checkpoint
CONTEXT_ENCODER_DIR = "context_encoder"
PREDICTOR_DIR = "predictor"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_BLOCK = re.compile(r"^(?:dseqjepa\.)?(?:predictor_)?blocks\.(\d+)\.")  # a transformer block's tensors: an encoder's (any class's folder) or a predictor's


class LoadedModel(NamedTuple):
    model: DSeqJEPAPreTrainedModel  # the encoder (or, with as_saved, the class saved), in eval mode on the device
    processor: DSeqJEPAImageProcessor
    description: str  # what was loaded, for outputs that record their model


class ModelFolder(NamedTuple):
    """A folder whose config, image processor and weights were checked against each other."""

    path: Path
    config: DSeqJEPAConfig
    model_class: type[DSeqJEPAPreTrainedModel]  # the class named in config.json `architectures`
    processor: DSeqJEPAImageProcessor


def default_model_path() -> Path:
    """The bundled default model: a small DSeq-JEPA ViT pretrained here on the data kit's scenes
    (its README.md is the model card). Commands and the evaluation use it when no model is given."""
    return Path(__file__).resolve().parents[1] / "default_model"


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: no CUDA device is available here")


# ----------------------------------------------------------------------------- where a model is


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def _step(folder: Path) -> int | None:
    match = _STEP_DIR.match(folder.name)
    return int(match.group(1)) if match else None


def complete_checkpoints(run: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of each complete checkpoint of a training run, oldest first."""
    root = Path(run) / RUN_CHECKPOINTS_DIR
    found = [(step, path) for path in (root.iterdir() if root.is_dir() else ())
             if (step := _step(path)) is not None and (path / COMPLETE_MARKER).is_file()]
    return sorted(found)


def checkpoint_encoder(folder: Path) -> tuple[Path, str] | None:
    """A training run (it holds checkpoints/) -> the target encoder of its newest complete checkpoint;
    a checkpoint (it holds the complete marker or target_encoder/) -> its target encoder; with
    "FOLDER (step N)" to describe it. None for any other folder (one holding config.json is a model folder)."""
    checkpoints = folder / RUN_CHECKPOINTS_DIR
    if (folder / CONFIG_FILE).is_file():
        return None
    if checkpoints.is_dir():
        complete = complete_checkpoints(folder)
        if not complete:
            raise ModelLoadError(f"{folder}: a training run without a complete checkpoint (no step_* folder in "
                                 f"{checkpoints} holds the '{COMPLETE_MARKER}' marker)")
        step, checkpoint = complete[-1]
    elif (folder / COMPLETE_MARKER).exists() or (folder / TARGET_ENCODER_DIR).is_dir():
        if not (folder / COMPLETE_MARKER).is_file():
            raise ModelLoadError(f"{folder}: an incomplete training checkpoint (no '{COMPLETE_MARKER}' marker: its "
                                 "writing was interrupted); give the run folder to load its newest complete checkpoint")
        step, checkpoint = _step(folder), folder
    else:
        return None
    encoder = checkpoint / TARGET_ENCODER_DIR
    if not encoder.is_dir():
        raise ModelLoadError(f"{checkpoint}: no {TARGET_ENCODER_DIR}/ model folder (a raw checkpoint of an earlier "
                             f"version? `dseqjepa convert {checkpoint} --format training --out DIR` makes it one)")
    return encoder, str(folder) if step is None else f"{folder} (step {step})"


def is_default_model(model) -> bool:
    """`model` names the bundled model: None or `default`."""
    return model is None or (isinstance(model, (str, os.PathLike)) and os.fspath(model) == DEFAULT_MODEL)


def hub_answers(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """The Hub (HF_ENDPOINT) answers one request within `timeout` seconds (name resolution included): the
    network is there. huggingface_hub itself retries a dead connection for about half a minute."""
    answered = []

    def probe():
        try:
            answered.append(get_session().head(constants.ENDPOINT, timeout=timeout).status_code < 500)
        except Exception:  # noqa: BLE001 - any failure to get an answer means: no network
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # a hung name lookup cannot hold the caller
    thread.start()
    thread.join(timeout)
    return bool(answered and answered[0])


def hub_snapshot(repo_id: str, hub_files: list[str]) -> Path:
    """The folder of `repo_id`'s `hub_files` in the HF cache, fetched where the Hub answers; offline (or
    HF_HUB_OFFLINE=1) the cached copy with no network call, or one line naming the id and the cache."""
    offline = constants.HF_HUB_OFFLINE
    if offline or not hub_answers():
        try:
            return Path(snapshot_download(repo_id, allow_patterns=hub_files, local_files_only=True))
        except (OSError, ValueError):  # not in the cache, or not a valid repo id
            why = "HF_HUB_OFFLINE=1 is set" if offline else \
                f"the Hub ({constants.ENDPOINT}) does not answer, and HF_HUB_OFFLINE is not set"
            raise ModelLoadError(f"cannot load the model {repo_id!r}: not in the HF cache ({constants.HF_HUB_CACHE}) "
                                 f"and {why}; download it where there is a network (`hf download {repo_id}`) or "
                                 "name a local folder") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=hub_files))
    except RepositoryNotFoundError:
        raise ModelLoadError(f"cannot load the model {repo_id!r}: no such repository on {constants.ENDPOINT} (or a "
                             "private one: set HF_TOKEN), and no such local folder") from None
    except (OSError, ValueError) as error:  # not a valid repo id, a file missing, the network lost meanwhile
        raise ModelLoadError(f"cannot load the model {repo_id!r}: {one_line(error)}") from None


def locate_model(model: str | os.PathLike | None, hub_files: list[str] = HUB_FILES) -> tuple[Path, str]:
    """The local folder holding `model` (a folder, a training run or checkpoint, a Hub repo id, or
    None or `default` for the bundled model) and how outputs name it. A path that is plainly local
    (absolute, or starting with ".", "~" or holding a backslash) but missing is refused at once, not
    looked up on the Hub; a repo id is its snapshot in the HF cache, holding `hub_files` (default: the
    config, the image processor and the safetensors weights)."""
    if is_default_model(model):
        return default_model_path(), str(default_model_path())
    text = str(model)
    path = Path(text).expanduser()
    if path.is_dir():
        return checkpoint_encoder(path) or (path, str(path))
    if path.exists():
        raise ModelLoadError(f"{text}: a file, not a model folder")
    if path.is_absolute() or text.startswith((".", "~")) or "\\" in text or text.count("/") > 1:
        raise ModelLoadError(f"{text}: no such model folder")
    if "/" not in text and difflib.get_close_matches(text, [DEFAULT_MODEL], cutoff=0.7):
        raise ModelLoadError(f"{text}: no such model folder; did you mean {DEFAULT_MODEL!r}, the bundled model?")
    return hub_snapshot(text, hub_files), text


# ----------------------------------------------------------------------------- what a folder holds


def read_config(folder: Path, config_class: type[DSeqJEPAConfig | DSeqJEPAPredictorConfig] = DSeqJEPAConfig):
    """config.json of a model (or predictor) folder, read once and validated (geometry, finite settings)
    without loading anything else."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ModelLoadError(f"{folder}: not a model folder (no {CONFIG_FILE})")
    try:
        config_dict = json.loads(path.read_text())
        model_type = config_dict.get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ModelLoadError(f"{path}: not a readable JSON object ({one_line(error)})") from error
    if model_type != config_class.model_type:
        hint = " (other checkpoints become model folders with `dseqjepa convert`)" if config_class is DSeqJEPAConfig else ""
        raise ModelLoadError(f"{path}: model_type {model_type!r}, expected {config_class.model_type!r}{hint}")
    try:
        return config_class.from_dict(config_dict)
    except ModelLoadError as error:
        raise ModelLoadError(f"{path}: {one_line(error.__cause__ or error)}") from error


def weight_shapes(folder: Path) -> tuple[Path, dict[str, tuple[int, ...]]]:
    """The file naming the folder's weights and each tensor's shape, from the safetensors headers
    (one file or the shards of an index) or pytorch_model.bin unpickled weights-only onto the meta device."""
    if (folder / SAFETENSORS_FILE).is_file():
        named, shards = folder / SAFETENSORS_FILE, [folder / SAFETENSORS_FILE]
    elif (folder / SAFETENSORS_INDEX).is_file():
        named = folder / SAFETENSORS_INDEX
        try:
            names = set(json.loads(named.read_text())["weight_map"].values())
            outside = sorted(name for name in names if Path(name).name != name or name in ("", ".", ".."))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ModelLoadError(f"{named}: not a readable safetensors index ({one_line(error)})") from error
        if outside:  # "../../etc/passwd": shards are files of this folder, nothing else is opened
            raise ModelLoadError(f"{named}: names shard files outside its folder: {_listed(outside)}")
        shards = sorted(folder / name for name in names)
    elif (folder / PICKLE_FILE).is_file():
        named = folder / PICKLE_FILE
        try:
            state = torch.load(named, map_location="meta", weights_only=True, mmap=True)
        except pickle.UnpicklingError as error:
            raise ModelLoadError(f"{named}: holds objects other than tensors and was refused (only plain tensors are "
                                 "ever unpickled); convert it to safetensors from a trusted copy") from error
        except (OSError, RuntimeError, ValueError, EOFError) as error:
            raise ModelLoadError(f"{named}: not a readable torch file ({one_line(error)})") from error
        if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
            raise ModelLoadError(f"{named}: expected a dict of tensors (a state dict)")
        return named, {name: tuple(tensor.shape) for name, tensor in state.items()}
    else:
        raise ModelLoadError(f"{folder}: no weights ({SAFETENSORS_FILE}, {SAFETENSORS_INDEX} or {PICKLE_FILE})")
    shapes = {}
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as handle:
                shapes.update({name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()})
        except (SafetensorError, OSError) as error:
            raise ModelLoadError(f"{shard}: not a readable safetensors file ({one_line(error)})") from error
    return named, shapes


def _listed(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def check_weights(folder: Path, config: DSeqJEPAConfig, model_class: type[DSeqJEPAPreTrainedModel]) -> None:
    """Every tensor that `model_class` built from `config` needs is in the folder's weights, of the
    shape config.json implies, and the weights hold no tensor the class does not account for."""
    named, shapes = weight_shapes(folder)
    if not shapes:
        raise ModelLoadError(f"{named}: holds no tensors")
    blocks = {int(match.group(1)) for name in shapes if (match := _BLOCK.match(name))}
    if len(blocks) != config.num_hidden_layers:  # before building anything of config.json's depth
        raise ModelLoadError(f"{named}: holds {len(blocks)} blocks of weights, config.json says num_hidden_layers "
                             f"{config.num_hidden_layers}")
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        expected = {name: tuple(tensor.shape) for name, tensor in model_class(config).state_dict().items()}
    mismatched = [f"{name} is {shapes[name]}, config.json implies {shape}"
                  for name, shape in expected.items() if name in shapes and shapes[name] != shape]
    if mismatched:
        raise ModelLoadError(f"{named}: the weights do not match config.json: {_listed(mismatched)}")
    if missing := expected.keys() - shapes.keys():
        raise ModelLoadError(f"{named}: lacks tensors that a {model_class.__name__} needs: {_listed(sorted(missing))}")
    if unexpected := shapes.keys() - expected.keys():
        raise ModelLoadError(f"{named}: holds tensors unaccounted for by {model_class.__name__}: {_listed(sorted(unexpected))}")


def read_processor(folder: Path, config: DSeqJEPAConfig) -> DSeqJEPAImageProcessor:
    """The folder's image processor (one made from the config where it has no preprocessor_config.json),
    checked to give inputs the config's model takes: its channels, sides that are multiples of the patch."""
    path = folder / PROCESSOR_FILE
    if not path.is_file():
        return DSeqJEPAImageProcessor.from_model_config(config)
    try:
        processor = DSeqJEPAImageProcessor.from_pretrained(folder)
    except ModelLoadError as error:
        raise ModelLoadError(f"{path}: not a readable image processor ({one_line(error.__cause__ or error)})") from error
    try:
        processor.check_fits(config)
    except ValueError as error:
        raise ModelLoadError(f"{path}: {error}") from error
    return processor


def check_model_folder(folder: Path) -> ModelFolder:
    """The one validation of a model folder: config, image processor and weights against each other."""
    config = read_config(folder)
    name = (config.architectures or [DSeqJEPAModel.__name__])[0]  # a list of names: checked by the config
    if name not in MODEL_CLASSES:
        raise ModelLoadError(f"{folder / CONFIG_FILE}: architectures {config.architectures}: expected one of "
                             f"{sorted(MODEL_CLASSES)}")
    processor = read_processor(folder, config)
    check_weights(folder, config, MODEL_CLASSES[name])
    return ModelFolder(folder, config, MODEL_CLASSES[name], processor)


# ----------------------------------------------------------------------------- loading


def preset_encoder(preset: str, **overrides) -> DSeqJEPAModel:
    """A randomly initialised encoder of a size preset (config fields overridable), in eval mode."""
    try:
        config = DSeqJEPAConfig.from_preset(preset, **overrides)
    except (ValueError, TypeError, StrictDataclassError) as error:
        raise ModelLoadError(f"{preset}: {one_line(error)}") from error
    encoder = DSeqJEPAModel(config)
    encoder.name_or_path = f"{preset} (random weights)"
    return encoder.eval()


def is_preset(model) -> bool:
    """`model` names a size preset (random weights), not a folder of that name."""
    return isinstance(model, str) and model in PRESETS and not Path(model).exists()


def load_model(
    model: str | os.PathLike | None = None,
    device: str = "cpu",
    image_size: int | None = None,
    *,
    as_saved: bool = False,
    quantize: str | None = None,
    **from_pretrained_options,
) -> LoadedModel:
    """`model`: a local folder, a training run or checkpoint, a Hub repo id (from the cache when
    offline), a size preset (random weights, with a warning); None or `default`: the bundled model.

    image_size: run at this square input size instead of the model's (the encoder regenerates its
    positions for any grid; a multiple of the patch size): the processor resizes to it.
    as_saved: the class the folder was saved as (a classifier, a backbone), not only its encoder.
    quantize: "int8" (`quantize_model`), on the CPU.
    from_pretrained_options: passed on (e.g. attn_implementation="eager").
    """
    check_device(device)
    if is_preset(model):
        if as_saved:
            raise ModelLoadError(f"{model}: a size preset, not a model folder")
        logger.warning(
            "%s is a size preset, not trained weights: the model is RANDOMLY INITIALISED and its "
            "embeddings and regions mean nothing (give a model folder or repo id for real ones)", model,
        )
        encoder = preset_encoder(model)
        loaded = LoadedModel(encoder, DSeqJEPAImageProcessor.from_model_config(encoder.config), encoder.name_or_path)
    else:
        path, description = locate_model(model)
        folder = check_model_folder(path)
        if image_size is not None:  # before the weights load
            check_input_size(image_size, folder.config.patch_size)
        try:
            saved = folder.model_class.from_pretrained(path, config=folder.config, **from_pretrained_options)
        except ModelLoadError as error:  # damaged past the headers
            raise ModelLoadError(f"cannot load the model {description!r}: {one_line(error.__cause__ or error)}") from error
        loaded = LoadedModel(saved if as_saved else saved.base_model, folder.processor, description)
        loaded.model.name_or_path = description
    if image_size is not None:
        resize_processor(loaded.processor, image_size, loaded.model.config.patch_size)
    loaded.model.to(device).eval()
    size, parameters = loaded.processor.size, loaded.model.num_parameters()  # counted before quantization hides them
    if quantize is not None:
        quantize_model(loaded.model, quantize, device)
    logger.info("model %s: %s, %s parameters, %s%s on %s; inputs %dx%d px, patch %d", loaded.description,
                type(loaded.model).__name__, f"{parameters:,}", str(loaded.model.dtype).removeprefix("torch."),
                f", {quantize} quantized" if quantize else "", device, size["width"], size["height"],
                loaded.model.config.patch_size)
    return loaded


def quantize_model(model: DSeqJEPAPreTrainedModel, quantize: str, device: str = "cpu") -> DSeqJEPAPreTrainedModel:
    """Quantize `model` in place for inference. "int8": torch's dynamic quantization of every nn.Linear
    (int8 weights per tensor, activations quantized per batch as it runs; the patch embedding, norms and
    tokens stay float32). Chosen by measurement (benchmarks/RESULTS.md); CPU only, refused elsewhere."""
    from dseqjepa_options import QUANTIZATIONS  # here: hubconf.py, from a bare checkout, imports no options

    if quantize not in QUANTIZATIONS:
        raise ModelLoadError(f"--quantize {quantize}: expected one of {QUANTIZATIONS}")
    if torch.device(device).type != "cpu":
        raise ModelLoadError(f"--quantize int8 runs on the CPU only (dynamic int8 kernels); found --device {device}")
    if not {"x86", "fbgemm", "qnnpack"} & set(torch.backends.quantized.supported_engines):
        raise ModelLoadError(f"--quantize int8: this torch build has no quantized CPU engine "
                             f"({torch.backends.quantized.supported_engines})")
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on every call
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def load_predictor(model: str | os.PathLike | None, encoder_config: DSeqJEPAConfig,
                   device: str = "cpu") -> tuple[DSeqJEPAPredictor, str] | None:
    """The pretraining predictor that travels with `model` (named as in `load_model`): the predictor/
    beside a training run's or checkpoint's target encoder, or a model folder's predictor/ subfolder;
    None where there is none. Checked as an encoder folder is (config, weights' shapes) and against
    `encoder_config`, the encoder it reads (width and patch grid). Returns (predictor, its folder)."""
    if is_preset(model):
        return None
    path, _ = locate_model(model, hub_files=[f"{PREDICTOR_DIR}/*"])
    folder = path.parent / PREDICTOR_DIR if path.name == TARGET_ENCODER_DIR else path / PREDICTOR_DIR
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        return None
    config = read_config(folder, DSeqJEPAPredictorConfig)
    for name, expected in (("encoder_hidden_size", encoder_config.hidden_size), ("grid_size", encoder_config.grid_size)):
        if getattr(config, name) != expected:
            raise ModelLoadError(f"{config_path}: {name} {getattr(config, name)}, but the encoder it goes with has "
                                 f"{expected}")
    check_weights(folder, config, DSeqJEPAPredictor)
    try:
        predictor = DSeqJEPAPredictor.from_pretrained(folder, config=config)
    except (OSError, ValueError, SafetensorError, pickle.UnpicklingError) as error:
        raise ModelLoadError(f"cannot load the predictor {folder}: {one_line(error)}") from None
    return predictor.to(device), str(folder)


def resize_processor(processor: DSeqJEPAImageProcessor, image_size: int, patch_size: int) -> None:
    """Make `processor` give square `image_size` inputs (a centre crop keeps its crop ratio)."""
    check_input_size(image_size, patch_size)
    if processor.do_center_crop:
        processor.size = {"shortest_edge": round(image_size * processor.size.get("shortest_edge", image_size)
                                                 / processor.crop_size["height"])}
    else:
        processor.size = {"height": image_size, "width": image_size}
    processor.crop_size = {"height": image_size, "width": image_size}


def check_input_size(image_size: int, patch_size: int, option: str = "--size") -> None:
    """A square input side the model can run: a multiple of the patch, at least 2 patches, at most
    MAX_TOKENS patches (refused with the attention cost it would have taken)."""
    if image_size < 2 * patch_size or image_size % patch_size:
        raise ModelLoadError(f"{option} {image_size}: expected a multiple of the patch size {patch_size}, at least "
                             f"{2 * patch_size} (2 patches a side)")
    try:
        check_tokens(image_size, patch_size, option)
    except ValueError as error:
        raise ModelLoadError(str(error)) from error


def load_encoder(model: str | os.PathLike | None = None, device: str = "cpu", **from_pretrained_options) -> DSeqJEPAModel:
    """The encoder alone: `model` as in `load_model`."""
    return load_model(model, device, **from_pretrained_options).model


def model_config(model: str | os.PathLike) -> DSeqJEPAConfig:
    """The configuration of a preset, folder, run, checkpoint or repo id (only its config.json fetched)."""
    if is_preset(model):
        return DSeqJEPAConfig.from_preset(model)
    return read_config(locate_model(model, hub_files=[CONFIG_FILE])[0])


def torch_hub_entry_point(preset: str):
    """hubconf.py's `dseqjepa_<preset>(weights=None, **overrides)`: a randomly initialised encoder of
    that size, or `weights` (anything `load_model` takes) checked to be of that size."""

    def entry(weights: str | os.PathLike | None = None, **overrides) -> DSeqJEPAModel:
        if weights is None:
            return preset_encoder(preset, **overrides)
        if overrides:
            raise ModelLoadError(f"weights={weights!r} come with their own configuration; drop {sorted(overrides)}")
        model = load_encoder(weights)
        expected = DSeqJEPAConfig.from_preset(preset)
        fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size")
        wrong = [f"{name} {getattr(model.config, name)} (preset {getattr(expected, name)})" for name in fields
                 if getattr(model.config, name) != getattr(expected, name)]
        if wrong:
            raise ModelLoadError(f"weights={weights!r} are not a {preset} model: {', '.join(wrong)}")
        return model

    entry.__name__ = f"dseqjepa_{preset}"
    entry.__doc__ = (
        f"DSeq-JEPA {preset} encoder: random initialisation (no weights are published), or `weights`, a model "
        "folder, training run or Hub repo id of this size; other keyword arguments override DSeqJEPAConfig fields."
    )
    return entry

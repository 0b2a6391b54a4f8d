"""Training checkpoints: model folders, written atomically, found by `--resume`, loaded without unpickling code.

Layout (one folder per checkpoint; the names are dseqjepa_hub.application.loading's, which every
command reads):
    OUTPUT/checkpoints/step_000123/
        target_encoder/   context_encoder/   (DSeqJEPAModel.save_pretrained with the image processor)
        predictor/        (DSeqJEPAPredictor.save_pretrained)
        trainer_state.pt  (optimizer, step, schedules, sampler, RNG states; torch.load(weights_only=True))
        config.yaml       (the effective training config)
        complete          (written last)
A checkpoint is written with `atomic_directory`: into a hidden temporary folder beside it, renamed
into place once complete, so a kill at any moment leaves every earlier checkpoint intact; leftovers
of a killed write are hidden folders that `latest_checkpoint` ignores and the next save removes.
A checkpoint whose files do not load (damaged, truncated, or a pickle holding more than tensors)
raises `CheckpointError` naming the file; `load_latest_checkpoint` then falls back to the newest
one that loads, saying which were skipped.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from dseqjepa_hub.application.atomic import OutputWriteError, atomic_directory, remove_stale_temporaries
from dseqjepa_hub.application.loading import (
    COMPLETE_MARKER,
    CONTEXT_ENCODER_DIR,
    PREDICTOR_DIR,
    RUN_CHECKPOINTS_DIR,
    SAFETENSORS_FILE,
    TARGET_ENCODER_DIR,
    checkpoint_name,
    complete_checkpoints,
)
from dseqjepa_hub.errors import DSeqJEPAError
from dseqjepa_hub.image_processing_dseqjepa import DSeqJEPAImageProcessor
from dseqjepa_hub.pipeline_saliency_ranking import save_pretrained_with_pipeline

from .config import TrainConfig, save_config

logger = logging.getLogger(__name__)

ENCODER_DIRS = (TARGET_ENCODER_DIR, CONTEXT_ENCODER_DIR)
NETWORK_DIRS = (*ENCODER_DIRS, PREDICTOR_DIR)  # the keys of `networks` below
TRAINER_STATE = "trainer_state.pt"


class CheckpointError(DSeqJEPAError):
    """A checkpoint folder whose files cannot be loaded."""


def rng_states() -> dict:
    """RNG states of python, numpy, torch and CUDA as tensors and plain values (weights_only-safe)."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(output_dir: str | os.PathLike, step: int, networks: dict[str, nn.Module],
                    trainer_state: dict, config: TrainConfig, keep: int = 0,
                    processor: DSeqJEPAImageProcessor | None = None) -> Path:
    """Write checkpoint `step` atomically and keep only the newest `keep` (0: all). Returns its folder.

    networks: the DSeqJEPAModel encoders under `ENCODER_DIRS` and the DSeqJEPAPredictor under `PREDICTOR_DIR`;
    processor: saved with each encoder (default: one made from the encoder's config).
    """
    root = Path(output_dir) / RUN_CHECKPOINTS_DIR
    remove_stale_temporaries(root)  # a killed earlier write
    final = root / checkpoint_name(step)
    with atomic_directory(final, replace=True) as folder:  # replace: re-saving a step
        try:
            for name in ENCODER_DIRS:
                encoder = networks[name]
                save_pretrained_with_pipeline(encoder, processor or DSeqJEPAImageProcessor.from_model_config(encoder.config),
                                              folder / name)
            networks[PREDICTOR_DIR].save_pretrained(folder / PREDICTOR_DIR)
            torch.save(trainer_state, folder / TRAINER_STATE)
        except (OSError, RuntimeError, SafetensorError) as error:  # a full disk, as the writers say it
            raise OutputWriteError(f"{final}: cannot write the checkpoint ({str(error).splitlines()[0]})") from None
        save_config(config, folder / "config.yaml")
        (folder / COMPLETE_MARKER).write_text(f"{step}\n")
    if keep > 0:
        for _, old in complete_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """(state dicts of the three networks by `NETWORK_DIRS` name, trainer state) of one checkpoint folder."""
    path = Path(path)
    if not (path / COMPLETE_MARKER).is_file():
        raise CheckpointError(f"{path}: not a complete checkpoint (no '{COMPLETE_MARKER}' marker)")
    networks = {}
    for name in NETWORK_DIRS:
        weights = path / name / SAFETENSORS_FILE
        try:
            networks[name] = load_file(str(weights))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{weights}: unreadable ({error})") from None
    try:
        trainer_state = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path / TRAINER_STATE}: holds objects other than tensors and plain data; refused") from None
    except (RuntimeError, OSError, EOFError) as error:
        raise CheckpointError(f"{path / TRAINER_STATE}: unreadable ({str(error).splitlines()[0]})") from None
    return networks, trainer_state


def load_latest_checkpoint(output_dir: str | os.PathLike) -> tuple[Path, dict, dict] | None:
    """The newest complete checkpoint that loads -> (folder, networks, trainer state); None if
    there is no complete checkpoint. Damaged newer ones are skipped with a warning naming them."""
    checkpoints = [path for _, path in complete_checkpoints(output_dir)]
    damaged = []
    for path in reversed(checkpoints):
        try:
            networks, state = load_checkpoint(path)
        except CheckpointError as error:
            logger.warning("checkpoint %s is damaged, trying the one before it: %s", path.name, error)
            damaged.append(str(error))
            continue
        if damaged:
            logger.warning("resuming from %s, the newest checkpoint that loads", path)
        return path, networks, state
    if damaged:
        raise CheckpointError("no checkpoint loads: " + "; ".join(damaged))
    return None

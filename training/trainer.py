"""The pretraining loop: DSeq-JEPA, the I-JEPA baseline, or the release's mixed curriculum.

Every random choice of a step (DSeq or I-JEPA, the multi-block masks) is drawn from a generator
seeded by (seed, step), and the data by (seed, epoch, index) (see pretraining_data.py), so a run stopped
with `max_steps` and resumed from its checkpoint is the same run, bit for bit on the CPU.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from dseqjepa_hub.application.atomic import atomic_write_text
from dseqjepa_hub.application.loading import CONTEXT_ENCODER_DIR, PREDICTOR_DIR, TARGET_ENCODER_DIR
from dseqjepa_hub.errors import DSeqJEPAError
from dseqjepa_hub.regions import extract_regions

from .checkpoint import load_latest_checkpoint, restore_rng_states, rng_states, save_checkpoint
from .config import MONITORING_KEYS, ConfigError, TrainConfig, config_from_dict, save_config
from .distributed import DistributedContext, all_reduce_mean, gather_digests, init_distributed, shutdown_distributed
from .init_from import starting_point
from .masks import multiblock_masks
from .monitoring import STATISTICS, CollapseWatch, KNNMonitor, embedding_statistics
from .objective import JEPAStudent, dseq_task, ijepa_task, jepa_loss, target_features
from .pretraining_data import build_loader, derive_seed, list_image_files
from .schedules import Schedules

logger = logging.getLogger(__name__)


class TrainingDiverged(DSeqJEPAError, RuntimeError):
    """The loss became NaN or Inf; the message names the step and the last good checkpoint."""


class TrainingCollapsed(DSeqJEPAError, RuntimeError):
    """The target embeddings collapsed and `stop_on_collapse` is set; the message names the step and the last checkpoint."""


@dataclass
class TrainResult:
    step: int
    loss: float | None  # None: a resumed run that was already complete (nothing was trained)
    checkpoint: Path | None
    weight_digests: list[str]


def parameter_groups(module: nn.Module) -> list[dict]:
    """AdamW groups: weight decay on every tensor of 2 or more dimensions, the learned tokens
    (`cls_token`, `mask_token`) included, none on biases and norms (1-D), as both the DSeq-JEPA
    release and I-JEPA group them (docs/PARITY.md)."""
    decay, no_decay = [], []
    for parameter in module.parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim <= 1:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "apply_weight_decay": True},
            {"params": no_decay, "apply_weight_decay": False, "weight_decay": 0.0}]


class Pretrainer:
    """Holds the networks, optimizer and data of one run; `run` trains until `last_step`."""

    def __init__(self, config: TrainConfig, data: str | os.PathLike, output: str | os.PathLike,
                 dist_context: DistributedContext):
        self.config = config
        self.output = Path(output)
        self.dist = dist_context
        device = dist_context.device
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if device.type == "cuda" and config.precision == "bf16" else contextlib.nullcontext())

        torch.manual_seed(config.seed)  # the same initial weights on every rank
        start = starting_point(config)
        model_config, processor = start.encoder.config, start.processor
        self.processor = processor  # the training statistics, saved with every checkpoint
        self.loader, self.sampler = build_loader(
            list_image_files(data, config.image_column, config.streaming), image_size=model_config.image_size,
            crop_scale=config.crop_scale, mean=list(processor.image_mean), std=list(processor.image_std), seed=config.seed,
            batch_size=config.batch_size, num_workers=config.num_workers, world_size=dist_context.world_size,
            rank=dist_context.rank, shuffle_buffer=config.shuffle_buffer,
        )
        self.steps_per_epoch = self.sampler.num_samples // config.batch_size
        self.schedules = Schedules.for_run(config, self.steps_per_epoch)

        self.context_encoder = start.encoder.to(device)
        self.model_config = self.context_encoder.config
        self.target_encoder = copy.deepcopy(self.context_encoder).requires_grad_(False)
        self.predictor = start.predictor.to(device)
        if config.release_compat:  # its predictor has no mask token: never trained there, frozen here
            self.predictor.mask_token.requires_grad_(False)  # (no gradient, no optimizer state, no unused DDP parameter)
        self.student = JEPAStudent(self.context_encoder, self.predictor, config.context_mode, config.release_compat)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.student), lr=config.lr, betas=config.betas)
        # Inputs are moved to the device by the loop, so DDP needs no device_ids.
        model = DistributedDataParallel(self.student) if dist_context.enabled else self.student
        self.model = torch.compile(model, dynamic=True) if config.compile else model
        self.collapse = CollapseWatch(config.collapse_rank, config.collapse_std, config.collapse_patience)
        self.knn = KNNMonitor(config.eval_data, config.eval_images, config.seed) if config.eval_every else None
        self.step = 0
        self.skipped_images = 0
        self.last_checkpoint: Path | None = None

    # -- state -------------------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {CONTEXT_ENCODER_DIR: self.context_encoder, TARGET_ENCODER_DIR: self.target_encoder,
                PREDICTOR_DIR: self.predictor}

    def trainer_state(self) -> dict:
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "schedules": {"total_steps": self.schedules.total_steps, "warmup_steps": self.schedules.warmup_steps,
                          "steps_per_epoch": self.steps_per_epoch},
            "sampler": {"epoch": epoch, "start": offset * self.config.batch_size, "seed": self.config.seed,
                        "world_size": self.dist.world_size},
            "rng": rng_states(),
            "skipped_images": self.skipped_images,
            "collapse_logs": self.collapse.below,  # the logs in a row below the thresholds so far
            "config": self.config.to_dict(),
        }

    def save(self) -> None:
        """Write a checkpoint, after checking that the weights it would hold are finite: a
        checkpoint named as good (by `diverged`) is always one that can be resumed from."""
        weights = [t for module in self.networks().values() for t in module.parameters()]
        if not bool(torch.stack([t.isfinite().all() for t in weights]).all()):  # one synchronisation
            self.diverged(f"the weights updated by step {self.step} are not finite")
        if self.dist.is_main:
            self.last_checkpoint = save_checkpoint(self.output, self.step, self.networks(), self.trainer_state(),
                                                   self.config, keep=self.config.keep_checkpoints,
                                                   processor=self.processor)
        if self.dist.enabled:
            torch.distributed.barrier()

    def resume(self) -> Path | None:
        """Load the newest complete checkpoint in OUTPUT (None when there is none)."""
        found = load_latest_checkpoint(self.output)
        if found is None:
            return None
        path, networks, state = found
        saved = config_from_dict(state["config"], source=f"{path}/{'trainer_state.pt'}").to_dict()
        now = self.config.to_dict()
        changed = sorted(key for key, value in saved.items() if now[key] != value)
        if [key for key in changed if key not in MONITORING_KEYS]:
            raise ConfigError(f"--resume: the config differs from the checkpoint's ({path}) in "
                              f"{[key for key in changed if key not in MONITORING_KEYS]} (only the monitoring keys "
                              f"{', '.join(MONITORING_KEYS)} may change)")
        if changed:
            logger.info("--resume: the monitoring changes: %s",
                        ", ".join(f"{key} {saved[key]!r} -> {now[key]!r}" for key in changed))
        if state["schedules"]["steps_per_epoch"] != self.steps_per_epoch or state["sampler"]["world_size"] != self.dist.world_size:
            raise ConfigError(
                f"--resume: {path} was written with {state['schedules']['steps_per_epoch']} steps per epoch on "
                f"{state['sampler']['world_size']} process(es), this run has {self.steps_per_epoch} on "
                f"{self.dist.world_size}: the data or the number of processes changed"
            )
        for name, module in self.networks().items():
            module.load_state_dict(networks[name])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng_states(state["rng"])
        self.step = state["step"]
        self.skipped_images = state["skipped_images"]
        self.collapse.below = state.get("collapse_logs", 0)  # 0 in checkpoints written before it was kept
        self.last_checkpoint = path
        return path

    # -- one step ----------------------------------------------------------------------------
    def diverged(self, what: str) -> None:
        where = self.last_checkpoint or "none (no checkpoint was written yet)"
        raise TrainingDiverged(
            f"{what}: training stopped and nothing was written from these weights. "
            f"The last good checkpoint (finite weights) is {where}."
        )

    def set_hyperparameters(self) -> dict:
        """The step's LR, weight decay, EMA momentum and lambda: the schedules at step + 1.

        Both releases tick their schedulers once before the first update (the DSeq release all
        four, before its loop; I-JEPA its LR and weight decay, at the top of each step), so
        update k (from 0) uses the value at k + 1 and the last one the final value
        (docs/PARITY.md; I-JEPA's EMA momentum alone starts at ema_start).
        """
        index = self.step + 1
        values = {"lr": self.schedules.lr(index), "weight_decay": self.schedules.weight_decay(index),
                  "ema": self.schedules.ema_momentum(index), "lambda": self.schedules.dseq_probability(index)}
        for group in self.optimizer.param_groups:
            group["lr"] = values["lr"]
            if group["apply_weight_decay"]:
                group["weight_decay"] = values["weight_decay"]
        return values

    def prediction_task(self, images: torch.Tensor, use_dseq: bool, generator: torch.Generator,
                        monitor: bool = False):
        """The target features (B, N, D), the step's PredictionTask and, with `monitor` (a logging step),
        the embedding statistics (a (3,) tensor of monitoring.STATISTICS, else None)."""
        config, model_config = self.config, self.model_config
        with torch.no_grad(), self.autocast:
            output = self.target_encoder(images, output_saliency=use_dseq or monitor)
            targets = target_features(output.last_hidden_state, self.target_encoder.config)
        if not bool(torch.isfinite(output.last_hidden_state).all()):  # diverged weights: no regions to draw
            self.diverged(f"the target encoder's output is not finite at step {self.step + 1}")
        statistics = embedding_statistics(targets, output.saliency) if monitor else None
        if use_dseq:
            regions = extract_regions(output.saliency, min_region_fraction=model_config.min_region_fraction,
                                      num_regions=model_config.num_regions)
            return targets, dseq_task(regions.masks, config.release_compat), statistics
        context, blocks = multiblock_masks(
            generator, images.shape[0], model_config.grid_size, context_scale=config.context_scale,
            target_scale=config.target_scale, target_aspect_ratio=config.target_aspect_ratio,
            num_targets=config.num_targets, min_keep=config.min_keep,
        )
        return targets, ijepa_task(context.to(images.device), blocks.to(images.device)), statistics

    def train_step(self, images: torch.Tensor, skipped: torch.Tensor | None = None) -> dict:
        """One optimisation step; `skipped` counts the unreadable files behind this rank's batch."""
        values = self.set_hyperparameters()
        generator = torch.Generator().manual_seed(derive_seed(self.config.seed, self.step))
        use_dseq = torch.rand(1, generator=generator).item() < values["lambda"]
        monitor = self.config.log_every > 0 and (self.step + 1) % self.config.log_every == 0
        targets, task, statistics = self.prediction_task(images, use_dseq, generator, monitor)
        with self.autocast:
            predictions, positions, keep = self.model(images, task)
        loss = jepa_loss(predictions, targets, task, positions, keep)
        skipped = torch.zeros(1) if skipped is None else skipped
        reported = torch.cat([loss.detach().float()[None], skipped.sum().float().to(loss.device)[None],
                              *([] if statistics is None else [statistics])])
        loss_value, skipped_mean, *monitored = all_reduce_mean(reported, self.dist).tolist()  # one synchronisation
        self.skipped_images += round(skipped_mean * self.dist.world_size)
        if not math.isfinite(loss_value):
            self.diverged(f"the loss is {loss_value} at step {self.step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.config.grad_clip)
        self.optimizer.step()
        with torch.no_grad():  # EMA: target <- m * target + (1 - m) * context
            torch._foreach_lerp_(list(self.target_encoder.parameters()), list(self.context_encoder.parameters()),
                                 1.0 - values["ema"])
        self.step += 1
        return {"step": self.step, "loss": loss_value, "method": "dseq" if use_dseq else "ijepa",
                "predictions": task.target_masks.shape[0], **values, **dict(zip(STATISTICS, monitored))}

    def watch(self, record: dict) -> None:
        """The monitoring of a step after its update: the k-NN every eval_every steps (added to `record`),
        the collapse watch on a logging step (a warning; with stop_on_collapse, TrainingCollapsed)."""
        if self.knn is not None and self.step % self.config.eval_every == 0:
            if self.dist.is_main:
                record["knn_top1"] = self.knn(self.target_encoder, self.processor, self.config.batch_size)
            if self.dist.enabled:
                torch.distributed.barrier()
        if STATISTICS[0] not in record:
            return
        warning = self.collapse.update(record, self.model_config.hidden_size)  # the same on every rank (all-reduced)
        if warning is None:
            return
        if not self.config.stop_on_collapse:
            logger.warning("%s (stop_on_collapse: true or --stop-on-collapse stops the run)", warning)
            return
        where = self.last_checkpoint or "none (no checkpoint was written yet)"
        raise TrainingCollapsed(f"{warning}: training stopped (stop_on_collapse). The last checkpoint is {where}.")

    # -- the loop ----------------------------------------------------------------------------
    def run(self, last_step: int, progress: bool = True) -> TrainResult:
        """Train to `last_step`; `progress`: the progress bar (on the main rank)."""
        metrics_path = self.output / "metrics.jsonl"
        writer = self._tensorboard()
        progress = tqdm(total=last_step, initial=self.step, disable=not (progress and self.dist.is_main), desc="train",
                        dynamic_ncols=True)
        record: dict = {"loss": float("nan")}
        global_batch = self.config.batch_size * self.dist.world_size
        try:
            while self.step < last_step:
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                self.sampler.set_position(epoch, offset * self.config.batch_size)
                for images, skipped in self.loader:
                    started = time.perf_counter()
                    record = self.train_step(images.to(self.dist.device, non_blocking=True), skipped)
                    record.update(epoch=epoch, images_per_s=global_batch / (time.perf_counter() - started),
                                  skipped_images=self.skipped_images)
                    try:
                        self.watch(record)
                    finally:  # a collapse that stops the run still leaves its step's line
                        self.write_record(record, metrics_path, writer)
                    progress.update(1)
                    progress.set_postfix(loss=f"{record['loss']:.4f}", lam=f"{record['lambda']:.2f}",
                                         img_s=f"{record['images_per_s']:.1f}")
                    if self.step % self.config.checkpoint_every == 0 or self.step == last_step:
                        self.save()
                    if self.step >= last_step:
                        break
        finally:  # also when a step raises (divergence, collapse): the bar ends before the error line
            progress.close()
            if writer is not None:
                writer.close()
        digests = gather_digests(self.student, self.dist)
        if len(set(digests)) != 1:
            raise RuntimeError(f"the ranks ended with different weights: {digests}")
        return TrainResult(self.step, record["loss"], self.last_checkpoint, digests)

    def write_record(self, record: dict, metrics_path: Path, writer) -> None:
        if not self.dist.is_main:
            return
        with open(metrics_path, "a") as stream:
            stream.write(json.dumps(record) + "\n")
        if writer is not None:
            for key in ("loss", "lr", "weight_decay", "ema", "lambda", "images_per_s", *STATISTICS, "knn_top1"):
                if key in record:
                    writer.add_scalar(f"{'monitor' if key in (*STATISTICS, 'knn_top1') else 'train'}/{key}",
                                      record[key], self.step)

    def _tensorboard(self):
        if not (self.config.tensorboard and self.dist.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard: true, but TensorBoard is not installed; logging to metrics.jsonl only")
            return None
        return SummaryWriter(str(self.output / "tensorboard"))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines a resumed run will write again (steps after its checkpoint), and a last line
    that a killed process left half-written."""
    if not path.is_file():
        return
    kept = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d: not a complete JSON line (a killed write?): dropped", path, number)
            continue
        if record["step"] <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def train(config: TrainConfig, data: str | os.PathLike, output: str | os.PathLike, *, max_steps: int | None = None,
          resume: bool = False, progress: bool = True) -> TrainResult:
    """Pretrain as `config` says on the images in `data`, writing to `output`.

    `max_steps` stops after that step without changing any schedule; `resume` continues from
    the newest complete checkpoint in `output`; `progress`: a progress bar (the command's console decides).
    Under torchrun every process calls this.
    """
    output = Path(output)
    if not resume and (output / "metrics.jsonl").exists():
        raise DSeqJEPAError(f"{output} holds an earlier run (metrics.jsonl): pass --resume or another --output")
    dist_context = init_distributed()
    try:
        trainer = Pretrainer(config, data, output, dist_context)
        if dist_context.is_main:
            output.mkdir(parents=True, exist_ok=True)
        resumed = trainer.resume() if resume else None
        last_step = trainer.schedules.total_steps if max_steps is None else min(max_steps, trainer.schedules.total_steps)
        if resumed is not None and trainer.step >= last_step:  # the run's folder is left exactly as it was
            logger.info("the run is complete: %s is at step %d of %d; nothing to do", resumed, trainer.step, last_step)
            return TrainResult(trainer.step, None, resumed, gather_digests(trainer.student, dist_context))
        if dist_context.is_main:
            save_config(config, output / "config.yaml")
            _truncate_metrics(output / "metrics.jsonl", trainer.step)
            if resumed is not None:
                logger.info("resumed from %s at step %d", resumed, trainer.step)
        result = trainer.run(last_step, progress=progress)
        if dist_context.is_main:
            summary = {"step": result.step, "loss": result.loss, "world_size": dist_context.world_size,
                       "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                       "skipped_images": trainer.skipped_images, "weight_digests": result.weight_digests}
            atomic_write_text(output / "summary.json", json.dumps(summary, indent=2) + "\n")
        return result
    finally:
        shutdown_distributed()

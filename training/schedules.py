"""Schedules as pure functions of the step: LR, weight decay, EMA momentum, DSeq probability.

Pure functions of (step, total_steps) leave nothing to save and resume exactly. The trainer
reads them at step + 1 for update `step` (from 0), as both releases' schedulers have ticked once
before the first update (docs/PARITY.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import TrainConfig


def _cosine(start: float, end: float, progress: float) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


@dataclass(frozen=True)
class Schedules:
    config: TrainConfig
    total_steps: int
    warmup_steps: int

    @classmethod
    def for_run(cls, config: TrainConfig, steps_per_epoch: int) -> Schedules:
        total = max(1, round(config.epochs * steps_per_epoch))
        return cls(config, total, min(round(config.warmup_epochs * steps_per_epoch), total))

    def lr(self, step: int) -> float:
        """Linear warm-up start_lr -> lr, then cosine lr -> final_lr (step counts from 0)."""
        c = self.config
        if step < self.warmup_steps:
            return c.start_lr + (c.lr - c.start_lr) * step / self.warmup_steps
        return _cosine(c.lr, c.final_lr, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))

    def weight_decay(self, step: int) -> float:
        """Cosine weight_decay -> final_weight_decay over the whole run."""
        return _cosine(self.config.weight_decay, self.config.final_weight_decay, step / self.total_steps)

    def ema_momentum(self, step: int) -> float:
        """Linear ema_start -> ema_end over the whole run."""
        c = self.config
        return c.ema_start + (c.ema_end - c.ema_start) * min(step / self.total_steps, 1.0)

    def dseq_probability(self, step: int) -> float:
        """lambda: 1 for method dseq, 0 for ijepa, linear lambda_start -> lambda_end for mixed."""
        c = self.config
        if c.method != "mixed":
            return float(c.method == "dseq")
        return c.lambda_start + (c.lambda_end - c.lambda_start) * min(step / self.total_steps, 1.0)

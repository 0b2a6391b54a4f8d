"""The JEPA objective shared by DSeq and I-JEPA steps: prediction tasks, the student, the loss.

A step of either method is a `PredictionTask`: a set of context sequences (which patches of
which image each one sees) and a list of predictions (which patches to predict from which
context sequence). I-JEPA: one context per image and `num_targets` predictions from it. DSeq:
one context per valid (image, step) pair and one prediction from each, so steps with an empty
target are never computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dseqjepa_hub.configuration_dseqjepa import DSeqJEPAConfig
from dseqjepa_hub.modeling_dseqjepa import DSeqJEPAModel, DSeqJEPAPredictor
from dseqjepa_hub.regions import patch_tokens

from .sequences import region_sequence


@dataclass
class PredictionTask:
    context_masks: torch.Tensor  # (C, h, w) bool, the patches each context sequence sees
    context_image: torch.Tensor  # (C,) long, the image of each context sequence
    target_masks: torch.Tensor  # (S, h, w) bool, the patches each prediction predicts
    target_context: torch.Tensor | None  # (S,) long, the context of each prediction; None: the same index
    context_length: int  # longest context (patches), for padding
    target_length: int  # largest target (patches), for padding

    @property
    def target_image(self) -> torch.Tensor:
        if self.target_context is None:
            return self.context_image
        return self.context_image[self.target_context]


def ijepa_task(context: torch.Tensor, targets: torch.Tensor) -> PredictionTask:
    """context (B, h, w) and targets (B, T, h, w) multi-block masks -> B contexts, B * T predictions."""
    batch, num_targets = targets.shape[:2]
    lengths = torch.stack([context.flatten(1).sum(1).max(), targets.flatten(2).sum(2).max()]).tolist()  # one sync
    images = torch.arange(batch, device=context.device)
    return PredictionTask(
        context_masks=context,
        context_image=images,
        target_masks=targets.flatten(0, 1),
        target_context=images.repeat_interleave(num_targets),
        context_length=lengths[0],
        target_length=lengths[1],
    )


def dseq_task(region_masks: torch.Tensor, release_compat: bool = False) -> PredictionTask:
    """Ranked regions (B, N, h, w), background last -> one context and one prediction per valid step.

    A step is valid when its target region is non-empty. The valid steps are compacted with one
    host synchronisation (their number and the longest context and target fix the shapes).
    """
    contexts, targets = region_sequence(region_masks, release_compat)  # (B, N-1, h, w) each
    steps = contexts.shape[1]
    contexts, targets = contexts.flatten(0, 1), targets.flatten(0, 1)  # (B * (N-1), h, w)
    target_sizes = targets.flatten(1).sum(1)  # (B * (N-1),)
    valid = target_sizes > 0
    context_sizes = contexts.flatten(1).sum(1) * valid
    num_valid, context_length, target_length = torch.stack(
        [valid.sum(), context_sizes.max(), target_sizes.max()]
    ).tolist()
    if num_valid == 0:
        raise RuntimeError("no region sequence has a non-empty target: extract_regions returned empty backgrounds")
    order = torch.argsort((~valid).to(torch.uint8), stable=True)[:num_valid]  # valid steps, in order
    return PredictionTask(
        context_masks=contexts[order],
        context_image=torch.div(order, steps, rounding_mode="floor"),
        target_masks=targets[order],
        target_context=None,
        context_length=context_length,
        target_length=target_length,
    )


def padded_indices(masks: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """masks (M, N) bool -> the indices of the True entries, raster order, padded to `length`:
    (indices (M, length) long, keep (M, length) bool)."""
    order = torch.argsort(masks.to(torch.uint8), dim=1, descending=True, stable=True)[:, :length]
    keep = torch.arange(length, device=masks.device) < masks.sum(1, keepdim=True)
    return order, keep


class JEPAStudent(nn.Module):
    """The trained pair, context encoder and predictor, in one module so that DDP wraps both.

    context_mode "gather": each context sequence holds only its CLS and context tokens, padded
    to the batch's longest with a key-padding mask (I-JEPA's token dropping). "masked": every
    sequence runs at full length and the keys are restricted to CLS + context tokens (the
    release's way). Both give the same context-token outputs. `release_compat` is the release's
    predictor (docs/METHOD.md section 5, docs/PARITY.md); it needs "masked". It feeds the predictor
    the full-length output, whose target positions the release overwrites with their position
    embedding alone (no mask token), and lets every token attend only to the non-context
    positions: the target queries and the encoder outputs at the other non-context patches.
    Its mask token is then unused (the trainer freezes it: the release never trains it).
    """

    def __init__(self, encoder: DSeqJEPAModel, predictor: DSeqJEPAPredictor, context_mode: str = "gather",
                 release_compat: bool = False):
        super().__init__()
        if release_compat and context_mode != "masked":
            raise ValueError("release_compat needs context_mode='masked'")
        self.encoder = encoder
        self.predictor = predictor
        self.context_mode = context_mode
        self.release_compat = release_compat

    def forward(self, pixel_values: torch.Tensor, task: PredictionTask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns predictions (S, Lt, D), target positions (S, Lt) and which are real (S, Lt)."""
        tokens, _ = self.encoder.embed(pixel_values)  # (B, P + N, D)
        prefix = self.encoder.num_prefix_tokens
        context_masks = task.context_masks.flatten(1)  # (C, N)
        count, num_patches, dim = context_masks.shape[0], context_masks.shape[1], tokens.shape[-1]
        positions, keep = padded_indices(context_masks, task.context_length)  # (C, Lc)
        prefix_keys = torch.ones(count, prefix, dtype=torch.bool, device=tokens.device)
        prefix_tokens = tokens[task.context_image, :prefix]  # (C, P, D)

        if self.context_mode == "gather":
            patches = tokens[:, prefix:][task.context_image[:, None], positions]  # (C, Lc, D)
            keys = torch.cat([prefix_keys, keep], dim=1)
            context = self.encoder.encode(torch.cat([prefix_tokens, patches], dim=1), keys)
        else:
            full = self.encoder.encode(tokens[task.context_image], torch.cat([prefix_keys, context_masks], dim=1))
            if self.release_compat:
                context = full  # (C, P + N, D)
                positions = torch.arange(num_patches, device=tokens.device).expand(count, -1)
                keys = torch.cat([~prefix_keys, ~context_masks], dim=1)  # the non-context positions only
            else:
                patches = full[:, prefix:].gather(1, positions[..., None].expand(-1, -1, dim))  # (C, Lc, D)
                context = torch.cat([full[:, :prefix], patches], dim=1)
                keys = torch.cat([prefix_keys, keep], dim=1)

        if task.target_context is not None:
            context, positions, keys = (t[task.target_context] for t in (context, positions, keys))
        if self.release_compat:  # the release overwrites the target positions: only the queries stand there
            keys = torch.cat([keys[:, :prefix], keys[:, prefix:] & ~task.target_masks.flatten(1)], dim=1)
        target_positions, target_keep = padded_indices(task.target_masks.flatten(1), task.target_length)  # (S, Lt)
        predictions = self.predictor(context, positions, keys, target_positions, target_keep,
                                     mask_token=not self.release_compat)
        return predictions, target_positions, target_keep


def target_features(last_hidden_state: torch.Tensor, config: DSeqJEPAConfig) -> torch.Tensor:
    """The regression targets: final-norm patch tokens plus a parameter-free layer_norm, (B, N, D)."""
    patches = patch_tokens(last_hidden_state, config)
    return F.layer_norm(patches, patches.shape[-1:])


def jepa_loss(predictions: torch.Tensor, targets: torch.Tensor, task: PredictionTask,
              target_positions: torch.Tensor, target_keep: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 (beta 1), mean over every feature of every real target token of every prediction."""
    wanted = targets[task.target_image[:, None], target_positions]  # (S, Lt, D)
    per_token = F.smooth_l1_loss(predictions.float(), wanted.float(), beta=1.0, reduction="none").mean(-1)  # (S, Lt)
    return (per_token * target_keep).sum() / target_keep.sum()

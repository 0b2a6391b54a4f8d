"""What every reader returns: the encoder under release names, its sizes, an independent reference,
and what the model card says about the source."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .layout import EncoderLayout


@dataclass
class SourceCheckpoint:
    """One checkpoint, read and renamed.

    encoder: the encoder tensors under DSeqJEPAModel's state-dict (= the release's) names.
    reference: the source architecture, built independently of the DSeq-JEPA core (timm or
        transformers) from the source tensors: images (B, C, H, W) -> tokens (B, [1] + N, D),
        in the order of DSeqJEPAModel's `last_hidden_state`.
    config_overrides: DSeqJEPAConfig fields beyond the layout (layer_norm_eps, predictor sizes ...).
    predictor: the pretraining predictor's tensors (release names) when asked for, else None.
    provenance: what conversion.json records about the source (format, file, encoder ...).
    notes: things the user should know (dropped heads, folded position embeddings ...).
    license: the weights' licence where the source states one (the model card's default).
    converted_from: the source as the model card's "Converted from ..." sentence names it; None for
        weights this project trained, whose card has no such sentence.
    training_text: the model card's paragraph on the training data and recipe ("": the card's default).
    """

    encoder: dict[str, torch.Tensor]
    layout: EncoderLayout
    reference: Callable[[torch.Tensor], torch.Tensor]
    config_overrides: dict = field(default_factory=dict)
    predictor: dict[str, torch.Tensor] | None = None
    provenance: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    license: str | None = None
    converted_from: str | None = None
    training_text: str = ""

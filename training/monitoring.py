"""Training that watches itself: statistics of the target embeddings, an online k-NN, collapse detection.

Every `log_every` steps, from the step's own target-encoder pass (no extra forward):
- `effective_rank`: RankMe (Garrido et al., ICML 2023) of the regression targets, every patch token of
  the batch (B * N, D): exp of the entropy of the normalised singular values; 1 when every token is the
  same vector, up to D when they fill every direction equally;
- `embedding_std`: the per-dimension standard deviation of the L2-normalised tokens, averaged over the
  dimensions (about 1 / sqrt(D) for spread-out embeddings, 0 for a constant one: SimSiam's measure);
- `saliency_entropy`: the entropy of each image's saliency as a distribution over its patches (minus
  its minimum, over its sum), divided by log N (1: uniform, nothing stands out; 0: one patch),
  averaged over the batch.
Every `eval_every` steps, with `eval_data` (a folder with train/ and val/ (or test/) splits labelled as
`dseqjepa eval` reads them), `knn_top1`: a k-NN classifier on the target encoder's pooled features.
A collapse is `effective_rank` below `collapse_rank` or `embedding_std * sqrt(D)` below `collapse_std`
for `collapse_patience` logs in a row: a warning line with the step, and with `stop_on_collapse` the run stops.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .evaluation.features import extract_features
from .evaluation.labelled_splits import find_split, load_labelled_split
from .evaluation.probes import knn_accuracy

logger = logging.getLogger(__name__)

STATISTICS = ("effective_rank", "embedding_std", "saliency_entropy")  # the keys written every log_every steps


MAX_ROWS = 4096  # rows of the Gram matrix, bounding its cost (float64: a float32 product's rounding, through the
# square root of the eigenvalues, reads as rank where there is none: 1.03 for a constant)


def effective_rank(embeddings: torch.Tensor) -> torch.Tensor:
    """RankMe of (M, D) embeddings (at most `MAX_ROWS`, evenly strided), from the eigenvalues of the (D, D)
    Gram matrix in float64 (no (M, D) SVD)."""
    embeddings = embeddings[:: -(-embeddings.shape[0] // MAX_ROWS)].double()
    eigenvalues = torch.linalg.eigvalsh(embeddings.T @ embeddings).clamp(min=0)
    singular = eigenvalues.sqrt()
    p = singular / singular.sum().clamp(min=1e-12) + 1e-7  # RankMe's epsilon
    return (-(p * p.log()).sum()).exp().float()


def embedding_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the std over samples of the L2-normalised (M, D) embeddings."""
    return F.normalize(embeddings.float(), dim=1).std(dim=0).mean()


def saliency_entropy(saliency: torch.Tensor) -> torch.Tensor:
    """Mean over images of the entropy of the saliency (B, h, w) as a distribution over the patches, divided by
    log N. The distribution is scale-free as the region extraction's Otsu threshold is: each map minus its
    minimum, over its sum (a constant map: uniform)."""
    shifted = saliency.flatten(1).float()
    shifted = shifted - shifted.min(dim=1, keepdim=True).values + 1e-12
    p = shifted / shifted.sum(dim=1, keepdim=True)
    return (-(p * p.log()).sum(1) / math.log(p.shape[1])).mean()


def embedding_statistics(targets: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
    """(3,) tensor of `STATISTICS` for targets (B, N, D) and saliency (B, h, w), on their device (no host sync)."""
    tokens = targets.flatten(0, 1)
    return torch.stack([effective_rank(tokens), embedding_std(tokens), saliency_entropy(saliency)])


@dataclass
class CollapseWatch:
    """Counts the logs in a row whose statistics are below the thresholds."""

    min_rank: float
    min_std: float  # of embedding_std * sqrt(D)
    patience: int
    below: int = 0

    def update(self, record: dict, dim: int) -> str | None:
        """A warning line when this log makes `patience` in a row below a threshold, else None."""
        rank, std = record["effective_rank"], record["embedding_std"] * math.sqrt(dim)
        if rank >= self.min_rank and std >= self.min_std:
            self.below = 0
            return None
        self.below += 1
        if self.below < self.patience:
            return None
        return (f"the target embeddings collapsed at step {record['step']}: effective rank {rank:.2f} (threshold "
                f"{self.min_rank}), normalised std x sqrt(D) {std:.3f} (threshold {self.min_std}) "
                f"for {self.below} logs in a row")


class KNNMonitor:
    """k-NN top-1 of a model's pooled features on a labelled train / eval split pair, read once."""

    def __init__(self, data: str | Path, max_images: int, seed: int):
        self.splits = [load_labelled_split(find_split(Path(data), kind), max_images, seed) for kind in ("train", "eval")]
        self.classes = sorted(set(self.splits[0].labels) | set(self.splits[1].labels))

    def __call__(self, model, processor, batch_size: int) -> float:
        with torch.random.fork_rng(devices=[]):  # the loader's worker seeds leave the run's RNG untouched
            features = [extract_features(model, processor, split.paths, batch_size=batch_size, desc="knn")
                        for split in self.splits]
        labels = [torch.tensor([self.classes.index(label) for label in split.labels]) for split in self.splits]
        return knn_accuracy(features[0], labels[0], features[1], labels[1], len(self.classes))["top1"]

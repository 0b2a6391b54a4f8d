"""Classification probes on frozen features: the linear probe and DINO's weighted kNN.

Linear probe: the paper's protocol (docs/METHOD.md section 9) scaled down to features extracted once:
BatchNorm1d(affine=False) + Linear, SGD with Nesterov momentum 0.9, weight decay 5e-4, the
learning rate divided by 10 at 8/28, 16/28 and 24/28 of training. The paper fixes LR 0.01 for
ImageNet; on these small sets the learning rate is picked from `LR_GRID` on a 10% hold-out of
the training features, then the probe is retrained on all of them.

kNN (Wu et al. 2018, as in DINO's eval_knn): cosine similarity to every training feature,
the k nearest vote for their class with weight exp(similarity / T).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

LR_GRID = (0.001, 0.01, 0.1, 1.0)
LR_MILESTONES = (8 / 28, 16 / 28, 24 / 28)


@contextmanager
def _one_thread():
    """Probe steps are tiny matrix products: intra-op threads only add synchronisation
    (measured 17x slower with 2 threads on a loaded 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train_linear(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, lr: float, epochs: int, batch_size: int, seed: int
) -> nn.Module:
    torch.manual_seed(seed)
    probe = nn.Sequential(nn.BatchNorm1d(features.shape[1], affine=False), nn.Linear(features.shape[1], num_classes))
    nn.init.normal_(probe[1].weight, std=0.01)
    nn.init.zeros_(probe[1].bias)
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = -(-len(features) // batch_size)
    milestones = [round(m * epochs) * steps_per_epoch for m in LR_MILESTONES]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    generator = torch.Generator().manual_seed(seed)
    probe.train()
    with _one_thread():
        for _ in range(epochs):
            order = torch.randperm(len(features), generator=generator)
            for start in range(0, len(features), batch_size):
                batch = order[start : start + batch_size]
                if len(batch) < 2:  # BatchNorm needs two samples
                    continue
                loss = F.cross_entropy(probe(features[batch]), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
    return probe.eval()


@torch.no_grad()
def _accuracy(probe: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    return (probe(features).argmax(dim=1) == labels).float().mean().item()


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    eval_features: torch.Tensor,
    eval_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float | None = None,
    seed: int = 0,
) -> dict:
    """Top-1 accuracy of a linear probe trained on (N, D) features with int64 labels (N,)."""
    if lr is None:
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(train_features), generator=generator)
        num_holdout = max(1, len(order) // 10)
        holdout, fit = order[:num_holdout], order[num_holdout:]
        search = {
            candidate: _accuracy(
                _train_linear(train_features[fit], train_labels[fit], num_classes, candidate, epochs, batch_size, seed),
                train_features[holdout],
                train_labels[holdout],
            )
            for candidate in LR_GRID
        }
        lr = max(LR_GRID, key=lambda candidate: (search[candidate], -candidate))  # ties: the smaller LR
    else:
        search = {}
    probe = _train_linear(train_features, train_labels, num_classes, lr, epochs, batch_size, seed)
    return {
        "top1": _accuracy(probe, eval_features, eval_labels),
        "train_top1": _accuracy(probe, train_features, train_labels),
        "lr": lr,
        "lr_search_holdout_top1": {str(k): v for k, v in search.items()},
        "epochs": epochs,
        "batch_size": batch_size,
    }


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """(Q,) predicted class per query feature (Q, D) from (N, D) training features."""
    k = min(k, len(train_features))
    train = F.normalize(train_features.float(), dim=1)  # (N, D)
    predictions = []
    for start in range(0, len(query_features), chunk_size):
        query = F.normalize(query_features[start : start + chunk_size].float(), dim=1)  # (Q, D)
        similarity, index = (query @ train.T).topk(k, dim=1)  # (Q, k)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(len(query), num_classes).scatter_add_(1, train_labels[index], weights)  # (Q, C)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    eval_features: torch.Tensor,
    eval_labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> dict:
    predictions = knn_predict(train_features, train_labels, eval_features, num_classes, k, temperature)
    return {"top1": (predictions == eval_labels).float().mean().item(), "k": min(k, len(train_features)), "temperature": temperature}

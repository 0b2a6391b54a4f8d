"""What a model sees, as maps over the patch grid: the four maps of the authors' release (attention,
patch similarity, clusters, the region sequence) for any model, batched and on the model's device.

- `cls_attention`: the attention of the CLS token to every patch, per head, in one block (eager attention).
- `patch_similarity`: cosine similarity of one patch's feature (or the CLS token's) to every patch's.
- `cluster_patches`: k-means or spectral clusters of the patch features, seeded.
- `prediction_steps`: the DSeq prediction sequence of one image's ranked regions (docs/METHOD.md section 3).
- `pca_maps`: the first three principal components of the patch features as RGB, with one basis for a whole
  batch (or one given), optionally fitted on and drawn for the foreground (the ranked regions) only.
Drawing them is `visualization.py`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from dseqjepa_options import CLUSTER_METHODS

from ..errors import DSeqJEPAError, NonFiniteOutputError
from ..modeling_dseqjepa import DSeqJEPAModel
from ..regions import extract_regions


class MapError(DSeqJEPAError):
    """A map that cannot be computed for this model or these settings (no CLS token, a patch off the grid, ...)."""


@contextmanager
def eager_attention(model: DSeqJEPAModel):
    """Run `model` with eager attention (the attention probabilities are recorded only there), then switch back."""
    previous = model.config._attn_implementation
    if previous == "eager":
        yield model
        return
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)


def _block_index(model: DSeqJEPAModel, layer: int) -> int:
    depth = model.config.num_hidden_layers
    index = depth + layer if layer < 0 else layer
    if not 0 <= index < depth:
        raise MapError(f"layer {layer}: the model has {depth} blocks (0..{depth - 1}, or negative from the end)")
    return index


@torch.no_grad()
def cls_attention(model: DSeqJEPAModel, pixel_values: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """(B, heads, h, w): softmax attention of the CLS query to each patch in block `layer` (default the last),
    one map per head; average over heads for the mean map. Each map sums to 1 minus the CLS token's own share."""
    if not model.config.use_cls_token:
        raise MapError("attention maps show where the CLS token looks: this model has no CLS token")
    index = _block_index(model, layer)
    grid = (pixel_values.shape[-2] // model.config.patch_size, pixel_values.shape[-1] // model.config.patch_size)
    with eager_attention(model):
        attentions = model(pixel_values, output_attentions=True, return_dict=True).attentions
    probabilities = attentions[index][:, :, 0, model.num_prefix_tokens :].float()  # (B, H, N)
    return probabilities.reshape(*probabilities.shape[:2], *grid)


@torch.no_grad()
def layer_features(model: DSeqJEPAModel, pixel_values: torch.Tensor, layer: int = -1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Patch tokens (B, h, w, D) of block `layer` through the final norm, and the CLS token (B, D) or None."""
    index = _block_index(model, layer)
    grid = (pixel_values.shape[-2] // model.config.patch_size, pixel_values.shape[-1] // model.config.patch_size)
    [output] = model.forward_intermediates(
        pixel_values, [index], norm=True, output_fmt="NLC", return_prefix_tokens=True,
        intermediates_only=True, stop_early=True,
    )
    patches, prefix = output if isinstance(output, tuple) else (output, None)
    cls = prefix[:, 0] if prefix is not None and prefix.shape[1] else None
    return patches.reshape(patches.shape[0], *grid, -1), cls


@torch.no_grad()
def patch_similarity(
    model: DSeqJEPAModel,
    pixel_values: torch.Tensor,
    query: tuple[int, int] | str = "cls",
    layer: int = -1,
) -> torch.Tensor:
    """(B, h, w) cosine similarity of every patch feature of block `layer` (final-normed) to the query:
    the patch at grid (row, col), or "cls", the CLS token of that block."""
    features, cls = layer_features(model, pixel_values, layer)  # (B, h, w, D)
    height, width = features.shape[1:3]
    if isinstance(query, str):
        if query != "cls":
            raise MapError(f"query must be 'cls' or a (row, col) patch, found {query!r}")
        if cls is None:
            raise MapError("query 'cls': this model has no CLS token; choose a patch (row, col)")
        reference = cls  # (B, D)
    else:
        row, col = (int(v) for v in query)
        if not (0 <= row < height and 0 <= col < width):
            raise MapError(f"query patch ({row}, {col}) is off the {height}x{width} patch grid")
        reference = features[:, row, col]  # (B, D)
    return F.cosine_similarity(features.float(), reference.float()[:, None, None, :], dim=-1)


def kmeans(
    points: torch.Tensor, num_clusters: int, *, seed: int = 0, iterations: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched k-means (Lloyd, k-means++ start) of (B, N, D) points -> labels (B, N) int64, centres (B, k, D).

    Seeded and deterministic for a seed; labels are numbered by first appearance in the point order,
    so equal partitions give equal labels.
    """
    batch, count, _ = points.shape
    if not 1 <= num_clusters <= count:
        raise MapError(f"{num_clusters} clusters for {count} points: expected 1 to {count}")
    points = points.float()
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(batch, device=points.device)
    first = torch.randint(count, (batch,), generator=generator).to(points.device)
    centres = [points[rows, first]]  # k-means++: each next centre drawn by squared distance
    nearest = ((points - centres[0][:, None]) ** 2).sum(-1)  # (B, N)
    for _ in range(1, num_clusters):
        weights = nearest.cpu().double()
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))
        chosen = torch.multinomial(weights, 1, generator=generator)[:, 0].to(points.device)
        centres.append(points[rows, chosen])
        nearest = torch.minimum(nearest, ((points - centres[-1][:, None]) ** 2).sum(-1))
    centres = torch.stack(centres, dim=1)  # (B, k, D)
    labels = None
    for _ in range(iterations):
        new_labels = torch.cdist(points, centres).argmin(-1)  # (B, N)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        members = F.one_hot(labels, num_clusters).to(points.dtype)  # (B, N, k)
        counts = members.sum(1)[..., None]  # (B, k, 1)
        centres = torch.where(counts > 0, members.transpose(1, 2) @ points / counts.clamp(min=1), centres)
    new_number = canonical_numbers(labels, num_clusters)  # (B, k)
    renumbered = torch.empty_like(centres).scatter_(1, new_number[..., None].expand_as(centres), centres)
    return new_number.gather(1, labels), renumbered


def canonical_numbers(labels: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """(B, k): the new number of each label of (B, N) `labels` when numbered by first appearance along N
    (labels that do not occur come last)."""
    batch, count = labels.shape
    positions = torch.arange(count, device=labels.device).expand(batch, count)
    first = torch.full((batch, num_clusters), count, dtype=torch.int64, device=labels.device)
    first = first.scatter_reduce(1, labels, positions, "amin")  # (B, k) first position of each label
    order = first.argsort(dim=1)  # labels by first appearance
    return torch.empty_like(order).scatter_(1, order, torch.arange(num_clusters, device=labels.device).expand_as(order))


def spectral_embedding(points: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """(B, N, D) -> (B, N, k) rows of the normalised Laplacian's first k eigenvectors (Ng, Jordan and Weiss),
    on the affinity max(0, cosine similarity), each row scaled to unit length."""
    unit = F.normalize(points.double(), dim=-1)
    affinity = (unit @ unit.transpose(1, 2)).clamp(min=0)  # (B, N, N)
    affinity = affinity - torch.diag_embed(torch.diagonal(affinity, dim1=1, dim2=2))
    scale = affinity.sum(-1).clamp(min=1e-12).rsqrt()  # D^-1/2
    normalised = scale[:, :, None] * affinity * scale[:, None, :]
    _, vectors = torch.linalg.eigh(normalised)  # ascending; the largest of D^-1/2 W D^-1/2 = the smallest of L
    embedding = vectors[..., -num_clusters:].flip(-1)
    return F.normalize(embedding, dim=-1).float()


@torch.no_grad()
def cluster_patches(
    model: DSeqJEPAModel,
    pixel_values: torch.Tensor,
    num_clusters: int = 4,
    *,
    method: str = "kmeans",
    layer: int = -1,
    seed: int = 0,
) -> torch.Tensor:
    """(B, h, w) int64 cluster of each patch: k-means of the unit-length patch features of block `layer`
    (final-normed), or spectral clustering (k-means on their spectral embedding). Labels are numbered by
    first appearance in raster order."""
    if method not in CLUSTER_METHODS:
        raise MapError(f"method must be one of {CLUSTER_METHODS}, found {method!r}")
    features, _ = layer_features(model, pixel_values, layer)  # (B, h, w, D)
    batch, height, width, dim = features.shape
    points = F.normalize(features.reshape(batch, height * width, dim).float(), dim=-1)
    if not torch.isfinite(points).all():
        raise NonFiniteOutputError(f"the model {model.name_or_path} gives non-finite features: its weights hold NaN or inf")
    if method == "spectral":
        points = spectral_embedding(points, num_clusters)
    labels, _ = kmeans(points, num_clusters, seed=seed)
    return labels.reshape(batch, height, width)


def prediction_steps(regions: Sequence[dict]) -> list[dict]:
    """The DSeq prediction sequence of one image (docs/METHOD.md section 3): for the ranked regions
    R1..Rn (region dicts, background last, as the pipeline returns them), step k = 1..n-1 predicts
    the target R(k+1) from the context R1 u .. u Rk.

    Returns one dict per step: `step` (k), `context_ranks` [1..k], `target_rank` (k+1),
    `target_is_background`, `context` and `target` masks (H, W) bool. Empty slots, which the
    pipeline leaves out, add no step: in training a step with an empty target adds nothing.
    """
    ranked = sorted(regions, key=lambda region: region["rank"])
    steps = []
    context = None
    for k in range(1, len(ranked)):
        mask = np.asarray(ranked[k - 1]["mask"], dtype=bool)
        context = mask.copy() if context is None else context | mask
        target = ranked[k]
        steps.append({
            "step": k,
            "context_ranks": [region["rank"] for region in ranked[:k]],
            "target_rank": target["rank"],
            "target_is_background": bool(target["is_background"]),
            "context": context.copy(),
            "target": np.asarray(target["mask"], dtype=bool),
        })
    return steps


class PCABasis(NamedTuple):
    """Three principal directions of patch features and the range of each projection that maps to 0..1."""

    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (3, D) unit rows, largest variance first, each signed so its largest loading is positive
    low: torch.Tensor  # (3,) 1st percentile of the fitted patches' projections: colour value 0
    high: torch.Tensor  # (3,) 99th percentile: colour value 1


class PCAMaps(NamedTuple):
    colors: np.ndarray  # (B, h, w, 3) float32 in [0, 1]; 0 outside the foreground with `foreground`
    foreground: np.ndarray | None  # (B, h, w) bool, the patches the basis was fitted on and drawn; None: all
    basis: PCABasis  # pass it to the next batch for the same colours


def fit_pca(features: torch.Tensor) -> PCABasis:
    """The PCA basis of (M, D) features (float64 covariance), M >= 2, D >= 3."""
    if features.shape[0] < 2 or features.shape[1] < 3:
        raise MapError(f"a PCA map needs at least 2 patches of at least 3 dimensions, found {tuple(features.shape)}")
    points = features.double()
    mean = points.mean(dim=0)
    centred = points - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    components = vectors[:, -3:].flip(-1).T  # (3, D)
    components = components * components.gather(1, components.abs().argmax(dim=1, keepdim=True)).sign()
    projections = centred @ components.T  # (M, 3)
    low, high = torch.quantile(projections, 0.01, dim=0), torch.quantile(projections, 0.99, dim=0)
    return PCABasis(mean.float(), components.float(), low.float(), high.float())


def pca_colors(features: torch.Tensor, basis: PCABasis) -> torch.Tensor:
    """(..., D) features -> (..., 3) float32 colours in [0, 1] on `basis`."""
    projections = (features.float() - basis.mean.to(features.device)) @ basis.components.to(features.device).T
    low, high = basis.low.to(features.device), basis.high.to(features.device)
    return ((projections - low) / (high - low).clamp(min=1e-12)).clamp(0.0, 1.0)


@torch.no_grad()
def pca_tensors(model: DSeqJEPAModel, pixel_values: torch.Tensor, *, layer: int = -1, foreground: bool = False,
                basis: PCABasis | None = None) -> tuple[torch.Tensor, torch.Tensor | None, PCABasis]:
    """`pca_maps` on the model's device: colours (B, h, w, 3), foreground (B, h, w) or None, the basis."""
    features, _ = layer_features(model, pixel_values, layer)  # (B, h, w, D)
    if not torch.isfinite(features).all():
        raise NonFiniteOutputError(f"the model {model.name_or_path} gives non-finite features: its weights hold NaN or inf")
    mask = None
    if foreground:
        saliency = model(pixel_values, output_saliency=True).saliency
        regions = extract_regions(saliency, min_region_fraction=model.config.min_region_fraction,
                                  num_regions=model.config.num_regions)
        mask = (regions.masks[:, :-1] & regions.valid[:, :-1, None, None]).any(dim=1)  # the ranked regions
    if basis is None:
        fitted = features[mask] if mask is not None else features.flatten(0, 2)
        basis = fit_pca(fitted.cpu())
    colors = pca_colors(features, basis)
    if mask is not None:
        colors = colors * mask[..., None]
    return colors, mask, basis


def pca_maps(model: DSeqJEPAModel, pixel_values: torch.Tensor, *, layer: int = -1, foreground: bool = False,
             basis: PCABasis | None = None) -> PCAMaps:
    """PCA feature maps of a batch (B, C, H, W) at any size that is a multiple of the patch size: the patch
    tokens of block `layer` (final-normed) projected on their first three principal components, one basis
    for the whole batch (or `basis`, from an earlier call), each component's 1st..99th percentile mapped to
    0..1 as R, G, B. `foreground`: the basis is fitted on the patches of the ranked regions only (the
    model's saliency) and the rest is black. Returns numpy arrays and the basis."""
    colors, mask, basis = pca_tensors(model, pixel_values, layer=layer, foreground=foreground, basis=basis)
    return PCAMaps(colors.cpu().numpy(), None if mask is None else mask.cpu().numpy(), basis)

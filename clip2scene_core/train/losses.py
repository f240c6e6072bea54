"""The CLIP2Scene pretraining losses (Chen et al., CVPR 2023, section 3; equations in docs/method.md).

Notation: ``D(a, b)`` is the scalar product of L2-normalised vectors (cosine similarity); ``t_c`` is the
text embedding of class ``c``; ``x`` a CLIP pixel feature; ``p`` a point feature. All functions work on
point-pixel *pairs*: row ``i`` of every ``(M, ...)`` input belongs to the same pair.

Class indices here are rows of the text matrix, ``0..C-1`` (the dataset label ``c`` is index ``c - 1``,
see ``clip2scene_core/frame.py``). Losses are computed in at least float32 (half inputs from fp16
autocast are promoted; float64 stays float64), so they stay stable; every function is pure torch and runs
on any device. Point features may be an (M, D) tensor or a linear head's output kept factored
(``model.heads.ProjectedFeatures``, as pretraining passes them): the same values, at a fraction of the
cost, since the losses only need scalar products and norms of the points.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from clip2scene_core.model.heads import ProjectedFeatures

logger = logging.getLogger(__name__)

SEMANTIC_VARIANTS = ("infonce", "ce", "kl")
DENOMINATORS = ("negatives", "all")
REDUCTIONS = ("sum", "mean")
FUSIONS = ("pixels_and_points", "points_only")


Features = Union[Tensor, ProjectedFeatures]


def _check_features(name: str, features: Features, dim: Optional[int] = None) -> None:
    if not isinstance(features, (Tensor, ProjectedFeatures)) or features.ndim != 2:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name} must be a 2-D tensor (rows, dim), got {shape}")
    if dim is not None and features.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns, got {features.shape[1]}")


def _check_rows(name: str, value: Tensor, rows: int) -> None:
    if value.ndim != 1 or value.shape[0] != rows:
        raise ValueError(f"{name} must have shape ({rows},), got {tuple(value.shape)}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_class_indices(name: str, labels: Tensor, rows: int, num_classes: int) -> None:
    _check_rows(name, labels, rows)
    if labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be an integer tensor, got {labels.dtype}")
    if rows and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name} must be class indices in 0..{num_classes - 1}, found "
            f"{int(labels.min())}..{int(labels.max())}"
        )


def _promote(values: Features) -> Features:
    """At least float32 (half inputs from autocast are promoted; float64 stays float64)."""
    return values if values.dtype == torch.float64 else values.to(torch.float32)


def _inverse_norms(values: Features) -> Tensor:
    """(M,) ``1 / ||v_i||`` of the rows of ``values`` (M, D), guarded against zero rows."""
    if isinstance(values, ProjectedFeatures):
        return values.squared_norms().clamp_min(1e-24).rsqrt()
    return 1.0 / torch.linalg.vector_norm(values, dim=1).clamp_min(1e-12)


def _products(features: Features, other: Tensor) -> Tensor:
    """(M, K) scalar products of the rows of ``features`` (M, D) with those of ``other`` (K, D)."""
    return features.matmul_t(other) if isinstance(features, ProjectedFeatures) else features @ other.T


def _zero_loss(values: Features) -> Tensor:
    """A scalar 0 that keeps the graph (and dtype) of ``values``: the loss of an empty batch."""
    if isinstance(values, ProjectedFeatures):
        return (values.inputs.sum() + values.weight.sum() + values.bias.sum()) * 0.0
    return _promote(values).sum() * 0.0


def _row_cosine(a: Tensor, b: Tensor) -> Tensor:
    """(M,) cosine of matching rows of (M, D) tensors.

    Scaling the (M,) dot products by inverse norms never materialises normalised (M, D) copies, which
    costs several times less memory traffic (forward and backward) than ``F.cosine_similarity``.
    """
    return torch.linalg.vecdot(a, b) * _inverse_norms(a) * _inverse_norms(b)


def cosine_logits(features: Tensor, text: Tensor, temperature: float = 1.0) -> Tensor:
    """Cosine similarity of every feature with every class text embedding, divided by a temperature.

    Args:
        features: (M, D) pixel or point features (any scale; normalised here).
        text: (C, D) class text embeddings (normalised here).
        temperature: divides the cosine; 1 gives plain ``D(f_i, t_c)``.
    Returns:
        (M, C) logits (at least float32) ``D(f_i, t_c) / temperature``.
    """
    _check_features("features", features)
    _check_features("text", text, features.shape[1])
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    features = _promote(features)
    text = F.normalize(_promote(text), dim=1)
    # As in _row_cosine: divide the (M, C) products rather than normalise the (M, D) features.
    return _products(features, text) * (_inverse_norms(features).unsqueeze(1) / temperature)


def pseudo_labels(features: Tensor, text: Tensor) -> Tensor:
    """Label each feature with its nearest class text: ``y_i = argmax_c D(f_i, t_c)`` (section 3.2).

    With CLIP pixel features this is MaskCLIP's pixel-text pseudo-label; with point features it is the
    point's own prediction used by switchable self-training (section 3.4).

    Args:
        features: (M, D) features.
        text: (C, D) class text embeddings.
    Returns:
        (M,) int64 class indices in ``0..C-1``.
    """
    with torch.no_grad():
        return cosine_logits(features, text).argmax(dim=1)


def semantic_consistency_loss(
    point_features: Tensor,
    text: Tensor,
    targets: Tensor,
    temperature: float = 0.5,
    denominator: str = "negatives",
    reduction: str = "sum",
) -> Tensor:
    """Semantic consistency regularisation, Eq. 1 of the paper: a class-level InfoNCE over points.

    ``L_S = - sum_c log( sum_{i: y_i = c} exp(D(t_c, p_i)/tau) / sum_{j: y_j != c} exp(D(t_c, p_j)/tau) )``

    Each class text ``t_c`` is an anchor whose positives are all points pseudo-labelled ``c`` and whose
    negatives are all other points. Computed in log space with ``logsumexp``.

    Args:
        point_features: (M, D) point features of the pairs (the ``semantic`` head; unnormalised).
        text: (C, D) class text embeddings.
        targets: (M,) int64 class indices ``y_i`` in ``0..C-1`` (pseudo-labels or S3 targets).
        temperature: ``tau``; the paper uses 0.5.
        denominator: ``"negatives"`` (as printed: ``j: y_j != c``; a term can then be negative) or
            ``"all"`` (positives added, the usual InfoNCE form: every ratio is <= 1, so the loss >= 0).
        reduction: ``"sum"`` over the classes present in the batch (the paper) or ``"mean"`` over them.
    Returns:
        Scalar loss. Classes without positives do not contribute; with ``"negatives"`` a class
        that labels every point has an empty denominator and is skipped too (0 if no class remains).
    """
    _check_choice("denominator", denominator, DENOMINATORS)
    _check_choice("reduction", reduction, REDUCTIONS)
    logits = cosine_logits(point_features, text, temperature)
    _check_class_indices("targets", targets, logits.shape[0], logits.shape[1])
    positive = F.one_hot(targets.long(), logits.shape[1]).bool()
    counts = positive.sum(dim=0)
    keep = counts > 0
    if denominator == "negatives":
        keep &= counts < logits.shape[0]
    # Only columns with at least one positive (and one negative) enter logsumexp, so no column is all
    # -inf: that would make the backward pass NaN even for columns that are later discarded.
    logits, positive = logits[:, keep], positive[:, keep]
    if logits.shape[1] == 0:
        return _zero_loss(point_features)
    log_numerator = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=0)
    if denominator == "negatives":
        log_denominator = torch.logsumexp(logits.masked_fill(positive, float("-inf")), dim=0)
    else:
        log_denominator = torch.logsumexp(logits, dim=0)
    per_class = log_denominator - log_numerator
    return per_class.sum() if reduction == "sum" else per_class.mean()


def semantic_cross_entropy_loss(
    point_features: Tensor, text: Tensor, targets: Tensor, temperature: float = 1.0
) -> Tensor:
    """The public code's replacement for Eq. 1: per-point cross-entropy over un-normalised logits.

    ``L = mean_i CE(p_i @ T^T / tau, y_i)``: the point features are *not* normalised (the text rows
    are, as CLIP text embeddings always are). ``temperature=1`` reproduces the public code exactly.

    Args:
        point_features: (M, D) point features (the ``semantic`` head).
        text: (C, D) class text embeddings.
        targets: (M,) int64 class indices in ``0..C-1``.
        temperature: divides the logits.
    Returns:
        Scalar loss (mean over pairs; 0 when M = 0).
    """
    _check_features("point_features", point_features)
    _check_features("text", text, point_features.shape[1])
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    _check_class_indices("targets", targets, point_features.shape[0], text.shape[0])
    if point_features.shape[0] == 0:
        return _zero_loss(point_features)
    logits = _products(_promote(point_features), F.normalize(_promote(text), dim=1)) / temperature
    return F.cross_entropy(logits, targets.long())


def grid_cell_ids(
    points: Tensor, cell_size: float = 0.1, batch: Optional[Tensor] = None
) -> Tensor:
    """Index of the regular grid cell ``g_n`` holding each point (the cells of Eq. 2-4).

    Args:
        points: (M, 3) float, metres, stitched (registered) cloud in the keyframe LiDAR frame.
        cell_size: cell edge, metres (0.1 in the paper).
        batch: optional (M,) int64 sample index, so cells never span two samples of a batch.
    Returns:
        (M,) int64 cell ids in ``0..num_cells-1`` (dense; order is that of ``torch.unique``).
    """
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (M, 3), got {tuple(points.shape)}")
    if cell_size <= 0:
        raise ValueError(f"cell_size must be > 0, got {cell_size}")
    cells = torch.floor(points.double() / cell_size).long()
    if batch is not None:
        _check_rows("batch", batch, points.shape[0])
        cells = torch.cat([batch.long().unsqueeze(1), cells], dim=1)
    return torch.unique(cells, dim=0, return_inverse=True)[1]


def _segment_softmax(scores: Tensor, segments: Tensor, num_segments: int) -> Tensor:
    """Softmax of ``scores`` (R,) within each segment (R,) int64, vectorised with scatter ops."""
    # The per-segment max is only a shift for stability; softmax is invariant to it, so no gradient.
    peak = torch.full((num_segments,), float("-inf"), dtype=scores.dtype, device=scores.device)
    peak = peak.scatter_reduce(0, segments, scores.detach(), reduce="amax", include_self=True)
    weights = torch.exp(scores - peak[segments])
    total = torch.zeros(num_segments, dtype=scores.dtype, device=scores.device)
    total = total.index_add(0, segments, weights)
    return weights / total[segments]


def _check_consistency_inputs(pixel_features: Tensor, point_features: Features, pseudo_text: Tensor,
                              cell_ids: Tensor, lam: float, fusion: str) -> tuple[int, int]:
    """Validate the inputs of Eq. 2-4; returns (rows M, dimension D)."""
    _check_choice("fusion", fusion, FUSIONS)
    _check_features("pixel_features", pixel_features)
    rows, dim = pixel_features.shape
    for name, value in (("point_features", point_features), ("pseudo_text", pseudo_text)):
        _check_features(name, value, dim)
        if value.shape[0] != rows:
            raise ValueError(f"{name} must have {rows} rows like pixel_features, got {value.shape[0]}")
    _check_rows("cell_ids", cell_ids, rows)
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    return rows, dim


def fuse_cell_features(
    pixel_features: Tensor,
    point_features: Tensor,
    pseudo_text: Tensor,
    cell_ids: Tensor,
    lam: float = 1.0,
    fusion: str = "pixels_and_points",
) -> tuple[Tensor, Tensor]:
    """Semantic-guided fusion of each grid cell into one feature ``f_n``, Eq. 3-4 of the paper.

    Per cell ``g_n``: ``a_i = exp(D(x_i, t^1_i)/lambda)``, ``b_i = exp(D(p_i, t^1_i)/lambda)``, both
    divided by their joint sum over the cell's pixels and points (Eq. 3); ``f_n = sum_i (a_i x_i + b_i
    p_i)`` (Eq. 4), with ``x`` and ``p`` L2-normalised.

    Args:
        pixel_features: (M, D) CLIP pixel features ``x`` of the pairs.
        point_features: (M, D) point features ``p`` (the ``consistency`` head).
        pseudo_text: (M, D) text embedding ``t^1`` of each pair's pseudo-label.
        cell_ids: (M,) int64 cell of each pair (any integers; e.g. from :func:`grid_cell_ids`).
        lam: temperature ``lambda`` (1 in the paper).
        fusion: ``"pixels_and_points"`` (the paper) or ``"points_only"`` (the public code: a softmax of
            ``D(p, t^1)/lambda`` over the cell's points only, pixels left out).
    Returns:
        ``(fused, cell_index)``: (num_cells, D) fused features ``f_n``, one row per distinct
        cell id in ascending id order, and (M,) int64 row of ``fused`` for each pair.
    """
    rows, dim = _check_consistency_inputs(pixel_features, point_features, pseudo_text, cell_ids, lam, fusion)
    cell_index = torch.unique(cell_ids, return_inverse=True)[1]
    num_cells = int(cell_index.max()) + 1 if rows else 0
    p, t = _promote(point_features), _promote(pseudo_text)
    point_scores = _row_cosine(p, t) / lam
    fused = torch.zeros(num_cells, dim, dtype=p.dtype, device=p.device)
    if fusion == "points_only":
        point_weights = _segment_softmax(point_scores, cell_index, num_cells)
    else:
        x = _promote(pixel_features)
        pixel_scores = _row_cosine(x, t) / lam
        # Pixels and points of a cell share one softmax (Eq. 3): segments are the cell ids, twice.
        weights = _segment_softmax(
            torch.cat([pixel_scores, point_scores]), cell_index.repeat(2), num_cells
        )
        pixel_weights, point_weights = weights[:rows], weights[rows:]
        # Weights times 1/||x|| sum unit vectors without forming them (Eq. 4 uses normalised x, p).
        pixel_weights = pixel_weights * _inverse_norms(x)
        fused = fused.index_add(0, cell_index, pixel_weights.unsqueeze(1) * x)
    point_weights = point_weights * _inverse_norms(p)
    fused = fused.index_add(0, cell_index, point_weights.unsqueeze(1) * p)
    return fused, cell_index


def spatial_temporal_consistency_loss(
    pixel_features: Tensor,
    point_features: Tensor,
    pseudo_text: Tensor,
    cell_ids: Tensor,
    lam: float = 1.0,
    stop_gradient: bool = False,
    fusion: str = "pixels_and_points",
) -> Tensor:
    """Semantic-guided spatial-temporal consistency regularisation, Eq. 2 of the paper.

    ``L_SSR = sum_n sum_{(i,k) in g_n} (1 - sigmoid(D(p_i^k, f_n))) / N``, where ``f_n`` fuses the
    pixels and points of cell ``g_n`` (Eq. 3-4, :func:`fuse_cell_features`) over the K registered sweeps
    and ``N`` is the number of pairs: every point is pulled towards its cell's fused feature.

    Args:
        pixel_features: (M, D) CLIP pixel features of the pairs of all K sweeps.
        point_features: (M, D) point features (the ``consistency`` head).
        pseudo_text: (M, D) text embedding ``t^1`` of each pair's pseudo-label.
        cell_ids: (M,) int64 grid cell of each pair's (stitched) point.
        lam: ``lambda`` of Eq. 3.
        stop_gradient: treat ``f_n`` as a constant target (no gradient through the fusion).
        fusion: ``"pixels_and_points"`` (paper) or ``"points_only"`` (public code).
    Returns:
        Scalar loss (0 when M = 0).
    """
    if isinstance(point_features, ProjectedFeatures):
        return _projected_consistency_loss(pixel_features, point_features, pseudo_text, cell_ids, lam,
                                           stop_gradient, fusion)
    fused, cell_index = fuse_cell_features(
        pixel_features, point_features, pseudo_text, cell_ids, lam=lam, fusion=fusion
    )
    if cell_index.numel() == 0:
        return _zero_loss(point_features)
    if stop_gradient:
        fused = fused.detach()
    # index_select, not fused[cell_index]: its backward is an index_add, much faster on CPU than the
    # accumulating index_put of advanced indexing.
    similarity = _row_cosine(_promote(point_features), fused.index_select(0, cell_index))
    return (1.0 - torch.sigmoid(similarity)).mean()


def _projected_consistency_loss(pixel_features: Tensor, points: ProjectedFeatures, pseudo_text: Tensor,
                                cell_ids: Tensor, lam: float, stop_gradient: bool, fusion: str) -> Tensor:
    """Eq. 2-4 exactly as :func:`spatial_temporal_consistency_loss`, for point features ``p = W~ h~``
    kept factored: nothing of size (M, D) carries a gradient.

    Eq. 2 needs only the direction of ``f_n``: with the cell's joint softmax written ``e_i / Z_n``,
    ``Z_n f_n = G_n + W~ Q_n``, where ``G_n = sum_pixels e_i x_i / ||x_i||`` is constant (the pixels
    carry no gradient) and ``Q_n = sum_points e_i h~_i / ||p_i||`` lives in F + 1 dimensions. Then
    ``p_i . f_n`` and ``||f_n||^2`` follow from ``W~^T G_n``, ``W~^T W~`` and ``Q_n`` alone.
    """
    rows, dim = _check_consistency_inputs(pixel_features, points, pseudo_text, cell_ids, lam, fusion)
    if rows == 0:
        return _zero_loss(points)
    points = _promote(points)
    h, w = points.augmented
    gram = points.gram
    cell_index = torch.unique(cell_ids, return_inverse=True)[1]
    num_cells = int(cell_index.max()) + 1
    t = _promote(pseudo_text)
    inverse_p = _inverse_norms(points)
    point_scores = (h * (t @ w)).sum(dim=1) * inverse_p * _inverse_norms(t) / lam
    scores = point_scores
    if fusion == "pixels_and_points":
        x = _promote(pixel_features)
        pixel_scores = _row_cosine(x, t) / lam
        scores = torch.cat([pixel_scores, point_scores])
    # The joint softmax of Eq. 3 as e_i / Z_n, e_i shifted by the (constant) cell maximum for
    # stability; Z_n > 0 scales f_n only, and Eq. 2 takes its cosine, so Z_n is never needed.
    segments = cell_index.repeat(len(scores) // rows)
    peak = torch.full((num_cells,), float("-inf"), dtype=scores.dtype, device=scores.device)
    peak = peak.scatter_reduce(0, segments, scores.detach(), reduce="amax", include_self=True)
    exps = torch.exp(scores - peak[segments])
    point_exps = exps[-rows:]
    pooled = torch.zeros(num_cells, h.shape[1], dtype=h.dtype, device=h.device)
    pooled = pooled.index_add(0, cell_index, (point_exps * inverse_p).unsqueeze(1) * h)  # Q_n
    if fusion == "pixels_and_points":
        with torch.no_grad():
            pixel_sum = torch.zeros(num_cells, dim, dtype=x.dtype, device=x.device)
            pixel_sum.index_add_(0, cell_index, (exps[:rows] * _inverse_norms(x)).unsqueeze(1) * x)  # G_n
        pixel_in_h = pixel_sum @ w  # W~^T G_n
        pixel_square = (pixel_sum * pixel_sum).sum(dim=1)
    else:
        pixel_in_h = pooled.new_zeros(pooled.shape)
        pixel_square = pooled.new_zeros(num_cells)
    if stop_gradient:
        # f_n is a constant target: only p_i . f_n keeps the gradient through p.
        pooled, fixed_w = pooled.detach(), w.detach()
        fused_in_h = pixel_in_h + pooled @ (fixed_w.T @ w)  # W~^T (Z_n f_n)
        with torch.no_grad():
            square = pixel_square + 2 * (pixel_in_h * pooled).sum(dim=1) + ((pooled @ gram) * pooled).sum(dim=1)
    else:
        fused_in_h = pixel_in_h + pooled @ gram
        square = pixel_square + 2 * (pixel_in_h * pooled).sum(dim=1) + ((pooled @ gram) * pooled).sum(dim=1)
    similarity = (h * fused_in_h.index_select(0, cell_index)).sum(dim=1) * inverse_p \
        * square.clamp_min(1e-24).rsqrt().index_select(0, cell_index)
    return (1.0 - torch.sigmoid(similarity)).mean()


S3_POINT_LABELS = ("argmax", "aligned")


def aligned_point_labels(point_features: Features, text: Tensor, pixel_labels: Tensor,
                         temperature: float = 0.5) -> Tensor:
    """The points' own labels for S3, aligned with the teacher's class distribution of the batch.

    Distribution alignment (Berthelot et al., "ReMixMatch", ICLR 2020, section 3.2): the point class
    probabilities ``q_i = softmax_c(D(p_i, t_c) / tau)`` are scaled per class by ``pi_c / mean_i q_ic``,
    where ``pi_c`` is the frequency of class ``c`` among the pixel pseudo-labels of the batch
    (add-one smoothed), and the label is the argmax of the scaled ``q_i``. A student whose argmax
    over-predicts a class (Eq. 1 ranks points per class well but calibrates classes against each other
    poorly) then does not teach itself that bias; no ground truth is used.

    Args:
        point_features: (M, D) point features (the ``semantic`` head).
        text: (C, D) class text embeddings.
        pixel_labels: (M,) int64 pixel pseudo-labels of the same pairs (class indices).
        temperature: ``tau`` of the point probabilities.
    Returns:
        (M,) int64 class indices in ``0..C-1``.
    """
    num_classes = text.shape[0]
    _check_class_indices("pixel_labels", pixel_labels, point_features.shape[0], num_classes)
    with torch.no_grad():
        probabilities = torch.softmax(cosine_logits(point_features, text, temperature), dim=1)
        if probabilities.shape[0] == 0:
            return pixel_labels.clone()
        counts = torch.bincount(pixel_labels, minlength=num_classes).to(probabilities.dtype)
        prior = (counts + 1.0) / (counts.sum() + num_classes)
        return (probabilities * (prior / probabilities.mean(dim=0).clamp_min(1e-12))).argmax(dim=1)


def switchable_self_training_targets(
    pixel_labels: Tensor,
    point_labels: Tensor,
    epoch: int,
    s3_start_epoch: int = 10,
    generator: Optional[torch.Generator] = None,
    switch_probability: float = 0.5,
) -> Tensor:
    """Switchable self-training (S3, section 3.4): the targets ``y_i`` for Eq. 1 of this step.

    Before ``s3_start_epoch`` the pixel pseudo-labels are used. From it on (epochs count from 0, so 10 of
    20 epochs means the second half), each step picks at random, for all pairs at once, between the pixel
    pseudo-labels and the points' own predictions ``argmax_c D(p_i, t_c)``.

    Args:
        pixel_labels: (M,) int64 pixel pseudo-labels (class indices).
        point_labels: (M,) int64 point predictions (class indices; see :func:`pseudo_labels`).
        epoch: current epoch, 0-based.
        s3_start_epoch: first epoch at which S3 is active.
        generator: CPU torch generator for the coin flip (reproducible and resumable); drawn from only
            while S3 is active.
        switch_probability: probability of using the point predictions in an active step.
    Returns:
        (M,) int64 targets (one of the two inputs).
    """
    _check_rows("point_labels", point_labels, pixel_labels.shape[0])
    if not 0.0 <= switch_probability <= 1.0:
        raise ValueError(f"switch_probability must lie in [0, 1], got {switch_probability}")
    if epoch < s3_start_epoch:
        return pixel_labels
    use_points = bool(torch.rand((), generator=generator) < switch_probability)
    logger.debug("S3 epoch %d: targets from %s", epoch, "points" if use_points else "pixels")
    return point_labels if use_points else pixel_labels


def kl_distillation_loss(
    point_logits: Tensor, pixel_logits: Tensor, temperature: float = 1.0
) -> Tensor:
    """Plain logit distillation, the "KL" row of the paper's Table 3 ablation.

    ``L = T^2 / M * sum_i KL(softmax(x_i / T) || softmax(p_i / T))``: the point class distribution is
    pushed towards the pixel's (teacher) distribution; the teacher side carries no gradient.

    Args:
        point_logits: (M, C) point logits (e.g. :func:`cosine_logits` of the point features).
        pixel_logits: (M, C) pixel logits from the CLIP teacher.
        temperature: ``T``.
    Returns:
        Scalar loss (0 when M = 0).
    """
    _check_features("point_logits", point_logits)
    _check_features("pixel_logits", pixel_logits, point_logits.shape[1])
    if pixel_logits.shape[0] != point_logits.shape[0]:
        raise ValueError(
            f"pixel_logits must have {point_logits.shape[0]} rows, got {pixel_logits.shape[0]}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if point_logits.shape[0] == 0:
        return _promote(point_logits).sum() * 0.0
    log_student = F.log_softmax(_promote(point_logits) / temperature, dim=1)
    log_teacher = F.log_softmax(_promote(pixel_logits.detach()) / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


@dataclass(frozen=True)
class LossConfig:
    """Every knob of the pretraining objective; defaults are the paper's (section 3 and its public code)."""

    semantic_loss: str = "infonce"  # "infonce" (Eq. 1) | "ce" (public code) | "kl" (Table 3 "KL" row)
    temperature: float = 0.5  # tau of Eq. 1 (also divides the "ce" logits)
    denominator: str = "negatives"  # Eq. 1 denominator: "negatives" (as printed) | "all"
    semantic_reduction: str = "sum"  # Eq. 1 over present classes: "sum" (paper) | "mean"
    lam: float = 1.0  # lambda of Eq. 3
    fusion: str = "pixels_and_points"  # Eq. 3-4 | "points_only" (public code)
    stop_gradient: bool = False  # detach f_n in Eq. 2
    semantic_weight: float = 1.0
    spatial_temporal_weight: float = 1.0

    def __post_init__(self) -> None:
        _check_choice("semantic_loss", self.semantic_loss, SEMANTIC_VARIANTS)
        _check_choice("denominator", self.denominator, DENOMINATORS)
        _check_choice("semantic_reduction", self.semantic_reduction, REDUCTIONS)
        _check_choice("fusion", self.fusion, FUSIONS)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LossConfig":
        """Build from a config mapping; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown loss option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def total_loss(semantic: Tensor, spatial_temporal: Tensor, config: LossConfig = LossConfig()) -> Tensor:
    """The training objective ``L = w_S * L_S + w_SSR * L_SSR`` (section 3; both weights 1 in the paper).

    Args:
        semantic: scalar Eq. 1 loss (or its ``ce`` variant).
        spatial_temporal: scalar Eq. 2 loss.
        config: supplies the two weights.
    Returns:
        Scalar loss.
    """
    return config.semantic_weight * semantic + config.spatial_temporal_weight * spatial_temporal


def pretraining_loss(
    pixel_features: Tensor,
    semantic_point_features: Tensor,
    consistency_point_features: Tensor,
    text: Tensor,
    cell_ids: Tensor,
    targets: Optional[Tensor] = None,
    config: LossConfig = LossConfig(),
) -> dict[str, Tensor]:
    """All CLIP2Scene losses for one batch of point-pixel pairs (Eq. 1 + Eq. 2-4).

    The pseudo-label of each pair (``argmax_c D(x_i, t_c)``) selects ``t^1`` for Eq. 3; Eq. 1 uses
    ``targets`` when given (e.g. from :func:`switchable_self_training_targets`), else the pseudo-labels.
    ``config.semantic_loss`` picks the semantic term: Eq. 1 (``infonce``), a per-point cross-entropy
    to the same targets (``ce``), or :func:`kl_distillation_loss` of the point logits towards the pixel
    logits (``kl``, which distils whole distributions and so ignores ``targets``).

    Args:
        pixel_features: (M, D) CLIP pixel features of the pairs.
        semantic_point_features: (M, D) ``semantic`` head output at the paired points.
        consistency_point_features: (M, D) ``consistency`` head output at the paired points.
        text: (C, D) class text embeddings.
        cell_ids: (M,) int64 grid cell of each pair.
        targets: optional (M,) int64 class indices for Eq. 1.
        config: loss options and weights.
    Returns:
        dict with scalar tensors ``total``, ``semantic``, ``spatial_temporal`` and the (M,) int64
        ``pseudo_labels``.
    """
    labels = pseudo_labels(pixel_features, text)
    targets = labels if targets is None else targets
    if config.semantic_loss == "infonce":
        semantic = semantic_consistency_loss(
            semantic_point_features, text, targets, config.temperature, config.denominator,
            config.semantic_reduction,
        )
    elif config.semantic_loss == "ce":
        semantic = semantic_cross_entropy_loss(
            semantic_point_features, text, targets, config.temperature
        )
    else:
        semantic = kl_distillation_loss(cosine_logits(semantic_point_features, text, config.temperature),
                                        cosine_logits(pixel_features, text, config.temperature))
    spatial_temporal = spatial_temporal_consistency_loss(
        pixel_features, consistency_point_features, text[labels], cell_ids,
        lam=config.lam, stop_gradient=config.stop_gradient, fusion=config.fusion,
    )
    return {
        "total": total_loss(semantic, spatial_temporal, config),
        "semantic": semantic,
        "spatial_temporal": spatial_temporal,
        "pseudo_labels": labels,
    }

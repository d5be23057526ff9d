"""Generalized Focal Loss family used by NanoDet: QFL, DFL and GIoU, plus box overlaps.

Every loss computes an element-wise loss and reduces it like official NanoDet
(``nanodet/model/loss/utils.py``): optional element-wise ``weight``, then
``reduction="mean"`` divides the sum by ``avg_factor`` when one is given (plain mean
otherwise), ``"sum"`` sums, ``"none"`` returns the element-wise values. The numbers are
the official definitions (``gfocal_loss.py``, ``iou_loss.py``); the code is our own.

Boxes are ``xyxy`` in any consistent unit (pixels or strides).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["none", "mean", "sum"]


def weight_reduce_loss(
    loss: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply an element-wise ``weight`` and reduce (official ``weight_reduce_loss``).

    With ``avg_factor``, ``"mean"`` is ``sum / avg_factor`` and ``"sum"`` is an error
    (as in the official code); ``"none"`` ignores ``avg_factor``.
    """
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        return loss
    if avg_factor is None:
        return loss.mean() if reduction == "mean" else loss.sum()
    if reduction == "mean":
        return loss.sum() / avg_factor
    raise ValueError('avg_factor can only be used with reduction="mean" or "none"')


# ------------------------------------------------------------------------------ box overlaps


def box_area(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` -> ``(...)``; negative extents give negative areas (as official)."""
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1])


def pairwise_iou(
    boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """IoU of every box of ``(M, 4)`` with every box of ``(N, 4)`` -> ``(M, N)``.

    Official ``bbox_overlaps(mode="iou", is_aligned=False, eps=1e-6)``: the union is
    clamped to at least ``eps``.
    """
    lt = torch.max(boxes1_xyxy[:, None, :2], boxes2_xyxy[None, :, :2])
    rb = torch.min(boxes1_xyxy[:, None, 2:], boxes2_xyxy[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1_xyxy)[:, None] + box_area(boxes2_xyxy)[None, :] - overlap
    return overlap / union.clamp(min=eps)


def aligned_iou(
    pred_xyxy: torch.Tensor, target_xyxy: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """IoU of row ``i`` of ``(N, 4)`` with row ``i`` of ``(N, 4)`` -> ``(N,)``."""
    overlap, union = _aligned_overlap_union(pred_xyxy, target_xyxy)
    return overlap / union.clamp(min=eps)


def aligned_giou(
    pred_xyxy: torch.Tensor, target_xyxy: torch.Tensor, eps: float = 1e-7
) -> torch.Tensor:
    """Generalized IoU of aligned rows -> ``(N,)`` in ``[-1, 1]``.

    ``giou = iou - (enclose - union) / enclose`` with union and enclosing area clamped to
    at least ``eps`` (official ``bbox_overlaps(mode="giou", is_aligned=True)``).
    """
    overlap, union = _aligned_overlap_union(pred_xyxy, target_xyxy)
    union = union.clamp(min=eps)
    enclose_lt = torch.min(pred_xyxy[:, :2], target_xyxy[:, :2])
    enclose_rb = torch.max(pred_xyxy[:, 2:], target_xyxy[:, 2:])
    enclose_wh = (enclose_rb - enclose_lt).clamp(min=0)
    enclose_area = (enclose_wh[:, 0] * enclose_wh[:, 1]).clamp(min=eps)
    return overlap / union - (enclose_area - union) / enclose_area


def _aligned_overlap_union(
    pred_xyxy: torch.Tensor, target_xyxy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if pred_xyxy.shape != target_xyxy.shape:
        raise ValueError(
            f"aligned boxes need equal shapes, got {tuple(pred_xyxy.shape)} and {tuple(target_xyxy.shape)}"
        )
    lt = torch.max(pred_xyxy[:, :2], target_xyxy[:, :2])
    rb = torch.min(pred_xyxy[:, 2:], target_xyxy[:, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    return overlap, box_area(pred_xyxy) + box_area(target_xyxy) - overlap


# ------------------------------------------------------------------------------ losses


def quality_focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_scores: torch.Tensor,
    beta: float = 2.0,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Quality Focal Loss (GFL, arXiv 2006.04388), summed over classes per sample.

    Args:
        logits: ``(N, C)`` raw class logits.
        labels: ``(N,)`` int class index; any value outside ``[0, C)`` (NanoDet uses ``C``)
            marks a negative.
        label_scores: ``(N,)`` quality target (IoU) of the positive's class, in ``[0, 1]``.
        beta: focusing exponent.
        weight: optional ``(N,)`` per-sample weight.

    Every entry is supervised towards 0 with ``BCE(x, 0) * sigmoid(x)**beta``; the
    positive class of a positive sample instead towards its score with
    ``BCE(x, score) * |score - sigmoid(x)|**beta``.
    """
    num_classes = logits.shape[1]
    prob = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    loss = loss * prob.pow(beta)
    pos = torch.nonzero((labels >= 0) & (labels < num_classes), as_tuple=False).squeeze(1)
    if pos.numel() > 0:
        pos_labels = labels[pos].long()
        pos_logits = logits[pos, pos_labels]
        pos_scores = label_scores[pos].to(logits.dtype)
        modulator = (pos_scores - prob[pos, pos_labels]).abs().pow(beta)
        pos_loss = F.binary_cross_entropy_with_logits(pos_logits, pos_scores, reduction="none")
        loss = loss.index_put((pos, pos_labels), pos_loss * modulator)
    return weight_reduce_loss(loss.sum(dim=1), weight, reduction, avg_factor)


def distribution_focal_loss(
    pred_bins: torch.Tensor,
    target_dist: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Distribution Focal Loss: cross entropy to the two bins around a real target.

    Args:
        pred_bins: ``(N, n + 1)`` logits over the bins ``0..n`` (before softmax).
        target_dist: ``(N,)`` target distance in bin units, ``0 <= t <= n``
            (NanoDet clamps targets to ``n - 0.1``).

    ``loss = CE(bin floor(t)) * (floor(t) + 1 - t) + CE(bin floor(t) + 1) * (t - floor(t))``.
    A target of exactly ``n`` (outside the official range) is handled as all weight on
    bin ``n`` instead of indexing past the last bin.
    """
    left = target_dist.long()
    weight_left = (left + 1).to(target_dist.dtype) - target_dist
    weight_right = target_dist - left.to(target_dist.dtype)
    last_bin = pred_bins.shape[1] - 1
    right = (left + 1).clamp(max=last_bin)
    loss = (
        F.cross_entropy(pred_bins, left.clamp(max=last_bin), reduction="none") * weight_left
        + F.cross_entropy(pred_bins, right, reduction="none") * weight_right
    )
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def giou_loss(
    pred_xyxy: torch.Tensor,
    target_xyxy: torch.Tensor,
    eps: float = 1e-7,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """``1 - GIoU`` of aligned ``(N, 4)`` boxes (arXiv 1902.09630); 0 for identical boxes."""
    loss = 1.0 - aligned_giou(pred_xyxy, target_xyxy, eps)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)

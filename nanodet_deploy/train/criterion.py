"""Training losses per head: assignment + QFL / GIoU / DFL, as official NanoDet computes them.

``build_criterion(model_cfg, weights)`` returns a callable

    criterion(head_out, aux_out, gt_boxes, gt_labels, input_hw) -> LossOutput

``head_out`` / ``aux_out``: raw ``(B, P, C + 4 * (reg_max + 1))`` (``model.forward_train``);
``gt_boxes``: per image ``(G, 4)`` xyxy input pixels, ``gt_labels``: per image ``(G,)`` int64.

Legacy NanoDet (official ``GFLHead.loss`` / ``loss_single``): ATSS on grid cells (offset 0.5);
boxes and distances in stride units; the QFL target is the IoU of the *predicted* box with its
gt; QFL avg factor = mean over ranks of ``sum_i max(num_pos_i, 1)`` (at least 1); GIoU and DFL
are weighted by the positive's max class score and divided by the rank-mean of the weight sum
(DFL also by 4).

NanoDet-Plus (official ``NanoDetPlusHead.loss`` / ``_get_loss_from_assign``): dynamic soft-label
assignment (offset 0) from the aux head's detached predictions while it exists (else the head's
own); the QFL target is the assigner's IoU; boxes in pixels; QFL avg factor
``max(mean num_pos, 1)``; GIoU / DFL weight sum ``max(mean sum of weights, 1)``. The aux head is
trained with the same assignment and its own terms (``aux_loss_*``) are added.

Deviations, both about degenerate batches: a batch without any positive keeps its QFL on the
negatives (official legacy zeroes all three terms), and the avg factors are all-reduced on
every rank even when it has no positive (official NanoDet-Plus skips the collective there,
which can hang DDP). Losses that have nothing to average are ``0 * sum(preds)`` so every
parameter still gets a (zero) gradient, which DDP needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nanodet_deploy.config import ModelConfig
from nanodet_deploy.models.decode import Integral, bbox2distance, center_priors, distance2bbox
from nanodet_deploy.train.assigners import Assignment, atss_assign, dynamic_soft_label_assign
from nanodet_deploy.train.distributed import reduce_mean
from nanodet_deploy.train.losses import (
    aligned_iou,
    distribution_focal_loss,
    giou_loss,
    quality_focal_loss,
)


@dataclass(frozen=True)
class LossWeights:
    """Official NanoDet / NanoDet-Plus ``loss_weight`` values."""

    qfl: float = 1.0
    dfl: float = 0.25
    bbox: float = 2.0


@dataclass(frozen=True, eq=False)
class LossOutput:
    total: torch.Tensor  # scalar to backpropagate
    terms: dict[str, torch.Tensor]  # loss_qfl, loss_bbox, loss_dfl (+ aux_loss_*), weighted
    num_pos: int  # positives assigned in this process's batch


@dataclass(frozen=True, eq=False)
class _Targets:
    """Per prior of the flattened batch ``(B * P)``."""

    labels: torch.Tensor  # class, num_classes = background
    boxes: torch.Tensor  # (B * P, 4) gt box in input pixels (zeros for negatives)
    scores: torch.Tensor | None  # QFL target; None: IoU of the predicted box (legacy)
    num_pos_per_image: list[int]


class _GFLBase:
    def __init__(self, cfg: ModelConfig, weights: LossWeights) -> None:
        self.num_classes = cfg.num_classes
        self.reg_max = cfg.reg_max
        self.strides = tuple(cfg.strides)
        self.center_offset = cfg.center_offset
        self.weights = weights
        self.integral = Integral(cfg.reg_max)

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls, reg = out.split([self.num_classes, 4 * (self.reg_max + 1)], dim=-1)
        return cls, reg

    def _box_terms(
        self,
        cls: torch.Tensor,  # (N, C) flattened batch
        reg: torch.Tensor,  # (N, 4 * (R + 1))
        pos: torch.Tensor,  # (n,) indices of positives
        pred_boxes: torch.Tensor,  # (n, 4) positives' predicted boxes, unit u
        target_boxes: torch.Tensor,  # (n, 4) their gt boxes, unit u
        target_dist: torch.Tensor,  # (n, 4) gt distances in stride units
        min_avg: float | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score-weighted GIoU and DFL of the positives (official weighting and avg factors)."""
        w = cls[pos].detach().sigmoid().max(dim=1).values
        avg = reduce_mean(w.sum()).item()
        avg = max(avg, min_avg) if min_avg is not None else avg
        if pos.numel() == 0 or avg <= 0:
            zero = reg.sum() * 0
            return zero, zero
        bbox = giou_loss(pred_boxes, target_boxes, weight=w, avg_factor=avg)
        dfl = distribution_focal_loss(
            reg[pos].reshape(-1, self.reg_max + 1),
            target_dist.reshape(-1),
            weight=w[:, None].expand(-1, 4).reshape(-1),
            avg_factor=4.0 * avg,
        )
        return bbox * self.weights.bbox, dfl * self.weights.dfl


class GFLCriterion(_GFLBase):
    """Legacy NanoDet: ATSS + QFL / GIoU / DFL in stride units (see module doc)."""

    def __init__(
        self, cfg: ModelConfig, weights: LossWeights, atss_topk: int = 9,
        octave_base_scale: float = 5.0,
    ) -> None:  # fmt: skip
        super().__init__(cfg, weights)
        self.atss_topk = atss_topk
        self.octave_base_scale = octave_base_scale

    def __call__(
        self,
        head_out: torch.Tensor,
        aux_out: torch.Tensor | None,
        gt_boxes: Sequence[torch.Tensor],
        gt_labels: Sequence[torch.Tensor],
        input_hw: tuple[int, int],
    ) -> LossOutput:
        priors = center_priors(input_hw, self.strides, self.center_offset, head_out.device)
        assigns = [atss_assign(priors, b, self.atss_topk, self.octave_base_scale) for b in gt_boxes]
        targets = _collect(assigns, gt_boxes, gt_labels, self.num_classes, with_scores=False)
        cls, reg = (t.reshape(-1, t.shape[-1]) for t in self._split(head_out))
        all_priors = priors.repeat(head_out.shape[0], 1)
        pos = torch.nonzero(targets.labels < self.num_classes).squeeze(1)
        strides = all_priors[pos, 2:3]
        centers = all_priors[pos, :2] / strides
        pred = distance2bbox(centers, self.integral(reg[pos]))
        target = targets.boxes[pos] / strides
        scores = torch.zeros_like(targets.labels, dtype=cls.dtype)
        scores[pos] = aligned_iou(pred.detach(), target)
        num_samples = sum(max(n, 1) for n in targets.num_pos_per_image)
        qfl_avg = max(reduce_mean(torch.tensor(float(num_samples), device=cls.device)).item(), 1.0)
        qfl = quality_focal_loss(cls, targets.labels, scores, avg_factor=qfl_avg)
        dist = bbox2distance(centers, target, float(self.reg_max))
        bbox, dfl = self._box_terms(cls, reg, pos, pred, target, dist, min_avg=None)
        terms = {"loss_qfl": qfl * self.weights.qfl, "loss_bbox": bbox, "loss_dfl": dfl}
        return LossOutput(sum(terms.values()), terms, int(pos.numel()))


class NanoDetPlusCriterion(_GFLBase):
    """NanoDet-Plus: dynamic soft-label assignment guided by the aux head (see module doc)."""

    def __init__(
        self, cfg: ModelConfig, weights: LossWeights, dsl_topk: int = 13, iou_factor: float = 3.0
    ) -> None:
        super().__init__(cfg, weights)
        self.dsl_topk = dsl_topk
        self.iou_factor = iou_factor

    def __call__(
        self,
        head_out: torch.Tensor,
        aux_out: torch.Tensor | None,
        gt_boxes: Sequence[torch.Tensor],
        gt_labels: Sequence[torch.Tensor],
        input_hw: tuple[int, int],
    ) -> LossOutput:
        priors = center_priors(input_hw, self.strides, self.center_offset, head_out.device)
        main = self._decode(head_out, priors)
        guide = self._decode(aux_out, priors) if aux_out is not None else main
        assigns = [
            dynamic_soft_label_assign(
                guide[0][b].detach(), priors, guide[2][b].detach(), gt_boxes[b], gt_labels[b],
                topk=self.dsl_topk, iou_factor=self.iou_factor,
            )
            for b in range(head_out.shape[0])
        ]  # fmt: skip
        targets = _collect(assigns, gt_boxes, gt_labels, self.num_classes, with_scores=True)
        all_priors = priors.repeat(head_out.shape[0], 1)
        terms = self._terms(main, targets, all_priors)
        if aux_out is not None:
            aux_terms = self._terms(guide, targets, all_priors)
            terms.update({f"aux_{k}": v for k, v in aux_terms.items()})
        num_pos = sum(targets.num_pos_per_image)
        return LossOutput(sum(terms.values()), terms, num_pos)

    def _decode(self, out: torch.Tensor, priors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(cls (B, P, C), reg (B, P, 4(R+1)), boxes (B, P, 4) in pixels, unclamped)."""
        cls, reg = self._split(out)
        dist = self.integral(reg) * priors[:, 2, None]
        return cls, reg, distance2bbox(priors[:, :2], dist)

    def _terms(
        self, preds: tuple[torch.Tensor, ...], targets: _Targets, all_priors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        cls, reg, boxes = (t.reshape(-1, t.shape[-1]) for t in preds)
        num_pos = float(sum(targets.num_pos_per_image))
        qfl_avg = max(reduce_mean(torch.tensor(num_pos, device=cls.device)).item(), 1.0)
        qfl = quality_focal_loss(cls, targets.labels, targets.scores, avg_factor=qfl_avg)
        pos = torch.nonzero(targets.labels < self.num_classes).squeeze(1)
        target = targets.boxes[pos]
        dist = bbox2distance(all_priors[pos, :2], target) / all_priors[pos, 2:3]
        dist = dist.clamp(min=0, max=self.reg_max - 0.1)
        bbox, dfl = self._box_terms(cls, reg, pos, boxes[pos], target, dist, min_avg=1.0)
        return {"loss_qfl": qfl * self.weights.qfl, "loss_bbox": bbox, "loss_dfl": dfl}


def _collect(
    assigns: Sequence[Assignment],
    gt_boxes: Sequence[torch.Tensor],
    gt_labels: Sequence[torch.Tensor],
    num_classes: int,
    with_scores: bool,
) -> _Targets:
    """Per-image assignments -> flattened labels, gt boxes and QFL scores of the batch."""
    labels, boxes, scores = [], [], []
    for a, b, lab in zip(assigns, gt_boxes, gt_labels, strict=True):
        labels.append(a.labels(lab, num_classes))
        box = torch.zeros((a.gt_index.shape[0], 4), dtype=torch.float32, device=a.gt_index.device)
        pos = a.positive_mask
        box[pos] = b.to(box.dtype)[a.gt_index[pos]]
        boxes.append(box)
        scores.append(a.iou.float())
    return _Targets(
        labels=torch.cat(labels),
        boxes=torch.cat(boxes),
        scores=torch.cat(scores) if with_scores else None,
        num_pos_per_image=[a.num_positives for a in assigns],
    )


def build_criterion(
    cfg: ModelConfig, weights: LossWeights | None = None
) -> GFLCriterion | NanoDetPlusCriterion:
    weights = weights or LossWeights()
    return (
        GFLCriterion(cfg, weights) if cfg.arch == "nanodet" else NanoDetPlusCriterion(cfg, weights)
    )

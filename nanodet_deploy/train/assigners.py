"""Label assignment: which priors (grid points) learn which ground-truth box.

Two assigners, both re-implementations of official NanoDet behaviour:

* :func:`atss_assign` - ATSS for the legacy NanoDet head (``atss_assigner.py`` with the
  grid cells of ``gfl_head.py``).
* :func:`dynamic_soft_label_assign` - the dynamic soft-label assigner of NanoDet-Plus
  (``dsl_assigner.py``).

Priors are ``(P, 4)`` tensors ``(cx, cy, stride_w, stride_h)`` in input pixels, ordered
level by level (strides ascending), row-major inside a level: the layout of
``nanodet_deploy.models.decode.center_priors``. Both return an :class:`Assignment` with a
**0-based** gt index per prior and ``-1`` for background (official code uses 1-based
indices with 0 for background; ``gt_index + 1`` converts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nanodet_deploy.train.losses import pairwise_iou

BACKGROUND = -1
INSIDE_MARGIN_ATSS_PX = 0.01  # official ATSS: a positive's center lies > 0.01 inside the gt


@dataclass(frozen=True, eq=False)
class Assignment:
    """Result of assigning the priors of one image.

    ``gt_index``: ``(P,)`` int64, 0-based index of the assigned gt, ``-1`` = background.
    ``iou``: ``(P,)`` float, IoU with the assigned gt (0 for background). ATSS: IoU of the
    prior's grid cell; dynamic soft-label: IoU of the predicted (decoded) box, which is
    the quality target of QFL.
    """

    gt_index: torch.Tensor
    iou: torch.Tensor

    @property
    def positive_mask(self) -> torch.Tensor:
        return self.gt_index >= 0

    @property
    def num_positives(self) -> int:
        return int(self.positive_mask.sum())

    def labels(self, gt_labels: torch.Tensor, background_label: int) -> torch.Tensor:
        """``(P,)`` class label per prior, ``background_label`` (NanoDet: ``num_classes``) for negatives."""
        out = torch.full_like(self.gt_index, background_label)
        pos = self.positive_mask
        out[pos] = gt_labels.to(out.dtype)[self.gt_index[pos]]
        return out


def empty_assignment(num_priors: int, device: torch.device, dtype: torch.dtype) -> Assignment:
    return Assignment(
        gt_index=torch.full((num_priors,), BACKGROUND, dtype=torch.long, device=device),
        iou=torch.zeros(num_priors, dtype=dtype, device=device),
    )


def centers_inside(
    points_xy: torch.Tensor, boxes_xyxy: torch.Tensor, margin: float = 0.0
) -> torch.Tensor:
    """``(P, G)`` bool: point ``p`` lies strictly more than ``margin`` inside box ``g``."""
    lt = points_xy[:, None, :] - boxes_xyxy[None, :, :2]
    rb = boxes_xyxy[None, :, 2:] - points_xy[:, None, :]
    return torch.cat([lt, rb], dim=-1).min(dim=-1).values > margin


def level_sizes(priors: torch.Tensor) -> list[int]:
    """Number of priors per level: runs of equal stride in the level-ordered prior list."""
    _, counts = torch.unique_consecutive(priors[:, 2], return_counts=True)
    return [int(c) for c in counts]


# ------------------------------------------------------------------------------------ ATSS


def grid_cells(priors: torch.Tensor, octave_base_scale: float = 5.0) -> torch.Tensor:
    """``(P, 4)`` xyxy squares of side ``octave_base_scale * stride`` centred on each prior.

    Legacy NanoDet ``get_grid_cells`` (``octave_base_scale: 5``; priors with offset 0.5).
    """
    half = 0.5 * octave_base_scale * priors[:, 2]
    cx, cy = priors[:, 0], priors[:, 1]
    return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1)


@torch.no_grad()
def atss_assign(
    priors: torch.Tensor,
    gt_boxes_xyxy: torch.Tensor,
    topk: int = 9,
    octave_base_scale: float = 5.0,
) -> Assignment:
    """Adaptive Training Sample Selection (arXiv 1912.02424) as legacy NanoDet runs it.

    1. Each prior gets a grid cell (:func:`grid_cells`); IoU of every cell with every gt.
    2. Per level and gt, the ``topk`` cells whose centers are nearest (L2) to the gt center
       are candidates.
    3. Per gt, threshold = mean + std (unbiased) of the candidates' IoUs; candidates with
       IoU >= threshold whose center lies > 0.01 px inside the gt are positive.
    4. A prior positive for several gts takes the one with the highest IoU.
    """
    cells = grid_cells(priors, octave_base_scale)
    num_priors, num_gt = cells.shape[0], gt_boxes_xyxy.shape[0]
    if num_gt == 0 or num_priors == 0:
        return empty_assignment(num_priors, cells.device, cells.dtype)
    gt_boxes_xyxy = gt_boxes_xyxy.to(cells.dtype)
    ious = pairwise_iou(cells, gt_boxes_xyxy)  # (P, G)
    cell_centers = (cells[:, :2] + cells[:, 2:]) / 2.0
    gt_centers = (gt_boxes_xyxy[:, :2] + gt_boxes_xyxy[:, 2:]) / 2.0
    distances = (cell_centers[:, None, :] - gt_centers[None, :, :]).pow(2).sum(-1).sqrt()

    candidates = _nearest_per_level(distances, level_sizes(priors), topk)  # (K, G)
    gt_columns = torch.arange(num_gt, device=cells.device)
    candidate_ious = ious[candidates, gt_columns]  # (K, G)
    threshold = candidate_ious.mean(0) + candidate_ious.std(0)
    inside = centers_inside(cell_centers, gt_boxes_xyxy, INSIDE_MARGIN_ATSS_PX)
    is_pos = (candidate_ious >= threshold[None, :]) & inside[candidates, gt_columns]

    masked = torch.full_like(ious, -torch.inf)
    pos_prior, pos_gt = candidates[is_pos], gt_columns.expand_as(candidates)[is_pos]
    masked[pos_prior, pos_gt] = ious[pos_prior, pos_gt]
    best_iou, best_gt = masked.max(dim=1)
    positive = best_iou > -torch.inf
    return Assignment(
        gt_index=torch.where(positive, best_gt, torch.full_like(best_gt, BACKGROUND)),
        iou=torch.where(positive, best_iou, torch.zeros_like(best_iou)),
    )


def _nearest_per_level(distances: torch.Tensor, sizes: list[int], topk: int) -> torch.Tensor:
    """Indices ``(K, G)`` of the ``min(topk, n_level)`` nearest priors of every level."""
    picked, start = [], 0
    for size in sizes:
        k = min(topk, size)
        _, idx = distances[start : start + size].topk(k, dim=0, largest=False)
        picked.append(idx + start)
        start += size
    return torch.cat(picked, dim=0)


# ------------------------------------------------------------------ dynamic soft label (Plus)


@torch.no_grad()
def dynamic_soft_label_assign(
    cls_logits: torch.Tensor,
    priors: torch.Tensor,
    decoded_boxes_xyxy: torch.Tensor,
    gt_boxes_xyxy: torch.Tensor,
    gt_labels: torch.Tensor,
    topk: int = 13,
    iou_factor: float = 3.0,
    official_double_sigmoid: bool = True,
    soft_center_radius: float | None = None,
) -> Assignment:
    """NanoDet-Plus dynamic soft-label assignment (official ``DynamicSoftLabelAssigner``).

    Args:
        cls_logits: ``(P, C)`` raw class logits (detached) of the head that assigns
            (NanoDet-Plus: the aux head while it exists).
        priors: ``(P, 4)`` ``(cx, cy, stride, stride)``; NanoDet-Plus uses offset 0.
        decoded_boxes_xyxy: ``(P, 4)`` predicted boxes in input pixels (detached).
        gt_boxes_xyxy: ``(G, 4)``; gt_labels: ``(G,)`` int.
        topk: IoUs summed to get each gt's dynamic k (official ``assigner_cfg: topk=13``).
        iou_factor: weight of the IoU cost (official 3.0).
        official_double_sigmoid: official NanoDet-Plus passes ``sigmoid(logits)`` to an
            assigner that treats its input as logits (BCE-with-logits, and ``sigmoid``
            again in the modulating factor). ``True`` reproduces that exactly; ``False``
            computes the cost on the raw logits (mmdetection/RTMDet behaviour).
        soft_center_radius: ``None`` (official NanoDet: no center cost). A number adds
            RTMDet's soft center prior ``10 ** (distance / stride - radius)``.

    Cost per (valid prior, gt): ``BCE(s, soft) * |soft - sigmoid(s)|**2`` summed over
    classes, where ``soft`` is the one-hot gt label times the IoU of the predicted box,
    plus ``iou_factor * -log(IoU + 1e-7)``. Valid priors have their center strictly
    inside at least one gt. Each gt takes its ``k = max(1, int(sum of top-topk IoUs))``
    cheapest valid priors; a prior taken by several gts keeps the cheapest one.
    """
    num_priors, num_gt = priors.shape[0], gt_boxes_xyxy.shape[0]
    dtype = decoded_boxes_xyxy.dtype
    if num_gt == 0 or num_priors == 0:
        return empty_assignment(num_priors, priors.device, dtype)
    gt_boxes_xyxy = gt_boxes_xyxy.to(dtype)
    valid = centers_inside(priors[:, :2], gt_boxes_xyxy).any(dim=1)
    if not bool(valid.any()):
        return empty_assignment(num_priors, priors.device, dtype)

    ious = pairwise_iou(decoded_boxes_xyxy[valid], gt_boxes_xyxy)  # (V, G)
    scores = cls_logits[valid].sigmoid() if official_double_sigmoid else cls_logits[valid]
    cost = soft_label_cls_cost(scores, gt_labels, ious) + iou_factor * -torch.log(ious + 1e-7)
    if soft_center_radius is not None:
        cost = cost + soft_center_prior(priors[valid], gt_boxes_xyxy, soft_center_radius)

    matched_gt, matched = dynamic_k_matching(cost, ious, topk)  # (V,), (V,) bool
    gt_index = torch.full((num_priors,), BACKGROUND, dtype=torch.long, device=priors.device)
    iou = torch.zeros(num_priors, dtype=dtype, device=priors.device)
    valid_idx = torch.nonzero(valid, as_tuple=False).squeeze(1)[matched]
    gt_index[valid_idx] = matched_gt[matched]
    iou[valid_idx] = ious[matched, matched_gt[matched]]
    return Assignment(gt_index=gt_index, iou=iou)


def soft_label_cls_cost(
    scores_as_logits: torch.Tensor, gt_labels: torch.Tensor, ious: torch.Tensor
) -> torch.Tensor:
    """``(V, C)`` inputs, ``(G,)`` labels, ``(V, G)`` IoUs -> ``(V, G)`` classification cost."""
    num_valid, num_classes = scores_as_logits.shape
    num_gt = gt_labels.shape[0]
    onehot = F.one_hot(gt_labels.long(), num_classes).to(ious.dtype)  # (G, C)
    soft_label = onehot[None, :, :] * ious[:, :, None]  # (V, G, C)
    logits = scores_as_logits.to(ious.dtype)[:, None, :].expand(num_valid, num_gt, num_classes)
    modulator = (soft_label - logits.sigmoid()).abs().pow(2.0)
    bce = F.binary_cross_entropy_with_logits(logits, soft_label, reduction="none")
    return (bce * modulator).sum(dim=-1)


def soft_center_prior(
    priors: torch.Tensor, gt_boxes_xyxy: torch.Tensor, radius: float
) -> torch.Tensor:
    """RTMDet center cost ``10 ** (|center - gt_center| / stride - radius)`` -> ``(V, G)``."""
    gt_centers = (gt_boxes_xyxy[:, :2] + gt_boxes_xyxy[:, 2:]) / 2.0
    dist = (priors[:, None, :2] - gt_centers[None, :, :]).pow(2).sum(-1).sqrt() / priors[:, 2:3]
    return torch.pow(10.0, dist - radius)


def dynamic_k_matching(
    cost: torch.Tensor, ious: torch.Tensor, topk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """SimOTA-style matching on ``(V, G)`` cost and IoU.

    Returns ``(gt index per valid prior, matched mask)``, both ``(V,)``.
    """
    num_valid, num_gt = cost.shape
    top_ious, _ = torch.topk(ious, min(topk, num_valid), dim=0)
    dynamic_ks = torch.clamp(top_ious.sum(0).int(), min=1).tolist()
    matching = torch.zeros_like(cost, dtype=torch.bool)
    for gt_idx, k in enumerate(dynamic_ks):
        _, pos = torch.topk(cost[:, gt_idx], k=k, largest=False)
        matching[pos, gt_idx] = True
    multiple = matching.sum(dim=1) > 1
    if bool(multiple.any()):
        cheapest = cost[multiple].argmin(dim=1)
        matching[multiple] = F.one_hot(cheapest, num_gt).bool()
    matched = matching.any(dim=1)
    return matching.to(torch.uint8).argmax(dim=1), matched

"""Do two backends give the same detections? Greedy matching that knows about NMS near-ties.

Every reference detection scoring at least ``compare_score`` needs a partner among the other
backend's detections: same label, best IoU (> 0.5). Every other detection scoring at least
``compare_score + slack`` needs one among the reference's. Partners must agree within the
tolerances (IoU >= ``min_iou``, score difference <= ``score_tol``).

A near-tie is not a disagreement: when two overlapping candidates of one class have scores
closer than the numerical error, NMS keeps either. So a detection that has no partner within
tolerance still counts as agreeing ("tie") when the *other* side's raw output holds the same
candidate: the same label with a score within ``score_tol`` and a box with IoU >= ``min_iou``.
Ties are counted and reported.

When a side returned ``max_det`` detections, which candidates made the cut is arbitrary near its
lowest kept score, so only detections scoring above that score + ``score_tol`` are compared
(``compared_from`` reports the effective threshold). Boxes clipped to zero area (a detection
entirely outside the image, e.g. on padding) have no IoU; they are left out and counted
(``zero_area``). NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nanodet_deploy.postprocess import center_points
from nanodet_deploy.structures import Detections, ResizeInfo


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with ``(N, 4)`` boxes."""
    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(inter / (area + areas - inter))


@dataclass(frozen=True)
class Candidates:
    """Every point of a decoded output as a candidate: boxes in original pixels, class scores."""

    boxes_xyxy: np.ndarray  # (P, 4)
    scores: np.ndarray  # (P, C)

    @classmethod
    def from_output(
        cls,
        decoded: np.ndarray,
        strides: tuple[int, ...],
        center_offset: float,
        resize_info: ResizeInfo,
    ) -> Candidates:
        h, w = resize_info.input_hw
        centers, point_strides = center_points((h, w), strides, center_offset)
        c = decoded.shape[1] - 4
        dist = decoded[:, c:] * point_strides[:, None]
        boxes = np.concatenate([centers - dist[:, :2], centers + dist[:, 2:]], axis=1)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        return cls(resize_info.to_original(boxes), decoded[:, :c])

    def has(
        self, label: int, score: float, box: np.ndarray, score_tol: float, min_iou: float
    ) -> bool:
        near = np.flatnonzero(np.abs(self.scores[:, label] - score) <= score_tol)
        return bool(near.size) and float(box_iou(box, self.boxes_xyxy[near]).max()) >= min_iou


@dataclass(frozen=True)
class DetectionAgreement:
    num_ref: int  # reference detections with score >= compare_score
    num_other: int  # other detections with score >= compare_score
    unmatched_ref: int  # reference detections the other side lacks (ties excluded)
    unmatched_other: int
    ties: int  # disagreements explained by NMS near-ties (module doc)
    compared_from: float  # score threshold actually used (raised by max_det truncation)
    zero_area: int  # detections left out because their clipped box has no area
    min_iou: float | None  # over partners within tolerance (None: no partners)
    max_score_diff: float | None

    @property
    def labels_equal(self) -> bool:
        return self.unmatched_ref == 0 and self.unmatched_other == 0


def _without_zero_area(dets: Detections) -> tuple[Detections, int]:
    b = dets.boxes_xyxy
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    if keep.all():
        return dets, 0
    kept = Detections(b[keep], dets.scores[keep], dets.labels[keep], dets.class_names)
    return kept, int((~keep).sum())


def _partners(a: Detections, b: Detections, min_score: float) -> list[tuple[int, int | None]]:
    """Greedy partners in ``b`` (same label, best IoU > 0.5) of ``a``'s detections >= min_score."""
    used = np.zeros(len(b), dtype=bool)
    pairs: list[tuple[int, int | None]] = []
    for i in np.flatnonzero(a.scores >= min_score):
        same = np.flatnonzero((b.labels == a.labels[i]) & ~used)
        ious = box_iou(a.boxes_xyxy[i], b.boxes_xyxy[same]) if same.size else np.zeros(0)
        if ious.size == 0 or ious.max() <= 0.5:
            pairs.append((int(i), None))
            continue
        best = int(same[int(np.argmax(ious))])
        used[best] = True
        pairs.append((int(i), best))
    return pairs


def match_detections(
    ref: Detections,
    other: Detections,
    ref_candidates: Candidates,
    other_candidates: Candidates,
    compare_score: float = 0.3,
    slack: float = 0.02,
    score_tol: float = 0.01,
    min_iou: float = 0.98,
    max_det: int | None = None,
) -> DetectionAgreement:
    """Agreement of two detection sets of one image (module doc)."""
    for dets in (ref, other):
        if max_det is not None and len(dets) >= max_det:
            compare_score = max(compare_score, float(dets.scores.min()) + score_tol)
    ref, ref_zero = _without_zero_area(ref)
    other, other_zero = _without_zero_area(other)

    def in_cands(cands: Candidates, dets: Detections, k: int) -> bool:
        label = int(dets.labels[k])
        return cands.has(label, float(dets.scores[k]), dets.boxes_xyxy[k], score_tol, min_iou)

    ious, diffs = [], []
    unmatched_ref = unmatched_other = ties = 0
    for i, j in _partners(ref, other, compare_score):
        if j is None:
            tie = in_cands(other_candidates, ref, i)
            ties, unmatched_ref = ties + tie, unmatched_ref + (not tie)
            continue
        iou = float(box_iou(ref.boxes_xyxy[i], other.boxes_xyxy[j : j + 1])[0])
        diff = abs(float(ref.scores[i]) - float(other.scores[j]))
        if (iou < min_iou or diff > score_tol) and in_cands(ref_candidates, other, j):
            ties += 1  # the other kept a different one of two near-equal candidates
            continue
        ious.append(iou)
        diffs.append(diff)
    for j, i in _partners(other, ref, compare_score + slack):
        if i is None:
            tie = in_cands(ref_candidates, other, j)
            ties, unmatched_other = ties + tie, unmatched_other + (not tie)
    return DetectionAgreement(
        num_ref=int((ref.scores >= compare_score).sum()),
        num_other=int((other.scores >= compare_score).sum()),
        unmatched_ref=unmatched_ref,
        unmatched_other=unmatched_other,
        ties=ties,
        compared_from=compare_score,
        zero_area=ref_zero + other_zero,
        min_iou=min(ious) if ious else None,
        max_score_diff=max(diffs) if diffs else None,
    )

"""NumPy postprocessing shared by every runtime: decoded head output -> Detections.

Public API::

    postprocess(output, *, input_hw, strides, center_offset, resize_info, score_thresh=0.05,
                iou_thresh=0.6, max_det=100, top_k=1000, multi_label=True,
                class_names=()) -> Detections
    center_points(input_hw, strides, center_offset) -> (centers_xy (P, 2), point_strides (P,))
    decode_raw(output_raw, num_classes, reg_max) -> (P, C + 4)   # official-compatible raw layout
    sigmoid(logits) -> probabilities
    nms(boxes_xyxy, scores, labels=None, *, iou_thresh, max_det=None) -> kept indices

Input layout (DESIGN.md "Exported graph"): ``(P, C + 4)`` or ``(1, P, C + 4)`` float32, class
scores after sigmoid, then the distances l, t, r, b **in units of the level's stride**. Points
go level by level (strides ascending), row-major inside a level; a level has
``ceil(H / s) * ceil(W / s)`` points for the network input tensor ``(H, W)``. The center of cell
(row i, col j) is ``((j + o) * s, (i + o) * s)``; ``o`` (``center_offset``) comes from meta.json.

``postprocess`` follows official NanoDet's ``post_process`` / ``multiclass_nms``:

1. candidates: every (point, class) with ``score > score_thresh`` (strict), or with
   ``multi_label=False`` only the best class of each point (faster, not official);
2. ``top_k``: at most that many candidates by score enter NMS (``None``: no limit; official
   HEAD has none). The default 1000 bounds the cost on noisy outputs (an untrained model can
   give 10^5 candidates); it never binds on the official fixtures (<= 804 candidates);
3. boxes: centers -/+ distances * stride, clamped to ``[0, W] x [0, H]`` of the input tensor;
4. class-aware greedy NMS with torchvision semantics: IoU without +1, a box is suppressed when
   its IoU with a kept higher-scoring box of the same class is **> iou_thresh** (float32 IoU
   compared in float64 like torchvision's kernel: IoU 60/100 = 0.6000000238 is > 0.6), kept
   boxes in descending score order (ties: earlier candidate first, i.e. point then class);
5. the first ``max_det`` kept boxes, mapped back with ``resize_info.to_original`` (clipped).

Class-aware NMS compares labels instead of offsetting coordinates by ``label * (max + 1)`` as
official ``batched_nms`` does; the two agree except where float32 rounding of the offset
coordinates moves an IoU across the threshold (never on the official fixtures).

NMS is vectorized and stops once ``max_det`` boxes are kept. It takes the best live
candidates as one block (as many as keep their same-label pairs within a budget), computes
the IoU of those pairs only, and solves greedy suppression inside the block by a fixed-point
iteration; the kept boxes then suppress their later same-label candidates at once. Real
outputs take one to three blocks; the cost grows with same-label pairs, not with classes.
"""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple

import numpy as np

from nanodet_deploy.structures import Detections, ResizeInfo

log = logging.getLogger(__name__)

# NMS resolves the best live candidates as one block while their same-label pairs fit this
# budget (IoUs computed at once), at least _MIN_BLOCK of them; tuned on nanodet-m outputs.
_PAIR_BUDGET = 8192
_MIN_BLOCK = 64


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 logistic function; saturates to exactly 0 / 1 without overflow warnings."""
    x = np.asarray(logits, dtype=np.float32)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def center_points(
    input_hw: tuple[int, int], strides: tuple[int, ...], center_offset: float
) -> tuple[np.ndarray, np.ndarray]:
    """Centers ``(P, 2)`` float32 (x, y input pixels) and their strides ``(P,)``, read-only.

    Cached per ``(input_hw, strides, center_offset)``.
    """
    key_hw = (int(input_hw[0]), int(input_hw[1]))
    return _center_points(key_hw, tuple(int(s) for s in strides), float(center_offset))


@functools.lru_cache(maxsize=64)
def _center_points(
    input_hw: tuple[int, int], strides: tuple[int, ...], center_offset: float
) -> tuple[np.ndarray, np.ndarray]:
    h, w = input_hw
    if h <= 0 or w <= 0 or not strides or min(strides) <= 0:
        raise ValueError(f"bad input_hw {input_hw} or strides {strides}")
    centers, point_strides = [], []
    for s in strides:
        rows, cols = -(-h // s), -(-w // s)
        xs = (np.arange(cols, dtype=np.float64) + center_offset) * s
        ys = (np.arange(rows, dtype=np.float64) + center_offset) * s
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        centers.append(np.stack([xx.ravel(), yy.ravel()], axis=1))
        point_strides.append(np.full(rows * cols, s, dtype=np.float64))
    centers_xy = np.concatenate(centers).astype(np.float32)
    strides_p = np.concatenate(point_strides).astype(np.float32)
    centers_xy.setflags(write=False)
    strides_p.setflags(write=False)
    return centers_xy, strides_p


def decode_raw(output_raw: np.ndarray, num_classes: int, reg_max: int) -> np.ndarray:
    """Raw ``(P, C + 4 * (reg_max + 1))`` (scores, bin logits) -> decoded ``(P, C + 4)``.

    Softmax over the ``reg_max + 1`` bins of each side, then the integral (dot with
    0..reg_max): distances in stride units. Scores are copied as they are (raw exports already
    apply the sigmoid; for a head's logits apply :func:`sigmoid` to ``[:, :C]`` yourself).
    """
    raw = _as_2d(output_raw, "output_raw")
    bins = reg_max + 1
    if raw.shape[1] != num_classes + 4 * bins:
        raise ValueError(
            f"raw output has {raw.shape[1]} channels, expected {num_classes} + 4 * {bins} "
            f"for num_classes={num_classes}, reg_max={reg_max}"
        )
    logits = raw[:, num_classes:].reshape(-1, 4, bins)
    exp = np.exp(logits - logits.max(axis=2, keepdims=True))
    probs = exp / exp.sum(axis=2, keepdims=True)
    decoded = np.empty((raw.shape[0], num_classes + 4), dtype=np.float32)
    decoded[:, :num_classes] = raw[:, :num_classes]
    decoded[:, num_classes:] = probs @ np.arange(bins, dtype=np.float32)
    return decoded


def postprocess(
    output: np.ndarray,
    *,
    input_hw: tuple[int, int],
    strides: tuple[int, ...],
    center_offset: float,
    resize_info: ResizeInfo,
    score_thresh: float = 0.05,
    iou_thresh: float = 0.6,
    max_det: int | None = 100,
    top_k: int | None = 1000,
    multi_label: bool = True,
    class_names: tuple[str, ...] = (),
) -> Detections:
    """Decoded head output of one image -> Detections in original-image pixels (module doc)."""
    for name, limit in (("max_det", max_det), ("top_k", top_k)):
        if limit is not None and limit < 0:
            raise ValueError(f"{name} must be >= 0 or None (no limit), got {limit}")
    out = _as_2d(output, "output")
    num_classes = out.shape[1] - 4
    centers_xy, point_strides = center_points(input_hw, strides, center_offset)
    _check_output(out, centers_xy, input_hw, strides, resize_info, class_names)
    points, labels, scores = _candidates(out[:, :num_classes], score_thresh, multi_label, top_k)
    best = _top_k(scores, top_k)
    if best is not None:
        log.debug("top_k=%d kept %d of %d candidates", top_k, best.size, scores.size)
        points, labels, scores = points[best], labels[best], scores[best]
    if scores.size == 0:
        return Detections.empty(tuple(class_names))
    boxes = _decode_boxes(out[points, num_classes:], centers_xy[points], point_strides[points])
    boxes[:, 0::2].clip(0.0, float(input_hw[1]), out=boxes[:, 0::2])
    boxes[:, 1::2].clip(0.0, float(input_hw[0]), out=boxes[:, 1::2])
    keep = nms(boxes, scores, labels, iou_thresh=iou_thresh, max_det=max_det)
    return Detections(
        boxes_xyxy=resize_info.to_original(boxes[keep]),
        scores=scores[keep].astype(np.float32, copy=False),
        labels=labels[keep].astype(np.int64, copy=False),
        class_names=tuple(class_names),
    )


def nms(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    iou_thresh: float,
    max_det: int | None = None,
) -> np.ndarray:
    """Greedy (class-aware when ``labels`` given) NMS with torchvision semantics.

    Returns the indices of the kept boxes, descending score, ties in index order; at most
    ``max_det`` of them. IoU is computed like torchvision's kernel: in the dtype of
    ``boxes_xyxy`` (float32 normally) as ``inter / (area_i + area_j - inter)`` without +1, and
    compared with ``iou_thresh`` in float64 (suppress when ``>``).
    """
    if max_det is not None and max_det < 0:
        raise ValueError(f"max_det must be >= 0 or None (no limit), got {max_det}")
    n = len(scores)
    limit = n if max_det is None else min(int(max_det), n)
    if n == 0 or limit == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    lab = np.zeros(n, np.int64) if labels is None else np.take(np.asarray(labels, np.int64), order)
    boxes = _ScoreOrdered.build(np.take(np.asarray(boxes_xyxy), order, axis=0), lab, iou_thresh)
    alive = np.ones(n, dtype=bool)  # neither resolved nor suppressed yet
    kept_parts: list[np.ndarray] = []
    num_kept, start = 0, 0
    while num_kept < limit:
        live = start + np.flatnonzero(alive[start:])
        if live.size == 0:
            break
        block = live[: _block_size(lab[live])]
        kept = block[_resolve_block(boxes, block)]
        kept_parts.append(kept)
        num_kept += kept.size
        start = int(block[-1]) + 1
        if num_kept < limit and start < n:
            i, j = boxes.later_same_label_pairs(kept, start)
            live_j = np.take(alive, j)
            i, j = i[live_j], j[live_j]
            alive[j[boxes.iou_above(i, j)]] = False
    return order[np.concatenate(kept_parts)[:limit]]


class _ScoreOrdered(NamedTuple):
    """Boxes in descending score order, with a label-major index for same-label lookups."""

    boxes: np.ndarray  # (N, 4) x1, y1, x2, y2, C-contiguous float
    areas: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) int64
    by_label: np.ndarray  # positions sorted by (label, position)
    label_keys: np.ndarray  # labels[by_label] * N + by_label, ascending
    thresh: np.floating  # iou_thresh in the boxes' dtype, see _strict_threshold

    @classmethod
    def build(cls, boxes_xyxy: np.ndarray, labels: np.ndarray, iou_thresh: float) -> _ScoreOrdered:
        dtype = boxes_xyxy.dtype if boxes_xyxy.dtype in (np.float32, np.float64) else np.float32
        boxes = np.ascontiguousarray(boxes_xyxy, dtype=dtype).reshape(-1, 4)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        by_label = np.argsort(labels, kind="stable")
        keys = labels[by_label] * len(labels) + by_label
        return cls(boxes, areas, labels, by_label, keys, _strict_threshold(iou_thresh, dtype))

    def iou_above(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """(E,) bool: IoU(box i[e], box j[e]) > iou_thresh, torchvision arithmetic (nms doc)."""
        box_i, box_j = np.take(self.boxes, i, axis=0), np.take(self.boxes, j, axis=0)
        inter = np.minimum(box_i[:, 2], box_j[:, 2])
        inter -= np.maximum(box_i[:, 0], box_j[:, 0])
        np.maximum(inter, 0, out=inter)
        inter_h = np.minimum(box_i[:, 3], box_j[:, 3])
        inter_h -= np.maximum(box_i[:, 1], box_j[:, 1])
        np.maximum(inter_h, 0, out=inter_h)
        inter *= inter_h
        union = np.take(self.areas, i)
        union += np.take(self.areas, j)
        union -= inter
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 -> nan: never suppresses
            np.divide(inter, union, out=inter)
        return inter > self.thresh

    def later_same_label_pairs(self, kept: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """All pairs (k, j): k in ``kept``, j >= start with the same label (j score-ordered)."""
        n = len(self.labels)
        kept_keys = np.take(self.labels, kept) * n
        first = np.searchsorted(self.label_keys, kept_keys + start)
        counts = np.searchsorted(self.label_keys, kept_keys + n) - first
        return np.repeat(kept, counts), np.take(self.by_label, _ranges(first, counts))


def _strict_threshold(thresh: float, dtype: np.dtype) -> np.floating:
    """Largest ``dtype`` value t with t <= thresh: for x in dtype, ``x > t`` iff ``x > thresh``.

    torchvision compares its float32 IoU with the threshold in double; comparing in float32
    with this t gives the same answer without converting every IoU to float64.
    """
    t = np.dtype(dtype).type(thresh)
    return np.nextafter(t, np.dtype(dtype).type(-np.inf)) if float(t) > thresh else t


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each (s, c)."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if ends.size else 0) + np.repeat(starts - (ends - counts), counts)


def _block_size(live_labels: np.ndarray) -> int:
    """Longest prefix of the live boxes whose same-label pairs fit in ``_PAIR_BUDGET``."""
    perm = np.argsort(live_labels, kind="stable")
    sorted_labels = np.take(live_labels, perm)
    rank_sorted = np.arange(perm.size) - np.searchsorted(sorted_labels, sorted_labels)
    ranks = np.empty(perm.size, dtype=np.int64)  # earlier live boxes with the same label
    ranks[perm] = rank_sorted
    fits = int(np.searchsorted(np.cumsum(ranks), _PAIR_BUDGET, side="right"))
    return max(fits, min(_MIN_BLOCK, live_labels.size))


def _same_label_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (a, b), a < b, with labels[a] == labels[b]."""
    perm = np.argsort(labels, kind="stable")
    sorted_labels = np.take(labels, perm)
    positions = np.arange(perm.size)
    later = np.searchsorted(sorted_labels, sorted_labels, side="right") - positions - 1
    first = np.repeat(positions, later)
    return np.take(perm, first), np.take(perm, _ranges(positions + 1, later))


def _resolve_block(boxes: _ScoreOrdered, block: np.ndarray) -> np.ndarray:
    """Greedy keep mask for a score-ordered block of live boxes, considering only the block.

    Suppression edges i -> j (i < j, same label, IoU > thresh) are found at once; then the
    fixed-point iteration ``keep[j] = not any(keep[i] for edges i -> j)`` runs. The system is
    triangular, so its only fixed point is the greedy answer, reached after at most (longest
    suppression chain + 1) rounds.
    """
    src, dst = _same_label_pairs(np.take(boxes.labels, block))
    hit = boxes.iou_above(np.take(block, src), np.take(block, dst))
    src, dst = src[hit], dst[hit]
    keep = np.ones(block.size, dtype=bool)
    while True:
        new = np.ones(block.size, dtype=bool)
        new[dst[keep[src]]] = False
        if np.array_equal(new, keep):
            return keep
        keep = new


def _candidates(
    scores_pc: np.ndarray, score_thresh: float, multi_label: bool, top_k: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point index, class, score) of each candidate, in (point, class) row-major order.

    Scores are compared with the threshold in float32, as torch does (``score > 0.05``).

    With many more candidates than ``top_k`` (noisy outputs), pairs that cannot reach the
    top k are dropped early: every top-k pair scores at least the k-th largest per-point max.
    """
    mask = scores_pc > np.float32(score_thresh)  # NaN scores (a broken model) never pass
    if not multi_label:
        points = np.flatnonzero(mask.any(axis=1))
        kept = np.where(mask[points], np.take(scores_pc, points, axis=0), -np.inf)
        labels = kept.argmax(axis=1)
        return points, labels, scores_pc[points, labels]
    if top_k == 0:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.float32),)
    if top_k is not None and len(scores_pc) > top_k and np.count_nonzero(mask) > 4 * top_k:
        point_max = scores_pc.max(axis=1)
        mask &= scores_pc >= np.partition(point_max, len(point_max) - top_k)[-top_k]
    points, labels = np.divmod(np.flatnonzero(mask), scores_pc.shape[1])
    return points, labels, scores_pc[points, labels]


def _top_k(scores: np.ndarray, k: int | None) -> np.ndarray | None:
    """Indices (ascending) of the ``k`` best scores, ties to the lower index; None: keep all."""
    if k is None or scores.size <= k:
        return None
    if k == 0:
        return np.zeros(0, np.int64)
    kth = np.partition(scores, scores.size - k)[scores.size - k]
    above = np.flatnonzero(scores > kth)
    ties = np.flatnonzero(scores == kth)[: k - above.size]
    return np.sort(np.concatenate([above, ties]))


def _decode_boxes(
    distances: np.ndarray, centers_xy: np.ndarray, point_strides: np.ndarray
) -> np.ndarray:
    """(N, 4) l, t, r, b in stride units around (N, 2) centers -> (N, 4) float32 xyxy."""
    dist_px = distances.astype(np.float32, copy=False) * point_strides[:, None]
    boxes = np.empty((len(dist_px), 4), dtype=np.float32)
    boxes[:, :2] = centers_xy - dist_px[:, :2]
    boxes[:, 2:] = centers_xy + dist_px[:, 2:]
    return boxes


def _as_2d(output: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(output)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (P, K) or (1, P, K), got shape {np.shape(output)}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


def _check_output(
    out: np.ndarray,
    centers_xy: np.ndarray,
    input_hw: tuple[int, int],
    strides: tuple[int, ...],
    resize_info: ResizeInfo,
    class_names: tuple[str, ...],
) -> None:
    num_points, channels = out.shape
    if num_points != len(centers_xy):
        raise ValueError(
            f"output has {num_points} points, but input_hw {tuple(input_hw)} with strides "
            f"{tuple(strides)} gives {len(centers_xy)}: wrong input size, or a raw-layout output "
            f"that needs decode_raw first"
        )
    if channels <= 4:
        raise ValueError(f"output needs C + 4 channels with C >= 1, got {channels}")
    if class_names and len(class_names) != channels - 4:
        raise ValueError(
            f"{len(class_names)} class names for an output with {channels - 4} classes"
        )
    if tuple(resize_info.input_hw) != (int(input_hw[0]), int(input_hw[1])):
        raise ValueError(
            f"resize_info.input_hw {resize_info.input_hw} differs from input_hw {tuple(input_hw)}: "
            "both must be the network input tensor's (H, W)"
        )

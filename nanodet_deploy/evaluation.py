"""COCO mAP of any detector, measured through the deployment path. Torch-free.

``evaluate(detect, records, class_names)`` loads every image with the runtime's
``load_image``, calls ``detect(image) -> Detections`` and scores the result with pycocotools:
mAP@[.5:.95], AP50, AP75, AP small/medium/large, AR@100 and per-class AP. ``detect`` is any
callable; the project's are all ``Detector(...).detect`` with :data:`EVAL_SETTINGS`: an export
folder (any backend), a checkpoint (torch), or, during training, the model in-process
(``train/validate.py``), so an exported artifact's accuracy is measured with the very
preprocess -> runtime -> postprocess code that deploys it. ``evaluate_detector`` /
``evaluate_backend`` do it for a data YAML's split.

Validation settings are official NanoDet's: keep-ratio resize padded to a multiple of 32
(the ``pad`` geometry) at the model's input size, score > 0.05, class-aware NMS at IoU 0.6, at
most 100 detections per image. The sampler is the model's (meta.json's preprocess block), so
the mAP is the one of the preprocessing the export ships with.

pycocotools' printing is captured into ``EvalResult.summary``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from nanodet_deploy.config import default_class_names
from nanodet_deploy.datasets import ImageRecord, load_split, records_to_coco
from nanodet_deploy.detector import Detector
from nanodet_deploy.preprocess import ImageLoadError, load_image
from nanodet_deploy.runtimes.base import Backend, BorrowedBackend
from nanodet_deploy.structures import Detections
from nanodet_deploy.train_config import DataConfig, load_data_config

LOG = logging.getLogger(__name__)

DetectFn = Callable[[np.ndarray], Detections]
# Official NanoDet evaluation: keep-ratio resize padded to a multiple of 32, score > 0.05,
# class-aware NMS at IoU 0.6, 100 detections per image (Detector keyword arguments).
EVAL_SETTINGS: dict[str, Any] = dict(geometry="pad", score_thresh=0.05, iou_thresh=0.6, max_det=100)
_STAT_NAMES = ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
               "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")  # fmt: skip


@dataclass(frozen=True)
class EvalResult:
    """COCO bbox metrics in [0, 1] (-1 where pycocotools has no ground truth for an entry)."""

    map: float  # AP@[.5:.95]
    ap50: float
    ap75: float
    stats: dict[str, float]  # all 12 COCO summary numbers by name
    per_class_ap: dict[str, float]  # AP@[.5:.95] per class, nan without ground truth
    per_class_ap50: dict[str, float]
    num_images: int  # images evaluated (the metrics cover these only)
    num_detections: int
    summary: str = field(default="", repr=False)  # pycocotools' printed table
    num_skipped: int = 0  # images that could not be read while evaluating (not scored)
    skipped: tuple[str, ...] = ()  # why, one message per skipped image

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("per_class_ap", "per_class_ap50"):
            d[key] = {k: (None if math.isnan(v) else v) for k, v in d[key].items()}
        return d


def coco_detections(
    records: Sequence[ImageRecord], detections: Sequence[Detections]
) -> list[dict[str, Any]]:
    """COCO result entries (``category_id = label + 1``, bbox xywh in original pixels)."""
    out = []
    for rec, det in zip(records, detections, strict=True):
        for box, score, label in zip(det.boxes_xyxy.tolist(), det.scores.tolist(),
                                     det.labels.tolist(), strict=True):  # fmt: skip
            x1, y1, x2, y2 = box
            out.append({"image_id": int(rec.image_id), "category_id": int(label) + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})  # fmt: skip
    return out


def coco_map(
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    detections: Sequence[Detections],
) -> EvalResult:
    """Score per-image ``detections`` (same order as ``bench.records``) against their ground truth."""

    results = coco_detections(records, detections)
    names = list(class_names)
    if not results:  # pycocotools cannot load an empty result list
        zeros = {n: 0.0 for n in _STAT_NAMES}
        per_class = {n: (0.0 if _has_gt(records, k) else math.nan) for k, n in enumerate(names)}
        return EvalResult(0.0, 0.0, 0.0, zeros, per_class, dict(per_class), len(records), 0)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        gt = COCO()
        gt.dataset = records_to_coco(records, names)
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {n: float(v) for n, v in zip(_STAT_NAMES, evaluator.stats, strict=True)}
    precision = evaluator.eval["precision"]  # (iou thr, recall, class, area, max dets)
    per_class = {n: _mean_valid(precision[:, :, k, 0, -1]) for k, n in enumerate(names)}
    per_class50 = {n: _mean_valid(precision[0, :, k, 0, -1]) for k, n in enumerate(names)}
    return EvalResult(
        stats["map"], stats["ap50"], stats["ap75"], stats, per_class, per_class50,
        len(records), len(results), buffer.getvalue(),
    )  # fmt: skip


def evaluate(
    detect: DetectFn,
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    on_image: Callable[[int, int], None] | None = None,
) -> tuple[EvalResult, list[dict[str, Any]]]:
    """Run ``detect`` on every record's image; returns the metrics and the COCO result entries.

    An image that cannot be read now (deleted or damaged since the records were loaded) is
    skipped with a warning: the metrics cover the evaluated images and their ground truth
    only, and ``EvalResult.num_skipped`` / ``skipped`` say what was left out. ValueError
    when no image can be read. ``on_image(done, total)`` is called after each image
    (progress display).
    """
    detections, evaluated, skipped = [], [], []
    for i, rec in enumerate(records):
        try:
            image = load_image(rec.path)
        except (OSError, ImageLoadError) as exc:
            LOG.warning("%s; skipped, not evaluated", exc)
            skipped.append(str(exc))
        else:
            detections.append(detect(image))
            evaluated.append(rec)
        if on_image is not None:
            on_image(i + 1, len(records))
    if records and not evaluated:
        raise ValueError(
            f"none of the {len(records)} images could be read:\n  " + "\n  ".join(skipped)
        )
    result = coco_map(evaluated, class_names, detections)
    if skipped:
        result = replace(result, num_skipped=len(skipped), skipped=tuple(skipped))
    return result, coco_detections(evaluated, detections)


def evaluate_detector(
    detector: Detector,
    data: str | os.PathLike,
    split: str = "val",
    on_image: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Metrics of an opened ``Detector`` on ``split`` of a data YAML (the caller sets its
    evaluation settings, normally :data:`EVAL_SETTINGS`)."""
    data_cfg = load_data_config(data)
    records, names = load_eval_records(data_cfg, detector.class_names, split, str(data))
    result, _ = evaluate(detector.detect, records, names, on_image=on_image)
    return result


def evaluate_backend(
    backend: Backend,
    data: str | os.PathLike,
    split: str = "val",
    input_hw: tuple[int, int] | None = None,
    sampler: str | None = None,
) -> EvalResult:
    """Metrics of an opened backend with :data:`EVAL_SETTINGS` (the benchmarks' and the
    exporter's hook). The caller keeps ownership of ``backend``."""
    with Detector(
        BorrowedBackend(backend), input_hw=input_hw, sampler=sampler, **EVAL_SETTINGS
    ) as detector:
        return evaluate_detector(detector, data, split)


def load_eval_records(
    data: DataConfig, model_class_names: Sequence[str], split: str = "val", source: str = "data"
) -> tuple[tuple[ImageRecord, ...], tuple[str, ...]]:
    """Records of ``split`` and their class names, checked against the model's classes.

    Without ``data.class_names``, a model with real class names (not ``class_i`` / COCO
    defaults) fixes the class order; a different number of classes is an error.
    """
    model_names = tuple(model_class_names)
    generic = model_names == default_class_names(len(model_names))
    wanted = tuple(data.class_names) or (None if generic else model_names)
    loaded = load_split(data, split, wanted, source=source)
    if len(loaded.class_names) != len(model_names):
        raise ValueError(
            f"{source}: the data has {len(loaded.class_names)} classes "
            f"{list(loaded.class_names)[:10]}, the model {len(model_names)}"
        )
    if not generic and tuple(loaded.class_names) != model_names:
        raise ValueError(
            f"{source}: data classes {list(loaded.class_names)} differ from the model's "
            f"{list(model_names)}"
        )
    if not loaded.records:
        raise ValueError(f"{source}: data.{split} has no images")
    return loaded.records, tuple(loaded.class_names)


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else math.nan


def _has_gt(records: Sequence[ImageRecord], label: int) -> bool:
    return any(bool((r.labels == label).any()) for r in records)

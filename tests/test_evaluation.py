"""COCO evaluation through the deployment path: known mAPs and the torch detect function."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from detect_helpers import preprocess_as

from nanodet_deploy.datasets import ImageRecord, load_voc
from nanodet_deploy.evaluation import coco_map, evaluate
from nanodet_deploy.structures import Detections
from nanodet_deploy.train.validate import torch_detect_fn


def record(image_id: int, boxes, labels, hw=(100, 100)) -> ImageRecord:
    return ImageRecord(
        path=Path(f"/nonexistent/{image_id}.jpg"), height=hw[0], width=hw[1],
        boxes_xyxy=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int64), image_id=image_id,
    )  # fmt: skip


def dets(boxes, scores, labels) -> Detections:
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32),
        np.asarray(labels, np.int64),
    )


def gt_detections(rec: ImageRecord) -> Detections:
    return dets(rec.boxes_xyxy, np.ones(len(rec.labels)), rec.labels)


def test_perfect_detections_on_raccoon_val_score_one(raccoon_dir):
    val = load_voc(raccoon_dir, "val")
    result = coco_map(val.records, val.class_names, [gt_detections(r) for r in val.records])
    assert result.map == pytest.approx(1.0) and result.ap50 == pytest.approx(1.0)
    assert result.per_class_ap == {"raccoon": pytest.approx(1.0)}
    assert result.num_images == 40 and result.num_detections == val.summary.boxes
    assert "Average Precision" in result.summary  # pycocotools' table captured, not printed
    json.dumps(result.to_dict())


def test_one_of_two_found_gives_101_point_ap():
    """Recall reaches 0.5 at precision 1: 51 of pycocotools' 101 recall points score 1."""
    records = [record(1, [[10, 10, 50, 50]], [0]), record(2, [[20, 20, 60, 70]], [0])]
    found = [dets([[10, 10, 50, 50]], [0.9], [0]), Detections.empty()]
    result = coco_map(records, ["a"], found)
    assert result.map == pytest.approx(51 / 101) and result.ap50 == pytest.approx(51 / 101)
    # a higher-scoring false positive halves the precision at that recall
    with_fp = [dets([[60, 60, 90, 90], [10, 10, 50, 50]], [0.95, 0.9], [0, 0]), Detections.empty()]
    result = coco_map(records, ["a"], with_fp)
    assert result.map == pytest.approx(0.5 * 51 / 101)
    assert result.per_class_ap["a"] == pytest.approx(0.5 * 51 / 101)


def test_per_class_ap_and_missing_classes():
    records = [record(1, [[10, 10, 50, 50], [60, 10, 95, 40]], [0, 1])]
    found = [dets([[10, 10, 50, 50]], [0.8], [0])]  # class 1 missed, class 2 has no gt
    result = coco_map(records, ["a", "b", "c"], found)
    assert result.per_class_ap["a"] == pytest.approx(1.0)
    assert result.per_class_ap["b"] == 0.0 and math.isnan(result.per_class_ap["c"])
    assert result.map == pytest.approx(0.5)  # mean over the classes with ground truth
    assert json.loads(json.dumps(result.to_dict()))["per_class_ap"]["c"] is None
    empty = coco_map(records, ["a", "b", "c"], [Detections.empty()])
    assert empty.map == 0.0 and empty.num_detections == 0


def test_evaluate_loads_images_and_calls_detect(tmp_path):
    records = []
    for i, hw in enumerate([(60, 80), (90, 50)], start=1):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), np.full((*hw, 3), 50 * i, np.uint8))
        records.append(ImageRecord(path, hw[0], hw[1], np.array([[5, 5, 40, 40]], np.float32),
                                   np.array([0], np.int64), i))  # fmt: skip
    seen = []

    def detect(image: np.ndarray) -> Detections:
        seen.append(image.shape)
        return gt_detections(records[len(seen) - 1])

    result, coco = evaluate(detect, records, ["a"])
    assert seen == [(60, 80, 3), (90, 50, 3)] and result.map == pytest.approx(1.0)
    assert coco[0] == {"image_id": 1, "category_id": 1, "bbox": [5.0, 5.0, 35.0, 35.0],
                       "score": 1.0}  # fmt: skip


def test_torch_detect_fn_matches_in_process_decode():
    """The export wrapper's decoded output = sigmoid + Integral of the raw head output."""
    import torch

    from nanodet_deploy.config import zoo_config
    from nanodet_deploy.models import build_model
    from nanodet_deploy.models.decode import Integral
    from nanodet_deploy.postprocess import postprocess

    torch.manual_seed(0)
    cfg = zoo_config("nanodet-m-0.5x", num_classes=3)
    model = build_model(cfg).eval()
    with torch.no_grad():  # make the random model produce some confident boxes
        for conv in model.head.gfl_cls:
            conv.bias[:3] = 0.0
    image = np.random.default_rng(0).integers(0, 255, (90, 150, 3), dtype=np.uint8)
    got = torch_detect_fn(model, (128, 128))(image)
    tensor, info = preprocess_as(image, (128, 128), mode="pad", sampler="resize")
    with torch.no_grad():
        raw = model(torch.from_numpy(tensor))[0]
    decoded = torch.cat([raw[:, :3].sigmoid(), Integral(7)(raw[:, 3:])], dim=1).numpy()
    want = postprocess(decoded, input_hw=info.input_hw, strides=cfg.strides,
                       center_offset=0.5, resize_info=info)  # fmt: skip
    assert len(got) > 0 and len(got) == len(want)
    np.testing.assert_allclose(got.boxes_xyxy, want.boxes_xyxy, atol=1e-3)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)


def test_evaluation_imports_without_torch():
    """Exported models are evaluated where torch is not installed (e.g. a Raspberry Pi)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import nanodet_deploy.evaluation, nanodet_deploy.datasets\n"
        "import nanodet_deploy.cli.eval\n"
        "assert sys.modules['torch'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

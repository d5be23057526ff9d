"""Tests for nanodet_deploy.postprocess: official parity, brute-force equivalence, hand cases."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanodet_deploy import postprocess as pp
from nanodet_deploy.postprocess import center_points, decode_raw, nms, postprocess, sigmoid
from nanodet_deploy.structures import Detections, ResizeInfo

LEGACY_STRIDES = (8, 16, 32)
PLUS_STRIDES = (8, 16, 32, 64)


def identity_resize(input_hw: tuple[int, int]) -> ResizeInfo:
    return ResizeInfo(src_hw=input_hw, input_hw=input_hw, scale_xy=(1.0, 1.0))


# --------------------------------------------------------------------------- brute force
def brute_iou(a: np.ndarray, b: np.ndarray) -> np.float32:
    """torchvision's float32 IoU of two boxes, one scalar at a time."""
    f = np.float32
    w = max(f(0), min(a[2], b[2]) - max(a[0], b[0]))
    h = max(f(0), min(a[3], b[3]) - max(a[1], b[1]))
    inter = f(w * h)
    area_a, area_b = f((a[2] - a[0]) * (a[3] - a[1])), f((b[2] - b[0]) * (b[3] - b[1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return f(inter / f(area_a + area_b - inter))


def brute_nms(boxes, scores, labels, iou_thresh, max_det=None) -> list[int]:
    """Per-class greedy NMS, one box at a time: obviously torchvision.ops.batched_nms."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep: list[int] = []
    for cls in sorted(set(int(x) for x in labels)):
        members = [i for i in order if int(labels[i]) == cls]
        suppressed: set[int] = set()
        for a, i in enumerate(members):
            if i in suppressed:
                continue
            keep.append(i)
            for j in members[a + 1 :]:
                if float(brute_iou(boxes[i], boxes[j])) > iou_thresh:  # double compare
                    suppressed.add(j)
    keep.sort(key=lambda i: (-float(scores[i]), i))
    return keep if max_det is None else keep[:max_det]


def brute_postprocess(
    out,
    input_hw,
    strides,
    offset,
    resize_info,
    *,
    score_thresh,
    iou_thresh,
    max_det,
    top_k,
    multi_label,
) -> Detections:
    f = np.float32
    h, w = input_hw
    num_classes = out.shape[1] - 4
    points = []  # (cx, cy, stride) in output order, from the DESIGN.md definition
    for s in strides:
        for i in range(math.ceil(h / s)):
            for j in range(math.ceil(w / s)):
                points.append((f((j + offset) * s), f((i + offset) * s), f(s)))
    assert len(points) == len(out)
    cands = []  # (point, class) in row-major order
    for p in range(len(out)):
        classes = range(num_classes) if multi_label else [int(np.argmax(out[p, :num_classes]))]
        cands += [(p, c) for c in classes if out[p, c] > f(score_thresh)]
    ranked = sorted(range(len(cands)), key=lambda k: (-float(out[cands[k]]), k))
    if top_k is not None:
        cands = [cands[k] for k in sorted(ranked[:top_k])]
    boxes, scores, labels = [], [], []
    for p, c in cands:
        cx, cy, s = points[p]
        d = [f(out[p, num_classes + k] * s) for k in range(4)]
        box = [cx - d[0], cy - d[1], cx + d[2], cy + d[3]]
        box = [min(max(v, f(0)), f(w if k % 2 == 0 else h)) for k, v in enumerate(box)]
        boxes.append(np.array(box, np.float32))
        scores.append(out[p, c])
        labels.append(c)
    keep = brute_nms(boxes, scores, labels, iou_thresh, max_det)
    if not keep:
        return Detections.empty()
    return Detections(
        resize_info.to_original(np.array([boxes[k] for k in keep])),
        np.array([scores[k] for k in keep], np.float32),
        np.array([labels[k] for k in keep], np.int64),
    )


def assert_same(ours: Detections, ref: Detections) -> None:
    np.testing.assert_array_equal(ours.labels, ref.labels)
    np.testing.assert_array_equal(ours.scores, ref.scores)
    np.testing.assert_allclose(ours.boxes_xyxy, ref.boxes_xyxy, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- official parity
@pytest.fixture(scope="module")
def official(reference_dir: Path):
    runs = json.loads((reference_dir / "nanodet-m_coco_detections.json").read_text())["runs"]
    with np.load(reference_dir / "nanodet-m_coco_detections_io.npz") as npz:
        arrays = dict(npz)
    return runs, arrays


RUN_KEYS = [f"raccoon-{i}_{size}" for size in (320, 416) for i in range(1, 6)]


def official_case(official, key: str):
    runs, arrays = official
    run = next(r for r in runs if f"{Path(r['image']).stem}_{r['input_size_cfg_wh'][0]}" == key)
    raw = arrays[f"{key}_raw_output"][0].copy()  # [P, 112] logits, legacy nanodet-m
    raw[:, :80] = sigmoid(raw[:, :80])
    decoded = decode_raw(raw, num_classes=80, reg_max=7)
    input_hw = tuple(arrays[f"{key}_input"].shape[2:])
    info = ResizeInfo.from_matrix(arrays[f"{key}_warp_matrix"], tuple(run["original_hw"]), input_hw)
    return run, decoded, input_hw, info


def official_postprocess(decoded, input_hw, info, **kwargs) -> Detections:
    return postprocess(
        decoded,
        input_hw=input_hw,
        strides=LEGACY_STRIDES,
        center_offset=0.5,
        resize_info=info,
        **kwargs,
    )


def assert_matches_official(ours: Detections, ref: list[dict]) -> None:
    """Same count, scores (1e-4) and boxes (1e-2 px) in order; labels may swap only in exact
    score ties of the official list."""
    assert len(ours) == len(ref)
    ref_scores = np.array([d["score"] for d in ref], np.float32)
    np.testing.assert_allclose(ours.scores, ref_scores, rtol=0, atol=1e-4)
    start = 0
    while start < len(ref):
        end = start + 1
        while end < len(ref) and ref_scores[end] == ref_scores[start]:
            end += 1
        unmatched = list(range(start, end))
        for d in ref[start:end]:
            match = [
                k
                for k in unmatched
                if int(ours.labels[k]) == d["label"]
                and np.allclose(ours.boxes_xyxy[k], d["bbox_xyxy"], rtol=0, atol=1e-2)
            ]
            assert match, f"official detection {d} not found at ranks {start}..{end - 1}"
            unmatched.remove(match[0])
        start = end


@pytest.mark.parametrize("key", RUN_KEYS)
def test_matches_official_nanodet_post_process(official, key):
    run, decoded, input_hw, info = official_case(official, key)
    ours = official_postprocess(decoded, input_hw, info)  # defaults = official settings
    assert len(ours) > 0
    assert_matches_official(ours, run["all_post_process_detections"])
    assert ours.class_name(15) == "15"  # no names given


@pytest.mark.parametrize("key", RUN_KEYS)
def test_default_top_k_changes_nothing_vs_no_limit(official, key):
    _, decoded, input_hw, info = official_case(official, key)
    assert_same(
        official_postprocess(decoded, input_hw, info),
        official_postprocess(decoded, input_hw, info, top_k=None),
    )


def test_batched_output_and_class_names(official):
    _, decoded, input_hw, info = official_case(official, "raccoon-1_320")
    names = tuple(f"c{i}" for i in range(80))
    flat = official_postprocess(decoded, input_hw, info)
    batched = official_postprocess(decoded[None], input_hw, info, class_names=names)
    assert_same(batched, flat)
    assert batched.names[0] == "c15"


def distinct_boxes(dets: Detections) -> int:
    return len({tuple(np.round(b, 3)) for b in dets.boxes_xyxy})


@pytest.mark.parametrize("key", ["raccoon-2_320", "raccoon-4_416"])
def test_best_class_mode_keeps_one_class_per_point(official, key):
    _, decoded, input_hw, info = official_case(official, key)
    multi = official_postprocess(decoded, input_hw, info, max_det=None)
    best = official_postprocess(decoded, input_hw, info, max_det=None, multi_label=False)
    assert 0 < len(best) < len(multi)
    assert best.labels[0] == multi.labels[0] and best.scores[0] == multi.scores[0]
    # multi-label reports one point's box under several classes; best-class mode never does
    assert distinct_boxes(multi) < len(multi)
    assert distinct_boxes(best) == len(best)


# --------------------------------------------------------------------------- brute-force property
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    input_hw=st.tuples(st.sampled_from([32, 64, 96]), st.sampled_from([32, 64, 128])),
    num_classes=st.integers(1, 4),
    offset=st.sampled_from([0.0, 0.5]),
    score_thresh=st.sampled_from([0.05, 0.3, 0.5]),
    iou_thresh=st.sampled_from([0.3, 0.5, 0.6, 0.7]),
    max_det=st.sampled_from([None, 1, 7, 100]),
    top_k=st.sampled_from([None, 5, 40, 1000]),
    multi_label=st.booleans(),
    tie_scores=st.booleans(),
)
def test_postprocess_equals_brute_force(
    seed,
    input_hw,
    num_classes,
    offset,
    score_thresh,
    iou_thresh,
    max_det,
    top_k,
    multi_label,
    tie_scores,
):
    rng = np.random.default_rng(seed)
    num_points = sum(
        math.ceil(input_hw[0] / s) * math.ceil(input_hw[1] / s) for s in LEGACY_STRIDES
    )
    out = np.empty((num_points, num_classes + 4), np.float32)
    if tie_scores:  # few distinct values: many exact ties, some exactly at the threshold
        out[:, :num_classes] = rng.choice([0.05, 0.3, 0.5, 0.7, 0.9], (num_points, num_classes))
    else:
        out[:, :num_classes] = rng.random((num_points, num_classes))
    out[:, num_classes:] = rng.uniform(0, 3, (num_points, 4))  # up to 3 strides: some clamp
    info = ResizeInfo(src_hw=(50, 70), input_hw=input_hw, scale_xy=(0.7, 1.3), offset_xy=(2, -3))
    kwargs = dict(
        score_thresh=score_thresh,
        iou_thresh=iou_thresh,
        max_det=max_det,
        top_k=top_k,
        multi_label=multi_label,
    )
    ours = postprocess(
        out,
        input_hw=input_hw,
        strides=LEGACY_STRIDES,
        center_offset=offset,
        resize_info=info,
        **kwargs,
    )
    ref = brute_postprocess(out, input_hw, LEGACY_STRIDES, offset, info, **kwargs)
    assert_same(ours, ref)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 300),
    num_labels=st.integers(1, 3),
    iou_thresh=st.sampled_from([0.0, 0.3, 0.5, 0.6, 0.9]),
    max_det=st.sampled_from([None, 1, 10, 100]),
    min_block=st.sampled_from([1, 8, 64]),
    pair_budget=st.sampled_from([1, 50, 8192]),
)
def test_nms_equals_brute_force(seed, n, num_labels, iou_thresh, max_det, min_block, pair_budget):
    rng = np.random.default_rng(seed)
    xy = rng.integers(0, 40, (n, 2)).astype(np.float32)  # integer grid: exact IoU ties happen
    wh = rng.integers(0, 20, (n, 2)).astype(np.float32)  # zero-area boxes happen
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.choice(np.linspace(0.1, 1, 10), n).astype(np.float32)
    labels = rng.integers(0, num_labels, n)
    with pytest.MonkeyPatch.context() as mp:  # how the work is split never changes the answer
        mp.setattr(pp, "_MIN_BLOCK", min_block)
        mp.setattr(pp, "_PAIR_BUDGET", pair_budget)
        keep = nms(boxes, scores, labels, iou_thresh=iou_thresh, max_det=max_det)
    assert keep.tolist() == brute_nms(boxes, scores, labels, iou_thresh, max_det)


def test_nms_many_boxes_of_one_class_spans_several_blocks():
    # 600 boxes of one class: 180k same-label pairs, far over the per-block pair budget
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 300, (600, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 80, (600, 2)).astype(np.float32)], axis=1)
    scores = rng.random(600).astype(np.float32)
    labels = np.zeros(600, np.int64)
    assert pp._PAIR_BUDGET < 600 * 599 // 2
    for max_det in (None, 100):
        keep = nms(boxes, scores, labels, iou_thresh=0.5, max_det=max_det)
        assert keep.tolist() == brute_nms(boxes, scores, labels, 0.5, max_det)


# --------------------------------------------------------------------------- hand-made NMS
def boxes_f32(*rows) -> np.ndarray:
    return np.array(rows, np.float32)


def test_nms_iou_exactly_at_threshold_is_kept():
    boxes = boxes_f32([0, 0, 10, 10], [0, 0, 10, 5])  # IoU = 50 / 100 = 0.5 exactly
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, iou_thresh=0.5).tolist() == [0, 1]
    assert nms(boxes, scores, iou_thresh=0.49).tolist() == [0]


def test_nms_compares_float32_iou_in_double_like_torchvision():
    # IoU 60 / 100 is float32 0.6000000238 > 0.6 (double): torchvision suppresses it
    boxes = boxes_f32([0, 0, 10, 10], [0, 0, 10, 6])
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, iou_thresh=0.6).tolist() == [0]
    assert nms(boxes, scores, iou_thresh=float(np.float32(0.6))).tolist() == [0, 1]


def test_nms_is_greedy_a_suppressed_box_suppresses_nothing():
    # A-B and B-C overlap (IoU 0.54), A-C do not (0.25): B goes, so C stays
    boxes = boxes_f32([0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10])
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, iou_thresh=0.5).tolist() == [0, 2]


def test_nms_is_class_aware_only_with_labels():
    boxes = boxes_f32([0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10])
    scores = np.array([0.5, 0.9, 0.7], np.float32)
    # label 1 is alone; in label 0 box 2 (0.7) suppresses box 0 (IoU 0.81)
    assert nms(boxes, scores, np.array([0, 1, 0]), iou_thresh=0.5).tolist() == [1, 2]
    assert nms(boxes, scores, np.array([0, 1, 2]), iou_thresh=0.5).tolist() == [1, 2, 0]
    assert nms(boxes, scores, iou_thresh=0.5).tolist() == [1]


def test_nms_order_ties_max_det_and_degenerate_boxes():
    boxes = boxes_f32([0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 9, 9], [9, 9, 9, 9], [20, 20, 21, 21])
    scores = np.array([0.5, 0.5, 0.7, 0.7, 0.5], np.float32)
    # zero-area duplicates: IoU 0/0 is nan, which never suppresses (as torchvision)
    assert nms(boxes, scores, iou_thresh=0.1).tolist() == [2, 3, 0, 1, 4]
    assert nms(boxes, scores, iou_thresh=0.1, max_det=3).tolist() == [2, 3, 0]
    assert nms(boxes, scores, iou_thresh=0.1, max_det=0).tolist() == []
    empty = nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), iou_thresh=0.5)
    assert empty.dtype == np.int64 and empty.size == 0


# --------------------------------------------------------------------------- center points
def test_center_points_hand_computed_non_square():
    centers, strides = center_points((64, 96), (32,), 0.5)  # 2 rows x 3 cols, row-major
    expected = [[16, 16], [48, 16], [80, 16], [16, 48], [48, 48], [80, 48]]
    np.testing.assert_array_equal(centers, np.array(expected, np.float32))
    np.testing.assert_array_equal(strides, np.full(6, 32, np.float32))
    centers0, _ = center_points((64, 96), (16, 32), 0.0)
    assert len(centers0) == 4 * 6 + 2 * 3
    np.testing.assert_array_equal(
        centers0[:7], [[0, 0], [16, 0], [32, 0], [48, 0], [64, 0], [80, 0], [0, 16]]
    )
    np.testing.assert_array_equal(centers0[24:27], [[0, 0], [32, 0], [64, 0]])
    assert centers.dtype == np.float32 and strides.dtype == np.float32


def test_center_points_count_uses_ceil_and_320x416_order():
    centers, strides = center_points((320, 416), LEGACY_STRIDES, 0.5)
    assert len(centers) == 40 * 52 + 20 * 26 + 10 * 13 == 2730
    np.testing.assert_array_equal(centers[51], [51.5 * 8, 4])  # last of row 0: x varies fastest
    np.testing.assert_array_equal(centers[52], [4, 12])
    np.testing.assert_array_equal(
        strides[[0, 2079, 2080, 2599, 2600, 2729]], [8, 8, 16, 16, 32, 32]
    )
    odd, _ = center_points((100, 70), (8, 16), 0.0)  # not multiples: ceil(100/8) x ceil(70/8)
    assert len(odd) == 13 * 9 + 7 * 5


def test_center_points_are_cached_and_read_only():
    first = center_points((64, 64), [8, 16], 0.5)
    second = center_points([64, 64], (8, 16), 0.5)
    assert first[0] is second[0] and first[1] is second[1]
    with pytest.raises(ValueError):
        first[0][0, 0] = 1.0
    assert center_points((64, 64), (8, 16), 0.0)[0] is not first[0]


def test_center_points_match_official_priors(reference_dir):
    with np.load(reference_dir / "nanodet-plus-m_320_parity.npz") as npz:
        plus = npz["center_priors"]  # (x, y, stride, stride), offset 0
    centers, strides = center_points((320, 320), PLUS_STRIDES, 0.0)
    np.testing.assert_array_equal(centers, plus[:, :2])
    np.testing.assert_array_equal(strides, plus[:, 2])
    with np.load(reference_dir / "nanodet-m_coco_raw.npz") as npz:
        legacy = npz["image_center_priors_raccoon-1"]  # offset 0.5, input 288x416
    centers, strides = center_points((288, 416), LEGACY_STRIDES, 0.5)
    np.testing.assert_array_equal(centers, legacy[:, :2])
    np.testing.assert_array_equal(strides, legacy[:, 2])


# --------------------------------------------------------------------------- decode_raw, sigmoid
@pytest.fixture(scope="module")
def plus_parity(reference_dir):
    with np.load(reference_dir / "nanodet-plus-m_320_parity.npz") as npz:
        return {k: npz[k] for k in ("onnx_output", "distances_px", "decoded_bboxes_clamped")}


def test_decode_raw_matches_official_integral(plus_parity):
    decoded = decode_raw(plus_parity["onnx_output"], num_classes=80, reg_max=7)
    assert decoded.shape == (2125, 84) and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded[:, :80], plus_parity["onnx_output"][0, :, :80])
    _, strides = center_points((320, 320), PLUS_STRIDES, 0.0)
    expected = plus_parity["distances_px"] / strides[:, None]
    np.testing.assert_allclose(decoded[:, 80:], expected, rtol=0, atol=1e-5)
    assert decoded[:, 80:].min() >= 0 and decoded[:, 80:].max() <= 7


def test_postprocess_boxes_match_official_distance2bbox(plus_parity):
    decoded = decode_raw(plus_parity["onnx_output"], num_classes=80, reg_max=7)
    num_points = len(decoded)
    # one class whose score falls with the point index: output order = point order, nothing
    # suppressed (IoU > 1 never happens), every point a detection
    out = np.concatenate(
        [np.linspace(1, 0.5, num_points, dtype=np.float32)[:, None], decoded[:, 80:]], axis=1
    )
    dets = postprocess(
        out,
        input_hw=(320, 320),
        strides=PLUS_STRIDES,
        center_offset=0.0,
        resize_info=identity_resize((320, 320)),
        score_thresh=0.0,
        iou_thresh=1.0,
        max_det=None,
        top_k=None,
    )
    assert len(dets) == num_points
    np.testing.assert_allclose(dets.boxes_xyxy, plus_parity["decoded_bboxes_clamped"], atol=1e-3)


def test_sigmoid_is_stable_and_exact():
    x = np.array([-1000, -80, -20, -1, 0, 1, 20, 80, 1000], np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        y = sigmoid(x)
    assert y.dtype == np.float32
    expected = 1 / (1 + np.exp(-x[1:-1].astype(np.float64)))
    np.testing.assert_allclose(y[1:-1], expected, rtol=1e-6, atol=1e-30)
    assert y[0] == 0.0 and y[-1] == 1.0 and y[4] == 0.5


def test_decode_raw_rejects_wrong_channel_count(plus_parity):
    with pytest.raises(ValueError, match="channels"):
        decode_raw(plus_parity["onnx_output"], num_classes=80, reg_max=15)


# --------------------------------------------------------------------------- errors, edge cases
def test_postprocess_without_candidates_is_empty():
    out = np.zeros((4 * 4 + 2 * 2 + 1, 84), np.float32)  # 32x32 input, all scores 0
    dets = postprocess(
        out,
        input_hw=(32, 32),
        strides=LEGACY_STRIDES,
        center_offset=0.5,
        resize_info=identity_resize((32, 32)),
        class_names=("a",) * 80,
    )
    assert len(dets) == 0 and dets.boxes_xyxy.shape == (0, 4) and len(dets.class_names) == 80


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((20, 84), {}, "20 points.*gives 21"),  # one point short for 32x32
        ((2, 21, 84), {}, r"\(P, K\) or \(1, P, K\)"),
        ((21, 84), {"class_names": ("a", "b")}, "2 class names"),
        ((21, 84), {"resize_info": identity_resize((64, 32))}, "resize_info.input_hw"),
        ((21, 4), {}, "C \\+ 4"),
    ],
)
def test_postprocess_rejects_bad_input(shape, kwargs, message):
    args = {
        "input_hw": (32, 32),
        "strides": LEGACY_STRIDES,
        "center_offset": 0.5,
        "resize_info": identity_resize((32, 32)),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        postprocess(np.zeros(shape, np.float32), **args)


@pytest.mark.parametrize("kwargs", [{"max_det": -1}, {"top_k": -1}])
def test_negative_limits_are_rejected(kwargs):
    out = np.zeros((21, 84), np.float32)
    out[0, 0] = 0.9
    with pytest.raises(ValueError, match="None \\(no limit\\)"):
        postprocess(
            out,
            input_hw=(32, 32),
            strides=LEGACY_STRIDES,
            center_offset=0.5,
            resize_info=identity_resize((32, 32)),
            **kwargs,
        )


def test_runtime_modules_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import nanodet_deploy.preprocess, nanodet_deploy.postprocess\n"
        "assert 'torch' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n"
    )
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("multi_label", [True, False])
def test_top_k_zero_keeps_nothing(multi_label):
    """Regression (found by the C++ reference): top_k=0 raised from np.partition."""
    rng = np.random.default_rng(5)
    hw = (64, 64)
    p = sum((64 // s) ** 2 for s in LEGACY_STRIDES)
    output = np.concatenate([rng.uniform(0.5, 1, (p, 3)), rng.uniform(0, 4, (p, 4))], axis=1)
    dets = postprocess(output.astype(np.float32), input_hw=hw, strides=LEGACY_STRIDES,
                       center_offset=0.5, resize_info=identity_resize(hw), top_k=0,
                       multi_label=multi_label)  # fmt: skip
    assert len(dets) == 0


def test_nan_scores_are_never_candidates():
    """Regression: best-class mode picked a NaN class score (argmax treats NaN as largest)."""
    hw = (32, 32)
    p = sum((32 // s) ** 2 for s in LEGACY_STRIDES)
    output = np.zeros((p, 2 + 4), np.float32)
    output[:, 2:] = 1.0
    output[0, :2] = [np.nan, 0.9]  # a broken class score beside a real one
    output[1, :2] = [0.8, np.nan]
    for multi_label in (True, False):
        dets = postprocess(output, input_hw=hw, strides=LEGACY_STRIDES, center_offset=0.5,
                           resize_info=identity_resize(hw), multi_label=multi_label)  # fmt: skip
        assert not np.isnan(dets.scores).any()
        found = sorted(zip(dets.labels.tolist(), dets.scores.tolist(), strict=True))
        assert found == [(0, pytest.approx(0.8)), (1, pytest.approx(0.9))]

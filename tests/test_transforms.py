"""Training augmentation: exact geometry, box/image consistency, determinism, colour."""

from __future__ import annotations

import dataclasses
import pickle

import cv2
import numpy as np
import pytest
from detect_helpers import preprocess_as

from nanodet_deploy.preprocess import keep_ratio_hw
from nanodet_deploy.train.transforms import (
    AugmentConfig,
    TrainTransform,
    WarpParams,
    augment_matrix,
    color_jitter,
    keep_boxes_mask,
    normalize_chw,
    resize_matrix,
    sample_warp_params,
    train_transform,
    warp_boxes,
    warp_image,
)

ZERO_MEAN, UNIT_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
COCO_MEAN, COCO_STD = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)


def noise_image(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)


def test_identity_parameters_give_the_plain_resize() -> None:
    image = noise_image((60, 80))
    boxes = np.array([[10.0, 6.0, 50.0, 30.0]], np.float32)
    out = train_transform(
        image, boxes, np.array([4]), (96, 128), AugmentConfig.none(), ZERO_MEAN, UNIT_STD,
        np.random.default_rng(0),
    )  # fmt: skip
    sx, sy = 128 / 80, 96 / 60
    np.testing.assert_allclose(out.warp_matrix, np.diag([sx, sy, 1.0]), atol=1e-12)
    np.testing.assert_allclose(out.boxes_xyxy, [[10 * sx, 6 * sy, 50 * sx, 30 * sy]], rtol=1e-6)
    assert out.labels.tolist() == [4]
    # official NanoDet's non-keep-ratio resize: warp on pixel indices with diag(sx, sy)
    official = cv2.warpAffine(image, np.array([[sx, 0, 0], [0, sy, 0]]), (128, 96))
    hwc = out.image_chw.transpose(1, 2, 0)
    assert out.image_chw.dtype == np.float32 and out.image_chw.shape == (3, 96, 128)
    np.testing.assert_allclose(hwc, official.astype(np.float32), rtol=0, atol=1e-4)  # x/255*255


def test_identity_keep_ratio_matches_official_minimum_shape() -> None:
    # reference/README.md: raccoon-3 (720x480) at 416 gives 415x277 (truncation)
    assert keep_ratio_hw((480, 720), (416, 416)) == (277, 415)
    assert keep_ratio_hw((417, 650), (320, 320)) == (205, 320)
    out = train_transform(
        noise_image((48, 96)), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), (64, 64),
        AugmentConfig.none(keep_ratio=True), COCO_MEAN, COCO_STD, np.random.default_rng(0),
    )  # fmt: skip
    assert out.image_chw.shape == (3, 32, 64)
    np.testing.assert_allclose(out.warp_matrix, np.diag([2 / 3, 2 / 3, 1.0]), atol=1e-12)
    assert out.boxes_xyxy.shape == (0, 4)


def test_identity_keep_ratio_matches_deployment_preprocess() -> None:
    image = noise_image((417, 650), seed=3)
    out = train_transform(
        image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), (320, 320),
        AugmentConfig.none(keep_ratio=True), COCO_MEAN, COCO_STD, np.random.default_rng(0),
    )  # fmt: skip
    tensor, info = preprocess_as(
        image, (320, 320), mode="pad", mean_bgr=COCO_MEAN, std_bgr=COCO_STD
    )
    h, w = info.content_hw
    assert out.image_chw.shape[1:] == (h, w) == (205, 320)
    np.testing.assert_allclose(np.diag(out.warp_matrix)[:2], info.scale_xy, rtol=1e-12)
    np.testing.assert_allclose(out.warp_matrix[:2, 2], info.offset_xy, rtol=1e-12)
    # same warp, same pixels: training sees exactly what deployment sees
    np.testing.assert_allclose(out.image_chw, tensor[0, :, :h, :w], rtol=0, atol=1e-5)


def test_known_scale_flip_translate_moves_box_by_hand() -> None:
    src_hw = (100, 200)
    params = WarpParams(scale=2.0, flip=True, translate_xy=(0.1, -0.05))
    matrix = resize_matrix(src_hw, (50, 100)) @ augment_matrix(src_hw, params)
    box = np.array([[80.0, 40.0, 100.0, 50.0]])
    # centre (-100, -50): x [-20, 0], y [-10, 0]; scale 2: x [-40, 0], y [-20, 0];
    # flip: x [0, 40]; translate to (0.5 + 0.1) * 200 = 120, (0.5 - 0.05) * 100 = 45:
    # x [120, 160], y [25, 45]; resize by 1/2: x [60, 80], y [12.5, 22.5]
    np.testing.assert_allclose(
        warp_boxes(box, matrix, (50, 100)), [[60, 12.5, 80, 22.5]], atol=1e-5
    )
    # partly outside -> clipped to the output; fully outside -> collapses and is dropped
    boxes = np.array([[0.0, 0.0, 20.0, 10.0], [150.0, 40.0, 200.0, 50.0]])
    clipped = warp_boxes(boxes, matrix, (50, 100))
    np.testing.assert_allclose(clipped[0], [100, 0, 100, 0], atol=1e-5)  # x [220, 260] / 2
    np.testing.assert_allclose(clipped[1], [0, 12.5, 10, 22.5], atol=1e-5)  # x [-80, 20] / 2
    assert keep_boxes_mask(clipped, 1.0).tolist() == [False, True]


def test_rotation_matrix_by_hand() -> None:
    params = WarpParams(rotation_deg=90.0)
    matrix = augment_matrix((100, 100), params)
    # OpenCV angle is counter-clockwise on screen: (x, y) -> (y, -x) about the centre
    point = matrix @ np.array([60.0, 50.0, 1.0])  # 10 px right of the centre
    np.testing.assert_allclose(point, [50.0, 40.0, 1.0], atol=1e-9)  # 10 px up


@pytest.mark.parametrize("half_pixel_centers", [True, False])
def test_flip_moves_pixels_like_boxes(half_pixel_centers: bool) -> None:
    image = noise_image((20, 30))
    matrix = augment_matrix((20, 30), WarpParams(flip=True))
    flipped = warp_image(image, matrix, (20, 30), half_pixel_centers=half_pixel_centers)
    if half_pixel_centers:
        np.testing.assert_array_equal(flipped, image[:, ::-1])  # box x -> 30 - x, pixel i -> 29 - i
    else:  # official convention: pixel i -> 30 - i, one pixel off its box
        np.testing.assert_array_equal(flipped[:, 1:], image[:, :0:-1])
    box = warp_boxes(np.array([[0.0, 0.0, 10.0, 20.0]]), matrix, (20, 30))
    np.testing.assert_allclose(box, [[20, 0, 30, 20]])


def lit_bounds(image: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(image[..., 0] > 127)
    return None if len(xs) == 0 else np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


@pytest.mark.parametrize("half_pixel_centers", [False, True])
@pytest.mark.parametrize("keep_ratio", [False, True])
def test_boxes_follow_the_warped_image(keep_ratio: bool, half_pixel_centers: bool) -> None:
    # official warps on pixel indices: the image then sits up to (scale - 1) / 2 px (here
    # scale <= 1.4 * 1.2 -> 0.35 px) plus interpolation rounding away from its boxes; with
    # half-pixel centres image and boxes agree to the 1 px of rasterization
    atol = 1.0 if half_pixel_centers else 1.5
    image = np.zeros((120, 160, 3), np.uint8)
    box = np.array([[40.0, 30.0, 100.0, 90.0]], np.float32)
    image[30:90, 40:100] = 255  # pixels 40..99 x 30..89 fill the box exactly
    config = AugmentConfig(
        rotation_deg=15.0, shear_deg=5.0, perspective=0.0004, keep_ratio=keep_ratio
    )
    checked = 0
    for seed in range(25):
        rng = np.random.default_rng(seed)
        src_hw, input_hw = (120, 160), (96, 96)
        out_hw = keep_ratio_hw(src_hw, input_hw) if keep_ratio else input_hw
        params = sample_warp_params(config, rng)
        matrix = resize_matrix(src_hw, out_hw, keep_ratio) @ augment_matrix(src_hw, params)
        warped = warp_image(image, matrix, out_hw, half_pixel_centers=half_pixel_centers)
        boxes = warp_boxes(box, matrix, out_hw)
        lit = lit_bounds(warped)
        if lit is None or not keep_boxes_mask(boxes, 4.0).all():
            continue
        np.testing.assert_allclose(lit, boxes[0], atol=atol, err_msg=f"seed {seed}: {params}")
        checked += 1
    assert checked >= 15


def test_same_seed_same_sample_and_collapsed_boxes_dropped() -> None:
    image = noise_image((90, 120), seed=1)
    boxes = np.array(
        [[5.0, 5.0, 60.0, 70.0], [100.0, 80.0, 120.0, 90.0], [0.0, 0.0, 0.5, 90.0]], np.float32
    )
    labels = np.array([0, 1, 2])
    transform = TrainTransform((64, 96), AugmentConfig(), COCO_MEAN, COCO_STD)
    a = transform(image, boxes, labels, np.random.default_rng(7))
    b = transform(image, boxes, labels, np.random.default_rng(7))
    np.testing.assert_array_equal(a.image_chw, b.image_chw)
    np.testing.assert_array_equal(a.boxes_xyxy, b.boxes_xyxy)
    np.testing.assert_array_equal(a.warp_matrix, b.warp_matrix)
    c = transform(image, boxes, labels, np.random.default_rng(8))
    assert not np.array_equal(a.warp_matrix, c.warp_matrix)
    for sample in (a, c):  # a half-pixel-wide box never survives; labels follow their boxes
        assert 2 not in sample.labels.tolist()
        assert len(sample.labels) == len(sample.boxes_xyxy)
        assert keep_boxes_mask(sample.boxes_xyxy, 1.0).all()
    assert pickle.loads(pickle.dumps(transform)) == transform  # DataLoader workers


def test_color_jitter_keeps_dtype_and_range() -> None:
    image01 = noise_image((16, 16)).astype(np.float32) / 255.0
    config = AugmentConfig(brightness=0.5, contrast=(0.5, 1.8), saturation=(0.2, 1.8))
    changed = 0
    for seed in range(40):
        out = color_jitter(image01, config, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.shape == image01.shape
        assert out.min() >= 0.0 and out.max() <= 1.0
        changed += not np.array_equal(out, image01)
    assert 20 <= changed < 40  # each op fires with probability 1/2: 1 in 8 draws changes nothing
    np.testing.assert_array_equal(image01, noise_image((16, 16)).astype(np.float32) / 255.0)
    # official (clip_color=False) lets brightness leave [0, 1]
    official = dataclasses.replace(
        config, clip_color=False, contrast=(1.0, 1.0), saturation=(1.0, 1.0)
    )
    outs = [
        color_jitter(np.ones((2, 2, 3), np.float32), official, np.random.default_rng(s))
        for s in range(20)
    ]
    assert max(o.max() for o in outs) > 1.0


def test_color_jitter_identity_and_normalize() -> None:
    image01 = noise_image((8, 8)).astype(np.float32) / 255.0
    same = color_jitter(image01, AugmentConfig.none(), np.random.default_rng(0))
    np.testing.assert_array_equal(same, image01)
    mean_image = np.broadcast_to(np.array(COCO_MEAN, np.float32) / 255.0, (4, 5, 3))
    normalized = normalize_chw(mean_image, COCO_MEAN, COCO_STD)
    assert normalized.shape == (3, 4, 5) and normalized.dtype == np.float32
    np.testing.assert_allclose(normalized, 0.0, atol=1e-5)


def test_augment_config_validation() -> None:
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(1.4, 0.6))
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentConfig(flip_prob=1.5)

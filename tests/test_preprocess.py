"""Tests for nanodet_deploy.preprocess: modes, ResizeInfo, normalization, inputs, errors."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from detect_helpers import interpolation_mismatch, preprocess_as

from nanodet_deploy.preprocess import (
    MEAN_BGR,
    STD_BGR,
    ImageLoadError,
    keep_ratio_hw,
    load_image,
    preprocess,
    to_bgr,
)
from nanodet_deploy.structures import PreprocessSpec

MEAN = np.array(MEAN_BGR, np.float32)
STD = np.array(STD_BGR, np.float32)


def gradient_image(h: int, w: int) -> np.ndarray:
    """A deterministic BGR uint8 image with structure in both directions."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 7) % 256, (y * 5) % 256, (x + y) % 256], axis=2).astype(np.uint8)


def to_input(info, boxes_xyxy: np.ndarray) -> np.ndarray:
    """Forward map of ResizeInfo (its documented definition)."""
    out = np.array(boxes_xyxy, np.float64)
    out[:, 0::2] = out[:, 0::2] * info.scale_xy[0] + info.offset_xy[0]
    out[:, 1::2] = out[:, 1::2] * info.scale_xy[1] + info.offset_xy[1]
    return out


# --------------------------------------------------------------------------- modes and ResizeInfo
# raccoon-1 is 417x650 (HxW); at 320 the keep-ratio content is 205x320 (truncated). Official
# get_resize_matrix takes one scale from the truncated size: 650/417 < 320/205, so
# scale = 205/417, and centres the image: x shift 160 - 325 * 205/417 = 0.2278 px, y shift 0.
R1_SCALE = 205 / 417
R1_SHIFT_X = 160 - 325 * R1_SCALE


@pytest.mark.parametrize(
    ("mode", "tensor_hw", "content_hw", "scale_xy", "offset_xy"),
    [
        ("pad", (224, 320), (205, 320), (R1_SCALE, R1_SCALE), (R1_SHIFT_X, 0.0)),
        # letterbox: (320 - 205) // 2 = 57 rows of padding on top
        ("letterbox", (320, 320), (205, 320), (R1_SCALE, R1_SCALE), (R1_SHIFT_X, 57.0)),
        ("plain", (320, 320), (320, 320), (320 / 650, 320 / 417), (0.0, 0.0)),
    ],
)
def test_mode_shapes_and_resize_info(mode, tensor_hw, content_hw, scale_xy, offset_xy):
    image = gradient_image(417, 650)  # raccoon-1's size
    tensor, info = preprocess_as(image, (320, 320), mode=mode)
    assert tensor.shape == (1, 3, *tensor_hw)
    assert tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert info.src_hw == (417, 650) and info.input_hw == tensor_hw
    assert info.content_hw == content_hw
    np.testing.assert_allclose(info.scale_xy, scale_xy, rtol=1e-12)
    np.testing.assert_allclose(info.offset_xy, offset_xy, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["pad", "letterbox", "plain"])
@pytest.mark.parametrize(
    ("src_hw", "input_hw"),
    [((417, 650), (320, 320)), ((480, 270), (416, 320)), ((100, 100), (64, 128))],
)
def test_resize_info_round_trip(mode, src_hw, input_hw):
    _, info = preprocess_as(gradient_image(*src_hw), input_hw, mode=mode)
    h, w = src_hw
    boxes = np.array([[0, 0, w, h], [10.25, 20.5, 60.75, 90.125], [w / 3, h / 4, w / 2, h - 1]])
    np.testing.assert_allclose(info.to_original(to_input(info, boxes)), boxes, rtol=0, atol=1e-3)


@pytest.mark.parametrize("mode", ["pad", "letterbox", "plain"])
def test_resize_info_maps_pixels_where_they_land(mode):
    # a white rectangle on black: its edges in the tensor are where ResizeInfo says
    image = np.zeros((300, 500, 3), np.uint8)
    box = np.array([[100.0, 60.0, 300.0, 200.0]])
    image[60:200, 100:300] = 255
    tensor, info = preprocess_as(image, (256, 256), mode=mode, normalize=False)
    bright = np.argwhere(tensor[0, 0] > 127.5)
    (y1, x1), (y2, x2) = bright.min(axis=0), bright.max(axis=0) + 1
    np.testing.assert_allclose([[x1, y1, x2, y2]], to_input(info, box), atol=1.0)


def test_keep_ratio_size_matches_official_for_all_fixture_runs(reference_dir):
    runs = json.loads((reference_dir / "nanodet-m_coco_detections.json").read_text())["runs"]
    for run in runs:
        size = run["input_size_cfg_wh"][0]
        dst_w, dst_h = run["preprocess"]["dst_wh_after_warp"]
        assert keep_ratio_hw(tuple(run["original_hw"]), (size, size)) == (dst_h, dst_w)
    assert keep_ratio_hw((480, 720), (416, 416)) == (277, 415)  # official truncation
    assert keep_ratio_hw((1, 10000), (320, 320)) == (1, 320)  # never 0


def test_pad_mode_tensor_can_be_smaller_than_input_hw():
    tensor, info = preprocess_as(gradient_image(100, 400), (320, 320), mode="pad")
    assert info.content_hw == (80, 320) and tensor.shape == (1, 3, 96, 320)
    tensor, _ = preprocess_as(gradient_image(100, 400), (320, 320), mode="pad", size_multiple=64)
    assert tensor.shape == (1, 3, 128, 320)


# --------------------------------------------------------------------------- normalization
@pytest.mark.parametrize("mode", ["pad", "letterbox"])
def test_normalization_and_zero_padding(mode):
    bgr = np.array([10, 200, 255], np.uint8)
    image = np.broadcast_to(bgr, (100, 300, 3)).copy()
    tensor, info = preprocess_as(image, (128, 128), mode=mode)
    ch, cw = info.content_hw  # 42 x 128: official scale 42/100 makes the image 126 px wide
    x0, y0 = (0, 0) if mode == "pad" else ((128 - cw) // 2, (128 - ch) // 2)
    expected = (bgr.astype(np.float64) - MEAN_BGR) / STD_BGR
    # official centring puts the 126-px image 1 px in: the content box's first and last
    # columns come from the warp's black border (raw 0), exactly as official NanoDet
    content = tensor[0, :, y0 : y0 + ch, x0 + 1 : x0 + cw - 1]
    border = (0.0 - np.asarray(MEAN_BGR)) / np.asarray(STD_BGR)
    np.testing.assert_allclose(tensor[0, :, y0 + 5, x0], border, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        content, np.broadcast_to(expected[:, None, None], content.shape), rtol=0, atol=1e-5
    )
    padding = np.ones(tensor.shape[2:], bool)
    padding[y0 : y0 + ch, x0 : x0 + cw] = False
    assert padding.sum() > 0
    assert (tensor[0][:, padding] == 0.0).all()  # exactly zero, as official NanoDet


def test_unnormalized_tensor_pads_with_the_mean_colour():
    image = np.full((100, 300, 3), 7, np.uint8)
    tensor, info = preprocess_as(image, (128, 128), mode="letterbox", normalize=False)
    ch = info.content_hw[0]
    y0 = (128 - ch) // 2
    assert y0 > 0
    np.testing.assert_array_equal(tensor[0, :, 0, 0], MEAN)  # float32 mean: (x - mean) == 0
    np.testing.assert_array_equal(tensor[0, :, y0 + ch, 5], MEAN)
    assert (tensor[0, :, y0 : y0 + ch, 1:-1] == 7.0).all()  # (1-px rim: official black border)
    # the folded graph computes (x - mean) / std: the padding becomes exactly 0
    assert ((tensor[0, :, 0] - MEAN[:, None]) / STD[:, None] == 0).all()


def test_rgb_order_swaps_channels_and_statistics():
    image = gradient_image(90, 130)
    bgr, _ = preprocess_as(image, (96, 96), mode="letterbox")
    rgb, _ = preprocess_as(image, (96, 96), mode="letterbox", color_order="RGB")
    np.testing.assert_array_equal(rgb[0], bgr[0, ::-1])
    raw_rgb, _ = preprocess_as(
        image, (96, 96), mode="letterbox", color_order="RGB", normalize=False
    )
    np.testing.assert_array_equal(raw_rgb[0, :, 0, 0], MEAN[::-1])  # padding: swapped mean


def test_normalization_matches_official_on_the_official_warp(reference_dir):
    # the official pipeline warps with a sub-pixel shift; fed its warped image (so that no
    # resize happens), our normalization and padding give the official tensor up to what
    # OpenCV versions legitimately vary by (the warp here is ours, the fixture's was 5.0's)
    with np.load(reference_dir / "nanodet-m_coco_detections_io.npz") as npz:
        ref, matrix = npz["raccoon-1_320_input"], npz["raccoon-1_320_warp_matrix"]
    image = cv2.imread(str(reference_dir / "images" / "raccoon-1.jpg"))
    warped = cv2.warpPerspective(image, matrix, dsize=(320, 205))
    tensor, info = preprocess_as(warped, (320, 320), mode="pad")
    assert info.content_hw == (205, 320) and tensor.shape == ref.shape
    assert interpolation_mismatch(tensor, ref) is None
    padding = np.zeros(ref.shape, bool)
    padding[:, :, 205:] = True
    np.testing.assert_array_equal(tensor[padding], ref[padding])  # exactly 0.0, no rounding


def official_input(reference_dir, stem: str, size: int):
    with np.load(reference_dir / "nanodet-m_coco_detections_io.npz") as npz:
        return npz[f"{stem}_{size}_input"], npz[f"{stem}_{size}_warp_matrix"]


@pytest.mark.parametrize("size", [320, 416])
@pytest.mark.parametrize("stem", [f"raccoon-{i}" for i in range(1, 6)])
def test_pad_mode_matches_official_network_input(reference_dir, size, stem):
    """pad + warp = official val pipeline: same tensor up to +-1 grey level of bilinear rounding
    in a small fraction of pixels (what OpenCV versions vary by), and the same warp matrix."""
    ref, matrix = official_input(reference_dir, stem, size)
    image = load_image(reference_dir / "images" / f"{stem}.jpg")
    tensor, info = preprocess_as(image, (size, size))
    assert interpolation_mismatch(tensor, ref) is None
    assert info.scale_xy == (matrix[0, 0], matrix[1, 1])
    assert info.offset_xy == (matrix[0, 2], matrix[1, 2])
    if stem == "raccoon-1":
        assert tensor.shape == {320: (1, 3, 224, 320), 416: (1, 3, 288, 416)}[size]


@pytest.mark.parametrize("stem", ["raccoon-1", "raccoon-4"])
def test_official_input_tolerance_catches_real_mistakes(reference_dir, stem):
    """Negative controls: the tolerance above rejects the mistakes it guards against."""
    ref, matrix = official_input(reference_dir, stem, 320)
    image = load_image(reference_dir / "images" / f"{stem}.jpg")
    spec = PreprocessSpec((320, 320), geometry="pad", sampler="warp")
    content_hw = keep_ratio_hw(image.shape[:2], (320, 320))
    # 1. cv2.resize (the resize sampler) instead of the official warp
    assert interpolation_mismatch(preprocess(image, replace(spec, sampler="resize"))[0], ref)
    # 2. a half-pixel shift of the sampling grid
    shifted = matrix[:2].copy()
    shifted[:, 2] += 0.5
    warped = cv2.warpAffine(image, shifted, (content_hw[1], content_hw[0]), flags=cv2.INTER_LINEAR)
    assert interpolation_mismatch(preprocess(warped, spec)[0], ref)
    # 3. H and W swapped in the content size
    swapped = cv2.warpAffine(image, matrix[:2], (content_hw[0], content_hw[1]))
    assert interpolation_mismatch(preprocess(swapped, replace(spec, geometry="plain"))[0], ref)
    # 4. nearest-neighbour sampling, and a flipped colour order
    nearest = cv2.warpAffine(
        image, matrix[:2], (content_hw[1], content_hw[0]), flags=cv2.INTER_NEAREST
    )
    assert interpolation_mismatch(preprocess(nearest, spec)[0], ref)
    assert interpolation_mismatch(preprocess(image, replace(spec, color_order="RGB"))[0], ref)


def test_tolerance_allows_one_grey_level_in_few_pixels(reference_dir):
    """Positive control: the OpenCV-version difference (one level, few pixels) passes."""
    ref, _ = official_input(reference_dir, "raccoon-2", 320)
    moved = ref.copy()
    flat = moved.reshape(-1)
    rng = np.random.default_rng(0)
    picks = rng.choice(flat.size, size=flat.size // 1000, replace=False)  # 0.1%
    flat[picks] += np.float32(1 / 58.395)
    assert interpolation_mismatch(moved, ref) is None
    flat[picks[:5]] += np.float32(1 / 58.395)  # two levels somewhere: not rounding
    assert interpolation_mismatch(moved, ref)


# --------------------------------------------------------------------------- the resize sampler
def ncnn_bilinear_reference(image: np.ndarray, dst_hw: tuple[int, int]) -> np.ndarray:
    """ncnn's resize_bilinear_c3 (src/mat_pixel_resize.cpp) written out in NumPy: float32
    source positions, 11-bit coefficients rounded half up, a horizontal pass kept in 16 bits
    (>> 4), a vertical pass (>> 16 each, + 2, >> 2). An independent oracle for the sampler."""

    def coefficients(src: int, dst: int):
        pos = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).astype(np.float32)
        first = np.floor(pos)
        frac = (pos - first).astype(np.float32)
        first = first.astype(np.int64)
        frac[first < 0], first[first < 0] = 0, 0
        frac[first >= src - 1], first[first >= src - 1] = 1, src - 2
        one, half = np.float32(2048), np.float32(0.5)
        return (
            first,
            ((1 - frac) * one + half).astype(np.int64),
            (frac * one + half).astype(np.int64),
        )

    xs, a0, a1 = coefficients(image.shape[1], dst_hw[1])
    ys, b0, b1 = coefficients(image.shape[0], dst_hw[0])
    src = image.astype(np.int64)
    rows = (src[:, xs] * a0[None, :, None] + src[:, xs + 1] * a1[None, :, None]) >> 4
    top, bottom = rows[ys] * b0[:, None, None], rows[ys + 1] * b1[:, None, None]
    return (((top >> 16) + (bottom >> 16) + 2) >> 2).astype(np.uint8)


@pytest.mark.parametrize(
    ("src_hw", "dst_hw"),
    [((576, 768), (320, 320)), ((417, 650), (205, 320)), ((97, 131), (320, 416)),
     ((33, 47), (64, 96)), ((301, 299), (211, 157)), ((1080, 1920), (180, 320)),
     ((2, 2), (64, 64)), ((480, 640), (480, 640))],
)  # fmt: skip
def test_resize_sampler_equals_ncnn_from_pixels_resize(src_hw, dst_hw):
    """The resize sampler == ncnn::Mat::from_pixels_resize == ncnn's arithmetic written out,
    bit for bit (down, up, odd sizes, identity); cv2.resize is not (why we use ncnn's)."""
    ncnn = pytest.importorskip("ncnn")
    rng = np.random.default_rng(src_hw[0] * 7 + dst_hw[1])
    image = rng.integers(0, 256, size=(*src_hw, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (5, 5), 0)  # photo-like gradients, not only noise
    mat = ncnn.Mat.from_pixels_resize(
        image, ncnn.Mat.PixelType.PIXEL_BGR, src_hw[1], src_hw[0], dst_hw[1], dst_hw[0]
    )
    theirs = np.array(mat)  # (3, h, w) float32 holding 0..255 integers
    reference = ncnn_bilinear_reference(image, dst_hw).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(theirs, reference)
    tensor, info = preprocess_as(image, dst_hw, mode="plain", sampler="resize", normalize=False,
                                 size_multiple=1)  # fmt: skip
    np.testing.assert_array_equal(tensor[0], theirs)
    assert info.scale_xy == (dst_hw[1] / src_hw[1], dst_hw[0] / src_hw[0])


def test_cv2_resize_is_not_ncnn_resize():
    """Why the sampler calls ncnn: OpenCV's INTER_LINEAR rounds differently at some scales."""
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, size=(417, 650, 3), dtype=np.uint8), (5, 5), 0)
    opencv = cv2.resize(image, (320, 205), interpolation=cv2.INTER_LINEAR)
    differ = opencv != ncnn_bilinear_reference(image, (205, 320))
    assert 0 < differ.mean() < 0.01  # one grey level in a few pixels
    assert np.abs(opencv.astype(int) - ncnn_bilinear_reference(image, (205, 320))).max() == 1


@pytest.mark.parametrize("mode", ["pad", "letterbox", "plain"])
def test_resize_sampler_app_pipeline(reference_dir, mode):
    """What an NCNN app does: from_pixels_resize of the content box, substract_mean_normalize,
    copy_make_border with 0 -- equals our resize-sampler tensor (normalization within 2e-6)."""
    ncnn = pytest.importorskip("ncnn")
    image = load_image(reference_dir / "images" / "raccoon-1.jpg")
    tensor, info = preprocess_as(image, (320, 320), mode=mode, sampler="resize")
    (ch, cw), (h, w) = info.content_hw, info.input_hw
    mat = ncnn.Mat.from_pixels_resize(image, ncnn.Mat.PixelType.PIXEL_BGR, image.shape[1],
                                      image.shape[0], cw, ch)  # fmt: skip
    mat.substract_mean_normalize(list(MEAN_BGR), [1 / s for s in STD_BGR])
    x0, y0 = int(info.offset_xy[0]), int(info.offset_xy[1])
    padded = ncnn.Mat()
    ncnn.copy_make_border(mat, padded, y0, h - ch - y0, x0, w - cw - x0, 0, 0.0)
    np.testing.assert_allclose(np.array(padded), tensor[0], rtol=0, atol=2e-6)


@pytest.mark.parametrize("mode", ["pad", "letterbox", "plain"])
def test_resize_sampler_maps_boxes_back_exactly(mode):
    image = gradient_image(417, 650)
    _, info = preprocess_as(image, (320, 320), mode=mode, sampler="resize")
    ch, cw = info.content_hw
    assert info.scale_xy == (cw / 650, ch / 417)  # per axis: the content box is truncated
    if mode == "letterbox":
        assert info.offset_xy == ((320 - cw) // 2, (320 - ch) // 2)
    else:
        assert info.offset_xy == (0.0, 0.0)
    # the content box's corners map onto the image's corners (pixel-edge coordinates)
    x0, y0 = info.offset_xy
    corners = np.array([[x0, y0, x0 + cw, y0 + ch]])
    np.testing.assert_allclose(info.to_original(corners), [[0, 0, 650, 417]], atol=1e-4)


# --------------------------------------------------------------------------- input kinds
def test_bgr_uint8_is_used_without_conversion():
    image = gradient_image(20, 30)
    assert to_bgr(image) is image


@pytest.mark.parametrize("gray_shape", [(60, 80), (60, 80, 1)])
def test_grayscale_is_replicated(gray_shape):
    gray = gradient_image(60, 80)[:, :, 0]
    tensor, _ = preprocess_as(gray.reshape(gray_shape), (64, 96))
    expected, _ = preprocess_as(np.repeat(gray[:, :, None], 3, axis=2), (64, 96))
    np.testing.assert_array_equal(tensor, expected)


def test_bgra_drops_alpha():
    bgr = gradient_image(60, 80)
    bgra = np.dstack([bgr, np.full((60, 80), 3, np.uint8)])
    np.testing.assert_array_equal(preprocess_as(bgra, (64, 96))[0], preprocess_as(bgr, (64, 96))[0])


def test_16_bit_and_float_images_are_scaled_to_0_255():
    image = gradient_image(64, 96)  # no resize at (64, 96): compares normalization only
    expected, _ = preprocess_as(image, (64, 96), mode="plain")
    as_16 = image.astype(np.uint16) * 257  # 255 -> 65535
    np.testing.assert_allclose(preprocess_as(as_16, (64, 96), mode="plain")[0], expected, atol=1e-5)
    as_f64 = image.astype(np.float64)
    np.testing.assert_allclose(
        preprocess_as(as_f64, (64, 96), mode="plain")[0], expected, atol=1e-5
    )
    resized_16, _ = preprocess_as(as_16, (32, 32))  # float resize: close to the uint8 one
    np.testing.assert_allclose(resized_16, preprocess_as(image, (32, 32))[0], atol=0.02)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros(10, np.uint8), "HxW"),
        (np.zeros((10, 10, 2), np.uint8), r"shape \(10, 10, 2\)"),
        (np.zeros((10, 10, 5), np.uint8), "HxWx4"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 3), np.int32), "dtype int32"),
        (np.zeros((10, 10, 3), bool), "dtype bool"),
    ],
)
def test_bad_images_are_rejected(image, message):
    with pytest.raises(ValueError, match=message):
        preprocess_as(image, (32, 32))


def test_bad_arguments_are_rejected():
    image = gradient_image(20, 20)
    with pytest.raises(TypeError, match="numpy array"):
        preprocess_as([[1, 2]], (32, 32))
    with pytest.raises(ValueError, match=r"300x320 \(HxW\) is not a multiple of 32"):
        preprocess_as(image, (300, 320))
    with pytest.raises(ValueError, match=r"352x352 \(HxW\) is not a multiple of 64"):
        preprocess_as(image, (352, 352), mode="plain", size_multiple=64)
    with pytest.raises(ValueError, match="geometry must be one of"):
        preprocess_as(image, (32, 32), mode="stretch")
    with pytest.raises(ValueError, match="sampler must be one of"):
        preprocess_as(image, (32, 32), sampler="nearest")
    with pytest.raises(ValueError, match="color_order"):
        preprocess_as(image, (32, 32), color_order="bgr")
    with pytest.raises(ValueError, match="std"):
        preprocess_as(image, (32, 32), std_bgr=(1.0, 0.0, 1.0))


# --------------------------------------------------------------------------- load_image
@pytest.fixture(scope="module")
def jpeg_bytes(reference_dir) -> bytes:
    return (reference_dir / "images" / "raccoon-1.jpg").read_bytes()


def test_load_image_equals_cv2_imread(reference_dir):
    path = reference_dir / "images" / "raccoon-1.jpg"
    np.testing.assert_array_equal(load_image(path), cv2.imread(str(path)))
    np.testing.assert_array_equal(load_image(str(path)), cv2.imread(str(path)))


def test_load_image_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg"):
        load_image(tmp_path / "nope.jpg")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"just some text, not an image\n", "cannot decode"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "truncated PNG"),
    ],
)
def test_load_image_non_images(tmp_path, content, message):
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=f"fake.jpg.*{message}"):
        load_image(path)


def test_load_image_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.95, -2])  # -2: only the end-of-image marker is lost
def test_load_image_truncated_jpeg(tmp_path, jpeg_bytes, keep):
    cut = len(jpeg_bytes) + keep if keep < 0 else int(len(jpeg_bytes) * keep)
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg_bytes[:cut])
    # cv2.imread itself returns a grey-filled image for this file (a warning on stderr only)
    with pytest.raises(ImageLoadError, match=r"cut\.jpg.*truncated JPEG"):
        load_image(path)


JPEG_ENCODINGS = {
    "baseline": [],
    "progressive": [cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
    "restart-markers": [cv2.IMWRITE_JPEG_RST_INTERVAL, 4],
    "optimized": [cv2.IMWRITE_JPEG_OPTIMIZE, 1],
}


@pytest.mark.parametrize("encoding", JPEG_ENCODINGS)
@pytest.mark.parametrize("channels", [3, 1])
def test_load_image_jpeg_structure_check(tmp_path, encoding, channels):
    image = gradient_image(120, 90)
    image = image if channels == 3 else image[:, :, 0]
    ok, data = cv2.imencode(".jpg", image, JPEG_ENCODINGS[encoding])
    assert ok
    path = tmp_path / "x.jpg"
    path.write_bytes(data.tobytes())
    loaded = load_image(path)  # complete files pass the end-marker walk
    assert loaded.shape == (120, 90, 3)
    np.testing.assert_array_equal(loaded, cv2.imread(str(path)))
    for cut in (len(data) // 3, len(data) - 2):
        path.write_bytes(data.tobytes()[:cut])
        with pytest.raises(ImageLoadError, match="truncated JPEG"):
            load_image(path)


def test_load_image_truncated_png(tmp_path):
    ok, png = cv2.imencode(".png", gradient_image(50, 60))
    assert ok
    path = tmp_path / "cut.png"
    path.write_bytes(png.tobytes()[:-20])
    with pytest.raises(ImageLoadError, match=r"cut\.png.*truncated PNG"):
        load_image(path)


def test_load_image_accepts_bytes_after_jpeg_end(tmp_path, jpeg_bytes):
    path = tmp_path / "motion.jpg"  # phone "motion photos" append a video after the JPEG
    path.write_bytes(jpeg_bytes + b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    assert load_image(path).shape == (417, 650, 3)


def test_load_image_applies_exif_orientation_like_imread(tmp_path, jpeg_bytes):
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack(">I", 0)  # orientation 6
    app1 = b"Exif\x00\x00" + tiff
    path = tmp_path / "rotated.jpg"
    path.write_bytes(
        jpeg_bytes[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg_bytes[2:]
    )
    image = load_image(path)
    assert image.shape == (650, 417, 3)
    np.testing.assert_array_equal(image, cv2.imread(str(path)))


@pytest.mark.parametrize(
    ("stored", "check"),
    [
        (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 30, "16-bit gray"),
        (np.dstack([gradient_image(40, 50), np.full((40, 50), 9, np.uint8)]), "bgra"),
        (gradient_image(40, 50)[:, :, 1], "gray"),
    ],
)
def test_load_image_png_kinds(tmp_path, stored, check):
    path = tmp_path / "kind.png"
    assert cv2.imwrite(str(path), stored)
    image = load_image(path)
    assert image.shape == (40, 50, 3)
    if check == "16-bit gray":
        assert image.dtype == np.float32
        np.testing.assert_allclose(image[:, :, 2], stored * (255 / 65535), rtol=1e-6)
    elif check == "bgra":
        np.testing.assert_array_equal(image, stored[:, :, :3])
    else:
        np.testing.assert_array_equal(image, np.repeat(stored[:, :, None], 3, axis=2))


def test_load_image_error_names_path_type(tmp_path):
    assert isinstance(ImageLoadError("x"), ValueError)
    path = Path(tmp_path) / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ImageLoadError, match=str(path)):
        load_image(path)

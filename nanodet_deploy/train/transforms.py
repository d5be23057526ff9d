"""Training augmentation, as official NanoDet does it (``data/transform/warp.py``, ``color.py``).

One warp matrix combines centring, perspective, scale, stretch, rotation, shear, flip,
translation and the resize to the network input; it is applied once to the image and to
the box corners. Then colour jitter (brightness, contrast, saturation on a 0..1 float
image, each with probability 1/2) and BGR mean/std normalization.

All randomness comes from a ``numpy.random.Generator`` passed in: the same seed gives
the same sample. NumPy + OpenCV only. Validation does not use this module (it uses the
deployment preprocess).

The resize to the network input is official NanoDet's (``preprocess.resize_matrix``): with
``keep_ratio`` one scale from the truncated keep-ratio size and the image centred on it,
exactly what the deployment preprocess (``pad`` mode) does, so a model sees the same
geometry in training and in deployment.

Options and deviations from official:

* ``half_pixel_centers=False`` (default, official): the image is warped on pixel indices,
  like the deployment preprocess, which shifts the image against its boxes by
  ``(scale - 1) / 2`` px and makes a flip move every pixel by one. ``True`` warps with pixel
  centres at ``i + 0.5`` (the box convention) instead — but then training and deployment
  disagree by that same sub-pixel shift.
* ``clip_color=True``: colour jitter keeps the image in ``[0, 1]`` (official lets
  brightness/saturation leave it, which no camera image at inference ever does).
* Boxes narrower or lower than ``min_box_size_px`` after the warp are dropped (official
  keeps collapsed, zero-area boxes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from nanodet_deploy.preprocess import keep_ratio_hw
from nanodet_deploy.preprocess import resize_matrix as _resize_matrix_2x3

Range = tuple[float, float]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation parameters. Defaults: official NanoDet-Plus training pipeline."""

    scale: Range = (0.6, 1.4)
    stretch_w: Range = (0.8, 1.2)  # legacy NanoDet configs: (1, 1)
    stretch_h: Range = (0.8, 1.2)
    translate: float = 0.2  # fraction of the image size, either way
    flip_prob: float = 0.5
    rotation_deg: float = 0.0
    shear_deg: float = 0.0
    perspective: float = 0.0
    brightness: float = 0.2  # +- on the 0..1 image
    contrast: Range = (0.6, 1.4)
    saturation: Range = (0.5, 1.2)
    keep_ratio: bool = False  # official: False for NanoDet-Plus, True for legacy configs
    min_box_size_px: float = 1.0
    half_pixel_centers: bool = False
    clip_color: bool = True
    fill_bgr: tuple[int, int, int] = (0, 0, 0)  # outside the source image (official: black)

    def __post_init__(self) -> None:
        for name in ("scale", "stretch_w", "stretch_h", "contrast", "saturation"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(
                    f"AugmentConfig.{name} must satisfy 0 < low <= high, got {(low, high)}"
                )
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"AugmentConfig.flip_prob must be in [0, 1], got {self.flip_prob}")
        if self.translate < 0 or self.brightness < 0 or self.perspective < 0:
            raise ValueError("AugmentConfig.translate, brightness and perspective must be >= 0")

    @classmethod
    def none(cls, keep_ratio: bool = False) -> AugmentConfig:
        """No augmentation: the warp is the plain resize, colours are untouched."""
        return cls(
            scale=(1.0, 1.0), stretch_w=(1.0, 1.0), stretch_h=(1.0, 1.0), translate=0.0,
            flip_prob=0.0, brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0),
            keep_ratio=keep_ratio,
        )  # fmt: skip


@dataclass(frozen=True)
class WarpParams:
    """One draw of the geometric augmentation (official order of sampling)."""

    perspective_xy: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    stretch_xy: tuple[float, float] = (1.0, 1.0)
    rotation_deg: float = 0.0
    shear_xy_deg: tuple[float, float] = (0.0, 0.0)
    flip: bool = False
    translate_xy: tuple[float, float] = (0.0, 0.0)  # offset of the centre, in image sizes


@dataclass(frozen=True, eq=False)
class TransformedSample:
    image_chw: np.ndarray  # (3, H, W) float32, normalized
    boxes_xyxy: np.ndarray  # (N, 4) float32, input pixels
    labels: np.ndarray  # (N,) int64
    warp_matrix: np.ndarray  # (3, 3) float64: original pixels -> input pixels


def sample_warp_params(config: AugmentConfig, rng: np.random.Generator) -> WarpParams:
    """Draw the geometric parameters (official draws them in this order, every time)."""
    p = config.perspective
    perspective_xy = (rng.uniform(-p, p), rng.uniform(-p, p))
    scale = rng.uniform(*config.scale)
    stretch_xy = (rng.uniform(*config.stretch_w), rng.uniform(*config.stretch_h))
    rotation = rng.uniform(-config.rotation_deg, config.rotation_deg)
    s = config.shear_deg
    shear_xy = (rng.uniform(-s, s), rng.uniform(-s, s))
    flip = bool(rng.random() < config.flip_prob)
    t = config.translate
    translate_xy = (rng.uniform(-t, t), rng.uniform(-t, t))
    return WarpParams(perspective_xy, scale, stretch_xy, rotation, shear_xy, flip, translate_xy)


def augment_matrix(src_hw: tuple[int, int], params: WarpParams) -> np.ndarray:
    """3x3 matrix in source pixels: ``T @ F @ Sh @ R @ Str @ Scl @ P @ C``.

    ``C`` moves the image centre to the origin, ``T`` moves it back to
    ``(0.5 + tx) * width, (0.5 + ty) * height``.
    """
    h, w = src_hw
    center = _translation(-w / 2.0, -h / 2.0)
    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = params.perspective_xy
    scale = np.diag([params.scale, params.scale, 1.0])
    stretch = np.diag([params.stretch_xy[0], params.stretch_xy[1], 1.0])
    rotation = np.eye(3)
    rotation[:2] = cv2.getRotationMatrix2D(center=(0.0, 0.0), angle=params.rotation_deg, scale=1.0)
    shear = np.eye(3)
    shear[0, 1] = math.tan(math.radians(params.shear_xy_deg[0]))
    shear[1, 0] = math.tan(math.radians(params.shear_xy_deg[1]))
    flip = np.diag([-1.0 if params.flip else 1.0, 1.0, 1.0])
    back = _translation((0.5 + params.translate_xy[0]) * w, (0.5 + params.translate_xy[1]) * h)
    return back @ flip @ shear @ rotation @ stretch @ scale @ persp @ center


def resize_matrix(
    src_hw: tuple[int, int], dst_hw: tuple[int, int], keep_ratio: bool = False
) -> np.ndarray:
    """3x3 version of the deployment resize (``preprocess.resize_matrix``, official NanoDet)."""
    return np.vstack([_resize_matrix_2x3(src_hw, dst_hw, keep_ratio), [0.0, 0.0, 1.0]])


def warp_image(
    image: np.ndarray,
    matrix: np.ndarray,
    out_hw: tuple[int, int],
    half_pixel_centers: bool = False,
    fill_bgr: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Warp with bilinear interpolation; pixels from outside the source get ``fill_bgr``."""
    if half_pixel_centers:
        matrix = _translation(-0.5, -0.5) @ matrix @ _translation(0.5, 0.5)
    dsize = (int(out_hw[1]), int(out_hw[0]))
    fill = tuple(float(v) for v in fill_bgr)
    if np.allclose(matrix[2], [0.0, 0.0, 1.0], rtol=0.0, atol=1e-12):
        return cv2.warpAffine(image, matrix[:2], dsize, flags=cv2.INTER_LINEAR, borderValue=fill)
    return cv2.warpPerspective(image, matrix, dsize, flags=cv2.INTER_LINEAR, borderValue=fill)


def warp_boxes(boxes_xyxy: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Transform the 4 corners of each box, take min/max, clip to ``[0, W] x [0, H]``."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32)
    corners = boxes[:, [0, 1, 2, 1, 0, 3, 2, 3]].reshape(-1, 2)  # 4 corners per box
    xyw = np.concatenate([corners, np.ones((len(corners), 1))], axis=1) @ matrix.T
    xy = (xyw[:, :2] / xyw[:, 2:3]).reshape(-1, 4, 2)
    out = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)
    out[:, 0::2] = out[:, 0::2].clip(0, out_hw[1])
    out[:, 1::2] = out[:, 1::2].clip(0, out_hw[0])
    return out.astype(np.float32)


def keep_boxes_mask(boxes_xyxy: np.ndarray, min_size_px: float) -> np.ndarray:
    """``(N,)`` bool: width and height both at least ``min_size_px`` (and > 0)."""
    wh = boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]
    return (wh > 0).all(axis=1) & (wh >= min_size_px).all(axis=1)


def color_jitter(
    image01: np.ndarray, config: AugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """Brightness, contrast, saturation on a float32 BGR image in ``[0, 1]``.

    Each is applied with probability 1/2 (official ``color_aug_and_norm``): brightness adds
    ``U(-b, b)``, contrast multiplies by ``U(*contrast)``, saturation multiplies the HSV
    S channel by ``U(*saturation)``.
    """
    img = image01.astype(np.float32, copy=True)
    if config.brightness > 0 and rng.integers(0, 2):
        img += np.float32(rng.uniform(-config.brightness, config.brightness))
        img = _clip01(img, config.clip_color)
    if config.contrast != (1.0, 1.0) and rng.integers(0, 2):
        img *= np.float32(rng.uniform(*config.contrast))
        img = _clip01(img, config.clip_color)
    if config.saturation != (1.0, 1.0) and rng.integers(0, 2):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[..., 1] *= np.float32(rng.uniform(*config.saturation))
        hsv[..., 1] = _clip01(hsv[..., 1], config.clip_color)
        img = _clip01(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), config.clip_color)
    return img


def normalize_chw(
    image01: np.ndarray, mean_bgr: tuple[float, float, float], std_bgr: tuple[float, float, float]
) -> np.ndarray:
    """``(H, W, 3)`` 0..1 BGR -> ``(3, H, W)`` float32 ``(255 * x - mean) / std``."""
    mean = np.asarray(mean_bgr, np.float32) / 255.0
    std = np.asarray(std_bgr, np.float32) / 255.0
    return np.ascontiguousarray(((image01 - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def train_transform(
    image_bgr: np.ndarray,
    boxes_xyxy: np.ndarray,
    labels: np.ndarray,
    input_hw: tuple[int, int],
    config: AugmentConfig,
    mean_bgr: tuple[float, float, float],
    std_bgr: tuple[float, float, float],
    rng: np.random.Generator,
) -> TransformedSample:
    """Augment one ``uint8`` BGR image and its boxes (original pixels) for training.

    The output is ``input_hw``, or with ``keep_ratio`` the largest size of the source
    aspect inside it (``preprocess.keep_ratio_hw``; the batch collate pads it).
    """
    src_hw = (int(image_bgr.shape[0]), int(image_bgr.shape[1]))
    out_hw = keep_ratio_hw(src_hw, input_hw) if config.keep_ratio else tuple(input_hw)
    params = sample_warp_params(config, rng)
    matrix = resize_matrix(src_hw, out_hw, config.keep_ratio) @ augment_matrix(src_hw, params)
    image = warp_image(image_bgr, matrix, out_hw, config.half_pixel_centers, config.fill_bgr)
    boxes = warp_boxes(boxes_xyxy, matrix, out_hw)
    keep = keep_boxes_mask(boxes, config.min_box_size_px)
    image01 = color_jitter(image.astype(np.float32) / 255.0, config, rng)
    return TransformedSample(
        image_chw=normalize_chw(image01, mean_bgr, std_bgr),
        boxes_xyxy=boxes[keep],
        labels=np.asarray(labels, np.int64).reshape(-1)[keep],
        warp_matrix=matrix,
    )


@dataclass(frozen=True)
class TrainTransform:
    """:func:`train_transform` with its settings bound: the ``transform`` of a training dataset."""

    input_hw: tuple[int, int]
    config: AugmentConfig
    mean_bgr: tuple[float, float, float]
    std_bgr: tuple[float, float, float]

    def __call__(
        self,
        image_bgr: np.ndarray,
        boxes_xyxy: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
    ) -> TransformedSample:
        return train_transform(
            image_bgr,
            boxes_xyxy,
            labels,
            self.input_hw,
            self.config,
            self.mean_bgr,
            self.std_bgr,
            rng,
        )


def _translation(tx: float, ty: float) -> np.ndarray:
    m = np.eye(3)
    m[0, 2], m[1, 2] = tx, ty
    return m


def _clip01(x: np.ndarray, enabled: bool) -> np.ndarray:
    return np.clip(x, 0.0, 1.0, out=x) if enabled else x

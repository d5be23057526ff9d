"""NumPy/OpenCV preprocessing shared by every runtime: image -> (1, 3, H, W) float32 + ResizeInfo.

Public API::

    preprocess(image, input_hw, *, mode="pad", size_multiple=32, mean_bgr=MEAN_BGR,
               std_bgr=STD_BGR, color_order="BGR", normalize=True) -> (tensor, ResizeInfo)
    load_image(path) -> np.ndarray            # HxWx3 BGR, uint8 (or float32 0..255 for 16-bit)
    list_images(folder) -> list[Path]         # image files of a folder (IMAGE_SUFFIXES), sorted
    to_bgr(image) -> np.ndarray               # the input conversions preprocess applies
    keep_ratio_hw(src_hw, dst_hw) -> (h, w)   # official NanoDet's get_minimum_dst_shape
    ImageLoadError                            # unreadable / corrupt / truncated image file

Resize modes (``cv2.warpAffine`` with official NanoDet's resize matrix, INTER_LINEAR, so the
network sees bit for bit the tensor official NanoDet's val pipeline makes):

- ``plain``: resize to exactly ``input_hw``; the aspect ratio is not kept (official
  ``keep_ratio: False``, the NanoDet-Plus configs).
- ``letterbox``: keep the ratio, fit inside ``input_hw``, pad to exactly ``input_hw`` with the
  image **centred** (the odd pixel of padding goes right/bottom); ``ResizeInfo.offset_xy`` holds
  the integer left/top padding.
- ``pad`` (default): keep the ratio, fit inside ``input_hw``, then pad right/bottom only up to
  the next multiple of ``size_multiple``. The tensor can be smaller than ``input_hw`` (a 650x417
  image at 320 gives 1x3x224x320). This is official NanoDet's val pipeline (keep-ratio warp +
  ``stack_batch_img(divisible=32)``) and the fastest input for NCNN.

The keep-ratio content size is computed like official ``get_minimum_dst_shape`` (truncated, so
720x480 at 416 gives 415x277). As official ``get_resize_matrix``, one scale serves both axes
(taken from the truncated size: 277/480 for that example) and the image is centred in the
content box, a sub-pixel shift (up to 0.71 px on the reference images). ``cv2.resize`` instead
samples other positions: measured on the official fixtures, inputs then differ by up to 4.2
normalized units and NMS picks other boxes (up to 30 px off). ``ResizeInfo`` records the exact
scale and shift, which is what maps boxes back.

Normalization is ``(x - mean) / std`` per channel on 0..255 values, computed as
``(x - mean) * (1 / std)`` in float32 straight into the output tensor. Padding is the mean
colour: exactly 0.0 after normalization (as official NanoDet, which pads 0.0 after normalizing),
and ``mean`` itself when ``normalize=False`` (export folded the normalization into the graph, so
the graph still sees 0). ``mean_bgr`` / ``std_bgr`` are always given in BGR order; with
``color_order="RGB"`` the channels and the mean/std are swapped together.

Accepted images (``to_bgr``): BGR uint8 HxWx3 (``cv2.imread``, the main case, used without a
copy), grayscale HxW / HxWx1 (replicated), BGRA HxWx4 (alpha dropped, not composited), uint16
(scaled to float32 0..255 by 255/65535) and float32/float64 images, which must already hold
0..255 values (they are not rescaled or checked for NaN).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from nanodet_deploy.structures import ResizeInfo

MEAN_BGR: tuple[float, float, float] = (103.53, 116.28, 123.675)
STD_BGR: tuple[float, float, float] = (57.375, 57.12, 58.395)
MODES = ("plain", "letterbox", "pad")
# File name endings treated as images (case-insensitive) wherever a folder of images is read.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pgm", ".ppm")
COLOR_ORDERS = ("BGR", "RGB")
# Keep 16-bit depth and grayscale, drop alpha, apply EXIF orientation like cv2.imread(path).
_IMREAD_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


class ImageLoadError(ValueError):
    """An image file exists but cannot be decoded (corrupt, truncated, not an image)."""


def preprocess(
    image: np.ndarray,
    input_hw: tuple[int, int],
    *,
    mode: str = "pad",
    size_multiple: int = 32,
    mean_bgr: tuple[float, float, float] = MEAN_BGR,
    std_bgr: tuple[float, float, float] = STD_BGR,
    color_order: str = "BGR",
    normalize: bool = True,
) -> tuple[np.ndarray, ResizeInfo]:
    """Resize, pad and normalize one image into a C-contiguous float32 ``(1, 3, H, W)`` tensor.

    Returns the tensor and the ``ResizeInfo`` whose ``input_hw`` is the tensor's ``(H, W)``
    (smaller than ``input_hw`` in ``pad`` mode) and which maps boxes back to ``image`` pixels.
    """
    target_hw = _check_args(input_hw, mode, size_multiple, color_order, mean_bgr, std_bgr)
    bgr = to_bgr(image)
    src_hw = (int(bgr.shape[0]), int(bgr.shape[1]))
    content_hw, tensor_hw, offset_xy = _layout(mode, src_hw, target_hw, size_multiple)
    matrix = resize_matrix(src_hw, content_hw, keep_ratio=mode != "plain")
    resized = _warp(bgr, matrix, content_hw)
    tensor = _to_tensor(resized, tensor_hw, offset_xy, mean_bgr, std_bgr, color_order, normalize)
    info = ResizeInfo(
        src_hw=src_hw,
        input_hw=tensor_hw,
        scale_xy=(float(matrix[0, 0]), float(matrix[1, 1])),
        offset_xy=(offset_xy[0] + float(matrix[0, 2]), offset_xy[1] + float(matrix[1, 2])),
        content_hw=content_hw,
    )
    return tensor, info


def resize_matrix(src_hw: tuple[int, int], dst_hw: tuple[int, int], keep_ratio: bool) -> np.ndarray:
    """2x3 matrix mapping source pixels onto a ``dst_hw`` image (official get_resize_matrix).

    keep_ratio: one scale (fit ``dst_hw``), image centred in it; otherwise per-axis scales.
    """
    (src_h, src_w), (dst_h, dst_w) = src_hw, dst_hw
    if not keep_ratio:
        return np.array([[dst_w / src_w, 0.0, 0.0], [0.0, dst_h / src_h, 0.0]])
    ratio = dst_h / src_h if src_w / src_h < dst_w / dst_h else dst_w / src_w
    tx, ty = 0.5 * dst_w - ratio * src_w / 2, 0.5 * dst_h - ratio * src_h / 2
    return np.array([[ratio, 0.0, tx], [0.0, ratio, ty]])


def keep_ratio_hw(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[int, int]:
    """Largest keep-ratio size inside ``dst_hw``, truncated like official get_minimum_dst_shape."""
    src_h, src_w = src_hw
    dst_h, dst_w = dst_hw
    ratio = dst_h / src_h if src_w / src_h < dst_w / dst_h else dst_w / src_w
    return max(1, min(dst_h, int(ratio * src_h))), max(1, min(dst_w, int(ratio * src_w)))


def to_bgr(image: np.ndarray) -> np.ndarray:
    """HxWx3 BGR uint8 or float32 (0..255) view/copy of an accepted image (see module doc)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(
            f"image must be HxW (gray), HxWx1, HxWx3 (BGR) or HxWx4 (BGRA), got shape {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    image = _to_supported_dtype(image)
    if image.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGRA2BGR)
    return image


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 BGR (uint8, or float32 0..255 for 16-bit files).

    Decodes like ``cv2.imread(path)`` (EXIF orientation applied) but keeps 16-bit depth and
    drops alpha through :func:`to_bgr`. Raises ``FileNotFoundError`` for a missing file and
    :class:`ImageLoadError` naming the file for an empty, non-image, corrupt or truncated one.
    JPEG and PNG files are checked for completeness by walking their segment/chunk structure
    to the end marker (EOI / IEND), because some OpenCV builds decode a truncated file into a
    grey-filled image with only a warning on stderr. Bytes after the end marker (e.g. the
    video of a phone "motion photo") are allowed.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: image file not found")
    if p.is_dir():
        raise ImageLoadError(f"{p}: is a directory, not an image file")
    data = p.read_bytes()
    if not data:
        raise ImageLoadError(f"{p}: empty file, not an image")
    problem = _truncation_problem(data)
    if problem:
        raise ImageLoadError(f"{p}: {problem}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _IMREAD_FLAGS)
    if image is None:
        raise ImageLoadError(
            f"{p}: OpenCV cannot decode it (not an image, corrupt, or an unsupported format)"
        )
    return to_bgr(image)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files of ``folder`` (by suffix, not recursive), sorted by name.

    Raises FileNotFoundError when it is not a folder and ValueError when it holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    paths = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.name,
    )
    if not paths:
        raise ValueError(f"{folder}: no image files ({' '.join(IMAGE_SUFFIXES)}) in this folder")
    return paths


def _check_args(
    input_hw: tuple[int, int],
    mode: str,
    size_multiple: int,
    color_order: str,
    mean_bgr: tuple[float, float, float],
    std_bgr: tuple[float, float, float],
) -> tuple[int, int]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if color_order not in COLOR_ORDERS:
        raise ValueError(f"color_order must be one of {COLOR_ORDERS}, got {color_order!r}")
    if len(mean_bgr) != 3 or len(std_bgr) != 3 or any(s == 0 for s in std_bgr):
        raise ValueError(f"mean_bgr and std_bgr need 3 values, std non-zero: {mean_bgr}, {std_bgr}")
    if int(size_multiple) < 1:
        raise ValueError(f"size_multiple must be >= 1, got {size_multiple}")
    if len(input_hw) != 2:
        raise ValueError(f"input_hw must be (height, width), got {input_hw}")
    h, w = int(input_hw[0]), int(input_hw[1])
    if (h, w) != tuple(input_hw) or h <= 0 or w <= 0 or h % size_multiple or w % size_multiple:
        raise ValueError(
            f"input_hw {input_hw[0]}x{input_hw[1]} (HxW) is not a positive integer multiple of "
            f"size_multiple={size_multiple}"
        )
    return h, w


def _to_supported_dtype(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8 or image.dtype == np.float32:
        return image
    if image.dtype == np.uint16:
        return image.astype(np.float32) * np.float32(255.0 / 65535.0)
    if image.dtype == np.float64 or image.dtype == np.float16:
        return image.astype(np.float32)
    raise ValueError(
        f"unsupported image dtype {image.dtype}: expected uint8, uint16 or float (0..255 values)"
    )


def _layout(
    mode: str, src_hw: tuple[int, int], target_hw: tuple[int, int], size_multiple: int
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(content_hw, tensor_hw, offset_xy) for a resize mode."""
    if mode == "plain":
        return target_hw, target_hw, (0, 0)
    content_hw = keep_ratio_hw(src_hw, target_hw)
    if mode == "letterbox":
        offset_xy = ((target_hw[1] - content_hw[1]) // 2, (target_hw[0] - content_hw[0]) // 2)
        return content_hw, target_hw, offset_xy
    m = size_multiple
    tensor_hw = (-(-content_hw[0] // m) * m, -(-content_hw[1] // m) * m)
    return content_hw, tensor_hw, (0, 0)


def _warp(bgr: np.ndarray, matrix: np.ndarray, content_hw: tuple[int, int]) -> np.ndarray:
    if bgr.shape[:2] == content_hw and np.array_equal(matrix, np.eye(2, 3)):
        return bgr
    return cv2.warpAffine(
        np.ascontiguousarray(bgr),
        matrix,
        (content_hw[1], content_hw[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def _to_tensor(
    resized: np.ndarray,
    tensor_hw: tuple[int, int],
    offset_xy: tuple[int, int],
    mean_bgr: tuple[float, float, float],
    std_bgr: tuple[float, float, float],
    color_order: str,
    normalize: bool,
) -> np.ndarray:
    """HWC content -> (1, 3, H, W) float32, one fused pass per channel, mean-colour padding."""
    h, w = tensor_hw
    x0, y0 = offset_xy
    ch, cw = resized.shape[:2]
    tensor = np.empty((1, 3, h, w), dtype=np.float32)
    src_channels = (0, 1, 2) if color_order == "BGR" else (2, 1, 0)
    for k, c in enumerate(src_channels):
        plane = tensor[0, k]
        pad_value = 0.0 if normalize else np.float32(mean_bgr[c])
        plane[:y0].fill(pad_value)
        plane[y0 + ch :].fill(pad_value)
        plane[y0 : y0 + ch, :x0].fill(pad_value)
        plane[y0 : y0 + ch, x0 + cw :].fill(pad_value)
        content = plane[y0 : y0 + ch, x0 : x0 + cw]
        if normalize:
            np.subtract(resized[:, :, c], np.float32(mean_bgr[c]), out=content)
            np.multiply(content, np.float32(1.0 / std_bgr[c]), out=content)
        else:
            content[...] = resized[:, :, c]
    return tensor


def _truncation_problem(data: bytes) -> str | None:
    """Why a JPEG/PNG byte string is incomplete, or None (other formats: left to OpenCV)."""
    if data[:2] == b"\xff\xd8":
        return None if _jpeg_has_eoi(data) else "truncated JPEG (no end-of-image marker)"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return None if _png_has_iend(data) else "truncated PNG (no IEND chunk)"
    return None


def _jpeg_has_eoi(data: bytes) -> bool:
    """Walk JPEG segments (skipping their payloads and entropy-coded data) to the EOI marker."""
    pos, n = 2, len(data)
    while pos + 1 < n:
        if data[pos] != 0xFF:
            return False  # broken structure
        marker = data[pos + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 1 if marker == 0xFF else 2  # fill byte, RSTn, TEM: no length
            continue
        if pos + 4 > n:
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: skip entropy-coded data to the next real marker
            pos = _skip_entropy_data(data, pos)
    return False


def _skip_entropy_data(data: bytes, pos: int) -> int:
    """Index of the next marker after entropy-coded data (FF00 stuffing and RSTn skipped)."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        nxt = data[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
            pos += 1 if nxt == 0xFF else 2
            continue
        return pos


def _png_has_iend(data: bytes) -> bool:
    pos, n = 8, len(data)
    while pos + 8 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IEND":
            return True
        pos += 12 + length
    return False

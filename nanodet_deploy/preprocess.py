"""NumPy/OpenCV preprocessing shared by every runtime: image -> (1, 3, H, W) float32 + ResizeInfo.

Public API::

    preprocess(image, spec) -> (tensor, ResizeInfo)   # spec: structures.PreprocessSpec
    pad_to(tensor, info, target_hw, spec)     # pad on to a static model's input size
    load_image(path) -> np.ndarray            # HxWx3 BGR, uint8 (or float32 0..255 for 16-bit)
    list_images(folder) -> list[Path]         # image files of a folder (IMAGE_SUFFIXES), sorted
    to_bgr(image) -> np.ndarray               # the input conversions preprocess applies
    keep_ratio_hw(src_hw, dst_hw) -> (h, w)   # official NanoDet's get_minimum_dst_shape
    resize_matrix(src_hw, dst_hw, keep_ratio) # official NanoDet's get_resize_matrix
    ImageLoadError                            # unreadable / corrupt / truncated image file

Preprocessing is geometry x sampler (``PreprocessSpec``).

Geometry (where the image goes in the tensor):

- ``plain``: resize to exactly ``input_hw``; the aspect ratio is not kept (official
  ``keep_ratio: False``, the NanoDet-Plus configs).
- ``letterbox``: keep the ratio, fit inside ``input_hw``, pad to exactly ``input_hw`` with the
  image **centred** (the odd pixel of padding goes right/bottom); ``ResizeInfo.offset_xy`` holds
  the integer left/top padding.
- ``pad``: keep the ratio, fit inside ``input_hw``, then pad right/bottom only up to the next
  multiple of ``size_multiple``. The tensor can be smaller than ``input_hw`` (a 650x417 image at
  320 gives 1x3x224x320): official NanoDet's val pipeline (keep-ratio + ``stack_batch_img
  (divisible=32)``) and the fastest input for NCNN.

The keep-ratio content size is computed like official ``get_minimum_dst_shape`` (truncated, so
720x480 at 416 gives 415x277).

Sampler (how the content box is filled, bilinear in both cases):

- ``resize``: ncnn's own ``Mat.from_pixels_resize`` of the content box (8-bit images; 16-bit and
  float images use ``cv2.resize`` INTER_LINEAR), so the tensor is bit for bit what an NCNN app
  computes. (``cv2.resize`` itself is not: measured, it differs from ncnn by one grey level in
  up to 0.3% of the pixels, depending on the scale.) Boxes map back with the per-axis scale
  ``content / image`` and the integer padding offset, exactly. This is why this module imports
  ncnn (12 ms, a core dependency).
- ``warp``: ``cv2.warpAffine`` with official NanoDet's resize matrix: one scale for both axes
  (taken from the truncated size: 277/480 for the example above) and the image centred in the
  content box, a sub-pixel shift (up to 0.71 px on the reference images). This is what official
  NanoDet trains and evaluates on (the network input equals the official fixtures); it samples
  other pixel positions than ``cv2.resize`` (inputs differ by up to 4.2 normalized units).

``ResizeInfo`` records the exact scale and shift of either, which is what maps boxes back.

Normalization is ``(x - mean) / std`` per channel on 0..255 values, computed as
``(x - mean) * (1 / std)`` in float32 straight into the output tensor. Padding is the mean
colour: exactly 0.0 after normalization (as official NanoDet, which pads 0.0 after normalizing),
and ``mean`` itself when the export folded the normalization into the graph (so the graph still
sees 0). ``mean_bgr`` / ``std_bgr`` are always given in BGR order; with ``color_order="RGB"``
the channels and the mean/std are swapped together.

Accepted images (``to_bgr``): BGR uint8 HxWx3 (``cv2.imread``, the main case, used without a
copy), grayscale HxW / HxWx1 (replicated), BGRA HxWx4 (alpha dropped, not composited), uint16
(scaled to float32 0..255 by 255/65535) and float32/float64 images, which must already hold
0..255 values (they are not rescaled or checked for NaN).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import cv2
import ncnn
import numpy as np

from nanodet_deploy.structures import MEAN_BGR, STD_BGR, PreprocessSpec, ResizeInfo

# File name endings treated as images (case-insensitive) wherever a folder of images is read.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pgm", ".ppm")
# Keep 16-bit depth and grayscale, drop alpha, apply EXIF orientation like cv2.imread(path).
_IMREAD_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


class ImageLoadError(ValueError):
    """An image file exists but cannot be decoded (corrupt, truncated, not an image)."""


def preprocess(image: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, ResizeInfo]:
    """Resize, pad and normalize one image into a C-contiguous float32 ``(1, 3, H, W)`` tensor.

    Returns the tensor and the ``ResizeInfo`` whose ``input_hw`` is the tensor's ``(H, W)``
    (smaller than ``spec.input_hw`` for the ``pad`` geometry) and which maps boxes back to
    ``image`` pixels.
    """
    bgr = to_bgr(image)
    src_hw = (int(bgr.shape[0]), int(bgr.shape[1]))
    target_hw = (int(spec.input_hw[0]), int(spec.input_hw[1]))
    content_hw, tensor_hw, pad_xy = _layout(spec.geometry, src_hw, target_hw, spec.size_multiple)
    if spec.sampler == "warp":
        matrix = resize_matrix(src_hw, content_hw, keep_ratio=spec.geometry != "plain")
        warped = _warp(bgr, matrix, content_hw)
        planes = [warped[:, :, c] for c in range(3)]
        scale_xy, shift_xy = (
            (float(matrix[0, 0]), float(matrix[1, 1])),
            (matrix[0, 2], matrix[1, 2]),
        )
    else:
        planes = _resize(bgr, content_hw)
        scale_xy = (content_hw[1] / src_hw[1], content_hw[0] / src_hw[0])
        shift_xy = (0.0, 0.0)
    tensor = _to_tensor(planes, tensor_hw, pad_xy, spec)
    info = ResizeInfo(
        src_hw=src_hw,
        input_hw=tensor_hw,
        scale_xy=scale_xy,
        offset_xy=(pad_xy[0] + float(shift_xy[0]), pad_xy[1] + float(shift_xy[1])),
        content_hw=content_hw,
    )
    return tensor, info


def pad_to(
    tensor: np.ndarray, info: ResizeInfo, target_hw: tuple[int, int], spec: PreprocessSpec
) -> tuple[np.ndarray, ResizeInfo]:
    """Pad a tensor bottom/right to ``target_hw`` with the mean colour (a static-size model).

    The image keeps its place, so ``info`` maps boxes back as before (only ``input_hw`` grows).
    """
    h, w = info.input_hw
    th, tw = int(target_hw[0]), int(target_hw[1])
    if th < h or tw < w:
        raise ValueError(f"cannot pad a {h}x{w} tensor to the smaller {th}x{tw}")
    padded = np.empty((1, 3, th, tw), dtype=np.float32)
    for k, value in enumerate(spec.pad_value):
        padded[0, k].fill(value)
    padded[:, :, :h, :w] = tensor
    return padded, replace(info, input_hw=(th, tw))


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
    geometry: str, src_hw: tuple[int, int], target_hw: tuple[int, int], size_multiple: int
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(content_hw, tensor_hw, pad_xy: left/top padding) for a geometry."""
    if geometry == "plain":
        return target_hw, target_hw, (0, 0)
    content_hw = keep_ratio_hw(src_hw, target_hw)
    if geometry == "letterbox":
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


def _resize(bgr: np.ndarray, content_hw: tuple[int, int]) -> list[np.ndarray]:
    """B, G, R planes of the content box: ncnn's own ``Mat.from_pixels_resize`` for 8-bit
    images (what an app computes, bit for bit), ``cv2.resize`` for 16-bit / float ones."""
    h, w = content_hw
    src_h, src_w = bgr.shape[:2]
    if bgr.dtype != np.uint8:
        resized = cv2.resize(np.ascontiguousarray(bgr), (w, h), interpolation=cv2.INTER_LINEAR)
        return [resized[:, :, c] for c in range(3)]
    pixels = np.ascontiguousarray(bgr)  # ncnn reads it in place: keep it referenced
    mat = ncnn.Mat.from_pixels_resize(pixels, ncnn.Mat.PixelType.PIXEL_BGR, src_w, src_h, w, h)
    planes = np.array(mat)  # (3, h, w) float32 holding 0..255 integers
    return [planes[c] for c in range(3)]


def _to_tensor(
    planes: list[np.ndarray],
    tensor_hw: tuple[int, int],
    pad_xy: tuple[int, int],
    spec: PreprocessSpec,
) -> np.ndarray:
    """B, G, R content planes -> (1, 3, H, W) float32, one fused pass per channel, mean-colour
    padding."""  # fmt: skip
    h, w = tensor_hw
    x0, y0 = pad_xy
    ch, cw = planes[0].shape
    tensor = np.empty((1, 3, h, w), dtype=np.float32)
    src_channels = (0, 1, 2) if spec.color_order == "BGR" else (2, 1, 0)
    normalize, mean_bgr, std_bgr = not spec.normalize_folded, spec.mean_bgr, spec.std_bgr
    for k, c in enumerate(src_channels):
        plane = tensor[0, k]
        pad_value = spec.pad_value[k]
        plane[:y0].fill(pad_value)
        plane[y0 + ch :].fill(pad_value)
        plane[y0 : y0 + ch, :x0].fill(pad_value)
        plane[y0 : y0 + ch, x0 + cw :].fill(pad_value)
        content = plane[y0 : y0 + ch, x0 : x0 + cw]
        if normalize:
            np.subtract(planes[c], np.float32(mean_bgr[c]), out=content)
            np.multiply(content, np.float32(1.0 / std_bgr[c]), out=content)
        else:
            content[...] = planes[c]
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


__all__ = [
    "IMAGE_SUFFIXES",
    "MEAN_BGR",
    "STD_BGR",
    "ImageLoadError",
    "PreprocessSpec",
    "ResizeInfo",
    "keep_ratio_hw",
    "list_images",
    "load_image",
    "pad_to",
    "preprocess",
    "resize_matrix",
    "to_bgr",
]

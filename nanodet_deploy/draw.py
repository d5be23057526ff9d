"""Draw detections on an image: boxes and "name score" labels, one fixed colour per class.

NumPy + OpenCV only. Colours depend only on the class index (golden-ratio steps around the
hue circle), so a class has the same colour in every image, video frame and run.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from nanodet_deploy.preprocess import to_bgr
from nanodet_deploy.structures import Detections

_GOLDEN_RATIO = 0.618033988749895
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(label: int) -> tuple[int, int, int]:
    """BGR colour of a class index: deterministic, distinct for neighbouring indices."""
    hue = (0.1 + int(label) * _GOLDEN_RATIO) % 1.0
    value = 0.95 if int(label) % 2 == 0 else 0.75
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image: np.ndarray, detections: Detections) -> np.ndarray:
    """A uint8 BGR copy of ``image`` with every detection drawn (lowest score first, so the
    best box and label end up on top)."""
    canvas = _as_uint8_bgr(image)
    h, w = canvas.shape[:2]
    thickness = max(1, round(min(h, w) / 320))
    font_scale = max(0.4, min(h, w) / 900)
    for k in np.argsort(detections.scores, kind="stable"):
        label = int(detections.labels[k])
        box = detections.boxes_xyxy[k]
        text = f"{detections.class_name(label)} {float(detections.scores[k]):.2f}"
        _draw_box(canvas, box, text, class_color(label), thickness, font_scale)
    return canvas


def _as_uint8_bgr(image: np.ndarray) -> np.ndarray:
    bgr = to_bgr(image)
    if bgr.dtype == np.uint8:
        return bgr.copy()
    return np.clip(np.rint(bgr), 0, 255).astype(np.uint8)


def _draw_box(
    canvas: np.ndarray,
    box_xyxy: np.ndarray,
    text: str,
    color: tuple[int, int, int],
    thickness: int,
    font_scale: float,
) -> None:
    x1, y1, x2, y2 = (round(float(v)) for v in box_xyxy)
    cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
    (tw, th), baseline = cv2.getTextSize(text, _FONT, font_scale, max(1, thickness - 1))
    top = y1 - th - baseline - 2 if y1 - th - baseline - 2 >= 0 else y1  # inside when no room
    cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + baseline + 2), color, cv2.FILLED)
    text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(
        canvas, text, (x1 + 1, top + th + 1), _FONT, font_scale, text_color,
        max(1, thickness - 1), cv2.LINE_AA,
    )  # fmt: skip

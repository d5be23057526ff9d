"""Small value objects shared by every stage. NumPy only; imports nothing of ours."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ResizeInfo:
    """How an original image was mapped onto the network input tensor.

    A point ``(x, y)`` of the original image lands at
    ``(x * scale_xy[0] + offset_xy[0], y * scale_xy[1] + offset_xy[1])`` in the input tensor.
    ``content_hw`` is the part of the input that holds image pixels (the rest is padding).
    """

    src_hw: tuple[int, int]
    input_hw: tuple[int, int]
    scale_xy: tuple[float, float]
    offset_xy: tuple[float, float] = (0.0, 0.0)
    content_hw: tuple[int, int] | None = None

    def to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map ``(N, 4)`` input-tensor boxes back to original pixels, clipped to the image."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        sx, sy = self.scale_xy
        ox, oy = self.offset_xy
        out = np.empty_like(boxes)
        out[:, 0::2] = (boxes[:, 0::2] - ox) / sx
        out[:, 1::2] = (boxes[:, 1::2] - oy) / sy
        h, w = self.src_hw
        np.clip(out[:, 0::2], 0.0, w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, h, out=out[:, 1::2])
        return out.astype(np.float32)

    @classmethod
    def from_matrix(
        cls, matrix: np.ndarray, src_hw: tuple[int, int], input_hw: tuple[int, int]
    ) -> ResizeInfo:
        """Build from a 3x3 scale + translation warp matrix (official NanoDet's ``warp_matrix``)."""
        m = np.asarray(matrix, dtype=np.float64)
        if abs(m[0, 1]) > 1e-12 or abs(m[1, 0]) > 1e-12 or np.any(np.abs(m[2] - [0, 0, 1]) > 1e-12):
            raise ValueError(f"only scale + translation warps are supported, got {m.tolist()}")
        return cls(
            src_hw=(int(src_hw[0]), int(src_hw[1])),
            input_hw=(int(input_hw[0]), int(input_hw[1])),
            scale_xy=(float(m[0, 0]), float(m[1, 1])),
            offset_xy=(float(m[0, 2]), float(m[1, 2])),
        )


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one image, boxes in original-image pixels."""

    boxes_xyxy: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32, descending
    labels: np.ndarray  # (N,) int64, 0-based class index
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes_xyxy.shape != (n, 4) or self.labels.shape != (n,):
            raise ValueError(
                f"inconsistent detections: boxes {self.boxes_xyxy.shape}, "
                f"scores {self.scores.shape}, labels {self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, class_names: tuple[str, ...] = ()) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            class_names,
        )

    @property
    def names(self) -> list[str]:
        return [self.class_name(int(label)) for label in self.labels]

    def class_name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def to_records(self, image: str) -> list[dict]:
        """The ``detect --json`` layout: one dict per detection."""
        return [
            {
                "image": image,
                "label": int(label),
                "name": self.class_name(int(label)),
                "score": float(score),
                "box_xyxy": [float(v) for v in box],
            }
            for box, score, label in zip(self.boxes_xyxy, self.scores, self.labels, strict=True)
        ]


@dataclass(frozen=True)
class Timing:
    """Wall time of the three stages of one detection, in milliseconds."""

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms

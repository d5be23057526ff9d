"""Small value objects shared by every stage. NumPy only; imports nothing of ours."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np

GEOMETRIES = ("plain", "letterbox", "pad")
SAMPLERS = ("warp", "resize")
COLOR_ORDERS = ("BGR", "RGB")
MEAN_BGR: tuple[float, float, float] = (103.53, 116.28, 123.675)
STD_BGR: tuple[float, float, float] = (57.375, 57.12, 58.395)


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything that turns an image into the network input: meta.json's ``preprocess`` block.

    - ``geometry``: ``plain`` (stretch to exactly ``input_hw``), ``letterbox`` (keep the ratio,
      centred, padded to exactly ``input_hw``) or ``pad`` (keep the ratio, top-left, padded
      right/bottom to the next multiple of ``size_multiple``: the tensor can be smaller).
    - ``sampler``: ``resize`` (``cv2.resize`` INTER_LINEAR of the content box, bit for bit what
      ``ncnn::Mat::from_pixels_resize`` computes in an app) or ``warp`` (official NanoDet's resize
      matrix with ``cv2.warpAffine``: what official training and evaluation see).
    - normalization ``(x - mean) / std`` per channel on 0..255 values (``mean_bgr``/``std_bgr``
      in BGR order whatever ``color_order`` is), skipped when ``normalize_folded`` (the graph
      does it). Padding is the mean colour: 0.0 after normalization.
    """

    input_hw: tuple[int, int]
    geometry: str = "pad"
    sampler: str = "resize"
    size_multiple: int = 32
    mean_bgr: tuple[float, float, float] = MEAN_BGR
    std_bgr: tuple[float, float, float] = STD_BGR
    color_order: str = "BGR"
    normalize_folded: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.geometry not in GEOMETRIES:
            problems.append(
                f"geometry must be one of {', '.join(GEOMETRIES)}, got {self.geometry!r}"
            )
        if self.sampler not in SAMPLERS:
            problems.append(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.color_order not in COLOR_ORDERS:
            problems.append(f"color_order must be BGR or RGB, got {self.color_order!r}")
        if len(self.mean_bgr) != 3 or len(self.std_bgr) != 3 or 0 in self.std_bgr:
            problems.append(
                f"mean/std need 3 values, std non-zero: {self.mean_bgr}, {self.std_bgr}"
            )
        if int(self.size_multiple) < 1:
            problems.append(f"size_multiple must be >= 1, got {self.size_multiple}")
        if len(self.input_hw) != 2 or min(self.input_hw) <= 0:
            problems.append(f"input_hw must be (height, width) > 0, got {self.input_hw}")
        elif any(int(v) % int(self.size_multiple) for v in self.input_hw):
            problems.append(
                f"input size {self.input_hw[0]}x{self.input_hw[1]} (HxW) is not a multiple of "
                f"{self.size_multiple}"
            )
        if problems:
            raise ValueError("; ".join(problems))

    def override(self, **changes) -> PreprocessSpec:
        """A copy with some fields changed (None values leave a field as it is)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def pad_value(self) -> tuple[float, float, float]:
        """What padding pixels hold in the tensor, in tensor channel order."""
        if not self.normalize_folded:
            return (0.0, 0.0, 0.0)
        mean = self.mean_bgr if self.color_order == "BGR" else self.mean_bgr[::-1]
        return (float(mean[0]), float(mean[1]), float(mean[2]))

    def to_dict(self) -> dict:
        """The JSON block: the fields, plus derived facts an app needs spelled out."""
        d = asdict(self)
        for key in ("input_hw", "mean_bgr", "std_bgr"):
            d[key] = list(d[key])
        d["pad_value"] = list(self.pad_value)
        d["box_mapping"] = (
            "x_image = (x_input - offset_x) / scale_x, y_image = (y_input - offset_y) / scale_y, "
            "clipped to the image; sampler resize: scale = content size / image size per axis, "
            "offset = left/top padding (letterbox only); sampler warp: official NanoDet's resize "
            "matrix (keep-ratio: one scale, image centred in the content box)"
        )
        return d

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        derived = {"pad_value", "box_mapping"}
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known - derived)
        if unknown:
            raise ValueError(f"preprocess block: unknown keys {unknown}")
        d = {k: v for k, v in data.items() if k in known}
        for key in ("input_hw", "mean_bgr", "std_bgr"):
            if key in d:
                d[key] = tuple(d[key])
        if "input_hw" in d:
            d["input_hw"] = tuple(int(v) for v in d["input_hw"])
        return cls(**d)


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

    def to_records(self, image: str | None = None) -> list[dict]:
        """The ``detect --json`` layout: one dict per detection (``image`` first when given)."""
        head = {"image": image} if image is not None else {}
        return [
            {
                **head,
                "label": int(label),
                "name": self.class_name(int(label)),
                "score": float(score),
                "box_xyxy": [float(v) for v in box],
            }
            for box, score, label in zip(self.boxes_xyxy, self.scores, self.labels, strict=True)
        ]

    def to_json(self, image: str | None = None, indent: int | None = None) -> str:
        """``to_records`` as a JSON string."""
        return json.dumps(self.to_records(image), indent=indent)

    def __repr__(self) -> str:
        if not len(self):
            return "Detections(0)"
        shown = [
            f"{self.class_name(int(label))} {float(score):.2f} "
            f"[{box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, {box[3]:.0f}]"
            for box, score, label in zip(self.boxes_xyxy, self.scores, self.labels, strict=True)
        ][:10]
        more = f", ... {len(self) - 10} more" if len(self) > 10 else ""
        return f"Detections({len(self)}: " + "; ".join(shown) + more + ")"


@dataclass(frozen=True)
class Timing:
    """Wall time of the three stages of one detection, in milliseconds."""

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms

"""``Detector``: an image in, ``Detections`` out, on any backend. Never imports torch itself.

    from nanodet_deploy import Detector

    det = Detector("exports/nanodet-m_320")                 # ncnn, else onnxruntime, ...
    dets = det.detect("street.jpg")                         # a path or an HxWx3 BGR array
    print(dets.to_records())                                # boxes in original pixels
    for frame in det.stream("clip.mp4"):                    # folder, video, camera index
        print(frame.name, len(frame.detections))

Steps (the same code the benchmarks and the evaluation use): ``preprocess`` with the export's
``preprocess`` block (meta.json; ``sampler`` / ``geometry`` / ``input_hw`` override it) ->
``backend.run`` -> ``decode_raw`` for raw-layout exports -> ``postprocess`` (score threshold,
top-k, class-aware NMS, max detections, boxes mapped back).

``model`` is an export folder (only meta.json and the model files are read), a checkpoint file
(torch: ours or official ``.pth`` / ``.ckpt``), or an already opened ``Backend`` (the Detector
then owns it and closes it; wrap it in ``BorrowedBackend`` to keep it).

Input size: ``input_hw`` defaults to the export size; an override must be a multiple of
``meta.size_multiple``. With the ``pad`` geometry the tensor is the keep-ratio image padded to
that multiple, usually smaller than ``input_hw``. A backend with a static input size (an ONNX
exported without dynamic height/width) accepts only its export size: there ``pad`` pads on to
the full size (bottom/right, mean colour) and any other ``input_hw`` is refused up front.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from nanodet_deploy.artifacts import OUTPUT_RAW, ExportMeta
from nanodet_deploy.postprocess import decode_raw, postprocess
from nanodet_deploy.preprocess import load_image, pad_to, preprocess
from nanodet_deploy.runtimes.base import Backend
from nanodet_deploy.runtimes.registry import open_backend
from nanodet_deploy.sources import open_source
from nanodet_deploy.structures import (
    GEOMETRIES,
    SAMPLERS,
    Detections,
    PreprocessSpec,
    ResizeInfo,
    Timing,
)

log = logging.getLogger(__name__)

MAX_DEFAULT_THREADS = 4  # mobile CPUs: the big cores; more threads rarely help a tiny model
DEFAULT_SCORE_THRESH = 0.35  # what official NanoDet's demo draws; evaluation uses 0.05


def default_threads() -> int:
    """Threads used when none are given: the usable cores, at most ``MAX_DEFAULT_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores))


@dataclass(frozen=True)
class FrameDetections:
    """One frame of a stream: its name, the image, and its detections (None when unreadable)."""

    name: str
    image: np.ndarray | None
    detections: Detections | None
    timing: Timing | None = None
    error: str | None = None


class Detector:
    """Preprocess -> backend -> postprocess for one model (module doc)."""

    def __init__(
        self,
        model: str | os.PathLike | Backend,
        backend: str = "auto",
        *,
        threads: int | None = None,
        precision: str | None = None,
        sampler: str | None = None,
        geometry: str | None = None,
        input_hw: tuple[int, int] | None = None,
        score_thresh: float = DEFAULT_SCORE_THRESH,
        iou_thresh: float = 0.6,
        max_det: int | None = 100,
        top_k: int | None = 1000,
        multi_label: bool = True,
        ncnn_fp16_arithmetic: bool | None = None,
        ncnn_light_mode: bool = True,
    ) -> None:
        """Open ``model`` (module doc) and check the settings.

        ``backend``: auto, torch, onnxruntime, ncnn, mnn or openvino. ``threads``: None uses
        :func:`default_threads`. ``precision``: fp32 / fp16 / bf16 / int8 where the backend has
        it (``runtimes.registry.PRECISIONS``); None follows the export. ``sampler``: ``resize``
        (what an NCNN app computes) or ``warp`` (official NanoDet's); ``geometry``: ``pad``,
        ``letterbox`` or ``plain``; None follows meta.json's preprocess block.
        """
        _check_settings(score_thresh, iou_thresh, threads, max_det, sampler, geometry, input_hw)
        if isinstance(model, str | os.PathLike):
            n_threads = default_threads() if threads is None else int(threads)
            self.backend: Backend | None = open_backend(
                model, backend, threads=n_threads, precision=precision,
                ncnn_fp16_arithmetic=ncnn_fp16_arithmetic, ncnn_light_mode=ncnn_light_mode,
            )  # fmt: skip
        elif backend != "auto" or threads is not None or precision is not None:
            raise ValueError("backend, threads and precision apply to a path, not to a Backend")
        else:
            self.backend = model
        self.score_thresh = float(score_thresh)
        self.iou_thresh = float(iou_thresh)
        self.max_det = max_det
        self.top_k = top_k
        self.multi_label = multi_label
        self.last_timing: Timing | None = None
        try:
            self.static_hw = getattr(self.backend, "static_hw", None)
            hw = self._resolve_input_hw(input_hw)
            self.spec: PreprocessSpec = self.meta.preprocess.override(
                input_hw=hw, sampler=sampler, geometry=geometry
            )
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ public API

    @property
    def meta(self) -> ExportMeta:
        return self._open().meta

    @property
    def backend_name(self) -> str:
        return self._open().name

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.meta.class_names

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.spec.input_hw

    def detect(self, image: np.ndarray | str | os.PathLike) -> Detections:
        """Detections of one image: a file path, or an HxWx3 BGR array (or what
        ``preprocess.to_bgr`` accepts). Boxes are xyxy in image pixels; ``last_timing`` holds
        the per-stage wall time (reading a file is not timed)."""
        backend = self._open()
        if not isinstance(image, np.ndarray):
            image = load_image(image)
        t0 = time.perf_counter()
        tensor, info = self.preprocess(image)
        t1 = time.perf_counter()
        output = backend.run(tensor)
        t2 = time.perf_counter()
        detections = self.postprocess(output, info)
        t3 = time.perf_counter()
        self.last_timing = Timing(
            preprocess_ms=(t1 - t0) * 1e3,
            inference_ms=(t2 - t1) * 1e3,
            postprocess_ms=(t3 - t2) * 1e3,
        )
        return detections

    def stream(
        self, source: str | os.PathLike | int, max_frames: int | None = None
    ) -> Iterator[FrameDetections]:
        """Detect on every frame of an image, a folder (sorted), a video file or a camera index.

        Unreadable folder images come out with ``detections`` None and ``error`` set."""
        src = open_source(source, max_frames)
        try:
            for frame in src.frames():
                if frame.image is None:
                    yield FrameDetections(frame.name, None, None, None, frame.error)
                    continue
                detections = self.detect(frame.image)
                yield FrameDetections(frame.name, frame.image, detections, self.last_timing)
        finally:
            src.close()

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, ResizeInfo]:
        """The ``(1, 3, H, W)`` tensor this model takes for ``image``, and its ResizeInfo."""
        tensor, info = preprocess(image, self.spec)
        if self.static_hw is not None and info.input_hw != self.static_hw:
            tensor, info = pad_to(tensor, info, self.static_hw, self.spec)
        return tensor, info

    def postprocess(self, output: np.ndarray, info: ResizeInfo) -> Detections:
        """Backend output ``(P, K)`` of one image -> Detections in original pixels."""
        m = self.meta
        if m.output_layout == OUTPUT_RAW:
            output = decode_raw(output, m.num_classes, m.reg_max)
        return postprocess(
            output, input_hw=info.input_hw, strides=m.strides, center_offset=m.center_offset,
            resize_info=info, score_thresh=self.score_thresh, iou_thresh=self.iou_thresh,
            max_det=self.max_det, top_k=self.top_k, multi_label=self.multi_label,
            class_names=m.class_names,
        )  # fmt: skip

    def describe(self) -> dict:
        """Settings as plain values (for logs, summaries and records)."""
        backend = self._open()
        return {
            "model": self.meta.model_name,
            "backend": backend.name,
            "backend_settings": dict(getattr(backend, "settings", {}) or {}),
            "preprocess": self.spec.to_dict(),
            "input_hw": list(self.input_hw),
            "score_thresh": self.score_thresh,
            "iou_thresh": self.iou_thresh,
            "max_det": self.max_det,
            "top_k": self.top_k,
            "multi_label": self.multi_label,
        }

    def close(self) -> None:
        """Release the backend (its session / net and threads). Safe to call twice."""
        if getattr(self, "backend", None) is not None:
            self.backend.close()
            self.backend = None

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.backend is None:
            return "Detector(closed)"
        s = self.spec
        return (
            f"Detector({self.meta.model_name!r}, backend={self.backend_name!r}, "
            f"input_hw=({s.input_hw[0]}, {s.input_hw[1]}), geometry={s.geometry!r}, "
            f"sampler={s.sampler!r}, score_thresh={self.score_thresh})"
        )

    # ------------------------------------------------------------------ helpers

    def _open(self) -> Backend:
        if self.backend is None:
            raise RuntimeError("this Detector is closed")
        return self.backend

    def _resolve_input_hw(self, input_hw: tuple[int, int] | None) -> tuple[int, int]:
        m = self.meta
        if input_hw is None:
            return self.static_hw or (int(m.input_hw[0]), int(m.input_hw[1]))
        hw = (int(input_hw[0]), int(input_hw[1]))
        m.check_input_hw(hw)
        if self.static_hw is not None and hw != self.static_hw:
            sh, sw = self.static_hw
            raise ValueError(
                f"input size {hw[0]}x{hw[1]}: this {self.backend_name} model has a static "
                f"{sh}x{sw} (HxW) input; re-export with --dynamic (or at this size), or use the "
                "ncnn files"
            )
        return hw


def _check_settings(
    score_thresh: float,
    iou_thresh: float,
    threads: int | None,
    max_det: int | None,
    sampler: str | None,
    geometry: str | None,
    input_hw: tuple[int, int] | None,
) -> None:
    """Fail on bad settings before a model is opened."""
    if input_hw is not None and (len(input_hw) != 2 or min(input_hw) <= 0):
        raise ValueError(f"input_hw must be (height, width) > 0, got {input_hw}")
    if geometry is not None and geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {geometry!r}")
    if sampler is not None and sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if not 0.0 <= score_thresh < 1.0:
        raise ValueError(f"score threshold must be in [0, 1), got {score_thresh}")
    if not 0.0 < iou_thresh <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], got {iou_thresh}")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if max_det is not None and max_det < 0:
        raise ValueError(f"max_det must be >= 0, got {max_det}")


__all__ = [
    "DEFAULT_SCORE_THRESH",
    "MAX_DEFAULT_THREADS",
    "Detector",
    "FrameDetections",
    "default_threads",
]

"""``Detector``: one image in, ``Detections`` out, on any backend. Never imports torch.

    with Detector("exports/nanodet-m_320") as det:          # ncnn, else onnxruntime
        dets = det.detect(cv2.imread("street.jpg"))        # boxes in original pixels
        print(det.last_timing.inference_ms)

Steps (the same code the benchmarks and the evaluation use):
``preprocess`` (resize mode, meta.json's mean/std/colour order; no normalization when the export
folded it in) -> ``backend.run`` -> ``decode_raw`` for ``output_layout == "raw"`` exports ->
``postprocess`` (score threshold, top-k, class-aware NMS, max detections, boxes mapped back).

``path`` is an export folder (onnxruntime / ncnn; only meta.json and the model files are read),
a checkpoint file (torch: ours or official ``.pth`` / ``.ckpt``), or an already opened
``Backend`` (the Detector then owns it and closes it).

Input size: ``input_hw`` defaults to meta.json's (the export size); an override must be a
multiple of ``meta.size_multiple``. In ``pad`` mode the tensor is the keep-ratio image padded to
that multiple, so it is usually smaller than ``input_hw``. An ONNX file exported without
dynamic height/width accepts only its export size: there ``pad`` pads on to the full size
(bottom/right, mean colour) and any other ``input_hw`` is refused up front.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace

import numpy as np

from nanodet_deploy.artifacts import OUTPUT_RAW, ExportMeta
from nanodet_deploy.postprocess import decode_raw, postprocess
from nanodet_deploy.preprocess import MODES, preprocess
from nanodet_deploy.runtimes import open_backend
from nanodet_deploy.runtimes.base import Backend
from nanodet_deploy.structures import Detections, ResizeInfo, Timing

log = logging.getLogger(__name__)

MAX_DEFAULT_THREADS = 4  # mobile CPUs: the big cores; more threads rarely help a tiny model


def default_threads() -> int:
    """Threads used when none are given: the usable cores, at most ``MAX_DEFAULT_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores))


class Detector:
    """Preprocess -> backend -> postprocess for one model (module doc)."""

    def __init__(
        self,
        path: str | os.PathLike | Backend,
        backend: str = "auto",
        *,
        threads: int | None = None,
        resize: str = "pad",
        input_hw: tuple[int, int] | None = None,
        score_thresh: float = 0.05,
        iou_thresh: float = 0.6,
        max_det: int | None = 100,
        top_k: int | None = 1000,
        multi_label: bool = True,
        precision: str | None = None,
        fp16_arithmetic: bool | None = None,
        light_mode: bool = True,
    ) -> None:
        """Open ``path`` (module doc) and check the settings.

        ``threads``: None uses :func:`default_threads`. ``precision`` / ``fp16_arithmetic`` /
        ``light_mode`` are ncnn options (``open_backend``); ``precision`` None follows the export.
        """
        _check_settings(resize, input_hw, score_thresh, iou_thresh, threads)
        if isinstance(path, str | os.PathLike):
            n_threads = default_threads() if threads is None else int(threads)
            self.backend: Backend = open_backend(
                path, backend, threads=n_threads, precision=precision,
                fp16_arithmetic=fp16_arithmetic, light_mode=light_mode,
            )  # fmt: skip
        elif backend != "auto" or threads is not None or precision is not None:
            raise ValueError("backend, threads and precision apply to a path, not to a Backend")
        else:
            self.backend = path
        self.resize = resize
        self.score_thresh = float(score_thresh)
        self.iou_thresh = float(iou_thresh)
        self.max_det = max_det
        self.top_k = top_k
        self.multi_label = multi_label
        self.last_timing: Timing | None = None
        try:
            self.static_hw = _static_input_hw(self.backend)
            self.input_hw = self._resolve_input_hw(input_hw)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ public API

    @property
    def meta(self) -> ExportMeta:
        return self.backend.meta

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.meta.class_names

    def detect(self, image: np.ndarray) -> Detections:
        """Detections of one image (HxWx3 BGR, or what ``preprocess.to_bgr`` accepts).

        Boxes are xyxy in ``image`` pixels; ``last_timing`` holds the per-stage wall time.
        """
        if self.backend is None:
            raise RuntimeError("this Detector is closed")
        t0 = time.perf_counter()
        tensor, info = self.preprocess(image)
        t1 = time.perf_counter()
        output = self.backend.run(tensor)
        t2 = time.perf_counter()
        detections = self.postprocess(output, info)
        t3 = time.perf_counter()
        self.last_timing = Timing(
            preprocess_ms=(t1 - t0) * 1e3,
            inference_ms=(t2 - t1) * 1e3,
            postprocess_ms=(t3 - t2) * 1e3,
        )
        return detections

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, ResizeInfo]:
        """The ``(1, 3, H, W)`` tensor this model takes for ``image``, and its ResizeInfo."""
        m = self.meta
        tensor, info = preprocess(
            image, self.input_hw, mode=self.resize, size_multiple=m.size_multiple,
            mean_bgr=m.mean_bgr, std_bgr=m.std_bgr, color_order=m.color_order,
            normalize=not m.normalize_folded,
        )  # fmt: skip
        if self.static_hw is not None and info.input_hw != self.static_hw:
            tensor, info = _pad_to(tensor, info, self.static_hw, m)
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
        settings = getattr(self.backend, "settings", {})
        return {
            "model": self.meta.model_name,
            "backend": self.backend_name,
            "backend_settings": dict(settings),
            "resize": self.resize,
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
        h, w = self.input_hw
        return (
            f"Detector({self.meta.model_name!r}, backend={self.backend_name!r}, "
            f"input_hw=({h}, {w}), resize={self.resize!r}, score_thresh={self.score_thresh})"
        )

    # ------------------------------------------------------------------ helpers

    def _resolve_input_hw(self, input_hw: tuple[int, int] | None) -> tuple[int, int]:
        m = self.meta
        if input_hw is None:
            return self.static_hw or (int(m.input_hw[0]), int(m.input_hw[1]))
        hw = (int(input_hw[0]), int(input_hw[1]))
        m.check_input_hw(hw)
        if self.static_hw is not None and hw != self.static_hw:
            sh, sw = self.static_hw
            raise ValueError(
                f"input size {hw[0]}x{hw[1]}: this ONNX model has a static {sh}x{sw} (HxW) "
                "input; re-export with --dynamic (or at this size), or use the ncnn files"
            )
        return hw


def _check_settings(
    resize: str,
    input_hw: tuple[int, int] | None,
    score_thresh: float,
    iou_thresh: float,
    threads: int | None,
) -> None:
    """Fail on bad settings before a model is opened."""
    if resize not in MODES:
        raise ValueError(f"resize must be one of {', '.join(MODES)}, got {resize!r}")
    if input_hw is not None and (len(input_hw) != 2 or min(input_hw) <= 0):
        raise ValueError(f"input_hw must be (height, width) > 0, got {input_hw}")
    if not 0.0 <= score_thresh < 1.0:
        raise ValueError(f"score threshold must be in [0, 1), got {score_thresh}")
    if not 0.0 < iou_thresh <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], got {iou_thresh}")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")


def _static_input_hw(backend: Backend) -> tuple[int, int] | None:
    """The only (H, W) the backend accepts, or None when any multiple of 32 works.

    ncnn and torch take any size; onnxruntime only when the ONNX has dynamic height and width.
    """
    meta = backend.meta
    if backend.name != "onnxruntime" or {"height", "width"} <= set(meta.dynamic_axes):
        return None
    return int(meta.input_hw[0]), int(meta.input_hw[1])


def _pad_to(
    tensor: np.ndarray, info: ResizeInfo, target_hw: tuple[int, int], meta: ExportMeta
) -> tuple[np.ndarray, ResizeInfo]:
    """Pad a ``pad``-mode tensor bottom/right to ``target_hw`` with the mean colour."""
    h, w = info.input_hw
    th, tw = target_hw
    padded = np.empty((1, 3, th, tw), dtype=np.float32)
    for k in range(3):
        c = k if meta.color_order == "BGR" else 2 - k
        padded[0, k].fill(np.float32(meta.mean_bgr[c]) if meta.normalize_folded else 0.0)
    padded[:, :, :h, :w] = tensor
    return padded, replace(info, input_hw=(th, tw))


__all__ = ["MAX_DEFAULT_THREADS", "Detector", "default_threads"]

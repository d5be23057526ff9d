"""The one small protocol every inference backend implements, and the checks they share.

A backend takes the preprocessed ``(1, 3, H, W)`` float32 tensor and returns the model output
with the batch axis dropped: ``(P, K)`` float32 where ``K = C + 4`` for decoded exports
(``meta.output_layout == "decoded"``) or ``C + 4 * (reg_max + 1)`` for raw ones. Everything
before (preprocess) and after (postprocess) is shared NumPy code. NumPy only, no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from nanodet_deploy.artifacts import ExportMeta, MetaError

BACKENDS = ("torch", "onnxruntime", "ncnn", "mnn", "openvino")


class BackendUnavailable(ImportError):
    """The package a backend needs is not installed; the message names it."""


@runtime_checkable
class Backend(Protocol):
    name: str  # one of BACKENDS
    meta: ExportMeta  # what the model expects and produces
    static_hw: tuple[int, int] | None  # the only input (H, W) it accepts; None: any multiple
    settings: dict  # what was configured (threads, precision options), for records

    def run(self, input_nchw: np.ndarray) -> np.ndarray:
        """(1, 3, H, W) float32 -> (P, K) float32."""
        ...

    def close(self) -> None:
        """Release the session / net (and its threads)."""
        ...


class BorrowedBackend:
    """A backend lent to a Detector that must not close it (the lender closes it)."""

    def __init__(self, backend: Backend) -> None:
        self.name, self.meta, self.run = backend.name, backend.meta, backend.run
        self.static_hw = getattr(backend, "static_hw", None)
        self.settings = getattr(backend, "settings", {})

    def close(self) -> None:
        pass


def check_options(
    backend: str, precision: str | None, precisions: tuple[str, ...], threads: int
) -> str:
    """The precision to run (``fp32`` when None); ValueError for an unknown precision or
    fewer than one thread."""
    precision = precision or "fp32"
    if precision not in precisions:
        raise ValueError(f"{backend} precision must be one of {precisions}, got {precision!r}")
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return precision


def model_file(export_dir: str | Path, meta: ExportMeta, key: str) -> Path:
    """The file meta.json lists under ``key``; MetaError when it is not listed or missing."""
    name = meta.files.get(key)
    if not name:
        raise MetaError(f"{export_dir}/meta.json lists no {key!r} file (files: {meta.files})")
    path = Path(export_dir) / name
    if not path.is_file():
        raise MetaError(f"{path}: listed in meta.json as {key!r} but missing")
    return path


def check_input(meta: ExportMeta, input_nchw: np.ndarray) -> tuple[int, int]:
    """(H, W) of a ``(1, 3, H, W)`` float32 input; ValueError naming what is wrong."""
    shape = getattr(input_nchw, "shape", None)
    if shape is None or len(shape) != 4 or shape[0] != 1 or shape[1] != 3:
        raise ValueError(f"input must be (1, 3, H, W), got shape {shape}")
    if input_nchw.dtype != np.float32:
        raise ValueError(f"input must be float32, got {input_nchw.dtype}")
    input_hw = (int(shape[2]), int(shape[3]))
    meta.check_input_hw(input_hw)
    return input_hw


def check_static_input(static_hw: tuple[int, int] | None, input_hw: tuple[int, int]) -> None:
    """ValueError when a model with a fixed input size gets another size."""
    if static_hw is not None and tuple(input_hw) != tuple(static_hw):
        h, w = static_hw
        raise ValueError(
            f"input {input_hw[0]}x{input_hw[1]}: this model has a static {h}x{w} (HxW) input; "
            "export with --dynamic or at this size"
        )


def check_output(
    meta: ExportMeta, output: np.ndarray, input_hw: tuple[int, int], where: str
) -> np.ndarray:
    """``output`` as ``(P, K)`` float32; MetaError when it does not match meta.json."""
    out = np.asarray(output, dtype=np.float32)
    if out.ndim == 3 and out.shape[0] == 1:
        out = out[0]
    expected = (meta.num_points(input_hw), meta.output_channels)
    if out.shape != expected:
        raise MetaError(
            f"{where}: output {out.shape} at input {input_hw[0]}x{input_hw[1]}, but meta.json "
            f"({meta.num_classes} classes, {meta.output_layout} layout, reg_max {meta.reg_max}, "
            f"strides {list(meta.strides)}) says {expected}: the model files and meta.json "
            "do not belong together"
        )
    return out

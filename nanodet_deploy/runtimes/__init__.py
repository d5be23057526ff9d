"""Inference backends behind one small protocol (``runtimes/base.py``), and ``open_backend``.

- ``TorchBackend`` (torch_backend.py): a checkpoint or zoo model through the export wrapper.
- ``OrtBackend`` (ort.py): ``model.onnx`` of an export folder in onnxruntime.
- ``NcnnBackend`` (ncnn.py): ``model.ncnn.param/.bin`` of an export folder in ncnn.
- ``Detector`` (detector.py): image -> Detections on any of them (imported on first use).

Every backend takes ``(1, 3, H, W)`` float32 and returns ``(P, K)`` float32 (meta.json's layout).
This module and ort.py / ncnn.py never import torch; the backends import their package when
opened and raise ``BackendUnavailable`` naming the pip package when it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nanodet_deploy.artifacts import ExportMeta, MetaError, read_meta
from nanodet_deploy.runtimes.base import BACKENDS, Backend, BackendUnavailable

CHECKPOINT_SUFFIXES = (".pth", ".ckpt", ".pt")
PRECISIONS = ("fp32", "fp16")
_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "pytorch": "torch"}


def open_backend(
    path: str | os.PathLike,
    backend: str = "auto",
    *,
    threads: int = 1,
    precision: str | None = None,
    fp16_arithmetic: bool | None = None,
    light_mode: bool = True,
) -> Backend:
    """Open an export folder (auto: ncnn when its files exist, else onnxruntime; torch runs the
    folder's ``model.pth``) or a checkpoint file (torch).

    ``precision``: None follows the export (ncnn: fp16 export -> ncnn's fp16 defaults, fp32
    export -> all fp32); "fp32" / "fp16" force it (fp16 only for ncnn).
    """
    path = Path(path)
    name = _resolve_name(path, backend)
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and name != "ncnn":
        raise ValueError(f"{name} runs in fp32 only; fp16 is an ncnn option")
    if name == "torch":
        from nanodet_deploy.runtimes.torch_backend import TorchBackend

        if path.is_dir():
            return TorchBackend.from_export(path, threads=threads)
        return TorchBackend.from_checkpoint(path, threads=threads)
    if name == "onnxruntime":
        from nanodet_deploy.runtimes.ort import OrtBackend

        return OrtBackend(path, threads=threads)
    from nanodet_deploy.runtimes.ncnn import NcnnBackend

    return NcnnBackend(
        path, threads=threads, fp16_arithmetic=fp16_arithmetic, light_mode=light_mode,
        precision=precision,
    )  # fmt: skip


def _resolve_name(path: Path, backend: str) -> str:
    name = _ALIASES.get(backend, backend)
    if name not in (*BACKENDS, "auto"):
        raise ValueError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such export folder or checkpoint")
    if path.is_file():
        if name not in ("auto", "torch") or path.suffix not in CHECKPOINT_SUFFIXES:
            raise ValueError(
                f"{path}: a file opens only as a checkpoint ({'/'.join(CHECKPOINT_SUFFIXES)}) "
                f"with the torch backend; onnxruntime and ncnn need an export folder"
            )
        return "torch"
    if name != "auto":
        return name
    meta = read_meta(path)
    ncnn_files = [meta.files.get("ncnn_param"), meta.files.get("ncnn_bin")]
    if all(f and (path / f).is_file() for f in ncnn_files):
        return "ncnn"
    if meta.files.get("onnx") and (path / meta.files["onnx"]).is_file():
        return "onnxruntime"
    raise MetaError(f"{path}: meta.json lists no model file that exists ({meta.files})")


def model_file(export_dir: Path, meta: ExportMeta, key: str) -> Path:
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


def __getattr__(name: str):
    """``Detector`` (runtimes/detector.py) on first use: it imports this module itself."""
    if name == "Detector":
        from nanodet_deploy.runtimes.detector import Detector

        return Detector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "Detector",
    "check_input",
    "check_output",
    "model_file",
    "open_backend",
]

from nanodet_deploy.runtimes.detector import Detector as Detector  # noqa: E402 (uses open_backend)

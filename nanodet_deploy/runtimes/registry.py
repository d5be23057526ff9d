"""Backend name -> implementation: the one seam where runtime packages get imported.

``open_backend`` imports the module of the backend that is asked for (``torch_backend``,
``ort``, ``ncnn``, ``mnn``, ``openvino``; each imports its package at its top) and turns a
missing package into ``BackendUnavailable`` naming what to ``pip install``. Nothing else in the
package imports a runtime package, so detection with ncnn never loads torch or onnxruntime.

Precisions per backend (``PRECISIONS``): ``fp32`` everywhere; ``fp16`` for ncnn (fp16 storage
and arithmetic where the CPU has them), MNN (its low-precision mode) and OpenVINO (inference
precision hint); ``bf16`` for OpenVINO where the CPU offers it; ``int8`` for the int8 files of
an export (onnxruntime QDQ, ncnn int8, MNN int8). ``None`` follows the export: ncnn runs an
fp16-weight export with ncnn's fp16 defaults and an fp32 one in fp32; the others run fp32.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

from nanodet_deploy.artifacts import MetaError, read_meta
from nanodet_deploy.runtimes.base import BACKENDS, Backend, BackendUnavailable

CHECKPOINT_SUFFIXES = (".pth", ".ckpt", ".pt")
PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32",),
    "onnxruntime": ("fp32", "int8"),
    "ncnn": ("fp32", "fp16", "int8"),
    "mnn": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "fp16", "bf16"),
}
# backend -> (module, class, the import name of its package, the pip package)
_IMPLEMENTATIONS: dict[str, tuple[str, str, str, str]] = {
    "torch": ("torch_backend", "TorchBackend", "torch", "torch"),
    "onnxruntime": ("ort", "OrtBackend", "onnxruntime", "onnxruntime"),
    "ncnn": ("ncnn", "NcnnBackend", "ncnn", "ncnn"),
    "mnn": ("mnn", "MnnBackend", "MNN", "MNN"),
    "openvino": ("openvino", "OpenVinoBackend", "openvino", "openvino"),
}
# files an export folder needs for a backend at a precision (meta.json "files" keys)
_FILES: dict[tuple[str, str], tuple[str, ...]] = {
    ("onnxruntime", "fp32"): ("onnx",),
    ("onnxruntime", "int8"): ("onnx_int8",),
    ("ncnn", "fp32"): ("ncnn_param", "ncnn_bin"),
    ("ncnn", "fp16"): ("ncnn_param", "ncnn_bin"),
    ("ncnn", "int8"): ("ncnn_int8_param", "ncnn_int8_bin"),
    ("mnn", "fp32"): ("mnn",),
    ("mnn", "fp16"): ("mnn",),
    ("mnn", "int8"): ("mnn_int8",),
    ("torch", "fp32"): ("checkpoint",),
}
_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "pytorch": "torch", "ov": "openvino"}
AUTO_ORDER = ("ncnn", "onnxruntime", "openvino", "mnn")


def backend_name(name: str) -> str:
    """The canonical backend name (aliases: ort/onnx, pytorch, ov); ValueError if unknown."""
    canonical = _ALIASES.get(name, name)
    if canonical not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose auto, {', '.join(BACKENDS)}")
    return canonical


def missing_package(name: str) -> str | None:
    """Why backend ``name`` cannot run here (its package is not installed), or None."""
    _, _, import_name, pip_name = _IMPLEMENTATIONS[backend_name(name)]
    try:
        found = importlib.util.find_spec(import_name) is not None
    except (ImportError, ValueError):  # a broken install, or an import blocker
        found = False
    if not found:
        return f"backend {name} needs the {pip_name} package: pip install {pip_name}"
    return None


def required_files(name: str, precision: str) -> tuple[str, ...]:
    """meta.json ``files`` keys backend ``name`` reads at ``precision`` (OpenVINO: see below)."""
    if name == "openvino":
        return ("onnx",)  # or an IR ("openvino_xml"); checked by the backend itself
    return _FILES.get((name, precision), ())


def export_has(export_dir: str | os.PathLike, name: str, precision: str) -> bool:
    """True when the export folder holds the files backend ``name`` needs at ``precision``."""
    meta = read_meta(export_dir)
    if name == "openvino":
        keys_options = [("openvino_xml", "openvino_bin"), ("onnx",)]
    else:
        keys_options = [required_files(name, precision)]
    return any(
        all(meta.files.get(k) and (Path(export_dir) / meta.files[k]).is_file() for k in keys)
        for keys in keys_options
    )


def check_precision(name: str, precision: str | None) -> None:
    if precision is not None and precision not in PRECISIONS[name]:
        raise ValueError(f"backend {name} runs {', '.join(PRECISIONS[name])}; not {precision!r}")


def open_backend(
    path: str | os.PathLike,
    backend: str = "auto",
    *,
    threads: int = 1,
    precision: str | None = None,
    ncnn_fp16_arithmetic: bool | None = None,
    ncnn_light_mode: bool = True,
    ncnn_big_cores: bool = False,
) -> Backend:
    """Open an export folder (``auto``: the first of ncnn, onnxruntime, openvino, mnn whose
    files it has; torch runs the folder's ``model.pth``) or a checkpoint file (torch).

    ``precision``: None follows the export (module doc); otherwise one of ``PRECISIONS``.
    ``ncnn_*``: ncnn options (``NcnnBackend``); ``ncnn_big_cores`` keeps ncnn's threads on the
    big cores of a big.LITTLE CPU (what the benchmarks do).
    """
    path = Path(path)
    name = _resolve_name(path, backend)
    check_precision(name, precision)
    cls = _backend_class(name)
    if name == "torch":
        if path.is_dir():
            return cls.from_export(path, threads=threads)
        return cls.from_checkpoint(path, threads=threads)
    if name == "ncnn":
        return cls(
            path, threads=threads, precision=precision,
            fp16_arithmetic=ncnn_fp16_arithmetic, light_mode=ncnn_light_mode,
            big_cores=ncnn_big_cores,
        )  # fmt: skip
    return cls(path, threads=threads, precision=precision)


def _backend_class(name: str) -> type:
    module_name, class_name, import_name, pip_name = _IMPLEMENTATIONS[name]
    try:
        module = importlib.import_module(f"nanodet_deploy.runtimes.{module_name}")
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0] if exc.name else None
        if missing != import_name and not (missing is None and repr(import_name) in str(exc)):
            raise
        raise BackendUnavailable(
            f"backend {name} needs the {pip_name} package: pip install {pip_name}"
        ) from exc
    return getattr(module, class_name)


def _resolve_name(path: Path, backend: str) -> str:
    name = backend if backend == "auto" else backend_name(backend)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such export folder or checkpoint")
    if path.is_file():
        if name not in ("auto", "torch") or path.suffix not in CHECKPOINT_SUFFIXES:
            raise ValueError(
                f"{path}: a file opens only as a checkpoint ({'/'.join(CHECKPOINT_SUFFIXES)}) "
                f"with the torch backend; the other backends need an export folder"
            )
        return "torch"
    if name != "auto":
        return name
    meta = read_meta(path)
    for candidate in AUTO_ORDER:
        if export_has(path, candidate, "fp32") or (
            candidate == "ncnn" and export_has(path, "ncnn", "fp16")
        ):
            return candidate
    raise MetaError(f"{path}: meta.json lists no model file that exists ({meta.files})")

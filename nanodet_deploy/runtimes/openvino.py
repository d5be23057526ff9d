"""OpenVINO backend: the IR ``model.openvino.xml`` of an export folder, else its ``model.onnx``.

CPU plugin, compiled with ``INFERENCE_NUM_THREADS=threads``, ``PERFORMANCE_HINT=LATENCY`` (one
stream) and an explicit ``INFERENCE_PRECISION_HINT``:

- ``"fp32"`` (default): ``f32``. Without the hint OpenVINO picks bf16 on CPUs with AVX512_BF16 /
  AMX, which is not the fp32 model.
- ``"bf16"`` / ``"fp16"``: ``bf16`` / ``f16`` where ``OPTIMIZATION_CAPABILITIES`` lists BF16 /
  FP16, else ValueError. (Asked for ``f16`` on a CPU without FP16, OpenVINO 2026.4 silently runs
  bf16 instead.) bf16 keeps 8 significant bits, fp16 11: see the tolerances in the tests.

Input size: with dynamic height/width (an ONNX exported with them dynamic) every new input size
gets its own compiled model, reshaped to that static size (compiling takes ~0.2 s; the last
``MAX_COMPILED_SIZES`` sizes are kept): at 320x320 on one thread that ran 3% faster than one
model compiled with dynamic shapes (10.55 vs 10.93 ms). A static model accepts only its size
(``static_hw``).

Threads: ``ENABLE_CPU_PINNING`` (on by default for the latency hint on Linux) is switched off:
pinned it ran no faster (10.72 vs 10.55 ms, one thread), and pinned threads cannot move off a
core another process is using. OpenVINO's TBB worker threads spin briefly after each inference
and OpenVINO has no knob for that; with ``threads=1`` it starts no worker threads.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import openvino as ov

from nanodet_deploy.artifacts import MetaError, read_meta
from nanodet_deploy.runtimes.base import (
    check_input,
    check_options,
    check_output,
    check_static_input,
    model_file,
)

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_CAPABILITIES = {"bf16": "BF16", "fp16": "FP16"}  # OPTIMIZATION_CAPABILITIES entry required
MAX_COMPILED_SIZES = 8
CPU_PINNING = False  # module doc: no gain measured, and it pins threads to busy cores


class OpenVinoBackend:
    """OpenVINO CPU runtime for one export folder (module doc)."""

    name = "openvino"

    def __init__(
        self, export_dir: str | os.PathLike, threads: int = 1, precision: str | None = None
    ) -> None:
        precision = check_options("openvino", precision, PRECISIONS, threads)
        self.export_dir = Path(export_dir)
        self.meta = read_meta(self.export_dir)
        self._core = ov.Core()
        _check_capability(self._core, precision)
        path = self._model_path()
        self._model = self._read(path)
        self.static_hw = _static_hw(self._model)
        self._config = {
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "ENABLE_CPU_PINNING": CPU_PINNING,
        }
        self._compiled: OrderedDict[tuple[int, int], tuple] = OrderedDict()
        compiled, _ = self._request(self.static_hw or tuple(self.meta.input_hw))
        self.settings = _settings(compiled, path, precision, self.static_hw)

    def _model_path(self) -> Path:
        if self.meta.files.get("openvino_xml"):
            return model_file(self.export_dir, self.meta, "openvino_xml")
        return model_file(self.export_dir, self.meta, "onnx")

    def _read(self, path: Path):
        try:
            model = self._core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise MetaError(f"{path}: OpenVINO cannot read it: {exc}") from exc
        m = self.meta
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise MetaError(f"{path}: expected one input and one output")
        if m.input_name not in model.inputs[0].get_names():
            raise MetaError(
                f"{path}: input is named {model.inputs[0].get_any_name()!r}, "
                f"meta.json says {m.input_name!r}"
            )
        channels = model.outputs[0].partial_shape[-1]
        if channels.is_static and channels.get_length() != m.output_channels:
            raise MetaError(
                f"{path}: output has {channels.get_length()} channels, meta.json "
                f"({m.num_classes} classes, {m.output_layout} layout) says {m.output_channels}"
            )
        return model

    def _request(self, input_hw: tuple[int, int]) -> tuple:
        """(compiled model, infer request) for ``input_hw``, compiled on first use."""
        entry = self._compiled.get(input_hw)
        if entry is not None:
            self._compiled.move_to_end(input_hw)
            return entry
        model = self._model.clone()
        model.reshape({0: [1, 3, input_hw[0], input_hw[1]]})
        compiled = self._core.compile_model(model, "CPU", self._config)
        entry = (compiled, compiled.create_infer_request())
        self._compiled[input_hw] = entry
        if len(self._compiled) > MAX_COMPILED_SIZES:
            self._compiled.popitem(last=False)
        log.debug("OpenVINO compiled for %dx%d", *input_hw)
        return entry

    def run(self, input_nchw: np.ndarray) -> np.ndarray:
        input_hw = check_input(self.meta, input_nchw)
        check_static_input(self.static_hw, input_hw)
        _, request = self._request(input_hw)
        request.infer({0: np.ascontiguousarray(input_nchw)}, share_inputs=True)
        out = np.array(request.get_output_tensor(0).data, copy=True)  # the buffer is reused
        return check_output(self.meta, out, input_hw, "openvino")

    def close(self) -> None:
        self._compiled.clear()
        self._model = None


def _check_capability(core, precision: str) -> None:
    needed = _CAPABILITIES.get(precision)
    if needed is None:
        return
    offered = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if needed not in offered:
        raise ValueError(
            f"openvino precision {precision} needs the CPU capability {needed}, which this CPU "
            f"does not offer (OPTIMIZATION_CAPABILITIES: {', '.join(offered)})"
        )


def _static_hw(model) -> tuple[int, int] | None:
    """(H, W) of a model whose input height and width are fixed, else None."""
    shape = model.inputs[0].partial_shape
    if shape.rank.is_dynamic or shape.rank.get_length() != 4:
        raise MetaError(f"model input has shape {shape}, expected (N, 3, H, W)")
    h, w = shape[2], shape[3]
    if h.is_static and w.is_static:
        return h.get_length(), w.get_length()
    return None


def _settings(compiled, path: Path, precision: str, static_hw: tuple[int, int] | None) -> dict:
    """What the compiled model reports (not only what was asked for)."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return {
        "model_file": path.name,
        "precision": precision,
        "INFERENCE_PRECISION_HINT": hint.get_type_name(),
        "INFERENCE_NUM_THREADS": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        "NUM_STREAMS": int(compiled.get_property("NUM_STREAMS")),
        "PERFORMANCE_HINT": str(compiled.get_property("PERFORMANCE_HINT")),
        "ENABLE_CPU_PINNING": bool(compiled.get_property("ENABLE_CPU_PINNING")),
        "shapes": "static" if static_hw else "compiled per input size",
    }


__all__ = ["PRECISIONS", "OpenVinoBackend"]

"""onnxruntime backend: ``model.onnx`` (or ``model.int8.onnx``) of an export folder. No torch."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from nanodet_deploy.artifacts import MetaError, read_meta
from nanodet_deploy.runtimes.base import check_input, check_output, check_static_input, model_file

log = logging.getLogger(__name__)


class OrtBackend:
    """onnxruntime CPU session set up for quiet, comparable timing.

    ``intra_op_num_threads=threads``, one inter-op thread, sequential execution, all graph
    optimizations, and no spinning of idle threads (they would slow down other runtimes).
    ``precision``: ``fp32`` (``files["onnx"]``) or ``int8`` (``files["onnx_int8"]``, static QDQ).
    """

    name = "onnxruntime"

    def __init__(
        self, export_dir: str | os.PathLike, threads: int = 1, precision: str | None = None
    ) -> None:
        self.export_dir = Path(export_dir)
        self.meta = read_meta(self.export_dir)
        self.precision = precision or "fp32"
        key = "onnx_int8" if self.precision == "int8" else "onnx"
        path = model_file(self.export_dir, self.meta, key)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
            raise MetaError(f"{path}: onnxruntime cannot load it: {exc}") from exc
        self.settings = {
            "intra_op_num_threads": int(threads), "allow_spinning": 0, "model_file": path.name,
        }  # fmt: skip
        self._input_name, self.static_hw = self._check_io(path)

    def _check_io(self, path: Path) -> tuple[str, tuple[int, int] | None]:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise MetaError(f"{path}: expected one input and one output")
        if inputs[0].name != self.meta.input_name:
            raise MetaError(
                f"{path}: input is named {inputs[0].name!r}, meta.json says {self.meta.input_name!r}"
            )
        channels = outputs[0].shape[-1]
        if isinstance(channels, int) and channels != self.meta.output_channels:
            raise MetaError(
                f"{path}: output has {channels} channels, meta.json ({self.meta.num_classes} "
                f"classes, {self.meta.output_layout} layout) says {self.meta.output_channels}"
            )
        h, w = inputs[0].shape[2:4]
        static = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        return inputs[0].name, static

    def run(self, input_nchw: np.ndarray) -> np.ndarray:
        input_hw = check_input(self.meta, input_nchw)
        check_static_input(self.static_hw, input_hw)
        (out,) = self.session.run(None, {self._input_name: input_nchw})
        return check_output(self.meta, out, input_hw, "onnxruntime")

    def close(self) -> None:
        self.session = None

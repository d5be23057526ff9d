"""MNN backend: ``model.mnn`` (or the int8 ``model.int8.mnn``) of an export folder. No torch.

The model runs through MNN's Module API (``MNN.nn.load_module_from_file`` with a runtime manager
that holds the thread count and precision mode): it takes a new input size on any call
(``shape_mutable``) and was as fast as the session API (``MNN.Interpreter``): 10.0 vs 10.2 ms at
320x320 on one thread.

Precision (``precision``, MNN's ``BackendConfig`` precision mode on the runtime manager):

- ``"fp32"`` (default): ``Precision_High``, fp32 arithmetic throughout.
- ``"fp16"``: ``Precision_Low``. On ARMv8.2+ CPUs (FP16 arithmetic: most phones since 2018,
  Raspberry Pi 5) MNN then stores activations and computes convolutions in fp16. On x86 (and
  older ARM) MNN's CPU backend computes in fp32: on the AMD EPYC test machine (AVX-512 and
  AVX512_BF16, no AVX512-FP16) the outputs equal the fp32 ones bit for bit.
- ``"int8"``: the int8 model (meta.json ``files["mnn_int8"]``: from ``exporters.mnn_int8``, the
  onnxruntime int8 model's scales, or ``exporters.mnn.quantize_mnn``) with ``Precision_Normal``:
  quantized convolutions in int8, the other ops in fp32. On the x86 test machine it ran slower
  than fp32 (16.7 vs 10.0 ms, one thread); MNN's int8 kernels are built for ARM's dot-product
  instructions (it reports i8sdot / i8mm at import): measure there.

Not deterministic (MNN 3.6.1 int8 on x86): the same int8 model file and input give one of a few
output sets, fixed within a process but differing between processes (an MNN runtime created
earlier in the process changes which one, for instance): NanoDet-Plus-m 320 scores up to 0.29
apart on single anchors, val mAP 0.617 or 0.627 (fp32 0.623); mnnquant's models too. MNN fp32
and onnxruntime int8 are bit-stable. Judge an MNN int8 model over several processes
(benchmarks/mnn_int8.py evaluates each in several).

Input size: a model converted from a dynamic ONNX (input ``[1, 3, -1, -1]``) takes any multiple
of 32 (``static_hw`` None). One converted from a static ONNX keeps its sizes in its reshapes and
takes only that size (``static_hw``): MNN cannot resize it (the session API then silently returns
the previous output, the Module API aborts the process), so ``run`` refuses other sizes first.

Output: MNN prints a CPU-feature line ("The device supports: ...") to the C stdout on import.
Precision modes are passed as integers, which keeps MNN from printing "MNN use ... precision".
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import MNN.expr as mnn_expr
import MNN.nn as mnn_nn
import numpy as np

from nanodet_deploy.artifacts import MetaError, read_meta
from nanodet_deploy.runtimes.base import (
    check_input,
    check_options,
    check_output,
    check_static_input,
    model_file,
)

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
# precision -> (MNN BackendConfig::PrecisionMode value, its name); Normal 0, High 1, Low 2
_PRECISION_MODES = {"fp32": (1, "high"), "fp16": (2, "low"), "int8": (0, "normal")}
_FILE_KEYS = {"fp32": "mnn", "fp16": "mnn", "int8": "mnn_int8"}


class MnnBackend:
    """MNN CPU runtime for one export folder (module doc)."""

    name = "mnn"

    def __init__(
        self, export_dir: str | os.PathLike, threads: int = 1, precision: str | None = None
    ) -> None:
        precision = check_options("mnn", precision, PRECISIONS, threads)
        self.export_dir = Path(export_dir)
        self.meta = read_meta(self.export_dir)
        path = model_file(self.export_dir, self.meta, _FILE_KEYS[precision])
        self.static_hw = _static_hw(path, self.meta.input_name)
        mode, mode_name = _PRECISION_MODES[precision]
        config = {"backend": "CPU", "numThread": int(threads), "precision": mode}
        self._runtime = mnn_nn.create_runtime_manager((config,))
        self._module = self._load(path)
        self.settings = {
            "api": "module",
            "numThread": int(threads),
            "precision": precision,
            "precision_mode": mode_name,
            "model_file": path.name,
            "static_hw": list(self.static_hw) if self.static_hw else None,
        }
        self._dry_run()

    def _load(self, path: Path):
        m = self.meta
        try:
            return mnn_nn.load_module_from_file(
                str(path), [m.input_name], [m.output_name], runtime_manager=self._runtime,
                shape_mutable=True,
            )  # fmt: skip
        except (
            SystemError
        ) as exc:  # MNN reports load errors as "returned a result with an exception set"
            raise MetaError(
                f"{path}: MNN cannot load it with input {m.input_name!r} and output "
                f"{m.output_name!r} (meta.json): {exc}"
            ) from exc

    def _dry_run(self) -> None:
        """Run the smallest valid input once, so a meta.json that does not fit fails here."""
        m = self.meta.size_multiple
        h, w = self.static_hw or (m, m)
        self.run(np.zeros((1, 3, h, w), dtype=np.float32))

    def run(self, input_nchw: np.ndarray) -> np.ndarray:
        input_hw = check_input(self.meta, input_nchw)
        check_static_input(self.static_hw, input_hw)
        tensor = np.ascontiguousarray(input_nchw)  # kept referenced until the output is read
        var = mnn_expr.const(tensor, list(tensor.shape), mnn_expr.NCHW)
        out = self._module.forward(var)
        if out.data_format != mnn_expr.NCHW:
            out = mnn_expr.convert(out, mnn_expr.NCHW)
        result = np.array(out.read(), dtype=np.float32, copy=True)  # read() views MNN memory
        return check_output(self.meta, result, input_hw, "mnn")

    def close(self) -> None:
        self._module = None
        self._runtime = None


def _static_hw(path: Path, input_name: str) -> tuple[int, int] | None:
    """(H, W) of a fixed-size model input, None when height and width are dynamic (-1)."""
    try:
        variables = mnn_expr.load_as_dict(str(path))
    except Exception as exc:  # MNN's Python binding raises SystemError / RuntimeError
        raise MetaError(f"{path}: MNN cannot read it: {exc}") from exc
    if not variables:
        raise MetaError(f"{path}: MNN cannot read it (not an MNN model)")
    var = variables.get(input_name)
    if var is None:
        raise MetaError(f"{path}: no input {input_name!r} (meta.json's input_name)")
    shape = list(var.shape)
    if len(shape) != 4 or shape[1] != 3 or var.data_format != mnn_expr.NCHW:
        raise MetaError(f"{path}: input {input_name!r} is {shape} ({var.data_format}), not NCHW")
    h, w = shape[2], shape[3]
    return (int(h), int(w)) if h > 0 and w > 0 else None


__all__ = ["PRECISIONS", "MnnBackend"]

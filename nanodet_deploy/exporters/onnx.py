"""torch -> ONNX: TorchScript exporter, opset check, onnx.checker, onnxsim, op allow-list, metadata.

The TorchScript exporter (``dynamo=False``) is chosen deliberately: in torch 2.13 the default
dynamo exporter needs ``onnxscript`` and emits a different graph. The opset that comes out is
read back from the file and must equal the one asked for.

Every exported graph is checked against an allow-list of ONNX ops that NCNN (through pnnx)
converts and that keep one graph valid at every input size. A static, simplified graph (what
pnnx converts) may use only :data:`ONNX_ALLOWED_OPS`; dynamic or unsimplified graphs may also use
the shape arithmetic in :data:`ONNX_SHAPE_OPS` (onnxruntime evaluates it; pnnx never sees it).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxsim
import torch

from nanodet_deploy.artifacts import ExportMeta
from nanodet_deploy.exporters.errors import ExportError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 13  # >= 13: single-axis Softmax, ReduceSum/Squeeze axes as inputs, QDQ INT8
MAX_OPSET = 20  # highest opset of torch's TorchScript exporter
DYNAMIC_AXES = ("batch", "height", "width")
INPUT_NAME = "images"
OUTPUT_NAME = "output"

# What our NanoDet / NanoDet-Plus export graphs are made of, and nothing NCNN cannot run.
ONNX_ALLOWED_OPS: frozenset[str] = frozenset(
    {
        "Conv",  # BatchNorm folded in; also the integral and folded normalization (depthwise)
        "MaxPool",  # ShuffleNetV2 stem
        "Relu", "LeakyRelu", "Clip", "HardSwish", "Elu", "Selu",  # activations (config)
        "Sigmoid",  # class scores, and SiLU = x * sigmoid(x)
        "Softmax",  # over the reg_max + 1 bins (one axis, opset >= 13)
        "Add", "Mul",  # residuals, SiLU
        "Resize",  # bilinear x2 / x0.5 by scale factors (PAN, Ghost-PAN)
        "Concat", "Slice", "Split",  # ShuffleNet branches, scores | boxes split, level concat
        "Reshape", "Transpose",  # channel shuffle, per-level flatten with -1, final transpose
        "Constant",  # Resize scales that onnxsim leaves as nodes
    }
)  # fmt: skip
# Shape arithmetic left in dynamic-shape or unsimplified graphs (never converted by pnnx).
ONNX_SHAPE_OPS: frozenset[str] = frozenset(
    {"Shape", "Gather", "Unsqueeze", "Squeeze", "Div", "Cast", "Floor", "ConstantOfShape"}
)


@dataclass(frozen=True)
class OnnxExportInfo:
    path: Path
    opset: int
    ops: tuple[str, ...]  # sorted op types in the saved graph
    simplified: bool
    dynamic_axes: tuple[str, ...]


def check_opset(opset: int) -> int:
    if not DEFAULT_OPSET <= int(opset) <= MAX_OPSET:
        raise ValueError(
            f"opset {opset} not supported: use {DEFAULT_OPSET}..{MAX_OPSET} (Softmax over one "
            f"axis needs >= 13; {MAX_OPSET} is the TorchScript exporter's maximum)"
        )
    return int(opset)


def check_dynamic_axes(dynamic_axes: tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(dynamic_axes) - set(DYNAMIC_AXES))
    if unknown:
        raise ValueError(f"unknown dynamic axes {unknown}; choose from {list(DYNAMIC_AXES)}")
    return tuple(a for a in DYNAMIC_AXES if a in dynamic_axes)


def export_onnx(
    wrapper: torch.nn.Module,
    path: Path,
    input_hw: tuple[int, int],
    opset: int = DEFAULT_OPSET,
    dynamic_axes: tuple[str, ...] = (),
    simplify: bool = True,
) -> OnnxExportInfo:
    """Export ``wrapper`` (an ExportWrapper in eval mode) to ``path`` and check the result."""
    opset = check_opset(opset)
    dynamic_axes = check_dynamic_axes(dynamic_axes)
    dummy = torch.zeros(1, 3, int(input_hw[0]), int(input_hw[1]), dtype=torch.float32)
    with warnings.catch_warnings(), torch.no_grad():
        # "legacy TorchScript-based ONNX export" deprecation: a deliberate choice, see module doc
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_axes=_torch_dynamic_axes(dynamic_axes) or None,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(path))
    _check_model(model, opset, str(path))
    if simplify:
        model = _simplify(model, str(path))
        _check_model(model, opset, f"{path} (after onnxsim)")
    strict = simplify and not dynamic_axes
    ops = check_ops(model, allow_shape_ops=not strict)
    onnx.save(model, str(path))
    return OnnxExportInfo(path, opset, ops, simplify, dynamic_axes)


def _torch_dynamic_axes(dynamic_axes: tuple[str, ...]) -> dict[str, dict[int, str]]:
    index = {"batch": 0, "height": 2, "width": 3}
    images = {index[a]: a for a in dynamic_axes}
    output = {}
    if "batch" in dynamic_axes:
        output[0] = "batch"
    if "height" in dynamic_axes or "width" in dynamic_axes:
        output[1] = "points"
    return {INPUT_NAME: images, OUTPUT_NAME: output} if images else {}


def _check_model(model: onnx.ModelProto, opset: int, where: str) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{where}: onnx.checker failed: {exc}") from exc
    got = onnx_opset(model)
    if got != opset:
        raise ExportError(f"{where}: asked for opset {opset}, the file has opset {got}")


def onnx_opset(model: onnx.ModelProto) -> int | None:
    """The default-domain (ai.onnx) opset of ``model``."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def _simplify(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim raises plain RuntimeError / ValueError from C++
        raise ExportError(f"{where}: onnxsim failed: {exc}") from exc
    if not ok:
        raise ExportError(f"{where}: onnxsim's check of the simplified model failed")
    return simplified


def graph_ops(model: onnx.ModelProto) -> tuple[str, ...]:
    return tuple(sorted({node.op_type for node in model.graph.node}))


def check_ops(model: onnx.ModelProto, allow_shape_ops: bool) -> tuple[str, ...]:
    """Sorted op types of ``model``; ExportError naming any op outside the allow-list."""
    ops = graph_ops(model)
    allowed = ONNX_ALLOWED_OPS | ONNX_SHAPE_OPS if allow_shape_ops else ONNX_ALLOWED_OPS
    extra = [op for op in ops if op not in allowed]
    if extra:
        raise ExportError(
            f"the exported graph uses ONNX ops outside the NCNN-safe allow-list: {extra} "
            f"(allowed: {sorted(allowed)}); see exporters/onnx.py"
        )
    return ops


def write_onnx_metadata(path: Path, meta: ExportMeta) -> None:
    """Store every meta.json field as ``metadata_props`` (JSON-encoded values) in the file."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in meta.to_dict().items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = json.dumps(value)
    model.producer_name = "nanodet-deploy"
    model.producer_version = meta.nanodet_deploy_version
    onnx.save(model, str(path))

"""MNN int8 made from the onnxruntime int8 model: the same calibration, rewrite and ranges.

    info = mnn_int8_from_onnx(Path("model.int8.onnx"), Path("model.int8.mnn"))

The onnxruntime QDQ model (``int8.quantize_onnx``: equalized, bias-corrected, percentile ranges)
holds, for every quantized convolution, its int8 weights with their per-output-channel scales
and the scale and zero point of its input and output tensors. This module

1. undoes the Q/DQ pairs into a float ONNX whose weights and biases are the dequantized int8
   values. They lie on the int8 grid, so MNN's rounding with the same scales gives back the
   same integers;
2. writes those scales as MNN's compression parameters: the ``Pipeline`` message of MNN's
   ``MNN_compression.proto`` (the file MNN's own compression tools hand to the converter), one
   ``LayerQuantizeParams`` per convolution, keyed by its output tensor name;
3. converts with ``mnnconvert --compressionParamsFile``, which stores each listed convolution
   as int8 weights with those input / output scales (MNN's FullQuantAndCoding step).

Zero points: onnxruntime's activations are uint8 (``x = (q - zp) * s``, q in 0..255), MNN's are
int8 (q in -128..127): the same scale with ``zp - 128``. Weights are symmetric int8 in both.
Convolutions the QDQ model left in float (the decode's integral) stay float in MNN.

Why not ``mnnquant`` (``exporters.mnn.quantize_mnn``, still available): its EMA ranges (the
only usable method here; module doc of exporters/mnn.py) are a 0.99-momentum moving average of
per-image minima / maxima, 37% from the first of 100 images, on images stretched to the
square. On the four raccoon exports (benchmarks/results/int8/mnn_int8.md) its output error
against fp32 was 1.3-2.2x this module's (which equals the onnxruntime int8 model's), and its
val mAP moved between -0.036 and +0.007 with the order of the same 100 calibration images
(NanoDet-Plus-m 416: -0.021 against -0.0003 here). The file size and speed are the same.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nanodet_deploy.exporters import int8_rewrite
from nanodet_deploy.exporters.errors import ExportError

MNN_ZERO_SHIFT = 128  # onnxruntime uint8 zero point -> MNN int8 zero point


@dataclass(frozen=True)
class QuantizedConv:
    """One int8 convolution of a QDQ model, in the float twin's tensor names."""

    name: str
    input: str
    weight: str
    output: str
    input_scale: float
    input_zero: int  # int8 (MNN) zero point
    output_scale: float
    output_zero: int
    weight_scales: tuple[float, ...]  # per output channel


@dataclass(frozen=True)
class FloatTwin:
    model: onnx.ModelProto  # the QDQ model without its Q/DQ pairs, weights dequantized
    convs: list[QuantizedConv]  # the convolutions the QDQ model quantized
    float_convs: list[str]  # the convolutions it left in float


@dataclass(frozen=True)
class MnnInt8Info:
    path: Path
    source: str  # the onnxruntime int8 model's file name
    quantized_convs: int
    float_convs: tuple[str, ...]
    tool_log: str

    def to_meta(self) -> dict:
        return {
            "file": self.path.name,
            "tool": "mnnconvert --compressionParamsFile",
            "scales_from": self.source,
            "weights": "int8, per output channel",
            "activations": "int8, per tensor, asymmetric",
            "quantized_convs": self.quantized_convs,
            "float_convs": list(self.float_convs),
        }


def float_twin(qdq: onnx.ModelProto) -> FloatTwin:
    """Split an onnxruntime QDQ model into its float twin and the int8 parameters of its convs."""
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    makers = {out: node for node in qdq.graph.node for out in node.output}
    activations: dict[str, tuple[float, int]] = {}  # float tensor -> (scale, uint8 zero point)
    renamed: dict[str, str] = {}  # DequantizeLinear output -> the float tensor it stands for
    constants: dict[str, np.ndarray] = {}  # DequantizeLinear output of a weight / bias: value
    weight_scales: dict[str, np.ndarray] = {}
    dropped: set[int] = set()
    for k, node in enumerate(qdq.graph.node):
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            activations[node.input[0]] = (_scalar(inits[node.input[1]], node, "scale"),
                                          _zero_point(inits, node))  # fmt: skip
            dropped.add(k)
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:
            constants[node.output[0]] = int8_rewrite.dequantized(inits, node).astype(np.float32)
            if inits[node.input[0]].dtype == np.int8:  # a weight (biases are int32)
                weight_scales[node.output[0]] = np.atleast_1d(inits[node.input[1]])
            dropped.add(k)
        elif node.op_type == "DequantizeLinear":
            quantize = makers.get(node.input[0])
            if quantize is None or quantize.op_type != "QuantizeLinear":
                raise ExportError(f"QDQ model: {node.name} does not read a QuantizeLinear")
            renamed[node.output[0]] = quantize.input[0]
            dropped.add(k)
    # a quantized graph output: its float tensor takes the output's name
    outputs = {o.name for o in qdq.graph.output}
    aliases = {renamed.pop(name): name for name in outputs & renamed.keys()}
    activations = {aliases.get(k, k): v for k, v in activations.items()}

    def float_name(name: str) -> str:
        name = renamed.get(name, name)
        return aliases.get(name, name)

    nodes = []
    for k, node in enumerate(qdq.graph.node):
        if k in dropped:
            continue
        node = onnx.NodeProto.FromString(node.SerializeToString())
        node.input[:] = [float_name(name) for name in node.input]
        node.output[:] = [aliases.get(name, name) for name in node.output]
        nodes.append(node)
    used = {name for node in nodes for name in node.input}
    initializers = [i for i in qdq.graph.initializer if i.name in used]
    initializers += [numpy_helper.from_array(v, k) for k, v in constants.items() if k in used]
    graph = helper.make_graph(nodes, qdq.graph.name, qdq.graph.input, qdq.graph.output,
                              initializers)  # fmt: skip
    model = helper.make_model(graph, opset_imports=qdq.opset_import)
    model.ir_version = qdq.ir_version
    convs, float_convs = [], []
    for node in nodes:
        if node.op_type != "Conv":
            continue
        x, w, y = node.input[0], node.input[1], node.output[0]
        if x in activations and y in activations and w in weight_scales:
            (s_in, z_in), (s_out, z_out) = activations[x], activations[y]
            convs.append(QuantizedConv(
                node.name, x, w, y, s_in, z_in - MNN_ZERO_SHIFT, s_out, z_out - MNN_ZERO_SHIFT,
                tuple(float(s) for s in weight_scales[w]),
            ))  # fmt: skip
        else:
            float_convs.append(node.name)
    if not convs:
        raise ExportError("QDQ model: no quantized convolution (not an onnxruntime QDQ model?)")
    return FloatTwin(model, convs, float_convs)


def _scalar(value: np.ndarray, node: onnx.NodeProto, what: str) -> float:
    if value.size != 1:
        raise ExportError(f"QDQ model: {node.name} has a per-channel activation {what}")
    return float(value.reshape(()))


def _zero_point(inits: dict[str, np.ndarray], node: onnx.NodeProto) -> int:
    if len(node.input) < 3 or not node.input[2]:
        return 0
    zero = inits[node.input[2]]
    if zero.dtype != np.uint8:
        raise ExportError(f"QDQ model: {node.name} has {zero.dtype} activations, expected uint8")
    return int(_scalar(zero, node, "zero point"))


# MNN_compression.proto (MNN: tools/converter/source/compression/), the fields this module writes:
# message -> (field, number, scalar type or message, label, default)
_SCHEMA = {
    "LayerQuantizeParams": (
        ("input", 1, "LayerQuantizeParams.ActivationParams", "repeated", None),
        ("weight", 2, "LayerQuantizeParams.WeightParams", "repeated", None),
        ("output", 3, "LayerQuantizeParams.ActivationParams", "repeated", None),
    ),
    "LayerQuantizeParams.ActivationParams": (
        ("name", 1, "string", "required", None),
        ("bits", 2, "int32", "optional", "8"),
        ("scales", 3, "float", "repeated", None),
        ("zero_point", 4, "int32", "optional", "0"),
        ("clamp_min", 5, "int32", "optional", "-128"),
        ("clamp_max", 6, "int32", "optional", "127"),
    ),
    "LayerQuantizeParams.WeightParams": (
        ("name", 1, "string", "required", None),
        ("bits", 2, "int32", "optional", "8"),
        ("scales", 3, "float", "repeated", None),
        ("clamp_min", 4, "int32", "optional", "-128"),
        ("clamp_max", 5, "int32", "optional", "127"),
    ),
    "QuantizeParams": (("layer", 4, "LayerQuantizeParams", "repeated", None),),
    "CompressionAlgo": (
        ("type", 1, "int32", "optional", "0"),  # enum CompressionType, QUANTIZE = 0 on the wire
        ("quant_params", 2, "QuantizeParams", "optional", None),
    ),
    "Pipeline": (
        ("version", 1, "string", "required", "0.0.0"),
        ("algo", 2, "CompressionAlgo", "repeated", None),
    ),
}


@functools.cache
def _pipeline_class() -> type:
    """The ``MNN.Compression.Pipeline`` message class, built from ``_SCHEMA``."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    scalars = {"string": field.TYPE_STRING, "int32": field.TYPE_INT32, "float": field.TYPE_FLOAT}
    labels = {"optional": field.LABEL_OPTIONAL, "required": field.LABEL_REQUIRED,
              "repeated": field.LABEL_REPEATED}  # fmt: skip
    proto = descriptor_pb2.FileDescriptorProto(
        name="nanodet_deploy/MNN_compression.proto", package="MNN.Compression", syntax="proto2"
    )
    messages = {}
    for full_name, fields in _SCHEMA.items():
        parent, _, name = full_name.rpartition(".")
        siblings = messages[parent].nested_type if parent else proto.message_type
        message = messages[full_name] = siblings.add(name=name)
        for name, number, kind, label, default in fields:
            f = message.field.add(name=name, number=number, label=labels[label])
            if kind in scalars:
                f.type = scalars[kind]
            else:
                f.type, f.type_name = field.TYPE_MESSAGE, ".MNN.Compression." + kind
            if default is not None:
                f.default_value = default
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("MNN.Compression.Pipeline"))


def compression_params(convs: list[QuantizedConv]) -> bytes:
    """The serialized ``MNN.Compression.Pipeline`` that makes ``convs`` int8 in mnnconvert."""
    pipeline = _pipeline_class()(version="0.0.0")
    algo = pipeline.algo.add()
    algo.type = 0  # QUANTIZE
    for conv in convs:
        layer = algo.quant_params.layer.add()
        for params, name, scale, zero in ((layer.input, conv.input, conv.input_scale,
                                           conv.input_zero),
                                          (layer.output, conv.output, conv.output_scale,
                                           conv.output_zero)):  # fmt: skip
            act = params.add(name=name, zero_point=zero, clamp_min=-128, clamp_max=127)
            act.scales.append(scale)
        weight = layer.weight.add(name=conv.weight, clamp_min=-127, clamp_max=127)
        weight.scales.extend(conv.weight_scales)
    return pipeline.SerializeToString()


def mnn_int8_from_onnx(
    qdq_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    input_name: str = "images",
    output_name: str = "output",
) -> MnnInt8Info:
    """Write ``out_path``: the MNN int8 model with the scales of the onnxruntime int8 model
    ``qdq_path`` (module doc); checked by loading it once."""
    from nanodet_deploy.exporters import mnn

    qdq_path, out_path = Path(qdq_path), Path(out_path)
    if not qdq_path.is_file():
        raise ExportError(f"{qdq_path}: no such onnxruntime int8 model")
    twin = float_twin(onnx.load(str(qdq_path)))
    with tempfile.TemporaryDirectory(prefix="mnn-int8-", dir=out_path.parent) as scratch:
        float_path, params_path = Path(scratch) / "float.onnx", Path(scratch) / "params.bin"
        onnx.save(twin.model, str(float_path))
        params_path.write_bytes(compression_params(twin.convs))
        info = mnn.convert_onnx_to_mnn(float_path, out_path, input_name=input_name,
                                       output_name=output_name,
                                       compression_params=params_path)  # fmt: skip
    return MnnInt8Info(out_path, qdq_path.name, len(twin.convs), tuple(twin.float_convs),
                       info.tool_log)  # fmt: skip


__all__ = [
    "FloatTwin",
    "MnnInt8Info",
    "QuantizedConv",
    "compression_params",
    "float_twin",
    "mnn_int8_from_onnx",
]

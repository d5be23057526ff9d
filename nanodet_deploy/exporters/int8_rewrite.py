"""Rewrites of a float ONNX graph that make onnxruntime's int8 model lose less.

    equalize(model, "images", tensors)            # in place; float-exact
    quantized = quantize(model)                   # onnxruntime.quantization (exporters/int8.py)
    correct_bias(model, quantized, "images", tensors)
    quantized = quantize(model)                   # the same int8 weights, corrected biases

**Activation equalization** (float-exact). onnxruntime quantizes an activation with one scale
per tensor, so a channel whose range is far below the tensor's maximum keeps only a few
levels: in the NanoDet-Plus-m backbone one channel of the stem's output spans 0.05 of a 4.5
range, and its depthwise conv (a folded BatchNorm with a large gain) amplifies the rounding.
For a tensor ``T = Conv -> [Relu | LeakyRelu | MaxPool]* -> T`` read only by convolutions,
channel ``c`` is multiplied by ``f_c`` in the producing conv (weights and bias) and divided
out of every consuming conv's input weights; ReLU, LeakyReLU and MaxPool commute with a
positive per-channel scale, so the float model computes the same function. ``f_c = R / r_c``
(``r_c`` the channel's absolute maximum over the calibration images, ``R`` the tensor's),
capped: at 16 when only depthwise convs read T (their per-output-channel int8 weights absorb
any scale exactly), at 4 when a dense (group 1) conv does (its per-output-channel weight scale
then spans the scaled-up input columns, so a large ``f`` moves error from activations to
weights). With bias correction, 4 gives the lowest output error against fp32, averaged over
both raccoon models at 320 and 416, of the caps 2, 4 and 8
(benchmarks/results/int8/int8_rewrite.md; without it, caps from 2 to 32 were tried first).

**Bias correction** (empirical, after Nagel et al. 2019, "Data-Free Quantization"): int8
weights ``W_q`` shift each output channel's mean by ``(W_q - W) . E[x]``; that expectation,
measured on the calibration images, is subtracted from the float bias before the final
quantization (the int8 weights are unchanged: the same scales, the same grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

POSITIVE_HOMOGENEOUS = ("Relu", "LeakyRelu", "MaxPool")  # op(f * x) = f * op(x), f > 0
CAP_DEPTHWISE = 16.0
CAP_POINTWISE = 4.0


def conv_group(node: onnx.NodeProto) -> int:
    """A Conv node's ``group`` attribute (1 when absent)."""
    return next((a.i for a in node.attribute if a.name == "group"), 1)


@dataclass(frozen=True)
class Rewrite:
    """Which rewrites the onnxruntime int8 step applies (``None`` there: neither)."""

    equalize: bool = True
    bias_correction: bool = True
    cap_depthwise: float = CAP_DEPTHWISE
    cap_pointwise: float = CAP_POINTWISE

    def to_meta(self) -> dict:
        return {"activation_equalization": self.equalize, "bias_correction": self.bias_correction,
                "equalization_caps": {"depthwise": self.cap_depthwise,
                                      "pointwise": self.cap_pointwise}}  # fmt: skip


@dataclass(frozen=True)
class Equalizable:
    tensor: str  # the activation whose channels are rescaled
    producer: onnx.NodeProto  # the conv that makes it (through POSITIVE_HOMOGENEOUS ops)
    consumers: tuple[onnx.NodeProto, ...]  # the convs that read it
    depthwise_only: bool


def equalizable(model: onnx.ModelProto) -> list[Equalizable]:
    """The tensors :func:`equalize` can rescale exactly (module doc)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def conv_kind(node: onnx.NodeProto) -> str | None:
        """ "pw" (group 1, any kernel), "dw" (one input channel per group), None (other)."""
        params = [name for name in node.input[1:] if name]
        if node.op_type != "Conv" or not all(name in inits for name in params):
            return None  # weights or bias computed in the graph
        if any(len(users[name]) > 1 for name in params):
            return None  # a weight or bias shared with another node
        group = conv_group(node)
        if group == 1:
            return "pw"
        return "dw" if inits[node.input[1]].dims[1] == 1 else None

    pairs = []
    for node in graph.node:
        if conv_kind(node) is None:
            continue
        tensor = node.output[0]
        while (
            tensor not in outputs
            and len(users.get(tensor, [])) == 1
            and users[tensor][0].op_type in POSITIVE_HOMOGENEOUS
        ):
            tensor = users[tensor][0].output[0]
        readers = users.get(tensor, [])
        kinds = [conv_kind(r) if r.input[0] == tensor else None for r in readers]
        if tensor in outputs or not readers or None in kinds:
            continue
        pairs.append(Equalizable(tensor, node, tuple(readers), set(kinds) == {"dw"}))
    return pairs


def _channel_stats(
    model: onnx.ModelProto, input_name: str, tensors: Sequence[np.ndarray], names: list[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (absolute maximum, mean) of ``names`` over ``tensors`` (N, C, H, W)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name != input_name and name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    fetch = [n for n in names if n != input_name]
    absmax: dict[str, np.ndarray] = {}
    total: dict[str, np.ndarray] = {}
    for x in tensors:
        values = dict(zip(fetch, session.run(fetch, {input_name: x}) if fetch else [], strict=True))
        values[input_name] = x
        for name in names:
            v = values[name]
            a, m = np.abs(v).max(axis=(0, 2, 3)), v.mean(axis=(0, 2, 3), dtype=np.float64)
            absmax[name] = np.maximum(absmax[name], a) if name in absmax else a
            total[name] = total[name] + m if name in total else m
    return {n: (absmax[n], total[n] / len(tensors)) for n in names}


def equalize(
    model: onnx.ModelProto,
    input_name: str,
    tensors: Sequence[np.ndarray],
    cap_depthwise: float = CAP_DEPTHWISE,
    cap_pointwise: float = CAP_POINTWISE,
) -> int:
    """Rescale the channels of every :func:`equalizable` tensor in place (module doc);
    the number of tensors rescaled."""
    pairs = equalizable(model)
    if not pairs:
        return 0
    stats = _channel_stats(model, input_name, tensors, [p.tensor for p in pairs])
    inits = {i.name: i for i in model.graph.initializer}

    def scale(name: str, factor: np.ndarray) -> None:
        value = numpy_helper.to_array(inits[name]).astype(np.float32)
        inits[name].CopyFrom(numpy_helper.from_array(value * factor, name))

    for pair in pairs:
        r = stats[pair.tensor][0].astype(np.float64)
        cap = cap_depthwise if pair.depthwise_only else cap_pointwise
        ratio = np.divide(r.max(), r, out=np.full_like(r, cap), where=r > 0)
        f = np.clip(ratio, 1.0, cap).astype(np.float32)
        scale(pair.producer.input[1], f[:, None, None, None])
        if len(pair.producer.input) > 2 and pair.producer.input[2]:
            scale(pair.producer.input[2], f)
        for reader in pair.consumers:
            shape = (-1, 1, 1, 1) if conv_group(reader) > 1 else (1, -1, 1, 1)  # dw: per output
            scale(reader.input[1], 1.0 / f.reshape(shape))
    return len(pairs)


def dequantized(inits: dict[str, np.ndarray], node: onnx.NodeProto) -> np.ndarray:
    """The float64 value of a DequantizeLinear ``node`` of an initializer: ``(q - zero) * scale``,
    per tensor or per channel along the node's axis."""
    q = inits[node.input[0]].astype(np.float64)
    scale = inits[node.input[1]].astype(np.float64)
    zero = inits[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros(())
    if scale.ndim:
        shape = [1] * q.ndim
        shape[next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.ndim else zero
    return (q - zero) * scale


def correct_bias(
    model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    input_name: str,
    tensors: Sequence[np.ndarray],
) -> int:
    """Subtract each quantized conv's int8-weight mean shift ``(W_q - W) . E[x]`` from its
    float bias in ``model`` (in place); ``quantized`` is the QDQ model made from ``model``.
    The number of convs corrected."""
    q_inits = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}
    makers = {o: n for n in quantized.graph.node for o in n.output}
    q_weights = {}
    for node in quantized.graph.node:
        dq = makers.get(node.input[1]) if node.op_type == "Conv" else None
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in q_inits:
            q_weights[node.name] = dequantized(q_inits, dq)
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name in q_weights
             and len(n.input) > 2 and n.input[2] in inits]  # fmt: skip
    if not convs:
        return 0
    means = _channel_stats(model, input_name, tensors, sorted({n.input[0] for n in convs}))
    for node in convs:
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        delta = q_weights[node.name] - w
        mean = means[node.input[0]][1]
        group = conv_group(node)
        if group == 1:
            shift = delta.sum(axis=(2, 3)) @ mean
        else:  # grouped: output channel o reads input channels of its group
            per_group = delta.shape[1]
            idx = (np.arange(delta.shape[0]) // (delta.shape[0] // group))[:, None] * per_group
            shift = (delta.sum(axis=(2, 3)) * mean[idx + np.arange(per_group)]).sum(axis=1)
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) - shift
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(bias.astype(np.float32),
                                                              node.input[2]))  # fmt: skip
    return len(convs)

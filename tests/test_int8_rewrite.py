"""int8_rewrite: activation equalization is float-exact and evens out channel ranges within its
caps; bias correction subtracts exactly the int8 weights' mean shift; both, through the
exporter, bring the onnxruntime int8 model closer to fp32 on held-out images."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from nanodet_deploy.exporters import int8 as int8_step
from nanodet_deploy.exporters import int8_rewrite

RNG = np.random.default_rng(0)


def _conv(name, x, w, b, out, group=1, pads=0):
    inits = [numpy_helper.from_array(w.astype(np.float32), f"{name}.w"),
             numpy_helper.from_array(b.astype(np.float32), f"{name}.b")]  # fmt: skip
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], name=name,
                            group=group, pads=[pads] * 4)  # fmt: skip
    return node, inits


def _model(nodes, inits, outputs) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * 4) for o in outputs], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model, x, outputs=None):
    if outputs:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.graph.output.extend(onnx.ValueInfoProto(name=o) for o in outputs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(outputs, {"x": x})


@pytest.fixture
def stem_model() -> onnx.ModelProto:
    """x -> conv(3->4) -> LeakyRelu -> MaxPool -> t (read by a depthwise and a pointwise conv)
    -> ...; pointwise(4->4) -> Relu -> u (read by a depthwise conv only); v = depthwise output,
    read by a conv and by an Add (not rescalable)."""
    w0 = RNG.normal(size=(4, 3, 3, 3))
    w0[2] *= 0.01  # a channel with a tiny range
    w0[3] *= 0.3
    c0, i0 = _conv("c0", "x", w0, RNG.normal(size=4) * [1, 1, 0.01, 1], "c0o", pads=1)
    dw1, i1 = _conv("dw1", "t", RNG.normal(size=(4, 1, 3, 3)), RNG.normal(size=4), "a", 4, 1)
    pw1, i2 = _conv("pw1", "t", RNG.normal(size=(4, 4, 1, 1)), RNG.normal(size=4), "p1o")
    dw2, i3 = _conv("dw2", "u", RNG.normal(size=(4, 1, 3, 3)), RNG.normal(size=4), "v", 4, 1)
    pw3, i4 = _conv("pw3", "v", RNG.normal(size=(2, 4, 1, 1)), RNG.normal(size=2), "b")
    nodes = [
        c0,
        helper.make_node("LeakyRelu", ["c0o"], ["lr"], alpha=0.1),
        helper.make_node("MaxPool", ["lr"], ["t"], kernel_shape=[2, 2], strides=[2, 2]),
        dw1,
        pw1,
        helper.make_node("Relu", ["p1o"], ["u"]),
        dw2,
        pw3,
        helper.make_node("Add", ["v", "v"], ["c"]),
    ]
    inits = i0 + i1 + i2 + i3 + i4
    model = _model(nodes, inits, ["a", "b", "c"])
    onnx.checker.check_model(model)
    return model


def test_equalizable_tensors(stem_model):
    pairs = {p.tensor: p for p in int8_rewrite.equalizable(stem_model)}
    assert set(pairs) == {"t", "u"}  # "v" is also read by the Add: rescaling it is not exact
    assert pairs["t"].producer.name == "c0" and not pairs["t"].depthwise_only
    assert {c.name for c in pairs["t"].consumers} == {"dw1", "pw1"}
    assert pairs["u"].producer.name == "pw1" and pairs["u"].depthwise_only


def test_equalize_is_float_exact_and_caps_the_scales(stem_model):
    x = [RNG.normal(size=(1, 3, 8, 8)).astype(np.float32) for _ in range(4)]
    before = [_run(stem_model, xi, ["a", "b", "c", "t", "u"]) for xi in x]
    model = onnx.ModelProto.FromString(stem_model.SerializeToString())
    assert int8_rewrite.equalize(model, "x", x) == 2
    after = [_run(model, xi, ["a", "b", "c", "t", "u"]) for xi in x]
    for old, new in zip(before, after, strict=True):
        for o, n in zip(old[:3], new[:3], strict=True):  # the model's outputs: unchanged
            np.testing.assert_allclose(n, o, rtol=1e-4, atol=1e-5)
    for i, (name, cap) in enumerate((("t", 4.0), ("u", 16.0)), start=3):
        r = np.max([np.abs(b[i]).max(axis=(0, 2, 3)) for b in before], axis=0)
        r_new = np.max([np.abs(a[i]).max(axis=(0, 2, 3)) for a in after], axis=0)
        live = r > 0  # "u" has a dead channel (its Relu output is always 0): it stays 0
        assert (r_new[~live] == 0).all() and live.sum() == (4 if name == "t" else 3)
        expected = np.clip(r.max() / r[live], 1.0, cap)  # hand-computed: min(R / r_c, cap)
        np.testing.assert_allclose(r_new[live] / r[live], expected, rtol=1e-5)
        if name == "t":
            assert expected[2] == cap  # the tiny channel hits the cap (R / r > 50)
    # negative control: the same scales without dividing them out of the readers change "a"
    broken = onnx.ModelProto.FromString(stem_model.SerializeToString())
    w = next(i for i in broken.graph.initializer if i.name == "c0.w")
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 4, "c0.w"))
    assert np.abs(_run(broken, x[0], ["a"])[0] - before[0][0]).max() > 0.1


def test_correct_bias_subtracts_the_int8_weight_mean_shift(tmp_path):
    """One 1x1 conv, weights [[1.0, 0.3]]: int8 per-channel symmetric scale 1/127, so 0.3
    becomes 38/127 and the output mean moves by (38/127 - 0.3) * E[x_1]; the corrected float
    bias is that much higher, and the re-quantized model's mean output matches fp32's."""
    w = np.array([[[[1.0]], [[0.3]]]])
    node, inits = _conv("c", "x", w, np.array([0.5]), "y")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = [np.stack([RNG.uniform(0, 1, (4, 4)), RNG.uniform(9, 11, (4, 4))])[None]
         .astype(np.float32) for _ in range(8)]  # fmt: skip
    mean_x1 = np.mean([xi[0, 1].astype(np.float64).mean() for xi in x])

    def quantize(m) -> onnx.ModelProto:
        src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
        onnx.save(m, str(src))
        quantize_static(str(src), str(dst), int8_step._Reader("x", x), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})  # fmt: skip
        return onnx.load(str(dst))

    quantized = quantize(model)
    corrected = onnx.ModelProto.FromString(model.SerializeToString())
    assert int8_rewrite.correct_bias(corrected, quantized, "x", x) == 1
    bias = numpy_helper.to_array(corrected.graph.initializer[1])
    shift = (38 / 127 - 0.3) * mean_x1
    np.testing.assert_allclose(bias, [0.5 - shift], rtol=0, atol=2e-6)
    requantized = quantize(corrected)

    def mean_y(m):
        return np.mean([_run(m, xi, ["y"])[0].mean() for xi in x])

    fp32, plain, fixed = mean_y(model), mean_y(quantized), mean_y(requantized)
    assert abs(plain - fp32) > 0.005  # the shift is there (shift = -0.0079)
    assert abs(fixed - fp32) < abs(plain - fp32) / 3

"""MNN int8 from the onnxruntime int8 model (exporters/mnn_int8.py): the QDQ model's float twin,
MNN's compression parameters on the wire, and exports whose MNN int8 model computes what the
onnxruntime int8 model computes (with a negative control), static and dynamic.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from nanodet_deploy.api import export
from nanodet_deploy.artifacts import read_meta
from nanodet_deploy.exporters import int8 as int8_step
from nanodet_deploy.exporters import mnn_int8
from nanodet_deploy.exporters.errors import ExportError
from nanodet_deploy.runtimes import mnn as mnn_runtime

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "assets" / "nanodet-m-raccoon-320.pth"


# ------------------------------------------------------------------ a two-conv QDQ model


def _float_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 4).astype(np.float32)
    w2 = rng.normal(0, 0.5, (2, 4, 1, 1)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 2).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["c1"], ["a1"], name="act", alpha=0.1),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes, "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        [numpy_helper.from_array(v, k) for k, v in
         {"w1": w1, "b1": b1, "w2": w2, "b2": b2}.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


class _Reader(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        self._it = iter([{"x": rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)}
                         for _ in range(4)])  # fmt: skip

    def get_next(self):
        return next(self._it, None)


@pytest.fixture(scope="module")
def qdq_pair(tmp_path_factory) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    folder = tmp_path_factory.mktemp("qdq")
    onnx.save(_float_model(), str(folder / "f.onnx"))
    quantize_static(str(folder / "f.onnx"), str(folder / "q.onnx"), _Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True, op_types_to_quantize=["Conv"],
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})  # fmt: skip
    return _float_model(), onnx.load(str(folder / "q.onnx"))


def _qdq_params(qdq: onnx.ModelProto) -> tuple[dict, dict]:
    """(activation tensor -> (scale, uint8 zero), DequantizeLinear output -> weight values)."""
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    acts, weights = {}, {}
    for node in qdq.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            acts[node.input[0]] = (float(inits[node.input[1]]), int(inits[node.input[2]]))
        if node.op_type == "DequantizeLinear" and inits.get(node.input[0], np.zeros(0)).ndim == 4:
            q, s = inits[node.input[0]], inits[node.input[1]]
            weights[node.output[0]] = (q.astype(np.float64) * s[:, None, None, None], s)
    makers = {o: n for n in qdq.graph.node for o in n.output}
    for node in qdq.graph.node:  # a quantized graph output: its DequantizeLinear holds the name
        if node.op_type == "DequantizeLinear" and node.input[0] in makers:
            acts.setdefault(node.output[0], acts[makers[node.input[0]].input[0]])
    return acts, weights


def test_float_twin_keeps_the_int8_numbers(qdq_pair):
    float_model, qdq = qdq_pair
    twin = mnn_int8.float_twin(qdq)
    onnx.checker.check_model(twin.model)
    assert {n.op_type for n in twin.model.graph.node} == {"Conv", "LeakyRelu"}
    assert [c.name for c in twin.convs] == ["conv1", "conv2"] and twin.float_convs == []
    acts, weights = _qdq_params(qdq)
    conv1, conv2 = twin.convs
    assert (conv1.input, conv1.output, conv2.input, conv2.output) == ("x", "c1", "a1", "y")
    for conv in twin.convs:  # uint8 zero point z -> int8 z - 128, the same scale
        assert conv.input_scale == acts[conv.input][0]
        assert conv.input_zero == acts[conv.input][1] - 128
        assert conv.output_zero == acts[conv.output][1] - 128
    assert acts["x"][1] not in (0, 128)  # an asymmetric range: the shift is exercised
    twin_inits = {i.name: numpy_helper.to_array(i) for i in twin.model.graph.initializer}
    for conv in twin.convs:  # weights: the dequantized int8 values, with their channel scales
        expected, scales = weights[conv.weight]
        np.testing.assert_allclose(twin_inits[conv.weight], expected, rtol=1e-6)
        np.testing.assert_allclose(conv.weight_scales, scales, rtol=1e-7)
    # the twin computes the float model with int8-grid weights: close to it, but not equal
    x = np.random.default_rng(2).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)

    def run(model):
        return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]

    ref, got = run(float_model), run(twin.model)
    assert 0 < np.abs(got - ref).max() < 0.02 * np.abs(ref).max()


def test_float_twin_of_a_float_model_is_an_error(qdq_pair):
    with pytest.raises(ExportError, match="no quantized convolution"):
        mnn_int8.float_twin(qdq_pair[0])


def _wire(data: bytes) -> list[tuple[int, int, object]]:
    """Decode one protobuf message level: [(field number, wire type, value)]."""

    def varint(pos: int) -> tuple[int, int]:
        shift = value = 0
        while True:
            byte = data[pos]
            value |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if byte < 0x80:
                return value, pos

    fields, pos = [], 0
    while pos < len(data):
        key, pos = varint(pos)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, pos = varint(pos)
            value = value - (1 << 64) if value >= 1 << 63 else value
        elif kind == 2:
            size, pos = varint(pos)
            value, pos = data[pos : pos + size], pos + size
        elif kind == 5:
            value, pos = float(np.frombuffer(data[pos : pos + 4], "<f4")[0]), pos + 4
        else:
            raise AssertionError(f"unexpected wire type {kind}")
        fields.append((number, kind, value))
    return fields


def test_compression_params_follow_mnn_compression_proto():
    """Field numbers of MNN's MNN_compression.proto: Pipeline{1 version, 2 algo},
    CompressionAlgo{1 type, 2 quant_params}, QuantizeParams{4 layer}, LayerQuantizeParams{1 input,
    2 weight, 3 output}, ActivationParams{1 name, 3 scales, 4 zero_point, 5/6 clamp},
    WeightParams{1 name, 3 scales, 4/5 clamp}."""
    conv = mnn_int8.QuantizedConv("c", "in", "w", "out", 0.5, -3, 0.25, 7, (0.125, 2.0))
    pipeline = _wire(mnn_int8.compression_params([conv]))
    assert pipeline[0] == (1, 2, b"0.0.0") and [f[0] for f in pipeline] == [1, 2]
    algo = _wire(pipeline[1][2])
    assert algo[0] == (1, 0, 0)  # QUANTIZE
    quant = _wire(algo[1][2])
    assert [f[0] for f in quant] == [4]
    layer = _wire(quant[0][2])
    assert [f[0] for f in layer] == [1, 2, 3]  # input, weight, output
    inp, out = (dict((n, v) for n, _, v in _wire(layer[k][2])) for k in (0, 2))
    assert inp == {1: b"in", 3: 0.5, 4: -3, 5: -128, 6: 127}
    assert out == {1: b"out", 3: 0.25, 4: 7, 5: -128, 6: 127}
    weight_fields = _wire(layer[1][2])
    assert [(n, v) for n, _, v in weight_fields if n == 3] == [(3, 0.125), (3, 2.0)]
    assert dict((n, v) for n, _, v in weight_fields if n != 3) == {1: b"w", 4: -127, 5: 127}


# ------------------------------------------------------------------ exports (MNN installed)


def _needs_mnn() -> None:
    if mnn_runtime.mnn_nn is None:
        pytest.skip("MNN is not installed")


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory, raccoon_dir) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    for name in (raccoon_dir / "train.txt").read_text().split()[:10]:
        shutil.copy(raccoon_dir / "images" / f"{name}.jpg", folder)
    return folder


@pytest.fixture(scope="module")
def mnn_export(tmp_path_factory, calib_dir) -> Path:
    _needs_mnn()
    out = tmp_path_factory.mktemp("mnn-int8") / "export"
    export(CHECKPOINT, out, formats=("onnx", "mnn"), int8=True, calib=calib_dir, calib_images=8)
    return out


def _val_tensors(raccoon_dir: Path, meta, count: int = 16) -> list[np.ndarray]:
    names = (raccoon_dir / "val.txt").read_text().split()[:count]
    paths = [raccoon_dir / "images" / f"{n}.jpg" for n in names]
    return int8_step.calibration_tensors(paths, meta.preprocess, meta.input_hw)


def _outputs(backend, tensors: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([backend.run(t).reshape(-1, backend.meta.num_classes + 4)
                           for t in tensors])  # fmt: skip


def _agreement(fp32: np.ndarray, ort8: np.ndarray, mnn8: np.ndarray, nc: int) -> dict:
    """On the anchors fp32 scores above 0.3 (the detections): the mean |score difference| of MNN
    int8 to onnxruntime int8 and to fp32, and how the two int8 models' deviations from fp32
    correlate (scores, distances)."""
    keep = fp32[:, :nc].max(axis=1) > 0.3
    assert keep.sum() > 50

    def corr(cols: slice) -> float:
        a, b = (x[keep, cols] - fp32[keep, cols] for x in (mnn8, ort8))
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    return {
        "to_ort": float(np.abs(mnn8[keep, :nc] - ort8[keep, :nc]).mean()),
        "to_fp32": float(np.abs(mnn8[keep, :nc] - fp32[keep, :nc]).mean()),
        "corr_scores": corr(slice(0, nc)),
        "corr_dists": corr(slice(nc, None)),
    }


def test_mnn_int8_computes_what_onnxruntime_int8_computes(mnn_export, raccoon_dir, monkeypatch):
    from nanodet_deploy.runtimes.ort import OrtBackend

    meta = read_meta(mnn_export)
    block, onnx_block = meta.int8["mnn"], meta.int8["onnx"]
    assert block["tool"] == "mnnconvert --compressionParamsFile"
    assert block["scales_from"] == "model.int8.onnx" and meta.files["mnn_int8"] == "model.int8.mnn"
    assert block["quantized_convs"] == onnx_block["quantized_convs"] > 40
    assert block["float_convs"] == onnx_block["float_nodes"]  # the decode's integral
    # int8 weights in the file: a quarter of the fp32 model, plus the float integral and biases
    int8_size, fp32_size = (
        (mnn_export / "model.int8.mnn").stat().st_size,
        (mnn_export / "model.mnn").stat().st_size,
    )
    assert int8_size < 0.4 * fp32_size
    report = json.loads((mnn_export / "verify.json").read_text())["checks"]["mnn_int8"]
    assert report["passed"] is True
    tensors, nc = _val_tensors(raccoon_dir, meta), meta.num_classes
    fp32 = _outputs(mnn_runtime.MnnBackend(mnn_export, precision="fp32"), tensors)
    ort8 = _outputs(OrtBackend(mnn_export, precision="int8"), tensors)
    mnn8 = _outputs(mnn_runtime.MnnBackend(mnn_export, precision="int8"), tensors)
    # The rounding is MNN's own, so the outputs differ from onnxruntime's; but with the same
    # scales both int8 models deviate from fp32 alike. Measured on 16 val images: correlation
    # 0.87 (scores) / 0.88 (distances); MNN's own mnnquant calibration: 0.39 / 0.29.
    same = _agreement(fp32, ort8, mnn8, nc)
    assert same["corr_scores"] > 0.7 and same["corr_dists"] > 0.7, same
    assert 0 < same["to_ort"] < same["to_fp32"], same
    # negative control: MNN zero points without the uint8 -> int8 shift
    monkeypatch.setattr(mnn_int8, "MNN_ZERO_SHIFT", 0)
    wrong = mnn_export.parent / "wrong"
    shutil.copytree(mnn_export, wrong)
    mnn_int8.mnn_int8_from_onnx(wrong / "model.int8.onnx", wrong / "model.int8.mnn")
    bad = _agreement(fp32, ort8, _outputs(mnn_runtime.MnnBackend(wrong, precision="int8"),
                                         tensors), nc)  # fmt: skip
    assert bad["corr_scores"] < 0.5 and bad["to_ort"] > 3 * same["to_ort"], bad


def test_dynamic_mnn_only_export_gets_an_int8_model(tmp_path, calib_dir, raccoon_dir):
    """MNN int8 from the onnxruntime scales works on a dynamic export (mnnquant cannot), and
    without "onnx" in --formats the int8 ONNX is a step only: not kept, described in meta."""
    _needs_mnn()
    out = tmp_path / "dyn"
    export(CHECKPOINT, out, formats=("mnn",), dynamic=True, int8=True, calib=calib_dir,
           calib_images=4, verify=False)  # fmt: skip
    meta = read_meta(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json", "model.int8.mnn", "model.mnn", "model.pth"
    ]  # fmt: skip
    assert meta.int8["mnn"]["scales_from"]["file"] == "model.int8.onnx"
    assert meta.int8["mnn"]["scales_from"]["calibration_method"] == "percentile"
    backend = mnn_runtime.MnnBackend(out, precision="int8")
    assert backend.static_hw is None
    for hw in ((320, 320), (256, 416)):
        image = np.zeros((1, 3, *hw), np.float32)
        assert backend.run(image).shape[0] == sum((hw[0] // s) * (hw[1] // s) for s in meta.strides)
    with pytest.raises(ExportError, match="static-shape"):  # mnnquant still needs a fixed size
        export(CHECKPOINT, tmp_path / "q", formats=("mnn",), dynamic=True, int8=True,
               calib=calib_dir, calib_images=4, verify=False, mnn_int8="mnnquant")  # fmt: skip
    assert not (tmp_path / "q").exists()
    with pytest.raises(ValueError, match="--mnn-int8 must be one of"):
        export(CHECKPOINT, tmp_path / "r", formats=("mnn",), int8=True, calib=calib_dir,
               mnn_int8="qdq")  # fmt: skip

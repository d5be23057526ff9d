"""ONNX export: op allow-list, opset, dynamic axes, metadata, no training-only modules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nanodet_deploy.config import zoo_config
from nanodet_deploy.exporters.errors import ExportError
from nanodet_deploy.exporters.onnx import (
    ONNX_ALLOWED_OPS,
    ONNX_SHAPE_OPS,
    check_ops,
    export_onnx,
    onnx_opset,
)
from nanodet_deploy.exporters.pipeline import ExportOptions, export_model
from nanodet_deploy.models import AUX_PREFIXES, build_model
from nanodet_deploy.models.export import ExportWrapper
from nanodet_deploy.models.stats import model_stats

# One legacy and one Plus architecture; the other widths build the same op types.
ARCHS = ("nanodet-m-0.5x", "nanodet-plus-m")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny forwards: one thread is fastest, and immune to a busy machine's oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(name: str):
    torch.manual_seed(0)
    return build_model(zoo_config(name)).eval()


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize(
    ("layout", "fold"), [("decoded", False), ("raw", False), ("decoded", True)]
)
def test_static_graph_uses_only_allowed_ops(tmp_path, name, layout, fold):
    """Fails when an export starts using an op that is not on the NCNN-safe allow-list."""
    wrapper = ExportWrapper(_model(name), layout, fold).eval()
    info = export_onnx(wrapper, tmp_path / "m.onnx", (64, 96))
    ops = {node.op_type for node in onnx.load(str(info.path)).graph.node}
    assert ops == set(info.ops)
    assert ops <= ONNX_ALLOWED_OPS, sorted(ops - ONNX_ALLOWED_OPS)
    assert "Softmax" in ops or layout == "raw"
    forbidden = {"TopK", "ArgMax", "GatherElements", "NonZero", "Where", "CumSum", "Gather"}
    assert not ops & forbidden


def test_check_ops_rejects_an_op_outside_the_list():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
    k = onnx.helper.make_tensor_value_info("k", onnx.TensorProto.INT64, [1])
    v = onnx.helper.make_tensor_value_info("v", onnx.TensorProto.FLOAT, [2])
    i = onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT64, [2])
    node = onnx.helper.make_node("TopK", ["x", "k"], ["v", "i"])
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "g", [x, k], [v, i]))
    with pytest.raises(ExportError, match="TopK"):
        check_ops(model, allow_shape_ops=True)


def test_opset_is_the_requested_one_and_checked(tmp_path):
    wrapper = ExportWrapper(_model("nanodet-m-0.5x")).eval()
    info = export_onnx(wrapper, tmp_path / "m.onnx", (64, 64), opset=17)
    model = onnx.load(str(info.path))
    assert info.opset == onnx_opset(model) == 17
    onnx.checker.check_model(model)
    with pytest.raises(ValueError, match="opset 11"):
        export_onnx(wrapper, tmp_path / "old.onnx", (64, 64), opset=11)


def test_dynamic_axes_run_in_onnxruntime(tmp_path):
    model = _model("nanodet-m-0.5x")
    wrapper = ExportWrapper(model).eval()
    axes = ("batch", "height", "width")
    info = export_onnx(wrapper, tmp_path / "d.onnx", (64, 64), dynamic_axes=axes)
    assert set(info.ops) <= ONNX_ALLOWED_OPS | ONNX_SHAPE_OPS
    session = ort.InferenceSession(str(info.path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 64, 96), (2, 3, 96, 64)]:
        x = torch.randn(shape)
        (out,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            ref = wrapper(x).numpy()
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


def test_training_only_modules_are_not_exported(tmp_path):
    """NanoDet-Plus aux modules and the legacy dead gfl_reg never reach the graph."""
    for name in ("nanodet-plus-m", "nanodet-m-0.5x"):
        model = _model(name)
        info = export_onnx(ExportWrapper(model).eval(), tmp_path / f"{name}.onnx", (64, 64))
        graph = onnx.load(str(info.path)).graph
        exported = sum(int(np.prod(t.dims)) for t in graph.initializer)
        exported += sum(
            int(np.prod(a.t.dims)) for n in graph.node if n.op_type == "Constant"
            for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
        )  # fmt: skip
        inference = sum(
            v.numel() for k, v in model.state_dict().items()
            if not k.startswith((*AUX_PREFIXES, "head.gfl_reg.")) and "num_batches" not in k
        )  # fmt: skip
        dead = sum(
            v.numel() for k, v in model.state_dict().items()
            if k.startswith((*AUX_PREFIXES, "head.gfl_reg."))
        )  # fmt: skip
        assert dead > 5_000
        assert exported <= inference  # BN folded into convs: fewer numbers, never more


def test_metadata_props_and_meta_json(tmp_path):
    model = _model("nanodet-m-0.5x")
    options = ExportOptions(input_hw=(64, 96), formats=("onnx",), verify=False)
    result = export_model(model, tmp_path / "e", options, random_weights=True)
    meta_json = json.loads((tmp_path / "e" / "meta.json").read_text())
    props = {
        p.key: json.loads(p.value)
        for p in onnx.load(str(tmp_path / "e" / "model.onnx")).metadata_props
    }
    assert props == meta_json
    assert meta_json["preprocess"]["input_hw"] == [64, 96] and meta_json["random_weights"] is True
    assert meta_json["preprocess"]["sampler"] == "resize"  # what an ncnn app computes
    assert meta_json["preprocess"]["pad_value"] == [0.0, 0.0, 0.0]
    assert meta_json["format_version"] == 2
    assert meta_json["files"] == {"onnx": "model.onnx", "checkpoint": "model.pth"}
    assert meta_json["opset"] == 13
    assert meta_json["precision"] == {"onnx": "fp32", "torch": "fp32"}
    assert meta_json["macs"] == model_stats(model, (64, 96)).macs > 0
    assert result.meta.num_points((64, 96)) == 8 * 12 + 4 * 6 + 2 * 3
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == [
        "meta.json", "model.onnx", "model.pth",
    ]  # fmt: skip
    assert not list(Path(tmp_path).glob(".e.*"))  # no temp folder left behind

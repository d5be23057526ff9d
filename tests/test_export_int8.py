"""INT8 exports: calibration on the user's images through the export's own preprocessing,
onnxruntime QDQ and ncnn int8 artifacts, meta.json, held-out agreement, clear errors, atomicity.

One export per session of the bundled raccoon NanoDet-m (320, static ONNX) calibrated on 8
training images copied into a folder; held-out checks use the images the exporter kept aside.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from nanodet_deploy.api import export
from nanodet_deploy.artifacts import read_meta
from nanodet_deploy.cli.main import app
from nanodet_deploy.detector import Detector
from nanodet_deploy.exporters import int8 as int8_step
from nanodet_deploy.preprocess import load_image

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "assets" / "nanodet-m-raccoon-320.pth"


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory, raccoon_dir) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    names = (raccoon_dir / "train.txt").read_text().split()[:12]
    for name in names:
        shutil.copy(raccoon_dir / "images" / f"{name}.jpg", folder)
    return folder


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, calib_dir) -> Path:
    out = tmp_path_factory.mktemp("int8") / "export"
    export(CHECKPOINT, out, int8=True, calib=calib_dir, calib_images=8)
    return out


def test_int8_artifacts_and_meta(int8_export, calib_dir):
    meta = read_meta(int8_export)
    assert meta.files["onnx_int8"] == "model.int8.onnx"
    assert meta.files["ncnn_int8_param"] == "model.int8.ncnn.param"
    assert meta.precision["onnx_int8"] == meta.precision["ncnn_int8"] == "int8"
    block = meta.int8
    assert block["calibration_source"] == str(calib_dir) and block["calibration_images"] == 8
    assert block["held_out_images"] == 2  # every fifth of 12 images is kept for the check
    onnx_block, ncnn_block = block["onnx"], block["ncnn"]
    assert onnx_block["format"] == "QDQ" and onnx_block["float_layers"] == "none"
    assert onnx_block["activations"].startswith("uint8")
    assert onnx_block["calibration_method"] == int8_step.DEFAULT_ONNX_METHOD
    assert 1 <= len(onnx_block["float_nodes"]) <= 3  # only the decode's integral convs
    assert onnx_block["quantized_convs"] > 40
    assert onnx_block["equalized_tensors"] > 20  # int8_rewrite: every conv -> conv(s) pair
    assert onnx_block["bias_corrected_convs"] == onnx_block["quantized_convs"]
    assert ncnn_block["calibration_method"] == "max" and len(ncnn_block["quantized_layers"]) > 40
    assert ncnn_block["float_layers"] == int8_step.DEFAULT_NCNN_FLOAT_LAYERS == "first+head+dw"
    assert "convrelu_0" in ncnn_block["float_layer_names"]  # the first conv stays float
    # depthwise convs stay float (no int8_scale_term, param 8); pointwise convs are int8
    lines = (int8_export / "model.int8.ncnn.param").read_text().splitlines()
    dw = [line.split() for line in lines if line.startswith("ConvolutionDepthWise")]
    assert len(dw) > 10 and not any(t.startswith("8=") for layer in dw for t in layer)
    assert {layer[1] for layer in dw} <= set(ncnn_block["float_layer_names"])
    fp32_size = (int8_export / "model.onnx").stat().st_size
    assert (int8_export / "model.int8.onnx").stat().st_size < fp32_size / 2


def test_float_layer_groups_select_depthwise_convs(int8_export):
    """``dw`` adds exactly the depthwise convs to what stays float, in both formats; an
    unknown group is an error that lists the valid ones."""
    meta = read_meta(int8_export)
    param = int8_export / "model.ncnn.param"
    dw_names = {line.split()[1] for line in param.read_text().splitlines()
                if line.startswith("ConvolutionDepthWise")}  # fmt: skip
    ncnn_sets = {w: int8_step.ncnn_float_layers(param, meta, w)
                 for w in ("none", "dw", "first+head", "first+head+dw")}  # fmt: skip
    assert len(dw_names) > 10 and 1 <= len(ncnn_sets["none"]) <= 4  # the integral convs only
    assert ncnn_sets["dw"] == ncnn_sets["none"] | dw_names
    assert ncnn_sets["first+head+dw"] == ncnn_sets["first+head"] | dw_names
    model = onnx.load(str(int8_export / "model.onnx"))
    grouped = {n.name for n in model.graph.node if n.op_type == "Conv"
               and any(a.name == "group" and a.i > 1 for a in n.attribute)}  # fmt: skip
    none, dw = (set(int8_step.float_conv_nodes(model, meta, w)) for w in ("none", "dw"))
    assert len(grouped) > 10 and dw == none | grouped
    with pytest.raises(ValueError, match=r"subset of \['first', 'head', 'dw'\], got 'dw\+tail'"):
        int8_step.ncnn_float_layers(param, meta, "dw+tail")


def test_onnx_int8_quantizes_the_image_input_to_uint8(int8_export):
    """U8S8: the input of the first conv (the image) is quantized, with a uint8 zero point
    (onnxruntime's VNNI path on x86); weights are int8 per output channel."""
    model = onnx.load(str(int8_export / "model.int8.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    meta = read_meta(int8_export)
    q_input = [n for n in model.graph.node
               if n.op_type == "QuantizeLinear" and n.input[0] == meta.input_name]  # fmt: skip
    assert len(q_input) == 1
    assert inits[q_input[0].input[2]].data_type == onnx.TensorProto.UINT8
    weight_q = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                and inits.get(n.input[0]) is not None
                and inits[n.input[0]].data_type == onnx.TensorProto.INT8]  # fmt: skip
    assert len(weight_q) > 40


def test_int8_models_detect_like_fp32(int8_export, raccoon_dir):
    """Held-out images (not calibrated on) through the shared pre/postprocessing."""
    names = (raccoon_dir / "val.txt").read_text().split()[:6]
    for backend in ("onnxruntime", "ncnn"):
        with (
            Detector(int8_export, backend, threads=1, precision="int8") as q,
            Detector(int8_export, backend, threads=1, precision="fp32") as f,
        ):
            assert q.describe()["backend_settings"]["model_file"].startswith("model.int8")
            matched = total = 0
            for name in names:
                image = load_image(raccoon_dir / "images" / f"{name}.jpg")
                ref, got = f.detect(image), q.detect(image)
                total += len(ref)
                matched += sum(_best_iou(box, got.boxes_xyxy) > 0.7 for box in ref.boxes_xyxy)
            assert total > 0 and matched >= 0.8 * total, (backend, matched, total)


def test_rewrite_brings_onnx_int8_closer_to_fp32(int8_export, calib_dir, tmp_path):
    """Activation equalization + bias correction (int8_rewrite), on the held-out images: the
    export's int8 model's class scores and box distances are closer to fp32 than those of the
    same quantization without the rewrite (on the raccoon models, 28-50% closer)."""
    meta = read_meta(int8_export)
    split = int8_step.calibration_split(calib_dir, 8)
    calib = int8_step.calibration_tensors(split.calibration, meta.preprocess, meta.input_hw)
    held = int8_step.calibration_tensors(split.held_out, meta.preprocess, meta.input_hw)
    plain = tmp_path / "plain.int8.onnx"
    info = int8_step.quantize_onnx(int8_export / "model.onnx", plain, calib, meta, rewrite=None)
    assert info.equalized_tensors == info.bias_corrected_convs == 0

    def run(path):  # QDQ in float arithmetic: the same on every CPU (kernels may round apart)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return np.concatenate([s.run(None, {meta.input_name: x})[0] for x in held])

    ref = run(int8_export / "model.onnx")
    errors = {name: np.abs(run(path) - ref).mean(axis=(0, 1))
              for name, path in (("plain", plain), ("rewrite", int8_export / "model.int8.onnx"))}  # fmt: skip
    plain, rewrite = errors["plain"], errors["rewrite"]
    c = meta.num_classes  # here (8 calibration images): scores 0.86x, distances 0.72x plain
    assert rewrite[:c].mean() < 0.95 * plain[:c].mean(), errors
    assert rewrite[c:].mean() < 0.85 * plain[c:].mean(), errors


def _best_iou(box: np.ndarray, boxes: np.ndarray) -> float:
    if not len(boxes):
        return 0.0
    lt, rb = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return float((inter / (area(box) + area(boxes) - inter)).max())


def test_verify_json_reports_held_out_agreement(int8_export, calib_dir):
    report = json.loads((int8_export / "verify.json").read_text())
    split = int8_step.calibration_split(calib_dir, 8)
    held_out = sorted(p.name for p in split.held_out)
    assert held_out and not set(held_out) & {p.name for p in split.calibration}
    for name in ("onnxruntime_int8", "ncnn_int8"):
        check = report["checks"][name]
        assert check["precision"] == "int8" and 0.0 <= check["agreement"] <= 1.0
        assert check["passed"] is True
        assert sorted(i["input"] for i in check["inputs"]) == held_out


def test_detect_cli_runs_int8(int8_export, raccoon_dir, tmp_path):
    image = raccoon_dir / "images" / "raccoon-1.jpg"
    out = tmp_path / "dets.json"
    result = CliRunner().invoke(app, ["detect", str(int8_export), str(image), "--backend", "ncnn",
                                      "--precision", "int8", "--json", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())[0]["name"] == "raccoon"


def test_dynamic_export_gets_an_onnx_int8_model(tmp_path, calib_dir, raccoon_dir):
    """A dynamic-shape export is calibrated on images padded to its size (onnxruntime's
    calibrators need one shape; this failed before) and then runs at other sizes."""
    out = tmp_path / "dyn"
    export(CHECKPOINT, out, formats=("onnx",), dynamic=True, int8=True, calib=calib_dir,
           calib_images=4)  # fmt: skip
    meta = read_meta(out)
    assert {"height", "width"} <= set(meta.dynamic_axes) and meta.int8["onnx"]["quantized_convs"]
    report = json.loads((out / "verify.json").read_text())["checks"]["onnxruntime_int8"]
    assert report["passed"] is True
    image = load_image(raccoon_dir / "images" / "raccoon-1.jpg")  # not 320x320 after resize
    with Detector(out, "onnxruntime", precision="int8") as q, Detector(out, "onnxruntime") as f:
        ref, got = f.detect(image), q.detect(image)
    assert len(ref) and all(_best_iou(box, got.boxes_xyxy) > 0.7 for box in ref.boxes_xyxy[:1])


def test_calibration_folder_without_readable_images(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a jpeg")
    (folder / "b.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no readable image among 2"):
        export(CHECKPOINT, tmp_path / "out", int8=True, calib=folder, verify=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"--calib .*empty: no image files"):
        export(CHECKPOINT, tmp_path / "out", int8=True, calib=tmp_path / "empty")


def test_data_config_without_train_split(tmp_path, raccoon_dir):
    data = tmp_path / "data.yaml"
    data.write_text(f"data:\n  format: voc\n  root: {raccoon_dir}\n  val: val\n")
    with pytest.raises(ValueError, match=r"data\.yaml: its data section has no train split"):
        export(CHECKPOINT, tmp_path / "out", int8=True, calib=data)
    with pytest.raises(ValueError, match="--int8 needs --calib"):
        export(CHECKPOINT, tmp_path / "out", int8=True)


def test_failed_int8_step_leaves_no_files(tmp_path, calib_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("ncnn int8 step interrupted")

    monkeypatch.setattr(int8_step, "quantize_ncnn", fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        export(CHECKPOINT, tmp_path / "out", int8=True, calib=calib_dir, calib_images=4)
    assert list(tmp_path.iterdir()) == []  # no export folder, no temp folder

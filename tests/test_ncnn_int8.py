"""ncnn int8 from Python (exporters/ncnn_int8.py + ncnn_calib.py): format, calibration, proof.

One fp32 export of the bundled raccoon checkpoint per session; calibration on a few raccoon
train images; everything checked on val images (held out). The proof that the quantized layers
really run int8: ncnn's output of a quantized conv equals a NumPy simulation of ncnn's int8
arithmetic (quantize the input with the bottom scale, int32 accumulate, dequantize, bias,
activation) within 1e-3 of its peak, while an fp32 convolution of the same input is 20x+ off.
(With ``use_int8_inference = False`` ncnn loads int8 weights but crashes when run, so that
switch cannot serve as a check here.)
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import ncnn
import numpy as np
import pytest
from conftest import require_shared
from detect_helpers import TORCH_BLOCKER

from nanodet_deploy.exporters.ncnn_calib import (
    abs_histogram,
    aciq_clip,
    calibrate,
    check_inputs,
    kl_threshold_bin,
    weight_levels,
    weight_scales,
)
from nanodet_deploy.exporters.ncnn_int8 import (
    TAG_FP16,
    Int8Error,
    Int8Table,
    Layer,
    NcnnModel,
    Segment,
    configure_int8,
    encode_weights,
    format_param,
    quantize,
    read_model,
    read_table,
    round_to_int8,
    write_table,
)

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "assets" / "nanodet-m-raccoon-320.pth"
NUM_CALIB = 6
NUM_HELD_OUT = 8


def _stems(raccoon: Path, split: str) -> list[str]:
    return (raccoon / f"{split}.txt").read_text().split()


def _image(raccoon: Path, stem: str) -> np.ndarray:
    image = cv2.imread(str(raccoon / "images" / f"{stem}.jpg"))
    assert image is not None, stem
    return image


@pytest.fixture(scope="session")
def raccoon() -> Path:
    return require_shared("datasets", "raccoon")


@pytest.fixture(scope="session")
def fp32_dir(tmp_path_factory) -> Path:
    from nanodet_deploy.checkpoint import load_model
    from nanodet_deploy.exporters.pipeline import ExportOptions, export_model

    model, _ = load_model(CHECKPOINT)
    out = tmp_path_factory.mktemp("int8") / "fp32"
    options = ExportOptions(
        input_hw=(320, 320), formats=("onnx", "ncnn"), ncnn_fp16=False, verify=False
    )
    export_model(model, out, options)
    return out


@pytest.fixture(scope="session")
def detector(fp32_dir):
    """The fp32 ncnn Detector: its preprocess feeds calibration, its postprocess every check."""
    from nanodet_deploy import Detector

    with Detector(fp32_dir, "ncnn", threads=1, precision="fp32", score_thresh=0.3) as det:
        yield det


@pytest.fixture(scope="session")
def fp32_files(fp32_dir) -> tuple[Path, Path]:
    return fp32_dir / "model.ncnn.param", fp32_dir / "model.ncnn.bin"


@pytest.fixture(scope="session")
def held_out(raccoon, detector) -> list[tuple[np.ndarray, object]]:
    """(tensor, ResizeInfo) of val images: never used for calibration."""
    stems = _stems(raccoon, "val")[:NUM_HELD_OUT]
    return [detector.preprocess(_image(raccoon, s)) for s in stems]


@pytest.fixture(scope="session")
def calib_tensors(raccoon, detector) -> list[np.ndarray]:
    stems = _stems(raccoon, "train")[:NUM_CALIB]
    return [detector.preprocess(_image(raccoon, s))[0] for s in stems]


@pytest.fixture(scope="session")
def table(fp32_files, calib_tensors) -> Int8Table:
    return calibrate(*fp32_files, calib_tensors)  # the default method: max


@pytest.fixture(scope="session")
def int8_files(fp32_files, table, tmp_path_factory):
    """(param, bin, Int8Info) of the int8 model, requantize not fused (blobs stay fp32)."""
    out = tmp_path_factory.mktemp("int8_model")
    param, weights = out / "model.int8.ncnn.param", out / "model.int8.ncnn.bin"
    info = quantize(*fp32_files, table, param, weights, fuse_requantize=False)
    return param, weights, info


def _net(param: Path, weights: Path, int8: bool = True) -> ncnn.Net:
    net = ncnn.Net()
    configure_int8(net.opt, threads=1)
    net.opt.use_int8_inference = int8
    assert net.load_param(str(param)) == 0 and net.load_model(str(weights)) == 0
    return net


def _extract(net: ncnn.Net, tensor: np.ndarray, blobs: tuple[str, ...]) -> list[np.ndarray]:
    chw = np.ascontiguousarray(tensor[0])  # ncnn.Mat wraps it: keep it referenced
    ex = net.create_extractor()
    assert ex.input("in0", ncnn.Mat(chw)) == 0
    outs = []
    for blob in blobs:
        ret, mat = ex.extract(blob)
        assert ret == 0, blob
        outs.append(np.array(mat))
    return outs


# ------------------------------------------------------------------ the converted model


def test_quantize_writes_ncnn_int8(fp32_files, int8_files, table):
    param, weights, info = int8_files
    model = read_model(*fp32_files)
    convs = [x for x in model.layers if x.kind in ("Convolution", "ConvolutionDepthWise")]
    assert set(info.quantized) == {x.name for x in convs} == set(table.bottom_scales)
    assert info.float_layers == {}
    assert info.int8_bytes < info.fp32_bytes / 3  # int8 weights (biases and scales stay fp32)
    lines = {line.split()[1]: line for line in param.read_text().splitlines()[2:]}
    for layer in convs:
        term = "8=2" if layer.kind == "Convolution" else "8=1"  # ncnn2int8's int8_scale_term
        assert term in lines[layer.name].split(), lines[layer.name]
    with pytest.raises(Int8Error, match="already int8"):
        read_model(param, weights)  # never quantized twice
    _net(param, weights).clear()  # ncnn loads it with int8 inference on


def test_skipped_layers_stay_fp32(fp32_files, table, tmp_path):
    model = read_model(*fp32_files)
    first = model.layers[1].name  # the conv that sees the normalized image
    out = tmp_path / "m.param", tmp_path / "m.bin"
    info = quantize(*fp32_files, table, *out, skip=(first,))
    assert info.float_layers == {first: "skip"} and first not in info.quantized
    line = next(x for x in out[0].read_text().splitlines() if x.split()[1:2] == [first])
    assert not any(p.startswith("8=") for p in line.split())
    assert struct.unpack_from("<I", out[1].read_bytes(), 0)[0] == 0  # fp32 weight tag
    with pytest.raises(Int8Error, match="does not have"):
        quantize(*fp32_files, table, *out, skip=("no_such_layer",))


# ------------------------------------------------------------------ proof of int8 execution


def _pick_layers(model) -> list[Layer]:
    """A 3x3 stride-2 conv (the first), a 1x1 conv with activation, a 3x3 depthwise conv."""
    convs = [x for x in model.layers if x.kind == "Convolution"]
    first = convs[0]
    pointwise = next(x for x in convs if x.int_param(1) == 1 and x.int_param(9) == 2)
    depthwise = next(x for x in model.layers if x.kind == "ConvolutionDepthWise")
    return [first, pointwise, depthwise]


def _conv_reference(x, layer: Layer, weights, bias, int8: tuple[float, np.ndarray] | None):
    """Convolution of ``x`` (C, H, W) as ncnn computes it: fp32, or int8 when ``int8`` is
    (bottom scale, weight scales): round-half-away quantization, int32 accumulation,
    ``acc / (bottom * weight[p]) + bias``, then the fused activation."""
    p = layer.int_param
    out_c, k, stride, pad = p(0), p(1), p(3, 1), p(4)
    groups = p(7, 1) if layer.kind == "ConvolutionDepthWise" else 1
    w = weights.reshape(out_c, -1, k, k)
    if int8:
        x = round_to_int8(x * np.float32(int8[0])).astype(np.int64)
        w = round_to_int8(weights.reshape(out_c, -1) * int8[1][:, None]).reshape(w.shape)
        w = w.astype(np.int64)
    else:
        x, w = x.astype(np.float64), w.astype(np.float64)
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    ho, wo = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
    acc = np.zeros((out_c, ho, wo), dtype=w.dtype)
    cg, og = x.shape[0] // groups, out_c // groups
    for g in range(groups):
        wg, xg = w[g * og : (g + 1) * og], xp[g * cg : (g + 1) * cg]
        for i in range(k):
            for j in range(k):
                patch = xg[:, i : i + stride * ho : stride, j : j + stride * wo : stride]
                acc[g * og : (g + 1) * og] += np.einsum("oc,chw->ohw", wg[:, :, i, j], patch)
    if int8:
        rescale = np.float32(1) / (np.float32(int8[0]) * int8[1].astype(np.float32))
        out = acc.astype(np.float32) * rescale[:, None, None]
    else:
        out = acc
    out = out + bias[:, None, None]
    if p(9) == 1:  # ReLU
        out = np.maximum(out, 0)
    elif p(9) == 2:  # leaky ReLU, slope in -23310=1,slope
        slope = float(layer.params["-23310"].split(",")[1])
        out = np.where(out > 0, out, out * slope)
    else:
        assert p(9) == 0, f"activation {p(9)} not simulated"
    return out.astype(np.float32)


def test_quantized_convs_run_ncnn_int8_arithmetic(fp32_files, int8_files, table, held_out):
    param, weights, _ = int8_files
    model = read_model(*fp32_files)
    net = _net(param, weights)
    tensor = held_out[0][0]
    for layer in _pick_layers(model):
        segments = model.weights[layer.name]
        bias = segments[1].data if layer.int_param(5) else np.zeros(layer.int_param(0))
        x, y = _extract(net, tensor, (layer.bottoms[0], layer.tops[0]))
        scales = (table.bottom_scales[layer.name], table.weight_scales[layer.name])
        int8_sim = _conv_reference(x, layer, segments[0].data, bias, scales)
        fp32_sim = _conv_reference(x, layer, segments[0].data, bias, None)
        peak = float(np.abs(y).max())
        err_int8 = float(np.abs(y - int8_sim).max()) / peak
        err_fp32 = float(np.abs(y - fp32_sim).max()) / peak
        # Measured over all 73 square-kernel quantized layers of this model: int8 simulation
        # <= 1.8e-4 of the peak (median 8e-8: float rounding; the larger ones are depthwise
        # layers with a multiple of 8 channels, whose SIMD path dequantizes with a scale off by
        # ~1e-4), fp32 of the same input >= 9.5e-3 (median 0.055): >= 100x apart.
        assert err_int8 <= 1e-3, (layer.name, err_int8)
        assert err_fp32 >= 20 * err_int8 and err_fp32 >= 3e-3, (layer.name, err_fp32, err_int8)
    net.clear()


def test_fused_requantize_same_output_int8_blobs(fp32_files, int8_files, table, held_out, tmp_path):
    param, weights, _ = int8_files
    fused = tmp_path / "f.param", tmp_path / "f.bin"
    info = quantize(*fp32_files, table, *fused)
    assert info.requantized and set(info.requantized) <= set(info.quantized)
    producer = next(x for x in read_model(*fp32_files).layers if x.name == info.requantized[0])
    plain, fast = _net(param, weights), _net(*fused)
    for tensor, _ in held_out[:3]:
        a, b = _extract(plain, tensor, ("out0",))[0], _extract(fast, tensor, ("out0",))[0]
        np.testing.assert_allclose(b, a, atol=1e-5)  # requantize == the next layer's quantize
    (top,) = _extract(fast, held_out[0][0], (producer.tops[0],))
    assert np.array_equal(top, np.round(top)) and np.abs(top).max() <= 127  # int8 storage
    plain.clear()
    fast.clear()


def _tiny_model(path: Path) -> tuple[Path, Path]:
    """Input (3x12x12) -> 3x3 stride-1 conv + ReLU -> 3x3 stride-1 conv + ReLU -> InnerProduct:
    the layer kinds NanoDet lacks (6-bit winograd weights, InnerProduct), written with the
    module's own param/bin writers."""
    rng = np.random.default_rng(0)

    def conv(name: str, bottom: str, top: str, cin: int) -> Layer:
        params = {"0": "32", "1": "3", "4": "1", "5": "1", "6": str(cin * 32 * 9), "9": "1"}
        return Layer("Convolution", name, [bottom], [top], params)

    fc = {"0": "10", "1": "1", "2": str(10 * 32 * 12 * 12)}
    layers = [
        Layer("Input", "in0", [], ["in0"], {"0": "12", "1": "12", "2": "3"}),
        conv("c1", "in0", "b1", 3),
        conv("c2", "b1", "b2", 32),
        Layer("InnerProduct", "fc", ["b2"], ["out0"], fc),
    ]
    sizes = {"c1": (864, 32, 0.3), "c2": (9216, 32, 0.1), "fc": (46080, 10, 0.02)}
    weights: dict[str, list[Segment]] = {"in0": []}
    for name, (size, outputs, spread) in sizes.items():
        w = (rng.standard_normal(size) * spread).astype(np.float32)
        b = (rng.standard_normal(outputs) * 0.1).astype(np.float32)
        weights[name] = [Segment(w, tagged=True), Segment(b, tagged=False)]
    model = NcnnModel(layers, 4, weights)
    param, binary = path / "tiny.param", path / "tiny.bin"
    param.write_text(format_param(model.layers, model.blob_count))
    binary.write_bytes(encode_weights(model))
    return param, binary


def test_innerproduct_and_3x3_stride1_run_int8(tmp_path):
    files = _tiny_model(tmp_path)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((1, 3, 12, 12)).astype(np.float32) for _ in range(4)]
    table = calibrate(*files, inputs)
    assert table.weight_scales["c1"].shape == (32,) and table.weight_scales["fc"].shape == (10,)
    out = tmp_path / "q.param", tmp_path / "q.bin"
    info = quantize(*files, table, *out, fuse_requantize=False)
    assert info.quantized == ("c1", "c2", "fc")
    assert "8=2" in out[0].read_text().splitlines()[-1].split()  # InnerProduct: term 2
    model, net = read_model(*files), _net(*out)
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    for layer in model.layers[1:3]:  # 3x3 stride 1: 31 / max|w| weights (ncnn2table)
        levels = np.abs(
            round_to_int8(
                model.weights[layer.name][0].data.reshape(32, -1)
                * table.weight_scales[layer.name][:, None]
            )
        ).max()
        assert levels == 31
        bottom, top = _extract(net, x, (layer.bottoms[0], layer.tops[0]))
        seg = model.weights[layer.name]
        scales = (table.bottom_scales[layer.name], table.weight_scales[layer.name])
        sim = _conv_reference(bottom, layer, seg[0].data, seg[1].data, scales)
        assert np.abs(top - sim).max() <= 1e-5 * np.abs(top).max(), layer.name
    bottom, top = _extract(net, x, ("b2", "out0"))
    w, b = model.weights["fc"][0].data.reshape(10, -1), model.weights["fc"][1].data
    bs, ws = np.float32(table.bottom_scales["fc"]), table.weight_scales["fc"]
    acc = round_to_int8(w * ws[:, None]).astype(np.int64) @ round_to_int8(
        bottom.reshape(-1) * bs
    ).astype(np.int64)
    int8_sim = acc.astype(np.float32) / (bs * ws) + b
    fp32_sim = w.astype(np.float64) @ bottom.reshape(-1).astype(np.float64) + b
    peak = np.abs(top).max()
    assert np.abs(top.ravel() - int8_sim).max() <= 1e-5 * peak  # measured 3e-8
    assert np.abs(top.ravel() - fp32_sim).max() >= 1e-3 * peak  # measured 1.4e-2
    net.clear()


# ------------------------------------------------------------------ accuracy


def _detections(detector, net, tensor, info):
    (out,) = _extract(net, tensor, ("out0",))
    return detector.postprocess(out, info)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda r: np.prod(r[:, 2:] - r[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _agreement(detector, ref_net, test_net, held_out, min_score=0.5) -> dict[str, float]:
    """How well ``test_net``'s detections reproduce the fp32 ones scoring >= ``min_score``:
    count, unmatched (no box at IoU >= 0.5), and IoU / |Δscore| of the best-IoU matches."""
    ious, deltas, count, unmatched = [], [], 0, 0
    for tensor, info in held_out:
        ref = _detections(detector, ref_net, tensor, info)
        got = _detections(detector, test_net, tensor, info)
        keep = ref.scores >= min_score
        count += int(keep.sum())
        if not keep.any() or not len(got.scores):
            unmatched += int(keep.sum())
            continue
        iou = _iou(ref.boxes_xyxy[keep], got.boxes_xyxy)
        best, matched = iou.argmax(axis=1), iou.max(axis=1) >= 0.5
        unmatched += int((~matched).sum())
        ious += iou.max(axis=1)[matched].tolist()
        deltas += np.abs(ref.scores[keep] - got.scores[best])[matched].tolist()
    stats = {"count": count, "unmatched": unmatched}
    if ious:
        stats.update(iou_min=min(ious), iou_median=float(np.median(ious)))
        stats.update(score_median=float(np.median(deltas)), score_max=max(deltas))
    return stats


def test_int8_detections_agree_with_fp32(detector, fp32_files, int8_files, held_out):
    fp32_net = _net(*fp32_files, int8=False)
    int8_net = _net(*int8_files[:2])
    stats = _agreement(detector, fp32_net, int8_net, held_out)
    # Measured with this recipe (max calibration on 6 train images) on all 40 val images: every
    # fp32 detection >= 0.5 found again, IoU min 0.82 / median 0.96, |Δscore| median 0.02 /
    # max 0.14 (int8 moves box edges by a few pixels and scores by a few hundredths).
    assert stats["count"] >= 5 and stats["unmatched"] == 0, stats
    assert stats["iou_min"] >= 0.8 and stats["iou_median"] >= 0.9, stats
    assert stats["score_max"] <= 0.15 and stats["score_median"] <= 0.05, stats
    fp32_net.clear()
    int8_net.clear()


def test_wrong_bottom_scale_breaks_agreement(detector, fp32_files, table, held_out, tmp_path):
    """Negative control: the same conversion with every bottom scale x4 (inputs clipped at a
    quarter of their calibrated range) must visibly fail the checks the good model passes
    (measured: not one fp32 detection is found again)."""
    bad = Int8Table(table.weight_scales, {k: 4 * v for k, v in table.bottom_scales.items()})
    out = tmp_path / "bad.param", tmp_path / "bad.bin"
    quantize(*fp32_files, bad, *out)
    fp32_net, bad_net = _net(*fp32_files, int8=False), _net(*out)
    stats = _agreement(detector, fp32_net, bad_net, held_out)
    assert stats["unmatched"] >= stats["count"] / 2, stats
    fp32_net.clear()
    bad_net.clear()


def test_calibration_methods(fp32_files, calib_tensors, table):
    first = read_model(*fp32_files).layers[1].name  # the conv that sees the network input
    absmax = max(float(np.abs(t).max()) for t in calib_tensors)
    assert table.method == "max" and table.num_inputs == NUM_CALIB
    assert table.bottom_scales[first] == pytest.approx(127 / absmax, rel=1e-6)
    two = calib_tensors[:2]
    kl, plain = calibrate(*fp32_files, two, method="kl"), calibrate(*fp32_files, two)
    assert kl.bottom_scales.keys() == plain.bottom_scales.keys()
    for name, scale in kl.bottom_scales.items():  # KL clips: threshold <= 2047.5/2048 absmax
        assert scale > plain.bottom_scales[name], name
        np.testing.assert_array_equal(kl.weight_scales[name], plain.weight_scales[name])
    one = calib_tensors[0]
    aciq = calibrate(*fp32_files, [one], method="aciq")
    expected = 127 / aciq_clip(float(np.abs(one).max()), one.size, 8)  # ncnn2table's formula
    assert aciq.bottom_scales[first] == pytest.approx(expected, rel=1e-6)
    skipped = calibrate(*fp32_files, [one], skip=(first,))
    assert first not in skipped.bottom_scales and first not in skipped.weight_scales


# ------------------------------------------------------------------ table, errors, numerics


def test_table_round_trip_and_ncnn2table_text(table, tmp_path):
    path = tmp_path / "model.table"
    write_table(table, path)
    lines = path.read_text().splitlines()
    name = next(iter(table.weight_scales))
    assert lines[0].startswith(f"{name}_param_0 ")
    assert len(lines) == len(table.weight_scales) + len(table.bottom_scales)
    back = read_table(path)
    assert back.bottom_scales == table.bottom_scales
    for key, scales in table.weight_scales.items():
        np.testing.assert_array_equal(back.weight_scales[key], scales)
    # ncnn2table writes "%f " with a trailing space
    (tmp_path / "tool.table").write_text("conv_param_0 12.500000 3.250000 \nconv 0.750000 \n")
    tool = read_table(tmp_path / "tool.table")
    assert tool.bottom_scales == {"conv": 0.75}
    np.testing.assert_array_equal(tool.weight_scales["conv"], [12.5, 3.25])


def _fp16_copy(fp32_files, tmp_path) -> tuple[Path, Path]:
    """The fp32 model with its weights stored as pnnx fp16=1 stores them (tag + fp16, pad 4)."""
    model = read_model(*fp32_files)
    chunks = []
    for layer in model.layers:
        for seg in model.weights[layer.name]:
            if seg.tagged:
                body = seg.data.astype("<f2").tobytes()
                chunks += [struct.pack("<I", TAG_FP16), body + b"\0" * (-len(body) % 4)]
            else:
                chunks.append(seg.data.astype("<f4").tobytes())
    param, weights = tmp_path / "fp16.param", tmp_path / "fp16.bin"
    param.write_bytes(fp32_files[0].read_bytes())
    weights.write_bytes(b"".join(chunks))
    return param, weights


def test_errors(fp32_files, table, held_out, tmp_path):
    fp16 = _fp16_copy(fp32_files, tmp_path)
    net = ncnn.Net()
    assert net.load_param(str(fp16[0])) == 0 and net.load_model(str(fp16[1])) == 0  # valid ncnn
    net.clear()
    with pytest.raises(Int8Error, match=r"fp16 weights.*fp32 ncnn export"):
        quantize(*fp16, table, tmp_path / "x.param", tmp_path / "x.bin")
    tensor = held_out[0][0]
    with pytest.raises(Int8Error, match="fp32 ncnn export"):
        calibrate(*fp16, [tensor])
    with pytest.raises(ValueError, match="at least one input"):
        calibrate(*fp32_files, [])
    for bad in (tensor[0], tensor.astype(np.float64), tensor[:, :1], [[1.0]]):
        with pytest.raises(ValueError, match=r"float32 \(1, 3, H, W\)"):
            check_inputs([bad])
    with pytest.raises(ValueError, match="method"):
        calibrate(*fp32_files, [tensor], method="eq")
    name = next(iter(table.weight_scales))
    short = Int8Table({name: table.weight_scales[name][:2]}, {name: table.bottom_scales[name]})
    with pytest.raises(Int8Error, match="weight scales"):
        quantize(*fp32_files, short, tmp_path / "x.param", tmp_path / "x.bin")
    with pytest.raises(Int8Error, match="bad bottom scale"):
        Int8Table({}, {name: math.inf})
    assert not (tmp_path / "x.param").exists() and not (tmp_path / "x.bin").exists()


def _kl_reference(hist: np.ndarray, target: int) -> int:
    """ncnn2table's threshold loop, line by line (float32), for a small histogram."""
    f32, eps = np.float32, np.float32(1e-4)
    h = (hist / hist.sum()).astype(np.float32)
    best, best_kl = target, np.inf
    for t in range(target, len(h)):
        clip = np.full(t, eps, np.float32) + h[:t]
        clip[t - 1] += h[t:].sum(dtype=np.float32)
        width = f32(t) / f32(target)
        spans = [(f32(j * width), f32((j + 1) * width)) for j in range(target)]
        spans[-1] = (f32(t - width), f32(t))
        q = np.zeros(target, np.float32)
        expand = np.full(t, eps, np.float32)
        for j, (a, b) in enumerate(spans):
            lo, hi = math.ceil(a), math.floor(b)
            left, right = f32(lo - a), f32(b - hi)
            mass = h[lo:hi].sum(dtype=np.float32)
            mass += left * h[lo - 1] if left > 0 else 0
            mass += right * h[hi] if right > 0 and hi < t else 0
            q[j] = mass / (f32(hi - lo) + left + right)
            if left > 0:
                expand[lo - 1] += left * q[j]
            if right > 0 and hi < t:
                expand[hi] += right * q[j]
            expand[lo:hi] += q[j]
        kl = f32((clip * np.log(clip / expand)).sum(dtype=np.float32))
        if kl < best_kl:
            best, best_kl = t, kl
    return best


def test_kl_threshold_matches_ncnn2table_loop():
    rng = np.random.default_rng(0)
    for values in (rng.standard_normal(20000), rng.laplace(size=20000) ** 3, rng.random(5000)):
        hist = np.bincount(
            np.minimum((np.abs(values) / np.abs(values).max() * 256).astype(int), 255),
            minlength=256,
        )
        assert kl_threshold_bin(hist, target_bins=32) == _kl_reference(hist, 32)


def test_histogram_and_weight_scale_rules():
    values = np.array([0.0, 0.0, 1.0, -1.0, 0.5, 2.0], dtype=np.float32)
    hist = abs_histogram(values, absmax=2.0)
    assert hist.sum() == 4 and hist[-1] == 1 and hist[1024] == 2  # zeros skipped, max clamped
    conv = Layer("Convolution", "c", ["a"], ["b"], {"0": "2", "1": "3", "6": "36"})
    weights = np.concatenate([np.full(18, 0.5), np.zeros(18)]).astype(np.float32)
    assert weight_levels(conv) == 31  # 3x3 stride 1: ncnn2table's 6-bit winograd weights
    np.testing.assert_allclose(weight_scales(conv, weights), [62.0, 1.0])  # all-zero row: 1
    strided = Layer("Convolution", "s", ["a"], ["b"], {"0": "2", "1": "3", "3": "2", "6": "36"})
    assert weight_levels(strided) == 127
    np.testing.assert_array_equal(
        round_to_int8(np.array([0.5, -0.5, 1.49, 200, -200, -1.5])), [1, -1, 1, 127, -127, -2]
    )


def test_modules_import_without_torch():
    code = TORCH_BLOCKER + (
        "import nanodet_deploy.exporters.ncnn_int8, nanodet_deploy.exporters.ncnn_calib\n"
        "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

"""Exported models against the torch export wrapper, for 4 zoo models at 320 and 416.

Weights:
- nanodet-m: the official COCO weights (reference/nanodet-m_coco.pth): real detections.
- nanodet-plus-m: the official parity weights (reference/nanodet-plus-m_320_parity.pth). They
  are perturbed random weights whose class scores hardly vary (every point scores ~0.81 for
  its best class on the real images), so its detections are degenerate: 100 near-equal boxes
  cut by max_det. For it the fp16 check compares scores and distances only (and shows the
  detection comparison is vacuous rather than pretending it is meaningful).
- nanodet-m-0.5x, nanodet-plus-m-1.5x: there are no trained weights, so they get seeded random
  weights made to detect something (``calibrated_random_model``): every BatchNorm is
  recalibrated on the five reference images (running stats = their batch statistics at the
  export size, so features have unit scale and follow the image content), and the prediction
  convs get N(0, 1/fan_in) weights and one class bias, chosen so that ~20 (point, class) pairs
  per image pass 0.3. Scores then vary with the image: about twenty image-dependent detections
  per image, compared like the real ones. Two guards keep the random net as well-conditioned
  as a trained one: the head's convs get He init instead of the official std 0.01, and the
  recalibrated variances are clamped to >= 0.01 (a BN dividing by std 0.001 amplifies float
  rounding 1000x: ONNX vs torch went from 4e-6 to 2e-4). Random weights also fire on the flat
  padding of ``pad`` mode, where boxes get clipped to slivers a few pixels thin whose IoU is
  ill-conditioned (0.3 px of fp16 error on a 3 px box is IoU 0.9); so these two are checked on
  ``plain``-resized images, which have no padding.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from detect_helpers import preprocess_as
from torch import nn

from nanodet_deploy.artifacts import read_meta, write_meta
from nanodet_deploy.checkpoint import load_model
from nanodet_deploy.config import zoo_config
from nanodet_deploy.exporters.matching import Candidates, match_detections
from nanodet_deploy.exporters.ncnn import convert_onnx_to_ncnn
from nanodet_deploy.exporters.pipeline import ExportOptions, export_model
from nanodet_deploy.exporters.verify import PostprocessSettings, VerifyInput, verification_inputs
from nanodet_deploy.models import build_model
from nanodet_deploy.postprocess import center_points, postprocess
from nanodet_deploy.preprocess import load_image
from nanodet_deploy.runtimes.ncnn import NcnnBackend
from nanodet_deploy.runtimes.ort import OrtBackend
from nanodet_deploy.runtimes.torch_backend import TorchBackend

pytestmark = pytest.mark.slow

WEIGHTS = {
    "nanodet-m": "nanodet-m_coco.pth",
    "nanodet-m-0.5x": None,
    "nanodet-plus-m": "nanodet-plus-m_320_parity.pth",
    "nanodet-plus-m-1.5x": None,
}
SIZES = (320, 416)
CASES = [(name, size) for name in WEIGHTS for size in SIZES]
DEGENERATE = {"nanodet-plus-m"}  # see module doc


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny forwards: one thread is fastest, and immune to a busy machine's oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclasses.dataclass
class Exported:
    name: str
    model: nn.Module
    fp16_dir: Path
    fp32_dir: Path
    torch: TorchBackend


def calibrated_random_model(name: str, input_hw: tuple[int, int], image_paths: list[Path]):
    """Seeded random weights that detect something (module doc)."""
    torch.manual_seed(0)
    model = build_model(zoo_config(name))
    for m in model.head.cls_convs.modules():  # official init (std 0.01) would make BN amplify
        if isinstance(m, nn.Conv2d):  # rounding noise 100x after recalibration
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="leaky_relu")
    batch = torch.from_numpy(
        np.concatenate(
            [preprocess_as(load_image(p), input_hw, mode="plain")[0] for p in image_paths]
        )
    )
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative: running stats = this batch's statistics
    with torch.no_grad():
        model.train()(batch)
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.clamp_(min=0.01)  # module doc
        _randomize_predictions(model, batch)
    return model


def _randomize_predictions(model: nn.Module, batch: torch.Tensor) -> None:
    """N(0, 1/fan_in) prediction convs; one class bias so ~20 (point, class) pairs per image
    score above 0.3 on the calibration images."""
    generator = torch.Generator().manual_seed(1)
    c = model.cfg.num_classes
    for conv in model.head.gfl_cls:
        fan_in = conv.weight.shape[1]
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / fan_in**0.5)
        conv.bias.zero_()
    maps = model.head.forward_levels(model.fpn(model.backbone(batch)))
    logits = torch.cat([m[:, :c].flatten() for m in maps])
    target = 20 * len(batch) / logits.numel()
    threshold = torch.quantile(logits.double(), 1.0 - target).item()
    for conv in model.head.gfl_cls:
        conv.bias[:c] = np.log(0.3 / 0.7) - threshold


@pytest.fixture(scope="module")
def images(reference_dir) -> list[Path]:
    return sorted((reference_dir / "images").glob("*.jpg"))


@pytest.fixture(scope="module")
def exports(tmp_path_factory, reference_dir, images):
    """Lazily built, shared exports: (name, size) -> Exported (fp16 and fp32 NCNN folders)."""
    cache: dict[tuple[str, int], Exported] = {}

    def get(name: str, size: int) -> Exported:
        if (name, size) not in cache:
            cache[name, size] = _build(name, size, tmp_path_factory, reference_dir, images)
        return cache[name, size]

    return get


def _build(name, size, tmp_path_factory, reference_dir, images) -> Exported:
    weights = WEIGHTS[name]
    if weights:
        model, _ = load_model(reference_dir / weights, config=zoo_config(name))
    else:
        model = calibrated_random_model(name, (size, size), images)
    root = tmp_path_factory.mktemp(f"{name}-{size}")
    fp16_dir = root / "fp16"
    options = ExportOptions(input_hw=(size, size), verify=False)
    result = export_model(model, fp16_dir, options, random_weights=weights is None)
    fp32_dir = root / "fp32"  # the same ONNX converted again with fp32 weights
    fp32_dir.mkdir()
    (fp32_dir / "model.onnx").write_bytes((fp16_dir / "model.onnx").read_bytes())
    level_hw = [(-(-size // s), -(-size // s)) for s in result.meta.strides]
    convert_onnx_to_ncnn(fp32_dir / "model.onnx", fp32_dir, level_hw, fp16=False)
    write_meta(
        fp32_dir, dataclasses.replace(result.meta, precision={"onnx": "fp32", "ncnn": "fp32"})
    )
    return Exported(name, model, fp16_dir, fp32_dir, TorchBackend(model, (size, size)))


def _inputs(exp: Exported, images: list[Path], pad_to_export_size: bool):
    """Real images in ``pad`` mode (``plain`` for the random-weight models, module doc)."""
    meta = read_meta(exp.fp16_dir)
    if WEIGHTS[exp.name] is None:
        return meta, [_plain(meta, p) for p in images]
    hw = meta.input_hw if pad_to_export_size else None
    return meta, verification_inputs(meta, images[0].parent, hw)


def _plain(meta, path: Path) -> VerifyInput:
    tensor, info = preprocess_as(load_image(path), meta.input_hw, mode="plain")
    return VerifyInput(path.name, tensor, info)


def _max_diffs(meta, ref: np.ndarray, out: np.ndarray, input_hw) -> tuple[float, float]:
    _, point_strides = center_points(input_hw, meta.strides, meta.center_offset)
    c = meta.num_classes
    diff = np.abs(out - ref)
    return float(diff[:, :c].max()), float((diff[:, c:] * point_strides[:, None]).max())


@pytest.mark.parametrize(("name", "size"), CASES)
def test_onnx_equals_torch(exports, images, name, size):
    exp = exports(name, size)
    meta, inputs = _inputs(exp, images, pad_to_export_size=True)
    ort = OrtBackend(exp.fp16_dir)
    random_input = np.random.default_rng(7).standard_normal((1, 3, size, size)).astype(np.float32)
    for x in [random_input, *(i.tensor for i in inputs)]:
        ref, out = exp.torch.run(x), ort.run(x)
        assert out.shape == (meta.num_points((size, size)), meta.num_classes + 4)
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("name", "size"), CASES)
def test_ncnn_fp32_equals_torch(exports, images, name, size):
    exp = exports(name, size)
    meta, inputs = _inputs(exp, images, pad_to_export_size=False)  # ncnn: natural pad sizes
    ncnn = NcnnBackend(exp.fp32_dir)
    assert ncnn.settings["use_fp16_storage"] is False
    for item in inputs:
        hw = item.resize_info.input_hw
        score, dist_px = _max_diffs(meta, exp.torch.run(item.tensor), ncnn.run(item.tensor), hw)
        assert score <= 1e-3, (item.name, score)
        assert dist_px <= 0.05, (item.name, dist_px)


@pytest.mark.parametrize(("name", "size"), CASES)
def test_ncnn_fp16_same_detections(exports, images, name, size):
    exp = exports(name, size)
    meta, inputs = _inputs(exp, images, pad_to_export_size=False)
    ncnn = NcnnBackend(exp.fp16_dir)
    settings = PostprocessSettings()
    compared = 0
    for item in inputs:
        ref, out = exp.torch.run(item.tensor), ncnn.run(item.tensor)
        score, dist_px = _max_diffs(meta, ref, out, item.resize_info.input_hw)
        assert score <= 0.01 and dist_px <= 2.0, (item.name, score, dist_px)
        agreement = _agreement(meta, item.resize_info, ref, out, settings)
        assert agreement.labels_equal, (item.name, agreement)
        if agreement.min_iou is not None:
            assert agreement.min_iou >= 0.98, (item.name, agreement)
            assert agreement.max_score_diff <= 0.01, (item.name, agreement)
        compared += agreement.num_ref
    if name in DEGENERATE:
        assert compared == 0  # 100 near-equal scores: nothing above the max_det cut (doc)
    else:
        assert compared >= 3, f"only {compared} detections compared: the check is too weak"


def _agreement(meta, info, ref, out, settings):
    def detect(output):
        return postprocess(
            output, input_hw=info.input_hw, strides=meta.strides,
            center_offset=meta.center_offset, resize_info=info, class_names=meta.class_names,
        )  # fmt: skip

    return match_detections(
        detect(ref),
        detect(out),
        Candidates.from_output(ref, meta.strides, meta.center_offset, info),
        Candidates.from_output(out, meta.strides, meta.center_offset, info),
        compare_score=settings.compare_score,
        max_det=settings.max_det,
    )


def test_plus_m_ncnn_runs_at_other_sizes(exports):
    """One NCNN model (exported at 320x320) serves every multiple of 32, H and W independent."""
    exp = exports("nanodet-plus-m", 320)
    ncnn = NcnnBackend(exp.fp32_dir)
    rng = np.random.default_rng(3)
    for hw in [(320, 416), (416, 256), (256, 320)]:
        x = rng.standard_normal((1, 3, *hw)).astype(np.float32)
        ref, out = exp.torch.run(x), ncnn.run(x)
        assert out.shape == ref.shape == (read_meta(exp.fp32_dir).num_points(hw), 84)
        score, dist_px = _max_diffs(exp.torch.meta, ref, out, hw)
        assert score <= 1e-3 and dist_px <= 0.05, (hw, score, dist_px)


def test_official_decode_at_416(exports, reference_dir):
    """The exported nanodet-m (COCO) equals the decode of official NanoDet's raw forward."""
    exp = exports("nanodet-m", 416)
    npz = np.load(reference_dir / "nanodet-m_coco_raw.npz")
    out = OrtBackend(exp.fp16_dir).run(npz["input"])
    raw = npz["official_forward"][0]
    scores = 1.0 / (1.0 + np.exp(-raw[:, :80].astype(np.float64)))
    bins = raw[:, 80:].reshape(-1, 4, 8).astype(np.float64)
    probs = np.exp(bins - bins.max(axis=2, keepdims=True))
    probs /= probs.sum(axis=2, keepdims=True)
    np.testing.assert_allclose(out[:, :80], scores, rtol=0, atol=1e-4)
    np.testing.assert_allclose(out[:, 80:], probs @ np.arange(8), rtol=0, atol=1e-4)


def test_raw_output_equals_official_layout(tmp_path, reference_dir):
    """``--output raw``: official layout (sigmoid scores, raw bins) of the official forward."""
    model, _ = load_model(reference_dir / "nanodet-m_coco.pth", config=zoo_config("nanodet-m"))
    options = ExportOptions(input_hw=(416, 416), output_layout="raw", formats=("onnx",))
    export_model(model, tmp_path / "raw", dataclasses.replace(options, verify=False))
    npz = np.load(reference_dir / "nanodet-m_coco_raw.npz")
    out = OrtBackend(tmp_path / "raw").run(npz["input"])
    raw = npz["official_forward"][0].astype(np.float64)
    assert out.shape == raw.shape == (3549, 80 + 32)
    np.testing.assert_allclose(out[:, :80], 1.0 / (1.0 + np.exp(-raw[:, :80])), rtol=0, atol=1e-4)
    np.testing.assert_allclose(out[:, 80:], raw[:, 80:], rtol=0, atol=1e-4)

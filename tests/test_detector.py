"""Detector: settings, meta.json handling (layout, folded normalization, colour order, static
ONNX), timing and lifetime. Real exports for the backends, small fakes for meta.json variants."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from detect_helpers import coco_export, preprocess_as

from nanodet_deploy.artifacts import ExportMeta, MetaError, read_meta
from nanodet_deploy.detector import Detector, default_threads
from nanodet_deploy.postprocess import sigmoid
from nanodet_deploy.preprocess import load_image
from nanodet_deploy.runtimes.base import Backend
from nanodet_deploy.structures import PreprocessSpec, ResizeInfo, Timing


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory, reference_dir) -> Path:
    return coco_export(tmp_path_factory.getbasetemp(), reference_dir)


@pytest.fixture(scope="module")
def raccoon(reference_dir) -> np.ndarray:
    return load_image(reference_dir / "images" / "raccoon-1.jpg")  # 417x650


class FakeBackend:
    """Records its input and returns a fixed output: for meta.json variants without exports."""

    def __init__(
        self, meta: ExportMeta, output: np.ndarray | None = None, static: bool = False
    ) -> None:
        self.name, self.meta, self.output = "fake", meta, output
        self.static_hw = meta.input_hw if static else None
        self.settings: dict = {}
        self.inputs: list[np.ndarray] = []
        self.closed = False

    def run(self, input_nchw: np.ndarray) -> np.ndarray:
        self.inputs.append(input_nchw.copy())
        if self.output is not None:
            return self.output
        h, w = input_nchw.shape[2:]
        return np.zeros((self.meta.num_points((h, w)), self.meta.output_channels), np.float32)

    def close(self) -> None:
        self.closed = True


PREPROCESS_FIELDS = ("input_hw", "normalize_folded", "color_order", "sampler", "geometry")


def fake_meta(**changes) -> ExportMeta:
    """A meta.json for fakes; preprocess fields (PREPROCESS_FIELDS) go into its block."""
    spec_changes = {k: changes.pop(k) for k in PREPROCESS_FIELDS if k in changes}
    spec = dataclasses.replace(PreprocessSpec((320, 320), sampler="warp"), **spec_changes)
    meta = ExportMeta(
        model_name="fake", class_names=("a", "b"), strides=(8, 16, 32), center_offset=0.5,
        reg_max=7, preprocess=spec,
    )  # fmt: skip
    return dataclasses.replace(meta, **changes)


def test_export_folder_defaults(export_dir, raccoon):
    from nanodet_deploy import Detector as exported

    assert exported is Detector
    with Detector(export_dir, threads=1, score_thresh=0.05) as det:
        assert det.backend_name == "ncnn"  # auto: ncnn when its files exist
        assert isinstance(det.backend, Backend)
        assert det.input_hw == (320, 320)
        assert (det.spec.geometry, det.spec.sampler) == ("pad", "resize")  # meta.json's block
        assert det.class_names[15] == "cat" and len(det.class_names) == 80
        assert det.last_timing is None
        dets = det.detect(raccoon)
        assert isinstance(det.last_timing, Timing)
        assert det.last_timing.inference_ms > 0 and det.last_timing.total_ms > 0
        assert det.describe()["backend_settings"]["num_threads"] == 1
        assert "ncnn" in repr(det)
    top = int(np.argmax(dets.scores))
    assert dets.names[top] == "cat" and dets.scores[top] > 0.5
    assert len(dets) <= 100 and dets.scores.min() > 0.05
    x1, y1, x2, y2 = dets.boxes_xyxy[top]
    assert 0 <= x1 < x2 <= 650 and 0 <= y1 < y2 <= 417  # original pixels
    assert repr(det) == "Detector(closed)"
    with pytest.raises(RuntimeError, match="closed"):
        det.detect(raccoon)


def test_backends_agree_and_settings_apply(export_dir, raccoon):
    with Detector(export_dir, "onnxruntime", threads=1, input_hw=(416, 416)) as ort_det:
        assert ort_det.backend_name == "onnxruntime" and ort_det.input_hw == (416, 416)
        a = ort_det.detect(raccoon)
    with Detector(
        export_dir, "ncnn", threads=1, input_hw=(416, 416), ncnn_light_mode=False,
        ncnn_fp16_arithmetic=False,
    ) as ncnn_det:  # fmt: skip
        b = ncnn_det.detect(raccoon)
        assert ncnn_det.describe()["backend_settings"]["lightmode"] is False
    assert len(a) == len(b) and np.array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.boxes_xyxy, b.boxes_xyxy, atol=1e-2)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    with Detector(export_dir, "onnxruntime", threads=1, score_thresh=0.35, max_det=2) as det:
        few = det.detect(raccoon)
    assert 1 <= len(few) <= 2 and few.scores.min() > 0.35


def test_input_hw_must_be_a_multiple_of_the_stride(export_dir):
    with pytest.raises(ValueError, match="multiple of 32"):
        Detector(export_dir, threads=1, input_hw=(300, 320))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"geometry": "stretch"}, "geometry must be one of"),
        ({"sampler": "nearest"}, "sampler must be one of"),
        ({"score_thresh": 1.5}, "score threshold"),
        ({"iou_thresh": 0.0}, "IoU threshold"),
        ({"threads": 0}, "threads"),
        ({"input_hw": (0, 320)}, "input_hw"),
    ],
)
def test_bad_settings_fail_before_opening(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Detector(tmp_path / "does-not-exist", **kwargs)


def test_missing_model_and_inconsistent_meta(export_dir, tmp_path, raccoon):
    with pytest.raises(FileNotFoundError, match="no such export folder"):
        Detector(tmp_path / "nothing-here")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.onnx", "model.ncnn.param", "model.ncnn.bin"):
        os.symlink(export_dir / name, broken / name)
    meta = read_meta(export_dir).to_dict()
    meta["class_names"] = meta["class_names"][:79]
    (broken / "meta.json").write_text(json.dumps(meta))
    for backend in ("ncnn", "onnxruntime"):
        # ncnn notices when the model is opened (dry run), onnxruntime with a dynamic ONNX
        # (no fixed channel count in the graph) at the first detection
        with pytest.raises(MetaError, match="79 classes"), Detector(broken, backend) as det:
            det.detect(raccoon)
    (broken / "model.onnx").unlink()
    with pytest.raises(MetaError, match=r"model\.onnx: listed in meta\.json"):
        Detector(broken, "onnxruntime")


def test_raw_layout_goes_through_decode_raw(reference_dir):
    """Official raw head output (logits; sigmoid applied here, as a raw export does) through
    the raw branch reproduces the official detections at the fixture tolerances."""
    io = np.load(reference_dir / "nanodet-m_coco_detections_io.npz")
    official = json.loads((reference_dir / "nanodet-m_coco_detections.json").read_text())
    run = next(r for r in official["runs"] if r["input_size_cfg_wh"] == [416, 416])
    raw = io["raccoon-1_416_raw_output"][0].copy()
    raw[:, :80] = sigmoid(raw[:, :80])
    meta = fake_meta(class_names=tuple(official["class_names"]), output_layout="raw")
    tensor = io["raccoon-1_416_input"]
    info = ResizeInfo.from_matrix(io["raccoon-1_416_warp_matrix"], run["original_hw"], (288, 416))
    with Detector(FakeBackend(meta, raw), score_thresh=0.05) as det:
        dets = det.postprocess(det.backend.run(tensor), info)
    expected = run["all_post_process_detections"]
    assert len(dets) == len(expected)
    np.testing.assert_allclose(dets.scores, [d["score"] for d in expected], atol=1e-4)
    np.testing.assert_allclose(dets.boxes_xyxy, [d["bbox_xyxy"] for d in expected], atol=1e-2)
    assert dets.names[0] == "cat"


def test_folded_normalization_and_rgb_inputs(raccoon):
    plain = FakeBackend(fake_meta())
    folded = FakeBackend(fake_meta(normalize_folded=True))
    rgb = FakeBackend(fake_meta(color_order="RGB"))
    for backend in (plain, folded, rgb):
        with Detector(backend) as det:
            det.detect(raccoon)
        assert backend.closed  # the Detector owns the backend it was given
    expected, _ = preprocess_as(raccoon, (320, 320), normalize=False, sampler="warp")
    np.testing.assert_array_equal(folded.inputs[0], expected)
    assert folded.inputs[0].max() > 200  # raw 0..255 BGR
    np.testing.assert_array_equal(rgb.inputs[0][:, ::-1], plain.inputs[0])


def test_static_onnx_input_is_padded_to_its_size(raccoon):
    meta = fake_meta(input_hw=(320, 320), dynamic_axes=())
    backend = FakeBackend(meta, static=True)
    with Detector(backend) as det:
        det.detect(raccoon)
        _, info = det.preprocess(raccoon)
    assert backend.inputs[0].shape == (1, 3, 320, 320) and info.input_hw == (320, 320)
    assert np.all(backend.inputs[0][:, :, 224:] == 0.0)  # mean colour, normalized
    with pytest.raises(ValueError, match="static 320x320"):
        Detector(FakeBackend(meta, static=True), input_hw=(416, 416))
    folded = FakeBackend(fake_meta(normalize_folded=True), static=True)
    with Detector(folded) as det:
        det.detect(raccoon)
    np.testing.assert_allclose(folded.inputs[0][0, :, -1, -1], meta.mean_bgr, rtol=1e-6)


def test_default_threads_and_options_for_an_opened_backend():
    assert 1 <= default_threads() <= 4
    with pytest.raises(ValueError, match="apply to a path"):
        Detector(FakeBackend(fake_meta()), threads=2)


def test_checkpoint_opens_with_torch(reference_dir, raccoon, tmp_path):
    pytest.importorskip("torch")
    with Detector(reference_dir / "nanodet-m_coco.pth", threads=1) as det:
        assert det.backend_name == "torch" and det.input_hw == (320, 320)
        dets = det.detect(raccoon)
    assert dets.names[int(np.argmax(dets.scores))] == "cat"
    copy = tmp_path / "weights.bin"
    shutil.copy(reference_dir / "nanodet-m_coco.pth", copy)
    with pytest.raises(ValueError, match="opens only as a checkpoint"):
        Detector(copy)

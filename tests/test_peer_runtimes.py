"""MNN and OpenVINO backends (runtimes/mnn.py, openvino.py) and their converters (exporters/).

One static and one dynamic-height/width export of the bundled raccoon checkpoint per session,
each converted to MNN and OpenVINO IR in its folder (meta.json lists the files); the static one
also gets an MNN int8 model calibrated on a few train images. Checked on val images: parity with
torch within the exporter's fp32 tolerances, detections equal to onnxruntime's, low precision
within looser bounds, the threads setting, and the message when the package is missing.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import require_shared

from nanodet_deploy.artifacts import read_meta, write_meta
from nanodet_deploy.exporters.verify import TOLERANCES, Tolerance, verification_inputs
from nanodet_deploy.runtimes import mnn as mnn_module
from nanodet_deploy.runtimes import openvino as openvino_module
from nanodet_deploy.structures import Detections

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "assets" / "nanodet-m-raccoon-320.pth"
EXPORT_HW = (320, 320)
NUM_IMAGES = 6  # val images for parity and detections
NUM_CALIB = 8  # train images for the MNN int8 calibration
# bf16 keeps 8 significant bits (rounding step 2^-8 relative) against fp16's 11 (2^-11): 8x the
# error of fp16 per rounding, partly averaged out over a layer's sums. Measured here on 16 val
# images: scores within 0.016, distances within 5.7 px, matched detections IoU >= 0.96 and
# scores within 0.01. The bounds leave ~2x headroom for other CPUs (AMX, other kernels).
BF16_TOLERANCE = Tolerance(score=0.04, dist_px=12.0, det_iou=0.9, det_score=0.03)
LOW_PRECISION_TOLERANCES = {"fp16": TOLERANCES["fp16"], "bf16": BF16_TOLERANCE}

BACKENDS = {"mnn": mnn_module.MnnBackend, "openvino": openvino_module.OpenVinoBackend}


def _needs(name: str) -> None:
    if name == "mnn" and mnn_module.mnn_nn is None:
        pytest.skip("MNN is not installed")
    if name == "openvino" and openvino_module.ov is None:
        pytest.skip("openvino is not installed")


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def raccoon() -> Path:
    return require_shared("datasets", "raccoon")


def _stems(raccoon: Path, split: str, count: int) -> list[str]:
    return (raccoon / f"{split}.txt").read_text().split()[:count]


def _export(base: Path, name: str, dynamic_axes: tuple[str, ...]) -> Path:
    pytest.importorskip("torch")
    from nanodet_deploy.checkpoint import load_model
    from nanodet_deploy.exporters.pipeline import ExportOptions, export_model

    model, _ = load_model(CHECKPOINT)
    options = ExportOptions(
        input_hw=EXPORT_HW, formats=("onnx",), verify=False, dynamic_axes=dynamic_axes
    )
    out = base / name
    export_model(model, out, options)
    return out


def _add_files(export_dir: Path, files: dict[str, str], precision: dict[str, str]) -> None:
    meta = read_meta(export_dir)
    write_meta(
        export_dir,
        dataclasses.replace(
            meta, files={**meta.files, **files}, precision={**meta.precision, **precision}
        ),
    )


def _convert(export_dir: Path) -> None:
    """MNN and OpenVINO files of the folder's ONNX, listed in its meta.json."""
    from nanodet_deploy.exporters.mnn import MNN_FILE, convert_onnx_to_mnn
    from nanodet_deploy.exporters.openvino import convert_onnx_to_openvino

    onnx = export_dir / "model.onnx"
    files, precision = {}, {}
    if mnn_module.mnn_nn is not None:
        convert_onnx_to_mnn(onnx, export_dir / MNN_FILE)
        files["mnn"], precision["mnn"] = MNN_FILE, "fp32"
    if openvino_module.ov is not None:
        xml, weights = convert_onnx_to_openvino(onnx, export_dir)
        files["openvino_xml"], files["openvino_bin"] = xml.name, weights.name
        precision["openvino"] = "fp32"
    _add_files(export_dir, files, precision)


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> dict[str, Path]:
    """{"static": folder, "dynamic": folder}, both converted (module doc)."""
    base = tmp_path_factory.mktemp("peer")
    folders = {
        "static": _export(base, "static", ()),
        "dynamic": _export(base, "dynamic", ("batch", "height", "width")),
    }
    for folder in folders.values():
        _convert(folder)
    return folders


@pytest.fixture(scope="session")
def int8_dir(exports, raccoon) -> Path:
    """The static export with ``model.int8.mnn`` (EMA, calibrated on NUM_CALIB train images)."""
    if mnn_module.mnn_nn is None:
        pytest.skip("MNN is not installed")
    from nanodet_deploy.exporters.mnn import MNN_INT8_FILE, quantize_mnn

    folder, meta = exports["static"], read_meta(exports["static"])
    images = [raccoon / "images" / f"{s}.jpg" for s in _stems(raccoon, "train", NUM_CALIB)]
    info = quantize_mnn(
        folder / "model.mnn", folder / MNN_INT8_FILE, images,
        input_hw=meta.input_hw, mean_bgr=meta.mean_bgr, std_bgr=meta.std_bgr,
    )  # fmt: skip
    assert info.num_images == NUM_CALIB and info.calibration["feature_quantize_method"] == "EMA"
    _add_files(folder, {"mnn_int8": MNN_INT8_FILE}, {"mnn_int8": "int8"})
    return folder


@pytest.fixture(scope="session")
def val_dir(raccoon, tmp_path_factory) -> Path:
    """A folder with links to NUM_IMAGES val images (what ``verification_inputs`` reads)."""
    folder = tmp_path_factory.mktemp("val")
    for stem in _stems(raccoon, "val", NUM_IMAGES):
        (folder / f"{stem}.jpg").symlink_to(raccoon / "images" / f"{stem}.jpg")
    return folder


@pytest.fixture(scope="session")
def val_images(val_dir) -> list[np.ndarray]:
    from nanodet_deploy.preprocess import list_images, load_image

    return [load_image(p) for p in list_images(val_dir)]


# ------------------------------------------------------------------ helpers


def _verify(export_dir: Path, backend, precision: str, val_dir: Path):
    """verify.py's check of ``backend`` against the torch weights of the export."""
    from nanodet_deploy.exporters.verify import verify_backends
    from nanodet_deploy.runtimes.torch_backend import TorchBackend

    meta = read_meta(export_dir)
    pad_to = None if backend.static_hw is None else meta.input_hw
    inputs = verification_inputs(meta, val_dir, pad_to)
    reference = TorchBackend.from_export(export_dir, threads=1)
    try:
        (check,) = verify_backends(reference, {backend.name: backend}, {backend.name: precision},
                                   inputs)  # fmt: skip
    finally:
        reference.close()
    return check


def _assert_same_detections(a: Detections, b: Detections, box_px: float, score: float) -> None:
    """Every detection of ``a`` has its own partner in ``b``: same label, box and score."""
    assert len(a) == len(b), (len(a), len(b))
    unused = list(range(len(b)))
    for box, s, label in zip(a.boxes_xyxy, a.scores, a.labels, strict=True):
        partners = [
            j for j in unused
            if b.labels[j] == label and abs(b.scores[j] - s) <= score
            and np.abs(b.boxes_xyxy[j] - box).max() <= box_px
        ]  # fmt: skip
        assert partners, f"no partner for label {label}, score {s:.5f}, box {box}"
        unused.remove(partners[0])


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(rb - lt, 0, None)))
    area = float(np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]))
    return inter / (area - inter)


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize("name", ["mnn", "openvino"])
def test_parity_with_torch_fp32(exports, val_dir, name, kind):
    _needs(name)
    backend = BACKENDS[name](exports[kind], threads=1)
    try:
        assert backend.static_hw == (EXPORT_HW if kind == "static" else None)
        check = _verify(exports[kind], backend, "fp32", val_dir)
    finally:
        backend.close()
    assert check.passed, check.to_dict()
    if kind == "dynamic":  # pad mode: smaller tensors for non-square images
        assert any(tuple(i.input_hw) != EXPORT_HW for i in check.inputs)


@pytest.mark.parametrize("name", ["mnn", "openvino"])
def test_static_model_refuses_other_sizes(exports, name):
    _needs(name)
    backend = BACKENDS[name](exports["static"], threads=1)
    try:
        with pytest.raises(ValueError, match="static 320x320"):
            backend.run(np.zeros((1, 3, 224, 320), dtype=np.float32))
    finally:
        backend.close()


@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize("name", ["mnn", "openvino"])
def test_detections_equal_onnxruntime(exports, val_images, name, kind):
    _needs(name)
    from nanodet_deploy import Detector
    from nanodet_deploy.runtimes.ort import OrtBackend

    with (
        Detector(BACKENDS[name](exports[kind], threads=1), score_thresh=0.05) as det,
        Detector(OrtBackend(exports[kind], threads=1), score_thresh=0.05) as ref,
    ):
        for image in val_images:
            expected = ref.detect(image)
            assert len(expected) > 0
            _assert_same_detections(det.detect(image), expected, box_px=1e-2, score=1e-4)


@pytest.mark.parametrize(("name", "precision"), [("mnn", "fp16"), ("openvino", "bf16"),
                                                 ("openvino", "fp16")])  # fmt: skip
def test_low_precision(exports, val_dir, name, precision):
    """MNN fp16 (fp32 on x86: module doc) and OpenVINO bf16 / fp16 where the CPU offers them."""
    _needs(name)
    if name == "openvino":
        capability = precision.upper()
        offered = openvino_module.ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if capability not in offered:
            with pytest.raises(ValueError, match=f"capability {capability}"):
                BACKENDS[name](exports["dynamic"], precision=precision)
            return
    backend = BACKENDS[name](exports["dynamic"], threads=1, precision=precision)
    try:
        check = _verify(exports["dynamic"], backend, "fp16", val_dir)
    finally:
        backend.close()
    check.tolerance = LOW_PRECISION_TOLERANCES[precision]
    assert check.passed, check.to_dict()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("name", "key"), [("mnn", "numThread"),
                                           ("openvino", "INFERENCE_NUM_THREADS")])  # fmt: skip
def test_threads_setting(exports, name, key, threads):
    _needs(name)
    backend = BACKENDS[name](exports["dynamic"], threads=threads)
    try:
        assert backend.settings[key] == threads
    finally:
        backend.close()


_BLOCKER = """
import importlib.abc
import sys


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname)
        return None


sys.meta_path.insert(0, _Block())
"""


@pytest.mark.parametrize(
    ("module", "cls", "blocked", "pip_name"),
    [("mnn", "MnnBackend", ("MNN", "_mnncengine"), "MNN"),
     ("openvino", "OpenVinoBackend", ("openvino",), "openvino")],
)  # fmt: skip
def test_missing_package_names_pip_package(tmp_path, module, cls, blocked, pip_name):
    script = f"BLOCKED = {set(blocked)!r}\n" + _BLOCKER + textwrap.dedent(f"""
        from nanodet_deploy.runtimes.base import BackendUnavailable
        from nanodet_deploy.runtimes.registry import missing_package, open_backend
        print("MISSING:", missing_package({module!r}))
        try:
            open_backend({str(tmp_path)!r}, {module!r})
        except BackendUnavailable as exc:
            print("UNAVAILABLE:", exc)
    """)  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    message = f"backend {module} needs the {pip_name} package: pip install {pip_name}"
    assert f"UNAVAILABLE: {message}" in proc.stdout and f"MISSING: {message}" in proc.stdout


def test_mnn_int8_detects_like_fp32(int8_dir, val_images):
    from nanodet_deploy import Detector

    int8 = mnn_module.MnnBackend(int8_dir, threads=1, precision="int8")
    assert int8.static_hw == EXPORT_HW and int8.settings["model_file"] == "model.int8.mnn"
    with (
        Detector(int8, score_thresh=0.3) as det,
        Detector(mnn_module.MnnBackend(int8_dir, threads=1), score_thresh=0.3) as ref,
    ):
        for image in val_images:
            expected, got = ref.detect(image), det.detect(image)
            assert len(expected) > 0 and len(got) > 0
            assert got.labels[0] == expected.labels[0]
            assert abs(got.scores[0] - expected.scores[0]) < 0.1
            assert _box_iou(got.boxes_xyxy[0], expected.boxes_xyxy[0]) > 0.8


def test_quantize_needs_fixed_size(exports, raccoon):
    _needs("mnn")
    from nanodet_deploy.exporters.mnn import quantize_mnn

    meta = read_meta(exports["dynamic"])
    image = raccoon / "images" / f"{_stems(raccoon, 'train', 1)[0]}.jpg"
    with pytest.raises(ValueError, match="dynamic height/width"):
        quantize_mnn(
            exports["dynamic"] / "model.mnn", exports["dynamic"] / "x.mnn", [image],
            input_hw=meta.input_hw, mean_bgr=meta.mean_bgr, std_bgr=meta.std_bgr,
        )  # fmt: skip


def test_convert_failure_raises_export_error(tmp_path):
    _needs("mnn")
    from nanodet_deploy.exporters.errors import ExportError
    from nanodet_deploy.exporters.mnn import convert_onnx_to_mnn

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ExportError, match="not onnx model"):
        convert_onnx_to_mnn(bad, tmp_path / "bad.mnn")
    assert not (tmp_path / "bad.mnn").exists()


def test_bench_records_for_the_peer_runtimes(exports, tmp_path):
    """``bench --backend auto``: MNN and OpenVINO rows come out complete and valid."""
    from nanodet_deploy.bench.harness import run_plan
    from nanodet_deploy.bench.records import RecordFile, validate_record
    from nanodet_deploy.bench.spec import BenchSpec, plan
    from nanodet_deploy.device import describe_device, library_versions

    template = BenchSpec(export_dir="", backend="ncnn", precision="fp32", threads=1,
                         input_hw=(0, 0), warmup=1, iterations=3, rounds=1)  # fmt: skip
    planned = plan([str(exports["static"])], ["mnn", "openvino"], ["fp32"], [1], None, template)
    records = run_plan(planned, RecordFile(tmp_path / "bench.json"), device=describe_device(),
                       versions=library_versions(), timeout_s=300, count_macs=False)  # fmt: skip
    assert [(r["backend"], r["status"]) for r in records] == [("mnn", "ok"), ("openvino", "ok")]
    for r in records:
        assert validate_record(r) == [] and r["latency_ms"]["p50"] > 0
        assert r["model"]["file_size_bytes"] > 0 and r["settings"]["threads"] == 1
    assert records[0]["model"]["file"] == "model.mnn"
    assert records[1]["model"]["file"] == "model.openvino.xml+model.openvino.bin"

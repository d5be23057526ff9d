"""The raccoon val mAP of one checkpoint through every backend (issue 5).

The bundled checkpoint (assets/nanodet-m-raccoon-320.pth, trained by our trainer) is exported
twice: ONNX with dynamic height/width + NCNN fp32 weights, and NCNN fp16 weights. Each backend
goes through the same Detector path (pad preprocessing, shared postprocessor) and pycocotools.

The ONNX is dynamic on purpose: a static ONNX accepts only its export size, so the Detector
pads the keep-ratio tensor (e.g. 224x320) on to 320x320, and the extra padding changes the
network output near the image edge (measured: mAP 0.6340 vs 0.6376). With a dynamic ONNX all
backends see the very same tensor.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nanodet_deploy.checkpoint import load_model
from nanodet_deploy.evaluation import evaluate_backend
from nanodet_deploy.exporters.pipeline import ExportOptions, export_model
from nanodet_deploy.runtimes.registry import open_backend
from nanodet_deploy.train_config import load_data_config

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "assets" / "nanodet-m-raccoon-320.pth"
DATA = REPO / "configs" / "raccoon_nanodet-m_320_finetune.yaml"


@pytest.fixture(scope="module")
def exports(raccoon_dir, tmp_path_factory):
    load_data_config(DATA)  # the config finds the dataset (RACCOON_DIR or shared/ beside)
    model, _ = load_model(CHECKPOINT)
    root = tmp_path_factory.mktemp("map_parity")
    fp32 = ExportOptions(
        input_hw=(320, 320), dynamic_axes=("height", "width"), ncnn_fp16=False, verify=False
    )
    fp16 = ExportOptions(input_hw=(320, 320), formats=("ncnn",), verify=False)
    export_model(model, root / "fp32", fp32)
    export_model(model, root / "fp16", fp16)
    return root / "fp32", root / "fp16"


def _map(path: Path, backend: str, precision: str | None = None) -> float:
    runtime = open_backend(path, backend, threads=1, precision=precision)
    try:
        return evaluate_backend(runtime, DATA).map
    finally:
        runtime.close()


def test_val_map_agrees_across_backends(exports):
    fp32_dir, fp16_dir = exports
    torch_map = _map(CHECKPOINT, "torch")
    assert torch_map > 0.6  # the documented val mAP of this checkpoint is 0.638
    ort_map = _map(fp32_dir, "onnxruntime")
    ncnn_fp32 = _map(fp32_dir, "ncnn", "fp32")
    ncnn_fp16 = _map(fp16_dir, "ncnn", "fp16")
    assert abs(ort_map - torch_map) <= 0.002, (torch_map, ort_map)
    assert abs(ncnn_fp32 - torch_map) <= 0.002, (torch_map, ncnn_fp32)
    assert abs(ncnn_fp16 - torch_map) <= 0.01, (torch_map, ncnn_fp16)

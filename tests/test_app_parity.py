"""What a phone app computes: the NCNN app pipeline, run through the ncnn Python binding's own
preprocessing, gives the detections ``nanodet-deploy detect --resize plain --sampler resize`` gives.

The app (cpp/example_ncnn.cpp does the same in C++): ``ncnn::Mat::from_pixels_resize`` to the
export size, ``substract_mean_normalize(mean, 1 / std)``, ``Extractor`` input/extract with the
blob names of meta.json, then the decode of cpp/nanodet_postprocess.hpp (proven equal to
``postprocess`` in tests/test_cpp_postprocess.py) with boxes scaled back by image / input size.
Export: the official COCO NanoDet-m weights at 320 (``detect_helpers.coco_export``).
"""

from __future__ import annotations

import json
from pathlib import Path

import ncnn
import numpy as np
import pytest
from detect_helpers import coco_export
from typer.testing import CliRunner

from nanodet_deploy.artifacts import read_meta
from nanodet_deploy.cli.main import app
from nanodet_deploy.postprocess import postprocess
from nanodet_deploy.preprocess import load_image
from nanodet_deploy.structures import ResizeInfo

IMAGES = [f"raccoon-{i}.jpg" for i in range(1, 6)]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, reference_dir) -> Path:
    return coco_export(tmp_path_factory.getbasetemp(), reference_dir)


def app_detections(export_dir: Path, image_path: Path) -> list[dict]:
    """The NCNN app's calls, with values from meta.json."""
    meta = read_meta(export_dir)
    h, w = meta.input_hw
    bgr = load_image(image_path)
    src_h, src_w = bgr.shape[:2]
    mat = ncnn.Mat.from_pixels_resize(bgr, ncnn.Mat.PixelType.PIXEL_BGR, src_w, src_h, w, h)
    mat.substract_mean_normalize(list(meta.mean_bgr), [1.0 / s for s in meta.std_bgr])
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.load_param(str(export_dir / meta.files["ncnn_param"]))
    net.load_model(str(export_dir / meta.files["ncnn_bin"]))
    ex = net.create_extractor()
    ex.input(meta.ncnn_input_name, mat)
    _, out = ex.extract(meta.ncnn_output_name)
    output = np.array(out)
    del out, ex  # the extractor before the net it belongs to
    info = ResizeInfo(src_hw=(src_h, src_w), input_hw=(h, w), scale_xy=(w / src_w, h / src_h))
    dets = postprocess(output, input_hw=(h, w), strides=meta.strides,
                       center_offset=meta.center_offset, resize_info=info, score_thresh=0.05,
                       class_names=meta.class_names)  # fmt: skip
    return dets.to_records(image_path.name)


def cli_detections(export_dir: Path, image_path: Path, sampler: str, tmp_path: Path) -> list[dict]:
    out = tmp_path / f"{sampler}-{image_path.stem}.json"
    args = ["detect", str(export_dir), str(image_path), "--backend", "ncnn", "--threads", "1",
            "--resize", "plain", "--sampler", sampler, "--score-thresh", "0.05",
            "--precision", "fp32", "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def same(a: list[dict], b: list[dict], box_px: float = 1e-2, score: float = 1e-4) -> bool:
    if [d["label"] for d in a] != [d["label"] for d in b]:
        return False
    return all(
        abs(x["score"] - y["score"]) <= score
        and np.abs(np.subtract(x["box_xyxy"], y["box_xyxy"])).max() <= box_px
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("name", IMAGES)
def test_detect_cli_gives_what_an_ncnn_app_gets(export_dir, reference_dir, name, tmp_path):
    image = reference_dir / "images" / name
    expected = app_detections(export_dir, image)
    assert len(expected) > 5
    assert same(cli_detections(export_dir, image, "resize", tmp_path), expected)


def test_the_warp_sampler_is_not_what_an_app_gets(export_dir, reference_dir, tmp_path):
    """Negative control: official NanoDet's warp (sub-pixel shifted sampling) differs."""
    differ = [
        not same(cli_detections(export_dir, reference_dir / "images" / n, "warp", tmp_path),
                 app_detections(export_dir, reference_dir / "images" / n))
        for n in IMAGES
    ]  # fmt: skip
    assert all(differ)

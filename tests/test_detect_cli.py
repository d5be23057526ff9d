"""``nanodet-deploy detect``: images, folders, video, JSON, annotated output, bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from detect_helpers import coco_export
from typer.testing import CliRunner

from nanodet_deploy.artifacts import read_meta
from nanodet_deploy.cli.main import app
from nanodet_deploy.detector import Detector
from nanodet_deploy.draw import class_color, draw_detections
from nanodet_deploy.preprocess import load_image
from nanodet_deploy.structures import Detections

runner = CliRunner()
RECORD_KEYS = {"image", "label", "name", "score", "box_xyxy"}


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory, reference_dir) -> Path:
    return coco_export(tmp_path_factory.getbasetemp(), reference_dir)


@pytest.fixture(scope="module")
def images_dir(reference_dir) -> Path:
    return reference_dir / "images"  # 5 jpgs + xml annotations + a license text


def invoke(*args: object):
    return runner.invoke(app, ["detect", *(str(a) for a in args)])


def flat(text: str) -> str:
    """Output with rich's line wrapping undone (wrapped at a space)."""
    return " ".join(text.split())


def shows(result, fragment: str) -> bool:
    """``fragment`` is in the output, whether rich wrapped it at a space or inside a word."""
    return fragment in flat(result.output) or fragment in "".join(result.output.split("\n"))


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert shows(result, fragment), result.output


def test_single_image_json_and_annotation(export_dir, images_dir, tmp_path):
    image = images_dir / "raccoon-4.jpg"
    out_json, save_dir = tmp_path / "sub" / "dets.json", tmp_path / "annotated"
    result = invoke(export_dir, image, "--threads", 1, "--json", out_json, "--save-dir", save_dir)
    assert result.exit_code == 0, result.output
    records = json.loads(out_json.read_text())
    with Detector(export_dir, threads=1, score_thresh=0.35) as det:
        expected = det.detect(load_image(image)).to_records("raccoon-4.jpg")
    assert records == expected and len(records) >= 2
    assert all(set(r) == RECORD_KEYS and r["score"] > 0.35 for r in records)
    assert records[0]["name"] == "cat" and records[0]["label"] == 15
    out = flat(result.output)
    assert "detections (score > 0.35) │ 4" in out and "median ms (pre / infer / post)" in out
    annotated = cv2.imread(str(save_dir / "raccoon-4.jpg"))
    assert annotated.shape == load_image(image).shape
    assert not np.array_equal(annotated, load_image(image))


def test_folder_skips_corrupt_images_and_ignores_other_files(export_dir, images_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in (1, 3):
        shutil.copy(images_dir / f"raccoon-{k}.jpg", folder / f"raccoon-{k}.JPG")
    data = (images_dir / "raccoon-2.jpg").read_bytes()
    (folder / "raccoon-2.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (folder / "notes.txt").write_text("not an image")
    (folder / "raccoon-1.xml").write_text("<annotation/>")
    out_json, save_dir = tmp_path / "dets.json", tmp_path / "annotated"
    result = invoke(
        export_dir, folder, "--backend", "onnxruntime", "--size", "416", "--score-thresh", 0.05,
        "--json", out_json, "--save-dir", save_dir,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "skipped raccoon-2.jpg" in out and "truncated JPEG" in out
    assert "images │ 2" in out and "skipped (unreadable) │ 1" in out
    assert "onnxruntime, 416x416 HxW" in out
    records = json.loads(out_json.read_text())
    assert {r["image"] for r in records} == {"raccoon-1.JPG", "raccoon-3.JPG"}
    assert min(r["score"] for r in records) < 0.35  # everything above the given threshold
    assert sorted(p.name for p in save_dir.iterdir()) == ["raccoon-1.JPG", "raccoon-3.JPG"]


def test_folder_where_no_image_can_be_read_exits_1(export_dir, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (folder / "b.jpg").write_text("text")
    result = invoke(export_dir, folder, "--json", tmp_path / "d.json")
    assert result.exit_code == 1, result.output
    assert "no image in the folder could be read" in flat(result.output)
    assert json.loads((tmp_path / "d.json").read_text()) == []


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()


def test_video_json_frame_names_and_annotated_mp4(export_dir, images_dir, tmp_path):
    frame = cv2.resize(load_image(images_dir / "raccoon-1.jpg"), (320, 208))
    frames = [frame, frame[:, ::-1].copy(), frame, frame[:, ::-1].copy()]
    video = tmp_path / "clip.mp4"
    write_video(video, frames)
    out_json, save_dir = tmp_path / "video.json", tmp_path / "annotated"
    result = invoke(
        export_dir, video, "--threads", 1, "--json", out_json, "--save-dir", save_dir,
        "--max-frames", 3,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "frames │ 3" in flat(result.output)
    records = json.loads(out_json.read_text())
    assert {r["image"] for r in records} == {"frame_000000", "frame_000001", "frame_000002"}
    assert all(0 <= r["box_xyxy"][2] <= 320 and 0 <= r["box_xyxy"][3] <= 208 for r in records)
    capture = cv2.VideoCapture(str(save_dir / "clip.mp4"))
    count = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        assert image.shape == (208, 320, 3)
        count += 1
    capture.release()
    assert count == 3
    result = invoke(export_dir, video, "--save-dir", tmp_path)  # clip.mp4 onto itself
    assert_user_error(result, "would overwrite the source")


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda d: d / "missing.jpg", ["missing.jpg", "no such image, folder or video"]),
        (lambda d: _write(d / "notes.txt", b"hello"), ["notes.txt", "not an image or video file"]),
        (lambda d: _write(d / "cut.jpg", b"\xff\xd8\xff\xe0\0\x10JFIF"), ["cut.jpg", "truncated"]),
        (lambda d: _write(d / "fake.png", b"this is text"), ["fake.png", "cannot decode"]),
        (lambda d: _write(d / "broken.mp4", b"not a video"), ["broken.mp4", "cannot open"]),
        (lambda d: _mkdir(d / "empty"), ["empty", "no image files"]),
    ],
)
def test_bad_sources_are_one_line_errors(export_dir, tmp_path, make, fragments):
    assert_user_error(invoke(export_dir, make(tmp_path)), *fragments)


def test_camera_that_cannot_be_opened(export_dir):
    assert_user_error(invoke(export_dir, "97"), "camera 97", "cannot open")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _broken_export(export_dir: Path, folder: Path, meta_changes: dict, drop=()) -> Path:
    folder.mkdir()
    for name in ("model.onnx", "model.ncnn.param", "model.ncnn.bin"):
        if name not in drop:
            os.symlink(export_dir / name, folder / name)
    meta = read_meta(export_dir).to_dict() | meta_changes
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_bad_models_are_one_line_errors(export_dir, images_dir, tmp_path):
    image = images_dir / "raccoon-1.jpg"
    assert_user_error(invoke(tmp_path / "nope", image), "nope", "no such export folder")
    empty = _mkdir(tmp_path / "empty")
    assert_user_error(invoke(empty, image), "meta.json", "missing")
    names = read_meta(export_dir).class_names
    wrong = _broken_export(export_dir, tmp_path / "wrong", {"class_names": list(names[:20])})
    for backend in ("ncnn", "onnxruntime"):
        assert_user_error(
            invoke(wrong, image, "--backend", backend), "20 classes", "do not belong together"
        )
    no_bin = _broken_export(export_dir, tmp_path / "no_bin", {}, drop=("model.ncnn.bin",))
    assert_user_error(invoke(no_bin, image, "--backend", "ncnn"), "model.ncnn.bin", "missing")
    drop = ("model.onnx", "model.ncnn.bin")
    no_files = _broken_export(export_dir, tmp_path / "none", {}, drop=drop)
    assert_user_error(invoke(no_files, image), "lists no model file that exists")
    (tmp_path / "meta_bad").mkdir()
    (tmp_path / "meta_bad" / "meta.json").write_text("{not json")
    assert_user_error(invoke(tmp_path / "meta_bad", image), "not valid JSON")


def test_bad_options_are_one_line_errors(export_dir, images_dir):
    image = images_dir / "raccoon-1.jpg"
    assert_user_error(invoke(export_dir, image, "--size", "300"), "multiple of 32")
    assert_user_error(invoke(export_dir, image, "--resize", "stretch"), "geometry must be one of")
    assert_user_error(invoke(export_dir, image, "--sampler", "area"), "sampler must be one of")
    assert_user_error(invoke(export_dir, image, "--backend", "tflite"), "unknown backend")
    for source in (images_dir, image):
        result = invoke(export_dir, source, "--save-dir", images_dir)
        assert_user_error(result, "would overwrite the source")


def test_draw_on_16bit_and_gray_images():
    dets = Detections(
        np.array([[2.0, 3.0, 30.0, 20.0]], np.float32), np.array([0.9], np.float32),
        np.array([1], np.int64), ("a", "b"),
    )  # fmt: skip
    for image in (np.full((40, 50), 30000, np.uint16), np.zeros((40, 50), np.uint8)):
        drawn = draw_detections(image, dets)
        assert drawn.shape == (40, 50, 3) and drawn.dtype == np.uint8
        assert tuple(drawn[10, 2]) == class_color(1)  # left edge of the box


def test_class_colors_are_deterministic_and_distinct():
    colors = [class_color(k) for k in range(80)]
    assert colors == [class_color(k) for k in range(80)]
    assert len(set(colors)) == 80
    assert all(all(0 <= c <= 255 for c in color) for color in colors)

"""Unusable images are found when a dataset loads (decoded once, verdicts cached), skipped
at the training step or evaluation image where they turn bad later, and reported by the CLI."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import require_shared
from typer.testing import CliRunner

from nanodet_deploy import image_check
from nanodet_deploy.cli.main import app
from nanodet_deploy.datasets import DatasetError, load_coco, load_voc, load_yolo, read_image_bgr
from nanodet_deploy.evaluation import evaluate, load_eval_records
from nanodet_deploy.image_check import FileKey, ImageCheck, VerdictCache, cache_dir, check_images
from nanodet_deploy.structures import Detections
from nanodet_deploy.train.data import DetectionDataset, log_skipped_images
from nanodet_deploy.train.transforms import AugmentConfig, TrainTransform
from nanodet_deploy.train_config import DataConfig, SplitConfig

runner = CliRunner()
STEMS = [f"raccoon-{i}" for i in range(1, 7)]


def raccoon_copy(root: Path, stems: list[str] = STEMS) -> Path:
    """A writable VOC copy of a few raccoon images (the shared dataset is read-only)."""
    src = require_shared("datasets", "raccoon")
    for sub, ext in (("images", "jpg"), ("annotations", "xml")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            shutil.copyfile(src / sub / f"{stem}.{ext}", root / sub / f"{stem}.{ext}")
    return root


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def break_four_ways(root: Path) -> dict[str, str]:
    """raccoon-1..4 made unusable in four ways; file name -> expected reason."""
    images = root / "images"
    truncate(images / "raccoon-1.jpg")
    png = images / "raccoon-2.png"  # found by stem, although the XML names raccoon-2.jpg
    png.write_bytes(cv2.imencode(".png", cv2.imread(str(images / "raccoon-2.jpg")))[1].tobytes())
    (images / "raccoon-2.jpg").unlink()
    truncate(png)
    (images / "raccoon-3.jpg").write_bytes(b"this is not a JPEG at all" * 10)
    (images / "raccoon-4.jpg").write_bytes(b"")
    return {
        "raccoon-1.jpg": "truncated JPEG (no end-of-image marker)",
        "raccoon-2.png": "truncated PNG (no IEND chunk)",
        "raccoon-3.jpg": "cannot decode image",
        "raccoon-4.jpg": "empty file (0 bytes)",
    }


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """Counts the images the checker decodes (calls from its worker threads)."""
    calls: list[int] = []
    real = image_check.decode_image_bytes

    def counting(data: bytes):
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(image_check, "decode_image_bytes", counting)
    return calls


# --------------------------------------------------------------------------- verification


def test_load_lists_every_unusable_image_at_once(tmp_path, caplog):
    root = raccoon_copy(tmp_path / "voc")
    expected = break_four_ways(root)
    with pytest.raises(DatasetError) as info:
        load_voc(root)
    message = str(info.value)
    assert message.startswith("4 images cannot be used") and "skip_invalid" in message
    for name, reason in expected.items():
        assert f"{root / 'images' / name}: {reason}" in message
    with caplog.at_level(logging.WARNING):
        result = load_voc(root, skip_invalid=True)
    assert [r.path.name for r in result.records] == ["raccoon-5.jpg", "raccoon-6.jpg"]
    assert result.summary.images_skipped_missing == 4 and "images_skipped_missing=4" in str(
        result.summary
    )
    assert all(f"{name}: {reason}" in caplog.text for name, reason in expected.items())


def test_second_load_decodes_nothing_until_a_file_changes(tmp_path, decodes):
    root = raccoon_copy(tmp_path / "voc")
    first = load_voc(root)
    assert len(decodes) == len(STEMS)
    decodes.clear()
    assert [r.path for r in load_voc(root).records] == [r.path for r in first.records]
    assert decodes == []  # every verdict came from the cache
    image = root / "images" / "raccoon-2.jpg"
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # same size, new mtime
    load_voc(root)
    assert len(decodes) == 1
    truncate(image)  # new size: checked again, and now it is bad
    with pytest.raises(DatasetError, match=r"raccoon-2\.jpg: truncated JPEG"):
        load_voc(root)
    assert len(decodes) == 2


def test_cache_is_keyed_by_the_resolved_path(tmp_path, decodes):
    root = raccoon_copy(tmp_path / "voc", STEMS[:2])
    load_voc(root)
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    decodes.clear()
    assert len(load_voc(tmp_path / "link").records) == 2 and decodes == []


def test_bad_verdicts_are_cached_too(tmp_path, decodes):
    root = raccoon_copy(tmp_path / "voc", STEMS[:2])
    truncate(root / "images" / "raccoon-1.jpg")
    for _ in range(2):
        result = load_voc(root, skip_invalid=True)
        assert result.summary.images_skipped_missing == 1
    assert len(decodes) == 2


def test_cache_file_location_and_content(tmp_path, monkeypatch):
    monkeypatch.delenv("NANODET_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "nanodet-deploy"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "nanodet-deploy"
    monkeypatch.setenv("NANODET_CACHE_DIR", str(tmp_path / "mine"))
    root = raccoon_copy(tmp_path / "voc", STEMS[:2])
    load_voc(root)
    (file,) = (tmp_path / "mine" / "image-checks").iterdir()
    data = json.loads(file.read_text())
    assert data["folder"] == str((root / "images").resolve())
    image = root / "images" / "raccoon-1.jpg"
    size, mtime_ns, problem, h, w = data["files"]["raccoon-1.jpg"]
    assert (size, mtime_ns, problem) == (image.stat().st_size, image.stat().st_mtime_ns, None)
    assert (h, w) == cv2.imread(str(image)).shape[:2]
    assert not list(root.rglob("*.json"))  # nothing is written into the dataset


OTHER_VERSION = json.dumps({"format": image_check.CACHE_FORMAT, "version": 0, "files": {}})
NO_FILES = json.dumps({**json.loads(OTHER_VERSION), "version": image_check.CACHE_VERSION})


@pytest.mark.parametrize(
    "junk", ["{not json", '{"format": 1}', "", "[1, 2]", OTHER_VERSION, NO_FILES]
)
def test_corrupt_cache_file_is_ignored_and_rebuilt(tmp_path, decodes, caplog, junk):
    root = raccoon_copy(tmp_path / "voc", STEMS[:3])
    load_voc(root)
    file = VerdictCache.for_files([(root / "images").resolve() / "raccoon-1.jpg"]).file
    assert file.parent == cache_dir() / "image-checks" and file.name.startswith("images-")
    file.write_text(junk)
    decodes.clear()
    with caplog.at_level(logging.INFO):
        assert len(load_voc(root).records) == 3
    assert len(decodes) == 3 and "image check cache" in caplog.text
    assert len(json.loads(file.read_text())["files"]) == 3


def test_unwritable_cache_folder_only_warns(tmp_path, monkeypatch, caplog):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("NANODET_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    root = raccoon_copy(tmp_path / "voc", STEMS[:2])
    with caplog.at_level(logging.WARNING):
        assert len(load_voc(root).records) == 2
    assert "cannot write the image check cache" in caplog.text


def test_concurrent_cache_writers_never_tear_the_file(tmp_path):
    folder = tmp_path / "images"
    file = cache_dir() / "image-checks" / "concurrent.json"
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for k in range(15):
                cache = VerdictCache(file, folder)
                cache.put(FileKey(folder / f"{n}-{k}.jpg", k, k), ImageCheck(folder, None, (1, 2)))
                cache.save()
                assert VerdictCache(file, folder).entries  # always a complete file
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    entries = json.loads(file.read_text())["files"]  # last writer wins: some may be lost
    assert 15 <= len(entries) <= 60 and VerdictCache(file, folder).entries == entries
    assert not [p for p in file.parent.iterdir() if p.suffix == ".tmp"]


def test_progress_callback_and_threads(tmp_path):
    root = raccoon_copy(tmp_path / "voc", STEMS[:4])
    paths = sorted((root / "images").iterdir())
    seen: list[tuple[int, int]] = []
    with image_check.report_progress(lambda done, total: seen.append((done, total))):
        checks = check_images(paths, workers=2)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)] and all(c.ok for c in checks)
    seen.clear()
    with image_check.report_progress(lambda done, total: seen.append((done, total))):
        check_images(paths)
    assert seen == []  # all cached: nothing to decode, no bar


def test_files_that_cannot_be_stated_are_reported_not_cached(tmp_path):
    root = raccoon_copy(tmp_path / "voc", STEMS[:1])
    (root / "images" / "folder.jpg").mkdir()
    paths = [root / "images" / n for n in ("raccoon-1.jpg", "gone.jpg", "folder.jpg")]
    checks = check_images(paths)
    assert [c.problem for c in checks] == [None, "image file not found", "not a regular file"]
    assert checks[0].ok and checks[0].hw == cv2.imread(str(paths[0])).shape[:2]
    assert len(VerdictCache.for_files([paths[0].resolve()]).entries) == 1


def test_verification_can_be_turned_off(tmp_path, decodes):
    root = raccoon_copy(tmp_path / "voc", STEMS[:3])
    truncate(root / "images" / "raccoon-1.jpg")
    data = DataConfig(root=str(root), train=SplitConfig(split=None), verify_images=False)
    from nanodet_deploy.datasets import load_split

    assert len(load_split(data, "train").records) == 3 and decodes == []


def test_yolo_and_coco_sizes_come_from_the_check(tmp_path, decodes):
    root = raccoon_copy(tmp_path / "voc", STEMS[:3])
    images = root / "images"
    (root / "labels").mkdir()
    (root / "labels" / "raccoon-1.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (images / "raccoon-9.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"raccoon-9\.jpg: empty file"):
        load_yolo(images, root / "labels", ["raccoon"])
    decodes.clear()
    result = load_yolo(images, root / "labels", ["raccoon"], skip_invalid=True)
    hws = [cv2.imread(str(images / f"{s}.jpg")).shape[:2] for s in STEMS[:3]]
    assert decodes == [] and [r.hw for r in result.records] == hws
    (h, w) = hws[0]
    np.testing.assert_allclose(result.records[0].boxes_xyxy, [[w / 4, h / 4, 3 * w / 4, 3 * h / 4]])
    coco = {
        "images": [
            {"id": 7, "file_name": "raccoon-1.jpg"},
            {"id": 8, "file_name": "raccoon-9.jpg"},
        ],
        "annotations": [],
        "categories": [{"id": 1, "name": "raccoon"}],
    }
    (root / "coco.json").write_text(json.dumps(coco))
    result = load_coco(root / "coco.json", images, skip_invalid=True)
    assert [(r.image_id, r.hw) for r in result.records] == [(7, hws[0])]


def test_read_image_bgr_refuses_truncated_files(tmp_path):
    """Regression: OpenCV decodes a truncated JPEG into a grey-filled image; training used it."""
    root = raccoon_copy(tmp_path / "voc", STEMS[:1])
    image = truncate(root / "images" / "raccoon-1.jpg")
    with pytest.raises(DatasetError, match=r"raccoon-1\.jpg: truncated JPEG"):
        read_image_bgr(image)
    image.unlink()
    with pytest.raises(DatasetError, match=r"raccoon-1\.jpg: image file not found"):
        read_image_bgr(image)


# ------------------------------------------------------------------ bad during training


def small_dataset(root: Path, seed: int = 0) -> DetectionDataset:
    records = load_voc(root).records
    transform = TrainTransform((96, 96), AugmentConfig(), (0, 0, 0), (1, 1, 1))
    return DetectionDataset(records, transform, seed=seed)


def test_unreadable_sample_is_replaced_deterministically(tmp_path):
    root = raccoon_copy(tmp_path / "voc")
    dataset = small_dataset(root, seed=5)
    dataset.set_epoch(3)
    (root / "images" / "raccoon-2.jpg").unlink()
    truncate(root / "images" / "raccoon-5.jpg")
    first = [dataset[i] for i in range(len(dataset))]
    again = [dataset[i] for i in range(len(dataset))]
    for a, b in zip(first, again, strict=True):
        assert a[0].equal(b[0]) and a[2]["path"] == b[2]["path"]
    metas = [m for _, _, m in first]
    assert [len(m["skipped"]) for m in metas] == [0, 1, 0, 0, 1, 0]
    assert "raccoon-2.jpg: image file not found" in metas[1]["skipped"][0]
    assert "raccoon-5.jpg: truncated JPEG" in metas[4]["skipped"][0]
    used = {metas[1]["path"], metas[4]["path"]}
    assert not used & {str(root / "images" / n) for n in ("raccoon-2.jpg", "raccoon-5.jpg")}
    assert first[1][0].shape == first[0][0].shape  # same batch geometry as any sample


def test_skipped_images_are_logged_with_the_step(caplog):
    metas = [{"path": "/d/b.jpg", "skipped": ["/d/a.jpg: image file not found"]}, {"path": "x"}]
    with caplog.at_level(logging.WARNING):
        assert log_skipped_images(metas, "epoch 1 step 3") == 1
    assert "epoch 1 step 3: skipped /d/a.jpg: image file not found; used /d/b.jpg" in caplog.text


def test_no_readable_image_left_is_an_error(tmp_path):
    root = raccoon_copy(tmp_path / "voc", STEMS[:2])
    dataset = small_dataset(root)
    for stem in STEMS[:2]:
        (root / "images" / f"{stem}.jpg").unlink()
    with pytest.raises(DatasetError, match="no readable image for sample 0 in 11 tries"):
        dataset[0]


# ----------------------------------------------------------------------------- the CLI

TINY = """\
model:
  base: nanodet-m-0.5x
  input_hw: [96, 96]
data:
  root: {root}
  train: {root}/train.txt
  class_names: [raccoon]
  skip_invalid: {skip}
augment:
  keep_ratio: true
train:
  epochs: 1
  batch_size: 2
  num_workers: 0
  warmup_steps: 1
  eval_interval: 0
"""


def tiny_run(tmp_path: Path, skip: bool) -> tuple[Path, Path]:
    """(config, dataset root): a VOC copy whose train split holds raccoon-1..4."""
    root = raccoon_copy(tmp_path / "voc", STEMS[:4])
    (root / "train.txt").write_text("\n".join(STEMS[:4]) + "\n")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(root=root, skip=str(skip).lower()))
    return config, root


def test_train_cli_skips_a_truncated_jpeg_with_skip_invalid(tmp_path, caplog):
    config, root = tiny_run(tmp_path, skip=True)
    bad = truncate(root / "images" / "raccoon-3.jpg")
    with caplog.at_level(logging.INFO):
        result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "done: 1 epochs, 1 steps" in result.output  # 3 usable images, batch 2, drop_last
    assert f"{bad}: truncated JPEG (no end-of-image marker) (skipped)" in caplog.text
    assert "images_skipped_missing=1" in caplog.text  # the load summary


def test_train_cli_without_skip_invalid_fails_before_the_first_step(tmp_path):
    config, root = tiny_run(tmp_path, skip=False)
    bad = truncate(root / "images" / "raccoon-3.jpg")
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    output = "".join(result.output.split())  # rich folds long paths anywhere
    assert "error:1imagecannotbeused" in output and f"{bad.name}:truncatedJPEG" in output
    assert "epoch1" not in output and not (tmp_path / "run" / "last.pth").exists()


def test_train_cli_image_deleted_mid_run_is_skipped(tmp_path, monkeypatch, caplog):
    from nanodet_deploy.train import trainer

    config, root = tiny_run(tmp_path, skip=False)
    gone = root / "images" / "raccoon-2.jpg"
    real_build = trainer.build_data

    def build_then_delete(*args, **kwargs):
        data = real_build(*args, **kwargs)  # verified: every image was fine
        gone.unlink()
        return data

    monkeypatch.setattr(trainer, "build_data", build_then_delete)
    with caplog.at_level(logging.WARNING):
        result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "done: 1 epochs, 2 steps" in result.output  # no step lost
    assert f"epoch 1 step 1: skipped {gone}: image file not found; used" in caplog.text or (
        f"epoch 1 step 2: skipped {gone}: image file not found; used" in caplog.text
    )


# ---------------------------------------------------------------------------- evaluation


def test_eval_records_list_or_skip_bad_images(tmp_path):
    root = raccoon_copy(tmp_path / "voc", STEMS[:3])
    (root / "val.txt").write_text("\n".join(STEMS[:3]))
    truncate(root / "images" / "raccoon-2.jpg")
    data = DataConfig(root=str(root), class_names=("raccoon",))
    with pytest.raises(DatasetError, match=r"1 image cannot be used.*\n.*raccoon-2\.jpg: trunc"):
        load_eval_records(data, ("raccoon",), "val", "data.yaml")
    skipping = DataConfig(root=str(root), class_names=("raccoon",), skip_invalid=True)
    records, _ = load_eval_records(skipping, ("raccoon",), "val", "data.yaml")
    assert [r.path.name for r in records] == ["raccoon-1.jpg", "raccoon-3.jpg"]


def test_evaluate_skips_an_image_that_disappears(tmp_path, caplog):
    root = raccoon_copy(tmp_path / "voc", STEMS[:3])
    loaded = load_voc(root)
    first, second, third = records = loaded.records
    answers = iter([first, third])  # the perfect answer for each image that is read

    def detect(image: np.ndarray) -> Detections:
        (root / "images" / "raccoon-2.jpg").unlink(missing_ok=True)  # gone before it is read
        rec = next(answers)
        assert image.shape[:2] == rec.hw
        return Detections(rec.boxes_xyxy, np.ones(len(rec.labels), np.float32), rec.labels)

    with caplog.at_level(logging.WARNING):
        result, coco = evaluate(detect, records, loaded.class_names)
    assert result.num_images == 2 and result.num_skipped == 1
    assert result.map == pytest.approx(1.0)  # the skipped image's boxes are not counted missed
    assert "raccoon-2.jpg: image file not found" in result.skipped[0]
    assert "raccoon-2.jpg: image file not found; skipped, not evaluated" in caplog.text
    assert {c["image_id"] for c in coco} == {first.image_id, third.image_id}
    assert result.to_dict()["num_skipped"] == 1 and second.path.name == "raccoon-2.jpg"
    for path in (root / "images").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match="none of the 3 images could be read"):
        evaluate(detect, records, loaded.class_names)


def test_eval_cli_lists_or_skips_a_bad_image(tmp_path, caplog):
    from nanodet_deploy.checkpoint import save_checkpoint
    from nanodet_deploy.config import zoo_config
    from nanodet_deploy.models import build_model

    root = raccoon_copy(tmp_path / "voc", STEMS[:3])
    (root / "val.txt").write_text("\n".join(STEMS[:3]))
    bad = truncate(root / "images" / "raccoon-2.jpg")
    cfg = replace(zoo_config("nanodet-m-0.5x"), num_classes=1, class_names=("raccoon",))
    ckpt = save_checkpoint(tmp_path / "m.pth", cfg, build_model(cfg).state_dict())
    data = tmp_path / "data.yaml"
    for skip in (False, True):
        data.write_text(f"data:\n  root: {root}\n  skip_invalid: {str(skip).lower()}\n")
        with caplog.at_level(logging.WARNING):
            result = runner.invoke(app, ["eval", str(ckpt), "--data", str(data)])
        output = "".join(result.output.split())
        if not skip:
            assert result.exit_code == 2 and f"{bad.name}:truncatedJPEG" in output, result.output
        else:
            assert result.exit_code == 0, result.output
            assert "2images" in output and f"{bad}: truncated JPEG" in caplog.text

"""Dataset loaders (VOC / COCO / YOLO), malformed-data handling, torch wrapper, collate."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nanodet_deploy.datasets import (
    DatasetError,
    ImageRecord,
    load_coco,
    load_voc,
    load_yolo,
    records_to_coco,
)
from nanodet_deploy.train.data import DetectionDataset, collate
from nanodet_deploy.train.transforms import AugmentConfig, TrainTransform

COCO_MEAN, COCO_STD = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)


def write_image(path: Path, hw: tuple[int, int] = (40, 60)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((*hw, 3), 128, np.uint8))
    return path


def voc_xml(
    objects: list[tuple[str, tuple]], size: tuple[int, int] | None = (60, 40), name="a.jpg"
) -> str:
    size_xml = (
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        if size
        else ""
    )
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    return f"<annotation><filename>{name}</filename>{size_xml}{objs}</annotation>"


def make_voc(root: Path, files: dict[str, str], images: tuple[str, ...] = ("a",)) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for stem, text in files.items():
        (root / "annotations" / f"{stem}.xml").write_text(text)
    for stem in images:
        write_image(root / "images" / f"{stem}.jpg")
    return root


# ------------------------------------------------------------------------------- raccoon


def test_raccoon_train_val(raccoon_dir: Path) -> None:
    train = load_voc(raccoon_dir, "train")
    val = load_voc(raccoon_dir, raccoon_dir / "val.txt")
    assert (len(train.records), len(val.records)) == (160, 40)
    assert train.class_names == val.class_names == ("raccoon",)
    assert train.summary.messages == () and val.summary.messages == ()
    assert (train.summary.images, train.summary.boxes) == (
        160,
        sum(len(r.labels) for r in train.records),
    )
    first = train.records[0]
    assert first.path.name == "raccoon-1.jpg" and first.hw == (417, 650) and first.image_id == 1
    np.testing.assert_array_equal(first.boxes_xyxy, [[81, 88, 522, 408]])
    assert first.labels.dtype == np.int64 and first.boxes_xyxy.dtype == np.float32
    assert not {r.path for r in train.records} & {r.path for r in val.records}


def test_raccoon_coco_export_evaluates_to_perfect_map(raccoon_dir: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    val = load_voc(raccoon_dir, "val")
    gt_dict = records_to_coco(val.records, val.class_names)
    assert gt_dict["categories"] == [{"id": 1, "name": "raccoon", "supercategory": "raccoon"}]
    assert len(gt_dict["images"]) == 40 and len(gt_dict["annotations"]) == val.summary.boxes
    ann = gt_dict["annotations"][0]
    rec = next(r for r in val.records if r.image_id == ann["image_id"])
    x1, y1, x2, y2 = rec.boxes_xyxy[0].tolist()
    assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1] and ann["category_id"] == 1
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        dets = [{**a, "score": 1.0} for a in gt_dict["annotations"]]
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_dataset_and_collate_on_raccoon(raccoon_dir: Path) -> None:
    records = load_voc(raccoon_dir, "val").records[:3]
    transform = TrainTransform((96, 96), AugmentConfig(keep_ratio=True), COCO_MEAN, COCO_STD)
    dataset = DetectionDataset(records, transform, seed=5)
    assert len(dataset) == 3
    image, target, meta = dataset[0]
    assert image.dtype == torch.float32 and image.shape[0] == 3 and max(image.shape[1:]) == 96
    assert target["boxes_xyxy"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert meta["src_hw"] == records[0].hw and meta["warp_matrix"].shape == (3, 3)
    assert meta["image_id"] == records[0].image_id and meta["image_hw"] == tuple(image.shape[1:])
    again, _, _ = dataset[0]
    torch.testing.assert_close(image, again)  # (seed, epoch, index) -> same sample
    dataset.set_epoch(1)
    assert not torch.equal(image, dataset[0][0])

    batch, targets, metas = partial(collate, size_multiple=32)([dataset[i] for i in range(3)])
    height = max(m["image_hw"][0] for m in metas)
    assert batch.shape[0] == 3 and batch.shape[2] % 32 == 0 and batch.shape[3] == 96
    assert batch.shape[2] == -(-height // 32) * 32
    for i, m in enumerate(metas):
        h, w = m["image_hw"]
        torch.testing.assert_close(batch[i, :, :h, :w], dataset[i][0])
        assert (batch[i, :, h:, :] == 0).all() and (batch[i, :, :, w:] == 0).all()
    assert len(targets) == 3


def test_collate_pads_bottom_right_to_multiple() -> None:
    a = (torch.ones(3, 40, 50), {}, {})
    b = (torch.full((3, 64, 20), 2.0), {}, {})
    batch, _, _ = collate([a, b], size_multiple=32, pad_value=-1.0)
    assert batch.shape == (2, 3, 64, 64)
    assert (batch[0, :, :40, :50] == 1).all() and (batch[0, :, 40:] == -1).all()
    assert (batch[1, :, :, 20:] == -1).all()
    with pytest.raises(ValueError):
        collate([])


def test_image_record_validates() -> None:
    with pytest.raises(ValueError, match="float32"):
        ImageRecord(Path("x.jpg"), 10, 10, np.zeros((1, 4)), np.zeros(1, np.int64), 1)
    with pytest.raises(ValueError, match="int64"):
        ImageRecord(Path("x.jpg"), 10, 10, np.zeros((1, 4), np.float32), np.zeros(1, np.int32), 1)


# ----------------------------------------------------------------------------------- VOC


def test_voc_clip_drop_and_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    objects = [
        ("cat", (-5, 2, 30, 50)),  # partly outside the 60x40 image: clipped to (0, 2, 30, 40)
        ("dog", (10, 10, 10, 20)),  # zero width: dropped
        ("cat", (70, 5, 90, 20)),  # right of the image: nothing left, dropped
        ("dog", (5.5, 6.5, 20.25, 30)),  # float coordinates are fine
    ]
    root = make_voc(tmp_path, {"a": voc_xml(objects)})
    with caplog.at_level(logging.WARNING):
        result = load_voc(root)
    rec = result.records[0]
    assert result.class_names == ("cat", "dog")  # sorted set of names found
    np.testing.assert_allclose(rec.boxes_xyxy, [[0, 2, 30, 40], [5.5, 6.5, 20.25, 30]])
    assert rec.labels.tolist() == [0, 1]
    s = result.summary
    assert (s.images, s.boxes, s.boxes_clipped, s.boxes_dropped_degenerate) == (1, 2, 1, 2)
    assert len(s.messages) == 3 and "a.xml object 0" in s.messages[0]
    assert "a.xml object 1" in caplog.text and "a.xml object 2" in caplog.text


def test_voc_unknown_class(tmp_path: Path) -> None:
    root = make_voc(tmp_path, {"a": voc_xml([("cat", (1, 1, 9, 9)), ("cow", (2, 2, 9, 9))])})
    with pytest.raises(DatasetError, match=r"a\.xml object 1: unknown class 'cow'"):
        load_voc(root, class_names=["cat", "dog"])
    result = load_voc(root, class_names=["cat", "dog"], skip_invalid=True)
    assert result.summary.boxes_skipped_unknown_class == 1 and result.summary.boxes == 1
    assert result.class_names == ("cat", "dog")


def test_voc_missing_and_unreadable_images(tmp_path: Path) -> None:
    files = {"a": voc_xml([("cat", (1, 1, 9, 9))]), "b": voc_xml([], name="b.jpg"),
             "c": voc_xml([], size=None, name="c.jpg")}  # fmt: skip
    root = make_voc(tmp_path, files, images=("a",))
    (root / "images" / "c.jpg").write_bytes(b"not an image")  # c: no <size>, so it is read
    with pytest.raises(DatasetError, match=r"b\.xml: image 'b' not found"):
        load_voc(root)
    result = load_voc(root, skip_invalid=True)
    assert [r.path.name for r in result.records] == ["a.jpg"]
    assert result.summary.images_skipped_missing == 2
    with pytest.raises(DatasetError, match=r"c\.jpg: cannot decode image"):
        load_voc(root, split=["c"])


def test_voc_size_read_from_image_and_found_by_stem(tmp_path: Path) -> None:
    xml = voc_xml([("cat", (1, 1, 50, 30))], size=None, name="")
    root = make_voc(tmp_path, {"a": xml}, images=())
    write_image(root / "images" / "a.png", hw=(33, 77))
    rec = load_voc(root).records[0]
    assert rec.hw == (33, 77) and rec.path.name == "a.png"


def test_voc_malformed_files(tmp_path: Path) -> None:
    bad_object = (
        "<annotation><filename>b.jpg</filename><object><name>cat</name></object></annotation>"
    )
    root = make_voc(tmp_path, {"a": "<annotation><size>", "b": bad_object}, images=("a", "b"))
    with pytest.raises(DatasetError, match=r"a\.xml: not valid XML"):
        load_voc(root)
    with pytest.raises(DatasetError, match=r"b\.xml object 0: needs <name> and numeric <bndbox>"):
        load_voc(root, split=["b"])
    with pytest.raises(DatasetError, match=r"zz\.xml: annotation file not found"):
        load_voc(root, split=["zz"])
    result = load_voc(root, split=["a", "b", "zz"], skip_invalid=True)
    s = result.summary
    assert (s.images, s.images_skipped_invalid, s.boxes_skipped_invalid) == (1, 2, 1)


def test_voc_split_resolution(tmp_path: Path) -> None:
    files = {k: voc_xml([("cat", (1, 1, 9, 9))], name=f"{k}.jpg") for k in ("a", "b", "c")}
    root = make_voc(tmp_path, files, images=("a", "b", "c"))
    (root / "train.txt").write_text("c\n\n# comment\na\n")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "val.txt").write_text("b  1\n")
    assert [r.path.stem for r in load_voc(root, "train").records] == ["c", "a"]
    assert [r.path.stem for r in load_voc(root, "val").records] == ["b"]
    assert [r.path.stem for r in load_voc(root, root / "train.txt").records] == ["c", "a"]
    assert [r.image_id for r in load_voc(root).records] == [1, 2, 3]
    with pytest.raises(DatasetError, match="split 'test' not found"):
        load_voc(root, "test")
    with pytest.raises(DatasetError, match="no JPEGImages or images folder"):
        load_voc(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------- COCO


def coco_dict() -> dict:
    return {
        "images": [
            {"id": 7, "file_name": "b.jpg", "height": 40, "width": 60},
            {"id": 3, "file_name": "a.jpg", "height": 40, "width": 60},
            {"id": 9, "file_name": "c.jpg"},  # no size: read from the image
        ],
        "categories": [{"id": 5, "name": "dog"}, {"id": 2, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 5, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 3, "category_id": 2, "bbox": [50, 30, 20, 20], "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 2, "bbox": [1, 1, 5, 5], "iscrowd": 1},
            {"id": 4, "image_id": 7, "category_id": 2, "bbox": [1, 1, 0, 5]},
        ],
    }


def make_coco(tmp_path: Path, data: dict) -> tuple[Path, Path]:
    for name in ("a", "b"):
        write_image(tmp_path / "img" / f"{name}.jpg")
    write_image(tmp_path / "img" / "c.jpg", hw=(21, 31))
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    return ann, tmp_path / "img"


def test_coco_load(tmp_path: Path) -> None:
    result = load_coco(*make_coco(tmp_path, coco_dict()))
    assert result.class_names == ("cat", "dog")  # categories sorted by id: 2, 5
    assert [r.image_id for r in result.records] == [3, 7, 9]  # sorted, ids kept
    a, b, c = result.records
    np.testing.assert_allclose(a.boxes_xyxy, [[10, 5, 30, 15], [50, 30, 60, 40]])  # 2nd clipped
    assert a.labels.tolist() == [1, 0]
    assert len(b.labels) == 0 and c.hw == (21, 31)
    s = result.summary
    assert (s.crowd_boxes_ignored, s.boxes_clipped, s.boxes_dropped_degenerate) == (1, 1, 1)
    exported = records_to_coco(result.records, result.class_names)
    assert [i["id"] for i in exported["images"]] == [3, 7, 9]
    assert [a["category_id"] for a in exported["annotations"]] == [2, 1]


@pytest.mark.parametrize(
    ("mutate", "message", "counter"),
    [
        (lambda d: d["annotations"][0].update(category_id=99), r"annotations\[0\]: unknown category_id 99", "boxes_skipped_unknown_class"),
        (lambda d: d["images"][0].update(file_name="gone.jpg"), r"images\[0\]: image .*gone\.jpg not found", "images_skipped_missing"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\]: needs 'image_id' and 'bbox'", "boxes_skipped_invalid"),
        (lambda d: d["annotations"][0].update(bbox=[1, "x", 3, 4]), r"annotations\[0\]: bbox .* not numeric", "boxes_skipped_invalid"),
        (lambda d: d["annotations"][1].update(image_id=404), r"annotations\[1\]: image_id 404 is not in .images.", "boxes_skipped_invalid"),
        (lambda d: d["images"][1].pop("id"), r"images\[1\]: needs an int 'id'", "images_skipped_invalid"),
    ],
)  # fmt: skip
def test_coco_malformed(tmp_path: Path, mutate, message: str, counter: str) -> None:
    data = coco_dict()
    mutate(data)
    paths = make_coco(tmp_path, data)
    with pytest.raises(DatasetError, match=message):
        load_coco(*paths)
    summary = load_coco(*paths, skip_invalid=True).summary
    assert getattr(summary, counter) == 1
    assert any(m.endswith("(skipped)") for m in summary.messages)


def test_coco_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match=r"bad\.json: not valid JSON"):
        load_coco(bad, tmp_path)
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match="needs a list 'categories'"):
        load_coco(bad, tmp_path)
    with pytest.raises(DatasetError, match="annotation file not found"):
        load_coco(tmp_path / "missing.json", tmp_path)


# ---------------------------------------------------------------------------------- YOLO


def make_yolo(root: Path, labels: dict[str, str]) -> tuple[Path, Path]:
    for stem in ("a", "b", "c"):
        write_image(root / "images" / f"{stem}.jpg", hw=(40, 80))
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        (root / "labels" / f"{stem}.txt").write_text(text)
    return root / "images", root / "labels"


def test_yolo_load(tmp_path: Path) -> None:
    labels = {
        "a": "1 0.5 0.5 0.25 0.5\n\n0 0.95 0.5 0.2 0.2\n",  # second box crosses the right edge
        "b": "0 0.1 0.1 0.3 0.1 0.3 0.6 0.1 0.6\n",  # polygon -> its bounding box
    }  # c.jpg has no label file: an image without boxes
    image_dir, label_dir = make_yolo(tmp_path, labels)
    (tmp_path / "labels" / "classes.txt").write_text("person\ncar\n")
    result = load_yolo(image_dir, label_dir)
    assert result.class_names == ("person", "car")
    a, b, c = result.records
    np.testing.assert_allclose(a.boxes_xyxy, [[30, 10, 50, 30], [68, 16, 80, 24]], atol=1e-4)
    assert a.labels.tolist() == [1, 0] and a.hw == (40, 80)
    np.testing.assert_allclose(b.boxes_xyxy, [[8, 4, 24, 24]], atol=1e-4)
    assert len(c.labels) == 0 and result.summary.boxes_clipped == 1
    assert "a.txt line 3" in result.summary.messages[0]


def test_yolo_class_names_from_yaml_or_argument(tmp_path: Path) -> None:
    image_dir, label_dir = make_yolo(tmp_path, {"a": "2 0.5 0.5 0.2 0.2\n"})
    with pytest.raises(DatasetError, match="no class names"):
        load_yolo(image_dir, label_dir)
    (tmp_path / "data.yaml").write_text("names:\n  0: person\n  1: car\n  2: bus\n")
    result = load_yolo(image_dir, label_dir)
    assert result.class_names == ("person", "car", "bus") and result.records[0].labels.tolist() == [
        2
    ]
    with pytest.raises(DatasetError, match=r"a\.txt line 1: unknown class '<class id 2>'"):
        load_yolo(image_dir, label_dir, class_names=["person", "car"])


def test_yolo_malformed_lines_and_images(tmp_path: Path) -> None:
    labels = {"a": "0 0.5 0.5 0.2\n0 0.5 0.5 0.2 0.2\n", "b": "x 0.5 0.5 0.2 0.2\n"}
    image_dir, label_dir = make_yolo(tmp_path, labels)
    with pytest.raises(DatasetError, match=r"a\.txt line 1: expected 'class cx cy w h'"):
        load_yolo(image_dir, label_dir, ["person"])
    (image_dir / "d.jpg").write_bytes(b"")
    result = load_yolo(image_dir, label_dir, ["person"], skip_invalid=True)
    s = result.summary
    assert (s.images, s.boxes, s.boxes_skipped_invalid, s.images_skipped_missing) == (3, 1, 2, 1)
    with pytest.raises(DatasetError, match=r"1 image cannot be used.*\n.*d\.jpg: empty file"):
        load_yolo(image_dir, tmp_path / "empty", ["person"])

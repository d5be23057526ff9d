"""Detection datasets: VOC XML, COCO JSON and YOLO TXT loaded into one record type.

Loaders return a :class:`LoadResult`: the records, the class names (from the data or
given) and a :class:`LoadSummary` that counts what was clipped, dropped or skipped.

Malformed data (every message names the file, and the object index or line):

* a box partly outside the image is clipped, with a warning;
* a box whose width or height is below ``min_box_size`` (zero/negative area, or
  nothing left inside the image after clipping) is dropped, with a warning;
* an unknown class, a malformed object/line/annotation file, a missing or unreadable
  image raise :class:`DatasetError`; with ``skip_invalid=True`` they are skipped and
  counted instead.

Every image is decoded once while loading (``verify_images=True``, the default; see
:mod:`nanodet_deploy.image_check`: in parallel, verdicts cached by path + size + mtime), so
a truncated or corrupt file is found before training or evaluation starts: one
:class:`DatasetError` lists every unusable image, or with ``skip_invalid=True`` each is
skipped, logged and counted in ``images_skipped_missing``.

Boxes are ``xyxy`` in original-image pixels, as the files give them (no VOC ``-1``:
official NanoDet uses the raw values). Labels are 0-based indices into ``class_names``.

NumPy + OpenCV only (no torch), so evaluation of exported models runs where torch is absent.
The torch ``DetectionDataset`` and ``collate`` live in :mod:`nanodet_deploy.train.data`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nanodet_deploy.image_check import check_images, decode_image_bytes, os_problem
from nanodet_deploy.preprocess import IMAGE_SUFFIXES
from nanodet_deploy.train_config import DataConfig, SplitConfig

LOG = logging.getLogger(__name__)
MAX_LOGGED_WARNINGS = 20  # per load; the rest are counted and kept in the summary

PathLike = str | os.PathLike


class DatasetError(ValueError):
    """Malformed or missing data; the message names the file (and object/line)."""


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image and its boxes. ``boxes_xyxy`` (N, 4) float32 pixels, ``labels`` (N,) int64."""

    path: Path
    height: int
    width: int
    boxes_xyxy: np.ndarray
    labels: np.ndarray
    image_id: int

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.boxes_xyxy.shape != (n, 4) or self.boxes_xyxy.dtype != np.float32:
            raise ValueError(
                f"{self.path}: boxes_xyxy must be ({n}, 4) float32, got {self.boxes_xyxy.shape} {self.boxes_xyxy.dtype}"
            )
        if self.labels.dtype != np.int64 or self.labels.ndim != 1:
            raise ValueError(
                f"{self.path}: labels must be (N,) int64, got {self.labels.shape} {self.labels.dtype}"
            )

    @property
    def hw(self) -> tuple[int, int]:
        return (self.height, self.width)


@dataclass(frozen=True)
class LoadSummary:
    images: int = 0
    boxes: int = 0
    boxes_clipped: int = 0
    boxes_dropped_degenerate: int = 0
    boxes_skipped_unknown_class: int = 0
    boxes_skipped_invalid: int = 0
    crowd_boxes_ignored: int = 0
    images_skipped_missing: int = 0  # image file missing, unreadable, corrupt or truncated
    images_skipped_invalid: int = 0  # annotation file / entry malformed
    messages: tuple[str, ...] = ()

    def __str__(self) -> str:
        counts = {k: v for k, v in self.__dict__.items() if k != "messages" and v}
        return ", ".join(f"{k}={v}" for k, v in counts.items()) or "empty"


@dataclass(frozen=True, eq=False)
class LoadResult:
    records: tuple[ImageRecord, ...]
    class_names: tuple[str, ...]
    summary: LoadSummary


@dataclass
class _Log:
    """Collects counts and messages while loading; raises unless ``skip_invalid``."""

    skip_invalid: bool
    counts: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def warn(self, counter: str, message: str) -> None:
        self.counts[counter] = self.counts.get(counter, 0) + 1
        self.messages.append(message)
        if len(self.messages) <= MAX_LOGGED_WARNINGS:
            LOG.warning("%s", message)

    def fail(self, counter: str, message: str) -> None:
        """An error by default; with ``skip_invalid`` a counted skip."""
        if not self.skip_invalid:
            raise DatasetError(message)
        self.warn(counter, message + " (skipped)")

    def summary(self, records: Sequence[ImageRecord]) -> LoadSummary:
        extra = len(self.messages) - MAX_LOGGED_WARNINGS
        if extra > 0:
            LOG.warning("%d more dataset warnings not logged (see LoadSummary.messages)", extra)
        return LoadSummary(
            images=len(records),
            boxes=sum(len(r.labels) for r in records),
            messages=tuple(self.messages),
            **self.counts,
        )


@dataclass
class _RawImage:
    path: Path
    height: int  # 0 (with width): not annotated, taken from the image when it is checked
    width: int
    objects: list[tuple[str, tuple[float, float, float, float], str]]  # (class, xyxy, where)
    image_id: int | None = None


# ------------------------------------------------------------------------- shared helpers


def read_image_bgr(path: PathLike) -> np.ndarray:
    """Decode an image as ``uint8`` BGR ``(H, W, 3)``; :class:`DatasetError` naming the file and
    the reason (not found, empty, truncated JPEG/PNG, not an image) if it cannot be used."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: {os_problem(exc)}") from None
    image, problem = decode_image_bytes(data)
    if image is None:
        raise DatasetError(f"{path}: {problem}")
    return image


def _image_hw(path: Path, log: _Log) -> tuple[int, int] | None:
    try:
        image = read_image_bgr(path)
    except DatasetError as exc:
        log.fail("images_skipped_missing", str(exc))
        return None
    return int(image.shape[0]), int(image.shape[1])


def _checked_images(raw_images: list[_RawImage], verify: bool, log: _Log) -> list[_RawImage]:
    """Drop (or, without ``skip_invalid``, fail on) images that do not decode; fill unknown sizes.

    ``verify=False`` decodes only the images whose size the annotations do not give.
    """
    if not verify:
        return [raw for raw in raw_images if raw.height > 0 or _fill_hw(raw, log)]
    checks = check_images([raw.path for raw in raw_images])
    bad = [f"{c.path}: {c.problem}" for c in checks if not c.ok]
    if bad and not log.skip_invalid:
        count = f"{len(bad)} image{'s' if len(bad) > 1 else ''}"
        raise DatasetError(
            f"{count} cannot be used (fix or remove them, or set skip_invalid / "
            "data.skip_invalid: true to skip them):\n  " + "\n  ".join(bad)
        )
    kept = []
    for raw, check in zip(raw_images, checks, strict=True):
        if not check.ok:
            log.warn("images_skipped_missing", f"{check.path}: {check.problem} (skipped)")
            continue
        if raw.height <= 0 and check.hw is not None:
            raw.height, raw.width = check.hw
        kept.append(raw)
    return kept


def _fill_hw(raw: _RawImage, log: _Log) -> bool:
    hw = _image_hw(raw.path, log)
    if hw is not None:
        raw.height, raw.width = hw
    return hw is not None


def clean_box(
    box_xyxy: tuple[float, float, float, float],
    image_hw: tuple[int, int],
    min_box_size: float,
    where: str,
    log: _Log,
) -> tuple[float, float, float, float] | None:
    """Clip to the image (warning), drop if too small (warning); ``None`` when dropped."""
    x1, y1, x2, y2 = box_xyxy
    if _too_small(box_xyxy, min_box_size):
        log.warn(
            "boxes_dropped_degenerate",
            f"{where}: box {list(box_xyxy)} has width or height below {min_box_size} px; dropped",
        )
        return None
    h, w = image_hw
    clipped = (
        min(max(x1, 0.0), w),
        min(max(y1, 0.0), h),
        min(max(x2, 0.0), w),
        min(max(y2, 0.0), h),
    )
    if clipped == (x1, y1, x2, y2):
        return clipped
    if _too_small(clipped, min_box_size):
        log.warn(
            "boxes_dropped_degenerate",
            f"{where}: box {list(box_xyxy)} lies outside the {w}x{h} image; dropped",
        )
        return None
    log.warn(
        "boxes_clipped",
        f"{where}: box {list(box_xyxy)} extends outside the {w}x{h} image; clipped to {list(clipped)}",
    )
    return clipped


def _too_small(box_xyxy: tuple[float, float, float, float], min_box_size: float) -> bool:
    x1, y1, x2, y2 = box_xyxy
    w, h = x2 - x1, y2 - y1
    return w < min_box_size or h < min_box_size or w <= 0 or h <= 0


def _finish(
    raw_images: Sequence[_RawImage],
    class_names: Sequence[str],
    min_box_size: float,
    log: _Log,
) -> LoadResult:
    """Raw objects -> records: class lookup, clipping, dropping; then the summary."""
    index = {name: i for i, name in enumerate(class_names)}
    records = []
    for n, raw in enumerate(raw_images, start=1):
        boxes, labels = [], []
        for name, box, where in raw.objects:
            if name not in index:
                log.fail(
                    "boxes_skipped_unknown_class",
                    f"{where}: unknown class {name!r} (known: {list(class_names)})",
                )
                continue
            kept = clean_box(box, (raw.height, raw.width), min_box_size, where, log)
            if kept is not None:
                boxes.append(kept)
                labels.append(index[name])
        records.append(
            ImageRecord(
                path=raw.path,
                height=raw.height,
                width=raw.width,
                boxes_xyxy=np.asarray(boxes, np.float32).reshape(-1, 4),
                labels=np.asarray(labels, np.int64),
                image_id=raw.image_id if raw.image_id is not None else n,
            )
        )
    summary = log.summary(records)
    LOG.info(
        "loaded %d images, %d boxes, %d classes (%s)",
        summary.images,
        summary.boxes,
        len(class_names),
        summary,
    )
    return LoadResult(tuple(records), tuple(class_names), summary)


def _find_image(image_dir: Path, stem: str, file_name: str | None) -> Path | None:
    if file_name:
        candidate = image_dir / file_name
        if candidate.is_file():
            return candidate
    for suffix in IMAGE_SUFFIXES:
        for s in (suffix, suffix.upper()):
            candidate = image_dir / f"{stem}{s}"
            if candidate.is_file():
                return candidate
    return None


def _finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values)


# ------------------------------------------------------------------------------------ VOC


def load_voc(
    root: PathLike,
    split: PathLike | Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    skip_invalid: bool = False,
    min_box_size: float = 1.0,
    verify_images: bool = True,
) -> LoadResult:
    """Pascal-VOC style folder: ``images/`` + ``annotations/*.xml`` (or ``JPEGImages/`` + ``Annotations/``).

    ``split``: a split file (path, path relative to ``root``, or a name such as
    ``"train"`` for ``root/train.txt`` or ``root/ImageSets/Main/train.txt``) with one
    image id per line, or a list of ids; ``None`` takes every XML file. ``class_names``:
    given (other names are unknown classes), or the sorted set of names found. An XML
    without a usable ``<size>`` gets the size from the image. ``verify_images``: decode every
    image now (module doc).
    """
    root = Path(root)
    image_dir = _first_dir(root, ("JPEGImages", "images"))
    ann_dir = _first_dir(root, ("Annotations", "annotations"))
    ids = _voc_ids(root, ann_dir, split)
    log = _Log(skip_invalid)
    raw_images = [
        raw for i in ids if (raw := _parse_voc_xml(ann_dir / f"{i}.xml", image_dir, i, log))
    ]
    raw_images = _checked_images(raw_images, verify_images, log)
    if class_names is None:
        class_names = sorted({name for raw in raw_images for name, _, _ in raw.objects})
    return _finish(raw_images, class_names, min_box_size, log)


def _first_dir(root: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"{root}: no {' or '.join(names)} folder")


def _voc_ids(root: Path, ann_dir: Path, split: PathLike | Sequence[str] | None) -> list[str]:
    if split is None:
        return sorted(p.stem for p in ann_dir.glob("*.xml"))
    if not isinstance(split, str | os.PathLike):
        return [str(s) for s in split]
    name = str(split)
    tried = [
        Path(name),
        root / name,
        root / f"{name}.txt",
        root / "ImageSets" / "Main" / f"{name}.txt",
    ]
    for path in tried:
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            return [ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    raise DatasetError(f"split {name!r} not found; tried {[str(p) for p in tried]}")


def _parse_voc_xml(xml_path: Path, image_dir: Path, image_stem: str, log: _Log) -> _RawImage | None:
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        log.fail("images_skipped_invalid", f"{xml_path}: annotation file not found")
        return None
    except ET.ParseError as exc:
        log.fail("images_skipped_invalid", f"{xml_path}: not valid XML ({exc})")
        return None
    image_path = _find_image(image_dir, image_stem, (root.findtext("filename") or "").strip())
    if image_path is None:
        log.fail(
            "images_skipped_missing", f"{xml_path}: image {image_stem!r} not found in {image_dir}"
        )
        return None
    hw = _voc_size(root) or (0, 0)  # (0, 0): read from the image
    objects = []
    for k, obj in enumerate(root.findall("object")):
        where = f"{xml_path} object {k}"
        parsed = _voc_object(obj)
        if parsed is None:
            log.fail(
                "boxes_skipped_invalid",
                f"{where}: needs <name> and numeric <bndbox> xmin/ymin/xmax/ymax",
            )
            continue
        objects.append((parsed[0], parsed[1], where))
    return _RawImage(image_path, hw[0], hw[1], objects)


def _voc_size(root: ET.Element) -> tuple[int, int] | None:
    try:
        width = int(float(root.findtext("size/width") or ""))
        height = int(float(root.findtext("size/height") or ""))
    except ValueError:
        return None
    return (height, width) if width > 0 and height > 0 else None


def _voc_object(obj: ET.Element) -> tuple[str, tuple[float, float, float, float]] | None:
    name = (obj.findtext("name") or "").strip()
    try:
        box = tuple(
            float(obj.findtext(f"bndbox/{k}") or "") for k in ("xmin", "ymin", "xmax", "ymax")
        )
    except ValueError:
        return None
    if not name or not _finite(box):
        return None
    return name, box  # type: ignore[return-value]


# ----------------------------------------------------------------------------------- COCO


def load_coco(
    ann_json: PathLike,
    image_dir: PathLike,
    skip_invalid: bool = False,
    min_box_size: float = 1.0,
    verify_images: bool = True,
) -> LoadResult:
    """COCO detection JSON. Classes: the categories sorted by id (label = position).

    Records are sorted by image id and keep the JSON image ids. Crowd (``iscrowd``) and
    ``ignore`` boxes are left out and counted (official NanoDet keeps them only as
    ignore boxes, which its assigners do not use by default).
    """
    ann_json, image_dir = Path(ann_json), Path(image_dir)
    data = _read_coco_json(ann_json)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    class_names = [str(c["name"]) for c in categories]
    cat_names = {c["id"]: str(c["name"]) for c in categories}
    log = _Log(skip_invalid)
    by_image = _coco_objects(data["annotations"], cat_names, ann_json, log)
    raw_images = []
    for k, img in enumerate(data["images"]):
        raw = _coco_image(img, k, ann_json, image_dir, log)
        if raw is not None:
            raw.objects = by_image.pop(raw.image_id, [])
            raw_images.append(raw)
    raw_images = _checked_images(raw_images, verify_images, log)
    raw_images.sort(key=lambda raw: raw.image_id)
    listed_ids = {img.get("id") for img in data["images"] if isinstance(img, dict)}
    for image_id, objects in by_image.items():
        if image_id in listed_ids:
            continue  # the image was skipped: its boxes go with it
        for _, _, where in objects:
            log.fail("boxes_skipped_invalid", f"{where}: image_id {image_id} is not in 'images'")
    return _finish(raw_images, class_names, min_box_size, log)


def _read_coco_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: a COCO file needs a list {key!r}")
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetError(f"{path}: categories[{k}] needs 'id' and 'name'")
    return data


def _coco_objects(
    annotations: list[Any], cat_names: dict[Any, str], path: Path, log: _Log
) -> dict[Any, list[tuple[str, tuple[float, float, float, float], str]]]:
    by_image: dict[Any, list] = {}
    for k, ann in enumerate(annotations):
        where = f"{path} annotations[{k}]"
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not isinstance(bbox, list) or len(bbox) != 4 or "image_id" not in ann:
            log.fail("boxes_skipped_invalid", f"{where}: needs 'image_id' and 'bbox' [x, y, w, h]")
            continue
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            log.fail("boxes_skipped_invalid", f"{where}: bbox {bbox} is not numeric")
            continue
        if ann.get("iscrowd", 0) or ann.get("ignore", 0):
            log.counts["crowd_boxes_ignored"] = log.counts.get("crowd_boxes_ignored", 0) + 1
            continue
        if ann.get("category_id") not in cat_names:
            log.fail(
                "boxes_skipped_unknown_class",
                f"{where}: unknown category_id {ann.get('category_id')!r}",
            )
            continue
        obj = (cat_names[ann["category_id"]], (x, y, x + w, y + h), where)
        by_image.setdefault(ann["image_id"], []).append(obj)
    return by_image


def _coco_image(img: Any, k: int, path: Path, image_dir: Path, log: _Log) -> _RawImage | None:
    where = f"{path} images[{k}]"
    if not isinstance(img, dict) or not isinstance(img.get("id"), int) or not img.get("file_name"):
        log.fail("images_skipped_invalid", f"{where}: needs an int 'id' and a 'file_name'")
        return None
    image_path = image_dir / str(img["file_name"])
    if not image_path.is_file():
        log.fail("images_skipped_missing", f"{where}: image {image_path} not found")
        return None
    height, width = img.get("height"), img.get("width")
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        height, width = 0, 0  # read from the image
    return _RawImage(image_path, height, width, [], image_id=img["id"])


# ----------------------------------------------------------------------------------- YOLO


def load_yolo(
    image_dir: PathLike,
    label_dir: PathLike,
    class_names: Sequence[str] | None = None,
    skip_invalid: bool = False,
    min_box_size: float = 1.0,
    verify_images: bool = True,
) -> LoadResult:
    """YOLO TXT labels: one ``class cx cy w h`` line per box, normalized to 0..1.

    Every image in ``image_dir`` is a record; ``label_dir/<stem>.txt`` holds its boxes (no
    file: no boxes). A line with more than 4 coordinates is a polygon (YOLO segmentation)
    and gives its bounding box. ``class_names``: given, or read from ``classes.txt`` /
    ``data.yaml`` (``names:``) in ``label_dir``, its parent or ``image_dir``'s parent.
    Image sizes are read from the images.
    """
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder not found")
    if class_names is None:
        class_names = find_yolo_class_names([label_dir, label_dir.parent, image_dir.parent])
    log = _Log(skip_invalid)
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    raw_images = _checked_images([_RawImage(p, 0, 0, []) for p in paths], verify_images, log)
    for raw in raw_images:
        hw = (raw.height, raw.width)
        raw.objects = _yolo_objects(label_dir / f"{raw.path.stem}.txt", hw, class_names, log)
    return _finish(raw_images, class_names, min_box_size, log)


def find_yolo_class_names(folders: Sequence[Path]) -> list[str]:
    """Class names from the first ``classes.txt`` or ``data.yaml``/``dataset.yaml`` found."""
    for folder in folders:
        classes_txt = folder / "classes.txt"
        if classes_txt.is_file():
            return [
                ln.strip()
                for ln in classes_txt.read_text(encoding="utf-8").splitlines()
                if ln.strip()
            ]
        for name in ("data.yaml", "dataset.yaml"):
            if (folder / name).is_file():
                return _yaml_names(folder / name)
    raise DatasetError(
        f"no class names: pass class_names or put classes.txt / data.yaml in one of {[str(f) for f in folders]}"
    )


def _yaml_names(path: Path) -> list[str]:
    import yaml

    try:
        names = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("names")
    except (yaml.YAMLError, AttributeError) as exc:
        raise DatasetError(f"{path}: cannot read 'names' ({exc})") from None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{path}: 'names' must be a non-empty list or an index -> name mapping")
    return [str(n) for n in names]


def _yolo_objects(
    label_path: Path, image_hw: tuple[int, int], class_names: Sequence[str], log: _Log
) -> list[tuple[str, tuple[float, float, float, float], str]]:
    if not label_path.is_file():
        return []
    h, w = image_hw
    objects = []
    for line_no, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{label_path} line {line_no}"
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if (
            len(values) < 5
            or len(values) % 2 == 0
            or not _finite(values)
            or not values[0].is_integer()
        ):
            log.fail(
                "boxes_skipped_invalid",
                f"{where}: expected 'class cx cy w h' (or a polygon), got {line.strip()!r}",
            )
            continue
        cls = int(values[0])
        name = class_names[cls] if 0 <= cls < len(class_names) else f"<class id {cls}>"
        objects.append((name, _yolo_box(values[1:], w, h), where))
    return objects


def _yolo_box(coords: list[float], width: int, height: int) -> tuple[float, float, float, float]:
    if len(coords) == 4:
        cx, cy, bw, bh = coords
        return (
            (cx - bw / 2) * width,
            (cy - bh / 2) * height,
            (cx + bw / 2) * width,
            (cy + bh / 2) * height,
        )
    xs, ys = coords[0::2], coords[1::2]
    return (min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height)


# ------------------------------------------------------------------ COCO ground truth export


def records_to_coco(records: Sequence[ImageRecord], class_names: Sequence[str]) -> dict[str, Any]:
    """COCO ground-truth dict for evaluation: ``category_id = label + 1``, keeps image ids."""
    images, annotations = [], []
    for rec in records:
        images.append(
            {
                "id": int(rec.image_id),
                "file_name": rec.path.name,
                "height": rec.height,
                "width": rec.width,
            }
        )
        for box, label in zip(rec.boxes_xyxy.tolist(), rec.labels.tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(rec.image_id), "category_id": int(label) + 1,
                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0,
            })  # fmt: skip
    categories = [
        {"id": i + 1, "name": name, "supercategory": name} for i, name in enumerate(class_names)
    ]
    return {
        "info": {},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


# ------------------------------------------------------------------ from a data config


def load_split(
    data: DataConfig, split: str, class_names: Sequence[str] | None = None, source: str = "config"
) -> LoadResult:
    """Load split ``"train"`` or ``"val"`` of a ``data:`` config section (paths already resolved).

    ``class_names``: the classes to use (default ``data.class_names``, else found in the data).
    Raises :class:`DatasetError` naming the config and key when a folder or file is missing.
    """
    cfg: SplitConfig = getattr(data, split)
    names = class_names or data.class_names or None
    opts = dict(
        skip_invalid=data.skip_invalid,
        min_box_size=data.min_box_size,
        verify_images=data.verify_images,
    )
    where = f"{source}: data.{split}"
    if data.root and not Path(data.root).is_dir():
        raise DatasetError(f"{source}: data.root {data.root} is not a folder (dataset missing?)")
    if data.format == "voc":
        if not data.root:
            raise DatasetError(f"{source}: data.root is required for format voc")
        return load_voc(data.root, cfg.split, names, **opts)
    if data.format == "coco":
        ann, images = (
            _need(cfg.annotations, f"{where}.annotations"),
            _need(cfg.images, f"{where}.images"),
        )
        result = load_coco(ann, images, **opts)
        if names and tuple(names) != result.class_names:
            raise DatasetError(
                f"{where}: COCO categories {list(result.class_names)} differ from {list(names)}"
            )
        return result
    images = _need(cfg.images, f"{where}.images")
    labels = cfg.labels or str(Path(images).parent / "labels")
    return load_yolo(images, labels, names, **opts)


def _need(path: str | None, where: str) -> str:
    if not path:
        raise DatasetError(f"{where} is required")
    if not Path(path).exists():
        raise DatasetError(f"{where}: {path} does not exist (dataset missing?)")
    return path

"""Where images come from: an image file, a folder, a video file or a camera. Torch-free.

    source = open_source("photos/")          # or "clip.mp4", "0" (camera 0), a Path
    for frame in source.frames():            # Frame(name, image, error)
        ...
    source.close()

Frame names (the ``image`` field of detection records and the saved file names):
- image / folder: the file name (``raccoon-1.jpg``); a folder is read non-recursively, files
  with an image suffix only (``preprocess.IMAGE_SUFFIXES``, case-insensitive), sorted by name;
- video / camera: ``frame_000123`` (0-based frame index, 6 digits).

A folder image that cannot be read (corrupt, truncated, not an image) comes out as a failed
frame (``Frame.error`` set, ``image`` None) and the iteration goes on. A single image that cannot
be read, a video or camera that cannot be opened, an empty folder and an unknown file type
raise at ``open_source`` (``ValueError`` / ``FileNotFoundError``, ``ImageLoadError``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from nanodet_deploy.preprocess import IMAGE_SUFFIXES, ImageLoadError, list_images, load_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
DEFAULT_FPS = 30.0  # for annotated videos when the source does not say


@dataclass(frozen=True)
class Frame:
    name: str  # the JSON "image" field (module doc)
    image: np.ndarray | None  # HxWx3 BGR; None when it could not be read
    error: str | None = None


@dataclass
class ImageSource:
    """One image file or the image files of a folder."""

    kind: str  # "image" | "folder"
    paths: list[Path]
    first_image: np.ndarray | None = None  # a single image is read (and checked) when opened

    @property
    def total(self) -> int | None:
        return len(self.paths)

    @property
    def name(self) -> str:
        return self.paths[0].name if self.kind == "image" else str(self.paths[0].parent)

    def frames(self) -> Iterator[Frame]:
        if self.first_image is not None:
            yield Frame(self.paths[0].name, self.first_image)
            return
        for path in self.paths:
            try:
                yield Frame(path.name, load_image(path))
            except (ImageLoadError, FileNotFoundError, ValueError) as exc:
                yield Frame(path.name, None, str(exc))

    def close(self) -> None:
        self.first_image = None


@dataclass
class VideoSource:
    """A video file or a camera, read frame by frame with cv2.VideoCapture."""

    kind: str  # "video" | "camera"
    name: str  # file name, or "camera0"
    path: Path | None  # the video file; None for a camera
    capture: cv2.VideoCapture
    fps: float
    total: int | None  # frame count when the container says, else None
    max_frames: int | None = None

    def frames(self) -> Iterator[Frame]:
        index = 0
        while self.max_frames is None or index < self.max_frames:
            ok, image = self.capture.read()
            if not ok or image is None:
                return
            yield Frame(f"frame_{index:06d}", image)
            index += 1

    def close(self) -> None:
        self.capture.release()


Source = ImageSource | VideoSource


def open_source(spec: str | os.PathLike | int, max_frames: int | None = None) -> Source:
    """Image file, folder, video file, or camera index (a non-negative integer)."""
    if isinstance(spec, int) or (str(spec).strip().isdigit() and not Path(spec).exists()):
        return _open_video(int(spec), None, "camera", max_frames)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image, folder or video file")
    if path.is_dir():
        return _open_folder(path, max_frames)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return ImageSource("image", [path], first_image=load_image(path))
    if suffix in VIDEO_SUFFIXES:
        return _open_video(path, path, "video", max_frames)
    raise ValueError(
        f"{path}: not an image or video file (image suffixes: {' '.join(IMAGE_SUFFIXES)}; "
        f"video: {' '.join(VIDEO_SUFFIXES)})"
    )


def _open_folder(folder: Path, max_frames: int | None) -> ImageSource:
    paths = list_images(folder)
    return ImageSource("folder", paths[:max_frames] if max_frames else paths)


def _open_video(
    target: Path | int, path: Path | None, kind: str, max_frames: int | None
) -> VideoSource:
    capture = cv2.VideoCapture(str(target) if path is not None else int(target))
    if not capture.isOpened():
        capture.release()
        what = f"camera {target}" if path is None else str(path)
        raise ValueError(f"{what}: OpenCV cannot open it as a video")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if kind == "video" else 0
    total = count if count > 0 else None
    if max_frames and total is not None:
        total = min(total, max_frames)
    valid_fps = fps if math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS
    name = path.name if path is not None else f"camera{target}"
    return VideoSource(kind, name, path, capture, valid_fps, total, max_frames or None)

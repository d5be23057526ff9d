"""Run a Detector over a source (image, folder, video file, camera). Torch-free.

    source = open_source("photos/")                      # or "clip.mp4", "0" (camera 0)
    saver = AnnotatedSaver(Path("out"), source)          # optional: annotated images / mp4
    stats = run_source(detector, source, saver=saver, records=records)

Frame names (the ``image`` field of the JSON records and the saved file names):
- image / folder: the file name (``raccoon-1.jpg``); a folder is read non-recursively, files
  with an image suffix only (``preprocess.IMAGE_SUFFIXES``, case-insensitive), sorted by name;
- video / camera: ``frame_000123`` (0-based frame index, 6 digits).

A folder image that cannot be read (corrupt, truncated, not an image) is skipped: it comes out
as a failed frame (``Frame.error``), is counted in ``RunStats.failed`` and the run goes on.
A single image that cannot be read, a video or camera that cannot be opened, an empty folder
and an unknown file type raise at ``open_source`` (``ValueError`` / ``FileNotFoundError``).
Annotated videos are written with OpenCV's ``mp4v`` codec at the source's frame rate.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from nanodet_deploy.draw import draw_detections
from nanodet_deploy.preprocess import IMAGE_SUFFIXES, ImageLoadError, list_images, load_image
from nanodet_deploy.runtimes.detector import Detector
from nanodet_deploy.structures import Detections, Timing

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
DEFAULT_FPS = 30.0  # for annotated videos when the source does not say
VIDEO_FOURCC = "mp4v"


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


def open_source(spec: str, max_frames: int | None = None) -> Source:
    """Image file, folder, video file, or camera index (a non-negative integer)."""
    if spec.strip().isdigit() and not Path(spec).exists():
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


class AnnotatedSaver:
    """Writes annotated frames: image files under their own name, or one mp4v video."""

    def __init__(self, save_dir: Path, source: Source) -> None:
        self.save_dir = Path(save_dir)
        self.source = source
        self._writer: cv2.VideoWriter | None = None
        self.video_path: Path | None = None
        if isinstance(source, VideoSource):
            self.video_path = self.save_dir / f"{Path(source.name).stem}.mp4"
        if _overwrites_source(self.save_dir, self.video_path, source):
            raise ValueError(
                f"--save-dir {save_dir}: the annotated files would overwrite the source"
            )
        self.save_dir.mkdir(parents=True, exist_ok=True)

    def write(self, frame: Frame, annotated: np.ndarray) -> None:
        if isinstance(self.source, ImageSource):
            path = self.save_dir / frame.name
            if not cv2.imwrite(str(path), annotated):
                raise OSError(f"{path}: OpenCV could not write the annotated image")
            return
        if self._writer is None:
            self._writer = self._open_writer(annotated.shape[1], annotated.shape[0])
        self._writer.write(annotated)

    def _open_writer(self, width: int, height: int) -> cv2.VideoWriter:
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_FOURCC)
        writer = cv2.VideoWriter(str(self.video_path), fourcc, self.source.fps, (width, height))
        if not writer.isOpened():
            raise OSError(f"{self.video_path}: OpenCV cannot write an {VIDEO_FOURCC} video")
        return writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def _overwrites_source(save_dir: Path, video_path: Path | None, source: Source) -> bool:
    if isinstance(source, ImageSource):  # annotated images keep their file names
        return save_dir.resolve() == source.paths[0].parent.resolve()
    return source.path is not None and video_path.resolve() == source.path.resolve()


@dataclass
class RunStats:
    """What a run did: frames detected, failed (name, reason), detections, per-stage times."""

    num_frames: int = 0
    num_detections: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)

    def median_timing(self) -> Timing | None:
        if not self.timings:
            return None
        return Timing(
            preprocess_ms=statistics.median(t.preprocess_ms for t in self.timings),
            inference_ms=statistics.median(t.inference_ms for t in self.timings),
            postprocess_ms=statistics.median(t.postprocess_ms for t in self.timings),
        )


FrameCallback = Callable[[Frame, Detections | None], None]


def run_source(
    detector: Detector,
    source: Source,
    *,
    saver: AnnotatedSaver | None = None,
    records: list[dict] | None = None,
    on_frame: FrameCallback | None = None,
    stats: RunStats | None = None,
) -> RunStats:
    """Detect on every frame; append JSON records (``Detections.to_records``) to ``bench.records``.

    ``on_frame(frame, detections)`` runs after each frame (``detections`` None for a failed
    one). Pass ``stats`` to keep the counts of a run that is interrupted (KeyboardInterrupt).
    """
    stats = stats if stats is not None else RunStats()
    for frame in source.frames():
        if frame.image is None:
            log.debug("skipped %s: %s", frame.name, frame.error)
            stats.failed.append((frame.name, frame.error or "unreadable"))
            if on_frame is not None:
                on_frame(frame, None)
            continue
        detections = detector.detect(frame.image)
        stats.num_frames += 1
        stats.num_detections += len(detections)
        stats.timings.append(detector.last_timing)
        if records is not None:
            records.extend(detections.to_records(frame.name))
        if saver is not None:
            saver.write(frame, draw_detections(frame.image, detections))
        if on_frame is not None:
            on_frame(frame, detections)
    return stats

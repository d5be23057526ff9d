"""Run a Detector over a source and keep what it found: records, annotated files, stats.

    source = open_source("photos/")                      # sources.py: image, folder, video, camera
    saver = AnnotatedSaver(Path("out"), source)          # optional: annotated images / mp4
    stats = run_source(detector, source, saver=saver, records=records)

A folder image that cannot be read is counted in ``RunStats.failed`` and the run goes on.
Annotated videos are written with OpenCV's ``mp4v`` codec at the source's frame rate. Torch-free.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from nanodet_deploy.detector import Detector
from nanodet_deploy.draw import draw_detections
from nanodet_deploy.sources import Frame, ImageSource, Source, VideoSource
from nanodet_deploy.structures import Detections, Timing

log = logging.getLogger(__name__)

VIDEO_FOURCC = "mp4v"


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

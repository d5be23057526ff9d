"""One benchmark combination, measured in its own process (started by ``bench.harness``).

    python -m nanodet_deploy.bench.worker SPEC_JSON RESULT_PATH

Pins the process to ``threads`` CPUs, opens exactly one backend with its threads and precision
set (through ``runtimes.registry``, so only that backend's package is imported), warms up,
then times ``iterations`` full detections stage by stage (preprocess, inference, postprocess)
with the garbage collector paused. Writes a result dict (status, latency statistics, settings,
mAP) to ``RESULT_PATH``.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from nanodet_deploy.artifacts import write_json_atomic
from nanodet_deploy.bench.records import latency_stats
from nanodet_deploy.bench.spec import BenchSpec, images_label
from nanodet_deploy.detector import Detector
from nanodet_deploy.device import cpu_busy_seconds, pick_cpus, pin_to_cpus
from nanodet_deploy.evaluation import EVAL_SETTINGS, evaluate_detector
from nanodet_deploy.preprocess import list_images, load_image
from nanodet_deploy.runtimes.base import BackendUnavailable, BorrowedBackend
from nanodet_deploy.runtimes.registry import open_backend
from nanodet_deploy.structures import Timing

log = logging.getLogger(__name__)

MAX_IMAGES = 64  # cycled through; enough to vary content without timing disk reads


def measure(spec: BenchSpec) -> dict:
    """Time one combination; the worker's result dict (see module doc)."""
    cpus = pick_cpus(spec.threads) if spec.pin_cpus else []
    pinned = pin_to_cpus(cpus)
    settings: dict = {"threads": spec.threads, "precision": spec.precision}
    backend = open_backend(
        spec.export_dir, backend=spec.backend, threads=spec.threads, precision=spec.precision,
        ncnn_big_cores=True,
    )  # fmt: skip
    settings.update(getattr(backend, "settings", {}) or {})
    settings["affinity"] = cpus if pinned else None
    try:
        detector = Detector(
            BorrowedBackend(backend), geometry=spec.geometry, sampler=spec.sampler,
            input_hw=tuple(spec.input_hw), score_thresh=spec.score_thresh,
        )  # fmt: skip
        images = load_inputs(spec.images)
        check_output_shape(detector, images[0])
        samples, other_load = time_steps(timed_step(detector), images, spec.warmup, spec.iterations)
        settings["other_cpu_load"] = other_load
        result = summarize(samples)
        result["images"] = _images_note(spec, len(images))
        result["settings"] = settings
        result["map"], result["ap50"], result["map_note"] = evaluate_map(spec, backend)
    finally:
        backend.close()
    return result


def timed_step(detector: Detector) -> Callable[[np.ndarray], Timing]:
    """One full detection (exactly what ``detect`` runs); its three stage times in ms."""

    def step(image: np.ndarray) -> Timing:
        detector.detect(image)
        return detector.last_timing

    return step


def load_inputs(images_dir: str | None) -> list[np.ndarray]:
    """Up to MAX_IMAGES images from a folder (sorted), or one synthetic 640x480 BGR image."""
    if images_dir is None:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)]
    try:
        paths = list_images(images_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise type(exc)(f"--images {exc}") from None
    return [load_image(p) for p in paths[:MAX_IMAGES]]


def check_output_shape(detector: Detector, image: np.ndarray) -> None:
    """Fail early with a clear message when the model cannot take this input size."""
    tensor, info = detector.preprocess(image)
    meta = detector.meta
    out = np.asarray(detector.backend.run(tensor))
    expected = (meta.num_points(info.input_hw), meta.output_channels)
    if tuple(out.shape[-2:]) != expected:
        raise ValueError(
            f"{detector.backend_name} output {tuple(out.shape)} at input {info.input_hw}, "
            f"expected {expected}: the model does not support this input size"
        )


def time_steps(
    step: Callable[[np.ndarray], Timing], images: list[np.ndarray], warmup: int, iterations: int
) -> tuple[list[Timing], float | None]:
    """Stage times of ``iterations`` steps after ``warmup``, and the share of the machine's
    CPUs that other processes used meanwhile (0: quiet; see :func:`other_cpu_load`)."""
    for i in range(warmup):
        step(images[i % len(images)])
    gc.collect()
    gc.disable()
    busy0, own0, wall0 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
    try:
        samples = [step(images[i % len(images)]) for i in range(iterations)]
    finally:
        gc.enable()
    busy1, own1, wall1 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
    if busy0 is None or busy1 is None:
        return samples, None
    return samples, other_cpu_load(busy1 - busy0, own1 - own0, wall1 - wall0)


def other_cpu_load(busy_s: float, own_s: float, wall_s: float) -> float:
    """Fraction of all CPUs kept busy by other processes: (machine busy - ours) / capacity."""
    capacity = wall_s * (os.cpu_count() or 1)
    return round(min(1.0, max(0.0, (busy_s - own_s) / capacity)), 3) if capacity > 0 else 0.0


def summarize(samples: list[Timing]) -> dict:
    latency = latency_stats([t.total_ms for t in samples])
    stages = {
        "preprocess": latency_stats([t.preprocess_ms for t in samples]),
        "inference": latency_stats([t.inference_ms for t in samples]),
        "postprocess": latency_stats([t.postprocess_ms for t in samples]),
    }
    fps = 1000.0 / latency["mean"]
    return {"status": "ok", "latency_ms": latency, "fps": fps, "stages_ms": stages}


def _images_note(spec: BenchSpec, count: int) -> str:
    return f"{count} images from {spec.images}" if spec.images else images_label(None)


def evaluate_map(spec: BenchSpec, backend) -> tuple[float | None, float | None, str | None]:
    """mAP and AP50 of this artifact through the deployment path, when asked."""
    if not spec.evaluate or spec.data is None:
        return None, None, None
    with Detector(BorrowedBackend(backend), sampler=spec.sampler, input_hw=spec.input_hw,
                  **EVAL_SETTINGS) as detector:  # fmt: skip
        result = evaluate_detector(detector, spec.data)
    note = f"COCO mAP@[.5:.95] on {spec.data} ({detector.spec.sampler} sampler)"
    return float(result.map), float(result.ap50), note


def run(spec_json: str, result_path: str) -> int:
    spec = BenchSpec.from_json(spec_json)
    try:
        result = measure(spec)
    except BackendUnavailable as exc:
        result = {"status": "skipped", "note": str(exc)}
    except Exception as exc:  # recorded, so one failing combination does not stop the run
        log.exception("benchmark failed")
        result = {"status": "error", "note": f"{type(exc).__name__}: {exc}"}
    write_json_atomic(result_path, result)
    return 0 if result["status"] != "error" else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(run(sys.argv[1], sys.argv[2]))

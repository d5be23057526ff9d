"""One benchmark combination, measured in its own process (started by ``nanodet_deploy.bench``).

    python -m nanodet_deploy.bench.worker SPEC_JSON RESULT_PATH

Pins the process to ``threads`` CPUs, opens exactly one backend with its threads and precision
set, warms up, then times ``iterations`` full detections stage by stage (preprocess, inference,
postprocess) with the garbage collector paused. Writes a result dict (status, latency
statistics, settings, mAP) to ``RESULT_PATH``. Never imports torch unless the torch backend
is the one being measured.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from nanodet_deploy.artifacts import ExportMeta, read_meta, write_json_atomic
from nanodet_deploy.bench import BenchSpec, images_label
from nanodet_deploy.bench.records import latency_stats
from nanodet_deploy.device import cpu_busy_seconds, pick_cpus, pin_to_cpus
from nanodet_deploy.runtimes.base import BackendUnavailable
from nanodet_deploy.structures import Timing

log = logging.getLogger(__name__)

MAX_IMAGES = 64  # cycled through; enough to vary content without timing disk reads


def measure(spec: BenchSpec) -> dict:
    """Time one combination; the worker's result dict (see module doc)."""
    cpus = pick_cpus(spec.threads) if spec.pin_cpus else []
    pinned = pin_to_cpus(cpus)
    meta = read_meta(spec.export_dir)
    backend, settings = open_for_bench(spec, meta)
    settings["affinity"] = cpus if pinned else None
    meta = backend.meta  # what the opened model expects (the same as meta.json for exports)
    try:
        images = load_inputs(spec.images)
        step = make_step(backend, spec)
        check_output_shape(backend, meta, spec, images[0])
        samples, other_load = time_steps(step, images, spec.warmup, spec.iterations)
        settings["other_cpu_load"] = other_load
        result = summarize(samples)
        result["images"] = _images_note(spec, len(images))
        result["settings"] = settings
        result["map"], result["map_note"] = evaluate_map(spec, backend, meta)
    finally:
        backend.close()
    return result


def open_for_bench(spec: BenchSpec, meta: ExportMeta) -> tuple[object, dict]:
    """Open the backend with the benchmark's threads / precision; (backend, applied settings)."""
    settings: dict = {"threads": spec.threads, "precision": spec.precision}
    if spec.backend == "torch":
        backend, note = _open_torch(spec, meta)
        settings["torch_model"] = note
    else:
        from nanodet_deploy.runtimes import open_backend

        if spec.backend == "ncnn":
            settings["ncnn_powersave"] = _ncnn_powersave()
            settings["ncnn_export_weights"] = meta.precision.get("ncnn")
        backend = open_backend(
            spec.export_dir, backend=spec.backend, threads=spec.threads, precision=spec.precision
        )
    settings.update(getattr(backend, "settings", {}) or {})
    return backend, settings


def _open_torch(spec: BenchSpec, meta: ExportMeta) -> tuple[object, str]:
    """The export's checkpoint when the folder has one, else the same architecture with random
    weights (inference time does not depend on the weights; postprocess time does)."""
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailable(
            "backend torch needs the torch package: pip install torch"
        ) from exc
    from nanodet_deploy.runtimes.torch_backend import TorchBackend

    torch.set_num_interop_threads(1)
    if meta.files.get("checkpoint"):
        return TorchBackend.from_export(spec.export_dir, spec.threads), "the export's model.pth"
    from nanodet_deploy.models import build_model
    from nanodet_deploy.models.zoo import zoo_config

    model = build_model(zoo_config(meta.model_name, num_classes=meta.num_classes))
    backend = TorchBackend(
        model, input_hw=meta.input_hw, output_layout=meta.output_layout,
        fold_normalize=meta.normalize_folded, threads=spec.threads, random_weights=True,
    )  # fmt: skip
    return backend, f"zoo {meta.model_name} with random weights (an export without model.pth)"


def _ncnn_powersave() -> int:
    """ncnn: big cores only (2) on big.LITTLE CPUs, else all cores (0); set before the net."""
    import ncnn

    big, total = ncnn.get_big_cpu_count(), ncnn.get_cpu_count()
    mode = 2 if 0 < big < total else 0
    ncnn.set_cpu_powersave(mode)
    return mode


def load_inputs(images_dir: str | None) -> list[np.ndarray]:
    """Up to MAX_IMAGES images from a folder (sorted), or one synthetic 640x480 BGR image."""
    if images_dir is None:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)]
    from nanodet_deploy.preprocess import list_images, load_image

    try:
        paths = list_images(images_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise type(exc)(f"--images {exc}") from None
    return [load_image(p) for p in paths[:MAX_IMAGES]]


def make_step(backend, spec: BenchSpec) -> Callable[[np.ndarray], Timing]:
    """One full detection through the runtime Detector (exactly what ``detect`` runs),
    returning its three stage times in ms. The worker keeps ownership of ``backend``."""
    from nanodet_deploy.runtimes.base import BorrowedBackend
    from nanodet_deploy.runtimes.detector import Detector

    detector = Detector(
        BorrowedBackend(backend), resize=spec.resize_mode, input_hw=tuple(spec.input_hw)
    )

    def step(image: np.ndarray) -> Timing:
        detector.detect(image)
        return detector.last_timing

    return step


def check_output_shape(backend, meta: ExportMeta, spec: BenchSpec, image: np.ndarray) -> None:
    """Fail early with a clear message when the model cannot take this input size."""
    from nanodet_deploy.preprocess import preprocess

    tensor, info = preprocess(
        image, spec.input_hw, mode=spec.resize_mode, size_multiple=meta.size_multiple
    )
    out = np.asarray(backend.run(tensor))
    expected = (meta.num_points(info.input_hw), meta.output_channels)
    if tuple(out.shape[-2:]) != expected:
        raise ValueError(
            f"{spec.backend} output {tuple(out.shape)} at input {info.input_hw}, expected "
            f"{expected}: the model does not support this input size"
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


def evaluate_map(spec: BenchSpec, backend, meta: ExportMeta) -> tuple[float | None, str | None]:
    """mAP of this artifact through the deployment path, when asked (optional hook)."""
    if not spec.evaluate or spec.data is None:
        return None, None
    try:
        from nanodet_deploy.evaluation import evaluate_backend
    except ImportError as exc:
        return None, f"mAP not computed: evaluation unavailable ({exc})"
    value = evaluate_backend(backend, meta, spec.data, input_hw=spec.input_hw)
    return float(value), f"COCO mAP@[.5:.95] on {spec.data}"


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

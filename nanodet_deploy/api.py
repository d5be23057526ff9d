"""The Python API behind ``from nanodet_deploy import export, evaluate, train, benchmark``.

    from nanodet_deploy import Detector, benchmark, evaluate, export, train

    result = export("assets/nanodet-m-raccoon-320.pth", "exports/raccoon", size=320)
    metrics = evaluate("exports/raccoon", "configs/raccoon_nanodet-m_320_finetune.yaml")
    records = benchmark(["exports/raccoon"], threads=(1, 2))
    run = train("configs/raccoon_nanodet-m_320_finetune.yaml", out="runs/ft")

The CLI commands are thin wrappers over these functions. This module is the seam where the
torch side (``export``, ``train``) and pycocotools (``evaluate``) get imported: each function
imports what it needs when called, so ``import nanodet_deploy`` stays torch-free and fast.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nanodet_deploy.evaluation import EvalResult
    from nanodet_deploy.exporters.pipeline import ExportResult
    from nanodet_deploy.train.trainer import FitResult, Reporter

PathLike = str | os.PathLike
StepCallback = Callable[[str, str, float], None]


def export(
    checkpoint: PathLike | None,
    out: PathLike,
    *,
    model: str | None = None,
    size: int | tuple[int, int] | None = None,
    formats: Sequence[str] = ("onnx", "ncnn"),
    ncnn_fp16: bool = True,
    output: str = "decoded",
    opset: int = 13,
    fold_normalize: bool = False,
    simplify: bool = True,
    dynamic: bool = False,
    geometry: str | None = None,
    sampler: str | None = None,
    int8: bool = False,
    calib: PathLike | None = None,
    calib_images: int = 100,
    mnn_int8: str = "onnx",
    data: PathLike | None = None,
    images: PathLike | None = None,
    verify: bool = True,
    overwrite: bool = False,
    on_step: StepCallback | None = None,
) -> ExportResult:
    """Export a checkpoint (ours or official; ``model`` names the zoo architecture to load it
    into, or alone exports RANDOM weights for latency work) to ``out``: ONNX, NCNN, MNN,
    OpenVINO (``formats``), int8 models calibrated on ``calib`` (``int8=True``), meta.json and
    a parity check against torch (verify.json; with ``data``, the val mAP of every artifact).
    The folder appears complete or not at all."""
    from nanodet_deploy.checkpoint import load_model, sha256_file
    from nanodet_deploy.config import zoo_config
    from nanodet_deploy.exporters.pipeline import ExportOptions, export_model
    from nanodet_deploy.models import build_model

    t0 = time.perf_counter()
    if checkpoint is not None:
        net, ckpt = load_model(checkpoint, config=zoo_config(model) if model else None)
        sha256, random_weights = sha256_file(checkpoint), False
        source = f"{checkpoint} ({ckpt.kind}{', EMA weights' if ckpt.used_ema else ''})"
    elif model is not None:
        net, sha256, random_weights = build_model(zoo_config(model)).eval(), None, True
        source = "RANDOM weights"
    else:
        raise ValueError("give a checkpoint, or a zoo model name for random weights")
    if on_step is not None:
        on_step("load", f"{net.cfg.name} from {source}", time.perf_counter() - t0)
    options = ExportOptions(
        input_hw=_hw(size) if size is not None else net.cfg.input_hw,
        formats=tuple(formats), output_layout=output, opset=opset,
        fold_normalize=fold_normalize, simplify=simplify,
        dynamic_axes=("batch", "height", "width") if dynamic else (), ncnn_fp16=ncnn_fp16,
        geometry=geometry, sampler=sampler, int8=int8,
        calib=Path(calib) if calib is not None else None, calib_images=calib_images,
        mnn_int8=mnn_int8,
        data=Path(data) if data is not None else None, verify=verify,
        images_dir=Path(images) if images is not None else None, overwrite=overwrite,
    )  # fmt: skip
    return export_model(net, out, options, sha256, random_weights, on_step=on_step)


def evaluate(
    model: PathLike,
    data: PathLike,
    *,
    backend: str = "auto",
    threads: int = 1,
    precision: str | None = None,
    split: str = "val",
    size: int | tuple[int, int] | None = None,
    sampler: str | None = None,
    geometry: str | None = None,
) -> EvalResult:
    """COCO mAP of an export folder (any backend) or a checkpoint (torch) on a data split,
    through the deployment path (preprocess -> backend -> postprocess) with official
    evaluation settings (score > 0.05, NMS IoU 0.6, 100 detections)."""
    from nanodet_deploy.detector import Detector
    from nanodet_deploy.evaluation import EVAL_SETTINGS, evaluate_detector

    settings = {**EVAL_SETTINGS, **({"geometry": geometry} if geometry else {})}
    with Detector(
        model, backend, threads=threads, precision=precision, sampler=sampler,
        input_hw=_hw(size) if size is not None else None, **settings,
    ) as detector:  # fmt: skip
        return evaluate_detector(detector, data, split=split)


def train(
    config: PathLike,
    out: PathLike | None = None,
    *,
    resume: bool = False,
    device: str = "auto",
    epochs: int | None = None,
    reporter: Reporter | None = None,
) -> FitResult:
    """Train (or ``resume``) the run a training YAML describes into ``out`` (default
    ``runs/<config name>``): last.pth, best.pth (by val mAP), metrics CSV and log."""
    from nanodet_deploy.train.trainer import fit
    from nanodet_deploy.train_config import load_config

    out = Path(out) if out is not None else Path("runs") / Path(config).stem
    return fit(load_config(config), out, resume=resume, device=device, epochs=epochs,
               reporter=reporter)  # fmt: skip


def benchmark(
    exports: Sequence[PathLike],
    *,
    backends: Sequence[str] = ("auto",),
    precisions: Sequence[str] = ("auto",),
    threads: Sequence[int] = (1,),
    sizes: Sequence[int | tuple[int, int]] | None = None,
    warmup: int = 20,
    iterations: int = 200,
    rounds: int = 3,
    images: PathLike | None = None,
    data: PathLike | None = None,
    geometry: str = "plain",
    sampler: str | None = None,
    json_out: PathLike = "bench.json",
    append: bool = False,
    device_name: str | None = None,
    timeout_s: float = 900.0,
) -> list[dict]:
    """Latency (and, with ``data``, mAP) of every (export, size, backend, precision, threads)
    combination, each in ``rounds`` fresh pinned processes (the median one is the record); one
    record per combination, also written to ``json_out`` as they come. ``auto`` measures what
    exists (``bench.spec``)."""
    from nanodet_deploy.bench.harness import run_plan
    from nanodet_deploy.bench.records import RecordFile
    from nanodet_deploy.bench.spec import BenchSpec, plan
    from nanodet_deploy.device import describe_device, library_versions

    template = BenchSpec(
        export_dir="", backend="ncnn", precision="fp32", threads=1, input_hw=(0, 0),
        warmup=warmup, iterations=iterations, images=str(images) if images else None,
        geometry=geometry, sampler=sampler, data=str(data) if data else None, rounds=rounds,
    )  # fmt: skip
    planned = plan(
        [str(e) for e in exports], list(backends), list(precisions), list(threads),
        [_hw(s) for s in sizes] if sizes else None, template,
    )  # fmt: skip
    device = describe_device()
    if device_name:
        device["name"] = device_name
    results = RecordFile(json_out, keep_existing=append)
    return run_plan(planned, results, device=device, versions=library_versions(),
                    timeout_s=timeout_s)  # fmt: skip


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))

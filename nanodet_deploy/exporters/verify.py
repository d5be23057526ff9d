"""Parity of an export: the same inputs through the torch wrapper and every exported backend.

Per backend and input: the max abs difference of the class scores, of the distances in pixels
(stride units times the point's stride) and of the whole output, then the agreement of the
final detections after the shared postprocessor (``matching.py``: every detection scoring at
least ``compare_score`` needs a same-label partner within IoU / score tolerance on the other
side, NMS near-ties excepted). Low-score detections only serve as partners, so a detection
whose score sits at the 0.05 threshold cannot fail the check by flipping across it. Raw-layout
exports are compared after the NumPy decode (``postprocess.decode_raw``), like an app uses them.

Torch-free: the reference is any Backend (the exporter passes a TorchBackend).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nanodet_deploy.artifacts import OUTPUT_RAW, ExportMeta
from nanodet_deploy.exporters.matching import Candidates, DetectionAgreement, match_detections
from nanodet_deploy.postprocess import center_points, decode_raw, postprocess
from nanodet_deploy.preprocess import list_images, load_image, pad_to, preprocess
from nanodet_deploy.runtimes.base import Backend
from nanodet_deploy.structures import Detections, PreprocessSpec, ResizeInfo

VERIFY_FILE = "verify.json"
MAX_IMAGES = 16


@dataclass(frozen=True)
class Tolerance:
    score: float  # max abs difference of sigmoid scores
    dist_px: float  # max abs difference of distances, in pixels
    det_iou: float = 0.98  # min IoU of matched detections
    det_score: float = 0.01  # max score difference of matched detections
    slack: float = 0.02  # score slack for "the other side must have it too" (module doc)
    min_agreement: float = 1.0  # share of detections that must find a partner, both ways


# fp32: the same graph computed in another order. fp16 weights add ~5e-4 relative error per
# layer (~0.02 stride units on distances): its verdict rests on the detections; the number
# bounds only catch gross errors. int8 is compared with the fp32 export on held-out images
# and is not expected to match closely: a detection must find a same-label partner with
# IoU >= 0.5 and a score within 0.15, for at least 90% of the detections both ways.
TOLERANCES = {
    "fp32": Tolerance(score=1e-3, dist_px=0.05),
    "fp16": Tolerance(score=0.01, dist_px=2.0),
    "bf16": Tolerance(score=0.05, dist_px=4.0, det_iou=0.9, det_score=0.05, slack=0.05),
    "int8": Tolerance(score=1.0, dist_px=1e9, det_iou=0.5, det_score=0.15, slack=0.15,
                      min_agreement=0.9),
}  # fmt: skip


@dataclass(frozen=True)
class VerifyInput:
    name: str
    tensor: np.ndarray  # (1, 3, H, W) float32, as the backends take it
    resize_info: ResizeInfo


@dataclass(frozen=True)
class InputCheck:
    input: str
    input_hw: tuple[int, int]
    max_abs_diff: float
    max_score_diff: float
    max_dist_px_diff: float
    detections: DetectionAgreement


@dataclass
class BackendCheck:
    name: str  # "<backend>_<precision>", the key bench.meta.parity_status looks up
    backend: str
    precision: str
    tolerance: Tolerance
    inputs: list[InputCheck] = field(default_factory=list)

    def worst(self, key: str) -> float:
        return max((getattr(c, key) for c in self.inputs), default=0.0)

    @property
    def agreement(self) -> float:
        """Share of the detections (both sides) that found a partner (or an NMS near-tie)."""
        total = sum(c.detections.num_ref + c.detections.num_other for c in self.inputs)
        lost = sum(c.detections.unmatched_ref + c.detections.unmatched_other for c in self.inputs)
        return 1.0 - lost / total if total else 1.0

    @property
    def passed(self) -> bool:
        tol = self.tolerance
        if tol.min_agreement < 1.0:
            return self.agreement >= tol.min_agreement and all(
                c.detections.min_iou is None or c.detections.min_iou >= tol.det_iou
                for c in self.inputs
            )
        for c in self.inputs:
            d = c.detections
            if c.max_score_diff > tol.score or c.max_dist_px_diff > tol.dist_px:
                return False
            if not d.labels_equal or (d.min_iou is not None and d.min_iou < tol.det_iou):
                return False
            if d.max_score_diff is not None and d.max_score_diff > tol.det_score:
                return False
        return True

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "passed": self.passed,
            "agreement": self.agreement,
            "max_abs_diff": self.worst("max_abs_diff"),
            "max_score_diff": self.worst("max_score_diff"),
            "max_dist_px_diff": self.worst("max_dist_px_diff"),
            "tolerance": asdict(self.tolerance),
            "inputs": [
                {**asdict(c), "labels_equal": c.detections.labels_equal} for c in self.inputs
            ],
        }


@dataclass(frozen=True)
class PostprocessSettings:
    score_thresh: float = 0.05  # official NanoDet
    iou_thresh: float = 0.6
    max_det: int = 100
    compare_score: float = 0.3  # detections at or above this must agree (module doc)


def verify_backends(
    reference: Backend,
    backends: dict[str, Backend],
    precisions: dict[str, str],
    inputs: list[VerifyInput],
    settings: PostprocessSettings = PostprocessSettings(),
) -> list[BackendCheck]:
    """Compare every backend in ``backends`` (check name -> Backend; the check name is
    ``<backend>_<precision>``) with ``reference`` on ``inputs``."""
    meta = reference.meta
    checks = []
    for name, backend in backends.items():
        precision = precisions[name]
        checks.append(BackendCheck(name, backend.name, precision, TOLERANCES[precision]))
    for item in inputs:
        ref_out = _decoded(reference.run(item.tensor), meta)
        ref_det = _detect(ref_out, meta, item.resize_info, settings)
        for check, backend in zip(checks, backends.values(), strict=True):
            out = _decoded(backend.run(item.tensor), meta)
            check.inputs.append(
                _compare(item, meta, ref_out, ref_det, out, settings, check.tolerance)
            )
    return checks


def _decoded(output: np.ndarray, meta: ExportMeta) -> np.ndarray:
    if meta.output_layout == OUTPUT_RAW:
        return decode_raw(output, meta.num_classes, meta.reg_max)
    return output


def _detect(
    output: np.ndarray, meta: ExportMeta, info: ResizeInfo, settings: PostprocessSettings
) -> Detections:
    return postprocess(
        output,
        input_hw=info.input_hw,
        strides=meta.strides,
        center_offset=meta.center_offset,
        resize_info=info,
        score_thresh=settings.score_thresh,
        iou_thresh=settings.iou_thresh,
        max_det=settings.max_det,
        class_names=meta.class_names,
    )


def _compare(
    item: VerifyInput,
    meta: ExportMeta,
    ref_out: np.ndarray,
    ref_det: Detections,
    out: np.ndarray,
    settings: PostprocessSettings,
    tol: Tolerance,
) -> InputCheck:
    c, info = meta.num_classes, item.resize_info
    _, point_strides = center_points(info.input_hw, meta.strides, meta.center_offset)
    diff = np.abs(out - ref_out)
    det = _detect(out, meta, info, settings)
    agreement = match_detections(
        ref_det,
        det,
        Candidates.from_output(ref_out, meta.strides, meta.center_offset, info),
        Candidates.from_output(out, meta.strides, meta.center_offset, info),
        compare_score=settings.compare_score,
        slack=tol.slack,
        score_tol=tol.det_score,
        min_iou=tol.det_iou,
        max_det=settings.max_det,
    )
    return InputCheck(
        input=item.name,
        input_hw=info.input_hw,
        max_abs_diff=float(diff.max()),
        max_score_diff=float(diff[:, :c].max()),
        max_dist_px_diff=float((diff[:, c:] * point_strides[:, None]).max()),
        detections=agreement,
    )


def verification_inputs(
    meta: ExportMeta,
    images_dir: Path | None,
    pad_to_hw: tuple[int, int] | None,
    num_random: int = 2,
    seed: int = 0,
    spec: PreprocessSpec | None = None,
) -> list[VerifyInput]:
    """Real images (preprocessed with ``spec``, default meta.json's preprocess block) or fixed
    random inputs at the export size.

    ``pad_to_hw``: pad every tensor bottom/right to this size (a static ONNX takes only it);
    padding is the mean colour, exactly as the ``pad`` geometry pads, so ``ResizeInfo`` stays
    valid.
    """
    if images_dir is None:
        return _random_inputs(meta, num_random, seed)
    spec = spec or meta.preprocess
    items = []
    for path in image_paths(images_dir):
        tensor, info = preprocess(load_image(path), spec)
        if pad_to_hw is not None and tuple(info.input_hw) != tuple(pad_to_hw):
            tensor, info = pad_to(tensor, info, pad_to_hw, spec)
        items.append(VerifyInput(path.name, tensor, info))
    return items


def image_paths(images_dir: Path) -> list[Path]:
    """The first MAX_IMAGES images of ``--images`` (sorted)."""
    try:
        return list_images(images_dir)[:MAX_IMAGES]
    except (FileNotFoundError, ValueError) as exc:
        raise type(exc)(f"--images {exc}") from None


def _random_inputs(meta: ExportMeta, num: int, seed: int) -> list[VerifyInput]:
    rng = np.random.default_rng(seed)
    h, w = meta.input_hw
    items = []
    for k in range(num):
        if meta.normalize_folded:
            tensor = rng.uniform(0.0, 255.0, size=(1, 3, h, w)).astype(np.float32)
        else:
            tensor = rng.standard_normal(size=(1, 3, h, w)).astype(np.float32)
        info = ResizeInfo(src_hw=(h, w), input_hw=(h, w), scale_xy=(1.0, 1.0))
        items.append(VerifyInput(f"random-{seed}-{k}", tensor, info))
    return items


def verify_report(checks: list[BackendCheck], inputs: list[VerifyInput], meta: ExportMeta,
                  settings: PostprocessSettings) -> dict:  # fmt: skip
    """The verify.json document."""
    return {
        "reference": "torch (export wrapper)",
        "model_name": meta.model_name,
        "output_layout": meta.output_layout,
        "inputs": [{"name": i.name, "input_hw": list(i.resize_info.input_hw)} for i in inputs],
        "postprocess": asdict(settings),
        "passed": all(c.passed for c in checks),
        "checks": {c.name: c.to_dict() for c in checks},
    }

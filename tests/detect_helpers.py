"""Shared by the Detector / detect CLI / torch-free / end-to-end tests (not a test module).

``coco_export(base_dir, reference_dir)`` exports the official NanoDet-m COCO weights once per
test session (the tests' session fixtures pass ``tmp_path_factory.getbasetemp()``, and the
folder is reused when it already holds a finished export): ONNX with dynamic height/width
(onnxruntime runs at 320 and 416) and NCNN with fp32 weights (``nanodet-export --fp32``),
exported at 320, without the exporter's own parity check (tests/test_export_parity.py does that).

``TORCH_BLOCKER`` is Python source that makes every ``import torch`` / ``import torch.x`` raise
ModuleNotFoundError; it must run before anything else in the process.
"""

from __future__ import annotations

from pathlib import Path

COCO_WEIGHTS = "nanodet-m_coco.pth"
EXPORT_HW = (320, 320)

TORCH_BLOCKER = '''
import importlib.abc
import sys


class _BlockTorch(importlib.abc.MetaPathFinder):
    """Behave as if torch were not installed: import torch / torch.* raises."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torch" or fullname.startswith("torch."):
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (blocked by the test)", name=fullname
            )
        return None


sys.meta_path.insert(0, _BlockTorch())
'''


def coco_export(base_dir: Path, reference_dir: Path) -> Path:
    """The export folder of the official NanoDet-m COCO weights (module doc); made once."""
    out = Path(base_dir) / "nanodet-m_coco_320_fp32_dynamic"
    if (out / "meta.json").is_file():
        return out
    from nanodet_deploy.checkpoint import load_model, sha256_file
    from nanodet_deploy.exporters.pipeline import ExportOptions, export_model

    weights = reference_dir / COCO_WEIGHTS
    model, _ = load_model(weights)
    options = ExportOptions(
        input_hw=EXPORT_HW,
        dynamic_axes=("batch", "height", "width"),
        ncnn_fp16=False,
        verify=False,
    )
    export_model(model, out, options, checkpoint_sha256=sha256_file(weights))
    return out


def preprocess_as(image, input_hw, *, mode="pad", sampler="warp", normalize=True, **spec_fields):
    """``preprocess`` with the pre-sampler call style: ``mode`` is the geometry, ``normalize``
    the opposite of ``normalize_folded``; the other fields go to ``PreprocessSpec``."""
    from nanodet_deploy.preprocess import preprocess
    from nanodet_deploy.structures import PreprocessSpec

    spec = PreprocessSpec(
        tuple(input_hw), geometry=mode, sampler=sampler, normalize_folded=not normalize,
        **spec_fields,
    )  # fmt: skip
    return preprocess(image, spec)


# What legitimately varies between OpenCV builds, versions and CPUs when a tensor made by our
# bilinear resampling is compared with one made elsewhere (the official fixtures, OpenCV 5.0):
# +-1 grey level of fixed-point bilinear rounding, in a small fraction of pixels. Measured:
# opencv 5.1.0.95 vs 5.0.0.93 differs in 3-176 of ~360k elements (<= 0.05%), by exactly one
# level (1/std after normalization). Allowed: one level, in at most 0.5% of the elements.
MAX_GREY_LEVELS = 1.0
MAX_CHANGED_FRACTION = 0.005
FLOAT_ATOL = 1e-5  # float rounding of the normalization itself


def interpolation_mismatch(actual, desired, std_bgr=(57.375, 57.12, 58.395)) -> str | None:
    """Why two normalized (1, 3, H, W) BGR tensors differ by more than interpolation rounding
    allows (see above), or None when they agree."""
    import numpy as np

    if actual.shape != desired.shape:
        return f"shape {actual.shape} != {desired.shape}"
    diff = np.abs(actual.astype(np.float64) - desired.astype(np.float64))
    level = 1.0 / np.asarray(std_bgr, np.float64).reshape(1, 3, 1, 1)
    too_big = diff > MAX_GREY_LEVELS * level + FLOAT_ATOL
    if too_big.any():
        return f"{int(too_big.sum())} elements differ by more than one grey level (max {diff.max():.4f})"
    changed = float((diff > FLOAT_ATOL).mean())
    if changed > MAX_CHANGED_FRACTION:
        return f"{changed:.2%} of the elements differ (at most {MAX_CHANGED_FRACTION:.1%} allowed)"
    return None

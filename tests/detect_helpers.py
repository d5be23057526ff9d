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
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by the test)")
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

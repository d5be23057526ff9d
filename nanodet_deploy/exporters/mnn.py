"""ONNX -> MNN with the MNN wheel's own converter, and MNN's post-training int8 quantizer.

Both tools are the C++ ``mnnconvert`` / ``mnnquant`` compiled into the MNN wheel as the
extension module ``_tools``. They run in a child Python process (``sys.executable``) with a
timeout and captured output, and the child loads the file it wrote, because the tools:

- report failure only in their output: the call returns True (exit status 0) even for a missing
  input file, so success is judged by the produced file loading in MNN;
- can abort the whole process (``std::length_error`` -> ``terminate``) on bad arguments.

The wheel's console scripts ``mnnconvert`` / ``mnnquant`` (``MNN.tools.mnnconvert`` /
``MNN.tools.mnnquant``) are not used: they import ``MNN.tools.utils.log``, which runs
``pip install -U aliyun-log-python-sdk`` through ``os.system`` when that package is missing and
then uploads usage logs (tool arguments, model id, machine id) to Alibaba Cloud; and the
``mnnquant`` wrapper of MNN 3.6.1 calls the extension with three strings instead of an argv
list, which aborts with ``std::length_error``. The argv-list form used here works.

An MNN model converted from an ONNX with dynamic height/width (input ``[1, 3, -1, -1]``) runs at
any multiple of 32; one converted from a static ONNX keeps the sizes in its reshapes and accepts
only the export size (``MnnExportInfo.static_hw``).

int8 (``quantize_mnn``: ``--mnn-int8 mnnquant``; the export's default is exporters/mnn_int8.py,
which gives MNN the onnxruntime int8 model's scales), measured with MNN 3.6.1: the ``EMA``
activation ranges give scores within ~0.03 of fp32 at the best point; ``KL`` gave unusable
models (scores off by up to 0.88, with 8 or 40 calibration images: its thresholds clip the
sigmoid scores). EMA needs a model with a fixed input size (on a dynamic one mnnquant crashes:
"Invalid Tensor, the session may not be ready"), so quantize the conversion of a static ONNX; the
int8 model then takes only that size. ``ADMM`` feeds all images as one batch, which NanoDet's
fixed-batch reshapes refuse, so it is not offered. EMA's ranges are a 0.99-momentum moving
average of per-image minima / maxima (batch 1), so the first of 100 calibration images weighs
37%; ``skip_quant_op_names`` is not read on the EMA path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nanodet_deploy.exporters.errors import ExportError

log = logging.getLogger(__name__)

MNN_FILE = "model.mnn"
MNN_INT8_FILE = "model.int8.mnn"
CONVERT_TIMEOUT_S = 300
QUANT_TIMEOUT_S = 900
FEATURE_METHODS = ("EMA", "KL")  # activation (feature map) ranges; module doc
WEIGHT_METHODS = ("MAX_ABS", "ADMM")
CALIB_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tga")  # stb_image reads these
_INFO_MARKER = "NANODET_MNN_INFO "

# Runs in the child: the tool, then a load check of what it wrote (module doc).
_CHILD_SCRIPT = r"""
import json, os, sys
tool, out_path, input_name, output_name, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
if tool != "inspect":
    import _tools
    getattr(_tools, tool)([tool, *argv])
    sys.stdout.flush()
if os.path.isfile(out_path):
    import MNN.expr as F
    import MNN.nn as nn
    variables = F.load_as_dict(out_path)
    inputs, _ = F.get_inputs_and_outputs(variables)
    nn.load_module_from_file(out_path, [input_name], [output_name])
    shapes = {name: list(var.shape) for name, var in inputs.items()}
    print("NANODET_MNN_INFO " + json.dumps({"inputs": shapes}), flush=True)
"""


@dataclass(frozen=True)
class MnnExportInfo:
    path: Path
    fp16_weights: bool
    input_shapes: dict[str, list[int]]  # from the MNN file; -1 marks a dynamic axis
    static_hw: tuple[int, int] | None  # the only input (H, W) it accepts; None: any size
    tool_log: str


@dataclass(frozen=True)
class MnnQuantInfo:
    path: Path
    num_images: int
    input_hw: tuple[int, int]
    feature_method: str
    weight_method: str
    tool_log: str

    @property
    def calibration(self) -> dict:
        """How the int8 model was calibrated, for meta.json."""
        h, w = self.input_hw
        return {
            "tool": "mnnquant",
            "images": self.num_images,
            "feature_quantize_method": self.feature_method,
            "weight_quantize_method": self.weight_method,
            "calibration_preprocess": f"whole image resized to {w}x{h} (aspect ratio not kept)",
        }


def convert_onnx_to_mnn(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    fp16_weights: bool = False,
    input_name: str = "images",
    output_name: str = "output",
    compression_params: str | os.PathLike | None = None,
) -> MnnExportInfo:
    """Convert ``onnx_path`` to the MNN model ``out_path``, checked by loading it once.

    ``fp16_weights`` stores convolution weights as fp16 (``--fp16``: half the file; MNN computes
    in fp32 or fp16 as the runtime's precision mode says). ``input_name`` / ``output_name`` are
    the tensors the load check opens (meta.json's ``input_name`` / ``output_name``).
    ``compression_params``: a serialized ``MNN.Compression.Pipeline`` for
    ``--compressionParamsFile`` (exporters/mnn_int8.py writes one to make int8 convolutions).
    """
    onnx_path, out_path = Path(onnx_path).resolve(), Path(out_path).resolve()
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path}: no such ONNX file to convert to MNN")
    with tempfile.TemporaryDirectory(prefix="mnnconvert-", dir=out_path.parent) as scratch:
        tmp_out = Path(scratch) / out_path.name
        argv = ["-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(tmp_out),
                "--bizCode", "nanodet-deploy"]  # fmt: skip
        if fp16_weights:
            argv.append("--fp16")
        if compression_params is not None:
            argv += ["--compressionParamsFile", str(Path(compression_params).resolve())]
        tool_log, info = _run_tool("mnnconvert", tmp_out, input_name, output_name, argv,
                                   CONVERT_TIMEOUT_S, Path(scratch))  # fmt: skip
        shutil.move(str(tmp_out), out_path)
    shapes = info["inputs"]
    return MnnExportInfo(
        out_path, fp16_weights, shapes, _static_hw(shapes.get(input_name), input_name), tool_log
    )


def quantize_mnn(
    mnn_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calib_images: Sequence[str | os.PathLike],
    *,
    input_hw: tuple[int, int],
    mean_bgr: Sequence[float],
    std_bgr: Sequence[float],
    color_order: str = "BGR",
    feature_method: str = "EMA",
    weight_method: str = "MAX_ABS",
    input_name: str = "images",
    output_name: str = "output",
) -> MnnQuantInfo:
    """Post-training int8 quantization of ``mnn_path`` with ``mnnquant``, calibrated on
    ``calib_images`` (linked into a temp folder), written to ``out_path``.

    Calibration input: each image is decoded by MNN (stb_image: jpg, png, bmp, ...; EXIF
    orientation ignored) and the **whole image is resized to** ``input_hw`` (bilinear, aspect ratio
    not kept), then normalized with the same ``(x - mean) / std`` our preprocess uses (mnnquant's
    ``mean`` and ``normal = 1 / std``, in ``color_order``). Our pad / letterbox preprocessing
    instead keeps the aspect ratio and pads with the mean colour (0 after normalization), so the
    calibration sees objects stretched to the square and no padded area. Activation ranges come
    from the same kind of content and transfer well, but the statistics are not those of the
    exact tensors the deployed model sees; check the int8 model's mAP through the deployment path
    (``evaluation.evaluate``). For a folded-normalization export pass mean 0 and std 1.

    ``mnn_path`` must have a fixed input size equal to ``input_hw`` (module doc: convert the static
    ONNX); ``input_name`` / ``output_name`` are the tensors the load checks open.
    ``feature_method``: EMA (default) or KL for activation ranges (module doc); ``weight_method``:
    MAX_ABS or ADMM. Runs one forward per image: use tens to a few hundred representative images.
    """
    mnn_path, out_path = Path(mnn_path).resolve(), Path(out_path).resolve()
    images = _check_quant_inputs(mnn_path, calib_images, feature_method, weight_method)
    _check_fixed_size(mnn_path, input_hw, input_name, output_name)
    with tempfile.TemporaryDirectory(prefix="mnnquant-", dir=out_path.parent) as scratch:
        work = Path(scratch)
        _link_images(images, work / "images")
        config = _quant_config(work / "images", len(images), input_hw, mean_bgr, std_bgr,
                               color_order, feature_method, weight_method)  # fmt: skip
        (work / "quant.json").write_text(json.dumps(config, indent=2))
        tmp_out = work / out_path.name
        argv = [str(mnn_path), str(tmp_out), str(work / "quant.json")]
        tool_log, _ = _run_tool("mnnquant", tmp_out, input_name, output_name, argv,
                                QUANT_TIMEOUT_S, work)  # fmt: skip
        if "Quantize model done" not in tool_log:
            raise ExportError(f"mnnquant did not finish quantizing:\n{_tail(tool_log)}")
        shutil.move(str(tmp_out), out_path)  # its scale dump (<out>.json) stays in scratch
    hw = (int(input_hw[0]), int(input_hw[1]))
    return MnnQuantInfo(out_path, len(images), hw, feature_method, weight_method, tool_log)


def _check_quant_inputs(
    mnn_path: Path,
    calib_images: Sequence[str | os.PathLike],
    feature_method: str,
    weight_method: str,
) -> list[Path]:
    if not mnn_path.is_file():
        raise ExportError(f"{mnn_path}: no such MNN model to quantize")
    if feature_method not in FEATURE_METHODS:
        raise ValueError(f"feature_method must be one of {FEATURE_METHODS}, got {feature_method!r}")
    if weight_method not in WEIGHT_METHODS:
        raise ValueError(f"weight_method must be one of {WEIGHT_METHODS}, got {weight_method!r}")
    images = [Path(p) for p in calib_images]
    if not images:
        raise ValueError("quantize_mnn needs at least one calibration image")
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"calibration images not found: {missing[:5]}")
    unreadable = [p.name for p in images if p.suffix.lower() not in CALIB_SUFFIXES]
    if unreadable:
        raise ValueError(
            f"mnnquant reads only {', '.join(CALIB_SUFFIXES)} images, got {unreadable[:5]}"
        )
    return images


def _check_fixed_size(
    mnn_path: Path, input_hw: tuple[int, int], input_name: str, output_name: str
) -> None:
    """mnnquant calibrates at ``input_hw``: the model must have exactly that fixed input size."""
    _, info = _run_tool("inspect", mnn_path, input_name, output_name, [], CONVERT_TIMEOUT_S,
                        mnn_path.parent)  # fmt: skip
    static = _static_hw(info["inputs"].get(input_name), input_name)
    hw = (int(input_hw[0]), int(input_hw[1]))
    if static != hw:
        size = (
            "dynamic height/width" if static is None else f"a fixed {static[0]}x{static[1]} input"
        )
        raise ValueError(
            f"{mnn_path.name} has {size}; mnnquant needs a model with a fixed {hw[0]}x{hw[1]} "
            "input: convert a static ONNX exported at that size (convert_onnx_to_mnn)"
        )


def _link_images(images: list[Path], folder: Path) -> None:
    """Symlink (copy where links fail) ``images`` into ``folder`` under unique names."""
    folder.mkdir()
    for k, src in enumerate(images):
        dst = folder / f"{k:05d}_{src.name}"
        try:
            dst.symlink_to(src.resolve())
        except OSError:
            shutil.copyfile(src, dst)


def _quant_config(
    images_dir: Path,
    num_images: int,
    input_hw: tuple[int, int],
    mean_bgr: Sequence[float],
    std_bgr: Sequence[float],
    color_order: str,
    feature_method: str,
    weight_method: str,
) -> dict:
    """mnnquant's JSON config: mean / normal are given in the tensor's channel order."""
    if color_order not in ("BGR", "RGB"):
        raise ValueError(f"color_order must be BGR or RGB, got {color_order!r}")
    mean, std = [float(v) for v in mean_bgr], [float(v) for v in std_bgr]
    if len(mean) != 3 or len(std) != 3 or 0.0 in std:
        raise ValueError(f"mean/std need 3 values, std non-zero: {mean_bgr}, {std_bgr}")
    if color_order == "RGB":
        mean, std = mean[::-1], std[::-1]
    h, w = int(input_hw[0]), int(input_hw[1])
    return {
        "format": color_order,
        "mean": mean,
        "normal": [1.0 / s for s in std],
        "width": w,
        "height": h,
        "path": str(images_dir) + os.sep,
        "used_image_num": num_images,
        "feature_quantize_method": feature_method,
        "weight_quantize_method": weight_method,
    }


def _run_tool(
    tool: str,
    out_path: Path,
    input_name: str,
    output_name: str,
    argv: list[str],
    timeout_s: int,
    cwd: Path,
) -> tuple[str, dict]:
    """Run ``_tools.<tool>(argv)`` and the load check in a child; (tool output, load info)."""
    cmd = [sys.executable, "-c", _CHILD_SCRIPT, tool, str(out_path), input_name, output_name, *argv]
    log.debug("running MNN %s %s", tool, " ".join(argv))
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace",
                              timeout=timeout_s, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"MNN {tool} did not finish in {timeout_s} s") from exc
    output = (proc.stdout or "") + (proc.stderr or "")
    if "No module named '_tools'" in output or "No module named 'MNN'" in output:
        raise ExportError(f"MNN is not installed: pip install MNN (needed for MNN {tool})")
    info = _parse_info(output)
    if proc.returncode != 0 or info is None:
        what = "wrote no loadable model" if proc.returncode == 0 else f"exit code {proc.returncode}"
        raise ExportError(f"MNN {tool} failed ({what}):\n{_tail(output)}")
    return output, info


def _parse_info(output: str) -> dict | None:
    for line in reversed(output.splitlines()):
        if line.startswith(_INFO_MARKER):
            return json.loads(line[len(_INFO_MARKER) :])
    return None


def _static_hw(shape: list[int] | None, input_name: str) -> tuple[int, int] | None:
    if shape is None or len(shape) != 4:
        raise ExportError(f"MNN model input {input_name!r} has shape {shape}, expected 4-D NCHW")
    h, w = shape[2], shape[3]
    return (int(h), int(w)) if h > 0 and w > 0 else None


def _tail(text: str, lines: int = 40) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(f"  | {line}" for line in kept) if kept else "  | (no output)"


__all__ = [
    "MNN_FILE",
    "MNN_INT8_FILE",
    "MnnExportInfo",
    "MnnQuantInfo",
    "convert_onnx_to_mnn",
    "quantize_mnn",
]

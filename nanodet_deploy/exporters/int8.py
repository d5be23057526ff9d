"""INT8 exports: calibration images -> the export's own preprocessing -> quantized models.

    paths, held_out = calibration_split(Path("photos/"), num_images=100)
    tensors = calibration_tensors(paths, meta.preprocess, static_hw=(320, 320))
    info = quantize_onnx(Path("model.onnx"), Path("model.int8.onnx"), tensors, meta)

Calibration source (``--calib``): a folder of images, or a data YAML (its train split). The
images go through ``preprocess`` with the export's preprocess block (meta.json), so the ranges
are calibrated on exactly the tensors the deployed model sees. Unreadable images are skipped
(counted); none readable is an error naming the source. When the source holds enough images,
every fifth one (up to 16) is held out of calibration for the int8 agreement check.

onnxruntime (``model.int8.onnx``): static quantization, QDQ format, per-channel int8 weights,
asymmetric uint8 activations (``u8``: onnxruntime's U8S8 kernels, which use VNNI's unsigned x
signed dot product on x86; signed ``s8`` activations ran 1.3-1.5x slower there, same mAP),
convolutions only, every convolution quantized (``float_layers="none"``; the decode's softmax /
integral / sigmoid stay float), percentile calibration, after two rewrites of the float graph
(``int8_rewrite``): per-channel activation equalization (exact in float) and bias correction.
They cut the int8 model's output error against fp32 on val images by 28-50% (NanoDet-Plus-m
320: mean score error on detected anchors 0.015 -> 0.008; benchmarks/results/int8/
int8_rewrite.md), cost no inference time (the same graph, other numbers) and double the
quantization time (a second quantize_static pass after the bias correction). Keeping the
first convolution in float ran 1.2-1.3x slower at 1 thread (onnxruntime then runs the MaxPool
after it on uint8 in NCHW, 3.3 ms against 0.1 ms for its NHWC kernel); the equalization fixes
the accuracy it was meant to fix. ncnn: ``max`` (no clipping); the first and head
convolutions, every depthwise convolution (``dw``) and the decode's integral in float.
Chosen on the val mAP of both raccoon models at 320 and 416 (exports of benchmarks/run_all.sh):
ncnn with ACIQ and every conv int8 lost 0.011 / 0.032 (NanoDet-m 320 / 416); with the depthwise
convs in int8 NanoDet-Plus-m lost 0.022 / 0.034 (320 / 416), with them in float it is at +0.014
/ -0.007 and NanoDet-m at -0.003 / -0.011, and on x86 the model runs 1.3-1.45x faster (ncnn's
x86 int8 depthwise kernels are slower than its fp32 ones). The "held-out"
images of benchmarks/int8_choice.py are training images the model has fit, and ranked the
recipes differently: judge int8 on images the model was not trained on. Results and timing
in benchmarks/results/int8/ (int8_choice.md NanoDet-m, plus/ NanoDet-Plus-m, int8_speed.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from nanodet_deploy.artifacts import ExportMeta
from nanodet_deploy.config import read_yaml
from nanodet_deploy.datasets import DatasetError, load_split
from nanodet_deploy.exporters import int8_rewrite, ncnn_calib, ncnn_int8
from nanodet_deploy.exporters.errors import ExportError
from nanodet_deploy.preprocess import ImageLoadError, list_images, load_image, pad_to, preprocess
from nanodet_deploy.structures import PreprocessSpec
from nanodet_deploy.train_config import load_data_config

log = logging.getLogger(__name__)

ONNX_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
DEFAULT_ONNX_METHOD = "percentile"
FLOAT_LAYER_GROUPS = ("first", "head", "dw")  # float_layers: "+"-joined groups, or "none"
DEFAULT_FLOAT_LAYERS = "none"
ONNX_ACTIVATIONS = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
DEFAULT_ONNX_ACTIVATION = "u8"
DEFAULT_CALIB_IMAGES = 100
DEFAULT_NCNN_METHOD = "max"  # ncnn2table's KL cost 0.02-0.03 held-out mAP here (module doc)
DEFAULT_NCNN_FLOAT_LAYERS = "first+head+dw"  # and the decode's integral conv, always
MAX_HELD_OUT = 16
DEFAULT_REWRITE = int8_rewrite.Rewrite()


@dataclass(frozen=True)
class CalibrationSet:
    source: str  # the folder or data YAML it came from
    calibration: list[Path]
    held_out: list[Path]  # for the int8 agreement check (never calibrated on)


@dataclass(frozen=True)
class OnnxInt8Info:
    path: Path
    method: str
    float_layers: str
    float_nodes: tuple[str, ...]
    quantized_convs: int
    num_images: int
    activation: str = DEFAULT_ONNX_ACTIVATION
    rewrite: int8_rewrite.Rewrite | None = None
    equalized_tensors: int = 0
    bias_corrected_convs: int = 0

    def to_meta(self) -> dict:
        return {
            "file": self.path.name,
            "tool": "onnxruntime.quantization.quantize_static",
            "format": "QDQ",
            "weights": "int8, per output channel",
            "activations": f"{'uint8' if self.activation == 'u8' else 'int8'}, per tensor, "
            "asymmetric",
            "calibration_method": self.method,
            "float_layers": self.float_layers,
            "float_nodes": list(self.float_nodes),
            "quantized_convs": self.quantized_convs,
            **(self.rewrite.to_meta() if self.rewrite else {}),
            "equalized_tensors": self.equalized_tensors,
            "bias_corrected_convs": self.bias_corrected_convs,
        }


def calibration_split(source: str | os.PathLike, num_images: int) -> CalibrationSet:
    """Calibration images (at most ``num_images``) and held-out images from ``source``."""
    if num_images < 1:
        raise ValueError(f"--calib-images must be >= 1, got {num_images}")
    paths = _source_images(Path(source))
    held_out = paths[4::5][:MAX_HELD_OUT] if len(paths) >= 10 else []
    chosen = [p for p in paths if p not in set(held_out)]
    if len(chosen) > num_images:  # spread over the source, not its first files
        step = len(chosen) / num_images
        chosen = [chosen[int(i * step)] for i in range(num_images)]
    return CalibrationSet(str(source), chosen, held_out)


def _source_images(source: Path) -> list[Path]:
    if source.is_dir():
        try:
            return list_images(source)
        except ValueError as exc:
            raise ValueError(f"--calib {exc}") from None
    if source.suffix.lower() in (".yaml", ".yml") and source.is_file():
        return _train_split_images(source)
    raise FileNotFoundError(f"--calib {source}: not an image folder or a data YAML")


def _train_split_images(config: Path) -> list[Path]:
    data_section = read_yaml(config).get("data")
    if not isinstance(data_section, dict) or "train" not in data_section:
        raise ValueError(
            f"--calib {config}: its data section has no train split (data.train); calibrate on "
            "training images, or give a folder of images"
        )
    data = load_data_config(config)
    try:
        records = load_split(data, "train", source=str(config)).records
    except DatasetError as exc:
        raise ValueError(f"--calib {config}: cannot load the train split: {exc}") from exc
    if not records:
        raise ValueError(f"--calib {config}: the train split has no images")
    return sorted({r.path for r in records})


def calibration_tensors(
    paths: Sequence[Path], spec: PreprocessSpec, static_hw: tuple[int, int] | None
) -> list[np.ndarray]:
    """``(1, 3, H, W)`` tensors of the readable images, preprocessed as deployed (padded on to
    ``static_hw`` for a static-shape model). ValueError when none can be read."""
    tensors, problems = [], []
    for path in paths:
        try:
            tensor, info = preprocess(load_image(path), spec)
        except (ImageLoadError, FileNotFoundError, ValueError) as exc:
            problems.append(str(exc))
            continue
        if static_hw is not None and info.input_hw != tuple(static_hw):
            tensor, info = pad_to(tensor, info, static_hw, spec)
        tensors.append(tensor)
    if problems:
        log.warning("calibration: skipped %d unreadable images (first: %s)", len(problems),
                    problems[0])  # fmt: skip
    if not tensors:
        where = Path(paths[0]).parent if paths else "the calibration source"
        raise ValueError(f"--calib: no readable image among {len(paths)} in {where}")
    return tensors


class _Reader(CalibrationDataReader):
    def __init__(self, input_name: str, tensors: list[np.ndarray]) -> None:
        self._input_name, self._tensors = input_name, tensors
        self._it: Iterator[np.ndarray] = iter(tensors)

    def get_next(self) -> dict[str, np.ndarray] | None:
        tensor = next(self._it, None)
        return None if tensor is None else {self._input_name: tensor}

    def rewind(self) -> None:
        self._it = iter(self._tensors)


def quantize_onnx(
    fp32_path: Path,
    out_path: Path,
    tensors: list[np.ndarray],
    meta: ExportMeta,
    method: str = DEFAULT_ONNX_METHOD,
    float_layers: str = DEFAULT_FLOAT_LAYERS,
    activation: str = DEFAULT_ONNX_ACTIVATION,
    rewrite: int8_rewrite.Rewrite | None = DEFAULT_REWRITE,
) -> OnnxInt8Info:
    """Static QDQ quantization of ``fp32_path`` calibrated on ``tensors`` (module doc);
    ``rewrite``: activation equalization and bias correction first (exporters/int8_rewrite;
    ``None``: neither)."""
    if activation not in ONNX_ACTIVATIONS:
        raise ValueError(f"int8 activation type must be one of {list(ONNX_ACTIVATIONS)}")
    if method not in ONNX_METHODS:
        raise ValueError(f"int8 calibration method must be one of {list(ONNX_METHODS)}")
    _float_groups(float_layers)  # ValueError for an unknown group
    prepared = out_path.with_name(out_path.stem + ".prep.onnx")
    root = logging.getLogger()  # onnxruntime.quantization logs every tensor at INFO on root
    root_level = root.level
    root.setLevel(max(root_level, logging.WARNING))
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        keep_float = float_conv_nodes(model, meta, float_layers)
        convs = [n.name for n in model.graph.node if n.op_type == "Conv"]

        def quantize() -> None:
            onnx.save(model, str(prepared))
            quantize_static(
                str(prepared), str(out_path), _Reader(meta.input_name, tensors),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
                activation_type=ONNX_ACTIVATIONS[activation], weight_type=QuantType.QInt8,
                nodes_to_exclude=list(keep_float), calibrate_method=ONNX_METHODS[method],
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )  # fmt: skip

        equalized = corrected = 0
        if rewrite and rewrite.equalize:
            equalized = int8_rewrite.equalize(model, meta.input_name, tensors,
                                              rewrite.cap_depthwise, rewrite.cap_pointwise)  # fmt: skip
        quantize()
        if rewrite and rewrite.bias_correction:
            quantized = onnx.load(str(out_path))
            corrected = int8_rewrite.correct_bias(model, quantized, meta.input_name, tensors)
            quantize()
    except Exception as exc:  # onnxruntime raises assorted types from its C++ core
        out_path.unlink(missing_ok=True)
        raise ExportError(
            f"onnxruntime int8 quantization of {fp32_path.name} failed: {exc}"
        ) from exc
    finally:
        root.setLevel(root_level)
        prepared.unlink(missing_ok=True)
    return OnnxInt8Info(
        out_path, method, float_layers, keep_float, len(convs) - len(keep_float), len(tensors),
        activation, rewrite, equalized, corrected,
    )  # fmt: skip


def float_conv_nodes(model: onnx.ModelProto, meta: ExportMeta, which: str) -> tuple[str, ...]:
    """Names of the Conv nodes kept in float: ``first`` (reads the input image), ``head``
    (the per-level output convs with C + 4 * (reg_max + 1) channels), ``dw`` (grouped /
    depthwise convs), and always the integral conv of the folded decode (whose weights are the
    bin values 0..reg_max)."""
    groups = _float_groups(which)
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    keep = []
    head_channels = meta.num_classes + 4 * (meta.reg_max + 1)
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        out_channels = weights.get(node.input[1], (0,))[0]
        chosen = {"first": meta.input_name in node.input, "head": out_channels == head_channels,
                  "dw": int8_rewrite.conv_group(node) > 1}  # fmt: skip
        if out_channels == 4 or any(chosen[g] for g in groups):
            keep.append(node.name)
    return tuple(keep)


def _float_groups(which: str) -> set[str]:
    """``"first+head"`` -> {"first", "head"}; ``"none"`` -> {}."""
    groups = set() if which == "none" else set(which.split("+"))
    if not groups <= set(FLOAT_LAYER_GROUPS):
        raise ValueError(f"float layers must be 'none' or a '+'-joined subset of "
                         f"{list(FLOAT_LAYER_GROUPS)}, got {which!r}")  # fmt: skip
    return groups


@dataclass
class Int8Report:
    """What the int8 step did, for meta.json's ``int8`` block."""

    calibration: CalibrationSet
    num_tensors: int
    artifacts: dict[str, dict] = field(default_factory=dict)

    def to_meta(self) -> dict:
        return {
            "calibration_source": self.calibration.source,
            "calibration_images": self.num_tensors,
            "held_out_images": len(self.calibration.held_out),
            **self.artifacts,
        }


def ncnn_float_layers(param_path: Path, meta: ExportMeta, which: str) -> set[str]:
    """ncnn layers kept in float, chosen like :func:`float_conv_nodes`: ``first`` (reads the
    input blob), ``head`` (``num_output`` = C + 4 * (reg_max + 1)), ``dw``
    (ConvolutionDepthWise), always the decode's integral (``num_output`` 4)."""
    groups = _float_groups(which)
    head_channels = meta.num_classes + 4 * (meta.reg_max + 1)
    keep = set()
    for line in param_path.read_text().splitlines()[2:]:
        tokens = line.split()
        if len(tokens) < 4 or tokens[0] not in ("Convolution", "ConvolutionDepthWise"):
            continue
        n_in = int(tokens[2])
        bottoms = tokens[4 : 4 + n_in]
        params = dict(t.split("=", 1) for t in tokens[4 + n_in + int(tokens[3]) :] if "=" in t)
        out_channels = int(params.get("0", 0))
        chosen = {"first": meta.ncnn_input_name in bottoms, "head": out_channels == head_channels,
                  "dw": tokens[0] == "ConvolutionDepthWise"}  # fmt: skip
        if out_channels == 4 or any(chosen[g] for g in groups):
            keep.add(tokens[1])
    return keep


def quantize_ncnn(
    param: Path,
    weights: Path,
    out_param: Path,
    out_bin: Path,
    tensors: list[np.ndarray],
    meta: ExportMeta,
    method: str = DEFAULT_NCNN_METHOD,
    float_layers: str = DEFAULT_NCNN_FLOAT_LAYERS,
) -> dict:
    """ncnn's own int8 model of an fp32 ncnn model (``ncnn_calib`` + ``ncnn_int8``); the
    meta.json block that describes it."""
    skip = ncnn_float_layers(param, meta, float_layers)
    table = ncnn_calib.calibrate(
        param, weights, tensors, method=method, input_blob=meta.ncnn_input_name, skip=skip
    )
    info = ncnn_int8.quantize(param, weights, table, out_param, out_bin, skip=skip)
    return {
        "file": out_param.name,
        "tool": "nanodet-deploy (ncnn2table + ncnn2int8 in Python)",
        "calibration_method": method,
        "float_layers": float_layers,
        "quantized_layers": list(info.quantized),
        "float_layer_names": sorted(info.float_layers),
        "requantized_layers": list(info.requantized),
    }

"""ncnn's own INT8 model format, written from Python: what ``ncnn2int8`` does, without the tool.

The PyPI ncnn wheel ships no ``ncnn2table`` / ``ncnn2int8``; this module reads an fp32 ncnn model
(``.param`` + ``.bin`` as pnnx writes them with ``fp16=0``), rewrites the quantizable layers
into ncnn's int8 format and writes a new param/bin that stock ncnn loads and runs in int8
(``net.opt.use_int8_inference = True``, the default). Calibration (the scale table) lives in
:mod:`nanodet_deploy.exporters.ncnn_calib`.

The format, as read in Tencent/ncnn:

- ``src/modelbin.cpp`` (``ModelBinFromDataReader::load(w, type)``): a *tagged* array (type 0)
  starts with a 4-byte little-endian tag: ``0`` = fp32, ``0x01306B47`` = fp16 (padded to 4
  bytes), ``0x000D4B38`` = int8 (``w`` bytes padded to 4), ``0x0002C056`` = fp32 with extra
  scaling, any other non-zero tag = a 256-entry quantization table + uint8 indices. A *raw*
  array (type 1) is ``w`` fp32 values with no tag. Weights are tagged, biases and scales raw.
- ``src/layer/convolution.cpp`` ``load_model``: weight (tagged), bias (raw, if ``5=1``), then if
  ``int8_scale_term`` (param id 8) is set: ``weight_data_int8_scales`` (raw, ``num_output``
  values) and ``bottom_blob_int8_scales`` (raw, 1 value); if ``int8_scale_term > 100`` also
  ``top_blob_int8_scales`` (raw, 1 value) and the layer writes int8 (requantize).
- ``src/layer/convolutiondepthwise.cpp``: the same order; ``int8_scale_term`` 1/101 means one
  weight scale per group (``group`` values), 2/102 a single weight scale.
- ``src/layer/innerproduct.cpp``: weight, bias, ``num_output`` weight scales, 1 bottom scale.
- ``tools/quantize/ncnn2int8.cpp``: Convolution gets ``int8_scale_term = 2``, ConvolutionDepthWise
  ``1``, InnerProduct ``2``; weights are quantized per output channel (per group for depthwise)
  with ncnn's ``float2int8`` (round half away from zero, clamp to [-127, 127]);
  ``fuse_requantize`` adds 100 when a conv's output feeds exactly one int8 conv, whose bottom
  scale becomes the producer's top scale. ``tools/modelwriter.h`` writes the scales in that
  order. (ncnn2int8 also stores the remaining float layers as fp16 and fuses through a Split;
  here they stay fp32 and only direct conv -> conv chains are fused: that is what was verified.)
- ``src/layer/convolution.cpp`` / ``x86/convolution_x86.cpp`` ``forward_int8``: the input is
  quantized with the bottom scale, accumulated in int32, dequantized with
  ``1 / (bottom_scale * weight_scale[p])``, then the bias is added and the fused activation
  (param 9 / -23310, as pnnx writes them) is applied in fp32, so fused activations and biases
  need no change.

The calibration table is ncnn2table's text format: ``<layer>_param_0 s1 s2 ...`` (weight scales)
and ``<layer> s`` (the scale of the layer's input blob), one line each.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import ncnn
import numpy as np

from nanodet_deploy.exporters.errors import ExportError
from nanodet_deploy.fileio import atomic_output, write_text_atomic

log = logging.getLogger(__name__)

PARAM_MAGIC = "7767517"
TAG_FP32 = 0x00000000
TAG_FP32_SCALED = 0x0002C056
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
INT8_MAX = 127
REQUANTIZE = 100  # int8_scale_term + 100: the layer writes int8 for the next int8 conv
CONV_KINDS = ("Convolution", "ConvolutionDepthWise")
INT8_SCALE_TERM: dict[str, int] = {"Convolution": 2, "ConvolutionDepthWise": 1, "InnerProduct": 2}
# Layer types known to read nothing from the .bin.
WEIGHTLESS = frozenset(
    {
        "Input", "Pooling", "ShuffleChannel", "ReLU", "Clip", "HardSwish", "HardSigmoid", "ELU",
        "SELU", "Sigmoid", "Swish", "Mish", "GELU", "TanH", "Softmax", "BinaryOp", "UnaryOp",
        "Eltwise", "Concat", "Slice", "Split", "Permute", "Interp", "Reshape", "Flatten", "Crop",
        "Noop", "Dropout", "Squeeze", "ExpandDims", "Reduction",
    }
)  # fmt: skip


class Int8Error(ExportError):
    """The model or the table cannot be converted to ncnn int8 (the message says why)."""


@dataclass
class Layer:
    """One line of an ncnn param file; ``params`` keeps the ``id=value`` texts in file order."""

    kind: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[str, str]

    def int_param(self, key: int, default: int = 0) -> int:
        return int(self.params.get(str(key), default))


@dataclass
class Segment:
    """One array of a layer in the .bin: ``tagged`` (weights) or raw (bias, scales)."""

    data: np.ndarray  # float32, or int8 for quantized weights
    tagged: bool


@dataclass
class NcnnModel:
    layers: list[Layer]
    blob_count: int
    weights: dict[str, list[Segment]]  # layer name -> arrays in load_model order


@dataclass(frozen=True)
class Int8Table:
    """Scales per layer: ``weight_scales`` per output channel (per group for depthwise) and the
    scale of the layer's input blob (``bottom_scales``). int8 value = round(float * scale)."""

    weight_scales: dict[str, np.ndarray]  # float32, 1-D
    bottom_scales: dict[str, float]  # float32 values
    method: str = ""  # how the bottom scales were found ("kl", "aciq", "max"; "" when read)
    num_inputs: int = 0  # calibration tensors used (0 when read from a file)

    def __post_init__(self) -> None:
        # ncnn stores float32: keep exactly what the model file will hold
        weights = {
            k: np.asarray(v, dtype=np.float32).reshape(-1) for k, v in self.weight_scales.items()
        }
        object.__setattr__(self, "weight_scales", weights)
        bottoms = {k: float(np.float32(v)) for k, v in self.bottom_scales.items()}
        object.__setattr__(self, "bottom_scales", bottoms)
        for name, scales in self.weight_scales.items():
            valid = scales.size and np.all(np.isfinite(scales) & (scales > 0))
            if not valid:
                raise Int8Error(f"int8 table: bad weight scales for {name}: {scales}")
        for name, scale in self.bottom_scales.items():
            if not (math.isfinite(scale) and scale > 0):
                raise Int8Error(f"int8 table: bad bottom scale for {name}: {scale}")


@dataclass(frozen=True)
class Int8Info:
    """What :func:`quantize` wrote."""

    param: Path
    bin: Path
    quantized: tuple[str, ...]  # layers stored as int8
    float_layers: dict[str, str]  # quantizable layers left in fp32 -> why ("skip", "no scales")
    requantized: tuple[str, ...]  # int8 layers whose output stays int8 (fused requantize)
    fp32_bytes: int  # size of the input .bin
    int8_bytes: int  # size of the written .bin


# ---------------------------------------------------------------------------------- param file


def parse_param(text: str) -> tuple[list[Layer], int]:
    """Layers and blob count of an ncnn param text."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != PARAM_MAGIC:
        raise Int8Error(f"not an ncnn param file (magic {PARAM_MAGIC} missing)")
    layer_count, blob_count = (int(v) for v in lines[1].split())
    layers = [_parse_layer(line.split()) for line in lines[2:] if line.strip()]
    if len(layers) != layer_count:
        raise Int8Error(f"param file lists {len(layers)} layers but declares {layer_count}")
    return layers, blob_count


def _parse_layer(tokens: list[str]) -> Layer:
    n_in, n_out = int(tokens[2]), int(tokens[3])
    bottoms, tops = tokens[4 : 4 + n_in], tokens[4 + n_in : 4 + n_in + n_out]
    params = dict(p.split("=", 1) for p in tokens[4 + n_in + n_out :])
    return Layer(tokens[0], tokens[1], bottoms, tops, params)


def format_param(layers: list[Layer], blob_count: int) -> str:
    lines = [PARAM_MAGIC, f"{len(layers)} {blob_count}"]
    for layer in layers:
        head = f"{layer.kind:<24} {layer.name:<24} {len(layer.bottoms)} {len(layer.tops)}"
        words = [head, *layer.bottoms, *layer.tops]
        words += [f"{k}={v}" for k, v in layer.params.items()]
        lines.append(" ".join(words))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- bin file


def weight_layout(layer: Layer) -> list[tuple[bool, int]]:
    """(tagged, element count) of every array ``layer.load_model`` reads, in order."""
    kind, p = layer.kind, layer.int_param
    if kind in (*CONV_KINDS, "InnerProduct"):
        if p(8):
            raise Int8Error(f"layer {layer.name} is already int8 (int8_scale_term={p(8)})")
        if kind == "InnerProduct":
            return [(True, p(2))] + ([(False, p(0))] if p(1) else [])
        if p(19):  # dynamic weight: comes from a second input blob
            return []
        return [(True, p(6))] + ([(False, p(0))] if p(5) else [])
    if kind == "MemoryData":
        dims = [d for d in (p(0), p(1), p(11), p(2)) if d]
        return [(False, math.prod(dims) if dims else 1)]
    if kind == "BatchNorm":
        return [(False, p(0))] * 4
    if kind == "PReLU":
        return [(False, p(0))]
    if kind == "Scale":
        size = p(0)
        return ([] if size == -233 else [(False, size)]) + ([(False, size)] if p(1) else [])
    if kind in WEIGHTLESS:
        return []
    raise Int8Error(f"layer {layer.name}: type {kind} is not supported by the int8 converter")


class _BinReader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def read(self, layer: Layer, tagged: bool, count: int) -> Segment:
        if tagged:
            tag = self._take(4, layer)
            (value,) = struct.unpack("<I", tag)
            self._check_tag(layer, value)
        raw = self._take(4 * count, layer)
        return Segment(np.frombuffer(raw, dtype="<f4").astype(np.float32), tagged)

    def _check_tag(self, layer: Layer, tag: int) -> None:
        if tag == TAG_FP16:
            raise Int8Error(
                f"{self.path}: layer {layer.name} stores fp16 weights; int8 conversion needs an "
                "fp32 ncnn export (nanodet-export --fp32, i.e. pnnx fp16=0)"
            )
        if tag == TAG_INT8:
            raise Int8Error(f"{self.path}: layer {layer.name} already stores int8 weights")
        if tag not in (TAG_FP32, TAG_FP32_SCALED):
            raise Int8Error(
                f"{self.path}: layer {layer.name}: weight tag {tag:#010x} (table-quantized "
                "weights) is not supported; an fp32 ncnn export is needed"
            )

    def _take(self, size: int, layer: Layer) -> bytes:
        if self.pos + size > len(self.data):
            raise Int8Error(f"{self.path} ends inside layer {layer.name}: param and bin differ")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


def read_model(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> NcnnModel:
    """Parse an fp32 ncnn model; Int8Error for fp16 / int8 / unknown weight storage."""
    param_path, bin_path = Path(param_path), Path(bin_path)
    layers, blob_count = parse_param(param_path.read_text())
    reader = _BinReader(bin_path.read_bytes(), bin_path)
    weights = {
        layer.name: [reader.read(layer, t, n) for t, n in weight_layout(layer)] for layer in layers
    }
    if reader.pos != len(reader.data):
        left = len(reader.data) - reader.pos
        raise Int8Error(f"{bin_path}: {left} bytes left after the last layer: param and bin differ")
    return NcnnModel(layers, blob_count, weights)


def encode_weights(model: NcnnModel) -> bytes:
    """The .bin bytes of ``model`` (modelwriter.h: tag, data, zero padding to 4 bytes)."""
    chunks: list[bytes] = []
    for layer in model.layers:
        for seg in model.weights[layer.name]:
            if seg.tagged:
                tag = TAG_INT8 if seg.data.dtype == np.int8 else TAG_FP32
                chunks.append(struct.pack("<I", tag))
            body = seg.data.astype("i1" if seg.data.dtype == np.int8 else "<f4").tobytes()
            chunks.append(body + b"\0" * (-len(body) % 4))
    return b"".join(chunks)


# ---------------------------------------------------------------------------------- scales


def round_to_int8(values: np.ndarray) -> np.ndarray:
    """ncnn's ``float2int8``: round half away from zero, clamp to [-127, 127]."""
    v = np.asarray(values, dtype=np.float32).astype(np.float64)
    return np.clip(np.trunc(v + np.copysign(0.5, v)), -INT8_MAX, INT8_MAX).astype(np.int8)


def quantizable_layers(model: NcnnModel, skip: Collection[str] = ()) -> list[Layer]:
    """Convolution / ConvolutionDepthWise / InnerProduct layers with weights, minus ``skip``."""
    check_names(model, skip, "skip")
    return [
        layer
        for layer in model.layers
        if layer.kind in INT8_SCALE_TERM and model.weights[layer.name] and layer.name not in skip
    ]


def check_names(model: NcnnModel, names: Collection[str], what: str) -> None:
    known = {layer.name for layer in model.layers}
    unknown = sorted(set(names) - known)
    if unknown:
        raise Int8Error(f"{what} names layers the model does not have: {unknown}")


# ---------------------------------------------------------------------------------- table file


def write_table(table: Int8Table, path: str | os.PathLike) -> None:
    """Write ncnn2table's text format (readable by ncnn2int8), atomically."""
    lines = [
        f"{name}_param_0 " + " ".join(f"{s:.9g}" for s in scales.tolist())
        for name, scales in table.weight_scales.items()
    ]
    lines += [f"{name} {scale:.9g}" for name, scale in table.bottom_scales.items()]
    write_text_atomic(path, "\n".join(lines) + "\n")


def read_table(path: str | os.PathLike) -> Int8Table:
    """Read a table in ncnn2table's format (ours or the tool's)."""
    weights: dict[str, np.ndarray] = {}
    bottoms: dict[str, float] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        words = line.split()
        if not words:
            continue
        key, values = words[0], np.array([float(v) for v in words[1:]], dtype=np.float32)
        if key.endswith("_param_0"):
            weights[key[: -len("_param_0")]] = values
        elif values.size == 1:
            bottoms[key] = float(values[0])
        else:
            raise Int8Error(f"{path}:{number}: expected one bottom scale for {key}: {words[1:]}")
    return Int8Table(weights, bottoms)


# ---------------------------------------------------------------------------------- conversion


def quantize(
    param_path: str | os.PathLike,
    bin_path: str | os.PathLike,
    table: Int8Table,
    out_param: str | os.PathLike,
    out_bin: str | os.PathLike,
    *,
    skip: Collection[str] = (),
    fuse_requantize: bool = True,
    check: bool = True,
) -> Int8Info:
    """Write the ncnn int8 model of an fp32 ncnn model (module doc), as ncnn2int8 does.

    Quantizable layers named in ``skip`` (names must exist) or without scales in ``table`` stay
    fp32. ``fuse_requantize``: a quantized conv whose only consumer is a quantized conv writes
    int8 directly (``int8_scale_term + 100``; the same numbers as dequantize + quantize, less
    work). ``check`` loads the result with ncnn (int8 inference on). Each file is written
    atomically (.bin first). The result needs ``net.opt.use_int8_inference = True``: ncnn
    loads int8 weights without it but crashes when it runs them.
    """
    model = read_model(param_path, bin_path)
    check_names(model, skip, "skip")
    check_names(model, set(table.weight_scales) | set(table.bottom_scales), "the int8 table")
    float_layers: dict[str, str] = {}
    quantized: list[Layer] = []
    for layer in quantizable_layers(model):
        reason = _float_reason(layer, table, skip)
        if reason:
            float_layers[layer.name] = reason
        else:
            _quantize_layer(layer, model.weights[layer.name], table)
            quantized.append(layer)
    requantized = _fuse_requantize(model, quantized, table) if fuse_requantize else []
    int8_bytes = _write_model(model, Path(out_param), Path(out_bin))
    if check:
        load_check(out_param, out_bin)
    log.info(
        "ncnn int8: %d layers quantized (%d write int8), %d left in fp32: %s",
        len(quantized), len(requantized), len(float_layers), float_layers,
    )  # fmt: skip
    return Int8Info(
        Path(out_param), Path(out_bin), tuple(q.name for q in quantized), float_layers,
        tuple(requantized), Path(bin_path).stat().st_size, int8_bytes,
    )  # fmt: skip


def _float_reason(layer: Layer, table: Int8Table, skip: Collection[str]) -> str:
    if layer.name in skip:
        return "skip"
    if layer.name not in table.bottom_scales or layer.name not in table.weight_scales:
        return "no scales in the table"
    return ""


def _quantize_layer(layer: Layer, segments: list[Segment], table: Int8Table) -> None:
    scales = np.asarray(table.weight_scales[layer.name], dtype=np.float32)
    rows = layer.int_param(7, 1) if layer.kind == "ConvolutionDepthWise" else layer.int_param(0)
    if scales.size != rows:
        raise Int8Error(f"{layer.name}: {scales.size} weight scales in the table, need {rows}")
    weights = segments[0].data.reshape(rows, -1)
    segments[0] = Segment(round_to_int8(weights * scales[:, None]).reshape(-1), tagged=True)
    bottom = np.array([table.bottom_scales[layer.name]], dtype=np.float32)
    segments += [Segment(scales, tagged=False), Segment(bottom, tagged=False)]
    layer.params["8"] = str(INT8_SCALE_TERM[layer.kind])


def _fuse_requantize(model: NcnnModel, quantized: list[Layer], table: Int8Table) -> list[str]:
    """conv -> conv (both int8, one consumer): the first writes int8 with the second's scale."""
    names = {layer.name for layer in quantized}
    consumers: dict[str, list[Layer]] = {}
    for layer in model.layers:
        for blob in layer.bottoms:
            consumers.setdefault(blob, []).append(layer)
    fused = []
    for layer in quantized:
        users = consumers.get(layer.tops[0], [])
        if layer.kind not in CONV_KINDS or len(layer.tops) != 1 or len(users) != 1:
            continue
        user = users[0]
        if user.name not in names or user.kind not in CONV_KINDS or len(user.bottoms) != 1:
            continue
        layer.params["8"] = str(int(layer.params["8"]) + REQUANTIZE)
        top = np.array([table.bottom_scales[user.name]], dtype=np.float32)
        model.weights[layer.name].append(Segment(top, tagged=False))
        fused.append(layer.name)
    return fused


def _write_model(model: NcnnModel, out_param: Path, out_bin: Path) -> int:
    data = encode_weights(model)
    with atomic_output(out_bin) as tmp:
        tmp.write_bytes(data)
    write_text_atomic(out_param, format_param(model.layers, model.blob_count))
    return len(data)


def load_check(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> None:
    """Load the model with ncnn, int8 inference on and fp16 off; Int8Error if it fails."""
    net = ncnn.Net()
    configure_int8(net.opt, threads=1)
    try:
        if net.load_param(str(param_path)) != 0 or net.load_model(str(bin_path)) != 0:
            raise Int8Error(f"ncnn cannot load the int8 model {param_path} / {bin_path}")
    finally:
        net.clear()


def configure_int8(opt: ncnn.Option, threads: int) -> None:
    """ncnn options for an int8 model: int8 on, fp16 off (float layers in fp32), CPU only."""
    opt.use_vulkan_compute = False
    opt.num_threads = int(threads)
    opt.use_int8_inference = True
    opt.use_fp16_storage = False
    opt.use_fp16_packed = False
    opt.use_fp16_arithmetic = False


__all__ = [
    "Int8Error",
    "Int8Info",
    "Int8Table",
    "configure_int8",
    "load_check",
    "quantize",
    "read_model",
    "read_table",
    "round_to_int8",
    "write_table",
]

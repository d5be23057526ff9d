"""Int8 calibration of an fp32 ncnn model: what ``ncnn2table`` does, on the ncnn Python binding.

The model runs in fp32 (fp16 and int8 off, light mode off so every intermediate blob is kept)
on preprocessed input tensors; the input blob of every quantizable layer (Convolution,
ConvolutionDepthWise, InnerProduct) is read back with ``Extractor.extract``. Following
``tools/quantize/ncnn2table.cpp`` (Tencent/ncnn):

- weight scales: ``127 / max|w|`` per output channel (per group for depthwise), ``31 / max|w|``
  for 3x3 stride-1 Convolutions (6-bit weights for ncnn's int8 winograd F43);
- ``method="max"`` (this function's default; the exporter uses it too, see exporters/int8.py):
  ``127 / absmax`` of each blob over all inputs, no clipping.
  Measured on the fine-tuned raccoon NanoDet-m (3 calibration draws of 32 / 64 / 100 train
  images, 168 / 136 / 100 held-out images), it kept mAP within 0.01 of fp32 where ncnn2table's
  KL lost 0.02-0.03: KL clips the rare large activations that carry box-edge and score
  evidence in this detector;
- ``method="kl"`` (ncnn2table's default, ``quantize_KL``): pass 1 finds each blob's ``absmax``;
  pass 2 builds a 2048-bin histogram of ``|x|`` on ``[0, absmax]`` (exact zeros skipped); for
  every candidate threshold bin ``T`` in 128..2047 the clipped distribution (tail folded into
  bin ``T-1``) is compared with its 128-level requantized-and-expanded version (epsilon 1e-4,
  fractional bin edges) by KL divergence; the best ``T`` gives
  ``threshold = (T + 0.5) * absmax / 2048`` and ``scale = 127 / threshold``. Here all 1920
  candidates are evaluated at once with prefix sums (:func:`kl_divergences`: the same
  quantities in float64; it picks the same ``T`` as a line-by-line port of the C++ loop);
- ``method="aciq"`` (``quantize_ACIQ``): Gaussian clipping from ``absmax`` and the blob's element
  count, for activations and weights alike.

EQ (ncnn2table's per-channel search by cosine similarity) is not implemented.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Iterable, Iterator

import ncnn
import numpy as np

from nanodet_deploy.exporters.ncnn_int8 import (
    INT8_MAX,
    Int8Error,
    Int8Table,
    Layer,
    quantizable_layers,
    read_model,
)

log = logging.getLogger(__name__)

METHODS = ("max", "kl", "aciq")
INT6_MAX = 31  # 3x3 stride-1 Convolutions get 6-bit weights (ncnn's int8 winograd F43)
NUM_HISTOGRAM_BINS = 2048
TARGET_BINS = 128
KL_EPS = 1e-4
_ACIQ_ALPHA = {8: 3.92403714, 6: 3.28691474}  # ncnn2table's alpha_gaussian[bits - 1]


def calibrate(
    param_path: str | os.PathLike,
    bin_path: str | os.PathLike,
    inputs: Iterable[np.ndarray],
    *,
    method: str = "max",
    input_blob: str = "in0",
    skip: Collection[str] = (),
    threads: int = 1,
) -> Int8Table:
    """Scales for every quantizable layer of an fp32 ncnn model (module doc).

    ``inputs``: preprocessed float32 ``(1, 3, H, W)`` tensors, exactly what the runtime feeds
    (they are all held in memory). Layers in ``skip`` get no entry (they stay fp32).
    """
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
    tensors = check_inputs(inputs)
    model = read_model(param_path, bin_path)
    layers = quantizable_layers(model, skip)
    if not layers:
        raise Int8Error(f"{param_path}: no quantizable layer left (skip={sorted(skip)})")
    blobs = sorted({layer.bottoms[0] for layer in layers})
    net = _float_net(param_path, bin_path, threads)
    try:
        absmax, numel = _blob_absmax(net, tensors, input_blob, blobs)
        if method == "kl":
            thresholds = _kl_thresholds(net, tensors, input_blob, absmax)
        elif method == "aciq":
            thresholds = {b: aciq_clip(absmax[b], numel[b], 8) for b in blobs}
        else:
            thresholds = dict(absmax)
    finally:
        net.clear()
    w_scales = {
        x.name: _method_weight_scales(x, model.weights[x.name][0].data, method) for x in layers
    }
    bottom = {x.name: _bottom_scale(x.bottoms[0], thresholds) for x in layers}
    return Int8Table(w_scales, bottom, method=method, num_inputs=len(tensors))


def check_inputs(inputs: Iterable[np.ndarray]) -> list[np.ndarray]:
    """The inputs as a list; ValueError unless each is a float32 ``(1, 3, H, W)`` array."""
    tensors = list(inputs)
    if not tensors:
        raise ValueError("calibration needs at least one input tensor, got none")
    for i, t in enumerate(tensors):
        ok = isinstance(t, np.ndarray) and t.dtype == np.float32 and t.ndim == 4
        if not ok or t.shape[:2] != (1, 3) or min(t.shape[2:]) < 1:
            what = f"{t.dtype} {t.shape}" if isinstance(t, np.ndarray) else type(t).__name__
            raise ValueError(
                f"calibration input {i}: expected a float32 (1, 3, H, W) array (the "
                f"preprocessed network input), got {what}"
            )
    return tensors


def _float_net(
    param_path: str | os.PathLike, bin_path: str | os.PathLike, threads: int
) -> ncnn.Net:
    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute = False
    opt.num_threads = int(threads)
    opt.lightmode = False
    opt.use_int8_inference = False
    opt.use_fp16_storage = False
    opt.use_fp16_packed = False
    opt.use_fp16_arithmetic = False
    if net.load_param(str(param_path)) != 0 or net.load_model(str(bin_path)) != 0:
        net.clear()
        raise Int8Error(f"ncnn cannot load {param_path} / {bin_path}")
    return net


def _extract_all(
    net: ncnn.Net, tensor: np.ndarray, input_blob: str, blobs: Iterable[str]
) -> Iterator[tuple[str, np.ndarray]]:
    """(blob name, fp32 array) of every blob for one input (one forward pass, blobs kept)."""
    chw = np.ascontiguousarray(tensor[0])  # ncnn.Mat wraps it: keep it referenced
    ex = net.create_extractor()
    ex.set_light_mode(False)
    if ex.input(input_blob, ncnn.Mat(chw)) != 0:
        raise Int8Error(f"input blob {input_blob!r} not in the model ({list(net.input_names())})")
    for blob in blobs:
        ret, mat = ex.extract(blob)
        if ret != 0:
            raise Int8Error(f"ncnn extract of blob {blob!r} failed ({ret})")
        yield blob, np.array(mat, dtype=np.float32)


def _blob_absmax(
    net: ncnn.Net, tensors: list[np.ndarray], input_blob: str, blobs: list[str]
) -> tuple[dict[str, float], dict[str, int]]:
    """max |x| of every blob over all inputs, and its element count for the last input."""
    absmax = dict.fromkeys(blobs, 0.0)
    numel = dict.fromkeys(blobs, 0)
    for tensor in tensors:
        for blob, values in _extract_all(net, tensor, input_blob, blobs):
            absmax[blob] = max(absmax[blob], float(np.abs(values).max(initial=0.0)))
            numel[blob] = values.size
    return absmax, numel


def _kl_thresholds(
    net: ncnn.Net, tensors: list[np.ndarray], input_blob: str, absmax: dict[str, float]
) -> dict[str, float]:
    """ncnn2table's KL threshold of every blob (pass 2: histograms, then the search)."""
    live = [b for b, m in absmax.items() if m > 0]
    histograms = {b: np.zeros(NUM_HISTOGRAM_BINS, dtype=np.int64) for b in live}
    for tensor in tensors:
        for blob, values in _extract_all(net, tensor, input_blob, live):
            histograms[blob] += abs_histogram(values, absmax[blob])
    thresholds = dict(absmax)  # all-zero blobs keep 0 (scale 1 below)
    for blob in live:
        best = kl_threshold_bin(histograms[blob])
        thresholds[blob] = (best + 0.5) * absmax[blob] / NUM_HISTOGRAM_BINS
    return thresholds


def abs_histogram(values: np.ndarray, absmax: float) -> np.ndarray:
    """ncnn2table's histogram: ``min(int(|x| / absmax * 2048), 2047)``, zeros skipped."""
    v = np.abs(values[values != 0]).astype(np.float32)
    index = (v / np.float32(absmax) * np.float32(NUM_HISTOGRAM_BINS)).astype(np.int64)
    return np.bincount(np.minimum(index, NUM_HISTOGRAM_BINS - 1), minlength=NUM_HISTOGRAM_BINS)


def kl_threshold_bin(histogram: np.ndarray, target_bins: int = TARGET_BINS) -> int:
    """The threshold bin ``T`` (``target_bins <= T < len(histogram)``) of least KL divergence
    (the first one on ties, as ncnn2table)."""
    total = histogram.sum()
    if total <= 0:
        return len(histogram) - 1
    kl = kl_divergences(histogram.astype(np.float64) / total, target_bins)
    return target_bins + int(np.argmin(kl))


def kl_divergences(h: np.ndarray, target_bins: int = TARGET_BINS) -> np.ndarray:
    """ncnn2table's KL(clipped || quantized-and-expanded) for every threshold ``T`` in
    ``target_bins .. len(h) - 1`` (``h``: normalized histogram).

    Per threshold, level ``j`` of the ``target_bins`` quantized levels covers source bins
    ``[j T / target_bins, (j + 1) T / target_bins)``; its density (mass / width) is spread back
    over those bins. Bins entirely inside a level share one expanded value, so their terms are
    prefix-sum differences; only the bins that straddle a level edge (one per inner edge at
    most, since ``T >= target_bins``) are computed one by one. Edges are exact integer ratios.
    """
    n = len(h)
    thresholds = np.arange(target_bins, n)[:, None]
    width = thresholds / target_bins
    scaled = np.arange(target_bins + 1)[None, :] * thresholds  # edge * target_bins, exact
    floor, frac = scaled // target_bins, (scaled % target_bins) / target_bins
    cum = np.concatenate([[0.0], np.cumsum(h)])
    mass = cum[floor] + frac * np.append(h, 0.0)[floor]  # mass below each level edge
    density = np.diff(mass, axis=1) / width  # (thresholds, target_bins)
    log_level = np.log(density + KL_EPS)
    clip = h + KL_EPS
    clip_cum = np.concatenate([[0.0], np.cumsum(clip)])
    clip_log_cum = np.concatenate([[0.0], np.cumsum(clip * np.log(clip))])
    first_inside = floor[:, :-1] + (frac[:, :-1] > 0)
    inside = (clip_cum[floor[:, 1:]] - clip_cum[first_inside]) * log_level
    f = frac[:, 1:-1]  # inner edges; the bin floor[:, 1:-1] straddles when f > 0
    straddle = density[:, :-1] * f + density[:, 1:] * (1 - f) + KL_EPS
    edges = np.where(f > 0, clip[np.minimum(floor[:, 1:-1], n - 1)] * np.log(straddle), 0.0)
    t = thresholds[:, 0]
    tail = 1.0 - cum[t]  # mass at and above T, folded into bin T - 1 of the clipped histogram
    last = clip[t - 1] + tail
    entropy_part = clip_log_cum[t - 1] + last * np.log(last)
    cross_part = inside.sum(axis=1) + edges.sum(axis=1) + tail * log_level[:, -1]
    return entropy_part - cross_part


def aciq_clip(absmax: float, count: int, bits: int) -> float:
    """ncnn2table's ``compute_aciq_gaussian_clip``."""
    gaussian_const = (0.5 * 0.35) * (1 + math.sqrt(math.pi * math.log(4)))
    std = (absmax * 2 * gaussian_const) / math.sqrt(2 * math.log(max(count, 2)))
    return _ACIQ_ALPHA[bits] * std


def weight_absmax(layer: Layer, weights: np.ndarray) -> np.ndarray:
    """max |w| per output channel (per group for ConvolutionDepthWise), as ncnn2table."""
    rows = layer.int_param(7, 1) if layer.kind == "ConvolutionDepthWise" else layer.int_param(0)
    return np.abs(weights.reshape(rows, -1)).max(axis=1)


def weight_levels(layer: Layer) -> int:
    """127, or 31 for a 3x3 stride-1 dilation-1 Convolution (ncnn2table's 6-bit winograd rule)."""
    p = layer.int_param
    kernel, stride, dilation = (
        (p(1), p(11, p(1))),
        (p(3, 1), p(13, p(3, 1))),
        (p(2, 1), p(12, p(2, 1))),
    )
    k3s1 = kernel == (3, 3) and stride == (1, 1) and dilation == (1, 1)
    return INT6_MAX if layer.kind == "Convolution" and k3s1 else INT8_MAX


def weight_scales(layer: Layer, weights: np.ndarray) -> np.ndarray:
    """ncnn2table's weight scales: levels / max|w| per output channel (1 for an all-zero one)."""
    absmax = weight_absmax(layer, weights)
    safe = np.where(absmax > 0, absmax, 1.0)
    return np.where(absmax > 0, weight_levels(layer) / safe, 1.0).astype(np.float32)


def _method_weight_scales(layer: Layer, weights: np.ndarray, method: str) -> np.ndarray:
    if method != "aciq":
        return weight_scales(layer, weights)
    levels = weight_levels(layer)
    bits = 6 if levels == INT6_MAX else 8
    absmax = weight_absmax(layer, weights)
    per_row = weights.size // absmax.size
    clip = np.array([aciq_clip(float(a), per_row, bits) for a in absmax])
    return np.where(clip > 0, levels / np.where(clip > 0, clip, 1.0), 1.0).astype(np.float32)


def _bottom_scale(blob: str, thresholds: dict[str, float]) -> float:
    threshold = thresholds[blob]
    if threshold <= 0:
        log.warning("blob %s is zero on every calibration input: bottom scale 1", blob)
        return 1.0
    return INT8_MAX / threshold


__all__ = [
    "METHODS",
    "abs_histogram",
    "aciq_clip",
    "calibrate",
    "check_inputs",
    "kl_threshold_bin",
    "weight_levels",
    "weight_scales",
]

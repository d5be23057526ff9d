"""The export wrapper: backbone -> neck -> head -> per-level decode, as one traceable module.

``ExportWrapper(model, output_layout, fold_normalize)`` is what ONNX / NCNN export and what
the torch runtime runs, so every backend produces the same layout (DESIGN.md "Exported graph"):

- ``decoded``: ``(N, P, C + 4)``: sigmoid class scores, then l, t, r, b in stride units.
- ``raw`` (official-compatible): ``(N, P, C + 4 * (reg_max + 1))``: sigmoid scores, raw bins.

The decode runs per level on the NCHW head maps, before the levels are concatenated:

    bins (N, 4 * (R + 1), H, W) -> reshape (N, 4, R + 1, -1) -> softmax over axis 2
    -> depthwise conv, kernel (R + 1) x 1, weights 0..R (the integral) -> (N, 4, 1, H * W)

Why this formulation:

- The softmax runs along a short axis with ``H * W`` contiguous values behind each bin (NCNN:
  a 3-D Mat ``c=4, h=R+1, w=HW``, vectorized along w), and the one transpose to point-major
  happens at the end on ``C + 4`` channels instead of ``C + 4 * (R + 1)``: the decoded graph
  moves less data than the raw one, which pays for the softmax (NCNN, the three head levels of
  a 320 input alone, 1 thread, x86: decoded ~30 us faster than raw; softmax alone +90 us).
  ``benchmarks/bench_decode_fold.py`` measures the whole model.
- The integral is a depthwise conv, not multiply + ReduceSum: pnnx 20261020 converts a
  single-axis ``ReduceSum`` into an NCNN ``Reduction`` with an empty axis list (the sum is
  silently skipped), and ``MatMul`` would need a batched constant operand.
- Folded normalization is a 1x1 depthwise conv too, not Sub + Mul: onnxsim folds the Mul into
  the first conv, whose weights then become ~57x smaller, and NCNN's fp16 weight storage
  loses them (first-layer error 0.7 % instead of 0.02 %; scores off by 0.03).
- Every reshape keeps the spatial axis as ``-1`` and reads the batch from the tensor, so no
  input size is baked into the ONNX. pnnx writes concrete sizes into NCNN reshapes anyway;
  ``exporters/ncnn.py`` frees them again, and one NCNN model runs at every multiple of 32.
- Ops: Conv (BN folded), activations, MaxPool, Resize, Concat, Slice, Reshape, Transpose,
  Sigmoid, Softmax, Add: no TopK, ArgMax, Gather, NonZero, CumSum or 6-D tensors, and no center
  points (the NumPy postprocessor adds those).

Training-only modules (NanoDet-Plus ``aux_fpn`` / ``aux_head``, legacy ``head.gfl_reg``) are not
part of the wrapper's forward and never reach the exported graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanodet_deploy import __version__
from nanodet_deploy.artifacts import OUTPUT_DECODED, OUTPUT_LAYOUTS, OUTPUT_RAW, ExportMeta
from nanodet_deploy.config import ModelConfig
from nanodet_deploy.models.detector import NanoDet
from nanodet_deploy.structures import PreprocessSpec


class ExportWrapper(nn.Module):
    """Inference graph of a NanoDet with the decode folded in (see module doc)."""

    def __init__(
        self,
        model: NanoDet,
        output_layout: str = OUTPUT_DECODED,
        fold_normalize: bool = False,
    ) -> None:
        super().__init__()
        if output_layout not in OUTPUT_LAYOUTS:
            raise ValueError(
                f"output_layout must be one of {OUTPUT_LAYOUTS}, got {output_layout!r}"
            )
        cfg = model.cfg
        self.cfg = cfg
        self.output_layout = output_layout
        self.fold_normalize = fold_normalize
        self.num_classes = cfg.num_classes
        self.reg_max = cfg.reg_max
        self.backbone = model.backbone
        self.fpn = model.fpn
        self.head = model.head
        # Integral as a depthwise conv over the bin axis: weight (4, 1, R + 1, 1) = 0..R per side.
        project = torch.arange(cfg.reg_max + 1, dtype=torch.float32).reshape(1, 1, -1, 1)
        self.register_buffer("project", project.repeat(4, 1, 1, 1), persistent=False)
        # Folded normalization as a 1x1 depthwise conv: x * (1 / std) + (-mean / std).
        inv_std = 1.0 / torch.tensor(cfg.std_bgr, dtype=torch.float64)
        shift = -torch.tensor(cfg.mean_bgr, dtype=torch.float64) * inv_std
        self.register_buffer("norm_weight", inv_std.float().reshape(3, 1, 1, 1), persistent=False)
        self.register_buffer("norm_bias", shift.float(), persistent=False)

    @property
    def output_channels(self) -> int:
        if self.output_layout == OUTPUT_RAW:
            return self.num_classes + 4 * (self.reg_max + 1)
        return self.num_classes + 4

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.fold_normalize:
            images = F.conv2d(images, self.norm_weight, self.norm_bias, groups=3)
        maps = self.head.forward_levels(self.fpn(self.backbone(images)))
        levels = [self._level(m) for m in maps]  # each (N, K, H_l * W_l)
        return torch.cat(levels, dim=2).permute(0, 2, 1)

    def _level(self, level_map: torch.Tensor) -> torch.Tensor:
        """(N, C + 4 * (R + 1), H, W) -> (N, K, H * W); no size is read as a Python int."""
        n = level_map.shape[0]
        c, bins = self.num_classes, self.reg_max + 1
        scores = level_map[:, :c].reshape(n, c, -1).sigmoid()
        reg = level_map[:, c:]
        if self.output_layout == OUTPUT_RAW:
            return torch.cat([scores, reg.reshape(n, 4 * bins, -1)], dim=1)
        probs = reg.reshape(n, 4, bins, -1).softmax(dim=2)  # (N, 4, R + 1, H * W)
        distances = F.conv2d(probs, self.project, groups=4)  # (N, 4, 1, H * W), stride units
        return torch.cat([scores, distances.reshape(n, 4, -1)], dim=1)


def export_meta(
    cfg: ModelConfig,
    input_hw: tuple[int, int],
    output_layout: str = OUTPUT_DECODED,
    normalize_folded: bool = False,
    checkpoint_sha256: str | None = None,
    random_weights: bool = False,
    geometry: str | None = None,
    sampler: str | None = None,
) -> ExportMeta:
    """What the wrapper of ``cfg`` expects and produces (files, opset, precision: filled later).

    ``geometry`` / ``sampler``: the preprocessing the export is made for (None: the
    ``PreprocessSpec`` defaults); runtimes and apps follow it unless told otherwise.
    """
    spec = PreprocessSpec(
        input_hw=(int(input_hw[0]), int(input_hw[1])),
        size_multiple=cfg.size_multiple,
        mean_bgr=tuple(cfg.mean_bgr),
        std_bgr=tuple(cfg.std_bgr),
        color_order="BGR",
        normalize_folded=normalize_folded,
    ).override(geometry=geometry, sampler=sampler)
    return ExportMeta(
        model_name=cfg.name,
        class_names=tuple(cfg.class_names),
        strides=tuple(cfg.strides),
        center_offset=cfg.center_offset,
        reg_max=cfg.reg_max,
        preprocess=spec,
        output_layout=output_layout,
        nanodet_deploy_version=__version__,
        checkpoint_sha256=checkpoint_sha256,
        random_weights=random_weights,
    )

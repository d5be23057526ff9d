"""Decode facts, in one place: the distribution integral, center priors and box <-> distance.

- Regression output per point: 4 sides (left, top, right, bottom), each a distribution over
  ``reg_max + 1`` bins; distance = softmax(bins) . [0, 1, ..., reg_max], in units of the stride.
- Center of cell (row i, col j) at stride s: ``((j + o) * s, (i + o) * s)``, with the center
  offset ``o`` = 0.5 for legacy NanoDet and 0 for NanoDet-Plus (``ModelConfig.center_offset``).
- Points are ordered level by level (strides ascending), row-major inside a level, and a level
  has ``ceil(H / s) x ceil(W / s)`` points.

The NumPy postprocessor mirrors these facts for the runtimes (it may not import torch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Integral(nn.Module):
    """softmax over ``reg_max + 1`` bins, dotted with 0..reg_max. Buffer key: ``project``."""

    def __init__(self, reg_max: int) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer("project", torch.linspace(0, reg_max, reg_max + 1))

    def forward(self, bins: torch.Tensor) -> torch.Tensor:
        """(..., 4 * (reg_max + 1)) -> (..., 4) distances in stride units."""
        shape = bins.shape[:-1]
        probs = F.softmax(bins.reshape(*shape, 4, self.reg_max + 1), dim=-1)
        return probs @ self.project.type_as(probs)


def level_sizes(input_hw: tuple[int, int], strides: tuple[int, ...]) -> list[tuple[int, int]]:
    h, w = input_hw
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


def center_priors(
    input_hw: tuple[int, int],
    strides: tuple[int, ...],
    center_offset: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(P, 4) float32 tensor of (cx, cy, stride, stride) in input pixels, in output point order."""
    parts = []
    for (h, w), s in zip(level_sizes(input_hw, strides), strides, strict=True):
        ys = (torch.arange(h, device=device, dtype=torch.float32) + center_offset) * s
        xs = (torch.arange(w, device=device, dtype=torch.float32) + center_offset) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        st = torch.full((h * w,), float(s), device=device)
        parts.append(torch.stack([xx.reshape(-1), yy.reshape(-1), st, st], dim=1))
    return torch.cat(parts, dim=0)


def distance2bbox(
    points_xy: torch.Tensor,
    distances: torch.Tensor,
    max_shape_hw: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Centers (..., 2) and distances (..., 4) l, t, r, b -> boxes (..., 4) x1, y1, x2, y2.

    With ``max_shape_hw`` the boxes are clamped to [0, W] x [0, H] (official NanoDet).
    """
    x1 = points_xy[..., 0] - distances[..., 0]
    y1 = points_xy[..., 1] - distances[..., 1]
    x2 = points_xy[..., 0] + distances[..., 2]
    y2 = points_xy[..., 1] + distances[..., 3]
    if max_shape_hw is not None:
        h, w = max_shape_hw
        x1, x2 = x1.clamp(min=0, max=w), x2.clamp(min=0, max=w)
        y1, y2 = y1.clamp(min=0, max=h), y2.clamp(min=0, max=h)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def bbox2distance(
    points_xy: torch.Tensor,
    boxes_xyxy: torch.Tensor,
    max_dis: float | None = None,
    eps: float = 0.1,
) -> torch.Tensor:
    """Centers (..., 2) and boxes (..., 4) -> distances l, t, r, b, clamped to [0, max_dis - eps]."""
    left = points_xy[..., 0] - boxes_xyxy[..., 0]
    top = points_xy[..., 1] - boxes_xyxy[..., 1]
    right = boxes_xyxy[..., 2] - points_xy[..., 0]
    bottom = boxes_xyxy[..., 3] - points_xy[..., 1]
    dist = torch.stack([left, top, right, bottom], dim=-1)
    if max_dis is not None:
        dist = dist.clamp(min=0, max=max_dis - eps)
    return dist

"""Necks: legacy PAN (NanoDet) and Ghost-PAN (NanoDet-Plus), key-compatible with official NanoDet.

Resampling uses scale factors (never sizes read from tensors), so one graph serves any input
size that is a multiple of 32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nanodet_deploy.models.layers import ConvModule, DepthwiseConvModule, make_activation


class PAN(nn.Module):
    """Legacy NanoDet PAN: 1x1 lateral convs (with bias, no norm, no activation), bilinear
    top-down (x2) and bottom-up (x0.5) additions, no 3x3 convs."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, norm=None, activation=None) for c in in_channels
        )
        for m in self.lateral_convs:  # official FPN init: xavier uniform, zero bias
            nn.init.xavier_uniform_(m.conv.weight)
            nn.init.zeros_(m.conv.bias)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            up = F.interpolate(laterals[i], scale_factor=2.0, mode="bilinear", align_corners=False)
            laterals[i - 1] = laterals[i - 1] + up
        for i in range(len(laterals) - 1):
            down = F.interpolate(
                laterals[i], scale_factor=0.5, mode="bilinear", align_corners=False
            )
            laterals[i + 1] = laterals[i + 1] + down
        return tuple(laterals)


class GhostModule(nn.Module):
    """1x1 primary conv to ceil(out/2) channels + cheap 3x3 depthwise conv; outputs concatenated."""

    def __init__(self, in_channels: int, out_channels: int, activation: str | None) -> None:
        super().__init__()
        init_channels = math.ceil(out_channels / 2)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_channels, init_channels, 1, bias=False),
            nn.BatchNorm2d(init_channels),
            make_activation(activation) if activation else nn.Sequential(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_channels, init_channels, 3, 1, 1, groups=init_channels, bias=False),
            nn.BatchNorm2d(init_channels),
            make_activation(activation) if activation else nn.Sequential(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        return torch.cat([x1, self.cheap_operation(x1)], dim=1)


class GhostBottleneck(nn.Module):
    """Stride-1 Ghost bottleneck without SE, as used by Ghost-PAN; depthwise-separable shortcut."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        kernel_size: int,
        activation: str,
    ) -> None:
        super().__init__()
        self.ghost1 = GhostModule(in_channels, mid_channels, activation)
        self.ghost2 = GhostModule(mid_channels, out_channels, None)
        if in_channels == out_channels:
            self.shortcut = nn.Sequential()
        else:
            pad = (kernel_size - 1) // 2
            self.shortcut = nn.Sequential(
                nn.Conv2d(
                    in_channels, in_channels, kernel_size, 1, pad, groups=in_channels, bias=False
                ),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost2(self.ghost1(x)) + self.shortcut(x)


class GhostBlocks(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, activation: str
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            GhostBottleneck(in_channels, out_channels, out_channels, kernel_size, activation)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class GhostPAN(nn.Module):
    """NanoDet-Plus Ghost-PAN: 1x1 reduce convs, top-down and bottom-up Ghost blocks (kernel 5),
    depthwise stride-2 downsampling, and ``num_extra_levels`` extra stride-2 levels."""

    def __init__(
        self,
        in_channels: tuple[int, ...],
        out_channels: int,
        kernel_size: int = 5,
        num_extra_levels: int = 1,
        activation: str = "LeakyReLU",
    ) -> None:
        super().__init__()
        n = len(in_channels)
        c = out_channels
        self.upsample = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)
        self.reduce_layers = nn.ModuleList(
            ConvModule(ci, c, 1, norm="BN", activation=activation) for ci in in_channels
        )
        self.top_down_blocks = nn.ModuleList(
            GhostBlocks(2 * c, c, kernel_size, activation) for _ in range(n - 1)
        )
        self.downsamples = nn.ModuleList(
            DepthwiseConvModule(c, c, kernel_size, stride=2, activation=activation)
            for _ in range(n - 1)
        )
        self.bottom_up_blocks = nn.ModuleList(
            GhostBlocks(2 * c, c, kernel_size, activation) for _ in range(n - 1)
        )
        self.extra_lvl_in_conv = nn.ModuleList(
            DepthwiseConvModule(c, c, kernel_size, stride=2, activation=activation)
            for _ in range(num_extra_levels)
        )
        self.extra_lvl_out_conv = nn.ModuleList(
            DepthwiseConvModule(c, c, kernel_size, stride=2, activation=activation)
            for _ in range(num_extra_levels)
        )

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        inputs = [reduce(f) for reduce, f in zip(self.reduce_layers, feats, strict=True)]
        n = len(inputs)
        inner = [inputs[-1]]  # top-down, deepest first
        for k, idx in enumerate(range(n - 1, 0, -1)):
            merged = torch.cat([self.upsample(inner[0]), inputs[idx - 1]], dim=1)
            inner.insert(0, self.top_down_blocks[k](merged))
        outs = [inner[0]]  # bottom-up
        for idx in range(n - 1):
            merged = torch.cat([self.downsamples[idx](outs[-1]), inner[idx + 1]], dim=1)
            outs.append(self.bottom_up_blocks[idx](merged))
        for conv_in, conv_out in zip(self.extra_lvl_in_conv, self.extra_lvl_out_conv, strict=True):
            outs.append(conv_in(inputs[-1]) + conv_out(outs[-1]))
        return tuple(outs)

"""ShuffleNetV2 backbone (0.5x / 1.0x / 1.5x), key-compatible with official NanoDet.

Every reshape uses sizes taken from the tensor inside the graph (``x.shape``), never numbers
read outside it, so exported graphs keep dynamic height and width.
"""

from __future__ import annotations

import torch
from torch import nn

from nanodet_deploy.models.layers import make_activation

STAGE_OUT_CHANNELS = {
    "0.5x": (24, 48, 96, 192),
    "1.0x": (24, 116, 232, 464),
    "1.5x": (24, 176, 352, 704),
}
STAGE_REPEATS = (4, 8, 4)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, g*k, H, W) -> (B, k*g, H, W) interleaving the groups; exports as ShuffleChannel."""
    b, c, h, w = x.shape
    x = x.reshape(b, groups, c // groups, h, w).transpose(1, 2)
    return x.reshape(b, c, h, w)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


class ShuffleV2Block(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: str) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleV2Block stride must be 1 or 2, got {stride}")
        branch = out_channels // 2
        if stride == 1 and in_channels != 2 * branch:
            raise ValueError("a stride-1 ShuffleV2Block needs in_channels == out_channels")
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(in_channels, stride),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, branch, 1, bias=False),
                nn.BatchNorm2d(branch),
                make_activation(activation),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_channels if stride > 1 else branch, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            make_activation(activation),
            _depthwise(branch, stride),
            nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            make_activation(activation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """Stem (conv3x3 s2 + BN + act, maxpool 3x3 s2) and stages 2-4; returns stages 2, 3, 4.

    Output strides 8, 16, 32. No final 1x1 conv (official ``with_last_conv=False``).
    """

    def __init__(self, width: str = "1.0x", activation: str = "LeakyReLU") -> None:
        super().__init__()
        if width not in STAGE_OUT_CHANNELS:
            raise ValueError(f"ShuffleNetV2 width must be one of {list(STAGE_OUT_CHANNELS)}")
        channels = STAGE_OUT_CHANNELS[width]
        self.out_channels = channels[1:]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(channels[0]),
            make_activation(activation),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = channels[0]
        for name, repeats, out_ch in zip(
            ("stage2", "stage3", "stage4"), STAGE_REPEATS, channels[1:], strict=True
        ):
            blocks = [ShuffleV2Block(in_ch, out_ch, 2, activation)]
            blocks += [ShuffleV2Block(out_ch, out_ch, 1, activation) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*blocks))
            in_ch = out_ch
        self._init_weights()

    def _init_weights(self) -> None:
        # Official NanoDet init: conv ~ N(0, 1/fan_in_channels), BN weight 1, bias 1e-4.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 1.0 / m.weight.shape[1])
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.constant_(m.bias, 1e-4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.conv1(x))
        c3 = self.stage2(x)
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        return c3, c4, c5

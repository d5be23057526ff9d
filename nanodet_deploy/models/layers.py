"""Building blocks whose attribute names reproduce official NanoDet state_dict keys."""

from __future__ import annotations

import torch
from torch import nn


def make_activation(name: str | None) -> nn.Module:
    """Activation by name. LeakyReLU uses slope 0.1, as official NanoDet does."""
    if name is None:
        return nn.Identity()
    if name == "LeakyReLU":
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)
    table = {
        "ReLU": lambda: nn.ReLU(inplace=True),
        "ReLU6": lambda: nn.ReLU6(inplace=True),
        "SiLU": lambda: nn.SiLU(inplace=True),
        "Hardswish": lambda: nn.Hardswish(inplace=True),
        "GELU": nn.GELU,
        "ELU": lambda: nn.ELU(inplace=True),
        "SELU": lambda: nn.SELU(inplace=True),
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; known: {['LeakyReLU', *table]}")
    return table[name]()


def _kaiming_init(conv: nn.Conv2d, activation: str | None) -> None:
    nonlinearity = "leaky_relu" if activation == "LeakyReLU" else "relu"
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity=nonlinearity)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ConvModule(nn.Module):
    """conv -> norm -> act. Keys: ``conv.*`` then ``bn.*`` (BatchNorm) or ``gn.*`` (GroupNorm).

    ``norm`` is "BN", "GN" (32 groups) or None; without a norm the conv has a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        norm: str | None = "BN",
        activation: str | None = "LeakyReLU",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, bias=norm is None
        )
        self.norm_name = {"BN": "bn", "GN": "gn", None: None}[norm]
        if norm == "BN":
            self.bn = nn.BatchNorm2d(out_channels)
        elif norm == "GN":
            self.gn = nn.GroupNorm(32, out_channels)
        self.act = make_activation(activation)
        _kaiming_init(self.conv, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        return self.act(x)


class DepthwiseConvModule(nn.Module):
    """depthwise -> dwnorm -> act -> pointwise -> pwnorm -> act (one activation module, used twice).

    Registration order (and so state_dict order) is depthwise, pointwise, dwnorm, pwnorm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        activation: str | None = "LeakyReLU",
    ) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride, padding, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.dwnorm = nn.BatchNorm2d(in_channels)
        self.pwnorm = nn.BatchNorm2d(out_channels)
        self.act = make_activation(activation)
        _kaiming_init(self.depthwise, activation)
        _kaiming_init(self.pointwise, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dwnorm(self.depthwise(x)))
        return self.act(self.pwnorm(self.pointwise(x)))


class Scale(nn.Module):
    """A learnable scalar (key ``scale``, a 0-d tensor)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(value, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def normal_init(module: nn.Conv2d, std: float, bias: float = 0.0) -> None:
    nn.init.normal_(module.weight, 0.0, std)
    if module.bias is not None:
        nn.init.constant_(module.bias, bias)

"""Detection heads, key-compatible with official NanoDet.

Every head's ``forward`` returns raw ``(B, P, C + 4 * (reg_max + 1))``: class logits, then the
l, t, r, b distributions, points level by level and row-major within a level. Losses,
assignment, decoding and NMS live elsewhere.
"""

from __future__ import annotations

import torch
from torch import nn

from nanodet_deploy.models.decode import Integral
from nanodet_deploy.models.layers import ConvModule, DepthwiseConvModule, Scale, normal_init

PRIOR_BIAS = -4.595  # sigmoid(-4.595) = 0.01: the initial class confidence


def flatten_levels(levels: list[torch.Tensor]) -> torch.Tensor:
    """[(B, K, H_l, W_l)] -> (B, sum H_l * W_l, K)."""
    return torch.cat([lvl.flatten(start_dim=2) for lvl in levels], dim=2).permute(0, 2, 1)


class GFLPredictionHead(nn.Module):
    """Per level: ``stacked_convs`` depthwise-separable conv modules, then one 1x1 conv to
    ``C + 4 * (reg_max + 1)`` channels (classification and regression share it).

    Legacy NanoDetHead: kernel 3, and a ``gfl_reg`` ModuleList that official NanoDet builds but
    never runs (``with_dead_reg``): kept so official checkpoints load strictly; it receives
    no gradient and is never exported. NanoDetPlusHead: kernel 5, no ``gfl_reg``.
    """

    with_dead_reg: bool = False

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int,
        stacked_convs: int,
        kernel_size: int,
        num_levels: int,
        reg_max: int,
        activation: str,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.distribution_project = Integral(reg_max)
        self.cls_convs = nn.ModuleList(
            nn.ModuleList(
                DepthwiseConvModule(
                    in_channels if i == 0 else feat_channels, feat_channels, kernel_size,
                    activation=activation,
                )
                for i in range(stacked_convs)
            )
            for _ in range(num_levels)
        )  # fmt: skip
        out_channels = num_classes + 4 * (reg_max + 1)
        self.gfl_cls = nn.ModuleList(
            nn.Conv2d(feat_channels, out_channels, 1) for _ in range(num_levels)
        )
        if self.with_dead_reg:
            self.gfl_reg = nn.ModuleList(
                nn.Conv2d(feat_channels, 4 * (reg_max + 1), 1) for _ in range(num_levels)
            )
            for conv in self.gfl_reg:
                normal_init(conv, std=0.01)
            self.gfl_reg.requires_grad_(False)
        for m in self.cls_convs.modules():
            if isinstance(m, nn.Conv2d):
                normal_init(m, std=0.01)
        for conv in self.gfl_cls:
            normal_init(conv, std=0.01, bias=PRIOR_BIAS)

    def forward_levels(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Per level raw maps (B, C + 4 * (reg_max + 1), H_l, W_l)."""
        outs = []
        for feat, convs, gfl_cls in zip(feats, self.cls_convs, self.gfl_cls, strict=True):
            for conv in convs:
                feat = conv(feat)
            outs.append(gfl_cls(feat))
        return outs

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return flatten_levels(self.forward_levels(feats))


class AuxHead(nn.Module):
    """NanoDet-Plus assign-guidance head (official SimpleConvHead), training only.

    Shared over levels: ``stacked_convs`` 3x3 ConvModules with GroupNorm(32) for classification
    and for regression, a 3x3 class conv, a 3x3 regression conv and one Scale per level.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int,
        stacked_convs: int,
        num_levels: int,
        reg_max: int,
        activation: str,
    ) -> None:
        super().__init__()

        def tower() -> nn.ModuleList:
            return nn.ModuleList(
                ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, 1, 1,
                           norm="GN", activation=activation)
                for i in range(stacked_convs)
            )  # fmt: skip

        self.cls_convs = tower()
        self.reg_convs = tower()
        self.gfl_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(feat_channels, 4 * (reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        for m in [*self.cls_convs, *self.reg_convs]:
            normal_init(m.conv, std=0.01)
        normal_init(self.gfl_cls, std=0.01, bias=PRIOR_BIAS)
        normal_init(self.gfl_reg, std=0.01)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        outs = []
        for x, scale in zip(feats, self.scales, strict=True):
            cls_feat, reg_feat = x, x
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            reg = scale(self.gfl_reg(reg_feat)).float()
            outs.append(torch.cat([self.gfl_cls(cls_feat), reg], dim=1))
        return flatten_levels(outs)


class NanoDetHead(GFLPredictionHead):
    """Legacy NanoDet head (official NanoDetHead, ``share_cls_reg=True``): kernel 3 in the zoo,
    plus the unused ``gfl_reg`` convs official checkpoints carry."""

    with_dead_reg = True


class NanoDetPlusHead(GFLPredictionHead):
    """NanoDet-Plus head (official NanoDetPlusHead): kernel 5 in the zoo."""

"""The NanoDet detector: backbone -> neck -> head (+ NanoDet-Plus training-only aux modules)."""

from __future__ import annotations

import torch
from torch import nn

from nanodet_deploy.config import ModelConfig
from nanodet_deploy.models.backbone import ShuffleNetV2
from nanodet_deploy.models.heads import AuxHead, NanoDetHead, NanoDetPlusHead
from nanodet_deploy.models.necks import PAN, GhostPAN

AUX_PREFIXES = ("aux_fpn.", "aux_head.")  # training-only modules of NanoDet-Plus


class NanoDet(nn.Module):
    """Attribute names (backbone, fpn, head, aux_fpn, aux_head) give official state_dict keys.

    ``forward(images)`` is inference: raw ``(B, P, C + 4 * (reg_max + 1))`` logits. The
    assign-guidance modules of NanoDet-Plus run only in ``forward_train``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ShuffleNetV2(cfg.backbone_width, cfg.activation)
        in_channels = self.backbone.out_channels
        num_levels = len(cfg.strides)
        head_args = dict(
            num_classes=cfg.num_classes,
            in_channels=cfg.neck_channels,
            feat_channels=cfg.head_channels,
            stacked_convs=cfg.stacked_convs,
            kernel_size=cfg.head_kernel_size,
            num_levels=num_levels,
            reg_max=cfg.reg_max,
            activation=cfg.activation,
        )
        if cfg.arch == "nanodet":
            self.fpn = PAN(in_channels, cfg.neck_channels)
            self.head = NanoDetHead(**head_args)
        else:
            self.fpn = self._ghost_pan(cfg, in_channels)
            self.head = NanoDetPlusHead(**head_args)
            self.aux_fpn = self._ghost_pan(cfg, in_channels)
            self.aux_head = AuxHead(
                num_classes=cfg.num_classes,
                in_channels=2 * cfg.neck_channels,
                feat_channels=cfg.aux_channels,
                stacked_convs=cfg.aux_stacked_convs,
                num_levels=num_levels,
                reg_max=cfg.reg_max,
                activation=cfg.activation,
            )

    @staticmethod
    def _ghost_pan(cfg: ModelConfig, in_channels: tuple[int, ...]) -> GhostPAN:
        return GhostPAN(
            in_channels,
            cfg.neck_channels,
            kernel_size=cfg.neck_kernel_size,
            num_extra_levels=len(cfg.strides) - len(in_channels),
            activation=cfg.activation,
        )

    @property
    def has_aux(self) -> bool:
        return hasattr(self, "aux_head")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.fpn(self.backbone(images)))

    def forward_train(
        self, images: torch.Tensor, detach_aux_input: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Head output and, for NanoDet-Plus, the aux head output that guides assignment.

        With ``detach_aux_input`` (official: from ``detach_epoch`` on) the aux branch gets
        detached backbone and neck features, so it no longer trains them.
        """
        feats = self.backbone(images)
        fpn_feats = self.fpn(feats)
        head_out = self.head(fpn_feats)
        if not self.has_aux:
            return head_out, None
        if detach_aux_input:
            feats = tuple(f.detach() for f in feats)
            fpn_feats = tuple(f.detach() for f in fpn_feats)
        aux_feats = self.aux_fpn(feats)
        dual = tuple(torch.cat([f, a], dim=1) for f, a in zip(fpn_feats, aux_feats, strict=True))
        return head_out, self.aux_head(dual)

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """state_dict without the training-only aux modules."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(AUX_PREFIXES)}


def build_model(cfg: ModelConfig) -> NanoDet:
    return NanoDet(cfg)

"""Fine-tuning from weights whose BatchNorm was folded into the convolutions.

Weights recovered from an inference export (such as ``shared/reference/nanodet-m_coco.pth``,
converted back from an ONNX file) carry each BatchNorm as ``weight = 1``, ``bias = b``,
``running_mean = 0``, ``running_var = 1 - eps``: exact in eval mode, but in training mode BN
normalizes with the batch statistics instead, which changes the network's function completely
(on raccoon images the COCO model's best "cat" score drops from about 0.6 to under 0.1). So
fine-tuning would start from a broken network.

:func:`unfold_batchnorm` re-parametrizes every such layer without changing the eval-mode
function: with ``m`` and ``v`` the per-channel mean and variance of the layer's input ``z``
over some training images, it sets ``running_mean = m``, ``running_var = v``,
``weight = sqrt(v + eps)`` and ``bias = b + m``. Eval mode still computes ``z + b``, and
training mode, whose batch statistics are close to ``m`` and ``v``, now computes nearly the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

log = logging.getLogger(__name__)


def folded_batchnorms(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """BatchNorm layers holding identity statistics and unit scale (folded into the conv)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d) and m.affine and m.track_running_stats:
            identity = (
                torch.all(m.running_mean == 0)
                and torch.allclose(
                    m.running_var, torch.full_like(m.running_var, 1 - m.eps), rtol=0.0, atol=1e-7
                )  # a fresh BN has running_var 1
                and torch.all(m.weight == 1)
            )
            if identity:
                out.append((name, m))
    return out


@torch.no_grad()
def unfold_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate the folded BatchNorm layers of ``model`` on ``batches`` of input images.

    Returns the number of layers changed. The eval-mode output is unchanged (up to rounding).
    """
    layers = folded_batchnorms(model)
    if not layers:
        return 0
    sums: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_pre_hook(_accumulate(name, sums)) for name, m in layers]
    was_training = model.training
    model.eval()
    try:
        for images in batches:
            model(images)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for name, m in layers:
        total, total_sq, count = sums[name]
        mean = total / count
        var = (total_sq / count - mean * mean).clamp(min=0)
        m.bias.add_(mean.to(m.bias.dtype))
        m.weight.copy_((var + m.eps).sqrt())
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
    return len(layers)


def _accumulate(name: str, sums: dict[str, list[torch.Tensor]]):
    def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().double()
        stats = [x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), x.numel() / x.shape[1]]
        if name in sums:
            stats = [a + b for a, b in zip(sums[name], stats, strict=True)]
        sums[name] = stats

    return hook

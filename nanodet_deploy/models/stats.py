"""Model statistics: exact parameter counts, conv multiply-accumulates, points per level.

MACs follow official NanoDet ``tools/flops.py`` (mobile_cv): for every Conv2d / Linear that
runs in the inference forward, ``weight.numel() * H_out * W_out``; no bias, norm, activation
or resampling. Training-only modules (NanoDet-Plus aux) do not run, so they do not count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from nanodet_deploy.models.decode import level_sizes
from nanodet_deploy.models.detector import AUX_PREFIXES, NanoDet


@dataclass(frozen=True)
class ModuleStats:
    name: str
    params: int
    macs: int


@dataclass(frozen=True)
class ModelStats:
    model_name: str
    input_hw: tuple[int, int]
    params_total: int
    params_without_aux: int
    params_used_in_forward: int
    macs: int
    points_per_level: dict[int, int]
    modules: list[ModuleStats] = field(default_factory=list)

    @property
    def num_points(self) -> int:
        return sum(self.points_per_level.values())


def count_params(model: nn.Module, skip_prefixes: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(skip_prefixes))


def conv_macs(model: NanoDet, input_hw: tuple[int, int]) -> tuple[int, dict[str, int], set[str]]:
    """Total MACs, MACs per module name, and names of the parameterized modules that ran."""
    per_module: dict[str, int] = {}
    ran: set[str] = set()
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d | nn.Linear):

            def hook(m: nn.Module, _inp, out: torch.Tensor, name: str = name) -> None:
                spatial = out.shape[2] * out.shape[3] if out.dim() == 4 else 1
                per_module[name] = per_module.get(name, 0) + m.weight.numel() * spatial

            hooks.append(mod.register_forward_hook(hook))
        if any(True for _ in mod.parameters(recurse=False)):
            hooks.append(mod.register_forward_hook(lambda *_a, name=name: ran.add(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_hw))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return sum(per_module.values()), per_module, ran


def model_stats(model: NanoDet, input_hw: tuple[int, int], depth: int = 2) -> ModelStats:
    total_macs, per_module, ran = conv_macs(model, input_hw)
    used = sum(p.numel() for n, p in model.named_parameters() if n.rsplit(".", 1)[0] in ran)
    groups: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        key = ".".join(name.split(".")[:depth])
        groups.setdefault(key, [0, 0])[0] += p.numel()
    for name, macs in per_module.items():
        key = ".".join(name.split(".")[:depth])
        groups.setdefault(key, [0, 0])[1] += macs
    strides = model.cfg.strides
    points = {s: h * w for (h, w), s in zip(level_sizes(input_hw, strides), strides, strict=True)}
    return ModelStats(
        model_name=model.cfg.name,
        input_hw=tuple(input_hw),
        params_total=count_params(model),
        params_without_aux=count_params(model, AUX_PREFIXES),
        params_used_in_forward=used,
        macs=total_macs,
        points_per_level=points,
        modules=[ModuleStats(k, v[0], v[1]) for k, v in groups.items()],
    )

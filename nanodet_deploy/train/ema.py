"""Exponential moving average of the weights, with official NanoDet ``ExpMovingAverager`` semantics.

Official NanoDet (after d2go) updates after every optimizer step ``iteration``:

    d = decay * exp(-(1 + iteration) / 2000) + (1 - decay)
    ema = ema * (1 - d) + value * d

``d`` is the weight of the *new* value: close to 1 at the start (the average follows the
model), falling to ``1 - decay`` (0.0002) after a few thousand steps. ``ramp_steps`` is the
2000. Every parameter and buffer is averaged, BN running statistics included; integer buffers
(``num_batches_tracked``) are copied (official multiplies and truncates them).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ModelEMA:
    """Averaged copy of ``model.state_dict()`` (same keys, so it loads into the model)."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, ramp_steps: int = 2000) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.ramp_steps = ramp_steps
        self.state: dict[str, torch.Tensor] = {
            k: v.detach().clone() for k, v in model.state_dict().items()
        }

    def new_value_weight(self, iteration: int) -> float:
        """Official ``calculate_dacay``: the weight of the current model in the update."""
        return self.decay * math.exp(-(1 + iteration) / self.ramp_steps) + (1 - self.decay)

    @torch.no_grad()
    def update(self, model: nn.Module, iteration: int) -> None:
        d = self.new_value_weight(iteration)
        for name, value in model.state_dict().items():
            ema = self.state[name]
            if ema.is_floating_point():
                ema.mul_(1.0 - d).add_(value.detach(), alpha=d)
            else:
                ema.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.state) ^ set(state)
        if missing:
            raise KeyError(f"EMA state does not match the model: {sorted(missing)[:8]}")
        for name, value in state.items():
            self.state[name].copy_(value)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (e.g. an evaluation copy)."""
        model.load_state_dict(self.state, strict=True)

"""Learning rate as a pure function of the optimizer step: warmup, then cosine / multi-step.

Being a function of the step (not a stateful scheduler object) makes resuming exact: the step
is all the state there is. The trainer sets every param group's ``lr`` before each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LRSchedule:
    """``lr(step)`` for ``total_steps`` optimizer steps of ``steps_per_epoch`` each.

    - warmup (official NanoDet ``linear``): during the first ``warmup_steps`` steps the lr
      rises linearly from ``warmup_ratio`` times the scheduled value to the full value;
    - ``cosine``: from ``base_lr`` at step 0 to ``min_lr`` at ``total_steps`` (per step);
    - ``multistep``: ``base_lr * gamma ** k`` where k counts the milestones (epochs) reached;
    - ``constant``: ``base_lr``.
    """

    base_lr: float
    total_steps: int
    steps_per_epoch: int
    kind: str = "cosine"
    min_lr: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_steps: int = 0
    warmup_ratio: float = 1e-4

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "multistep", "constant"):
            raise ValueError(f"unknown lr schedule {self.kind!r}")
        if self.total_steps < 1 or self.steps_per_epoch < 1:
            raise ValueError("total_steps and steps_per_epoch must be >= 1")

    def main(self, step: int) -> float:
        if self.kind == "cosine":
            t = min(step, self.total_steps) / self.total_steps
            return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
        if self.kind == "multistep":
            epoch = step // self.steps_per_epoch
            return self.base_lr * self.gamma ** sum(1 for m in self.milestones if epoch >= m)
        return self.base_lr

    def __call__(self, step: int) -> float:
        lr = self.main(step)
        if step < self.warmup_steps:
            lr *= 1.0 - (1.0 - step / self.warmup_steps) * (1.0 - self.warmup_ratio)
        return lr

"""Initialize only some parts of a model from a checkpoint (``train.init_parts``).

    report = load_parts(model, weights, ("backbone",), "nanodet-m_coco.pth")
    log.info(report.summary())

Parts are state-dict key prefixes: ``backbone`` (``backbone.``), ``neck`` (``fpn.``), ``head``
(``head.``), ``aux`` (NanoDet-Plus's training-only ``aux_fpn.`` / ``aux_head.``). Every tensor of
a requested part must be in the checkpoint with the model's shape, otherwise a CheckpointError
names the keys; the other parts keep their initialization. The typical use: the ShuffleNetV2
backbone of the official COCO NanoDet-m weights under a NanoDet-Plus (same backbone; Ghost-PAN
neck and head differ).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from nanodet_deploy.checkpoint import CheckpointError

log = logging.getLogger(__name__)

PART_PREFIXES: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone.",),
    "neck": ("fpn.",),
    "head": ("head.",),
    "aux": ("aux_fpn.", "aux_head."),
}
_OPTIONAL_SUFFIXES = ("num_batches_tracked", "distribution_project.project")


@dataclass
class PartsReport:
    """What ``load_parts`` did: tensors loaded per part, and the parts left as they were."""

    source: str
    loaded: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # part -> why

    def summary(self) -> str:
        loaded = ", ".join(f"{p} ({n} tensors)" for p, n in self.loaded.items()) or "nothing"
        skipped = "; ".join(f"{p}: {why}" for p, why in self.skipped.items()) or "nothing"
        return f"{self.source}: loaded {loaded}; kept the initialization of {skipped}"


def part_of(key: str) -> str | None:
    return next((p for p, prefixes in PART_PREFIXES.items() if key.startswith(prefixes)), None)


def load_parts(
    model: nn.Module, weights: dict[str, torch.Tensor], parts: Sequence[str], source: str
) -> PartsReport:
    """Copy the ``parts`` of ``weights`` into ``model`` (module doc); the report of it."""
    unknown = [p for p in parts if p not in PART_PREFIXES]
    if unknown:
        raise ValueError(f"init_parts: unknown {unknown}; choose from {list(PART_PREFIXES)}")
    own = model.state_dict()
    report = PartsReport(source)
    updates: dict[str, torch.Tensor] = {}
    for part in PART_PREFIXES:
        keys = [k for k in own if part_of(k) == part]
        if not keys:
            continue
        if part not in parts:
            in_ckpt = sum(part_of(k) == part for k in weights)
            report.skipped[part] = f"not requested ({in_ckpt} tensors in the checkpoint)"
            continue
        updates.update(_part_tensors(part, keys, own, weights, source))
        report.loaded[part] = sum(not k.endswith(_OPTIONAL_SUFFIXES) for k in keys)
    missing_parts = [p for p in parts if p not in report.loaded]
    if missing_parts:
        raise CheckpointError(f"{source}: the model has no {missing_parts} to initialize")
    model.load_state_dict({**own, **updates}, strict=True)
    return report


def _part_tensors(
    part: str, keys: list[str], own: dict, weights: dict, source: str
) -> dict[str, torch.Tensor]:
    required = [k for k in keys if not k.endswith(_OPTIONAL_SUFFIXES)]
    missing = [k for k in required if k not in weights]
    mismatched = [
        f"{k}: checkpoint {list(weights[k].shape)} vs model {list(own[k].shape)}"
        for k in required if k in weights and weights[k].shape != own[k].shape
    ]  # fmt: skip
    if missing or mismatched:
        lines = [f"{source}: part {part!r} does not fit the model"]
        if missing:
            lines.append(f"missing in the checkpoint ({len(missing)}): {', '.join(missing[:8])}"
                         + (" ..." if len(missing) > 8 else ""))  # fmt: skip
        if mismatched:
            lines.append(f"other shapes ({len(mismatched)}): {'; '.join(mismatched[:8])}"
                         + (" ..." if len(mismatched) > 8 else ""))  # fmt: skip
        raise CheckpointError("\n  ".join(lines))
    return {k: weights[k].to(own[k].dtype) for k in keys if k in weights}

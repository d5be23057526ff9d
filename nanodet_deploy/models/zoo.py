"""The model zoo: the one name -> configuration map.

Names follow official NanoDet. An official-style size suffix (``-416``, ``_320``) sets the
default input size, e.g. ``nanodet-plus-m_416`` or ``nanodet-m-416``.
"""

from __future__ import annotations

import re
from dataclasses import replace

from nanodet_deploy.config import ConfigError, ModelConfig

_LEGACY = dict(arch="nanodet", head_kernel_size=3, strides=(8, 16, 32))
_PLUS = dict(arch="nanodet-plus", head_kernel_size=5, strides=(8, 16, 32, 64))

ZOO: dict[str, ModelConfig] = {
    "nanodet-m": ModelConfig(name="nanodet-m", backbone_width="1.0x", **_LEGACY),
    "nanodet-m-0.5x": ModelConfig(name="nanodet-m-0.5x", backbone_width="0.5x", **_LEGACY),
    "nanodet-m-1.5x": ModelConfig(
        name="nanodet-m-1.5x",
        backbone_width="1.5x",
        neck_channels=128,
        head_channels=128,
        **_LEGACY,
    ),
    "nanodet-plus-m": ModelConfig(
        name="nanodet-plus-m", backbone_width="1.0x", aux_channels=192, **_PLUS
    ),
    "nanodet-plus-m-1.5x": ModelConfig(
        name="nanodet-plus-m-1.5x",
        backbone_width="1.5x",
        neck_channels=128,
        head_channels=128,
        aux_channels=256,
        **_PLUS,
    ),
}

_SIZE_SUFFIX = re.compile(r"^(?P<base>.+?)[-_](?P<size>\d{3,4})$")


def zoo_names() -> list[str]:
    return list(ZOO)


def zoo_config(name: str, num_classes: int | None = None) -> ModelConfig:
    """Config of a zoo model by name; unknown names raise ConfigError listing the known ones."""
    base, size = name, None
    if name not in ZOO and (m := _SIZE_SUFFIX.match(name)) and m["base"] in ZOO:
        base, size = m["base"], int(m["size"])
    if base not in ZOO:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(ZOO)}")
    cfg = ZOO[base]
    if size is not None:
        cfg = replace(cfg, name=name, input_hw=(size, size))
    if num_classes is not None and num_classes != cfg.num_classes:
        cfg = replace(cfg, num_classes=num_classes, class_names=())
    return cfg

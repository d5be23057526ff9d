"""Model configuration: the frozen ``ModelConfig``, the model zoo, and strict YAML helpers.

Config is read at the edge (the CLI) and handed to functions as plain values. Unknown or
misspelled keys are errors that name the key, the section and the file. The training sections
(``data:``, ``augment:``, ``train:``) are in ``train_config.py``. Torch-free.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ARCHS = ("nanodet", "nanodet-plus")  # legacy NanoDet (PAN + NanoDetHead) | NanoDet-Plus
BACKBONE_WIDTHS = ("0.5x", "1.0x", "1.5x")
ACTIVATIONS = ("LeakyReLU", "ReLU", "ReLU6", "SiLU", "Hardswish", "GELU", "ELU", "SELU")
COCO_MEAN_BGR = (103.53, 116.28, 123.675)
COCO_STD_BGR = (57.375, 57.12, 58.395)


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the file and key."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a NanoDet model. Stored inside every checkpoint."""

    name: str = "custom"
    arch: str = "nanodet-plus"
    num_classes: int = 80
    class_names: tuple[str, ...] = ()
    backbone_width: str = "1.0x"
    neck_channels: int = 96
    head_channels: int = 96
    stacked_convs: int = 2
    head_kernel_size: int = 5
    neck_kernel_size: int = 5  # Ghost-PAN only
    reg_max: int = 7
    strides: tuple[int, ...] = (8, 16, 32, 64)
    activation: str = "LeakyReLU"
    aux_channels: int = 192  # NanoDet-Plus assign-guidance head (training only)
    aux_stacked_convs: int = 4
    detach_epoch: int = 10
    input_hw: tuple[int, int] = (320, 320)  # default (H, W) for training, export and info
    mean_bgr: tuple[float, float, float] = COCO_MEAN_BGR
    std_bgr: tuple[float, float, float] = COCO_STD_BGR

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ConfigError(f"model config {self.name!r}: " + "; ".join(problems))
        if not self.class_names:
            object.__setattr__(self, "class_names", default_class_names(self.num_classes))

    def _problems(self) -> list[str]:
        p = []
        if self.arch not in ARCHS:
            p.append(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.backbone_width not in BACKBONE_WIDTHS:
            p.append(
                f"backbone_width must be one of {BACKBONE_WIDTHS}, got {self.backbone_width!r}"
            )
        if self.activation not in ACTIVATIONS:
            p.append(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.num_classes < 1:
            p.append(f"num_classes must be >= 1, got {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            p.append(f"{len(self.class_names)} class_names for num_classes={self.num_classes}")
        s = self.strides
        if len(s) < 3 or s[0] != 8 or any(b != 2 * a for a, b in itertools.pairwise(s)):
            p.append(f"strides must be 8, 16, 32[, 64 ...] (each twice the last), got {list(s)}")
        if self.arch == "nanodet" and len(s) != 3:
            p.append("legacy nanodet (PAN neck) has exactly 3 levels: strides [8, 16, 32]")
        if self.reg_max < 1:
            p.append(f"reg_max must be >= 1, got {self.reg_max}")
        if self.head_kernel_size % 2 == 0 or self.neck_kernel_size % 2 == 0:
            p.append("kernel sizes must be odd")
        if self.arch == "nanodet-plus" and self.aux_channels % 32:
            p.append(
                f"aux_channels must be a multiple of 32 (GroupNorm groups), got {self.aux_channels}"
            )
        if len(s) >= 3 and (
            len(self.input_hw) != 2 or any(v % s[2] or v <= 0 for v in self.input_hw)
        ):
            p.append(f"input_hw {list(self.input_hw)} must be 2 positive multiples of {s[2]}")
        return p

    @property
    def center_offset(self) -> float:
        """Center of cell (i, j) is ((j + o) * s, (i + o) * s): 0.5 legacy, 0 NanoDet-Plus."""
        return 0.5 if self.arch == "nanodet" else 0.0

    @property
    def size_multiple(self) -> int:
        """Input H and W must be multiples of this: the deepest backbone stride (32).

        The top-down path upsamples x2 between backbone levels, so their sizes must divide
        exactly. Extra levels (NanoDet-Plus stride 64) come from stride-2 convs, which round
        up: 416 works for NanoDet-Plus (stride-64 map 7x7 = ceil(416 / 64)).
        """
        return self.strides[2]

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


def default_class_names(num_classes: int) -> tuple[str, ...]:
    if num_classes == len(COCO_CLASSES):
        return COCO_CLASSES
    return tuple(f"class_{i}" for i in range(num_classes))


def check_input_hw(input_hw: tuple[int, int], multiple: int, what: str = "input size") -> None:
    h, w = input_hw
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        raise ConfigError(
            f"{what} {h}x{w} (HxW) must be positive multiples of {multiple} (the deepest backbone stride)"
        )


def parse_hw(text: str | int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Parse ``"320"`` / ``"320,416"`` / ``"320x416"`` / ``(320, 416)`` into ``(H, W)``."""
    if isinstance(text, int):
        return (text, text)
    if isinstance(text, list | tuple):
        vals = [int(v) for v in text]
    else:
        vals = [int(v) for v in str(text).replace("x", ",").split(",") if v.strip()]
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2:
        raise ConfigError(f"size {text!r}: expected H or H,W")
    return (vals[0], vals[1])


# ---------------------------------------------------------------- strict dict -> dataclass


def to_plain(obj: Any) -> Any:
    """Dataclass -> dict of lists/str/numbers (YAML/JSON/checkpoint friendly)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def from_plain(cls: type, data: Any, where: str, source: str) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ConfigError naming key and file."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: section {where!r} must be a mapping, got {type(data).__name__}"
        )
    flds = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in flds:
            close = difflib.get_close_matches(str(key), list(flds), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {sorted(flds)}"
            raise ConfigError(f"{source}: unknown key {key!r} in {where!r}{hint}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}", source) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {where}: {exc}") from None


def _coerce(tp: Any, value: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_plain(tp, value, where, source)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where, source) if len(args) == 1 else value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: {where} must be a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        return tuple(_coerce(item_tp, v, where, source) for v in value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{source}: {where} must be {tp.__name__}, got {value!r}")
    return value


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def model_config_from_dict(data: dict[str, Any], source: str) -> ModelConfig:
    """A ``model:`` section: either full fields, or ``base: <zoo name>`` plus overrides."""
    data = dict(data or {})
    base = data.pop("base", None)
    if base is not None:
        merged = {**to_plain(zoo_config(str(base))), **data}
        if "num_classes" in data and "class_names" not in data:
            merged["class_names"] = []
        if "class_names" in data and "num_classes" not in data:
            merged["num_classes"] = len(data["class_names"])
        data = merged
    elif "class_names" in data and "num_classes" not in data:
        data["num_classes"] = len(data["class_names"])
    return from_plain(ModelConfig, data, "model", source)


COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic_light", "fire_hydrant", "stop_sign", "parking_meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports_ball", "kite",
    "baseball_bat", "baseball_glove", "skateboard", "surfboard", "tennis_racket", "bottle",
    "wine_glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot_dog", "pizza", "donut", "cake", "chair", "couch", "potted_plant",
    "bed", "dining_table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell_phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy_bear", "hair_drier", "toothbrush",
)  # fmt: skip


# ------------------------------------------------------------------ the model zoo
# The one name -> configuration map. Names follow official NanoDet. An official-style size
# suffix (``-416``, ``_320``) sets the default input size, e.g. ``nanodet-plus-m_416``.

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
        cfg = dataclasses.replace(cfg, name=name, input_hw=(size, size))
    if num_classes is not None and num_classes != cfg.num_classes:
        cfg = dataclasses.replace(cfg, num_classes=num_classes, class_names=())
    return cfg

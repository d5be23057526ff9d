"""Frozen configuration dataclasses and a strict YAML loader.

Config is read at the edge (the CLI) and handed to functions as plain values. Unknown or
misspelled keys are errors that name the key, the section and the file.
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
    import yaml

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
        from nanodet_deploy.models.zoo import zoo_config

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


# ------------------------------------------------------------------ training configuration
# A training YAML has the sections ``model:`` (see model_config_from_dict), ``data:``,
# ``augment:`` (the fields of train.transforms.AugmentConfig, checked by the trainer) and
# ``train:``. Path values may use ${VAR} / ${VAR:-default}; relative paths resolve against the
# config file's folder, paths inside data.train / data.val against data.root (a VOC split file
# is looked up under data.root, then beside the config; otherwise it is a split name).

DATA_FORMATS = ("voc", "coco", "yolo")
OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("cosine", "multistep", "constant")
BEST_METRICS = ("map", "ap50")
TRAINING_SECTIONS = ("model", "data", "augment", "train")
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class SplitConfig:
    """Where one split lives. After load_config every path is absolute."""

    # voc: split name (root/<name>.txt, root/ImageSets/Main/<name>.txt) or file; None: all XML
    split: str | None = None
    annotations: str | None = None  # coco: annotation JSON
    images: str | None = None  # coco, yolo: image folder
    labels: str | None = None  # yolo: label folder


@dataclass(frozen=True)
class DataConfig:
    format: str = "voc"  # voc | coco | yolo
    root: str = ""  # dataset folder; relative split paths resolve against it
    train: SplitConfig = SplitConfig(split="train")
    val: SplitConfig = SplitConfig(split="val")
    class_names: tuple[str, ...] = ()  # () = from the data (VOC: sorted names found)
    skip_invalid: bool = False  # skip (and count) malformed annotations instead of failing
    min_box_size: float = 1.0  # px; smaller boxes are dropped with a warning

    def __post_init__(self) -> None:
        if self.format not in DATA_FORMATS:
            raise ConfigError(f"data.format must be one of {DATA_FORMATS}, got {self.format!r}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32  # per process (torchrun: per rank)
    num_workers: int = 2  # data-loader worker processes
    seed: int = 0
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    norm_bias_decay: bool = True  # False: no weight decay on norm weights and on biases
    lr_schedule: str = "cosine"  # cosine | multistep | constant (after warmup)
    min_lr: float = 5e-5  # cosine: the final learning rate
    milestones: tuple[int, ...] = ()  # multistep: epochs at which lr *= gamma
    gamma: float = 0.1
    warmup_steps: int = 300  # linear warmup (optimizer steps) from lr * warmup_ratio
    warmup_ratio: float = 1e-4
    grad_clip: float = 35.0  # max global gradient norm; 0 = off
    ema: bool = True  # official ExpMovingAverager
    ema_decay: float = 0.9998
    ema_ramp_steps: int = 2000  # time constant (steps) of the official EMA decay ramp
    amp: bool = True  # mixed precision, used on CUDA only
    eval_interval: int = 1  # evaluate every N epochs (and after the last); 0 = never
    best_metric: str = "map"  # map (mAP@[.5:.95]) | ap50: what picks best.pth
    init_from: str | None = None  # checkpoint to fine-tune from (ours or official)
    loss_qfl: float = 1.0  # loss weights (official NanoDet and NanoDet-Plus configs)
    loss_dfl: float = 0.25
    loss_bbox: float = 2.0

    def __post_init__(self) -> None:
        p = []
        if self.optimizer not in OPTIMIZERS:
            p.append(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            p.append(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.best_metric not in BEST_METRICS:
            p.append(f"best_metric must be one of {BEST_METRICS}, got {self.best_metric!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.num_workers < 0:
            p.append("epochs and batch_size must be >= 1, num_workers >= 0")
        if self.lr <= 0 or self.min_lr < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            p.append("lr must be > 0; min_lr, weight_decay, grad_clip >= 0")
        if self.warmup_steps < 0 or not 0 < self.warmup_ratio <= 1:
            p.append("warmup_steps must be >= 0 and warmup_ratio in (0, 1]")
        if not 0 <= self.ema_decay <= 1 or self.ema_ramp_steps <= 0:
            p.append("ema_decay must be in [0, 1] and ema_ramp_steps > 0")
        if self.eval_interval < 0:
            p.append("eval_interval must be >= 0")
        if p:
            raise ConfigError("train: " + "; ".join(p))


@dataclass(frozen=True)
class TrainingConfig:
    """A whole training YAML. ``augment`` stays a mapping here (config imports nothing of ours);
    the trainer turns it into ``AugmentConfig`` strictly. ``model_classes_fixed``: the model
    section named its classes (then they must match the data); otherwise they come from the data.
    """

    model: ModelConfig
    data: DataConfig
    train: TrainConfig = TrainConfig()
    augment: dict[str, Any] = dataclasses.field(default_factory=dict)
    model_classes_fixed: bool = False
    source: str = "<memory>"


def expand_env(text: str, where: str, source: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""

    def repl(m: re.Match[str]) -> str:
        value = os.environ.get(m[1])
        if value:
            return value
        if m[2] is not None:
            return m[2]
        raise ConfigError(
            f"{source}: {where}: environment variable {m[1]} is not set "
            f"(set it, or write ${{{m[1]}:-default}})"
        )

    return _ENV_VAR.sub(repl, text)


def resolve_path(text: str, base: Path, where: str, source: str) -> str:
    """Expand variables and ``~``; a relative path is taken relative to ``base``."""
    path = Path(expand_env(str(text), where, source)).expanduser()
    return os.path.normpath(path if path.is_absolute() else base / path)


def data_config_from_dict(section: Any, base: Path, source: str) -> DataConfig:
    """The ``data:`` section; ``train:``/``val:`` may be a VOC split name instead of a mapping."""
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: section 'data' must be a mapping")
    section = dict(section)
    if isinstance(section.get("root"), str) and section["root"]:
        section["root"] = resolve_path(section["root"], base, "data.root", source)
    split_base = Path(section["root"]) if section.get("root") else base
    for name in ("train", "val"):
        split = section.get(name)
        if isinstance(split, str):
            split = {"split": split}
        if isinstance(split, dict):
            split = dict(split)
            for key in ("annotations", "images", "labels"):
                if isinstance(split.get(key), str):
                    split[key] = resolve_path(split[key], split_base, f"data.{name}.{key}", source)
            if isinstance(split.get("split"), str):  # a file under root or beside the config
                value = expand_env(split["split"], f"data.{name}.split", source)
                found = [p for p in (split_base / value, base / value) if p.is_file()]
                split["split"] = os.path.normpath(found[0]) if found else value
            section[name] = split
    return from_plain(DataConfig, section, "data", source)


def load_config(path: str | os.PathLike) -> TrainingConfig:
    """Read a training YAML strictly: unknown sections or keys are errors naming key and file."""
    source, base = str(path), Path(path).resolve().parent
    raw = read_yaml(path)
    _check_sections(raw, source)
    for required in ("model", "data"):
        if not isinstance(raw.get(required), dict):
            raise ConfigError(f"{source}: needs a {required!r} section (a mapping)")
    model_section = raw["model"]
    model = model_config_from_dict(model_section, source)
    data = data_config_from_dict(raw["data"], base, source)
    train_section = dict(raw.get("train") or {})
    if isinstance(train_section.get("init_from"), str):
        train_section["init_from"] = resolve_path(
            train_section["init_from"], base, "train.init_from", source
        )
    train = from_plain(TrainConfig, train_section, "train", source)
    augment = raw.get("augment") or {}
    if not isinstance(augment, dict):
        raise ConfigError(f"{source}: section 'augment' must be a mapping")
    fixed = "class_names" in model_section or "num_classes" in model_section
    if fixed and data.class_names and tuple(data.class_names) != tuple(model.class_names):
        raise ConfigError(
            f"{source}: model classes {list(model.class_names)} differ from "
            f"data.class_names {list(data.class_names)} (give them in one place)"
        )
    if "class_names" in model_section and not data.class_names:
        data = dataclasses.replace(data, class_names=tuple(model.class_names))
    if not fixed and data.class_names:
        names = tuple(data.class_names)
        model = dataclasses.replace(model, num_classes=len(names), class_names=names)
    return TrainingConfig(model, data, train, dict(augment), fixed, source)


def load_data_config(path: str | os.PathLike) -> DataConfig:
    """The ``data:`` section of a data YAML or of a full training config."""
    raw = read_yaml(path)
    _check_sections(raw, str(path))
    if not isinstance(raw.get("data"), dict):
        raise ConfigError(f"{path}: needs a 'data' section (a mapping)")
    return data_config_from_dict(raw["data"], Path(path).resolve().parent, str(path))


def _check_sections(raw: dict[str, Any], source: str) -> None:
    for key in raw:
        if key not in TRAINING_SECTIONS:
            close = difflib.get_close_matches(str(key), TRAINING_SECTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{source}: unknown section {key!r} (known: {list(TRAINING_SECTIONS)}){hint}"
            )

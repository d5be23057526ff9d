"""Training configuration: the ``data:``, ``augment:`` and ``train:`` sections of a training
YAML, and reading whole training / data YAMLs strictly (unknown keys are errors naming the key
and the file). The ``model:`` section and the zoo are in ``config.py``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanodet_deploy.config import (
    ConfigError,
    ModelConfig,
    from_plain,
    model_config_from_dict,
    read_yaml,
)

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
INIT_PARTS = ("backbone", "neck", "head", "aux")  # key prefixes: train/partial_init.py
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
    skip_invalid: bool = False  # skip (and count) malformed annotations / bad images, not fail
    min_box_size: float = 1.0  # px; smaller boxes are dropped with a warning
    verify_images: bool = True  # decode every image when loading (cached); false: trust files

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
    init_parts: tuple[str, ...] = ()  # parts of init_from to load (train/partial_init.py); (): all
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
        unknown = [part for part in self.init_parts if part not in INIT_PARTS]
        if unknown:
            p.append(f"init_parts: unknown {unknown}; choose from {list(INIT_PARTS)}")
        if self.init_parts and not self.init_from:
            p.append("init_parts needs init_from")
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

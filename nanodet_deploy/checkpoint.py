"""Checkpoints: our format (config + weights + EMA + training state) and official NanoDet files.

Our format is a dict ``{"format": "nanodet-deploy", "config": <ModelConfig dict>, "model":
state_dict, "ema": state_dict | None, "epoch": int, ...}``, written atomically and always read
with ``torch.load(weights_only=True)``: never a pickled module.

Official NanoDet files load too: Lightning ``.ckpt`` (``state_dict`` with ``model.`` and, when
EMA was used, ``avg_model.`` prefixes; the EMA copy wins), ``model_best.pth`` (``{"state_dict":
bare keys}``), old v0.x ``.pth`` (bare or ``module.`` keys) and plain state dicts. Their
architecture is inferred from the weights' shapes. Loading is strict: a checkpoint of another
architecture fails with an error that lists what does not match. A file that is not a
checkpoint at all (empty, text, truncated, a pickled object) fails with an error that says
what the file is and which formats load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nanodet_deploy.config import ModelConfig, from_plain, to_plain
from nanodet_deploy.fileio import atomic_output
from nanodet_deploy.models import AUX_PREFIXES, NanoDet, build_model
from nanodet_deploy.models.backbone import STAGE_OUT_CHANNELS

log = logging.getLogger(__name__)
FORMAT = "nanodet-deploy"
FORMAT_VERSION = 1
# Entries that may be absent from a checkpoint without changing inference.
_OPTIONAL_SUFFIXES = ("num_batches_tracked", "distribution_project.project")
LOADABLE = (
    "loadable are nanodet-deploy checkpoints (last.pth / best.pth of `nanodet-deploy train`), "
    "official NanoDet Lightning .ckpt files and official .pth state dicts (model_best.pth, "
    "v0.x weights, a plain state_dict of tensors)"
)


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names the file."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    kind: str  # "nanodet-deploy" | "lightning" | "state_dict"
    config: ModelConfig | None  # None for official files (use infer_model_config)
    model: dict[str, torch.Tensor]  # the weights to use: EMA when present
    raw: dict[str, Any]  # the whole file, for resuming training
    used_ema: bool


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    config: ModelConfig,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor] | None = None,
    epoch: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, then rename)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": to_plain(config),
        "model": model_state,
        "ema": ema_state,
        "epoch": int(epoch),
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | os.PathLike, prefer_ema: bool = True) -> LoadedCheckpoint:
    """Read any supported checkpoint file and pick its inference weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError...
        # torch's message advises weights_only=False (arbitrary code execution): not repeated
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint: {describe_unreadable(path, exc)}; "
            f"{LOADABLE}"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{path}: expected a dict of weights, found {type(raw).__name__}; {LOADABLE}"
        )
    if raw.get("format") == FORMAT:
        try:
            cfg = from_plain(ModelConfig, raw["config"], "config", str(path))
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: bad embedded config: {exc}") from exc
        use_ema = prefer_ema and raw.get("ema") is not None
        weights = raw["ema"] if use_ema else raw["model"]
        return LoadedCheckpoint(path, FORMAT, cfg, weights, raw, use_ema)
    sd = raw.get("state_dict", raw)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(
            f"{path}: no state_dict of tensors found (keys: {list(raw)[:8]}); {LOADABLE}"
        )
    weights, used_ema, kind = _official_weights(sd, prefer_ema)
    return LoadedCheckpoint(path, kind, None, weights, raw, used_ema)


def describe_unreadable(path: Path, exc: BaseException) -> str:
    """What a file that ``torch.load`` (weights only) rejected is, from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as err:
        return f"it cannot be read ({err.strerror or err})"
    if not head:
        return "it is an empty file (0 bytes)"
    pickled = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if pickled:
        return (
            f"it pickles Python objects ({pickled.group(1)}), not only tensors and plain data "
            "(e.g. a whole model object), and unpickling those can run arbitrary code"
        )
    if head.startswith(b"PK\x03\x04"):
        return _describe_zip(path)
    if head.startswith(b"\x80"):
        return "it is a pickle that is truncated or holds no PyTorch checkpoint"
    return _describe_other(head)


def _describe_zip(path: Path) -> str:
    if not zipfile.is_zipfile(path):
        return (
            "it is a truncated or corrupt zip archive (PyTorch checkpoints are zip files; "
            "an interrupted download, copy or save?)"
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if not any(n.endswith("/data.pkl") for n in names):
        return f"it is a zip archive but not a PyTorch checkpoint (files: {names[:5]})"
    return "it is a PyTorch zip checkpoint with corrupt contents"


def _describe_other(head: bytes) -> str:
    text = head.decode("utf-8", errors="replace")
    body = text[:-3] if len(head) == 64 else text  # the cut may split a character
    if any(not (c.isprintable() or c in "\r\n\t") for c in body):
        return f"it is unknown binary data (starting {head[:8].hex()})"
    if text.startswith("version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights (run `git lfs pull`)"
    if text.lstrip().lower().startswith(("<!doctype html", "<html")):
        return "it is an HTML page (a failed download?)"
    return f"it is a text file (starting {text[:24]!r})"


def _official_weights(sd: dict[str, torch.Tensor], prefer_ema: bool) -> tuple[dict, bool, str]:
    """Strip official prefixes. ``avg_model.X`` (EMA) overrides ``model.X`` like official
    ``load_model_weight``; ``module.`` (DataParallel) is removed."""
    if any(k.startswith(("model.", "avg_model.")) for k in sd):
        plain = {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}
        ema = {k[len("avg_model.") :]: v for k, v in sd.items() if k.startswith("avg_model.")}
        use_ema = prefer_ema and bool(ema)
        return ({**plain, **ema} if use_ema else plain), use_ema, "lightning"
    out = {k.removeprefix("module."): v for k, v in sd.items()}
    return out, False, "state_dict"


def infer_model_config(weights: dict[str, torch.Tensor], name: str = "custom") -> ModelConfig:
    """Recover a ModelConfig from official-layout weights (activation assumed LeakyReLU)."""
    try:
        stage2 = weights["backbone.stage2.0.branch1.2.weight"].shape[0] * 2
        width = next(w for w, ch in STAGE_OUT_CHANNELS.items() if ch[1] == stage2)
        levels = sum(1 for k in weights if k.startswith("head.gfl_cls.") and k.endswith(".weight"))
        dw = weights["head.cls_convs.0.0.depthwise.weight"]
        weights["head.gfl_cls.0.weight"]
        stacked = len({k.split(".")[3] for k in weights if k.startswith("head.cls_convs.0.")})
    except (KeyError, StopIteration) as exc:
        raise CheckpointError(
            f"weights are not a NanoDet / NanoDet-Plus layout (missing {exc})"
        ) from None
    plus = "fpn.reduce_layers.0.conv.weight" in weights
    project = weights.get("head.distribution_project.project")
    if project is not None:
        reg_max = project.numel() - 1
    elif "head.gfl_reg.0.weight" in weights:
        reg_max = weights["head.gfl_reg.0.weight"].shape[0] // 4 - 1
    elif "aux_head.gfl_reg.weight" in weights:
        reg_max = weights["aux_head.gfl_reg.weight"].shape[0] // 4 - 1
    else:
        reg_max = 7
    num_classes = weights["head.gfl_cls.0.weight"].shape[0] - 4 * (reg_max + 1)
    neck_key = "fpn.reduce_layers.0.conv.weight" if plus else "fpn.lateral_convs.0.conv.weight"
    kwargs: dict[str, Any] = dict(
        name=name,
        arch="nanodet-plus" if plus else "nanodet",
        num_classes=num_classes,
        backbone_width=width,
        neck_channels=weights[neck_key].shape[0],
        head_channels=dw.shape[0],
        stacked_convs=stacked,
        head_kernel_size=dw.shape[-1],
        reg_max=reg_max,
        strides=tuple(8 * 2**i for i in range(levels)),
    )
    if plus:
        kwargs["neck_kernel_size"] = weights["fpn.downsamples.0.depthwise.weight"].shape[-1]
        if "aux_head.gfl_cls.weight" in weights:
            kwargs["aux_channels"] = weights["aux_head.gfl_cls.weight"].shape[1]
            kwargs["aux_stacked_convs"] = len(
                {k.split(".")[2] for k in weights if k.startswith("aux_head.cls_convs.")}
            )
    return ModelConfig(**kwargs)


def check_and_load(
    model: NanoDet,
    weights: dict[str, torch.Tensor],
    source: str,
    allow_class_mismatch: bool = False,
) -> None:
    """Strictly load ``weights`` into ``model``; raise CheckpointError listing every mismatch.

    Tolerated: absent aux modules (training-only), absent BN ``num_batches_tracked`` and the
    constant ``distribution_project.project``. With ``allow_class_mismatch`` (fine-tuning to
    another number of classes) the class rows of the shared class+box conv are re-initialized
    and its box-regression rows are kept.
    """
    own = model.state_dict()
    has_aux = any(k.startswith(AUX_PREFIXES) for k in weights)
    missing = [
        k for k in own
        if k not in weights and not k.endswith(_OPTIONAL_SUFFIXES)
        and not (k.startswith(AUX_PREFIXES) and not has_aux)
    ]  # fmt: skip
    unexpected = [k for k in weights if k not in own]
    mismatched, adapted = [], {}
    for k, v in weights.items():
        if k in own and own[k].shape != v.shape:
            fixed = _adapt_class_rows(k, v, own[k], model) if allow_class_mismatch else None
            if fixed is None:
                mismatched.append(f"{k}: checkpoint {list(v.shape)} vs model {list(own[k].shape)}")
            else:
                adapted[k] = fixed
    if missing or unexpected or mismatched:
        raise CheckpointError(_mismatch_message(source, model, missing, unexpected, mismatched))
    merged = {**own, **{k: v for k, v in weights.items() if k in own}, **adapted}
    model.load_state_dict(merged, strict=True)
    if adapted:
        log.info("%s: re-initialized class outputs of %s", source, sorted(adapted))
    if not has_aux and model.has_aux:
        log.info("%s: no aux (assign-guidance) weights; they keep their initialization", source)


def _adapt_class_rows(
    key: str, theirs: torch.Tensor, mine: torch.Tensor, model: NanoDet
) -> torch.Tensor | None:
    """For a class-count change: keep box rows of head.gfl_cls, fresh class rows."""
    if key.startswith("aux_head.gfl_cls."):
        return mine.clone()
    if not key.startswith("head.gfl_cls."):
        return None
    box = 4 * (model.cfg.reg_max + 1)
    if theirs.shape[1:] != mine.shape[1:] or theirs.shape[0] <= box:
        return None
    out = mine.clone()
    out[-box:] = theirs[-box:]
    return out


def _mismatch_message(source: str, model: NanoDet, missing, unexpected, mismatched) -> str:
    lines = [f"{source}: checkpoint does not match model {model.cfg.name!r} ({model.cfg.arch}, "
             f"backbone {model.cfg.backbone_width}, {model.cfg.num_classes} classes)"]  # fmt: skip
    for title, items in (("shape mismatches", mismatched), ("missing keys", missing),
                         ("unexpected keys", unexpected)):  # fmt: skip
        if items:
            shown = "\n    ".join(items[:12])
            more = f"\n    ... and {len(items) - 12} more" if len(items) > 12 else ""
            lines.append(f"  {len(items)} {title}:\n    {shown}{more}")
    return "\n".join(lines)


def load_model(
    path: str | os.PathLike,
    config: ModelConfig | None = None,
    prefer_ema: bool = True,
) -> tuple[NanoDet, LoadedCheckpoint]:
    """Build the model a checkpoint describes (or ``config``) and load its weights strictly."""
    ckpt = read_checkpoint(path, prefer_ema=prefer_ema)
    cfg = config or ckpt.config or infer_model_config(ckpt.model, name=Path(path).stem)
    model = build_model(cfg)
    check_and_load(model, ckpt.model, str(path))
    return model.eval(), ckpt

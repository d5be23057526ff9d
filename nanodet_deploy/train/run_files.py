"""What a training run writes and reads back: the run folder, logs, ``last.pth`` / ``best.pth``.

Rank 0 writes everything, each file atomically (temp file + rename), after every epoch:

- ``log.json``: one record per epoch (losses, lr, times, val metrics); ``log.csv``: the same
  without nested values;
- ``best.pth``: when the val metric improved: model, EMA, model config, metrics, training config;
- ``last.pth``: model, EMA, model config, and to resume exactly: optimizer, AMP scaler, step,
  epoch, best score, log history, python / numpy / torch RNG states, training config.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanodet_deploy.checkpoint import check_and_load, read_checkpoint, save_checkpoint
from nanodet_deploy.config import ModelConfig, to_plain
from nanodet_deploy.fileio import write_text_atomic
from nanodet_deploy.train_config import TrainingConfig

log = logging.getLogger(__name__)
LAST, BEST, LOG_CSV, LOG_JSON = "last.pth", "best.pth", "log.csv", "log.json"


@dataclass
class RunState:
    """Everything besides weights and optimizer that a resumed run needs."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps done
    best: float = -1.0
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def prepare_out_dir(out: Path, resume: bool) -> Path:
    """Create ``out`` and check it is writable; refuse to overwrite a run unless resuming."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PermissionError(f"output folder {out} is not writable ({reason})") from None
    if resume and not (out / LAST).is_file():
        raise FileNotFoundError(f"--resume: no {LAST} in {out} to resume from")
    if not resume and (out / LAST).exists():
        raise ValueError(f"{out} already holds a run ({LAST}); pass --resume or another --out")
    return out


def save_epoch(
    out: Path,
    record: dict[str, Any],
    state: RunState,
    best_metric: str,
    model_cfg: ModelConfig,
    cfg: TrainingConfig,
    model: torch.nn.Module,
    ema_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> None:
    """After an epoch: logs, ``best.pth`` (if ``best_metric`` improved), then ``last.pth``."""
    state.history.append(record)
    write_logs(out, state.history)
    metric = record.get(best_metric)
    if metric is not None and metric > state.best:
        state.best, state.best_epoch = float(metric), int(record["epoch"])
        extra = {"metrics": record, "train_config": to_plain(cfg)}
        save_checkpoint(out / BEST, model_cfg, model.state_dict(), ema_state, state.epoch, extra)
    extra = {
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": state.step,
        "best": state.best, "best_epoch": state.best_epoch, "history": state.history,
        "rng": rng_state(), "train_config": to_plain(cfg),
    }  # fmt: skip
    save_checkpoint(out / LAST, model_cfg, model.state_dict(), ema_state, state.epoch, extra)


def restore(
    path: Path,
    model: torch.nn.Module,
    ema: Any,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: TrainingConfig,
) -> RunState:
    """Load ``last.pth`` into freshly built training objects; returns the run state."""
    raw = read_checkpoint(path, prefer_ema=False).raw
    if "optimizer" not in raw:
        raise ValueError(f"{path}: not a training checkpoint (no optimizer state)")
    if raw.get("train_config") != to_plain(cfg):
        log.warning("%s: differs from the config this run started with", cfg.source)
    check_and_load(model, raw["model"], str(path))
    if ema is not None:
        if raw.get("ema") is None:
            raise ValueError(f"{path}: the run was trained without EMA; the config enables it")
        ema.load_state_dict(raw["ema"])
    optimizer.load_state_dict(raw["optimizer"])
    scaler.load_state_dict(raw["scaler"])
    set_rng_state(raw["rng"])
    log.info("resuming %s after epoch %d (step %d)", path, raw["epoch"], raw["step"])
    return RunState(int(raw["epoch"]), int(raw["step"]), float(raw["best"]), raw["best_epoch"],
                    list(raw["history"]))  # fmt: skip


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU, CUDA) generator states as tensors and plain data
    (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, np.uint32), pos, has_gauss, gauss_np))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_logs(out: Path, history: list[dict[str, Any]]) -> None:
    write_text_atomic(out / LOG_JSON, json.dumps(history, indent=1) + "\n")
    columns: list[str] = []
    for rec in history:
        columns += [k for k, v in rec.items() if k not in columns and not isinstance(v, dict)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(out / LOG_CSV, buf.getvalue())

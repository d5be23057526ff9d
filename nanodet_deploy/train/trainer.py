"""The training loop: a plain, readable loop around ``train_step``.

``fit(cfg, out_dir)`` trains a NanoDet from a :class:`~nanodet_deploy.config.TrainingConfig`:

- data: loaders by ``data.format``; augmentation per ``augment:``; per-epoch shuffling from a
  generator seeded with ``(seed, epoch)`` (``DistributedSampler`` under torchrun) and
  augmentation seeded with ``(seed, epoch, index)``: a batch is a function of the epoch alone;
- optimizer AdamW or SGD, learning rate a pure function of the step (``schedule.LRSchedule``),
  gradient clipping, official EMA, AMP on CUDA, NanoDet-Plus aux input detached from
  ``model.detach_epoch`` on;
- after every epoch on rank 0: evaluation every ``eval_interval`` epochs (EMA weights when EMA
  is on) through the deployment path, ``log.csv`` / ``log.json`` and ``last.pth`` (plus
  ``best.pth`` by ``best_metric``), all written atomically;
- ``resume=True`` continues from ``out_dir/last.pth``: model, EMA, optimizer, AMP scaler, step,
  epoch, best score, log history and the python / numpy / torch RNG states. Since batches and
  learning rates depend only on (seed, epoch, step), a resumed run repeats the uninterrupted
  one exactly (bitwise on CPU).

Data-loader workers start from a ``forkserver`` process, which imports the main module again:
a script that calls :func:`fit` with ``num_workers > 0`` needs the usual
``if __name__ == "__main__":`` guard (the CLI has it).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from nanodet_deploy.checkpoint import check_and_load, read_checkpoint
from nanodet_deploy.config import ConfigError, ModelConfig, default_class_names, from_plain
from nanodet_deploy.datasets import ImageRecord, load_split
from nanodet_deploy.evaluation import evaluate
from nanodet_deploy.models import NanoDet, build_model
from nanodet_deploy.train import distributed
from nanodet_deploy.train.criterion import LossOutput, LossWeights, build_criterion
from nanodet_deploy.train.data import (
    Batch,
    DetectionDataset,
    EpochDataset,
    EpochSampler,
    collate,
    log_skipped_images,
    worker_init,
)
from nanodet_deploy.train.ema import ModelEMA
from nanodet_deploy.train.folded_bn import folded_batchnorms, unfold_batchnorm
from nanodet_deploy.train.partial_init import load_parts
from nanodet_deploy.train.run_files import LAST, RunState, prepare_out_dir, restore, save_epoch
from nanodet_deploy.train.schedule import LRSchedule
from nanodet_deploy.train.transforms import AugmentConfig, TrainTransform
from nanodet_deploy.train.validate import torch_detect_fn
from nanodet_deploy.train_config import TrainConfig, TrainingConfig

log = logging.getLogger(__name__)
Criterion = Callable[..., LossOutput]


class Reporter(Protocol):
    """Progress display (the CLI draws a rich progress bar); called on rank 0 only."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, done: int, terms: dict[str, float], lr: float) -> None: ...
    def end_epoch(self, record: dict[str, Any]) -> None: ...


class NullReporter:
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, done: int, terms: dict[str, float], lr: float) -> None:
        pass

    def end_epoch(self, record: dict[str, Any]) -> None:
        log.info("epoch %s: %s", record["epoch"], record)


@dataclass(frozen=True)
class FitResult:
    out_dir: Path
    model: NanoDet  # the trained (raw, not EMA) model
    ema: ModelEMA | None
    state: RunState


class TrainForward(nn.Module):
    """``forward`` = ``model.forward_train``, so DistributedDataParallel sees the training pass."""

    def __init__(self, model: NanoDet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, detach_aux: bool) -> tuple[torch.Tensor, Any]:
        return self.model.forward_train(images, detach_aux_input=detach_aux)


@dataclass(frozen=True)
class StepContext:
    device: torch.device
    grad_clip: float
    detach_aux: bool


def train_step(
    net: nn.Module,
    batch: Batch,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ctx: StepContext,
) -> dict[str, float]:
    """One optimizer step on one batch; returns the loss terms."""
    images, targets, _ = batch
    images = images.to(ctx.device, non_blocking=True)
    boxes = [t["boxes_xyxy"].to(ctx.device) for t in targets]
    labels = [t["labels"].to(ctx.device) for t in targets]
    with torch.autocast(ctx.device.type, enabled=scaler.is_enabled()):
        head_out, aux_out = net(images, ctx.detach_aux)
    aux_out = aux_out.float() if aux_out is not None else None
    loss = criterion(head_out.float(), aux_out, boxes, labels, tuple(images.shape[2:]))
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss.total).backward()
    if ctx.grad_clip > 0:
        scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, ctx.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return {"loss": loss.total.item(), **{k: v.item() for k, v in loss.terms.items()}}


# --------------------------------------------------------------------------------- setup


@dataclass(frozen=True, eq=False)
class Data:
    train: DetectionDataset
    val_records: tuple[ImageRecord, ...]
    class_names: tuple[str, ...]
    model_cfg: ModelConfig


def build_data(cfg: TrainingConfig, with_val: bool) -> Data:
    """Load the splits, fix the model's classes and bind the augmentation (strict keys)."""
    augment = from_plain(AugmentConfig, cfg.augment, "augment", cfg.source)
    train = load_split(cfg.data, "train", source=cfg.source)
    if not train.records:
        raise ConfigError(f"{cfg.source}: data.train has no images")
    names = train.class_names
    val = load_split(cfg.data, "val", names, source=cfg.source).records if with_val else ()
    if with_val and not val:
        raise ConfigError(f"{cfg.source}: data.val has no images (or set train.eval_interval: 0)")
    model_cfg = model_with_classes(cfg, names)
    transform = TrainTransform(model_cfg.input_hw, augment, model_cfg.mean_bgr, model_cfg.std_bgr)
    dataset = DetectionDataset(train.records, transform, seed=cfg.train.seed)
    return Data(dataset, tuple(val), tuple(names), model_cfg)


def model_with_classes(cfg: TrainingConfig, names: tuple[str, ...]) -> ModelConfig:
    """The model takes the data's classes; classes named in the model section must match."""
    m = cfg.model
    if cfg.model_classes_fixed and m.num_classes != len(names):
        raise ConfigError(f"{cfg.source}: model has {m.num_classes} classes, data {list(names)}")
    given = tuple(m.class_names)
    if cfg.model_classes_fixed and given != default_class_names(m.num_classes) and given != names:
        raise ConfigError(f"{cfg.source}: model class_names {list(given)} != data {list(names)}")
    return dataclasses.replace(m, num_classes=len(names), class_names=tuple(names))


def build_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if not t.norm_bias_decay and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov)
    return torch.optim.AdamW(groups, lr=t.lr)


def init_weights(
    model: NanoDet, path: str, parts: tuple[str, ...], source: str, data: Data, batch_size: int
) -> None:
    """Fine-tuning start: any checkpoint the loader accepts, whole (class rows re-initialized
    when the class count differs) or only ``parts`` (``partial_init``); BatchNorm folded into
    the convs (exported weights) is re-estimated on the first 64 training images
    (``folded_bn``): training-mode BN then reproduces the weights."""
    try:
        ckpt = read_checkpoint(path)
        if parts:
            log.info("init_parts: %s", load_parts(model, ckpt.model, parts, path).summary())
        else:
            check_and_load(model, ckpt.model, path, allow_class_mismatch=True)
    except ValueError as exc:
        raise ConfigError(f"{source}: train.init_from: {exc}") from None
    log.info("initialized from %s (%s%s)", path, ckpt.kind, ", EMA" if ckpt.used_ema else "")
    if folded_batchnorms(model):
        count = unfold_batchnorm(model, _plain_batches(data, 64, batch_size))
        log.info("%s: %d BatchNorm layers were folded into convs; re-estimated", path, count)


def _plain_batches(data: Data, count: int, batch_size: int) -> Iterator[torch.Tensor]:
    """The first ``count`` training images without augmentation, in batches."""
    keep_ratio = data.train.transform.config.keep_ratio
    plain = dataclasses.replace(data.train.transform, config=AugmentConfig.none(keep_ratio))
    images = DetectionDataset(data.train.records[:count], plain)
    for start in range(0, len(images), batch_size):
        samples = [images[i] for i in range(start, min(start + batch_size, len(images)))]
        log_skipped_images([s[2] for s in samples], "BatchNorm re-estimation")
        yield collate(samples, data.model_cfg.size_multiple)[0]


def make_loader(data: Data, t: TrainConfig, dist: distributed.DistInfo) -> DataLoader:
    """Shuffled batches of the training set; see :func:`set_loader_epoch`.

    Workers are started once (persistent) from a clean ``forkserver`` process: forking the
    training process itself can deadlock a worker in OpenCV's or OpenMP's thread pools. The
    sampler hands every worker the epoch along with the index (:class:`EpochSampler`).
    """
    per_rank = -(-len(data.train) // dist.world_size)
    if dist.enabled:
        inner = DistributedSampler(data.train, dist.world_size, dist.rank, seed=t.seed)
    else:
        inner = RandomSampler(data.train, generator=torch.Generator())
    workers = t.num_workers > 0
    return DataLoader(
        EpochDataset(data.train), batch_size=t.batch_size, sampler=EpochSampler(inner),
        num_workers=t.num_workers, collate_fn=partial(collate, size_multiple=data.model_cfg.size_multiple),
        drop_last=per_rank >= t.batch_size, generator=torch.Generator(),
        worker_init_fn=worker_init if workers else None, persistent_workers=workers,
        multiprocessing_context="forkserver" if workers else None,
    )  # fmt: skip


def set_loader_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Shuffling and augmentation of ``epoch`` depend on (seed, epoch) only."""
    epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    loader.generator.manual_seed(epoch_seed)
    loader.sampler.set_epoch(epoch, epoch_seed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available in this PyTorch build/machine")
    return torch.device(device)


# ----------------------------------------------------------------------------------- fit


@dataclass(eq=False)
class Run:
    """The objects of one training run (built by :func:`setup_run`)."""

    cfg: TrainingConfig
    t: TrainConfig
    out: Path
    dev: torch.device
    dist: distributed.DistInfo
    data: Data
    model: NanoDet
    net: nn.Module  # TrainForward(model), wrapped in DDP under torchrun
    ema: ModelEMA | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule
    criterion: Any
    loader: DataLoader
    eval_model: NanoDet | None  # rank 0's copy that evaluates the EMA weights
    reporter: Reporter
    state: RunState


def fit(
    cfg: TrainingConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device: str = "auto",
    epochs: int | None = None,
    reporter: Reporter | None = None,
) -> FitResult:
    """Train (or resume) a run into ``out_dir`` (module doc); ``epochs`` overrides the config."""
    run = setup_run(cfg, Path(out_dir), resume, device, epochs, reporter)
    for epoch in range(run.state.epoch, run.t.epochs):
        record = train_epoch(run, epoch)
        end_epoch(run, epoch, record)
    return FitResult(run.out, run.model, run.ema, run.state)


def train_epoch(run: Run, epoch: int) -> dict[str, Any]:
    """One pass over the training data; returns the epoch's log record (mean loss terms)."""
    run.net.train()
    set_loader_epoch(run.loader, run.t.seed, epoch)
    ctx = StepContext(run.dev, run.t.grad_clip, epoch >= run.data.model_cfg.detach_epoch)
    run.reporter.start_epoch(epoch + 1, run.t.epochs, len(run.loader))
    started, sums, lr = time.perf_counter(), {}, 0.0
    for i, batch in enumerate(run.loader):
        log_skipped_images(batch[2], f"epoch {epoch + 1} step {run.state.step + 1}")
        lr = run.schedule(run.state.step)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        terms = train_step(run.net, batch, run.criterion, run.optimizer, run.scaler, ctx)
        run.state.step += 1
        if run.ema is not None:
            run.ema.update(run.model, run.state.step)
        sums = {k: sums.get(k, 0.0) + v for k, v in terms.items()}
        run.reporter.step(i + 1, terms, lr)
    elapsed = round(time.perf_counter() - started, 3)
    means = _mean_over_ranks(sums, len(run.loader), run.dev)
    return {"epoch": epoch + 1, "step": run.state.step, "lr": lr, "train_time_s": elapsed, **means}


def end_epoch(run: Run, epoch: int, record: dict[str, Any]) -> None:
    """Sync BN statistics across ranks; on rank 0 evaluate (when due), log and save."""
    run.state.epoch = epoch + 1
    ema_state = run.ema.state_dict() if run.ema is not None else None
    if run.dist.enabled:  # rank 0's BN statistics, which DDP broadcasts at every forward
        distributed.broadcast_tensors([*run.model.buffers(), *(ema_state or {}).values()])
    if run.dist.is_main:
        if run.eval_model is not None and _eval_due(run.t, epoch):
            record.update(run_eval(run.eval_model, run.model, run.ema, run.data, run.dev))
        save_epoch(run.out, record, run.state, run.t.best_metric, run.data.model_cfg, run.cfg,
                   run.model, ema_state, run.optimizer, run.scaler)  # fmt: skip
        run.reporter.end_epoch(record)
    distributed.barrier()


def setup_run(
    cfg: TrainingConfig,
    out: Path,
    resume: bool,
    device: str,
    epochs: int | None,
    reporter: Reporter | None,
) -> Run:
    """Process group, run folder, data, model (+ init_from), EMA, optimizer; or a resume."""
    dev = resolve_device(device)
    dist = distributed.init_from_env(dev)
    if dev.type == "cuda" and dist.enabled:
        dev = torch.device("cuda", dist.local_rank)
    t = cfg.train if epochs is None else dataclasses.replace(cfg.train, epochs=epochs)
    cfg = dataclasses.replace(cfg, train=t)  # what checkpoints record
    if dist.is_main:
        prepare_out_dir(out, resume)
    distributed.barrier()
    seed_everything(t.seed)
    data = build_data(cfg, with_val=t.eval_interval > 0)
    model = build_model(data.model_cfg)
    if t.init_from and not resume:
        init_weights(model, t.init_from, t.init_parts, cfg.source, data, t.batch_size)
    model.to(dev)
    ema = ModelEMA(model, t.ema_decay, t.ema_ramp_steps) if t.ema else None
    optimizer = build_optimizer(model, t)
    scaler = torch.amp.GradScaler(dev.type, enabled=t.amp and dev.type == "cuda")
    state = restore(out / LAST, model, ema, optimizer, scaler, cfg) if resume else RunState()
    loader = make_loader(data, t, dist)
    net: nn.Module = TrainForward(model)
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(net, [dev.index] if dev.type == "cuda" else None)
    schedule = LRSchedule(
        t.lr, t.epochs * len(loader), len(loader), t.lr_schedule, t.min_lr, t.milestones,
        t.gamma, t.warmup_steps, t.warmup_ratio,
    )  # fmt: skip
    criterion = build_criterion(data.model_cfg, LossWeights(t.loss_qfl, t.loss_dfl, t.loss_bbox))
    eval_model = copy.deepcopy(model).eval() if dist.is_main and t.eval_interval > 0 else None
    reporter = reporter if reporter is not None and dist.is_main else NullReporter()
    return Run(cfg, t, out, dev, dist, data, model, net, ema, optimizer, scaler, schedule,
               criterion, loader, eval_model, reporter, state)  # fmt: skip


def _eval_due(t: TrainConfig, epoch: int) -> bool:
    return t.eval_interval > 0 and ((epoch + 1) % t.eval_interval == 0 or epoch + 1 == t.epochs)


def _mean_over_ranks(sums: dict[str, float], steps: int, dev: torch.device) -> dict[str, float]:
    keys = sorted(sums)
    means = torch.tensor([sums[k] / max(steps, 1) for k in keys], dtype=torch.float64, device=dev)
    means = distributed.reduce_mean(means)
    return {k: round(float(v), 6) for k, v in zip(keys, means.tolist(), strict=True)}


def run_eval(
    eval_model: NanoDet, model: NanoDet, ema: ModelEMA | None, data: Data, dev: torch.device
) -> dict[str, Any]:
    """mAP of the EMA weights (or the raw ones) on the val split, through the deploy path."""
    started = time.perf_counter()
    if ema is not None:
        ema.copy_to(eval_model)
    else:
        eval_model.load_state_dict(model.state_dict())
    detect = torch_detect_fn(eval_model, data.model_cfg.input_hw, dev)
    result, _ = evaluate(detect, data.val_records, data.class_names)
    metrics = {k: round(getattr(result, k), 6) for k in ("map", "ap50", "ap75")}
    if len(result.per_class_ap) > 1:
        metrics["per_class_ap"] = {k: round(v, 6) for k, v in result.per_class_ap.items()}
    return {**metrics, "eval_time_s": round(time.perf_counter() - started, 3)}

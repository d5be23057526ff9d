"""Training throughput (images/s) of the real training step, with and without data loading.

1. ``compute``: one fixed, pre-collated batch (real raccoon images, training augmentation)
   through ``train_step`` (forward, loss with assignment, backward, gradient clipping,
   AdamW step) plus the EMA update: what the model costs.
2. ``with_data``: the trainer's DataLoader (augmentation in ``--workers`` processes) feeding
   the same step: what an epoch costs.

Both time ``--steps`` steps after ``--warmup`` untimed ones. The machine description, the
load average before and after (other processes on a shared machine slow the numbers down;
there ``OMP_WAIT_POLICY=PASSIVE`` avoids OpenMP's spinning threads making it far worse) and
the settings go into the JSON:

    python benchmarks/bench_train_throughput.py --model nanodet-m --size 320 --batch 32 \
        --data ../shared/datasets/raccoon --out benchmarks/results/train_throughput.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import time
from pathlib import Path

import torch

from nanodet_deploy.config import zoo_config
from nanodet_deploy.device import describe_device, library_versions
from nanodet_deploy.models import build_model
from nanodet_deploy.train.criterion import build_criterion
from nanodet_deploy.train.ema import ModelEMA
from nanodet_deploy.train.trainer import (
    StepContext,
    TrainForward,
    build_data,
    build_optimizer,
    make_loader,
    set_loader_epoch,
    train_step,
)
from nanodet_deploy.train_config import DataConfig, SplitConfig, TrainConfig, TrainingConfig


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="nanodet-m")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--data", default=os.environ.get("RACCOON_DIR", "../shared/datasets/raccoon"))
    p.add_argument("--skip-data", action="store_true", help="only the compute measurement")
    p.add_argument("--out", default="benchmarks/results/train_throughput.json")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_cfg = dataclasses.replace(zoo_config(args.model), input_hw=(args.size, args.size))
    data_cfg = DataConfig(root=str(Path(args.data).resolve()), train=SplitConfig("train"))
    train_cfg = TrainConfig(batch_size=args.batch, num_workers=args.workers, eval_interval=0)
    cfg = TrainingConfig(model_cfg, data_cfg, train_cfg)
    data = build_data(cfg, with_val=False)
    model = build_model(data.model_cfg)
    optimizer = build_optimizer(model, train_cfg)
    ema = ModelEMA(model)
    net, criterion = TrainForward(model).train(), build_criterion(data.model_cfg)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ctx = StepContext(torch.device("cpu"), train_cfg.grad_clip, detach_aux=False)
    loader = make_loader(data, train_cfg, distributed_info())
    set_loader_epoch(loader, 0, 0)
    load_avg_before = os.getloadavg()
    fixed = next(iter(loader))

    def step(batch) -> None:
        train_step(net, batch, criterion, optimizer, scaler, ctx)
        ema.update(model, 1)

    compute = time_steps(lambda: step(fixed), args.warmup, args.steps)
    results = {"compute": summarize(compute, args.batch)}
    if not args.skip_data:
        batches = itertools.chain.from_iterable(epochs(loader))
        results["with_data"] = summarize(
            time_steps(lambda: step(next(batches)), args.warmup, args.steps), args.batch
        )
    record = {
        "benchmark": "train_throughput",
        "model": args.model, "input_hw": [args.size, args.size], "batch": args.batch,
        "warmup_steps": args.warmup, "timed_steps": args.steps, "workers": args.workers,
        "torch_threads": torch.get_num_threads(), "optimizer": "adamw", "amp": False,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "step": "forward + assignment + loss + backward + grad clip + AdamW + EMA",
        "results": results, "device": describe_device(), "versions": library_versions(),
        "load_average_before": load_avg_before, "load_average_after": os.getloadavg(),
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for name, r in results.items():
        print(f"{name}: {r['images_per_s']:.2f} images/s ({r['step_s_median']:.3f} s/step)")
    print(f"wrote {args.out}")


def distributed_info():
    from nanodet_deploy.train.distributed import DistInfo

    return DistInfo()


def epochs(loader):
    for epoch in itertools.count():
        set_loader_epoch(loader, 0, epoch)
        yield loader


def time_steps(fn, warmup: int, steps: int) -> tuple[list[float], float]:
    """Wall seconds per timed step, and this process's CPU seconds over all of them."""
    for _ in range(warmup):
        fn()
    times, cpu_start = [], time.process_time()
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times, time.process_time() - cpu_start


def summarize(timing: tuple[list[float], float], batch: int) -> dict:
    """Wall-clock rates, plus CPU seconds per image of the main process (workers excluded):
    on a machine shared with other jobs the CPU time still says what the step costs."""
    times, cpu_s = timing
    total = sum(times)
    return {
        "images_per_s": batch * len(times) / total,
        "step_s_mean": total / len(times),
        "step_s_median": statistics.median(times),
        "step_s_min": min(times),
        "step_s_max": max(times),
        "main_process_cpu_s_per_image": cpu_s / (batch * len(times)),
    }


if __name__ == "__main__":
    main()

"""``nanodet-deploy train``: train or fine-tune from a YAML config; torchrun runs it on N processes.

nanodet-deploy train configs/raccoon_nanodet-m_320_finetune.yaml --out runs/ft
nanodet-deploy train configs/raccoon_nanodet-m_320_finetune.yaml --out runs/ft --resume
torchrun --nproc_per_node 2 $(which nanodet-deploy) train CONFIG --out runs/ddp
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from nanodet_deploy.cli.common import console, fail, user_errors

DEVICES = ("auto", "cpu", "cuda")


@user_errors
def train(
    config: Annotated[Path, typer.Argument(help="Training YAML: model:, data:, augment:, train:.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: runs/<config name>).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pth.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Override train.epochs of the config.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch CPU threads (default: torch's choice).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a NanoDet: logs, last.pth and best.pth (by val mAP) go to the run folder."""
    from nanodet_deploy.config import load_config
    from nanodet_deploy.train import distributed
    from nanodet_deploy.train.run_files import BEST, LAST, LOG_CSV
    from nanodet_deploy.train.trainer import fit

    if device not in DEVICES and not device.startswith("cuda:"):
        raise fail(f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}")
    cfg = load_config(config)
    out = out or Path("runs") / config.stem
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    main = distributed.env_dist_info().is_main
    if not main:  # one rank reports
        logging.getLogger().setLevel(logging.WARNING)
    reporter = RichReporter() if progress and main else None
    try:
        result = fit(cfg, out, resume=resume, device=device, epochs=epochs, reporter=reporter)
    except KeyboardInterrupt:
        raise fail(f"interrupted; continue with --resume --out {out}", code=130) from None
    finally:
        if reporter is not None:
            reporter.close()
        distributed.shutdown()
    if not main:
        return
    state = result.state
    best = f", best {state.best:.4f} at epoch {state.best_epoch}" if state.best_epoch else ""
    console.print(f"[bold]done[/]: {state.epoch} epochs, {state.step} steps{best}")
    for name in (LAST, BEST, LOG_CSV):
        if (out / name).exists():
            console.print(f"  {out / name}", highlight=False)


class RichReporter:
    """One bar for the whole run (ETA) and one for the epoch with the loss terms; a line per epoch."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"), console=console,
        )  # fmt: skip
        self.run_task: Any = None
        self.epoch_task: Any = None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.run_task is None:
            self.progress.start()
            self.run_task = self.progress.add_task(
                "run", total=epochs * steps, completed=(epoch - 1) * steps, terms=""
            )
        if self.epoch_task is not None:
            self.progress.remove_task(self.epoch_task)
        self.epoch_task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps, terms="")

    def step(self, done: int, terms: dict[str, float], lr: float) -> None:
        parts = [f"{k.removeprefix('loss_')} {v:.3f}" for k, v in terms.items() if "aux" not in k]
        self.progress.update(
            self.epoch_task, completed=done, terms=f"{' '.join(parts)} lr {lr:.1e}"
        )
        self.progress.advance(self.run_task)

    def end_epoch(self, record: dict[str, Any]) -> None:
        line = f"epoch {record['epoch']}: loss {record['loss']:.4f}"
        if "map" in record:
            line += (
                f"  mAP {record['map']:.4f}  AP50 {record['ap50']:.4f}  AP75 {record['ap75']:.4f}"
            )
        self.progress.console.print(line + f"  ({record['train_time_s']:.1f} s)", highlight=False)

    def close(self) -> None:
        self.progress.stop()

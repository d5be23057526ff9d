"""Rich progress displays shared by the CLI commands (image checks, training)."""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from nanodet_deploy.cli.common import console


class ImageCheckBar:
    """``(done, total)`` callback -> a transient bar while dataset images are decoded."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.progress: Progress | None = None
        self.task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn("checking images"), BarColumn(bar_width=24), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=console, transient=True,
            )  # fmt: skip
            self.progress.start()
            self.task = self.progress.add_task("check", total=total)
        self.progress.update(self.task, completed=done)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


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

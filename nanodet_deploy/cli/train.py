"""``nanodet-deploy train``: train or fine-tune from a YAML config; torchrun runs it on N processes.

nanodet-deploy train configs/raccoon_nanodet-m_320_finetune.yaml --out runs/ft
nanodet-deploy train configs/raccoon_nanodet-m_320_finetune.yaml --out runs/ft --resume
torchrun --nproc_per_node 2 $(which nanodet-deploy) train CONFIG --out runs/ddp
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from nanodet_deploy.api import train as train_api
from nanodet_deploy.cli.common import console, fail, user_errors
from nanodet_deploy.cli.progress import ImageCheckBar, RichReporter
from nanodet_deploy.image_check import report_progress

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
    import torch  # the torch side: this command is its seam

    from nanodet_deploy.train import distributed
    from nanodet_deploy.train.run_files import BEST, LAST, LOG_CSV

    if device not in DEVICES and not device.startswith("cuda:"):
        raise fail(f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}")
    out = out or Path("runs") / config.stem
    if threads is not None:
        torch.set_num_threads(threads)
    main = distributed.env_dist_info().is_main
    if not main:  # one rank reports
        logging.getLogger().setLevel(logging.WARNING)
    reporter = RichReporter() if progress and main else None
    check_bar = ImageCheckBar(enabled=progress and main)
    try:
        with report_progress(check_bar):
            result = train_api(config, out, resume=resume, device=device, epochs=epochs,
                               reporter=reporter)  # fmt: skip
    except KeyboardInterrupt:
        raise fail(f"interrupted; continue with --resume --out {out}", code=130) from None
    finally:
        check_bar.close()
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

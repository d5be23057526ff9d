"""``nanodet-deploy eval``: COCO mAP of a checkpoint or an export folder on a dataset split.

The model runs in the runtime ``Detector`` (preprocess -> backend -> postprocess) with official
evaluation settings and the export's preprocess block (``--sampler`` / ``--resize`` override
it), so an exported model is measured as it will run. Torch is needed only for checkpoints,
pycocotools always (imported by the command: this module is its seam).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nanodet_deploy.cli.common import console, user_errors
from nanodet_deploy.cli.progress import ImageCheckBar
from nanodet_deploy.config import parse_hw
from nanodet_deploy.detector import Detector
from nanodet_deploy.fileio import write_json_atomic
from nanodet_deploy.image_check import report_progress
from nanodet_deploy.train_config import load_data_config


@user_errors
def eval_model(
    model: Annotated[str, typer.Argument(help="Checkpoint (.pth/.ckpt, ours or official) or export folder.")],
    data: Annotated[Path, typer.Option("--data", help="YAML with a data: section (or a full training config).")],
    backend: Annotated[str, typer.Option(help="auto, torch, onnxruntime, ncnn, mnn or openvino.")] = "auto",
    threads: Annotated[int, typer.Option(min=1, help="Inference threads.")] = 1,
    precision: Annotated[str | None, typer.Option(help="fp32, fp16, bf16 or int8 (default: as exported).")] = None,
    sampler: Annotated[str | None, typer.Option(help="resize or warp (default: the export's).")] = None,
    resize: Annotated[str | None, typer.Option("--resize", "--geometry", help="pad (default), letterbox or plain.")] = None,
    split: Annotated[str, typer.Option(help="Which split of the data: val or train.")] = "val",
    size: Annotated[str | None, typer.Option(help="Input size H or H,W (default: the model's).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics + COCO results here.")] = None,
) -> None:  # fmt: skip
    """mAP@[.5:.95], AP50, AP75 and per-class AP (pycocotools) of MODEL on the --data split."""
    from nanodet_deploy.evaluation import EVAL_SETTINGS, evaluate, load_eval_records

    if split not in ("val", "train"):
        raise ValueError(f"--split must be val or train, got {split!r}")
    data_cfg = load_data_config(data)
    input_hw = parse_hw(size) if size else None
    settings = {**EVAL_SETTINGS, **({"geometry": resize} if resize else {})}
    with Detector(
        model, backend, threads=threads, precision=precision, sampler=sampler,
        input_hw=input_hw, **settings,
    ) as det:  # fmt: skip
        check_bar = ImageCheckBar()
        try:
            with report_progress(check_bar):
                records, names = load_eval_records(data_cfg, det.class_names, split, str(data))
        finally:
            check_bar.close()
        with console.status(f"evaluating {len(records)} images ({det.backend_name})"):
            result, coco = evaluate(det.detect, records, names)
        settings = det.describe()
    _print(result, model, settings, split)
    if json_out is not None:
        payload = {
            "model": str(model), "data": str(data), "split": split, "detector": settings,
            "metrics": result.to_dict(), "results": coco,
        }  # fmt: skip
        json_out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(json_out, payload)
        console.print(f"wrote {json_out}", highlight=False)


def _print(result, model: str, settings: dict, split: str) -> None:
    (h, w), pre = settings["input_hw"], settings["preprocess"]
    console.print(
        f"[bold]{Path(model).name}[/] ({settings['backend']}, {h}x{w}, {pre['geometry']} "
        f"geometry, {pre['sampler']} sampler) on {split}: "
        f"{result.num_images} images, {result.num_detections} detections"
        + (f", {result.num_skipped} unreadable images skipped" if result.num_skipped else ""),
        highlight=False,
    )
    table = Table(show_header=True)
    for col in ("class", "AP@[.5:.95]", "AP50"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, ap in result.per_class_ap.items():
        ap50 = result.per_class_ap50[name]
        table.add_row(name, _fmt(ap), _fmt(ap50))
    table.add_row("[bold]all[/]", f"[bold]{result.map:.4f}[/]", f"[bold]{result.ap50:.4f}[/]")
    console.print(table)
    console.print(f"AP75 {result.ap75:.4f}", highlight=False)


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"

"""``nanodet-deploy detect MODEL SOURCE``: detections on images, a folder, a video or a camera.

    nanodet-deploy detect MODEL SOURCE [--backend auto|torch|onnxruntime|ncnn|mnn|openvino]
        [--threads N] [--precision fp32|fp16|bf16|int8] [--size H[,W]]
        [--resize pad|letterbox|plain] [--sampler resize|warp] [--score-thresh 0.35]
        [--iou-thresh 0.6] [--max-det 100] [--max-frames N] [--save-dir DIR] [--json OUT]

MODEL: an export folder (torch-free backends) or a checkpoint (torch).
``--resize`` / ``--sampler`` default to the export's meta.json preprocess block.
SOURCE: an image, a folder (its image files, sorted), a video file or a camera index (0, 1..).

``--score-thresh`` (default 0.35, what official NanoDet's demo draws) applies to the drawings
and the JSON alike; pass 0.05 (the evaluation threshold) to get every detection in the JSON.
JSON: a list of ``{"image", "label", "name", "score", "box_xyxy"}`` in original pixels, written
atomically when the run ends (also after Ctrl+C); ``image`` is the file name, or
``frame_000123`` (0-based) for videos and cameras.

Exit codes: 0 done (unreadable images in a folder are skipped with a warning and counted in the
summary); 1 a folder run in which no image could be read; 2 bad input (a missing or
inconsistent model or export folder, a single unreadable image, a file that is neither an
image nor a video, an empty folder, bad options).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nanodet_deploy.cli.common import console, err_console, user_errors
from nanodet_deploy.config import parse_hw
from nanodet_deploy.detect import AnnotatedSaver, RunStats, run_source
from nanodet_deploy.detector import DEFAULT_SCORE_THRESH, Detector
from nanodet_deploy.fileio import write_json_atomic
from nanodet_deploy.sources import open_source


@user_errors
def detect(
    model: Annotated[
        Path, typer.Argument(help="Export folder (onnxruntime/ncnn) or checkpoint (torch).")
    ],
    source: Annotated[
        str, typer.Argument(help="Image, folder of images, video file, or camera index.")
    ],
    backend: Annotated[
        str,
        typer.Option(help="auto, torch, onnxruntime, ncnn, mnn or openvino (auto: ncnn first)."),
    ] = "auto",
    threads: Annotated[
        int | None, typer.Option(help="Inference threads (default: cores, at most 4).")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="Input size H or H,W (default: the export size).")
    ] = None,
    resize: Annotated[
        str | None,
        typer.Option("--resize", "--geometry", help="pad, letterbox or plain (default: export's)."),
    ] = None,
    sampler: Annotated[
        str | None,
        typer.Option(help="resize (= ncnn from_pixels_resize) or warp (official NanoDet's)."),
    ] = None,
    score_thresh: Annotated[
        float, typer.Option(help="Keep detections scoring above this (drawings and JSON).")
    ] = DEFAULT_SCORE_THRESH,
    iou_thresh: Annotated[float, typer.Option(help="Class-aware NMS IoU threshold.")] = 0.6,
    max_det: Annotated[int, typer.Option(help="At most this many detections per image.")] = 100,
    precision: Annotated[
        str | None, typer.Option(help="fp32, fp16, bf16 or int8 (default: as exported).")
    ] = None,
    max_frames: Annotated[
        int | None, typer.Option(help="Stop after this many images / frames (camera!).")
    ] = None,
    save_dir: Annotated[
        Path | None, typer.Option(help="Write annotated images / an annotated .mp4 here.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write all detections to this JSON file.")
    ] = None,
) -> None:
    """Detect objects in images, a folder, a video or a camera stream."""
    if max_det < 0 or (max_frames is not None and max_frames < 1):
        raise ValueError("--max-det must be >= 0 and --max-frames >= 1")
    input_hw = parse_hw(size) if size else None
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
    src = open_source(source, max_frames)
    saver: AnnotatedSaver | None = None
    records: list[dict] = []
    stats = RunStats()
    try:
        saver = AnnotatedSaver(save_dir, src) if save_dir is not None else None
        with Detector(
            model, backend, threads=threads, precision=precision, geometry=resize,
            sampler=sampler, input_hw=input_hw, score_thresh=score_thresh,
            iou_thresh=iou_thresh, max_det=max_det,
        ) as detector:  # fmt: skip
            _run(detector, src, saver, records, stats)
            description = detector.describe()
    finally:
        src.close()
        if saver is not None:
            saver.close()
    if json_out is not None:
        write_json_atomic(json_out, records)
    if src.kind == "image":
        _print_detections(records)
    _print_summary(src, stats, description, saver, json_out)
    if src.kind == "folder" and stats.num_frames == 0:
        err_console.print("[bold red]error:[/] no image in the folder could be read")
        raise typer.Exit(1)


def _run(detector, src, saver, records: list[dict], stats) -> None:
    if src.kind == "image":
        run_source(detector, src, saver=saver, records=records, stats=stats)
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(f"{src.kind} {src.name}", total=src.total)

        def on_frame(frame, detections) -> None:
            if detections is None:
                progress.console.print(
                    f"[yellow]warning:[/] skipped {frame.name}: {_escape(frame.error or '')}",
                    highlight=False,
                )
            progress.advance(task)

        try:
            run_source(detector, src, saver=saver, records=records, on_frame=on_frame, stats=stats)
        except KeyboardInterrupt:
            progress.console.print("[yellow]interrupted[/]: finishing what was done")


def _print_summary(src, stats, description: dict, saver, json_out: Path | None) -> None:
    table = Table(title="detect summary", show_header=False)
    h, w = description["input_hw"]
    pre = description["preprocess"]
    table.add_row("model", f"{description['model']} ({description['backend']}, {h}x{w} HxW, "
                  f"{pre['geometry']} geometry, {pre['sampler']} sampler)")  # fmt: skip
    noun = "frames" if src.kind in ("video", "camera") else "images"
    table.add_row(noun, str(stats.num_frames))
    if stats.failed:
        table.add_row("skipped (unreadable)", f"[yellow]{len(stats.failed)}[/]")
    table.add_row(
        f"detections (score > {description['score_thresh']:g})", str(stats.num_detections)
    )
    median = stats.median_timing()
    if median is not None:
        table.add_row(
            "median ms (pre / infer / post)",
            f"{median.preprocess_ms:.2f} / {median.inference_ms:.2f} / "
            f"{median.postprocess_ms:.2f} (total {median.total_ms:.2f})",
        )
    if saver is not None:
        where = saver.video_path if saver.video_path is not None else saver.save_dir
        table.add_row("annotated", str(where))
    if json_out is not None:
        table.add_row("json", str(json_out))
    console.print(table)


def _print_detections(records: list[dict]) -> None:
    table = Table(title=f"{len(records)} detections")
    for col in ("name", "label", "score", "x1", "y1", "x2", "y2"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in records:
        box = [f"{v:.1f}" for v in r["box_xyxy"]]
        table.add_row(r["name"], str(r["label"]), f"{r['score']:.3f}", *box)
    console.print(table)


def _escape(text: str) -> str:
    return text.replace("[", "\\[")

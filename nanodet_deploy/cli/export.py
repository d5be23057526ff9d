"""``nanodet-export`` / ``nanodet-deploy export``: checkpoint -> ONNX, NCNN, MNN, OpenVINO,
int8, meta.json and a parity check.

    nanodet-export [CHECKPOINT] [--model NAME] [--weights PATH] --size H[,W] --out DIR
                   [--formats onnx,ncnn,mnn,openvino] [--fp32] [--output decoded|raw]
                   [--opset N] [--fold-normalize] [--no-simplify] [--dynamic]
                   [--sampler resize|warp] [--resize pad|letterbox|plain]
                   [--int8 --calib SOURCE [--calib-images N] [--mnn-int8 onnx|mnnquant]]
                   [--data DATA.yaml]
                   [--images DIR] [--no-verify] [--overwrite]

Exit codes: 0 exported (and verified), 1 exported but the parity check failed (the folder and
its verify.json are kept for inspection), 2 nothing exported (bad input or a failed step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nanodet_deploy.api import export as export_api
from nanodet_deploy.cli.common import console, err_console, fail, user_errors
from nanodet_deploy.config import parse_hw
from nanodet_deploy.exporters.errors import ExportError


@user_errors
def export(
    out: Annotated[Path, typer.Option("--out", help="Export folder to create.")],
    checkpoint: Annotated[
        str | None,
        typer.Argument(help="Checkpoint: ours, or official NanoDet (.ckpt/.pth)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Zoo model name; alone: RANDOM weights (latency work)."),
    ] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="Weights to load into --model.")
    ] = None,
    size: Annotated[
        str | None, typer.Option("--size", help="Input size H or H,W (default: the model's).")
    ] = None,
    formats: Annotated[
        str, typer.Option("--formats", help="Comma-separated: onnx, ncnn, mnn, openvino.")
    ] = "onnx,ncnn",
    fp32: Annotated[
        bool, typer.Option("--fp32", help="NCNN weights in fp32 (default fp16).")
    ] = False,
    output: Annotated[
        str, typer.Option("--output", help="decoded: (P, C+4); raw: official layout.")
    ] = "decoded",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (13..20).")] = 13,
    fold_normalize: Annotated[
        bool, typer.Option("--fold-normalize", help="Mean/std inside the graph (raw BGR input).")
    ] = False,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Run onnxsim.")] = True,
    dynamic: Annotated[
        bool, typer.Option("--dynamic", help="ONNX with dynamic batch, height and width.")
    ] = False,
    sampler: Annotated[
        str | None,
        typer.Option(
            help="Preprocess sampler in meta.json: resize (ncnn apps) or warp (official)."
        ),
    ] = None,
    resize: Annotated[
        str | None,
        typer.Option("--resize", "--geometry", help="Preprocess geometry: pad, letterbox, plain."),
    ] = None,
    int8: Annotated[
        bool, typer.Option("--int8", help="Also write int8 models (needs --calib).")
    ] = False,
    calib: Annotated[
        Path | None,
        typer.Option(help="int8 calibration: an image folder, or a data YAML (its train split)."),
    ] = None,
    calib_images: Annotated[
        int, typer.Option(min=1, help="At most this many calibration images.")
    ] = 100,
    mnn_int8: Annotated[
        str,
        typer.Option(
            help="MNN int8 scales: onnx (those of model.int8.onnx) or mnnquant (MNN's calibrator)."
        ),
    ] = "onnx",
    data: Annotated[
        Path | None, typer.Option(help="Data YAML: verification adds every artifact's val mAP.")
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Images for the parity check (default: random).")
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Parity check against torch.")
    ] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out.")
    ] = False,
) -> None:
    """Export a NanoDet with the decode folded in: ONNX, NCNN, MNN, OpenVINO, int8, meta.json."""
    if checkpoint and weights:
        raise ValueError("give CHECKPOINT or --weights, not both")
    path = checkpoint or weights
    if path is None and model is None:
        raise ValueError("give a CHECKPOINT, or --model NAME [--weights PATH]")
    if path is None:
        err_console.print(
            f"[bold yellow]WARNING: no weights given: exporting {model} with RANDOM weights.[/] "
            "Its detections are meaningless; use it for latency work only "
            "(meta.json records random_weights: true)."
        )
    try:
        result = export_api(
            path, out, model=model, size=parse_hw(size) if size else None,
            formats=[f.strip() for f in formats.split(",") if f.strip()], ncnn_fp16=not fp32,
            output=output, opset=opset, fold_normalize=fold_normalize, simplify=simplify,
            dynamic=dynamic, geometry=resize, sampler=sampler, int8=int8, calib=calib,
            calib_images=calib_images, mnn_int8=mnn_int8, data=data, images=images, verify=verify,
            overwrite=overwrite, on_step=_print_step,
        )  # fmt: skip
    except ExportError as exc:
        raise fail(str(exc).replace("[", "\\[")) from None
    h, w = result.meta.input_hw
    pre = result.meta.preprocess
    console.print(f"[bold green]exported[/] {result.out_dir} ({h}x{w} HxW, {pre.geometry} "
                  f"geometry, {pre.sampler} sampler; {', '.join(result.meta.files.values())})")  # fmt: skip
    if result.verify is not None:
        _print_verify(result.verify)
        if not result.verify["passed"]:
            err_console.print("[bold red]parity check FAILED[/]: see verify.json in the export")
            raise typer.Exit(1)


def _print_step(step: str, detail: str, seconds: float) -> None:
    console.print(f"[green]✓[/] [bold]{step:<8}[/] {seconds:6.1f} s  {detail}", highlight=False)


def _print_verify(report: dict) -> None:
    table = Table(title=f"parity against {report['reference']} ({len(report['inputs'])} inputs)")
    for col in ("check", "result", "max |Δscore|", "max |Δdist| px", "detections",
                "min IoU", "max |Δscore| det"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("check", "result") else "right")
    for name, check in report["checks"].items():
        if check["precision"] == "int8":
            name = f"{name} (held-out, agreement {check['agreement']:.0%})"
        dets = [i["detections"] for i in check["inputs"]]
        matched = sum(d["num_ref"] - d["unmatched_ref"] for d in dets)
        ties = sum(d["ties"] for d in dets)
        ious = [d["min_iou"] for d in dets if d["min_iou"] is not None]
        diffs = [d["max_score_diff"] for d in dets if d["max_score_diff"] is not None]
        table.add_row(
            name,
            "[green]pass[/]" if check["passed"] else "[red]FAIL[/]",
            f"{check['max_score_diff']:.2e}",
            f"{check['max_dist_px_diff']:.3f}",
            f"{matched}/{sum(d['num_ref'] for d in dets)}" + (f" ({ties} ties)" if ties else ""),
            f"{min(ious):.4f}" if ious else "-",
            f"{max(diffs):.4f}" if diffs else "-",
        )
    console.print(table)
    if report.get("map"):
        maps = ", ".join(
            f"{k} {v['map']:.4f} (AP50 {v['ap50']:.4f})" for k, v in report["map"].items()
        )
        console.print(f"val mAP: {maps}", highlight=False)

"""``nanodet-export`` / ``nanodet-deploy export``: checkpoint -> ONNX + NCNN + meta.json (+ parity).

    nanodet-export [CHECKPOINT] [--model NAME] [--weights PATH] --size H[,W] --out DIR
                   [--formats onnx,ncnn] [--fp32] [--output decoded|raw] [--opset N]
                   [--fold-normalize] [--no-simplify] [--dynamic] [--images DIR] [--no-verify]
                   [--overwrite]

Exit codes: 0 exported (and verified), 1 exported but the parity check failed (the folder and
its verify.json are kept for inspection), 2 nothing exported (bad input or a failed step).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nanodet_deploy.cli.common import console, err_console, fail, user_errors


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
    formats: Annotated[str, typer.Option("--formats", help="onnx, ncnn or both.")] = "onnx,ncnn",
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
    images: Annotated[
        Path | None, typer.Option("--images", help="Images for the parity check (default: random).")
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Parity check torch vs ONNX vs NCNN.")
    ] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out.")
    ] = False,
) -> None:
    """Export a NanoDet to ONNX and NCNN with the decode folded in, meta.json and a parity check."""
    from nanodet_deploy.config import parse_hw
    from nanodet_deploy.exporters import ExportError
    from nanodet_deploy.exporters.pipeline import ExportOptions, export_model

    t0 = time.perf_counter()
    net, sha256, random_weights, source = _load(checkpoint, model, weights)
    _print_step("load", f"{net.cfg.name} from {source}", time.perf_counter() - t0)
    options = ExportOptions(
        input_hw=parse_hw(size) if size else net.cfg.input_hw,
        formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
        output_layout=output,
        opset=opset,
        fold_normalize=fold_normalize,
        simplify=simplify,
        dynamic_axes=("batch", "height", "width") if dynamic else (),
        ncnn_fp16=not fp32,
        verify=verify,
        images_dir=images,
        overwrite=overwrite,
    )
    try:
        result = export_model(net, out, options, sha256, random_weights, on_step=_print_step)
    except ExportError as exc:
        raise fail(str(exc).replace("[", "\\[")) from None
    h, w = result.meta.input_hw
    console.print(f"[bold green]exported[/] {result.out_dir} ({h}x{w} HxW, "
                  f"{', '.join(result.meta.files.values())})")  # fmt: skip
    if result.verify is not None:
        _print_verify(result.verify)
        if not result.verify["passed"]:
            err_console.print("[bold red]parity check FAILED[/]: see verify.json in the export")
            raise typer.Exit(1)


def _load(checkpoint: str | None, model: str | None, weights: str | None):
    """(model, checkpoint sha256, random weights?, description) from the CLI arguments."""
    from nanodet_deploy.checkpoint import load_model, sha256_file
    from nanodet_deploy.models import build_model, zoo_config

    if checkpoint and weights:
        raise ValueError("give CHECKPOINT or --weights, not both")
    path = checkpoint or weights
    if path is not None:
        cfg = zoo_config(model) if model else None
        net, ckpt = load_model(path, config=cfg)
        ema = ", EMA weights" if ckpt.used_ema else ""
        return net, sha256_file(path), False, f"{path} ({ckpt.kind}{ema})"
    if model is None:
        raise ValueError("give a CHECKPOINT, or --model NAME [--weights PATH]")
    err_console.print(
        f"[bold yellow]WARNING: no weights given: exporting {model} with RANDOM weights.[/] "
        "Its detections are meaningless; use it for latency work only "
        "(meta.json records random_weights: true)."
    )
    return build_model(zoo_config(model)).eval(), None, True, "RANDOM weights"


def _print_step(step: str, detail: str, seconds: float) -> None:
    console.print(f"[green]✓[/] [bold]{step:<8}[/] {seconds:6.1f} s  {detail}", highlight=False)


def _print_verify(report: dict) -> None:
    table = Table(title=f"parity against {report['reference']} ({len(report['inputs'])} inputs)")
    for col in ("check", "result", "max |Δscore|", "max |Δdist| px", "detections",
                "min IoU", "max |Δscore| det"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("check", "result") else "right")
    for name, check in report["checks"].items():
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

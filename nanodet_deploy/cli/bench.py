"""``nanodet-deploy bench``: latency of exported models per backend, precision, threads, size.

``--backend auto --precision auto`` (the defaults) measure what exists: every installed backend
the export has files for, at every precision it has files for. Torch-free: works where only the
runtime dependencies are installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nanodet_deploy.bench.harness import run_plan
from nanodet_deploy.bench.records import RecordFile
from nanodet_deploy.bench.spec import (
    ALL_PRECISIONS,
    BenchSpec,
    parse_list,
    parse_sizes,
    parse_threads,
    plan,
)
from nanodet_deploy.cli.common import console, err_console, user_errors
from nanodet_deploy.device import describe_device, library_versions
from nanodet_deploy.runtimes.base import BACKENDS


@user_errors
def bench(
    export_dirs: Annotated[
        list[Path], typer.Argument(help="Export folders (model files + meta.json).")
    ],
    backend: Annotated[
        str,
        typer.Option(help="auto, or comma-separated: onnxruntime, ncnn, mnn, openvino, torch."),
    ] = "auto",
    threads: Annotated[
        str | None,
        typer.Option(help="Comma-separated thread counts (default: 1 and all cores up to 4)."),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(help="Input sizes, e.g. 320,416 or 320x416 (default: the export size)."),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="auto, or comma-separated: fp32, fp16, bf16, int8.")
    ] = "auto",
    warmup: Annotated[int, typer.Option(min=0, help="Untimed iterations first.")] = 20,
    iters: Annotated[int, typer.Option(min=1, help="Timed iterations.")] = 200,
    rounds: Annotated[
        int,
        typer.Option(min=1, help="Fresh processes per combination; the median one is reported."),
    ] = 3,
    images: Annotated[
        Path | None,
        typer.Option(help="Folder of images to cycle through (default: one synthetic image)."),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Data YAML (as for eval) to add mAP of each artifact.")
    ] = None,
    resize: Annotated[
        str,
        typer.Option("--resize", "--geometry", help="plain (exact size), pad or letterbox."),
    ] = "plain",
    sampler: Annotated[
        str | None, typer.Option(help="resize or warp (default: the export's).")
    ] = None,
    json_out: Annotated[
        Path, typer.Option("--json", help="Results file, rewritten after every record.")
    ] = Path("bench.json"),
    append: Annotated[
        bool, typer.Option(help="Keep the records already in the --json file.")
    ] = False,
    device_name: Annotated[
        str | None,
        typer.Option(help="Name of this device in reports (default: board or CPU model)."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per combination.")] = 900.0,
    pin: Annotated[bool, typer.Option(help="Pin each worker to `threads` CPUs.")] = True,
    macs: Annotated[
        bool, typer.Option(help="MACs for GMAC/s: meta.json, else counted with torch if present.")
    ] = True,
) -> None:
    """Measure every combination in its own process and write one record per combination."""
    template = BenchSpec(
        export_dir="", backend="ncnn", precision="fp32", threads=1, input_hw=(0, 0),
        warmup=warmup, iterations=iters, images=str(images) if images else None,
        geometry=resize, sampler=sampler, data=data, pin_cpus=pin, rounds=rounds,
    )  # fmt: skip
    planned = plan(
        [str(d) for d in export_dirs],
        parse_list(backend, BACKENDS, "--backend"),
        parse_list(precision, ALL_PRECISIONS, "--precision"),
        parse_threads(threads or _default_threads()),
        parse_sizes(size) if size else None,
        template,
    )
    _announce_skips(planned)
    device = describe_device()
    if device_name:
        device["name"] = device_name
    if device["emulated"]:
        err_console.print(
            f"[yellow]emulated device ({device['emulator']}): timings are not device speed"
        )
    results = RecordFile(json_out, keep_existing=append)
    versions = library_versions()
    records = _run_with_progress(planned, results, device, versions, timeout, macs)
    _summary(records)
    console.print(f"records: {json_out}")
    if any(r["status"] == "error" for r in records):
        raise typer.Exit(1)


def _default_threads() -> str:
    return ",".join(str(t) for t in sorted({1, min(4, os.cpu_count() or 1)}))


def _announce_skips(planned: list) -> None:
    """One line per distinct skip reason (e.g. a backend whose package is missing)."""
    for reason in dict.fromkeys(p.skip_reason for p in planned if p.skip_reason):
        err_console.print(f"[yellow]skip:[/] {reason}", highlight=False)


def _run_with_progress(
    planned, results, device, versions, timeout: float, macs: bool
) -> list[dict]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task("bench", total=len(planned))

        def on_start(spec) -> None:
            progress.update(task, description=spec.label)

        def on_record(record: dict) -> None:
            progress.advance(task)
            if record["status"] == "error":
                progress.console.print(f"[red]error:[/] {record['note']}", highlight=False)

        return run_plan(
            planned, results, device=device, versions=versions, timeout_s=timeout,
            count_macs=macs, on_start=on_start, on_record=on_record,
        )  # fmt: skip


def _summary(records: list[dict]) -> None:
    """Measured and failed combinations (skips were announced before the run)."""
    table = Table(title="end-to-end latency (p50) and inference (p50)")
    for col in ("model", "backend", "thr", "size", "p50 ms", "infer ms", "FPS", "status"):
        table.add_column(col, justify="left" if col in ("model", "backend", "status") else "right")
    for r in records:
        if r["status"] == "skipped":
            continue
        ok = r["status"] == "ok"
        table.add_row(
            r["model"]["name"], f"{r['backend']} {r['precision']}", str(r["threads"]),
            "x".join(map(str, r["input_hw"])),
            f"{r['latency_ms']['p50']:.2f}" if ok else "–",
            f"{r['stages_ms']['inference']['p50']:.2f}" if ok else "–",
            f"{r['fps']:.1f}" if ok else "–",
            r["status"],
        )  # fmt: skip
    console.print(table)
    skipped = sum(r["status"] == "skipped" for r in records)
    if skipped:
        console.print(f"{skipped} combinations skipped (reasons in the records' note)")

"""``nanodet-deploy report`` (records -> Markdown, CSV, PNG) and ``import-bench``
(benchncnn logs / simple CSVs measured outside Python -> records). Torch-free."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from nanodet_deploy.cli.common import console, err_console, user_errors


@user_errors
def report(
    results: Annotated[
        list[Path],
        typer.Argument(help="Records (.json/.jsonl from bench or import-bench) or simple CSVs."),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    title: Annotated[str, typer.Option(help="Report title.")] = "Benchmark report",
    charts: Annotated[bool, typer.Option(help="Draw PNG charts (needs matplotlib).")] = True,
) -> None:
    """Render report.md, results.csv and charts from benchmark records."""
    from nanodet_deploy.bench.importers import records_from_csv
    from nanodet_deploy.bench.records import read_records
    from nanodet_deploy.report import write_report

    records: list[dict] = []
    for path in results:
        records += records_from_csv(path) if path.suffix == ".csv" else read_records([path])
    if charts and importlib.util.find_spec("matplotlib") is None:
        err_console.print("[yellow]matplotlib is not installed: no charts (pip install matplotlib)")
        charts = False
    files = write_report(
        records, out, title=title, sources=[str(p) for p in results], charts=charts
    )
    console.print(f"wrote {files.markdown}, {files.csv} and {len(files.charts)} charts")


@user_errors
def import_bench(
    files: Annotated[list[Path], typer.Argument(help="benchncnn logs (.txt) or CSV files.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Records file to write (.json).")],
    device: Annotated[
        str | None, typer.Option(help="Device name (required for benchncnn logs).")
    ] = None,
    cpu_model: Annotated[
        str | None, typer.Option(help="CPU / SoC, e.g. 'Snapdragon 8 Gen 2'.")
    ] = None,
    os_name: Annotated[str | None, typer.Option("--os", help="e.g. 'Android 14'.")] = None,
    arch: Annotated[str, typer.Option(help="CPU architecture.")] = "aarch64",
    model: Annotated[
        str | None,
        typer.Option(help="Model name for every benchncnn line (default: the name in the log)."),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(help="Input size H or HxW (benchncnn; CSVs without a size column)."),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="benchncnn default is fp16 where supported.")
    ] = "fp16",
    threads: Annotated[int | None, typer.Option(help="Override the log's num_threads.")] = None,
) -> None:
    """Turn results measured outside Python into records labelled with their source."""
    from nanodet_deploy.artifacts import write_json_atomic
    from nanodet_deploy.bench import parse_sizes
    from nanodet_deploy.bench.importers import (
        imported_device,
        records_from_benchncnn,
        records_from_csv,
    )

    hw = parse_sizes(size)[0] if size else None
    records: list[dict] = []
    for path in files:
        if path.suffix == ".csv":
            records += records_from_csv(path, input_hw=hw)
            continue
        if not device or hw is None:
            raise ValueError(f"{path}: benchncnn logs need --device and --size")
        dev = imported_device(device, cpu_model=cpu_model, arch=arch, os_name=os_name)
        records += records_from_benchncnn(
            path, device=dev, input_hw=hw, model_name=model, precision=precision, threads=threads
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, records)
    console.print(f"wrote {len(records)} records to {out}")

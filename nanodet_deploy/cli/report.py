"""``nanodet-deploy report`` (records -> Markdown, CSV, PNG) and ``import-bench``
(benchncnn logs / simple CSVs measured outside Python -> records). Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nanodet_deploy.bench.importers import imported_device, records_from_benchncnn, records_from_csv
from nanodet_deploy.bench.records import read_records
from nanodet_deploy.bench.spec import parse_sizes
from nanodet_deploy.cli.common import console, err_console, user_errors
from nanodet_deploy.fileio import write_json_atomic
from nanodet_deploy.report.writer import ChartDrawer, write_report


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
    records: list[dict] = []
    for path in results:
        records += records_from_csv(path) if path.suffix == ".csv" else read_records([path])
    files = write_report(
        records, out, title=title, sources=[str(p) for p in results],
        draw_charts=_chart_drawer() if charts else None,
    )  # fmt: skip
    console.print(f"wrote {files.markdown}, {files.csv} and {len(files.charts)} charts")


def _chart_drawer() -> ChartDrawer | None:
    """``report.charts.draw_charts`` (this command is the seam that imports matplotlib)."""
    try:
        from nanodet_deploy.report.charts import draw_charts
    except ImportError:
        err_console.print("[yellow]matplotlib is not installed: no charts (pip install matplotlib)")
        return None
    return draw_charts


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

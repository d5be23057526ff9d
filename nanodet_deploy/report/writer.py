"""Write a report folder: ``report.md``, ``results.csv`` and the PNG charts. Torch-free.

Charts need matplotlib, so the drawing function is passed in (``report.charts.draw_charts``)
by the caller that has it; without one the report has tables only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nanodet_deploy.bench.records import utc_now
from nanodet_deploy.fileio import write_text_atomic
from nanodet_deploy.report.markdown import render_markdown
from nanodet_deploy.report.rows import build_rows, render_csv

ChartDrawer = Callable[[list[dict], Path], list[Path]]


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    csv: Path
    charts: list[Path]


def write_report(
    records: list[dict], out_dir: str | os.PathLike, *, title: str = "Benchmark report",
    sources: list[str] | None = None, draw_charts: ChartDrawer | None = None,
) -> ReportFiles:  # fmt: skip
    """Render ``report.md``, ``results.csv`` and (with ``draw_charts``, e.g.
    ``report.charts.draw_charts``, which needs matplotlib) the PNG charts into ``out_dir``,
    each file atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = build_rows(records)
    chart_paths: list[Path] = []
    if draw_charts is not None and rows:
        chart_paths = draw_charts(rows, out)
    md = render_markdown(
        records, rows, chart_paths, title=title, sources=sources or [], now=utc_now()
    )
    md_path, csv_path = out / "report.md", out / "results.csv"
    write_text_atomic(md_path, md)
    write_text_atomic(csv_path, render_csv(rows))
    return ReportFiles(md_path, csv_path, chart_paths)

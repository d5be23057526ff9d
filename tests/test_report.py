"""Reports render from records: tables carry the records' numbers, charts are real PNGs,
emulated devices are set apart, and results measured outside Python import as records."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nanodet_deploy.bench.importers import (
    imported_device,
    parse_benchncnn,
    records_from_benchncnn,
    records_from_csv,
)
from nanodet_deploy.bench.records import read_records, validate_record
from nanodet_deploy.cli.main import app
from nanodet_deploy.report.charts import draw_charts
from nanodet_deploy.report.rows import build_rows
from nanodet_deploy.report.writer import write_report

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "bench_records.json"


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return read_records([FIXTURE])


@pytest.fixture(scope="module")
def rendered(records, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(records, out, sources=[str(FIXTURE)], draw_charts=draw_charts)
    return out


def md_tables(text: str) -> list[tuple[str, list[dict]]]:
    """(headings above, joined with " / ", rows as dicts) of every Markdown table."""
    tables, path, lines = [], {}, text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("#"):
            level = len(lines[i]) - len(lines[i].lstrip("#"))
            path = {k: v for k, v in path.items() if k < level}
            path[level] = lines[i].lstrip("# ").strip()
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("| "):
                cells = [c.strip() for c in lines[i].strip("|").split(" | ")]
                rows.append(dict(zip(header, cells, strict=True)))
                i += 1
            tables.append((" / ".join(path[k] for k in sorted(path)), rows))
            continue
        i += 1
    return tables


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_fixture_records_are_valid(records):
    assert len(records) == 10
    assert all(validate_record(r) == [] for r in records)


def test_markdown_tables_carry_the_record_numbers(records, rendered):
    tables = dict(md_tables((rendered / "report.md").read_text()))
    table = tables["Benchmark report / Test Xeon / nanodet-m — 320x320"]
    xeon = {(r["backend"], r["precision"], r["threads"]): r for r in table}
    assert xeon[("torch", "fp32", "1")]["speed-up"] == "1.00×"
    ncnn2 = xeon[("ncnn", "fp32", "2")]
    src = next(r for r in records if r["backend"] == "ncnn" and r["threads"] == 2)
    assert float(ncnn2["p50 ms"]) == pytest.approx(src["latency_ms"]["p50"], abs=0.005)
    assert float(ncnn2["infer ms"]) == pytest.approx(
        src["stages_ms"]["inference"]["p50"], abs=0.005
    )
    assert float(ncnn2["FPS"]) == pytest.approx(src["fps"], abs=0.05)
    assert ncnn2["speed-up"] == "5.00×"  # torch 40 ms / ncnn 8 ms
    assert ncnn2["baseline"] == "torch fp32 1t"
    assert float(ncnn2["GMAC/s"]) == pytest.approx(720e6 / 6.0e6, abs=0.05)
    assert float(ncnn2["model MB"]) == pytest.approx(1.9)
    assert xeon[("onnxruntime", "fp32", "1")]["mAP"] == "0.205"
    assert ncnn2["parity"] == "pass"


def test_slowest_is_the_baseline_without_torch(records):
    rows = [r for r in build_rows(records) if r["device"].startswith("Raspberry")]
    by_prec = {r["precision"]: r for r in rows}
    assert by_prec["fp32"]["speedup"] == pytest.approx(1.0)
    assert by_prec["fp16"]["speedup"] == pytest.approx(15.0 / 12.0)
    assert by_prec["fp16"]["speedup_baseline"] == "slowest (ncnn fp32 4t)"


def test_csv_matches_records(records, rendered):
    with (rendered / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(r["status"] == "ok" for r in records)
    ok = {
        (r["device"]["name"], r["backend"], r["precision"], r["threads"], r["input_hw"][0]): r
        for r in records
        if r["status"] == "ok"
    }
    for row in rows:
        name = row["device"].removesuffix(" [emulated]")
        src = ok[(name, row["backend"], row["precision"], int(row["threads"]), int(row["input_h"]))]
        assert float(row["p50_ms"]) == src["latency_ms"]["p50"]
        assert float(row["p99_ms"]) == src["latency_ms"]["p99"]
        assert float(row["inference_ms"]) == src["stages_ms"]["inference"]["p50"]
        assert float(row["fps"]) == pytest.approx(src["fps"])
        assert row["emulated"] == str(src["device"]["emulated"])
        assert int(row["macs"]) == src["model"]["macs"]


def test_emulated_results_are_set_apart(rendered):
    text = (rendered / "report.md").read_text()
    head, _, emulated_part = text.partition("## Emulated devices — not device speed")
    assert emulated_part, "no emulated section"
    assert "NOT device speed" in emulated_part
    assert "900.00" in emulated_part and "900.00" not in head
    side_by_side = dict(md_tables(head))[
        "Benchmark report / Devices side by side (p50 ms, end-to-end)"
    ]
    assert all("[emulated]" not in key for row in side_by_side for key in row)


def test_not_measured_lists_skips_and_errors(rendered):
    tables = dict(md_tables((rendered / "report.md").read_text()))
    reasons = {row["status"]: row["reason"] for row in tables["Benchmark report / Not measured"]}
    assert "ncnn" in reasons["skipped"] and "not installed" in reasons["skipped"]
    assert "SIGSEGV" in reasons["error"]


def test_charts_are_valid_images(rendered):
    pngs = sorted(rendered.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"devices.png", "fps_test-xeon.png", "latency_vs_size_test-xeon.png"} <= names
    assert "fps_cortex-a76-emulated.png" in names
    for png in pngs:
        w, h = png_size(png)
        assert w >= 300 and h >= 200
        assert png.stat().st_size > 10_000, f"{png.name} looks empty"
    text = (rendered / "report.md").read_text()
    assert all(f"({p.name})" in text for p in pngs)
    assert not list(rendered.glob(".*")), "temporary files left behind"


def test_benchncnn_import(records):
    header, rows = parse_benchncnn((DATA / "benchncnn_android.txt").read_text())
    assert header["num_threads"] == 4 and header["powersave"] == 2
    assert [r["name"] for r in rows] == ["nanodet-m.param", "nanodet-plus-m.param"]
    device = imported_device("Pixel 7", cpu_model="Tensor G2", os_name="Android 14")
    imported = records_from_benchncnn(
        DATA / "benchncnn_android.txt", device=device, input_hw=(320, 320)
    )
    assert [r["model"]["name"] for r in imported] == ["nanodet-m", "nanodet-plus-m"]
    first = imported[0]
    assert validate_record(first) == []
    assert first["source"] == "benchncnn: benchncnn_android.txt"
    assert first["threads"] == 4 and first["precision"] == "fp16"
    assert first["latency_ms"]["mean"] == 8.13 and first["latency_ms"]["min"] == 7.91
    assert first["stages_ms"]["preprocess"] is None
    rows = {r["model"]: r for r in build_rows(records + imported) if r["device"] == "Pixel 7"}
    assert rows["nanodet-m"]["latency_kind"] == "avg"
    # MACs are borrowed from the measured nanodet-m 320 records.
    assert rows["nanodet-m"]["gmacs_per_s"] == pytest.approx(720e6 / 8.13e6)


def test_csv_import_and_errors(tmp_path):
    imported = records_from_csv(DATA / "simple_results.csv")
    assert [(r["device"]["name"], r["threads"], r["latency_ms"]["mean"]) for r in imported] == [
        ("Pixel 7 (Tensor G2)", 1, 21.5),
        ("Pixel 7 (Tensor G2)", 4, 8.6),
    ]
    assert imported[0]["source"] == "csv: simple_results.csv"
    assert imported[0]["input_hw"] == [320, 320]
    bad = tmp_path / "bad.csv"
    bad.write_text("device,model,latency_ms\nx,y,1.0\n")
    with pytest.raises(ValueError, match="threads"):
        records_from_csv(bad)
    nosize = tmp_path / "nosize.csv"
    nosize.write_text("device,model,threads,latency_ms\nx,y,1,2.0\n")
    with pytest.raises(ValueError, match="size"):
        records_from_csv(nosize)
    assert records_from_csv(nosize, input_hw=(416, 416))[0]["input_hw"] == [416, 416]


def test_read_records_rejects_non_records(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps([{"hello": 1}]))
    with pytest.raises(ValueError, match="not a benchmark record"):
        read_records([path])
    with pytest.raises(FileNotFoundError, match="not found"):
        read_records([tmp_path / "missing.json"])


def test_report_and_import_cli(tmp_path):
    runner = CliRunner()
    imported = tmp_path / "android.json"
    res = runner.invoke(
        app,
        ["import-bench", str(DATA / "benchncnn_android.txt"), "-o", str(imported),
         "--device", "Pixel 7", "--size", "320"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = tmp_path / "report"
    res = runner.invoke(
        app,
        [
            "report",
            str(FIXTURE),
            str(imported),
            str(DATA / "simple_results.csv"),
            "-o",
            str(out),
            "--no-charts",
        ],
    )
    assert res.exit_code == 0, res.output
    text = (out / "report.md").read_text()
    assert "## Pixel 7" in text and "8.13 (avg)" in text
    assert "benchncnn: benchncnn_android.txt" in text
    res = runner.invoke(app, ["report", str(tmp_path / "nope.json"), "-o", str(out)])
    assert res.exit_code == 2 and "not found" in res.output

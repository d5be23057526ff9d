"""Import results measured outside Python into benchmark records (labelled with their source).

Two formats:

- ncnn's ``benchncnn`` output (e.g. run over ``adb shell`` on a phone, see docs/arm.md)::

      loop_count = 8
      num_threads = 4
      powersave = 2
      ...
      nanodet-m.param  min =   10.58  max =   11.14  avg =   10.84

  Each ``NAME min = .. max = .. avg = ..`` line becomes a record of inference-only latency
  (``stages_ms.preprocess`` / ``postprocess`` are None); ``num_threads`` is read from the
  header. The caller names the device, and the model / input size when the benchmark name
  does not say them.
- A simple CSV with the columns ``device, model, threads, latency_ms`` and optionally
  ``size`` (``320`` or ``320x416``), ``backend`` (default ncnn), ``precision`` (default
  fp32), ``cpu_model``, ``arch``, ``os``, ``emulated``.

Imported latency has only a mean (and a min for benchncnn): percentiles are None and reports
show the average, marked ``(avg)``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from nanodet_deploy.bench.records import SCHEMA, STAGES, STAT_KEYS, utc_now, validate_record

_BENCH_LINE = re.compile(
    r"^\s*(?P<name>\S+)\s+min\s*=\s*(?P<min>[\d.]+)\s+max\s*=\s*(?P<max>[\d.]+)\s+avg\s*=\s*(?P<avg>[\d.]+)"
)
_HEADER_LINE = re.compile(r"^\s*(?P<key>[a-z_]+)\s*=\s*(?P<value>-?\d+)\s*$")
CSV_REQUIRED = ("device", "model", "threads", "latency_ms")


def imported_device(
    name: str,
    *,
    cpu_model: str | None = None,
    arch: str | None = "aarch64",
    os_name: str | None = None,
    cores: int | None = None,
    emulated: bool = False,
) -> dict:
    return {
        "name": name,
        "cpu_model": cpu_model or name,
        "arch": arch,
        "cores_logical": cores,
        "os": os_name,
        "emulated": emulated,
        "emulator": None,
    }


def parse_benchncnn(text: str) -> tuple[dict[str, int], list[dict]]:
    """(header values such as num_threads, [{name, min, max, avg}]) of benchncnn output."""
    header: dict[str, int] = {}
    rows = []
    for line in text.splitlines():
        if m := _BENCH_LINE.match(line):
            rows.append({"name": m["name"], **{k: float(m[k]) for k in ("min", "max", "avg")}})
        elif m := _HEADER_LINE.match(line):
            header[m["key"]] = int(m["value"])
    return header, rows


def records_from_benchncnn(
    path: str | os.PathLike,
    *,
    device: dict,
    input_hw: tuple[int, int],
    model_name: str | None = None,
    precision: str = "fp16",
    threads: int | None = None,
) -> list[dict]:
    """Records from a benchncnn log (see module doc). ``model_name`` overrides the bench name."""
    p = Path(path)
    header, rows = parse_benchncnn(p.read_text(encoding="utf-8", errors="replace"))
    if not rows:
        raise ValueError(f"{p}: no 'NAME  min = ..  max = ..  avg = ..' lines (benchncnn output?)")
    num_threads = threads or header.get("num_threads")
    if not num_threads or num_threads < 1:
        raise ValueError(f"{p}: no num_threads in the header; pass the thread count")
    settings = {k: v for k, v in header.items() if k != "num_threads"}
    out = []
    for row in rows:
        name = model_name or re.sub(r"\.param$", "", row["name"])
        stats = _stats(mean=row["avg"], minimum=row["min"])
        record = _record(
            f"benchncnn: {p.name}", device, name, "ncnn", precision, num_threads, input_hw, stats,
            {**settings, "max_ms": row["max"]}, header.get("loop_count", 0),
        )  # fmt: skip
        out.append(record)
    return out


def records_from_csv(
    path: str | os.PathLike, *, input_hw: tuple[int, int] | None = None
) -> list[dict]:
    """Records from a CSV of (device, model, threads, latency_ms[, size, backend, ...])."""
    p = Path(path)
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{p}: CSV lacks the columns {missing} (needs {list(CSV_REQUIRED)})")
        return [_csv_record(p, i, row, input_hw) for i, row in enumerate(reader, start=2)]


def _csv_record(p: Path, line: int, row: dict, input_hw: tuple[int, int] | None) -> dict:
    try:
        hw = _size(row.get("size")) or input_hw
        if hw is None:
            raise ValueError("no size column and no --size given")
        device = imported_device(
            row["device"], cpu_model=row.get("cpu_model") or None, arch=row.get("arch") or None,
            os_name=row.get("os") or None,
            emulated=(row.get("emulated") or "").strip().lower() in ("1", "true", "yes"),
        )  # fmt: skip
        stats = _stats(mean=float(row["latency_ms"]), minimum=None)
        backend = (row.get("backend") or "ncnn").strip()
        precision = (row.get("precision") or "fp32").strip()
        threads = int(row["threads"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{p}:{line}: {exc}") from None
    return _record(
        f"csv: {p.name}", device, row["model"], backend, precision, threads, hw, stats, {}, 0
    )


def _size(text: str | None) -> tuple[int, int] | None:
    if not text or not text.strip():
        return None
    parts = [int(v) for v in text.lower().replace(",", "x").split("x")]
    return (parts[0], parts[-1])


def _stats(mean: float, minimum: float | None) -> dict:
    stats: dict = dict.fromkeys(STAT_KEYS)
    stats.update(mean=mean, min=minimum)
    return stats


def _record(
    source: str,
    device: dict,
    model: str,
    backend: str,
    precision: str,
    threads: int,
    input_hw: tuple[int, int],
    stats: dict,
    settings: dict,
    iterations: int,
) -> dict:
    record = {
        "schema": SCHEMA,
        "status": "ok",
        "note": "inference only (imported); preprocess/postprocess not measured",
        "source": source,
        "timestamp": utc_now(),
        "device": device,
        "versions": {},
        "model": {
            "name": model,
            "file": None,
            "file_size_bytes": None,
            "macs": None,
            "macs_source": None,
        },
        "backend": backend,
        "precision": precision,
        "threads": threads,
        "input_hw": [int(input_hw[0]), int(input_hw[1])],
        "geometry": None,
        "sampler": None,
        "warmup": None,
        "iterations": iterations,
        "images": None,
        "latency_ms": stats,
        "fps": 1000.0 / stats["mean"],
        "stages_ms": {stage: (stats if stage == "inference" else None) for stage in STAGES},
        "parity": {"status": "not verified", "detail": "imported result"},
        "map": None,
        "map_note": None,
        "settings": settings,
    }
    problems = validate_record(record)
    if problems:
        raise ValueError(f"{source}: {'; '.join(problems)}")
    return record

"""Benchmark records: the schema, latency statistics, validation, reading and atomic writing.

One record (a JSON object) per measured combination; DESIGN.md "Benchmark record". Fields:

==================  =====================================================================
``schema``          ``"nanodet-deploy.bench/2"`` (``/1`` records are read and upgraded)
``status``          ``"ok"`` (measured), ``"error"`` (the combination crashed or failed),
                    ``"skipped"`` (not measurable here, e.g. backend not installed)
``note``            why it was skipped / what failed / caveats (None when nothing to say)
``source``          who measured: ``"nanodet-deploy bench"`` or an import (``"benchncnn: FILE"``)
``timestamp``       ISO-8601 UTC time the record was made
``device``          :func:`nanodet_deploy.device.describe_device` (``emulated`` among others)
``versions``        library versions (package metadata)
``model``           ``name``, ``export_dir``, ``file``, ``file_size_bytes``, ``num_classes``,
                    ``random_weights``, ``macs`` (conv MACs at this input size or None),
                    ``macs_source``, ``output_layout``
``backend``         ``torch`` | ``onnxruntime`` | ``ncnn`` | ``mnn`` | ``openvino``
``precision``       ``fp32`` | ``fp16`` | ``bf16`` | ``int8``
``threads``         inference threads
``input_hw``        ``[H, W]`` of the network input tensor
``geometry``        preprocess geometry (``plain`` gives exactly ``input_hw``)
``sampler``         preprocess sampler (``resize`` | ``warp``)
``warmup``          untimed iterations before measuring
``iterations``      timed iterations
``images``          what was fed (``"synthetic 640x480 BGR"`` or a folder and count)
``latency_ms``      end-to-end (preprocess + inference + postprocess) statistics:
                    ``min``, ``p50``, ``p90``, ``p99``, ``mean``, ``std`` (ms); None if not ok
``rounds_p50_ms``   p50 of every worker process (round) that measured the combination;
                    the record's statistics are the median round's (optional key)
``fps``             ``1000 / latency_ms.mean``: frames per second of the sequential loop
``stages_ms``       ``{"preprocess": stats, "inference": stats, "postprocess": stats}``;
                    imports of inference-only tools have ``None`` for the other two stages
``parity``          ``{"status": "pass" | "fail" | "not verified", "detail": str | None}``
                    from the export's verify.json
``map``             COCO mAP@[.5:.95] of this exact artifact when a dataset was given, else None
``ap50``            its AP50 (optional key; None when not evaluated)
``map_note``        how mAP was obtained or why it is missing
``settings``        what the harness applied (CPU affinity, backend options) and saw:
                    ``other_cpu_load``, the share of all CPUs other processes kept busy
                    while timing (0 on a quiet machine)
==================  =====================================================================
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path

from nanodet_deploy.artifacts import write_json_atomic

SCHEMA = "nanodet-deploy.bench/2"
OLD_SCHEMAS = ("nanodet-deploy.bench/1",)
SOURCE = "nanodet-deploy bench"  # records measured by our harness; imports name their tool
STATUSES = ("ok", "error", "skipped")
STAT_KEYS = ("min", "p50", "p90", "p99", "mean", "std")
STAGES = ("preprocess", "inference", "postprocess")
PARITY_STATUSES = ("pass", "fail", "not verified")
TOP_LEVEL_KEYS = (
    "schema",
    "status",
    "note",
    "source",
    "timestamp",
    "device",
    "versions",
    "model",
    "backend",
    "precision",
    "threads",
    "input_hw",
    "geometry",
    "sampler",
    "warmup",
    "iterations",
    "images",
    "latency_ms",
    "fps",
    "stages_ms",
    "parity",
    "map",
    "map_note",
    "settings",
)
DEVICE_KEYS = ("name", "cpu_model", "arch", "cores_logical", "os", "emulated")
MODEL_KEYS = ("name", "file", "file_size_bytes", "macs", "macs_source")


def latency_stats(samples_ms: list[float]) -> dict[str, float]:
    """min / p50 / p90 / p99 / mean / std (population) of a list of timings in ms."""
    if not samples_ms:
        raise ValueError("no timing samples")
    xs = sorted(float(x) for x in samples_ms)
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / len(xs)
    return {
        "min": xs[0],
        "p50": percentile(xs, 50),
        "p90": percentile(xs, 90),
        "p99": percentile(xs, 99),
        "mean": mean,
        "std": math.sqrt(var),
    }


def percentile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (NumPy's default method) of sorted values."""
    pos = (len(sorted_xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def validate_record(record: dict) -> list[str]:
    """Problems with a record (empty list: valid). Checks keys, types and ok-record numbers."""
    problems = [f"missing key {k!r}" for k in TOP_LEVEL_KEYS if k not in record]
    if problems:
        return problems
    if record["schema"] != SCHEMA:
        problems.append(f"schema {record['schema']!r} != {SCHEMA!r}")
    if record["status"] not in STATUSES:
        problems.append(f"status {record['status']!r} not in {STATUSES}")
    problems += [f"device lacks {k!r}" for k in DEVICE_KEYS if k not in record["device"]]
    problems += [f"model lacks {k!r}" for k in MODEL_KEYS if k not in record["model"]]
    if record["parity"].get("status") not in PARITY_STATUSES:
        problems.append(f"parity.status must be one of {PARITY_STATUSES}")
    if record["status"] == "ok":
        problems += _ok_problems(record)
    return problems


def _ok_problems(record: dict) -> list[str]:
    problems = []
    lat = record["latency_ms"] or {}
    if sorted(lat) != sorted(STAT_KEYS):
        return [f"latency_ms needs {STAT_KEYS}"]
    known = [lat[k] for k in ("min", "p50", "p90", "p99") if lat[k] is not None]
    if known != sorted(known):
        problems.append("latency_ms percentiles are not ordered")
    if lat["mean"] is None:
        problems.append("latency_ms.mean is required")
    if record["source"] == SOURCE and None in lat.values():
        problems.append("records measured by nanodet-deploy need every latency statistic")
    if not (isinstance(record["fps"], int | float) and record["fps"] > 0):
        problems.append("fps must be a positive number")
    stages = record["stages_ms"] or {}
    if sorted(stages) != sorted(STAGES) or stages.get("inference") is None:
        problems.append(f"stages_ms needs {STAGES} (inference not None)")
    if not (isinstance(record["threads"], int) and record["threads"] >= 1):
        problems.append("threads must be a positive int")
    if not (isinstance(record["input_hw"], list) and len(record["input_hw"]) == 2):
        problems.append("input_hw must be [H, W]")
    return problems


def read_records(paths: list[str | os.PathLike]) -> list[dict]:
    """Records from ``.json`` (a list, or ``{"records": [...]}``) and ``.jsonl`` files."""
    records: list[dict] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: results file not found")
        records += _read_one(p)
    return records


def _read_one(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(data, dict):
        data = data.get("records", [data])
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{path}: expected a list of benchmark records")
    data = [upgrade_record(r) for r in data]
    bad = [(i, p) for i, r in enumerate(data) if (p := validate_record(r))]
    if bad:
        i, problems = bad[0]
        raise ValueError(f"{path}: record {i} is not a benchmark record: {'; '.join(problems)}")
    return data


def upgrade_record(record: dict) -> dict:
    """A ``/1`` record in the current schema (``resize_mode`` -> ``geometry``, sampler warp)."""
    if record.get("schema") not in OLD_SCHEMAS:
        return record
    record = dict(record)
    record["geometry"] = record.pop("resize_mode", None)
    record["sampler"] = "warp"  # the only sampler before schema 2
    record["schema"] = SCHEMA
    return record


class RecordFile:
    """A JSON list of records rewritten atomically after each append (a crash loses nothing)."""

    def __init__(self, path: str | os.PathLike, keep_existing: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        if keep_existing and self.path.is_file():
            self.records = read_records([self.path])
        write_json_atomic(self.path, self.records)

    def append(self, record: dict) -> None:
        self.records.append(record)
        write_json_atomic(self.path, self.records)

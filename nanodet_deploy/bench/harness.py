"""Run planned combinations, each in its own process, and turn the results into records.

Every (export, input size, backend, precision, threads) combination runs in a fresh Python
process (``python -m nanodet_deploy.bench.worker``): an onnxruntime session whose idle
threads spin, ncnn's OpenMP pool or torch's intra-op pool in one process slow down every
other backend in that process (benchmarks/results/isolation.md). The worker pins itself to
``threads`` CPUs, opens exactly one backend, warms up and times ``iterations`` full detections
(preprocess, inference, postprocess). Each combination runs in ``spec.rounds`` fresh processes
and the round with the median p50 is the record (``rounds_p50_ms`` keeps every round's):
measured on a 2-vCPU VM, about one process in ten of ncnn at 2 threads runs 2.5x slower for
its whole life, so a single process can report a mode instead of the speed. A crashing or hanging worker becomes an ``error``
record; records are written to the results file as they come (atomic rewrite), so a crash
loses nothing measured.

Imports no runtime and never torch. MACs for the GMAC/s column come from ``meta.json``
(``macs``) or, when torch is installed, from ``models.stats`` in a short subprocess.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from nanodet_deploy.artifacts import ExportMeta, read_meta
from nanodet_deploy.bench.meta import model_macs, parity_status
from nanodet_deploy.bench.records import SCHEMA, SOURCE, RecordFile, utc_now
from nanodet_deploy.bench.spec import BenchSpec, Planned, images_label
from nanodet_deploy.runtimes.registry import required_files

log = logging.getLogger(__name__)


def run_plan(
    planned: list[Planned],
    results: RecordFile,
    *,
    device: dict,
    versions: dict,
    timeout_s: float = 900.0,
    count_macs: bool = True,
    on_start: Callable[[BenchSpec], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Measure every planned combination in its own process; append each record as it comes.

    ``count_macs``: look up / count the model's MACs for the GMAC/s column (may start a short
    torch subprocess per export and size when meta.json has no ``macs``).
    """
    maps: dict[tuple, tuple[float | None, str | None]] = {}
    macs_cache: dict[tuple, tuple[int | None, str]] = {}
    out = []
    for item in planned:
        spec = item.spec
        if on_start:
            on_start(spec)
        meta = read_meta(spec.export_dir)
        if item.skip_reason:
            log.debug("skip %s: %s", spec.label, item.skip_reason)
            result = {"status": "skipped", "note": item.skip_reason}
        else:
            result = run_isolated(spec, timeout_s)
        _share_map(spec, result, maps)
        macs = _macs_cached(spec, meta, macs_cache) if count_macs else (None, "not counted")
        record = make_record(spec, meta, result, device=device, versions=versions, macs=macs)
        results.append(record)
        out.append(record)
        if on_record:
            on_record(record)
    return out


def _share_map(spec: BenchSpec, result: dict, maps: dict[tuple, tuple]) -> None:
    """mAP does not depend on threads: the first thread count's value serves the others."""
    if spec.data is None:
        return
    key = (spec.export_dir, spec.backend, spec.precision, tuple(spec.input_hw))
    if spec.evaluate:
        maps[key] = (result.get("map"), result.get("ap50"), result.get("map_note"))
    elif key in maps and result.get("status") == "ok":
        value, ap50, note = maps[key]
        result["map"], result["ap50"] = value, ap50
        result["map_note"] = f"{note} (measured in the run at the first thread count)"


def _macs_cached(spec: BenchSpec, meta: ExportMeta, cache: dict) -> tuple[int | None, str]:
    key = (spec.export_dir, tuple(spec.input_hw))
    if key not in cache:
        cache[key] = model_macs(spec.export_dir, meta, spec.input_hw)
    return cache[key]


def run_isolated(spec: BenchSpec, timeout_s: float) -> dict:
    """Run one combination in ``spec.rounds`` fresh interpreters; the result of the round with
    the median p50 (mAP from the first round, the only one that evaluates), with every
    round's p50 in ``rounds_p50_ms``; the first failing round's result if any fails."""
    results = []
    for i in range(max(1, spec.rounds)):
        result = run_once(spec if i == 0 else replace(spec, evaluate=False), timeout_s)
        if result.get("status") != "ok":
            return result
        results.append(result)
    return median_round(results)


def median_round(results: list[dict]) -> dict:
    """The round whose p50 is the median (the lower middle for an even count), with the first
    round's mAP and every round's p50."""
    p50s = [r["latency_ms"]["p50"] for r in results]
    order = sorted(range(len(results)), key=lambda i: p50s[i])
    chosen = dict(results[order[(len(order) - 1) // 2]])
    for key in ("map", "ap50", "map_note"):
        chosen[key] = results[0].get(key)
    chosen["rounds_p50_ms"] = p50s
    return chosen


def run_once(spec: BenchSpec, timeout_s: float) -> dict:
    """Run one combination in a fresh interpreter; its result dict, or an error result."""
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = worker_command(spec, result_path)
        log.debug("measure %s", spec.label)
        try:
            proc = subprocess.run(
                cmd, env=worker_env(spec.threads), capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            return {"status": "error", "note": f"worker timed out after {timeout_s:.0f} s"}
        if result_path.is_file():
            return json.loads(result_path.read_text(encoding="utf-8"))
        return {"status": "error", "note": _crash_note(proc.returncode, proc.stderr)}


def worker_command(spec: BenchSpec, result_path: Path) -> list[str]:
    return [sys.executable, "-m", "nanodet_deploy.bench.worker", spec.to_json(), str(result_path)]


def worker_env(threads: int) -> dict[str, str]:
    """Environment of a worker: OpenMP / BLAS pools sized to ``threads`` before any import."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def _crash_note(returncode: int, stderr: str) -> str:
    if returncode < 0:
        try:
            how = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
    else:
        how = f"exited with code {returncode}"
    tail = " | ".join(line for line in stderr.strip().splitlines()[-6:] if line.strip())
    return f"worker {how}: {tail}" if tail else f"worker {how}"


def make_record(
    spec: BenchSpec,
    meta: ExportMeta,
    result: dict,
    *,
    device: dict,
    versions: dict,
    macs: tuple[int | None, str],
) -> dict:
    """A full benchmark record (schema in nanodet_deploy.bench.records) from a worker result."""
    ok = result.get("status") == "ok"
    return {
        "schema": SCHEMA,
        "status": result.get("status", "error"),
        "note": result.get("note"),
        "source": SOURCE,
        "timestamp": utc_now(),
        "device": device,
        "versions": versions,
        "model": model_info(spec, meta, macs),
        "backend": spec.backend,
        "precision": spec.precision,
        "threads": spec.threads,
        "input_hw": list(spec.input_hw),
        "geometry": spec.geometry,
        "sampler": spec.sampler or meta.preprocess.sampler,
        "warmup": spec.warmup,
        "iterations": spec.iterations,
        "images": result.get("images") or images_label(spec.images),
        "latency_ms": result.get("latency_ms") if ok else None,
        "rounds_p50_ms": result.get("rounds_p50_ms") if ok else None,
        "fps": result.get("fps") if ok else None,
        "stages_ms": result.get("stages_ms") if ok else None,
        "parity": _parity(spec, result),
        "map": result.get("map"),
        "ap50": result.get("ap50"),
        "map_note": result.get("map_note"),
        "settings": result.get("settings", {}),
    }


def _parity(spec: BenchSpec, result: dict) -> dict:
    torch_model = result.get("settings", {}).get("torch_model", "")
    if spec.backend == "torch" and torch_model.startswith("zoo"):
        return {"status": "not verified", "detail": f"timing only: torch ran the {torch_model}"}
    return parity_status(spec.export_dir, spec.backend, spec.precision)


def model_files(spec: BenchSpec, meta: ExportMeta) -> list[str]:
    """The files of the export the backend loads (their total size goes into the record)."""
    files = meta.files
    if spec.backend == "openvino":
        keys = ["openvino_xml", "openvino_bin"] if files.get("openvino_xml") else ["onnx"]
    else:
        keys = list(required_files(spec.backend, spec.precision))
    return [files[k] for k in keys if files.get(k)]


def model_info(spec: BenchSpec, meta: ExportMeta, macs: tuple[int | None, str]) -> dict:
    files = model_files(spec, meta)
    paths = [Path(spec.export_dir) / f for f in files]
    size = sum(p.stat().st_size for p in paths if p.is_file()) if paths else None
    return {
        "name": meta.model_name,
        "export_dir": str(spec.export_dir),
        "file": "+".join(files) or None,
        "file_size_bytes": size,
        "num_classes": meta.num_classes,
        "random_weights": meta.random_weights,
        "output_layout": meta.output_layout,
        "macs": macs[0],
        "macs_source": macs[1],
    }

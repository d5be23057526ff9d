"""Benchmark harness: plan combinations, measure each in its own process, write records.

Every (export, input size, backend, precision, threads) combination runs in a fresh Python
process (``python -m nanodet_deploy.bench.worker``): an onnxruntime session whose idle
threads spin, ncnn's OpenMP pool or torch's intra-op pool in one process slow down every
other backend in that process (FACTS.md: ncnn at 2 threads 7.0 ms alone, 17.4 ms with an
onnxruntime session alive). The worker pins itself to ``threads`` CPUs, opens exactly one
backend, warms up and times ``iterations`` full detections (preprocess, inference,
postprocess). A crashing or hanging worker becomes an ``error`` record; records are written
to the results file as they come (atomic rewrite), so a crash loses nothing measured.

This module imports no runtime and never torch; it runs where only the runtime side is
installed. MACs for the GMAC/s column come from ``meta.json`` (``macs``) or, when torch is
installed, from ``models.stats`` in a short subprocess.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from nanodet_deploy.artifacts import ExportMeta, read_meta
from nanodet_deploy.bench.meta import model_macs, parity_status
from nanodet_deploy.bench.records import SCHEMA, SOURCE, RecordFile, utc_now

log = logging.getLogger(__name__)

BENCH_BACKENDS = ("onnxruntime", "ncnn", "torch")
PRECISIONS = ("fp32", "fp16")
RESIZE_MODES = ("plain", "pad", "letterbox")
# The Python package each backend imports (named in skip messages).
BACKEND_PACKAGES = {"onnxruntime": "onnxruntime", "ncnn": "ncnn", "torch": "torch"}
FP16_BACKENDS = ("ncnn",)


@dataclass(frozen=True)
class BenchSpec:
    """One combination to measure; JSON-serializable, handed to the worker process."""

    export_dir: str
    backend: str
    precision: str
    threads: int
    input_hw: tuple[int, int]
    warmup: int = 20
    iterations: int = 200
    images: str | None = None  # folder of images cycled through; None: one synthetic image
    resize_mode: str = "plain"
    data: str | None = None  # dataset for mAP (evaluated once per artifact, see plan())
    evaluate: bool = False
    pin_cpus: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BenchSpec:
        d = json.loads(text)
        d["input_hw"] = tuple(d["input_hw"])
        return cls(**d)


@dataclass(frozen=True)
class Planned:
    """A combination and, when it cannot run here, why (it becomes a ``skipped`` record)."""

    spec: BenchSpec
    skip_reason: str | None = None


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"320,416"`` -> [(320, 320), (416, 416)]; an item may be ``HxW`` (``"320x416"``)."""
    sizes = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        parts = item.split("x")
        if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"--size {item!r}: expected H or HxW, e.g. 320 or 320x416")
        h = int(parts[0])
        sizes.append((h, int(parts[-1])))
    return sizes


def parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [x.strip().lower() for x in text.split(",") if x.strip()]
    unknown = [x for x in items if x not in allowed]
    if unknown or not items:
        raise ValueError(f"{what} {text!r}: choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_threads(text: str) -> list[int]:
    try:
        threads = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--threads {text!r}: expected integers, e.g. 1,2,4") from None
    if not threads or min(threads) < 1:
        raise ValueError(f"--threads {text!r}: expected positive integers, e.g. 1,2,4")
    return list(dict.fromkeys(threads))


def plan(
    export_dirs: list[str],
    backends: list[str],
    precisions: list[str],
    threads: list[int],
    sizes: list[tuple[int, int]] | None,
    template: BenchSpec,
) -> list[Planned]:
    """All combinations (export, size, backend, precision, threads), in that nesting order.

    Raises ``MetaError`` for a folder without a valid meta.json and ``ValueError`` for a size
    the model cannot take, before anything runs. Combinations that cannot run here (package
    missing, model file missing, fp16 on a backend without it, a static ONNX at another size)
    are planned with a skip reason. mAP is evaluated for the first thread count only.
    """
    planned: list[Planned] = []
    metas = {d: read_meta(d) for d in export_dirs}
    for export_dir, meta in metas.items():
        for hw in sizes or [meta.input_hw]:
            _check_size(meta, hw, export_dir)
            for backend, precision in itertools.product(backends, precisions):
                for i, t in enumerate(threads):
                    spec = replace(
                        template, export_dir=str(export_dir), backend=backend,
                        precision=precision, threads=t, input_hw=hw,
                        evaluate=template.data is not None and i == 0,
                    )  # fmt: skip
                    planned.append(Planned(spec, skip_reason(spec, meta)))
    return planned


def _check_size(meta: ExportMeta, input_hw: tuple[int, int], export_dir: str) -> None:
    try:
        meta.check_input_hw(input_hw)
    except ValueError as exc:
        raise ValueError(f"--size for {export_dir}: {exc}") from None


def skip_reason(spec: BenchSpec, meta: ExportMeta) -> str | None:
    """Why this combination cannot be measured here, or None."""
    if spec.precision != "fp32" and spec.backend not in FP16_BACKENDS:
        return f"{spec.backend} is benchmarked in fp32 only (fp16 is an ncnn option here)"
    package = BACKEND_PACKAGES[spec.backend]
    if not package_installed(package):
        return f"backend {spec.backend} unavailable: Python package {package!r} is not installed"
    missing = [
        f for f in model_files(spec.backend, meta) if not (Path(spec.export_dir) / f).is_file()
    ]
    if missing:
        return f"{spec.backend}: {', '.join(missing)} not found in {spec.export_dir}"
    static = spec.backend == "onnxruntime" and not {"height", "width"} <= set(meta.dynamic_axes)
    if static and tuple(spec.input_hw) != tuple(meta.input_hw):
        h, w = meta.input_hw
        return (
            f"onnxruntime: the ONNX model has a static {h}x{w} input; export at "
            f"{spec.input_hw[0]}x{spec.input_hw[1]} (nanodet-export --size) to measure this size"
        )
    return None


def package_installed(name: str) -> bool:
    """Whether ``import name`` can find the package (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def model_files(backend: str, meta: ExportMeta) -> list[str]:
    """The files of the export a backend loads (their total size goes into the record)."""
    files = meta.files
    if backend == "onnxruntime":
        return [files.get("onnx", "model.onnx")]
    if backend == "ncnn":
        return [
            files.get("ncnn_param", "model.ncnn.param"),
            files.get("ncnn_bin", "model.ncnn.bin"),
        ]
    return [files[k] for k in ("torch", "checkpoint") if k in files][:1]


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
            log.debug("skip %s: %s", _label(spec), item.skip_reason)
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


def _label(spec: BenchSpec) -> str:
    h, w = spec.input_hw
    return f"{Path(spec.export_dir).name} {spec.backend} {spec.precision} {spec.threads}t {h}x{w}"


def _share_map(spec: BenchSpec, result: dict, maps: dict[tuple, tuple]) -> None:
    """mAP does not depend on threads: the first thread count's value serves the others."""
    if spec.data is None:
        return
    key = (spec.export_dir, spec.backend, spec.precision, tuple(spec.input_hw))
    if spec.evaluate:
        maps[key] = (result.get("map"), result.get("map_note"))
    elif key in maps and result.get("status") == "ok":
        value, note = maps[key]
        result["map"] = value
        result["map_note"] = f"{note} (measured in the run at the first thread count)"


def _macs_cached(spec: BenchSpec, meta: ExportMeta, cache: dict) -> tuple[int | None, str]:
    key = (spec.export_dir, tuple(spec.input_hw))
    if key not in cache:
        cache[key] = model_macs(spec.export_dir, meta, spec.input_hw)
    return cache[key]


def run_isolated(spec: BenchSpec, timeout_s: float) -> dict:
    """Run one combination in a fresh interpreter; its result dict, or an error result."""
    with tempfile.TemporaryDirectory(prefix="nanodet-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = worker_command(spec, result_path)
        log.debug("measure %s", _label(spec))
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
        "resize_mode": spec.resize_mode,
        "warmup": spec.warmup,
        "iterations": spec.iterations,
        "images": result.get("images") or images_label(spec.images),
        "latency_ms": result.get("latency_ms") if ok else None,
        "fps": result.get("fps") if ok else None,
        "stages_ms": result.get("stages_ms") if ok else None,
        "parity": _parity(spec, result),
        "map": result.get("map"),
        "map_note": result.get("map_note"),
        "settings": result.get("settings", {}),
    }


def _parity(spec: BenchSpec, result: dict) -> dict:
    torch_model = result.get("settings", {}).get("torch_model", "")
    if spec.backend == "torch" and torch_model.startswith("zoo"):
        return {"status": "not verified", "detail": f"timing only: torch ran the {torch_model}"}
    return parity_status(spec.export_dir, spec.backend, spec.precision)


def images_label(images: str | None) -> str:
    return f"images from {images}" if images else "synthetic 640x480 BGR (seed 0)"


def model_info(spec: BenchSpec, meta: ExportMeta, macs: tuple[int | None, str]) -> dict:
    files = model_files(spec.backend, meta)
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

"""What to measure: one ``BenchSpec`` per (export, input size, backend, precision, threads).

``plan`` expands the CLI's lists into specs. ``auto`` lists ask only for what exists: every
backend whose package is installed and whose files the export has, and, per backend, every
precision the export has files for (ncnn: the export's weight precision; int8 where the int8
files were written; OpenVINO fp32, plus bf16 where the CPU offers it). Combinations asked for
explicitly that cannot run here become skipped records with the reason. Torch-free.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from nanodet_deploy.artifacts import ExportMeta, read_meta
from nanodet_deploy.runtimes.base import BACKENDS
from nanodet_deploy.runtimes.registry import PRECISIONS, export_has, missing_package
from nanodet_deploy.structures import GEOMETRIES, SAMPLERS

ALL_PRECISIONS = ("fp32", "fp16", "bf16", "int8")
STATIC_ONNX_BACKENDS = ("onnxruntime", "openvino")  # take only the export size unless dynamic


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
    geometry: str = "plain"  # plain: the tensor is exactly input_hw (comparable across sizes)
    sampler: str | None = None  # None: the export's
    score_thresh: float = 0.05  # the evaluation threshold: the most postprocess work
    data: str | None = None  # dataset for mAP (evaluated once per artifact, see plan())
    evaluate: bool = False
    pin_cpus: bool = True
    rounds: int = 3  # fresh worker processes per combination; the median round is reported

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BenchSpec:
        d = json.loads(text)
        d["input_hw"] = tuple(d["input_hw"])
        return cls(**d)

    @property
    def label(self) -> str:
        h, w = self.input_hw
        name = Path(self.export_dir).name
        return f"{name} {self.backend} {self.precision} {self.threads}t {h}x{w}"


@dataclass(frozen=True)
class Planned:
    """A combination and, when it cannot run here, why (it becomes a ``skipped`` record)."""

    spec: BenchSpec
    skip_reason: str | None = None


def images_label(images: str | None) -> str:
    """What a benchmark fed the model, for records."""
    return f"images from {images}" if images else "synthetic 640x480 BGR (seed 0)"


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
        sizes.append((int(parts[0]), int(parts[-1])))
    return sizes


def parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """Comma-separated choices; ``auto`` alone is returned as ``["auto"]``."""
    items = [x.strip().lower() for x in text.split(",") if x.strip()]
    if items == ["auto"]:
        return items
    unknown = [x for x in items if x not in allowed]
    if unknown or not items:
        raise ValueError(f"{what} {text!r}: choose auto or from {', '.join(allowed)}")
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

    ``backends`` / ``precisions`` may be ``["auto"]`` (module doc). Raises ``MetaError`` for a
    folder without a valid meta.json and ``ValueError`` for a size the model cannot take or a
    bad geometry / sampler, before anything runs. mAP is evaluated at the first thread count.
    """
    if template.geometry not in GEOMETRIES or template.sampler not in (None, *SAMPLERS):
        raise ValueError(f"--resize must be one of {GEOMETRIES}; --sampler one of {SAMPLERS}")
    planned: list[Planned] = []
    for export_dir in export_dirs:
        meta = read_meta(export_dir)
        for hw in sizes or [meta.input_hw]:
            _check_size(meta, hw, export_dir)
            for backend, precision in _pairs(export_dir, meta, backends, precisions):
                for i, t in enumerate(threads):
                    spec = replace(
                        template, export_dir=str(export_dir), backend=backend,
                        precision=precision, threads=t, input_hw=hw,
                        evaluate=template.data is not None and i == 0,
                    )  # fmt: skip
                    planned.append(Planned(spec, skip_reason(spec, meta)))
    return planned


def _pairs(
    export_dir: str, meta: ExportMeta, backends: list[str], precisions: list[str]
) -> list[tuple[str, str]]:
    """(backend, precision) pairs to plan for one export."""
    names = list(BACKENDS) if backends == ["auto"] else backends
    if backends == ["auto"]:
        names = [b for b in names if missing_package(b) is None and _has_any(export_dir, b)]
    if precisions != ["auto"]:
        return list(itertools.product(names, precisions))
    pairs = []
    for b in names:  # a backend asked for by name gets a (skipped) fp32 row at least
        pairs += [(b, p) for p in available_precisions(export_dir, meta, b) or ["fp32"]]
    return pairs


def _has_any(export_dir: str, backend: str) -> bool:
    return any(export_has(export_dir, backend, p) for p in PRECISIONS[backend])


def available_precisions(export_dir: str, meta: ExportMeta, backend: str) -> list[str]:
    """The precisions of ``backend`` this export has files for (module doc)."""
    if backend == "ncnn":
        own = meta.precision.get("ncnn", "fp16")
        found = [own] if export_has(export_dir, "ncnn", own) else []
        return found + (["int8"] if export_has(export_dir, "ncnn", "int8") else [])
    if backend == "openvino":
        return ["fp32"] + (["bf16"] if _cpu_has_bf16() else [])
    return [p for p in PRECISIONS[backend] if p != "fp16" and export_has(export_dir, backend, p)]


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _check_size(meta: ExportMeta, input_hw: tuple[int, int], export_dir: str) -> None:
    try:
        meta.check_input_hw(input_hw)
    except ValueError as exc:
        raise ValueError(f"--size for {export_dir}: {exc}") from None


def skip_reason(spec: BenchSpec, meta: ExportMeta) -> str | None:
    """Why this combination cannot be measured here, or None."""
    if spec.precision not in PRECISIONS[spec.backend]:
        return f"{spec.backend} runs {', '.join(PRECISIONS[spec.backend])}, not {spec.precision}"
    missing = missing_package(spec.backend)
    if missing:
        return missing
    if not export_has(spec.export_dir, spec.backend, spec.precision):
        return f"{spec.backend} {spec.precision}: the export {spec.export_dir} has no such files"
    dynamic = {"height", "width"} <= set(meta.dynamic_axes)
    static = spec.backend in STATIC_ONNX_BACKENDS and not dynamic
    if static and tuple(spec.input_hw) != tuple(meta.input_hw):
        h, w = meta.input_hw
        return (
            f"{spec.backend}: the ONNX model has a static {h}x{w} input; export at "
            f"{spec.input_hw[0]}x{spec.input_hw[1]} (nanodet-export --size) to measure this size"
        )
    return None

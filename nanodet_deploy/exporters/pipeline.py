"""The whole export: wrapper -> ONNX (+ onnxsim) -> NCNN (pnnx) -> meta.json -> verification.

Everything is written into a temp folder beside ``out_dir`` (same filesystem) and renamed into
place only when complete, so a failed or interrupted export never leaves a half-written folder.
Each step reports its name, what it did and how long it took through ``on_step``; the library
itself only logs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from nanodet_deploy.artifacts import (
    OUTPUT_DECODED,
    OUTPUT_LAYOUTS,
    ExportMeta,
    write_json_atomic,
    write_meta,
)
from nanodet_deploy.exporters import ExportError
from nanodet_deploy.exporters.onnx import DEFAULT_OPSET, OnnxExportInfo

if TYPE_CHECKING:
    from nanodet_deploy.exporters.ncnn import NcnnExportInfo
    from nanodet_deploy.models.detector import NanoDet
    from nanodet_deploy.models.export import ExportWrapper

log = logging.getLogger(__name__)

FORMATS = ("onnx", "ncnn")
ONNX_FILE = "model.onnx"
TORCH_FILE = "model.pth"  # the exported weights in our checkpoint format, for the torch backend
StepCallback = Callable[[str, str, float], None]  # (step, what it did, seconds)
StepReporter = Callable[[str], AbstractContextManager[Callable[[str], None]]]


@dataclass(frozen=True)
class ExportOptions:
    input_hw: tuple[int, int]
    formats: tuple[str, ...] = FORMATS
    output_layout: str = OUTPUT_DECODED
    opset: int = DEFAULT_OPSET
    fold_normalize: bool = False
    simplify: bool = True
    dynamic_axes: tuple[str, ...] = ()  # ONNX only: subset of ("batch", "height", "width")
    ncnn_fp16: bool = True  # fp16 weight storage in model.ncnn.bin
    verify: bool = True
    images_dir: Path | None = None  # real images for verification; None: fixed random inputs
    overwrite: bool = False


@dataclass
class ExportResult:
    out_dir: Path
    meta: ExportMeta
    steps: list[tuple[str, str, float]] = field(default_factory=list)
    verify: dict | None = None


def check_options(options: ExportOptions, size_multiple: int, model_name: str) -> None:
    """Fail on bad options before any slow work."""
    from nanodet_deploy.exporters.onnx import check_dynamic_axes, check_opset

    h, w = options.input_hw
    if h <= 0 or w <= 0 or h % size_multiple or w % size_multiple:
        raise ValueError(
            f"--size {h}x{w} (HxW) for {model_name}: both must be positive multiples of "
            f"{size_multiple} (the deepest backbone stride)"
        )
    unknown = [f for f in options.formats if f not in FORMATS]
    if unknown or not options.formats:
        raise ValueError(f"--formats: unknown {unknown}; choose from {list(FORMATS)}")
    if options.output_layout not in OUTPUT_LAYOUTS:
        raise ValueError(f"--output must be one of {list(OUTPUT_LAYOUTS)}")
    check_opset(options.opset)
    check_dynamic_axes(options.dynamic_axes)
    if options.images_dir is not None:
        from nanodet_deploy.exporters.verify import image_paths

        image_paths(options.images_dir)


def export_model(
    model: NanoDet,
    out_dir: str | Path,
    options: ExportOptions,
    checkpoint_sha256: str | None = None,
    random_weights: bool = False,
    on_step: StepCallback | None = None,
) -> ExportResult:
    """Export ``model`` (a NanoDet) into ``out_dir`` (see module doc)."""
    from nanodet_deploy.models.export import export_meta

    cfg = model.cfg
    check_options(options, cfg.size_multiple, cfg.name)
    out_dir = Path(out_dir)
    _check_target(out_dir, options.overwrite)
    tmp = _make_temp_dir(out_dir)
    meta = export_meta(
        cfg, options.input_hw, options.output_layout, options.fold_normalize,
        checkpoint_sha256=checkpoint_sha256, random_weights=random_weights,
    )  # fmt: skip
    result = ExportResult(out_dir, meta)
    report = _reporter(result, on_step)
    try:
        with _single_torch_thread():
            result.meta = _build(model, tmp, options, meta, report)
            if options.verify:
                with report("verify") as note:
                    result.verify = _verify(model, tmp, result.meta, options)
                    note(_verify_summary(result.verify))
        with report("publish") as note:
            _publish(tmp, out_dir, options.overwrite)
            note(f"moved into {out_dir}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


@contextmanager
def _single_torch_thread() -> Iterator[None]:
    """Trace and reference forwards on one thread, restored afterwards: they are tiny, and
    torch's thread pool on a busy machine made a 64x64 forward take 4.5 s instead of 0.02 s."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _reporter(result: ExportResult, on_step: StepCallback | None) -> StepReporter:
    @contextmanager
    def report(step: str) -> Iterator[Callable[[str], None]]:
        details: list[str] = []
        t0 = time.perf_counter()
        yield details.append
        seconds = time.perf_counter() - t0
        detail = "; ".join(details)
        result.steps.append((step, detail, seconds))
        log.debug("%s: %s (%.1f s)", step, detail, seconds)
        if on_step is not None:
            on_step(step, detail, seconds)

    return report


def _build(
    model: NanoDet, tmp: Path, options: ExportOptions, meta: ExportMeta, report: StepReporter
) -> ExportMeta:
    """Write the model files and meta.json into ``tmp``; the completed meta."""
    from nanodet_deploy.exporters.onnx import export_onnx, write_onnx_metadata
    from nanodet_deploy.models.export import ExportWrapper

    wrapper = ExportWrapper(model.eval(), options.output_layout, options.fold_normalize).eval()
    files, precision = {}, {}
    with report("onnx") as note:
        info = export_onnx(
            wrapper, tmp / ONNX_FILE, options.input_hw, options.opset,
            options.dynamic_axes, options.simplify,
        )  # fmt: skip
        note(_onnx_summary(info, tmp / ONNX_FILE))
    files["onnx"], precision["onnx"] = ONNX_FILE, "fp32"
    meta = replace(meta, opset=info.opset, dynamic_axes=info.dynamic_axes)
    if "ncnn" in options.formats:
        with report("ncnn") as note:
            ncnn_info = _convert_ncnn(wrapper, tmp, options, info, meta)
            note(_ncnn_summary(ncnn_info))
        files["ncnn_param"], files["ncnn_bin"] = ncnn_info.param.name, ncnn_info.bin.name
        precision["ncnn"] = "fp16" if options.ncnn_fp16 else "fp32"
        meta = replace(meta, ncnn_input_name=ncnn_info.input_name,
                       ncnn_output_name=ncnn_info.output_name)  # fmt: skip
    if "onnx" not in options.formats:  # the ONNX was only the way to NCNN
        (tmp / ONNX_FILE).unlink()
        del files["onnx"], precision["onnx"]
    with report("torch") as note:
        meta = replace(meta, **_torch_files(model, tmp, options.input_hw, files, precision))
        note(f"{TORCH_FILE}: inference weights for the torch backend; "
             f"{meta.params:,} parameters, {meta.macs / 1e6:.1f} M MACs")  # fmt: skip
    with report("meta") as note:
        write_meta(tmp, meta)
        if "onnx" in files:
            write_onnx_metadata(tmp / ONNX_FILE, meta)
        note("meta.json written" + ("; ONNX metadata_props set" if "onnx" in files else ""))
    return meta


def _torch_files(
    model: NanoDet, tmp: Path, input_hw: tuple[int, int], files: dict, precision: dict
) -> dict:
    """Save the inference weights (no training-only modules) as ``model.pth``; count MACs."""
    from nanodet_deploy.checkpoint import save_checkpoint
    from nanodet_deploy.models.stats import model_stats

    save_checkpoint(tmp / TORCH_FILE, model.cfg, model.inference_state_dict())
    stats = model_stats(model, tuple(input_hw))
    files, precision = {**files, "checkpoint": TORCH_FILE}, {**precision, "torch": "fp32"}
    return dict(files=files, precision=precision, macs=stats.macs, params=stats.params_without_aux)


def _convert_ncnn(
    wrapper: ExportWrapper, tmp: Path, options: ExportOptions, info: OnnxExportInfo,
    meta: ExportMeta,
) -> NcnnExportInfo:  # fmt: skip
    """pnnx needs a static ONNX: the exported one, or a static twin of a dynamic export."""
    from nanodet_deploy.exporters.ncnn import convert_onnx_to_ncnn
    from nanodet_deploy.exporters.onnx import export_onnx

    level_hw = [(-(-meta.input_hw[0] // s), -(-meta.input_hw[1] // s)) for s in meta.strides]
    if not info.dynamic_axes:
        return convert_onnx_to_ncnn(info.path, tmp, level_hw, options.ncnn_fp16)
    with tempfile.TemporaryDirectory(prefix="static-", dir=tmp) as scratch:
        static = export_onnx(
            wrapper, Path(scratch) / ONNX_FILE, options.input_hw, options.opset, (), True
        )
        return convert_onnx_to_ncnn(static.path, tmp, level_hw, options.ncnn_fp16)


def _verify(model: NanoDet, tmp: Path, meta: ExportMeta, options: ExportOptions) -> dict:
    from nanodet_deploy.exporters.verify import (
        VERIFY_FILE,
        PostprocessSettings,
        verification_inputs,
        verify_backends,
        verify_report,
    )  # fmt: skip
    from nanodet_deploy.runtimes.ncnn import NcnnBackend
    from nanodet_deploy.runtimes.ort import OrtBackend
    from nanodet_deploy.runtimes.torch_backend import TorchBackend

    reference = TorchBackend(model, meta.input_hw, meta.output_layout, meta.normalize_folded)
    static = not {"height", "width"} <= set(meta.dynamic_axes)
    inputs = verification_inputs(meta, options.images_dir, meta.input_hw if static else None)
    backends, precisions = {}, {}
    if "onnx" in meta.files:
        backends["onnxruntime"], precisions["onnxruntime"] = (
            OrtBackend(tmp, 1),
            meta.precision["onnx"],
        )
    if "ncnn_param" in meta.files:
        backends["ncnn"], precisions["ncnn"] = NcnnBackend(tmp, 1), meta.precision["ncnn"]
    settings = PostprocessSettings()
    try:
        checks = verify_backends(reference, backends, precisions, inputs, settings)
    finally:
        for backend in backends.values():
            backend.close()
    report = verify_report(checks, inputs, meta, settings)
    write_json_atomic(tmp / VERIFY_FILE, report)
    return report


def _onnx_summary(info: OnnxExportInfo, path: Path) -> str:
    size_mb = path.stat().st_size / 1e6
    simplified = "simplified with onnxsim" if info.simplified else "not simplified"
    dyn = f", dynamic {', '.join(info.dynamic_axes)}" if info.dynamic_axes else ", static shape"
    return f"{path.name} ({size_mb:.2f} MB), opset {info.opset}, {simplified}{dyn}, {len(info.ops)} op types"


def _ncnn_summary(info: NcnnExportInfo) -> str:
    size_mb = info.bin.stat().st_size / 1e6
    precision = "fp16" if info.fp16 else "fp32"
    return (
        f"{info.param.name} + {info.bin.name} ({size_mb:.2f} MB, {precision} weights), "
        f"blobs {info.input_name} -> {info.output_name}, loaded with ncnn"
    )


def _verify_summary(report: dict) -> str:
    parts = []
    for name, check in report["checks"].items():
        verdict = "ok" if check["passed"] else "FAILED"
        parts.append(
            f"{name} {verdict} (scores {check['max_score_diff']:.1e}, "
            f"distances {check['max_dist_px_diff']:.1e} px)"
        )
    return f"{len(report['inputs'])} inputs: " + ", ".join(parts)


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir}: exists and is not a folder")
    if out_dir.exists() and not overwrite:
        raise ExportError(f"--out {out_dir}: already exists; use --overwrite to replace it")


def _make_temp_dir(out_dir: Path) -> Path:
    parent = out_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file where a folder of the path should be
        raise ExportError(f"--out {out_dir}: {exc.filename or parent} is not a folder") from exc
    except OSError as exc:
        raise ExportError(
            f"--out {out_dir}: cannot create {parent} ({exc.strerror or exc})"
        ) from exc
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=parent))
    except OSError as exc:
        raise ExportError(
            f"--out {out_dir}: cannot write into {parent} ({exc.strerror or exc})"
        ) from exc


def _publish(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished temp folder to ``out_dir`` (replacing it when ``overwrite``)."""
    old = None
    if out_dir.exists():
        if not overwrite:
            raise ExportError(f"--out {out_dir}: appeared during the export; not replaced")
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=tmp.parent))
        old.rmdir()
        out_dir.rename(old)
    _open_permissions(tmp)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _open_permissions(folder: Path) -> None:
    """mkdtemp / atomic writes create 0700 / 0600 entries: give them the usual umask modes."""
    umask = _umask()
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

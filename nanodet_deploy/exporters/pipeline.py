"""The whole export: wrapper -> ONNX (+ onnxsim) -> NCNN (pnnx) / MNN / OpenVINO -> int8 ->
meta.json -> verification.

Everything is written into a temp folder beside ``out_dir`` (same filesystem) and renamed into
place only when complete, so a failed or interrupted export never leaves a half-written folder.
Each step reports its name, what it did and how long it took through ``on_step``; the library
itself only logs.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from nanodet_deploy.artifacts import OUTPUT_DECODED, OUTPUT_LAYOUTS, ExportMeta, write_meta
from nanodet_deploy.checkpoint import save_checkpoint
from nanodet_deploy.evaluation import evaluate_backend
from nanodet_deploy.exporters import int8 as int8_step
from nanodet_deploy.exporters.errors import ExportError
from nanodet_deploy.exporters.folder import make_temp_dir, publish, remove_tree
from nanodet_deploy.exporters.ncnn import NCNN_BIN, NCNN_PARAM, NcnnExportInfo
from nanodet_deploy.exporters.ncnn import convert_onnx_to_ncnn as onnx_to_ncnn
from nanodet_deploy.exporters.onnx import (
    DEFAULT_OPSET,
    OnnxExportInfo,
    check_dynamic_axes,
    check_opset,
    export_onnx,
    write_onnx_metadata,
)
from nanodet_deploy.exporters.registry import converter
from nanodet_deploy.exporters.verify import (
    PostprocessSettings,
    VerifyInput,
    image_paths,
    verification_inputs,
    verify_backends,
    verify_report,
)
from nanodet_deploy.fileio import write_json_atomic
from nanodet_deploy.models.detector import NanoDet
from nanodet_deploy.models.export import ExportWrapper, export_meta
from nanodet_deploy.models.stats import model_stats
from nanodet_deploy.runtimes.base import Backend
from nanodet_deploy.runtimes.registry import open_backend
from nanodet_deploy.runtimes.torch_backend import TorchBackend
from nanodet_deploy.structures import GEOMETRIES, SAMPLERS

log = logging.getLogger(__name__)

FORMATS = ("onnx", "ncnn", "mnn", "openvino")
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
MNN_INT8_SOURCES = ("onnx", "mnnquant")  # exporters/mnn_int8.py module doc
NCNN_INT8_PARAM = "model.int8.ncnn.param"
NCNN_INT8_BIN = "model.int8.ncnn.bin"
TORCH_FILE = "model.pth"  # the exported weights in our checkpoint format, for the torch backend
StepCallback = Callable[[str, str, float], None]  # (step, what it did, seconds)
StepReporter = Callable[[str], AbstractContextManager[Callable[[str], None]]]


@dataclass(frozen=True)
class ExportOptions:
    input_hw: tuple[int, int]
    formats: tuple[str, ...] = ("onnx", "ncnn")
    output_layout: str = OUTPUT_DECODED
    opset: int = DEFAULT_OPSET
    fold_normalize: bool = False
    simplify: bool = True
    dynamic_axes: tuple[str, ...] = ()  # ONNX only: subset of ("batch", "height", "width")
    ncnn_fp16: bool = True  # fp16 weight storage in model.ncnn.bin
    geometry: str | None = None  # meta.json's preprocess block (None: PreprocessSpec defaults)
    sampler: str | None = None
    int8: bool = False  # also write int8 models of the formats that have one
    calib: Path | None = None  # int8 calibration: an image folder or a data YAML (train split)
    calib_images: int = int8_step.DEFAULT_CALIB_IMAGES
    mnn_int8: str = "onnx"  # MNN int8 scales: "onnx" (the onnxruntime int8 model's) or "mnnquant"
    data: Path | None = None  # data YAML: verification adds the val mAP of every artifact
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
    if options.geometry not in (None, *GEOMETRIES) or options.sampler not in (None, *SAMPLERS):
        raise ValueError(f"--geometry: one of {GEOMETRIES}; --sampler: one of {SAMPLERS}")
    check_opset(options.opset)
    check_dynamic_axes(options.dynamic_axes)
    if options.images_dir is not None:
        image_paths(options.images_dir)
    for fmt in options.formats:
        if fmt in ("mnn", "openvino"):
            converter(fmt)  # the package is installed
    if options.int8:
        if options.calib is None:
            raise ValueError("--int8 needs --calib (an image folder or a data YAML)")
        int8_step.calibration_split(options.calib, options.calib_images)  # readable source
    if options.mnn_int8 not in MNN_INT8_SOURCES:
        raise ValueError(f"--mnn-int8 must be one of {list(MNN_INT8_SOURCES)}")


def export_model(
    model: NanoDet,
    out_dir: str | Path,
    options: ExportOptions,
    checkpoint_sha256: str | None = None,
    random_weights: bool = False,
    on_step: StepCallback | None = None,
) -> ExportResult:
    """Export ``model`` (a NanoDet) into ``out_dir`` (see module doc)."""
    cfg = model.cfg
    check_options(options, cfg.size_multiple, cfg.name)
    out_dir = Path(out_dir)
    tmp = make_temp_dir(out_dir, options.overwrite)
    meta = export_meta(
        cfg, options.input_hw, options.output_layout, options.fold_normalize,
        checkpoint_sha256=checkpoint_sha256, random_weights=random_weights,
        geometry=options.geometry, sampler=options.sampler,
    )  # fmt: skip
    result = ExportResult(out_dir, meta)
    report = _reporter(result, on_step)
    try:
        with _single_torch_thread():
            result.meta = _build(model, tmp, options, meta, report)
            if options.verify:
                with report("verify") as note:
                    result.verify = _verify(model, tmp, result.meta, options)
                    write_json_atomic(tmp / "verify.json", result.verify)
                    note(_verify_summary(result.verify))
        with report("publish") as note:
            publish(tmp, out_dir, options.overwrite)
            note(f"moved into {out_dir}")
    except BaseException:
        remove_tree(tmp)
        raise
    return result


@contextmanager
def _single_torch_thread() -> Iterator[None]:
    """Trace and reference forwards on one thread, restored afterwards: they are tiny, and
    torch's thread pool on a busy machine made a 64x64 forward take 4.5 s instead of 0.02 s."""
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
            ncnn_info = _convert_ncnn(wrapper, tmp, options, info, meta, tmp, options.ncnn_fp16)
            note(_ncnn_summary(ncnn_info))
        files["ncnn_param"], files["ncnn_bin"] = ncnn_info.param.name, ncnn_info.bin.name
        precision["ncnn"] = "fp16" if options.ncnn_fp16 else "fp32"
        meta = replace(meta, ncnn_input_name=ncnn_info.input_name,
                       ncnn_output_name=ncnn_info.output_name)  # fmt: skip
    if "mnn" in options.formats:
        with report("mnn") as note:
            mnn = converter("mnn").convert_onnx_to_mnn(tmp / ONNX_FILE, tmp / "model.mnn")
            files["mnn"], precision["mnn"] = mnn.path.name, "fp32"
            note(f"{mnn.path.name} ({mnn.path.stat().st_size / 1e6:.2f} MB), MNN's converter")
    if "openvino" in options.formats:
        with report("openvino") as note:
            xml, weights = converter("openvino").convert_onnx_to_openvino(tmp / ONNX_FILE, tmp)
            files["openvino_xml"], files["openvino_bin"] = xml.name, weights.name
            precision["openvino"] = "fp32"
            note(f"{xml.name} + {weights.name} ({weights.stat().st_size / 1e6:.2f} MB), fp32 IR")
    with report("torch") as note:
        meta = replace(meta, **_torch_files(model, tmp, options.input_hw, files, precision))
        note(f"{TORCH_FILE}: inference weights for the torch backend; "
             f"{meta.params:,} parameters, {meta.macs / 1e6:.1f} M MACs")  # fmt: skip
    if options.int8:
        with report("int8") as note:
            meta = _int8(wrapper, tmp, options, meta, info, note)
    if "onnx" not in options.formats:  # the ONNX was only the way to the other formats
        (tmp / ONNX_FILE).unlink()
        meta = replace(meta, files=_without(meta.files, "onnx"),
                       precision=_without(meta.precision, "onnx"))  # fmt: skip
    with report("meta") as note:
        write_meta(tmp, meta)
        if "onnx" in meta.files:
            write_onnx_metadata(tmp / ONNX_FILE, meta)
        note("meta.json written" + ("; ONNX metadata_props set" if "onnx" in meta.files else ""))
    return meta


def _without(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


def _torch_files(
    model: NanoDet, tmp: Path, input_hw: tuple[int, int], files: dict, precision: dict
) -> dict:
    """Save the inference weights (no training-only modules) as ``model.pth``; count MACs."""
    save_checkpoint(tmp / TORCH_FILE, model.cfg, model.inference_state_dict())
    stats = model_stats(model, tuple(input_hw))
    files, precision = {**files, "checkpoint": TORCH_FILE}, {**precision, "torch": "fp32"}
    return dict(files=files, precision=precision, macs=stats.macs, params=stats.params_without_aux)


def _convert_ncnn(
    wrapper: ExportWrapper, tmp: Path, options: ExportOptions, info: OnnxExportInfo,
    meta: ExportMeta, out_dir: Path, fp16: bool,
) -> NcnnExportInfo:  # fmt: skip
    """pnnx needs a static ONNX: the exported one, or a static twin of a dynamic export."""
    level_hw = [(-(-meta.input_hw[0] // s), -(-meta.input_hw[1] // s)) for s in meta.strides]
    if not info.dynamic_axes:
        return onnx_to_ncnn(info.path, out_dir, level_hw, fp16)
    with tempfile.TemporaryDirectory(prefix="static-", dir=tmp) as scratch:
        static = export_onnx(
            wrapper, Path(scratch) / ONNX_FILE, options.input_hw, options.opset, (), True
        )
        return onnx_to_ncnn(static.path, out_dir, level_hw, fp16)


def _int8(
    wrapper: ExportWrapper, tmp: Path, options: ExportOptions, meta: ExportMeta,
    info: OnnxExportInfo, note: Callable[[str], None],
) -> ExportMeta:  # fmt: skip
    """Calibrate on ``--calib`` with the export's preprocessing; write the int8 models."""
    calib = int8_step.calibration_split(options.calib, options.calib_images)
    # padded to the export's size: a static model's input, and for a dynamic one a valid input
    # of one size for all images (onnxruntime's calibrators stack every image's tensors)
    tensors = int8_step.calibration_tensors(calib.calibration, meta.preprocess, meta.input_hw)
    report = int8_step.Int8Report(calib, len(tensors))
    files, precision = dict(meta.files), dict(meta.precision)
    mnn_from_onnx = "mnn" in options.formats and options.mnn_int8 == "onnx"
    if "onnx" in options.formats or mnn_from_onnx:
        onnx_int8 = int8_step.quantize_onnx(tmp / ONNX_FILE, tmp / ONNX_INT8_FILE, tensors, meta)
        note(f"{ONNX_INT8_FILE} ({onnx_int8.quantized_convs} int8 convs)")
    if "onnx" in options.formats:
        files["onnx_int8"], precision["onnx_int8"] = ONNX_INT8_FILE, "int8"
        report.artifacts["onnx"] = onnx_int8.to_meta()
    if "ncnn" in options.formats:
        ncnn_meta = _ncnn_int8(wrapper, tmp, options, meta, info, calib)
        files["ncnn_int8_param"], files["ncnn_int8_bin"] = NCNN_INT8_PARAM, NCNN_INT8_BIN
        precision["ncnn_int8"] = "int8"
        report.artifacts["ncnn"] = ncnn_meta
        note(f"{NCNN_INT8_PARAM} ({len(ncnn_meta['quantized_layers'])} int8 layers)")
    if "mnn" in options.formats:
        if mnn_from_onnx:
            mnn_meta = _mnn_int8_from_onnx(tmp, meta, onnx_int8)
            if "onnx" not in options.formats:  # only the way to the MNN scales
                (tmp / ONNX_INT8_FILE).unlink()
                mnn_meta["scales_from"] = onnx_int8.to_meta()
        else:
            mnn_meta = _mnn_int8(tmp, meta, calib, info)
        files["mnn_int8"], precision["mnn_int8"] = mnn_meta["file"], "int8"
        report.artifacts["mnn"] = mnn_meta
        note(f"{mnn_meta['file']} ({mnn_meta['tool']})")
    note(f"calibrated on {len(tensors)} images from {calib.source}; "
         f"{len(calib.held_out)} held out for the check")  # fmt: skip
    return replace(meta, files=files, precision=precision, int8=report.to_meta())


def _ncnn_int8(
    wrapper: ExportWrapper, tmp: Path, options: ExportOptions, meta: ExportMeta,
    info: OnnxExportInfo, calib: int8_step.CalibrationSet,
) -> dict:  # fmt: skip
    """ncnn int8 from an fp32 ncnn model (the export's, or an fp32 twin of fp16 weights),
    calibrated on the tensors the ncnn runtime sees (no padding on to a static size)."""
    tensors = int8_step.calibration_tensors(calib.calibration, meta.preprocess, None)
    with tempfile.TemporaryDirectory(prefix="ncnn-fp32-", dir=tmp) as scratch:
        if options.ncnn_fp16:
            _convert_ncnn(wrapper, tmp, options, info, meta, Path(scratch), fp16=False)
            param, weights = Path(scratch) / NCNN_PARAM, Path(scratch) / NCNN_BIN
        else:
            param, weights = tmp / NCNN_PARAM, tmp / NCNN_BIN
        return int8_step.quantize_ncnn(
            param, weights, tmp / NCNN_INT8_PARAM, tmp / NCNN_INT8_BIN, tensors, meta
        )


def _mnn_int8_from_onnx(tmp: Path, meta: ExportMeta, onnx_int8: int8_step.OnnxInt8Info) -> dict:
    """MNN int8 with the onnxruntime int8 model's scales (exporters/mnn_int8.py)."""
    from nanodet_deploy.exporters.mnn_int8 import mnn_int8_from_onnx

    int8 = mnn_int8_from_onnx(onnx_int8.path, tmp / "model.int8.mnn", input_name=meta.input_name,
                              output_name=meta.output_name)  # fmt: skip
    return int8.to_meta()


def _mnn_int8(
    tmp: Path, meta: ExportMeta, calib: int8_step.CalibrationSet, info: OnnxExportInfo
) -> dict:
    """mnnquant needs a fixed-size MNN model: the export's, or one converted from a static twin."""
    mnn = converter("mnn")
    source = tmp / meta.files["mnn"]
    if info.dynamic_axes:
        raise ExportError("--mnn-int8 mnnquant needs a static-shape export: drop --dynamic, or "
                          "use --mnn-int8 onnx")  # fmt: skip
    spec = meta.preprocess
    mean, std = ((0.0,) * 3, (1.0,) * 3) if spec.normalize_folded else (spec.mean_bgr, spec.std_bgr)
    quant = mnn.quantize_mnn(
        source, tmp / "model.int8.mnn", calib.calibration, input_hw=meta.input_hw,
        mean_bgr=mean, std_bgr=std, color_order=spec.color_order,
        input_name=meta.input_name, output_name=meta.output_name,
    )  # fmt: skip
    return {"file": quant.path.name, **quant.calibration}


# (backend, precision) of every verifiable artifact, by the meta.json "files" key it needs
_VERIFIED = (
    ("onnx", "onnxruntime", "fp32"), ("ncnn_param", "ncnn", None), ("mnn", "mnn", "fp32"),
    ("openvino_xml", "openvino", "fp32"),
)  # fmt: skip
_VERIFIED_INT8 = (("onnx_int8", "onnxruntime"), ("ncnn_int8_param", "ncnn"), ("mnn_int8", "mnn"))


def _verify(model: NanoDet, tmp: Path, meta: ExportMeta, options: ExportOptions) -> dict:
    """The same inputs through torch and every exported model (verify.py); int8 models on
    held-out images; with ``--data``, the val mAP of every artifact."""
    reference = TorchBackend(model, meta.input_hw, meta.output_layout, meta.normalize_folded)
    static_hw = None if {"height", "width"} <= set(meta.dynamic_axes) else meta.input_hw
    inputs = verification_inputs(meta, options.images_dir, static_hw)
    opened: dict[str, Backend] = {}
    try:
        for key, name, precision in _VERIFIED:
            if key in meta.files:
                precision = precision or meta.precision["ncnn"]
                opened[f"{name}_{precision}"] = open_backend(tmp, name, precision=precision)
        settings = PostprocessSettings()
        checks = verify_backends(reference, opened, _precisions(opened), inputs, settings)
        int8 = {f"{name}_int8": open_backend(tmp, name, precision="int8")
                for key, name in _VERIFIED_INT8 if key in meta.files}  # fmt: skip
        opened.update(int8)
        if int8:
            held_out = _held_out_inputs(meta, options, static_hw)
            checks += verify_backends(reference, int8, _precisions(int8), held_out, settings)
        report = verify_report(checks, inputs, meta, settings)
        if options.data is not None:
            report["map"] = _maps(reference, opened, options.data)
    finally:
        for backend in opened.values():
            backend.close()
    return report


def _precisions(backends: dict[str, Backend]) -> dict[str, str]:
    return {name: name.rsplit("_", 1)[1] for name in backends}


def _held_out_inputs(
    meta: ExportMeta, options: ExportOptions, static_hw: tuple[int, int] | None
) -> list[VerifyInput]:
    """Images never calibrated on: the held-out part of ``--calib``, else ``--images``."""
    calib = int8_step.calibration_split(options.calib, options.calib_images)
    if calib.held_out:
        return _image_inputs(calib.held_out, meta, static_hw)
    if options.images_dir is not None:
        return verification_inputs(meta, options.images_dir, static_hw)
    log.warning("int8 check on calibration images: --calib has too few images to hold some out")
    return _image_inputs(calib.calibration[:16], meta, static_hw)


def _image_inputs(
    paths: list[Path], meta: ExportMeta, static_hw: tuple[int, int] | None
) -> list[VerifyInput]:
    with tempfile.TemporaryDirectory(prefix="held-out-") as folder:
        for path in paths:
            (Path(folder) / path.name).symlink_to(path.resolve())
        return verification_inputs(meta, Path(folder), static_hw)


def _maps(reference: Backend, opened: dict[str, Backend], data: Path) -> dict[str, dict]:
    """COCO mAP and AP50 of every artifact on the data's val split (deployment path)."""
    maps = {}
    for name, backend in {"torch_fp32": reference, **opened}.items():
        result = evaluate_backend(backend, data)
        maps[name] = {"map": result.map, "ap50": result.ap50}
    return maps


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
        if check["precision"] == "int8":
            parts.append(f"{name} {verdict} (agreement {check['agreement']:.0%})")
            continue
        parts.append(
            f"{name} {verdict} (scores {check['max_score_diff']:.1e}, "
            f"distances {check['max_dist_px_diff']:.1e} px)"
        )
    return f"{len(report['inputs'])} inputs: " + ", ".join(parts)

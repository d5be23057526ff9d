"""meta.json: the contract between the exporter and every runtime.

An export folder holds the model files and a ``meta.json`` that says everything a runtime (or
an app) needs: class names, strides, center offset, reg_max, the ``preprocess`` block (geometry,
sampler, input size, size multiple, mean, std, colour order, folded normalization, pad value,
how boxes map back: ``structures.PreprocessSpec``), the output layout, and the file and blob
names of every format and precision. Runtimes read only this file. Torch-free.

Format 1 (before the preprocess block) is still read: its input size, mean/std, colour order
and folded-normalization keys become the block, with the ``warp`` sampler it was made with.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from nanodet_deploy.fileio import write_json_atomic
from nanodet_deploy.structures import PreprocessSpec

META_FILE = "meta.json"
META_FORMAT = 2
# format 1 kept these at the top level; format 2 holds them in the "preprocess" block
_V1_PREPROCESS_KEYS = (
    "input_hw", "size_multiple", "mean_bgr", "std_bgr", "color_order", "normalize_folded",
)  # fmt: skip
OUTPUT_DECODED = "decoded"  # (N, P, C + 4): sigmoid scores, distances l, t, r, b in stride units
OUTPUT_RAW = "raw"  # (N, P, C + 4 * (reg_max + 1)): sigmoid scores, raw distribution logits
OUTPUT_LAYOUTS = (OUTPUT_DECODED, OUTPUT_RAW)


class MetaError(ValueError):
    """meta.json is missing, malformed or does not match the model files."""


@dataclass(frozen=True)
class ExportMeta:
    model_name: str
    class_names: tuple[str, ...]
    strides: tuple[int, ...]
    center_offset: float
    reg_max: int
    preprocess: PreprocessSpec  # its input_hw is the size the model was exported (verified) at
    output_layout: str = OUTPUT_DECODED
    dynamic_axes: tuple[str, ...] = ()  # for ONNX: subset of ("batch", "height", "width")
    opset: int | None = None
    precision: dict[str, str] = field(default_factory=dict)  # {"onnx": "fp32", "ncnn": "fp16"}
    files: dict[str, str] = field(default_factory=dict)  # {"onnx": "model.onnx", "ncnn_param": ...}
    input_name: str = "images"
    output_name: str = "output"
    ncnn_input_name: str = "in0"
    ncnn_output_name: str = "out0"
    nanodet_deploy_version: str = ""
    checkpoint_sha256: str | None = None
    random_weights: bool = False
    macs: int | None = None  # conv multiply-accumulates at input_hw (models/stats.py)
    params: int | None = None  # parameters of the exported (inference) model
    int8: dict | None = None  # how the int8 files were calibrated and what stayed in float
    format_version: int = META_FORMAT

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.preprocess.input_hw

    @property
    def size_multiple(self) -> int:
        """Input H and W must be multiples of this (the deepest backbone stride, 32)."""
        return self.preprocess.size_multiple

    @property
    def mean_bgr(self) -> tuple[float, float, float]:
        return self.preprocess.mean_bgr

    @property
    def std_bgr(self) -> tuple[float, float, float]:
        return self.preprocess.std_bgr

    @property
    def color_order(self) -> str:
        return self.preprocess.color_order

    @property
    def normalize_folded(self) -> bool:
        return self.preprocess.normalize_folded

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def output_channels(self) -> int:
        if self.output_layout == OUTPUT_RAW:
            return self.num_classes + 4 * (self.reg_max + 1)
        return self.num_classes + 4

    def num_points(self, input_hw: tuple[int, int]) -> int:
        h, w = input_hw
        return sum(-(-h // s) * -(-w // s) for s in self.strides)

    def check_input_hw(self, input_hw: tuple[int, int]) -> None:
        m = self.size_multiple
        h, w = input_hw
        if h <= 0 or w <= 0 or h % m or w % m:
            raise ValueError(
                f"input size {h}x{w} (HxW) is not a positive multiple of {m} (the deepest "
                f"backbone stride of {self.model_name})"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("class_names", "strides", "dynamic_axes"):
            d[key] = list(d[key])
        d["preprocess"] = self.preprocess.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict, source: str = META_FILE) -> ExportMeta:
        version = data.get("format_version", META_FORMAT)
        if version > META_FORMAT:
            raise MetaError(
                f"{source}: format_version {version} is newer than this "
                f"nanodet-deploy understands ({META_FORMAT}); upgrade nanodet-deploy"
            )
        d = _upgrade_v1(dict(data)) if version < 2 else dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise MetaError(f"{source}: unknown keys {unknown}")
        required = [
            "model_name",
            "class_names",
            "strides",
            "center_offset",
            "reg_max",
            "preprocess",
        ]
        missing = [k for k in required if k not in d]
        if missing:
            raise MetaError(f"{source}: missing keys {missing}")
        for key in ("class_names", "strides", "dynamic_axes"):
            if key in d:
                d[key] = tuple(d[key])
        d["strides"] = tuple(int(s) for s in d["strides"])
        d["format_version"] = META_FORMAT
        try:
            d["preprocess"] = PreprocessSpec.from_dict(d["preprocess"])
        except (ValueError, TypeError) as exc:
            raise MetaError(f"{source}: preprocess block: {exc}") from exc
        meta = cls(**d)
        if meta.output_layout not in OUTPUT_LAYOUTS:
            raise MetaError(f"{source}: output_layout must be one of {OUTPUT_LAYOUTS}")
        if not meta.strides or not meta.class_names:
            raise MetaError(f"{source}: strides and class_names must be non-empty")
        return meta


def _upgrade_v1(d: dict) -> dict:
    """Format 1 -> 2: the top-level preprocessing keys become the block (sampler: warp)."""
    missing = [k for k in ("input_hw", "size_multiple", "mean_bgr", "std_bgr") if k not in d]
    if missing:
        return d  # reported as missing "preprocess" by the caller
    block = {k: d.pop(k) for k in _V1_PREPROCESS_KEYS if k in d}
    d["preprocess"] = {**block, "geometry": "pad", "sampler": "warp"}
    return d


def read_meta(export_dir: str | os.PathLike) -> ExportMeta:
    """Read ``meta.json`` from an export folder, with a clear error naming the file."""
    path = Path(export_dir) / META_FILE
    if not Path(export_dir).is_dir():
        raise MetaError(f"{export_dir}: not an export folder (no such directory)")
    if not path.is_file():
        raise MetaError(
            f"{path}: missing; an export folder needs the meta.json written by nanodet-export"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetaError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise MetaError(f"{path}: expected a JSON object")
    try:
        return ExportMeta.from_dict(data, source=str(path))
    except TypeError as exc:
        raise MetaError(f"{path}: {exc}") from exc


def write_meta(export_dir: str | os.PathLike, meta: ExportMeta) -> Path:
    path = Path(export_dir) / META_FILE
    write_json_atomic(path, meta.to_dict())
    return path

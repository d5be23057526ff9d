"""ONNX -> NCNN with the pnnx executable, made size-independent, then loaded once with ncnn.

pnnx is run as a subprocess (``pnnx.EXEC_PATH``): the Python wrapper drops ``fp16`` and ignores
the exit code. It runs in a scratch folder that is deleted afterwards, so its intermediates
(``*.pnnx.*``, ``*_pnnx.py``, ``*_ncnn.py``, ``*.pnnxsim.onnx``) never reach the export folder.

pnnx converts a static ONNX and writes the concrete shapes it inferred into every ``Reshape``
(``0=2704 1=80`` for a 52x52 level), even where the ONNX says ``-1``. The export wrapper's only
reshapes flatten the spatial axis of each level, so :func:`free_spatial_reshapes` puts the
``-1`` back for the innermost axis when it equals a level's ``H * W`` at the export size, and
:func:`check_size_free` refuses a param file with any other size-bearing layer. ShuffleNetV2's
reshape-transpose-reshape is fused into ``ShuffleChannel`` (size-free) only for a static ONNX,
which is why the static route plus this fix is used rather than a dynamic-shape ONNX.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ncnn
import pnnx

from nanodet_deploy.exporters.errors import ExportError

log = logging.getLogger(__name__)

NCNN_PARAM = "model.ncnn.param"
NCNN_BIN = "model.ncnn.bin"
PNNX_TIMEOUT_S = 600
# Layer types whose parameters never hold an input size (Interp is checked for scale mode).
SIZE_FREE_LAYERS: frozenset[str] = frozenset(
    {
        "Input", "Convolution", "ConvolutionDepthWise", "Pooling", "ShuffleChannel",
        "ReLU", "Clip", "HardSwish", "ELU", "SELU", "Sigmoid", "Swish", "Softmax",
        "BinaryOp", "Eltwise", "Concat", "Slice", "Split", "Permute", "Interp", "Reshape",
        "MemoryData",
    }
)  # fmt: skip


@dataclass(frozen=True)
class NcnnExportInfo:
    param: Path
    bin: Path
    fp16: bool
    input_name: str
    output_name: str
    layer_types: tuple[str, ...]
    pnnx_log: str


def pnnx_executable() -> Path:
    """Path of the pnnx executable shipped by the ``pnnx`` pip package."""
    path = Path(pnnx.EXEC_PATH)
    if not path.is_file():
        raise ExportError(f"pnnx executable not found at {path}: reinstall with pip install pnnx")
    return path


def convert_onnx_to_ncnn(
    onnx_path: Path,
    out_dir: Path,
    level_hw: list[tuple[int, int]],
    fp16: bool = True,
) -> NcnnExportInfo:
    """Convert a static ONNX to ``out_dir/model.ncnn.{param,bin}`` that runs at any size.

    ``level_hw``: the (H, W) of every output level at the export size (to free the reshapes).
    """
    exe = pnnx_executable()
    with tempfile.TemporaryDirectory(prefix="pnnx-", dir=out_dir) as scratch:
        work = Path(scratch)
        src = work / "model.onnx"
        shutil.copyfile(onnx_path, src)
        log_text = _run_pnnx(exe, src, fp16)
        param, weights = work / NCNN_PARAM, work / NCNN_BIN
        if not param.is_file() or not weights.is_file():
            raise ExportError(f"pnnx wrote no {NCNN_PARAM} / {NCNN_BIN}:\n{_tail(log_text)}")
        text = free_spatial_reshapes(param.read_text(), {h * w for h, w in level_hw})
        layer_types = check_size_free(text)
        out_param, out_bin = out_dir / NCNN_PARAM, out_dir / NCNN_BIN
        out_param.write_text(text)
        shutil.move(str(weights), out_bin)
    input_name, output_name = load_check(out_param, out_bin)
    return NcnnExportInfo(out_param, out_bin, fp16, input_name, output_name, layer_types, log_text)


def _run_pnnx(exe: Path, onnx_path: Path, fp16: bool) -> str:
    cmd = [str(exe), onnx_path.name, f"fp16={1 if fp16 else 0}"]
    log.debug("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(
            cmd,
            cwd=onnx_path.parent,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=PNNX_TIMEOUT_S,
            check=False,
        )
    except OSError as exc:
        raise ExportError(f"cannot run pnnx ({exe}): {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"pnnx did not finish in {PNNX_TIMEOUT_S} s") from exc
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        raise ExportError(f"pnnx failed with exit code {proc.returncode}:\n{_tail(output)}")
    return output


def _tail(text: str, lines: int = 40) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(f"  | {line}" for line in kept) if kept else "  | (no output)"


def _layer_lines(text: str) -> list[list[str]]:
    """Token lists of the layer lines of an ncnn param text (magic and count lines skipped)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "7767517":
        raise ExportError("not an ncnn param file (magic 7767517 missing)")
    return [line.split() for line in lines[2:] if line.strip()]


def _params(tokens: list[str]) -> dict[str, str]:
    n_in, n_out = int(tokens[2]), int(tokens[3])
    pairs = tokens[4 + n_in + n_out :]
    return dict(p.split("=", 1) for p in pairs)


def free_spatial_reshapes(param_text: str, spatial_sizes: set[int]) -> str:
    """Set the innermost axis (``0=``) of every Reshape that flattens a level's H*W to -1."""
    lines = param_text.splitlines()
    out = lines[:2]
    for line in lines[2:]:
        tokens = line.split()
        if tokens and tokens[0] == "Reshape":
            n_io = 4 + int(tokens[2]) + int(tokens[3])
            head, pairs = tokens[:n_io], tokens[n_io:]
            pairs = [
                "0=-1" if p.startswith("0=") and int(p[2:]) in spatial_sizes else p for p in pairs
            ]
            line = " ".join(head + pairs)
        out.append(line)
    return "\n".join(out) + "\n"


def check_size_free(param_text: str) -> tuple[str, ...]:
    """Layer types of the param; ExportError if a layer could hold the export input size."""
    types: set[str] = set()
    for tokens in _layer_lines(param_text):
        kind, name, params = tokens[0], tokens[1], _params(tokens)
        types.add(kind)
        if kind not in SIZE_FREE_LAYERS:
            raise ExportError(
                f"ncnn layer {name} ({kind}) is not known to be input-size independent; the "
                f"model might only run at the export size (known: {sorted(SIZE_FREE_LAYERS)})"
            )
        if kind == "Reshape" and (params.get("0") != "-1" or "6" in params):
            raise ExportError(f"ncnn layer {name}: a Reshape with a fixed size ({tokens[4:]})")
        if kind == "Interp" and (int(params.get("3", 0)) or int(params.get("4", 0))):
            raise ExportError(f"ncnn layer {name}: Interp to a fixed output size ({tokens[4:]})")
    return tuple(sorted(types))


def load_check(param: Path, weights: Path) -> tuple[str, str]:
    """Load the model once with ncnn; return its (input blob, output blob) names."""
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    try:
        if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
            raise ExportError(f"ncnn cannot load the converted model {param} / {weights}")
        inputs, outputs = list(net.input_names()), list(net.output_names())
    finally:
        net.clear()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(f"expected one input and one output blob, got {inputs} -> {outputs}")
    return inputs[0], outputs[0]

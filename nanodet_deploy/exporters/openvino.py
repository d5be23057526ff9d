"""ONNX -> OpenVINO IR (``.xml`` graph + ``.bin`` fp32 weights), checked by reading it back.

``openvino.convert_model`` reads the ONNX with OpenVINO's ONNX frontend and applies its offline
graph transformations (constant folding, shape-subgraph simplification: the IR of the bundled
model has a third of the XML of a ``Core.read_model`` of the same ONNX; compiled, both ran at the
same speed here, so the IR saves load time and is what apps without an ONNX frontend read).
``save_model`` is called
with ``compress_to_fp16=False``: its default stores fp16 weights, and the runtime precision is a
compile option of the OpenVINO backend, not a property of the file. Dynamic ONNX axes stay
dynamic (``[?, 3, ?, ?]``).

Telemetry: ``import openvino`` (through ``openvino.tools.ovc``) and ``convert_model`` send usage
events to Intel through ``openvino-telemetry`` when that package is installed, unless the user
opted out (``opt_in_out --opt_out``) or ``CI=true`` is set. That is OpenVINO's behaviour, not
ours; it is noted here because an exporter run triggers it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import openvino as ov

from nanodet_deploy.exporters.errors import ExportError

log = logging.getLogger(__name__)

OPENVINO_XML = "model.openvino.xml"
OPENVINO_BIN = "model.openvino.bin"  # save_model writes it beside the .xml, same stem


def convert_onnx_to_openvino(
    onnx_path: str | os.PathLike, out_dir: str | os.PathLike
) -> tuple[Path, Path]:
    """Write ``OPENVINO_XML`` / ``OPENVINO_BIN`` (fp32) for ``onnx_path`` into ``out_dir``."""
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path}: no such ONNX file to convert to OpenVINO")
    xml, weights = out_dir / OPENVINO_XML, out_dir / OPENVINO_BIN
    try:
        model = ov.convert_model(str(onnx_path))
        ov.save_model(model, str(xml), compress_to_fp16=False)
    except Exception as exc:  # OpenVINO raises its own RuntimeError / OpConversionFailure types
        raise ExportError(f"OpenVINO cannot convert {onnx_path}: {exc}") from exc
    _check_ir(ov.Core(), xml, weights)
    log.debug("OpenVINO IR %s (%d bytes of weights)", xml, weights.stat().st_size)
    return xml, weights


def _check_ir(core, xml: Path, weights: Path) -> None:
    """Read the IR back: one input and one output, weights file present."""
    if not xml.is_file() or not weights.is_file():
        raise ExportError(f"OpenVINO save_model wrote no {xml.name} / {weights.name}")
    try:
        model = core.read_model(str(xml), str(weights))
    except Exception as exc:
        raise ExportError(f"OpenVINO cannot read back {xml}: {exc}") from exc
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(
            f"{xml}: expected one input and one output, got {len(model.inputs)} -> "
            f"{len(model.outputs)}"
        )


__all__ = ["OPENVINO_BIN", "OPENVINO_XML", "convert_onnx_to_openvino"]

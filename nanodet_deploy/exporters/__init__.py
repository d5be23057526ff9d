"""Export a NanoDet to ONNX (onnxruntime) and NCNN (pnnx), with meta.json and a parity check.

Modules: ``onnx`` (torch -> ONNX + onnxsim + op allow-list), ``ncnn`` (ONNX -> NCNN with the pnnx
executable), ``verify`` (the same inputs through torch, onnxruntime and ncnn), ``pipeline``
(the whole export built in a temp folder and moved into place when complete). Heavy
dependencies (torch, onnx, onnxsim, pnnx, ncnn) are imported inside the functions that use them.
"""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export step failed; the message says which step and why (tool output included)."""


__all__ = ["ExportError"]

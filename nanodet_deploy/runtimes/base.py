"""The one small protocol every inference backend implements. NumPy only, no torch.

A backend takes the preprocessed ``(1, 3, H, W)`` float32 tensor and returns the model output
with the batch axis dropped: ``(P, K)`` float32 where ``K = C + 4`` for decoded exports
(``meta.output_layout == "decoded"``) or ``C + 4 * (reg_max + 1)`` for raw ones. Everything
before (preprocess) and after (postprocess) is shared NumPy code.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from nanodet_deploy.artifacts import ExportMeta

BACKENDS = ("torch", "onnxruntime", "ncnn")


class BackendUnavailable(ImportError):
    """The package a backend needs is not installed; the message names it."""


@runtime_checkable
class Backend(Protocol):
    name: str  # one of BACKENDS
    meta: ExportMeta  # what the model expects and produces

    def run(self, input_nchw: np.ndarray) -> np.ndarray:
        """(1, 3, H, W) float32 -> (P, K) float32."""
        ...

    def close(self) -> None:
        """Release the session / net (and its threads)."""
        ...


class BorrowedBackend:
    """A backend lent to a Detector that must not close it (the lender closes it)."""

    def __init__(self, backend: Backend) -> None:
        self.name, self.meta, self.run = backend.name, backend.meta, backend.run

    def close(self) -> None:
        pass

"""torch backend: a checkpoint (ours or official) or an export's weights through the export wrapper.

Runs exactly the module that is exported, so its output layout and numbers are the reference
for the exported models (``exporters/verify.py``). Imported only through
``runtimes.registry`` (or by torch-side code), because it imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from nanodet_deploy.artifacts import OUTPUT_DECODED, MetaError, read_meta
from nanodet_deploy.checkpoint import load_model, sha256_file
from nanodet_deploy.config import zoo_config
from nanodet_deploy.models import NanoDet, build_model
from nanodet_deploy.models.export import ExportWrapper, export_meta
from nanodet_deploy.runtimes.base import check_input, check_output


class TorchBackend:
    name = "torch"
    static_hw = None  # any multiple of the deepest stride

    def __init__(
        self,
        model: NanoDet,
        input_hw: tuple[int, int] | None = None,
        output_layout: str = OUTPUT_DECODED,
        fold_normalize: bool = False,
        threads: int | None = None,
        checkpoint_sha256: str | None = None,
        random_weights: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        """``model``: a NanoDet (eval mode is set here), run on ``device`` (a torch device;
        the model is moved there). ``threads`` sets torch's (global) pool."""
        cfg = model.cfg
        self.device = device
        self.wrapper = ExportWrapper(model.eval(), output_layout, fold_normalize).to(device).eval()
        self.meta = export_meta(
            cfg, input_hw or cfg.input_hw, output_layout, fold_normalize,
            checkpoint_sha256=checkpoint_sha256, random_weights=random_weights,
        )  # fmt: skip
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.settings = {"num_threads": torch.get_num_threads()}

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        model_name: str | None = None,
        output_layout: str = OUTPUT_DECODED,
        threads: int | None = None,
    ) -> TorchBackend:
        """Our or an official checkpoint; ``model_name`` (zoo) picks the architecture to load into."""
        config = zoo_config(model_name) if model_name else None
        model, _ = load_model(Path(path), config=config)
        return cls(
            model, output_layout=output_layout, threads=threads,
            checkpoint_sha256=sha256_file(path),
        )  # fmt: skip

    @classmethod
    def from_export(cls, export_dir: str | os.PathLike, threads: int | None = None) -> TorchBackend:
        """The weights an export folder carries (``model.pth``), run exactly as exported: same
        output layout, preprocess block and input size as its ONNX / NCNN files."""
        meta = read_meta(export_dir)
        name = meta.files.get("checkpoint")
        path = Path(export_dir) / name if name else None
        if path is None or not path.is_file():
            raise MetaError(
                f"{export_dir}: no torch weights in this export (meta.json files: {meta.files}); "
                f"re-export with this version of nanodet-export, or give the checkpoint"
            )
        model, _ = load_model(path)
        backend = cls(
            model, input_hw=meta.input_hw, output_layout=meta.output_layout,
            fold_normalize=meta.normalize_folded, threads=threads,
            checkpoint_sha256=meta.checkpoint_sha256, random_weights=meta.random_weights,
        )  # fmt: skip
        backend.meta = meta
        return backend

    @classmethod
    def from_zoo(
        cls,
        model_name: str,
        weights: str | os.PathLike | None = None,
        output_layout: str = OUTPUT_DECODED,
        threads: int | None = None,
    ) -> TorchBackend:
        """A zoo model with ``weights`` loaded, or random weights when None."""
        if weights is not None:
            return cls.from_checkpoint(weights, model_name, output_layout, threads)
        model = build_model(zoo_config(model_name))
        return cls(model, output_layout=output_layout, threads=threads, random_weights=True)

    def run(self, input_nchw: np.ndarray) -> np.ndarray:
        input_hw = check_input(self.meta, input_nchw)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(input_nchw)).to(self.device)
            out = self.wrapper(x).float().cpu()
        return check_output(self.meta, out.numpy(), input_hw, "torch")

    def close(self) -> None:
        self.wrapper = None

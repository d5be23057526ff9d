"""ncnn backend: ``model.ncnn.param/.bin`` of an export folder. Never imports torch.

The net options are set before ``load_param`` (ncnn reads them while loading): CPU only
(``use_vulkan_compute=False``), ``num_threads``, light mode, and the fp16 options. Precision
follows the export unless asked otherwise: an fp16 export (fp16 weight storage) runs with ncnn's
fp16 defaults (storage, packing and arithmetic where the CPU has them: ARMv8.2+), an fp32
export runs entirely in fp32. The output ``(1, P, K)`` comes back as a 2-D Mat ``(P, K)``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from nanodet_deploy.artifacts import MetaError, read_meta
from nanodet_deploy.runtimes import check_input, check_output, model_file
from nanodet_deploy.runtimes.base import BackendUnavailable

log = logging.getLogger(__name__)


class NcnnBackend:
    name = "ncnn"

    def __init__(
        self,
        export_dir: str | os.PathLike,
        threads: int = 1,
        fp16_arithmetic: bool | None = None,
        light_mode: bool = True,
        precision: str | None = None,
    ) -> None:
        try:
            import ncnn
        except ImportError as exc:
            raise BackendUnavailable(
                "backend ncnn needs the ncnn package: pip install ncnn"
            ) from exc
        self.export_dir = Path(export_dir)
        self.meta = read_meta(self.export_dir)
        param = model_file(self.export_dir, self.meta, "ncnn_param")
        weights = model_file(self.export_dir, self.meta, "ncnn_bin")
        precision = precision or self.meta.precision.get("ncnn", "fp16")
        self.net = ncnn.Net()
        self.settings = self._configure(
            self.net.opt, threads, precision, fp16_arithmetic, light_mode
        )
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise MetaError(f"{self.export_dir}: ncnn cannot load {param.name} / {weights.name}")
        self._mat = ncnn.Mat
        self._check_blobs(param)
        self._dry_run()

    @staticmethod
    def _configure(
        opt, threads: int, precision: str, fp16_arithmetic: bool | None, light_mode: bool
    ) -> dict:
        fp16 = precision == "fp16"
        opt.use_vulkan_compute = False
        opt.num_threads = int(threads)
        opt.lightmode = bool(light_mode)
        opt.use_fp16_storage = opt.use_fp16_storage and fp16
        opt.use_fp16_packed = opt.use_fp16_packed and fp16
        if fp16_arithmetic is None:
            opt.use_fp16_arithmetic = opt.use_fp16_arithmetic and fp16
        else:
            opt.use_fp16_arithmetic = bool(fp16_arithmetic)
        return {
            "num_threads": opt.num_threads,
            "lightmode": opt.lightmode,
            "use_fp16_storage": opt.use_fp16_storage,
            "use_fp16_packed": opt.use_fp16_packed,
            "use_fp16_arithmetic": opt.use_fp16_arithmetic,
        }

    def _check_blobs(self, param: Path) -> None:
        inputs, outputs = list(self.net.input_names()), list(self.net.output_names())
        m = self.meta
        if m.ncnn_input_name not in inputs or m.ncnn_output_name not in outputs:
            raise MetaError(
                f"{param}: blobs {inputs} -> {outputs}, but meta.json names "
                f"{m.ncnn_input_name!r} -> {m.ncnn_output_name!r}"
            )

    def _dry_run(self) -> None:
        """Run the smallest valid input once, so a meta.json that does not fit fails here."""
        m = self.meta.size_multiple
        self.run(np.zeros((1, 3, m, m), dtype=np.float32))

    def run(self, input_nchw: np.ndarray) -> np.ndarray:
        input_hw = check_input(self.meta, input_nchw)
        chw = np.ascontiguousarray(input_nchw[0])  # ncnn.Mat wraps it: keep it referenced
        ex = self.net.create_extractor()
        ex.input(self.meta.ncnn_input_name, self._mat(chw))
        ret, out = ex.extract(self.meta.ncnn_output_name)
        if ret != 0:
            raise RuntimeError(f"ncnn extract of {self.meta.ncnn_output_name!r} failed ({ret})")
        return check_output(self.meta, np.array(out), input_hw, "ncnn")

    def close(self) -> None:
        if self.net is not None:
            self.net.clear()
            self.net = None

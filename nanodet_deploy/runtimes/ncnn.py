"""ncnn backend: ``model.ncnn.param/.bin`` (or the int8 pair) of an export folder. No torch.

The net options are set before ``load_param`` (ncnn reads them while loading): CPU only
(``use_vulkan_compute=False``), ``num_threads``, light mode, and the fp16 / int8 options.
Precision follows the export unless asked otherwise: an fp16 export (fp16 weight storage) runs
with ncnn's fp16 defaults (storage, packing and arithmetic where the CPU has them: ARMv8.2+,
x86 with AVX512-FP16), an fp32 export runs entirely in fp32, ``int8`` loads
``model.int8.ncnn.param/.bin`` (quantized convolutions run ncnn's int8 kernels; the layers left
in float run in fp32). The output ``(1, P, K)`` comes back as a 2-D Mat ``(P, K)``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ncnn
import numpy as np

from nanodet_deploy.artifacts import MetaError, read_meta
from nanodet_deploy.runtimes.base import check_input, check_output, model_file

log = logging.getLogger(__name__)


class NcnnBackend:
    name = "ncnn"
    static_hw = None  # any multiple of the deepest stride

    def __init__(
        self,
        export_dir: str | os.PathLike,
        threads: int = 1,
        precision: str | None = None,
        fp16_arithmetic: bool | None = None,
        light_mode: bool = True,
        big_cores: bool = False,
    ) -> None:
        """``big_cores``: on a big.LITTLE CPU run on the big cores only (ncnn's powersave 2,
        a process-wide setting); elsewhere, and when False, ncnn's default (all cores)."""
        powersave = _big_cores_powersave() if big_cores else None
        self.export_dir = Path(export_dir)
        self.meta = read_meta(self.export_dir)
        precision = precision or self.meta.precision.get("ncnn", "fp16")
        prefix = "ncnn_int8" if precision == "int8" else "ncnn"
        param = model_file(self.export_dir, self.meta, f"{prefix}_param")
        weights = model_file(self.export_dir, self.meta, f"{prefix}_bin")
        self.net = ncnn.Net()
        self.settings = self._configure(
            self.net.opt, threads, precision, fp16_arithmetic, light_mode
        )
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise MetaError(f"{self.export_dir}: ncnn cannot load {param.name} / {weights.name}")
        self.settings["model_file"] = param.name
        self.settings["powersave"] = powersave
        self._check_blobs(param)
        self._dry_run()

    @staticmethod
    def _configure(
        opt, threads: int, precision: str, fp16_arithmetic: bool | None, light_mode: bool
    ) -> dict:
        fp16 = precision == "fp16"
        opt.use_vulkan_compute = False
        opt.use_int8_inference = precision == "int8"
        opt.num_threads = int(threads)
        opt.lightmode = bool(light_mode)
        opt.use_fp16_storage = opt.use_fp16_storage and fp16
        opt.use_fp16_packed = opt.use_fp16_packed and fp16
        if fp16_arithmetic is None:
            opt.use_fp16_arithmetic = opt.use_fp16_arithmetic and fp16
        else:
            opt.use_fp16_arithmetic = bool(fp16_arithmetic)
        return {
            "precision": precision,
            "num_threads": opt.num_threads,
            "use_int8_inference": opt.use_int8_inference,
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
        ex.input(self.meta.ncnn_input_name, ncnn.Mat(chw))
        ret, out = ex.extract(self.meta.ncnn_output_name)
        if ret != 0:
            raise RuntimeError(f"ncnn extract of {self.meta.ncnn_output_name!r} failed ({ret})")
        return check_output(self.meta, np.array(out), input_hw, "ncnn")

    def close(self) -> None:
        if self.net is not None:
            self.net.clear()
            self.net = None


def _big_cores_powersave() -> int:
    """Set and return ncnn's powersave mode: 2 (big cores) on big.LITTLE CPUs, else 0 (all)."""
    big, total = ncnn.get_big_cpu_count(), ncnn.get_cpu_count()
    mode = 2 if 0 < big < total else 0
    ncnn.set_cpu_powersave(mode)
    return mode

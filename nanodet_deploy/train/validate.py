"""Validation during training: the model in this process through the deployment path."""

from __future__ import annotations

import torch

from nanodet_deploy.detector import Detector
from nanodet_deploy.evaluation import EVAL_SETTINGS, DetectFn
from nanodet_deploy.models.detector import NanoDet
from nanodet_deploy.runtimes.torch_backend import TorchBackend


def torch_detect_fn(
    model: NanoDet, input_hw: tuple[int, int] | None = None, device: str | torch.device = "cpu"
) -> DetectFn:
    """Detect function of a NanoDet in this process (on ``device``): the ``Detector`` around
    the export wrapper, i.e. the exported module's output (sigmoid scores, softmax-integral
    distances) through the shared preprocess (the export's default preprocess block) and
    postprocess, with :data:`EVAL_SETTINGS`.

    The model is switched to eval mode and must not be trained while this is used.
    """
    hw = tuple(input_hw or model.cfg.input_hw)
    backend = TorchBackend(model, input_hw=hw, device=device)
    return Detector(backend, input_hw=hw, **EVAL_SETTINGS).detect

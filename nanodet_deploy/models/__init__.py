"""NanoDet model family in PyTorch, key-compatible with official NanoDet checkpoints."""

from nanodet_deploy.models.detector import AUX_PREFIXES, NanoDet, build_model
from nanodet_deploy.models.zoo import ZOO, zoo_config, zoo_names

__all__ = ["AUX_PREFIXES", "ZOO", "NanoDet", "build_model", "zoo_config", "zoo_names"]

"""NanoDet model family in PyTorch, key-compatible with official NanoDet checkpoints.

Configurations (``ModelConfig``) and the model zoo live in ``nanodet_deploy.config``.
"""

from nanodet_deploy.models.detector import AUX_PREFIXES, NanoDet, build_model

__all__ = ["AUX_PREFIXES", "NanoDet", "build_model"]

"""Training: datasets, augmentation, label assignment, losses, the trainer and COCO evaluation.

``trainer.fit`` is the entry point (``nanodet-deploy train``). ``datasets`` and ``evaluate``
import no torch (the eval command serves export folders on torch-free devices); the rest does.
"""

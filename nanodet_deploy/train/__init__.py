"""Training: augmentation, label assignment, losses, EMA, the trainer. Needs torch.

``trainer.fit`` is the entry point (``nanodet-deploy train``). Datasets (``nanodet_deploy.datasets``)
and COCO evaluation (``nanodet_deploy.evaluation``) are torch-free and live outside this package,
because export folders are scored on devices without torch.
"""

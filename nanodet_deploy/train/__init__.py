"""Training: datasets, augmentation, label assignment, losses (and, later, the trainer).

Imports torch; the runtime side of the package never imports this subpackage.
"""

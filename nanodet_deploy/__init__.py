"""nanodet-deploy: train, export and run NanoDet detectors on mobile CPUs."""

__version__ = "0.1.0"

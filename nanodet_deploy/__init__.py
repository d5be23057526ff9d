"""nanodet-deploy: train, export and run NanoDet detectors on mobile CPUs.

    from nanodet_deploy import Detector
    detections = Detector("exports/nanodet-m_320").detect("street.jpg")

Importing this package loads NumPy, OpenCV and ncnn, never torch or onnxruntime: a Raspberry
Pi with the runtime dependencies runs ``Detector``. ``export`` and ``train`` (torch),
``evaluate`` (pycocotools) and ``benchmark`` import what they need when called (``api.py``).
"""

__version__ = "0.2.0"

from nanodet_deploy.api import benchmark, evaluate, export, train
from nanodet_deploy.detector import Detector, FrameDetections
from nanodet_deploy.structures import Detections, PreprocessSpec

__all__ = [
    "Detections",
    "Detector",
    "FrameDetections",
    "PreprocessSpec",
    "__version__",
    "benchmark",
    "evaluate",
    "export",
    "train",
]

"""Optional export formats: the one seam where their converter packages get imported.

MNN (``exporters/mnn.py``, runs the MNN wheel's tools) and OpenVINO (``exporters/openvino.py``,
imports ``openvino``) are optional extras; ``converter("mnn")`` imports the module only when an
export asks for that format and turns a missing package into an ``ExportError`` naming it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from nanodet_deploy.exporters.errors import ExportError

# format -> (module, the import name of its package, the pip package)
OPTIONAL_FORMATS: dict[str, tuple[str, str, str]] = {
    "mnn": ("nanodet_deploy.exporters.mnn", "MNN", "MNN"),
    "openvino": ("nanodet_deploy.exporters.openvino", "openvino", "openvino"),
}


def converter(fmt: str) -> ModuleType:
    """The converter module of an optional format; ExportError when its package is missing."""
    module_name, import_name, pip_name = OPTIONAL_FORMATS[fmt]
    if importlib.util.find_spec(import_name) is None:
        raise ExportError(f"--formats {fmt} needs the {pip_name} package: pip install {pip_name}")
    return importlib.import_module(module_name)

"""The runtime side works without torch: detection with onnxruntime and ncnn, and the CLI.

Design: a subprocess in which torch cannot be imported. ``detect_helpers.TORCH_BLOCKER``
installs a ``sys.meta_path`` finder, first in line, that raises ModuleNotFoundError for ``torch``
and every ``torch.*`` module, so the process behaves as on a Raspberry Pi without torch even
though torch is installed here. It runs before anything else:
- Python-level checks: the blocker is the start of the ``python -c`` program;
- the installed ``nanodet-deploy`` console script: the blocker is a ``sitecustomize.py`` in a
  folder put first on PYTHONPATH, which ``site`` imports at interpreter start-up (the test
  first proves it is active: ``import torch`` fails with the blocker's message).
Each subprocess also asserts that no ``torch`` module got into ``sys.modules``. Detections are
compared with the ones this (normal) process gets from the same export: they must be equal
(one thread, so both runs compute in the same order).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from detect_helpers import TORCH_BLOCKER, coco_export

from nanodet_deploy.detector import Detector
from nanodet_deploy.preprocess import load_image

RUNTIME_MODULES = (
    "nanodet_deploy.preprocess",
    "nanodet_deploy.postprocess",
    "nanodet_deploy.runtimes",
    "nanodet_deploy.runtimes.ort",
    "nanodet_deploy.runtimes.ncnn",
    "nanodet_deploy.detector",
    "nanodet_deploy.detect",
    "nanodet_deploy.draw",
    "nanodet_deploy.cli.detect",
    "nanodet_deploy.cli",
)
NO_TORCH_CHECK = """
leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not leaked, f"torch modules imported: {leaked}"
"""
DETECT_PROGRAM = (
    TORCH_BLOCKER
    + """
import importlib
import json

try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the torch blocker is not active")
for module in MODULES:
    importlib.import_module(module)
from nanodet_deploy.preprocess import load_image
from nanodet_deploy.detector import Detector

export_dir, image_path = sys.argv[1], sys.argv[2]
image = load_image(image_path)
results = {}
for backend in ("onnxruntime", "ncnn"):
    with Detector(export_dir, backend, threads=1, score_thresh=0.05) as det:
        results[backend] = det.detect(image).to_records("raccoon-1.jpg")
"""
    + NO_TORCH_CHECK
    + "print(json.dumps(results))\n"
)


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory, reference_dir) -> Path:
    return coco_export(tmp_path_factory.getbasetemp(), reference_dir)


@pytest.fixture(scope="module")
def image_path(reference_dir) -> Path:
    return reference_dir / "images" / "raccoon-1.jpg"


@pytest.fixture(scope="module")
def expected(export_dir, image_path) -> dict:
    """Detections of this process, where torch is importable."""
    image = load_image(image_path)
    results = {}
    for backend in ("onnxruntime", "ncnn"):
        with Detector(export_dir, backend, threads=1, score_thresh=0.05) as det:
            results[backend] = det.detect(image).to_records("raccoon-1.jpg")
    assert results["onnxruntime"] and results["ncnn"]
    return results


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory) -> dict[str, str]:
    """Environment whose Python processes run TORCH_BLOCKER at start-up (sitecustomize)."""
    folder = tmp_path_factory.mktemp("torch_blocker")
    (folder / "sitecustomize.py").write_text(TORCH_BLOCKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
    return env


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = env if env is not None else dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=180)


def console_script() -> str:
    path = Path(sys.executable).parent / "nanodet-deploy"
    if not path.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    return str(path)


def test_detection_without_torch_equals_normal_process(export_dir, image_path, expected):
    program = DETECT_PROGRAM.replace("MODULES", repr(RUNTIME_MODULES))
    proc = run([sys.executable, "-c", program, str(export_dir), str(image_path)])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected


def test_blocker_is_active_through_sitecustomize(blocked_env):
    proc = run([sys.executable, "-c", "import torch"], blocked_env)
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr
    proc = run([sys.executable, "-c", "import torch.nn"], blocked_env)
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr


def test_cli_imports_and_detect_help_without_torch(blocked_env):
    program = "import sys\nimport nanodet_deploy.cli\n" + NO_TORCH_CHECK
    proc = run([sys.executable, "-c", program], blocked_env)
    assert proc.returncode == 0, proc.stderr
    proc = run([console_script(), "detect", "--help"], blocked_env)
    assert proc.returncode == 0, proc.stderr
    assert "--score-thresh" in proc.stdout and "--save-dir" in proc.stdout


def test_cli_detect_without_torch(export_dir, image_path, expected, blocked_env, tmp_path):
    out = tmp_path / "dets.json"
    options = ["--threads", "1", "--score-thresh", "0.05", "--json", str(out)]
    options += ["--save-dir", str(tmp_path / "ann")]
    args = [console_script(), "detect", str(export_dir), str(image_path), *options]
    for backend in ("onnxruntime", "ncnn"):
        proc = run([*args, "--backend", backend], blocked_env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(out.read_text()) == expected[backend]
    assert (tmp_path / "ann" / "raccoon-1.jpg").is_file()


def test_cli_checkpoint_without_torch_is_a_clear_error(reference_dir, image_path, blocked_env):
    proc = run(
        [console_script(), "detect", str(reference_dir / "nanodet-m_coco.pth"), str(image_path)],
        blocked_env,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "needs the torch package" in proc.stderr and "Traceback" not in proc.stderr


def test_the_readme_one_liner_without_torch(export_dir, image_path, blocked_env):
    """``python -c "from nanodet_deploy import Detector; print(Detector(E).detect(I))"`` with
    torch blocked: the public API in one import, and none of torch, onnxruntime, matplotlib,
    pycocotools or the peer runtimes loaded by it."""
    program = (
        f"from nanodet_deploy import Detector; print(Detector({str(export_dir)!r}).detect("
        f"{str(image_path)!r}))\nimport sys\nloaded = [m for m in ('torch', 'onnxruntime', "
        "'matplotlib', 'pycocotools', 'MNN', 'openvino') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    proc = run([sys.executable, "-c", program], blocked_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Detections(") and "cat 0." in proc.stdout

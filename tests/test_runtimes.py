"""Backends (torch, onnxruntime, ncnn), open_backend, their errors, and a torch-free runtime."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from nanodet_deploy.artifacts import MetaError, read_meta, write_meta
from nanodet_deploy.checkpoint import save_checkpoint
from nanodet_deploy.config import zoo_config
from nanodet_deploy.exporters.pipeline import ExportOptions, export_model
from nanodet_deploy.models import build_model
from nanodet_deploy.runtimes.base import Backend, BackendUnavailable
from nanodet_deploy.runtimes.ncnn import NcnnBackend
from nanodet_deploy.runtimes.ort import OrtBackend
from nanodet_deploy.runtimes.registry import open_backend
from nanodet_deploy.runtimes.torch_backend import TorchBackend

HW = (64, 96)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A small export (nanodet-m-0.5x, random weights, 64x96, fp32 NCNN) and its checkpoint."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(zoo_config("nanodet-m-0.5x")).eval()
    root = tmp_path_factory.mktemp("runtimes")
    options = ExportOptions(input_hw=HW, ncnn_fp16=False, verify=False)
    export_model(model, root / "export", options, random_weights=True)
    ckpt = save_checkpoint(root / "model.pth", model.cfg, model.state_dict())
    yield root / "export", ckpt, model
    torch.set_num_threads(threads)


def _copy(export_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(export_dir, tmp_path / "copy"))


def _input(hw=HW, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, *hw)).astype(np.float32)


def test_open_backend_picks_by_what_is_there(export, tmp_path):
    export_dir, ckpt, _ = export
    ncnn = open_backend(export_dir, threads=1)
    assert isinstance(ncnn, NcnnBackend) and isinstance(ncnn, Backend)
    torch_backend = open_backend(ckpt)
    assert isinstance(torch_backend, TorchBackend)
    onnx_only = _copy(export_dir, tmp_path)
    for name in ("model.ncnn.param", "model.ncnn.bin"):
        (onnx_only / name).unlink()
    ort = open_backend(onnx_only)
    assert isinstance(ort, OrtBackend)
    x = _input()
    outs = [b.run(x) for b in (torch_backend, ort, ncnn)]
    for out in outs:
        assert out.shape == (8 * 12 + 4 * 6 + 2 * 3, 84) and out.dtype == np.float32
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-4)
    np.testing.assert_allclose(outs[2], outs[0], atol=1e-3)
    for b in (torch_backend, ort, ncnn):
        b.close()


def test_torch_runs_the_exports_own_weights(export):
    """model.pth in the export: torch on the folder equals the checkpoint and the ONNX model."""
    export_dir, ckpt, model = export
    meta = read_meta(export_dir)
    assert meta.files["checkpoint"] == "model.pth" and meta.precision["torch"] == "fp32"
    from nanodet_deploy.models.stats import model_stats

    stats = model_stats(model, HW)
    assert (meta.macs, meta.params) == (stats.macs, stats.params_without_aux)
    folder = open_backend(export_dir, backend="torch")
    assert isinstance(folder, TorchBackend) and folder.meta == meta
    x = _input(seed=3)
    np.testing.assert_array_equal(folder.run(x), open_backend(ckpt).run(x))
    np.testing.assert_allclose(folder.run(x), OrtBackend(export_dir).run(x), atol=1e-4)
    (export_dir.parent / "no_torch").mkdir(exist_ok=True)
    copy = Path(shutil.copytree(export_dir, export_dir.parent / "no_torch" / "e"))
    (copy / "model.pth").unlink()
    with pytest.raises(MetaError, match="no torch weights"):
        open_backend(copy, backend="torch")


def test_ncnn_runs_at_other_sizes_and_reports_settings(export):
    export_dir, _, model = export
    ncnn = NcnnBackend(export_dir, threads=2)
    assert ncnn.settings["num_threads"] == 2
    assert not ncnn.settings["use_fp16_storage"]  # an fp32 export runs in fp32
    ref = TorchBackend(model, HW)
    x = _input((96, 64))
    np.testing.assert_allclose(ncnn.run(x), ref.run(x), atol=1e-3)
    assert NcnnBackend(export_dir, precision="fp16").settings["use_fp16_storage"] in (True, False)


def test_ort_session_options(export):
    backend = OrtBackend(export[0], threads=2)
    opts = backend.session.get_session_options()
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(ValueError, match=r"static 64x96 \(HxW\) input"):
        backend.run(_input((96, 64)))


@pytest.mark.parametrize("backend", ["onnxruntime", "ncnn"])
def test_input_size_must_be_a_multiple(export, backend):
    b = open_backend(export[0], backend)
    with pytest.raises(ValueError, match="multiple of 32"):
        b.run(_input((64, 90)))
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        b.run(_input()[0])


def test_folder_without_meta_json(export, tmp_path):
    copy = _copy(export[0], tmp_path)
    (copy / "meta.json").unlink()
    for backend in ("auto", "onnxruntime", "ncnn"):
        with pytest.raises(MetaError, match=r"meta\.json"):
            open_backend(copy, backend)


@pytest.mark.parametrize("backend", ["onnxruntime", "ncnn"])
def test_meta_json_that_does_not_match_the_model(export, tmp_path, backend):
    copy = _copy(export[0], tmp_path)
    meta = read_meta(copy)
    write_meta(copy, dataclasses.replace(meta, class_names=meta.class_names[:79]))
    with pytest.raises(MetaError, match="79 classes"):
        open_backend(copy, backend)


@pytest.mark.parametrize(("backend", "missing"), [("onnxruntime", "model.onnx"),
                                                  ("ncnn", "model.ncnn.bin")])  # fmt: skip
def test_missing_model_file(export, tmp_path, backend, missing):
    copy = _copy(export[0], tmp_path)
    (copy / missing).unlink()
    with pytest.raises(MetaError, match=f"{missing}.*missing"):
        open_backend(copy, backend)


def test_bad_backend_and_path(export, tmp_path):
    with pytest.raises(ValueError, match="unknown backend"):
        open_backend(export[0], "tflite")
    with pytest.raises(FileNotFoundError):
        open_backend(tmp_path / "nothing")
    with pytest.raises(ValueError, match="the other backends need an export folder"):
        open_backend(export[1], "ncnn")  # a checkpoint file
    with pytest.raises(ValueError, match="backend onnxruntime runs fp32, int8; not 'fp16'"):
        open_backend(export[0], "onnxruntime", precision="fp16")
    with pytest.raises(MetaError, match="lists no 'onnx_int8' file"):
        open_backend(export[0], "onnxruntime", precision="int8")


@pytest.mark.parametrize(
    ("backend", "package", "module"),
    [("onnxruntime", "onnxruntime", "ort"), ("ncnn", "ncnn", "ncnn"),
     ("torch", "torch", "torch_backend")],
)  # fmt: skip
def test_missing_package_names_it(export, monkeypatch, backend, package, module):
    monkeypatch.setitem(sys.modules, package, None)  # import raises ImportError
    monkeypatch.delitem(sys.modules, f"nanodet_deploy.runtimes.{module}")  # imported afresh
    path = export[1] if backend == "torch" else export[0]
    with pytest.raises(BackendUnavailable, match=f"backend {backend} needs the {package} package"):
        open_backend(path, backend)


def test_runtimes_work_without_torch(export):
    """A Raspberry Pi without torch: ort.py / ncnn.py / open_backend never import it."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any "import torch" now fails
        import numpy as np
        from nanodet_deploy.runtimes.registry import open_backend
        from nanodet_deploy.runtimes import ncnn, ort  # noqa: F401
        x = np.zeros((1, 3, 64, 96), np.float32)
        shapes = [open_backend({str(export[0])!r}, b).run(x).shape
                  for b in ("ncnn", "onnxruntime")]
        print(shapes)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().replace("(", "[").replace(")", "]")) == [[126, 84]] * 2

"""``nanodet-export`` end to end: folded normalization, non-square sizes, random weights, and
clear errors that leave no half-written export folder behind."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pnnx
import pytest
import torch
from detect_helpers import preprocess_as
from typer.testing import CliRunner

from nanodet_deploy.cli.main import app, export_app
from nanodet_deploy.preprocess import load_image
from nanodet_deploy.runtimes.ort import OrtBackend
from nanodet_deploy.runtimes.torch_backend import TorchBackend

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _export(*args: str):
    return runner.invoke(export_app, [str(a) for a in args])


def _text(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def folded_and_plain(tmp_path_factory, reference_dir):
    """nanodet-m (COCO) at 256x416 (H x W): folded normalization with NCNN and a parity check
    on the real images, and a plain ONNX export of the same weights for comparison."""
    root = tmp_path_factory.mktemp("cli")
    ckpt = reference_dir / "nanodet-m_coco.pth"
    images = reference_dir / "images"
    folded = _export(ckpt, "--size", "256,416", "--fold-normalize", "--images", images,
                     "--out", root / "folded")  # fmt: skip
    plain = _export(ckpt, "--size", "256,416", "--formats", "onnx", "--no-verify",
                    "--out", root / "plain")  # fmt: skip
    return root, folded, plain


def test_folded_export_reports_each_step_and_passes_parity(folded_and_plain):
    root, folded, _ = folded_and_plain
    assert folded.exit_code == 0, folded.output
    for step in ("load", "onnx", "ncnn", "meta", "verify", "publish"):
        assert f" {step} " in folded.output
    assert "parity against" in folded.output
    report = json.loads((root / "folded" / "verify.json").read_text())
    assert report["passed"] and set(report["checks"]) == {"onnxruntime_fp32", "ncnn_fp16"}
    assert [i["input_hw"] for i in report["inputs"]] == [[256, 416]] * 5  # padded, static ONNX
    assert sorted(p.name for p in (root / "folded").iterdir()) == [
        "meta.json", "model.ncnn.bin", "model.ncnn.param", "model.onnx", "model.pth",
        "verify.json",
    ]  # fmt: skip
    assert _leftovers(root) == []


def test_non_square_sizes_are_height_then_width(folded_and_plain, reference_dir):
    root, _, plain = folded_and_plain
    assert plain.exit_code == 0, plain.output
    meta = json.loads((root / "plain" / "meta.json").read_text())
    assert meta["preprocess"]["input_hw"] == [256, 416]
    assert meta["preprocess"]["normalize_folded"] is False
    dims = onnx.load(str(root / "plain" / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 256, 416]
    # A wide image in pad mode fills the width: the exported graph must agree with torch there.
    x, _ = preprocess_as(load_image(reference_dir / "images" / "raccoon-1.jpg"), (256, 416))
    assert x.shape == (1, 3, 256, 416)
    out = OrtBackend(root / "plain").run(x)
    assert out.shape == (32 * 52 + 16 * 26 + 8 * 13, 84)
    ref = TorchBackend.from_checkpoint(reference_dir / "nanodet-m_coco.pth").run(x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


def test_fold_normalize_equals_normal_export(folded_and_plain, reference_dir):
    root, _, _ = folded_and_plain
    folded_meta = json.loads((root / "folded" / "meta.json").read_text())
    assert folded_meta["preprocess"]["normalize_folded"] is True
    image = load_image(reference_dir / "images" / "raccoon-2.jpg")
    raw, info_raw = preprocess_as(image, (256, 416), normalize=False)
    normalized, info = preprocess_as(image, (256, 416))
    assert info_raw == info and raw.max() > 100  # raw BGR 0..255 goes in
    out_folded = OrtBackend(root / "folded").run(_pad(raw, folded_meta["preprocess"]["mean_bgr"]))
    out_plain = OrtBackend(root / "plain").run(_pad(normalized, [0.0, 0.0, 0.0]))
    np.testing.assert_allclose(out_folded, out_plain, rtol=0, atol=1e-4)


def _pad(tensor: np.ndarray, fill: list[float]) -> np.ndarray:
    out = np.empty((1, 3, 256, 416), np.float32)
    out[0] = np.asarray(fill, np.float32)[:, None, None]
    out[:, :, : tensor.shape[2], : tensor.shape[3]] = tensor
    return out


def test_random_weights_are_announced_and_recorded(tmp_path):
    result = _export("--model", "nanodet-m-0.5x", "--size", "64", "--formats", "onnx",
                     "--no-verify", "--out", tmp_path / "rnd")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in _text(result)
    meta = json.loads((tmp_path / "rnd" / "meta.json").read_text())
    assert meta["random_weights"] is True and meta["checkpoint_sha256"] is None


def test_reachable_as_nanodet_deploy_export():
    result = runner.invoke(app, ["export", "--help"])
    assert result.exit_code == 0 and "--fold-normalize" in result.output


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint at all")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (lambda ref, tmp: [tmp / "missing.pth"], "checkpoint file not found"),
        (lambda ref, tmp: [_garbage(tmp)], "not a readable PyTorch checkpoint"),
        (
            lambda ref, tmp: [ref / "nanodet-m_coco.pth", "--model", "nanodet-plus-m"],
            "does not match model 'nanodet-plus-m'",
        ),
        (lambda ref, tmp: ["--model", "nanodet-m-0.5x", "--size", "300"], "multiples of 32"),
        (lambda ref, tmp: ["--model", "nanodet-m-0.5x", "--formats", "tflite"], "tflite"),
        (lambda ref, tmp: [], "give a CHECKPOINT"),
    ],
    ids=["missing", "unreadable", "arch-mismatch", "size", "format", "nothing"],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, reference_dir, args, message):
    result = _export(*args(reference_dir, tmp_path), "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in _text(result)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_unwritable_output_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the parent folder should be")
    result = _export("--model", "nanodet-m-0.5x", "--size", "64", "--out", blocker / "out")
    assert result.exit_code == 2 and "is not a folder" in _text(result)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    if os.geteuid() == 0:  # root ignores permission bits: simulate what the OS would say
        monkeypatch.setattr(tempfile, "mkdtemp", _permission_denied)
    result = _export("--model", "nanodet-m-0.5x", "--size", "64", "--out", read_only / "out")
    read_only.chmod(0o700)
    assert result.exit_code == 2, result.output
    assert "cannot write into" in _text(result) and "Permission denied" in _text(result)
    assert list(read_only.iterdir()) == []


def _permission_denied(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def test_failing_pnnx_leaves_no_folder(tmp_path, monkeypatch):
    script = tmp_path / "fake-pnnx"
    script.write_text("#!/bin/sh\necho 'fake pnnx: cannot convert Foo' >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(pnnx, "EXEC_PATH", str(script))
    result = _export("--model", "nanodet-m-0.5x", "--size", "64", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "pnnx failed with exit code 1" in _text(result) and "cannot convert Foo" in _text(result)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_existing_folder_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old export")
    args = ["--model", "nanodet-m-0.5x", "--size", "64", "--formats", "onnx", "--no-verify"]
    refused = _export(*args, "--out", out)
    assert refused.exit_code == 2 and "--overwrite" in _text(refused)
    assert (out / "keep.txt").exists()
    replaced = _export(*args, "--out", out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.onnx", "model.pth"]
    assert _leftovers(tmp_path) == []

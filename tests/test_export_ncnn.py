"""ONNX -> NCNN: size-free reshapes, the size-independence audit, pnnx errors, clean folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pnnx
import pytest
import torch

from nanodet_deploy.config import zoo_config
from nanodet_deploy.exporters.errors import ExportError
from nanodet_deploy.exporters.ncnn import (
    NCNN_BIN,
    NCNN_PARAM,
    check_size_free,
    convert_onnx_to_ncnn,
    free_spatial_reshapes,
)
from nanodet_deploy.exporters.onnx import export_onnx
from nanodet_deploy.models import build_model
from nanodet_deploy.models.export import ExportWrapper

PARAM = """7767517
6 6
Input                    in0                      0 1 in0
Convolution              conv_0                   1 1 in0 1 0=112 1=1 5=1 6=100
Slice                    split_0                  1 2 1 2 3 -23300=2,80,-233 1=0
Reshape                  reshape_0                1 1 2 4 0=2704 1=80
Reshape                  reshape_1                1 1 3 5 0=2704 1=8 2=4
Interp                   up_0                     1 1 5 6 0=2 1=2.0 2=2.0 6=0
"""


def test_free_spatial_reshapes_sets_only_the_level_sizes_to_minus_one():
    text = free_spatial_reshapes(PARAM, {52 * 52, 26 * 26})
    assert "reshape_0 1 1 2 4 0=-1 1=80" in text
    assert "reshape_1 1 1 3 5 0=-1 1=8 2=4" in text
    assert "0=112" in text  # other layers untouched
    assert check_size_free(text) == (
        "Convolution", "Input", "Interp", "Reshape", "Slice",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Reshape r 1 1 a b 0=2704 1=80", "fixed size"),
        ("Interp i 1 1 a b 0=2 3=52 4=52", "fixed output size"),
        ("TopK t 1 1 a b 0=1", "not known to be input-size independent"),
    ],
)
def test_size_dependent_layers_are_refused(line, message):
    with pytest.raises(ExportError, match=message):
        check_size_free(f"7767517\n2 2\nInput in0 0 1 a\n{line}\n")


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    wrapper = ExportWrapper(build_model(zoo_config("nanodet-m-0.5x")).eval()).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(wrapper, path, (64, 96))
    torch.set_num_threads(threads)
    return path


def test_conversion_leaves_only_the_model_files(small_onnx, tmp_path):
    info = convert_onnx_to_ncnn(small_onnx, tmp_path, [(8, 12), (4, 6), (2, 3)], fp16=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [NCNN_BIN, NCNN_PARAM]
    assert (info.input_name, info.output_name) == ("in0", "out0")
    assert "ShuffleChannel" in info.layer_types and "Softmax" in info.layer_types
    text = info.param.read_text()
    assert all(" 0=-1" in line for line in text.splitlines() if line.startswith("Reshape"))


def test_fp16_weights_are_half_the_size(small_onnx, tmp_path):
    sizes = {}
    for fp16 in (True, False):
        out = tmp_path / str(fp16)
        out.mkdir()
        sizes[fp16] = convert_onnx_to_ncnn(small_onnx, out, [(8, 12), (4, 6), (2, 3)], fp16).bin
    assert sizes[True].stat().st_size < 0.6 * sizes[False].stat().st_size


def _failing_pnnx(tmp_path: Path) -> str:
    script = tmp_path / "fake-pnnx"
    script.write_text("#!/bin/sh\necho 'fake pnnx: unsupported operator Foo' >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_pnnx_failure_shows_its_output(small_onnx, tmp_path, monkeypatch):
    monkeypatch.setattr(pnnx, "EXEC_PATH", _failing_pnnx(tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExportError, match=r"exit code 1(.|\n)*unsupported operator Foo"):
        convert_onnx_to_ncnn(small_onnx, out, [(8, 12), (4, 6), (2, 3)])
    assert os.listdir(out) == []  # its scratch folder is gone too


def test_pnnx_missing(small_onnx, tmp_path, monkeypatch):
    monkeypatch.setattr(pnnx, "EXEC_PATH", str(tmp_path / "no-such-pnnx"))
    with pytest.raises(ExportError, match="pnnx executable not found"):
        convert_onnx_to_ncnn(small_onnx, tmp_path, [(8, 12), (4, 6), (2, 3)])

"""Checkpoint round trips, official formats, strictness and bad input."""

from __future__ import annotations

import argparse
import io
import pickle
import zipfile

import numpy as np
import pytest
import torch

from nanodet_deploy.checkpoint import (
    CheckpointError,
    check_and_load,
    infer_model_config,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from nanodet_deploy.config import zoo_config
from nanodet_deploy.models import build_model


def _randomize(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(
                    torch.rand(t.shape, generator=g) * 0.5 + 0.5
                    if t.dim() == 1
                    else torch.randn(t.shape, generator=g) * 0.1
                )
    return model.eval()


def _out(model, hw=(64, 96)):
    x = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x).numpy()


def test_round_trip_identical_outputs(tmp_path):
    model = _randomize(build_model(zoo_config("nanodet-plus-m")))
    ema = {k: v + 0.01 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = save_checkpoint(tmp_path / "ckpt" / "last.pth", model.cfg, model.state_dict(), epoch=7)
    loaded, ckpt = load_model(path)
    assert ckpt.kind == "nanodet-deploy" and ckpt.raw["epoch"] == 7 and not ckpt.used_ema
    assert loaded.cfg == model.cfg
    np.testing.assert_array_equal(_out(loaded), _out(model))
    save_checkpoint(path, model.cfg, model.state_dict(), ema_state=ema)
    loaded, ckpt = load_model(path)
    assert ckpt.used_ema
    torch.testing.assert_close(loaded.state_dict(), ema, rtol=0, atol=0)
    assert [p.name for p in path.parent.iterdir()] == ["last.pth"]  # no temp files left


def test_official_lightning_ckpt_prefers_ema(tmp_path):
    model = _randomize(build_model(zoo_config("nanodet-plus-m")))
    raw = model.state_dict()
    ema = {k: (v * 2 if v.is_floating_point() else v) for k, v in raw.items()}
    state = {f"model.{k}": v for k, v in raw.items()} | {
        f"avg_model.{k}": v for k, v in ema.items()
    }
    path = tmp_path / "model_last.ckpt"
    torch.save({"epoch": 3, "global_step": 10, "state_dict": state}, path)
    loaded, ckpt = load_model(path)
    assert ckpt.kind == "lightning" and ckpt.used_ema
    assert loaded.cfg.arch == "nanodet-plus" and loaded.cfg.backbone_width == "1.0x"
    torch.testing.assert_close(loaded.state_dict(), ema, rtol=0, atol=0)
    # without avg_model the raw weights load
    torch.save({"state_dict": {f"model.{k}": v for k, v in raw.items()}}, path)
    loaded, ckpt = load_model(path)
    assert not ckpt.used_ema
    torch.testing.assert_close(loaded.state_dict(), raw, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["bare", "module", "best"])
def test_official_pth_layouts(tmp_path, reference_dir, layout):
    sd = torch.load(reference_dir / "nanodet-m_coco.pth", weights_only=True)
    payload = {
        "bare": sd,
        "module": {
            "epoch": 280,
            "state_dict": {f"module.{k}": v for k, v in sd.items()},
            "iter": 1,
        },
        "best": {"state_dict": sd},
    }[layout]
    path = tmp_path / "model.pth"
    torch.save(payload, path)
    model, _ = load_model(path)
    assert (
        model.cfg.arch == "nanodet"
        and model.cfg.num_classes == 80
        and model.cfg.head_kernel_size == 3
    )
    assert model.cfg.center_offset == 0.5
    torch.testing.assert_close(model.state_dict(), sd, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["nanodet-m-0.5x", "nanodet-m-1.5x", "nanodet-plus-m-1.5x"])
def test_infer_config_recovers_zoo_architecture(name):
    cfg = zoo_config(name)
    inferred = infer_model_config(build_model(cfg).state_dict(), name=name)
    for field in ("arch", "backbone_width", "neck_channels", "head_channels", "head_kernel_size",
                  "strides", "reg_max", "num_classes", "aux_channels", "stacked_convs"):  # fmt: skip
        assert getattr(inferred, field) == getattr(cfg, field), field


def test_other_architecture_fails_listing_mismatches(tmp_path):
    legacy = build_model(zoo_config("nanodet-m"))
    path = save_checkpoint(tmp_path / "m.pth", legacy.cfg, legacy.state_dict())
    with pytest.raises(CheckpointError) as exc:
        load_model(path, config=zoo_config("nanodet-plus-m"))
    msg = str(exc.value)
    assert str(path) in msg and "missing keys" in msg and "unexpected keys" in msg
    assert "fpn.reduce_layers.0.conv.weight" in msg
    wider = build_model(zoo_config("nanodet-m-1.5x"))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        check_and_load(wider, legacy.state_dict(), "legacy weights")


def test_class_count_change_keeps_box_rows(reference_dir):
    sd = torch.load(reference_dir / "nanodet-m_coco.pth", weights_only=True)
    model = build_model(zoo_config("nanodet-m", num_classes=1))
    with pytest.raises(CheckpointError, match=r"head\.gfl_cls\.0\.weight"):
        check_and_load(model, sd, "coco")
    check_and_load(model, sd, "coco", allow_class_mismatch=True)
    w = model.head.gfl_cls[0].weight
    assert w.shape[0] == 1 + 32
    torch.testing.assert_close(w[1:], sd["head.gfl_cls.0.weight"][80:], rtol=0, atol=0)
    torch.testing.assert_close(model.backbone.conv1[0].weight, sd["backbone.conv1.0.weight"])


def test_aux_weights_optional_for_plus(tmp_path):
    model = _randomize(build_model(zoo_config("nanodet-plus-m")))
    path = tmp_path / "no_aux.pth"
    torch.save(model.inference_state_dict(), path)
    loaded, _ = load_model(path)
    np.testing.assert_array_equal(_out(loaded), _out(model))


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    model = build_model(zoo_config("nanodet-m"))
    path = save_checkpoint(tmp_path / "good.pth", model.cfg, model.state_dict())
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth.*not a readable"):
        read_checkpoint(cut)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_text("hello")
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        read_checkpoint(junk)


def test_pickled_module_is_refused(tmp_path):
    path = tmp_path / "module.pth"
    torch.save(build_model(zoo_config("nanodet-m")), path)
    with pytest.raises(CheckpointError, match=r"pickles Python objects \(nanodet_deploy\.models"):
        read_checkpoint(path)


def _zip_without_pickle() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    return buffer.getvalue()


def _saved(obj, **kwargs) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


GOOD = {"model.weight": torch.zeros(2)}
BAD_FILES = {
    "random": (lambda: np.random.default_rng(0).bytes(4096), "unknown binary data"),
    "truncated zip": (lambda: _saved(GOOD)[:300], "truncated or corrupt zip archive"),
    "zip, not torch": (_zip_without_pickle, "a zip archive but not a PyTorch checkpoint"),
    "text": (lambda: b"model: nanodet-m\nweights: none\n", "a text file (starting 'model:"),
    "empty": (lambda: b"", "an empty file (0 bytes)"),
    "git lfs pointer": (lambda: b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "Git LFS pointer"),
    "truncated legacy": (lambda: _saved(GOOD, _use_new_zipfile_serialization=False)[:200], "a pickle that is truncated"),
    "plain pickle": (lambda: pickle.dumps({"weights": [1, 2]}), "a pickle that is truncated or holds no"),
    "pickled object": (lambda: _saved({"args": argparse.Namespace(lr=1)}), "pickles Python objects (argparse.Namespace)"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_checkpoint_files_say_what_they_are_and_what_loads(tmp_path, kind):
    make, what = BAD_FILES[kind]
    path = tmp_path / "weights.pth"
    path.write_bytes(make())
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable PyTorch checkpoint: it ")
    assert what in message, message
    assert "nanodet-deploy checkpoints" in message and "official NanoDet Lightning .ckpt" in message
    assert "weights_only" not in message and info.value.__cause__ is None
    assert info.value.__suppress_context__  # torch's advice is not chained in either


def test_wrong_content_lists_loadable_formats(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match=r"tensor\.pth: expected a dict .* loadable are"):
        read_checkpoint(path)
    torch.save({"epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"no state_dict of tensors .* loadable are"):
        read_checkpoint(path)

"""Architecture exactness against official NanoDet fixtures (shared/reference)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from nanodet_deploy.config import ConfigError, zoo_config, zoo_names
from nanodet_deploy.models import build_model
from nanodet_deploy.models.decode import center_priors, distance2bbox
from nanodet_deploy.models.stats import model_stats

# official config name -> our zoo name (the size suffix sets the input size)
OFFICIAL = {
    "nanodet-m": "nanodet-m",
    "nanodet-m-416": "nanodet-m-416",
    "nanodet-m-0.5x": "nanodet-m-0.5x",
    "nanodet-m-1.5x": "nanodet-m-1.5x",
    "nanodet-m-1.5x-416": "nanodet-m-1.5x-416",
    "nanodet-plus-m_320": "nanodet-plus-m_320",
    "nanodet-plus-m_416": "nanodet-plus-m_416",
    "nanodet-plus-m-1.5x_320": "nanodet-plus-m-1.5x_320",
    "nanodet-plus-m-1.5x_416": "nanodet-plus-m-1.5x_416",
}


def _read_keys(path):
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    return [(k, dtype, json.loads(shape)) for k, dtype, shape in rows]


@pytest.mark.parametrize("official", list(OFFICIAL))
def test_state_dict_matches_official_keys(reference_dir, official):
    expected = _read_keys(reference_dir / "keys" / f"{official}.txt")
    model = build_model(zoo_config(OFFICIAL[official]))
    ours = [
        (k, str(v.dtype).removeprefix("torch."), list(v.shape))
        for k, v in model.state_dict().items()
    ]
    assert ours == expected  # same keys, same order, dtypes and shapes
    official_sd = {k: torch.zeros(shape, dtype=getattr(torch, dt)) for k, dt, shape in expected}
    model.load_state_dict(official_sd, strict=True)


@pytest.fixture(scope="module")
def stats_rows(reference_dir):
    with open(reference_dir / "model_stats.csv") as f:
        return {row["config"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize("official", list(OFFICIAL))
def test_params_and_macs_match_official(stats_rows, official):
    row = stats_rows[official]
    model = build_model(zoo_config(OFFICIAL[official]))
    st = model_stats(model, (int(row["input_h"]), int(row["input_w"])))
    assert st.params_total == int(row["params_total"])
    assert st.params_without_aux == int(row["params_without_aux"])
    assert st.params_used_in_forward == int(row["params_used_in_inference_forward"])
    official_macs = float(row["flops_py_nflops_M"]) * 1e6
    assert abs(st.macs - official_macs) / official_macs < 0.005
    assert st.macs == int(row["conv_macs_hook_crosscheck"])  # in fact exact


@pytest.fixture(scope="module")
def nanodet_m_coco(reference_dir):
    model = build_model(zoo_config("nanodet-m")).eval()
    sd = torch.load(reference_dir / "nanodet-m_coco.pth", weights_only=True)
    model.load_state_dict(sd, strict=True)
    return model, np.load(reference_dir / "nanodet-m_coco_raw.npz")


def test_nanodet_m_coco_random_416(nanodet_m_coco):
    model, ref = nanodet_m_coco
    with torch.no_grad():
        out = model(torch.from_numpy(ref["input"])).numpy()
        fpn = model.fpn(model.backbone(torch.from_numpy(ref["input"])))
    assert out.shape == (1, 3549, 112)
    np.testing.assert_allclose(out, ref["official_forward"], atol=1e-4, rtol=0)
    for feat, s in zip(fpn, (8, 16, 32), strict=True):
        np.testing.assert_allclose(feat.numpy(), ref[f"fpn_out_s{s}"], atol=1e-4, rtol=0)


def test_nanodet_m_coco_real_non_square_image(nanodet_m_coco):
    model, ref = nanodet_m_coco
    x = torch.from_numpy(ref["image_input_raccoon-1"])
    assert tuple(x.shape[2:]) == (288, 416)  # H != W
    with torch.no_grad():
        out = model(x).numpy()
    np.testing.assert_allclose(out, ref["image_official_forward_raccoon-1"], atol=1e-4, rtol=0)
    priors = center_priors((288, 416), (8, 16, 32), model.cfg.center_offset).numpy()
    np.testing.assert_array_equal(
        priors, ref["image_center_priors_raccoon-1"].reshape(priors.shape)
    )


@pytest.fixture(scope="module")
def plus_parity(reference_dir):
    model = build_model(zoo_config("nanodet-plus-m")).eval()
    sd = torch.load(reference_dir / "nanodet-plus-m_320_parity.pth", weights_only=True)
    model.load_state_dict(sd, strict=True)
    return model, np.load(reference_dir / "nanodet-plus-m_320_parity.npz")


def test_nanodet_plus_forward_aux_and_decode(plus_parity):
    model, ref = plus_parity
    x = torch.from_numpy(ref["input"])
    with torch.no_grad():
        feats = model.backbone(x)
        neck = model.fpn(feats)
        out = model(x)
        head_out, aux_out = model.forward_train(x)
    for i, f in enumerate(feats):
        np.testing.assert_allclose(f.numpy(), ref[f"backbone_out_{i}"], atol=1e-4, rtol=0)
    for f, s in zip(neck, (8, 16, 32, 64), strict=True):
        np.testing.assert_allclose(f.numpy(), ref[f"neck_out_s{s}"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.numpy(), ref["train_output"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(head_out.numpy(), out.numpy())
    np.testing.assert_allclose(aux_out.numpy(), ref["aux_head_output_eval"], atol=1e-4, rtol=0)

    priors = center_priors((320, 320), model.cfg.strides, model.cfg.center_offset)
    np.testing.assert_array_equal(priors.numpy(), ref["center_priors"].reshape(priors.shape))
    distances_px = model.head.distribution_project(out[0, :, 80:]) * priors[:, 2:3]
    np.testing.assert_allclose(
        distances_px.numpy(), ref["distances_px"].reshape(distances_px.shape), atol=1e-4, rtol=0
    )
    boxes = distance2bbox(priors[:, :2], distances_px, max_shape_hw=(320, 320))
    np.testing.assert_allclose(
        boxes.numpy(), ref["decoded_bboxes_clamped"].reshape(boxes.shape), atol=1e-4, rtol=0
    )


def test_nanodet_plus_train_mode_batch_statistics(plus_parity, reference_dir):
    model = build_model(zoo_config("nanodet-plus-m"))
    model.load_state_dict(
        torch.load(reference_dir / "nanodet-plus-m_320_parity.pth", weights_only=True)
    )
    _, ref = plus_parity
    with torch.no_grad():
        out = model.train()(torch.from_numpy(ref["input"]))
    np.testing.assert_allclose(
        out.numpy(), ref["train_mode_bn_batchstats_output"], atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("name", ["nanodet-m", "nanodet-plus-m"])
def test_any_multiple_of_32_and_non_square(name):
    model = build_model(zoo_config(name)).eval()
    for hw in [(320, 320), (416, 416), (256, 416), (416, 256), (224, 352)]:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, *hw))
        h, w = hw
        points = sum(-(-h // s) * -(-w // s) for s in model.cfg.strides)
        assert out.shape == (1, points, 80 + 32), hw


def test_aux_detach_stops_gradient_into_backbone():
    model = build_model(zoo_config("nanodet-plus-m")).train()
    x = torch.randn(2, 3, 64, 64)
    for detach, expect_grad in ((False, True), (True, False)):
        model.zero_grad(set_to_none=True)
        _, aux = model.forward_train(x, detach_aux_input=detach)
        aux.sum().backward()
        grad = model.backbone.conv1[0].weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == expect_grad
        assert model.aux_fpn.reduce_layers[0].conv.weight.grad is not None


def test_unknown_model_name_lists_known_names():
    with pytest.raises(ConfigError) as exc:
        zoo_config("nanodet-xl")
    for name in zoo_names():
        assert name in str(exc.value)


def test_dead_legacy_reg_conv_gets_no_gradient():
    model = build_model(zoo_config("nanodet-m")).train()
    model(torch.randn(1, 3, 64, 64)).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.head.gfl_reg.parameters())

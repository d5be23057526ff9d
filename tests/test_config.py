from __future__ import annotations

import pytest

from nanodet_deploy.config import (
    ConfigError,
    ModelConfig,
    model_config_from_dict,
    parse_hw,
    read_yaml,
    zoo_config,
)
from nanodet_deploy.models import build_model


def test_zoo_size_suffix_sets_input_size():
    assert zoo_config("nanodet-plus-m_416").input_hw == (416, 416)
    assert zoo_config("nanodet-m-416").input_hw == (416, 416)
    assert zoo_config("nanodet-m").input_hw == (320, 320)
    assert zoo_config("nanodet-m").center_offset == 0.5
    assert zoo_config("nanodet-plus-m").center_offset == 0.0


def test_yaml_base_with_overrides(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "model:\n  base: nanodet-plus-m\n  class_names: [raccoon]\n  activation: ReLU\n"
    )
    cfg = model_config_from_dict(read_yaml(path)["model"], str(path))
    assert (cfg.num_classes, cfg.class_names, cfg.activation) == (1, ("raccoon",), "ReLU")
    assert cfg.arch == "nanodet-plus" and cfg.strides == (8, 16, 32, 64)
    model = build_model(cfg)
    assert model.head.gfl_cls[0].out_channels == 1 + 32


def test_full_yaml_building_blocks(tmp_path):
    cfg = model_config_from_dict(
        {"arch": "nanodet", "backbone_width": "0.5x", "num_classes": 3, "neck_channels": 64,
         "head_channels": 64, "reg_max": 10, "strides": [8, 16, 32], "head_kernel_size": 3},
        "inline",
    )  # fmt: skip
    assert cfg.class_names == ("class_0", "class_1", "class_2")
    model = build_model(cfg)
    assert model.head.gfl_cls[0].out_channels == 3 + 4 * 11
    assert model.head.distribution_project.project.tolist() == list(range(11))


def test_misspelled_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  base: nanodet-m\n  num_clases: 3\n")
    with pytest.raises(ConfigError) as exc:
        model_config_from_dict(read_yaml(path)["model"], str(path))
    msg = str(exc.value)
    assert "num_clases" in msg and str(path) in msg and "num_classes" in msg


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"arch": "yolo"}, "arch"),
        ({"backbone_width": "2.0x"}, "backbone_width"),
        ({"strides": [8, 16, 30]}, "strides"),
        ({"arch": "nanodet", "strides": [8, 16, 32, 64]}, "legacy"),
        ({"input_hw": [320, 300]}, "multiples of 32"),
        ({"num_classes": 2, "class_names": ["a"]}, "class_names"),
        ({"activation": "Swish"}, "activation"),
        ({"num_classes": "three"}, "num_classes"),
    ],
)
def test_invalid_values_are_clear_errors(bad, needle):
    with pytest.raises(ConfigError, match=needle):
        model_config_from_dict(bad, "inline")


def test_parse_hw():
    assert parse_hw("320") == (320, 320)
    assert parse_hw("320,416") == (320, 416)
    assert parse_hw("320x416") == (320, 416)
    with pytest.raises(ConfigError):
        parse_hw("1,2,3")


def test_model_config_is_frozen():
    cfg = ModelConfig()
    with pytest.raises(AttributeError):
        cfg.num_classes = 3  # type: ignore[misc]

"""``train`` / ``eval`` commands and training-config loading: paths, variables, clear errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nanodet_deploy.cli.main import app
from nanodet_deploy.config import ConfigError
from nanodet_deploy.train_config import load_config, load_data_config

runner = CliRunner()

TINY = """\
model:
  base: nanodet-m-0.5x
  input_hw: [128, 128]
data:
  root: ${{TINY_RACCOON:-{root}}}
  train: {tmp}/tr.txt
  val: va.txt
  class_names: [raccoon]
augment:
  keep_ratio: true
train:
  epochs: 2
  batch_size: 2
  num_workers: 0
  warmup_steps: 1
{extra}"""


def write_config(tmp: Path, root: Path, extra: str = "", name: str = "tiny.yaml") -> Path:
    (tmp / "tr.txt").write_text("raccoon-1\nraccoon-2\n")
    (tmp / "va.txt").write_text("raccoon-3\nraccoon-4\n")
    path = tmp / name
    path.write_text(TINY.format(root=root, tmp=tmp, extra=extra))
    return path


def test_config_paths_variables_and_classes(tmp_path, raccoon_dir, monkeypatch):
    (tmp_path / "data").mkdir()
    cfg_path = tmp_path / "configs" / "c.yaml"
    cfg_path.parent.mkdir()
    cfg_path.write_text(
        "model: {base: nanodet-m}\n"
        "data:\n  root: ${MY_DATA:-../data}\n  train: {split: mine}\n  class_names: [a, b]\n"
        "train:\n  init_from: ${MY_W:-weights/w.pth}\n"
    )
    cfg = load_config(cfg_path)
    assert cfg.data.root == str(tmp_path / "data")  # relative to the config's folder
    assert cfg.train.init_from == str(cfg_path.parent / "weights" / "w.pth")
    assert cfg.data.train.split == "mine" and cfg.model.class_names == ("a", "b")
    monkeypatch.setenv("MY_DATA", str(raccoon_dir))
    assert load_config(cfg_path).data.root == str(raccoon_dir)
    cfg_path.write_text("model: {base: nanodet-m}\ndata:\n  root: ${NOT_SET_ANYWHERE}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: data\.root: environment variable NOT_SET"):
        load_config(cfg_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: {base: nanodet-m}\ndata: {root: x}\ntrain: {epoch: 3}\n", "unknown key 'epoch' in 'train'; did you mean 'epochs'"),
        ("model: {base: nanodet-m}\ndata: {root: x, fromat: voc}\n", "unknown key 'fromat' in 'data'"),
        ("model: {base: nanodet-m}\ndata: {root: x}\ntrian: {}\n", "unknown section 'trian'"),
        ("model: {base: nanodet-m}\ndata: {root: x}\ntrain: {optimizer: adam}\n", "optimizer must be one of"),
        ("model: {base: nanodet-m, class_names: [a]}\ndata: {root: x, class_names: [b]}\n", "differ from data.class_names"),
        ("data: {root: x}\n", "needs a 'model' section"),
    ],
)  # fmt: skip
def test_config_errors_name_key_and_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_data_config_of_a_full_training_config(tmp_path, raccoon_dir):
    data = load_data_config(write_config(tmp_path, raccoon_dir))
    assert data.root == str(raccoon_dir) and data.val.split == str(tmp_path / "va.txt")


def test_train_cli_errors(tmp_path, raccoon_dir):
    def run(*args):
        result = runner.invoke(app, ["train", *map(str, args)])
        assert result.exit_code == 2, result.output
        return " ".join(result.output.split())

    cfg = write_config(tmp_path, raccoon_dir, "  bogus: 1\n")
    assert "unknown key 'bogus' in 'train'" in run(cfg, "--out", tmp_path / "o")
    cfg = write_config(tmp_path, tmp_path / "no-such-dataset")
    out = run(cfg, "--out", tmp_path / "o")
    assert "tiny.yaml: data.root" in out and "no-such-dataset is not a folder" in out
    cfg = write_config(tmp_path, raccoon_dir, f"  init_from: {tmp_path}/missing.pth\n")
    out = run(cfg, "--out", tmp_path / "o")
    assert "train.init_from" in out and "missing.pth: checkpoint file not found" in out
    cfg = write_config(tmp_path, raccoon_dir)
    (tmp_path / "a-file").write_text("")
    assert "is not writable" in run(cfg, "--out", tmp_path / "a-file" / "run")
    assert "no last.pth" in run(cfg, "--out", tmp_path / "fresh", "--resume")
    assert "--device must be one of" in run(cfg, "--device", "tpu")
    assert "config file not found" in run(tmp_path / "nope.yaml")


def test_train_resume_and_eval_cli(tmp_path, raccoon_dir):
    cfg = write_config(tmp_path, raccoon_dir)
    out = tmp_path / "run"
    first = runner.invoke(app, ["train", str(cfg), "--out", str(out), "--device", "cpu", "--epochs", "1"])  # fmt: skip
    assert first.exit_code == 0, first.output
    assert "epoch 1: loss" in first.output and "mAP" in first.output  # the progress display
    again = runner.invoke(app, ["train", str(cfg), "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, ["train", str(cfg), "--out", str(out), "--resume", "--no-progress"])  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    history = json.loads((out / "log.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and all("map" in r for r in history)

    result_json = tmp_path / "eval.json"
    ev = runner.invoke(app, ["eval", str(out / "best.pth"), "--data", str(cfg), "--json", str(result_json)])  # fmt: skip
    assert ev.exit_code == 0, ev.output
    assert "raccoon" in ev.output and "AP50" in ev.output
    payload = json.loads(result_json.read_text())
    assert payload["detector"]["backend"] == "torch" and payload["detector"]["input_hw"] == [
        128,
        128,
    ]
    assert payload["detector"]["score_thresh"] == 0.05
    assert payload["detector"]["preprocess"]["geometry"] == "pad"
    assert set(payload["metrics"]) >= {"map", "ap50", "ap75", "per_class_ap"}
    assert all(r["category_id"] == 1 for r in payload["results"])
    # the training log's mAP of that epoch is what eval measures on the same split
    best = max(history, key=lambda r: r["map"])
    assert payload["metrics"]["map"] == pytest.approx(best["map"], abs=1e-6)
    # the benchmarks' hook measures the same on an opened backend, and leaves it open
    from nanodet_deploy.evaluation import evaluate_backend
    from nanodet_deploy.runtimes.registry import open_backend

    backend = open_backend(out / "best.pth")
    value = evaluate_backend(backend, cfg, input_hw=(128, 128)).map
    assert value == pytest.approx(best["map"], abs=1e-6) and backend.wrapper is not None
    backend.close()


def test_eval_cli_errors(tmp_path, raccoon_dir, reference_dir):
    cfg = write_config(tmp_path, raccoon_dir)
    coco = reference_dir / "nanodet-m_coco.pth"

    def run(*args):
        result = runner.invoke(app, ["eval", *map(str, args)])
        assert result.exit_code == 2, result.output
        return " ".join(result.output.split())

    assert "tiny.yaml: the data has 1 classes ['raccoon'], the model 80" in run(coco, "--data", cfg)
    assert "none.pth" in run(tmp_path / "none.pth", "--data", cfg)
    assert "export folder" in run(coco, "--data", cfg, "--backend", "ncnn")
    assert "config file not found" in run(coco, "--data", tmp_path / "nope.yaml")


def test_shipped_raccoon_configs_load(monkeypatch):
    from nanodet_deploy.config import from_plain
    from nanodet_deploy.train.transforms import AugmentConfig

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.delenv("RACCOON_DIR", raising=False)
    monkeypatch.delenv("NANODET_COCO_WEIGHTS", raising=False)
    configs = sorted((repo / "configs").glob("raccoon_*.yaml"))
    assert len(configs) == 5
    for path in configs:
        cfg = load_config(path)
        assert cfg.data.root == str(repo.parent / "shared" / "datasets" / "raccoon")
        assert cfg.model.class_names == ("raccoon",) and cfg.model.input_hw == (320, 320)
        from_plain(AugmentConfig, cfg.augment, "augment", str(path))
    finetune = load_config(repo / "configs" / "raccoon_nanodet-m_320_finetune.yaml")
    assert finetune.train.init_from == str(
        repo.parent / "shared" / "reference" / "nanodet-m_coco.pth"
    )
    plus = load_config(repo / "configs" / "raccoon_nanodet-plus-m_320_backbone.yaml")
    assert plus.train.init_from == finetune.train.init_from
    assert plus.train.init_parts == ("backbone",) and plus.model.arch == "nanodet-plus"
    # the 300-epoch variant differs from it only in schedule length, evaluation interval, workers
    long = load_config(repo / "configs" / "raccoon_nanodet-plus-m_320_backbone_300e.yaml")
    assert (long.train.epochs, long.train.eval_interval, long.train.num_workers) == (300, 5, 8)
    assert long.model == plus.model and long.data == plus.data and long.augment == plus.augment
    assert replace(long.train, epochs=60, eval_interval=1, num_workers=1) == plus.train
    monkeypatch.setenv("NANODET_COCO_WEIGHTS", "/elsewhere/w.pth")
    assert (
        load_config(repo / "configs" / "raccoon_nanodet-m_320_finetune.yaml").train.init_from
        == "/elsewhere/w.pth"
    )

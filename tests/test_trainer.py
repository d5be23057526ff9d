"""The training loop on a tiny raccoon subset: the loss falls, resume is exact, logs and files."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
from functools import partial
from pathlib import Path

import pytest
import torch

from nanodet_deploy.checkpoint import read_checkpoint
from nanodet_deploy.config import zoo_config
from nanodet_deploy.datasets import load_voc
from nanodet_deploy.models import build_model
from nanodet_deploy.train.criterion import build_criterion
from nanodet_deploy.train.data import DetectionDataset, collate
from nanodet_deploy.train.run_files import LAST
from nanodet_deploy.train.schedule import LRSchedule
from nanodet_deploy.train.trainer import fit, seed_everything
from nanodet_deploy.train.transforms import AugmentConfig, TrainTransform
from nanodet_deploy.train_config import DataConfig, SplitConfig, TrainConfig, TrainingConfig

INPUT_HW = (128, 128)


def tiny_config(raccoon_dir: Path, tmp: Path, **train) -> TrainingConfig:
    """4 training and 2 validation raccoon images, nanodet-m-0.5x at 128x128."""
    (tmp / "tr.txt").write_text("\n".join(f"raccoon-{i}" for i in (1, 2, 3, 4)))
    (tmp / "va.txt").write_text("raccoon-5\nraccoon-6\n")
    data = DataConfig(root=str(raccoon_dir), train=SplitConfig(split=str(tmp / "tr.txt")),
                      val=SplitConfig(split=str(tmp / "va.txt")))  # fmt: skip
    options = dict(epochs=2, batch_size=2, num_workers=0, lr=2e-3, warmup_steps=2, seed=3)
    model = dataclasses.replace(zoo_config("nanodet-m-0.5x"), input_hw=INPUT_HW)
    return TrainingConfig(model, data, TrainConfig(**{**options, **train}))


def fixed_batch_loss(model, raccoon_dir: Path) -> float:
    """Loss on the 4 training images without augmentation (train-mode BN, no update)."""
    records = load_voc(raccoon_dir, ["raccoon-1", "raccoon-2", "raccoon-3", "raccoon-4"]).records
    cfg = model.cfg
    transform = TrainTransform(INPUT_HW, AugmentConfig.none(), cfg.mean_bgr, cfg.std_bgr)
    dataset = DetectionDataset(records, transform)
    images, targets, _ = partial(collate, size_multiple=32)([dataset[i] for i in range(4)])
    probe = build_model(cfg)
    probe.load_state_dict(model.state_dict())
    with torch.no_grad():
        head, aux = probe.train().forward_train(images)
        loss = build_criterion(cfg)(head, aux, [t["boxes_xyxy"] for t in targets],
                                    [t["labels"] for t in targets], INPUT_HW)  # fmt: skip
    return loss.total.item()


def test_few_steps_lower_the_loss(raccoon_dir, tmp_path):
    cfg = tiny_config(raccoon_dir, tmp_path, epochs=4, eval_interval=0, ema=False, lr=5e-3,
                      warmup_steps=0, lr_schedule="constant")  # fmt: skip
    cfg = dataclasses.replace(cfg, augment=dataclasses.asdict(AugmentConfig.none()))
    seed_everything(cfg.train.seed)
    one_class = dataclasses.replace(cfg.model, num_classes=1, class_names=("raccoon",))
    before = fixed_batch_loss(build_model(one_class), raccoon_dir)
    result = fit(cfg, tmp_path / "run", device="cpu")
    after = fixed_batch_loss(result.model, raccoon_dir)
    assert after < 0.8 * before, (before, after)
    assert result.state.step == 8 and not (tmp_path / "run" / "best.pth").exists()
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"] and "map" not in rows[0]


class Interrupt(Exception):
    pass


class CrashInEpoch2:
    """A reporter that raises in the middle of epoch 2 (like Ctrl-C)."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch = epoch

    def step(self, done: int, terms: dict, lr: float) -> None:
        if self.epoch == 2 and done == 1:
            raise Interrupt

    def end_epoch(self, record: dict) -> None:
        pass


def test_resume_equals_uninterrupted_bitwise(raccoon_dir, tmp_path):
    cfg = tiny_config(raccoon_dir, tmp_path)
    straight = fit(cfg, tmp_path / "a", device="cpu")
    with pytest.raises(Interrupt):
        fit(cfg, tmp_path / "b", device="cpu", reporter=CrashInEpoch2())
    assert read_checkpoint(tmp_path / "b" / LAST).raw["epoch"] == 1
    with pytest.raises(ValueError, match="--resume"):
        fit(cfg, tmp_path / "b", device="cpu")  # never overwrite a run silently
    resumed = fit(cfg, tmp_path / "b", device="cpu", resume=True)
    a, b = (read_checkpoint(p / LAST).raw for p in (tmp_path / "a", tmp_path / "b"))
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 4
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"]) and a["best"] == b["best"]
    assert torch.equal(straight.model.head.gfl_cls[0].weight, resumed.model.head.gfl_cls[0].weight)
    history = json.loads((tmp_path / "b" / "log.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and "map" in history[-1]
    best = read_checkpoint(tmp_path / "b" / "best.pth")
    assert best.used_ema and best.config.class_names == ("raccoon",)
    assert best.raw["train_config"]["train"]["epochs"] == 2
    # resuming a finished run is a no-op
    assert fit(cfg, tmp_path / "b", device="cpu", resume=True).state.step == 4


def test_worker_processes_give_the_same_training(raccoon_dir, tmp_path):
    """Batches depend on (seed, epoch, index) only: 0 or 2 loader workers train identically."""
    cfg = tiny_config(raccoon_dir, tmp_path, epochs=2, eval_interval=0)
    inline = fit(cfg, tmp_path / "w0", device="cpu").model.state_dict()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, num_workers=2))
    workers = fit(cfg, tmp_path / "w2", device="cpu").model.state_dict()
    assert all(torch.equal(inline[k], workers[k]) for k in inline)


def test_image_deleted_mid_run_is_replaced_alike_with_workers(
    raccoon_dir, tmp_path, monkeypatch, caplog
):
    """A training image deleted after loading is warned about at its step and replaced; 0 or
    2 loader workers still train identically (the replacement depends on the seed only)."""
    from nanodet_deploy.train import trainer

    root = tmp_path / "voc"
    for sub, ext in (("images", "jpg"), ("annotations", "xml")):
        (root / sub).mkdir(parents=True)
        for i in range(1, 7):
            shutil.copyfile(
                raccoon_dir / sub / f"raccoon-{i}.{ext}", root / sub / f"raccoon-{i}.{ext}"
            )
    gone = root / "images" / "raccoon-3.jpg"
    real_build = trainer.build_data

    def build_then_delete(*args, **kwargs):
        shutil.copyfile(raccoon_dir / "images" / gone.name, gone)  # verified as fine
        data = real_build(*args, **kwargs)
        gone.unlink()
        return data

    monkeypatch.setattr(trainer, "build_data", build_then_delete)
    cfg = tiny_config(root, tmp_path, epochs=2, eval_interval=0)
    runs = []
    for workers in (0, 2):
        caplog.clear()
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, num_workers=workers))
        with caplog.at_level(logging.WARNING):
            result = fit(cfg, tmp_path / f"w{workers}", device="cpu")
        warned = [r.getMessage() for r in caplog.records if f"skipped {gone}" in r.getMessage()]
        assert len(warned) == 2 and "image file not found; used" in warned[0], warned
        assert result.state.step == 4  # no step lost
        runs.append((result.model.state_dict(), [w.split(":")[0] for w in warned]))
    (inline, steps0), (workers, steps2) = runs
    assert steps0 == steps2  # the same steps hit the missing file
    assert all(torch.equal(inline[k], workers[k]) for k in inline)


def test_lr_schedule_warmup_cosine_multistep():
    s = LRSchedule(0.1, total_steps=100, steps_per_epoch=10, warmup_steps=10, warmup_ratio=0.1,
                   min_lr=0.0)  # fmt: skip
    assert s(0) == pytest.approx(0.01) and s(10) == pytest.approx(s.main(10))
    assert s(5) == pytest.approx(s.main(5) * 0.55)
    assert s(50) == pytest.approx(0.05) and s(100) == pytest.approx(0.0)
    m = LRSchedule(0.1, 100, 10, kind="multistep", milestones=(3, 6), gamma=0.1)
    assert [round(m(e * 10), 6) for e in (0, 2, 3, 5, 6, 9)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


def test_finetune_init_from_official_weights_unfolds_batchnorm(
    raccoon_dir, reference_dir, tmp_path
):
    """COCO weights (80 classes, BN folded into the convs) -> 1-class model ready to train."""
    from nanodet_deploy.checkpoint import check_and_load, read_checkpoint
    from nanodet_deploy.train.folded_bn import folded_batchnorms
    from nanodet_deploy.train.trainer import build_data, init_weights

    weights = reference_dir / "nanodet-m_coco.pth"
    cfg = tiny_config(raccoon_dir, tmp_path)
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(zoo_config("nanodet-m"), input_hw=INPUT_HW)
    )
    data = build_data(cfg, with_val=False)
    model = build_model(data.model_cfg)
    init_weights(model, str(weights), (), cfg.source, data, batch_size=4)
    coco = read_checkpoint(weights).model
    box_rows = coco["head.gfl_cls.0.weight"][-32:]
    assert torch.equal(model.head.gfl_cls[0].weight[-32:], box_rows)
    assert model.head.gfl_cls[0].weight.shape[0] == 1 + 32
    assert not folded_batchnorms(model)
    # the eval-mode function is unchanged: same box outputs as a plain strict load
    reference = build_model(data.model_cfg)
    check_and_load(reference, coco, "coco", allow_class_mismatch=True)
    assert len(folded_batchnorms(reference)) == 67
    x = torch.randn(2, 3, *INPUT_HW)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x)[..., 1:], reference.eval()(x)[..., 1:],
                                   atol=2e-4, rtol=1e-4)  # fmt: skip


def test_init_parts_loads_the_coco_backbone_into_nanodet_plus(
    raccoon_dir, reference_dir, tmp_path, caplog
):
    """train.init_parts: [backbone] -- NanoDet-m's ShuffleNetV2 under a NanoDet-Plus."""
    from nanodet_deploy.checkpoint import read_checkpoint
    from nanodet_deploy.train.folded_bn import folded_batchnorms
    from nanodet_deploy.train.trainer import build_data, init_weights

    weights = reference_dir / "nanodet-m_coco.pth"
    cfg = tiny_config(raccoon_dir, tmp_path)
    plus = dataclasses.replace(zoo_config("nanodet-plus-m"), input_hw=INPUT_HW)
    data = build_data(dataclasses.replace(cfg, model=plus), with_val=False)
    torch.manual_seed(0)
    model = build_model(data.model_cfg)
    neck_before = model.fpn.state_dict()["reduce_layers.0.conv.weight"].clone()
    with caplog.at_level("INFO", logger="nanodet_deploy.train.trainer"):
        init_weights(model, str(weights), ("backbone",), cfg.source, data, batch_size=4)
    line = next(r.getMessage() for r in caplog.records if "init_parts" in r.getMessage())
    assert "loaded backbone (275 tensors)" in line and "neck: not requested" in line
    assert "head: not requested (85 tensors in the checkpoint)" in line
    coco = read_checkpoint(weights).model
    key = "backbone.stage2.0.branch1.0.weight"  # a conv: copied as is (BN folded in)
    assert torch.equal(model.state_dict()[key], coco[key])
    assert torch.equal(model.fpn.state_dict()["reduce_layers.0.conv.weight"], neck_before)
    assert not folded_batchnorms(model)  # the backbone's folded BN were re-estimated


def test_init_parts_mismatch_names_the_keys(raccoon_dir, reference_dir, tmp_path):
    from nanodet_deploy.config import ConfigError
    from nanodet_deploy.train.trainer import build_data, init_weights

    cfg = tiny_config(raccoon_dir, tmp_path)
    plus = dataclasses.replace(zoo_config("nanodet-plus-m"), input_hw=INPUT_HW)
    data = build_data(dataclasses.replace(cfg, model=plus), with_val=False)
    model = build_model(data.model_cfg)
    weights = str(reference_dir / "nanodet-m_coco.pth")
    with pytest.raises(ConfigError, match=r"(?s)part 'neck' does not fit.*fpn\.reduce_layers\.0"):
        init_weights(model, weights, ("backbone", "neck"), cfg.source, data, batch_size=4)
    wide = build_model(dataclasses.replace(data.model_cfg, backbone_width="1.5x"))
    with pytest.raises(
        ConfigError,
        match=r"(?s)other shapes \(265\): backbone\.stage2\.0\.branch1\.2\.weight: checkpoint \[58, 24, 1, 1\] vs model \[88",
    ):
        init_weights(wide, weights, ("backbone",), cfg.source, data, batch_size=4)


def test_unfold_batchnorm_makes_train_mode_match_eval_mode(reference_dir):
    from nanodet_deploy.checkpoint import load_model
    from nanodet_deploy.train.folded_bn import unfold_batchnorm

    model, _ = load_model(reference_dir / "nanodet-m_coco.pth")
    x = torch.randn(4, 3, *INPUT_HW) * 2
    with torch.no_grad():
        before_eval = model.eval()(x)
        before_train = build_and_run_train_mode(model, x)
        assert unfold_batchnorm(model, [x]) == 67
        after_eval = model.eval()(x)
        after_train = build_and_run_train_mode(model, x)
    torch.testing.assert_close(after_eval, before_eval, atol=2e-4, rtol=1e-4)
    assert (before_train - before_eval).abs().mean() > 0.5
    torch.testing.assert_close(after_train, after_eval, atol=2e-3, rtol=1e-3)


def build_and_run_train_mode(model, x):
    """Training-mode forward on a copy (batch statistics; the model's buffers stay as they are)."""
    import copy

    return copy.deepcopy(model).train()(x)

"""Two CPU processes (gloo) train with DistributedDataParallel through the real ``fit``."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import tiny_config

from nanodet_deploy.checkpoint import read_checkpoint
from nanodet_deploy.train.trainer import fit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, raccoon_dir: str, tmp: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    from nanodet_deploy.train import distributed

    cfg = tiny_config(Path(raccoon_dir), Path(tmp), epochs=2, batch_size=1)
    result = fit(cfg, Path(tmp) / "run", device="cpu")
    assert distributed.current_info().world_size == world
    torch.save(
        {"model": result.model.state_dict(), "ema": result.ema.state_dict(),
         "step": result.state.step, "history": result.state.history},
        Path(tmp) / f"rank{rank}.pt",
    )  # fmt: skip
    distributed.shutdown()


def test_two_process_ddp_keeps_ranks_identical(raccoon_dir, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(raccoon_dir), str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # 4 images over 2 ranks at batch 1: 2 steps per epoch on each rank
    assert r0["step"] == r1["step"] == 4
    # parameters, BN buffers and the EMA are bitwise identical on both ranks
    for key in ("model", "ema"):
        assert all(torch.equal(r0[key][k], r1[key][k]) for k in r0[key]), key
    # only rank 0 evaluated, logged and wrote checkpoints; they hold the shared weights
    assert len(r0["history"]) == 2 and "map" in r0["history"][-1]
    assert r1["history"] == []
    last = read_checkpoint(tmp_path / "run" / "last.pth").raw
    assert all(torch.equal(last["model"][k], r1["model"][k]) for k in last["model"])
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best.pth", "last.pth", "log.csv", "log.json"]  # fmt: skip
    # training moved the weights away from the initialization and the EMA lags behind them
    assert not torch.equal(last["model"]["head.gfl_cls.0.bias"], last["ema"]["head.gfl_cls.0.bias"])

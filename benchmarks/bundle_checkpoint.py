"""Make the bundled default model: a trained checkpoint reduced to its inference weights.

    python benchmarks/bundle_checkpoint.py runs/raccoon_nanodet-m_320_finetune/best.pth \
        assets/nanodet-m-raccoon-320.pth

Keeps the model config, the EMA weights (as ``model``; what evaluation used), the epoch, the
val metrics of that epoch and the training config; drops the raw weights, optimizer and RNG
state. The training-only aux modules of NanoDet-Plus are dropped too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nanodet_deploy.checkpoint import load_model, read_checkpoint, save_checkpoint, sha256_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    args = parser.parse_args()
    ckpt = read_checkpoint(args.checkpoint)
    model, _ = load_model(args.checkpoint)  # strict load: proves the weights fit the config
    extra = {
        "metrics": ckpt.raw.get("metrics") or _logged_metrics(args.checkpoint, ckpt.raw["epoch"]),
        "train_config": ckpt.raw.get("train_config"),
        "source": {"checkpoint": args.checkpoint, "sha256": sha256_file(args.checkpoint),
                   "weights": "ema" if ckpt.used_ema else "model"},
    }  # fmt: skip
    save_checkpoint(
        args.out, model.cfg, model.inference_state_dict(), None, ckpt.raw["epoch"], extra
    )
    print(f"{args.out}: {model.cfg.name}, epoch {ckpt.raw['epoch']}, metrics {extra['metrics']}")


def _logged_metrics(checkpoint: str, epoch: int) -> dict | None:
    """The val metrics of ``epoch`` from the run's log.json (last.pth does not carry them)."""
    log = Path(checkpoint).parent / "log.json"
    if not log.is_file():
        return None
    record = next((r for r in json.loads(log.read_text()) if r["epoch"] == epoch), {})
    found = {k: record[k] for k in ("map", "ap50", "ap75") if k in record}
    return found or None


if __name__ == "__main__":
    main()

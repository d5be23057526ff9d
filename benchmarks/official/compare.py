"""Our trainer against official NanoDet's on the same data and budget: a table and mAP curves.

    python benchmarks/official/compare.py \
        --ours benchmarks/results/training/raccoon_nanodet-plus-m_320_backbone/log.json \
        --ours-eval benchmarks/results/raccoon_nanodet-plus-m_320_backbone_eval.json \
        --official benchmarks/results/official_training/raccoon_nanodet-plus-m_320_backbone/logs.txt \
        --official-eval benchmarks/results/official_raccoon_nanodet-plus-m_320_backbone_eval.json \
        --long benchmarks/results/training_gpu/raccoon_nanodet-plus-m_320_backbone_300e/log.json \
        --long-eval benchmarks/results/raccoon_nanodet-plus-m_320_backbone_300e_eval.json \
        --out benchmarks/results/official_comparison

Per-epoch val mAP comes from each trainer's own evaluation (both pycocotools on the val split,
score > 0.05, NMS 0.6, 100 detections); the final checkpoints are also scored by one judge,
``nanodet-deploy eval`` (the ``*_eval.json`` files). Official NanoDet logs no durations: its
epoch times are read from the log's timestamps (1 s resolution), from one ``Val_metrics`` line
to the next (training + evaluation); its training time per epoch ends at the epoch's first
``Val|`` line. Writes ``<out>.md``, ``<out>.json`` and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from datetime import datetime
from pathlib import Path

TRAIN_IMAGES = 160
STAMP = re.compile(r"^\[NanoDet\]\[(\d\d-\d\d \d\d:\d\d:\d\d)\]INFO: ?(.*)$")


def _time(stamp: str) -> datetime:
    return datetime.strptime("2000-" + stamp, "%Y-%m-%d %H:%M:%S")


def parse_official_log(path: Path) -> list[dict]:
    """One record per evaluated epoch: epoch, map, ap50, ap75, train_time_s, eval_time_s."""
    start, val_start, epoch, history = None, None, None, []
    for line in path.read_text().splitlines():
        m = STAMP.match(line)
        if not m:
            continue
        t, text = _time(m.group(1)), m.group(2)
        if text.startswith("Weight Averaging") or (start is None and text.startswith("Train|")):
            start = start or t  # the last line the trainer writes before its first step
        elif text.startswith("Train|"):
            epoch = int(re.search(r"Epoch(\d+)/", text).group(1))
        elif text.startswith("Val|") and val_start is None:
            val_start = t
            epoch = int(re.search(r"Epoch(\d+)/", text).group(1))
        elif text.startswith("Val_metrics:"):
            if start is None or val_start is None or epoch is None:
                raise SystemExit(f"{path}: Val_metrics before any training line")
            metrics = ast.literal_eval(text.split(":", 1)[1].strip())
            history.append({
                "epoch": epoch, "map": float(metrics["mAP"]), "ap50": float(metrics["AP_50"]),
                "ap75": float(metrics["AP_75"]),
                "train_time_s": (val_start - start).total_seconds(),
                "eval_time_s": (t - val_start).total_seconds(),
            })  # fmt: skip
            start, val_start = t, None
    if not history:
        raise SystemExit(f"{path}: no Val_metrics lines (not an official NanoDet training log)")
    return history


def summarize(name: str, machine: str, history: list[dict], judged: dict | None) -> dict:
    evals = [r for r in history if "map" in r]
    best = max(evals, key=lambda r: r["map"])
    train_s = sum(r.get("train_time_s", 0.0) for r in history)
    total_s = train_s + sum(r.get("eval_time_s", 0.0) for r in history)
    return {
        "run": name, "machine": machine, "epochs": history[-1]["epoch"],
        "minutes": round(total_s / 60, 1),
        "train_images_per_s": round(TRAIN_IMAGES * len(history) / train_s, 2),
        "best": {k: best[k] for k in ("epoch", "map", "ap50")},
        "final": {k: evals[-1][k] for k in ("epoch", "map", "ap50")},
        "judged_final": None if judged is None else
        {"map": judged["metrics"]["map"], "ap50": judged["metrics"]["ap50"]},
    }  # fmt: skip


def markdown(rows: list[dict]) -> str:
    lines = [
        "| trainer | machine | epochs | minutes | train images/s | best val mAP (epoch) | "
        "final val mAP / AP50 | final checkpoint, `nanodet-deploy eval` mAP / AP50 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        b, f, j = r["best"], r["final"], r["judged_final"]
        judged = "-" if j is None else f"{j['map']:.3f} / {j['ap50']:.3f}"
        lines.append(
            f"| {r['run']} | {r['machine']} | {r['epochs']} | {r['minutes']} | "
            f"{r['train_images_per_s']} | {b['map']:.3f} ({b['epoch']}) | "
            f"{f['map']:.3f} / {f['ap50']:.3f} (epoch {f['epoch']}) | {judged} |"
        )
    return "\n".join(lines) + "\n"


def plot(curves: list[tuple[str, list[dict]]], long: list[dict] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if long else 1, figsize=(13 if long else 7, 4.2), squeeze=False)
    ax = axes[0][0]
    for name, history in curves:
        ev = [r for r in history if "map" in r]
        ax.plot([r["epoch"] for r in ev], [r["map"] for r in ev], marker=".", label=name)
    ax.set_title("NanoDet-Plus-m 320, raccoon val mAP, 60 epochs (2 CPU cores)")
    if long:
        ev = [r for r in long if "map" in r]
        axes[0][1].plot([r["epoch"] for r in ev], [r["map"] for r in ev], marker=".",
                        label="ours, 300 epochs (GPU)")  # fmt: skip
        ours = [r for r in curves[0][1] if "map" in r]
        axes[0][1].plot(
            [r["epoch"] for r in ours],
            [r["map"] for r in ours],
            label=f"{curves[0][0]}, 60 epochs (CPU)",
        )
        axes[0][1].set_title("schedule length: 60 vs 300 epochs")
    for a in axes[0]:
        a.set_xlabel("epoch")
        a.set_ylim(0, 0.8)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ours", type=Path, required=True, help="our log.json (60 epochs, CPU)")
    p.add_argument("--ours-eval", type=Path, help="nanodet-deploy eval --json of its last.pth")
    p.add_argument("--official", type=Path, required=True, help="official logs.txt")
    p.add_argument("--official-eval", type=Path, help="nanodet-deploy eval --json of its ckpt")
    p.add_argument("--long", type=Path, help="our log.json of the 300-epoch GPU run")
    p.add_argument("--long-eval", type=Path, help="nanodet-deploy eval --json of its weights")
    p.add_argument("--machine", default="2 CPU cores (AMD EPYC)")
    p.add_argument("--long-machine", default="NVIDIA H200 + 16 CPU cores")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/official_comparison"))
    args = p.parse_args()

    def judged(path: Path | None) -> dict | None:
        return json.loads(path.read_text()) if path else None

    ours = json.loads(args.ours.read_text())
    official = parse_official_log(args.official)
    rows = [summarize("nanodet-deploy", args.machine, ours, judged(args.ours_eval)),
            summarize("official NanoDet", args.machine, official, judged(args.official_eval))]  # fmt: skip
    long = json.loads(args.long.read_text()) if args.long else None
    if long:
        rows.append(
            summarize("nanodet-deploy, 300 epochs", args.long_machine, long, judged(args.long_eval))
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot([("nanodet-deploy", ours), ("official NanoDet", official)], long,
         args.out.with_suffix(".png"))  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()

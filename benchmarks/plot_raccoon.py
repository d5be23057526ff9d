"""Turn raccoon training logs into an mAP curve (PNG) and the final numbers (JSON + Markdown).

    python benchmarks/plot_raccoon.py runs/raccoon_nanodet-m_320_finetune \
        runs/raccoon_nanodet-m_320_scratch --out benchmarks/results/raccoon

writes ``<out>_map.png``, ``<out>_summary.json`` and ``<out>_summary.md``. Times are the
trainer's own per-epoch wall times (training + evaluation), summed: the x axis of the curves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TARGET_AP50, TARGET_MAP, TARGET_MINUTES = 0.80, 0.45, 60.0


def load_run(run_dir: Path) -> list[dict]:
    path = run_dir / "log.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no training log (run nanodet-deploy train first)")
    return json.loads(path.read_text())


def minutes(history: list[dict]) -> list[float]:
    total, out = 0.0, []
    for rec in history:
        total += rec.get("train_time_s", 0.0) + rec.get("eval_time_s", 0.0)
        out.append(total / 60.0)
    return out


def summarize(name: str, history: list[dict], train_images: int) -> dict:
    mins = minutes(history)
    evals = [(m, r) for m, r in zip(mins, history, strict=True) if "map" in r]
    if not evals:
        return {"run": name, "epochs": len(history), "minutes": round(mins[-1], 2) if mins else 0}
    best_min, best = max(evals, key=lambda e: e[1]["map"])
    within = [r for m, r in evals if m <= TARGET_MINUTES]
    reached = next(
        (m for m, r in evals if r["ap50"] >= TARGET_AP50 and r["map"] >= TARGET_MAP), None
    )
    return {
        "run": name, "epochs": len(history), "minutes": round(mins[-1], 2),
        "final": {k: evals[-1][1][k] for k in ("epoch", "map", "ap50", "ap75")},
        "best": {**{k: best[k] for k in ("epoch", "map", "ap50", "ap75")}, "minutes": round(best_min, 2)},
        "best_within_60_min": max((r["map"] for r in within), default=None),
        "minutes_to_target": round(reached, 2) if reached is not None else None,
        "target": {"ap50": TARGET_AP50, "map": TARGET_MAP, "minutes": TARGET_MINUTES},
        "seconds_per_epoch_median": sorted(
            r.get("train_time_s", 0.0) + r.get("eval_time_s", 0.0) for r in history
        )[len(history) // 2],
        "train_images_per_s": round(
            train_images * len(history) / sum(r.get("train_time_s", 0.0) for r in history), 2
        ),
    }  # fmt: skip


def plot(runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    longest = max(minutes(h)[-1] for h in runs.values() if h)
    for name, history in runs.items():
        mins = minutes(history)
        ev = [(m, r) for m, r in zip(mins, history, strict=True) if "map" in r]
        axes[0].plot([m for m, _ in ev], [r["map"] for _, r in ev], marker=".", label=name)
        axes[1].plot([m for m, _ in ev], [r["ap50"] for _, r in ev], marker=".", label=name)
        axes[2].plot(mins, [r["loss"] for r in history], label=name)
    for ax, title, target in zip(axes, ("val mAP@[.5:.95]", "val AP50", "train loss"),
                                 (TARGET_MAP, TARGET_AP50, None), strict=True):  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("minutes (training + evaluation)")
        ax.grid(alpha=0.3)
        if target is not None:
            ax.axhline(target, color="gray", ls="--", lw=0.8)
            ax.set_ylim(0, 1)
        if longest >= TARGET_MINUTES / 2:
            ax.axvline(TARGET_MINUTES, color="gray", ls=":", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(summaries: list[dict]) -> str:
    lines = ["| run | epochs | minutes | best mAP (epoch) | AP50 | AP75 | final mAP / AP50 | "
             "minutes to target | train images/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for s in summaries:
        if "best" not in s:
            lines.append(f"| {s['run']} | {s['epochs']} | {s['minutes']} | - | - | - | - | - | - |")
            continue
        b, f = s["best"], s["final"]
        lines.append(
            f"| {s['run']} | {s['epochs']} | {s['minutes']:.1f} | {b['map']:.3f} ({b['epoch']}) | "
            f"{b['ap50']:.3f} | {b['ap75']:.3f} | {f['map']:.3f} / {f['ap50']:.3f} | "
            f"{s['minutes_to_target'] or '-'} | {s['train_images_per_s']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (with log.json)")
    p.add_argument("--out", default="benchmarks/results/raccoon", help="output path prefix")
    p.add_argument("--train-images", type=int, default=160, help="training images per epoch")
    args = p.parse_args()
    runs = {r.name: load_run(r) for r in args.runs}
    summaries = [summarize(name, h, args.train_images) for name, h in runs.items()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(runs, out.with_name(out.name + "_map.png"))
    out.with_name(out.name + "_summary.json").write_text(json.dumps(summaries, indent=1) + "\n")
    out.with_name(out.name + "_summary.md").write_text(markdown(summaries))
    print(markdown(summaries))


if __name__ == "__main__":
    main()

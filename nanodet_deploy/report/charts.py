"""PNG charts of a benchmark report (matplotlib, Agg backend, written atomically).

- ``fps_<device>.png``: FPS by backend/precision, one bar per thread count, one panel per
  model and input size.
- ``latency_vs_size_<device>.png``: p50 latency against input size, one line per
  backend/precision/threads, one panel per model.
- ``devices.png``: devices side by side: best FPS (over thread counts) per model and
  backend/precision, one bar per real device. Emulated devices are left out of it.

Charts of emulated devices carry "EMULATED — not device speed" in their title.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; before pyplot is imported
import matplotlib.pyplot as plt

from nanodet_deploy.fileio import atomic_output

EMULATED_TAG = "EMULATED — not device speed"
_LINESTYLES = ("-", "--", ":", "-.")  # by thread count: colour = backend + precision


def draw_charts(rows: list[dict], out_dir: Path) -> list[Path]:
    paths: list[Path] = []
    for device in dict.fromkeys(r["device"] for r in rows):
        mine = [r for r in rows if r["device"] == device]
        paths.append(fps_chart(mine, out_dir / f"fps_{slug(device)}.png"))
        paths.append(latency_chart(mine, out_dir / f"latency_vs_size_{slug(device)}.png"))
    real = [r for r in rows if not r["emulated"]]
    if real:
        paths.append(devices_chart(real, out_dir / "devices.png"))
    return paths


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "device"


def _title(rows: list[dict], what: str) -> str:
    device = textwrap.shorten(rows[0]["device"], width=70, placeholder="…")
    return f"{what}\n{device}" + (f"\n{EMULATED_TAG}" if rows[0]["emulated"] else "")


def _panels(n: int, width: float = 5.0, height: float = 3.6):
    cols = min(n, 3)
    rows = -(-n // cols)
    size = (max(width * cols, 7.5), height * rows + 1.0)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def fps_chart(rows: list[dict], path: Path) -> Path:
    groups = list(dict.fromkeys((r["model"], r["input_h"], r["input_w"]) for r in rows))
    fig, axes = _panels(len(groups))
    for ax, (model, h, w) in zip(axes, groups, strict=True):
        mine = [r for r in rows if (r["model"], r["input_h"], r["input_w"]) == (model, h, w)]
        cats = list(dict.fromkeys(f"{r['backend']}\n{r['precision']}" for r in mine))
        threads = sorted({r["threads"] for r in mine})
        width = 0.8 / len(threads)
        for k, t in enumerate(threads):
            vals = {
                f"{r['backend']}\n{r['precision']}": r["fps"] for r in mine if r["threads"] == t
            }
            xs = [i + (k - (len(threads) - 1) / 2) * width for i in range(len(cats))]
            ax.bar(xs, [vals.get(c, 0.0) for c in cats], width, label=f"{t} thread{'s' * (t > 1)}")
        ax.set_xticks(range(len(cats)), cats, fontsize=8)
        ax.set_xlim(-0.6, max(len(cats), 3) - 0.4)
        ax.set_title(f"{model} {h}x{w}", fontsize=10)
        ax.set_ylabel("FPS (end-to-end)")
        ax.legend(fontsize=7)
    fig.suptitle(_title(rows, "FPS by backend and threads"), fontsize=11)
    return _save(fig, path)


def latency_chart(rows: list[dict], path: Path) -> Path:
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = _panels(len(models))
    for ax, model in zip(axes, models, strict=True):
        mine = [r for r in rows if r["model"] == model]
        kinds = list(dict.fromkeys((r["backend"], r["precision"]) for r in mine))
        thread_counts = sorted({r["threads"] for r in mine})
        for key in dict.fromkeys((r["backend"], r["precision"], r["threads"]) for r in mine):
            pts = sorted(
                (r["input_h"] * r["input_w"], r["p50_ms"])
                for r in mine
                if (r["backend"], r["precision"], r["threads"]) == key
            )
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker="o",
                color=f"C{kinds.index(key[:2]) % 10}",
                linestyle=_LINESTYLES[thread_counts.index(key[2]) % len(_LINESTYLES)],
                label=f"{key[0]} {key[1]} {key[2]}t",
            )  # fmt: skip
        sizes = sorted(
            {(r["input_h"] * r["input_w"], f"{r['input_h']}x{r['input_w']}") for r in mine}
        )
        ax.set_xticks([s[0] for s in sizes], [s[1] for s in sizes], fontsize=8)
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("input size (H x W)")
        ax.set_ylabel("p50 latency, ms")
        ax.legend(fontsize=7)
    fig.suptitle(_title(rows, "Latency against input size"), fontsize=11)
    return _save(fig, path)


def devices_chart(rows: list[dict], path: Path) -> Path:
    devices = list(dict.fromkeys(r["device"] for r in rows))
    models = list(dict.fromkeys((r["model"], r["input_h"], r["input_w"]) for r in rows))
    fig, axes = _panels(len(models))
    for ax, (model, h, w) in zip(axes, models, strict=True):
        mine = [r for r in rows if (r["model"], r["input_h"], r["input_w"]) == (model, h, w)]
        cats = list(dict.fromkeys(f"{r['backend']}\n{r['precision']}" for r in mine))
        width = 0.8 / len(devices)
        for k, dev in enumerate(devices):
            best: dict[str, float] = {}
            for r in mine:
                if r["device"] == dev:
                    cat = f"{r['backend']}\n{r['precision']}"
                    best[cat] = max(best.get(cat, 0.0), r["fps"])
            xs = [i + (k - (len(devices) - 1) / 2) * width for i in range(len(cats))]
            ax.bar(xs, [best.get(c, 0.0) for c in cats], width, label=dev)
        ax.set_xticks(range(len(cats)), cats, fontsize=8)
        ax.set_xlim(-0.6, max(len(cats), 3) - 0.4)
        ax.set_title(f"{model} {h}x{w}", fontsize=10)
        ax.set_ylabel("best FPS over threads")
        ax.legend(fontsize=7)
    fig.suptitle("Devices side by side (best FPS over thread counts)", fontsize=11)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path

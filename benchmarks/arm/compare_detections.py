"""Detections of the emulated arm64 runs against the same export on the host (x86).

    python benchmarks/arm/compare_detections.py HOST_DIR ARM_DIR [--out FILE.md]

Both folders hold ``<backend>_<precision>.json`` files written by ``nanodet-deploy detect
--json`` on the same images (run_bench.sh writes them). A detection matches when the other run
has one of the same class with IoU >= 0.9; the table gives the matches, the largest box-corner
and score differences of matched pairs. fp16 / int8 kernels differ between x86 and ARM (ncnn
uses ARMv8.2 fp16 arithmetic and its ARM int8 kernels there), so small differences are
expected; a different model or preprocessing shows up as missing detections.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(path: Path) -> dict[str, list[dict]]:
    """``detect --json`` records (one per detection) grouped by image name."""
    by_image: dict[str, list[dict]] = {}
    for rec in json.loads(path.read_text()):
        by_image.setdefault(Path(rec["image"]).name, []).append(rec)
    return by_image


def iou(a: list[float], b: list[float]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


def compare(host: dict, arm: dict) -> tuple[int, int, int, float, float]:
    matched = total_host = total_arm = 0
    box_diff = score_diff = 0.0
    for name, dets in host.items():
        other = arm.get(name, [])
        total_host, total_arm = total_host + len(dets), total_arm + len(other)
        for d in dets:
            cands = [o for o in other if o["label"] == d["label"]]
            best = max(cands, key=lambda o: iou(d["box_xyxy"], o["box_xyxy"]), default=None)
            if best is not None and iou(d["box_xyxy"], best["box_xyxy"]) >= 0.9:
                matched += 1
                box_diff = max(
                    box_diff, float(np.abs(np.subtract(d["box_xyxy"], best["box_xyxy"])).max())
                )
                score_diff = max(score_diff, abs(d["score"] - best["score"]))
    return matched, total_host, total_arm, box_diff, score_diff


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host_dir", type=Path)
    p.add_argument("arm_dir", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    lines = ["| backend precision | matched / host dets (arm dets) | max box diff px | "
             "max score diff |", "|---|---|---|---|"]  # fmt: skip
    for host_file in sorted(args.host_dir.glob("*.json")):
        arm_file = args.arm_dir / host_file.name
        if not arm_file.is_file():
            lines.append(f"| {host_file.stem} | no arm64 run | | |")
            continue
        m, nh, na, box, score = compare(load(host_file), load(arm_file))
        lines.append(f"| {host_file.stem.replace('_', ' ')} | {m} / {nh} ({na}) | {box:.3f} | "
                     f"{score:.4f} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

"""What each preprocess sampler and geometry costs or changes, measured on torch / onnxruntime / ncnn.

    python benchmarks/sampler_table.py [--out benchmarks/results/samplers]

1. The bundled raccoon NanoDet-m (trained with official NanoDet's warp augmentation): COCO val
   mAP on the raccoon val split for sampler {warp, resize} x geometry {pad, letterbox, plain},
   on each backend (one export with a dynamic ONNX, so every backend sees the same tensors).
2. The official COCO NanoDet-m weights: how many of the official demo's detections (score >
   0.35, warp sampler, pad geometry) each sampler / geometry reproduces on the 5 reference
   images (same label, IoU >= 0.9, |score difference| <= 0.03).

Writes ``samplers.json`` and ``samplers.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from nanodet_deploy.api import evaluate, export
from nanodet_deploy.detector import Detector
from nanodet_deploy.device import describe_device, library_versions
from nanodet_deploy.fileio import write_json_atomic, write_text_atomic
from nanodet_deploy.preprocess import load_image

SAMPLERS = ("warp", "resize")
GEOMETRIES = ("pad", "letterbox", "plain")
BACKENDS = ("torch", "onnxruntime", "ncnn")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="assets/nanodet-m-raccoon-320.pth")
    p.add_argument("--data", default="configs/raccoon_nanodet-m_320_finetune.yaml")
    p.add_argument("--reference", default="../shared/reference")
    p.add_argument("--out", default="benchmarks/results/samplers")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="samplers-"))
    raccoon = work / "raccoon"
    export(args.checkpoint, raccoon, dynamic=True, ncnn_fp16=False, verify=False)
    maps = []
    for backend, sampler, geometry in itertools.product(BACKENDS, SAMPLERS, GEOMETRIES):
        r = evaluate(raccoon, args.data, backend=backend, sampler=sampler, geometry=geometry)
        maps.append({"backend": backend, "sampler": sampler, "geometry": geometry,
                     "map": r.map, "ap50": r.ap50})  # fmt: skip
        print(json.dumps(maps[-1]), flush=True)
    ref = Path(args.reference)
    coco = work / "coco"
    export(ref / "nanodet-m_coco.pth", coco, dynamic=True, ncnn_fp16=False, verify=False)
    official = json.loads((ref / "nanodet-m_coco_detections.json").read_text())
    agreement = []
    for backend, sampler, geometry in itertools.product(BACKENDS, SAMPLERS, GEOMETRIES):
        agreement.append(_agreement(coco, backend, sampler, geometry, official, ref))
        print(json.dumps(agreement[-1]), flush=True)
    doc = {
        "benchmark": "samplers", "command": "python benchmarks/sampler_table.py",
        "timestamp": time.strftime("%FT%T%z"), "device": describe_device(),
        "versions": library_versions(), "raccoon_map": maps, "coco_agreement": agreement,
    }  # fmt: skip
    out = Path(args.out)
    write_json_atomic(out / "samplers.json", doc)
    write_text_atomic(out / "samplers.md", render(doc))
    print(f"wrote {out / 'samplers.md'}")


def _agreement(export_dir, backend, sampler, geometry, official, ref) -> dict:
    found = total = 0
    shifts = []
    for size in (320, 416):
        with Detector(export_dir, backend, threads=1, sampler=sampler, geometry=geometry,
                      input_hw=(size, size), score_thresh=0.05) as det:  # fmt: skip
            for run in official["runs"]:
                if run["input_size_cfg_wh"] != [size, size]:
                    continue
                ours = det.detect(load_image(ref / run["image"]))
                for d in run["all_post_process_detections"]:
                    if d["score"] <= 0.35:
                        continue
                    total += 1
                    shift = _partner_shift(d, ours)
                    if shift is not None:
                        found += 1
                        shifts.append(shift)
    return {"backend": backend, "sampler": sampler, "geometry": geometry, "official": total,
            "reproduced": found, "max_box_shift_px": max(shifts) if shifts else None}  # fmt: skip


def _partner_shift(det: dict, ours) -> float | None:
    box = np.array(det["bbox_xyxy"])
    best = None
    for b, s, label in zip(ours.boxes_xyxy, ours.scores, ours.labels, strict=True):
        if label != det["label"] or abs(float(s) - det["score"]) > 0.03 or _iou(box, b) < 0.9:
            continue
        shift = float(np.abs(b - box).max())
        best = shift if best is None else min(best, shift)
    return best


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.clip(rb - lt, 0, None).prod())
    area = lambda x: float((x[2] - x[0]) * (x[3] - x[1]))  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def render(doc: dict) -> str:
    maps = {(r["backend"], r["sampler"], r["geometry"]): r for r in doc["raccoon_map"]}
    agree = {(r["backend"], r["sampler"], r["geometry"]): r for r in doc["coco_agreement"]}
    lines = [
        "# Preprocess samplers and geometries, measured", "",
        f"Generated by `{doc['command']}` on {doc['device']['name']} ({doc['timestamp']}). "
        "`resize` = ncnn's `Mat.from_pixels_resize` (what an NCNN app computes); `warp` = "
        "official NanoDet's resize matrix with `cv2.warpAffine`.", "",
    ]  # fmt: skip
    lines += _grid(
        "## Raccoon val mAP@[.5:.95] / AP50 of the bundled NanoDet-m (trained with warp "
        "augmentation), 40 images",
        lambda r: f"{r['map']:.4f} / {r['ap50']:.4f}", maps,
    )  # fmt: skip
    lines.append("")
    lines += _grid(
        "## COCO NanoDet-m: official demo detections (score > 0.35, warp + pad, 320 and 416, "
        "5 images) reproduced (same label, IoU >= 0.9, |Δscore| <= 0.03)",
        lambda r: f"{r['reproduced']}/{r['official']}", agree,
    )  # fmt: skip
    return "\n".join(lines) + "\n"


def _grid(title: str, cell, by_key: dict) -> list[str]:
    """A titled table: one line per (sampler, geometry), one ``cell(record)`` per backend."""
    lines = [title, "", "| sampler | geometry | " + " | ".join(BACKENDS) + " |",
             "|---|---|" + "---|" * len(BACKENDS)]  # fmt: skip
    for sampler, geometry in itertools.product(SAMPLERS, GEOMETRIES):
        cells = [cell(by_key[b, sampler, geometry]) for b in BACKENDS]
        lines.append(f"| {sampler} | {geometry} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()

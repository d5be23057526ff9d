"""Render the README's result tables from the committed result files (never typed by hand).

    python benchmarks/readme_tables.py [--check]

Replaces the text between ``<!-- NAME -->`` and ``<!-- /NAME -->`` in README.md for:
``fps`` and ``int8`` (benchmarks/results/<device>/bench.json), ``training``
(benchmarks/results/raccoon_summary.json), ``fold`` (decode_fold.json), ``post``
(postprocess.json) and ``samplers`` (samplers/samplers.json). ``--check`` exits 1 when the README is out of date.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from nanodet_deploy.bench.records import read_records
from nanodet_deploy.report.rows import build_rows, md_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEVICE_DIR = RESULTS / "amd-epyc-x2"  # the machine the README's FPS table was measured on
ORDER = [("ncnn", "fp16"), ("ncnn", "fp32"), ("ncnn", "int8"), ("onnxruntime", "fp32"),
         ("onnxruntime", "int8"), ("mnn", "fp32"), ("mnn", "int8"), ("openvino", "fp32"),
         ("openvino", "bf16"), ("torch", "fp32")]  # fmt: skip


def fps_table() -> str:
    """One line per model, size, backend and precision: p50 at 1 and 2 threads (the fastest of
    each thread count in bold), the stage split and size of the faster one, and its val mAP."""
    rows = [r for r in build_rows(read_records([DEVICE_DIR / "bench.json"])) if not r["emulated"]]
    by_key = {
        (r["model"], r["input_h"], r["backend"], r["precision"], r["threads"]): r for r in rows
    }
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for size in sorted({r["input_h"] for r in rows if r["model"] == model}):
            for backend, precision in ORDER:
                one, two = (by_key.get((model, size, backend, precision, t)) for t in (1, 2))
                if one is None or two is None:
                    continue
                best = min((one, two), key=lambda r: r["p50_ms"])
                lines.append([
                    model, f"{size}", f"{backend} {precision}", _p50(one), _p50(two),
                    f"{best['preprocess_ms']:.1f} / {best['inference_ms']:.1f} / "
                    f"{best['postprocess_ms']:.2f}",
                    f"{best['model_mb']:.2f}" if best["model_mb"] else "–",
                    "–" if best["map"] is None else f"{best['map']:.3f}",
                ])  # fmt: skip
    header = ["model", "size", "backend", "p50 ms 1 thread", "p50 ms 2 threads",
              "pre / infer / post ms (faster)", "model MB", "val mAP"]  # fmt: skip
    return md_table(header, lines)


def _p50(row: dict) -> str:
    text = f"{row['p50_ms']:.1f}"
    return f"**{text}**" if row.get("fastest") else text


def training_table() -> str:
    runs = json.loads((RESULTS / "raccoon_summary.json").read_text())
    lines = [
        [r["run"].removeprefix("raccoon_"), str(r["epochs"]), f"{r['minutes']:.1f}",
         f"{r['final']['map']:.3f} / {r['final']['ap50']:.3f}",
         f"{r['best']['map']:.3f} ({r['best']['epoch']})", f"{r['best']['ap50']:.3f}",
         f"{r.get('train_images_per_s', '–')}"]
        for r in runs
    ]  # fmt: skip
    header = ["run", "epochs", "minutes", "final mAP / AP50", "best val mAP (epoch)", "its AP50",
              "train images/s"]  # fmt: skip
    return md_table(header, lines)


def fold_table() -> str:
    data = json.loads((RESULTS / "decode_fold.json").read_text())
    lines = []
    for threads, v in sorted(data["verdicts"].items()):
        infer = {
            r["layout"]: r["latency_ms"]["inference"]["p50"]
            for r in data["results"] if str(r["threads"]) == threads
        }  # fmt: skip
        e2e = v["end_to_end_p50_ms"]
        lines.append([
            threads, f"{infer['decoded']:.2f}", f"{infer['raw']:.2f}",
            f"{v['fold_cost_pct_p50']:+.1f} %", f"{e2e['decoded']:.2f}",
            f"{e2e['raw_plus_numpy_decode']:.2f}",
        ])  # fmt: skip
    header = ["threads", "ncnn infer, decoded ms", "ncnn infer, raw ms", "cost of folding",
              "end to end, decoded ms", "raw + NumPy decode ms"]  # fmt: skip
    return md_table(header, lines)


def post_table() -> str:
    data = json.loads((RESULTS / "postprocess.json").read_text())
    lines = [
        [str(r["size"]), "multi-label (official)" if r["multi_label"] else "best class",
         f"{r['median_p50_ms']:.2f}", f"{r['worst_p50_ms']:.2f}", r["most_candidates"]]
        for r in data["summary"] if r["layout"] == "pad"
    ]  # fmt: skip
    header = ["size", "mode", "p50 ms, median of 5 images", "p50 ms, worst image",
              "most candidates"]  # fmt: skip
    return md_table(header, lines)


def samplers_table() -> str:
    """Raccoon val mAP of the bundled model per sampler and geometry (onnxruntime; torch and
    ncnn give the same to 4 decimals, see benchmarks/results/samplers/samplers.md)."""
    data = json.loads((RESULTS / "samplers" / "samplers.json").read_text())
    maps = {(r["sampler"], r["geometry"]): r for r in data["raccoon_map"]
            if r["backend"] == "onnxruntime"}  # fmt: skip
    agree = {(r["sampler"], r["geometry"]): r for r in data["coco_agreement"]
             if r["backend"] == "onnxruntime"}  # fmt: skip
    lines = []
    for geometry in ("pad", "letterbox", "plain"):
        w, r = maps["warp", geometry], maps["resize", geometry]
        lines.append([
            geometry, f"{w['map']:.4f} / {w['ap50']:.4f}", f"{r['map']:.4f} / {r['ap50']:.4f}",
            f"{r['map'] - w['map']:+.4f}",
            f"{agree['warp', geometry]['reproduced']}/{agree['warp', geometry]['official']}",
            f"{agree['resize', geometry]['reproduced']}/{agree['resize', geometry]['official']}",
        ])  # fmt: skip
    header = ["geometry", "warp: mAP / AP50", "resize: mAP / AP50", "resize - warp",
              "official dets kept, warp", "official dets kept, resize"]  # fmt: skip
    return md_table(header, lines)


def int8_table() -> str:
    """fp32 / fp16 vs int8 per runtime for each model at 320: latency, size, mAP, AP50."""
    rows = [r for r in build_rows(read_records([DEVICE_DIR / "bench.json"])) if not r["emulated"]]
    by_key = {(r["model"], r["input_h"], r["backend"], r["precision"], r["threads"]): r
              for r in rows}  # fmt: skip
    pairs = [("ncnn", "fp16"), ("ncnn", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
             ("mnn", "fp32"), ("mnn", "int8")]  # fmt: skip
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        floats: dict[str, dict] = {}
        for backend, precision in pairs:
            one, two = (by_key.get((model, 320, backend, precision, t)) for t in (1, 2))
            if one is None or two is None:
                continue
            if precision != "int8":
                floats[backend] = one
            ref = floats.get(backend) if precision == "int8" else None
            delta = (f"{one['map'] - ref['map']:+.3f}"
                     if ref and one["map"] is not None and ref["map"] is not None else "")  # fmt: skip
            lines.append([
                model, f"{backend} {precision}", f"{one['p50_ms']:.1f}", f"{two['p50_ms']:.1f}",
                f"{one['model_mb']:.2f}", "–" if one["map"] is None else f"{one['map']:.3f}",
                delta, "–" if one.get("ap50") is None else f"{one['ap50']:.3f}",
            ])  # fmt: skip
    header = ["model (320)", "runtime", "p50 ms 1 thread", "p50 ms 2 threads", "model MB",
              "val mAP", "int8 - float", "val AP50"]  # fmt: skip
    return md_table(header, lines)


def render(readme: str) -> str:
    for name, make in (("fps", fps_table), ("training", training_table), ("fold", fold_table),
                       ("post", post_table), ("samplers", samplers_table),
                       ("int8", int8_table)):  # fmt: skip
        pattern = re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.S)
        if not pattern.search(readme):
            raise SystemExit(f"README.md: no <!-- {name} --> ... <!-- /{name} --> markers")
        readme = pattern.sub(lambda m, t=make(): m.group(1) + t + "\n" + m.group(2), readme)
    return readme


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    args = parser.parse_args()
    path = REPO / "README.md"
    old = path.read_text(encoding="utf-8")
    new = render(old)
    if args.check:
        sys.exit(0 if new == old else 1)
    path.write_text(new, encoding="utf-8")
    print("README.md tables rendered from benchmarks/results")


if __name__ == "__main__":
    main()

"""Latency of the onnxruntime int8 variants beside fp32 and ncnn fp16 / int8 (inference only).

    python benchmarks/int8_speed.py [EXPORT_DIR ...] [--rounds 5] [--out benchmarks/results/int8]

For each export (default: exports/bench/nanodet-m_320 and nanodet-plus-m_320 from
benchmarks/run_all.sh) the onnxruntime int8 model is rebuilt for every activation type (u8, s8)
x layers kept in float (VARIANTS), calibrated on the export's own calibration images
(meta.json), exactly as ``nanodet-export --int8`` makes it. Every variant, the fp32 ONNX and
the export's ncnn fp16 and int8 models are timed at one thread in fresh pinned processes (20
warmup + 200 runs of one real image), ``--rounds`` rounds interleaved across variants; the
median round is kept.
Writes ``int8_speed.json`` / ``int8_speed.md``. The accuracy side is int8_choice.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nanodet_deploy.artifacts import read_meta
from nanodet_deploy.device import describe_device, library_versions
from nanodet_deploy.exporters import int8
from nanodet_deploy.fileio import write_json_atomic, write_text_atomic
from nanodet_deploy.preprocess import load_image, preprocess

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "nanodet_deploy" / "assets" / "samples"
VARIANTS = [("u8", "none"), ("u8", "first"), ("u8", "first+head"), ("s8", "none")]


def child(kind: str, path: str, meta_dir: str) -> None:
    """Time one model in this process (pinned to CPU 0); print the median ms."""
    os.sched_setaffinity(0, {0})
    meta = read_meta(meta_dir)
    image = load_image(sorted(IMAGE.glob("*.jpg"))[0])
    x, _ = preprocess(image, dataclasses.replace(meta.preprocess, geometry="plain"))
    x = np.ascontiguousarray(x, dtype=np.float32)
    if kind == "ncnn":
        import ncnn

        net = ncnn.Net()
        net.opt.num_threads, net.opt.lightmode = 1, True
        net.load_param(path)
        net.load_model(path.replace(".param", ".bin"))
        chw = np.ascontiguousarray(x[0])

        def run() -> None:
            ex = net.create_extractor()
            ex.input(meta.ncnn_input_name, ncnn.Mat(chw))
            ex.extract(meta.ncnn_output_name)
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

        def run() -> None:
            sess.run(None, {meta.input_name: x})

    for _ in range(20):
        run()
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000)
    print(json.dumps(float(np.median(times))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("exports", nargs="*", default=[str(REPO / "exports/bench/nanodet-m_320"),
                   str(REPO / "exports/bench/nanodet-plus-m_320")])  # fmt: skip
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=str(REPO / "benchmarks/results/int8"))
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="int8-speed-"))
    results = []
    for export_dir in map(Path, args.exports):
        meta = read_meta(export_dir)
        split = int8.calibration_split(meta.int8["calibration_source"], int8.DEFAULT_CALIB_IMAGES)
        tensors = int8.calibration_tensors(split.calibration, meta.preprocess, meta.input_hw)
        models = {"onnxruntime fp32": ("onnx", export_dir / "model.onnx"),
                  "ncnn fp16": ("ncnn", export_dir / "model.ncnn.param"),
                  "ncnn int8": ("ncnn", export_dir / "model.int8.ncnn.param")}  # fmt: skip
        for act, floats in VARIANTS:
            out = work / f"{export_dir.name}-{act}-{floats}.onnx"
            int8.quantize_onnx(export_dir / "model.onnx", out, tensors, meta,
                               float_layers=floats, activation=act)  # fmt: skip
            models[f"onnxruntime int8 {act} float={floats}"] = ("onnx", out)
        rounds: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, (kind, path) in models.items():
                cmd = [sys.executable, __file__, "--child", kind, str(path), str(export_dir)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                rounds[name].append(json.loads(out.strip().splitlines()[-1]))
                print(export_dir.name, name, f"{rounds[name][-1]:.2f}", flush=True)
        ref = statistics.median(rounds["ncnn fp16"])
        for name, values in rounds.items():
            results.append({"export": export_dir.name, "model": name,
                            "median_ms": statistics.median(values), "rounds_ms": values,
                            "vs_ncnn_fp16": statistics.median(values) / ref})  # fmt: skip
    doc = {"benchmark": "int8_speed", "command": "python benchmarks/int8_speed.py",
           "timestamp": time.strftime("%FT%T%z"), "device": describe_device(),
           "versions": library_versions(), "results": results}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "int8_speed.json", doc)
    lines = [
        "# onnxruntime int8 variants: inference latency at 1 thread",
        "",
        f"Generated by `{doc['command']}` on {doc['device']['name']} ({doc['timestamp']}): "
        f"inference only, one real image, 20 warmup + 200 runs per process, median of "
        f"{args.rounds} interleaved rounds in fresh processes pinned to one CPU.",
        "",
        "| export | model | median ms | rounds ms | vs ncnn fp16 |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['export']} | {r['model']} | {r['median_ms']:.2f} | "
                     f"{', '.join(f'{v:.1f}' for v in r['rounds_ms'])} | "
                     f"{r['vs_ncnn_fp16']:.2f}× |")  # fmt: skip
    write_text_atomic(out / "int8_speed.md", "\n".join(lines) + "\n")
    print(f"wrote {out / 'int8_speed.md'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
    else:
        main()

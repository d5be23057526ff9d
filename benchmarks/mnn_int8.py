"""MNN int8: MNN's own calibrator (mnnquant, EMA) against the onnxruntime int8 model's scales
(exporters/mnn_int8.py, the exporter's default): output error against fp32, val mAP, speed.

    python benchmarks/mnn_int8.py [--exports exports/bench] [--orders 2] \\
        [--out benchmarks/results/int8]

For every export folder of benchmarks/run_all.sh (the trained raccoon NanoDet-m and
NanoDet-Plus-m at 320 and 416), the variants of its MNN int8 model:

- ``onnx scales``: the export's ``model.int8.mnn`` (checked to be what ``mnn_int8_from_onnx``
  makes of the export's ``model.int8.onnx``);
- ``mnnquant``: ``quantize_mnn`` on the export's 100 calibration images (``--mnn-int8
  mnnquant``), in the exporter's order and in ``--orders`` shuffled orders: EMA's ranges weigh
  the first image 37%.

Each is compared with MNN fp32 on the 40 val images: output error (mean absolute difference on
the anchors fp32 scores above 0.3: class score, box distance in stride units; and the largest
score difference anywhere), the correlation of its deviations from fp32 with the onnxruntime
int8 model's, val mAP / AP50 through the deployment path, file size, and latency (one thread,
``--rounds`` interleaved rounds of ``--iters`` runs, median). Every MNN measurement runs in a
fresh process, and each model is evaluated in ``--evals`` processes: MNN 3.6.1's int8 models are
not deterministic across processes on x86 (the same file and input give one of a few output
sets, fixed within a process; MNN fp32 and onnxruntime int8 are bit-stable). The processes of
one run mostly agree, runs minutes apart may not: NanoDet-Plus-m 320 with the onnx scales gave
val mAP 0.627 in two runs and 0.617 in a third. The table gives the median val mAP with its range
over the run's processes and how many distinct output sets they produced; errors are means.
Writes ``mnn_int8.json`` and ``mnn_int8.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.metadata
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nanodet_deploy.api import evaluate
from nanodet_deploy.artifacts import read_meta, write_meta
from nanodet_deploy.datasets import load_split
from nanodet_deploy.device import describe_device, library_versions
from nanodet_deploy.exporters import int8
from nanodet_deploy.exporters.mnn import quantize_mnn
from nanodet_deploy.exporters.mnn_int8 import mnn_int8_from_onnx
from nanodet_deploy.fileio import write_json_atomic, write_text_atomic
from nanodet_deploy.runtimes.mnn import MnnBackend
from nanodet_deploy.runtimes.ort import OrtBackend
from nanodet_deploy.train_config import load_data_config

DATA = {"nanodet-m": "configs/raccoon_nanodet-m_320_finetune.yaml",
        "nanodet-plus-m": "configs/raccoon_nanodet-plus-m_320_backbone.yaml"}  # fmt: skip


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exports", default="exports/bench")
    p.add_argument("--models", nargs="+", default=["nanodet-m_320", "nanodet-m_416",
                                                   "nanodet-plus-m_320", "nanodet-plus-m_416"])  # fmt: skip
    p.add_argument("--orders", type=int, default=2, help="shuffled calibration orders (mnnquant)")
    p.add_argument("--evals", type=int, default=4, help="processes evaluating each model")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--out", default="benchmarks/results/int8")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="mnn-int8-"))
    rows = []
    try:
        for name in args.models:
            rows += _export_rows(Path(args.exports) / name, work / name, args)
            _write(args, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _export_rows(base: Path, work: Path, args: argparse.Namespace) -> list[dict]:
    work.mkdir(parents=True)
    meta = read_meta(base)
    if meta.int8["mnn"].get("tool") != "mnnconvert --compressionParamsFile":
        raise SystemExit(f"{base}: its MNN int8 model is not the onnx-scales one (re-export)")
    data = DATA[meta.model_name]
    rebuilt = mnn_int8_from_onnx(base / "model.int8.onnx", work / "rebuilt.int8.mnn",
                                 input_name=meta.input_name, output_name=meta.output_name)  # fmt: skip
    a, b = rebuilt.path.read_bytes(), (base / "model.int8.mnn").read_bytes()
    differing = sum(x != y for x, y in zip(a, b, strict=False))
    if len(a) != len(b) or differing > 36:  # mnnconvert writes a random model uuid (36 chars)
        raise SystemExit(f"{base}/model.int8.mnn is not what mnn_int8_from_onnx makes")
    calib = int8.calibration_split(data, 100).calibration
    variants = {"onnx scales (default)": base / "model.int8.mnn"}
    orders = [("exporter's order", calib)] + [
        (f"shuffled order {k}", random.Random(k).sample(calib, len(calib)))
        for k in range(1, args.orders + 1)
    ]  # fmt: skip
    spec = meta.preprocess
    for label, images in orders:
        path = work / f"mnnquant-{len(variants)}.int8.mnn"
        t0 = time.perf_counter()
        quantize_mnn(base / "model.mnn", path, images, input_hw=meta.input_hw,
                     mean_bgr=spec.mean_bgr, std_bgr=spec.std_bgr, color_order=spec.color_order,
                     input_name=meta.input_name, output_name=meta.output_name)  # fmt: skip
        print(f"{base.name}: mnnquant ({label}) {time.perf_counter() - t0:.0f} s", flush=True)
        variants[f"mnnquant, {label}"] = path
    val = load_split(load_data_config(data), "val", source=data).records
    tensors = int8.calibration_tensors([r.path for r in val], meta.preprocess, meta.input_hw)
    np.save(work / "val.npy", np.concatenate(tensors))
    nc = meta.num_classes
    fp32 = _outputs(OrtBackend(base, precision="fp32"), tensors)  # = MNN fp32 within 1e-5
    ort8 = _outputs(OrtBackend(base, precision="int8"), tensors)
    folders = {"fp32": base}
    folders.update({label: _folder(base, work / f"v{k}", path, meta)
                    for k, (label, path) in enumerate(variants.items())})  # fmt: skip
    runs = {label: [_child(folder, "fp32" if label == "fp32" else "int8", "eval", work, data,
                           tag=str(k)) for k in range(args.evals)]
            for label, folder in folders.items()}  # fmt: skip
    latency: dict[str, list[float]] = {label: [] for label in folders}
    for _ in range(args.rounds):  # interleaved rounds, a fresh process each
        for label, folder in folders.items():
            precision = "fp32" if label == "fp32" else "int8"
            run = _child(folder, precision, "time", work, data, args.iters)
            latency[label].append(run["latency_ms"])
    fp32_map = statistics.median(run["map"] for run in runs["fp32"])
    rows = []
    for label, folder in folders.items():
        int8_model = label != "fp32"
        outs = [np.load(run["outputs"]) for run in runs[label]]
        maps = [run["map"] for run in runs[label]]
        errors = [_errors(fp32, ort8, out, nc) for out in outs]
        rows.append({
            "export": base.name, "variant": label,
            **({k: statistics.mean(e[k] for e in errors) for k in errors[0]} if int8_model
               else {}),
            "map": statistics.median(maps), "map_min": min(maps), "map_max": max(maps),
            "map_runs": maps, "ap50": statistics.median(run["ap50"] for run in runs[label]),
            "output_modes": len({out.tobytes() for out in outs}),
            **({"map_drop": statistics.median(maps) - fp32_map} if int8_model else {}),
            "file_size_bytes": (folder / ("model.int8.mnn" if int8_model else "model.mnn"))
            .stat().st_size,
            "latency_ms": statistics.median(latency[label]),
            "latency_rounds_ms": latency[label],
        })  # fmt: skip
        print(f"{base.name}: {label}: mAP {maps} (fp32 {fp32_map:.4f})", flush=True)
    ort_errors = _errors(fp32, ort8, ort8, nc)
    rows.append({"export": base.name, "variant": "onnxruntime int8 (for reference)",
                 **{k: v for k, v in ort_errors.items() if k != "corr_ort"}})  # fmt: skip
    return rows


def _child(
    folder: Path, precision: str, task: str, work: Path, data: str, iters: int = 0, tag: str = ""
) -> dict:
    """One MNN model in a fresh process (module doc): its val outputs and mAP, or its latency.
    The child's last stdout line is JSON."""
    out = work / f"{folder.name}-{precision}-{tag}.npy"
    cmd = [sys.executable, __file__, "--child", str(folder), precision, task, str(work / "val.npy"),
           str(out), data, str(iters)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child {task} {folder} {precision} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(
    folder: str, precision: str, task: str, val: str, out: str, data: str, iters: str
) -> None:
    backend = MnnBackend(folder, threads=1, precision=precision)
    tensors = np.load(val)[:, None]
    if task == "time":
        for _ in range(10):
            backend.run(tensors[0])
        times = []
        for _ in range(int(iters)):
            t0 = time.perf_counter()
            backend.run(tensors[0])
            times.append(time.perf_counter() - t0)
        print(json.dumps({"latency_ms": statistics.median(times) * 1000}))
        return
    np.save(out, _outputs(backend, list(tensors)))
    backend.close()
    result = evaluate(folder, data, backend="mnn", precision=precision)
    print(json.dumps({"outputs": out, "map": result.map, "ap50": result.ap50}))


def _folder(base: Path, folder: Path, int8_path: Path, meta) -> Path:
    """An export folder whose MNN int8 model is ``int8_path`` (links to the rest of ``base``)."""
    folder.mkdir()
    for name in ("model.onnx", "model.pth", "model.mnn"):
        (folder / name).symlink_to((base / name).resolve())
    shutil.copyfile(int8_path, folder / "model.int8.mnn")
    files = {"onnx": "model.onnx", "checkpoint": "model.pth", "mnn": "model.mnn",
             "mnn_int8": "model.int8.mnn"}  # fmt: skip
    precision = {"onnx": "fp32", "torch": "fp32", "mnn": "fp32", "mnn_int8": "int8"}
    write_meta(folder, dataclasses.replace(meta, files=files, precision=precision))
    return folder


def _outputs(backend, tensors: list[np.ndarray]) -> np.ndarray:
    width = backend.meta.num_classes + 4
    return np.concatenate([backend.run(t).reshape(-1, width) for t in tensors])


def _errors(fp32: np.ndarray, ort8: np.ndarray, out: np.ndarray, nc: int) -> dict:
    keep = fp32[:, :nc].max(axis=1) > 0.3
    dev, ort_dev = out - fp32, ort8 - fp32
    corr = float(np.corrcoef(dev[keep].ravel(), ort_dev[keep].ravel())[0, 1])
    return {
        "score_error": float(np.abs(dev[keep, :nc]).mean()),
        "distance_error": float(np.abs(dev[keep, nc:]).mean()),
        "max_score_error": float(np.abs(dev[:, :nc]).max()),
        "corr_ort": corr,
    }


def _write(args: argparse.Namespace, rows: list[dict]) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"command": "python benchmarks/mnn_int8.py " + " ".join(
               [f"--orders {args.orders}", f"--evals {args.evals}", f"--rounds {args.rounds}", f"--iters {args.iters}",
                "--models", *args.models]),
           "device": describe_device(),
           "versions": {**library_versions(), "MNN": importlib.metadata.version("MNN")},
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}  # fmt: skip
    write_json_atomic(out / "mnn_int8.json", doc)
    write_text_atomic(out / "mnn_int8.md", render(doc))


def render(doc: dict) -> str:
    device = doc["device"]["name"]
    lines = [
        "# MNN int8: mnnquant against the onnxruntime int8 model's scales",
        "",
        f"Generated by `{doc['command']}` on {device} ({doc['created']}), MNN "
        f"{doc['versions'].get('MNN', '?')}. Errors against MNN fp32 on the 40 val images: mean "
        "absolute difference on the anchors fp32 scores above 0.3 (class score; box distance in "
        "stride units) and the largest score difference anywhere; `corr` is the correlation of "
        "the deviations from fp32 with the onnxruntime int8 model's; means over the evaluating "
        "processes. val mAP: median (min-max) over those processes; `sets`: distinct output sets "
        "among them (MNN int8 is not deterministic across processes on x86). Latency: one "
        "thread, a fresh process per round, median of interleaved rounds (x86: MNN's int8 kernels "
        "target ARM's dot product instructions; fp32 is faster here).",
        "",
        "| export | MNN model | score error | distance error | max score error | corr | val mAP "
        "| mAP - fp32 | sets | val AP50 | size MB | ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        cell = functools.partial(_cell, r)
        size = f"{r['file_size_bytes'] / 1e6:.2f}" if "file_size_bytes" in r else ""
        lines.append(
            f"| {r['export']} | {r['variant']} | {cell('score_error', '.4f')} | "
            f"{cell('distance_error', '.4f')} | {cell('max_score_error', '.3f')} | "
            f"{cell('corr_ort', '.2f')} | {_map_cell(r)} | {cell('map_drop', '+.4f')} | "
            f"{cell('output_modes', 'd')} | {cell('ap50', '.4f')} | {size} | "
            f"{cell('latency_ms', '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def _map_cell(row: dict) -> str:
    if "map" not in row:
        return ""
    if row["map_min"] == row["map_max"]:
        return f"{row['map']:.4f}"
    return f"{row['map']:.4f} ({row['map_min']:.4f}-{row['map_max']:.4f})"


def _cell(row: dict, key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else ""


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
    else:
        main()

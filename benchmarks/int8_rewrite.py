"""What the onnxruntime int8 rewrites (exporters/int8_rewrite.py) buy: output error against fp32
and val mAP, with and without activation equalization / bias correction, per equalization cap.

    python benchmarks/int8_rewrite.py [--exports exports/bench] [--draws 2] \\
        [--out benchmarks/results/int8]

For every export folder of benchmarks/run_all.sh (the trained raccoon NanoDet-m and
NanoDet-Plus-m at 320 and 416) the int8 model is made from the export's fp32 ONNX exactly as
``nanodet-export --int8`` makes it, over ``--draws`` calibration draws of 100 training images
(the first is the exporter's own spread; the others random), and compared with fp32 on the 40
val images: the output error (mean absolute difference on the anchors fp32 scores above 0.3:
class score, and box distance in stride units) and val mAP through the deployment path. The
output error is the steadier measure: 40 val images move mAP by about 0.01 between recipes of
equal output error. Writes ``int8_rewrite.json`` and ``int8_rewrite.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from int8_choice import _int8_folder  # the sibling script (run as python benchmarks/...)

from nanodet_deploy.api import evaluate
from nanodet_deploy.artifacts import read_meta
from nanodet_deploy.datasets import load_split
from nanodet_deploy.device import describe_device, library_versions
from nanodet_deploy.exporters import int8
from nanodet_deploy.exporters.int8_rewrite import Rewrite
from nanodet_deploy.fileio import write_json_atomic, write_text_atomic
from nanodet_deploy.train_config import load_data_config

DATA = {"nanodet-m": "configs/raccoon_nanodet-m_320_finetune.yaml",
        "nanodet-plus-m": "configs/raccoon_nanodet-plus-m_320_backbone.yaml"}  # fmt: skip
RECIPES = {  # name -> Rewrite (None: plain quantize_static)
    "plain": None,
    "bias correction": Rewrite(equalize=False),
    "equalize (caps 16 / 4)": Rewrite(bias_correction=False),
    "equalize (16 / 2) + bias": Rewrite(cap_pointwise=2.0),
    "equalize (16 / 4) + bias (default)": Rewrite(),
    "equalize (16 / 8) + bias": Rewrite(cap_pointwise=8.0),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exports", default="exports/bench")
    p.add_argument("--models", nargs="+", default=["nanodet-m_320", "nanodet-m_416",
                                                   "nanodet-plus-m_320", "nanodet-plus-m_416"])  # fmt: skip
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--calib-images", type=int, default=100)
    p.add_argument("--out", default="benchmarks/results/int8")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="int8-rewrite-"))
    rows = []
    for name in args.models:
        base = Path(args.exports) / name
        (work / name).mkdir()
        meta = read_meta(base)
        data = DATA[meta.model_name]
        val = load_split(load_data_config(data), "val", source=data).records
        val_tensors = int8.calibration_tensors([r.path for r in val], meta.preprocess,
                                               meta.input_hw)  # fmt: skip
        ref = _outputs(base / "model.onnx", meta.input_name, val_tensors)
        fp32 = evaluate(base, data, backend="onnxruntime")
        split = int8.calibration_split(data, 10_000)
        train = sorted(split.calibration + split.held_out)
        for draw in range(args.draws):
            paths = (int8.calibration_split(data, args.calib_images).calibration if draw == 0
                     else sorted(random.Random(draw).sample(train, args.calib_images)))  # fmt: skip
            tensors = int8.calibration_tensors(paths, meta.preprocess, meta.input_hw)
            for i, (recipe, rewrite) in enumerate(RECIPES.items()):
                start = time.perf_counter()
                folder = _int8_folder(base, work / name, "onnxruntime", int8.DEFAULT_ONNX_METHOD,
                                      "none", tensors, int8.DEFAULT_ONNX_ACTIVATION, rewrite,
                                      f"-{i}")  # fmt: skip
                seconds = time.perf_counter() - start
                out = _outputs(folder / "model.int8.onnx", meta.input_name, val_tensors)
                q = evaluate(folder, data, backend="onnxruntime", precision="int8")
                rows.append({"export": name, "draw": draw, "recipe": recipe,
                             **_errors(ref, out, meta.num_classes), "map": q.map, "ap50": q.ap50,
                             "fp32_map": fp32.map, "fp32_ap50": fp32.ap50,
                             "quantize_s": round(seconds, 1)})  # fmt: skip
                print(rows[-1], flush=True)
    _write(args, rows)


def _outputs(path: Path, input_name: str, tensors: list[np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {input_name: x})[0] for x in tensors])


def _errors(ref: np.ndarray, out: np.ndarray, num_classes: int) -> dict:
    detected = ref[..., :num_classes].max(axis=-1) > 0.3
    diff = np.abs(out - ref)[detected]
    return {"score_err": float(diff[:, :num_classes].mean()),
            "dist_err": float(diff[:, num_classes:].mean()), "anchors": int(detected.sum())}  # fmt: skip


def _write(args, rows: list[dict]) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "int8_rewrite", "command": "python benchmarks/int8_rewrite.py "
           f"--draws {args.draws} --models {' '.join(args.models)}",
           "timestamp": time.strftime("%FT%T%z"), "device": describe_device(),
           "versions": library_versions(), "results": rows}  # fmt: skip
    write_json_atomic(out / "int8_rewrite.json", doc)
    write_text_atomic(out / "int8_rewrite.md", render(doc))
    print(f"wrote {out / 'int8_rewrite.md'}")


def render(doc: dict) -> str:
    """One row per (export, recipe): means over the draws."""
    rows = doc["results"]
    lines = [
        "# onnxruntime int8: what activation equalization and bias correction buy", "",
        f"Generated by `{doc['command']}` on {doc['device']['name']} ({doc['timestamp']}). "
        "Output error: mean absolute difference from fp32 on the val anchors that fp32 scores "
        "above 0.3 (class score; box distance in stride units). Means over the calibration "
        "draws (100 training images each); mAP on the 40 val images, in brackets per draw.", "",
        "| export | recipe | score error | distance error | val mAP (per draw) | mAP - fp32 | "
        "val AP50 | quantize s |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for export in dict.fromkeys(r["export"] for r in rows):
        for recipe in dict.fromkeys(r["recipe"] for r in rows):
            group = [r for r in rows if r["export"] == export and r["recipe"] == recipe]
            if not group:
                continue
            m = {k: statistics.mean(r[k] for r in group)
                 for k in ("score_err", "dist_err", "map", "ap50", "quantize_s")}  # fmt: skip
            draws = ", ".join(f"{r['map']:.3f}" for r in group)
            lines.append(
                f"| {export} | {recipe} | {m['score_err']:.4f} | {m['dist_err']:.4f} | "
                f"{m['map']:.4f} ({draws}) | {m['map'] - group[0]['fp32_map']:+.4f} | "
                f"{m['ap50']:.4f} | {m['quantize_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

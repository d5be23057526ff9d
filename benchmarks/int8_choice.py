"""Pick the int8 recipe by measured mAP: calibration method x layers kept in float x images.

    python benchmarks/int8_choice.py [--checkpoint assets/nanodet-m-raccoon-320.pth] \
        [--data configs/raccoon_nanodet-m_320_finetune.yaml] [--out benchmarks/results/int8]

For every combination the int8 model is made from the same fp32 export exactly as
``nanodet-export --int8`` makes it (exporters/int8.py), and scored through the deployment path
(``evaluate``) on two sets: the val split (40 images) and the training images that were not used
for calibration ("held out": 40 val images are too few to see a 0.01 change; but the model
was trained on these images, and on the bench exports they ranked the ncnn recipes differently
from val, so the exporter's defaults were finally chosen on val at two sizes and two models,
see exporters/int8.py). Each combination
is repeated over ``--draws`` calibration draws (the first draw is the exporter's deterministic
spread; the others random) and averaged. Runtimes: onnxruntime (QDQ) and ncnn (its own int8
format). Writes ``int8_choice.json`` and ``int8_choice.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from nanodet_deploy.api import evaluate, export
from nanodet_deploy.artifacts import read_meta, write_meta
from nanodet_deploy.device import describe_device, library_versions
from nanodet_deploy.exporters import int8
from nanodet_deploy.fileio import write_json_atomic, write_text_atomic
from nanodet_deploy.train_config import load_data_config

ONNX_METHODS = ("minmax", "entropy", "percentile")
NCNN_METHODS = ("max", "kl", "aciq")
FLOAT_LAYERS = ("none", "first+head", "first+head+dw")  # any "+"-joined subset of first/head/dw


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="assets/nanodet-m-raccoon-320.pth")
    p.add_argument("--data", default="configs/raccoon_nanodet-m_320_finetune.yaml")
    p.add_argument("--calib-images", type=int, nargs="+", default=[32, 100])
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--onnx-methods", nargs="*", default=list(ONNX_METHODS))
    p.add_argument("--ncnn-methods", nargs="*", default=list(NCNN_METHODS))
    p.add_argument("--float-layers", nargs="+", default=list(FLOAT_LAYERS))
    p.add_argument(
        "--activation",
        default=int8.DEFAULT_ONNX_ACTIVATION,
        choices=list(int8.ONNX_ACTIVATIONS),
        help="onnxruntime activation type",
    )
    p.add_argument("--out", default="benchmarks/results/int8")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="int8-choice-"))
    base = work / "fp32"
    export(args.checkpoint, base, formats=("onnx", "ncnn"), ncnn_fp16=False, verify=False)
    meta = read_meta(base)
    train = sorted(int8.calibration_split(args.data, 10_000).calibration
                   + int8.calibration_split(args.data, 10_000).held_out)  # fmt: skip
    results = [
        _row("fp32", "-", "-", 0, 0, _scores(base, "onnxruntime", None, args.data, train, work))
    ]
    for n, draw in itertools.product(args.calib_images, range(args.draws)):
        calib = _draw(args.data, n, draw, train)
        held_out = [p for p in train if p not in set(calib)]
        fp32_held = evaluate(base, _held_out_yaml(args.data, held_out, work), backend="onnxruntime")
        tensors_onnx = int8.calibration_tensors(calib, meta.preprocess, meta.input_hw)
        tensors_ncnn = int8.calibration_tensors(calib, meta.preprocess, None)
        for runtime, methods in (("onnxruntime", args.onnx_methods), ("ncnn", args.ncnn_methods)):
            for method, floats in itertools.product(methods, args.float_layers):
                tensors = tensors_onnx if runtime == "onnxruntime" else tensors_ncnn
                folder = _int8_folder(base, work, runtime, method, floats, tensors, args.activation)
                scores = _scores(folder, runtime, "int8", args.data, held_out, work)
                scores["fp32_held_out"] = (fp32_held.map, fp32_held.ap50)
                results.append(_row(runtime, method, floats, n, draw, scores))
                print(json.dumps(results[-1]), flush=True)
    _write(args, results)


def _draw(data: str, n: int, draw: int, train: list[Path]) -> list[Path]:
    if draw == 0:
        return int8.calibration_split(data, n).calibration
    return sorted(random.Random(draw).sample(train, n))


def _int8_folder(
    base, work, runtime, method, floats, tensors, activation, rewrite=int8.DEFAULT_REWRITE, tag=""
) -> Path:
    folder = work / f"{runtime}-{method}-{floats}{tag}"
    meta = read_meta(base)
    folder.mkdir(exist_ok=True)
    for name in ("model.onnx", "model.ncnn.param", "model.ncnn.bin", "model.pth"):
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(base / name)
    files = dict(meta.files)
    if runtime == "onnxruntime":
        int8.quantize_onnx(base / "model.onnx", folder / "model.int8.onnx", tensors, meta,
                           method=method, float_layers=floats, activation=activation,
                           rewrite=rewrite)  # fmt: skip
        files["onnx_int8"] = "model.int8.onnx"
    else:
        int8.quantize_ncnn(base / "model.ncnn.param", base / "model.ncnn.bin",
                           folder / "model.int8.ncnn.param", folder / "model.int8.ncnn.bin",
                           tensors, meta, method=method, float_layers=floats)  # fmt: skip
        files["ncnn_int8_param"], files["ncnn_int8_bin"] = (
            "model.int8.ncnn.param", "model.int8.ncnn.bin")  # fmt: skip
    write_meta(folder, dataclasses.replace(meta, files=files))
    return folder


def _scores(folder, runtime, precision, data, held_out, work) -> dict:
    val = evaluate(folder, data, backend=runtime, precision=precision)
    held = evaluate(folder, _held_out_yaml(data, held_out, work), backend=runtime,
                    precision=precision)  # fmt: skip
    return {"val": (val.map, val.ap50), "held_out": (held.map, held.ap50),
            "held_out_images": held.num_images}  # fmt: skip


def _held_out_yaml(data: str, images: list[Path], work: Path) -> Path:
    cfg = load_data_config(data)
    split = work / f"held_out_{len(images)}_{abs(hash(tuple(images))) % 10**8}.txt"
    split.write_text("".join(f"{p.stem}\n" for p in images))
    yaml = split.with_suffix(".yaml")
    names = ", ".join(cfg.class_names)
    yaml.write_text(f"data:\n  format: voc\n  root: {cfg.root}\n  val: {split}\n"
                    f"  class_names: [{names}]\n")  # fmt: skip
    return yaml


def _row(runtime, method, floats, n, draw, scores) -> dict:
    return {"runtime": runtime, "method": method, "float_layers": floats, "calib_images": n,
            "draw": draw, **scores}  # fmt: skip


def _write(args, results: list[dict]) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "int8_choice", "checkpoint": args.checkpoint, "data": args.data,
        "command": _command(args), "timestamp": time.strftime("%FT%T%z"),
        "device": describe_device(), "versions": library_versions(), "results": results,
    }  # fmt: skip
    write_json_atomic(out / "int8_choice.json", doc)
    write_text_atomic(out / "int8_choice.md", render(doc))
    print(f"wrote {out / 'int8_choice.md'}")


def _command(args) -> str:
    parts = ["python benchmarks/int8_choice.py"]
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        parts.append(f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}")
        parts[-1] = parts[-1].rstrip()
    return " ".join(parts)


def render(doc: dict) -> str:
    """Mean over draws per (runtime, method, float layers, images); drop vs fp32 on the same
    held-out images is computed per draw (fp32 held-out mAP depends on which images)."""
    rows = doc["results"]
    fp32 = next(r for r in rows if r["runtime"] == "fp32")
    lines = [
        "# int8 recipe choice (mAP through the deployment path)", "",
        f"Generated by `{doc['command']}` on {doc['device']['name']} ({doc['timestamp']}); "
        f"checkpoint `{doc['checkpoint']}`, data `{doc['data']}`. fp32 val mAP "
        f"{fp32['val'][0]:.4f} (AP50 {fp32['val'][1]:.4f}). Held out: the training images not "
        "used for calibration; its fp32 reference is measured on the same images per draw.", "",
        "| runtime | method | kept in float | calib images | val mAP / AP50 | held-out mAP | "
        "held-out drop vs fp32 (mean / worst) |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    keys = dict.fromkeys((r["runtime"], r["method"], r["float_layers"], r["calib_images"])
                         for r in rows if r["runtime"] != "fp32")  # fmt: skip
    for key in keys:
        group = [r for r in rows if (r["runtime"], r["method"], r["float_layers"],
                                     r["calib_images"]) == key]  # fmt: skip
        drops = [r["fp32_held_out"][0] - r["held_out"][0] for r in group if "fp32_held_out" in r]
        val_map = statistics.mean(r["val"][0] for r in group)
        val_ap50 = statistics.mean(r["val"][1] for r in group)
        held = statistics.mean(r["held_out"][0] for r in group)
        drop = f"{statistics.mean(drops):+.4f} / {max(drops):+.4f}" if drops else "–"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {val_map:.4f} / "
                     f"{val_ap50:.4f} | {held:.4f} | {drop} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

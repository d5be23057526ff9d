"""What does folding the decode into the graph cost? NCNN, nanodet-m 320: decoded vs raw export.

Both exports come from the same weights (official COCO nanodet-m, ``shared/reference``) at
320x320 with the default settings (fp16 NCNN weights); they differ only in ``--output``:

- ``decoded``: the graph ends with sigmoid + per-level softmax / integral -> (P, C + 4).
- ``raw``: official layout (sigmoid scores, raw bins) -> (P, C + 32); the app then runs the
  NumPy softmax / integral (``postprocess.decode_raw``) before the same postprocessor.

Every (layout, threads) configuration runs in its own fresh subprocess, pinned to its CPUs
(``device.pick_cpus``), with NumPy/BLAS on one thread and the garbage collector paused, so
runtimes never disturb each other. A worker times ``iterations`` detections of one real image
(plain-resized to 320x320, the same tensor for both) after ``warmup``, stage by stage:
inference, decode (raw only), postprocess. The configurations are measured ``rounds`` times in
interleaved order and the samples pooled. Verdicts, per thread count:

- fold cost: (decoded inference p50 - raw inference p50) / raw inference p50 <= 3 %;
- end to end: decoded (inference + postprocess) p50 < raw (inference + decode + postprocess) p50.

Usage:
    python benchmarks/bench_decode_fold.py [--threads 1,2] [--iterations 300] [--warmup 50]
        [--rounds 3] [--weights PATH] [--out benchmarks/results/decode_fold.json] [--smoke]

``--smoke``: 20 iterations, 5 warmup, 1 round, written to a temp file unless ``--out`` is
given (a check that it runs, not a measurement). Writes the JSON atomically.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NANODET_SHARED", REPO.parent / "shared"))
LAYOUTS = ("decoded", "raw")
STAGES = ("inference", "decode", "postprocess", "total")
FOLD_COST_LIMIT_PCT = 3.0
INPUT_HW = (320, 320)
ONE_THREAD_ENV = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


# ------------------------------------------------------------------ worker (own process)


def worker(spec: dict) -> dict:
    """Time one (layout, threads) configuration; never imports torch."""
    import numpy as np

    from nanodet_deploy.device import pick_cpus, pin_to_cpus
    from nanodet_deploy.postprocess import decode_raw, postprocess
    from nanodet_deploy.preprocess import load_image, preprocess
    from nanodet_deploy.runtimes.ncnn import NcnnBackend
    from nanodet_deploy.structures import PreprocessSpec

    cpus = pick_cpus(spec["threads"])
    pinned = pin_to_cpus(cpus)
    backend = NcnnBackend(spec["export_dir"], threads=spec["threads"])
    meta = backend.meta
    pre = PreprocessSpec(INPUT_HW, geometry="plain", sampler="warp")  # as when first measured
    x, info = preprocess(load_image(spec["image"]), pre)
    raw = meta.output_layout == "raw"
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    gc.disable()
    for i in range(spec["warmup"] + spec["iterations"]):
        t0 = time.perf_counter_ns()
        out = backend.run(x)
        t1 = time.perf_counter_ns()
        if raw:
            out = decode_raw(out, meta.num_classes, meta.reg_max)
        t2 = time.perf_counter_ns()
        dets = postprocess(
            out, input_hw=info.input_hw, strides=meta.strides,
            center_offset=meta.center_offset, resize_info=info,
        )  # fmt: skip
        t3 = time.perf_counter_ns()
        if i >= spec["warmup"]:
            for stage, ns in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                samples[stage].append(ns / 1e6)
    gc.enable()
    backend.close()
    return {
        "samples_ms": samples,
        "settings": backend.settings,
        "affinity": cpus if pinned else None,
        "num_detections": len(dets),
        "output_shape": list(np.shape(out)),
    }


def run_worker(spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", json.dumps(spec), str(result_path)]
        env = {**os.environ, **ONE_THREAD_ENV}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"worker {spec['layout']} {spec['threads']}t failed:\n{proc.stderr}")
        return json.loads(result_path.read_text())


# ------------------------------------------------------------------ parent


def export_both(weights: Path, work: Path) -> dict[str, Path]:
    """The decoded and the raw export of the same weights (torch needed here only)."""
    from nanodet_deploy.checkpoint import load_model, sha256_file
    from nanodet_deploy.config import zoo_config
    from nanodet_deploy.exporters.pipeline import ExportOptions, export_model

    model, _ = load_model(weights, config=zoo_config("nanodet-m"))
    dirs = {}
    for layout in LAYOUTS:
        options = ExportOptions(input_hw=INPUT_HW, output_layout=layout, verify=False)
        dirs[layout] = work / layout
        export_model(model, dirs[layout], options, checkpoint_sha256=sha256_file(weights))
        print(f"exported {layout} -> {dirs[layout]}", flush=True)
    return dirs


def measure(dirs: dict[str, Path], image: Path, args) -> dict[tuple[str, int], dict]:
    pooled: dict[tuple[str, int], dict] = {}
    for r in range(args.rounds):
        for threads in args.threads:
            order = LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]  # alternate who goes first
            for layout in order:
                spec = {"export_dir": str(dirs[layout]), "layout": layout, "threads": threads,
                        "image": str(image), "warmup": args.warmup,
                        "iterations": args.iterations}  # fmt: skip
                res = run_worker(spec)
                entry = pooled.setdefault((layout, threads), {**res, "samples_ms": {}})
                for stage, xs in res["samples_ms"].items():
                    entry["samples_ms"].setdefault(stage, []).extend(xs)
                p50 = sorted(res["samples_ms"]["inference"])[
                    len(res["samples_ms"]["inference"]) // 2
                ]
                print(
                    f"round {r + 1}: {layout:7s} {threads}t inference p50 {p50:.2f} ms", flush=True
                )
    return pooled


def summarize(pooled: dict[tuple[str, int], dict], threads_list: list[int]) -> tuple[list, dict]:
    from nanodet_deploy.bench.records import latency_stats

    results = []
    stats = {}
    for (layout, threads), entry in sorted(pooled.items()):
        st = {s: latency_stats(xs) for s, xs in entry["samples_ms"].items()}
        stats[layout, threads] = st
        results.append({
            "layout": layout, "threads": threads, "samples": len(entry["samples_ms"]["total"]),
            "latency_ms": {s: {k: round(v, 4) for k, v in st[s].items()} for s in STAGES},
            "ncnn_settings": entry["settings"], "affinity": entry["affinity"],
            "num_detections": entry["num_detections"], "output_shape": entry["output_shape"],
        })  # fmt: skip
    verdicts = {}
    for threads in threads_list:
        dec, raw = stats["decoded", threads], stats["raw", threads]
        cost = (dec["inference"]["p50"] - raw["inference"]["p50"]) / raw["inference"]["p50"]
        verdicts[str(threads)] = {
            "fold_cost_pct_p50": round(100 * cost, 3),
            "fold_cost_ok": 100 * cost <= FOLD_COST_LIMIT_PCT,
            "end_to_end_p50_ms": {"decoded": round(dec["total"]["p50"], 4),
                                  "raw_plus_numpy_decode": round(raw["total"]["p50"], 4)},
            "end_to_end_ok": dec["total"]["p50"] < raw["total"]["p50"],
        }  # fmt: skip
    return results, verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", type=Path, default=SHARED / "reference" / "nanodet-m_coco.pth")
    parser.add_argument(
        "--image", type=Path, default=SHARED / "reference" / "images" / "raccoon-1.jpg"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny run to check it works")
    args = parser.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    if args.smoke:
        args.iterations, args.warmup, args.rounds = 20, 5, 1
    out = args.out or (
        Path(tempfile.gettempdir()) / "decode_fold_smoke.json" if args.smoke
        else REPO / "benchmarks" / "results" / "decode_fold.json"
    )  # fmt: skip
    if not args.smoke and args.iterations < 200:
        parser.error("a measurement needs --iterations >= 200 (use --smoke for a check)")
    with tempfile.TemporaryDirectory(prefix="decode_fold-") as work:
        dirs = export_both(args.weights, Path(work))
        pooled = measure(dirs, args.image, args)
    results, verdicts = summarize(pooled, args.threads)
    write_report(out, args, results, verdicts)
    return 0


def write_report(out: Path, args, results: list, verdicts: dict) -> None:
    from nanodet_deploy import __version__
    from nanodet_deploy.artifacts import write_json_atomic
    from nanodet_deploy.bench.records import utc_now
    from nanodet_deploy.checkpoint import sha256_file
    from nanodet_deploy.device import describe_device, library_versions

    report = {
        "benchmark": "decode_fold",
        "smoke": args.smoke,
        "created": utc_now(),
        "nanodet_deploy_version": __version__,
        "device": describe_device(),
        "versions": library_versions(),
        "model": {"name": "nanodet-m", "weights_sha256": sha256_file(args.weights),
                  "input_hw": list(INPUT_HW), "ncnn_precision": "fp16 weights"},
        "settings": {"threads": args.threads, "iterations": args.iterations,
                     "warmup": args.warmup, "rounds": args.rounds, "image": args.image.name,
                     "resize": "plain", "fold_cost_limit_pct": FOLD_COST_LIMIT_PCT},
        "results": results,
        "verdicts": verdicts,
        "passed": all(v["fold_cost_ok"] and v["end_to_end_ok"] for v in verdicts.values()),
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    for threads, v in verdicts.items():
        e2e = v["end_to_end_p50_ms"]
        print(f"{threads} thread(s): fold cost {v['fold_cost_pct_p50']:+.2f} % of inference "
              f"({'ok' if v['fold_cost_ok'] else 'OVER 3 %'}); end to end {e2e['decoded']:.2f} "
              f"vs {e2e['raw_plus_numpy_decode']:.2f} ms "
              f"({'ok' if v['end_to_end_ok'] else 'NOT faster'})")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        from nanodet_deploy.artifacts import write_json_atomic

        write_json_atomic(sys.argv[3], worker(json.loads(sys.argv[2])))
        sys.exit(0)
    sys.exit(main())

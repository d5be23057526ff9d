"""Time the shared NumPy postprocess on real NanoDet-m outputs, one thread.

Inputs are the official legacy NanoDet-m head outputs of the 5 raccoon images at 320 and 416
(``shared/reference/nanodet-m_coco_detections_io.npz``), decoded to the deployment layout
(sigmoid scores + distances in stride units), so candidate counts are realistic. Each is timed
at its keep-ratio ``pad`` tensor size (e.g. 224x320) and embedded in the square input
(320x320, 416x416) with the extra rows as background (scores 0), which is what a letterboxed
or square input gives. A ``stress`` row uses uniform random scores (an untrained model): the
``top_k`` cap is what bounds it.

Usage: python benchmarks/bench_postprocess.py [--iterations 1000] [--warmup 100] [--rounds 5]
The cases are interleaved over the rounds, so a transient slowdown of the machine spreads over
all of them instead of landing on one (a first, non-interleaved run here had one case at p50
1.07 ms with min 0.62 ms while the same workload in another layout measured 0.69 ms).
Writes benchmarks/results/postprocess.json (atomically) and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_var] = "1"  # one thread: set before numpy is imported

import numpy as np  # noqa: E402

from nanodet_deploy import __version__  # noqa: E402
from nanodet_deploy.artifacts import write_json_atomic  # noqa: E402
from nanodet_deploy.postprocess import decode_raw, postprocess, sigmoid  # noqa: E402
from nanodet_deploy.structures import ResizeInfo  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STRIDES = (8, 16, 32)
CENTER_OFFSET = 0.5  # legacy NanoDet-m
NUM_CLASSES, REG_MAX = 80, 7


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "arch": platform.machine(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "nanodet_deploy": __version__,
        "threads": 1,
    }


def embed_square(decoded: np.ndarray, input_hw: tuple[int, int], size: int) -> np.ndarray:
    """Place a (H, W) output in the top rows of a (size, size) one; new points are background."""
    parts, start = [], 0
    for s in STRIDES:
        rows, cols = -(-input_hw[0] // s), -(-input_hw[1] // s)
        level = np.zeros((-(-size // s), -(-size // s), decoded.shape[1]), np.float32)
        level[:rows, :cols] = decoded[start : start + rows * cols].reshape(rows, cols, -1)
        parts.append(level.reshape(-1, decoded.shape[1]))
        start += rows * cols
    return np.concatenate(parts)


def load_cases(shared: Path) -> list[dict]:
    runs = json.loads((shared / "reference/nanodet-m_coco_detections.json").read_text())["runs"]
    cases = []
    with np.load(shared / "reference/nanodet-m_coco_detections_io.npz") as npz:
        for run in runs:
            size = run["input_size_cfg_wh"][0]
            key = f"{Path(run['image']).stem}_{size}"
            raw = npz[f"{key}_raw_output"][0].copy()
            raw[:, :NUM_CLASSES] = sigmoid(raw[:, :NUM_CLASSES])
            decoded = decode_raw(raw, NUM_CLASSES, REG_MAX)
            input_hw = tuple(npz[f"{key}_input"].shape[2:])
            info = ResizeInfo.from_matrix(
                npz[f"{key}_warp_matrix"], tuple(run["original_hw"]), input_hw
            )
            cases.append(
                {
                    "name": key,
                    "size": size,
                    "layout": "pad",
                    "input_hw": input_hw,
                    "output": decoded,
                    "resize_info": info,
                }
            )
            square = (size, size)
            cases.append(
                {
                    "name": key,
                    "size": size,
                    "layout": "square",
                    "input_hw": square,
                    "output": embed_square(decoded, input_hw, size),
                    "resize_info": ResizeInfo(info.src_hw, square, info.scale_xy, info.offset_xy),
                }
            )
    rng = np.random.default_rng(0)
    for size in (320, 416):
        num_points = sum(math.ceil(size / s) ** 2 for s in STRIDES)
        out = np.concatenate(
            [rng.random((num_points, NUM_CLASSES)), rng.uniform(0, 4, (num_points, 4))], axis=1
        ).astype(np.float32)
        square = (size, size)
        cases.append(
            {
                "name": f"stress-random_{size}",
                "size": size,
                "layout": "square",
                "input_hw": square,
                "output": out,
                "resize_info": ResizeInfo(square, square, (1.0, 1.0)),
            }
        )
    return cases


def _runner(case: dict, multi_label: bool):
    def run():
        return postprocess(
            case["output"],
            input_hw=case["input_hw"],
            strides=STRIDES,
            center_offset=CENTER_OFFSET,
            resize_info=case["resize_info"],
            multi_label=multi_label,
        )

    return run


def timed_ms(run, iterations: int) -> np.ndarray:
    """``iterations`` timed calls with the garbage collector paused, in ms."""
    samples = np.empty(iterations)
    gc.collect()
    gc.disable()
    try:
        for k in range(iterations):
            t0 = time.perf_counter_ns()
            run()
            samples[k] = time.perf_counter_ns() - t0
    finally:
        gc.enable()
    return samples / 1e6


def measure_all(
    jobs: list[tuple[dict, bool]], warmup: int, iterations: int, rounds: int
) -> list[np.ndarray]:
    """Samples per job. The jobs are interleaved over ``rounds`` rounds (iterations / rounds
    each per round), so a transient slowdown of the machine spreads over all cases instead of
    landing on one."""
    runs = [_runner(case, ml) for case, ml in jobs]
    for run in runs:
        for _ in range(warmup):
            run()
    per_round = -(-iterations // rounds)
    samples: list[list[np.ndarray]] = [[] for _ in jobs]
    for _ in range(rounds):
        for k, run in enumerate(runs):
            samples[k].append(timed_ms(run, per_round))
    return [np.concatenate(s) for s in samples]


def record(case: dict, multi_label: bool, ms: np.ndarray, warmup: int, rounds: int) -> dict:
    dets = _runner(case, multi_label)()
    scores = case["output"][:, :NUM_CLASSES]
    candidates = int(
        (scores > np.float32(0.05)).sum()
        if multi_label
        else (scores.max(axis=1) > np.float32(0.05)).sum()
    )
    return {
        "case": case["name"],
        "size": case["size"],
        "layout": case["layout"],
        "input_hw": list(case["input_hw"]),
        "points": len(case["output"]),
        "multi_label": multi_label,
        "candidates": candidates,
        "detections": len(dets),
        "warmup": warmup,
        "iterations": len(ms),
        "rounds": rounds,
        "latency_ms": {
            "min": float(ms.min()),
            "p50": float(np.median(ms)),
            "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean()),
            "std": float(ms.std()),
        },
    }


def summary(records: list[dict]) -> list[dict]:
    """Per (size, layout, mode) over the 5 real images: the median and the worst of their p50s,
    the worst p90, and the image with the most candidates."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if not r["case"].startswith("stress"):
            groups.setdefault((r["size"], r["layout"], r["multi_label"]), []).append(r)
    rows = []
    for (size, layout, multi_label), rs in groups.items():
        p50s = [r["latency_ms"]["p50"] for r in rs]
        busiest = max(rs, key=lambda r: r["candidates"])
        rows.append(
            {
                "size": size,
                "layout": layout,
                "multi_label": multi_label,
                "median_p50_ms": float(np.median(p50s)),
                "worst_p50_ms": max(p50s),
                "worst_p90_ms": max(r["latency_ms"]["p90"] for r in rs),
                "most_candidates": f"{busiest['case']}: {busiest['candidates']}",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="cases interleaved over rounds")
    parser.add_argument(
        "--shared",
        type=Path,
        default=Path(os.environ.get("NANODET_SHARED", REPO.parent / "shared")),
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/postprocess.json")
    args = parser.parse_args()
    if args.iterations < 500:
        parser.error("--iterations must be >= 500 for stable percentiles")
    jobs = [(case, ml) for case in load_cases(args.shared) for ml in (True, False)]
    samples = measure_all(jobs, args.warmup, args.iterations, args.rounds)
    records = [
        record(case, ml, ms, args.warmup, args.rounds)
        for (case, ml), ms in zip(jobs, samples, strict=True)
    ]
    report = {
        "benchmark": "postprocess",
        "machine": machine(),
        "settings": {
            "score_thresh": 0.05,
            "iou_thresh": 0.6,
            "max_det": 100,
            "top_k": 1000,
            "num_classes": NUM_CLASSES,
            "strides": list(STRIDES),
        },
        "summary": summary(records),
        "records": records,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.output, report)
    print(f"{report['machine']['cpu']}, numpy {np.__version__}, 1 thread")
    print(
        f"{'case':<18} {'layout':<6} {'input':>8} {'multi':>5} {'cand':>5} {'dets':>4} "
        f"{'p50 ms':>7} {'p90 ms':>7}"
    )
    for r in records:
        hw = "x".join(map(str, r["input_hw"]))
        print(
            f"{r['case']:<18} {r['layout']:<6} {hw:>8} {r['multi_label']!s:>5} "
            f"{r['candidates']:>5} {r['detections']:>4} {r['latency_ms']['p50']:>7.3f} "
            f"{r['latency_ms']['p90']:>7.3f}"
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""Show that benchmark isolation works: ncnn at 2 threads measured three ways.

1. ``alone``: a fresh process that only runs ncnn.
2. ``ort-alive``: a fresh process in which an onnxruntime session with default options (idle
   threads spinning, 2 intra-op threads) was created and run, then ncnn is timed. Variant
   ``ort-interleaved`` runs that session once between ncnn iterations (untimed), as a naive
   harness that loops over backends in one process would.
3. ``isolated``: the ``nanodet-deploy bench`` harness (its own worker process per combination).

Every case runs the harness's detection step (synthetic image, preprocess, inference,
postprocess) and reports its inference stage, so the numbers compare like for like; cases 1
and 2 run it in a plain loop without pinning. The page is generated from the measurements:

    python benchmarks/isolation.py EXPORT_DIR --out benchmarks/results/isolation.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = ("alone", "ort-alive", "ort-interleaved")


def measure_case(case: str, export_dir: str, warmup: int, iters: int) -> dict:
    """Runs inside a child process: the harness's own detection step (preprocess, ncnn at 2
    threads, postprocess) in a plain loop; inference times in ms, and the share of the CPUs
    other processes used meanwhile."""
    import numpy as np
    import onnxruntime as ort

    from nanodet_deploy.bench.spec import BenchSpec
    from nanodet_deploy.bench.worker import load_inputs, other_cpu_load, timed_step
    from nanodet_deploy.detector import Detector
    from nanodet_deploy.device import cpu_busy_seconds
    from nanodet_deploy.runtimes.base import BorrowedBackend
    from nanodet_deploy.runtimes.registry import open_backend

    spec = BenchSpec(export_dir, "ncnn", "fp32", 2, _input_hw(export_dir), warmup, iters)
    x = np.random.default_rng(0).standard_normal((1, 3, *spec.input_hw)).astype(np.float32)
    session = None
    if case != "alone":
        opts = ort.SessionOptions()  # defaults: idle intra-op threads spin
        opts.intra_op_num_threads = 2
        session = ort.InferenceSession(
            f"{export_dir}/model.onnx", opts, providers=["CPUExecutionProvider"]
        )
        session.run(None, {session.get_inputs()[0].name: x})
    net = open_backend(export_dir, backend="ncnn", threads=2, precision="fp32")
    detector = Detector(BorrowedBackend(net), geometry=spec.geometry, input_hw=spec.input_hw,
                        score_thresh=spec.score_thresh)  # fmt: skip
    step, image = timed_step(detector), load_inputs(None)[0]
    times = []
    for i in range(warmup + iters):
        if i == warmup:
            busy0, own0, wall0 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
        if case == "ort-interleaved":
            session.run(None, {session.get_inputs()[0].name: x})
        timing = step(image)
        if i >= warmup:
            times.append(timing.inference_ms)
    busy1, own1, wall1 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
    load = other_cpu_load(busy1 - busy0, own1 - own0, wall1 - wall0) if busy0 and busy1 else None
    return {"times_ms": times, "other_cpu_load": load}


def run_child(case: str, export_dir: str, warmup: int, iters: int) -> dict:
    args = ["--child", case, "--warmup", str(warmup), "--iters", str(iters)]
    cmd = [sys.executable, __file__, export_dir, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_isolated(export_dir: str, warmup: int, iters: int) -> dict:
    from nanodet_deploy.bench.harness import run_isolated
    from nanodet_deploy.bench.spec import BenchSpec

    spec = BenchSpec(export_dir, "ncnn", "fp32", 2, _input_hw(export_dir), warmup, iters)
    result = run_isolated(spec, timeout_s=1800)
    if result["status"] != "ok":
        raise RuntimeError(f"isolated run failed: {result['note']}")
    return {
        **result["stages_ms"]["inference"],
        "other_cpu_load": result["settings"]["other_cpu_load"],
    }


def _input_hw(export_dir: str) -> tuple[int, int]:
    from nanodet_deploy.artifacts import read_meta

    return read_meta(export_dir).input_hw


def measure_round(export_dir: str, warmup: int, iters: int) -> dict[str, dict]:
    """One measurement of every case: {case: latency stats + other_cpu_load}."""
    from nanodet_deploy.bench.records import latency_stats

    round_ = {}
    for case in CASES:
        child = run_child(case, export_dir, warmup, iters)
        round_[case] = {
            **latency_stats(child["times_ms"]),
            "other_cpu_load": child["other_cpu_load"],
        }
    round_["isolated"] = run_isolated(export_dir, warmup, iters)
    return round_


def summarize(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    """Per case: median over rounds of p50 / p90, the p50 range, the busiest other load."""
    out = {}
    for case in rounds[0]:
        p50s = sorted(r[case]["p50"] for r in rounds)
        p90s = sorted(r[case]["p90"] for r in rounds)
        loads = [r[case]["other_cpu_load"] for r in rounds if r[case]["other_cpu_load"] is not None]
        out[case] = {
            "p50": statistics.median(p50s), "p50_min": p50s[0], "p50_max": p50s[-1],
            "p90": statistics.median(p90s), "other_cpu_load": max(loads, default=None),
        }  # fmt: skip
    return out


WHAT = {
    "alone": "nothing",
    "ort-alive": "an onnxruntime session (2 threads, spinning on), run once before timing",
    "ort-interleaved": "the same session, run once between ncnn iterations (untimed)",
    "isolated": "nothing: `nanodet-deploy bench` worker process (pinned)",
}


def render(summary: dict[str, dict], export_dir: str, warmup: int, iters: int, rounds: int) -> str:
    from nanodet_deploy.bench.records import utc_now
    from nanodet_deploy.device import describe_device, library_versions

    dev, ver = describe_device(), library_versions()
    base = summary["alone"]["p50"]
    lines = [
        "# Benchmark isolation: ncnn at 2 threads",
        "",
        f"Generated by `benchmarks/isolation.py` at {utc_now()} on {dev['name']} ({dev['cpu_model']}, "
        f"{dev['cores_logical']} logical cores, {dev['os']}; emulated: {dev['emulated']}). "
        f"onnxruntime {ver['onnxruntime']}, ncnn {ver['ncnn']}. Model: `{Path(export_dir).name}` "
        f"(ncnn fp32 options), inference stage of the harness's detection step, {warmup} warmup + "
        f"{iters} timed runs per case, {rounds} rounds with the cases interleaved (median over "
        "rounds). Do not edit by hand.",
        "",
        "| case | what else lives in the process | p50 ms | p50 range over rounds | p90 ms "
        "| p50 vs alone | other processes' CPU load |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, st in summary.items():
        lines.append(
            f"| {case} | {WHAT[case]} | {st['p50']:.2f} | {st['p50_min']:.2f} to {st['p50_max']:.2f} "
            f"| {st['p90']:.2f} | {st['p50'] / base:.2f}× | {_pct(st['other_cpu_load'])} |"
        )
    lines += _conclusion(summary, base)
    return "\n".join(lines) + "\n"


def _conclusion(summary: dict[str, dict], base: float) -> list[str]:
    ratio = {case: st["p50"] / base for case, st in summary.items()}
    busiest = max((st["other_cpu_load"] or 0.0) for st in summary.values())
    lines = []
    if busiest > 0.05:
        lines += [
            "",
            f"**Other processes used up to {busiest:.0%} of the CPUs during these measurements: "
            "the machine was not quiet and the comparison below is unreliable. Re-run on a "
            "quiet machine (`benchmarks/run_all.sh`).**",
        ]
    lines += [
        "",
        f"Measured here: an onnxruntime session that is only alive in the process cost "
        f"{ratio['ort-alive']:.2f}×; running it between ncnn iterations, as a harness looping over "
        f"backends in one process does, cost {ratio['ort-interleaved']:.2f}×; the harness's "
        f"isolated worker measured {ratio['isolated']:.2f}× of `alone`. The harness therefore "
        "runs every combination in its own process, pinned to `threads` CPUs, with "
        "onnxruntime's spinning off.",
    ]
    return lines


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("export_dir")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", choices=CASES, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure_case(args.child, args.export_dir, args.warmup, args.iters)))
        return
    rounds = [measure_round(args.export_dir, args.warmup, args.iters) for _ in range(args.rounds)]
    summary = summarize(rounds)
    text = render(summary, args.export_dir, args.warmup, args.iters, args.rounds)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        data = {"summary": summary, "rounds": rounds}
        args.out.with_suffix(".json").write_text(
            json.dumps(data, indent=2) + "\n", encoding="utf-8"
        )
    print(text)


if __name__ == "__main__":
    main()

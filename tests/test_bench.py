"""The benchmark harness: planning, isolation in worker processes, records, torch-free runs.

Real measurements use a tiny ONNX model built here with the ``onnx`` helper API (a few
pooling + 1x1 conv levels, dynamic height/width) and its meta.json: seconds, no exporter.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from nanodet_deploy.artifacts import ExportMeta, MetaError, write_json_atomic, write_meta
from nanodet_deploy.bench import harness
from nanodet_deploy.bench import spec as plan_mod
from nanodet_deploy.bench.records import (
    STAGES,
    STAT_KEYS,
    TOP_LEVEL_KEYS,
    RecordFile,
    latency_stats,
    read_records,
    validate_record,
)
from nanodet_deploy.device import describe_device, library_versions
from nanodet_deploy.runtimes.base import BACKENDS
from nanodet_deploy.structures import PreprocessSpec

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog")
STRIDES = (8, 16, 32)


def make_tiny_export(
    folder: Path, dynamic: bool = True, verify: bool = True, classes: tuple[str, ...] = CLASSES
) -> Path:
    """model.onnx ``(1, 3, H, W) -> (1, P, C + 4)`` (sigmoid outputs) + meta.json (+ verify.json)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    k = len(classes) + 4
    rng = np.random.default_rng(0)
    nodes, inits, flat = [], [], []
    for s in STRIDES:
        w = numpy_helper.from_array(rng.normal(size=(k, 3, 1, 1)).astype(np.float32), f"w{s}")
        shape = numpy_helper.from_array(np.array([1, k, -1], np.int64), f"shape{s}")
        inits += [w, shape]
        nodes += [
            helper.make_node("AveragePool", ["images"], [f"p{s}"], kernel_shape=[s, s], strides=[s, s]),
            helper.make_node("Conv", [f"p{s}", f"w{s}"], [f"c{s}"]),
            helper.make_node("Reshape", [f"c{s}", f"shape{s}"], [f"f{s}"]),
        ]  # fmt: skip
        flat.append(f"f{s}")
    nodes += [
        helper.make_node("Concat", flat, ["cat"], axis=2),
        helper.make_node("Transpose", ["cat"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Sigmoid", ["t"], ["output"]),
    ]
    hw = ["height", "width"] if dynamic else [64, 64]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *hw])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, None, k])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    meta = ExportMeta(
        model_name="tiny-test", class_names=classes, strides=STRIDES, center_offset=0.0,
        reg_max=7, preprocess=PreprocessSpec((64, 64)),
        dynamic_axes=("height", "width") if dynamic else (),
        opset=13, precision={"onnx": "fp32"}, files={"onnx": "model.onnx"}, random_weights=True,
    )  # fmt: skip
    write_meta(folder, meta)
    if verify:
        check = {
            "backend": "onnxruntime",
            "precision": "fp32",
            "passed": True,
            "max_abs_diff": 1e-7,
        }
        write_json_atomic(
            folder / "verify.json", {"reference": "torch", "checks": {"onnxruntime_fp32": check}}
        )
    return folder


def template(**changes) -> plan_mod.BenchSpec:
    spec = plan_mod.BenchSpec(
        export_dir="", backend="onnxruntime", precision="fp32", threads=1, input_hw=(0, 0),
        warmup=2, iterations=5, pin_cpus=True, rounds=1,
    )  # fmt: skip
    return dataclasses.replace(spec, **changes) if changes else spec


def run(planned, path: Path) -> list[dict]:
    return harness.run_plan(
        planned, RecordFile(path), device=describe_device(), versions=library_versions(),
        timeout_s=120, count_macs=False,
    )  # fmt: skip


# ---------------------------------------------------------------- statistics and parsing


def test_latency_stats_match_numpy():
    xs = list(np.random.default_rng(1).gamma(4.0, 2.0, size=101))
    st = latency_stats(xs)
    assert st["p50"] == pytest.approx(np.percentile(xs, 50))
    assert st["p90"] == pytest.approx(np.percentile(xs, 90))
    assert st["p99"] == pytest.approx(np.percentile(xs, 99))
    assert st["mean"] == pytest.approx(np.mean(xs))
    assert st["std"] == pytest.approx(np.std(xs))
    assert st["min"] == min(xs)


def test_median_round_reports_the_middle_process_and_the_first_rounds_map():
    def result(p50, map_=None):
        return {"status": "ok", "latency_ms": {"p50": p50}, "map": map_, "ap50": map_,
                "map_note": "evaluated" if map_ else None}  # fmt: skip

    chosen = harness.median_round([result(7.3, 0.63), result(18.4), result(7.1)])
    assert chosen["latency_ms"]["p50"] == 7.3  # not the slow mode of one process
    assert chosen["rounds_p50_ms"] == [7.3, 18.4, 7.1]
    assert (chosen["map"], chosen["ap50"], chosen["map_note"]) == (0.63, 0.63, "evaluated")
    chosen = harness.median_round([result(9.0, 0.5), result(8.0)])  # even: the lower middle
    assert chosen["latency_ms"]["p50"] == 8.0 and chosen["map"] == 0.5
    assert harness.median_round([result(5.0)])["rounds_p50_ms"] == [5.0]


def test_other_cpu_load():
    from nanodet_deploy.bench.worker import other_cpu_load
    from nanodet_deploy.device import cpu_busy_seconds

    cpus = os.cpu_count() or 1
    assert other_cpu_load(busy_s=1.0 * cpus, own_s=0.0, wall_s=1.0) == 1.0
    assert other_cpu_load(busy_s=0.5, own_s=0.5, wall_s=1.0) == 0.0
    assert other_cpu_load(busy_s=0.4, own_s=0.6, wall_s=1.0) == 0.0  # clock granularity
    busy = cpu_busy_seconds()
    assert busy is None or busy > 0


def test_parse_options():
    assert plan_mod.parse_sizes("320, 416") == [(320, 320), (416, 416)]
    assert plan_mod.parse_sizes("320x416") == [(320, 416)]
    assert plan_mod.parse_threads("1,2,2,4") == [1, 2, 4]
    assert plan_mod.parse_list("ncnn,onnxruntime", BACKENDS, "--backend") == [
        "ncnn",
        "onnxruntime",
    ]
    with pytest.raises(ValueError, match="choose auto or from"):
        plan_mod.parse_list("tensorrt", BACKENDS, "--backend")
    with pytest.raises(ValueError, match="positive"):
        plan_mod.parse_threads("0")
    with pytest.raises(ValueError, match="H or HxW"):
        plan_mod.parse_sizes("big")


# ---------------------------------------------------------------- planning: clear messages


def test_plan_rejects_folder_without_meta(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(MetaError, match=r"meta\.json"):
        plan_mod.plan([str(tmp_path)], ["onnxruntime"], ["fp32"], [1], None, template())


def test_plan_rejects_unsupported_size(tmp_path):
    export = make_tiny_export(tmp_path / "tiny")
    with pytest.raises(ValueError, match="multiple of 32"):
        plan_mod.plan([str(export)], ["onnxruntime"], ["fp32"], [1], [(300, 300)], template())


def test_plan_skips_what_cannot_run(tmp_path, monkeypatch):
    export = make_tiny_export(tmp_path / "tiny", dynamic=False)
    real = plan_mod.missing_package
    fake = "backend torch needs the torch package: pip install torch"
    monkeypatch.setattr(
        plan_mod, "missing_package", lambda name: fake if name == "torch" else real(name)
    )
    planned = plan_mod.plan(
        [str(export)], ["onnxruntime", "ncnn", "torch"], ["fp32", "fp16"], [1],
        [(64, 64), (96, 96)], template(),
    )  # fmt: skip
    reasons = {(p.spec.backend, p.spec.precision, p.spec.input_hw): p.skip_reason for p in planned}
    assert reasons[("onnxruntime", "fp32", (64, 64))] is None
    assert "runs fp32, int8, not fp16" in reasons[("onnxruntime", "fp16", (64, 64))]
    assert "static 64x64" in reasons[("onnxruntime", "fp32", (96, 96))]
    assert "no such files" in reasons[("ncnn", "fp32", (64, 64))]
    assert reasons[("torch", "fp32", (64, 64))] == fake


def test_auto_plans_only_what_exists(tmp_path):
    """--backend auto --precision auto: installed backends with files, their precisions."""
    export = make_tiny_export(tmp_path / "tiny")
    planned = plan_mod.plan([str(export)], ["auto"], ["auto"], [1, 2], None, template())
    assert [(p.spec.backend, p.spec.precision, p.spec.threads) for p in planned] == [
        ("onnxruntime", "fp32", 1), ("onnxruntime", "fp32", 2),
    ] + [("openvino", "fp32", t) for t in (1, 2) if plan_mod.missing_package("openvino") is None
         ] + [("openvino", "bf16", t) for t in (1, 2) if plan_mod.missing_package("openvino")
              is None and plan_mod._cpu_has_bf16()]  # fmt: skip
    assert all(p.skip_reason is None for p in planned)


# ---------------------------------------------------------------- measuring


def test_isolated_run_writes_complete_records(tmp_path):
    export = make_tiny_export(tmp_path / "tiny")
    planned = plan_mod.plan(
        [str(export)], ["onnxruntime"], ["fp32"], [1], [(64, 64), (96, 128)], template()
    )
    out = tmp_path / "results.json"
    records = run(planned, out)
    assert [r["status"] for r in records] == ["ok", "ok"], [r["note"] for r in records]
    assert read_records([out]) == records
    for r in records:
        assert validate_record(r) == []
        assert set(TOP_LEVEL_KEYS) <= set(r)
        assert sorted(r["latency_ms"]) == sorted(STAT_KEYS)
        assert set(r["stages_ms"]) == set(STAGES)
        assert r["fps"] == pytest.approx(1000.0 / r["latency_ms"]["mean"])
        assert r["model"]["file_size_bytes"] == (export / "model.onnx").stat().st_size
        assert r["parity"]["status"] == "pass"
        assert r["settings"]["allow_spinning"] == 0
        assert 0.0 <= r["settings"]["other_cpu_load"] <= 1.0
        assert r["device"]["arch"] and r["device"]["cpu_model"] and r["device"]["os"]
        assert r["versions"]["onnxruntime"]
    assert records[1]["input_hw"] == [96, 128]


def test_crash_in_one_combination_keeps_earlier_records(tmp_path, monkeypatch):
    export = make_tiny_export(tmp_path / "tiny")
    planned = plan_mod.plan([str(export)], ["onnxruntime"], ["fp32"], [1, 2], None, template())
    real = harness.worker_command

    def crash_on_two_threads(spec, result_path):
        if spec.threads == 2:  # a hard crash (segfault) of the worker process
            return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
        return real(spec, result_path)

    monkeypatch.setattr(harness, "worker_command", crash_on_two_threads)
    out = tmp_path / "results.json"
    records = run(planned, out)
    assert [r["status"] for r in records] == ["ok", "error"]
    assert "SIGSEGV" in records[1]["note"]
    saved = json.loads(out.read_text())
    assert [r["status"] for r in saved] == ["ok", "error"]
    assert all(validate_record(r) == [] for r in saved)


def test_failing_model_is_an_error_record_and_the_run_continues(tmp_path):
    good = make_tiny_export(tmp_path / "good")
    bad = make_tiny_export(tmp_path / "bad")
    (bad / "model.onnx").write_bytes(b"not an onnx model")
    planned = plan_mod.plan([str(bad), str(good)], ["onnxruntime"], ["fp32"], [1], None, template())
    records = run(planned, tmp_path / "results.json")
    assert [r["status"] for r in records] == ["error", "ok"]
    assert "onnxruntime cannot load" in records[0]["note"]


def test_map_hook_evaluates_once_per_artifact(tmp_path, raccoon_dir):
    export = make_tiny_export(tmp_path / "tiny", classes=("raccoon",))
    (tmp_path / "val3.txt").write_text("raccoon-5\nraccoon-8\nraccoon-14\n")
    data = tmp_path / "data.yaml"
    data.write_text(
        f"data:\n  format: voc\n  root: {raccoon_dir}\n  val:\n    split: {tmp_path / 'val3.txt'}\n"
    )
    spec = template(data=str(data), iterations=2, warmup=0)
    planned = plan_mod.plan([str(export)], ["onnxruntime"], ["fp32"], [1, 2], None, spec)
    assert [p.spec.evaluate for p in planned] == [True, False]
    records = run(planned, tmp_path / "results.json")
    assert [r["status"] for r in records] == ["ok", "ok"], [r["note"] for r in records]
    first, second = records
    assert isinstance(first["map"], float) and 0.0 <= first["map"] <= 1.0
    assert str(data) in first["map_note"]
    assert second["map"] == first["map"] and "first thread count" in second["map_note"]


# ---------------------------------------------------------------- torch blocked

_BLOCK_TORCH = """
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch' (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
"""


def test_bench_cli_runs_with_torch_blocked(tmp_path):
    """The whole CLI (and every worker it starts) without torch: torch skipped, rest measured."""
    export = make_tiny_export(tmp_path / "tiny")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCK_TORCH)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    )
    out = tmp_path / "bench.json"
    code = textwrap.dedent("""
        import sys
        from nanodet_deploy.cli.main import app
        try:
            app(sys.argv[1:])
        finally:
            assert "torch" not in sys.modules, "torch was imported"
    """)
    cmd = [sys.executable, "-c", code, "bench", str(export), "--backend", "onnxruntime,torch",
           "--threads", "1", "--warmup", "1", "--iters", "3", "--rounds", "2",
           "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "backend torch needs the torch package" in proc.stderr
    records = json.loads(out.read_text())
    by_backend = {r["backend"]: r for r in records}
    assert by_backend["onnxruntime"]["status"] == "ok"
    assert by_backend["torch"]["status"] == "skipped"
    assert by_backend["onnxruntime"]["model"]["macs"] is None  # no torch to count them
    rounds = by_backend["onnxruntime"]["rounds_p50_ms"]
    assert len(rounds) == 2 and by_backend["onnxruntime"]["latency_ms"]["p50"] == min(rounds)


def test_bench_modules_do_not_import_torch():
    code = (
        "import sys; import nanodet_deploy.bench.harness, nanodet_deploy.bench.worker, "
        "nanodet_deploy.report.writer, nanodet_deploy.bench.importers, nanodet_deploy.device, "
        "nanodet_deploy.cli.bench, nanodet_deploy.cli.report; "
        "assert 'torch' not in sys.modules; assert 'onnxruntime' not in sys.modules; "
        "assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_record_file_rewrites_atomically_and_appends(tmp_path):
    fixture = read_records([Path(__file__).parent / "data" / "bench_records.json"])
    path = tmp_path / "out" / "bench.json"
    first = RecordFile(path)
    first.append(fixture[0])
    assert json.loads(path.read_text()) == fixture[:1]
    again = RecordFile(path, keep_existing=True)  # bench --append
    again.append(fixture[1])
    assert json.loads(path.read_text()) == fixture[:2]
    assert RecordFile(path).records == [] and json.loads(path.read_text()) == []
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # no temp files left

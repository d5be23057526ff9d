"""How long ``import nanodet_deploy`` takes in a fresh interpreter, and what it loads.

    python benchmarks/import_time.py [--runs 15] [--out benchmarks/results/import_time.json]

Each run is a new ``python -c`` process timing the import with ``time.perf_counter`` (warm file
cache: the first run is discarded); the median and the heaviest modules (``-X importtime``) are
written to the JSON. Also records that torch, onnxruntime, MNN, OpenVINO, matplotlib and
pycocotools are not loaded.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from nanodet_deploy.device import describe_device, library_versions
from nanodet_deploy.fileio import write_json_atomic

PROGRAM = """
import sys, time
t0 = time.perf_counter()
import nanodet_deploy
dt = time.perf_counter() - t0
heavy = ["torch", "onnxruntime", "MNN", "openvino", "matplotlib", "pycocotools", "onnx"]
print(dt, ",".join(m for m in heavy if m in sys.modules))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--out", default="benchmarks/results/import_time.json")
    args = p.parse_args()
    times, loaded = [], set()
    for _ in range(args.runs + 1):
        out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
        times.append(float(out[0]))
        loaded.update(out[1].split(",") if len(out) > 1 else [])
    times = times[1:]
    trace = subprocess.run([sys.executable, "-X", "importtime", "-c", "import nanodet_deploy"],
                           capture_output=True, text=True, check=True).stderr  # fmt: skip
    doc = {
        "benchmark": "import_time", "command": "python benchmarks/import_time.py",
        "timestamp": time.strftime("%FT%T%z"), "runs": args.runs,
        "median_ms": round(statistics.median(times) * 1e3, 1),
        "min_ms": round(min(times) * 1e3, 1), "max_ms": round(max(times) * 1e3, 1),
        "heavy_modules_loaded": sorted(loaded), "heaviest_imports_us": _heaviest(trace),
        "device": describe_device(), "versions": library_versions(),
    }  # fmt: skip
    write_json_atomic(args.out, doc)
    print(f"import nanodet_deploy: median {doc['median_ms']} ms; heavy modules loaded: "
          f"{doc['heavy_modules_loaded'] or 'none'}")  # fmt: skip


def _heaviest(trace: str, top: int = 8) -> dict[str, int]:
    """Top-level packages by cumulative import time (microseconds) from ``-X importtime``."""
    found = {}
    for line in trace.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[1].isdigit() and not parts[2].startswith(" "):
            name = parts[2]
            if "." not in name:
                found[name] = max(found.get(name, 0), int(parts[1]))
    return dict(sorted(found.items(), key=lambda kv: -kv[1])[:top])


if __name__ == "__main__":
    main()

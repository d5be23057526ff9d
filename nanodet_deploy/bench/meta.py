"""What a benchmark record says about the artifact besides timings: MACs and parity status.

- MACs (conv multiply-accumulates, ``models/stats.py`` definition) come from ``meta.json``
  (``macs`` at the export size), else, when torch is installed,
  from ``models.stats`` in a short subprocess (the benchmark process never imports torch).
- Parity comes from the export's ``verify.json`` (written by the exporter's parity check).

Torch-free.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from nanodet_deploy.artifacts import ExportMeta

log = logging.getLogger(__name__)

VERIFY_FILE = "verify.json"

_MACS_SCRIPT = """
import json, sys
from nanodet_deploy.models import build_model
from nanodet_deploy.models.stats import model_stats
from nanodet_deploy.config import zoo_config
name, num_classes, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = build_model(zoo_config(name, num_classes=num_classes)).eval()
print(json.dumps(model_stats(model, (h, w)).macs))
"""


def model_macs(
    export_dir: str, meta: ExportMeta, input_hw: tuple[int, int]
) -> tuple[int | None, str]:
    """(conv MACs at ``input_hw`` or None, where the number came from / why it is missing)."""
    if meta.macs and tuple(input_hw) == tuple(meta.input_hw):
        return meta.macs, "meta.json"
    found = macs_from_torch(meta.model_name, meta.num_classes, input_hw)
    if found[0] is None and meta.macs:
        (h, w), (eh, ew) = input_hw, meta.input_hw
        return round(meta.macs * (h * w) / (eh * ew)), "meta.json, scaled by input area"
    return found


def macs_from_torch(
    model_name: str, num_classes: int, input_hw: tuple[int, int], timeout_s: float = 300.0
) -> tuple[int | None, str]:
    """Count MACs with the torch model definition in a subprocess (None where it can't)."""
    cmd = [sys.executable, "-c", _MACS_SCRIPT, model_name, str(num_classes), *map(str, input_hw)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, "MAC count timed out"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1].split(": ", 1)[-1]
        log.info("no MAC count for %s: %s", model_name, last)
        return None, f"unknown (no macs in meta.json; torch count failed: {last[:120]})"
    return int(proc.stdout.strip().splitlines()[-1]), "models.stats (torch, at bench time)"


def parity_status(export_dir: str, backend: str, precision: str) -> dict:
    """``{"status": "pass" | "fail" | "not verified", "detail": ...}`` from verify.json."""
    path = Path(export_dir) / VERIFY_FILE
    if not path.is_file():
        return {"status": "not verified", "detail": f"no {VERIFY_FILE} in the export"}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return {"status": "not verified", "detail": f"{VERIFY_FILE} unreadable: {exc}"}
    if backend == "torch" and str(data.get("reference", "")).startswith("torch"):
        return {"status": "pass", "detail": f"the reference of {VERIFY_FILE}"}
    entry = _verify_entry(data, backend, precision)
    if entry is None:
        checked = sorted(data["checks"]) if isinstance(data.get("checks"), dict) else []
        return {
            "status": "not verified",
            "detail": f"{VERIFY_FILE} has no {backend}_{precision} check (has: {checked})",
        }
    passed = entry.get("passed")
    if passed is None:
        return {"status": "not verified", "detail": f"{VERIFY_FILE} entry without a verdict"}
    return {"status": "pass" if passed else "fail", "detail": _detail(entry)}


def _verify_entry(data: dict, backend: str, precision: str) -> dict | None:
    """The ``checks["<backend>_<precision>"]`` entry of verify.json (exporters/verify.py)."""
    checks = data.get("checks")
    entry = checks.get(f"{backend}_{precision}") if isinstance(checks, dict) else None
    return entry if isinstance(entry, dict) else None


def _detail(entry: dict) -> str | None:
    keys = ("max_abs_diff", "max_score_diff", "max_dist_px_diff")
    parts = [f"{k}={entry[k]}" for k in keys if k in entry]
    return ", ".join(parts) or None

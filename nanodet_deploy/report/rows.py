"""Benchmark records -> flat report rows (one per measured combination), CSV and table cells.

Reports are rendered from records only. Definitions used in every table:

- ``p50 ms``: median end-to-end latency (preprocess + inference + postprocess), from the
  median of the fresh processes that measured it (``rounds_p50_ms``). Records
  imported from inference-only tools (benchncnn) give their average instead, marked ``(avg)``.
- ``pre / infer / post ms``: median of each stage.
- ``FPS``: ``1000 / mean end-to-end latency`` of the sequential loop.
- ``speed-up``: baseline p50 / this p50 within the same device, model and input size. The
  baseline is torch fp32 at 1 thread when measured, otherwise the slowest record of the group
  (named in the ``baseline`` column).
- ``GMAC/s``: the model's conv MACs at this input size / median inference time; how much of
  the CPU's arithmetic the runtime turns into useful work.
- ``model MB``: size of the files the backend loads, in 10^6 bytes.
- ``fastest``: the lowest p50 of its (device, model, size, threads) group, shown in bold.

Records of emulated devices (``device.emulated``) go to a separate, labelled section and
separate charts: they prove the software path, they are not device speed. Torch-free.
"""

from __future__ import annotations

import csv
import io

CSV_COLUMNS = (
    "device",
    "emulated",
    "cpu_model",
    "arch",
    "os",
    "source",
    "model",
    "backend",
    "precision",
    "threads",
    "input_h",
    "input_w",
    "model_mb",
    "p50_ms",
    "latency_kind",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "preprocess_ms",
    "inference_ms",
    "postprocess_ms",
    "fps",
    "speedup",
    "speedup_baseline",
    "fastest",
    "macs",
    "gmacs_per_s",
    "parity",
    "map",
    "ap50",
    "iterations",
    "warmup",
    "other_cpu_load",
)
MD_COLUMNS = (
    ("backend", "backend"),
    ("precision", "precision"),
    ("threads", "threads"),
    ("size", "size"),
    ("model MB", "model_mb"),
    ("p50 ms", "p50_ms"),
    ("pre ms", "preprocess_ms"),
    ("infer ms", "inference_ms"),
    ("post ms", "postprocess_ms"),
    ("FPS", "fps"),
    ("speed-up", "speedup"),
    ("baseline", "speedup_baseline"),
    ("GMAC/s", "gmacs_per_s"),
    ("parity", "parity"),
    ("mAP", "map"),
    ("AP50", "ap50"),
)


def build_rows(records: list[dict]) -> list[dict]:
    """One flat row per measured (``ok``) record, latest record per combination, with
    speed-up and GMAC/s filled in. Sorted by device, model, size, backend, precision, threads."""
    ok = _latest([r for r in records if r.get("status") == "ok"])
    macs = _macs_by_model_size(records)
    rows = [_row(r, macs) for r in ok]
    _add_speedups(rows)
    _mark_fastest(rows)
    rows.sort(key=_row_order)
    return rows


def _latest(records: list[dict]) -> list[dict]:
    by_key: dict[tuple, dict] = {}
    for r in sorted(records, key=lambda r: r.get("timestamp") or ""):
        key = (
            device_label(r["device"]),
            r["source"],
            r["model"]["name"],
            r["backend"],
            r["precision"],
            r["threads"],
            tuple(r["input_hw"]),
        )
        by_key[key] = r
    return list(by_key.values())


def _macs_by_model_size(records: list[dict]) -> dict[tuple, int]:
    """MACs known for (model, H, W) in any record (imports without MACs borrow them)."""
    found = {}
    for r in records:
        macs = r["model"].get("macs")
        if macs:
            found[(r["model"]["name"], *r["input_hw"])] = int(macs)
    return found


def device_label(device: dict) -> str:
    name = device.get("name") or device.get("cpu_model") or "unknown device"
    return f"{name} [emulated]" if device.get("emulated") else name


def _row(r: dict, macs_known: dict[tuple, int]) -> dict:
    lat, stages, dev = r["latency_ms"], r["stages_ms"] or {}, r["device"]
    p50 = lat.get("p50")
    infer = _stage(stages, "inference")
    macs = r["model"].get("macs") or macs_known.get((r["model"]["name"], *r["input_hw"]))
    size = r["model"].get("file_size_bytes")
    return {
        "device": device_label(dev),
        "emulated": bool(dev.get("emulated")),
        "cpu_model": dev.get("cpu_model"),
        "arch": dev.get("arch"),
        "os": dev.get("os"),
        "source": r["source"],
        "model": r["model"]["name"],
        "backend": r["backend"],
        "precision": r["precision"],
        "threads": r["threads"],
        "input_h": r["input_hw"][0],
        "input_w": r["input_hw"][1],
        "model_mb": size / 1e6 if size else None,
        "p50_ms": p50 if p50 is not None else lat.get("mean"),
        "latency_kind": "p50" if p50 is not None else "avg",
        "p90_ms": lat.get("p90"),
        "p99_ms": lat.get("p99"),
        "mean_ms": lat.get("mean"),
        "std_ms": lat.get("std"),
        "preprocess_ms": _stage(stages, "preprocess"),
        "inference_ms": infer,
        "postprocess_ms": _stage(stages, "postprocess"),
        "fps": r["fps"],
        "macs": macs,
        "gmacs_per_s": macs / (infer * 1e6) if macs and infer else None,
        "parity": r["parity"]["status"],
        "map": r.get("map"),
        "ap50": r.get("ap50"),
        "iterations": r["iterations"],
        "warmup": r["warmup"],
        "other_cpu_load": (r.get("settings") or {}).get("other_cpu_load"),
    }


def _stage(stages: dict, name: str) -> float | None:
    stats = stages.get(name)
    if not stats:
        return None
    return stats.get("p50") if stats.get("p50") is not None else stats.get("mean")


def _add_speedups(rows: list[dict]) -> None:
    """speed-up = baseline p50 / p50 within (device, model, size); see the module doc."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["device"], row["model"], row["input_h"], row["input_w"]), []).append(
            row
        )
    for group in groups.values():
        base = next(
            (
                r
                for r in group
                if (r["backend"], r["precision"], r["threads"]) == ("torch", "fp32", 1)
            ),
            None,
        )
        label = "torch fp32 1t"
        if base is None:
            base = max(group, key=lambda r: r["p50_ms"])
            label = f"slowest ({base['backend']} {base['precision']} {base['threads']}t)"
        for row in group:
            row["speedup"] = base["p50_ms"] / row["p50_ms"]
            row["speedup_baseline"] = label


def _mark_fastest(rows: list[dict]) -> None:
    """``fastest``: the lowest p50 among the backends/precisions of (device, model, size,
    threads): the runtime to pick for that model on that device at that thread count."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["device"], row["model"], row["input_h"], row["input_w"], row["threads"])
        groups.setdefault(key, []).append(row)
    for group in groups.values():
        best = min(group, key=lambda r: r["p50_ms"])
        for row in group:
            row["fastest"] = row is best and len(group) > 1


def _row_order(row: dict) -> tuple:
    return (
        row["emulated"],
        row["device"],
        row["model"],
        row["input_h"] * row["input_w"],
        row["backend"],
        row["precision"],
        row["threads"],
    )


def format_cell(key: str, row: dict) -> str:
    """A Markdown cell: fixed decimals per column, ``–`` for missing values."""
    value = row.get(key) if key != "size" else f"{row['input_h']}x{row['input_w']}"
    if value is None:
        return "–"
    if key == "p50_ms":
        text = f"{value:.2f}" + (" (avg)" if row.get("latency_kind") == "avg" else "")
        return f"**{text}**" if row.get("fastest") else text
    if key == "speedup":
        return f"{value:.2f}×"
    if key in ("map", "ap50"):
        return f"{value:.3f}"
    if key in ("fps", "gmacs_per_s"):
        return f"{value:.1f}"
    if key in ("model_mb", "preprocess_ms", "inference_ms", "postprocess_ms"):
        return f"{value:.2f}"
    return str(value)


def render_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    return buf.getvalue()


def md_table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
    return "\n".join(out)

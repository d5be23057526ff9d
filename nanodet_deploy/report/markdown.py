"""The Markdown page of a benchmark report (rows from ``report.rows.build_rows``)."""

from __future__ import annotations

from pathlib import Path

from nanodet_deploy.report.rows import MD_COLUMNS, device_label, format_cell, md_table

EMULATED_WARNING = (
    "> **Emulated (qemu-user on another CPU): these timings prove that the software path "
    "runs on this architecture. They are NOT device speed and must not be quoted as such.**"
)
DEFINITIONS = """\
p50 ms: median end-to-end latency (preprocess + inference + postprocess) of the median of
`rounds` fresh processes (`rounds_p50_ms` in the records), `(avg)` where an
inference-only tool gave only its average; pre / infer / post ms: median per stage; FPS:
1000 / mean end-to-end latency; speed-up: baseline p50 / p50 on the same device, model and
size (baseline: torch fp32 1 thread when measured, else the slowest record, see `baseline`);
GMAC/s: conv MACs / median inference time; model MB: files the backend loads (10^6 bytes);
parity: the export's verify.json; mAP / AP50: COCO mAP@[.5:.95] / AP50 of that artifact when
evaluated; bold p50: the fastest backend/precision of the model, size and thread count."""


def render_markdown(
    records: list[dict],
    rows: list[dict],
    charts: list[Path],
    *,
    title: str,
    sources: list[str],
    now: str,
) -> str:
    parts = [f"# {title}", _generated(records, sources, now), DEFINITIONS, _devices(records)]
    real = [r for r in rows if not r["emulated"]]
    emulated = [r for r in rows if r["emulated"]]
    if len({r["device"] for r in real}) > 1:
        parts.append(_side_by_side(real))
    parts += [_device_section(dev, real) for dev in _unique(r["device"] for r in real)]
    if emulated:
        parts += ["## Emulated devices — not device speed", EMULATED_WARNING]
        parts += [
            _device_section(dev, emulated, level=3)
            for dev in _unique(r["device"] for r in emulated)
        ]
    parts.append(_not_measured(records))
    parts.append(_charts(charts))
    return "\n\n".join(p for p in parts if p) + "\n"


def _unique(items) -> list:
    return list(dict.fromkeys(items))


def _generated(records: list[dict], sources: list[str], now: str) -> str:
    ok = sum(r["status"] == "ok" for r in records)
    files = ", ".join(f"`{s}`" for s in sources) or "records"
    return (
        f"Rendered by `nanodet-deploy report` at {now} from {len(records)} records "
        f"({ok} measured) in {files}. Do not edit by hand: re-run the report."
    )


def _devices(records: list[dict]) -> str:
    by_dev: dict[str, list[dict]] = {}
    for r in records:
        by_dev.setdefault(device_label(r["device"]), []).append(r)
    lines = []
    for name, recs in by_dev.items():
        d = recs[0]["device"]
        sources = ", ".join(_unique(r["source"] for r in recs))
        ok = sum(r["status"] == "ok" for r in recs)
        cores = d.get("cores_logical")
        lines.append([
            name, str(d.get("cpu_model") or "–"), str(d.get("arch") or "–"),
            str(cores) if cores else "–", str(d.get("os") or "–"),
            "yes" if d.get("emulated") else "no", sources, f"{ok}/{len(recs)}",
        ])  # fmt: skip
    header = ["device", "CPU", "arch", "cores", "OS", "emulated", "source", "measured"]
    return "## Devices\n\n" + md_table(header, lines)


def _side_by_side(rows: list[dict]) -> str:
    devices = _unique(r["device"] for r in rows)
    table: dict[tuple, dict[str, str]] = {}
    for r in rows:
        key = (
            r["model"],
            f"{r['input_h']}x{r['input_w']}",
            r["backend"],
            r["precision"],
            r["threads"],
        )
        table.setdefault(key, {})[r["device"]] = format_cell("p50_ms", r)
    lines = [
        [*map(str, key), *(cells.get(d, "–") for d in devices)] for key, cells in table.items()
    ]
    header = ["model", "size", "backend", "precision", "threads", *(f"{d} p50 ms" for d in devices)]
    return "## Devices side by side (p50 ms, end-to-end)\n\n" + md_table(header, lines)


def _device_section(device: str, rows: list[dict], level: int = 2) -> str:
    mine = [r for r in rows if r["device"] == device]
    first = mine[0]
    head = (
        f"{'#' * level} {device}\n\n{first['cpu_model']}, {first['arch']}, {first['os']}. "
        f"Sources: {', '.join(_unique(r['source'] for r in mine))}."
    )
    parts = [head + _load_note(mine)]
    for model, size in _unique((r["model"], (r["input_h"], r["input_w"])) for r in mine):
        group = [r for r in mine if r["model"] == model and (r["input_h"], r["input_w"]) == size]
        lines = [[format_cell(key, r) for _, key in MD_COLUMNS] for r in group]
        parts.append(
            f"{'#' * (level + 1)} {model} — {size[0]}x{size[1]}\n\n"
            + md_table([h for h, _ in MD_COLUMNS], lines)
        )
    return "\n\n".join(parts)


def _load_note(rows: list[dict]) -> str:
    loads = [r["other_cpu_load"] for r in rows if r.get("other_cpu_load") is not None]
    if not loads:
        return ""
    note = f" Other processes used up to {max(loads):.0%} of the CPUs while timing"
    if max(loads) > 0.05:
        return note + " (not a quiet machine: the affected numbers are pessimistic)."
    return note + "."


def _not_measured(records: list[dict]) -> str:
    bad = [r for r in records if r["status"] != "ok"]
    if not bad:
        return ""
    lines = [
        [device_label(r["device"]), r["model"]["name"], r["backend"], r["precision"],
         str(r["threads"]), "x".join(map(str, r["input_hw"])), r["status"], r["note"] or "–"]
        for r in bad
    ]  # fmt: skip
    header = ["device", "model", "backend", "precision", "threads", "size", "status", "reason"]
    return "## Not measured\n\n" + md_table(header, lines)


def _charts(charts: list[Path]) -> str:
    if not charts:
        return ""
    images = [f"![{p.stem}]({p.name})" for p in charts]
    return "## Charts\n\n" + "\n\n".join(images)

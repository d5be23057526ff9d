"""``nanodet-deploy info``: parameters, MACs, output points and a per-module table (torch)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nanodet_deploy.cli.common import console, user_errors
from nanodet_deploy.config import (
    check_input_hw,
    model_config_from_dict,
    parse_hw,
    read_yaml,
    zoo_config,
)


@user_errors
def info(
    model: Annotated[
        str, typer.Argument(help="Zoo name, model YAML or checkpoint (ours or official).")
    ],
    size: Annotated[
        str | None, typer.Option(help="Input size H or H,W (default: the model's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Exact parameter count, conv MACs at an input size, and output points per level."""
    from nanodet_deploy.models.stats import model_stats  # torch: this command is its seam

    net, cfg, source = _load(model)
    input_hw = parse_hw(size) if size else cfg.input_hw
    check_input_hw(input_hw, cfg.size_multiple, f"--size for {cfg.name}")
    st = model_stats(net, input_hw)
    if as_json:
        d = asdict(st)
        d["points_per_level"] = {str(k): v for k, v in st.points_per_level.items()}
        d.update(
            source=source, arch=cfg.arch, num_classes=cfg.num_classes, num_points=st.num_points
        )
        console.print_json(json.dumps(d))
        return
    console.print(f"[bold]{cfg.name}[/] ({cfg.arch}, ShuffleNetV2 {cfg.backbone_width}, "
                  f"{cfg.num_classes} classes, reg_max {cfg.reg_max}) from {source}")  # fmt: skip
    summary = Table(show_header=False, box=None)
    summary.add_row("input (H x W)", f"{input_hw[0]} x {input_hw[1]}")
    summary.add_row("parameters, total", f"{st.params_total:,}")
    summary.add_row("parameters, without training-only modules", f"{st.params_without_aux:,}")
    summary.add_row("parameters, used by inference", f"{st.params_used_in_forward:,}")
    summary.add_row("conv MACs (multiply-accumulates)", f"{st.macs / 1e6:,.2f} M")
    points = ", ".join(f"s{s}: {n}" for s, n in st.points_per_level.items())
    summary.add_row("output points", f"{st.num_points} ({points})")
    console.print(summary)
    table = Table(title="per module")
    for col in ("module", "params", "MACs (M)"):
        table.add_column(col, justify="left" if col == "module" else "right")
    for m in st.modules:
        table.add_row(m.name, f"{m.params:,}", f"{m.macs / 1e6:.2f}")
    console.print(table)


def _load(spec: str):
    """(model, config, source description) from a zoo name, YAML config or checkpoint file."""
    from nanodet_deploy.checkpoint import load_model  # torch: this command is its seam
    from nanodet_deploy.models import build_model

    path = Path(spec)
    if path.suffix in (".pth", ".ckpt", ".pt") or (
        path.exists() and not spec.endswith((".yaml", ".yml"))
    ):
        model, ckpt = load_model(path)
        return model, model.cfg, f"{path} ({ckpt.kind}{', EMA weights' if ckpt.used_ema else ''})"
    if spec.endswith((".yaml", ".yml")):
        data = read_yaml(spec)
        cfg = model_config_from_dict(data.get("model", data), source=spec)
    else:
        cfg = zoo_config(spec)
    return build_model(cfg).eval(), cfg, f"{cfg.name} (random weights)"

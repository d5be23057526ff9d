"""Helpers shared by the CLI commands: error reporting and model resolution."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from nanodet_deploy.config import ModelConfig

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's user-facing errors into a one-line message and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError, PermissionError, ImportError) as exc:
            raise fail(_escape(str(exc))) from None

    return wrapper


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


def model_config_from_spec(spec: str) -> ModelConfig:
    """A zoo name or a YAML file (a ``model:`` section, or a bare model section)."""
    from nanodet_deploy.config import model_config_from_dict, read_yaml
    from nanodet_deploy.models.zoo import zoo_config

    if spec.endswith((".yaml", ".yml")):
        data = read_yaml(spec)
        section = data.get("model", data)
        return model_config_from_dict(section, source=spec)
    return zoo_config(spec)


def load_model_from_spec(spec: str, weights: str | None = None):
    """(model, config, source description) from a zoo name, YAML config or checkpoint file."""
    from nanodet_deploy.checkpoint import load_model
    from nanodet_deploy.models import build_model

    path = Path(spec)
    if path.suffix in (".pth", ".ckpt", ".pt") or (
        path.exists() and not spec.endswith((".yaml", ".yml"))
    ):
        model, ckpt = load_model(path)
        return model, model.cfg, f"{path} ({ckpt.kind}{', EMA weights' if ckpt.used_ema else ''})"
    cfg = model_config_from_spec(spec)
    if weights:
        model, ckpt = load_model(weights, config=cfg)
        return model, cfg, f"{cfg.name} + {weights}"
    return build_model(cfg).eval(), cfg, f"{cfg.name} (random weights)"

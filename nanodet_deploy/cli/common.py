"""Helpers shared by the CLI commands: consoles and one-line error reporting."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer
from rich.console import Console

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

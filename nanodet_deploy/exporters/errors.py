"""The exporter's error type."""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export step failed; the message says which step and why (tool output included)."""

"""How values and axes are written in refusals, titles and answers: "loss (squared, huber) and lr
(0.01, 0.1)". No imports: the exceptions' messages use it, and so do the figures' titles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__: list[str] = []  # private: see study/__init__.py


def format_value(value: Any) -> str:
    """A float (Python's or numpy's) as %g, anything else as str."""
    real = isinstance(value, float) or getattr(getattr(value, "dtype", None), "kind", None) == "f"
    return f"{value:g}" if real else str(value)


def values_text(values: Sequence, limit: int = 8) -> str:
    """'0.01, 0.03, 0.1', or the first and last few of a long list with the count."""
    texts = [format_value(v) for v in values]
    if len(texts) > limit:
        texts = [*texts[: limit - 2], "…", texts[-1], f"({len(values)} values)"]
        return ", ".join(texts[:-1]) + " " + texts[-1]
    return ", ".join(texts)


def describe_axes(axes: dict[str, list]) -> str:
    """'loss (squared, huber) and lr (0.01, 0.03, 0.1)'."""
    parts = [f"{axis} ({values_text(values)})" for axis, values in axes.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]

"""Jinja filters and the small formatters the page views share: dates, percentages, numbers."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from jinja2 import Environment

from app.core import wording


def format_datetime(value: datetime | None) -> str:
    """A stored time as the pages show it (``01 Dec 2026, 07:38 UTC``); empty when unknown."""
    return value.strftime("%d %b %Y, %H:%M UTC") if value is not None else ""


def format_percent(value: float | None) -> str:
    """A share in 0..1 as a percentage with one decimal, as the reports print it (never a
    rounded 0% or 100% for a value that is neither); ``n/a`` when unknown."""
    return "n/a" if value is None else wording.format_percent(value, 1)


def format_number(value: Any, digits: int = 2) -> str:
    """A finite number with ``digits`` decimals; ``n/a`` for anything else (a card field may be
    missing or hold text)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def install_filters(environment: Environment) -> None:
    """Make the formatters the templates use available as filters."""
    environment.filters["datetime"] = format_datetime
    environment.filters["percent"] = format_percent

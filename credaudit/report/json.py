"""report.json."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

from credaudit.report.model import AuditReport


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; numpy scalars must become Python numbers.
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def render_json(report: AuditReport, *, indent: int | None = 2) -> str:
    """The report as JSON text (valid JSON: no NaN, UTF-8 kept)."""
    return render_json_data(report.to_dict(), indent=indent)


def render_json_data(data: Any, *, indent: int | None = 2) -> str:
    """Any report dict as JSON text, cleaned the same way (NaN -> null, numpy scalars -> numbers)."""
    return json.dumps(_clean(data), indent=indent, ensure_ascii=False, default=_as_text) + "\n"


def _as_text(value: Any) -> str:
    # Values JSON has no type for (a decimal or date label column, an id): as they are written,
    # "1.50" and "2024-01-31", rather than a failed report.
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)

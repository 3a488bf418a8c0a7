"""credaudit: a command-line data credibility auditor.

Public API::

    from credaudit import audit, ScanConfig
    result = audit("data.parquet", ScanConfig())
    result.report.to_dict()      # the credibility report (report.json)
    result.issues                # one row per input row (polars DataFrame)
    result.cleaned("relabel")    # the cleaned data

Importing the package is cheap: the heavy libraries (torch, faiss, sentence-transformers) load only
when an audit needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AuditResult", "ScanConfig", "audit", "__version__"]

if TYPE_CHECKING:
    from credaudit.config import ScanConfig
    from credaudit.pipeline import AuditResult, audit


def __getattr__(name: str) -> Any:
    if name == "ScanConfig":
        from credaudit.config import ScanConfig

        return ScanConfig
    if name in ("audit", "AuditResult"):
        from credaudit import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'credaudit' has no attribute {name!r}")

"""The error hierarchy and the one mapping from outcomes to exit codes.

Exit codes are a stable contract (SPEC §1):

- 0 the audit ran and every gate passed (or none was set); warnings alone (verdict ``warn``) exit 0
  unless ``--strict``
- 1 the audit ran and a gate failed, or was inconclusive because it reads an untrustworthy
  noise estimate (a verdict, never an exception; ``--allow-inconclusive`` makes the latter 0)
- 2 usage or configuration error
- 3 input or runtime error
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from credaudit.pipeline import AuditResult


class ExitCode(IntEnum):
    OK = 0
    GATE_FAILED = 1
    USAGE = 2
    INPUT_OR_RUNTIME = 3


class CredauditError(Exception):
    """Base of every error credaudit reports to a user.

    ``str(error)`` is the one-line message; ``hint`` an optional second line on what to do.
    """

    exit_code: ExitCode = ExitCode.INPUT_OR_RUNTIME

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(CredauditError):
    """A flag, option value or config file is wrong (exit 2)."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """A bad TOML file, an unknown key, or a value out of range."""


class UnknownEncoderError(UsageError):
    """``--encoder`` names no registered encoder and no local model directory."""


class InputError(CredauditError):
    """The data or the environment cannot support an audit (exit 3)."""


class DataReadError(InputError):
    """A file is missing, unreadable, of an unknown format, or malformed."""


class MissingColumnError(InputError):
    """A named column is not in the data."""


class EmptyDataError(InputError):
    """No rows to audit."""


class SingleClassError(InputError):
    """Fewer than two distinct labels: there is nothing to confuse."""


class EncoderLoadError(InputError):
    """Encoder weights are missing or not a model."""


class OutputWriteError(InputError):
    """The output directory cannot be created or written, or would overwrite the input."""


class ResourceError(InputError):
    """Out of memory (host or GPU), or a compute cluster that cannot be started or reached."""


def exit_code_for(result: AuditResult) -> ExitCode:
    """The exit code of a completed audit: 1 if any gate failed or (unless allowed) was inconclusive."""
    if result.report.verdict == "fail":
        return ExitCode.GATE_FAILED
    if result.report.verdict == "inconclusive" and not result.config.gates.allow_inconclusive:
        return ExitCode.GATE_FAILED
    return ExitCode.OK

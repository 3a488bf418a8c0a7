"""The one CLI-invocation helper of the test suite (after sqlfluff's invoke_assert_code)."""

from __future__ import annotations

from typer.testing import CliRunner, Result

from credaudit.cli import app


def invoke(args: list[str], *, expect_exit: int = 0, env: dict | None = None) -> Result:
    """Run the CLI in-process; assert the exit code; re-raise any exception that is not an exit."""
    result = CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == expect_exit, (
        f"exit {result.exit_code}, expected {expect_exit}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result

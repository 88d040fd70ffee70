"""One exception type for every problem a user can fix.

The CLI prints ``PCError`` as a single line (problem, then the fix) instead of a traceback; the
Python API raises it as is, so callers can catch one type.
"""

from __future__ import annotations

from typing import NoReturn


class PCError(Exception):
    """A user-fixable problem. ``str(err)`` is one line naming the problem and the fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        message = problem if fix is None else f"{problem} — {fix}"
        super().__init__(" ".join(message.split()))


def first_line(err: BaseException) -> str:
    """A library's exception as the reason inside a one-line error: its first line, or its type
    when it has no message."""
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def fail(err: PCError) -> NoReturn:
    """End a ``pc`` command (the core's or a plugin's) on ``err``: one line on stderr, exit code 2.
    User text is escaped, so ``[paths]`` is not read as rich markup."""
    import typer
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)

"""One exception type for every problem a user can fix.

The CLI prints ``PCError`` as a single line (problem, then the fix) instead of a traceback; the
Python API raises it as is, so callers can catch one type.
"""

from __future__ import annotations


class PCError(Exception):
    """A user-fixable problem. ``str(err)`` is one line naming the problem and the fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        message = problem if fix is None else f"{problem} — {fix}"
        super().__init__(" ".join(message.split()))

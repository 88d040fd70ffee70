"""Rich progress bars for long work (calibration, fitting), silent when asked to be.

A job of several passes over the calibration data (``prune_``: profile, one fit per pruned layer
and compared init, held-out error) shows one overall bar with an ETA across all passes
(``WorkProgress``) and, below it, a bar for the pass under way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress]:
    with _progress(enabled) as progress:
        yield progress


class WorkProgress:
    """One overall bar over ``total`` units (samples × passes) plus a bar per pass.

    ``with WorkProgress(total, "pruning") as work: with work.stage("fit layer 3", n) as advance: ...``
    """

    def __init__(self, total: int, description: str, enabled: bool = True) -> None:
        self.progress = _progress(enabled)
        self.total, self.description = total, description
        self.overall: int | None = None

    def __enter__(self) -> WorkProgress:
        self.progress.__enter__()
        self.overall = self.progress.add_task(f"[bold]{self.description}", total=self.total)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.progress.__exit__(kind, value, trace)

    @contextmanager
    def stage(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A bar for one pass; ``advance(n)`` moves it and the overall bar by ``n`` units."""
        task = self.progress.add_task(f"  {description}", total=total)

        def advance(n: int) -> None:
            self.progress.advance(task, n)
            if self.overall is not None:
                self.progress.advance(self.overall, n)

        try:
            yield advance
        finally:
            self.progress.remove_task(task)


@contextmanager
def stage_or_bar(
    work: WorkProgress | None, description: str, total: int, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """``advance(n)`` for one pass: a stage of ``work`` when the pass is part of a larger job, else
    a bar of its own (shown when ``enabled``)."""
    if work is not None:
        with work.stage(description, total) as advance:
            yield advance
        return
    with progress_bar(enabled) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)

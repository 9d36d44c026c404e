"""What several commands share on the terminal: a progress bar, and a thread run until
Ctrl-C."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


@contextmanager
def progress_bar(
    description: str, *, enabled: bool
) -> Iterator[Callable[[int, int | None], None] | None]:
    """A rich progress bar on stderr; yields `update(done, total)`, or None when not
    `enabled` (JSON output)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


class _Stoppable(Protocol):
    def start(self) -> None: ...
    def is_alive(self) -> bool: ...
    def join(self, timeout: float | None = None) -> None: ...
    def stop(self) -> None: ...


def run_until_stopped(thread: _Stoppable) -> None:
    """Start `thread` and wait for it (Ctrl-C ends the wait); stop it on the way out."""
    thread.start()
    try:
        while thread.is_alive():
            thread.join(1.0)
    finally:
        thread.stop()

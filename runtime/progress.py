"""Progress of a long read: a rich bar on a terminal, plain lines elsewhere.

Why: a bar redrawn into a log file or a pipe comes out as wrapped fragments (a lone `MB`
on its own line); there, one line per file and one at the end say the same thing.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def progress_bar(enabled: bool) -> Progress | PlainProgress:
    """A context manager with rich's `add_task(description, total)` and
    `update(task, advance, description)`."""
    if enabled and not sys.stderr.isatty():
        return PlainProgress()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=Console(stderr=True), disable=not enabled)


class PlainProgress:
    """One line each time the description changes, and a summary line at the end."""

    def __enter__(self) -> PlainProgress:
        self._start, self._done, self._verb, self._shown = time.perf_counter(), 0, "", ""
        return self

    def add_task(self, description: str, total: int) -> int:
        self._verb = description
        return 0

    def update(self, task: int, advance: int = 0, description: str | None = None) -> None:
        self._done += advance
        if description and description != self._shown:
            self._shown = description
            print(f"{self._verb} {description}", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if exc[0] is None and self._done:
            seconds = time.perf_counter() - self._start
            mb = self._done / 1e6
            print(f"{self._verb} done: {mb:.1f} MB in {seconds:.1f} s", file=sys.stderr)

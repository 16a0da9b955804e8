"""The bars of the CLI's long work: a prompt's prefill (`run`, `chat`) and `bench`'s stages.

Why only on a terminal, on stderr, and removed when done: standard output carries the
reply, the JSON lines or the figures alone (a script reads them), and a bar redrawn into
a pipe or a log comes out as fragments. Off a terminal the same work says itself in plain
lines instead (the line before a long prefill, one `bench:` line a stage). A prefill gets
a bar only when it is long, more than one engine step: a bar that flashes for a short
prompt is noise.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def on_terminal() -> bool:
    return sys.stderr.isatty()


def _bar(*columns) -> Progress:
    return Progress(*columns, console=Console(stderr=True), transient=True)


class PrefillBar:
    """A bar over the prompt tokens of a long prefill, advanced by the engine after each
    step (`Engine.on_step`); it goes away before the first new token is printed (`close`).
    On CUDA each step is waited for, so the bar follows the device, not the launch queue."""

    def __init__(self, engine, tokens: int):
        self._engine, self._tokens = engine, tokens
        step = getattr(engine, "max_tokens", 0)
        self._bar = _bar(
            TextColumn("prefill"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        ) if step and tokens > step and on_terminal() else None  # fmt: skip

    def __enter__(self) -> PrefillBar:
        if self._bar is not None:
            self._task = self._bar.add_task("prefill", total=self._tokens)
            self._bar.start()
            self._engine.on_step = self._step
        return self

    def _step(self, tokens: int) -> None:
        if getattr(self._engine.device, "type", "cpu") == "cuda":
            import torch

            torch.cuda.synchronize(self._engine.device)
        self._bar.update(self._task, advance=tokens, refresh=True)
        if self._bar.tasks[0].finished:
            self.close()

    def close(self) -> None:
        """Remove the bar (idempotent): the prefill is done, or it was stopped."""
        if self._bar is not None:
            self._engine.on_step = None
            self._bar.stop()
            self._bar = None

    def __exit__(self, *exc) -> None:
        self.close()


class StageBar:
    """`bench`'s stages: a bar of stages done (with the one under way and the time spent)
    on a terminal, else a `bench:` line as each stage starts. Called as
    `stage(description, done, total)`; `total` None: a stage before the count is known."""

    def __init__(self):
        self._bar = (
            _bar(
                TextColumn("bench: {task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("stages"),
                TimeElapsedColumn(),
            )  # fmt: skip
            if on_terminal()
            else None
        )

    def __enter__(self) -> StageBar:
        if self._bar is not None:
            self._task = self._bar.add_task("", total=None)
            self._bar.start()
        return self

    def __call__(self, description: str, done: int = 0, total: int | None = None) -> None:
        if self._bar is None:
            print(f"bench: {description}", file=sys.stderr, flush=True)
            return
        self._bar.update(self._task, description=description, completed=done, total=total,
                         refresh=True)  # fmt: skip

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

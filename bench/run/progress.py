"""Progress that talks wherever the output goes.

On a terminal: rich's live bars. Off a terminal (CI, nohup, Slurm, a pipe) a live bar is
drawn only when it stops, so a two-minute run wrote nothing until the end; there, each
finished trial or seed prints one line with the counts, the elapsed time and an ETA,
flushed at once, so `tail -f` on a log shows the run moving.
"""

from __future__ import annotations

import time
from typing import Any


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LineProgress:
    """The subset of rich.progress.Progress the harness uses, as flushed log lines."""

    def __init__(self, console: Any, unit: str) -> None:
        self.file = console.file
        self.unit = unit
        self.tasks: dict[int, dict[str, Any]] = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def add_task(self, description: str, total: float | None = None) -> int:
        key = len(self.tasks)
        self.tasks[key] = {"name": description, "total": total, "done": 0,
                           "t0": time.monotonic()}
        return key

    def update(self, task: int, completed: float | None = None, **_: Any) -> None:
        t = self.tasks[task]
        if completed is None or completed <= t["done"]:
            return
        t["done"] = completed
        elapsed = time.monotonic() - t["t0"]
        total = t["total"]
        line = f"{t['name']}: {int(completed)}"
        if total:
            line += f"/{int(total)}"
        line += f" {self.unit}, {_clock(elapsed)} elapsed"
        if total and completed < total:
            line += f", ETA {_clock(elapsed / completed * (total - completed))}"
        elif total:
            line += ", done"
        self.file.write(line + "\n")
        self.file.flush()


def make_progress(console: Any, unit: str) -> Any:
    """Live bars on a terminal, else one flushed line per finished unit of work."""
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if not console.is_terminal:
        return LineProgress(console, unit)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(),
        TextColumn(unit), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        transient=False,
    )

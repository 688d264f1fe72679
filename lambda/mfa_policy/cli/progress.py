"""Progress on a terminal (rich), silence in pipes; Ctrl-C stops at the next page boundary."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any


class Progress:
    """A progress line on a terminal: users done and their rate, and, when ``total`` is known,
    a bar, the percentage and the time left. ``quiet`` shows nothing."""

    def __init__(
        self, title: str, *, stream: Any = None, total: int | None = None, quiet: bool = False
    ) -> None:
        self.title = title
        self.stream = stream or sys.stderr
        self.total = total or None
        self.enabled = not quiet and bool(getattr(self.stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._bar: Any = None
        self._task: Any = None
        self._previous_handler: Any = None

    @staticmethod
    def would_show(*, quiet: bool = False, stream: Any = None) -> bool:
        """Whether a progress line would show (worth asking the pool's size for)."""
        stream = stream or sys.stderr
        return not quiet and bool(getattr(stream, "isatty", lambda: False)())

    def __enter__(self) -> Progress:
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                SpinnerColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
            if self.total is not None:
                # DescribeUserPool's EstimatedNumberOfUsers: a bar, a percentage, time left.
                columns += [
                    BarColumn(),
                    TaskProgressColumn(),
                    TextColumn("{task.completed}/{task.total:.0f} users"),
                    TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(),
                    TextColumn("left"),
                    TimeRemainingColumn(),
                ]
            else:
                columns += [
                    TextColumn("{task.completed} users"),
                    TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(),
                ]
            # Console honours NO_COLOR (and TERM=dumb) from the environment.
            self._bar = RichProgress(*columns, console=Console(file=self.stream), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=self.total, rate="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self._stop.is_set():
            raise KeyboardInterrupt
        self._stop.set()
        print("\nstopping after the pages in flight (Ctrl-C again to abort)...", file=self.stream)

    def keep_going(self) -> bool:
        return not self._stop.is_set()

    def advance(self, rows: list[dict[str, Any]]) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=len(rows))
            task = self._bar.tasks[0]
            if task.total is not None and task.completed > task.total:
                # The estimate was low (users added since): keep the bar honest.
                self._bar.update(self._task, total=task.completed)
            if task.elapsed:
                self._bar.update(self._task, rate=f"{task.completed / task.elapsed:.0f}/s")

"""The one live progress display of every long command (rich), and its plain-text form.

    from pipeline.progress import progress

    with progress("precompute", total=len(videos), unit="videos") as bar:
        for part in parts:
            ...
            bar.update(advance=part.rows, errors=errors)        # the live bar, fields beside it
            bar.line(f"part {i}/{n}: {part.rows} videos")         # a milestone line

On a terminal the bar redraws in place (rich) and `line` prints above it. Anywhere else
(CI, `| tee`, a Ray Jobs log, a file) nothing redraws: `update` prints nothing, each `line`
is one plain line `<title>: <text>`, and closing prints one summary line; no control
characters either way off a terminal. So a caller emits one `line` per epoch / part /
trial, and the bar carries everything finer (steps, videos, views).

Fields are shown as `key value` in the order first given (`loss 1.23 · val top-1 45.0%`);
`rate=True` adds `<unit>/s` and an ETA computed from `total`. `MGTC_PROGRESS=plain`
forces the plain form on a terminal, `MGTC_PROGRESS=live` the live one elsewhere.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from typing import IO, Any, Iterator

PROGRESS_ENV = "MGTC_PROGRESS"  # "live" | "plain" | unset (live on a terminal)
VERBOSE_ENV = "MGTC_VERBOSE"


def verbose() -> bool:
    """`--verbose` / MGTC_VERBOSE=1: show Ray's own lines too (they stay in the session logs)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def set_verbose(on: bool) -> None:
    """What a command's `--verbose` flag calls; child processes inherit it."""
    if on:
        os.environ[VERBOSE_ENV] = "1"


def is_live(stream: IO[str] | None = None) -> bool:
    """Whether to redraw in place: a real terminal (not TERM=dumb), unless MGTC_PROGRESS says."""
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in ("live", "plain"):
        return forced == "live"
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM", "") != "dumb"


def format_duration(seconds: float) -> str:
    """`1:02:03`, `2:03`, `7s`; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}:{m:02d}:{s:02d}"
    return f"{m}:{s:02d}" if m else f"{s}s"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


class Progress:
    """One task's display; use `progress(...)` to open and close it."""

    def __init__(self, title: str, total: float | None = None, unit: str = "", *, rate: bool = True,
                 stream: IO[str] | None = None, live: bool | None = None) -> None:
        self.title = title
        self.total = total
        self.unit = unit
        self.rate = rate
        self.stream = stream or sys.stdout
        self.live = is_live(self.stream) if live is None else live
        self.completed = 0.0
        self.fields: dict[str, str] = {}
        self.description = title
        self.start = time.monotonic()
        self._bar = None
        self._task = None
        self._closing: str | None = None

    # ------------------------------------------------------------------ public
    def update(self, completed: float | None = None, *, advance: float = 0, total: float | None = None,
               description: str | None = None, **fields: Any) -> None:
        """Set or advance the count, the total, the label before the bar, or fields beside it.

        A field whose value is None is removed."""
        if total is not None:
            self.total = total
        if completed is not None:
            self.completed = float(completed)
        self.completed += advance
        if description is not None:
            self.description = description
        for key, value in fields.items():
            if value is None:
                self.fields.pop(key, None)
            else:
                self.fields[key.replace("_", " ")] = _value(value)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.completed, total=self.total,
                             description=self.description, info=self.info())

    def line(self, text: str) -> None:
        """A milestone (an epoch, a part, a trial): one line in either form."""
        message = f"{self.title}: {text}"
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def finish(self, text: str) -> None:
        """Replace the closing line's count and fields by `text` (e.g. `8 epochs · top-1 ...`)."""
        self._closing = text

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def eta(self) -> float:
        """Seconds left at the mean rate so far (nan when unknown)."""
        if not self.total or self.completed <= 0:
            return math.nan
        return self.elapsed() * (self.total - self.completed) / self.completed

    def info(self) -> str:
        """The fields, then rate and ETA when asked for: `errors 2 · 35.1 videos/s · ETA 0:14`."""
        parts = [f"{k} {v}" for k, v in self.fields.items()]
        if self.rate:
            seconds = self.elapsed()
            if seconds > 0 and self.completed > 0:
                parts.append(f"{self.completed / seconds:.3g} {self.unit or 'it'}/s")
            if self.total and self.completed < self.total:
                parts.append(f"ETA {format_duration(self.eta())}")
        return " · ".join(parts)

    def summary(self) -> str:
        """The closing line: count, fields, rate, elapsed time (or `finish`'s text, elapsed time)."""
        if self._closing is not None:
            return f"{self.title}: {self._closing} · {format_duration(self.elapsed())} elapsed"
        count = f"{self.completed:g}" + (f"/{self.total:g}" if self.total else "") + (f" {self.unit}" if self.unit else "")
        parts = [count, *(f"{k} {v}" for k, v in self.fields.items())]
        seconds = self.elapsed()
        if self.rate and seconds > 0 and self.completed > 0:
            parts.append(f"{self.completed / seconds:.3g} {self.unit or 'it'}/s")
        parts.append(f"{format_duration(seconds)} elapsed")
        return f"{self.title}: " + " · ".join(parts)

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> "Progress":
        self.start = time.monotonic()
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as RichProgress

            console = Console(file=self.stream, force_terminal=True, highlight=False)
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), console=console, transient=True, refresh_per_second=4,  # the summary line replaces it
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, info=self.info())
        return self

    def close(self, ok: bool = True) -> None:
        if self._bar is not None:
            self._bar.update(self._task, info=self.info())
            self._bar.stop()
            self._bar = None
        if ok:
            print(self.summary(), file=self.stream, flush=True)


@contextmanager
def progress(title: str, total: float | None = None, unit: str = "", *, rate: bool = True,
             stream: IO[str] | None = None, live: bool | None = None) -> Iterator[Progress]:
    """Open a display for one long step; it closes (summary line) when the block ends.

    title: the command or phase (`precompute`, `train demo-mgtc`); total: the count the bar
    fills to (None: unknown, no ETA); unit: what is counted (`videos`, `steps`, `views`).
    """
    bar = Progress(title, total, unit, rate=rate, stream=stream, live=live).open()
    ok = False
    try:
        yield bar
        ok = True
    finally:
        bar.close(ok)

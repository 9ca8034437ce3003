"""Progress of long work (training, testing, porting) on stderr.

On a terminal a tqdm bar redraws itself in place. Anywhere else (a log file, a pipe,
a CI job) carriage-return redraws would pile up as one endless line, so a plain line
is written instead every ``PLAIN_INTERVAL`` seconds (and one at the end of work that
showed any), so short work stays quiet.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

PLAIN_INTERVAL = 30.0    # seconds between plain progress lines when not on a terminal


def _on_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class PlainProgress:
    """The part of tqdm's interface the commands use, as periodic plain lines."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0,
                 stream: TextIO | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start_n = initial
        self.stream = stream if stream is not None else sys.stderr
        self.interval = PLAIN_INTERVAL if interval is None else interval
        self.clock = clock
        self._start = self._last = clock()
        self._postfix = ""
        self._closed = False
        self._shown = False
        self._rate_from: tuple[float, int] | None = None

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if self._rate_from is None:
            # The rate counts from the first update on: what came before it (data
            # loading, a test at iteration 0) would make the estimate far too slow.
            self._rate_from, self._last = (now, self.n), now
            return
        if now - self._last >= self.interval:
            self._last, self._shown = now, True
            self._line(now)

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self._postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def write(self, line: str) -> None:
        """A log line, on stdout as tqdm.write puts it (the progress lines go to stderr)."""
        print(line, flush=True)

    def close(self) -> None:
        """A last line, when the work took long enough to have shown earlier ones."""
        if not self._closed:
            self._closed = True
            if self._shown and self.n > self._start_n:
                self._line(self.clock())

    def _line(self, now: float) -> None:
        since, n_then = self._rate_from if self._rate_from is not None else (self._start,
                                                                            self._start_n)
        elapsed, done = now - since, self.n - n_then
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total > self.n:
                parts.append(f"{_clock((self.total - self.n) / rate)} left")
        if self._postfix:
            parts.append(self._postfix)
        print(", ".join(parts), file=self.stream, flush=True)


def progress_bar(total: int, desc: str, unit: str = "it", initial: int = 0,
                 nested: bool = False):
    """A tqdm bar on a terminal, else :class:`PlainProgress`. ``nested``: a bar shown
    under another one (a test inside training) that disappears when done."""
    if _on_terminal(sys.stderr):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                    position=1 if nested else None, leave=not nested)
    return PlainProgress(total, desc, unit, initial)


class Steps:
    """Progress of work made of a few long steps (``port``): "step 2/4: what (12.3 s)"."""

    def __init__(self, total: int, notify: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.notify, self.clock = total, notify, clock
        self.done = 0
        self._start = clock()

    def step(self, what: str) -> None:
        self.done += 1
        self.notify(f"step {self.done}/{self.total}: {what} "
                    f"({self.clock() - self._start:.1f} s so far)")

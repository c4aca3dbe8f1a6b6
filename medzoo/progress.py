"""Progress of a long job: a tqdm bar when stderr is a terminal, otherwise a log line at most every
LOG_INTERVAL_S seconds and one when the job is done, so that a notebook, a log file, CI or a SLURM job sees it
too. Showing progress never fails the job: a terminal that breaks turns the bar into log lines."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

log = logging.getLogger(__name__)
T = TypeVar("T")
LOG_INTERVAL_S = 10.0  # a log line at most this often: six lines a minute tell a stalled job from a slow one
BYTES = "B"  # the unit that shows sizes as kB, MB, GB


def on_terminal() -> bool:
    """True when stderr (where the bar goes) is a terminal; a closed or replaced stream is no terminal."""
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _amount(count: float, unit: str) -> str:
    if unit != BYTES:
        return f"{count:,.0f}"
    for prefix in ("", "k", "M", "G", "T"):
        if abs(count) < 1000 or prefix == "T":
            return f"{count:.0f} B" if not prefix else f"{count:.1f} {prefix}B"
        count /= 1000
    raise AssertionError("unreachable")


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    minutes, seconds = divmod(int(value + 0.5), 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Meter:
    """Counts work done towards `total` (None: unknown) and shows it; `update(n)` after each piece.

    As a context manager it logs the final line when the block ends normally; after an error it only closes.

    Args:
        desc: what is running, the start of every line ("eval test", "prepare").
        unit: what is counted ("images"; "B" shows sizes).
        initial: work already done before this run (a resumed download); the time left counts only new work.
        interval: seconds between log lines; clock: seconds from a fixed point (tests pass a fake one).
    """

    def __init__(self, total: int | None, desc: str, unit: str = "items", *, enabled: bool = True,
                 initial: int = 0, interval: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.count = self.initial = initial
        self.interval, self.clock = interval, clock
        self.started = self.last_line = clock()
        self.bar = self._bar() if enabled and on_terminal() else None

    def _bar(self) -> tqdm | None:
        try:
            scaled = self.unit == BYTES
            return tqdm(total=self.total, initial=self.initial, desc=self.desc, unit=self.unit, leave=False,
                        unit_scale=scaled, unit_divisor=1024 if scaled else 1000, disable=False, file=sys.stderr)
        except Exception:  # a terminal that cannot take a bar: log lines instead
            return None

    def update(self, n: int = 1) -> None:
        """`n` more pieces of work are done."""
        if not self.enabled:
            return
        self.count += n
        if self.bar is not None:
            try:
                self.bar.update(n)
                return
            except Exception:  # the terminal broke (closed, a pipe gone): go on with log lines
                self._drop_bar()
        if self.total and self.count >= self.total:
            return  # all done: the final line follows
        now = self.clock()
        if now - self.last_line >= self.interval:
            self.last_line = now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress so far: '<desc>: 128/394 images (32 %), 12 s, ~25 s left'."""
        elapsed = (self.clock() if now is None else now) - self.started
        done = f"{self.desc}: {_amount(self.count, self.unit)}"
        if self.total:
            done += f"/{_amount(self.total, self.unit)}"
        done += "" if self.unit == BYTES else f" {self.unit}"
        if self.total:
            done += f" ({100 * self.count / self.total:.0f} %)"
        done += f", {_seconds(elapsed)}"
        new = self.count - self.initial
        if self.total and new > 0 and self.count < self.total:
            done += f", ~{_seconds(elapsed * (self.total - self.count) / new)} left"
        return done

    def finish(self) -> None:
        """Close the bar and log the final line: the work done and the time it took."""
        if not self.enabled:
            return
        self._drop_bar()
        elapsed = self.clock() - self.started
        amount = _amount(self.count, self.unit) + ("" if self.unit == BYTES else f" {self.unit}")
        log.info("%s: %s in %s", self.desc, amount, _seconds(elapsed))
        self.enabled = False

    def close(self) -> None:
        """Close the bar without a final line (the job stopped early)."""
        self._drop_bar()
        self.enabled = False

    def _drop_bar(self) -> None:
        bar, self.bar = self.bar, None
        if bar is not None:
            try:
                bar.close()
            except Exception:  # nothing to save on a broken terminal
                pass

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is None:
            self.finish()
        else:
            self.close()


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "working", unit: str = "items",
             enabled: bool = True, *, size: Callable[[T], int] | None = None, interval: float = LOG_INTERVAL_S,
             clock: Callable[[], float] = time.monotonic) -> Iterable[T]:
    """The items of `iterable`, unchanged and in order, with progress shown as they are used (see `Meter`).

    `total` defaults to `len(iterable)`; `size(item)` is the work one item stands for (the images in a batch),
    1 by default. Disabled, `iterable` itself comes back and nothing is shown.
    """
    if not enabled:
        return iterable
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:  # a generator: no total, the lines say how far without a percentage
            total = None
    return _shown(iterable, Meter(total, desc, unit, interval=interval, clock=clock), size)


def _shown(iterable: Iterable[T], meter: Meter, size: Callable[[T], int] | None) -> Iterator[T]:
    finished = False
    try:
        for item in iterable:
            yield item  # counted once the caller asks for the next one: its work on this one is done
            meter.update(1 if size is None else size(item))
        finished = True
    finally:  # a caller that stops early (an error, a break) gets no final line
        if finished:
            meter.finish()
        else:
            meter.close()

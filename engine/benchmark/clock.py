"""Clocks for the benchmark harness: the real one, and one that moves only when a test says so."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Seconds from an arbitrary origin; only differences are used."""

    def now(self) -> float: ...


class PerfClock:
    """The real clock: ``time.perf_counter``."""

    def now(self) -> float:
        return time.perf_counter()


class FakeClock:
    """A clock that moves only when told to: ``advance(dt)``. For testing the statistics."""

    def __init__(self, start: float = 0.0):
        self.t = float(start)

    def now(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += float(dt)

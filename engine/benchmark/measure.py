"""Timing and parity primitives: ``measure`` times contenders in turns, ``min_cosine`` compares their vectors.

Every contender is warmed up before any timing (a cold call is never timed); then the contenders
take turns, one timed pass over the batches each, in alternating order, so drift on a shared
machine favours none of them. Throughput is the best pass (the least disturbed one); latency
percentiles pool every batch call of every pass. ``MemoryProbe`` reads the process's peak
resident memory: on Linux it is reset (``/proc/self/clear_refs``) before each contender's passes,
elsewhere it is the process-lifetime ``ru_maxrss`` and only grows.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .clock import Clock, PerfClock


class MemoryProbe:
    """Peak resident memory of this process, resettable on Linux (VmHWM via clear_refs).

    ``method`` is "VmHWM" where the peak can be reset, else "ru_maxrss".
    """

    def __init__(self):
        self.method = "VmHWM" if self._try_reset() and self._vmhwm_kb() is not None else "ru_maxrss"

    @staticmethod
    def _try_reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _vmhwm_kb() -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def reset(self) -> None:
        """Start a new peak (a no-op with ru_maxrss)."""
        if self.method == "VmHWM":
            self._try_reset()

    def peak_mb(self) -> float | None:
        """The peak since the last reset (ru_maxrss: since the process started) in MB, or None where unknown."""
        if self.method == "VmHWM":
            kb = self._vmhwm_kb()
            return None if kb is None else kb / 1024
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        except ImportError:  # Windows
            return None
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/min/max in milliseconds (numpy's linear-interpolated percentiles).

    Raises:
        InputError: no latencies.
    """
    a = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if a.size == 0:
        raise InputError("no latencies to summarize: the cell ran no batches")
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
    }


@dataclasses.dataclass
class Measurement:
    """What one contender's timed passes over one cell produced."""

    latencies_s: list[float] = dataclasses.field(default_factory=list)  # every batch call
    pass_s: list[float] = dataclasses.field(default_factory=list)  # every full pass
    peak_rss_mb: float | None = None
    outputs: list[Any] = dataclasses.field(default_factory=list)  # last pass, one per batch

    def summary(self, n_texts: int, n_tokens: int) -> dict[str, Any]:
        """Latency percentiles, best and median throughput.

        Args:
            n_texts: texts in one pass.
            n_tokens: real (unpadded) tokens in one pass.

        Returns:
            ``{"latency_ms": latency_summary(...), "texts_per_s", "texts_per_s_median",
            "tokens_per_s", "wall_s"}``: rates and ``wall_s`` of the best pass, except the median.

        Raises:
            InputError: no timed passes.
        """
        if not self.pass_s:
            raise InputError("no timed passes: repeats must be >= 1")
        best = min(self.pass_s)
        med = statistics.median(self.pass_s)
        return {
            "latency_ms": latency_summary(self.latencies_s),
            "texts_per_s": _rate(n_texts, best),
            "texts_per_s_median": _rate(n_texts, med),
            "tokens_per_s": _rate(n_tokens, best),
            "wall_s": best,
        }


def _rate(n: int, seconds: float) -> float:
    return float(n / seconds) if seconds > 0 else float("inf")


def measure(
    contenders: dict[str, Callable[[list[str]], Any]],
    batches: Sequence[list[str]],
    repeats: int,
    clock: Clock | None = None,
    warmup: int = 1,
    memory: MemoryProbe | None = None,
) -> dict[str, Measurement]:
    """Time each contender over ``batches`` (one call per batch), taking turns.

    Every contender first runs ``warmup`` untimed calls on the first batch. Then, ``repeats``
    times, each contender makes one timed pass over all batches; the order of contenders
    alternates between passes (forward, reversed, ...) so drift on a shared machine does not
    favour one of them.

    Args:
        contenders: name -> a callable that embeds one batch.
        batches: the batches of one pass.
        repeats: timed passes per contender.
        clock: the clock to read (default ``PerfClock``; tests pass a ``FakeClock``).
        warmup: untimed calls per contender before any timing.
        memory: when given, reset before each contender's pass and its peak recorded.

    Returns:
        name -> its Measurement, with the last pass's outputs kept (for vector agreement checks).

    Raises:
        InputError: ``repeats`` below 1, or no batches.
    """
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}")
    if not batches:
        raise InputError("no batches to time")
    clock = clock or PerfClock()
    names = list(contenders)
    out = {n: Measurement() for n in names}
    for name in names:
        for _ in range(warmup):
            contenders[name](batches[0])
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        last = r == repeats - 1
        for name in order:
            fn, m = contenders[name], out[name]
            if memory is not None:
                memory.reset()
            outputs = []
            t_pass = clock.now()
            for batch in batches:
                t0 = clock.now()
                y = fn(batch)
                m.latencies_s.append(clock.now() - t0)
                if last:
                    outputs.append(y)
            m.pass_s.append(clock.now() - t_pass)
            if last:
                m.outputs = outputs
            if memory is not None:
                peak = memory.peak_mb()
                if peak is not None:
                    m.peak_rss_mb = max(m.peak_rss_mb or 0.0, peak)
    return out


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine similarity between two (n, d) arrays.

    ``min_i  a_i . b_i / max(|a_i| |b_i|, 1e-30)``

    Raises:
        InputError: the shapes differ.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"cannot compare vectors of shapes {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-30)
    return float(cos.min())

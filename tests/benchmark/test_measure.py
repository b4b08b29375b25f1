"""engine/benchmark/measure.py: statistics on a fake clock, turn order and warm-up, the cosine check, the memory probe.

No timing is asserted: the fake clock makes the statistics exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine import InputError
from engine.benchmark.clock import FakeClock
from engine.benchmark.measure import MemoryProbe, latency_summary, measure, min_cosine


def _timed(clock: FakeClock, durations, log=None, name=None):
    """A contender that takes the next scripted duration (seconds) on every call."""
    it = iter(durations)

    def fn(batch):
        if log is not None:
            log.append(name)
        clock.advance(next(it))
        return np.ones((len(batch), 2), dtype=np.float32)

    return fn


def test_latencies_and_throughput_on_fake_clock():
    clock = FakeClock()
    rng = np.random.default_rng(0)
    n_batches, repeats, warmup = 4, 3, 2
    durations = rng.uniform(0.001, 0.05, size=warmup + n_batches * repeats)
    batches = [["t"] * 8 for _ in range(n_batches)]
    m = measure({"a": _timed(clock, durations)}, batches, repeats, clock=clock, warmup=warmup)["a"]

    timed = durations[warmup:]  # the warm-up calls are never timed
    np.testing.assert_allclose(m.latencies_s, timed, rtol=0, atol=1e-12)
    passes = timed.reshape(repeats, n_batches).sum(axis=1)
    np.testing.assert_allclose(m.pass_s, passes, atol=1e-12)

    s = m.summary(n_texts=32, n_tokens=32 * 20)
    want = np.percentile(timed * 1e3, [50, 95, 99])
    assert [s["latency_ms"][k] for k in ("p50", "p95", "p99")] == pytest.approx(want, rel=1e-12)
    assert s["latency_ms"]["mean"] == pytest.approx(timed.mean() * 1e3)
    assert s["latency_ms"]["max"] == pytest.approx(timed.max() * 1e3)
    assert s["wall_s"] == pytest.approx(passes.min())
    assert s["texts_per_s"] == pytest.approx(32 / passes.min())
    assert s["texts_per_s_median"] == pytest.approx(32 / np.median(passes))
    assert s["tokens_per_s"] == pytest.approx(640 / passes.min())
    assert len(m.outputs) == n_batches  # the last pass's outputs are kept


@pytest.mark.parametrize(
    "lat", [[0.010], [0.003, 0.001], list(np.linspace(0.001, 0.1, 101))], ids=["one", "two", "many"]
)
def test_latency_summary_matches_numpy(lat):
    s = latency_summary(lat)
    a = np.asarray(lat) * 1e3
    for q in (50, 95, 99):
        assert s[f"p{q}"] == pytest.approx(np.percentile(a, q))
    assert s["min"] == pytest.approx(a.min())


def test_contenders_alternate_and_warm_up_first():
    clock = FakeClock()
    log: list[str] = []
    fns = {n: _timed(clock, [0.001] * 20, log, n) for n in ("x", "y", "z")}
    measure(fns, [["a"]], repeats=3, clock=clock, warmup=1)
    assert log == [
        "x",
        "y",
        "z",  # warm-up, one each
        "x",
        "y",
        "z",
        "z",
        "y",
        "x",
        "x",
        "y",
        "z",
    ]  # passes alternate direction


def test_measure_refuses_nonsense():
    with pytest.raises(InputError, match="repeats"):
        measure({"a": lambda b: None}, [["x"]], repeats=0)
    with pytest.raises(InputError, match="no batches"):
        measure({"a": lambda b: None}, [], repeats=1)
    with pytest.raises(InputError, match="no latencies"):
        latency_summary([])


def test_min_cosine():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert min_cosine(a, b) == pytest.approx(1 / np.sqrt(2))
    with pytest.raises(InputError, match="shapes"):
        min_cosine(a, b[:2])


def test_memory_probe_reads_a_peak():
    probe = MemoryProbe()
    probe.reset()
    peak = probe.peak_mb()
    assert probe.method in ("VmHWM", "ru_maxrss")
    assert peak is None or peak > 1.0  # a Python process holds more than 1 MB

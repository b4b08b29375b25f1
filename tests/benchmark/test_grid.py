"""engine/benchmark/grid.py: a cell's rows on a fake clock (speedup and cosine against st-torch), config validation."""

from __future__ import annotations

import numpy as np
import pytest

from engine import InputError
from engine.benchmark.clock import FakeClock
from engine.benchmark.contenders import Contender
from engine.benchmark.grid import BenchConfig, _run_cell
from engine.benchmark.results import best_batch_sizes
from tests.benchmark.test_measure import _timed


def test_speedup_and_cosine_against_the_torch_baseline_of_the_same_cell():
    clock = FakeClock()

    class FakeEmb:
        def tokenize(self, texts):
            return [np.zeros(10, dtype=np.int64) for _ in texts]

    vecs = np.eye(4, 3, dtype=np.float32)
    vecs[3] = [1, 1, 0]

    def contender(name, per_batch):
        def fn(batch):
            clock.advance(per_batch)
            return vecs[: len(batch)] if name != "st-torch" else vecs[: len(batch)] * 2.0  # cosine ignores scale

        return Contender(name, "fp32", fn, {"t": 1})

    cs = [contender("engine", 0.01), contender("st-torch", 0.03)]
    cfg = BenchConfig(n_texts=4, repeats=2)
    rows = _run_cell("m", "cpu", "short", 4, ["a", "b", "c", "d"], cs, cfg, clock, None, FakeEmb())
    by = {r["contender"]: r for r in rows}
    assert by["engine"]["speedup_vs_st_torch"] == pytest.approx(3.0)
    assert by["st-torch"]["speedup_vs_st_torch"] == pytest.approx(1.0)
    assert by["engine"]["min_cosine_vs_st_torch"] == pytest.approx(1.0)
    assert by["engine"]["tokens"] == 40 and by["engine"]["tokens_per_s"] == pytest.approx(40 / 0.01)
    assert best_batch_sizes({"rows": rows}) == {("m", "cpu", "fp32", "short"): 4}


def test_cell_without_baseline_has_no_speedup():
    clock = FakeClock()

    class FakeEmb:
        def tokenize(self, texts):
            return [np.zeros(3, dtype=np.int64) for _ in texts]

    c = Contender("engine", "fp32", _timed(clock, [0.01] * 10), {})
    rows = _run_cell("m", "cpu", "short", 2, ["a", "b"], [c], BenchConfig(n_texts=2, repeats=1), clock, None, FakeEmb())
    assert rows[0]["speedup_vs_st_torch"] is None and rows[0]["min_cosine_vs_st_torch"] is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lengths": ("huge",)}, "length bucket"),
        ({"devices": ("tpu",)}, "device"),
        ({"baselines": ("fastembed",)}, "baseline"),
        ({"batch_sizes": (0, 8)}, "batch sizes"),
        ({"n_texts": 0}, "n_texts"),
        ({"repeats": 0}, "repeats"),
        ({"warmup": 0}, "warmup"),
        ({"models": ()}, "no model"),
    ],
    ids=["length", "device", "baseline", "batch", "n_texts", "repeats", "warmup", "model"],
)
def test_config_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        BenchConfig(**kwargs).validate()

"""Conventions of the pytest-benchmark suites in bench/ (see bench/README.md).

Every benchmark carries the same parameter names, ``PARAMS`` = model, device, precision,
batch_size, so ``--benchmark-group-by=param:NAME`` works for each of them over the whole suite:
pytest-benchmark reads ``params[NAME]`` of every benchmark and stops with a KeyError on one that
lacks it. A benchmark parametrizes the names it varies; the ``bench_params(name=value)`` marker
gives the ones it has without varying them (a kernel runs on cpu, at int8); the rest read "n/a".
They are set on the benchmark fixture before the test body runs, so the table,
``--benchmark-json``, saved runs and ``pytest-benchmark compare --group-by param:NAME`` all see
them. A benchmark that ends without a group is an error: every table row belongs to one. Saved
runs carry the chip (``machine_info["embed_engine"]``).
"""

from __future__ import annotations

import pytest

PARAMS = ("model", "device", "precision", "batch_size")
NA = "n/a"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "bench_params(**values): values of the grouping parameters (model, device, precision, batch_size) "
        "that a benchmark has without being parametrized over them",
    )


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    """Saved runs name the chip as every bench/ result does: ``machine_info["embed_engine"]`` is
    ``engine.benchmark.chip.environment()`` (CPU model, ISA flags, int8 class and recipe,
    onnxruntime, load average)."""
    from engine.benchmark.chip import environment

    machine_info["embed_engine"] = environment()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # pytest's recipe for a fixture to see how the test went (item.bench_passed, read below)
    report = yield
    if report.when == "call":
        item.bench_passed = report.passed
    return report


@pytest.fixture(autouse=True)
def _suite_params(request):
    if "benchmark" not in request.fixturenames:
        yield
        return
    fixed: dict = {}
    for mark in reversed(list(request.node.iter_markers("bench_params"))):  # the closest mark wins
        unknown = sorted(set(mark.kwargs) - set(PARAMS))
        if unknown:
            pytest.fail(f"bench_params got {', '.join(unknown)}; the suite's parameters are {', '.join(PARAMS)}")
        fixed.update(mark.kwargs)
    callspec = getattr(request.node, "callspec", None)
    bm = request.getfixturevalue("benchmark")
    # a new dict: pytest-benchmark's default is pytest's own callspec.params
    bm.params = {**dict.fromkeys(PARAMS, NA), **fixed, **(callspec.params if callspec else {})}
    yield
    if getattr(request.node, "bench_passed", False) and not bm.group:
        pytest.fail(f"{request.node.name} set no benchmark.group; every benchmark in bench/ belongs to a group")

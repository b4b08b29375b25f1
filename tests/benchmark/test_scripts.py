"""The bench/ scripts stay runnable: each one parses ``--help`` (its imports and argument set-up
work on a clean install), the recipe override the per-ISA scripts use changes and restores the
int8 recipe, and a real pytest-benchmark run of a few of bench/'s benchmarks groups by parameter.
They measure, so nothing here asserts a timing: the real run checks only what was written, its
structure, and values derived from the recorded times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("bench", "bench/experiments", "bench/gpu", "bench/isa_emulation")
SCRIPTS = sorted(p for d in FOLDERS for p in (ROOT / d).glob("*.py") if "__main__" in p.read_text(encoding="utf-8"))


def test_the_scripts_are_found():
    names = {p.name for p in SCRIPTS}
    assert {"int8_speed.py", "int8_quality.py", "isa_report.py", "search_bench.py", "graph_ab.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_help(script):
    r = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "usage:" in r.stdout


def test_recipe_override_changes_and_restores(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from recipe_override import int8_recipe_as

    from engine.models import quantize

    own = quantize.int8_recipe()
    other = "rr" if own != "rr" else "vnni"
    with int8_recipe_as(other):
        assert quantize.int8_recipe() == other and quantize.int8_recipe("amx_int8") == other
    assert quantize.int8_recipe() == own
    with int8_recipe_as(None):
        assert quantize.int8_recipe() == own
    with pytest.raises(SystemExit, match="unknown int8 recipe 'fp8'"), int8_recipe_as("fp8"):
        pass
    assert quantize.int8_recipe() == own


# -- pytest-benchmark for real on a tiny subset of bench/ --------------------------------
def test_pytest_benchmark_groups_by_param(tiny_embedder, tiny_model_dir, tiny_cache, tmp_path):
    """`pytest bench/ --benchmark-group-by=param:device` runs and groups; every benchmark carries
    the suite's parameter names, so grouping by any of them works on the saved JSON too."""
    from pytest_benchmark.plugin import pytest_benchmark_group_stats

    out = tmp_path / "bench.json"
    # only pytest-benchmark among the installed pytest plugins: faster start, nothing else interferes
    env = {
        **os.environ,
        "BENCH_MODEL": str(tiny_model_dir),
        "EMBED_ENGINE_CACHE": str(tiny_cache),
        "BENCH_N": "2000",
        "BENCH_N_TEXTS": "8",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "pytest_benchmark.plugin",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not slow",
        "bench/test_bench_encode.py",
        "bench/test_bench_kernels.py",
        "-k",
        "(encode and cpu and fp32 and bs8) or (index_search and cpu) or calibrate",
        "--benchmark-only",
        "--benchmark-group-by=param:device",
        "--benchmark-min-rounds=1",
        "--benchmark-max-time=0.001",
        "--benchmark-warmup=off",
        f"--benchmark-json={out}",
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "benchmark 'device=cpu': 4 tests" in r.stdout, r.stdout[-4000:]
    doc = json.loads(out.read_text())
    chip = doc["machine_info"]["embed_engine"]  # the saved run names the chip
    assert chip["cpu"]["model"] and chip["int8_isa"] and chip["onnxruntime"]
    names = sorted(b["name"] for b in doc["benchmarks"])
    assert names == [
        "test_bench_calibrate",
        "test_bench_index_search[cpu-fp32]",
        "test_bench_index_search[cpu-int8]",
        "test_encode[tiny-bert-cpu-fp32-bs8]",
    ]
    for b in doc["benchmarks"]:
        assert b["group"] and set(b["params"]) >= {"model", "device", "precision", "batch_size"}, b
    enc = next(b for b in doc["benchmarks"] if b["name"].startswith("test_encode"))
    assert enc["params"] == {"model": str(tiny_model_dir), "device": "cpu", "precision": "fp32", "batch_size": 8}
    info = enc["extra_info"]
    assert info["n_texts"] == 8 and info["texts_per_s"] == pytest.approx(8 / enc["stats"]["min"])
    assert info["tokens_per_s"] == pytest.approx(info["tokens"] / enc["stats"]["min"]) and info["tokens"] > 8
    cal = next(b for b in doc["benchmarks"] if b["name"] == "test_bench_calibrate")
    assert cal["params"] == {"model": "n/a", "device": "cpu", "precision": "int8", "batch_size": "n/a"}
    # what `pytest-benchmark compare --group-by` does with the saved file: no KeyError for any name
    groups = dict(pytest_benchmark_group_stats(config=None, benchmarks=doc["benchmarks"], group_by="param:batch_size"))
    assert {k: len(v) for k, v in groups.items()} == {"batch_size=1": 2, "batch_size=8": 1, "batch_size=n/a": 1}
    groups = dict(pytest_benchmark_group_stats(config=None, benchmarks=doc["benchmarks"], group_by="param:precision"))
    assert {k: len(v) for k, v in groups.items()} == {"precision=fp32": 2, "precision=int8": 2}

"""engine/benchmark/contenders.py: the sentence-transformers baselines load offline, agree with the
engine's vectors, and each row names the runtime that ran it (tiny runs of the grid)."""

from __future__ import annotations

import pytest

from engine.benchmark.grid import BenchConfig, run_grid
from engine.benchmark.results import CSV_FIELDS


@pytest.mark.slow
def test_tiny_run_with_both_baselines(tiny_model_dir, tiny_cache, tmp_path):
    """The baselines load offline and the engine's vectors match sentence-transformers torch."""
    cfg = BenchConfig(
        models=(str(tiny_model_dir),),
        devices=("cpu",),
        batch_sizes=(4,),
        lengths=("medium",),
        n_texts=8,
        repeats=1,
        baselines=("st-torch", "st-onnx"),
        threads=1,
        cache_dir=str(tiny_cache),
    )
    doc = run_grid(cfg, progress=False)
    by = {r["contender"]: r for r in doc["rows"]}
    assert set(by) == {"engine", "st-torch", "st-onnx"}, doc["skipped"]
    assert by["st-torch"]["speedup_vs_st_torch"] == pytest.approx(1.0)
    assert by["engine"]["min_cosine_vs_st_torch"] > 0.9999
    assert by["st-onnx"]["min_cosine_vs_st_torch"] > 0.9999


def test_tiny_run_records_each_contenders_runtime(tiny_model_dir, tiny_cache):
    """Every row names the runtime that ran it; the engine's is the one its Embedder chose."""
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    cfg = BenchConfig(
        models=(str(tiny_model_dir),),
        devices=("cpu",),
        batch_sizes=(4,),
        lengths=("medium",),
        n_texts=8,
        repeats=1,
        baselines=("st-torch", "st-openvino"),
        threads=1,
        cache_dir=str(tiny_cache),
    )
    doc = run_grid(cfg, progress=False)
    rows = {r["contender"]: r for r in doc["rows"]}
    assert rows["engine"]["runtime"] == "onnxruntime" and rows["st-torch"]["runtime"] == "torch"
    skipped = {s["contender"] for s in doc["skipped"]}
    if "st-openvino" not in skipped:  # needs the peers extra (optimum-intel)
        assert rows["st-openvino"]["runtime"] == "openvino"
        assert rows["st-openvino"]["min_cosine_vs_st_torch"] > 0.9999
    assert "runtime" in CSV_FIELDS

"""engine/benchmark/chip.py: the environment block, the GEMM probe graphs and peak, the model's FLOPs per
token and a run's distance to the peak."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.benchmark.chip import environment
from engine.benchmark.results import format_table


def test_environment_block():
    env = environment()
    assert isinstance(env["cpu"]["model"], str) and env["cpu"]["model"]
    assert isinstance(env["cpu"]["logical_cores"], int) and env["cpu"]["physical_cores"] >= 1
    assert all(isinstance(v, bool) for v in env["cpu"]["flags"].values())
    assert "avx512_vnni" in env["cpu"]["flags"]
    assert isinstance(env["gpu"], list)
    assert "CPUExecutionProvider" in env["onnxruntime_providers"]
    assert env["versions"]["onnxruntime"] and env["versions"]["numpy"]
    from engine.models.quantize import cpu_isa, int8_recipe

    assert env["int8_isa"] == cpu_isa() and env["int8_recipe"] == int8_recipe()
    assert env["onnxruntime"] == env["versions"]["onnxruntime"]
    assert len(env["load_average"]) == 3 and all(x >= 0 for x in env["load_average"])
    json.dumps(env)  # serializable as is


@pytest.mark.parametrize("int8", [False, True], ids=["fp32-MatMul", "int8-MatMulInteger"])
def test_gemm_graph_computes_the_product(int8):
    """The hand-written protobuf is a valid ONNX model whose output is A @ B (numpy oracle)."""
    import onnxruntime as ort

    from engine.benchmark.chip import gemm_graph
    from engine.onnx_bytes import tensor

    m, k, n = 5, 7, 3
    model = gemm_graph(m, k, n, int8)
    rng = np.random.default_rng(0)  # gemm_graph's weights: the same generator and draw
    b = rng.integers(-127, 128, size=(k, n), dtype=np.int8) if int8 else rng.standard_normal((k, n)).astype(np.float32)
    assert tensor("B", b, 3 if int8 else 1) in model
    if int8:
        a = (np.arange(m * k).reshape(m, k) * 37 % 256).astype(np.uint8)
    else:
        a = rng.standard_normal((m, k)).astype(np.float32)
    got = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"A": a})[0]
    if int8:
        want = (a.astype(np.int64) - 128) @ b.astype(np.int64)  # a_zero_point 128
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-5)


def test_gemm_peak_on_a_tiny_shape():
    from engine.benchmark.chip import gemm_peak

    peak = gemm_peak(1, shape=(16, 32, 24), min_s=0.01)
    assert peak["shape"] == [16, 32, 24] and peak["threads"] == 1
    for k in ("fp32_gflops", "int8_gops", "int8_over_fp32"):
        assert np.isfinite(peak[k]) and peak[k] > 0, peak


def test_model_flops_per_token_tiny_model_by_hand(tiny_embedder):
    from engine.benchmark.chip import limit_fields, model_flops_per_token, transformer_shape

    shape = transformer_shape(tiny_embedder)
    assert shape == {"layers": 2, "hidden": 32, "intermediate": 64}  # conftest's BertConfig
    # per layer: Q, K, V, O 4 x (2 x 32 x 32) = 8192; FFN 2 x (2 x 32 x 64) = 8192;
    # scores and context at 10 tokens 2 x (2 x 10 x 32) = 1280; two layers
    assert model_flops_per_token(tiny_embedder, 10) == 2 * (8192 + 8192 + 1280)
    # all-MiniLM-L6-v2 (6 x 384 / 1536) at its 239-token SciFact mean, by hand: 6 x (1,179,648 + 2,359,296 + 367,104)
    minilm = {"layers": 6, "hidden": 384, "intermediate": 1536}
    assert model_flops_per_token(None, 239, minilm) == 6 * 3_906_048
    peak = {"fp32_gflops": 100.0, "int8_gops": 400.0}
    assert limit_fields(1e6, 2e5, "int8", peak) == {"gflops": 200.0, "fraction_of_peak": 0.5}
    assert limit_fields(1e6, 2e5, "fp32", peak) == {"gflops": 200.0, "fraction_of_peak": 2.0}
    assert limit_fields(1e6, None, "fp32", peak) == {"gflops": None, "fraction_of_peak": None}


def test_tiny_run_reports_the_chip_and_fraction_of_peak(tiny_run, tiny_embedder):
    from engine.benchmark.chip import model_flops_per_token

    doc = json.loads((tiny_run / "results.json").read_text())
    env, peak = doc["environment"], doc["gemm_peak"]
    assert env["int8_isa"] and env["onnxruntime"] == env["versions"]["onnxruntime"]
    assert peak["threads"] == 1 and peak["fp32_gflops"] > 0 and peak["int8_gops"] > 0
    (model,) = doc["models"]
    mean_tokens = doc["texts"][model]["short"]["mean_tokens"]
    for row in doc["rows"]:
        # texts are the same across cells but a cell uses its first n_texts: recompute from the row
        flops = model_flops_per_token(tiny_embedder, row["tokens"] / row["n_texts"])
        assert row["gflops"] == pytest.approx(row["tokens_per_s"] * flops / 1e9, rel=1e-2, abs=0.01)
        assert row["fraction_of_peak"] == pytest.approx(row["gflops"] / peak["fp32_gflops"], rel=1e-2, abs=1e-3)
    assert 8 <= mean_tokens <= 16
    table = format_table(doc)
    assert "of peak" in table and f"int8 ISA class {env['int8_isa']}" in table

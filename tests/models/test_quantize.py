"""models/quantize.py: int8 / fp16 variants on a tiny in-test BERT, precision errors, recipe settings, the CPU's
ISA class and the recipe table, parity gates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from engine import Embedder, InputError
from engine.errors import ExportError
from engine.models import quantize
from engine.models.export import load_or_export
from engine.models.quantize import (
    DEFAULT_INT8,
    INT8_RECIPES,
    ISA_CLASSES,
    ISA_OTHER,
    ISA_RECIPES,
    convert_fp16,
    cpu_isa,
    int8_recipe,
    isa_class,
    quantize_int8,
)

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "numba compiles python loops to machine code",
    "onnx runtime executes exported neural networks",
    "héllo wörld café naïve",
    "a",
    "tokenizers split words into word pieces " * 4,
]


@pytest.fixture(scope="module")
def int8_embedder(tiny_model_dir, tiny_cache):
    """onnxruntime's dynamic int8 (the recipes this module builds), whatever this CPU's default int8 runtime."""
    return Embedder(str(tiny_model_dir), model_precision="int8", cache_dir=tiny_cache, runtime="onnxruntime")


@pytest.fixture(scope="module")
def fp32_graph(tiny_model_dir, tiny_cache):
    return load_or_export(str(tiny_model_dir), "fp32", cache_dir=tiny_cache).onnx_path


def _ops(path) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in onnx.load(str(path)).graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


def test_int8_close_to_fp32_but_not_identical(tiny_embedder, int8_embedder):
    a = tiny_embedder.encode(TEXTS)
    b = int8_embedder.encode(TEXTS)
    cos = np.sum(a * b, axis=1)
    assert cos.min() > 0.95, cos
    assert np.abs(a - b).max() > 0, "int8 output equals fp32 exactly: the graph was not quantized"
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)


def test_int8_graph_and_settings(int8_embedder, tiny_embedder):
    ops = _ops(int8_embedder._exported.onnx_path)
    assert ops.get("MatMulInteger", 0) + ops.get("QAttention", 0) > 0, ops
    assert "MatMul" not in ops, f"fp32 MatMul left in the default recipe: {ops}"
    assert "FastGelu" in ops and "BiasGelu" not in ops, ops  # the recipe's tanh GELU
    q = int8_embedder._exported.meta["export"]["quantization"]
    assert q["weight_type"] == DEFAULT_INT8["weight_type"]
    assert int8_embedder._exported.meta["int8_isa"] == cpu_isa()  # recorded, outside the fingerprint
    assert q["recipe"] == int8_recipe() and "cpu_isa" not in q
    assert q["reduce_range"] == (cpu_isa() not in ("amx_int8", "avx512_vnni", "avx_vnni"))
    assert q["reduce_range"] is INT8_RECIPES[q["recipe"]]["reduce_range"]
    assert int8_embedder.fingerprint != tiny_embedder.fingerprint
    assert "/int8/" in int8_embedder.fingerprint


@pytest.mark.parametrize(
    "config, expect_ops",
    [
        pytest.param({"op_types": ("MatMul",)}, {"Attention", "MatMulInteger"}, id="matmul-only-keeps-fp32-attention"),
        pytest.param({"weight_type": "QUInt8", "per_channel": False}, {"MatMulInteger"}, id="u8-per-tensor"),
        pytest.param(
            {"exclude": (r"layer\.\d+/output/dense/MatMul$",)}, {"MatMul", "MatMulInteger"}, id="exclude-ffn-output"
        ),
        pytest.param({"gelu": "erf"}, {"BiasGelu", "QAttention"}, id="exact-gelu"),
    ],
)
def test_int8_recipes(fp32_graph, tiny_model_dir, tmp_path, config, expect_ops):
    from engine.models.fetch import spec_from_folder

    dst = tmp_path / "q.onnx"
    settings = quantize_int8(fp32_graph, dst, spec_from_folder(tiny_model_dir), tiny_model_dir, config=config)
    ops = _ops(dst)
    assert expect_ops <= set(ops), ops
    if config.get("exclude"):
        assert settings["excluded_nodes"] == 2  # one FFN output MatMul per layer
    import onnxruntime as ort

    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    ids = np.array([[2, 10, 11, 12, 3]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    names = {i.name for i in sess.get_inputs()}
    out = sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]
    assert out.shape == (1, 5, 32) and np.isfinite(out).all()


def test_int8_bad_weight_type(fp32_graph, tmp_path):
    with pytest.raises(ExportError, match="weight_type"):
        quantize_int8(fp32_graph, tmp_path / "q.onnx", None, None, config={"weight_type": "QInt4x"})


def test_int8_bad_gelu(fp32_graph, tmp_path):
    with pytest.raises(ExportError, match="gelu"):
        quantize_int8(fp32_graph, tmp_path / "q.onnx", None, None, config={"gelu": "relu"})


def test_int8_bad_method(fp32_graph, tmp_path):
    with pytest.raises(ExportError, match="method"):
        quantize_int8(fp32_graph, tmp_path / "q.onnx", None, None, config={"method": "awq"})


def test_int8_static_is_not_a_library_recipe(fp32_graph, tmp_path):
    with pytest.raises(ExportError, match=r"bench/experiments/int8_static_qdq.py"):
        quantize_int8(fp32_graph, tmp_path / "q.onnx", None, None, config={"method": "static"})
    assert not (tmp_path / "q.onnx").exists()


def _pooled(path, ids: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})[0].mean(axis=1)


def test_static_qdq_experiment_script(fp32_graph, tiny_model_dir, tmp_path):
    """The rejected static recipe, now bench/experiments/int8_static_qdq.py, still writes a QDQ graph close to fp32."""
    script = Path(__file__).resolve().parents[2] / "bench" / "experiments" / "int8_static_qdq.py"
    dst = tmp_path / "qdq.onnx"
    subprocess.run(
        [
            sys.executable,
            str(script),
            str(fp32_graph),
            str(dst),
            "--tokenizer",
            str(tiny_model_dir),
            "--op-types",
            "MatMul",
            "--max-length",
            "16",
        ],
        check=True,
        capture_output=True,
    )
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(_ops(dst))
    ids = np.array([[2, 10, 11, 12, 3], [2, 20, 21, 3, 5]], dtype=np.int64)
    ref, got = _pooled(fp32_graph, ids), _pooled(dst, ids)
    cos = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() > 0.99, cos
    assert np.abs(ref - got).max() > 0, "QDQ output equals fp32 exactly: nothing was quantized"


def test_fp16_on_cpu_is_a_clear_error(tiny_model_dir, tiny_cache):
    with pytest.raises(InputError, match="CUDA"):
        Embedder(str(tiny_model_dir), model_precision="fp16", cache_dir=tiny_cache)


def test_convert_fp16_keeps_io_types(fp32_graph, tmp_path):
    dst = tmp_path / "f16.onnx"
    settings = convert_fp16(fp32_graph, dst)
    m = onnx.load(str(dst))
    assert settings["keep_io_types"] is True
    assert {i.name: i.type.tensor_type.elem_type for i in m.graph.input}["input_ids"] == onnx.TensorProto.INT64
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [t for t in m.graph.initializer if len(t.dims) == 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)


# -- the CPU's int8 ISA class and its recipe ------------------------------------------------------
# /proc/cpuinfo "flags" / "Features" lines, cut to the relevant part, of real CPU kinds
SAPPHIRE_RAPIDS = (
    "fpu sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni "
    "amx_bf16 amx_tile amx_int8"
)
ZEN4 = "fpu sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16"
ALDER_LAKE = "fpu sse4_2 avx avx2 fma avx_vnni"
SKYLAKE_X = "fpu sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl"
ZEN3 = "fpu sse4_2 avx avx2 fma"
GRAVITON3 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp sve i8mm"
CORTEX_A72 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
SSE_ONLY = "fpu sse sse2 sse4_1 sse4_2"


def test_cpu_isa_is_known():
    assert cpu_isa() in ("amx_int8", "avx512_vnni", "avx_vnni", "avx512", "avx2", "arm_dot", "other")


@pytest.mark.parametrize(
    "flags, want",
    [
        pytest.param(SAPPHIRE_RAPIDS, "amx_int8", id="amx"),
        pytest.param(ZEN4, "avx512_vnni", id="avx512-vnni"),
        pytest.param(ALDER_LAKE, "avx_vnni", id="avx-vnni"),
        pytest.param(SKYLAKE_X, "avx512", id="avx512-no-vnni"),
        pytest.param(ZEN3, "avx2", id="avx2"),
        pytest.param(GRAVITON3, "arm_dot", id="arm-asimddp"),
        pytest.param(CORTEX_A72, "other", id="arm-no-dot"),
        pytest.param(SSE_ONLY, "other", id="sse-only"),
        pytest.param("", "other", id="no-flags"),
    ],
)
def test_isa_class_from_cpuinfo_flags(flags, want):
    assert isa_class(flags.split()) == want


@pytest.mark.parametrize(
    "flags, recipe",
    [
        (SAPPHIRE_RAPIDS, "vnni"),
        (ZEN4, "vnni"),
        (ALDER_LAKE, "vnni"),
        (SKYLAKE_X, "rr"),
        (ZEN3, "rr"),
        (GRAVITON3, "rr"),
        (SSE_ONLY, "rr"),
    ],
)
def test_recipe_per_class(flags, recipe):
    isa = isa_class(flags.split())
    assert int8_recipe(isa) == recipe
    assert INT8_RECIPES[recipe]["reduce_range"] is (recipe == "rr")  # saturating vpmaddubsw -> 7-bit weights


def test_recipe_table_covers_every_class_with_a_reason():
    assert set(ISA_RECIPES) == {name for name, _ in ISA_CLASSES} | {ISA_OTHER}
    for isa, (recipe, why) in ISA_RECIPES.items():
        assert recipe in INT8_RECIPES and len(why) > 20, isa


def test_cpu_isa_reads_this_machine(monkeypatch):
    assert quantize.cpu_isa() == isa_class(quantize.cpu_flags())
    assert quantize.cpu_isa() in ISA_RECIPES


# -- parity gates ---------------------------------------------------------------------------------


def test_int8_export_records_calibration_parity(int8_embedder):
    cal = int8_embedder._exported.meta["int8_calibration_cosine"]
    assert 0.98 <= cal["min"] <= cal["mean"] <= 1.0, cal


def test_int8_parity_floor_refuses_a_drifting_graph(fp32_graph, tmp_path, tiny_cache):
    """A graph whose vectors are far from fp32 (here: another random model) fails the export check."""
    from engine.models.fetch import spec_from_folder
    from engine.models.quantize import check_int8_parity
    from tests.conftest import build_tiny_model

    other = build_tiny_model(tmp_path / "other-bert", seed=1)
    other_graph = load_or_export(str(other), "fp32", cache_dir=tiny_cache).onnx_path
    folder = fp32_graph.parent  # holds tokenizer.json
    same = check_int8_parity(fp32_graph, fp32_graph, spec_from_folder(other), folder)  # identical: passes
    assert same["min"] > 0.99999
    with pytest.raises(ExportError, match=r"loses too much.*int8_exclude"):
        check_int8_parity(fp32_graph, other_graph, spec_from_folder(other), folder)


@pytest.mark.parametrize(
    ("pooling", "rows"),
    [
        ("mean", ["mean"]),
        ("cls", ["cls"]),
        ("lasttoken", ["lasttoken"]),
        ("mean+max", ["mean", "max"]),
        ("weightedmean", ["weightedmean"]),
        ("something_new", None),
    ],
)
def test_the_bf16_gate_sees_the_vectors_the_stack_pools(pooling, rows):
    from engine.kernels.pooling import POOLERS
    from engine.models.quantize import _pooling_views

    hidden = np.random.default_rng(0).normal(size=(1, 5, 8)).astype(np.float32)
    h = hidden[0]
    w = np.arange(1, 6, dtype=np.float32)[:, None]  # weightedmean: position t + 1
    ref = {
        "mean": h.mean(0),
        "mean_sqrt_len_tokens": h.sum(0) / np.sqrt(5),
        "weightedmean": (w * h).sum(0) / w.sum(),
        "cls": h[0],
        "lasttoken": h[-1],
        "max": h.max(0),
    }
    views = _pooling_views(hidden, pooling)
    want = np.stack([ref[r] for r in rows or POOLERS])  # an unknown mode is gated on every pooler's view
    np.testing.assert_allclose(views, want / np.linalg.norm(want, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    pooled = np.ones((1, 8), np.float32)  # a graph that pools itself is its own view
    np.testing.assert_allclose(_pooling_views(pooled, "cls"), pooled / np.sqrt(8))

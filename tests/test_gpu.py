"""CUDA path end to end. Every test here skips, with the reason, where no GPU is usable."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _cuda_reason() -> str | None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"onnxruntime has no CUDAExecutionProvider (available: {ort.get_available_providers()})"
    return None


def _texts() -> list[str]:
    raw = resources.files("engine").joinpath("data", "sample_corpus.jsonl").read_text(encoding="utf-8")
    docs = [json.loads(line) for line in raw.splitlines() if line.strip()]
    texts = [f"{d['title']} {d['text']}" for d in docs]
    return [*texts, " ".join(texts[:8]) * 3, "", "héllo 日本語 🙂"]


@pytest.fixture(scope="module")
def cpu_and_texts():
    if (why := _cuda_reason()) is not None:
        pytest.skip(why)
    from engine import Embedder

    cpu = Embedder("all-MiniLM-L6-v2", device="cpu")
    texts = _texts()
    return cpu, texts, cpu.encode(texts)


@pytest.mark.parametrize("precision,min_cos", [("fp32", 0.99999), ("fp16", 0.999)])
def test_cuda_matches_cpu(cpu_and_texts, precision, min_cos):
    from engine import Embedder

    cpu, texts, ref = cpu_and_texts
    gpu = Embedder("all-MiniLM-L6-v2", device="cuda", model_precision=precision)
    assert gpu._session.io_binding
    out = gpu.encode(texts, batch_size=64)
    cos = np.sum(out * ref, axis=1)
    assert cos.min() >= min_cos, f"{precision}: min cosine {cos.min()}"
    if precision == "fp32":
        assert gpu.fingerprint == cpu.fingerprint  # same model and export: interchangeable vectors


def test_index_search_on_gpu_equals_cpu():
    from engine.kernels import cuda as kc

    ok, why = kc.available()
    if not ok:
        pytest.skip(why)
    from engine import Index

    rng = np.random.default_rng(0)
    x = rng.standard_normal((50_000, 384)).astype(np.float32)
    q = rng.standard_normal((32, 384)).astype(np.float32)
    for precision in ("fp32", "int8"):
        idx = Index(384, precision=precision)
        idx.add(x)
        s_cpu, i_cpu = idx.search(q, 10)
        s_gpu, i_gpu = idx.search(q, 10, device="cuda")
        assert np.mean(i_cpu == i_gpu) >= 0.999, precision
        np.testing.assert_allclose(s_gpu, s_cpu, atol=1e-5)

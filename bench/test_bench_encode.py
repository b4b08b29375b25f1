"""pytest-benchmark profiles of end-to-end ``Embedder.encode`` per batch size.

    pytest bench/test_bench_encode.py --benchmark-only                 # tiny model (default)
    BENCH_MODEL=all-MiniLM-L6-v2 pytest bench/test_bench_encode.py --benchmark-only
    BENCH_MODEL=all-MiniLM-L6-v2 BENCH_LENGTH=long pytest bench/ --benchmark-only -k encode

The default model is a tiny random BERT built in the test (CI runs this file with
``--benchmark-disable`` as a smoke: each case runs once and its output is checked). Texts are
cut from the built-in sample corpus to the BENCH_LENGTH bucket (short/medium/long). pytest-benchmark
runs 3 timed rounds after one warm-up round (``pedantic``); for the grid with
baselines and percentiles use ``embed bench``.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from engine.benchmark.harness import LENGTH_BUCKETS, build_texts, read_corpus

BATCH_SIZES = [1, 8, 32, 128]
N_TEXTS = int(os.environ.get("BENCH_N_TEXTS", "128"))
LENGTH = os.environ.get("BENCH_LENGTH", "medium")


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    from engine import Embedder

    model = os.environ.get("BENCH_MODEL")
    if model:
        return Embedder(model)
    from tests.conftest import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("bench-model") / "tiny-bert")
    return Embedder(str(folder), cache_dir=tmp_path_factory.mktemp("bench-cache"))


@pytest.fixture(scope="module")
def texts(embedder):
    if LENGTH not in LENGTH_BUCKETS:
        pytest.fail(f"BENCH_LENGTH={LENGTH!r} is not one of {', '.join(LENGTH_BUCKETS)}")
    specials = len(embedder.tokenize([""])[0])
    count = lambda ws: [len(x) - specials for x in embedder.tokenize(ws)]  # noqa: E731
    target = min(LENGTH_BUCKETS[LENGTH], embedder.max_seq_length)
    return build_texts(read_corpus(), count, target, N_TEXTS, specials)


@pytest.mark.parametrize("batch_size", BATCH_SIZES, ids=[f"bs{b}" for b in BATCH_SIZES])
def test_encode(benchmark, embedder, texts, batch_size):
    benchmark.group = f"encode {embedder.name} {LENGTH} x{len(texts)}"
    benchmark.extra_info.update(batch_size=batch_size, n_texts=len(texts), threads=embedder.threads,
                                fingerprint=embedder.fingerprint)
    embedder.encode(texts[:batch_size], batch_size=batch_size)  # never time a cold call
    vecs = benchmark.pedantic(embedder.encode, args=(texts,), kwargs={"batch_size": batch_size},
                              rounds=3, iterations=1, warmup_rounds=1)
    assert vecs.shape == (len(texts), embedder.dim) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    # the batch size changes the schedule, never the vectors
    ref = embedder.encode(texts[:4], batch_size=1)
    np.testing.assert_allclose(vecs[:4], ref, atol=1e-5)

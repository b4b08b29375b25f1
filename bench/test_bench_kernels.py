"""pytest-benchmark suites for the search kernels and the Index.

``pytest bench/ --benchmark-only`` times them; CI runs ``--benchmark-disable`` (each body runs
once) as a correctness smoke, so sizes are small and every benchmark checks its result.
Sizes scale with BENCH_N (default 20_000 rows of dim 384) for a local run:
``BENCH_N=200000 pytest bench/test_bench_kernels.py --benchmark-only``.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from engine.kernels.normalize import l2_normalize
from engine.kernels.quantize import (
    calibrate_scales,
    dequantize,
    fold_queries,
    quantize,
    topk_int8,
)
from engine.kernels.topk import rescore, topk_dot

from engine.index import Index

N = int(os.environ.get("BENCH_N", "20000"))
D = 384
K = 10


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = l2_normalize(rng.standard_normal((N, D), dtype=np.float32))
    q = l2_normalize(x[rng.integers(0, N, 64)] + 0.3 * rng.standard_normal((64, D), dtype=np.float32))
    scales = calibrate_scales(x)
    codes = quantize(x, scales)
    return x, q, scales, codes


def exact_topk(x, q, k):
    s = q.astype(np.float64) @ x.T.astype(np.float64)
    i = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return i


def recall(found, truth):
    return np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(found, truth)])


@pytest.mark.parametrize("nq,method", [(1, "scan"), (16, "scan"), (64, "gemm")])
def test_bench_topk_fp32(benchmark, data, nq, method):
    x, q, _, _ = data
    s, i = benchmark(topk_dot, x, q[:nq], K, method=method)
    assert i.shape == (nq, K)
    assert recall(i, exact_topk(x, q[:nq], K)) == 1.0
    assert np.all(np.diff(s, axis=1) <= 0)


@pytest.mark.parametrize("nq", [1, 16])
def test_bench_topk_int8_scan(benchmark, data, nq):
    x, q, scales, codes = data
    _s, _i = benchmark(topk_int8, codes, q[:nq], scales, K * 4)
    _, cand = topk_int8(codes, q[:nq], scales, K * 4)
    assert recall(cand[:, :K], exact_topk(x, q[:nq], K)) >= 0.8   # before rescoring


def test_bench_rescore(benchmark, data):
    x, q, scales, codes = data
    _, cand = topk_int8(codes, q, scales, K * 4)
    s, i = benchmark(rescore, x, q, cand, K)
    assert recall(i, exact_topk(x, q, K)) >= 0.99
    np.testing.assert_allclose(s, np.take_along_axis(q @ x.T, i, 1), atol=1e-5)


def test_bench_quantize(benchmark, data):
    x, _, scales, _ = data
    codes = benchmark(quantize, x, scales)
    assert np.all(np.abs(dequantize(codes, scales) - x) <= scales * 0.5001)


def test_bench_calibrate(benchmark, data):
    x = data[0]
    s = benchmark(calibrate_scales, x)
    np.testing.assert_allclose(s, np.abs(x).max(0) / 127, rtol=1e-6)


def test_bench_dequantize(benchmark, data):
    x, _, scales, codes = data
    y = benchmark(dequantize, codes, scales)
    assert np.abs(y - x).max() <= scales.max() * 0.5001


def test_bench_fold_queries(benchmark, data):
    _, q, scales, _ = data
    qq, t = benchmark(fold_queries, q, scales)
    assert np.all(np.abs(qq * t[:, None] - q * scales) <= t[:, None] * 0.5 + 1e-9)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_bench_index_search(benchmark, data, precision):
    x, q, _, _ = data
    idx = Index(D, precision)
    idx.add(x)
    _s, i = benchmark(idx.search, q[:1], K)
    assert recall(i, exact_topk(x, q[:1], K)) == 1.0


def test_bench_topk_hamming(benchmark, data):
    from engine.kernels.binary import pack_signs, topk_hamming

    x, q, _, _ = data
    codes = pack_signs(x)
    s, _i = benchmark(topk_hamming, codes, q[:1], D, 100)
    sim = D - 2 * ((x > 0) != (q[:1] > 0)).sum(1)
    assert s[0, 0] == sim.max() and np.all(np.diff(s[0]) <= 0)

"""pytest-benchmark suites for the search kernels and the Index.

``pytest bench/ --benchmark-only`` times them; CI runs ``--benchmark-disable`` (each body runs
once) as a correctness smoke, so sizes are small and every benchmark checks its result.
Sizes scale with BENCH_N (default 20_000 rows of dim 384) for a local run:
``BENCH_N=200000 pytest bench/test_bench_kernels.py --benchmark-only``.

Groups: the top-k searches (fp32, int8, binary kernels and ``Index.search``) share one table;
the int8 steps (calibrate, quantize, dequantize, fold queries, rescore) another. Parameters follow
the suite's names (bench/conftest.py): ``batch_size`` is queries per call, ``precision`` the
vectors' (fp32, int8, binary), ``device`` cpu unless varied, ``model`` n/a (random unit vectors).
Every function gets one untimed call before it is timed (Numba loads its compiled code then).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from engine.index import Index
from engine.kernels.normalize import l2_normalize
from engine.kernels.quantize import (
    calibrate_scales,
    dequantize,
    fold_queries,
    quantize,
    topk_int8,
)
from engine.kernels.topk import rescore, topk_dot

N = int(os.environ.get("BENCH_N", "20000"))
D = 384
K = 10
N_QUERIES = 64
SEARCH = f"search: top-{K} of {N:,} x {D}"
INT8_STEPS = f"int8 steps: {N:,} x {D}, {N_QUERIES} queries"

pytestmark = pytest.mark.bench_params(device="cpu")


def _cuda_missing() -> str | None:
    from engine.kernels import cuda

    ok, why = cuda.available()
    return None if ok else f"no CUDA search here: {why}"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = l2_normalize(rng.standard_normal((N, D), dtype=np.float32))
    q = l2_normalize(x[rng.integers(0, N, N_QUERIES)] + 0.3 * rng.standard_normal((N_QUERIES, D), dtype=np.float32))
    scales = calibrate_scales(x)
    codes = quantize(x, scales)
    return x, q, scales, codes


def timed(benchmark, group, fn, *args, **kwargs):
    """One untimed call, then ``benchmark(fn, ...)`` in ``group``."""
    benchmark.group = group
    fn(*args, **kwargs)
    return benchmark(fn, *args, **kwargs)


def exact_topk(x, q, k):
    s = q.astype(np.float64) @ x.T.astype(np.float64)
    i = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return i


def recall(found, truth):
    return np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(found, truth)])


@pytest.mark.bench_params(precision="fp32")
@pytest.mark.parametrize(
    "batch_size,method", [(1, "scan"), (16, "scan"), (64, "gemm")], ids=["bs1-scan", "bs16-scan", "bs64-gemm"]
)
def test_bench_topk_fp32(benchmark, data, batch_size, method):
    x, q, _, _ = data
    s, i = timed(benchmark, SEARCH, topk_dot, x, q[:batch_size], K, method=method)
    assert i.shape == (batch_size, K)
    assert recall(i, exact_topk(x, q[:batch_size], K)) == 1.0
    assert np.all(np.diff(s, axis=1) <= 0)


@pytest.mark.bench_params(precision="int8")
@pytest.mark.parametrize("batch_size", [1, 16], ids=["bs1", "bs16"])
def test_bench_topk_int8_scan(benchmark, data, batch_size):
    x, q, scales, codes = data
    _s, cand = timed(benchmark, SEARCH, topk_int8, codes, q[:batch_size], scales, K * 4)
    assert recall(cand[:, :K], exact_topk(x, q[:batch_size], K)) >= 0.8  # before rescoring


@pytest.mark.bench_params(precision="binary", batch_size=1)
def test_bench_topk_hamming(benchmark, data):
    from engine.kernels.binary import pack_signs, topk_hamming

    x, q, _, _ = data
    codes = pack_signs(x)
    s, _i = timed(benchmark, SEARCH, topk_hamming, codes, q[:1], D, 100)
    sim = D - 2 * ((x > 0) != (q[:1] > 0)).sum(1)
    assert s[0, 0] == sim.max() and np.all(np.diff(s[0]) <= 0)


@pytest.mark.bench_params(batch_size=1)
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_bench_index_search(benchmark, data, precision, device):
    if device == "cuda" and (why := _cuda_missing()):
        pytest.skip(why)
    x, q, _, _ = data
    idx = Index(D, precision)
    idx.add(x)
    _s, i = timed(benchmark, SEARCH, idx.search, q[:1], K, device=device)  # the untimed call uploads on cuda
    assert recall(i, exact_topk(x, q[:1], K)) == 1.0


@pytest.mark.bench_params(precision="fp32", batch_size=N_QUERIES)
def test_bench_rescore(benchmark, data):
    x, q, scales, codes = data
    _, cand = topk_int8(codes, q, scales, K * 4)
    s, i = timed(benchmark, INT8_STEPS, rescore, x, q, cand, K)
    assert recall(i, exact_topk(x, q, K)) >= 0.99
    np.testing.assert_allclose(s, np.take_along_axis(q @ x.T, i, 1), atol=1e-5)


@pytest.mark.bench_params(precision="int8")
def test_bench_quantize(benchmark, data):
    x, _, scales, _ = data
    codes = timed(benchmark, INT8_STEPS, quantize, x, scales)
    assert np.all(np.abs(dequantize(codes, scales) - x) <= scales * 0.5001)


@pytest.mark.bench_params(precision="int8")
def test_bench_calibrate(benchmark, data):
    x = data[0]
    s = timed(benchmark, INT8_STEPS, calibrate_scales, x)
    np.testing.assert_allclose(s, np.abs(x).max(0) / 127, rtol=1e-6)


@pytest.mark.bench_params(precision="int8")
def test_bench_dequantize(benchmark, data):
    x, _, scales, codes = data
    y = timed(benchmark, INT8_STEPS, dequantize, codes, scales)
    assert np.abs(y - x).max() <= scales.max() * 0.5001


@pytest.mark.bench_params(precision="int8", batch_size=N_QUERIES)
def test_bench_fold_queries(benchmark, data):
    _, q, scales, _ = data
    qq, t = timed(benchmark, INT8_STEPS, fold_queries, q, scales)
    assert np.all(np.abs(qq * t[:, None] - q * scales) <= t[:, None] * 0.5 + 1e-9)

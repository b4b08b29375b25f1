"""kernels/cuda.py: the GPU search kernels' logic checked on the CPU through a NumPy stand-in for CuPy
(the CPU kernels of kernels/topk.py are the oracle), and on a real GPU (marked ``gpu``) when CuPy sees one.

The stand-in is the ``numpy_as_cupy`` fixture; tests/index/test_index.py uses it for the Index's GPU path.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from engine.kernels import cuda as kc
from engine.kernels.quantize import calibrate_scales, quantize
from engine.kernels.topk import rescore, topk_dot
from tests.kernels.oracles import unit


@pytest.fixture
def numpy_as_cupy(monkeypatch):
    fake = types.ModuleType("cupy")
    for name in (
        "partition",
        "cumsum",
        "nonzero",
        "take_along_axis",
        "argsort",
        "concatenate",
        "broadcast_to",
        "arange",
        "int64",
        "float32",
    ):
        setattr(fake, name, getattr(np, name))
    fake.asarray = np.asarray
    fake.asnumpy = np.asarray
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(kc, "MAX_BLOCK_ELEMENTS", 4096)  # force many blocks and merges
    return fake


@pytest.mark.parametrize("n,nq,k", [(5000, 3, 10), (700, 17, 50), (5, 2, 10), (1000, 1, 1)])
def test_blocked_gpu_logic_matches_cpu_kernel(numpy_as_cupy, n, nq, k):
    rng = np.random.default_rng(n + nq)
    x, q = unit(rng, n, 48), unit(rng, nq, 48)
    s, i = kc.topk_dot_cuda(kc.to_device(x), q, k)
    rs, ri = topk_dot(x, q, k)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(s, rs, atol=1e-6)


def test_ties_break_by_smaller_index(numpy_as_cupy):
    x = np.tile(np.eye(4, dtype=np.float32), (300, 1))  # every row repeated 300 times
    _s, i = kc.topk_dot_cuda(x, np.eye(4, dtype=np.float32)[:1], 5)
    np.testing.assert_array_equal(i[0], [0, 4, 8, 12, 16])


def test_int8_gpu_candidates_rescored_match_cpu(numpy_as_cupy):
    rng = np.random.default_rng(1)
    x, q = unit(rng, 3000, 64), unit(rng, 8, 64)
    scales = calibrate_scales(x)
    _, cand = kc.topk_int8_cuda(quantize(x, scales), q, scales, 40)
    s, i = rescore(x, q, cand, 10)
    rs, ri = topk_dot(x, q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, ri)]) >= 0.99
    np.testing.assert_allclose(s, rs, atol=1e-6)


def test_available_reports_a_reason():
    ok, why = kc.available()
    assert isinstance(ok, bool) and isinstance(why, str) and why


@pytest.mark.gpu
def test_real_gpu_matches_cpu():
    ok, why = kc.available()
    if not ok:
        pytest.skip(f"no GPU: {why}")
    rng = np.random.default_rng(2)
    x, q = unit(rng, 200_000, 384), unit(rng, 64, 384)
    s, i = kc.topk_dot_cuda(kc.to_device(x), q, 10)
    rs, ri = topk_dot(x, q, 10)
    assert np.mean(i == ri) >= 0.999  # float summation order differs; near-ties may swap
    np.testing.assert_allclose(s, rs, atol=1e-5)
    scales = calibrate_scales(x)
    _, cand = kc.topk_int8_cuda(kc.to_device(quantize(x, scales)), q, scales, 40)
    _s8, i8 = rescore(x, q, cand, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i8, ri)]) >= 0.99

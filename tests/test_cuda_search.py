"""GPU search kernels: logic checked on the CPU through a NumPy stand-in for CuPy, and on a real
GPU (marked ``gpu``) when CuPy sees one."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from engine.kernels import cuda as kc
from engine.kernels.quantize import calibrate_scales, quantize
from engine.kernels.topk import rescore, topk_dot


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


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
    x, q = _unit(rng, n, 48), _unit(rng, nq, 48)
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
    x, q = _unit(rng, 3000, 64), _unit(rng, 8, 64)
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
    x, q = _unit(rng, 200_000, 384), _unit(rng, 64, 384)
    s, i = kc.topk_dot_cuda(kc.to_device(x), q, 10)
    rs, ri = topk_dot(x, q, 10)
    assert np.mean(i == ri) >= 0.999  # float summation order differs; near-ties may swap
    np.testing.assert_allclose(s, rs, atol=1e-5)
    scales = calibrate_scales(x)
    _, cand = kc.topk_int8_cuda(kc.to_device(quantize(x, scales)), q, scales, 40)
    _s8, i8 = rescore(x, q, cand, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i8, ri)]) >= 0.99


def test_index_cuda_without_gpu_is_a_clear_error(monkeypatch):
    from engine import Index, InputError

    monkeypatch.setattr(kc, "available", lambda: (False, "no CUDA device"))
    idx = Index(8)
    idx.add(np.eye(8, dtype=np.float32))
    with pytest.raises(InputError, match=r"no CUDA device.*device='cpu'"):
        idx.search(np.ones(8, np.float32), 3, device="cuda")
    with pytest.raises(InputError, match="device must be"):
        idx.search(np.ones(8, np.float32), 3, device="tpu")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_index_cuda_path_through_numpy_stand_in(numpy_as_cupy, monkeypatch, precision):
    from engine import Index

    monkeypatch.setattr(kc, "available", lambda: (True, "numpy stand-in"))
    rng = np.random.default_rng(3)
    x, q = _unit(rng, 2000, 32), _unit(rng, 5, 32)
    idx = Index(32, precision=precision)
    idx.add(x)
    s_cpu, i_cpu = idx.search(q, 10)
    s_gpu, i_gpu = idx.search(q, 10, device="cuda")
    np.testing.assert_array_equal(i_gpu, i_cpu)
    np.testing.assert_allclose(s_gpu, s_cpu, atol=1e-6)
    idx.add(_unit(rng, 10, 32))  # the device copy follows the index
    assert idx.search(q, 10, device="cuda")[1].shape == (5, 10)

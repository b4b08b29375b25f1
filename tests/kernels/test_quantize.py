"""kernels/quantize.py against numpy oracles: int8 calibration, quantization, query folding, the int8 scans
(int8 x int16 and u8 x s8) and the code they compile to."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernels import quantize as Q
from engine.kernels import topk as T
from engine.kernels.quantize import (
    calibrate_scales,
    dequantize,
    fold_queries,
    quantize,
    query_qmax,
    topk_int8,
)
from engine.kernels.topk import rescore, topk_dot
from tests.kernels.oracles import clustered, int_data, oracle_topk, recall, unit

# ----------------------------------------------------------------------------- quantization


def test_calibrate_scales_max_abs_and_zero_columns():
    x = np.array([[1.0, -2.0, 0.0], [-0.5, 1.0, 0.0]], np.float32)
    np.testing.assert_allclose(calibrate_scales(x), [1 / 127, 2 / 127, 1 / 127], rtol=1e-6)
    np.testing.assert_allclose(calibrate_scales(x[0]), [1 / 127, 2 / 127, 1 / 127], rtol=1e-6)
    rng = np.random.default_rng(4)
    y = rng.standard_normal((2000, 8)).astype(np.float32)
    np.testing.assert_allclose(calibrate_scales(y), np.abs(y).max(0) / 127, rtol=1e-6)
    p99 = calibrate_scales(y, percentile=99.0)
    np.testing.assert_allclose(p99, np.percentile(np.abs(y), 99, axis=0) / 127, rtol=1e-5)
    with pytest.raises(ValueError, match="percentile"):
        calibrate_scales(y, percentile=0)
    with pytest.raises(ValueError, match="non-empty"):
        calibrate_scales(y[:0])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 50), d=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), mag=st.floats(1e-3, 1e3))
def test_quantize_round_trip_error_bound(n, d, seed, mag):
    rng = np.random.default_rng(seed)
    x = (mag * rng.standard_normal((n, d))).astype(np.float32)
    scales = calibrate_scales(x)
    codes = quantize(x, scales)
    assert codes.dtype == np.int8 and codes.min() >= -127
    oracle = np.clip(np.rint(x.astype(np.float64) / scales), -127, 127)
    # the kernel multiplies by a float32 reciprocal: at most one step off at exact .5 ties
    assert np.abs(codes - oracle).max() <= 1
    err = np.abs(dequantize(codes, scales) - x)
    assert np.all(err <= scales * (0.5 + 1e-3) + 1e-6 * np.abs(x))


def test_quantize_saturates_never_wraps():
    scales = np.full(4, 1 / 127, np.float32)
    x = np.array([[10.0, -10.0, 1.0, -1.0], [1e30, -1e30, 0.004, 0.0]], np.float32)
    codes = quantize(x, scales)
    np.testing.assert_array_equal(codes, [[127, -127, 127, -127], [127, -127, 1, 0]])
    single = quantize(x[0], scales)
    assert single.shape == (4,)
    np.testing.assert_array_equal(single, codes[0])
    np.testing.assert_allclose(dequantize(single, scales), [1, -1, 1, -1], rtol=1e-6)


def test_quantize_rejects_bad_scales():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="scales must have shape"):
        quantize(x, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="finite and > 0"):
        quantize(x, np.array([1, 0, 1], np.float32))
    with pytest.raises(ValueError, match="int8"):
        dequantize(x, np.ones(3, np.float32))


def test_fold_queries_error_bound():
    rng = np.random.default_rng(5)
    q = unit(rng, 20, 384)
    scales = calibrate_scales(unit(rng, 500, 384))
    qq, t = fold_queries(q, scales)
    assert qq.dtype == np.int16
    assert np.abs(qq).max() == query_qmax(384)
    w = q.astype(np.float64) * scales
    assert np.all(np.abs(qq * t[:, None] - w) <= t[:, None] * 0.5 + 1e-12)
    assert 127 * query_qmax(1024) * 1024 < 2**31


# the int8 scans this machine runs: int8 x int16 everywhere, u8 x s8 (vpmaddubsw) with AVX2
INT8_METHODS = ["i16"] + (["u8s8"] if Q.HAS_U8S8 else [])
# query code range each scan quantizes to (None: query_qmax(dim))
INT8_QMAX = {"i16": None, "u8s8": Q.U8S8_QMAX}


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 150),
    d=st.integers(1, 80),
    nq=st.integers(0, 9),
    k=st.integers(0, 160),
    seed=st.integers(0, 2**32 - 1),
)
def test_topk_int8_matches_integer_oracle(n, d, nq, k, seed):
    """Each scan (dims across the u8 x s8 kernel's 32-byte steps and its scalar tail) against
    integer scores of the query codes it uses (fold_queries at its qmax)."""
    rng = np.random.default_rng(seed)
    x, q = int_data(rng, (n, d), -4, 4), int_data(rng, (nq, d), -4, 4)
    scales = np.full(d, 4 / 127, np.float32)
    codes = quantize(x, scales)
    for method in INT8_METHODS:
        s, i = topk_int8(codes, q, scales, k, method=method)
        assert i.shape == (nq, min(k, n))
        if nq == 0 or n == 0:
            continue
        qq, t = fold_queries(q, scales, INT8_QMAX[method])
        iscore = qq.astype(np.int64) @ codes.T.astype(np.int64)
        _, oi = oracle_topk(iscore, k)
        np.testing.assert_array_equal(i, oi)
        np.testing.assert_allclose(s, np.take_along_axis(iscore, oi, 1) * t[:, None], rtol=1e-6)


@pytest.mark.parametrize("method", INT8_METHODS)
def test_topk_int8_many_chunks_ties(method):
    rng = np.random.default_rng(6)
    base = quantize(int_data(rng, (900, 9), -2, 2), np.full(9, 2 / 127, np.float32))
    codes = np.concatenate([base] * 7)  # 6300 rows, repeated -> ties across chunks
    q = int_data(rng, (11, 9))
    scales = np.full(9, 2 / 127, np.float32)
    _, i = topk_int8(codes, q, scales, 30, method=method)
    qq, _ = fold_queries(q, scales, INT8_QMAX[method])
    _, oi = oracle_topk(qq.astype(np.int64) @ codes.T.astype(np.int64), 30)
    np.testing.assert_array_equal(i, oi)


@pytest.mark.skipif(not Q.HAS_U8S8, reason="the u8 x s8 scan needs AVX2")
def test_u8s8_scan_on_384_dims_and_its_instructions():
    """384-d rows (the kernel's 32-byte steps only) against the integer oracle, and the code it runs:
    vpmaddubsw + vpmaddwd (the scan's dot), no int32 multiplies."""
    import numba

    rng = np.random.default_rng(8)
    x = rng.standard_normal((3000, 384)).astype(np.float32)
    q = rng.standard_normal((3, 384)).astype(np.float32)
    scales = Q.calibrate_scales(x)
    codes = quantize(x, scales)
    s, i = topk_int8(codes, q, scales, 50, method="u8s8")
    qq, t = fold_queries(q, scales, Q.U8S8_QMAX)
    assert np.abs(qq).max() == Q.U8S8_QMAX
    iscore = qq.astype(np.int64) @ codes.T.astype(np.int64)
    _, oi = oracle_topk(iscore, 50)
    np.testing.assert_array_equal(i, oi)
    np.testing.assert_allclose(s, np.take_along_axis(iscore, oi, 1) * t[:, None], rtol=1e-6)
    scan = numba.njit(fastmath=True)(Q._topk_scan_u8s8.py_func)  # uncached: inspectable
    cs, ci = T.empty_heaps((1, 2, 3), np.int32)
    scan(codes[:10], qq[:2].astype(np.int8), 10, 4, cs, ci)
    asm = scan.inspect_asm(scan.signatures[0])
    assert re.search(r"vpmaddubsw", asm) and re.search(r"vpmaddwd", asm)
    with pytest.raises(ValueError, match="method must be"):
        topk_int8(codes, q, scales, 5, method="avx")


def test_topk_int8_zero_query_and_errors():
    codes = np.ones((4, 3), np.int8)
    scales = np.ones(3, np.float32)
    s, i = topk_int8(codes, np.zeros((1, 3), np.float32), scales, 2)
    np.testing.assert_array_equal(i, [[0, 1]])
    np.testing.assert_array_equal(s, 0)
    with pytest.raises(ValueError, match="int8"):
        topk_int8(codes.astype(np.int16), np.zeros((1, 3)), scales, 1)
    with pytest.raises(ValueError, match="equal dim"):
        topk_int8(codes, np.zeros((1, 4)), scales, 1)
    for bad in (0, 40000, 2.5, True):
        with pytest.raises(ValueError, match="qmax must be an integer"):
            topk_int8(codes, np.ones((1, 3), np.float32), scales, 1, method="i16", qmax=bad)
    if Q.HAS_U8S8:
        with pytest.raises(ValueError, match="at most 63"):
            topk_int8(codes, np.ones((1, 3), np.float32), scales, 1, method="u8s8", qmax=127)


def test_topk_int8_i16_with_7_bit_queries_ranks_by_their_integer_scores():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3000, 40)).astype(np.float32)
    q = rng.standard_normal((5, 40)).astype(np.float32)
    scales = Q.calibrate_scales(x)
    codes = Q.quantize(x, scales)
    s, i = topk_int8(codes, q, scales, 25, method="i16", qmax=Q.U8S8_QMAX)
    qq, t = Q.fold_queries(q, scales, Q.U8S8_QMAX)
    assert np.abs(qq).max() == Q.U8S8_QMAX
    ints = qq.astype(np.int64) @ codes.T.astype(np.int64)
    want = np.argsort(-ints, axis=1, kind="stable")[:, :25]
    np.testing.assert_array_equal(i, want)
    np.testing.assert_allclose(s, np.take_along_axis(ints, want, 1) * t[:, None], rtol=1e-6)


@pytest.mark.parametrize("data", ["isotropic", "clustered"])
def test_int8_rescoring_recall_at_10(data):
    rng = np.random.default_rng(7)
    n, d = 20_000, 384
    x = unit(rng, n, d) if data == "isotropic" else clustered(rng, n, d)
    # queries near corpus points (the realistic case) and random directions
    q = np.concatenate([x[rng.integers(0, n, 50)] + 0.3 * unit(rng, 50, d), unit(rng, 50, d)])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    _, truth = topk_dot(x, q, 10)
    scales = calibrate_scales(x)
    codes = quantize(x, scales)
    _, cand = topk_int8(codes, q, scales, 10 * 4)
    s, i = rescore(x, q, cand, 10)
    assert recall(i, truth) >= 0.99
    np.testing.assert_allclose(s, np.take_along_axis(q @ x.T, i, 1), atol=1e-5)  # exact scores


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


@pytest.mark.skipif(not re.search(r"\bavx2\b", _cpu_flags()), reason="checks x86 AVX2+ assembly")
def test_int8_dot_compiles_to_int16_multiply_add():
    # Inspection is disabled for cached dispatchers: compile uncached, serial copies.
    import numba

    f = numba.njit(fastmath=True)(Q._dot_i8_i16.py_func)
    a, b = np.ones(384, np.int8), np.full(384, 2, np.int16)
    assert f(a, b) == 768
    scan = numba.njit(fastmath=True)(Q._topk_scan_i8.py_func)
    cs, ci = T.empty_heaps((1, 2, 3), np.int32)
    scan(np.ones((10, 384), np.int8), np.ones((2, 384), np.int16), 10, 4, cs, ci)
    for g in (f, scan):
        asm = g.inspect_asm(g.signatures[0])
        assert re.search(r"vpmaddwd|vpdpwssd", asm), "int8 dot is not vectorized to 16-bit multiply-adds"
        assert not re.search(r"vpmuldq|vpmulld", asm)  # the 64/32-bit widening it falls back to

"""Kernels against numpy oracles: top-k (fp32 scan/gemm), rescoring, int8 quantization and scan."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernels import binary as B
from engine.kernels import quantize as Q
from engine.kernels import topk as T
from engine.kernels.binary import pack_signs, topk_hamming
from engine.kernels.quantize import (
    calibrate_scales,
    dequantize,
    fold_queries,
    quantize,
    query_qmax,
    topk_int8,
)
from engine.kernels.topk import rescore, topk_dot

# ----------------------------------------------------------------------------- oracles


def oracle_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-first top-k per row of a (nq, n) score matrix: score desc, then index asc."""
    nq, n = scores.shape
    kk = min(k, n)
    idx = np.empty((nq, kk), np.int64)
    for j in range(nq):
        order = np.lexsort((np.arange(n), -scores[j]))  # last key primary
        idx[j] = order[:kk]
    return np.take_along_axis(scores, idx, axis=1), idx


def int_data(rng, shape, lo=-3, hi=3):
    """Small-integer float32 data: every dot product is exact in float32, ties are common."""
    return rng.integers(lo, hi + 1, size=shape).astype(np.float32)


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng, n, d, centers=50, spread=0.35):
    c = rng.standard_normal((centers, d)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + spread * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found, truth)]))


# ----------------------------------------------------------------------------- fp32 top-k

METHODS = ["scan", "gemm"]


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 200),
    d=st.integers(1, 12),
    nq=st.integers(0, 9),
    k=st.integers(0, 210),
    seed=st.integers(0, 2**32 - 1),
)
def test_topk_matches_oracle_with_ties(method, n, d, nq, k, seed):
    rng = np.random.default_rng(seed)
    x, q = int_data(rng, (n, d)), int_data(rng, (nq, d))
    s, i = topk_dot(x, q, k, method=method)
    kk = min(k, n)
    assert s.shape == i.shape == (nq, kk)
    assert s.dtype == np.float32 and i.dtype == np.int64
    os_, oi = oracle_topk(q.astype(np.float64) @ x.T.astype(np.float64), k)
    np.testing.assert_array_equal(i, oi)
    np.testing.assert_array_equal(s, os_.astype(np.float32))


@pytest.mark.parametrize("method", METHODS)
def test_topk_many_chunks_and_blocks_with_duplicates(method):
    # > 4 chunks and > 2 gemm blocks; duplicated rows and integer data force exact ties
    # across chunk/block boundaries.
    rng = np.random.default_rng(1)
    base = int_data(rng, (700, 7), -2, 2)
    x = np.concatenate([base] * 8)  # 5600 rows, every row repeated 8 times
    q = int_data(rng, (70, 7))  # 70 = 17 blocks of 4 + 2 (scan) and >= 64 (gemm)
    s, i = topk_dot(x, q, 25, method=method)
    os_, oi = oracle_topk(q.astype(np.float64) @ x.T.astype(np.float64), 25)
    np.testing.assert_array_equal(i, oi)
    np.testing.assert_array_equal(s, os_)


def test_topk_auto_and_methods_agree_on_unit_vectors():
    rng = np.random.default_rng(2)
    x, q = unit(rng, 3000, 48), unit(rng, 70, 48)
    ref = q.astype(np.float64) @ x.T.astype(np.float64)
    _, oi = oracle_topk(ref, 10)
    for method in ("auto", "scan", "gemm"):
        s, i = topk_dot(x, q, 10, method=method)
        assert recall(i, oi) == 1.0
        np.testing.assert_allclose(s, np.take_along_axis(ref, i, 1), atol=1e-5)
        assert np.all(np.diff(s, axis=1) <= 0)


def test_topk_edge_cases():
    x = np.zeros((5, 3), np.float32)  # all-zero rows: all scores 0 -> index order
    q = np.ones((2, 3), np.float32)
    s, i = topk_dot(x, q, 3)
    np.testing.assert_array_equal(i, [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(s, 0)
    assert topk_dot(x, q, 0)[0].shape == (2, 0)
    assert topk_dot(x, q, 99)[1].shape == (2, 5)  # k > n -> n columns
    assert topk_dot(x[:0], q, 4)[1].shape == (2, 0)  # empty corpus
    assert topk_dot(x, q[:0], 4)[1].shape == (0, 4)  # no queries
    with pytest.raises(ValueError, match="k must be >= 0"):
        topk_dot(x, q, -1)
    with pytest.raises(ValueError, match="dim"):
        topk_dot(x, np.ones((1, 4), np.float32), 1)
    with pytest.raises(ValueError, match="method"):
        topk_dot(x, q, 1, method="bogus")


def test_topk_accepts_noncontiguous_and_float64():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 16))
    q = rng.standard_normal((3, 16))
    _s, i = topk_dot(x[::-1], q, 5)
    _, oi = oracle_topk(q @ x[::-1].T, 5)
    assert recall(i, oi) == 1.0


# ----------------------------------------------------------------------------- rescore


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 60), m=st.integers(0, 30), k=st.integers(0, 35), seed=st.integers(0, 2**32 - 1))
def test_rescore_matches_oracle(n, m, k, seed):
    rng = np.random.default_rng(seed)
    x, q = int_data(rng, (n, 5)), int_data(rng, (3, 5))
    cand = rng.integers(0, n, size=(3, m))
    cand = np.array([np.unique(c) for c in cand], dtype=object)
    width = max((len(c) for c in cand), default=0)
    padded = np.full((3, width), -1, np.int64)
    for j, c in enumerate(cand):
        padded[j, : len(c)] = rng.permutation(c)  # any order, -1 = no candidate
    s, i = rescore(x, q, padded, k)
    assert i.shape[1] == min(k, width)
    full = q.astype(np.float64) @ x.T.astype(np.float64)
    for j in range(3):
        c = np.asarray(cand[j], dtype=np.int64)
        kk = min(k, len(c))
        order = np.lexsort((c, -full[j, c]))[:kk]
        np.testing.assert_array_equal(i[j, :kk], c[order])
        np.testing.assert_array_equal(s[j, :kk], full[j, c[order]])


def test_rescore_many_queries_parallel_path():
    rng = np.random.default_rng(9)
    x, q = int_data(rng, (500, 6)), int_data(rng, (T.SERIAL_MAX_QUERIES + 6, 6))
    cand = np.stack([rng.permutation(500)[:40] for _ in range(q.shape[0])])
    _s, i = rescore(x, q, cand, 7)
    full = q.astype(np.float64) @ x.T.astype(np.float64)
    for j in range(q.shape[0]):
        order = np.lexsort((cand[j], -full[j, cand[j]]))[:7]
        np.testing.assert_array_equal(i[j], cand[j][order])


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


def test_heap_sentinels_lose_to_real_entries():
    hs, hi = T.empty_heaps((1, 2), np.float32)
    T._heap_push(hs[0], hi[0], np.float32(-np.finfo(np.float32).max), np.int64(3))
    T._heap_push(hs[0], hi[0], np.float32(-1.0), np.int64(9))
    T._heap_sort_best_first(hs[0], hi[0])
    np.testing.assert_array_equal(hi[0], [9, 3])


# ----------------------------------------------------------------------------- binary codes


def test_pack_signs_bits_and_padding():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((7, 130)).astype(np.float32)
    x[0, :5] = 0.0  # zero -> bit 0 (only > 0 sets a bit)
    codes = pack_signs(x)
    assert codes.shape == (7, 3) and codes.dtype == np.uint64
    bits = np.unpackbits(codes.view(np.uint8), axis=1, bitorder="little")
    np.testing.assert_array_equal(bits[:, :130], x > 0)
    assert not bits[:, 130:].any()  # padding bits stay 0
    np.testing.assert_array_equal(pack_signs(x[3]), codes[3])


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 120),
    d=st.integers(1, 140),
    nq=st.integers(0, 5),
    k=st.integers(0, 130),
    seed=st.integers(0, 2**32 - 1),
)
def test_topk_hamming_matches_oracle(n, d, nq, k, seed):
    rng = np.random.default_rng(seed)
    x, q = rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((nq, d)).astype(np.float32)
    s, i = topk_hamming(pack_signs(x) if n else np.empty((0, -(-d // 64)), np.uint64), q, d, k)
    assert i.shape == (nq, min(k, n))
    if n == 0 or nq == 0:
        return
    sim = d - 2 * ((x[None, :, :] > 0) != (q[:, None, :] > 0)).sum(-1)
    os_, oi = oracle_topk(sim, k)
    np.testing.assert_array_equal(i, oi)
    np.testing.assert_array_equal(s, os_)


def hamming_oracle(x, q, k):
    """Best-first top-k of d - 2 * hamming(sign bits), from numpy's packbits and bitwise_count."""
    xb, qb = np.packbits(x > 0, axis=1), np.packbits(q > 0, axis=1)
    sim = np.stack([x.shape[1] - 2 * np.bitwise_count(xb ^ row).sum(1, dtype=np.int64) for row in qb])
    return oracle_topk(sim, k)


def tie_heavy(rng, n, d):
    """Rows with many equal distances: every row 4 times (spread out), all-zero rows, and rows
    equal to another's signs flipped."""
    base = rng.standard_normal((-(-n // 4), d)).astype(np.float32)
    x = np.concatenate([base] * 4)[:n]
    x = x[rng.permutation(n)]
    x[:5] = 0.0
    x[5:9] = -x[9:13]
    return np.ascontiguousarray(x)


def check_hamming(x, q, k):
    s, i = topk_hamming(pack_signs(x), q, x.shape[1], k)
    os_, oi = hamming_oracle(x, q, k)
    np.testing.assert_array_equal(i, oi)
    np.testing.assert_array_equal(s, os_)


@pytest.mark.parametrize("nq", [1, 2, 3, 8, 9, 70], ids=lambda v: f"nq{v}")
@pytest.mark.parametrize("d", [64, 100, 384, 768, 1024], ids=lambda v: f"d{v}")
def test_topk_hamming_word_counts_and_query_groups(d, nq):
    """One kernel per word count (1, 2, 6, 12, 16 words); one or two queries run the one-lane
    loop, 3 to 64 share padded lanes, 70 make two groups; k = 400 as the binary Index asks."""
    rng = np.random.default_rng(d + nq)
    x = tie_heavy(rng, 1501, d)  # odd: tiles end with a lone row
    q = np.concatenate([x[:2], rng.standard_normal((nq, d)).astype(np.float32)])[:nq]  # exact matches too
    for k in (400, 7):
        check_hamming(x, q, k)


# (parallel, chunks, lanes per group): chunk merges, compaction (chunk rows > 2 k), warm starts
# (lanes > 1), a chunk smaller than k, groups of one lane, and dims with only a few distinct
# distances (d = 3: every score ties with hundreds of rows).
PLANS = [(True, 5, 8), (False, 3, 16), (True, 1, 64), (True, 4, 1), (False, 7, 1), (True, 2, 8)]


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"{'par' if p[0] else 'ser'}-c{p[1]}-g{p[2]}")
@pytest.mark.parametrize("d", [3, 100, 384], ids=lambda v: f"d{v}")
def test_topk_hamming_any_plan_matches_oracle(monkeypatch, plan, d):
    parallel, nch, gsize = plan
    monkeypatch.setattr(B, "_plan", lambda n, nq: (parallel, nch, -(-n // nch), gsize))
    rng = np.random.default_rng(d)
    x = tie_heavy(rng, 2501, d)
    q = rng.standard_normal((19, d)).astype(np.float32)
    for k in (60, 400, 2601):
        check_hamming(x, q, k)


@pytest.mark.parametrize("nq", [1, 16, 130])
def test_topk_hamming_default_plan_in_parallel(monkeypatch, nq):
    monkeypatch.setattr(B, "SERIAL_MAX_PAIRS", 0)
    monkeypatch.setattr(B, "MIN_CHUNK_ROWS", 256)
    rng = np.random.default_rng(nq)
    x = tie_heavy(rng, 3001, 384)
    check_hamming(x, rng.standard_normal((nq, 384)).astype(np.float32), 400)


def test_topk_hamming_plan_shapes():
    """Groups cover the queries with at most 64 lanes, in whole vectors of 8 from 3 queries on;
    rows split only while there are fewer groups than threads."""
    for n in (10, 100_000, 1_000_000):
        for nq in (1, 2, 3, 8, 17, 64, 65, 1024):
            parallel, nch, chunk, gsize = B._plan(n, nq)
            assert nch * chunk >= n and (nch - 1) * chunk < n and 1 <= gsize <= B.GROUP_QUERIES
            assert gsize == 1 if nq <= 2 else gsize % 8 == 0
            big = n >= 2 * B.MIN_CHUNK_ROWS if nq <= 2 else n * nq >= B.SERIAL_MAX_PAIRS
            assert parallel == (B.numba.get_num_threads() > 1 and big)
            assert nch == 1 or -(-nq // gsize) < B.numba.get_num_threads()


def test_topk_hamming_errors():
    with pytest.raises(ValueError, match="uint64"):
        topk_hamming(np.zeros((2, 1), np.int64), np.ones((1, 3)), 3, 1)
    with pytest.raises(ValueError, match="do not match"):
        topk_hamming(np.zeros((2, 1), np.uint64), np.ones((1, 65)), 65, 1)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        topk_hamming(np.zeros((2, 0), np.uint64), np.ones((1, 0)), 0, 1)


# -- pooling and the Dense / LayerNorm head against sentence-transformers' own modules ----------
def _st_pool(hidden, mask, modes, prompt_length=None):
    import torch
    from sentence_transformers.models import Pooling

    p = Pooling(hidden.shape[2], pooling_mode=modes, include_prompt=prompt_length is None)
    feats = {"token_embeddings": torch.from_numpy(hidden), "attention_mask": torch.from_numpy(mask)}
    if prompt_length is not None:
        feats["prompt_length"] = prompt_length
    return p(feats)["sentence_embedding"].numpy()


def _pool_cases():
    rng = np.random.default_rng(7)
    h = rng.standard_normal((6, 9, 5)).astype(np.float32)
    right = np.array([[1] * 9, [1] * 4 + [0] * 5, [1] + [0] * 8, [1] * 2 + [0] * 7, [1] * 8 + [0], [1] * 3 + [0] * 6])
    left = right[:, ::-1].copy()
    return h, {"right": right, "left": left}


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize(
    "modes", ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", ("cls", "mean", "lasttoken")]
)
@pytest.mark.parametrize("prompt_length", [None, 2])
def test_pooling_matches_sentence_transformers(side, modes, prompt_length):
    from engine.kernels.pooling import exclude_prompt, pool

    h, masks = _pool_cases()
    mask = masks[side].astype(np.int64)
    ref = _st_pool(h, mask, modes, prompt_length)
    m = exclude_prompt(mask, prompt_length) if prompt_length else mask
    ours = pool(h, m, modes if isinstance(modes, tuple) else (modes,))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)  # -inf (max over no token) compares equal


def test_pooling_ignores_non_finite_padding():
    from engine.kernels.pooling import POOLERS

    h, masks = _pool_cases()
    bad = h.copy()
    bad[masks["right"] == 0] = np.nan
    for name, fn in POOLERS.items():
        np.testing.assert_allclose(fn(bad, masks["right"]), fn(h, masks["right"]), rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("act", ["Tanh", "ReLU", "Sigmoid", "GELU", "SiLU", "Identity"])
def test_dense_and_layer_norm_match_torch(act):
    import torch

    from engine.kernels.pooling import dense, layer_norm

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((7, 12)) * 3).astype(np.float32)
    x[0] = 0.0
    w = rng.standard_normal((5, 12)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    fn = getattr(torch.nn, act)()
    ref = fn(torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b))).numpy()
    name = {"Identity": "identity"}.get(act, act.lower())
    np.testing.assert_allclose(dense(x, w, b, name), ref, rtol=1e-5, atol=1e-6)
    g, beta = rng.standard_normal(12).astype(np.float32), rng.standard_normal(12).astype(np.float32)
    ln = torch.nn.functional.layer_norm(torch.from_numpy(x), (12,), torch.from_numpy(g), torch.from_numpy(beta), 1e-5)
    np.testing.assert_allclose(layer_norm(x, g, beta), ln.numpy(), rtol=1e-5, atol=1e-5)

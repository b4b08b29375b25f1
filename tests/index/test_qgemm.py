"""engine.index.qgemm: the blocked int8 GEMM first stage against integer numpy oracles, the
saturation its 7-bit queries avoid, and its agreement with the int8 scans. The row-block heap feed it
pushes its scores through (``engine.kernels.topk.push_row_scores``) is tested in tests/kernels/test_topk.py."""

from __future__ import annotations

import numpy as np
import pytest

from engine.index import DEFAULT_OVERSAMPLE, qgemm
from engine.kernels.quantize import HAS_U8S8, U8S8_QMAX, calibrate_scales, quantize, topk_int8
from tests.index.data import clustered, exact, recall

# ----------------------------------------------------------------------------- int8 GEMM first stage


@pytest.mark.parametrize("n, d, k", [(5000, 37, 25), (300, 384, 40), (7, 16, 10)])
def test_int8_gemm_candidates_match_integer_oracle(monkeypatch, n, d, k):
    """Candidates are the exact top-k of the integer scores qq . codes (7-bit queries), ties by row;
    blocks smaller than n exercise the block boundaries."""
    monkeypatch.setattr(qgemm, "block_rows", lambda nq, d: 1024)
    x, q = clustered(n, d, 33, seed=d)
    scales = calibrate_scales(x)
    codes = quantize(x, scales)
    codes[3] = codes[5]  # exact ties
    s, i = qgemm.topk_int8_gemm(codes, q, scales, k)
    qq, t = qgemm.quantize_queries(q, scales)
    assert qq.dtype == np.int8 and np.abs(qq).max() == U8S8_QMAX
    ints = qq.astype(np.int64) @ codes.T.astype(np.int64)
    want = np.argsort(-ints, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(i, want)
    np.testing.assert_allclose(s, np.take_along_axis(ints, want, 1) * t[:, None], rtol=1e-6)
    # the approximate score tracks q . dequant(codes)
    approx = q.astype(np.float64) @ (codes.astype(np.float64) * scales).T
    np.testing.assert_allclose(s, np.take_along_axis(approx, want, 1), atol=0.02)


def test_block_rows_rule():
    """Big blocks for few queries, small ones for many, bounded by the codes' bytes."""
    assert qgemm.block_rows(1, 384) == qgemm.MAX_BLOCK_ROWS == qgemm.block_rows(16, 384)
    assert qgemm.block_rows(256, 384) == 16384 and qgemm.block_rows(1024, 384) == qgemm.BLOCK_ROWS
    assert qgemm.block_rows(10**6, 384) == qgemm.BLOCK_ROWS
    assert qgemm.block_rows(16, 4096) == qgemm.BLOCK_BYTES // 4096


def vpmaddubsw_product(a_u8, b_s8):
    """What an AVX2 / AVX-512-without-VNNI u8 x s8 GEMM kernel computes: ``vpmaddubsw`` adds each
    pair of adjacent u8 * s8 products into int16 with saturation, then the pairs are summed in int32."""
    prod = a_u8.astype(np.int32)[:, None, :] * b_s8.astype(np.int32)[None, :, :]  # (n, nq, d)
    pairs = np.clip(prod[..., 0::2] + prod[..., 1::2], -32768, 32767)
    return pairs.sum(-1)


def test_int8_gemm_queries_cannot_saturate_a_vpmaddubsw_kernel():
    """The worst case for the int16 pair sums: codes at +-127 (u8 255 / 1 after + 128) and queries
    whose every dimension reaches the query's full code. The query codes quantize_queries makes give
    the exact integer product under vpmaddubsw's saturation too, so the GEMM's candidates are the
    same on AVX2 as on AMX / VNNI (8-bit queries would not be: the check below shows it)."""
    d = 64
    codes = np.where(np.arange(d) % 3 == 0, -127, 127)[None, :].repeat(4, 0).astype(np.int8)
    codes[1] = 127
    codes[2] = -127
    q = np.ones((3, d), np.float32)
    q[1, ::2] = -1
    q[2] = np.linspace(-1, 1, d)
    scales = np.full(d, 1 / 127, np.float32)
    qq, _ = qgemm.quantize_queries(q, scales)
    a = codes.view(np.uint8) ^ 0x80  # c + 128, as the GEMM feeds it
    exact_ints = codes.astype(np.int64) @ qq.T.astype(np.int64)
    emulated = vpmaddubsw_product(a, qq) - 128 * qq.astype(np.int64).sum(1)[None, :]
    np.testing.assert_array_equal(emulated, exact_ints)
    q8 = np.clip(np.rint(q * 127), -127, 127).astype(np.int8)  # 8-bit queries: pairs saturate
    assert np.any(
        vpmaddubsw_product(a, q8) - 128 * q8.astype(np.int64).sum(1)[None, :]
        != codes.astype(np.int64) @ q8.T.astype(np.int64)
    )


@pytest.mark.skipif(not HAS_U8S8, reason="the u8 x s8 scan needs AVX2")
def test_int8_gemm_and_u8s8_scan_give_the_same_candidates():
    """Both first stages score with the same 7-bit queries, so the candidates do not depend on how
    many queries a search holds (the u8 x s8 scan's per-query constant 128 * sum(q) keeps the order)."""
    x, q = clustered(3000, 96, 20, seed=7)
    scales = calibrate_scales(x)
    codes = quantize(x, scales)
    _, g = qgemm.topk_int8_gemm(codes, q, scales, 40)
    _, c = topk_int8(codes, q, scales, 40, method="u8s8")
    np.testing.assert_array_equal(g, c)
    _, c16 = topk_int8(codes, q, scales, 40, method="i16", qmax=U8S8_QMAX)  # the scan of non-AVX2 CPUs
    np.testing.assert_array_equal(g, c16)


def test_int8_gemm_zero_query_and_empty():
    x, _ = clustered(100, 16, 1)
    scales = calibrate_scales(x)
    codes = quantize(x, scales)
    s, i = qgemm.topk_int8_gemm(codes, np.zeros((2, 16), np.float32), scales, 3)
    np.testing.assert_array_equal(i, [[0, 1, 2], [0, 1, 2]])  # all scores 0: first rows
    assert np.all(s == 0)
    assert qgemm.topk_int8_gemm(codes, np.zeros((0, 16), np.float32), scales, 3)[1].shape == (0, 3)
    assert qgemm.topk_int8_gemm(codes[:0], x[:2], scales, 3)[1].shape == (2, 0)


def test_int8_gemm_and_scan_rank_the_same_candidates():
    """7-bit (GEMM) and 15-bit (the int8 x int16 scan) queries: the candidate lists agree almost
    everywhere and both hold the exact top 10 (the recall the module docstring quotes)."""
    x, q = clustered(20000, 384, 64, seed=5)
    scales = calibrate_scales(x)
    codes = quantize(x, scales)
    m = 10 * DEFAULT_OVERSAMPLE
    _, g = qgemm.topk_int8_gemm(codes, q, scales, m)
    _, c = topk_int8(codes, q, scales, m, method="i16")
    assert recall(g, c) >= 0.95
    truth = exact(x, q, 10)
    assert recall(g[:, :m], truth) == 1.0 and recall(c, truth) == 1.0

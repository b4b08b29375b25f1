"""The first stages of int8 and binary indexes against numpy oracles: the blocked int8 GEMM
(``engine.index.qgemm``) and the binary Index (sign bits + Hamming scan + exact rescoring),
their files, and the recall each keeps after rescoring."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import IndexFormatError, InputError
from engine.index import DEFAULT_OVERSAMPLE, DEFAULT_OVERSAMPLE_BINARY, Index, qgemm
from engine.kernels.binary import pack_signs
from engine.kernels.normalize import l2_normalize
from engine.kernels.quantize import HAS_U8S8, U8S8_QMAX, calibrate_scales, quantize, topk_int8
from engine.kernels.topk import empty_heaps, push_row_scores, sort_heaps
from tests.index_files import rewrite_index_file


def clustered(n, d, nq, seed=0):
    """Unit vectors around 50 centres, queries near corpus points (search_bench.py's data, small)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, d)).astype(np.float32)
    x = l2_normalize(centres[rng.integers(0, 50, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32))
    q = l2_normalize(x[rng.integers(0, n, nq)] + 0.1 * rng.standard_normal((nq, d)).astype(np.float32))
    return x, q


def exact(x, q, k):
    s = q.astype(np.float64) @ x.T.astype(np.float64)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def recall(found, truth):
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(found, truth)]))


# ----------------------------------------------------------------------------- the row-block heap feed


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_push_row_scores_matches_a_stable_sort(dtype):
    rng = np.random.default_rng(0)
    scores = rng.integers(-50, 50, (1000, 7)).astype(dtype)  # many ties: smaller row first
    hs, hi = empty_heaps((7, 12), dtype)
    thr = hs[:, 0].copy()
    for r0 in range(0, 1000, 300):  # blocks, last one short
        push_row_scores(np.ascontiguousarray(scores[r0 : r0 + 300]), r0, hs, hi, thr)
    s, i = sort_heaps(hs, hi)
    want = np.argsort(-scores.T.astype(np.int64), axis=1, kind="stable")[:, :12]
    np.testing.assert_array_equal(i, want)
    np.testing.assert_array_equal(s, np.take_along_axis(scores.T, want, 1))


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


def test_int8_index_results_do_not_depend_on_the_batch(monkeypatch):
    """A query's results are the same searched alone, in a scan-sized batch or in a GEMM-sized one,
    whichever scan the CPU runs (the int8 x int16 one forced here, as on CPUs without AVX2)."""
    x, q = clustered(5000, 48, 3 * qgemm.gemm_min_queries(), seed=11)
    idx = Index(48, "int8")
    idx.add(x)
    big = idx.search(q, 10)
    alone = [idx.search(q[j], 10) for j in range(4)]
    for j, (s, i) in enumerate(alone):
        np.testing.assert_array_equal(i, big[1][j])
        np.testing.assert_array_equal(s, big[0][j])
    real = topk_int8
    monkeypatch.setattr("engine.index.index.topk_int8", lambda *a, **kw: real(*a, **{**kw, "method": "i16"}))
    small = idx.search(q[: qgemm.gemm_min_queries() - 1], 10)
    np.testing.assert_array_equal(small[1], big[1][: qgemm.gemm_min_queries() - 1])


def test_int8_gemm_zero_query_and_empty():
    x, _ = clustered(100, 16, 1)
    scales = calibrate_scales(x)
    codes = quantize(x, scales)
    s, i = qgemm.topk_int8_gemm(codes, np.zeros((2, 16), np.float32), scales, 3)
    np.testing.assert_array_equal(i, [[0, 1, 2], [0, 1, 2]])  # all scores 0: first rows
    assert np.all(s == 0)
    assert qgemm.topk_int8_gemm(codes, np.zeros((0, 16), np.float32), scales, 3)[1].shape == (0, 3)
    assert qgemm.topk_int8_gemm(codes[:0], x[:2], scales, 3)[1].shape == (2, 0)


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_int8_index_many_queries_take_the_gemm_and_keep_exact_results(monkeypatch, metric):
    """From gemm_min_queries() queries on the int8 index ranks candidates with the GEMM; after
    rescoring the results equal exact search (recall@10 = 1.0), as the per-query scan's do."""
    calls = []
    real = qgemm.topk_int8_gemm
    monkeypatch.setattr("engine.index.index.topk_int8_gemm", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    x, q = clustered(6000, 64, max(qgemm.gemm_min_queries(), 40), seed=2)
    if metric == "dot":
        x = x * np.random.default_rng(1).uniform(0.5, 2.0, (len(x), 1)).astype(np.float32)
    idx = Index(64, "int8", metric=metric)
    idx.add(x)
    s, i = idx.search(q, 10)
    assert calls == [1]
    np.testing.assert_array_equal(i, exact(x, q, 10))
    np.testing.assert_allclose(s, np.take_along_axis(q @ x.T, i, 1), atol=1e-5)
    small = idx.search(q[: qgemm.gemm_min_queries() - 1], 10)  # the scan path, same answers
    assert calls == [1]
    np.testing.assert_array_equal(small[1], i[: qgemm.gemm_min_queries() - 1])


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


# ----------------------------------------------------------------------------- binary index


def hamming_oracle(x, q, m):
    """Rows ranked by dim - 2 * (sign disagreements), ties by row."""
    sx, sq = x > 0, q > 0
    sim = x.shape[1] - 2 * (sx[None, :, :] != sq[:, None, :]).sum(-1)
    return np.argsort(-sim, axis=1, kind="stable")[:, :m]


@pytest.mark.parametrize("d", [64, 100, 384])
def test_binary_index_rescores_the_hamming_candidates(d):
    x, q = clustered(2000, d, 15, seed=d)
    idx = Index(d, "binary", oversample=5)
    idx.add(x[:700])
    idx.add(x[700:])
    assert idx.oversample == 5 and Index(d, "binary").oversample == DEFAULT_OVERSAMPLE_BINARY
    s, i = idx.search(q, 10)
    cand = hamming_oracle(x, q, 50)
    exact_s = q.astype(np.float64) @ x.T.astype(np.float64)
    sub = np.take_along_axis(exact_s, cand, 1)
    want = np.take_along_axis(cand, np.argsort(-sub, axis=1, kind="stable"), 1)[:, :10]
    np.testing.assert_array_equal(i, want)
    np.testing.assert_allclose(s, np.take_along_axis(exact_s, want, 1), atol=1e-5)
    np.testing.assert_array_equal(idx._codes[: len(idx)], pack_signs(x))


def test_binary_recall_at_the_default_oversample():
    """Clustered 384-d unit vectors: recall@10 after rescoring at the default oversample."""
    x, q = clustered(20000, 384, 50, seed=7)
    idx = Index(384, "binary")
    idx.add(x)
    _, i = idx.search(q, 10)
    assert recall(i, exact(x, q, 10)) >= 0.99
    _, i4 = idx.search(q, 10, oversample=1)
    assert recall(i4, exact(x, q, 10)) < recall(i, exact(x, q, 10))  # the oversample is what buys it


def test_binary_memory_after_mmap_load(tmp_path):
    x, _ = clustered(4000, 384, 1)
    idx = Index(384, "binary")
    idx.add(x, ids=np.arange(4000) * 3)
    idx.save(tmp_path / "b.eidx")
    j = Index.load(tmp_path / "b.eidx", mmap=True)
    assert j.memory_usage() == {"resident": 4000 * (48 + 8), "mapped": 4000 * 384 * 4}
    np.testing.assert_array_equal(j.search(x[:3], 1)[1][:, 0], [0, 3, 6])


def _saved_binary(tmp_path, edit_bits):
    """A 50 x 100 binary index saved, then its bits section rewritten by ``edit_bits(bytearray)``
    (hashes kept valid, so only the bits are wrong)."""
    x, _ = clustered(50, 100, 1)
    idx = Index(100, "binary")
    idx.add(x)
    path = tmp_path / "b.eidx"
    idx.save(path)

    def edit(meta, blobs):
        bits = bytearray(blobs["bits"])
        edit_bits(bits)
        blobs["bits"] = bytes(bits)

    rewrite_index_file(path, edit)
    return path


def test_binary_file_whose_bits_are_not_the_vectors_signs(tmp_path):
    def flip(b):
        b[8 * 2 * 7] ^= 1  # row 7, word 0, bit 0

    path = _saved_binary(tmp_path, flip)
    for mmap, verify in ((True, True), (False, False), (False, True)):
        with pytest.raises(IndexFormatError, match="binary codes of row 7") as e:
            Index.load(path, mmap=mmap, verify=verify)
        assert str(path) in str(e.value)
    Index.load(path, mmap=True, verify=False)  # the trusted fast path skips row checks, as for vectors


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_int8_file_whose_codes_are_not_the_quantized_vectors(tmp_path, metric):
    """A crafted int8 file (checksum recomputed) whose codes disagree with its vectors is refused,
    as the binary one is; an untouched file of many blocks loads (the check agrees with add)."""
    x, _ = clustered(40_000, 24, 1)
    if metric == "dot":
        x = x * np.random.default_rng(3).uniform(0.5, 3.0, (len(x), 1)).astype(np.float32)
    idx = Index(24, "int8", metric=metric)
    idx.add(x[:30_000])
    idx.add(x[30_000:])  # later rows quantized with the first add's scales
    path = tmp_path / "q.eidx"
    idx.save(path)
    np.testing.assert_array_equal(Index.load(path).search(x[:3], 5)[1], idx.search(x[:3], 5)[1])

    def edit(meta, blobs):
        codes = bytearray(blobs["codes"])
        codes[24 * 20_000 + 5] ^= 0x01  # row 20,000 (the second block), dimension 5
        blobs["codes"] = bytes(codes)

    rewrite_index_file(path, edit)
    for mmap, verify in ((True, True), (False, False), (False, True)):
        with pytest.raises(IndexFormatError, match="int8 codes of row 20000 are not its vector quantized") as e:
            Index.load(path, mmap=mmap, verify=verify)
        assert str(path) in str(e.value)
    Index.load(path, mmap=True, verify=False)  # the trusted fast path skips row checks, as for vectors


def test_binary_file_with_padding_bits_set(tmp_path):
    def pad(b):
        b[8 * 2 * 3 + 15] |= 0x80  # row 3, word 1, bit 63 (dimension 127 of 100)

    path = _saved_binary(tmp_path, pad)
    for mmap, verify in ((True, True), (True, False), (False, False)):
        with pytest.raises(IndexFormatError, match="padding bits"):
            Index.load(path, mmap=mmap, verify=verify)


def test_binary_refuses_scales_and_cuda():
    with pytest.raises(InputError, match="scales= only applies"):
        Index(8, "binary", scales=np.ones(8))
    idx = Index(8, "binary")
    idx.add(np.eye(8, dtype=np.float32))
    with pytest.raises(InputError, match="CPU only"):
        idx.search(np.eye(8, dtype=np.float32)[:1], 1, device="cuda")

"""engine.index.codecs: each precision's codes and candidates against numpy references, and the
Index built on them (int8's GEMM-or-scan choice, binary's Hamming candidates and recall)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.index import DEFAULT_OVERSAMPLE, DEFAULT_OVERSAMPLE_BINARY, Index, qgemm
from engine.index import codecs as index_codecs
from engine.index import format as fmt
from engine.index.codecs import CODECS, BinaryCodec, Fp32Codec, Int8Codec
from engine.kernels.binary import pack_signs
from engine.kernels.quantize import topk_int8
from engine.precisions import INDEX_PRECISIONS
from tests.index.data import clustered, dot_oracle, exact, recall


def degenerate(d, seed=0):
    """Random rows with the awkward ones among them: all zeros, one non-zero, a duplicate, -0.0."""
    x = np.random.default_rng(seed).standard_normal((40, d)).astype(np.float32)
    x[3] = 0
    x[5] = 0
    x[5, d // 2] = 2.5
    x[7] = x[11]
    x[13, ::2] = -0.0
    return x


def filled(codec, x):
    """``codec`` after adding the rows ``x`` (room made as the Index makes it)."""
    codec.grow(len(x), 0)
    codec.add(x, 0)
    return codec


# ----------------------------------------------------------------------------- the table


def test_codecs_are_the_index_precisions_and_name_the_file_sections():
    assert tuple(CODECS) == INDEX_PRECISIONS
    for precision, codec in CODECS.items():
        assert codec.precision == precision
        assert fmt.section_names(precision, None) == ["vectors", *codec.sections]
        assert isinstance(Index(8, precision)._codec, codec)
    assert (Fp32Codec.sections, Int8Codec.sections, BinaryCodec.sections) == ((), ("codes", "scales"), ("bits",))
    assert Int8Codec.default_oversample == DEFAULT_OVERSAMPLE == Fp32Codec.default_oversample
    assert BinaryCodec.default_oversample == DEFAULT_OVERSAMPLE_BINARY


# ----------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("d", [1, 7, 64, 100])
def test_int8_codes_are_the_rounded_scaled_rows(d):
    """Scales ``max_i |x_ij| / 127`` (1/127 for an all-zero dimension), codes
    ``clip(rint(x / scale), -127, 127)``; later rows beyond the calibrated range saturate at +-127."""
    x = degenerate(d)
    if d > 1:
        x[:, 0] = 0  # a dimension that is zero in the whole calibration sample
    codec = Int8Codec(d)
    codec.grow(2 * len(x), 0)
    codec.add(x, 0)
    m = np.abs(x.astype(np.float64)).max(axis=0)
    want_scales = np.where(m == 0, 1.0, m) / 127
    np.testing.assert_allclose(codec.scales, want_scales, rtol=1e-6)
    later = 3 * x[::-1]
    codec.add(later, len(x))
    for rows, codes in ((x, codec.codes[: len(x)]), (later, codec.codes[len(x) :])):
        ratio = rows.astype(np.float64) / codec.scales.astype(np.float64)
        want = np.clip(np.rint(ratio), -127, 127)
        near_half = np.abs(np.abs(ratio - np.trunc(ratio)) - 0.5) < 1e-4  # float32 rounding may go either way
        assert np.all((codes == want) | near_half) and near_half.mean() < 0.01
        assert codes.dtype == np.int8 and codes.min() >= -127
    assert np.abs(codec.codes[len(x) :]).max() == 127  # saturated, never wrapped
    np.testing.assert_array_equal(codec.codes[3], 0)
    np.testing.assert_array_equal(codec.codes[7], codec.codes[11])


def test_int8_calibrates_on_a_seeded_sample_of_a_large_first_add(monkeypatch):
    monkeypatch.setattr(index_codecs, "CALIBRATION_ROWS", 50)
    x = np.random.default_rng(1).standard_normal((400, 6)).astype(np.float32)
    x[0] = 100  # a row the sample is unlikely to hold
    a, b = filled(Int8Codec(6), x), filled(Int8Codec(6), x)
    np.testing.assert_array_equal(a.scales, b.scales)  # a fixed seed: the same scales every time
    sample = x[np.sort(np.random.default_rng(0).choice(400, 50, replace=False))]
    np.testing.assert_allclose(a.scales, np.abs(sample).max(axis=0) / 127, rtol=1e-6)
    assert 0 not in np.sort(np.random.default_rng(0).choice(400, 50, replace=False))
    np.testing.assert_array_equal(a.codes[0], 127)  # the row outside the sample saturates


def test_int8_given_scales_are_kept_and_checked():
    scales = np.full(4, 0.5, np.float32)
    codec = filled(Int8Codec(4, scales), np.array([[1.0, -1.0, 0.2, 100.0]], np.float32))
    np.testing.assert_array_equal(codec.scales, scales)
    np.testing.assert_array_equal(codec.codes[0], [2, -2, 0, 127])
    for bad in (np.ones(3), [1, 1, 0, 1], [1, np.nan, 1, 1]):
        with pytest.raises(InputError, match="scales must be 4 finite positive numbers"):
            Int8Codec(4, np.asarray(bad, np.float32))
    for codec in (Fp32Codec, BinaryCodec):
        with pytest.raises(InputError, match="scales= only applies to precision='int8'"):
            codec(4, scales)


@pytest.mark.parametrize("d", [1, 8, 63, 64, 65, 100, 384])
def test_binary_codes_are_the_packed_sign_bits(d):
    """Bit ``j % 64`` of little-endian word ``j // 64`` is ``x_j > 0`` (0 and -0.0 give 0): numpy's
    ``packbits(x > 0, bitorder="little")`` bytes read as uint64 words, padding bits 0."""
    x = degenerate(d)
    codec = filled(BinaryCodec(d), x)
    words = -(-d // 64)
    packed = np.zeros((len(x), 8 * words), np.uint8)
    packed[:, : -(-d // 8)] = np.packbits(x > 0, axis=1, bitorder="little")
    want = packed.view("<u8")
    assert codec.width == words and codec.codes.dtype == np.uint64 and codec.codes.shape == (len(x), words)
    np.testing.assert_array_equal(codec.codes, want)
    np.testing.assert_array_equal(codec.codes, pack_signs(x))
    np.testing.assert_array_equal(codec.codes[3], 0)
    assert [int(w).bit_count() for w in codec.codes[5]] == [int(j == (d // 2) // 64) for j in range(words)]


# ----------------------------------------------------------------------------- candidates


@pytest.mark.parametrize("nq", [3, 40])  # the fused scan, and the GEMM (40 >= gemm_min_queries() on every CPU)
def test_int8_candidates_are_the_top_integer_scores(nq):
    """Candidates are the top m of ``qq . codes`` for the 7-bit queries (``qgemm.quantize_queries``),
    ties by smaller row, whichever first stage ranks them; they hold the exact top 10."""
    assert 40 >= qgemm.gemm_min_queries() > 3
    x, q = clustered(3000, 48, nq, seed=3)
    x[10] = x[20]  # exact ties
    codec = filled(Int8Codec(48), x)
    m = 10 * DEFAULT_OVERSAMPLE
    cand = codec.candidates(q, len(x), m)
    qq, _ = qgemm.quantize_queries(q, codec.scales)
    ints = qq.astype(np.int64) @ codec.codes.T.astype(np.int64)
    np.testing.assert_array_equal(cand, np.argsort(-ints, axis=1, kind="stable")[:, :m])
    assert recall(cand, exact(x, q, 10)) == 1.0


def hamming_oracle(x, q, m):
    """Rows ranked by dim - 2 * (sign disagreements), ties by row."""
    sx, sq = x > 0, q > 0
    sim = x.shape[1] - 2 * (sx[None, :, :] != sq[:, None, :]).sum(-1)
    return np.argsort(-sim, axis=1, kind="stable")[:, :m]


def test_binary_candidates_are_the_top_hamming_similarities():
    x, q = clustered(3000, 100, 12, seed=4)
    x[10] = x[20]
    codec = filled(BinaryCodec(100), x)
    m = 10 * DEFAULT_OVERSAMPLE_BINARY
    cand = codec.candidates(q, len(x), m)
    np.testing.assert_array_equal(cand, hamming_oracle(x, q, m))
    assert recall(cand, exact(x, q, 10)) >= 0.99


@pytest.mark.parametrize("precision", INDEX_PRECISIONS)
def test_search_rescores_exactly(precision):
    """Every codec's search returns exact float scores; fp32's ranking is the exact one (ties by row),
    int8's and binary's the exact ranking of their candidates."""
    x, q = clustered(2000, 64, 8, seed=5)
    x[30] = x[40]
    codec = filled(CODECS[precision](64), x)
    s, i = codec.search(x, q, 10, 5)
    exact_s = q.astype(np.float64) @ x.T.astype(np.float64)
    np.testing.assert_allclose(s, np.take_along_axis(exact_s, i, 1), atol=1e-5)
    if precision == "fp32":
        want_s, want_i = dot_oracle(x, q, 10)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_allclose(s, want_s, atol=1e-5)
    else:
        cand = codec.candidates(q, len(x), 50)
        sub = np.take_along_axis(exact_s, cand, 1)
        np.testing.assert_array_equal(i, np.take_along_axis(cand, np.argsort(-sub, axis=1, kind="stable"), 1)[:, :10])


# ----------------------------------------------------------------------------- buffers, sections, bytes


@pytest.mark.parametrize("precision", INDEX_PRECISIONS)
def test_grow_arrays_restore_and_bytes(precision):
    x = degenerate(70)
    codec = filled(CODECS[precision](70), x[:25])
    codec.grow(100, 25)
    codec.add(x[25:], 25)
    arrays = codec.arrays(len(x))
    assert sorted(arrays) == sorted(codec.sections)
    back = CODECS[precision](70)
    back.restore(arrays, calibrated=True)
    if precision == "fp32":
        assert codec.codes is None and back.codes is None and codec.resident_bytes(40) == 0
        return
    np.testing.assert_array_equal(back.codes, filled(CODECS[precision](70, codec.scales), x).codes)
    np.testing.assert_array_equal(back.codes, codec.codes[: len(x)])
    scales = 0 if codec.scales is None else 70 * 4
    assert codec.resident_bytes(40) == 40 * codec.width * codec.codes.itemsize + scales
    assert codec.resident_bytes(40) == {"int8": 40 * 70 + 280, "binary": 40 * 2 * 8}[precision]


def test_int8_sections_before_calibration():
    codec = Int8Codec(5)
    arrays = codec.arrays(0)
    assert arrays["codes"].shape == (0, 5)
    np.testing.assert_array_equal(arrays["scales"], np.full(5, 1 / 127, np.float32))
    back = Int8Codec(5)
    back.restore(arrays, calibrated=False)
    assert back.scales is None and back.resident_bytes(0) == 0


# ----------------------------------------------------------------------------- int8 index


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
    monkeypatch.setattr("engine.index.codecs.topk_int8", lambda *a, **kw: real(*a, **{**kw, "method": "i16"}))
    small = idx.search(q[: qgemm.gemm_min_queries() - 1], 10)
    np.testing.assert_array_equal(small[1], big[1][: qgemm.gemm_min_queries() - 1])


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_int8_index_many_queries_take_the_gemm_and_keep_exact_results(monkeypatch, metric):
    """From gemm_min_queries() queries on the int8 index ranks candidates with the GEMM; after
    rescoring the results equal exact search (recall@10 = 1.0), as the per-query scan's do."""
    calls = []
    real = qgemm.topk_int8_gemm
    monkeypatch.setattr("engine.index.codecs.topk_int8_gemm", lambda *a, **kw: calls.append(1) or real(*a, **kw))
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


# ----------------------------------------------------------------------------- binary index


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
    np.testing.assert_array_equal(idx._codec.codes[: len(idx)], pack_signs(x))


def test_binary_recall_at_the_default_oversample():
    """Clustered 384-d unit vectors: recall@10 after rescoring at the default oversample."""
    x, q = clustered(20000, 384, 50, seed=7)
    idx = Index(384, "binary")
    idx.add(x)
    _, i = idx.search(q, 10)
    assert recall(i, exact(x, q, 10)) >= 0.99
    _, i4 = idx.search(q, 10, oversample=1)
    assert recall(i4, exact(x, q, 10)) < recall(i, exact(x, q, 10))  # the oversample is what buys it


def test_binary_refuses_scales_and_cuda():
    with pytest.raises(InputError, match="scales= only applies"):
        Index(8, "binary", scales=np.ones(8))
    idx = Index(8, "binary")
    idx.add(np.eye(8, dtype=np.float32))
    with pytest.raises(InputError, match="CPU only"):
        idx.search(np.eye(8, dtype=np.float32)[:1], 1, device="cuda")

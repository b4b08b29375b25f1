"""kernels/topk.py against numpy oracles: exact fp32 top-k (scan and gemm), rescoring, heap sentinels, and
the row-block heap feed (``push_row_scores``) the int8 GEMM pushes its scores through."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernels import topk as T
from engine.kernels.topk import empty_heaps, push_row_scores, rescore, sort_heaps, topk_dot
from tests.kernels.oracles import int_data, oracle_topk, recall, unit

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


def test_heap_sentinels_lose_to_real_entries():
    hs, hi = T.empty_heaps((1, 2), np.float32)
    T._heap_push(hs[0], hi[0], np.float32(-np.finfo(np.float32).max), np.int64(3))
    T._heap_push(hs[0], hi[0], np.float32(-1.0), np.int64(9))
    T._heap_sort_best_first(hs[0], hi[0])
    np.testing.assert_array_equal(hi[0], [9, 3])


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

"""Exact top-k by inner product, with the selection fused into the corpus scan.

For unit vectors the inner product is the cosine similarity. Conventions shared by every
function here:

* Results are ordered best first: larger score first, and among equal scores the smaller
  corpus index first. The order is a total order, so the output never depends on the number
  of threads or on the chunking.
* ``k`` larger than the corpus returns ``min(k, n)`` columns (no padding); ``k == 0`` or an
  empty corpus returns ``(nq, 0)`` arrays.
* Inputs must be finite. The kernels are compiled with ``fastmath`` (needed to vectorize the
  float reductions), which assumes no NaN/inf; the callers validate (``engine.index``).

Algorithm. The corpus is split into chunks that run in parallel (``numba.prange``). Each
chunk keeps, for every query, a bounded min-heap of its best ``k`` (score, index) pairs whose
root is the worst kept pair; a score only touches the heap when it beats the root, so after
the first few thousand rows almost every score costs one compare. The per-chunk heaps are
then merged per query. For many queries (``nq >= GEMM_MIN_QUERIES``) the scores of a block
of corpus rows against all queries come from one BLAS ``sgemm`` (numpy matmul) into a small
reused buffer, and the heaps are fed from that buffer; no full (nq, n) score matrix exists
on either path.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

# Sentinel of an empty heap slot: a finite score (fastmath assumes no inf) that loses to any
# real score, and an index that loses every tie.
EMPTY_SCORE_F32 = np.float32(-np.finfo(np.float32).max)
EMPTY_SCORE_I32 = np.int32(np.iinfo(np.int32).min)
EMPTY_INDEX = np.int64(np.iinfo(np.int64).max)

#: Rows per tile of the fused scan: a tile of 64 float32 rows of dim 384 (96 KiB) stays in L2
#: while every query of the block passes over it.
TILE_ROWS = 64
#: From this many queries on, the fp32 search computes block scores with sgemm.
GEMM_MIN_QUERIES = 64
#: Corpus rows per sgemm block on the GEMM path (scores buffer: nq x GEMM_BLOCK_ROWS float32,
#: 16 MiB at nq = 1024; chosen by measurement: bench/experiments/models_notes.md#kernels).
GEMM_BLOCK_ROWS = 4096
#: Below this many queries, merging and rescoring run on one thread: each parallel region
#: is a barrier, and a barrier costs a scheduler tick when the cores are oversubscribed.
SERIAL_MAX_QUERIES = 64


# ----------------------------------------------------------------------------- heap kernels


@njit(cache=True, fastmath=True)
def _worse(sa, ia, sb, ib):
    """True when (sa, ia) ranks after (sb, ib): sa < sb, or sa == sb and ia > ib."""
    return sa < sb or (sa == sb and ia > ib)


@njit(cache=True, fastmath=True)
def _sift_down(hs, hi, s, i, end):
    """Put (s, i) at the root of the heap hs[:end], hi[:end] and sift it down to its place."""
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= end:
            break
        right = child + 1
        if right < end and _worse(hs[right], hi[right], hs[child], hi[child]):
            child = right
        if _worse(hs[child], hi[child], s, i):
            hs[pos] = hs[child]
            hi[pos] = hi[child]
            pos = child
        else:
            break
    hs[pos] = s
    hi[pos] = i


@njit(cache=True, fastmath=True)
def _heap_replace_root(hs, hi, s, i):
    """Replace the root (worst kept pair) of the heap (hs, hi) by (s, i) and sift it down.

    Heap order: every parent is ``_worse`` than (or equal to) its children.
    """
    _sift_down(hs, hi, s, i, hs.shape[0])


@njit(cache=True, fastmath=True)
def _heap_push(hs, hi, s, i):
    """Keep (s, i) if it ranks before the root: s > root, or s == root and i < root index."""
    if _worse(hs[0], hi[0], s, i):
        _heap_replace_root(hs, hi, s, i)


@njit(cache=True, fastmath=True)
def _heap_sort_best_first(hs, hi):
    """In-place heapsort of a heap into best-first order (score desc, index asc)."""
    k = hs.shape[0]
    for end in range(k - 1, 0, -1):
        s, i = hs[0], hi[0]  # current worst goes to the back
        hs[0], hi[0] = hs[end], hi[end]
        hs[end], hi[end] = s, i
        _sift_down(hs, hi, hs[0], hi[0], end)  # the new root, inside hs[:end]


@njit(cache=True, fastmath=True)
def _merge_one(cs, ci, j, hs, hi):
    """(hs, hi) <- best-first top-k of the union of the chunk heaps cs[:, j], ci[:, j]."""
    nchunks, _, k = cs.shape
    for c in range(nchunks):
        for t in range(k):
            _heap_push(hs, hi, cs[c, j, t], ci[c, j, t])
    _heap_sort_best_first(hs, hi)


@njit(cache=True, fastmath=True, parallel=True)
def _merge_heaps(cs, ci, out_s, out_i):
    """out[j] = best-first top-k of the union of the chunk heaps cs[:, j], ci[:, j] (parallel over j).

    cs, ci: (nchunks, nq, k); out_s, out_i: (nq, k), pre-filled with the empty sentinel.
    """
    for j in prange(cs.shape[1]):
        _merge_one(cs, ci, j, out_s[j], out_i[j])


@njit(cache=True, fastmath=True)
def _merge_heaps_serial(cs, ci, out_s, out_i):
    """``_merge_heaps`` on one thread: for few queries, skips a parallel region (a barrier)."""
    for j in range(cs.shape[1]):
        _merge_one(cs, ci, j, out_s[j], out_i[j])


# ----------------------------------------------------------------------------- fp32 scan


@njit(cache=True, fastmath=True)
def _dot_f32(a, b):
    """sum_j a_j * b_j, float32 accumulation (fastmath lets LLVM vectorize the reduction)."""
    acc = np.float32(0.0)
    for t in range(a.shape[0]):
        acc += a[t] * b[t]
    return acc


@njit(cache=True, fastmath=True, parallel=True)
def _topk_scan_f32(x, q, chunk, tile, hs, hi):
    """Fused scan: hs[c, j], hi[c, j] <- top-k of { (x_r . q_j, r) : r in chunk c }.

    score(r, j) = sum_d x[r, d] * q[j, d]   (float32 accumulation, vectorized by LLVM)

    Chunks (``chunk`` rows) run in parallel. Within a chunk, rows go in tiles of ``tile``
    rows; every query passes over the tile while it is cache-resident. Rows reach a query's
    heap in increasing order, so a score equal to the root (which has a smaller index) is
    rejected by a plain ``>``: ties keep the smaller index.
    """
    n, d = x.shape
    nq = q.shape[0]
    nchunks = hs.shape[0]
    for c in prange(nchunks):
        lo = c * chunk
        hi_row = min(n, lo + chunk)
        for r0 in range(lo, hi_row, tile):
            r1 = min(hi_row, r0 + tile)
            j = 0
            while j + 4 <= nq:
                for r in range(r0, r1):
                    # 4 queries per pass: each loaded x value feeds 4 FMAs (register
                    # blocking). Written inline: a helper taking row slices is slower.
                    a0 = np.float32(0.0)
                    a1 = np.float32(0.0)
                    a2 = np.float32(0.0)
                    a3 = np.float32(0.0)
                    for t in range(d):
                        xv = x[r, t]
                        a0 += xv * q[j, t]
                        a1 += xv * q[j + 1, t]
                        a2 += xv * q[j + 2, t]
                        a3 += xv * q[j + 3, t]
                    if a0 > hs[c, j, 0]:
                        _heap_replace_root(hs[c, j], hi[c, j], a0, np.int64(r))
                    if a1 > hs[c, j + 1, 0]:
                        _heap_replace_root(hs[c, j + 1], hi[c, j + 1], a1, np.int64(r))
                    if a2 > hs[c, j + 2, 0]:
                        _heap_replace_root(hs[c, j + 2], hi[c, j + 2], a2, np.int64(r))
                    if a3 > hs[c, j + 3, 0]:
                        _heap_replace_root(hs[c, j + 3], hi[c, j + 3], a3, np.int64(r))
                j += 4
            for jj in range(j, nq):
                cs = hs[c, jj]
                ci = hi[c, jj]
                thr = cs[0]
                for r in range(r0, r1):
                    acc = np.float32(0.0)  # _dot_f32(x[r], q[jj]), inline
                    for t in range(d):
                        acc += x[r, t] * q[jj, t]
                    if acc > thr:
                        _heap_replace_root(cs, ci, acc, np.int64(r))
                        thr = cs[0]


@njit(cache=True, fastmath=True)
def _push_block_scores(scores, m, base, hs, hi):
    """For every query j: push (scores[j, r], base + r) for r < m into heap (hs[j], hi[j]).

    ``scores`` is one sgemm block (nq, >= m); blocks arrive in increasing ``base``, so a
    plain ``>`` against the root keeps the smaller index on ties. Groups of 32 scores are
    first reduced to their max (vectorized); only a group beating the root is walked.

    Serial on purpose: alternating a ``parallel=True`` kernel (OpenMP threads) with OpenBLAS's
    threads made both pools spin-wait against each other (slower end to end than sgemm on all
    cores + this serial push).
    """
    nq = scores.shape[0]
    g = 32
    for j in range(nq):
        cs = hs[j]
        ci = hi[j]
        thr = cs[0]
        row = scores[j]
        for r0 in range(0, m, g):
            r1 = min(m, r0 + g)
            # vectorized max of the group first: most groups hold no score above the root
            mx = row[r0]
            for r in range(r0 + 1, r1):
                mx = max(mx, row[r])
            if mx > thr:
                for r in range(r0, r1):
                    s = row[r]
                    if s > thr:
                        _heap_replace_root(cs, ci, s, np.int64(base + r))
                        thr = cs[0]


@njit(cache=True, fastmath=True)
def _push_row_scores(scores, base, hs, hi, thr):
    """For every row r and query j: push (scores[r, j], base + r) into heap (hs[j], hi[j]).

    The transposed layout of ``_push_block_scores``: one block (m, nq) with a row per corpus
    row, as a GEMM of corpus rows by query columns returns it. ``thr[j]`` mirrors the root of
    heap j; a row is walked only when some score beats its query's root, found first by a
    vectorized any(scores[r, :] > thr) (after the first rows almost no row has one). Rows
    arrive in increasing ``base + r``, so the strict ``>`` keeps the smaller index on ties.
    """
    m, nq = scores.shape
    for r in range(m):
        row = scores[r]
        hit = False
        for j in range(nq):
            hit |= row[j] > thr[j]
        if hit:
            for j in range(nq):
                s = row[j]
                if s > thr[j]:
                    _heap_replace_root(hs[j], hi[j], s, np.int64(base + r))
                    thr[j] = hs[j, 0]


def push_row_scores(scores: np.ndarray, base: int, hs: np.ndarray, hi: np.ndarray, thr: np.ndarray) -> None:
    """Feed a (rows, nq) score block for corpus rows ``base, base + 1, ...`` into per-query heaps.

    Blocks must arrive in increasing ``base`` (ties then keep the smaller index).

    Args:
        scores: (rows, nq) scores of one block, as a GEMM of corpus rows by query columns returns it.
        base: the corpus index of the block's first row.
        hs, hi: the heaps, ``empty_heaps((nq, k), scores.dtype)``; updated in place.
        thr: ``hs[:, 0].copy()`` at the start, kept in step with the heaps' roots.
    """
    _push_row_scores(scores, base, hs, hi, thr)


def sort_heaps(hs: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort the heaps (nq, k) in place into best-first results and return them."""
    _sort_heaps(hs, hi)
    return hs, hi


@njit(cache=True, fastmath=True, parallel=True)
def _sort_heaps(hs, hi):
    """Sort every heap hs[j], hi[j] into best-first order."""
    for j in prange(hs.shape[0]):
        _heap_sort_best_first(hs[j], hi[j])


@njit(cache=True, fastmath=True)
def _rescore_one(x, qv, cand, hs, hi):
    """(hs, hi) <- best-first top-k of { (x_r . qv, r) : r in cand, r >= 0 }.

    Exact float32 re-ranking of a candidate list (e.g. from the int8 scan). ``x`` may be a
    memory-mapped array: only the candidate rows are read. Candidates come in any order, so
    the full (score, index) comparison is used.
    """
    for t in range(cand.shape[0]):
        r = cand[t]
        if r < 0:
            continue
        _heap_push(hs, hi, _dot_f32(x[r], qv), r)
    _heap_sort_best_first(hs, hi)


@njit(cache=True, fastmath=True, parallel=True)
def _rescore_f32(x, q, cand, out_s, out_i):
    """out[j] = best-first top-k of { (x_r . q_j, r) : r in cand[j], r >= 0 } (parallel over j)."""
    for j in prange(cand.shape[0]):
        _rescore_one(x, q[j], cand[j], out_s[j], out_i[j])


@njit(cache=True, fastmath=True)
def _rescore_f32_serial(x, q, cand, out_s, out_i):
    """``_rescore_f32`` on one thread (few queries: no parallel region)."""
    for j in range(cand.shape[0]):
        _rescore_one(x, q[j], cand[j], out_s[j], out_i[j])


# ----------------------------------------------------------------------------- wrappers


def n_chunks(n: int, tile: int = TILE_ROWS) -> tuple[int, int]:
    """(number of chunks, rows per chunk) for a parallel scan of ``n`` rows.

    About 4 chunks per thread (load balance) but never chunks smaller than 16 tiles.
    """
    threads = numba.get_num_threads()
    want = max(1, 4 * threads)
    chunk = -(-n // want)
    chunk = max(16 * tile, -(-chunk // tile) * tile)
    return max(1, -(-n // chunk)), chunk


def empty_heaps(shape, score_dtype) -> tuple[np.ndarray, np.ndarray]:
    """Heaps filled with the empty sentinel (score loses to everything, index loses ties)."""
    fill = EMPTY_SCORE_I32 if np.dtype(score_dtype) == np.int32 else EMPTY_SCORE_F32
    return np.full(shape, fill, dtype=score_dtype), np.full(shape, EMPTY_INDEX, dtype=np.int64)


def merge_chunk_heaps(cs: np.ndarray, ci: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-chunk heaps into best-first results.

    Args:
        cs, ci: (nchunks, nq, k) heaps of scores and indices, one per chunk and query.
        kk: how many results to keep (kk <= k real entries per query).

    Returns:
        (scores (nq, kk), indices int64 (nq, kk)), best first, ties broken by the smaller index.
    """
    nq, k = cs.shape[1], cs.shape[2]
    out_s, out_i = empty_heaps((nq, k), cs.dtype)
    (_merge_heaps_serial if nq < SERIAL_MAX_QUERIES else _merge_heaps)(cs, ci, out_s, out_i)
    return out_s[:, :kk], out_i[:, :kk]


def _check_pair(corpus: np.ndarray, queries: np.ndarray, k: int) -> None:
    if corpus.ndim != 2 or queries.ndim != 2:
        raise ValueError(f"expected 2-d corpus (n, dim) and queries (nq, dim), got {corpus.shape} and {queries.shape}")
    if corpus.shape[1] != queries.shape[1]:
        raise ValueError(
            f"queries have dim {queries.shape[1]} but the corpus has dim {corpus.shape[1]}; "
            "embed both with the same model"
        )
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")


def topk_dot(corpus: np.ndarray, queries: np.ndarray, k: int, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``queries @ corpus.T`` per query, without materializing it.

    Args:
        corpus: (n, dim) float32, C-contiguous (may be a memmap); other arrays are converted.
        queries: (nq, dim) float32.
        k: results per query; ``min(k, n)`` columns are returned.
        method: "scan" (fused kernel), "gemm" (sgemm blocks + heaps) or "auto" (gemm from
            ``GEMM_MIN_QUERIES`` queries on).

    Returns:
        (scores float32 (nq, min(k, n)), indices int64 (nq, min(k, n))), best first, ties broken by
        the smaller index.

    Raises:
        ValueError: arrays that are not 2-d or differ in dim, k < 0, or an unknown method.
    """
    corpus = np.asarray(corpus)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    _check_pair(corpus, queries, k)
    if corpus.dtype != np.float32 or not corpus.flags.c_contiguous:
        corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    n, nq = corpus.shape[0], queries.shape[0]
    kk = min(k, n)
    if kk == 0 or nq == 0:
        return np.empty((nq, kk), np.float32), np.empty((nq, kk), np.int64)
    if method == "auto":
        method = "gemm" if nq >= GEMM_MIN_QUERIES else "scan"
    if method == "scan":
        nch, chunk = n_chunks(n)
        cs, ci = empty_heaps((nch, nq, kk), np.float32)
        _topk_scan_f32(corpus, queries, chunk, TILE_ROWS, cs, ci)
        return merge_chunk_heaps(cs, ci, kk)
    if method == "gemm":
        hs, hi = empty_heaps((nq, kk), np.float32)
        block = GEMM_BLOCK_ROWS
        buf = np.empty((nq, block), np.float32)
        for r0 in range(0, n, block):
            r1 = min(n, r0 + block)
            m = r1 - r0
            out = buf if m == block else np.empty((nq, m), np.float32)
            np.matmul(queries, corpus[r0:r1].T, out=out)
            _push_block_scores(out, m, r0, hs, hi)
        _sort_heaps(hs, hi)
        return hs, hi
    raise ValueError(f"method must be 'auto', 'scan' or 'gemm', got {method!r}")


def rescore(corpus: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact re-ranking: top-k of ``queries[j] . corpus[candidates[j]]`` per query.

    Args:
        corpus: (n, dim) float32 (may be a memmap: only the candidate rows are read).
        queries: (nq, dim) float32.
        candidates: (nq, m) int64 row indices, in any order (negative = no candidate).
        k: results per query; ``min(k, m)`` columns are returned.

    Returns:
        (scores float32 (nq, min(k, m)), indices int64), best first, ties broken by the smaller index.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    candidates = np.ascontiguousarray(candidates, dtype=np.int64)
    nq, m = candidates.shape
    kk = min(k, m)
    if kk == 0 or nq == 0:
        return np.empty((nq, kk), np.float32), np.empty((nq, kk), np.int64)
    out_s, out_i = empty_heaps((nq, kk), np.float32)
    kernel = _rescore_f32_serial if nq < SERIAL_MAX_QUERIES else _rescore_f32
    kernel(np.asarray(corpus), queries, candidates, out_s, out_i)
    return out_s, out_i

"""Binary sign codes and a popcount Hamming top-k scan (a coarse first stage before rescoring).

Codes: bit j of a row is 1 when x_j > 0, packed little-endian into uint64 words
(``ceil(dim / 64)`` words per row, padding bits 0 in every row so they never differ).

Similarity: ``s(x, y) = dim - 2 * hamming(code_x, code_y)`` = (#agreeing signs) -
(#disagreeing signs), an estimate of ``dim * (1 - 2 * angle / pi)`` for random-hyperplane
codes. It is far coarser than int8 (32x smaller than fp32), so use a large oversample (e.g.
k * 20 or more, see ``tests/kernels/test_binary.py``) and re-rank exactly with ``topk.rescore``.

Scan. Results follow ``topk``'s order (score desc, then row asc). Distances are small integers
(0..dim), so the selection counts instead of keeping heaps: per query, rows arrive in
increasing order and a row is kept only when its distance is below a threshold ``t``, the
smallest distance that m kept rows reach (a later row at distance ``t`` loses the tie to all of
them). Keeping a row costs O(1) (a histogram of kept distances lowers ``t``); a histogram of the
first 8 m rows sets the starting ``t``. The distances of a corpus row to a group of up to 64
queries come from one loop over the queries that LLVM vectorizes (``vpopcntq`` on AVX-512
VPOPCNTDQ) with the word loop unrolled: the word count is part of a tuple's type, so Numba
compiles one kernel per word count. The rows of a tile that any query keeps are noted without a
branch and accepted afterwards. Work items are (row chunk, query group) pairs, in parallel from
``SERIAL_MAX_PAIRS`` row-query pairs on; the candidates of a query's chunks are merged by a
stable counting sort on distance.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange
from numba.core.extending import intrinsic

#: Queries per group (at most 64: a bit mask of the kept lanes): one parallel work item scans
#: its row chunk for up to this many queries (a row's words are loaded once for all of them).
GROUP_QUERIES = 64
#: Rows per chunk at least: every chunk keeps its own ``m`` candidates per query, and a chunk
#: keeps about m * (1 + ln(rows / m)) rows on the way (the threshold falls as rows arrive).
MIN_CHUNK_ROWS = 16384
#: Below this many row-query pairs the scan runs on the calling thread: a parallel region is a
#: barrier, which can wait a scheduler tick on a loaded machine, and splitting rows costs each
#: chunk its own kept rows. One or two queries (a scalar loop that mostly streams the codes) go
#: parallel from 2 * MIN_CHUNK_ROWS rows on instead: two cores pull more memory bandwidth than
#: one (chosen by measurement: bench/experiments/models_notes.md#kernels).
SERIAL_MAX_PAIRS = 1_000_000
#: Rows per tile: the rows of a tile are tested against the thresholds at its start.
TILE_ROWS_BIN = 256
#: Rows (per m kept) whose distance histogram sets the starting thresholds of a query group
#: (``_warm_start``; chosen by measurement: bench/experiments/models_notes.md#kernels).
WARM_ROWS_PER_M = 8


@intrinsic
def _popcount(typingctx, x):
    """LLVM ``ctpop`` (compiles to the ``popcnt`` instruction, or ``vpopcntq`` when vectorized)."""
    sig = x(x)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(cache=True, fastmath=True, parallel=True)
def _pack_signs(x, out):
    """out[i, w] bit b = (x[i, 64 w + b] > 0), little-endian within each uint64 word."""
    n, d = x.shape
    nw = out.shape[1]
    for i in prange(n):
        for w in range(nw):
            word = np.uint64(0)
            for b in range(min(64, d - 64 * w)):
                if x[i, 64 * w + b] > 0:
                    word |= np.uint64(1) << np.uint64(b)
            out[i, w] = word


# ----------------------------------------------------------------------------- selection by counting


@njit(cache=True, fastmath=True)
def _compact(c, q, t, quota, bh, br, f):
    """Keep, in order, the entries of bh[c, q, :f], br[c, q, :f] with h < t and the first ``quota``
    with h == t: the query's top m so far (quota = m - #{h < t}). Returns the new fill.
    Branch-free: every entry is copied, the write position advances only for a kept one."""
    out = 0
    for i in range(f):
        h = bh[c, q, i]
        tie = h == t
        keep = (h < t) | (tie & (quota > 0))
        quota -= tie & keep
        bh[c, q, out] = h
        br[c, q, out] = br[c, q, i]
        out += keep
    return out


@njit(cache=True, fastmath=True, inline="always")
def _accept(h, r, m, c, g, j, q, thr, below, fill, cnt, bh, br):
    """Keep row r at distance h < thr[c, g, j] for query q (lane j of group g) in chunk c.

    Invariants over the rows kept so far (cnt[c, q, d] = how many at distance d), per (c, q):
    thr = smallest t with #{kept d <= t} >= m (dim + 1 while fewer than m are kept) and
    below = #{kept d < thr} < m. Rows arrive in increasing order, so a later row at a distance
    >= thr ranks after m kept rows: the scan's ``h < thr`` rejects it. The candidates
    (bh, br)[c, q, :fill] are compacted to the top m when full. Whole arrays and indices, no
    views: a view's reference count is an atomic shared by the threads.

    The helpers on the scan's hot path are inlined by Numba (``inline="always"``): a call that
    passes a dozen arrays costs more than the work here.
    """
    f = fill[c, q]
    t = thr[c, g, j]
    if f == bh.shape[2]:
        f = _compact(c, q, t, m - below[c, q], bh, br, f)
    bh[c, q, f] = h
    br[c, q, f] = r
    fill[c, q] = f + 1
    cnt[c, q, h] += 1
    b = below[c, q] + 1
    while b >= m:
        t -= 1
        b -= cnt[c, q, t]
    thr[c, g, j] = t
    below[c, q] = b


@njit(cache=True, fastmath=True)
def _select_one(q, dim, fill, bh, br, out_s, out_i):
    """out_s[q], out_i[q] <- the first kk candidates of query q by (distance asc, row asc).

    The candidates of chunks c = 0, 1, ... (rows ascending) go through a stable counting sort
    on distance h; score = dim - 2 h. Every chunk holds its own top m, so the first kk of their
    union are the query's top kk.
    """
    kk = out_s.shape[1]
    hist = np.zeros(dim + 1, np.int64)
    for c in range(fill.shape[0]):
        for t in range(fill[c, q]):
            hist[bh[c, q, t]] += 1
    acc = 0
    for h in range(dim + 1):  # hist[h] <- first output slot of distance h
        v = hist[h]
        hist[h] = acc
        acc += v
    for c in range(fill.shape[0]):
        for t in range(fill[c, q]):
            h = bh[c, q, t]
            pos = hist[h]
            if pos < kk:
                out_s[q, pos] = dim - 2 * h
                out_i[q, pos] = br[c, q, t]
            hist[h] = pos + 1


@njit(cache=True, fastmath=True)
def _select_serial(dim, fill, bh, br, out_s, out_i):
    """``_select_one`` for every query, on one thread."""
    for q in range(out_s.shape[0]):
        _select_one(q, dim, fill, bh, br, out_s, out_i)


# ----------------------------------------------------------------------------- the scan
# qw: the query codes by word, a tuple of nw arrays (groups, gsize): qw[w][g, j] = word w of the
# code of query g * gsize + j (lane j of group g). Its length is part of the tuple's type, so
# Numba compiles (and caches) one kernel per word count with a constant word loop that LLVM
# unrolls, and the lane loops vectorize over contiguous qw[w][g, :] (vpopcntq on AVX-512
# VPOPCNTDQ).


@njit(cache=True, fastmath=True, inline="always")
def _distance(codes, r, qw, g, j):
    """h(r, j) = sum_w popcount(codes[r, w] ^ qw[w][g, j])      (Hamming distance)"""
    h = np.int64(0)
    for w in range(len(qw)):
        h += np.int64(_popcount(codes[r, w] ^ qw[w][g, j]))
    return h


@njit(cache=True, fastmath=True, inline="always")
def _mark(codes, r0, r1, qw, g, t, hit_r, hit_b):
    """Note, without a branch, the rows r in [r0, r1) with h(r, j) < t[j] for some lane j:
    hit_r[i] = r and hit_b[i] = those lanes as bits; returns the count.

    h(r, j) as in ``_distance``, inline. One lane runs a scalar loop (faster than a lane loop of
    length 1); several lanes take rows in pairs (each query word loaded once for two rows). Rows,
    groups and counts index as unsigned integers: Numba then skips its negative-index wraparound.
    """
    nhit = np.uint64(0)
    g = np.uint64(g)
    if t.shape[0] == 1:
        t0 = t[0]
        qv = np.empty(len(qw), np.uint64)
        for w in range(len(qw)):
            qv[w] = qw[w][g, 0]
        for r in range(np.uint64(r0), np.uint64(r1)):
            h = np.int64(0)
            for w in range(len(qw)):
                h += np.int64(_popcount(codes[r, w] ^ qv[w]))
            hit_r[nhit] = r
            hit_b[nhit] = 1
            nhit += np.uint64(h < t0)
        return np.int64(nhit)
    last = np.uint64(r1 - 1)
    for r in range(np.uint64(r0), np.uint64(r1), np.uint64(2)):
        s = min(r + np.uint64(1), last)  # rows in pairs (the last row twice at an odd end)
        bits_r = np.uint64(0)
        bits_s = np.uint64(0)
        for j in range(t.shape[0]):
            hr = np.int64(0)
            hs = np.int64(0)
            for w in range(len(qw)):
                qv = qw[w][g, j]
                hr += np.int64(_popcount(codes[r, w] ^ qv))
                hs += np.int64(_popcount(codes[s, w] ^ qv))
            bits_r |= np.uint64(hr < t[j]) << np.uint64(j)
            bits_s |= np.uint64(hs < t[j]) << np.uint64(j)
        hit_r[nhit] = r
        hit_b[nhit] = bits_r
        nhit += np.uint64(bits_r != 0)
        hit_r[nhit] = s
        hit_b[nhit] = bits_s
        nhit += np.uint64((bits_s != 0) & (s != r))
    return np.int64(nhit)


@njit(cache=True, fastmath=True)
def _warm_start(codes, r0, r1, qw, g, t, m, dim):
    """t[j] <- min(t[j], 1 + the m-th smallest h(r, j) over rows [r0, r1)), from a histogram.

    m rows of the chunk reach that distance, so no row beyond it can be in the top m: the scan
    then starts near its final threshold instead of at dim + 1 and keeps about m ln(r1 - r0 / m)
    fewer rows on the way (a kept row costs far more than a histogram entry).
    """
    gsize = t.shape[0]
    hmax = min(dim, 64 * len(qw))  # (codes of another dim would reach 64 * words)
    hist = np.zeros((gsize, 64 * len(qw) + 1), np.int32)
    hrow = np.empty(gsize, np.int64)
    for r in range(r0, r1):
        for j in range(gsize):
            h = np.int64(0)
            for w in range(len(qw)):
                h += np.int64(_popcount(codes[r, w] ^ qw[w][g, j]))
            hrow[j] = h
        for j in range(gsize):
            hist[j, hrow[j]] += 1
    for j in range(gsize):
        acc = 0
        for h in range(hmax + 1):
            acc += hist[j, h]
            if acc >= m:
                t[j] = min(t[j], h + 1)
                break


@njit(cache=True, fastmath=True, inline="always")
def _keep_marked(codes, qw, g, hit_r, hit_b, nhit, m, c, thr, below, fill, cnt, bh, br):
    """Accept the marked rows hit_r[:nhit] lane by lane (lanes = bits of hit_b) against the
    current thresholds thr[c, g] (they fall as rows are kept; rows in increasing order)."""
    gsize = thr.shape[2]
    for i in range(nhit):
        r = hit_r[i]
        bits = hit_b[i]
        while bits:
            j = np.int64(_popcount((bits & (~bits + np.uint64(1))) - np.uint64(1)))  # lowest set bit
            bits &= bits - np.uint64(1)
            h = _distance(codes, r, qw, g, j)
            if h < thr[c, g, j]:
                _accept(h, r, m, c, g, j, g * gsize + j, thr, below, fill, cnt, bh, br)


@njit(cache=True, fastmath=True)
def _scan_item(item, codes, qw, m, chunk, warm, thr, below, fill, cnt, bh, br, dim, out_s, out_i):
    """Candidates of rows [c * chunk, (c + 1) * chunk) for the lanes of group g, item = (c, g):
    row r is kept for lane j (query g * gsize + j) when h(r, j) < thr[c, g, j] (``_accept``).

    The first ``warm`` rows of the chunk set a starting threshold (``_warm_start``). Rows then go
    in tiles: ``_mark`` tests a tile against the thresholds at its start, ``_keep_marked``
    accepts its marked rows against the current ones. Padding lanes have thr 0 and keep
    nothing. With one chunk the item owns its queries and selects their results here.
    """
    nch, _groups, gsize = thr.shape
    c, g = item % nch, item // nch
    t = thr[c, g]
    lo, hi = c * chunk, min(codes.shape[0], (c + 1) * chunk)
    if min(hi, lo + warm) - lo >= m:
        _warm_start(codes, lo, min(hi, lo + warm), qw, g, t, m, dim)
    hit_r = np.empty(TILE_ROWS_BIN, np.int64)
    hit_b = np.empty(TILE_ROWS_BIN, np.uint64)
    for r0 in range(lo, hi, TILE_ROWS_BIN):
        nhit = _mark(codes, r0, min(hi, r0 + TILE_ROWS_BIN), qw, g, t, hit_r, hit_b)
        if nhit:
            _keep_marked(codes, qw, g, hit_r, hit_b, nhit, m, c, thr, below, fill, cnt, bh, br)
    if nch == 1:
        for q in range(g * gsize, min(below.shape[1], (g + 1) * gsize)):
            _select_one(q, dim, fill, bh, br, out_s, out_i)


@njit(cache=True, fastmath=True, parallel=True)
def _scan_parallel(codes, qw, m, chunk, warm, thr, below, fill, cnt, bh, br, dim, out_s, out_i):
    """``_scan_item`` for every (chunk, group) item, in parallel."""
    for item in prange(thr.shape[0] * thr.shape[1]):
        _scan_item(item, codes, qw, m, chunk, warm, thr, below, fill, cnt, bh, br, dim, out_s, out_i)


@njit(cache=True, fastmath=True)
def _scan_serial(codes, qw, m, chunk, warm, thr, below, fill, cnt, bh, br, dim, out_s, out_i):
    """``_scan_parallel`` on the calling thread (small scans: no parallel region, no barrier)."""
    for item in range(thr.shape[0] * thr.shape[1]):
        _scan_item(item, codes, qw, m, chunk, warm, thr, below, fill, cnt, bh, br, dim, out_s, out_i)


# ----------------------------------------------------------------------------- wrappers


def pack_signs(x: np.ndarray) -> np.ndarray:
    """Sign codes of (n, dim) or (dim,) vectors: uint64 (n, ceil(dim / 64)) (or 1-d).

    Raises:
        ValueError: ``x`` is not (n, dim) or (dim,) with dim >= 1.
    """
    x = np.asarray(x, dtype=np.float32)
    single = x.ndim == 1
    x2 = np.ascontiguousarray(x[None, :] if single else x)
    if x2.ndim != 2 or x2.shape[1] == 0:
        raise ValueError(f"pack_signs expects (n, dim) or (dim,) with dim >= 1, got shape {x.shape}")
    out = np.empty((x2.shape[0], -(-x2.shape[1] // 64)), np.uint64)
    _pack_signs(x2, out)
    return out[0] if single else out


def _plan(n: int, nq: int) -> tuple[bool, int, int, int]:
    """(parallel, chunks, rows per chunk, lanes per query group).

    Small scans run on the calling thread (see ``SERIAL_MAX_PAIRS``). Queries go
    in balanced groups of up to ``GROUP_QUERIES`` lanes, padded to a multiple of 8 (8 lanes
    cost less than 3 to 7); one or two queries get a group each (the one-lane scalar loop beats
    8 padded lanes). In parallel, groups split further, one per thread, while they keep 8 or
    more queries; rows are split only when there are still fewer groups than threads: each
    chunk keeps its own m * (1 + ln(rows / m)) rows on the way, and more items would not
    balance better (``prange`` hands each thread an equal share of them).
    """
    threads = numba.get_num_threads()
    serial = threads == 1 or (n < 2 * MIN_CHUNK_ROWS if nq <= 2 else n * nq < SERIAL_MAX_PAIRS)
    groups = nq if nq <= 2 else -(-nq // GROUP_QUERIES)
    if not serial and nq > 2:
        groups = max(groups, min(threads, nq // 8))
    gsize = -(-nq // groups)
    if gsize > 1:
        gsize = min(GROUP_QUERIES, -(-gsize // 8) * 8)
    if serial:
        return False, 1, max(n, 1), gsize
    chunk = max(MIN_CHUNK_ROWS, -(-n // -(-threads // groups)))
    return True, -(-n // chunk), chunk, gsize


def _query_words(queries: np.ndarray, nw: int, groups: int, gsize: int) -> tuple:
    """The scan's ``qw``: a tuple of nw uint64 arrays (groups, gsize), padding lanes 0.

    Bits as ``pack_signs`` sets them (numpy's packbits, little-endian: no parallel region).
    """
    nq, d = queries.shape
    bits = np.zeros((groups * gsize, nw * 64), bool)
    np.greater(queries, 0, out=bits[:nq, :d])
    words = np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64, copy=False)
    return tuple(np.ascontiguousarray(words[:, w].reshape(groups, gsize)) for w in range(nw))


def topk_hamming(codes: np.ndarray, queries: np.ndarray, dim: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows by ``dim - 2 * hamming`` against the sign codes of the queries.

    Args:
        codes: uint64 (n, words) from ``pack_signs``.
        queries: float (nq, dim) vectors (their signs are taken here).
        dim: the vectors' dimension (words = ceil(dim / 64)).
        k: results per query; ``min(k, n)`` columns are returned.

    Returns:
        (int32 similarities (nq, min(k, n)), int64 indices), best first, ties broken by the smaller index.

    Raises:
        ValueError: codes that are not uint64 (n, words), k < 0, dim < 1, or queries and codes of
            different dims.
    """
    codes = np.ascontiguousarray(codes)
    if codes.dtype != np.uint64 or codes.ndim != 2:
        raise ValueError(f"codes must be uint64 (n, words) from pack_signs, got {codes.dtype} {codes.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    n, nw = codes.shape
    if queries.ndim != 2 or -(-queries.shape[1] // 64) != nw or -(-dim // 64) != nw:
        raise ValueError(f"queries of dim {np.shape(queries)[-1]} do not match codes of {nw} words / dim {dim}")
    nq, kk, dim = queries.shape[0], min(k, n), int(dim)
    if kk == 0 or nq == 0:
        return np.empty((nq, kk), np.int32), np.empty((nq, kk), np.int64)
    parallel, nch, chunk, gsize = _plan(n, nq)
    groups = -(-nq // gsize)
    thr = np.zeros((nch, groups * gsize), np.int64)  # padding lanes: thr 0, keep nothing
    thr[:, :nq] = dim + 1
    cap = min(2 * kk, chunk)  # candidates per (chunk, query); compacted to kk when full
    fill, below = np.zeros((nch, nq), np.int64), np.zeros((nch, nq), np.int64)
    bh, br = np.empty((nch, nq, cap), np.int32), np.empty((nch, nq, cap), np.int64)
    out_s, out_i = np.empty((nq, kk), np.int32), np.empty((nq, kk), np.int64)
    cnt = np.zeros((nch, nq, dim + 1), np.int32)
    (_scan_parallel if parallel else _scan_serial)(
        codes,
        _query_words(queries, nw, groups, gsize),
        kk,
        chunk,
        WARM_ROWS_PER_M * kk,
        thr.reshape(nch, groups, gsize),
        below,
        fill,
        cnt,
        bh,
        br,
        dim,
        out_s,
        out_i,
    )
    if nch > 1:  # few queries: merge the chunks' candidates on one thread
        _select_serial(dim, fill, bh, br, out_s, out_i)
    return out_s, out_i

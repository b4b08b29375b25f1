"""Binary sign codes and a popcount Hamming top-k scan (a coarse first stage before rescoring).

Codes: bit j of a row is 1 when x_j > 0, packed little-endian into uint64 words
(``ceil(dim / 64)`` words per row, padding bits 0 in every row so they never differ).

Similarity: ``s(x, y) = dim - 2 * hamming(code_x, code_y)`` = (#agreeing signs) -
(#disagreeing signs), an estimate of ``dim * (1 - 2 * angle / pi)`` for random-hyperplane
codes. It is far coarser than int8 (32x smaller than fp32), so use a large oversample (e.g.
k * 20 or more, see ``tests/test_kernels.py``) and re-rank exactly with ``topk.rescore``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.core.extending import intrinsic

from .topk import _heap_replace_root, empty_heaps, merge_chunk_heaps, n_chunks

TILE_ROWS_BIN = 1024


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


@njit(cache=True, fastmath=True, parallel=True)
def _topk_scan_hamming(codes, qcodes, dim, chunk, tile, hs, hi):
    """hs[c, j], hi[c, j] <- top-k of { (dim - 2 * popcount(codes[r] ^ qcodes[j]), r) : r in chunk c }.

    Same chunk/tile structure and tie rule (strict ``>``, rows in increasing order) as the
    fp32 and int8 scans.
    """
    n, nw = codes.shape
    nq = qcodes.shape[0]
    for c in prange(hs.shape[0]):
        lo = c * chunk
        hi_row = min(n, lo + chunk)
        for r0 in range(lo, hi_row, tile):
            r1 = min(hi_row, r0 + tile)
            for j in range(nq):
                cs = hs[c, j]
                ci = hi[c, j]
                thr = cs[0]
                for r in range(r0, r1):
                    ham = 0
                    for w in range(nw):
                        ham += _popcount(codes[r, w] ^ qcodes[j, w])
                    s = np.int32(dim - 2 * ham)
                    if s > thr:
                        _heap_replace_root(cs, ci, s, np.int64(r))
                        thr = cs[0]


def pack_signs(x: np.ndarray) -> np.ndarray:
    """Sign codes of (n, dim) or (dim,) vectors: uint64 (n, ceil(dim / 64)) (or 1-d)."""
    x = np.asarray(x, dtype=np.float32)
    single = x.ndim == 1
    x2 = np.ascontiguousarray(x[None, :] if single else x)
    if x2.ndim != 2 or x2.shape[1] == 0:
        raise ValueError(f"pack_signs expects (n, dim) or (dim,) with dim >= 1, got shape {x.shape}")
    out = np.empty((x2.shape[0], -(-x2.shape[1] // 64)), np.uint64)
    _pack_signs(x2, out)
    return out[0] if single else out


def topk_hamming(codes: np.ndarray, queries: np.ndarray, dim: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows by ``dim - 2 * hamming`` against sign codes of the queries.

    codes: uint64 (n, words) from ``pack_signs``; queries: float (nq, dim) vectors.
    Returns (int32 similarities (nq, min(k, n)), int64 indices), best first, ties by index.
    """
    codes = np.ascontiguousarray(codes)
    if codes.dtype != np.uint64 or codes.ndim != 2:
        raise ValueError(f"codes must be uint64 (n, words) from pack_signs, got {codes.dtype} {codes.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    qcodes = pack_signs(np.atleast_2d(queries))
    if qcodes.shape[1] != codes.shape[1] or -(-dim // 64) != codes.shape[1]:
        raise ValueError(f"queries of dim {np.shape(queries)[-1]} do not match codes of {codes.shape[1]} words "
                         f"/ dim {dim}")
    n, nq = codes.shape[0], qcodes.shape[0]
    kk = min(k, n)
    if kk == 0 or nq == 0:
        return np.empty((nq, kk), np.int32), np.empty((nq, kk), np.int64)
    nch, chunk = n_chunks(n, TILE_ROWS_BIN)
    cs, ci = empty_heaps((nch, nq, kk), np.int32)
    _topk_scan_hamming(codes, qcodes, int(dim), chunk, TILE_ROWS_BIN, cs, ci)
    return merge_chunk_heaps(cs, ci, kk)

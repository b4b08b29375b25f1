"""GPU search (CuPy): the same contracts as ``topk.topk_dot`` and ``quantize.topk_int8``.

The corpus is uploaded once (``to_device``) and scanned in row blocks: one cuBLAS GEMM per
block gives (nq, rows) scores, ``argpartition`` keeps each block's k best, and the blocks'
survivors are merged. Results are ordered best first with ties broken by the smaller index,
like the CPU kernels. int8 codes
stay int8 on the device (a quarter of the memory) and are widened per block; their candidates
are re-ranked exactly on the CPU by ``topk.rescore``, so final scores equal the CPU path's.

CuPy is imported lazily; ``available()`` says whether a CUDA device can be used and why not.
"""

from __future__ import annotations

import numpy as np

# cap on the (nq, rows) score block, in elements (1 GiB of float32)
MAX_BLOCK_ELEMENTS = 1 << 28


def available() -> tuple[bool, str]:
    """(True, device name) when CuPy sees a CUDA device, else (False, the reason)."""
    try:
        import cupy as cp
    except ImportError:
        return False, "CuPy is not installed (pip install cupy-cuda12x or cupy-cuda13x)"
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, no device
        return False, f"no usable CUDA device ({e})"
    if n == 0:
        return False, "no CUDA device"
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return True, name


def to_device(array: np.ndarray):
    """Upload a C-contiguous corpus array (float32 vectors or int8 codes) to the current GPU."""
    import cupy as cp

    return cp.asarray(np.ascontiguousarray(array))


def _block_rows(nq: int, n: int) -> int:
    return max(1024, min(n, MAX_BLOCK_ELEMENTS // max(nq, 1)))


def _best_first(cp, s, i, k):
    """Sort candidates by (-score, index) and keep k: stable sort by index, then by score."""
    o = cp.argsort(i, axis=1, kind="stable")
    s, i = cp.take_along_axis(s, o, 1), cp.take_along_axis(i, o, 1)
    o = cp.argsort(-s, axis=1, kind="stable")  # equal scores keep index order
    return cp.take_along_axis(s, o, 1)[:, :k], cp.take_along_axis(i, o, 1)[:, :k]


def _select_k(cp, s, k: int):
    """Column indices of each row's k best scores, ties at the k-th place resolved to the smaller
    index: everything above the k-th score, then the first equal ones in index order."""
    kth = -cp.partition(-s, k - 1, axis=1)[:, k - 1 : k]
    above = s > kth
    equal = s == kth
    need = k - above.sum(axis=1, keepdims=True)
    keep = above | (equal & (cp.cumsum(equal, axis=1) <= need))
    return cp.nonzero(keep)[1].reshape(s.shape[0], k)


def _scan(corpus_dev, q_dev, k: int, widen):
    """Blocked GEMM + per-block selection + merge; returns device arrays (scores, rows)."""
    import cupy as cp

    n = corpus_dev.shape[0]
    nq = q_dev.shape[0]
    rows = _block_rows(nq, n)
    best_s = best_i = None
    for r0 in range(0, n, rows):
        blk = widen(corpus_dev[r0 : r0 + rows])
        s = q_dev @ blk.T  # (nq, m) on the GPU
        m = s.shape[1]
        part = _select_k(cp, s, k) if k < m else cp.broadcast_to(cp.arange(m, dtype=cp.int64), (nq, m))
        ps = cp.take_along_axis(s, part, 1)
        pi = part.astype(cp.int64) + r0
        if best_s is None:
            best_s, best_i = ps, pi
        else:
            best_s, best_i = cp.concatenate([best_s, ps], 1), cp.concatenate([best_i, pi], 1)
        if best_s.shape[1] > 4 * k:  # keep the merge buffer small
            best_s, best_i = _best_first(cp, best_s, best_i, k)
    return _best_first(cp, best_s, best_i, k)


def topk_dot_cuda(corpus_dev, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``queries @ corpus.T`` on the GPU (``topk.topk_dot``'s contract).

    Args:
        corpus_dev: (n, dim) float32 corpus on the device (``to_device``).
        queries: (nq, dim) float32, on the host.
        k: results per query; ``min(k, n)`` columns are returned.

    Returns:
        (scores float32 (nq, min(k, n)), rows int64), best first, ties broken by the smaller index.
    """
    import cupy as cp

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nq, n = queries.shape[0], corpus_dev.shape[0]
    kk = min(k, n)
    if kk == 0 or nq == 0:
        return np.empty((nq, kk), np.float32), np.empty((nq, kk), np.int64)
    s, i = _scan(corpus_dev, cp.asarray(queries), kk, lambda b: b)
    return cp.asnumpy(s).astype(np.float32), cp.asnumpy(i)


def topk_int8_cuda(codes_dev, queries: np.ndarray, scales: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidates by approximate score ``q . (codes * scales)`` on the GPU; rescore them exactly after.

    The scales are folded into the queries, so each block is only widened int8 -> float32.

    Args:
        codes_dev: (n, dim) int8 codes on the device (``to_device``).
        queries: (nq, dim) float32, on the host.
        scales: (dim,) the codes' scales.
        k: candidates per query; ``min(k, n)`` columns are returned.

    Returns:
        (approximate scores float32 (nq, min(k, n)), rows int64), best first, ties broken by the
        smaller index.
    """
    import cupy as cp

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nq, n = queries.shape[0], codes_dev.shape[0]
    kk = min(k, n)
    if kk == 0 or nq == 0:
        return np.empty((nq, kk), np.float32), np.empty((nq, kk), np.int64)
    folded = cp.asarray(queries * np.asarray(scales, np.float32)[None, :])
    s, i = _scan(codes_dev, folded, kk, lambda b: b.astype(cp.float32))
    return cp.asnumpy(s).astype(np.float32), cp.asnumpy(i)

"""int8 candidate search for many queries at once: blocked int8 GEMM through onnxruntime.

The int8 scan (``engine.kernels.quantize.topk_int8``) reads each code row once per query; this path
shares every code row across all queries, as the fp32 sgemm does, in integer arithmetic. Per block
of B corpus rows

    S = (codes_block + 128 - 128) @ qq^T        (B x dim uint8, zero point 128) x (dim x nq int8) -> int32

is one ``MatMulInteger`` in onnxruntime (MLAS: AVX-512 VNNI / AMX, AVX-VNNI or AVX2 u8 x s8 kernels,
NEON dot products on ARM), and the top-``m`` of each column go into per-query heaps
(``engine.kernels.topk.push_row_scores``): no (nq, n) matrix exists. The codes' bytes XOR 0x80 are
the uint8 operand (``c + 128``; the zero point 128 undoes it exactly), written into one reused
buffer per block by numpy on the calling thread, which leaves the cores to onnxruntime's GEMM.

Queries: ``w = q * scales`` folded as in the scan, then ``qq = rint(w * 63 / max|w|)`` as int8 (7
bits, ``U8S8_QMAX``), one scale per query, so each query ranks by ``sum_d qq_d * c_d`` exactly
(int32; no overflow below dim 260,000). 7 bits, not 8: the u8 x s8 kernels for AVX2 and for AVX-512
without VNNI (``vpmaddubsw``) add product pairs in saturating int16; with ``|qq| <= 63`` a pair is at
most 2 * 255 * 63 = 32,130 < 32,767, while 8-bit queries could saturate and silently change the
candidates. So the candidates are the same integer top-k on every CPU, and the same as the u8 x s8
scan's (same 7-bit queries). ``Index.search`` takes this path from ``gemm_min_queries()`` queries
on; ``onnxruntime`` is a core dependency, and its session is built once per process and thread count.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from engine import onnx_bytes as pb
from engine.kernels.quantize import U8S8_QMAX, fold_queries
from engine.kernels.topk import empty_heaps, push_row_scores, sort_heaps

__all__ = ["gemm_min_queries", "topk_int8_gemm"]

# chosen by measurement: bench/experiments/index_notes.md#gemm-threshold
#: From this many queries on, int8 candidates come from the blocked GEMM, per int8 ISA class where
#: measured; other classes 16 too (their GEMM kernels, VNNI and vpmaddubsw, sit between AVX2's and AMX's).
GEMM_MIN_QUERIES_BY_ISA = {"amx_int8": 10, "avx2": 16}
GEMM_MIN_QUERIES_DEFAULT = 16


@functools.cache
def gemm_min_queries() -> int:
    """The number of queries from which ``Index.search`` takes the GEMM on this CPU.

    Looked up in ``GEMM_MIN_QUERIES_BY_ISA`` on the first search that asks, and cached: reading
    the CPU's flags is not import-time work (macOS asks ``sysctl``).

    Returns:
        The threshold for this CPU's int8 ISA class (``engine.models.quantize.cpu_isa``).
    """
    from engine.models.quantize import cpu_isa

    return GEMM_MIN_QUERIES_BY_ISA.get(cpu_isa(), GEMM_MIN_QUERIES_DEFAULT)


# chosen by measurement: bench/experiments/index_notes.md#gemm-block-rows
#: Corpus rows per MatMulInteger call: as many as keep the block's int32 scores (rows x nq) within
#: ``BLOCK_SCORES`` and its uint8 codes within ``BLOCK_BYTES``, between ``BLOCK_ROWS`` and
#: ``MAX_BLOCK_ROWS``. Every block hands the cores from the XOR pass to onnxruntime's thread
#: pool (the GEMM) and back, so few queries want big blocks, and many queries want small ones
#: (their scores must stay in cache for the heaps).
BLOCK_ROWS = 4096
MAX_BLOCK_ROWS = 32768
BLOCK_SCORES = 1 << 22
BLOCK_BYTES = 1 << 24


def block_rows(nq: int, dim: int) -> int:
    """Corpus rows per GEMM call for ``nq`` queries of dimension ``dim`` (the rule above ``BLOCK_ROWS``)."""
    rows = min(MAX_BLOCK_ROWS, BLOCK_SCORES // max(nq, 1), BLOCK_BYTES // max(dim, 1))
    return max(BLOCK_ROWS, rows)


_sessions: dict[int | None, object] = {}
_lock = threading.Lock()


def _graph() -> bytes:
    """Y (m, n) int32 = MatMulInteger(A (m, k) uint8, B (k, n) int8, a_zero_point = 128)."""
    zp = pb.tensor("a_zp", np.array(128, np.uint8), pb.UINT8)
    return pb.model(
        [pb.node("MatMulInteger", ["A", "B", "a_zp"], ["Y"], "qgemm")],
        [pb.value_info("A", pb.UINT8, ("m", "k")), pb.value_info("B", pb.INT8, ("k", "n"))],
        [pb.value_info("Y", pb.INT32, ("m", "n"))],
        [zp],
        name="qgemm",
    )


def _session(threads: int | None):
    """The process's onnxruntime session of ``_graph`` for ``threads`` threads (built once)."""
    with _lock:
        sess = _sessions.get(threads)
        if sess is None:
            from engine.runtime import Session

            sess = _sessions[threads] = Session(_graph(), "cpu", threads)
        return sess


def quantize_queries(queries: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold the per-dimension scales into the queries and quantize each to 7-bit int8 with its own scale.

    ``fold_queries`` at ``U8S8_QMAX`` = 63, so no u8 x s8 kernel saturates (module docstring).

    Args:
        queries: float32 (nq, dim).
        scales: The codes' per-dimension scales, float32 (dim,).

    Returns:
        ``(qq int8 (nq, dim), t float64 (nq,))`` with ``q . dequant(c) ~= t * (qq . c)``; a zero
        query gets t = 1 and all-zero codes.
    """
    qq, t = fold_queries(queries, scales, U8S8_QMAX)
    return qq.astype(np.int8), t


def topk_int8_gemm(
    codes: np.ndarray, queries: np.ndarray, scales: np.ndarray, k: int, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows by the approximate score ``queries . dequantize(codes)`` for every query.

    Ranks by the exact integer score ``qq . codes`` of the 7-bit queries (``quantize_queries``).

    Args:
        codes: int8 (n, dim), C-contiguous.
        queries: float32 (nq, dim).
        scales: The codes' per-dimension scales, float32 (dim,).
        k: Candidates per query.
        threads: onnxruntime intra-op threads (None: its default).

    Returns:
        ``(approximate scores float32 (nq, min(k, n)), row indices int64)``, best first by the
        integer score, ties by smaller index; re-rank them with ``engine.kernels.topk.rescore``.
    """
    n, d = codes.shape
    nq = queries.shape[0]
    kk = min(k, n)
    if kk == 0 or nq == 0:
        return np.empty((nq, kk), np.float32), np.empty((nq, kk), np.int64)
    qq, t = quantize_queries(queries, scales)
    b = np.ascontiguousarray(qq.T)  # (dim, nq) int8
    sess = _session(threads)
    hs, hi = empty_heaps((nq, kk), np.int32)
    thr = hs[:, 0].copy()
    raw = codes.view(np.uint8)
    rows = block_rows(nq, d)
    buf = np.empty((min(rows, n), d), np.uint8)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        a = buf[: r1 - r0]
        np.bitwise_xor(raw[r0:r1], 0x80, out=a)  # c + 128 as uint8
        push_row_scores(sess.run({"A": a, "B": b}), r0, hs, hi, thr)
    sort_heaps(hs, hi)
    return (hs.astype(np.float64) * t[:, None]).astype(np.float32), hi

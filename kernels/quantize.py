"""Symmetric per-dimension int8 quantization and the int8 top-k scan.

Quantization (scale calibrated once, then fixed)::

    scale_j = max_i |x_ij| / 127            (or the p-th percentile of |x_.j| with clipping)
    code_ij = clip(rint(x_ij / scale_j), -127, 127)     round half to even, saturating
    x_ij   ~= code_ij * scale_j

-128 is never produced, so the code range is symmetric and negation cannot overflow. Values
beyond the calibrated range saturate at +-127 (they never wrap). A dimension that is zero in
the whole calibration sample gets ``scale_j = 1/127`` (the range of a unit vector's coordinate)
so that later non-zero values there still quantize sensibly.

Scan. The approximate score of a corpus row x against a query y is ``sum_j code_j * scale_j * y_j``.
The scales are folded into the query, ``w_j = scale_j * y_j``, and w is quantized with one scalar
per query, ``qw_j = rint(w_j / t)`` with ``t = max_j |w_j| / qmax`` (``fold_queries``); ranking
needs only the integer sums ``sum_j code_j * qw_j`` (t > 0 is constant per query). Two kernels
compute them: int8 x int16 -> int32 on any CPU (``_topk_scan_i8``, 15-bit queries), and a u8 x s8
scan on x86 with AVX2 (``_topk_scan_u8s8``, ``vpmaddubsw``, 7-bit queries; ``HAS_U8S8``, the
default there). ``tests/kernels/test_quantize.py`` checks both against integer oracles and the
instructions they compile to.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.extending import intrinsic

from .topk import (
    TILE_ROWS,
    _heap_replace_root,
    empty_heaps,
    merge_chunk_heaps,
    n_chunks,
)

QMAX = 127
#: Query code range of the u8 x s8 scan: (c + 128) * q summed in pairs must fit int16
#: (``vpmaddubsw`` saturates): 255 * 63 * 2 = 32,130 <= 32,767. 7-bit queries keep recall@10
#: after exact rescoring as 15-bit ones do (chosen by measurement: bench/experiments/models_notes.md#kernels).
U8S8_QMAX = 63


def _host_has_avx2() -> bool:
    """Whether the code Numba generates here may use AVX2 (LLVM's view of the host CPU)."""
    try:
        import llvmlite.binding as ll

        return bool(ll.get_host_cpu_features().get("avx2", False))
    except Exception:  # no feature map on this platform
        return False


#: The int8 scan uses ``vpmaddubsw`` (AVX2) when the host has it, the int8 x int16 loop otherwise.
HAS_U8S8 = _host_has_avx2()
#: Rows per tile of the int8 scan (256 rows x 384 B = 96 KiB, L2-resident).
TILE_ROWS_I8 = 4 * TILE_ROWS


@njit(cache=True, fastmath=True, parallel=True)
def _max_abs_cols(x, out):
    """out_j = max_i |x_ij|  (column-wise maximum magnitude)."""
    n, d = x.shape
    for j in prange(d):
        out[j] = 0.0
    # row-major sweep per thread block, then a serial reduction over blocks
    nb = 16
    part = np.zeros((nb, d), dtype=out.dtype)
    step = -(-n // nb)
    for b in prange(nb):
        for i in range(b * step, min(n, (b + 1) * step)):
            for j in range(d):
                v = abs(x[i, j])
                part[b, j] = max(part[b, j], v)
    for b in range(nb):
        for j in range(d):
            out[j] = max(out[j], part[b, j])


@njit(cache=True, fastmath=True, parallel=True)
def _quantize_i8(x, inv_scale, out):
    """out_ij = clip(rint(x_ij * inv_scale_j), -127, 127) as int8 (saturating, never wraps)."""
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            v = np.rint(x[i, j] * inv_scale[j])
            v = min(max(v, -127.0), 127.0)
            out[i, j] = np.int8(v)


@njit(cache=True, fastmath=True, parallel=True)
def _dequantize_i8(codes, scale, out):
    """out_ij = codes_ij * scale_j."""
    n, d = codes.shape
    for i in prange(n):
        for j in range(d):
            out[i, j] = np.float32(codes[i, j]) * scale[j]


@njit(cache=True, fastmath=True)
def _fold_queries(q, scale, qmax, out, t_out):
    """w = q_j * scale_j;  t = max_j |w_j| / qmax;  out_j = rint(w_j / t) as int16.

    t_out[i] = t, so that  q_i . dequant(x) ~= t * sum_j out_ij * code_j.  A zero query gets
    t = 1 and all-zero codes.
    """
    nq, d = q.shape
    for i in range(nq):
        m = 0.0
        for j in range(d):
            w = abs(np.float64(q[i, j]) * scale[j])
            m = max(m, w)
        t = m / qmax if m > 0.0 else 1.0
        inv = 1.0 / t
        for j in range(d):
            v = np.rint(np.float64(q[i, j]) * scale[j] * inv)
            v = min(max(v, -qmax), qmax)
            out[i, j] = np.int16(v)
        t_out[i] = t


@njit(cache=True, fastmath=True)
def _dot_i8_i16(a, b):
    """sum_j int32(a_j) * int32(b_j) with int32 accumulation (a int8, b int16).

    Numba types int32 * int32 as int64; the explicit int32 casts keep the whole reduction in
    32 bits, so LLVM vectorizes it to 16-bit multiply-adds (vpmovsxbw + vpmaddwd), not to
    64-bit products (vpmovsxbq + vpmuldq).
    """
    acc = np.int32(0)
    for t in range(a.shape[0]):
        acc = np.int32(acc + np.int32(a[t]) * np.int32(b[t]))
    return acc


@njit(cache=True, fastmath=True, parallel=True)
def _topk_scan_i8(codes, qq, chunk, tile, hs, hi):
    """Fused int8 scan: hs[c, j], hi[c, j] <- top-k of { (s(r, j), r) : r in chunk c }.

    s(r, j) = sum_d int32(codes[r, d]) * int32(qq[j, d])    (int8 x int16 -> int32)

    Same structure and tie rule as ``topk._topk_scan_f32`` (chunks in parallel, tiles of rows,
    rows in increasing order per heap, strict ``>`` keeps the smaller index on ties).
    """
    n, d = codes.shape
    nq = qq.shape[0]
    nchunks = hs.shape[0]
    for c in prange(nchunks):
        lo = c * chunk
        hi_row = min(n, lo + chunk)
        for r0 in range(lo, hi_row, tile):
            r1 = min(hi_row, r0 + tile)
            for j in range(nq):
                cs = hs[c, j]
                ci = hi[c, j]
                thr = cs[0]
                for r in range(r0, r1):
                    # _dot_i8_i16(codes[r], qq[j]) written inline (no per-row slice structs).
                    # No multi-query register blocking here: with 4 accumulators LLVM widens
                    # to int32 and uses vpmulld instead of vpmaddwd, which is slower.
                    acc = np.int32(0)
                    for t in range(d):
                        acc = np.int32(acc + np.int32(codes[r, t]) * np.int32(qq[j, t]))
                    if acc > thr:
                        _heap_replace_root(cs, ci, acc, np.int64(r))
                        thr = cs[0]


@intrinsic
def _dot_u8s8(typingctx, codes, r, q):
    """sum_{k < 32 floor(d / 32)} (codes[r, k] + 128) * q[k] as int32 (x86 AVX2 only).

    Per 32 bytes: XOR 0x80 turns the int8 codes into u8 ``c + 128``; ``vpmaddubsw`` multiplies
    them by the int8 query codes and adds pairs into int16 (|q| <= U8S8_QMAX: no saturation);
    ``vpmaddwd`` by ones adds pairs into int32 lanes; eight lanes are summed at the end.
    codes: C-contiguous int8 (n, d); q: int8 (d,) contiguous.
    """
    sig = types.int32(codes, r, q)

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        codes_t, _, q_t = signature.args
        ca = context.make_array(codes_t)(context, builder, args[0])
        qa = context.make_array(q_t)(context, builder, args[2])
        d = builder.extract_value(ca.shape, 1)
        stride0 = builder.extract_value(ca.strides, 0)
        i8, i16, i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
        v32i8, v16i16, v8i32 = ir.VectorType(i8, 32), ir.VectorType(i16, 16), ir.VectorType(i32, 8)
        row = builder.gep(builder.bitcast(ca.data, i8.as_pointer()), [builder.mul(args[1], stride0)])
        qp = builder.bitcast(qa.data, i8.as_pointer())
        ubsw = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v16i16, [v32i8, v32i8]), "llvm.x86.avx2.pmadd.ub.sw"
        )
        wd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]), "llvm.x86.avx2.pmadd.wd"
        )
        acc = cgutils.alloca_once_value(builder, ir.Constant(v8i32, [0] * 8))
        ones = ir.Constant(v16i16, [1] * 16)
        flip = ir.Constant(v32i8, [-128] * 32)
        with cgutils.for_range(builder, builder.udiv(d, ir.Constant(d.type, 32))) as loop:
            off = builder.mul(loop.index, ir.Constant(loop.index.type, 32))
            a = builder.load(builder.bitcast(builder.gep(row, [off]), v32i8.as_pointer()), align=1)
            b = builder.load(builder.bitcast(builder.gep(qp, [off]), v32i8.as_pointer()), align=1)
            pairs = builder.call(wd, [builder.call(ubsw, [builder.xor(a, flip), b]), ones])
            builder.store(builder.add(builder.load(acc), pairs), acc)
        v = builder.load(acc)
        total = ir.Constant(i32, 0)
        for lane in range(8):
            total = builder.add(total, builder.extract_element(v, ir.Constant(i32, lane)))
        return total

    return sig, codegen


@njit(cache=True, fastmath=True, parallel=True)
def _topk_scan_u8s8(codes, q8, chunk, tile, hs, hi):
    """The fused int8 scan on AVX2 ``vpmaddubsw``: like ``_topk_scan_i8`` with

    s(r, j) = sum_d (int32(codes[r, d]) + 128) * int32(q8[j, d])
            = sum_d codes[r, d] * q8[j, d] + 128 * sum_d q8[j, d]

    (the second term is the same for every row of a query, so the ranking is that of the plain
    dot product; ``topk_int8`` subtracts it from the returned scores). q8: int8 with
    |q8| <= U8S8_QMAX. Dimensions past the last multiple of 32 are added in scalar code.
    A kernel of its own rather than a branch in ``_topk_scan_i8``: a kernel holding the AVX2
    intrinsic cannot be compiled on other CPUs, taken or not, so it is compiled only where used.
    """
    n, d = codes.shape
    nq = q8.shape[0]
    d32 = d - d % 32
    for c in prange(hs.shape[0]):
        lo = c * chunk
        hi_row = min(n, lo + chunk)
        for r0 in range(lo, hi_row, tile):
            r1 = min(hi_row, r0 + tile)
            for j in range(nq):
                cs = hs[c, j]
                ci = hi[c, j]
                thr = cs[0]
                qj = q8[j]
                for r in range(r0, r1):
                    acc = _dot_u8s8(codes, r, qj)
                    for t in range(d32, d):
                        acc = np.int32(acc + (np.int32(codes[r, t]) + 128) * np.int32(qj[t]))
                    if acc > thr:
                        _heap_replace_root(cs, ci, acc, np.int64(r))
                        thr = cs[0]


# ----------------------------------------------------------------------------- wrappers


def calibrate_scales(x: np.ndarray, *, percentile: float = 100.0) -> np.ndarray:
    """Per-dimension scales ``scale_j = m_j / 127``, m_j = max |x_.j| (percentile=100).

    With ``percentile < 100``, m_j is that percentile of |x_.j| instead: the rare larger values then
    saturate at +-127, trading their error for finer steps everywhere else. Dimensions with m_j == 0
    get scale 1/127.

    Args:
        x: a (n, dim) or (dim,) sample of the vectors to quantize.
        percentile: in (0, 100].

    Returns:
        float32 (dim,) scales.

    Raises:
        ValueError: an empty or not 2-d sample, or a percentile outside (0, 100].
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"calibrate_scales needs a non-empty (n, dim) sample, got shape {x.shape}")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if percentile == 100.0:
        m = np.empty(x.shape[1], dtype=np.float32)
        _max_abs_cols(x, m)
    else:
        m = np.percentile(np.abs(x), percentile, axis=0).astype(np.float32)
    m[m == 0] = 1.0
    return (m / np.float32(QMAX)).astype(np.float32)


def _as_scales(scales: np.ndarray, dim: int) -> np.ndarray:
    scales = np.ascontiguousarray(scales, dtype=np.float32)
    if scales.shape != (dim,):
        raise ValueError(f"scales must have shape ({dim},), got {scales.shape}")
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise ValueError("scales must be finite and > 0; recalibrate them with calibrate_scales()")
    return scales


def quantize(x: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """int8 codes ``clip(rint(x / scales), -127, 127)`` for a (n, dim) or (dim,) float array.

    Raises:
        ValueError: ``x`` is not (n, dim) or (dim,), or the scales are not (dim,), finite and > 0.
    """
    x = np.asarray(x, dtype=np.float32)
    single = x.ndim == 1
    x2 = np.ascontiguousarray(x[None, :] if single else x)
    if x2.ndim != 2:
        raise ValueError(f"quantize expects (n, dim) or (dim,), got shape {x.shape}")
    scales = _as_scales(scales, x2.shape[1])
    out = np.empty(x2.shape, dtype=np.int8)
    _quantize_i8(x2, (1.0 / scales.astype(np.float64)).astype(np.float32), out)
    return out[0] if single else out


def dequantize(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 ``codes * scales`` for (n, dim) or (dim,) int8 codes.

    Raises:
        ValueError: the codes are not int8, or the scales are not (dim,), finite and > 0.
    """
    codes = np.asarray(codes)
    if codes.dtype != np.int8:
        raise ValueError(f"dequantize expects int8 codes, got {codes.dtype}")
    single = codes.ndim == 1
    c2 = np.ascontiguousarray(codes[None, :] if single else codes)
    scales = _as_scales(scales, c2.shape[1])
    out = np.empty(c2.shape, dtype=np.float32)
    _dequantize_i8(c2, scales, out)
    return out[0] if single else out


def query_qmax(dim: int) -> int:
    """Largest int16 query code range with no int32 overflow: 127 * qmax * dim < 2**31.

    qmax = 32767 up to dim 516, 16512 at dim 1024. The query keeps 15 bits instead of 7, so its
    quantization error is negligible next to the corpus codes' error, at no cost: the int8 codes
    must be widened to 16 bits anyway for the multiply-add instructions.
    """
    return int(min(32767, (2**31 - 1) // (QMAX * max(dim, 1))))


def fold_queries(queries: np.ndarray, scales: np.ndarray, qmax: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fold the scales into the queries and quantize them: ``w = q * scales``, codes ``rint(w / t)``.

    Args:
        queries: (nq, dim) float32.
        scales: (dim,) corpus scales (``calibrate_scales``).
        qmax: the codes' range [-qmax, qmax]; default ``query_qmax(dim)``, ``U8S8_QMAX`` for the
            u8 x s8 scan.

    Returns:
        (codes int16 (nq, dim), t float64 (nq,)), so that ``queries[i] . dequantize(x)`` ~=
        ``t[i] * sum_j codes[i, j] * code_j`` (a zero query gets t = 1 and zero codes).
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nq, d = queries.shape
    scales = _as_scales(scales, d)
    qq = np.empty((nq, d), dtype=np.int16)
    t = np.empty(nq, dtype=np.float64)
    _fold_queries(queries, scales.astype(np.float64), float(query_qmax(d) if qmax is None else qmax), qq, t)
    return qq, t


def topk_int8(
    codes: np.ndarray,
    queries: np.ndarray,
    scales: np.ndarray,
    k: int,
    *,
    method: str = "auto",
    qmax: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by approximate score ``queries . dequantize(codes)`` with a fused int8 scan.

    Use ``topk.rescore`` on the indices (with k * oversample candidates) to get exact scores.

    Args:
        codes: (n, dim) int8 codes from ``quantize``.
        queries: (nq, dim) float32.
        scales: (dim,) the codes' scales.
        k: results per query; ``min(k, n)`` columns are returned.
        method: "u8s8" (AVX2 ``vpmaddubsw``, queries quantized to 7 bits, |q| <= U8S8_QMAX), "i16"
            (int8 x int16, any CPU, queries at 15 bits unless ``qmax`` says fewer) or "auto" (u8s8
            where ``HAS_U8S8``).
        qmax: the query codes' range; ``qmax=U8S8_QMAX`` makes every method rank by the same integer
            scores as the blocked GEMM (``engine.index.qgemm``), so the candidates do not depend on
            the method.

    Returns:
        (approximate scores float32 (nq, min(k, n)), indices int64), best first by the integer score,
        ties broken by the smaller index.

    Raises:
        ValueError: an unknown method, u8s8 without AVX2 or with qmax > U8S8_QMAX, a qmax outside
            [1, 32767], codes that are not int8, shapes that do not match, or k < 0.
    """
    if method == "auto":
        method = "u8s8" if HAS_U8S8 else "i16"
    if method not in ("u8s8", "i16"):
        raise ValueError(f"method must be 'auto', 'u8s8' or 'i16', got {method!r}")
    if method == "u8s8" and not HAS_U8S8:
        raise ValueError("method='u8s8' needs AVX2 (x86); use 'i16' or 'auto'")
    if qmax is not None and (
        isinstance(qmax, bool) or not (isinstance(qmax, (int, np.integer)) and 1 <= qmax <= 32767)
    ):
        raise ValueError(f"qmax must be an integer in [1, 32767], got {qmax!r}")
    if method == "u8s8" and qmax is not None and qmax > U8S8_QMAX:
        raise ValueError(f"method='u8s8' takes queries of at most {U8S8_QMAX} (7 bits), got qmax={qmax}")
    codes = np.asarray(codes)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if codes.ndim != 2 or queries.ndim != 2 or codes.shape[1] != queries.shape[1]:
        raise ValueError(
            f"expected codes (n, dim) and queries (nq, dim) of equal dim, got {codes.shape} and {queries.shape}"
        )
    if codes.dtype != np.int8:
        raise ValueError(f"codes must be int8, got {codes.dtype}; build them with quantize()")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if not codes.flags.c_contiguous:
        codes = np.ascontiguousarray(codes)
    n, nq = codes.shape[0], queries.shape[0]
    kk = min(k, n)
    if kk == 0 or nq == 0:
        return np.empty((nq, kk), np.float32), np.empty((nq, kk), np.int64)
    nch, chunk = n_chunks(n, TILE_ROWS_I8)
    cs, ci = empty_heaps((nch, nq, kk), np.int32)
    if method == "u8s8":
        qq, t = fold_queries(queries, scales, qmax or U8S8_QMAX)
        q8 = qq.astype(np.int8)
        _topk_scan_u8s8(codes, q8, chunk, TILE_ROWS_I8, cs, ci)
        shift = 128 * q8.sum(axis=1, dtype=np.int64)  # the per-query constant of the u8 codes
    else:
        qq, t = fold_queries(queries, scales, min(qmax, query_qmax(queries.shape[1])) if qmax else None)
        _topk_scan_i8(codes, qq, chunk, TILE_ROWS_I8, cs, ci)
        shift = np.zeros(nq, np.int64)
    s, i = merge_chunk_heaps(cs, ci, kk)
    return ((s.astype(np.float64) - shift[:, None]) * t[:, None]).astype(np.float32), i

"""Output quantization of embeddings: sentence-transformers' ``quantize_embeddings``.

Same name, arguments and results as ``sentence_transformers.quantize_embeddings`` (5.x), so code
written against it runs unchanged::

    >>> from engine import Embedder, quantize_embeddings
    >>> emb = Embedder("all-MiniLM-L6-v2").encode(texts)            # (n, 384) float32
    >>> quantize_embeddings(emb, "ubinary").shape                   # (n, 48) uint8
    >>> quantize_embeddings(emb, "int8", calibration_embeddings=sample).shape   # (n, 384) int8

Formulas (x: (n, dim) float embeddings):

- ``float32``: ``x.astype(float32)`` (a copy).
- ``uint8`` / ``int8``: per-dimension ranges ``lo_j, hi_j`` (from ``ranges`` (2, dim), else the
  min/max of ``calibration_embeddings``, else of ``x`` itself), ``step_j = (hi_j - lo_j) / 255``
  (1 where that is 0), ``u_ij = clip(floor((x_ij - lo_j) / step_j), 0, 255)``; uint8 returns u,
  int8 returns ``u - 128``, computed with sentence-transformers' own numpy expression and dtypes.
- ``ubinary``: ``packbits(x > 0)`` along the last axis, big-endian bit order (the first dimension
  is the most significant bit of byte 0), zero-padded to ``ceil(dim / 8)`` bytes: (n, ceil(dim/8))
  uint8. 0 and -0.0 give bit 0. ``binary``: the same bytes minus 128 as int8 (= ``byte ^ 0x80``).

This is sentence-transformers' *asymmetric* 8-bit scheme. ``engine.Index``'s int8 storage uses its
own symmetric per-dimension scale (``engine.kernels.quantize``), chosen for its int8 x int16 scan;
the two are different codes and are not interchangeable.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import InputError
from .precisions import OUTPUT_PRECISIONS as PRECISIONS

__all__ = ["PRECISIONS", "quantize_embeddings"]

logger = logging.getLogger(__name__)


def quantize_embeddings(
    embeddings,
    precision: str,
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Quantize float embeddings to ``precision``, exactly as sentence-transformers does.

    Args:
        embeddings: (n, dim) float array (numpy, a list of vectors, or a CPU/GPU torch tensor), or
            one (dim,) vector, which gives a 1-d result. NaN is refused.
        precision: ``"float32"``, ``"int8"``, ``"uint8"``, ``"binary"`` or ``"ubinary"``.
        ranges: int8/uint8 only: (2, dim) per-dimension [min; max] rows, finite, min <= max.
        calibration_embeddings: int8/uint8 only: (m, dim) finite float embeddings whose per-dimension
            min/max give the ranges when ``ranges`` is None. Without either, the ranges come from
            ``embeddings`` itself (a warning below 100 rows, as in sentence-transformers), which makes
            the codes depend on the batch: calibrate on a sample and reuse its ranges instead.

    Returns:
        float32 (n, dim); int8 or uint8 (n, dim); binary int8 or ubinary uint8 (n, ceil(dim / 8)).

    Differences from sentence-transformers, all on inputs it mishandles: NaN, non-float input
    (e.g. int32), non-finite or inverted ranges, ``ranges`` together with ``calibration_embeddings``
    (it silently ignores the latter), and a 1-d vector without ranges (it would calibrate over the
    vector's own components) are errors here; a 1-d vector with ``binary``/``ubinary`` and an empty
    (0, dim) batch give results here (it raises).

    >>> quantize_embeddings(np.array([[0.5, -1.0, 0.0, 2.0]]), "ubinary")
    array([[144]], dtype=uint8)
    """
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}; got {precision!r}")
    x = _embeddings_array(embeddings)
    single = x.ndim == 1
    x2 = x[None, :] if single else x
    if precision == "float32":
        out: np.ndarray = x2.astype(np.float32)
    elif precision in ("int8", "uint8"):
        out = _scalar_quantize(x2, precision, ranges, calibration_embeddings, single)
    else:
        # numpy's packbits gives sentence-transformers' bytes as they are (and is the faster of the two);
        # kernels.binary.pack_signs would need a bit-order reversal and casts float64 to float32,
        # which turns tiny positive values into 0
        out = np.packbits(x2 > 0, axis=-1)  # (n, ceil(dim / 8)) uint8, zero-padded, big-endian bits
        if precision == "binary":
            out = np.bitwise_xor(out, np.uint8(0x80), out=out).view(np.int8)  # byte - 128
    return out[0] if single else out


def _scalar_quantize(x, precision, ranges, calibration, single):
    """sentence-transformers' uint8/int8 buckets: floor((x - lo) / ((hi - lo) / 255)) clipped to [0, 255]."""
    dim = x.shape[1]
    if ranges is not None and calibration is not None:
        raise InputError(
            "pass either ranges= or calibration_embeddings=, not both (ranges would win and the "
            "calibration embeddings would be ignored)"
        )
    if ranges is not None:
        ranges = _ranges_array(ranges, dim)
    elif calibration is not None:
        cal = _embeddings_array(calibration, "calibration_embeddings", finite=True)
        if cal.ndim != 2 or cal.shape[1] != dim or cal.shape[0] == 0:
            raise InputError(
                f"calibration_embeddings must be a non-empty (m, {dim}) array like the embeddings, "
                f"got shape {cal.shape}"
            )
        ranges = np.vstack((np.min(cal, axis=0), np.max(cal, axis=0)))
    else:
        if single:
            raise InputError(
                f"{precision} quantization of a single 1-d vector needs per-dimension ranges: pass "
                "ranges= (2, dim) or calibration_embeddings= (m, dim) computed on a sample of embeddings"
            )
        if x.shape[0] == 0:
            raise InputError(
                f"no embeddings to calibrate {precision} ranges from (0 rows): pass ranges= or calibration_embeddings="
            )
        if x.shape[0] < 100:
            logger.warning(
                "computing %s quantization ranges from only %d embedding(s); pass ranges= or "
                "calibration_embeddings= computed on more embeddings for stable codes",
                precision,
                x.shape[0],
            )
        ranges = np.vstack((np.min(x, axis=0), np.max(x, axis=0)))
    # sentence-transformers' expression, term for term (same dtype promotion, same rounding)
    starts = ranges[0, :]
    steps = (ranges[1, :] - ranges[0, :]) / 255
    steps = np.where(steps == 0, 1, steps)
    q_vals = np.clip(np.floor((x - starts) / steps), 0, 255)
    if precision == "uint8":
        return q_vals.astype(np.uint8)
    return (q_vals - 128).astype(np.int8)


def _embeddings_array(value, name: str = "embeddings", finite: bool = False) -> np.ndarray:
    """``value`` as a float numpy array of shape (n, dim) or (dim,), with dim >= 1 and no NaN."""
    if value is None:
        raise InputError(f"{name} is None; pass a (n, dim) float array")
    value = _to_numpy(value)
    if isinstance(value, (list, tuple)):
        value = [_to_numpy(v) for v in value]
    try:
        arr = np.asarray(value)
    except ValueError as e:  # ragged rows
        raise InputError(
            f"{name} could not be read as a (n, dim) array ({e}); give every vector the same length"
        ) from None
    if arr.dtype in (np.int8, np.uint8):
        raise InputError(
            f"{name} are {arr.dtype}, i.e. already quantized; pass the float embeddings (e.g. from encode())"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(
            f"{name} must be a float array (float16/32/64), got dtype {arr.dtype}; e.g. .astype(np.float32)"
        )
    if arr.ndim not in (1, 2) or arr.shape[-1] == 0:
        raise InputError(f"{name} must have shape (n, dim) or (dim,) with dim >= 1, got {arr.shape}")
    if arr.size:
        lo = arr.min()  # propagates NaN; one pass without a temporary
        if np.isnan(lo) or (finite and not (np.isfinite(lo) and np.isfinite(arr.max()))):
            bad = np.argwhere(~np.isfinite(arr) if finite else np.isnan(arr))[0]
            what = "NaN or inf" if finite else "NaN"
            raise InputError(
                f"{name} contain {what} (first at index {tuple(int(i) for i in bad)}); "
                "drop or fix those vectors before quantizing"
            )
    return arr


def _ranges_array(ranges, dim: int) -> np.ndarray:
    r = np.asarray(_to_numpy(ranges))
    if r.dtype == object or not (np.issubdtype(r.dtype, np.floating) or np.issubdtype(r.dtype, np.integer)):
        raise InputError(f"ranges must be a numeric (2, dim) array of [min; max] rows, got dtype {r.dtype}")
    if r.shape != (2, dim):
        raise InputError(
            f"ranges must have shape (2, {dim}) (row 0: per-dimension minimum, row 1: maximum), got {r.shape}; "
            "e.g. np.vstack((sample.min(axis=0), sample.max(axis=0)))"
        )
    if not np.isfinite(r).all():
        raise InputError("ranges contain NaN or inf; compute them from finite embeddings")
    bad = np.flatnonzero(r[1] < r[0])
    if bad.size:
        raise InputError(
            f"ranges[1] (maximum) is below ranges[0] (minimum) in {bad.size} dimension(s), first {int(bad[0])}; "
            "row 0 must hold the minima and row 1 the maxima"
        )
    return r


def _to_numpy(value):
    """A torch tensor (any device) as numpy, without importing torch; anything else unchanged."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value

"""Pooling and normalization kernels (row-wise, float32)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, fastmath=True)
def _l2_normalize_inplace(x):
    """x_i <- x_i / ||x_i||_2 for each row i; a row whose norm is 0 stays 0 (never NaN).

    The norm is accumulated in float64 so that 768-d rows of large values do not lose bits.
    """
    n, d = x.shape
    for i in range(n):
        s = 0.0
        for j in range(d):
            v = np.float64(x[i, j])
            s += v * v
        if s > 0.0:
            inv = np.float32(1.0 / np.sqrt(s))
            for j in range(d):
                x[i, j] *= inv


def l2_normalize(x: np.ndarray, *, copy: bool = True) -> np.ndarray:
    """The rows of a 2-d float32 array scaled to unit L2 norm (zero rows stay zero).

    Args:
        x: (n, dim) array (converted to float32).
        copy: False normalizes ``x`` in place; it must then be float32 and C-contiguous.

    Raises:
        ValueError: ``x`` is not 2-d, or ``copy=False`` and ``x`` needs a copy (numpy's error).
    """
    out = np.array(x, dtype=np.float32, copy=copy, order="C")
    if out.ndim != 2:
        raise ValueError(f"l2_normalize expects a 2-d array (n, dim), got shape {out.shape}")
    _l2_normalize_inplace(out)
    return out


def truncate_normalize(x: np.ndarray, dim: int) -> np.ndarray:
    """Matryoshka truncation: keep the first ``dim`` components of each row, then re-normalize.

    y_i = x_i[:dim] / ||x_i[:dim]||_2   (zero rows stay zero)

    Raises:
        ValueError: ``x`` is not 2-d, or ``dim`` is not in [1, x.shape[1]].
    """
    if x.ndim != 2:
        raise ValueError(f"truncate_normalize expects a 2-d array (n, dim), got shape {x.shape}")
    if not 1 <= dim <= x.shape[1]:
        raise ValueError(f"truncate_dim must be in [1, {x.shape[1]}], got {dim}")
    out = np.ascontiguousarray(x[:, :dim], dtype=np.float32).copy()
    _l2_normalize_inplace(out)
    return out


@njit(cache=True, fastmath=True, nogil=True)  # nogil: the embedder pools on several threads
def _mean_pool(hidden, mask, out):
    """out_b = sum_t mask_bt * h_bt / max(sum_t mask_bt, 1e-9)   (sentence-transformers' mean pooling)."""
    b, t, d = hidden.shape
    for i in range(b):
        cnt = 0.0
        for j in range(d):
            out[i, j] = 0.0
        for k in range(t):
            if mask[i, k] != 0:
                cnt += 1.0
                for j in range(d):
                    out[i, j] += hidden[i, k, j]
        inv = np.float32(1.0 / max(cnt, 1e-9))
        for j in range(d):
            out[i, j] *= inv


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of token embeddings over the attention mask: (batch, seq, dim) x (batch, seq) -> (batch, dim)."""
    hidden = np.ascontiguousarray(hidden, dtype=np.float32)
    mask = np.ascontiguousarray(mask, dtype=np.int64)
    out = np.empty((hidden.shape[0], hidden.shape[2]), dtype=np.float32)
    _mean_pool(hidden, mask, out)
    return out

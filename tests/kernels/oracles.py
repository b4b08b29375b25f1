"""Numpy oracles and data shared by the kernel tests (import as ``tests.kernels.oracles``)."""

from __future__ import annotations

import numpy as np


def oracle_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-first top-k per row of a (nq, n) score matrix: score desc, then index asc."""
    nq, n = scores.shape
    kk = min(k, n)
    idx = np.empty((nq, kk), np.int64)
    for j in range(nq):
        order = np.lexsort((np.arange(n), -scores[j]))  # last key primary
        idx[j] = order[:kk]
    return np.take_along_axis(scores, idx, axis=1), idx


def int_data(rng, shape, lo=-3, hi=3):
    """Small-integer float32 data: every dot product is exact in float32, ties are common."""
    return rng.integers(lo, hi + 1, size=shape).astype(np.float32)


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng, n, d, centers=50, spread=0.35):
    c = rng.standard_normal((centers, d)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + spread * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found, truth)]))

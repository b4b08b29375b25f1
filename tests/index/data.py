"""Vectors and numpy oracles shared by the index tests (import as ``tests.index.data``)."""

from __future__ import annotations

import numpy as np

from engine.kernels.normalize import l2_normalize


def clustered(n, d, nq, seed=0):
    """Unit vectors around 50 centres, queries near corpus points (search_bench.py's data, small)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, d)).astype(np.float32)
    x = l2_normalize(centres[rng.integers(0, 50, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32))
    q = l2_normalize(x[rng.integers(0, n, nq)] + 0.1 * rng.standard_normal((nq, d)).astype(np.float32))
    return x, q


def unit_rows(rows, d, seed=0):
    """``rows`` random unit vectors of dimension ``d``, float32."""
    x = np.random.default_rng(seed).standard_normal((rows, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def dot_oracle(x, q, k):
    """Exact top-k by dot product in float64: (scores, rows), best first, ties by smaller row."""
    s = q.astype(np.float64) @ x.T.astype(np.float64)
    i = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, i, 1), i


def exact(x, q, k):
    """The rows of the exact top-k by dot product (``dot_oracle``'s)."""
    return dot_oracle(x, q, k)[1]


def recall(found, truth):
    """Mean fraction of each row of ``truth`` found in the same row of ``found``."""
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(found, truth)]))

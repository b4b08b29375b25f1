"""kernels/normalize.py against numpy: L2 normalization, Matryoshka truncation and mean pooling, degenerate rows
included (all zeros, one non-zero, duplicates, values whose squares overflow float32)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.kernels.normalize import l2_normalize, mean_pool, truncate_normalize


def _rows(rng, n=8, d=13):
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[0] = 0.0  # all zeros: stays zero, never NaN
    x[1] = 0.0
    x[1, 4] = -2.5  # one non-zero
    x[2] = x[3]  # a duplicate
    x[4] = 1e20  # squares overflow float32: the norm is accumulated in float64
    return x


def _unit_oracle(x):
    x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def test_l2_normalize_matches_numpy():
    x = _rows(np.random.default_rng(0))
    got = l2_normalize(x)
    assert got.dtype == np.float32 and got is not x
    np.testing.assert_allclose(got, _unit_oracle(x), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[0], 0.0)
    np.testing.assert_array_equal(got[2], got[3])
    same = x.copy()
    l2_normalize(same, copy=False)  # in place
    np.testing.assert_array_equal(same, got)
    with pytest.raises(ValueError, match="2-d array"):
        l2_normalize(x[0])


def test_truncate_normalize_matches_numpy():
    x = _rows(np.random.default_rng(1))
    for dim in (1, 5, x.shape[1]):
        got = truncate_normalize(x, dim)
        assert got.shape == (x.shape[0], dim)
        np.testing.assert_allclose(got, _unit_oracle(x[:, :dim]), rtol=1e-6, atol=1e-7)
    for bad in (0, x.shape[1] + 1):
        with pytest.raises(ValueError, match="truncate_dim must be in"):
            truncate_normalize(x, bad)
    with pytest.raises(ValueError, match="2-d array"):
        truncate_normalize(x[0], 1)


def test_mean_pool_matches_numpy():
    rng = np.random.default_rng(2)
    hidden = rng.standard_normal((4, 6, 5)).astype(np.float32)
    mask = np.array([[1] * 6, [1, 1, 0, 0, 0, 0], [0] * 6, [0, 0, 1, 1, 1, 1]])  # right, none, left padded
    got = mean_pool(hidden, mask)
    m = mask[:, :, None].astype(np.float64)
    want = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[2], 0.0)  # a row without tokens pools to zeros

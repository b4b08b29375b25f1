"""kernels/binary.py against numpy oracles: sign codes and the Hamming top-k scan under every plan."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernels import binary as B
from engine.kernels.binary import pack_signs, topk_hamming
from tests.kernels.oracles import oracle_topk

# ----------------------------------------------------------------------------- binary codes


def test_pack_signs_bits_and_padding():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((7, 130)).astype(np.float32)
    x[0, :5] = 0.0  # zero -> bit 0 (only > 0 sets a bit)
    codes = pack_signs(x)
    assert codes.shape == (7, 3) and codes.dtype == np.uint64
    bits = np.unpackbits(codes.view(np.uint8), axis=1, bitorder="little")
    np.testing.assert_array_equal(bits[:, :130], x > 0)
    assert not bits[:, 130:].any()  # padding bits stay 0
    np.testing.assert_array_equal(pack_signs(x[3]), codes[3])


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 120),
    d=st.integers(1, 140),
    nq=st.integers(0, 5),
    k=st.integers(0, 130),
    seed=st.integers(0, 2**32 - 1),
)
def test_topk_hamming_matches_oracle(n, d, nq, k, seed):
    rng = np.random.default_rng(seed)
    x, q = rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((nq, d)).astype(np.float32)
    s, i = topk_hamming(pack_signs(x) if n else np.empty((0, -(-d // 64)), np.uint64), q, d, k)
    assert i.shape == (nq, min(k, n))
    if n == 0 or nq == 0:
        return
    sim = d - 2 * ((x[None, :, :] > 0) != (q[:, None, :] > 0)).sum(-1)
    os_, oi = oracle_topk(sim, k)
    np.testing.assert_array_equal(i, oi)
    np.testing.assert_array_equal(s, os_)


def hamming_oracle(x, q, k):
    """Best-first top-k of d - 2 * hamming(sign bits), from numpy's packbits and bitwise_count."""
    xb, qb = np.packbits(x > 0, axis=1), np.packbits(q > 0, axis=1)
    sim = np.stack([x.shape[1] - 2 * np.bitwise_count(xb ^ row).sum(1, dtype=np.int64) for row in qb])
    return oracle_topk(sim, k)


def tie_heavy(rng, n, d):
    """Rows with many equal distances: every row 4 times (spread out), all-zero rows, and rows
    equal to another's signs flipped."""
    base = rng.standard_normal((-(-n // 4), d)).astype(np.float32)
    x = np.concatenate([base] * 4)[:n]
    x = x[rng.permutation(n)]
    x[:5] = 0.0
    x[5:9] = -x[9:13]
    return np.ascontiguousarray(x)


def check_hamming(x, q, k):
    s, i = topk_hamming(pack_signs(x), q, x.shape[1], k)
    os_, oi = hamming_oracle(x, q, k)
    np.testing.assert_array_equal(i, oi)
    np.testing.assert_array_equal(s, os_)


@pytest.mark.parametrize("nq", [1, 2, 3, 8, 9, 70], ids=lambda v: f"nq{v}")
@pytest.mark.parametrize("d", [64, 100, 384, 768, 1024], ids=lambda v: f"d{v}")
def test_topk_hamming_word_counts_and_query_groups(d, nq):
    """One kernel per word count (1, 2, 6, 12, 16 words); one or two queries run the one-lane
    loop, 3 to 64 share padded lanes, 70 make two groups; k = 400 as the binary Index asks."""
    rng = np.random.default_rng(d + nq)
    x = tie_heavy(rng, 1501, d)  # odd: tiles end with a lone row
    q = np.concatenate([x[:2], rng.standard_normal((nq, d)).astype(np.float32)])[:nq]  # exact matches too
    for k in (400, 7):
        check_hamming(x, q, k)


# (parallel, chunks, lanes per group): chunk merges, compaction (chunk rows > 2 k), warm starts
# (lanes > 1), a chunk smaller than k, groups of one lane, and dims with only a few distinct
# distances (d = 3: every score ties with hundreds of rows).
PLANS = [(True, 5, 8), (False, 3, 16), (True, 1, 64), (True, 4, 1), (False, 7, 1), (True, 2, 8)]


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"{'par' if p[0] else 'ser'}-c{p[1]}-g{p[2]}")
@pytest.mark.parametrize("d", [3, 100, 384], ids=lambda v: f"d{v}")
def test_topk_hamming_any_plan_matches_oracle(monkeypatch, plan, d):
    parallel, nch, gsize = plan
    monkeypatch.setattr(B, "_plan", lambda n, nq: (parallel, nch, -(-n // nch), gsize))
    rng = np.random.default_rng(d)
    x = tie_heavy(rng, 2501, d)
    q = rng.standard_normal((19, d)).astype(np.float32)
    for k in (60, 400, 2601):
        check_hamming(x, q, k)


@pytest.mark.parametrize("nq", [1, 16, 130])
def test_topk_hamming_default_plan_in_parallel(monkeypatch, nq):
    monkeypatch.setattr(B, "SERIAL_MAX_PAIRS", 0)
    monkeypatch.setattr(B, "MIN_CHUNK_ROWS", 256)
    rng = np.random.default_rng(nq)
    x = tie_heavy(rng, 3001, 384)
    check_hamming(x, rng.standard_normal((nq, 384)).astype(np.float32), 400)


def test_topk_hamming_plan_shapes():
    """Groups cover the queries with at most 64 lanes, in whole vectors of 8 from 3 queries on;
    rows split only while there are fewer groups than threads."""
    for n in (10, 100_000, 1_000_000):
        for nq in (1, 2, 3, 8, 17, 64, 65, 1024):
            parallel, nch, chunk, gsize = B._plan(n, nq)
            assert nch * chunk >= n and (nch - 1) * chunk < n and 1 <= gsize <= B.GROUP_QUERIES
            assert gsize == 1 if nq <= 2 else gsize % 8 == 0
            big = n >= 2 * B.MIN_CHUNK_ROWS if nq <= 2 else n * nq >= B.SERIAL_MAX_PAIRS
            assert parallel == (B.numba.get_num_threads() > 1 and big)
            assert nch == 1 or -(-nq // gsize) < B.numba.get_num_threads()


def test_topk_hamming_errors():
    with pytest.raises(ValueError, match="uint64"):
        topk_hamming(np.zeros((2, 1), np.int64), np.ones((1, 3)), 3, 1)
    with pytest.raises(ValueError, match="do not match"):
        topk_hamming(np.zeros((2, 1), np.uint64), np.ones((1, 65)), 65, 1)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        topk_hamming(np.zeros((2, 0), np.uint64), np.ones((1, 0)), 0, 1)

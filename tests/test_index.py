"""engine.index.Index: search vs a numpy oracle, ids, model checks, persistence, damage."""

from __future__ import annotations

import os

import numpy as np
import pytest

from engine.errors import IndexFormatError, InputError, ModelMismatchError
from engine.index import DEFAULT_OVERSAMPLE, Index
from engine.index.format import MAGIC
from tests.test_cuda_search import numpy_as_cupy  # noqa: F401  (fixture)

D = 32
FP = "all-MiniLM-L6-v2/fp32/384/1a2b3c4d5e6f7a8b"
OTHER = "bge-small-en-v1.5/fp32/384/ffffffffffffffff"


def vecs(n, d=D, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def oracle(x, q, k):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = qn.astype(np.float64) @ xn.T.astype(np.float64)
    i = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, i, 1), i


@pytest.fixture(params=["fp32", "int8", "binary"])
def precision(request):
    return request.param


def test_search_matches_oracle_and_normalizes(precision):
    x, q = vecs(3000), vecs(20, seed=1)
    # binary: 32 sign bits of isotropic vectors rank coarsely (its recall: tests/test_index_codes.py);
    # oversample 300 = every row is rescored, so this checks its plumbing against the oracle
    idx = Index(D, precision, oversample=300 if precision == "binary" else None)
    idx.add(x[:1000] * 7.0)  # scaling must not matter (cosine)
    idx.add(x[1000:])
    assert len(idx) == 3000 and idx.dim == D and idx.precision == precision
    s, i = idx.search(q, 10)
    os_, oi = oracle(x, q, 10)
    assert s.dtype == np.float32 and s.shape == i.shape == (20, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, oi)]) >= 0.99
    np.testing.assert_allclose(s, os_, atol=1e-5)  # exact scores, int8 included (rescored)


def test_single_query_returns_1d(precision):
    x = vecs(50)
    idx = Index(D, precision)
    idx.add(x)
    s, i = idx.search(x[3], 4)
    assert s.shape == i.shape == (4,)
    assert i[0] == 3 and s[0] == pytest.approx(1.0, abs=1e-5)


def test_k_edge_cases(precision):
    idx = Index(D, precision)
    s, i = idx.search(vecs(2), 5)  # empty index
    assert s.shape == i.shape == (2, 0)
    idx.add(vecs(3))
    assert idx.search(vecs(2), 10)[1].shape == (2, 3)  # k > n -> n columns
    assert idx.search(vecs(2), 0)[1].shape == (2, 0)
    with pytest.raises(InputError, match="k must be"):
        idx.search(vecs(1), -1)
    with pytest.raises(InputError, match="k must be"):
        idx.search(vecs(1), 2.5)


def test_ties_keep_insertion_order(precision):
    x = np.tile(vecs(1), (6, 1))
    idx = Index(D, precision)
    idx.add(x, ids=[50, 40, 30, 20, 10, 0])
    _s, i = idx.search(x[0], 4)
    np.testing.assert_array_equal(i, [50, 40, 30, 20])


def test_bad_queries_and_vectors():
    idx = Index(D)
    idx.add(vecs(10))
    q = vecs(2)
    q[1, 3] = np.nan
    with pytest.raises(InputError, match=r"NaN or inf in row\(s\) \[1\]"):
        idx.search(q, 3)
    q[1, 3] = np.inf
    with pytest.raises(InputError, match="NaN or inf"):
        idx.search(q, 3)
    with pytest.raises(InputError, match=r"shape \(n, 32\)"):
        idx.search(vecs(2, d=D + 1), 3)
    with pytest.raises(InputError, match=r"shape \(n, 32\)"):
        idx.search(np.zeros((2, 2, D)), 3)
    with pytest.raises(InputError, match="zero vectors"):
        idx.search(np.zeros(D), 3)
    with pytest.raises(InputError, match="zero vectors in row"):
        idx.add(np.zeros((1, D)))
    with pytest.raises(InputError, match="numeric"):
        idx.search(np.array(["a"] * D), 3)
    with pytest.raises(InputError, match="NaN"):
        idx.add(np.full((1, D), np.nan))
    assert len(idx) == 10  # failed adds leave the index unchanged


def test_constructor_validation():
    with pytest.raises(InputError, match="precision"):
        Index(D, "fp16")
    with pytest.raises(InputError, match="dim"):
        Index(0)
    with pytest.raises(InputError, match="oversample"):
        Index(D, "int8", oversample=0)
    with pytest.raises(InputError, match="scales"):
        Index(D, "fp32", scales=np.ones(D))


# ----------------------------------------------------------------------------- ids


def test_default_and_explicit_int_ids():
    idx = Index(D)
    idx.add(vecs(3))
    idx.add(vecs(2, seed=1))
    _, i = idx.search(vecs(2, seed=1)[1], 1)
    assert i[0] == 4 and i.dtype == np.int64
    idx.add(vecs(1, seed=2), ids=[100])
    idx.add(vecs(1, seed=3))  # continues after the largest id
    _, i = idx.search(vecs(1, seed=3)[0], 1)
    assert i[0] == 101
    with pytest.raises(InputError, match="already in the index: \\[2\\]"):
        idx.add(vecs(1, seed=4), ids=[2])
    with pytest.raises(InputError, match="duplicate ids in this batch: \\[7\\]"):
        idx.add(vecs(2, seed=4), ids=[7, 7])
    with pytest.raises(InputError, match="one id per vector"):
        idx.add(vecs(2, seed=4), ids=[8])
    with pytest.raises(InputError, match="int ids but got str"):
        idx.add(vecs(1, seed=4), ids=["x"])
    assert len(idx) == 7


def test_string_ids(precision):
    x = vecs(4)
    idx = Index(D, precision)
    idx.add(x[:2], ids=["doc-a", "doc-b"])
    idx.add(x[2:], ids=np.array(["doc-c", "dóc-d"]))
    _s, i = idx.search(x[3], 2)
    assert i[0] == "dóc-d" and isinstance(i[0], str) and i.dtype == object
    with pytest.raises(InputError, match="already in the index"):
        idx.add(vecs(1, seed=5), ids=["doc-a"])
    with pytest.raises(InputError, match="string ids; pass ids="):
        idx.add(vecs(1, seed=5))
    with pytest.raises(InputError, match="all be integers or all be strings"):
        Index(D).add(vecs(2), ids=[1, "a"])
    with pytest.raises(InputError, match="single string"):
        Index(D).add(vecs(1), ids="a")


# ----------------------------------------------------------------------------- model checks


class FakeEmbedder:
    def __init__(self, fingerprint, dim=D):
        self.fingerprint = fingerprint
        self.dim = dim
        self.calls = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.stack([vecs(1, self.dim, seed=len(t))[0] for t in texts])


def test_model_mismatch():
    idx = Index(D, model=FP)
    idx.add(vecs(5), model=FP)
    idx.add(vecs(5, seed=1))  # unknown model: allowed
    with pytest.raises(ModelMismatchError) as e:
        idx.add(vecs(1), model=OTHER)
    assert FP in str(e.value) and OTHER in str(e.value) and "re-embed" in str(e.value)
    with pytest.raises(ModelMismatchError, match="bge-small"):
        idx.search(vecs(1), 3, model=OTHER)
    idx.search(vecs(1), 3, model=FP)
    idx.search(vecs(1), 3)


def test_empty_index_adopts_model():
    idx = Index(D)
    idx.add(vecs(2), model=FP)
    assert idx.model == FP
    with pytest.raises(ModelMismatchError):
        idx.search(vecs(1), 1, model=OTHER)


def test_search_text():
    idx = Index(D, model=FP)
    idx.add(np.stack([vecs(1, seed=n)[0] for n in (3, 5, 8)]), ids=["abc", "abcde", "abcdefgh"])
    emb = FakeEmbedder(FP)
    s, i = idx.search_text(emb, "xxxxx", k=1)  # len 5 -> same vector as "abcde"
    assert i.tolist() == ["abcde"] and s[0] == pytest.approx(1.0, abs=1e-5)
    s, i = idx.search_text(emb, ["xxx", "xxxxxxxx"], k=2)
    assert i[:, 0].tolist() == ["abc", "abcdefgh"]
    with pytest.raises(ModelMismatchError, match="bge-small"):
        idx.search_text(FakeEmbedder(OTHER), "x")
    with pytest.raises(InputError, match="encode"):
        idx.search_text(object(), "x")


# ----------------------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path, precision):
    x = vecs(700)
    idx = Index(D, precision, model=FP, oversample=3)
    idx.add(x[:500], ids=np.arange(1000, 1500))
    idx.add(x[500:], ids=np.arange(2000, 2200))
    path = tmp_path / "a.eidx"
    idx.save(path)
    q = vecs(9, seed=9)
    s0, i0 = idx.search(q, 7)
    for mmap in (True, False):
        j = Index.load(path, mmap=mmap)
        assert (len(j), j.dim, j.precision, j.model, j.oversample) == (700, D, precision, FP, 3)
        assert isinstance(j._vecs, np.memmap) == mmap
        s1, i1 = j.search(q, 7)
        np.testing.assert_array_equal(i0, i1)
        np.testing.assert_array_equal(s0, s1)
        if precision == "int8":
            np.testing.assert_array_equal(j.scales, idx.scales)
        j.add(vecs(2, seed=11))  # adding after load (copies a memmap into RAM)
        _, i2 = j.search(vecs(2, seed=11), 1)
        np.testing.assert_array_equal(i2[:, 0], [2200, 2201])
        assert j._int_ids.shape[0] >= 702


def test_save_load_string_ids_and_empty(tmp_path):
    idx = Index(D, "int8")
    idx.add(vecs(3), ids=["α", "b", ""])  # noqa: RUF001 (a non-ASCII id on purpose)
    idx.save(tmp_path / "s.eidx")
    j = Index.load(tmp_path / "s.eidx")
    assert j.search(vecs(3)[0], 3)[1].tolist()[0] == "α"  # noqa: RUF001
    with pytest.raises(InputError, match="already in the index"):
        j.add(vecs(1, seed=3), ids=[""])
    empty = Index(D, "int8")
    empty.save(tmp_path / "e.eidx")
    e = Index.load(tmp_path / "e.eidx")
    assert len(e) == 0 and e.search(vecs(1), 3)[0].shape == (1, 0)
    e.add(vecs(4))  # calibrates on this first add
    assert e.search(vecs(4)[2], 1)[1][0] == 2


def test_int8_memory_after_mmap_load(tmp_path):
    n, d = 4000, 384
    x = vecs(n, d)
    fp = Index(d)
    fp.add(x)
    q8 = Index(d, "int8")
    q8.add(x)
    q8.save(tmp_path / "q.eidx")
    j = Index.load(tmp_path / "q.eidx", mmap=True)
    assert j.memory_usage()["resident"] <= 0.26 * fp.memory_usage()["resident"]
    assert j.memory_usage()["mapped"] == n * d * 4


def _saved(tmp_path, precision="fp32"):
    idx = Index(D, precision, model=FP)
    idx.add(vecs(200), ids=[f"d{t}" for t in range(200)])
    path = tmp_path / "x.eidx"
    idx.save(path)
    return path


@pytest.mark.parametrize("where", ["payload", "payload_end", "header", "magic"])
def test_corrupt_file(tmp_path, where):
    path = _saved(tmp_path, "int8")
    raw = bytearray(path.read_bytes())
    pos = {"payload": len(raw) // 2, "payload_end": len(raw) - 1, "header": 60, "magic": 0}[where]
    raw[pos] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match=r"damaged.*rebuild"):
        Index.load(path)


@pytest.mark.parametrize("cut", [0, 10, 47, 100, -1, -5000])
def test_truncated_file(tmp_path, cut):
    path = _saved(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[:cut])
    for verify in (True, False):
        with pytest.raises(IndexFormatError, match="damaged"):
            Index.load(path, verify=verify)


def test_trailing_garbage_and_unknown_version(tmp_path):
    path = _saved(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw + b"\0")
    with pytest.raises(IndexFormatError, match="trailing"):
        Index.load(path)
    path.write_bytes(raw[:6] + b"\x00\x09" + raw[8:])
    with pytest.raises(IndexFormatError, match="format version"):
        Index.load(path)
    with pytest.raises(FileNotFoundError, match="no index file"):
        Index.load(tmp_path / "missing.eidx")


def test_payload_corruption_passes_without_verify(tmp_path):
    path = _saved(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 1  # inside the string-id blob: still decodes
    path.write_bytes(bytes(raw))
    Index.load(path, verify=False)
    with pytest.raises(IndexFormatError, match="payload checksum"):
        Index.load(path, verify=True)


def test_file_layout(tmp_path):
    path = _saved(tmp_path)
    raw = path.read_bytes()
    assert raw[:8] == MAGIC
    import json

    hlen = int.from_bytes(raw[8:16], "little")
    meta = json.loads(raw[48 : 48 + hlen])
    assert meta["format_version"] == 1 and meta["dim"] == D and meta["count"] == 200
    assert meta["model"] == FP and meta["precision"] == "fp32" and len(meta["payload_sha256"]) == 64
    assert all(s["offset"] % 64 == 0 for s in meta["sections"])


def test_atomic_save(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    before = path.read_bytes()
    idx = Index(D)
    idx.add(vecs(5))

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        idx.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # old file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.eidx"]  # temp file removed
    idx.save(path)  # overwrite works
    assert len(Index.load(path)) == 5


def test_save_over_own_mmap_source(tmp_path):
    path = _saved(tmp_path)
    j = Index.load(path, mmap=True)
    j.save(path)  # rewrite the file it maps from
    assert len(Index.load(path)) == 200
    assert DEFAULT_OVERSAMPLE >= 2


# -- metric="dot": raw vectors, inner product (models whose similarity_fn_name is "dot") -----------
def dot_oracle(x, q, k):
    s = q.astype(np.float64) @ x.T.astype(np.float64)
    i = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, i, 1), i


def test_dot_matches_oracle_without_normalizing(precision):
    rng = np.random.default_rng(3)
    x = vecs(2000) * rng.uniform(0.1, 5.0, (2000, 1)).astype(np.float32)  # norms matter for dot
    x[7] = 0  # a zero vector is fine for dot
    q = vecs(30, seed=1) * 3.0
    idx = Index(D, precision, metric="dot", oversample=200 if precision == "binary" else None)
    idx.add(x[:500])
    idx.add(x[500:])
    assert idx.metric == "dot"
    want_s, want_i = dot_oracle(x, q, 10)
    got_s, got_i = idx.search(q, 10)
    np.testing.assert_array_equal(got_i, want_i)  # int8 + rescoring: recall@10 = 1.0, exact scores
    np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-4)
    assert not np.allclose(np.linalg.norm(idx._vecs[:10], axis=1), 1)  # stored raw


def test_dot_int8_recall_on_clustered_raw_vectors():
    """Raw vectors with per-dimension offsets and spread (calibrated int8 scales): recall@10 = 1.0."""
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((20, D)).astype(np.float32) * 4
    x = (centers[rng.integers(0, 20, 5000)] + rng.standard_normal((5000, D)) * rng.uniform(0.2, 3, D)).astype(
        np.float32
    )
    q = (x[rng.integers(0, 5000, 50)] + rng.standard_normal((50, D))).astype(np.float32)
    idx = Index(D, "int8", metric="dot")
    idx.add(x)
    _, want = dot_oracle(x, q, 10)
    _, got = idx.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want)])
    assert recall == 1.0


def test_dot_zero_query_and_bad_rows():
    idx = Index(4, metric="dot")
    idx.add(np.array([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0]], np.float32))
    s, i = idx.search(np.zeros(4, np.float32), 3)
    np.testing.assert_array_equal(s, 0)
    np.testing.assert_array_equal(i, [0, 1, 2])  # ties: insertion order
    with pytest.raises(InputError, match="NaN or inf"):
        idx.add(np.array([[np.nan, 0, 0, 0]], np.float32))
    for big in (3e19, 1.5e18):  # |x|^2 overflows float32; |x|^2 = 9e36 > 1e36 (DOT_MAX_SQ)
        with pytest.raises(InputError, match="too large"):
            idx.add(np.full((1, 4), big, np.float32))
        with pytest.raises(InputError, match="too large"):
            idx.search(np.full((1, 4), big, np.float32), 1)
    assert len(idx) == 3


@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
def test_distance_metrics_are_refused_with_the_workaround(metric):
    with pytest.raises(InputError, match=f"{metric}.*normalize=True.*cosine"):
        Index(D, metric=metric)
    with pytest.raises(InputError, match="metric must be one of"):
        Index(D, metric="l2")


def test_dot_save_load_round_trip(tmp_path, precision):
    x = vecs(300) * 2.5
    idx = Index(D, precision, model=FP, metric="dot")
    idx.add(x)
    idx.save(tmp_path / "i.idx")
    for mmap in (True, False):
        back = Index.load(tmp_path / "i.idx", mmap=mmap)
        assert back.metric == "dot"
        np.testing.assert_array_equal(back.search(x[:5], 5)[1], idx.search(x[:5], 5)[1])


def test_cosine_files_record_their_metric_and_old_files_load_as_cosine(tmp_path):
    """Files written before "dot" existed say "cosine" (tests/test_index_format.py's golden files are
    byte-identical to them) and load as cosine."""
    import json

    idx = Index(D, model=FP)
    idx.add(vecs(20))
    idx.save(tmp_path / "i.idx")
    raw = (tmp_path / "i.idx").read_bytes()
    header = json.loads(raw[48 : 48 + int.from_bytes(raw[8:16], "little")])
    assert header["metric"] == "cosine"
    back = Index.load(tmp_path / "i.idx")
    assert back.metric == "cosine"
    np.testing.assert_array_equal(back.search(vecs(3, seed=9), 5)[1], idx.search(vecs(3, seed=9), 5)[1])


def test_dot_cuda_path_through_numpy_stand_in(numpy_as_cupy, monkeypatch, precision):  # noqa: F811
    """The GPU scan (its blocked logic, with numpy standing in for CuPy) on raw vectors: same as the CPU."""
    from engine.kernels import cuda as kc

    monkeypatch.setattr(kc, "available", lambda: (True, "numpy stand-in"))
    x = vecs(2000) * np.random.default_rng(4).uniform(0.1, 5.0, (2000, 1)).astype(np.float32)
    q = vecs(5, seed=2) * 2
    idx = Index(D, precision, metric="dot")
    idx.add(x)
    if precision == "binary":
        with pytest.raises(InputError, match="CPU only"):
            idx.search(q, 10, device="cuda")
        return
    s_gpu, i_gpu = idx.search(q, 10, device="cuda")
    want_s, want_i = dot_oracle(x, q, 10)
    np.testing.assert_array_equal(i_gpu, want_i)
    np.testing.assert_allclose(s_gpu, want_s, rtol=1e-5, atol=1e-4)

"""The SQLite embedding cache, alone and inside embed_corpus (unchanged documents are never re-embedded)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from engine.corpus.cache import EmbeddingCache
from engine.errors import InputError


def key(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_roundtrip_and_misses(tmp_path):
    rng = np.random.default_rng(0)
    with EmbeddingCache(tmp_path / "c.sqlite") as c:
        ns = c.namespace("m/fp32/8/abc", "fp32", None, dim=8)
        keys = [key(f"t{i}") for i in range(1200)]  # more than one SELECT ... IN chunk
        vecs = rng.standard_normal((1200, 8)).astype(np.float32)
        c.put(ns, keys[:1000], vecs[:1000])
        got, found = c.get(ns, keys)
        assert found[:1000].all() and not found[1000:].any()
        np.testing.assert_array_equal(got[:1000], vecs[:1000])  # bit-exact
        assert not got[1000:].any()
        # repeated keys in one lookup
        got, found = c.get(ns, [keys[5], keys[5], key("missing")])
        assert found.tolist() == [True, True, False]
        np.testing.assert_array_equal(got[1], vecs[5])
        assert c.count(ns) == 1000


def test_namespaces_are_separate(tmp_path):
    with EmbeddingCache(tmp_path / "c.sqlite") as c:
        a = c.namespace("m/fp32/8/abc", "fp32", None, dim=8)
        b = c.namespace("m/fp32/8/abc", "fp32", 4, dim=4)        # truncate_dim
        d = c.namespace("m/int8/8/def", "int8", None, dim=8)     # other model / precision
        assert len({a, b, d}) == 3
        assert c.namespace("m/fp32/8/abc", "fp32", None, dim=8) == a
        c.put(a, [key("x")], np.ones((1, 8), np.float32))
        assert not c.get(b, [key("x")])[1].any() and not c.get(d, [key("x")])[1].any()
        with pytest.raises(InputError, match="expected \\(1, 4\\)"):
            c.put(b, [key("x")], np.ones((1, 8), np.float32))
        with pytest.raises(InputError, match="dim 8, now 9"):
            c.namespace("m/fp32/8/abc", "fp32", None, dim=9)
    with EmbeddingCache(tmp_path / "c.sqlite") as c:  # persists
        assert c.get(c.namespace("m/fp32/8/abc", "fp32", None, dim=8), [key("x")])[1].all()


def test_not_a_database(tmp_path):
    p = tmp_path / "c.sqlite"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError, match="cannot open the embedding cache.*--no-cache"):
        EmbeddingCache(p)


def test_concurrent_readers_and_a_writer_process(tmp_path):
    """WAL: readers in threads (own connections) see consistent rows while another process writes."""
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path) as c:
        ns = c.namespace("m", "fp32", None, dim=4)
        base = [key(f"base{i}") for i in range(200)]
        c.put(ns, base, np.tile(np.arange(200, dtype=np.float32)[:, None], (1, 4)))
    writer = subprocess.Popen([sys.executable, "-c", f"""
import hashlib, numpy as np
from engine.corpus.cache import EmbeddingCache
with EmbeddingCache({str(path)!r}) as c:
    ns = c.namespace("m", "fp32", None, dim=4)
    for r in range(30):
        keys = [hashlib.sha256(f"w{{r}}-{{i}}".encode()).digest() for i in range(200)]
        c.put(ns, keys, np.full((200, 4), r, np.float32))
"""])
    errors = []

    def read():
        try:
            with EmbeddingCache(path) as c:
                for _ in range(30):
                    got, found = c.get(ns, base)
                    if not found.all() or not (got[:, 0] == np.arange(200)).all():
                        errors.append("inconsistent read")
        except Exception as e:  # noqa: BLE001 - report any failure of the reader threads
            errors.append(repr(e))

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.wait(timeout=60) == 0
    assert errors == []
    with EmbeddingCache(path) as c:
        assert c.count(ns) == 200 + 30 * 200


# -- inside embed_corpus ---------------------------------------------------------------------
def write_corpus(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def docs(n, changed=()):
    return [{"_id": f"d{i}", "text": f"document number {i} about vectors" + (" (edited)" if i in changed else "")}
            for i in range(n)]


def test_second_run_embeds_nothing_and_ten_changes_embed_ten(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus
    from engine.corpus.shards import iter_shards

    cache = tmp_path / "emb.sqlite"
    src = write_corpus(tmp_path / "c.jsonl", docs(120))
    s1 = embed_corpus(src, tmp_path / "out1", tiny_embedder, shard_size=50, cache=cache)
    assert (s1.embedded, s1.cache_hits) == (120, 0)
    # a fresh output folder: every vector comes from the cache
    s2 = embed_corpus(src, tmp_path / "out2", tiny_embedder, shard_size=50, cache=cache)
    assert (s2.docs, s2.embedded, s2.cache_hits) == (120, 0, 120)
    assert [f.read_bytes() for f in sorted((tmp_path / "out1").glob("shard-*"))] == \
           [f.read_bytes() for f in sorted((tmp_path / "out2").glob("shard-*"))]
    # 10 edited documents, rerun into the same folder: exactly those 10 are embedded
    changed = {3, 17, 40, 41, 59, 77, 88, 99, 110, 119}
    write_corpus(src, docs(120, changed))
    s3 = embed_corpus(src, tmp_path / "out1", tiny_embedder, shard_size=50, cache=cache)
    assert s3.embedded == 10
    assert s3.cache_hits + s3.resumed == 110
    assert s3.shards_written == 3  # each shard holds an edited document
    # ... and into a new folder: the same 10 are now cached too
    s4 = embed_corpus(src, tmp_path / "out3", tiny_embedder, shard_size=50, cache=cache)
    assert (s4.embedded, s4.cache_hits) == (0, 120)
    vecs = np.concatenate([v for _, _, v in iter_shards(tmp_path / "out1")])
    texts = [d["text"] for d in docs(120, changed)]
    np.testing.assert_allclose(vecs, tiny_embedder.encode(texts), atol=1e-6)


def test_no_cache_and_settings_namespaces(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus

    cache = tmp_path / "emb.sqlite"
    src = write_corpus(tmp_path / "c.jsonl", docs(20))
    assert embed_corpus(src, tmp_path / "a", tiny_embedder, cache=False).embedded == 20
    assert not cache.exists()
    assert embed_corpus(src, tmp_path / "b", tiny_embedder, cache=cache).embedded == 20
    # another truncate_dim is another namespace: embedded again, not served 32-d vectors
    s = embed_corpus(src, tmp_path / "c", tiny_embedder, cache=cache, truncate_dim=16)
    assert (s.embedded, s.cache_hits) == (20, 0)
    with EmbeddingCache(cache) as c:
        assert c.count() == 40


def test_repeated_texts_embedded_once_per_chunk(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus
    from engine.corpus.shards import iter_shards

    src = write_corpus(tmp_path / "c.jsonl", [{"_id": str(i), "text": "same text"} for i in range(5)])
    s = embed_corpus(src, tmp_path / "out", tiny_embedder, cache=tmp_path / "emb.sqlite")
    assert (s.docs, s.embedded) == (5, 5)  # all five were misses ...
    with EmbeddingCache(tmp_path / "emb.sqlite") as c:
        assert c.count() == 1              # ... computed and stored once
    (_, _, v), = iter_shards(tmp_path / "out")
    assert (v == v[0]).all()


# -- encode_cached: the eval side of the same cache -----------------------------------------
class Counting:
    """Wraps an embedder: the same vectors, and a list of the texts it was asked to encode."""

    def __init__(self, emb):
        self.emb, self.encoded = emb, []
        self.fingerprint, self.precision, self.dim = emb.fingerprint, emb.precision, emb.dim

    def encode(self, texts, batch_size=32):
        self.encoded += texts
        return self.emb.encode(texts, batch_size=batch_size)


def test_encode_cached_reads_what_embed_corpus_wrote(tmp_path, tiny_embedder):
    """embed encode and embed eval share rows: same namespace, same text key (Doc.key)."""
    from engine.corpus import embed_corpus
    from engine.corpus.cache import encode_cached
    from engine.corpus.readers import read_documents

    cache = tmp_path / "emb.sqlite"
    src = write_corpus(tmp_path / "c.jsonl", docs(30))
    embed_corpus(src, tmp_path / "out", tiny_embedder, cache=cache)
    texts = [d.text for d in read_documents(src)]
    emb = Counting(tiny_embedder)
    got = encode_cached(emb, texts + ["a new text"], cache)
    assert emb.encoded == ["a new text"]  # every corpus text was a hit
    np.testing.assert_allclose(got, tiny_embedder.encode(texts + ["a new text"]), atol=1e-6)
    with EmbeddingCache(cache) as c:
        assert c.count() == 31


def test_encode_cached_folder_path_and_repeats(tmp_path, tiny_embedder):
    from engine.corpus.cache import encode_cached

    emb = Counting(tiny_embedder)
    texts = ["x y", "z", "x y", "w"]
    first = encode_cached(emb, texts, tmp_path)  # a folder: tmp_path/embeddings.sqlite
    assert emb.encoded == ["x y", "z", "w"] and (tmp_path / "embeddings.sqlite").is_file()
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_allclose(first, tiny_embedder.encode(texts), atol=1e-6)
    again = encode_cached(emb, ["w", "x y"], str(tmp_path / "embeddings.sqlite"))  # the file itself
    assert len(emb.encoded) == 3
    np.testing.assert_array_equal(again, first[[3, 0]])
    assert encode_cached(emb, ["v"], None).shape == (1, emb.dim) and emb.encoded[-1] == "v"  # no cache


def test_non_finite_rows_are_misses(tmp_path, tiny_embedder):
    from engine.corpus.cache import encode_cached
    from engine.corpus.readers import text_key

    path = tmp_path / "emb.sqlite"
    with EmbeddingCache(path) as c:
        ns = c.namespace(tiny_embedder.fingerprint, tiny_embedder.precision, None, tiny_embedder.dim)
        bad = np.ones((3, tiny_embedder.dim), np.float32)
        bad[0, 1], bad[1, 0], bad[2, 5] = np.nan, np.inf, -np.inf
        c.put(ns, [text_key(t) for t in ("p", "q", "r")], bad)
        assert not c.get(ns, [text_key("p"), text_key("q"), text_key("r")])[1].any()
    emb = Counting(tiny_embedder)
    got = encode_cached(emb, ["p", "q", "r"], path)
    assert emb.encoded == ["p", "q", "r"] and np.isfinite(got).all()
    with EmbeddingCache(path) as c:  # rewritten with the good vectors
        vecs, found = c.get(ns, [text_key("p"), text_key("q"), text_key("r")])
        assert found.all()
        np.testing.assert_array_equal(vecs, got)

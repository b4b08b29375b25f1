"""The SQLite embedding cache, alone and inside embed_corpus (unchanged documents are never re-embedded)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from engine.corpus import embed_corpus
from engine.corpus.cache import EmbeddingCache, encode_cached
from engine.corpus.readers import text_key
from engine.errors import InputError
from tests.corpus.conftest import TEXTS, normalized, output_vectors, st_model, write_texts


def key(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_roundtrip_and_misses(tmp_path):
    rng = np.random.default_rng(0)
    with EmbeddingCache(tmp_path / "c.sqlite") as c:
        ns = c.namespace("m/fp32/8/abc", "fp32", None, dim=8)
        keys = [key(f"t{i}") for i in range(1200)]  # more than one SELECT ... IN chunk
        vecs = rng.standard_normal((1200, 8)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)  # a normalized namespace stores unit vectors
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
        b = c.namespace("m/fp32/8/abc", "fp32", 4, dim=4)  # truncate_dim
        d = c.namespace("m/int8/8/def", "int8", None, dim=8)  # other model / precision
        assert len({a, b, d}) == 3
        assert c.namespace("m/fp32/8/abc", "fp32", None, dim=8) == a
        c.put(a, [key("x")], np.full((1, 8), 8**-0.5, np.float32))
        assert not c.get(b, [key("x")])[1].any() and not c.get(d, [key("x")])[1].any()
        with pytest.raises(InputError, match="expected \\(1, 4\\)"):
            c.put(b, [key("x")], np.ones((1, 8), np.float32))
        with pytest.raises(InputError, match="dim 8, now 9"):
            c.namespace("m/fp32/8/abc", "fp32", None, dim=9)
    with EmbeddingCache(tmp_path / "c.sqlite") as c:  # persists
        assert c.get(c.namespace("m/fp32/8/abc", "fp32", None, dim=8), [key("x")])[1].all()


def unit_rows(n, dim, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def moved_aside(path):
    return sorted(path.parent.glob(path.name + ".corrupt-*"))


@pytest.mark.parametrize(
    "content",
    [b"this is not sqlite" * 100, b'{"_id": "1", "text": "a corpus"}\n', b"x"],
    ids=["junk", "jsonl", "one-byte"],
)
def test_a_file_that_is_not_a_cache_is_refused_and_left_alone(tmp_path, content):
    """Before: any non-SQLite file given as the cache (even the run's own input) was renamed aside
    and replaced. Now: an InputError naming it; the file is unchanged, nothing is renamed."""
    p = tmp_path / "c.jsonl"
    p.write_bytes(content)
    with pytest.raises(InputError, match=r"c\.jsonl is not an embedding cache \(not an SQLite file\); it is left"):
        EmbeddingCache(p)
    assert p.read_bytes() == content and not moved_aside(p) and sorted(tmp_path.iterdir()) == [p]


def test_another_programs_sqlite_database_is_refused_and_left_alone(tmp_path):
    import sqlite3

    p = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(p)) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.commit()
    before = p.read_bytes()
    with pytest.raises(
        InputError,
        match=r"app\.db is not an embedding cache \(an SQLite database with the tables "
        r"users\)",
    ):
        EmbeddingCache(p)
    assert p.read_bytes() == before and not moved_aside(p)


def test_cache_damaged_at_open_is_moved_aside_and_rebuilt(tmp_path, caplog):
    p = tmp_path / "c.sqlite"
    filled_cache(p)
    with open(p, "r+b") as f:  # the schema page, after the SQLite header: an engine cache, damaged
        f.seek(100)
        f.write(b"\xff" * 3900)
    damaged = p.read_bytes()
    with caplog.at_level("WARNING", logger="engine.corpus.cache"), EmbeddingCache(p) as c:
        ns = c.namespace("m", "fp32", None, dim=8)
        c.put(ns, [key("x")], unit_rows(1, 8))
        assert c.get(ns, [key("x")])[1].all() and not c.disabled
    (old,) = moved_aside(p)
    assert old.read_bytes() == damaged  # moved, not deleted
    (record,) = caplog.records
    assert record.levelname == "WARNING" and str(p) in record.getMessage() and str(old) in record.getMessage()
    with EmbeddingCache(p) as c:  # the new cache persists
        assert c.count() == 1


def damage(path, seed=1):
    """Overwrite three pages in the middle of a SQLite file with random bytes."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2 // 4096 * 4096)
        f.write(np.random.default_rng(seed).integers(0, 256, 3 * 4096, dtype=np.uint8).tobytes())


def filled_cache(path, n=2000, dim=32):
    keys = [key(f"t{i}") for i in range(n)]
    with EmbeddingCache(path) as c:
        ns = c.namespace("m", "fp32", None, dim=dim)
        c.put(ns, keys, unit_rows(n, dim))
    return keys


def test_damage_found_mid_run_is_misses_and_one_warning(tmp_path, caplog):
    p = tmp_path / "c.sqlite"
    keys = filled_cache(p)
    damage(p)
    before = p.read_bytes()
    with caplog.at_level("WARNING", logger="engine.corpus.cache"), EmbeddingCache(p) as c:
        ns = c.namespace("m", "fp32", None, dim=32)  # the damaged pages hold vectors, not the schema
        vecs, found = c.get(ns, keys)  # sqlite3.DatabaseError before
        assert not found.any() and not vecs.any() and c.disabled
        c.put(ns, keys[:5], unit_rows(5, 32))  # dropped, no error
        assert not c.get(ns, keys[:5])[1].any() and c.count() == 0
        assert c.namespace("m", "fp32", None, dim=32) == ns and c.namespace("m2", "fp32", None, dim=32) != ns
    assert len(caplog.records) == 1 and "goes on without it" in caplog.records[0].getMessage()
    (old,) = moved_aside(p)
    assert old.read_bytes() == before  # nothing lost
    with EmbeddingCache(p) as c:  # the next run starts a new cache
        assert c.count() == 0 and not c.disabled


def test_damaged_cache_does_not_fail_embed_corpus_or_encode_cached(tmp_path, tiny_embedder, caplog):
    from engine.corpus import embed_corpus
    from engine.corpus.cache import encode_cached
    from engine.corpus.shards import iter_shards

    cache = tmp_path / "emb.sqlite"
    src = write_corpus(tmp_path / "c.jsonl", docs(600))
    texts = [d["text"] for d in docs(600)]
    embed_corpus(src, tmp_path / "out1", tiny_embedder, shard_size=200, cache=cache)
    damage(cache)
    with caplog.at_level("WARNING", logger="engine.corpus.cache"):
        s = embed_corpus(src, tmp_path / "out2", tiny_embedder, shard_size=200, cache=cache)
    assert s.docs == 600 and s.embedded > 0  # the lookups that met the damage were misses
    assert len(caplog.records) == 1 and len(moved_aside(cache)) == 1
    vecs = np.concatenate([v for _, _, v in iter_shards(tmp_path / "out2")])
    np.testing.assert_allclose(vecs, tiny_embedder.encode(texts), atol=1e-6)
    # the eval side: a new cache was started; fill it, damage it, and encode through it
    np.testing.assert_allclose(encode_cached(tiny_embedder, texts, cache), vecs, atol=1e-6)
    damage(cache)
    emb = Counting(tiny_embedder)
    np.testing.assert_allclose(encode_cached(emb, texts, cache), vecs, atol=1e-6)
    assert len(emb.encoded) == 600 and len(moved_aside(cache)) == 2 and len(caplog.records) == 2


def test_errors_that_are_not_damage_name_the_file(tmp_path, monkeypatch):
    import sqlite3

    from engine.errors import EngineError

    p = tmp_path / "c.sqlite"
    holder = sqlite3.connect(p, isolation_level=None)  # a rollback-journal database, write-locked
    holder.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")  # an engine cache, just begun
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(
        EngineError,
        match=rf"embedding cache {p}: cannot open it: database is locked; another "
        r"process holds it locked.*--no-cache",
    ):
        EmbeddingCache(p, timeout=0.1)
    holder.execute("ROLLBACK")
    holder.close()
    assert not moved_aside(p)  # a locked cache is not a damaged one
    with EmbeddingCache(p) as c:
        ns = c.namespace("m", "fp32", None, dim=4)

        class Full:  # SQLITE_FULL from an insert: the disk is full
            def __getattr__(self, name):
                return getattr(c.__dict__["_real"], name)

            def executemany(self, *a):
                e = sqlite3.OperationalError("database or disk is full")
                e.sqlite_errorcode = sqlite3.SQLITE_FULL
                raise e

        c._real = c._db
        monkeypatch.setattr(c, "_db", Full())
        with pytest.raises(
            EngineError,
            match=rf"embedding cache {p}: cannot write to it: database or disk is full; "
            r"the disk is full",
        ):
            c.put(ns, [key("x")], unit_rows(1, 4))
        monkeypatch.undo()
        assert not c.disabled and not c._db.in_transaction
        c.put(ns, [key("x")], unit_rows(1, 4))  # still usable
        assert c.count(ns) == 1
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(EngineError, match="cannot create the folder of the embedding cache"):
        EmbeddingCache(tmp_path / "a-file" / "c.sqlite")


def test_invalid_rows_are_counted_misses_and_rewritten(tmp_path, tiny_embedder):
    """Wrong byte length, wrong SQL type, non-finite, not unit length (normalized namespaces only)."""
    import sqlite3

    from engine.corpus import embed_corpus
    from engine.corpus.readers import text_key
    from engine.corpus.shards import iter_shards

    path = tmp_path / "emb.sqlite"
    corpus = docs(20)
    texts = [d["text"] for d in corpus]
    good = tiny_embedder.encode(texts)
    with EmbeddingCache(path) as c:
        ns = c.namespace(tiny_embedder.fingerprint, tiny_embedder.precision, None, tiny_embedder.dim)
        raw_ns = c.namespace("raw", "fp32", None, dim=tiny_embedder.dim, normalize=False)
        c.put(ns, [text_key(t) for t in texts], good)
        c.put(raw_ns, [text_key(t) for t in texts[:3]], 2 * good[:3])
    bad = {
        0: (good[0] * 1.01).tobytes(),  # not unit length
        1: np.r_[good[1, :-1], np.nan].astype("<f4").tobytes(),
        2: good[2].tobytes()[:-4],  # a byte short
        3: good[3].tobytes() + bytes(4),  # a value too many
        4: 12345,  # not a blob at all
        5: (good[5] * 0.9995).tobytes(),
    }  # |v|^2 - 1 = -1e-3: within the tolerance
    db = sqlite3.connect(path, isolation_level=None)
    db.executemany(
        "UPDATE vectors SET vec=? WHERE ns=? AND sha=?", [(v, ns, text_key(texts[i])) for i, v in bad.items()]
    )
    db.close()
    with EmbeddingCache(path) as c:
        vecs, found = c.get(ns, [text_key(t) for t in texts] + [text_key(texts[0])])
        assert found.tolist() == [False] * 5 + [True] * 15 + [False]
        assert c.rejected_rows == 5  # stored rows, each counted once
        np.testing.assert_array_equal(vecs[6:20], good[6:])
        assert not vecs[:5].any()
        vecs, found = c.get(raw_ns, [text_key(t) for t in texts[:3]])  # normalize=False: length is not checked
        assert found.all() and c.rejected_rows == 5
        np.testing.assert_array_equal(vecs, 2 * good[:3])
        s = embed_corpus(write_corpus(tmp_path / "c.jsonl", corpus), tmp_path / "out", tiny_embedder, cache=c)
        assert (s.embedded, s.cache_hits) == (5, 15) and c.rejected_rows == 10
        vecs, found = c.get(ns, [text_key(t) for t in texts])  # rewritten by the fresh vectors
        assert found.all() and c.rejected_rows == 10
        want = good.copy()
        want[5] = np.frombuffer(bad[5], "<f4")  # the slightly short row was kept
        np.testing.assert_allclose(vecs, want, atol=1e-6)
    ((_, _, shard),) = iter_shards(tmp_path / "out")
    np.testing.assert_allclose(shard, want, atol=1e-6)


def test_concurrent_readers_and_a_writer_process(tmp_path):
    """WAL: readers in threads (own connections) see consistent rows while another process writes."""
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path) as c:
        ns = c.namespace("m", "fp32", None, dim=4, normalize=False)
        base = [key(f"base{i}") for i in range(200)]
        c.put(ns, base, np.tile(np.arange(200, dtype=np.float32)[:, None], (1, 4)))
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import hashlib, numpy as np
from engine.corpus.cache import EmbeddingCache
with EmbeddingCache({str(path)!r}) as c:
    ns = c.namespace("m", "fp32", None, dim=4, normalize=False)
    for r in range(30):
        keys = [hashlib.sha256(f"w{{r}}-{{i}}".encode()).digest() for i in range(200)]
        c.put(ns, keys, np.full((200, 4), r, np.float32))
""",
        ]
    )
    errors = []

    def read():
        try:
            with EmbeddingCache(path) as c:
                for _ in range(30):
                    got, found = c.get(ns, base)
                    if not found.all() or not (got[:, 0] == np.arange(200)).all():
                        errors.append("inconsistent read")
        except Exception as e:
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
    return [
        {"_id": f"d{i}", "text": f"document number {i} about vectors" + (" (edited)" if i in changed else "")}
        for i in range(n)
    ]


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
    assert [f.read_bytes() for f in sorted((tmp_path / "out1").glob("shard-*"))] == [
        f.read_bytes() for f in sorted((tmp_path / "out2").glob("shard-*"))
    ]
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
        assert c.count() == 1  # ... computed and stored once
    ((_, _, v),) = iter_shards(tmp_path / "out")
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
    got = encode_cached(emb, [*texts, "a new text"], cache)
    assert emb.encoded == ["a new text"]  # every corpus text was a hit
    np.testing.assert_allclose(got, tiny_embedder.encode([*texts, "a new text"]), atol=1e-6)
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


class CountingEmbedder:
    """Stands in for Embedder: deterministic vectors, counts the texts it encodes."""

    name, precision, dim, fingerprint = "fake", "fp32", 4, "fake/fp32/4/0123"

    def __init__(self):
        self.encoded = []

    def encode(self, texts, batch_size=32):
        self.encoded += texts
        v = np.array([[len(t), t.count("a"), 1.0, i % 2] for i, t in enumerate(texts)], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)  # unit rows, as Embedder gives (the cache checks)


def test_encode_cached_reuses_vectors_of_a_subset(tmp_path):
    from engine.corpus.cache import encode_cached

    emb = CountingEmbedder()
    full = encode_cached(emb, ["a", "bb", "ccc", "a"], tmp_path)
    assert emb.encoded == ["a", "bb", "ccc"]  # the repeated text is encoded once
    np.testing.assert_array_equal(full[0], full[3])
    again = encode_cached(emb, ["ccc", "a", "dddd"], tmp_path)
    assert emb.encoded[3:] == ["dddd"]  # only the miss
    np.testing.assert_array_equal(again[:2], full[[2, 0]])
    other = CountingEmbedder()
    other.fingerprint = "fake/int8/4/9999"  # another model/precision never shares vectors
    encode_cached(other, ["a"], tmp_path)
    assert other.encoded == ["a"]


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


# -- the normalization applied is part of the key: normalized and raw vectors never mix ----------
@pytest.fixture(scope="module")
def cosine_raw(tmp_path_factory):
    """A cosine model without a Normalize module (raw vectors are not unit length) and its Embedder."""
    from engine import Embedder
    from tests.st_tiny import build_transformer, write_stack

    folder = write_stack(build_transformer(tmp_path_factory.mktemp("cache-cos") / "bert", "bert"), normalize=False)
    return Embedder(str(folder), cache_dir=tmp_path_factory.mktemp("cache-cos-exports"))


class Spy:
    """The Embedder itself (stack, fingerprint, resolve_prompt, ...), recording each encode call's normalization."""

    def __init__(self, emb):
        self.emb, self.calls = emb, []

    def __getattr__(self, name):
        return getattr(self.emb, name)

    def encode(self, texts, **kwargs):
        self.calls.append((list(texts), kwargs.get("normalize_embeddings")))
        return self.emb.encode(texts, **kwargs)


def test_cache_never_mixes_normalized_and_raw_vectors(tmp_path, cosine_raw):
    """embed encode stores unit vectors for a cosine model; encode_cached(normalize=False) must not get them
    (nor the other way round): each normalization has its own namespace, each filled with its own vectors."""
    from engine.corpus import embed_corpus, load_embeddings
    from engine.corpus.cache import encode_cached
    from engine.corpus.readers import text_key

    cache = tmp_path / "emb.sqlite"
    corpus = docs(12)
    texts = [d["text"] for d in corpus]
    raw, unit = cosine_raw.encode(texts), cosine_raw.encode(texts, normalize_embeddings=True)
    assert np.abs(np.linalg.norm(raw, axis=1) - 1).min() > 0.1  # raw and unit differ: a mix would show
    embed_corpus(write_corpus(tmp_path / "c.jsonl", corpus), tmp_path / "out", cosine_raw, cache=cache)
    np.testing.assert_allclose(load_embeddings(tmp_path / "out")[1], unit, atol=1e-6)  # the stored rule

    spy = Spy(cosine_raw)
    np.testing.assert_array_equal(encode_cached(spy, texts, cache), load_embeddings(tmp_path / "out")[1])
    assert spy.calls == []  # the default (unit for cosine) reads embed encode's rows
    got_raw = encode_cached(spy, texts, cache, normalize=False)
    assert spy.calls == [(texts, False)]  # every text a miss, encoded raw
    np.testing.assert_allclose(got_raw, raw, atol=1e-6)
    np.testing.assert_array_equal(encode_cached(spy, texts, cache, normalize=False), got_raw)  # now raw hits
    np.testing.assert_array_equal(encode_cached(spy, texts, cache, normalize=True), encode_cached(spy, texts, cache))
    assert len(spy.calls) == 1
    with EmbeddingCache(cache) as c:
        args = (cosine_raw.fingerprint, cosine_raw.precision, None, cosine_raw.dim)
        ns_unit, ns_raw = c.namespace(*args, normalize=True), c.namespace(*args, normalize=False)
        assert ns_unit != ns_raw and c.count(ns_unit) == c.count(ns_raw) == len(texts)
        keys = [text_key(t) for t in texts]
        np.testing.assert_allclose(c.get(ns_unit, keys)[0], unit, atol=1e-6)
        np.testing.assert_allclose(c.get(ns_raw, keys)[0], raw, atol=1e-6)
    # a raw namespace filled first does not feed a normalized request either
    spy2 = Spy(cosine_raw)
    fresh = tmp_path / "fresh.sqlite"
    encode_cached(spy2, texts, fresh, normalize=False)
    np.testing.assert_allclose(encode_cached(spy2, texts, fresh), unit, atol=1e-6)
    assert spy2.calls == [(texts, False), (texts, True)]


# -- prompts: one namespace per prompt text --------------------------------------------------------


def test_same_text_two_prompts_two_namespaces(tmp_path, cosine_model):
    """Fails if the prompt is left out of the namespace: the second run would get the first's vectors."""
    folder, emb = cosine_model
    cache = tmp_path / "emb.sqlite"
    src = write_texts(tmp_path / "c.jsonl", TEXTS)
    first = embed_corpus(src, tmp_path / "a", emb, cache=cache)
    second = embed_corpus(src, tmp_path / "b", emb, cache=cache, prompt="find: ")
    assert first.embedded == second.embedded == len(set(TEXTS)) and second.cache_hits == 0
    np.testing.assert_allclose(
        output_vectors(tmp_path / "b"), normalized(st_model(folder).encode(TEXTS, prompt="find: ")), atol=1e-5
    )
    third = embed_corpus(src, tmp_path / "c", emb, cache=cache, prompt="find: ")  # now a hit, of its own prompt
    assert third.cache_hits == len(TEXTS) and third.embedded == 0
    np.testing.assert_array_equal(output_vectors(tmp_path / "c"), output_vectors(tmp_path / "b"))
    with EmbeddingCache(cache) as c:
        args = (emb.fingerprint, emb.precision, None, emb.dim)
        a, b = c.namespace(*args, prompt="passage: "), c.namespace(*args, prompt="find: ")
        assert a != b and c.count(a) == c.count(b) == len(set(TEXTS))
        assert c.namespace(*args) == c.namespace(*args, prompt="") != a


def test_encode_cached_prompt(tmp_path, cosine_model, dot_model):
    for folder, emb in (cosine_model, dot_model):
        path = tmp_path / f"{emb.similarity_fn_name}.sqlite"
        st = st_model(folder)
        plain = encode_cached(emb, TEXTS, path)
        with_prompt = encode_cached(emb, TEXTS, path, prompt="find: ")
        ref_plain, ref_prompt = st.encode(TEXTS), st.encode(TEXTS, prompt="find: ")
        if emb.similarity_fn_name == "cosine":
            ref_plain, ref_prompt = normalized(ref_plain), normalized(ref_prompt)
        np.testing.assert_allclose(plain, ref_plain, atol=1e-5 * np.abs(ref_plain).max())
        np.testing.assert_allclose(with_prompt, ref_prompt, atol=1e-5 * np.abs(ref_prompt).max())
        with EmbeddingCache(path) as c:  # both namespaces hold every text; raw dot vectors are kept (hits)
            norm = emb.similarity_fn_name == "cosine"
            for prompt, ref in (("", plain), ("find: ", with_prompt)):
                ns = c.namespace(emb.fingerprint, emb.precision, None, emb.dim, normalize=norm, prompt=prompt)
                vecs, found = c.get(ns, [text_key(t) for t in TEXTS])
                assert found.all() and c.rejected_rows == 0
                np.testing.assert_array_equal(vecs, ref)


def test_schema_1_cache_is_migrated(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
        CREATE TABLE namespaces (id INTEGER PRIMARY KEY, model TEXT NOT NULL, precision TEXT NOT NULL,
            truncate_dim INTEGER NOT NULL, normalize INTEGER NOT NULL, dim INTEGER NOT NULL,
            UNIQUE (model, precision, truncate_dim, normalize));
        CREATE TABLE vectors (ns INTEGER NOT NULL, sha BLOB NOT NULL, vec BLOB NOT NULL,
            PRIMARY KEY (ns, sha)) WITHOUT ROWID;
        INSERT INTO meta VALUES ('schema', '1');
        INSERT INTO namespaces VALUES (7, 'm', 'fp32', 0, 1, 2);
    """)
    db.execute("INSERT INTO vectors VALUES (7, ?, ?)", (text_key("x"), np.array([0.6, 0.8], "<f4").tobytes()))
    db.commit()
    db.close()
    with EmbeddingCache(path) as c:
        ns = c.namespace("m", "fp32", None, 2)
        assert ns == 7 and c.get(ns, [text_key("x")])[1].all()  # an old row: the empty prompt
        other = c.namespace("m", "fp32", None, 2, prompt="q: ")
        assert other != ns and not c.get(other, [text_key("x")])[1].any()
    with EmbeddingCache(path) as c:  # opened again: already schema 2
        assert c.namespace("m", "fp32", None, 2, prompt="q: ") == other

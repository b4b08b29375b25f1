"""Prompts and the model's similarity reach the corpus, the cache, ``embed search`` and the Index.

Oracle: sentence-transformers itself on tiny random-weight folders (tests/st_tiny.py), one cosine
model with query/document prompts and one whose similarity_fn_name is "dot" (no Normalize module,
so its raw vectors are not unit length). The corpus output must equal
``SentenceTransformer(folder).encode_document(texts)`` (normalized for the cosine model, raw for
the dot model), ``embed search`` must equal a brute-force numpy search with ST's ``encode_query``
vectors, and the cache must never serve a vector embedded with another prompt.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engine import Embedder, InputError
from engine.corpus import embed_corpus
from engine.corpus.cache import EmbeddingCache, encode_cached
from engine.corpus.readers import text_key
from engine.corpus.shards import iter_shards, read_manifest
from tests.conftest import SENTENCES
from tests.st_tiny import build_transformer, write_stack

PROMPTS = {"query": "query: ", "document": "passage: ", "other": "represent this: "}
TEXTS = [
    *SENTENCES,
    "héllo wörld café naïve",
    "tokenizers split words into word pieces",
    "",
    "the quick brown fox jumps over the lazy dog " * 6,
]
QUERIES = ["fast fox", "python compiler", "vectors of numbers", "time"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return build_transformer(tmp_path_factory.mktemp("prompt-bert") / "bert", "bert")


@pytest.fixture(scope="module")
def st_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("prompt-cache")


def _folder(bert, tmp_path_factory, name, **stack):
    folder = shutil.copytree(bert, tmp_path_factory.mktemp(name) / "model")
    return write_stack(folder, prompts=PROMPTS, **stack)


@pytest.fixture(scope="module")
def cosine_model(bert, tmp_path_factory, st_cache):
    folder = _folder(bert, tmp_path_factory, "cos", pooling="mean", normalize=False)
    return folder, Embedder(str(folder), cache_dir=st_cache)


@pytest.fixture(scope="module")
def dot_model(bert, tmp_path_factory, st_cache):
    folder = _folder(bert, tmp_path_factory, "dot", pooling="mean", normalize=False, similarity_fn_name="dot")
    return folder, Embedder(str(folder), cache_dir=st_cache)


def _st(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _write(path, texts):
    path.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def _vectors(out):
    return np.concatenate([v for _, _, v in iter_shards(out)])


@pytest.mark.parametrize("which", ["cosine", "dot"])
def test_corpus_equals_encode_document(tmp_path, cosine_model, dot_model, which):
    folder, emb = cosine_model if which == "cosine" else dot_model
    src = _write(tmp_path / "c.jsonl", TEXTS)
    embed_corpus(src, tmp_path / "out", emb, cache=False, shard_size=4)
    ref = _st(folder).encode_document(TEXTS)
    got = _vectors(tmp_path / "out")
    if which == "cosine":
        np.testing.assert_allclose(got, _unit(ref), atol=1e-5)
    else:  # raw: exactly what sentence-transformers gives, not unit length
        assert np.abs(np.linalg.norm(ref, axis=1) - 1).max() > 0.1
        np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(ref).max())
    m = read_manifest(tmp_path / "out")
    assert m["prompts"] == {"document": "passage: ", "query": "query: "}
    assert m["similarity_fn_name"] == which and m["normalize"] == (which == "cosine")
    assert m["settings"]["prompt"] == "passage: " and m["settings"]["normalize"] == (which == "cosine")


def test_prompt_name_and_prompt(tmp_path, cosine_model):
    folder, emb = cosine_model
    src = _write(tmp_path / "c.jsonl", TEXTS)
    st = _st(folder)
    embed_corpus(src, tmp_path / "named", emb, cache=False, prompt_name="other")
    np.testing.assert_allclose(_vectors(tmp_path / "named"), _unit(st.encode(TEXTS, prompt_name="other")), atol=1e-5)
    embed_corpus(src, tmp_path / "text", emb, cache=False, prompt="find: ")
    np.testing.assert_allclose(_vectors(tmp_path / "text"), _unit(st.encode(TEXTS, prompt="find: ")), atol=1e-5)
    assert read_manifest(tmp_path / "text")["settings"]["prompt"] == "find: "
    embed_corpus(src, tmp_path / "none", emb, cache=False, prompt="")  # no prompt: no "prompt" setting
    np.testing.assert_allclose(_vectors(tmp_path / "none"), _unit(st.encode(TEXTS)), atol=1e-5)
    m = read_manifest(tmp_path / "none")
    assert "prompt" not in m["settings"] and m["prompts"] == {"document": "", "query": "query: "}
    with pytest.raises(InputError, match="prompt_name 'nope'"):
        embed_corpus(src, tmp_path / "bad", emb, cache=False, prompt_name="nope")


def test_rerun_with_another_prompt_is_refused(tmp_path, cosine_model):
    _, emb = cosine_model
    src = _write(tmp_path / "c.jsonl", TEXTS)
    embed_corpus(src, tmp_path / "out", emb, cache=False, shard_size=4)
    with pytest.raises(InputError, match="prompt: 'passage: ' then, 'find: ' now"):
        embed_corpus(src, tmp_path / "out", emb, cache=False, shard_size=4, prompt="find: ")
    again = embed_corpus(src, tmp_path / "out", emb, cache=False, shard_size=4, prompt_name="document")
    assert again.resumed == len(TEXTS) and again.embedded == 0  # the same prompt text: same settings


def test_no_prompt_keeps_the_settings_of_outputs_written_before_prompts(tmp_path, tiny_embedder):
    """A model without prompts adds no "prompt" setting: old outputs resume (their done records match)."""
    from engine.corpus.driver import TEXT_FORMAT
    from engine.corpus.shards import settings_digest

    src = _write(tmp_path / "c.jsonl", TEXTS)
    embed_corpus(src, tmp_path / "out", tiny_embedder, cache=False)
    settings = read_manifest(tmp_path / "out")["settings"]
    assert settings == {
        "model": tiny_embedder.fingerprint,
        "precision": "fp32",
        "truncate_dim": None,
        "normalize": True,
        "dim": tiny_embedder.dim,
        "id_field": "_id",
        "text_field": "text",
        "title_field": "title",
        "shard_size": 10_000,
        "text_format": TEXT_FORMAT,
    }
    done = json.loads((tmp_path / "out" / "shard-00000.done.json").read_text())
    assert done["settings_sha256"] == settings_digest(settings)


# -- the cache ------------------------------------------------------------------------------
def test_same_text_two_prompts_two_namespaces(tmp_path, cosine_model):
    """Fails if the prompt is left out of the namespace: the second run would get the first's vectors."""
    folder, emb = cosine_model
    cache = tmp_path / "emb.sqlite"
    src = _write(tmp_path / "c.jsonl", TEXTS)
    first = embed_corpus(src, tmp_path / "a", emb, cache=cache)
    second = embed_corpus(src, tmp_path / "b", emb, cache=cache, prompt="find: ")
    assert first.embedded == second.embedded == len(set(TEXTS)) and second.cache_hits == 0
    np.testing.assert_allclose(_vectors(tmp_path / "b"), _unit(_st(folder).encode(TEXTS, prompt="find: ")), atol=1e-5)
    third = embed_corpus(src, tmp_path / "c", emb, cache=cache, prompt="find: ")  # now a hit, of its own prompt
    assert third.cache_hits == len(TEXTS) and third.embedded == 0
    np.testing.assert_array_equal(_vectors(tmp_path / "c"), _vectors(tmp_path / "b"))
    with EmbeddingCache(cache) as c:
        args = (emb.fingerprint, emb.precision, None, emb.dim)
        a, b = c.namespace(*args, prompt="passage: "), c.namespace(*args, prompt="find: ")
        assert a != b and c.count(a) == c.count(b) == len(set(TEXTS))
        assert c.namespace(*args) == c.namespace(*args, prompt="") != a


def test_encode_cached_prompt(tmp_path, cosine_model, dot_model):
    for folder, emb in (cosine_model, dot_model):
        path = tmp_path / f"{emb.similarity_fn_name}.sqlite"
        st = _st(folder)
        plain = encode_cached(emb, TEXTS, path)
        with_prompt = encode_cached(emb, TEXTS, path, prompt="find: ")
        ref_plain, ref_prompt = st.encode(TEXTS), st.encode(TEXTS, prompt="find: ")
        if emb.similarity_fn_name == "cosine":
            ref_plain, ref_prompt = _unit(ref_plain), _unit(ref_prompt)
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


# -- embed search: the manifest's query prompt and similarity --------------------------------
def _brute_force(doc_vecs, query_vecs, k):
    s = query_vecs.astype(np.float64) @ doc_vecs.T.astype(np.float64)
    i = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, i, 1), i


@pytest.mark.parametrize("which", ["cosine", "dot"])
def test_embed_search_equals_brute_force_with_st_vectors(
    tmp_path, cosine_model, dot_model, st_cache, which, monkeypatch, capsys
):
    from engine.cli import main

    folder, _emb = cosine_model if which == "cosine" else dot_model
    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(st_cache))
    docs = TEXTS[:8]  # distinct texts: no tied scores
    src = _write(tmp_path / "c.jsonl", docs)
    out = tmp_path / "out"
    assert main(["encode", str(src), "-o", str(out), "--model", str(folder), "--no-cache", "-q"]) == 0
    capsys.readouterr()
    st = _st(folder)
    d, q = st.encode_document(docs), st.encode_query(QUERIES)
    if which == "cosine":
        d, q = _unit(d), _unit(q)
    want_s, want_i = _brute_force(d, q, 5)
    for extra, qv in (
        ([], None),
        (["--prompt-name", "other"], st.encode(QUERIES, prompt_name="other")),
        (["--prompt", ""], st.encode(QUERIES)),
    ):
        if qv is not None:
            want_s, want_i = _brute_force(d, _unit(qv) if which == "cosine" else qv, 5)
        assert main(["search", str(out), *QUERIES, "-k", "5", "--json", *extra]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["query"] for r in rows] == QUERIES
        got_i = [[int(h["id"][1:]) for h in r["hits"]] for r in rows]
        got_s = np.array([[h["score"] for h in r["hits"]] for r in rows])
        assert got_i == want_i.tolist(), extra
        np.testing.assert_allclose(got_s, want_s, atol=1e-5 * max(1.0, np.abs(want_s).max()))


def test_load_index_follows_the_manifest(tmp_path, cosine_model, dot_model):
    from engine.corpus.shards import load_index

    src = _write(tmp_path / "c.jsonl", TEXTS)
    for _, emb in (cosine_model, dot_model):
        out = tmp_path / emb.similarity_fn_name
        embed_corpus(src, out, emb, cache=False)
        for precision in ("fp32", "int8"):
            index, _, _ = load_index(out, precision=precision)
            assert index.metric == emb.similarity_fn_name


def test_ray_path_uses_the_same_prompt(tmp_path, cosine_model, st_cache):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'embed-engine[ray]')")
    from engine.corpus.ray import embed_corpus_ray

    folder, emb = cosine_model
    src = _write(tmp_path / "c.jsonl", TEXTS)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for kw in ({}, {"prompt_name": "other"}):
            local, remote = tmp_path / f"local{len(kw)}", tmp_path / f"ray{len(kw)}"
            embed_corpus(src, local, emb, cache=False, shard_size=4, **kw)
            embed_corpus_ray(src, remote, str(folder), cache_dir=st_cache, actors=1, cache=False, shard_size=4, **kw)
            np.testing.assert_allclose(_vectors(remote), _vectors(local), atol=1e-6)
            assert read_manifest(remote)["settings"] == read_manifest(local)["settings"]
            assert read_manifest(remote)["prompts"] == read_manifest(local)["prompts"]
        assert read_manifest(tmp_path / "ray1")["settings"]["prompt"] == PROMPTS["other"]
    finally:
        ray.shutdown()


@pytest.mark.parametrize(
    "edit", [{"prompts": "query: "}, {"prompts": {"query": 3}}, {"normalize": "yes"}, {"similarity_fn_name": "jaccard"}]
)
def test_damaged_prompt_fields_in_the_manifest(tmp_path, cosine_model, edit):
    from engine.errors import IndexFormatError

    _, emb = cosine_model
    embed_corpus(_write(tmp_path / "c.jsonl", TEXTS[:3]), tmp_path / "out", emb, cache=False)
    path = tmp_path / "out" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(IndexFormatError, match=f"manifest.json: {next(iter(edit))}"):
        read_manifest(tmp_path / "out")

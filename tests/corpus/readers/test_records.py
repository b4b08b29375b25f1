"""The record model (``engine.corpus.readers.records``): the one title+text rule, the cache key, ids and
fields, the checks on every record's id and text (missing, null, of another type, empty, a lone surrogate),
and the on_bad protocol: every caller embeds the same string for a record."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.corpus.readers import (
    ANY_TEXT,
    Fields,
    compose,
    expand_inputs,
    iter_documents,
    read_documents,
    read_sample,
    text_key,
)
from engine.errors import InputError
from tests.conftest import write_beir
from tests.corpus.readers.test_files import read
from tests.corpus.test_driver import write_jsonl


def beir_rule(title: str, text: str) -> str:
    """BEIR's evaluation rule, written out: the oracle."""
    return (title + " " + text).strip()


@pytest.mark.parametrize(
    "title, text, want",
    [
        ("T", "body", "T body"),
        ("", "body", "body"),
        ("T", "", "T"),
        ("", "", ""),
        ("", " x ", "x"),  # BEIR strips; the old corpus rule kept " x "
        (" T ", "body\n", "T  body"),  # inner white space is kept
        ("T", "   ", "T"),
    ],
    ids=["both", "no-title", "no-text", "empty", "padded-text", "padded-both", "blank-text"],
)
def test_compose_is_beirs_rule(title, text, want):
    assert compose(title, text) == want == beir_rule(title, text)


@given(st.text(), st.text())
def test_compose_matches_the_oracle(title, text):
    assert compose(title, text) == beir_rule(title, text)


def test_compose_title_and_text():
    assert compose("T", "body") == "T body"
    assert compose("", "body") == "body"
    assert compose("T", "") == "T"
    assert compose("", "") == ""


TRICKY = [
    {"_id": "a", "title": "Title", "text": "body"},
    {"_id": "b", "title": "", "text": "  padded body  "},
    {"_id": "c", "text": "no title field"},
    {"_id": "d", "title": None, "text": "null title"},
    {"_id": "e", "title": " Spaced ", "text": " text "},
    {"_id": 7, "title": "int id", "text": "x"},
]


def test_every_caller_embeds_the_same_string(tmp_path):
    """embed encode (iter_documents), embed eval (load_beir), the lab and the bench harness."""
    from engine.benchmark.data import read_corpus
    from engine.eval.evaluate import load_beir
    from engine.eval.lab import load_texts

    want = [beir_rule(d.get("title") or "", d["text"]) for d in TRICKY]
    root = write_beir(tmp_path / "ds", TRICKY, [{"_id": "q", "text": " query "}], [("q", "a", 1)])
    corpus = root / "corpus.jsonl"
    assert [d.text for d in iter_documents(expand_inputs(corpus))] == want
    ds = load_beir(root)
    assert ds.doc_texts == want and ds.doc_ids == ["a", "b", "c", "d", "e", "7"]
    assert ds.query_texts == ["query"]
    assert load_texts(corpus)[1] == want
    assert read_corpus(corpus) == want


def test_doc_key_is_the_cache_key_of_the_text():
    doc = read_sample("sample_corpus.jsonl")[0]
    assert doc.key == text_key(doc.text) == hashlib.sha256(doc.text.encode("utf-8")).digest()
    assert text_key("\ud800") == hashlib.sha256(b"\xed\xa0\x80").digest()  # lone surrogates do not raise


def test_read_sample_corpus_and_queries():
    docs = read_sample()
    lines = resources.files("engine").joinpath("data", "sample_corpus.jsonl").read_text().splitlines()
    raw = [json.loads(line) for line in lines if line.strip()]
    assert len(docs) == len(raw) == 200 and docs[10].id == "d011"
    assert [d.text for d in docs] == [beir_rule(r["title"], r["text"]) for r in raw]
    queries = read_sample("sample_queries.jsonl", Fields(title=None, extra=("relevant",)))
    assert queries[0].id == "q01" and queries[0].extra == (["d181", "d182", "d187"],)
    assert all(q.extra[0] for q in queries)


def test_ids_from_line_numbers_and_text_fallbacks(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(
        '{"title": "T", "text": "one"}\n\n{"sentence": "two"}\n{"text": "", "body": "three"}\n'
        '{"sentence": "four", "text": "text wins"}\n'
    )
    docs = read_documents(p, ANY_TEXT)
    assert [(d.id, d.text) for d in docs] == [("1", "T one"), ("3", "two"), ("4", "three"), ("5", "text wins")]
    q = tmp_path / "d.jsonl"
    q.write_text('{"title": "only a title"}\n')
    with pytest.raises(InputError, match=r"d\.jsonl:1: no text field 'text' or 'sentence' or 'body'"):
        read_documents(q, ANY_TEXT)
    # several files: a line-number id says which file
    t = tmp_path / "e.txt"
    t.write_text("x\n")
    docs = read_documents([p, t], ANY_TEXT)
    assert docs[0].id == f"{p}:1" and docs[-1].id == f"{t}:1"


# -- one record's id, text and fields ----------------------------------------------------------
def test_jsonl_custom_fields_and_no_title(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [{"doc": "x1", "body": "hello", "title": "ignored"}])
    docs = read(p, fields=Fields(id="doc", text="body", title=None))
    assert [(d.id, d.text) for d in docs] == [("x1", "hello")]


def test_jsonl_missing_text_field_lists_fields_and_flag(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [{"_id": "a", "body": "x", "title": "t"}])
    with pytest.raises(
        InputError, match=r"c\.jsonl:1: no text field 'text' \(fields: _id, body, title\).*--text-field"
    ):
        read(p)
    p2 = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "x"}])
    with pytest.raises(InputError, match=r"no id field '_id' \(fields: id, text\).*--id-field"):
        read(p2)


@pytest.mark.parametrize(
    "record, pattern",
    [
        ({"_id": "a", "text": None}, "field 'text' is null"),
        ({"_id": "a", "text": 3}, "field 'text' is int"),
        ({"_id": None, "text": "x"}, "id field '_id' is null"),
        ({"_id": [1], "text": "x"}, "id field '_id' is list"),
        ({"_id": "", "text": "x"}, "id field '_id' is empty"),
        ([1, 2], "not an object"),
        ({"_id": "a", "text": "\ud800"}, "lone surrogate"),
    ],
    ids=["null-text", "int-text", "null-id", "list-id", "empty-id", "array", "surrogate"],
)
def test_jsonl_bad_values(tmp_path, record, pattern):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=pattern):
        read(p)


def test_surrogate_id_rejected(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "a\\ud800", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="lone surrogate"):
        read(p)


# -- errors and the on_bad protocol ---------------------------------------------------------------
def test_read_documents_errors_name_file_and_line_without_the_skip_hint(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": null}\n')
    with pytest.raises(InputError, match=r"c\.jsonl:2: field 'text' is null") as e:
        read_documents(p)
    assert "--skip-bad" not in str(e.value)
    with pytest.raises(InputError, match=r"c\.jsonl:2: field 'text' is null.*--skip-bad"):  # embed encode's path
        list(iter_documents([p]))
    with pytest.raises(InputError, match="does not exist"):
        read_documents(tmp_path / "missing.jsonl")


def test_beir_loader_uses_the_reader_errors(tmp_path):
    from engine.eval.evaluate import load_beir

    root = write_beir(tmp_path / "ds", [{"_id": "a", "text": "x"}], [{"_id": "q", "text": "y"}], [("q", "a", 1)])
    (root / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"\n')
    with pytest.raises(InputError, match=r"corpus\.jsonl:2: invalid JSON"):
        load_beir(root)
    (root / "corpus.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="corpus not found"):
        load_beir(root)

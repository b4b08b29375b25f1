"""engine/benchmark/data.py: texts cut to a token target, the corpus reader, the data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine import InputError
from engine.benchmark.data import build_texts, data_dir, read_corpus


def _count(words):
    return [1 + len(w) // 4 for w in words]  # a stand-in tokenizer: 1 token per 4 characters


@pytest.mark.parametrize("target", [8, 16, 64, 256])
def test_build_texts_hits_the_token_target(target):
    docs = read_corpus()
    texts = build_texts(docs, _count, target, n=50, special_tokens=2)
    assert len(texts) == 50
    toks = np.array([sum(_count(t.split())) + 2 for t in texts])
    assert toks.max() <= target or target <= 4
    assert toks.mean() >= target * 0.8  # greedy fill stops only when the next word does not fit
    assert len(set(texts)) > 40


def test_build_texts_wraps_a_small_corpus_into_distinct_texts():
    docs = ["alpha beta gamma delta", "epsilon zeta eta theta iota"]
    texts = build_texts(docs, lambda ws: [1] * len(ws), target_tokens=5, n=12, special_tokens=2)
    assert all(len(t.split()) == 3 for t in texts)
    assert len(set(texts)) >= 6
    # a corpus shorter than one text: every text is the whole stream (rotated), nothing loops forever
    one = build_texts(["a b"], lambda ws: [1] * len(ws), target_tokens=100, n=3)
    assert len(one) == 3 and all(sorted(t.split()) == ["a", "b"] for t in one)


def test_build_texts_with_real_tokenizer(tiny_embedder):
    specials = len(tiny_embedder.tokenize([""])[0])
    count = lambda ws: [len(x) - specials for x in tiny_embedder.tokenize(ws)]
    texts = build_texts(read_corpus(), count, 12, n=20, special_tokens=specials)
    lens = [len(x) for x in tiny_embedder.tokenize(texts)]
    assert max(lens) <= 12 and min(lens) >= 6


def test_read_corpus_formats(tmp_path):
    assert len(read_corpus()) == 200  # the built-in sample
    j = tmp_path / "c.jsonl"
    j.write_text('{"_id": "1", "title": "T", "text": "body one"}\n\n{"text": "two"}\n{"sentence": "three"}\n')
    assert read_corpus(j) == ["T body one", "two", "three"]
    t = tmp_path / "c.txt"
    t.write_text("line one\n\n  line two  \n")
    assert read_corpus(t) == ["line one", "line two"]
    with pytest.raises(InputError, match="does not exist"):
        read_corpus(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:1: invalid JSON"):
        read_corpus(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(InputError, match="no text"):
        read_corpus(empty)


# -- the data folder ---------------------------------------------------------------------
def test_data_dir_follows_the_env_variable(tmp_path, monkeypatch):
    (tmp_path / "stsb").mkdir()
    (tmp_path / "stsb" / "sts-dev.csv").write_text("x\n")
    monkeypatch.setenv("EMBED_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    assert data_dir("stsb", "sts-dev.csv") == tmp_path / "stsb" / "sts-dev.csv"


def test_data_dir_defaults_to_shared_data_beside_the_checkout(monkeypatch):
    import engine

    monkeypatch.delenv("EMBED_DATA_DIR", raising=False)
    want = Path(engine.__file__).resolve().parents[1].parent / "shared" / "data"
    assert data_dir(must_exist=False) == want
    assert data_dir("scifact", must_exist=False) == want / "scifact"


def test_data_dir_missing_names_the_env_variable(tmp_path, monkeypatch):
    from tests.conftest import shared_data

    monkeypatch.setenv("EMBED_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist.*set EMBED_DATA_DIR to the folder"):
        data_dir()
    with pytest.raises(FileNotFoundError, match=r"scifact.*EMBED_DATA_DIR="):
        data_dir("scifact")
    assert data_dir("scifact", must_exist=False) == tmp_path / "nowhere" / "scifact"
    # the tests' wrapper skips, with the same reason
    with pytest.raises(pytest.skip.Exception, match="EMBED_DATA_DIR"):
        shared_data("scifact")

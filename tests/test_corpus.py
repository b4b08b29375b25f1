"""Corpus readers (jsonl, csv, tsv, parquet, text) incl. bad input, and embed_corpus / embed encode
/ embed search end to end on the tiny model."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.corpus.readers import Doc, Fields, compose, count_records, expand_inputs, iter_documents
from engine.errors import InputError, ModelMismatchError


def write_jsonl(path: Path, records) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records)
    return path


def read(paths, **kw) -> list[Doc]:
    paths = [paths] if isinstance(paths, Path) else paths
    return list(iter_documents(expand_inputs(paths), **kw))


def collect_bad():
    bad = []
    return bad, lambda where, msg: bad.append((where, msg))


# -- readers ---------------------------------------------------------------------------------
def test_compose_title_and_text():
    assert compose("T", "body") == "T body"
    assert compose("", "body") == "body"
    assert compose("T", "") == "T"
    assert compose("", "") == ""


def test_jsonl_beir(tmp_path):
    p = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"_id": "a", "title": "Title A", "text": "alpha"},
            {"_id": 7, "text": "no title"},  # integer id -> "7"
            "",  # blank line: skipped
            {"_id": "c", "title": "", "text": ""},  # empty text: kept, embedded as ""
            {"_id": "d", "title": None, "text": "null title"},
        ],
    )
    docs = read(p)
    assert [(d.id, d.text, d.title) for d in docs] == [
        ("a", "Title A alpha", "Title A"),
        ("7", "no title", ""),
        ("c", "", ""),
        ("d", "null title", ""),
    ]
    assert docs[0].where == f"{p}:1" and docs[2].where == f"{p}:4"
    assert count_records([p]) == 5  # newline count: an upper bound for the progress bar


def test_jsonl_custom_fields_and_no_title(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [{"doc": "x1", "body": "hello", "title": "ignored"}])
    docs = read(p, fields=Fields(id="doc", text="body", title=None))
    assert [(d.id, d.text) for d in docs] == [("x1", "hello")]


def test_jsonl_invalid_json_names_file_and_line(tmp_path):
    p = write_jsonl(
        tmp_path / "c.jsonl", [{"_id": "a", "text": "ok"}, '{"_id": "b", "text": ', {"_id": "c", "text": "ok"}]
    )
    with pytest.raises(InputError, match=r"c\.jsonl:2: invalid JSON .*--skip-bad"):
        read(p)
    bad, on_bad = collect_bad()
    assert [d.id for d in read(p, on_bad=on_bad)] == ["a", "c"]
    assert bad[0][0] == f"{p}:2" and "invalid JSON" in bad[0][1]


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


def test_non_utf8_names_line_and_byte_offset(tmp_path):
    p = tmp_path / "c.jsonl"
    good = b'{"_id": "a", "text": "ok"}\n'
    p.write_bytes(good + b'{"_id": "b", "text": "caf\xe9"}\n' + b'{"_id": "c", "text": "ok"}\n')
    offset = len(good) + len(b'{"_id": "b", "text": "caf')
    with pytest.raises(InputError, match=rf"c\.jsonl:2: not valid UTF-8 \(byte offset {offset} .*iconv"):
        read(p)
    bad, on_bad = collect_bad()
    assert [d.id for d in read(p, on_bad=on_bad)] == ["a", "c"]
    assert len(bad) == 1


def test_utf8_bom_is_ignored(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"_id": "a", "text": "x"}).encode() + b"\n")
    assert [d.id for d in read(p)] == ["a"]


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_csv_and_tsv(tmp_path, fmt):
    p = tmp_path / f"c.{fmt}"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="," if fmt == "csv" else "\t")
        w.writerow(["_id", "title", "text", "extra"])
        w.writerow(["1", "T", "multi\nline, quoted", "x"])
        w.writerow(["2", "", "plain", "y"])
    docs = read(p)
    assert [(d.id, d.text) for d in docs] == [("1", "T multi\nline, quoted"), ("2", "plain")]
    assert docs[1].where == f"{p}:4"  # the first record spans lines 2-3


def test_csv_missing_column_and_bad_rows(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("_id,body\n1,x\n", encoding="utf-8")
    with pytest.raises(
        InputError, match=r"no text column 'text' in the header \(columns: _id, body\); name it with --text-field"
    ):
        read(p)
    p.write_bytes(b"_id,text\n1,one\n2,two,extra\n3,caf\xe9\n4,four\n")
    with pytest.raises(InputError, match=r"c\.csv:3: row has 3 fields, the header has 2"):
        read(p)
    bad, on_bad = collect_bad()
    assert [d.id for d in read(p, on_bad=on_bad)] == ["1", "4"]
    assert [w for w, _ in bad] == [f"{p}:3", f"{p}:4"]
    assert "not valid UTF-8" in bad[1][1]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "c.parquet"
    table = pa.table({"_id": ["a", "b", "c"], "title": ["T", None, ""], "text": ["one", "two", None]})
    pq.write_table(table, p, row_group_size=2)
    with pytest.raises(InputError, match=r"c\.parquet: row 3: field 'text' is null"):
        read(p)
    bad, on_bad = collect_bad()
    docs = read(p, on_bad=on_bad)
    assert [(d.id, d.text) for d in docs] == [("a", "T one"), ("b", "two")]
    assert bad == [(f"{p}: row 3", "field 'text' is null")]
    assert count_records([p]) == 3
    pq.write_table(pa.table({"id": [1], "body": ["x"]}), p)
    with pytest.raises(InputError, match=r"no id column '_id' \(columns: id, body\)"):
        read(p)
    docs = read(p, fields=Fields(id="id", text="body"))
    assert [(d.id, d.text) for d in docs] == [("1", "x")]  # integer ids become strings


def test_damaged_parquet_input_names_the_file(tmp_path):
    """A truncated file, a non-Parquet file and flipped bytes give an InputError naming the input (never a
    pyarrow exception, nor an OSError the CLI would report as an output error); counting skips them."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"_id": [str(i) for i in range(50)], "text": [f"doc {i}" for i in range(50)]}), good)
    raw = good.read_bytes()
    cases = {"truncated": raw[: len(raw) // 2], "not-parquet": b"_id,text\n1,hello\n" * 10}
    for name, data in cases.items():
        p = tmp_path / f"{name}.parquet"
        p.write_bytes(data)
        with pytest.raises(InputError, match=rf"{name}\.parquet: not a readable Parquet file .*complete"):
            read(p)
        assert count_records([p]) is None
    for at in range(4, len(raw) - 8, max(1, len(raw) // 60)):  # flips anywhere: a clear error or rows
        p = tmp_path / "flip.parquet"
        p.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :])
        try:
            read(p, on_bad=lambda where, msg: None)
        except InputError as e:
            assert "flip.parquet" in str(e)


def test_text_ids_are_line_numbers(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("first\n\nthird\r\n", encoding="utf-8")
    assert [(d.id, d.text) for d in read(a)] == [("1", "first"), ("3", "third")]
    b = tmp_path / "b.txt"
    b.write_text("other\n", encoding="utf-8")
    ids = [d.id for d in read([a, b])]
    assert ids == [f"{a}:1", f"{a}:3", f"{b}:1"]


def test_inputs_globs_and_missing(tmp_path):
    for name in ("b.jsonl", "a.jsonl"):
        write_jsonl(tmp_path / name, [{"_id": name, "text": "x"}])
    assert [p.name for p in expand_inputs(str(tmp_path / "*.jsonl"))] == ["a.jsonl", "b.jsonl"]
    # a file named twice is read once
    assert len(expand_inputs([tmp_path / "a.jsonl", str(tmp_path / "*.jsonl")])) == 2
    with pytest.raises(InputError, match="no files match"):
        expand_inputs(str(tmp_path / "*.csv"))
    with pytest.raises(InputError, match="does not exist"):
        expand_inputs(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="is a directory"):
        expand_inputs(tmp_path)


# -- embed_corpus end to end -----------------------------------------------------------------
def synth(n: int, start: int = 0) -> list[dict]:
    words = ["fox", "dog", "vector", "numba", "onnx", "tokens", "cosine", "stitch"]
    return [
        {
            "_id": f"doc{i}",
            "title": f"title {i}" if i % 3 else "",
            "text": " ".join(words[(i * k) % len(words)] for k in range(1, 2 + i % 9)),
        }
        for i in range(start, start + n)
    ]


def load_output(out: Path):
    from engine.corpus.shards import iter_shards

    ids, titles, vecs = [], [], []
    for i, t, v in iter_shards(out):
        ids += i
        titles += t
        vecs.append(v)
    return ids, titles, np.concatenate(vecs) if vecs else np.empty((0, 0), np.float32)


def test_embed_corpus_matches_embedder(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus

    docs = [*synth(45), {"_id": "empty", "text": ""}]
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    s = embed_corpus(src, tmp_path / "out", tiny_embedder, shard_size=20, cache=False)
    assert (s.docs, s.shards, s.embedded, s.cache_hits, s.resumed) == (46, 3, 46, 0, 0)
    ids, titles, vecs = load_output(tmp_path / "out")
    assert ids == [d["_id"] for d in docs]
    texts = [compose(d.get("title", ""), d["text"]) for d in docs]
    np.testing.assert_allclose(vecs, tiny_embedder.encode(texts), atol=1e-6)
    np.testing.assert_allclose(vecs[-1], tiny_embedder.encode(""), atol=1e-6)  # "" as sentence-transformers
    assert titles[1] == "title 1" and titles[0] == docs[0]["text"]  # title, else a text snippet
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["count"] == 46
    assert [sh["count"] for sh in manifest["shards"]] == [20, 20, 6]
    assert manifest["model"]["fingerprint"] == tiny_embedder.fingerprint
    assert manifest["inputs"][0]["size"] == src.stat().st_size


class BackgroundExecutor:
    """An executor of the Ray shape without Ray: results only when asked, last submitted first."""

    def __init__(self, embedder, batch: int, capacity: int):
        from engine.corpus.driver import LocalExecutor

        self.local, self.batch, self.capacity = LocalExecutor(embedder), batch, capacity
        self.queued: list = []
        self.most = 0  # the most texts ever queued at once
        self.repeats = 0  # texts submitted while the same text was still queued

    def submit(self, texts, tag):
        queued = {t for _, q in self.queued for t in q}
        self.repeats += len(texts) - len(set(texts) - queued)
        self.queued.append((tag, texts))
        self.most = max(self.most, sum(len(t) for _, t in self.queued))

    def next(self):
        tag, texts = self.queued.pop()
        return (tag, *self.local.embed(texts))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.queued = []


def test_driver_with_shards_in_flight(tmp_path, tiny_embedder):
    """Out-of-order results and several shards open (Ray's shape) give the local output byte for
    byte, with the documents in flight bounded by the driver's window."""
    from engine.corpus import embed_corpus
    from engine.corpus.driver import EMBED_CHUNK, Plan, drive, model_ref

    src = write_jsonl(tmp_path / "c.jsonl", synth(300))  # texts repeat within and across shards
    local = embed_corpus(src, tmp_path / "local", tiny_embedder, shard_size=40, cache=False)
    plan = Plan.build(expand_inputs(src), tiny_embedder, model_ref(tiny_embedder), Fields(), None, 40)
    ex = BackgroundExecutor(tiny_embedder, batch=EMBED_CHUNK, capacity=30)  # window max(2*40, 2*30) = 80 docs
    s = drive(plan, tmp_path / "bg", ex, cache=False)
    assert 40 < ex.most <= 80 + 40  # more than one shard out at once, never more than window + a shard
    assert ex.repeats == 0  # a text in flight is not sent again (its repeats wait for it)
    assert (s.docs, s.embedded, s.cache_hits, s.shards, s.shards_written) == (300, 300, 0, 8, 8)
    assert local.as_dict() | {"seconds": 0, "docs_per_s": 0} == s.as_dict() | {
        "out_dir": local.out_dir,
        "seconds": 0,
        "docs_per_s": 0,
    }
    for f in (tmp_path / "local").iterdir():
        assert f.name == ".lock" or f.read_bytes() == (tmp_path / "bg" / f.name).read_bytes(), f.name
    assert len(list((tmp_path / "bg").iterdir())) == len(list((tmp_path / "local").iterdir()))

    # with a cache and small batches: the vectors are the local ones; a second run embeds nothing
    cache = tmp_path / "emb.sqlite"
    first = drive(plan, tmp_path / "bg1", BackgroundExecutor(tiny_embedder, batch=7, capacity=30), cache=cache)
    again = drive(plan, tmp_path / "bg2", BackgroundExecutor(tiny_embedder, batch=7, capacity=30), cache=cache)
    assert first.embedded + first.cache_hits == 300 and first.cache_hits > 0
    assert (again.embedded, again.cache_hits) == (0, 300)
    for out in ("bg1", "bg2"):
        ids, _, vecs = load_output(tmp_path / out)
        assert ids == [d["_id"] for d in synth(300)]
        np.testing.assert_allclose(vecs, load_output(tmp_path / "local")[2], atol=1e-6)


def test_truncate_dim(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus

    src = write_jsonl(tmp_path / "c.jsonl", synth(10))
    embed_corpus(src, tmp_path / "out", tiny_embedder, truncate_dim=8, cache=False)
    _, _, vecs = load_output(tmp_path / "out")
    assert vecs.shape == (10, 8)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


def test_duplicate_ids(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus

    a = write_jsonl(tmp_path / "a.jsonl", synth(5))
    b = write_jsonl(tmp_path / "b.jsonl", [{"_id": "doc2", "text": "again"}, {"_id": "new", "text": "x"}])
    with pytest.raises(InputError, match=rf"b\.jsonl:1: duplicate id 'doc2' \(first seen at {a}:3\)"):
        embed_corpus([a, b], tmp_path / "out", tiny_embedder, shard_size=2, cache=False)
    s = embed_corpus([a, b], tmp_path / "out", tiny_embedder, shard_size=2, cache=False, skip_bad=True)
    assert (s.docs, s.rejected) == (6, 1)
    assert load_output(tmp_path / "out")[0] == [f"doc{i}" for i in range(5)] + ["new"]
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert rejects == [{"where": f"{b}:1", "error": f"duplicate id 'doc2' (first seen at {a}:3)"}]


def test_bad_record_keeps_finished_shards(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus

    src = write_jsonl(tmp_path / "c.jsonl", [*synth(10), "{broken", *synth(5, start=10)])
    with pytest.raises(InputError, match=r"c\.jsonl:11: invalid JSON"):
        embed_corpus(src, tmp_path / "out", tiny_embedder, shard_size=4, cache=False)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.done.json")) == [
        "shard-00000.done.json",
        "shard-00001.done.json",
    ]  # docs 0-7 were written before the error
    s = embed_corpus(src, tmp_path / "out", tiny_embedder, shard_size=4, cache=False, skip_bad=True)
    assert (s.docs, s.rejected, s.resumed, s.shards) == (15, 1, 8, 4)


def test_rerun_with_other_settings_refused(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus

    src = write_jsonl(tmp_path / "c.jsonl", synth(6))
    out = tmp_path / "out"
    embed_corpus(src, out, tiny_embedder, shard_size=4, cache=False)
    with pytest.raises(InputError, match=r"other settings \(shard_size: 4 then, 3 now\).*--overwrite"):
        embed_corpus(src, out, tiny_embedder, shard_size=3, cache=False)
    with pytest.raises(InputError, match=r"title_field: 'title' then, None now"):
        embed_corpus(src, out, tiny_embedder, shard_size=4, title_field=None, cache=False)
    s = embed_corpus(src, out, tiny_embedder, shard_size=3, cache=False, overwrite=True)
    assert (s.shards, s.resumed) == (2, 0)
    assert sorted(p.name for p in out.glob("shard-*.npy")) == ["shard-00000.npy", "shard-00001.npy"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"not empty and has no manifest.json"):
        embed_corpus(src, other, tiny_embedder, cache=False)


def test_model_mismatch_refused(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus

    src = write_jsonl(tmp_path / "c.jsonl", synth(3))
    out = tmp_path / "out"
    embed_corpus(src, out, tiny_embedder, cache=False)
    m = json.loads((out / "manifest.json").read_text())
    m["settings"]["model"] = "other/fp32/32/0000"
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelMismatchError, match="model: 'other/fp32/32/0000' then"):
        embed_corpus(src, out, tiny_embedder, cache=False)


def test_shrinking_corpus_drops_stale_shards(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus

    src = write_jsonl(tmp_path / "c.jsonl", synth(10))
    out = tmp_path / "out"
    embed_corpus(src, out, tiny_embedder, shard_size=3, cache=False)
    write_jsonl(src, synth(4))
    s = embed_corpus(src, out, tiny_embedder, shard_size=3, cache=False)
    assert (s.docs, s.shards, s.resumed) == (4, 2, 3)
    assert sorted(p.name for p in out.glob("shard-*")) == sorted(
        f"shard-0000{i}.{ext}" for i in range(2) for ext in ("npy", "jsonl", "done.json")
    )


def test_search_corpus(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus
    from engine.corpus.shards import CorpusSearcher

    docs = synth(30)
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    embed_corpus(src, tmp_path / "out", tiny_embedder, shard_size=7, cache=False)
    for precision in ("fp32", "int8"):
        s = CorpusSearcher(tmp_path / "out", model=tiny_embedder, precision=precision)
        hits = s.search([compose(docs[13]["title"], docs[13]["text"])], k=3)[0]
        # the tiny random model maps near-identical synthetic docs (doc5: same words plus one)
        # to cosines within ~1e-5 of each other, so only require doc13 to tie for first place
        by_id = {h[0]: h for h in hits}
        assert "doc13" in by_id and by_id["doc13"][1] == pytest.approx(1.0, abs=1e-4)
        assert hits[0][1] - by_id["doc13"][1] <= 1e-4
        assert by_id["doc13"][2] == "title 13"


def test_search_incomplete_output_refused(tmp_path, tiny_embedder):
    from engine.corpus.shards import CorpusSearcher
    from engine.errors import IndexFormatError

    src = write_jsonl(tmp_path / "c.jsonl", synth(3))
    out = tmp_path / "out"
    from engine.corpus import embed_corpus

    embed_corpus(src, out, tiny_embedder, cache=False)
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**m, "status": "in_progress"}))
    with pytest.raises(IndexFormatError, match=r"incomplete.*rerun the same embed encode"):
        CorpusSearcher(out, model=tiny_embedder)
    (out / "manifest.json").write_text(json.dumps(m))
    with open(out / "shard-00000.npy", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\0")
    with pytest.raises(IndexFormatError, match="does not match its checksum"):
        CorpusSearcher(out, model=tiny_embedder)


def test_cli_encode_and_search(tmp_path, tiny_model_dir, tiny_cache, tiny_embedder, monkeypatch, capsys):
    from engine.cli import main

    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(tiny_cache))
    docs = synth(12)
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    out = tmp_path / "out"
    args = [
        "encode",
        str(src),
        "-o",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--shard-size",
        "5",
        "--cache",
        str(tmp_path / "emb.sqlite"),
        "--quiet",
        "--json",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["docs"], summary["embedded"], summary["shards"]) == (12, 12, 3)
    assert main(["search", str(out), compose(docs[4]["title"], docs[4]["text"]), "-k", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].split()[:3] == ["1", "1.0000", "doc4"] and printed[1].endswith("title 4")
    # a bad record: the error names file and line, exit code 1
    bad = write_jsonl(tmp_path / "bad.jsonl", ["{nope"])
    assert (
        main(["encode", str(bad), "-o", str(tmp_path / "out2"), "--model", str(tiny_model_dir), "--no-cache", "-q"])
        == 1
    )
    assert "bad.jsonl:1: invalid JSON" in capsys.readouterr().err


def test_surrogate_id_rejected(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "a\\ud800", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="lone surrogate"):
        read(p)


@pytest.mark.parametrize("output_format", ["npy", "parquet"])
def test_file_names_that_are_not_utf8(tmp_path, tiny_embedder, output_format):
    """A file name with bytes that are not UTF-8 (PEP 383: lone surrogates in the str) is recorded in the
    manifest (a JSON escape that reads back to the same name), spelled with \\x escapes in row-number ids and
    in the duplicate-id message, and the output reads back; nothing raises UnicodeEncodeError."""
    import os

    from engine.corpus import embed_corpus, load_embeddings
    from engine.corpus.shards import read_manifest

    if output_format == "parquet":
        pytest.importorskip("pyarrow")
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/docs-\xff.jsonl")
    assert "\udcff" in odd
    write_jsonl(Path(odd), [*synth(3), {"_id": "doc1", "text": "again"}])
    other = write_jsonl(tmp_path / "b.jsonl", synth(2))
    out = tmp_path / "out"
    s = embed_corpus([odd, other], out, tiny_embedder, id_field=None, cache=False, output_format=output_format)
    assert s.docs == 6
    ids, vecs = load_embeddings(out)
    shown = f"{tmp_path}/docs-\\xff.jsonl"
    assert ids == [f"{shown}:{i}" for i in range(1, 5)] + [f"{other}:1", f"{other}:2"]
    np.testing.assert_allclose(
        vecs[:3], tiny_embedder.encode([compose(d["title"], d["text"]) for d in synth(3)]), atol=1e-6
    )
    assert read_manifest(out)["inputs"][0]["path"] == odd  # the name itself, as a JSON escape
    s = embed_corpus([odd], tmp_path / "dup", tiny_embedder, cache=False, skip_bad=True, output_format=output_format)
    assert s.rejected == 1
    (reject,) = [json.loads(x) for x in (tmp_path / "dup" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert reject == {"where": f"{odd}:4", "error": f"duplicate id 'doc1' (first seen at {shown}:2)"}


@pytest.mark.parametrize(
    "pattern,out",
    [
        ("data/**/*.jsonl", "data/out"),
        ("**/*.jsonl", "data/out"),
        ("*/*/*.jsonl", "data/out"),
        ("data/*/*.jsonl", "data/out/"),
    ],
)
def test_output_folder_inside_the_input_pattern_is_refused(tmp_path, tiny_embedder, monkeypatch, pattern, out):
    """Before: the first run worked, the rerun read its own shards as input (and --overwrite deleted
    the output, then failed). Now the pattern matching the output's files is refused by name,
    before anything is written; the same layout with a pattern that misses the output works."""
    from engine.corpus import embed_corpus

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "part").mkdir(parents=True)
    write_jsonl(tmp_path / "data" / "part" / "c.jsonl", synth(5))
    with pytest.raises(
        InputError,
        match=rf"the input pattern '{re.escape(pattern)}' matches the files of the "
        rf"output folder {out}.*a rerun would read its own output",
    ):
        embed_corpus(pattern, out, tiny_embedder, cache=False)
    assert not (tmp_path / out).exists()
    for _ in range(2):  # not a match: the first run and its rerun (resume) read the one input
        s = embed_corpus("data/part/*.jsonl", out, tiny_embedder, cache=False)
        assert s.docs == 5


def test_input_file_inside_the_output_folder_is_refused(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus

    out = tmp_path / "out"
    embed_corpus(write_jsonl(tmp_path / "c.jsonl", synth(5)), out, tiny_embedder, cache=False)
    before = {p: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for overwrite in (False, True):
        with pytest.raises(InputError, match=rf"the input {out}/shard-00000.jsonl is inside the output folder {out}"):
            embed_corpus(
                [tmp_path / "c.jsonl", out / "shard-00000.jsonl"], out, tiny_embedder, cache=False, overwrite=overwrite
            )
        assert {p: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing deleted


def test_cache_pointing_at_the_input_is_refused_and_the_input_kept(tmp_path, tiny_embedder):
    """Before: --cache naming the run's own input renamed it aside (<name>.corrupt-...) and replaced
    it by an empty cache. Now: an InputError; the input is unchanged."""
    from engine.corpus import embed_corpus

    src = write_jsonl(tmp_path / "c.jsonl", synth(5))
    before = src.read_bytes()
    with pytest.raises(InputError, match=rf"{src} is not an embedding cache \(not an SQLite file\)"):
        embed_corpus(src, tmp_path / "out", tiny_embedder, cache=src)
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "out"]


def test_model_precision_is_the_corpus_drivers_name_too(tiny_model_dir, tiny_cache, tmp_path):
    """embed_corpus(model_precision=) builds the model at that precision; precision= is its former name
    (DeprecationWarning, same output); an output precision there is refused with the right place for it."""
    from engine.corpus import embed_corpus, load_embeddings

    src = tmp_path / "docs.txt"
    src.write_text("one document\nanother document\n")
    kw = {"cache": False, "cache_dir": tiny_cache}
    embed_corpus([src], tmp_path / "new", str(tiny_model_dir), model_precision="int8", **kw)
    with pytest.warns(DeprecationWarning, match=r"embed_corpus\(precision=\.\.\.\) is now embed_corpus\(model_"):
        embed_corpus([src], tmp_path / "old", str(tiny_model_dir), precision="int8", **kw)
    new, old = load_embeddings(tmp_path / "new"), load_embeddings(tmp_path / "old")
    assert json.loads((tmp_path / "new" / "manifest.json").read_text())["model"]["precision"] == "int8"
    np.testing.assert_array_equal(new[1], old[1])
    with pytest.raises(InputError, match="quantizes output vectors"):
        embed_corpus([src], tmp_path / "bad", str(tiny_model_dir), model_precision="float32", **kw)

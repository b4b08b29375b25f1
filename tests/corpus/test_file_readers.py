"""The corpus readers (jsonl, csv, tsv, parquet, text) incl. bad input: the reader tests that were in
tests/test_corpus.py, next to the reader package's own tests in tests/corpus/readers/."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from engine.corpus.readers import Doc, Fields, compose, count_records, expand_inputs, iter_documents
from engine.errors import InputError
from tests.corpus.test_driver import write_jsonl


def read(paths, **kw) -> list[Doc]:
    paths = [paths] if isinstance(paths, Path) else paths
    return list(iter_documents(expand_inputs(paths), **kw))


def collect_bad():
    bad = []
    return bad, lambda where, msg: bad.append((where, msg))


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


def test_surrogate_id_rejected(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "a\\ud800", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="lone surrogate"):
        read(p)

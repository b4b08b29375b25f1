"""The file readers (``engine.corpus.readers.files``): JSON lines, CSV/TSV, Parquet and text (ids, line
numbers, fallback fields, bad rows, non-UTF-8 bytes, a BOM), inputs and globs, untrusted files (CSV
quoting, damaged gzip and Parquet, lone surrogates, what the JSON parser cannot read), pipes, and unknown
file types."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from engine.corpus.readers import Doc, Fields, count_records, expand_inputs, iter_documents, read_documents
from engine.errors import InputError
from tests.corpus.test_driver import write_jsonl


def read(paths, **kw) -> list[Doc]:
    """The documents of ``paths`` (a path or a list), read as ``embed encode`` reads them."""
    paths = [paths] if isinstance(paths, Path) else paths
    return list(iter_documents(expand_inputs(paths), **kw))


def collect_bad():
    """(the list of (where, message) pairs, an on_bad that appends to it)."""
    bad = []
    return bad, lambda where, msg: bad.append((where, msg))


# -- JSON lines ----------------------------------------------------------------------------------
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


def test_jsonl_invalid_json_names_file_and_line(tmp_path):
    p = write_jsonl(
        tmp_path / "c.jsonl", [{"_id": "a", "text": "ok"}, '{"_id": "b", "text": ', {"_id": "c", "text": "ok"}]
    )
    with pytest.raises(InputError, match=r"c\.jsonl:2: invalid JSON .*--skip-bad"):
        read(p)
    bad, on_bad = collect_bad()
    assert [d.id for d in read(p, on_bad=on_bad)] == ["a", "c"]
    assert bad[0][0] == f"{p}:2" and "invalid JSON" in bad[0][1]


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


# -- CSV / TSV, Parquet, plain text ----------------------------------------------------------------
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


def test_text_ids_are_line_numbers(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("first\n\nthird\r\n", encoding="utf-8")
    assert [(d.id, d.text) for d in read(a)] == [("1", "first"), ("3", "third")]
    b = tmp_path / "b.txt"
    b.write_text("other\n", encoding="utf-8")
    ids = [d.id for d in read([a, b])]
    assert ids == [f"{a}:1", f"{a}:3", f"{b}:1"]


def test_csv_and_parquet_with_fallback_fields_and_extras(tmp_path):
    c = tmp_path / "c.csv"
    c.write_text("sentence,label\n  first  ,x\nsecond,y\n")
    docs = read_documents(c, Fields(id=None, text=("text", "sentence"), extra=("label", "missing")))
    assert [(d.id, d.text, d.extra) for d in docs] == [("2", "first", ("x", None)), ("3", "second", ("y", None))]
    with pytest.raises(InputError, match=r"no text column 'text' or 'body' in the header \(columns: sentence, label\)"):
        read_documents(c, Fields(id=None, text=("text", "body")))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pth = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": ["b1", "b2"], "title": ["T", None], "label": ["l1", "l2"]}), pth)
    docs = read_documents(pth, Fields(id=None, text=("text", "body"), extra=("label",)))
    assert [(d.id, d.text, d.extra) for d in docs] == [("1", "T b1", ("l1",)), ("2", "b2", ("l2",))]


def test_plain_text_lines_follow_the_rule(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("  padded line \n\n   \nplain\n")
    assert [(d.id, d.text) for d in read_documents(p)] == [("1", "padded line"), ("4", "plain")]


# -- inputs and globs -----------------------------------------------------------------------------
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


# -- untrusted files: CSV quoting, damaged gzip and Parquet, lone surrogates ----------------------
def read_skipping(paths):
    """(docs as (id, text, where), rejects as (where, message)) with an on_bad that collects."""
    rejects = []
    docs = list(iter_documents(expand_inputs(paths), Fields(), lambda where, msg: rejects.append((where, msg))))
    return [(d.id, d.text, d.where) for d in docs], rejects


def test_csv_unterminated_quote_is_an_error_not_merged_rows(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text('_id,text\nq1,"unterminated quote\nq2,fine\nq3,also fine\n')
    with pytest.raises(
        InputError,
        match=r"q\.csv:2: unterminated quote.*runs to the end of the file, line 4.*"
        r"Close the quote.*--skip-bad",
    ):
        list(iter_documents([p]))
    with pytest.raises(InputError, match=r"q\.csv:2: unterminated quote"):
        read_documents(p)
    # skip_bad: one record lost, the lines it swallowed are read again as records
    docs, rejects = read_skipping(p)
    assert docs == [("q2", "fine", f"{p}:3"), ("q3", "also fine", f"{p}:4")]
    assert [w for w, _ in rejects] == [f"{p}:2"] and "unterminated quote" in rejects[0][1]


def test_csv_strict_quoting_names_the_line_where_the_record_starts(tmp_path):
    p = tmp_path / "s.tsv"
    p.write_text(
        "_id\ttext\n"
        'a\t"multi\nline" kept?\n'  # 2-3: text after the closing quote
        'b\t"two\nlines"\n'  # 4-5: a valid quoted field with a newline
        'c\tsaid "hi" inside\n'  # 6: a quote inside an unquoted field is text
        'd\t"open\n"e\tx\n'  # 7-8: a quote that closes too early
        "f\tlast\n"
    )
    with pytest.raises(InputError, match=r"s\.tsv:2: malformed CSV \('\t' expected after '\"' at line 3\)"):
        read_documents(p)
    docs, rejects = read_skipping(p)
    assert docs == [("b", "two\nlines", f"{p}:4"), ("c", 'said "hi" inside', f"{p}:6"), ("f", "last", f"{p}:9")]
    assert [w for w, _ in rejects] == [f"{p}:2", f"{p}:7"]


def test_csv_a_field_over_the_limit_always_raises(tmp_path, monkeypatch):
    import engine.corpus.readers.files as files

    p = tmp_path / "big.csv"
    p.write_text('_id,text\na,"' + "x" * 50 + "\nb,ok\n" + "y" * 100 + "\n")
    monkeypatch.setattr(files, "CSV_FIELD_LIMIT", 64)
    for on_bad in (None, lambda where, msg: None):  # not skippable: where the field ends is unknown
        with pytest.raises(InputError, match=r"big\.csv:2: a field longer than 64 characters .* quote left open"):
            list(iter_documents([p], Fields(), on_bad))
    assert csv.field_size_limit() == 64  # set deliberately, for the whole process
    monkeypatch.undo()
    assert read_documents(_write(tmp_path / "ok.csv", "_id,text\na,b\n"))[0].text == "b"
    assert csv.field_size_limit() == files.CSV_FIELD_LIMIT == 32 << 20


def _write(path, text):
    path.write_text(text)
    return path


def _gzip_cases(tmp_path, suffix, header, lines):
    """(name, path, the number of lines decompressed before the damage) for damaged .gz files."""
    import gzip

    data = (header + "".join(lines)).encode()
    whole = gzip.compress(data)
    truncated = tmp_path / f"trunc{suffix}.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    with gzip.open(truncated, "rb") as f, pytest.raises(EOFError):  # the oracle: what gzip itself reads
        decompressed = []
        for raw in f:
            decompressed.append(raw)
    not_gzip = tmp_path / f"plain{suffix}.gz"
    not_gzip.write_bytes(data)
    return [("truncated", truncated, len(decompressed)), ("not-gzip", not_gzip, 0)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".txt"])
def test_damaged_gzip_is_an_input_error_or_a_reject(tmp_path, suffix):
    n = 3000
    if suffix == ".jsonl":
        header, lines = "", [json.dumps({"_id": f"d{i}", "text": f"document {i} text"}) + "\n" for i in range(n)]
    elif suffix == ".csv":
        header, lines = "_id,text\n", [f'd{i},"document {i}, text"\n' for i in range(n)]
    else:
        header, lines = "", [f"document {i} text\n" for i in range(n)]
    good = _write(tmp_path / f"good{suffix}", header + "".join(lines))
    full = [text for _, text, _ in read_skipping(good)[0]]
    assert len(full) == n
    for name, path, reached in _gzip_cases(tmp_path, suffix, header, lines):
        with pytest.raises(
            InputError,
            match=rf"{path.name}:{reached + 1}: damaged gzip data .*"
            rf"{'lines 1-' + str(reached) + ' were read' if reached else 'nothing'}"
            r".*gzip -t.*--skip-bad",
        ):
            list(iter_documents([path]))
        with pytest.raises(InputError, match=rf"{path.name}:{reached + 1}: damaged gzip data"):
            read_documents(path)
        # skip_bad: what was read before the damage is kept, the rest of that file is skipped,
        # the next file is read
        docs, rejects = read_skipping([path, good])
        kept = reached - (suffix == ".csv") if reached else 0  # the CSV header is not a document
        assert [text for _, text, _ in docs] == full[:kept] + full, name
        assert rejects == [(f"{path}:{reached + 1}", rejects[0][1])]
        assert "damaged gzip data" in rejects[0][1] and "the rest of the file is skipped" in rejects[0][1]


def test_gzip_damaged_inside_a_quoted_csv_field_is_one_reject(tmp_path):
    import gzip

    body = "_id,text\n" + "".join(f'd{i},"line one\nline two {i}"\n' for i in range(2000))
    whole = gzip.compress(body.encode())
    p = tmp_path / "cut.csv.gz"
    p.write_bytes(whole[: len(whole) // 2])
    docs, rejects = read_skipping(p)
    assert len(rejects) == 1 and "damaged gzip data" in rejects[0][1]
    assert docs and all(text == f"line one\nline two {i}" for i, (_, text, _) in enumerate(docs))


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


def test_lone_surrogates_never_reach_the_embedder(tmp_path):
    """A "\\ud800" JSON escape (text or title) and CESU-8 surrogate bytes (CSV, text) are bad records."""
    j = _write(
        tmp_path / "s.jsonl",
        '{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "x\\ud800y"}\n'
        '{"_id": "c", "title": "\\udfff", "text": "t"}\n{"_id": "d", "text": "fine"}\n',
    )
    with pytest.raises(InputError, match=r"s\.jsonl:2: text holds an invalid character \(a lone surrogate at 1\)"):
        read_documents(j)
    c = tmp_path / "s.csv"
    c.write_bytes(b"_id,text\na,ok\nb,x\xed\xa0\x80y\nd,fine\n")
    t = tmp_path / "s.txt"
    t.write_bytes(b"ok\nx\xed\xa0\x80y\nfine\n")
    for path, bad in ((j, ["2", "3"]), (c, ["3"]), (t, ["2"])):
        docs, rejects = read_skipping(path)
        assert [text for _, text, _ in docs] == ["ok", "fine"]
        assert [w for w, _ in rejects] == [f"{path}:{n}" for n in bad]
        for _, text, _ in docs:
            text.encode("utf-8")  # every document can be tokenized


def test_a_pipe_is_read_once_and_not_counted(tmp_path):
    """`embed encode <(zcat corpus.jsonl.gz) --format jsonl`: the pipe has no suffix (--format says
    what it holds) and is not read ahead for the progress bar, which would drain it."""
    import os
    import threading

    fifo = tmp_path / "63"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n'))
    writer.start()
    try:
        inputs = expand_inputs(fifo, format="jsonl")
        assert count_records(inputs, "jsonl") is None
        assert [d.id for d in iter_documents(inputs, Fields(), None, "jsonl")] == ["a", "b"]
    finally:
        writer.join(timeout=10)
    with pytest.raises(InputError, match="has no file extension"):
        expand_inputs(fifo)


@pytest.mark.parametrize(
    "record,why",
    [
        ('{"_id": "a", "text": "x", "n": 1' + "0" * 5000 + "}", "Exceeds the limit"),  # int() refuses > 4300 digits
        ('{"_id": "a", "text": "x", "n": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deep"),
    ],
    ids=["5000-digit-number", "nested-100000-deep"],
)
def test_a_record_the_json_parser_cannot_read_is_that_records_error(tmp_path, record, why):
    """Whatever json.loads raises (ValueError for a huge number, RecursionError for deep nesting)
    is one bad record: rejected with skip_bad, an InputError naming file and line without it."""
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "1", "text": "first"}\n' + record + '\n{"_id": "3", "text": "third"}\n')
    with pytest.raises(InputError, match=rf"c\.jsonl:2: .*{why}.*--skip-bad"):
        list(iter_documents([p]))
    docs, rejects = read_skipping(p)
    assert docs == [("1", "first", f"{p}:1"), ("3", "third", f"{p}:3")]
    assert [w for w, _ in rejects] == [f"{p}:2"] and why in rejects[0][1]


# -- unknown file types ----------------------------------------------------------------------
def test_unknown_file_types_are_errors(tmp_path, tiny_model_dir, tiny_cache, monkeypatch, capsys):
    from engine.cli import main

    pd = pytest.importorskip("pandas")

    xlsx = tmp_path / "a.xlsx"
    xlsx.write_bytes(b"PK\x03\x04 not text")
    with pytest.raises(
        InputError,
        match=r"a\.xlsx: unknown file type '\.xlsx'; embed reads \.jsonl/\.ndjson/\.json "
        r"\(JSON lines\), \.csv, .*\.txt .*each also \.gz\. Convert it .*--format",
    ):
        read_documents(xlsx)
    bare = tmp_path / "corpus"
    bare.write_text("x\n")
    with pytest.raises(
        InputError,
        match=r"corpus has no file extension, so its format is unknown.*--format "
        r"jsonl\|csv\|tsv\|text\|parquet",
    ):
        read_documents(bare)
    with pytest.raises(InputError, match=r"unknown file type '\.xlsx'"):  # a glob does not hide it
        expand_inputs(str(tmp_path / "a.*"))
    with pytest.raises(InputError, match=r"unknown format 'xlsx'; choose one of jsonl, csv"):
        read_documents(bare, format="xlsx")
    with pytest.raises(InputError, match=r"parquet cannot be read from standard input"):
        expand_inputs("-", format="parquet")
    with pytest.raises(InputError, match=r"format='csv' applies to files and stdin, not to a DataFrame"):
        expand_inputs(pd.DataFrame({"text": ["x"]}), format="csv")
    # the command: exit 1, the message, nothing written
    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(tiny_cache))
    out = tmp_path / "out"
    assert main(["encode", str(xlsx), "-o", str(out), "--model", str(tiny_model_dir), "--no-cache", "-q"]) == 1
    assert "unknown file type '.xlsx'" in capsys.readouterr().err
    assert not out.exists()
    assert (
        main(
            [
                "encode",
                str(bare),
                "-o",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--no-cache",
                "-q",
                "--format",
                "text",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["docs"] == 1

"""In-memory sources (``engine.corpus.readers.sources``) and stdin: a DataFrame, Arrow tables and
streams, Hugging Face datasets, iterables of dicts or strings and stdin give the ids, titles and
vectors of the equivalent JSON lines file (the oracle: the jsonl path of the same embed_corpus), bad
inputs give errors naming the source and row, and a rerun over the same or an edited DataFrame
resumes shard by shard."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.corpus.readers import Fields, Source, expand_inputs, read_documents
from engine.errors import InputError
from tests.corpus.test_driver import load_output, synth, write_jsonl

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")

N, SHARD = 23, 5  # 5 shards, the last one short


def records() -> list[dict]:
    """synth's records with the title field absent, null and empty here and there."""
    out = synth(N)
    del out[4]["title"]
    out[8]["title"] = None
    return out


def encode(inputs, out: Path, embedder, **kw):
    """(summary, (ids, titles, vectors)) of embed_corpus with the test's shard size and no cache."""
    from engine.corpus import embed_corpus

    s = embed_corpus(inputs, out, embedder, shard_size=SHARD, cache=False, **kw)
    return s, load_output(out)


def assert_same(got, want, exact: bool = True) -> None:
    (ids, titles, vecs), (want_ids, want_titles, want_vecs) = got, want
    assert ids == want_ids and titles == want_titles
    if exact:  # the same Embedder, the same texts in the same encode calls: the same bits
        np.testing.assert_array_equal(vecs, want_vecs)
    else:  # another process
        np.testing.assert_allclose(vecs, want_vecs, atol=1e-6)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, tiny_embedder):
    """The jsonl path's output for records()."""
    tmp = tmp_path_factory.mktemp("oracle")
    src = write_jsonl(tmp / "c.jsonl", records())
    return encode(src, tmp / "out", tiny_embedder)[1]


@pytest.fixture(scope="module")
def numbered_oracle(tmp_path_factory, tiny_embedder):
    """The jsonl path's output for records()' texts alone, with ids "1", "2", ... (row numbers)."""
    tmp = tmp_path_factory.mktemp("numbered")
    src = write_jsonl(tmp / "c.jsonl", [{"_id": str(i), "text": r["text"]} for i, r in enumerate(records(), 1)])
    return encode(src, tmp / "out", tiny_embedder)[1]


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of 4 rows, so a table is read across several batches (and shards across batches)."""
    import engine.corpus.readers.sources as sources

    monkeypatch.setattr(sources, "BATCH_ROWS", 4)


def _parquet_dataset(tmp_path: Path):
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    folder = tmp_path / "parts"
    folder.mkdir()
    table = pa.Table.from_pylist(records())
    pq.write_table(table.slice(0, 10), folder / "part-0.parquet", row_group_size=3)
    pq.write_table(table.slice(10), folder / "part-1.parquet", row_group_size=3)
    return pads.dataset(folder, format="parquet")


def _hf(kind: str):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(records())
    return ds if kind == "dataset" else ds.to_iterable_dataset()


SOURCES = {  # name: (source from a tmp folder, the manifest's kind and type)
    "dataframe": (lambda tmp: pd.DataFrame(records()), "pandas", "pandas.DataFrame"),
    "arrow-table": (lambda tmp: pa.Table.from_pylist(records()), "arrow", "pyarrow.Table"),
    "record-batch": (lambda tmp: pa.RecordBatch.from_pylist(records()), "arrow", "pyarrow.RecordBatch"),
    "record-batch-reader": (
        lambda tmp: pa.Table.from_pylist(records()).to_reader(max_chunksize=7),
        "arrow-stream",
        "pyarrow.RecordBatchReader",
    ),
    "arrow-dataset": (
        lambda tmp: __import__("pyarrow.dataset").dataset.dataset(pa.Table.from_pylist(records())),
        "arrow-dataset",
        "pyarrow.InMemoryDataset",
    ),
    "parquet-dataset": (_parquet_dataset, "arrow-dataset", "pyarrow.FileSystemDataset"),
    "hf-dataset": (lambda tmp: _hf("dataset"), "hf-dataset", "datasets.Dataset"),
    "hf-iterable-dataset": (lambda tmp: _hf("iterable"), "hf-dataset", "datasets.IterableDataset"),
    "list-of-dicts": (lambda tmp: records(), "iterable", "builtins.list"),
    "generator-of-dicts": (lambda tmp: (r for r in records()), "iterable", "builtins.generator"),
}


@pytest.mark.parametrize("name", list(SOURCES))
def test_source_matches_the_jsonl_file(name, tmp_path, tiny_embedder, oracle, small_batches):
    make, kind, type_ = SOURCES[name]
    s, got = encode(make(tmp_path), tmp_path / "out", tiny_embedder)
    assert (s.docs, s.shards) == (N, 5)
    assert_same(got, oracle)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["inputs"] == [{"kind": kind, "type": type_, "rows": N}]


def test_hf_dataset_keeps_its_row_order(tmp_path, tiny_embedder):
    """select / shuffle are an indices mapping over the table: the rows come in the dataset's order."""
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(records()).shuffle(seed=3).select(range(2, 20))
    by_id = {r["_id"]: r for r in records()}
    order = ds["_id"]
    assert order != sorted(order, key=lambda i: int(i[3:]))  # the shuffle did reorder
    src = write_jsonl(tmp_path / "c.jsonl", [by_id[i] for i in order])
    assert_same(encode(ds, tmp_path / "out", tiny_embedder)[1], encode(src, tmp_path / "ref", tiny_embedder)[1])


def test_strings_are_documents_numbered_by_row(tmp_path, tiny_embedder, numbered_oracle):
    texts = [r["text"] for r in records()]
    assert_same(encode((t for t in texts), tmp_path / "gen", tiny_embedder)[1], numbered_oracle)
    assert_same(encode(pd.Series(texts), tmp_path / "series", tiny_embedder)[1], numbered_oracle)
    # the same lines as a .txt file: line numbers, the same ids
    txt = tmp_path / "c.txt"
    txt.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    assert_same(encode(txt, tmp_path / "txt", tiny_embedder)[1], numbered_oracle)
    # a string is stripped by the one rule; an empty one is a document embedded as ""
    docs = read_documents(iter(["  padded  ", "", "x"]))
    assert [(d.id, d.text, d.where) for d in docs] == [
        ("1", "padded", "<list_iterator>: row 1"),
        ("2", "", "<list_iterator>: row 2"),
        ("3", "x", "<list_iterator>: row 3"),
    ]


def test_row_numbers_when_asked_for(tmp_path, tiny_embedder, numbered_oracle):
    """A missing id field is an error, unless id_field is None (or ''): then the row number is the id."""
    texts = [{"text": r["text"]} for r in records()]
    with pytest.raises(InputError, match=r"<list>: row 1: no id field '_id' \(fields: text\).*--id-field ''"):
        encode(texts, tmp_path / "err", tiny_embedder)
    assert_same(encode(texts, tmp_path / "list", tiny_embedder, id_field=None)[1], numbered_oracle)
    df = pd.DataFrame(texts)
    with pytest.raises(
        InputError,
        match=r"<DataFrame>: no id column '_id' \(columns: text\); name it with "
        r"--id-field, or pass --id-field '' \(id_field=None\) for row numbers",
    ):
        encode(df, tmp_path / "err2", tiny_embedder)
    assert_same(encode(df, tmp_path / "df", tiny_embedder, id_field="")[1], numbered_oracle)
    # a text-only CSV: the id is the line a record starts at (the header is line 1)
    csv = tmp_path / "c.csv"
    csv.write_text("text\n" + "".join(r["text"] + "\n" for r in records()), encoding="utf-8")
    ids, titles, vecs = encode(csv, tmp_path / "csv", tiny_embedder, id_field=None)[1]
    assert ids == [str(int(i) + 1) for i in numbered_oracle[0]]
    assert_same(([str(int(i) - 1) for i in ids], titles, vecs), numbered_oracle)


def test_stdin_subprocess(tmp_path, tiny_model_dir, tiny_cache, oracle, numbered_oracle):
    """`embed encode -`: JSON lines and plain text are told apart by the first line."""
    env = {**os.environ, "EMBED_ENGINE_CACHE": str(tiny_cache)}
    jsonl = "".join(json.dumps(r) + "\n" for r in records())
    text = "".join(r["text"] + "\n" for r in records())
    for name, data, want in (("jsonl", jsonl, oracle), ("text", text, numbered_oracle)):
        out = tmp_path / name
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "engine",
                "encode",
                "-",
                "-o",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--no-cache",
                "--shard-size",
                str(SHARD),
                "-q",
                "--json",
            ],
            input=data.encode(),
            capture_output=True,
            env=env,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr.decode()
        assert json.loads(run.stdout)["docs"] == N
        assert_same(load_output(out), want, exact=False)
        info = json.loads((out / "manifest.json").read_text())["inputs"]
        assert info == [{"kind": "stdin", "format": name}]


def _stdin(monkeypatch, data: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode("utf-8"))))


def test_stdin_formats_in_process(tmp_path, tiny_model_dir, tiny_cache, monkeypatch, capsys, oracle, numbered_oracle):
    from engine.cli import main

    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(tiny_cache))
    base = ["--model", str(tiny_model_dir), "--no-cache", "--shard-size", str(SHARD), "-q"]
    # CSV cannot be detected: --format says it
    rows = [[r["_id"], r.get("title") or "", r["text"]] for r in records()]
    buf = io.StringIO()
    __import__("csv").writer(buf).writerows([["_id", "title", "text"], *rows])
    _stdin(monkeypatch, buf.getvalue())
    assert main(["encode", "-", "--format", "csv", "-o", str(tmp_path / "out"), "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out)["docs"] == N
    assert_same(load_output(tmp_path / "out"), oracle)
    # a text-only CSV with --id-field '': line numbers (the header is line 1)
    _stdin(monkeypatch, "text\n" + "".join(r["text"] + "\n" for r in records()))
    assert main(["encode", "-", "--format", "csv", "--id-field", "", "-o", str(tmp_path / "ids"), *base]) == 0
    ids, titles, vecs = load_output(tmp_path / "ids")
    assert ids == [str(i) for i in range(2, N + 2)]
    assert_same(([str(int(i) - 1) for i in ids], titles, vecs), numbered_oracle)
    # a bad line names <stdin> and the line
    _stdin(monkeypatch, '\n{"_id": "a", "text": "x"}\n{"_id": "b", "text": 3}\n')
    assert main(["encode", "-", "-o", str(tmp_path / "bad"), *base]) == 1
    assert "<stdin>:3: field 'text' is int (3), not a string" in capsys.readouterr().err


def test_stdin_with_files_and_forced_formats(tmp_path, monkeypatch):
    a = tmp_path / "a.txt"
    a.write_text("file line\n")
    _stdin(monkeypatch, "\ufeff\n  first\n{not json\n")  # a BOM, a blank line, then text
    docs = read_documents([a, "-"])
    assert [(d.id, d.text) for d in docs] == [
        (f"{a}:1", "file line"),
        ("<stdin>:2", "first"),
        ("<stdin>:3", "{not json"),
    ]
    # an odd name read with a forced format
    odd = write_jsonl(tmp_path / "corpus.data", records()[:3])
    assert [d.id for d in read_documents(odd, format="jsonl")] == ["doc0", "doc1", "doc2"]
    gz = tmp_path / "corpus.gz"
    gz.write_bytes(__import__("gzip").compress(odd.read_bytes()))
    assert [d.text for d in read_documents(gz, format="jsonl")] == [d.text for d in read_documents(odd, format="jsonl")]


def test_resume_with_the_same_and_an_edited_dataframe(tmp_path, tiny_embedder):
    """Same DataFrame: every shard kept. One text edited: exactly its shard redone, and the output
    is the one a fresh run over the edited DataFrame writes (the per-shard content digest)."""
    df = pd.DataFrame(records())
    out = tmp_path / "out"
    first, _ = encode(df, out, tiny_embedder)
    assert (first.shards_written, first.embedded) == (5, N)
    again, _ = encode(df.copy(), out, tiny_embedder)
    assert (again.resumed, again.shards_written, again.embedded) == (N, 0, 0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"] == [{"kind": "pandas", "type": "pandas.DataFrame", "rows": N}]

    rows = records()
    rows[7]["text"] = "a changed text"  # row 8: shard 1
    edited = pd.DataFrame(rows)
    s, _got = encode(edited, out, tiny_embedder)
    assert (s.resumed, s.shards_written, s.embedded) == (N - SHARD, 1, SHARD)
    fresh = tmp_path / "fresh"
    encode(edited, fresh, tiny_embedder)
    for f in sorted(fresh.iterdir()):
        if f.name != ".lock":
            assert f.read_bytes() == (out / f.name).read_bytes(), f.name

    # a generator is read once; a new one over the same rows resumes; the manifest learns its length
    gen = (r for r in rows)
    s, _ = encode(gen, out, tiny_embedder)
    assert (s.resumed, s.shards_written) == (N, 0)
    assert json.loads((out / "manifest.json").read_text())["inputs"] == [
        {"kind": "iterable", "type": "builtins.generator", "rows": N}
    ]
    with pytest.raises(InputError, match="generator was read before and can be read only once"):
        encode(gen, out, tiny_embedder)
    assert len(list(out.glob("shard-*.npy"))) == 5  # the output is untouched


def test_duplicate_ids_in_a_dataframe(tmp_path, tiny_embedder):
    df = pd.DataFrame({"_id": ["a", "b", "a", "c"], "text": ["one", "two", "three", "four"]})
    with pytest.raises(InputError, match=r"<DataFrame>: row 3: duplicate id 'a' \(first seen at <DataFrame>: row 1\)"):
        encode(df, tmp_path / "out", tiny_embedder)
    s, (ids, _, _) = encode(df, tmp_path / "out", tiny_embedder, skip_bad=True)
    assert (s.docs, s.rejected, ids) == (3, 1, ["a", "b", "c"])
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert rejects == [{"where": "<DataFrame>: row 3", "error": "duplicate id 'a' (first seen at <DataFrame>: row 1)"}]


@pytest.mark.parametrize(
    "make, pattern",
    [
        (
            lambda: pd.DataFrame({"_id": ["a"], "body": ["x"]}),
            r"<DataFrame>: no text column 'text' \(columns: _id, body\); name it with --text-field",
        ),
        (
            lambda: pd.DataFrame({"_id": ["a", "b"], "text": ["x", 5]}),
            r"<DataFrame>: row 2: field 'text' is int \(5\), not a string",
        ),
        (lambda: pd.DataFrame({"_id": ["a", "b"], "text": ["x", None]}), r"<DataFrame>: row 2: field 'text' is null"),
        (
            lambda: pd.DataFrame({"_id": ["a", "b"], "text": ["x", float("nan")]}),
            r"<DataFrame>: row 2: field 'text' is null",
        ),
        (lambda: pd.DataFrame([["a", "x", "y"]], columns=["_id", "text", "text"]), r"columns named twice \(text\)"),
        (lambda: pa.table({"_id": ["a", "b"], "text": [1, 2]}), r"<Table>: row 1: field 'text' is int \(1\)"),
        (lambda: pa.table({"_id": [1.5], "text": ["x"]}), r"<Table>: row 1: id field '_id' is float"),
        (lambda: pa.chunked_array([["x"]]), r"a pyarrow ChunkedArray is not a corpus; pass a Table"),
        (lambda: {"_id": "a", "text": "x"}, r"inputs are a dict: one record, not a corpus; pass a list of dicts"),
        (lambda: {"a", "b"}, r"inputs are a set, which has no order"),
        (
            lambda: iter([{"_id": "a", "text": "x"}, 3]),
            r"<list_iterator>: row 2: a int \(3\), not a dict \(a record\) "
            r"or a string",
        ),
        (
            lambda: iter(["ok", "x\ud800"]),
            r"<list_iterator>: row 2: text holds an invalid character \(a lone surrogate",
        ),
        (lambda: [{"_id": "a", "text": "x"}, {"_id": "b"}], r"<list>: row 2: no text field 'text' \(fields: _id\)"),
        (lambda: 42, r"inputs of type int cannot be read as a corpus; pass files"),
        (lambda: b"a.jsonl", r"inputs are bytes"),
        (lambda: io.StringIO("x"), r"an open file; pass its path, or '-' for standard input"),
        (
            lambda: ["hello world", "another text"],
            r"input file 'hello world' does not exist \(a list of strings is a "
            r"list of file names: .*iter\(texts\)\)",
        ),
        (lambda: ["-", "-"], r"standard input \(-\) is named twice"),
    ],
    ids=[
        "df-missing-column",
        "df-int-text",
        "df-none-text",
        "df-nan-text",
        "df-duplicate-columns",
        "arrow-int-text",
        "arrow-float-id",
        "arrow-array",
        "dict",
        "set",
        "iterable-int-item",
        "iterable-surrogate",
        "list-missing-text",
        "int",
        "bytes",
        "open-file",
        "list-of-texts",
        "stdin-twice",
    ],
)
def test_bad_sources(make, pattern):
    with pytest.raises(InputError, match=pattern):
        read_documents(make())


def test_dataset_dict_names_its_splits():
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict(train=datasets.Dataset.from_list(records()[:2]))
    with pytest.raises(InputError, match=r"a DatasetDict holds splits \(train\); pass one of them, e.g. ds\['train'\]"):
        read_documents(dd)


def test_one_shot_sources_are_read_once():
    reader = pa.Table.from_pylist(records()).to_reader()
    assert len(read_documents(reader)) == N
    with pytest.raises(InputError, match="this RecordBatchReader was read before"):
        read_documents(reader)
    gen = (r for r in records())
    assert len(read_documents(gen)) == N
    with pytest.raises(InputError, match="this generator was read before"):
        read_documents(gen)
    rows = records()  # a list (and a DataFrame, a Table) can be read again
    assert read_documents(rows) == read_documents(rows)


def test_batches_are_bounded(monkeypatch):
    """One large record batch is read BATCH_ROWS rows at a time; a DataFrame the same."""
    import engine.corpus.readers.sources as sources

    monkeypatch.setattr(sources, "BATCH_ROWS", 4)
    batch = pa.RecordBatch.from_pylist(records())
    sizes = [n for n, _ in sources._arrow_batches(pa.RecordBatchReader.from_batches(batch.schema, [batch]), ["text"])]
    assert sizes == [4] * 5 + [3]
    parts = list(sources._pandas_batches(pd.DataFrame(records()), ["_id", "title"]))
    assert [n for n, _ in parts] == [4] * 5 + [3]
    assert parts[1][1]["title"][0] is None and parts[2][1]["title"][0] is None  # absent, None -> None


def test_source_kinds_and_fields():
    assert Fields(id="", title="") == Fields(id=None, title=None)
    assert [s.kind for s in expand_inputs(pd.DataFrame({"text": ["x"]}))] == ["pandas"]
    assert isinstance(expand_inputs("-")[0], Source) and str(expand_inputs("-")[0]) == "<stdin>"
    assert [str(s) for s in expand_inputs(pa.table({"text": ["x"]}))] == ["<Table>"]


def test_imports_stay_lazy():
    """Reading dicts and strings imports neither pandas nor pyarrow (nor datasets)."""
    code = (
        "import sys; from engine.corpus.readers import read_documents; import engine.corpus.driver, "
        "engine.cli.encode; read_documents([{'_id': 'a', 'text': 'x'}]); read_documents(iter(['y'])); "
        "print(sorted(m for m in ('pandas', 'pyarrow', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ray_reads_a_dataframe_on_the_driver(tmp_path, tiny_model_dir, tiny_cache, tiny_embedder, oracle):
    """The Ray path shares the driver, so in-memory sources need nothing of Ray."""
    ray = pytest.importorskip("ray")
    from engine.corpus.ray import embed_corpus_ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        s = embed_corpus_ray(
            pd.DataFrame(records()),
            tmp_path / "out",
            str(tiny_model_dir),
            cache_dir=tiny_cache,
            actors=1,
            shard_size=SHARD,
            cache=False,
            ray_batch_size=8,
        )
    finally:
        ray.shutdown()
    assert (s.docs, s.shards) == (N, 5)
    assert_same(load_output(tmp_path / "out"), oracle, exact=False)

"""Parquet output of ``embed encode`` / ``embed_corpus`` (``output_format="parquet"``) and ``load_embeddings``.

The oracle is the npy output of the same input: the Parquet shards must hold the same ids, titles
and vectors bit for bit, and read back the same through ``load_embeddings``, ``iter_shards``,
``CorpusSearcher``, pyarrow, pandas and DuckDB. Resume, the settings check and the untrusted-file
checks are the npy ones; damaged shards are edited with their checksums kept valid (``resign``)
so that the check under test is the one that fires.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow (pip install 'embed-engine[corpus]')")
pq = pytest.importorskip("pyarrow.parquet")

from engine.corpus import embed_corpus, load_embeddings  # noqa: E402
from engine.corpus.shards import CorpusSearcher, iter_shards, load_index, read_manifest  # noqa: E402
from engine.errors import IndexFormatError, InputError  # noqa: E402
from tests.test_resume import CHILD  # noqa: E402

N_DOCS, SHARD = 30, 8  # 4 shards, the last one short
PARQUET_FILES = ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet", "shard-00003.parquet"]


def synth(n: int) -> list[dict]:
    words = ["fox", "dog", "vector", "numba", "onnx", "tokens", "cosine", "stitch", "café", "日本語"]
    return [
        {
            "_id": f"doc-{i:03d}",
            "title": f"title {i}" if i % 3 else "",
            "text": " ".join(words[(i * k) % len(words)] for k in range(1, 2 + i % 9)),
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("pq-corpus") / "corpus.jsonl"
    p.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in synth(N_DOCS)), encoding="utf-8")
    return p


def encode(corpus, out, emb, fmt="parquet", **kw):
    return embed_corpus(corpus, out, emb, shard_size=SHARD, cache=False, output_format=fmt, **kw)


@pytest.fixture(scope="module")
def npy_out(corpus, tiny_embedder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pq-npy") / "out"
    encode(corpus, out, tiny_embedder, "npy")
    return out


@pytest.fixture(scope="module")
def pq_out(corpus, tiny_embedder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pq-parquet") / "out"
    s = encode(corpus, out, tiny_embedder)
    assert (s.docs, s.shards, s.shards_written) == (N_DOCS, 4, 4)
    return out


@pytest.fixture
def pq_copy(pq_out, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(pq_out, out, ignore=shutil.ignore_patterns(".lock"))
    return out


def output_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != ".lock"}


def shard_path(out: Path, i: int = 0) -> Path:
    return out / f"shard-{i:05d}.parquet"


def resign(out: Path, i: int = 0) -> None:
    """Make the manifest's and the done record's sha256 of shard i match its file again."""
    sha = hashlib.sha256(shard_path(out, i).read_bytes()).hexdigest()
    m = json.loads((out / "manifest.json").read_text())
    m["shards"][i]["sha256"]["table"] = sha
    (out / "manifest.json").write_text(json.dumps(m))
    done = out / f"shard-{i:05d}.done.json"
    rec = json.loads(done.read_text())
    rec["sha256"]["table"] = sha
    done.write_text(json.dumps(rec))


# -- the same content as npy -----------------------------------------------------------------
def test_parquet_holds_exactly_the_npy_output(npy_out, pq_out, tiny_embedder):
    assert sorted(p.name for p in pq_out.glob("shard-*")) == sorted(
        PARQUET_FILES + [f.replace(".parquet", ".done.json") for f in PARQUET_FILES]
    )
    dim = tiny_embedder.dim
    for (ids, titles, vectors), (pids, ptitles, pvectors) in zip(
        iter_shards(npy_out), iter_shards(pq_out), strict=True
    ):
        assert (pids, ptitles) == (ids, titles)
        np.testing.assert_array_equal(pvectors, vectors)
        assert pvectors.dtype == np.float32 and pvectors.flags.c_contiguous and pvectors.flags.writeable
    assert [t for _, ts, _ in iter_shards(pq_out) for t in ts][:2] == ["fox", "title 1"]  # snippet, then title
    # the file itself: the schema the README documents, one row per document
    table = pq.read_table(shard_path(pq_out))
    assert table.schema.equals(
        pa.schema([("id", pa.string()), ("title", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])
    )
    assert table.column("id").to_pylist() == [f"doc-{i:03d}" for i in range(SHARD)]
    np.testing.assert_array_equal(
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), np.load(npy_out / "shard-00000.npy")
    )
    # the manifest records the format; the settings hold it only when it is not npy (npy digests unchanged)
    m, mn = read_manifest(pq_out), read_manifest(npy_out)
    assert (m["output_format"], m["settings"]["output_format"]) == ("parquet", "parquet")
    assert mn["output_format"] == "npy" and "output_format" not in mn["settings"]
    assert {k: v for k, v in m["settings"].items() if k != "output_format"} == mn["settings"]
    assert m["shards"][0]["table"] == "shard-00000.parquet" and set(m["shards"][0]["sha256"]) == {"table"}
    assert m["shards"][0]["sha256"]["table"] == hashlib.sha256(shard_path(pq_out).read_bytes()).hexdigest()


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
def test_load_embeddings_both_formats(npy_out, pq_out, verify):
    want_ids = [f"doc-{i:03d}" for i in range(N_DOCS)]
    want = np.concatenate([np.load(npy_out / f"shard-{i:05d}.npy") for i in range(4)])  # the raw .npy files
    for out in (npy_out, pq_out):
        ids, vectors = load_embeddings(out, verify=verify)
        assert ids == want_ids
        assert vectors.dtype == np.float32 and vectors.shape == want.shape
        np.testing.assert_array_equal(vectors, want)


def test_load_embeddings_is_exported():
    import engine
    import engine.corpus

    assert engine.load_embeddings is engine.corpus.load_embeddings is load_embeddings
    assert "load_embeddings" in engine.__all__ and "load_embeddings" in engine.corpus.__all__


def _glob(out: Path) -> list[str]:
    """The README's way to list the shards for pyarrow and pandas."""
    files = sorted(glob.glob(f"{out}/*.parquet"))
    assert [Path(f).name for f in files] == PARQUET_FILES
    return files


def _check(want_ids, want, got_ids, got_vectors) -> None:
    assert list(got_ids) == want_ids
    np.testing.assert_array_equal(np.asarray(got_vectors, dtype=np.float32), want)


def test_pyarrow_round_trip(npy_out, pq_out):
    import pyarrow.dataset as ds

    ids, vectors = load_embeddings(npy_out)
    t = pq.read_table(_glob(pq_out))
    _check(ids, vectors, t.column("id").to_pylist(), np.stack(t.column("embedding").to_numpy(zero_copy_only=False)))
    t = ds.dataset(_glob(pq_out), format="parquet").to_table()
    _check(
        ids,
        vectors,
        t.column("id").to_pylist(),
        t.column("embedding").combine_chunks().flatten().to_numpy().reshape(len(ids), -1),
    )
    assert t.column("title").to_pylist() == [t for _, ts, _ in iter_shards(npy_out) for t in ts]
    with pytest.raises(pa.ArrowInvalid, match=r"manifest.json"):  # why the README gives the glob
        pq.read_table(pq_out)


def test_pandas_round_trip(npy_out, pq_out):
    pd = pytest.importorskip("pandas")
    ids, vectors = load_embeddings(npy_out)
    df = pd.read_parquet(_glob(pq_out))
    _check(ids, vectors, df["id"], np.stack(df["embedding"].to_numpy()))
    assert df["embedding"].iloc[0].dtype == np.float32


def test_duckdb_round_trip(npy_out, pq_out):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the test extra")
    ids, vectors = load_embeddings(npy_out)
    rows = duckdb.sql(f"SELECT id, embedding FROM '{pq_out}/*.parquet'").fetchall()
    got = {i: np.asarray(v, dtype=np.float32) for i, v in rows}
    assert sorted(got) == sorted(ids) and len(rows) == len(ids)
    for i, v in zip(ids, vectors):
        np.testing.assert_array_equal(got[i], v)
    where = f"WHERE len(embedding) = {vectors.shape[1]}"
    assert duckdb.sql(f"SELECT count(*) FROM '{pq_out}/*.parquet' {where}").fetchall() == [(len(ids),)]


def test_search_on_parquet_equals_npy(npy_out, pq_out, tiny_embedder):
    index, titles, _ = load_index(pq_out)
    _index_n, titles_n, _ = load_index(npy_out)
    assert titles == titles_n and len(index) == N_DOCS
    queries = [d["text"] for d in synth(N_DOCS)[::7]]
    assert CorpusSearcher(pq_out, model=tiny_embedder).search(queries, k=5) == CorpusSearcher(
        npy_out, model=tiny_embedder
    ).search(queries, k=5)


def test_empty_corpus(tmp_path, tiny_embedder):
    src = tmp_path / "empty.jsonl"
    src.write_text("")
    for fmt in ("npy", "parquet"):
        encode(src, tmp_path / fmt, tiny_embedder, fmt)
        ids, vectors = load_embeddings(tmp_path / fmt)
        assert ids == [] and vectors.shape == (0, tiny_embedder.dim) and vectors.dtype == np.float32


# -- settings: the format is one ---------------------------------------------------------------
@pytest.mark.parametrize("first, then", [("npy", "parquet"), ("parquet", "npy")])
def test_switching_format_needs_overwrite(tmp_path, corpus, tiny_embedder, npy_out, first, then):
    out = tmp_path / "out"
    encode(corpus, out, tiny_embedder, first)
    before = output_files(out)
    with pytest.raises(InputError, match=f"output_format: '{first}' then, '{then}' now.*--overwrite"):
        encode(corpus, out, tiny_embedder, then)
    assert output_files(out) == before
    s = encode(corpus, out, tiny_embedder, then, overwrite=True)
    assert s.shards_written == 4 and s.resumed == 0
    suffixes = {p.suffix for p in out.glob("shard-*") if not p.name.endswith(".done.json")}
    assert suffixes == ({".parquet"} if then == "parquet" else {".npy", ".jsonl"})
    ids, vectors = load_embeddings(out)
    want_ids, want = load_embeddings(npy_out)
    assert ids == want_ids
    np.testing.assert_array_equal(vectors, want)


def test_unknown_output_format(tmp_path, corpus, tiny_embedder):
    with pytest.raises(InputError, match="output_format must be one of 'npy', 'parquet', got 'csv'"):
        encode(corpus, tmp_path / "out", tiny_embedder, "csv")
    assert not (tmp_path / "out").exists()


# -- resume -----------------------------------------------------------------------------------
# file writes of a Parquet run: 1 manifest, then 2 per shard (parquet, done record), 1 final manifest.
# The child is tests/test_resume.py's: it counts atomic_write calls and SIGKILLs itself at the kill_at-th
# (torn: after writing half of it to a temp file)


@pytest.mark.parametrize(
    "kill_at, torn, kept",
    [
        (2 + 2 * 2, False, 2),  # after the 2nd shard's done record
        (2 + 2 * 1, True, 1),  # inside the 2nd shard's parquet write (a torn temp file)
        (2 + 2 * 3 + 1, False, 3),  # the 4th shard's parquet renamed, its done record not written
    ],
    ids=["after-2nd", "torn-parquet", "before-done"],
)
def test_kill_and_resume(tmp_path, corpus, pq_out, tiny_model_dir, tiny_cache, tiny_embedder, kill_at, torn, kept):
    out = tmp_path / "out"
    cfg = {
        "model": str(tiny_model_dir),
        "model_cache": str(tiny_cache),
        "src": str(corpus),
        "out": str(out),
        "shard": SHARD,
        "kill_at": kill_at,
        "torn": torn,
        "output_format": "parquet",
    }
    p = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(cfg)],
        capture_output=True,
        timeout=120,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    assert len(list(out.glob("*.done.json"))) == kept
    s = encode(corpus, out, tiny_embedder)
    assert (s.resumed, s.shards_written) == (kept * SHARD, 4 - kept)
    assert not list(out.glob(".tmp-*"))
    assert output_files(out) == output_files(pq_out)  # byte-identical to an uninterrupted run


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _float64_kept_valid(path: Path) -> None:
    """A float64 shard of the right rows, its done record's checksum updated: the schema check must catch it."""
    t = pq.read_table(path)
    values = t.column("embedding").combine_chunks().flatten().cast(pa.float64())
    t = t.set_column(2, "embedding", pa.FixedSizeListArray.from_arrays(values, t.schema.field(2).type.list_size))
    pq.write_table(t, path)
    resign(path.parent, int(path.stem.split("-")[1]))


@pytest.mark.parametrize(
    "damage, warns",
    [
        (_truncate, False),
        (_flip, False),
        (lambda p: p.unlink(), False),
        (lambda p: p.with_name("shard-00002.done.json").unlink(), False),
        (_float64_kept_valid, True),
    ],
    ids=["truncated", "byte-flipped", "parquet-missing", "done-missing", "float64-resigned"],
)
def test_damaged_shard_is_redone(pq_copy, pq_out, corpus, tiny_embedder, caplog, damage, warns):
    damage(shard_path(pq_copy, 2))
    with caplog.at_level("WARNING", logger="engine.corpus.shards"):
        s = encode(corpus, pq_copy, tiny_embedder)
    assert (s.shards_written, s.resumed) == (1, N_DOCS - SHARD)
    assert ("shard-00002.parquet has columns" in caplog.text) == warns
    assert output_files(pq_copy) == output_files(pq_out)


# -- reading trusts nothing ---------------------------------------------------------------------
def _table(
    n: int,
    dim: int,
    *,
    value_type=None,
    list_size=None,
    ids=None,
    names=("id", "title", "embedding"),
    extra: bool = False,
) -> pa.Table:
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    values = pa.array(vectors.reshape(-1), type=value_type or pa.float32())
    emb = (
        pa.FixedSizeListArray.from_arrays(values, list_size or dim)
        if list_size != "variable"
        else pa.ListArray.from_arrays(pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32)), values)
    )
    cols = [
        pa.array(ids if ids is not None else [f"x{i}" for i in range(n)], pa.string()),
        pa.array([f"t{i}" for i in range(n)]),
        emb,
    ]
    if extra:
        cols.append(pa.array(range(n)))
        names = (*names, "extra")
    return pa.Table.from_arrays(cols, names=list(names))


def _write(table_fn):
    def damage(path: Path) -> None:
        n = pq.read_metadata(path).num_rows
        dim = pq.read_schema(path).field("embedding").type.list_size
        pq.write_table(table_fn(n, dim), path)

    return damage


def _symlink(path: Path) -> None:
    target = path.parent.parent / "elsewhere.parquet"
    shutil.copy(path, target)
    path.unlink()
    path.symlink_to(target)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


# (damage to shard 1, what the message says, whether the checksum is updated so that the parse is reached)
DAMAGE = {
    "truncated": (_truncate, "not a readable Parquet file", True),
    "truncated-checksum": (_truncate, "does not match its checksum", False),
    "byte-flipped-checksum": (_flip, "does not match its checksum", False),
    "footer-flipped": (
        lambda p: p.write_bytes(p.read_bytes()[:-12] + b"\xff" * 4 + p.read_bytes()[-8:]),
        "not a readable Parquet file",
        True,
    ),
    "empty": (lambda p: p.write_bytes(b""), "not a readable Parquet file", True),
    "not-parquet": (lambda p: p.write_text('{"id": "x"}\n'), "not a readable Parquet file", True),
    "npy-bytes": (lambda p: shutil.copy(p.parent.parent / "elsewhere.npy", p), "not a readable Parquet file", True),
    "float64": (_write(lambda n, d: _table(n, d, value_type=pa.float64())), "has columns", True),
    "wrong-dim": (_write(lambda n, d: _table(n, d - 1)), r"has columns .*fixed_size_list<\w+: float>\[31\]", True),
    "variable-list": (_write(lambda n, d: _table(n, d, list_size="variable")), "has columns", True),
    "extra-column": (_write(lambda n, d: _table(n, d, extra=True)), "has columns", True),
    "renamed-column": (_write(lambda n, d: _table(n, d, names=("_id", "title", "embedding"))), "has columns", True),
    "extra-rows": (_write(lambda n, d: _table(n + 1, d)), "has 9 rows, its record says 8", True),
    "fewer-rows": (_write(lambda n, d: _table(n - 1, d)), "has 7 rows, its record says 8", True),
    "null-id": (
        _write(lambda n, d: _table(n, d, ids=[None] + [f"x{i}" for i in range(1, n)])),
        r"nulls in \(id\)",
        True,
    ),
    "symlink": (_symlink, "is a symbolic link", False),
    "fifo": (_fifo, "is a fifo", False),
    "missing": (lambda p: p.unlink(), "is missing", False),
}
READERS = {
    "load_embeddings": lambda out, verify: load_embeddings(out, verify=verify),
    "iter_shards": lambda out, verify: list(iter_shards(out, verify=verify)),
    "load_index": lambda out, verify: load_index(out, verify=verify),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_parquet_is_an_index_format_error(pq_copy, tiny_embedder, case, reader):
    damage, match, resigned = DAMAGE[case]
    np.save(pq_copy.parent / "elsewhere.npy", np.zeros((8, tiny_embedder.dim), np.float32))
    path = shard_path(pq_copy, 1)
    damage(path)
    if resigned:
        resign(pq_copy, 1)
    for verify in (True, False) if resigned or "checksum" not in match else (True,):
        with pytest.raises(IndexFormatError, match=match) as e:
            READERS[reader](pq_copy, verify)
        assert str(path) in str(e.value)
        assert "embed encode" in str(e.value)  # the fix: rerun / rewrite


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("table", "../shard-00000.parquet", "names table file '../shard-00000.parquet'"),
        ("table", None, "names table file None"),
        ("sha256", {"vectors": "0" * 64}, "no valid sha256"),
    ],
)
def test_record_naming_other_files_is_refused(pq_copy, field, value, match):
    m = json.loads((pq_copy / "manifest.json").read_text())
    m["shards"][1][field] = value
    (pq_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match=match):
        load_embeddings(pq_copy)


def test_manifest_with_unknown_output_format(pq_copy):
    m = json.loads((pq_copy / "manifest.json").read_text())
    m["output_format"] = "../npy"
    (pq_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match=r"output_format is '../npy'"):
        load_embeddings(pq_copy)


FUZZ_CHILD = textwrap.dedent("""
    import hashlib, json, shutil, sys
    from pathlib import Path
    from engine.corpus import load_embeddings
    from engine.errors import IndexFormatError

    src, work = Path(sys.argv[1]), Path(sys.argv[2])
    data = (src / "shard-00001.parquet").read_bytes()
    out = {"ok": 0, "refused": 0, "other": []}
    for k in range(0, len(data), max(1, len(data) // 150)):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(src, work, ignore=shutil.ignore_patterns(".lock"))
        bad = bytearray(data)
        bad[k] ^= 0x5A
        (work / "shard-00001.parquet").write_bytes(bytes(bad))
        m = json.loads((work / "manifest.json").read_text())
        m["shards"][1]["sha256"]["table"] = hashlib.sha256(bad).hexdigest()
        (work / "manifest.json").write_text(json.dumps(m))
        try:
            load_embeddings(work)
            out["ok"] += 1
        except IndexFormatError as e:
            out["refused"] += 1
            assert "shard-00001.parquet" in str(e), str(e)
        except Exception as e:
            out["other"].append(f"{k}: {type(e).__name__}: {e}")
    print(json.dumps(out))
""")


def test_every_flipped_byte_loads_or_is_an_index_format_error(pq_out, tmp_path):
    """~150 single-byte edits across a shard, checksums updated: each load works or raises IndexFormatError
    naming the file, never a pyarrow exception (in a child process, so a crash fails the test)."""
    p = subprocess.run(
        [sys.executable, "-c", FUZZ_CHILD, str(pq_out), str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(p.stdout)
    assert res["other"] == [] and res["refused"] > 0 and res["ok"] + res["refused"] >= 150


# -- the CLI and a missing pyarrow ----------------------------------------------------------------
def test_cli_output_format(tmp_path, corpus, npy_out, tiny_model_dir, tiny_cache, monkeypatch, capsys):
    from engine.cli import main
    from engine.corpus.readers import compose

    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(tiny_cache))
    out = tmp_path / "out"
    base = [
        "encode",
        str(corpus),
        "-o",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--shard-size",
        str(SHARD),
        "--no-cache",
        "-q",
    ]
    assert main([*base, "--output-format", "parquet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shards"] == 4
    assert sorted(p.name for p in out.glob("*.parquet")) == PARQUET_FILES and not list(out.glob("*.npy"))
    ids, vectors = load_embeddings(out)
    want_ids, want = load_embeddings(npy_out)
    assert ids == want_ids
    np.testing.assert_array_equal(vectors, want)
    doc = synth(N_DOCS)[4]
    assert main(["search", str(out), compose(doc["title"], doc["text"]), "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == "doc-004"
    assert main([*base, "--output-format", "npy"]) == 1  # the other format: refused, named
    assert "output_format: 'parquet' then, 'npy' now" in capsys.readouterr().err
    assert main([*base, "--output-format", "npy", "--overwrite"]) == 0
    assert not list(out.glob("*.parquet")) and load_embeddings(out)[0] == want_ids


@pytest.fixture
def no_pyarrow(monkeypatch):
    """pyarrow not installed: its imports fail as they would without the corpus extra."""
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")] + ["pyarrow"]:
        monkeypatch.setitem(sys.modules, name, None)


INSTALL = r"pip install 'embed-engine\[corpus\]'"


def test_parquet_without_pyarrow_fails_up_front(no_pyarrow, tmp_path, corpus, tiny_embedder):
    with pytest.raises(InputError, match=INSTALL):
        encode(corpus, tmp_path / "out", tiny_embedder)
    assert not (tmp_path / "out").exists()  # nothing written
    s = encode(corpus, tmp_path / "npy", tiny_embedder, "npy")  # npy never needs pyarrow
    assert s.shards == 4 and load_embeddings(tmp_path / "npy")[0][0] == "doc-000"


def test_cli_parquet_without_pyarrow(no_pyarrow, tmp_path, corpus, tiny_model_dir, capsys):
    from engine.cli import main

    out = tmp_path / "out"
    assert (
        main(
            [
                "encode",
                str(corpus),
                "-o",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--no-cache",
                "-q",
                "--output-format",
                "parquet",
            ]
        )
        == 1
    )
    assert "pip install 'embed-engine[corpus]'" in capsys.readouterr().err
    assert not out.exists()


def test_reading_parquet_without_pyarrow(pq_out, monkeypatch):
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(InputError, match=INSTALL):
        load_embeddings(pq_out)


def test_import_does_not_load_pyarrow():
    code = (
        "import sys, engine, engine.corpus, engine.corpus.shards; engine.load_embeddings; "
        "print(sorted(m for m in ('pyarrow', 'pandas', 'duckdb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

"""The corpus driver (engine.corpus.driver): embed_corpus and ``embed encode`` / ``embed search`` end
to end on the tiny model, the driver with shards in flight, kill -9 and resume, the documents' prompt.

Resume: a child process runs embed_corpus on a few hundred synthetic documents with a small shard
size and SIGKILLs itself just before its N-th file write (or in the middle of one, leaving a torn
temp file); another is killed from outside while it runs. The rerun must keep the finished shards
and produce byte-identical files: same ids in the same order, same vectors bit for bit.
Prompts: the output equals sentence-transformers' ``encode_document`` (tests/corpus/conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.corpus import embed_corpus
from engine.corpus.readers import compose, expand_inputs
from engine.corpus.shards import read_manifest
from engine.errors import InputError, ModelMismatchError
from tests.corpus.conftest import TEXTS, normalized, output_vectors, st_model, write_texts

# -- helpers (the other corpus tests import them) ----------------------------------------------------


def write_jsonl(path: Path, records) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records)
    return path


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


# -- embed_corpus end to end -----------------------------------------------------------------------


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
    from engine.corpus.options import CorpusOptions

    src = write_jsonl(tmp_path / "c.jsonl", synth(300))  # texts repeat within and across shards
    local = embed_corpus(src, tmp_path / "local", tiny_embedder, shard_size=40, cache=False)
    options = CorpusOptions(shard_size=40, cache=False)
    plan = Plan.build(expand_inputs(src), tiny_embedder, model_ref(tiny_embedder), options)
    ex = BackgroundExecutor(tiny_embedder, batch=EMBED_CHUNK, capacity=30)  # window max(2*40, 2*30) = 80 docs
    s = drive(plan, tmp_path / "bg", ex)
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
    cached = Plan.build(expand_inputs(src), tiny_embedder, model_ref(tiny_embedder), replace(options, cache=cache))
    first = drive(cached, tmp_path / "bg1", BackgroundExecutor(tiny_embedder, batch=7, capacity=30))
    again = drive(cached, tmp_path / "bg2", BackgroundExecutor(tiny_embedder, batch=7, capacity=30))
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


# -- kill -9 at any moment, rerun: the output of an uninterrupted run ------------------------------


N_DOCS, SHARD = 300, 50  # 6 shards
# file writes of a run: 1 manifest, then 3 per shard (vectors, ids, done record), 1 final manifest


def AFTER_SHARD(k: int) -> int:
    """The number of the write that starts shard k (0-based)."""
    return 2 + 3 * k


CHILD = r"""
import json, os, signal, sys
from engine.corpus import shards
from engine.corpus import embed_corpus
from engine.embedder import Embedder

cfg = json.loads(sys.argv[1])
kill_at, torn = cfg.get("kill_at"), cfg.get("torn", False)
calls = 0
original = shards.atomic_write

def atomic_write(path, data, sync_dir=True):
    global calls
    calls += 1
    if calls == kill_at:
        if torn:  # die inside the write: half the bytes in the temp file, no rename
            fd, _ = shards._mkstemp(path)
            os.write(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    original(path, data, sync_dir)

shards.atomic_write = atomic_write
emb = Embedder(cfg["model"], cache_dir=cfg["model_cache"])
embed_corpus(cfg["src"], cfg["out"], emb, shard_size=cfg["shard"], cache=cfg.get("cache") or False,
             output_format=cfg.get("output_format", "npy"))
"""


def resume_docs(n: int) -> list[dict]:
    words = ["alpha", "beta", "gamma", "delta", "vector", "fox", "numba", "onnx", "cosine", "stitch", "time", "nine"]
    return [
        {
            "_id": f"id-{i:04d}",
            "title": f"doc {i}" if i % 4 else "",
            "text": " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(1 + i % 11)),
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("resume") / "corpus.jsonl"
    p.write_text("".join(json.dumps(d) + "\n" for d in resume_docs(N_DOCS)), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def reference(corpus, tiny_embedder, tmp_path_factory) -> Path:
    """An uninterrupted run with a fresh cache."""
    from engine.corpus import embed_corpus

    out = tmp_path_factory.mktemp("reference") / "out"
    s = embed_corpus(corpus, out, tiny_embedder, shard_size=SHARD, cache=out.parent / "emb.sqlite")
    assert (s.docs, s.shards, s.embedded + s.cache_hits) == (N_DOCS, 6, N_DOCS)
    assert s.cache_hits > 0  # repeated texts across shards: the cache takes part in the comparison
    return out


def child(cfg: dict) -> subprocess.Popen:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def config(tmp_path, corpus, tiny_model_dir, tiny_cache, cache=True, **kw) -> dict:
    return {
        "model": str(tiny_model_dir),
        "model_cache": str(tiny_cache),
        "src": str(corpus),
        "out": str(tmp_path / "out"),
        "shard": SHARD,
        "cache": str(tmp_path / "emb.sqlite") if cache else None,
        **kw,
    }


def run_killed(cfg: dict) -> None:
    p = child(cfg)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL, out.decode(errors="replace")


def output_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != ".lock"}


def assert_identical(out: Path, reference: Path) -> None:
    from engine.corpus.shards import iter_shards

    got, want = list(iter_shards(out)), list(iter_shards(reference))
    ids = [i for ids, _, _ in got for i in ids]
    assert ids == [i for ids, _, _ in want for i in ids]
    assert len(ids) == len(set(ids)) == N_DOCS  # no duplicate, no missing id
    for (_, _, v), (_, _, w) in zip(got, want):
        np.testing.assert_array_equal(v, w)  # exact, vector by vector
    assert output_files(out) == output_files(reference)  # and byte for byte


def resume(cfg: dict, tiny_embedder):
    from engine.corpus import embed_corpus

    return embed_corpus(cfg["src"], cfg["out"], tiny_embedder, shard_size=SHARD, cache=cfg["cache"] or False)


@pytest.mark.parametrize(
    "kill_at, torn, cache, kept",
    [
        (AFTER_SHARD(1), False, True, 1),  # after the 1st shard
        (AFTER_SHARD(3), False, True, 3),  # after the 3rd shard
        (AFTER_SHARD(2) + 1, True, True, 2),  # mid shard: vectors renamed, ids torn, no done record
        (AFTER_SHARD(4) + 2, False, False, 4),  # vectors and ids written, done record not; no cache
        (AFTER_SHARD(6), False, True, 6),  # all shards done, final manifest not written
        (1, True, True, 0),  # torn first manifest
    ],
    ids=["after-1st", "after-3rd", "torn-ids", "before-done-nocache", "before-manifest", "torn-manifest"],
)
def test_kill_and_resume(
    tmp_path, corpus, reference, tiny_model_dir, tiny_cache, tiny_embedder, kill_at, torn, cache, kept
):
    cfg = config(tmp_path, corpus, tiny_model_dir, tiny_cache, cache=cache, kill_at=kill_at, torn=torn)
    run_killed(cfg)
    out = Path(cfg["out"])
    assert len(list(out.glob("*.done.json"))) == kept
    s = resume(cfg, tiny_embedder)
    assert s.resumed == kept * SHARD and s.shards_written == 6 - kept
    assert not list(out.glob(".tmp-*")) and not (out / ".ids.sqlite").exists()
    assert_identical(out, reference)


def test_killed_twice_then_resumed(tmp_path, corpus, reference, tiny_model_dir, tiny_cache, tiny_embedder):
    cfg = config(tmp_path, corpus, tiny_model_dir, tiny_cache, kill_at=AFTER_SHARD(2) + 1, torn=True)
    run_killed(cfg)
    # the second run keeps shards 0-1 and writes again from shard 2: its 4th write is shard 3's vectors
    run_killed({**cfg, "kill_at": 1 + 3 + 1})
    assert len(list(Path(cfg["out"]).glob("*.done.json"))) == 3
    s = resume(cfg, tiny_embedder)
    assert (s.resumed, s.shards_written) == (3 * SHARD, 3)
    assert s.cache_hits >= SHARD  # shard 3 was embedded and cached before the second kill
    assert_identical(Path(cfg["out"]), reference)


def test_external_sigkill(tmp_path, corpus, reference, tiny_model_dir, tiny_cache, tiny_embedder):
    """A real kill from outside, at whatever moment the poll sees the 2nd shard's record."""
    cfg = config(tmp_path, corpus, tiny_model_dir, tiny_cache)
    out = Path(cfg["out"])
    p = child(cfg)
    deadline = time.monotonic() + 120
    while not (out / "shard-00001.done.json").exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    if p.returncode != -signal.SIGKILL:
        pytest.skip("the run finished before the kill landed (a very slow poll); nothing to resume")
    s = resume(cfg, tiny_embedder)
    assert s.docs == N_DOCS
    assert_identical(out, reference)


def test_damaged_shard_is_redone(tmp_path, corpus, reference, tiny_embedder):
    from engine.corpus import embed_corpus

    cfg = {"src": corpus, "out": tmp_path / "out", "cache": tmp_path / "emb.sqlite"}
    embed_corpus(corpus, cfg["out"], tiny_embedder, shard_size=SHARD, cache=cfg["cache"])
    with open(cfg["out"] / "shard-00004.npy", "r+b") as f:
        f.seek(200)
        f.write(b"\xff")
    s = resume(cfg, tiny_embedder)
    assert (s.shards_written, s.resumed, s.cache_hits) == (1, 5 * SHARD, SHARD)
    assert_identical(cfg["out"], reference)


def test_second_writer_is_refused(tmp_path, corpus, tiny_embedder):
    from engine.corpus.shards import OutputDir
    from engine.errors import InputError

    with OutputDir(tmp_path / "out"), pytest.raises(InputError, match="another 'embed encode' is writing"):
        resume({"src": corpus, "out": tmp_path / "out", "cache": None}, tiny_embedder)


# -- the documents' prompt and the model's similarity ----------------------------------------------


@pytest.mark.parametrize("which", ["cosine", "dot"])
def test_corpus_equals_encode_document(tmp_path, cosine_model, dot_model, which):
    folder, emb = cosine_model if which == "cosine" else dot_model
    src = write_texts(tmp_path / "c.jsonl", TEXTS)
    embed_corpus(src, tmp_path / "out", emb, cache=False, shard_size=4)
    ref = st_model(folder).encode_document(TEXTS)
    got = output_vectors(tmp_path / "out")
    if which == "cosine":
        np.testing.assert_allclose(got, normalized(ref), atol=1e-5)
    else:  # raw: exactly what sentence-transformers gives, not unit length
        assert np.abs(np.linalg.norm(ref, axis=1) - 1).max() > 0.1
        np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(ref).max())
    m = read_manifest(tmp_path / "out")
    assert m["prompts"] == {"document": "passage: ", "query": "query: "}
    assert m["similarity_fn_name"] == which and m["normalize"] == (which == "cosine")
    assert m["settings"]["prompt"] == "passage: " and m["settings"]["normalize"] == (which == "cosine")


def test_prompt_name_and_prompt(tmp_path, cosine_model):
    folder, emb = cosine_model
    src = write_texts(tmp_path / "c.jsonl", TEXTS)
    st = st_model(folder)
    embed_corpus(src, tmp_path / "named", emb, cache=False, prompt_name="other")
    np.testing.assert_allclose(
        output_vectors(tmp_path / "named"), normalized(st.encode(TEXTS, prompt_name="other")), atol=1e-5
    )
    embed_corpus(src, tmp_path / "text", emb, cache=False, prompt="find: ")
    np.testing.assert_allclose(
        output_vectors(tmp_path / "text"), normalized(st.encode(TEXTS, prompt="find: ")), atol=1e-5
    )
    assert read_manifest(tmp_path / "text")["settings"]["prompt"] == "find: "
    embed_corpus(src, tmp_path / "none", emb, cache=False, prompt="")  # no prompt: no "prompt" setting
    np.testing.assert_allclose(output_vectors(tmp_path / "none"), normalized(st.encode(TEXTS)), atol=1e-5)
    m = read_manifest(tmp_path / "none")
    assert "prompt" not in m["settings"] and m["prompts"] == {"document": "", "query": "query: "}
    with pytest.raises(InputError, match="prompt_name 'nope'"):
        embed_corpus(src, tmp_path / "bad", emb, cache=False, prompt_name="nope")


def test_rerun_with_another_prompt_is_refused(tmp_path, cosine_model):
    _, emb = cosine_model
    src = write_texts(tmp_path / "c.jsonl", TEXTS)
    embed_corpus(src, tmp_path / "out", emb, cache=False, shard_size=4)
    with pytest.raises(InputError, match="prompt: 'passage: ' then, 'find: ' now"):
        embed_corpus(src, tmp_path / "out", emb, cache=False, shard_size=4, prompt="find: ")
    again = embed_corpus(src, tmp_path / "out", emb, cache=False, shard_size=4, prompt_name="document")
    assert again.resumed == len(TEXTS) and again.embedded == 0  # the same prompt text: same settings


def test_no_prompt_keeps_the_settings_of_outputs_written_before_prompts(tmp_path, tiny_embedder):
    """A model without prompts adds no "prompt" setting: old outputs resume (their done records match)."""
    from engine.corpus.driver import TEXT_FORMAT
    from engine.corpus.shards import settings_digest

    src = write_texts(tmp_path / "c.jsonl", TEXTS)
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

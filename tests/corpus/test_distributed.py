"""The distributed path (engine.corpus.distributed) against the local path, its oracle.

A local Ray cluster (2 CPUs, 2 writer actors) embeds files in each format (JSON lines, CSV,
Parquet, and SciFact when the shared data is present) with the tiny model; the output must hold
the local path's ids in the local path's order, vectors within 1e-6, the same settings, and load
into ``load_index`` / ``CorpusSearcher`` unchanged. Killing a writer (kill -9 of its process) or
the driver mid-run and rerunning gives the same output, nothing duplicated or lost; duplicate
ids across files are found; bad records fail or are skipped as locally; an unchanged rerun and a
rerun with 10 changed documents embed 0 and 10 documents. Object storage: a real S3-compatible
server (moto's server mode) on 127.0.0.1, started and stopped here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED, local_ray
from tests.corpus.test_driver import write_jsonl

SCIFACT = SHARED / "scifact" / "corpus.jsonl"
SHARD = 200 if SCIFACT.exists() else 40
ROOT = Path(__file__).resolve().parents[2]


def synth(lo: int, hi: int) -> list[dict]:
    words = ["alpha", "beta", "gamma", "delta", "vector", "fox", "numba", "onnx", "cosine", "stitch", "time", "nine"]
    return [
        {
            "_id": f"syn-{i:04d}",
            "title": f"doc {i}" if i % 4 else "",
            "text": " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(1 + i % 11)),
        }
        for i in range(lo, hi)
    ]


def write_inputs(folder: Path) -> list[Path]:
    """A JSON lines, a CSV and a Parquet file (150 documents each), then SciFact when present."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    a = write_jsonl(folder / "a.jsonl", synth(0, 150))
    b = folder / "b.csv"
    import csv

    with open(b, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["_id", "title", "text"])
        w.writeheader()
        w.writerows(synth(150, 300))
    c = folder / "c.parquet"
    pq.write_table(pa.Table.from_pylist(synth(300, 450)), c)
    return [a, b, c] + ([SCIFACT] if SCIFACT.exists() else [])


@pytest.fixture(scope="module")
def s3():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1, found by pyarrow (and the Ray
    workers, started after it) through the AWS_* environment variables; yields a bucket's URI."""
    pytest.importorskip("moto", reason="moto is not installed (the test extra)")
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True).create_dir("bucket")
        yield "s3://bucket"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="module")
def ray_cluster(s3):
    with local_ray() as ray:
        yield ray


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    return write_inputs(tmp_path_factory.mktemp("dist-corpus"))


@pytest.fixture(scope="module")
def local_out(inputs, tiny_embedder, tmp_path_factory) -> Path:
    from engine.corpus import embed_corpus

    out = tmp_path_factory.mktemp("dist-local") / "out"
    embed_corpus(inputs, out, tiny_embedder, shard_size=SHARD, cache=False)
    return out


def run(inputs, out, tiny_model_dir, tiny_cache, **kw):
    from engine.corpus.distributed import embed_corpus_distributed

    kw = {"cache_dir": tiny_cache, "actors": 2, "shard_size": SHARD, "cache": False, **kw}
    return embed_corpus_distributed(inputs, out, str(tiny_model_dir), **kw)


@pytest.fixture(scope="module")
def dist_out(ray_cluster, inputs, tiny_model_dir, tiny_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist-dist") / "out"
    s = run(inputs, out, tiny_model_dir, tiny_cache)
    assert (s.embedded, s.cache_hits, s.resumed, s.shards_written) == (s.docs, 0, 0, s.shards)
    return out


def assert_same(local: Path, out: Path) -> None:
    """The local path's settings, ids (in order, none twice) and vectors within 1e-6."""
    from engine.corpus import load_embeddings
    from engine.corpus.shards import read_manifest

    ml, md = read_manifest(local), read_manifest(out)
    assert ml["settings"] == md["settings"] and ml["model"] == md["model"] and ml["count"] == md["count"]
    ids_l, vl = load_embeddings(local)
    ids_d, vd = load_embeddings(out)
    assert ids_d == ids_l and len(set(ids_d)) == len(ids_d)
    assert np.abs(vl - vd).max() <= 1e-6


def test_matches_local_path(local_out, dist_out, inputs, tiny_embedder):
    from engine.corpus.readers import Fields, iter_documents
    from engine.corpus.shards import CorpusSearcher, read_manifest

    assert_same(local_out, dist_out)
    want = [d.id for d in iter_documents(inputs, Fields())]
    from engine.corpus import load_embeddings

    assert load_embeddings(dist_out)[0] == want and len(want) >= 450
    m = read_manifest(dist_out)
    assert m["shards"][0]["count"] == min(150, SHARD)  # a shard never spans two files
    assert [i["path"] for i in m["inputs"]] == [str(p) for p in inputs]
    queries = ["cosine vector fox", "numba onnx time"]
    got = CorpusSearcher(dist_out, model=tiny_embedder).search(queries, k=5)
    exp = CorpusSearcher(local_out, model=tiny_embedder).search(queries, k=5)
    assert [[h[0] for h in g] for g in got] == [[h[0] for h in e] for e in exp]


def writer_pids() -> list[int]:
    """The writer actors' processes: children of this test's Ray cluster titled ray::_Writer."""
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "_Writer" in " ".join(p.cmdline()):
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def wait_for(cond, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def in_progress(out: Path) -> bool:
    try:
        return json.loads((out / "manifest.json").read_text())["status"] == "in_progress"
    except (OSError, ValueError):
        return True


def test_resume_keeps_finished_shards(ray_cluster, dist_out, local_out, inputs, tiny_model_dir, tiny_cache):
    from engine.corpus.shards import read_manifest

    n_shards = len(read_manifest(dist_out)["shards"])
    (dist_out / "shard-00001.done.json").unlink()  # as if killed while writing shard 1
    (dist_out / "shard-00002.npy").write_bytes(b"torn")  # and shard 2 damaged
    s = run(inputs, dist_out, tiny_model_dir, tiny_cache)
    counts = [r["count"] for r in read_manifest(dist_out)["shards"]]
    assert (s.shards, s.shards_written, s.embedded) == (n_shards, 2, counts[1] + counts[2])
    assert s.resumed == s.docs - s.embedded
    assert_same(local_out, dist_out)


def test_writer_killed_mid_run(ray_cluster, local_out, inputs, tiny_model_dir, tiny_cache, tmp_path):
    """kill -9 of a writer's process while it writes: Ray restarts it and retries its file; the
    retry keeps the shards committed before the kill; the output is the local path's."""
    out, result = tmp_path / "out", {}
    t = threading.Thread(target=lambda: result.update(s=run(inputs, out, tiny_model_dir, tiny_cache)))
    t.start()
    wait_for(lambda: len(list(out.glob("*.done.json"))) >= 2 and len(writer_pids()) == 2)
    assert in_progress(out)
    os.kill(writer_pids()[0], signal.SIGKILL)
    t.join(300)
    s = result["s"]
    assert s.docs == s.embedded + s.resumed == len(local_out_ids(local_out))
    assert_same(local_out, out)


def local_out_ids(out: Path) -> list[str]:
    from engine.corpus import load_embeddings

    return load_embeddings(out)[0]


def test_driver_killed_mid_run(ray_cluster, local_out, inputs, tiny_model_dir, tiny_cache, tmp_path):
    """kill -9 of the driver (its Ray cluster dies with it) mid-run, then the same call again:
    complete shards are kept, the rest written; the output is the local path's."""
    import psutil

    out = tmp_path / "out"
    code = (
        "import sys, ray\n"
        "ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)\n"
        "from engine.corpus.distributed import embed_corpus_distributed\n"
        f"embed_corpus_distributed({[str(p) for p in inputs]!r}, {str(out)!r}, {str(tiny_model_dir)!r}, "
        f"cache_dir={str(tiny_cache)!r}, actors=2, shard_size={SHARD}, cache=False)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: len(list(out.glob("*.done.json"))) >= 2 or proc.poll() is not None, timeout=180)
        family = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        for p in family:  # whatever of its cluster outlives it
            with contextlib.suppress(psutil.Error):
                p.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert in_progress(out), "the run finished before it was killed"
    kept = len(list(out.glob("*.done.json")))
    s = run(inputs, out, tiny_model_dir, tiny_cache)
    assert s.resumed > 0 and s.shards_written <= s.shards - 1 and kept >= 2
    assert s.docs == s.embedded + s.resumed
    assert_same(local_out, out)


def bad_inputs(folder: Path) -> list[Path]:
    """Two files: a bad JSON line and a record without text in the first, an id of the first repeated
    in the second."""
    folder.mkdir(parents=True, exist_ok=True)
    a = folder / "a.jsonl"
    rows = [json.dumps(r) for r in synth(0, 30)]
    rows[5] = '{"_id": "broken", "text": '
    rows[9] = json.dumps({"_id": "no-text", "title": "t"})
    a.write_text("\n".join(rows) + "\n", encoding="utf-8")
    b = write_jsonl(folder / "b.jsonl", [*synth(30, 50), {"_id": "syn-0003", "text": "again"}, *synth(50, 60)])
    return [a, b]


def local_error(inputs, tiny_embedder, out: Path) -> str:
    from engine.corpus import embed_corpus
    from engine.errors import InputError

    with pytest.raises(InputError) as e:
        embed_corpus(inputs, out, tiny_embedder, shard_size=7, cache=False)
    return str(e.value)


def test_bad_records_and_duplicates(ray_cluster, tiny_embedder, tiny_model_dir, tiny_cache, tmp_path):
    """Without skip_bad: the local path's error (the first bad record); with a clean first file, the
    duplicate id across the two files, naming both places. With skip_bad: the local output and rejects."""
    from engine.corpus import embed_corpus
    from engine.errors import InputError

    a, b = bad_inputs(tmp_path / "in")
    for inputs in ([a, b], [write_jsonl(tmp_path / "in" / "clean.jsonl", synth(0, 30)), b]):
        want = local_error(inputs, tiny_embedder, tmp_path / "local-err")
        with pytest.raises(InputError) as e:
            run(inputs, tmp_path / "err", tiny_model_dir, tiny_cache, shard_size=7)
        assert str(e.value) == want
    assert "duplicate id 'syn-0003'" in want and f"{b}:21" in want and "clean.jsonl:4" in want

    local = tmp_path / "local"
    embed_corpus([a, b], local, tiny_embedder, shard_size=7, cache=False, skip_bad=True)
    s = run([a, b], tmp_path / "out", tiny_model_dir, tiny_cache, shard_size=7, skip_bad=True)
    assert s.rejected == 3 and s.docs == 28 + 30
    assert_same(local, tmp_path / "out")
    lines = [(p / "rejects.jsonl").read_text().splitlines() for p in (local, tmp_path / "out")]
    assert sorted(lines[0]) == sorted(lines[1]) and len(lines[0]) == 3


def test_object_storage_cli(ray_cluster, s3, tiny_embedder, tiny_model_dir, tiny_cache, tmp_path, monkeypatch, capsys):
    """embed encode s3://bucket/corpus/*.parquet -o s3://bucket/out --ray: the local path's output,
    resumed (nothing embedded again) and repaired (one lost done record: one shard written)."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from engine.cli import main
    from engine.corpus import embed_corpus

    parts = []
    for k, (lo, hi) in enumerate([(0, 100), (100, 230), (230, 300)]):
        parts.append(tmp_path / "corpus" / f"part-{k}.parquet")
        parts[-1].parent.mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(synth(lo, hi)), parts[-1])
    fs, _ = pafs.FileSystem.from_uri(s3)
    pafs.copy_files(str(tmp_path / "corpus"), "bucket/corpus", destination_filesystem=fs)
    local = tmp_path / "local"
    embed_corpus(parts, local, tiny_embedder, shard_size=40, cache=False, output_format="parquet")

    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(tiny_cache))
    argv = [
        "encode",
        f"{s3}/corpus/*.parquet",
        "-o",
        f"{s3}/out",
        "--model",
        str(tiny_model_dir),
        "--shard-size",
        "40",
        "--no-cache",
        "-q",
        "--json",
        "--output-format",
        "parquet",
        "--ray",
        "--actors",
        "2",
    ]

    def encode() -> dict:
        assert main(argv) == 0, capsys.readouterr().err
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    def fetch() -> Path:
        copy = tmp_path / f"copy-{time.monotonic_ns()}"
        copy.mkdir()
        pafs.copy_files("bucket/out", str(copy), source_filesystem=fs)
        return copy

    first = encode()
    assert (first["docs"], first["embedded"], first["shards"]) == (300, 300, 3 + 4 + 2)
    assert_same(local, fetch())
    from engine.corpus import load_embeddings
    from engine.corpus.shards import load_index

    want_ids, want = load_embeddings(local)  # the readers take the URI itself (a checked local mirror)
    got_ids, got = load_embeddings(f"{s3}/out")
    assert got_ids == want_ids
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    index, titles, _ = load_index(f"{s3}/out")
    assert len(index) == 300 and set(titles) == set(want_ids)
    assert main(["search", f"{s3}/out", "doc 7", "-k", "2", "--model", str(tiny_model_dir), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["hits"]) == 2
    again = encode()
    assert (again["embedded"], again["resumed"], again["shards_written"]) == (0, 300, 0)
    fs.delete_file("bucket/out/shard-00004.done.json")
    repaired = encode()
    assert (repaired["shards_written"], repaired["embedded"]) == (1, 40)
    assert_same(local, fetch())


def test_object_storage_messages(ray_cluster, s3, tiny_model_dir, tiny_cache, tmp_path):
    """A bad record in a JSON lines object is named by its URI and line; so is a missing input."""
    import pyarrow.fs as pafs

    from engine.errors import InputError

    fs, _ = pafs.FileSystem.from_uri(s3)
    with fs.open_output_stream("bucket/bad/x.jsonl") as f:
        f.write(b'{"_id": "1", "text": "fine"}\n{"_id": "2", "text": \n')
    with pytest.raises(InputError, match=r"^s3://bucket/bad/x\.jsonl:2: "):
        run([f"{s3}/bad/x.jsonl"], f"{s3}/bad-out", tiny_model_dir, tiny_cache)
    with pytest.raises(InputError, match="no files match 's3://bucket/nothing/"):
        run([f"{s3}/nothing/*.jsonl"], f"{s3}/bad-out", tiny_model_dir, tiny_cache)


def test_cache_reruns_embed_only_changes(ray_cluster, tiny_embedder, tiny_model_dir, tiny_cache, tmp_path):
    """The node's cache (one SQLite file on this one-node cluster, shared by both writers): an
    unchanged rerun embeds 0 documents, a rerun with 10 edited documents embeds those 10, a new
    OUTDIR over the same corpus embeds 0; each output equals the local path's."""
    from engine.corpus import embed_corpus

    rows = [{**r, "text": f"{r['text']} n{i}"} for i, r in enumerate(synth(0, 400))]  # no repeats
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    kw = {"shard_size": 40, "cache": tmp_path / "emb.sqlite"}

    def write_files() -> None:
        write_jsonl(files[0], rows[:200])
        write_jsonl(files[1], rows[200:])

    write_files()
    out = tmp_path / "out"
    first = run(files, out, tiny_model_dir, tiny_cache, **kw)
    assert (first.embedded, first.cache_hits) == (400, 0)
    same = run(files, out, tiny_model_dir, tiny_cache, **kw)
    assert (same.embedded, same.cache_hits, same.resumed) == (0, 0, 400)
    for j in range(0, 400, 40):  # one edit in each of 10 shards, both files
        rows[j + 3] = {**rows[j + 3], "text": rows[j + 3]["text"] + " edited"}
    write_files()
    edited = run(files, out, tiny_model_dir, tiny_cache, **kw)
    assert (edited.embedded, edited.cache_hits, edited.shards_written) == (10, 390, 10)
    fresh = run(files, tmp_path / "fresh", tiny_model_dir, tiny_cache, **kw)
    assert (fresh.embedded, fresh.cache_hits) == (0, 400)
    local = tmp_path / "local"
    embed_corpus(files, local, tiny_embedder, shard_size=40, cache=False)
    assert_same(local, out)
    assert_same(local, tmp_path / "fresh")


def test_import_does_not_import_ray_or_pyarrow():
    code = (
        "import sys, engine.corpus.distributed, engine.corpus.storage, engine.cli.encode; "
        "assert not {'ray', 'pyarrow'} & set(sys.modules), 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

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

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED

SCIFACT = SHARED / "scifact" / "corpus.jsonl"
SHARD = 200 if SCIFACT.exists() else 40
ROOT = Path(__file__).resolve().parents[1]


def synth(lo: int, hi: int) -> list[dict]:
    words = ["alpha", "beta", "gamma", "delta", "vector", "fox", "numba", "onnx", "cosine", "stitch", "time", "nine"]
    return [{"_id": f"syn-{i:04d}", "title": f"doc {i}" if i % 4 else "",
             "text": " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(1 + i % 11))} for i in range(lo, hi)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


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
def ray_cluster():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'embed-engine[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


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
    assert m["shards"][0]["count"] == min(150, SHARD)   # a shard never spans two files
    assert [i["path"] for i in m["inputs"]] == [str(p) for p in inputs]
    queries = ["cosine vector fox", "numba onnx time"]
    got = CorpusSearcher(dist_out, model=tiny_embedder).search(queries, k=5)
    exp = CorpusSearcher(local_out, model=tiny_embedder).search(queries, k=5)
    assert [[h[0] for h in g] for g in got] == [[h[0] for h in e] for e in exp]
